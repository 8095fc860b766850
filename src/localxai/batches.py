"""The Batch API: named groups of requests that run in the background, results listed when done.

A batch's requests are checked when they are added, exactly as live ones are (model, access, template,
prompt length): one that fails its checks is recorded failed with its error, and only it fails. The
others become rows of the deferred queue (deferred.py), whose worker runs them at background priority:
the engine gives them only what interactive requests leave (engines/llamacpp/scheduler.py). They are
as durable as deferred completions: a crash re-queues what was running, a finished result is stored
once. Batch requests do not count against a key's rate limits (as at xAI); their usage is in the ledger.

A batch runs for BATCH_WINDOW_S after its creation (xAI: "typically within 24 hours"); what is still
pending then is cancelled. The batch and its results are kept RETENTION_S after creation (docs/api.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from localxai import codec
from localxai import errors as e
from localxai.auth import ApiKey
from localxai.chat import ChatRequest, Completion
from localxai.deferred import DeferredCompletions
from localxai.files import Files
from localxai.service import ChatService
from localxai.store.batches import BatchRecord, BatchRows, Counts, NewRequest, RequestRow
from localxai.store.store import Store
from localxai.tasks import Background, every

log = logging.getLogger(__name__)

BATCH_WINDOW_S = 24 * 3600
RETENTION_S = 30 * 24 * 3600
MAX_ADD_BYTES = 25 * 1024 * 1024  # one add call (xAI's limit)
MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_NAME = 1024
MAX_REQUEST_ID = 256
CLEANUP_S = 60.0
ENDPOINTS = ("/v1/chat/completions", "/v1/responses")


@dataclass(frozen=True)
class Submitted:
    """One request as the client sent it: its id (None: the server names it), the endpoint it was
    written for, the model it names ("" when unreadable) and how to read it. `read` raises the client's
    error for a bad request; that fails only this request."""

    batch_request_id: str | None
    endpoint: str
    model: str
    read: Callable[[], ChatRequest]


@dataclass(frozen=True)
class Result:
    """A finished request: its completion, or the error it ended with (`cancelled` for a cancelled one)."""

    row: RequestRow
    completion: Completion | None
    error: e.Status | None
    message: str | None


JsonlReader = Callable[[bytes], list[Submitted]]


class Batches:
    def __init__(
        self, service: ChatService, store: Store, files: Files, deferred: DeferredCompletions, jsonl: JsonlReader
    ) -> None:
        self._service = service
        self._rows = BatchRows(store)
        self._files = files
        self._deferred = deferred
        self._jsonl = jsonl
        self._janitor = Background("batches-cleanup")

    async def start(self) -> None:
        """Cancel what expired batches still have pending and remove old batches, now and every CLEANUP_S."""
        self._janitor.start(every(CLEANUP_S, self._clean, "batch cleanup"))

    async def close(self) -> None:
        await self._janitor.close()

    async def _clean(self) -> None:
        cancelled, deleted = await asyncio.to_thread(self._rows.expire, time.time(), RETENTION_S)
        if cancelled or deleted:
            log.info("batches: %d expired (pending requests cancelled), %d removed", cancelled, deleted)

    # -- the API ----------------------------------------------------------------------------------

    async def create(self, name: str, input_file_id: str | None, caller: ApiKey) -> BatchRecord:
        """A new batch; from `input_file_id` (a JSONL file of the caller's), holding its lines and sealed."""
        if len(name) > MAX_NAME:
            raise e.InvalidArgument(f"name is longer than {MAX_NAME} characters.")
        now = time.time()
        requests: list[NewRequest] = []
        if input_file_id:
            _, chunks = await self._files.content(input_file_id, caller.key_id)
            data = b"".join([chunk async for chunk in chunks])
            requests = await self._checked(await asyncio.to_thread(self._jsonl, data), caller)
        batch = BatchRecord(
            id=f"batch_{uuid.uuid4()}",
            owner=caller.key_id,
            name=name,
            input_file_id=input_file_id or None,
            created_at=now,
            expires_at=now + BATCH_WINDOW_S,
            cancelled_at=None,
            cancel_message=None,
            counts=Counts(),
        )
        await asyncio.to_thread(self._rows.create, batch, requests)
        self._deferred.wake()
        return await self.get(batch.id, caller)

    async def add(self, batch_id: str, submitted: Sequence[Submitted], caller: ApiKey) -> None:
        """Check and append requests, all or none (a request that fails its checks is added failed)."""
        requests = await self._checked(submitted, caller)
        await asyncio.to_thread(self._rows.add, batch_id, caller.key_id, requests, time.time())
        self._deferred.wake()

    async def get(self, batch_id: str, caller: ApiKey) -> BatchRecord:
        record = await asyncio.to_thread(self._rows.get, batch_id, caller.key_id)
        if record is None:
            raise e.NotFound(f"Cannot find batch with ID {batch_id[:100]}")
        return record

    async def page(self, caller: ApiKey, limit: int | None, token: str | None) -> tuple[list[BatchRecord], str]:
        """A page of the caller's batches, newest first, and the next page's token ("" after the last)."""
        records, more = await asyncio.to_thread(self._rows.page, caller.key_id, _limit(limit), token or None)
        return records, records[-1].id if more else ""

    async def cancel(self, batch_id: str, caller: ApiKey) -> BatchRecord:
        record = await asyncio.to_thread(self._rows.cancel, batch_id, caller.key_id, time.time())
        if record is None:
            raise e.NotFound(f"Cannot find batch with ID {batch_id[:100]}")
        self._deferred.recheck()  # its running requests stop now, not at their next lease renewal
        return record

    async def requests(
        self, batch_id: str, caller: ApiKey, limit: int | None, token: str | None, states: Sequence[str] = ()
    ) -> tuple[list[RequestRow], str]:
        rows, more = await self._page(batch_id, caller, limit, token, states, finished=False)
        return rows, str(rows[-1].ordinal) if more else ""

    async def results(
        self, batch_id: str, caller: ApiKey, limit: int | None, token: str | None
    ) -> tuple[list[Result], str]:
        """The finished requests (succeeded, failed or cancelled), in the order they were added."""
        rows, more = await self._page(batch_id, caller, limit, token, (), finished=True)
        return [_result(row) for row in rows], str(rows[-1].ordinal) if more else ""

    async def result(self, batch_id: str, batch_request_id: str, caller: ApiKey) -> tuple[RequestRow, Result | None]:
        """One request and, once it has finished, its result."""
        await self.get(batch_id, caller)
        row = await asyncio.to_thread(self._rows.request, batch_id, caller.key_id, batch_request_id)
        if row is None:
            raise e.NotFound(f"Batch {batch_id} has no request with batch_request_id {batch_request_id[:100]!r}.")
        return row, None if row.state == "pending" else _result(row)

    # -- helpers ----------------------------------------------------------------------------------

    async def _page(
        self,
        batch_id: str,
        caller: ApiKey,
        limit: int | None,
        token: str | None,
        states: Sequence[str],
        finished: bool,
    ) -> tuple[list[RequestRow], bool]:
        after = 0
        if token:
            if not token.isdigit() or len(token) > 12:
                raise e.InvalidArgument(f"Invalid pagination token {token[:64]!r}.")
            after = int(token)
        page = await asyncio.to_thread(
            self._rows.requests, batch_id, caller.key_id, _limit(limit), after, states, finished
        )
        if page is None:
            raise e.NotFound(f"Cannot find batch with ID {batch_id[:100]}")
        return page

    async def _checked(self, submitted: Sequence[Submitted], caller: ApiKey) -> list[NewRequest]:
        """Each request checked as a live one is (without counting against rate limits), in order."""
        named = [s.batch_request_id for s in submitted if s.batch_request_id is not None]
        for request_id in named:
            if not request_id or len(request_id) > MAX_REQUEST_ID:
                raise e.InvalidArgument(f"batch_request_id must be 1 to {MAX_REQUEST_ID} characters.")
        twice = next((i for i, n in Counter(named).items() if n > 1), None)
        if twice is not None:
            raise e.InvalidArgument(f"batch_request_id {twice!r} appears more than once.")
        out = []
        for item in submitted:
            await asyncio.sleep(0)  # thousands of requests: let the loop serve others between them
            row_id = str(uuid.uuid4())
            request_id = item.batch_request_id or f"req_{row_id}"
            try:
                payload = await self._admitted(item, caller)
            except e.LocalXAIError as exc:
                error = exc if exc.public else e.InternalError()
                out.append(
                    NewRequest(
                        row_id,
                        request_id,
                        item.endpoint,
                        item.model[:200],
                        None,
                        exc.status.name,
                        e.public_message(error),
                    )
                )
                continue
            out.append(NewRequest(row_id, request_id, item.endpoint, item.model[:200], payload))
        return out

    async def _admitted(self, item: Submitted, caller: ApiKey) -> str:
        if item.endpoint not in ENDPOINTS:
            raise e.InvalidArgument(
                f"Unsupported endpoint {item.endpoint[:100]!r} in a batch request: use one of {', '.join(ENDPOINTS)}."
            )
        request = item.read()
        if request.server_tools:
            raise e.InvalidArgument("Server-side tools are not run in batch requests; send them to /v1/responses.")
        admission = await self._service.admit(replace(request, stream=False), caller, counted=False)
        await self._service.check(admission)
        return codec.dumps(admission.request)


def _limit(limit: int | None) -> int:
    if limit is None or limit == 0:
        return DEFAULT_PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise e.InvalidArgument(f"limit must be between 1 and {MAX_PAGE}, got {limit}.")
    return limit


def _result(row: RequestRow) -> Result:
    if row.state == "succeeded" and row.result is not None:
        completion = codec.loads(row.result)
        assert isinstance(completion, Completion)
        return Result(row, completion, None, None)
    if row.state == "cancelled":
        return Result(row, None, e.Status.CANCELLED, "The request was cancelled before it ran.")
    status = e.Status.__members__.get(row.error_kind or "", e.Status.INTERNAL)
    if row.error_kind == "ABANDONED":
        status = e.Status.INTERNAL
    return Result(row, None, status, row.error_message or "internal error")
