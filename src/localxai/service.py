"""ChatService: the core both adapters call. Validates, resolves models, runs engines, collects.

Over 400 lines: the request checks (sampling, tools, schemas, reasoning) are small functions kept next
to the service that applies them, so every refusal a client can get is in one file."""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from localxai import logs
from localxai.accounting import Accounting
from localxai.attachments import Attachments
from localxai.auth import ApiKey
from localxai.chat import (
    ChatRequest,
    Choice,
    Completion,
    Event,
    Finished,
    FinishReason,
    FormatType,
    Message,
    ModelInfo,
    ReasoningDelta,
    ServerCall,
    ServerCallEvent,
    StepDone,
    TextDelta,
    Token,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolMode,
    Usage,
    UsageReport,
)
from localxai.engines.base import Engine, GenerationRequest
from localxai.errors import ConfigError, InternalError, InvalidArgument, ModelNotFound, UnsupportedParameter
from localxai.files import Files
from localxai.media.fetch import FetchPolicy, ImageFetchError
from localxai.media.images import LoadedImage, load_images
from localxai.schemas import parse_schema

MAX_STOP_SEQUENCES = 4
MAX_TOKENIZE_CHARS = 128 * 1024  # one token can be one character: the answer grows ~500 bytes a token
INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class ChatStream:
    """A started completion: identity fields for every chunk plus the engine's events."""

    id: str
    created: int
    model: str
    fingerprint: str
    events: AsyncGenerator[Event, None]


@dataclass(frozen=True)
class Admission:
    """A request that passed validation, access control and rate limits."""

    request: ChatRequest
    info: ModelInfo
    engine: Engine
    key_id: str | None  # whose usage it is


class Observer(Protocol):
    """Receives per-request measurements (the metrics)."""

    def first_token(self, model: str, seconds: float) -> None: ...
    def token_gap(self, model: str, seconds: float) -> None: ...
    def usage(self, model: str, usage: Usage) -> None: ...
    def image_failure(self, model: str) -> None: ...


