"""Background responses (`background: true` on the Responses API, as OpenAI defines them; xAI lists the
field as unsupported): the request is checked and stored at once, run later from the durable deferred
queue, polled with GET, cancelled, and its event stream followed or replayed from any point.

A background response is a stored response (conversations.py) with a queue row (store/background.py).
While it runs, its events are appended to a log in chunks of at most FLUSH_S; a reader of the stream, in
this process or another, replays the log and follows it until the run ends, so every reader sees the same
events in the same order (the REST adapter numbers them the same way each time). The queue row decides
the outcome: the run stores its final response only while the row is still running, a cancel only while
it is pending or running. A run cut by a crash is run again from the start (its lease runs out) and its
log begins anew; a reader that was following the cut run is told to read again from the start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

import anyio

from localxai import codec
from localxai import errors as e
from localxai.auth import ApiKey
from localxai.chat import Completion, Event, Progress, StoredResponse, Usage
from localxai.conversations import Conversations, Turn, TurnStream
from localxai.deferred import DeferredCompletions
from localxai.ids import new_id
from localxai.service import ChatService, ChatStream, Collector
from localxai.store.background import ENDPOINT, ResponseRuns
from localxai.store.store import Store

log = logging.getLogger(__name__)

FLUSH_S = 0.2  # how long a run's events wait before they are logged (and a reader sees them)
POLL_S = 0.5  # how often a reader looks for a run in another process
API = "background"  # the usage ledger's name for these runs
_LIVE = (Progress.QUEUED, Progress.IN_PROGRESS)


class RunFailed(e.LocalXAIError):
    """A background run ended with an error; its message was made safe to show when the run stored it."""


class BackgroundResponses:
    def __init__(
        self, conversations: Conversations, service: ChatService, store: Store, deferred: DeferredCompletions
    ) -> None:
        self._conversations = conversations
        self._service = service
        self._rows = ResponseRuns(store)
        self._deferred = deferred
        self._logged = asyncio.Condition()  # notified whenever a run here logs events or ends
        deferred.serve(ENDPOINT, self._run)

    async def submit(self, turn: Turn, caller: ApiKey) -> StoredResponse:
        """Check the turn as a live one is checked (raises the client's error) and queue it."""
        if not turn.store:
            raise e.InvalidArgument("background requires store=true: it is read back from the store.")
        request = await self._conversations.context(turn, caller)
        planned = await self._service.attach(request, caller)  # access; long documents become searched
        checked = not planned.server_tools
        if checked:  # a single model turn: refused now as a live one would be, and counted now
            admission = await self._service.admit(planned, caller)
            await self._service.check(admission)
        response_id, now, info = new_id(), int(time.time()), self._service.get_model(request.model)
        queued = StoredResponse(
            id=response_id,
            created=now,
            request=request,
            completion=Completion(response_id, now, info.id, info.fingerprint, (), Usage()),
            instructions=turn.instructions,
            previous_response_id=turn.previous_id,
            sealed_reasoning=turn.sealed_reasoning,
            tool_outputs=turn.tool_outputs,
            background=True,
            progress=Progress.QUEUED,
        )
        payload = json.dumps({"caller": dataclasses.asdict(caller), "counted": checked})
        await asyncio.to_thread(self._rows.queue, response_id, caller.key_id, codec.dumps(queued), payload, now)
        self._deferred.wake()
        return queued

    async def get(self, response_id: str, caller: ApiKey) -> StoredResponse:
        """The caller's stored response as it stands now (a background one with its run's state)."""
        stored = await self._conversations.get(response_id, caller)
        if not (stored.background and stored.progress in _LIVE):
            return stored
        state = await asyncio.to_thread(self._rows.state, response_id)
        if state is None or state.status == "failed":  # failed by the queue (its server died time after time)
            message = state.error_message if state is not None else None
            return replace(stored, progress=Progress.FINISHED, error=message or "The response's run was lost.")
        if state.status == "cancelled":
            return replace(stored, progress=Progress.CANCELLED)
        if state.status == "running":
            return replace(stored, progress=Progress.IN_PROGRESS)
        return stored  # queued, or done a moment ago (its final response is being stored)

    async def cancel(self, response_id: str, caller: ApiKey) -> StoredResponse:
        """Cancel a background response that has not ended; one that has is answered as it is."""
        stored = await self._conversations.get(response_id, caller)
        if not stored.background:
            raise e.InvalidArgument("Only a response created with background: true can be cancelled.")
        if stored.progress not in _LIVE:
            return stored
        was = await asyncio.to_thread(self._rows.cancel, response_id, time.time())
        if was == "pending":  # no run holds it: the final response is written here
            cancelled = replace(stored, progress=Progress.CANCELLED, completed=int(time.time()))
            await asyncio.to_thread(self._rows.store_cancelled, response_id, codec.dumps(cancelled))
        elif was == "running":
            self._deferred.recheck()  # a run in this process stops now; one elsewhere at its next lease renewal
        return await self.get(response_id, caller)

    async def follow(self, response_id: str, caller: ApiKey) -> TurnStream:
        """The response's events from the first, followed until its run ends: `response` is the response as
        it was queued, and the final one once the events end."""
        stored = await self.get(response_id, caller)
        if not stored.background:
            raise e.InvalidArgument("Only a response created with background: true can be streamed again.")
        queued = replace(stored, progress=Progress.QUEUED, completion=replace(stored.completion, choices=()))
        c = stored.completion
        running = TurnStream(queued, Collector(1), ChatStream(c.id, c.created, c.model, c.fingerprint, _nothing()))
        running.stream = replace(running.stream, events=self._replayed(running, caller))
        return running

    async def _replayed(self, running: TurnStream, caller: ApiKey) -> AsyncGenerator[Event, None]:
        response_id = running.response.id
        cursor: tuple[int, int] | None = None
        while True:
            # The run's state first: every event of a run that has ended is logged by then.
            state = await asyncio.to_thread(self._rows.state, response_id)
            for chunk in await asyncio.to_thread(self._rows.events, response_id, cursor):
                if cursor is not None and chunk.run != cursor[0]:
                    raise e.Unavailable(
                        "The server running this response stopped and it was started again: stream it again "
                        "from the start (without starting_after)."
                    )
                cursor = (chunk.run, chunk.chunk)
                for event in codec.loads(chunk.events):
                    running.collector.add(event)
                    yield event
            if state is None or state.status not in ("pending", "running"):
                final = await self.get(response_id, caller)  # the whole response, read once, at the end
                running.response = final
                if final.error is not None:
                    raise RunFailed(final.error)
                return
            async with self._logged:
                with anyio.move_on_after(POLL_S):
                    await self._logged.wait()

    # -- the run (the deferred worker calls it for a claimed row) ----------------------------------

    async def _run(self, response_id: str, payload: str) -> None:
        spec = json.loads(payload)
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["caller"].items()}
        caller = ApiKey(**fields)  # as it was at submission, like the owner of a batch
        try:
            queued = await self._conversations.get(response_id, caller)
        except e.NotFound:  # deleted (or expired) before it ran: its row went with it
            return
        run = _Run(self._rows, self._logged, response_id, time.time_ns())
        await asyncio.to_thread(self._rows.start_run, response_id, run.number)
        collector, stream = Collector(1), None
        try:
            stream = await self._conversations.agent.generate(queued.request, caller, API, counted=not spec["counted"])
            async for event in stream.events:
                collector.add(event)
                await run.add(event)
            await run.flush()
            await self._settle(self._final(queued, collector, stream))
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                await run.flush()
                state = await asyncio.to_thread(self._rows.state, response_id)
                if state is not None and state.status == "cancelled":  # else: stopping; run again next time
                    cancelled = replace(self._final(queued, collector, stream), progress=Progress.CANCELLED)
                    await asyncio.to_thread(self._rows.store_cancelled, response_id, codec.dumps(cancelled))
            raise
        except Exception as exc:
            if isinstance(exc, e.ResourceExhausted) and stream is None:
                raise  # no capacity (or rate) now: the worker puts it back in the queue
            if not isinstance(exc, e.LocalXAIError):
                log.exception("background response %s failed", response_id)
            await run.flush()
            await self._settle(replace(self._final(queued, collector, stream), error=e.public_message(exc)))
        finally:
            await run.ended()

    async def _settle(self, final: StoredResponse) -> None:
        """Store the run's final response, unless it was cancelled meanwhile: then it ends cancelled (the
        canceller of a running response leaves the final response to its run)."""
        status = "done" if final.error is None else "failed"
        body = codec.dumps(final)
        if not await asyncio.to_thread(self._rows.finish, final.id, body, status, time.time(), final.error):
            cancelled = replace(final, progress=Progress.CANCELLED, error=None)
            await asyncio.to_thread(self._rows.store_cancelled, final.id, codec.dumps(cancelled))

    @staticmethod
    def _final(queued: StoredResponse, collector: Collector, stream: ChatStream | None) -> StoredResponse:
        completion = queued.completion
        if stream is not None:  # as far as it arrived: a cut or failed run keeps what it produced
            completion = replace(collector.completion(stream, partial=True), id=queued.id, created=queued.created)
        return replace(queued, completion=completion, completed=int(time.time()), progress=Progress.FINISHED)


class _Run:
    """One run's event log: events gathered for FLUSH_S, then appended as the next chunk."""

    def __init__(self, rows: ResponseRuns, logged: asyncio.Condition, response_id: str, number: int) -> None:
        self._rows = rows
        self._logged = logged
        self._response_id = response_id
        self.number = number
        self._chunk = 0
        self._pending: list[Event] = []
        self._since = time.monotonic()

    async def add(self, event: Event) -> None:
        self._pending.append(event)
        if time.monotonic() - self._since >= FLUSH_S:
            await self.flush()

    async def flush(self) -> None:
        self._since = time.monotonic()
        if not self._pending:
            return
        events, self._pending = codec.dumps(self._pending), []
        await asyncio.to_thread(self._rows.append, self._response_id, self.number, self._chunk, events)
        self._chunk += 1
        await self.ended()

    async def ended(self) -> None:
        """Wake this process's readers."""
        async with self._logged:
            self._logged.notify_all()


async def _nothing() -> AsyncGenerator[Event, None]:
    return
    yield
