"""Stored conversations: the one stored-response resource of both wires (the Responses API's `store`
and `previous_response_id`, gRPC's `store_messages` and `previous_response_id`), kept 30 days, visible
to its owner only, and the lifecycle of a turn on it: load the chain -> continue it -> generate -> store
the answer, or the cut or failed stream. The adapters only translate.

A stored response keeps the request as it ran — its messages are the whole resolved context, the
history of the chain included — and the completion. Continuing it starts from that context plus the
answer, so a response survives the deletion of its ancestors, and the continued prompt begins with
exactly the tokens the engine saw last time (its prefix cache reuses them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace

import anyio

from localxai import codec, logs
from localxai.agent.loop import Agent
from localxai.auth import ApiKey
from localxai.chat import (
    ChatRequest,
    Completion,
    Event,
    Message,
    Progress,
    Role,
    Sampling,
    StoredResponse,
    TextPart,
    Usage,
)
from localxai.errors import InvalidArgument, LocalXAIError, NotFound, PermissionDenied, public_message
from localxai.ids import is_id
from localxai.service import ChatService, ChatStream, Collector, server_tool_refused
from localxai.store.store import Store

RESPONSE_TTL_S = 30 * 24 * 3600
EXPIRY_EVERY_S = 3600.0  # how often saving also deletes what expired
COMPACT_PROMPT = (
    "Summarize the conversation so far for your own later use: the facts, names and numbers, the "
    "decisions taken, the open questions and what the user wants. Write only the summary."
)
COMPACT_MAX_TOKENS = 1024
COMPACT_CONTEXT_SHARE = 4  # a summary takes at most this fraction of the model's context
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Turn:
    """One request on a stored conversation, as either wire asks it."""

    request: ChatRequest  # this turn's own input and settings (the chain's history is added here)
    previous_id: str | None = None
    instructions: str | None = None  # system text; it starts a chain, so not with `previous_id`
    store: bool = True
    sealed_reasoning: bool = False  # the answer's thinking goes back to the client sealed
    tool_outputs: tuple[str, ...] = ()  # server-side tool kinds whose call outputs are shown (`include`)


class TurnStream:
    """A turn being generated. Its `stream`'s events are the engine's; when they end, the response is
    stored (finished, cut at shutdown, or failed after it started) before the iteration ends, so a
    client that continues at once finds it. `response` is the response as it stands: without an
    answer until then, afterwards as stored."""

    def __init__(self, response: StoredResponse, collector: Collector, stream: ChatStream):
        self.response = response
        self.collector = collector  # the answer as far as it has arrived
        self.stream = stream


class Conversations:
    def __init__(
        self,
        store: Store,
        service: ChatService,
        drop_server_tools: bool = False,
        ttl_s: float = RESPONSE_TTL_S,
        agent: Agent | None = None,
    ) -> None:
        self._store = store
        self._service = service
        self.agent = agent or Agent(service)  # runs the server-side tools it has executors for
        self._drop_server_tools = drop_server_tools  # `--server-tools drop`: ignore them rather than refuse
        self._ttl_s = ttl_s
        self._expired_at = 0.0

    # -- a turn ---------------------------------------------------------------------------------

    async def context(self, turn: Turn, caller: ApiKey) -> ChatRequest:
        """The turn's request with the whole context it runs on; raises the client's error."""
        if turn.instructions is not None and turn.previous_id is not None:
            raise InvalidArgument("instructions cannot be combined with previous_response_id: the chain keeps its own.")
        if turn.store and turn.request.n != 1:
            raise InvalidArgument("A stored conversation continues from one answer: n must be 1 when it is stored.")
        history = await self.history(turn.previous_id, caller)
        if history is not None and history.progress in (Progress.QUEUED, Progress.IN_PROGRESS):
            raise InvalidArgument(
                f"Response {history.id} is still running in the background: continue it once it has ended."
            )
        context = list(history.context()) if history is not None else []
        if turn.instructions:
            context.append(Message(Role.SYSTEM, (TextPart(turn.instructions),)))
        messages = (*context, *turn.request.messages)
        _check_call_results(messages)
        runnable = []
        for tool in turn.request.server_tools:
            if not caller.may_run(tool.kind):
                raise PermissionDenied(f"The API key {caller.redacted} may not use the server-side tool {tool.kind!r}.")
            why = self.agent.unavailable(tool)
            if why is None:
                runnable.append(tool)
            elif self._drop_server_tools:
                log.info("dropped server-side tool %s (--server-tools drop): %s", tool.kind, why)
            else:
                raise server_tool_refused(tool.kind, why)
        return replace(turn.request, messages=messages, server_tools=tuple(runnable))

    async def stream(self, turn: Turn, caller: ApiKey, api: str = "rest") -> TurnStream:
        """Start the turn; raises client errors before any output exists."""
        request = await self.context(turn, caller)
        stream = await self.agent.generate(request, caller, api)
        started = Completion(stream.id, stream.created, stream.model, stream.fingerprint, (), Usage())
        response = StoredResponse(
            id=stream.id,  # one id for the generation and the response (gRPC answers with it)
            created=int(time.time()),
            request=request,
            completion=started,
            instructions=turn.instructions,
            previous_response_id=turn.previous_id,
            stored=turn.store,
            sealed_reasoning=turn.sealed_reasoning,
            tool_outputs=turn.tool_outputs,
        )
        running = TurnStream(response, Collector(request.n), stream)
        running.stream = replace(stream, events=self.kept(running, stream, caller))
        return running

    async def complete(self, turn: Turn, caller: ApiKey, api: str = "rest") -> StoredResponse:
        """The turn run to its end: the response, stored if the turn asked for it."""
        running = await self.stream(turn, caller, api)
        async for _ in running.stream.events:
            pass
        return running.response

    async def kept(self, turn: TurnStream, stream: ChatStream, caller: ApiKey) -> AsyncGenerator[Event, None]:
        """`stream`'s events, collected as they pass, and the response stored when they end. A client
        that goes away (the generator is closed) stores nothing: it asked for no answer any more."""
        try:
            async for event in stream.events:
                turn.collector.add(event)
                yield event
        except Exception as exc:
            rid = logs.request_id.get()  # "-" outside a request
            turn.response = replace(turn.response, error=public_message(exc, rid if rid != "-" else ""))
            try:
                with anyio.CancelScope(shield=True):
                    await self.keep(turn.response, caller)
            except LocalXAIError:  # the store is down too: the client still gets its error
                log.warning("could not store the failure of response %s", turn.response.id)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await stream.events.aclose()
        # A stream cut at shutdown has no usage: it is stored as far as it arrived, as it was sent.
        turn.response = replace(turn.response, completion=turn.collector.completion(stream, partial=True),
                                completed=int(time.time()))  # fmt: skip
        await self.keep(turn.response, caller)

    async def compact(self, request: ChatRequest, caller: ApiKey) -> Completion:
        """A summary of `request`'s context, to stand in for it: at most a quarter of the model's context
        (and COMPACT_MAX_TOKENS), so the compacted conversation has room to go on (a small base model's
        summary can ramble to its limit)."""
        context_length = self._service.get_model(request.model).context_length
        ask = Message(Role.USER, (TextPart(COMPACT_PROMPT),))
        budget = min(COMPACT_MAX_TOKENS, context_length // COMPACT_CONTEXT_SHARE)
        sampling = Sampling(temperature=0.0, max_tokens=budget)
        summarise = ChatRequest(model=request.model, messages=(*request.messages, ask), sampling=sampling)
        return await self._service.complete(summarise, caller)

    # -- the store ------------------------------------------------------------------------------

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


def _check_call_results(messages: tuple[Message, ...]) -> None:
    """Every tool result answers a call made before it in the conversation."""
    calls: set[str] = set()
    for message in messages:
        calls.update(call.id for call in message.tool_calls)
        if message.role is Role.TOOL and message.tool_call_id is not None and message.tool_call_id not in calls:
            raise InvalidArgument(f"No function call with call_id {message.tool_call_id!r} precedes its output.")