class Shutdown:
    """Graceful shutdown: once begun, requests in flight may run until the deadline."""

    def __init__(self) -> None:
        self.deadline: float | None = None

    @property
    def started(self) -> bool:
        return self.deadline is not None

    def begin(self, grace_s: float) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + grace_s

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def left(self) -> float | None:
        """Seconds to the deadline (0 once past), None while not stopping."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


class _GraceOver(Exception):
    """A stream is still running when the shutdown grace ends."""


@dataclass(frozen=True)
class Limits:
    """Per-request limits of this server (all documented, all configurable)."""

    max_n: int = 16
    max_messages: int = 2048
    max_images: int = 64
    timeout_s: float | None = 600.0  # a generation running longer ends with finish_reason "length"


class ChatService:
    def __init__(
        self,
        engines: Sequence[Engine],
        aliases: Iterable[tuple[str, str]] = (),
        limits: Limits | None = None,
        accounting: Accounting | None = None,
        observer: Observer | None = None,
        fetch_policy: FetchPolicy | None = None,
        shutdown: Shutdown | None = None,
        files: Files | None = None,
    ):
        self._engines = list(engines)
        self._shutdown = shutdown or Shutdown()
        self._fetch_policy = fetch_policy or FetchPolicy()
        self._attachments = Attachments(files, self._fetch_policy)
        self._limits = limits or Limits()
        self._accounting = accounting or Accounting(None)
        self._observer = observer
        self._models: dict[str, tuple[ModelInfo, Engine]] = {}
        for engine in self._engines:
            for info in engine.models():
                if info.id in self._models:
                    raise ConfigError(f"two engines serve a model named {info.id!r}")
                self._models[info.id] = (info, engine)
        self._aliases: dict[str, str] = {}
        for alias, target in aliases:
            if target not in self._models:
                known = ", ".join(sorted(self._models))
                raise ConfigError(f"alias {alias!r} points at unknown model {target!r} (served: {known})")
            if alias in self._models:
                raise ConfigError(f"alias {alias!r} shadows a served model id")
            self._aliases[alias] = target

    # -- models -----------------------------------------------------------------------------

    async def load_model(self, name: str) -> ModelInfo:
        info, engine = self._resolve(name)
        await engine.load(info.id)
        return self._listed(info, engine)

    async def unload_model(self, name: str, wait_s: float) -> ModelInfo:
        """Unload once no request holds the model, waiting at most `wait_s` (nothing in flight is cut)."""
        info, engine = self._resolve(name)
        await engine.unload(info.id, wait_s)
        return self._listed(info, engine)

    def add_engine(self, engine: Engine) -> list[str]:
        """Serve one more engine's models (one found in the download cache while running); a model whose
        id is taken already is not added. Returns the ids added."""
        added = [info for info in engine.models() if info.id not in self._models and info.id not in self._aliases]
        for info in added:
            self._models[info.id] = (info, engine)
        if added:
            self._engines.append(engine)
        return [info.id for info in added]

    def remove_engine(self, engine: Engine) -> list[str]:
        """Stop serving an engine added by add_engine (its files are gone); returns the ids it served."""
        gone = [name for name, (_, served) in self._models.items() if served is engine]
        for name in gone:
            del self._models[name]
        self._engines.remove(engine)
        return gone

    def list_models(self) -> list[ModelInfo]:
        return [self._listed(info, engine) for info, engine in self._models.values()]

    def get_model(self, name: str) -> ModelInfo:
        return self._listed(*self._resolve(name))

    def model_label(self, name: str | None) -> str:
        """A model for metrics labels: a served id, never a client's string (unknown: one value)."""
        if name is None:
            return ""
        found = self._models.get(self._aliases.get(name, name))
        return "unknown" if found is None else found[0].id

    def _listed(self, info: ModelInfo, engine: Engine) -> ModelInfo:
        """The model as listed now: its aliases, whether it is loaded, and its upstream replicas' health."""
        aliases = tuple(sorted(a for a, t in self._aliases.items() if t == info.id))
        return replace(info, aliases=aliases, loaded=engine.is_loaded(info.id), replicas=engine.replicas(info.id))

    def _resolve(self, name: str) -> tuple[ModelInfo, Engine]:
        found = self._models.get(self._aliases.get(name, name))
        if found is None:
            raise ModelNotFound(name, sorted(self._models))
        return found

    # -- work -------------------------------------------------------------------------------

    async def tokenize(self, model: str, text: str, caller: ApiKey | None = None) -> tuple[ModelInfo, list[Token]]:
        info, engine = self._resolve(model)
        self._accounting.check_access(caller, info.id)
        if len(text) > MAX_TOKENIZE_CHARS:
            raise InvalidArgument(
                f"text is {len(text)} characters; this server tokenizes at most {MAX_TOKENIZE_CHARS} per request."
            )
        return info, await engine.tokenize(info.id, text)

    async def admit(self, request: ChatRequest, caller: ApiKey | None = None, counted: bool = True) -> Admission:
        """Everything that can refuse a request before work starts; raises the client's error. A request
        not `counted` (a batch's) is checked for access but not counted against the caller's rate limits."""
        if request.unsupported:
            # Fields the client set that localxai does not honour: refused, never ignored.
            raise UnsupportedParameter(f"Argument not supported: {', '.join(request.unsupported)}")
        if request.server_tools:  # the agent loop runs them (the Responses API and gRPC), one turn at a time
            raise server_tool_refused(
                request.server_tools[0].kind,
                "server-side tools run on the Responses API (/v1/responses) and gRPC GetCompletion(Chunk), not here",
            )
        info, engine = self._resolve(request.model)
        self._accounting.check_access(caller, info.id)
        owner = caller.key_id if caller else None
        request = await self._attachments.resolve(request, owner, info.context_length)  # documents: prompt text
        self._validate(request, info)
        if counted:
            await self._accounting.admit(caller, info.id)
        return Admission(request, info, engine, caller.key_id if caller else None)

    async def attach(self, request: ChatRequest, caller: ApiKey | None) -> ChatRequest:
        """Before an agent loop, once for all its turns: documents too long for the prompt become searched
        (attachments.plan), the others prompt text (attachments.resolve)."""
        info, _ = self._resolve(request.model)
        self._accounting.check_access(caller, info.id)
        owner = caller.key_id if caller else None
        planned = await self._attachments.plan(request, owner, info.context_length)
        return await self._attachments.resolve(planned, owner, info.context_length)

    async def generate(
        self, request: ChatRequest, caller: ApiKey | None = None, api: str = "rest", counted: bool = True
    ) -> ChatStream:
        """Admit and start; raises client errors before any output exists."""
        return await self.run(await self.admit(request, caller, counted), api)

    async def record_server_tools(self, caller: ApiKey | None, model: str, calls: int) -> None:
        """The server-side calls a tool loop ran for `caller` (its turns recorded themselves), in the ledger."""
        await self._accounting.record_server_tools(caller.key_id if caller else None, model, calls)

    async def check(self, admission: Admission) -> None:
        """Everything `run` could refuse, without generating (deferred requests, at submission)."""
        request, info = admission.request, admission.info
        images = await self._load_images(request, info)
        await admission.engine.check(_generation_request(request, info, None, images))

    async def run(self, admission: Admission, api: str = "rest", background: bool = False) -> ChatStream:
        """Start generating. `background` work (batch requests) yields to interactive requests (the
        engine may stop it with Preempted) and has no time limit: it may wait for them."""
        request, info = admission.request, admission.info
        started = time.monotonic()
        timeout = None if background else self._limits.timeout_s
        deadline = None if timeout is None else started + timeout
        images = await self._load_images(request, info)
        generation = replace(_generation_request(request, info, deadline, images), background=background)
        events = await admission.engine.generate(generation)
        return ChatStream(
            id=str(uuid.uuid4()),
            created=int(time.time()),
            model=info.id,
            fingerprint=info.fingerprint,
            events=self._accounted(events, admission, api, started),
        )

    async def _load_images(self, request: ChatRequest, info: ModelInfo) -> tuple[LoadedImage, ...]:
        """Every image fetched (in parallel) and checked once, here, whichever engine runs it."""
        parts = [p for m in request.messages for p in m.images]
        if not parts:
            return ()
        try:
            return tuple(await load_images(parts, self._fetch_policy))
        except ImageFetchError:
            if self._observer is not None:
                self._observer.image_failure(info.id)
            raise

    async def _accounted(
        self, events: AsyncGenerator[Event, None], admission: Admission, api: str, started: float
    ) -> AsyncGenerator[Event, None]:
        """The engine's events, measured, with the usage written to the ledger when it is known.

        A stream still running when the shutdown grace ends is ended here, for every adapter alike:
        each unfinished choice gets its Finished (length), so clients see a proper end, not a cut.
        """
        model = admission.info.id
        streaming = admission.request.stream
        record = logs.record.get()  # this request's log line, when an adapter keeps one
        if record is not None:
            record.model = model
        finished: set[int] = set()
        last: float | None = None
        try:
            while True:
                try:
                    event = await self._next(events, streaming)
                except StopAsyncIteration:
                    return
                except _GraceOver:
                    for index in sorted(set(range(admission.request.n)) - finished):
                        yield Finished(index, FinishReason.LENGTH)
                    return
                now = time.monotonic()
                if isinstance(event, (TextDelta, ReasoningDelta, ToolCallDelta)):
                    if last is None and record is not None:
                        record.ttft_s = now - started
                    if self._observer is not None:
                        if last is None:
                            self._observer.first_token(model, now - started)
                        else:
                            self._observer.token_gap(model, now - last)
                    last = now
                elif isinstance(event, Finished):
                    finished.add(event.index)
                elif isinstance(event, UsageReport):
                    await self._accounting.record(admission.key_id, model, event.usage, now - started, api)
                    if record is not None:
                        record.add(event.usage)
                    if self._observer is not None:
                        self._observer.usage(model, event.usage)
                yield event
        finally:
            await events.aclose()

    async def _next(self, events: AsyncGenerator[Event, None], streaming: bool) -> Event:
        """The next event; _GraceOver when a stream outlives the shutdown grace. (A non-streaming
        request is answered 503 by its adapter instead: it has no partial answer to end.)"""
        left = self._shutdown.left() if streaming else None
        if left is None:
            return await anext(events)
        step = asyncio.ensure_future(anext(events))
        try:
            done, _ = await asyncio.wait({step}, timeout=left)
        finally:
            if not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
        if not done:
            raise _GraceOver
        return step.result()

    async def complete(self, request: ChatRequest, caller: ApiKey | None = None, api: str = "rest") -> Completion:
        """Non-streaming is a collected stream: one code path."""
        return await collect(await self.generate(request, caller, api), request.n)

    async def open(self) -> None:
        for engine in self._engines:
            await engine.open()

    def problems(self) -> list[str]:
        """What keeps some models from being served now (unreachable upstreams)."""
        return [problem for engine in self._engines for problem in engine.problems()]

    async def close(self) -> None:
        for engine in self._engines:
            await engine.close()

    def halt(self) -> None:
        for engine in self._engines:
            engine.halt()

    def _validate(self, request: ChatRequest, info: ModelInfo) -> None:
        limits = self._limits
        if request.prompt is not None:
            if info.reasoning:
                raise InvalidArgument(f"Legacy completions are not supported by reasoning models such as {info.id}.")
        elif not request.messages:
            raise InvalidArgument("messages must contain at least one message.")
        if len(request.messages) > limits.max_messages:
            raise InvalidArgument(
                f"Too many messages: {len(request.messages)}; this server accepts at most {limits.max_messages}."
            )
        images = sum(len(m.images) for m in request.messages)
        if images > limits.max_images:
            raise InvalidArgument(f"Too many images: {images}; this server accepts at most {limits.max_images}.")
        for message in request.messages:
            if not message.content and not message.tool_calls:
                raise InvalidArgument("Each message must have at least one content element.")
            if message.images and "image" not in info.input_modalities:
                raise InvalidArgument(f"The model {info.id} does not support image input.")
        if not 1 <= request.n <= limits.max_n:
            raise InvalidArgument(f"n must be between 1 and {limits.max_n}, got {request.n}.")
        _validate_sampling(request)
        _validate_tools(request)
        _validate_output(request)
        _validate_reasoning(request, info)


