"""The agent loop: a request with server-side tools runs as model turn -> the server's calls (in
parallel) -> their results in the context -> the next turn, until the model answers, calls a client's
function (the loop ends with it, as at xAI), or runs out of turns (`max_turns`, capped by the server).

Both wires use it below the conversation service. One stream comes out: each turn's text and
thinking as it is generated, a ServerCallEvent when a call starts and when it ends, a StepDone when a
turn's calls are in the context, then the answer's end and one usage report for all turns (each turn
is also accounted on its own, as it ends, by the chat service).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Protocol

from localxai.agent.base import Executor, Outcome, Session, Toolset, capped, failed
from localxai.auth import ApiKey
from localxai.chat import (
    CallStatus,
    ChatRequest,
    Event,
    Finished,
    FinishReason,
    Message,
    ReasoningDelta,
    Role,
    ServerCall,
    ServerCallEvent,
    ServerTool,
    StepDone,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolMode,
    Usage,
    UsageReport,
)
from localxai.errors import InvalidArgument, LocalXAIError, public_message
from localxai.service import ChatService, ChatStream

log = logging.getLogger(__name__)


class ToolObserver(Protocol):
    def tool_call(self, tool: str, status: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class AgentLimits:
    max_turns: int = 10  # model turns per response (a request's max_turns is capped here)
    max_calls_per_turn: int = 8  # calls beyond these in one turn fail without running
    call_timeout_s: float = 60.0  # any one call, whatever its executor bounds itself by


# Why a tool without an executor is not served, by kind (the rest: "not served by localxai").
NOT_SERVED = {
    "code_execution": "code execution is off on this server (--code-execution)",
    "web_search": "web search needs a search backend: start the server with --web-search-url (a SearXNG instance)",
    "mcp": "remote MCP servers are off on this server (--mcp)",
    "x_search": "X search needs xAI's index of X, which a self-hosted server does not have",
    "image_generation": "image generation is not served by localxai",
}


class Agent:
    def __init__(
        self,
        service: ChatService,
        executors: Sequence[Executor] = (),
        limits: AgentLimits | None = None,
        observer: ToolObserver | None = None,
    ) -> None:
        self._service = service
        self._observer = observer
        self._all = tuple(executors)
        self._executors: Mapping[str, Executor] = {kind: e for e in executors for kind in e.kinds}
        self.limits = limits or AgentLimits()

    async def start(self) -> None:
        """Each executor checks once that it can work here (a sandbox that starts, ...)."""
        for executor in self._all:
            await executor.start()

    def unavailable(self, tool: ServerTool) -> str | None:
        """Why `tool` cannot run on this server (None: it can)."""
        executor = self._executors.get(tool.kind)
        if executor is None:
            return NOT_SERVED.get(tool.kind, "it is not served by localxai")
        return executor.unavailable()

    async def generate(
        self, request: ChatRequest, caller: ApiKey | None = None, api: str = "rest", counted: bool = True
    ) -> ChatStream:
        """Start the request; with server-side tools, the loop. Raises client errors before any output.
        Not `counted`: its first model turn was counted against the rate limits already (a background one)."""
        request = await self._service.attach(request, caller)
        if not request.server_tools:
            return await self._service.generate(request, caller, api, counted)
        if request.n != 1:
            raise InvalidArgument("Server-side tools run one conversation: n must be 1.")
        if request.max_turns is not None and request.max_turns < 1:
            raise InvalidArgument(f"max_turns must be at least 1, got {request.max_turns}.")
        session = Session(caller)
        try:
            toolsets = [await self._executors[t.kind].open(t, session) for t in request.server_tools]
            by_name = _functions(request, toolsets)
            first = await self._service.generate(
                _turn_request(request, request.messages, toolsets, 0), caller, api, counted
            )
        except BaseException:
            await session.exits.aclose()
            raise
        events = self._loop(request, first, session, toolsets, by_name, caller, api)
        return replace(first, events=events)

    async def _loop(
        self,
        request: ChatRequest,
        stream: ChatStream,
        session: Session,
        toolsets: list[Toolset],
        by_name: dict[str, Toolset],
        caller: ApiKey | None,
        api: str,
    ) -> AsyncGenerator[Event, None]:
        turns = min(request.max_turns or self.limits.max_turns, self.limits.max_turns)
        budget = request.sampling.max_tokens  # for all turns together
        messages = list(request.messages)
        total = Usage()
        used: list[str] = []
        try:
            for turn in range(turns):
                text: list[str] = []
                thoughts: list[str] = []
                calls: list[ToolCall] = []
                reason = FinishReason.STOP
                async with aclosing(stream.events):
                    async for event in stream.events:
                        if isinstance(event, TextDelta):
                            text.append(event.text)
                            yield event
                        elif isinstance(event, ReasoningDelta):
                            thoughts.append(event.text)
                            yield event
                        elif isinstance(event, ToolCallDelta):
                            calls.extend(event.calls)
                        elif isinstance(event, Finished):
                            reason = event.reason
                        elif isinstance(event, UsageReport):
                            total = _added(total, event.usage)
                server = [replace(c, kind=by_name[c.name].kind) for c in calls if c.name in by_name]
                client = [c for c in calls if c.name not in by_name]
                if not server:
                    for event in _end(client, reason):
                        yield event
                    break
                step = Message(Role.ASSISTANT, (TextPart("".join(text)),) if text else (), tool_calls=tuple(server),
                               reasoning="".join(thoughts) or None)  # fmt: skip
                results: list[Message] = []
                async for event in self._run_calls(server, by_name):
                    if event.call.status is not CallStatus.IN_PROGRESS:
                        results.append(
                            Message(Role.TOOL, (TextPart(event.call.output),), tool_call_id=event.call.call.id)
                        )
                        if event.call.status is CallStatus.COMPLETED:
                            used.append(event.call.call.kind)
                    yield event
                results.sort(key=lambda m: [c.id for c in server].index(m.tool_call_id or ""))
                messages += [step, *results]
                yield StepDone(0, (step, *results))
                if client:  # a client's function too: it gets the call, the server's results stay in the context
                    for event in _end(client, FinishReason.TOOL_CALLS):
                        yield event
                    break
                spent = total.completion_tokens + total.reasoning_tokens
                if budget is not None and spent >= budget:
                    yield Finished(0, FinishReason.LENGTH)
                    break
                if turn + 1 == turns:
                    yield Finished(0, FinishReason.MAX_TURNS)
                    break
                left = None if budget is None else budget - spent
                next_request = _turn_request(request, tuple(messages), toolsets, turn + 1, left)
                stream = await self._service.generate(next_request, caller, api)
            yield UsageReport(replace(total, server_tools_used=tuple(used)))
        finally:
            await session.exits.aclose()
            await self._service.record_server_tools(caller, stream.model, len(used))

    async def _run_calls(
        self, calls: list[ToolCall], by_name: dict[str, Toolset]
    ) -> AsyncGenerator[ServerCallEvent, None]:
        """Each call started (reported), run in parallel, and reported as it ends."""
        for call in calls:
            yield ServerCallEvent(0, ServerCall(call, server_label=by_name[call.name].label))
        ended: asyncio.Queue[ServerCall] = asyncio.Queue()

        async def run(index: int, call: ToolCall) -> None:
            toolset = by_name[call.name]
            started = time.monotonic()
            if index >= self.limits.max_calls_per_turn:
                outcome = failed(f"more than {self.limits.max_calls_per_turn} calls in one turn; this one did not run")
            else:
                outcome = await self._outcome(toolset, call)
            status = CallStatus.FAILED if outcome.error is not None else CallStatus.COMPLETED
            seconds = time.monotonic() - started
            log.info("%s call %s %s in %.2f s", call.kind, call.name, status.value, seconds)
            if self._observer is not None:
                self._observer.tool_call(call.kind, status.value, seconds)
            await ended.put(
                ServerCall(call, status, outcome.output, outcome.error, outcome.sources, toolset.label, outcome.results)
            )

        tasks = [asyncio.ensure_future(run(i, call)) for i, call in enumerate(calls)]
        try:
            for _ in calls:
                yield ServerCallEvent(0, await ended.get())
        finally:  # a client that went away, or shutdown: the calls still running are stopped
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _outcome(self, toolset: Toolset, call: ToolCall) -> Outcome:
        """The call's outcome; any failure (the model's bad arguments, a timeout, a refused URL, a broken
        tool) is a failed call the model reads about, never the response's failure."""
        try:
            async with asyncio.timeout(self.limits.call_timeout_s):
                outcome = await toolset.run(call)
        except TimeoutError:
            return failed(f"{call.name} did not finish within {self.limits.call_timeout_s:g} s")
        except LocalXAIError as exc:
            return failed(public_message(exc, ""))
        except Exception:
            log.exception("server-side tool %s failed", call.name)
            return failed(f"{call.name} failed inside the server")
        return replace(outcome, output=capped(outcome.output))


