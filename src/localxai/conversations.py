"""Stored responses: the one stored conversation resource (Responses API `store` and
`previous_response_id`; later gRPC stored completions), kept 30 days, visible to its owner only.

A stored response keeps the request as it ran — its messages are the whole resolved context, the
history of the chain included — and the completion. Continuing it starts from that context plus the
answer, so a response survives the deletion of its ancestors, and the continued prompt begins with
exactly the tokens the engine saw last time (its prefix cache reuses them).
"""

from __future__ import annotations

import asyncio
import time

from localxai import codec
from localxai.auth import ApiKey
from localxai.chat import StoredResponse
from localxai.errors import NotFound
from localxai.ids import is_id, new_id
from localxai.store.store import Store

RESPONSE_TTL_S = 30 * 24 * 3600
EXPIRY_EVERY_S = 3600.0  # how often saving also deletes what expired


def new_response_id() -> str:
    """xAI's ids are bare UUIDs; output items reuse them (msg_<id>, rs_<id>)."""
    return new_id()


class Conversations:
    def __init__(self, store: Store, ttl_s: float = RESPONSE_TTL_S) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._expired_at = 0.0

    async def save(self, response: StoredResponse, caller: ApiKey) -> None:
        if time.monotonic() - self._expired_at > EXPIRY_EVERY_S:
            self._expired_at = time.monotonic()
            await self.expire()
        body = codec.dumps(response)
        await asyncio.to_thread(self._store.save_response, response.id, caller.key_id, body, float(response.created))

    async def keep(self, response: StoredResponse, caller: ApiKey) -> None:
        """Save a finished (or failed) response for its caller if the request asked for it (`store` over
        REST, `store_messages` over gRPC: `response.stored`); else nothing."""
        if response.stored:
            await self.save(response, caller)

    async def history(self, previous_id: str | None, caller: ApiKey) -> StoredResponse | None:
        """The stored response a request continues (`previous_response_id`; None: it starts a new one)."""
        return None if previous_id is None else await self.get(previous_id, caller)

    async def get(self, response_id: str, caller: ApiKey) -> StoredResponse:
        """The caller's stored response; unknown, expired, deleted and other keys' ids are all 404."""
        body = None
        if is_id(response_id):  # never hand the database a string it did not make
            not_before = time.time() - self._ttl_s
            body = await asyncio.to_thread(self._store.load_response, response_id, caller.key_id, not_before)
        if body is None:
            raise NotFound("No responses could be found with the given response_id")
        stored = codec.loads(body)
        assert isinstance(stored, StoredResponse)
        return stored

    async def delete(self, response_id: str, caller: ApiKey) -> None:
        deleted = is_id(response_id) and await asyncio.to_thread(
            self._store.delete_response, response_id, caller.key_id
        )
        if not deleted:
            raise NotFound("No responses could be found with the given response_id")

    async def expire(self) -> int:
        return await asyncio.to_thread(self._store.expire_responses, time.time() - self._ttl_s)