class Collector:
    """Builds one Completion from a stream's events, as they pass (non-streaming answers, and
    streams that are also stored)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._texts: dict[int, list[str]] = {i: [] for i in range(n)}
        self._thoughts: dict[int, list[str]] = {i: [] for i in range(n)}
        self._calls: dict[int, list[ToolCall]] = {i: [] for i in range(n)}
        self._logprobs: dict[int, list[TokenLogprob]] = {i: [] for i in range(n)}
        self._reasons: dict[int, FinishReason] = {}
        self._steps: dict[int, list[Message]] = {i: [] for i in range(n)}
        self._server_calls: dict[int, dict[str, ServerCall]] = {i: {} for i in range(n)}  # by call id, as they end
        self._usage: Usage | None = None
        self._wants_logprobs = False

    def add(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self._texts[event.index].append(event.text)
            self._logprobs[event.index].extend(event.logprobs)
            self._wants_logprobs = self._wants_logprobs or bool(event.logprobs)
        elif isinstance(event, ReasoningDelta):
            self._thoughts[event.index].append(event.text)
        elif isinstance(event, ToolCallDelta):
            self._calls[event.index].extend(event.calls)
        elif isinstance(event, Finished):
            self._reasons[event.index] = event.reason
        elif isinstance(event, UsageReport):
            self._usage = event.usage
        elif isinstance(event, ServerCallEvent):
            self._server_calls[event.index][event.call.call.id] = event.call
        elif isinstance(event, StepDone):  # the loop's turn is context now; the answer starts over
            self._steps[event.index].extend(event.messages)
            for buffer in (self._texts, self._thoughts, self._calls, self._logprobs):
                buffer[event.index].clear()

    @property
    def finished(self) -> bool:
        """Every choice ended and the usage is known (not so for a stream ended by shutdown)."""
        return self._usage is not None and len(self._reasons) == self.n

    def choice(self, index: int) -> Choice:
        """Choice `index` as far as it has arrived ("stop" until its end arrives)."""
        return Choice(
            index=index,
            text="".join(self._texts[index]),
            finish_reason=self._reasons.get(index, FinishReason.STOP),
            reasoning="".join(self._thoughts[index]) or None,
            tool_calls=tuple(self._calls[index]),
            logprobs=tuple(self._logprobs[index]) if self._wants_logprobs else None,
            steps=tuple(self._steps[index]),
            server_calls=tuple(self._server_calls[index].values()),
        )

    def completion(self, stream: ChatStream, partial: bool = False) -> Completion:
        """The whole Completion. `partial`: a stream that may have been cut (at shutdown there is no usage
        report) is answered as far as it arrived, with zero usage; otherwise that is an internal error."""
        if not (partial or self.finished):
            raise InternalError("engine ended without finishing every choice")
        choices = tuple(self.choice(i) for i in range(self.n))
        return Completion(stream.id, stream.created, stream.model, stream.fingerprint, choices, self._usage or Usage())


async def collect(stream: ChatStream, n: int) -> Completion:
    """Gather a stream's events into one Completion."""
    collector = Collector(n)
    async for event in stream.events:
        collector.add(event)
    return collector.completion(stream)


