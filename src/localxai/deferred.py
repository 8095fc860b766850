"""Deferred completions: start now, fetch the result later, exactly once, within 24 hours.

Validation happens at submission (a bad request is refused at once); the generation then runs in
the background through the same ChatService. Results are kept in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from localxai.chat import ChatRequest, Completion
from localxai.errors import InternalError, LocalXAIError, NotFound
from localxai.service import ChatService, collect

log = logging.getLogger(__name__)

RESULT_TTL_S = 24 * 3600


@dataclass
class _Deferred:
    owner: str
    created: float
    task: asyncio.Task[Completion]


class DeferredCompletions:
    def __init__(self, service: ChatService, ttl_s: float = RESULT_TTL_S) -> None:
        self._service = service
        self._ttl_s = ttl_s
        self._items: dict[str, _Deferred] = {}

    async def submit(self, request: ChatRequest, owner: str) -> str:
        """Validate and queue `request` (raises like a normal request); returns the request id."""
        self._expire()
        stream = await self._service.start(request)
        request_id = str(uuid.uuid4())
        task = asyncio.create_task(collect(stream, request.n), name=f"deferred-{request_id}")
        self._items[request_id] = _Deferred(owner=owner, created=time.time(), task=task)
        return request_id

    def fetch(self, request_id: str, owner: str) -> Completion | None:
        """The completion once it is done (then it is gone), None while pending.

        Unknown, expired, already fetched and other keys' ids all read as not found.
        """
        self._expire()
        item = self._items.get(request_id)
        if item is None or item.owner != owner:
            raise NotFound(f"No deferred completion with id {request_id}.")
        if not item.task.done():
            return None
        del self._items[request_id]
        error = item.task.exception()
        if error is None:
            return item.task.result()
        if isinstance(error, LocalXAIError):
            raise error
        log.error("deferred completion %s failed: %r", request_id, error)
        raise InternalError()

    async def close(self) -> None:
        for item in self._items.values():
            item.task.cancel()
        await asyncio.gather(*(i.task for i in self._items.values()), return_exceptions=True)

    def _expire(self) -> None:
        cutoff = time.time() - self._ttl_s
        for request_id in [k for k, v in self._items.items() if v.created < cutoff]:
            self._items.pop(request_id).task.cancel()