def _end(calls: list[ToolCall], reason: FinishReason) -> list[Event]:
    """The answer's end: the client's calls (if any) and the finish."""
    return [ToolCallDelta(0, tuple(calls)), Finished(0, FinishReason.TOOL_CALLS)] if calls else [Finished(0, reason)]


def _functions(request: ChatRequest, toolsets: list[Toolset]) -> dict[str, Toolset]:
    """Every model-side function name -> the toolset that runs it; a name given twice is the client's error."""
    names = {t.name for t in request.tools}
    by_name: dict[str, Toolset] = {}
    for toolset in toolsets:
        for function in toolset.functions:
            if function.name in names or function.name in by_name:
                raise InvalidArgument(
                    f"Two tools are named {function.name!r} (a function and a server-side tool, or two MCP servers)."
                )
            by_name[function.name] = toolset
    return by_name


def _turn_request(
    request: ChatRequest, messages: tuple[Message, ...], toolsets: list[Toolset], turn: int, left: int | None = None
) -> ChatRequest:
    """The request of one model turn: the client's functions and every server-side function offered; a
    forced choice (`required`, a named function) holds for the first turn only, or the loop never ends."""
    functions = tuple(f for t in toolsets for f in t.functions)
    choice = request.tool_choice
    if turn > 0 and choice is not None and choice.mode in (ToolMode.REQUIRED, ToolMode.FUNCTION):
        choice = ToolChoice(ToolMode.AUTO)
    sampling = request.sampling if left is None else replace(request.sampling, max_tokens=left)
    return replace(
        request, messages=messages, tools=(*request.tools, *functions), tool_choice=choice, sampling=sampling,
        server_tools=(),
    )  # fmt: skip


def _added(a: Usage, b: Usage) -> Usage:
    return Usage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens,
        image_tokens=a.image_tokens + b.image_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
    )