def server_tool_refused(kind: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"Tool type {kind!r} is not available on this server: {why}.")


def _check_range(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not (math.isfinite(value) and low <= value <= high):
        raise InvalidArgument(f"{name} must be between {low:g} and {high:g}, got {value}.")


def _validate_sampling(request: ChatRequest) -> None:
    s = request.sampling
    _check_range("temperature", s.temperature, 0, 2)
    _check_range("top_p", s.top_p, 0, 1)
    _check_range("presence_penalty", s.presence_penalty, -2, 2)
    _check_range("frequency_penalty", s.frequency_penalty, -2, 2)
    if s.max_tokens is not None and not 1 <= s.max_tokens <= INT32[1]:
        raise InvalidArgument(f"max_completion_tokens must be at least 1, got {s.max_tokens}.")
    if s.seed is not None and not INT32[0] <= s.seed <= INT32[1]:
        raise InvalidArgument(f"seed must be a 32-bit integer, got {s.seed}.")
    if len(s.stop) > MAX_STOP_SEQUENCES:
        raise InvalidArgument(f"stop accepts at most {MAX_STOP_SEQUENCES} sequences, got {len(s.stop)}.")
    if any(not stop for stop in s.stop):
        raise InvalidArgument("stop sequences must not be empty strings.")


MAX_TOOLS = 128
MAX_TOP_LOGPROBS = 8
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _validate_tools(request: ChatRequest) -> None:
    if len(request.tools) > MAX_TOOLS:
        raise InvalidArgument(f"At most {MAX_TOOLS} tools are allowed, got {len(request.tools)}.")
    names = [tool.name for tool in request.tools]
    for tool in request.tools:
        if not TOOL_NAME.match(tool.name):
            raise InvalidArgument(f"Invalid function name {tool.name!r}: use 1-64 letters, digits, _ or -.")
        schema = parse_schema(tool.parameters, f"The parameters of function {tool.name}")
        if schema.get("type", "object") != "object":
            raise InvalidArgument(f"The parameters of function {tool.name} must be an object schema.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidArgument(f"Duplicate function names: {', '.join(duplicates)}.")
    choice = request.tool_choice
    if choice is not None and choice.mode in (ToolMode.REQUIRED, ToolMode.FUNCTION) and not request.tools:
        raise InvalidArgument("tool_choice requires tools.")
    if choice is not None and choice.mode is ToolMode.FUNCTION and choice.function not in names:
        raise InvalidArgument(f"tool_choice names function {choice.function!r}, which is not in tools.")


def _generation_request(
    request: ChatRequest, info: ModelInfo, deadline: float | None, images: tuple[LoadedImage, ...]
) -> GenerationRequest:
    return GenerationRequest(request, info.id, _tool_choice(request), deadline, images)


def _tool_choice(request: ChatRequest) -> ToolChoice:
    if request.tool_choice is not None:
        return request.tool_choice
    return ToolChoice(ToolMode.AUTO if request.tools else ToolMode.NONE)


def _validate_output(request: ChatRequest) -> None:
    fmt = request.response_format
    if fmt.type is FormatType.JSON_SCHEMA:
        if fmt.schema is None:
            raise InvalidArgument("response_format json_schema needs a schema.")
        parse_schema(fmt.schema, "response_format.json_schema.schema")
    if request.top_logprobs is not None:
        if not 0 <= request.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidArgument(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}.")
        if not request.logprobs:
            raise InvalidArgument("top_logprobs requires logprobs to be true.")


def _validate_reasoning(request: ChatRequest, info: ModelInfo) -> None:
    """xAI's rules: reasoning_effort only where the model takes it; reasoning models refuse
    penalties and stop sequences."""

    def refuse(parameter: str) -> None:
        raise UnsupportedParameter(f"Model {info.id} does not support parameter {parameter}")

    if request.reasoning_effort is not None and request.reasoning_effort not in info.reasoning_efforts:
        refuse("reasoningEffort")
    if info.reasoning:
        if request.sampling.presence_penalty:
            refuse("presencePenalty")
        if request.sampling.frequency_penalty:
            refuse("frequencyPenalty")
        if request.sampling.stop:
            refuse("stop")
