"""ChatService: the core both adapters call. Validates, resolves models, runs engines, collects."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, replace

from localxai.chat import (
    ChatRequest,
    Choice,
    Completion,
    Event,
    Finished,
    FinishReason,
    ModelInfo,
    Role,
    TextDelta,
    Token,
    Usage,
    UsageReport,
)
from localxai.engines.base import Engine, GenerationRequest
from localxai.errors import ConfigError, InternalError, InvalidArgument, ModelNotFound, UnsupportedParameter

MAX_STOP_SEQUENCES = 4
INT32 = (-(2**31), 2**31 - 1)
# Roles the engines cannot take yet; refused by name rather than dropped.
UNSUPPORTED_ROLES = {Role.TOOL: "tool", Role.FUNCTION: "function"}


@dataclass(frozen=True)
class ChatStream:
    """A started completion: identity fields for every chunk plus the engine's events."""

    id: str
    created: int
    model: str
    fingerprint: str
    events: AsyncGenerator[Event, None]


class ChatService:
    def __init__(self, engines: Sequence[Engine], aliases: Iterable[tuple[str, str]] = (), max_n: int = 16):
        self._engines = list(engines)
        self._max_n = max_n
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

    def list_models(self) -> list[ModelInfo]:
        return [self._with_aliases(info) for info, _ in self._models.values()]

    def get_model(self, name: str) -> ModelInfo:
        return self._with_aliases(self._resolve(name)[0])

    def _with_aliases(self, info: ModelInfo) -> ModelInfo:
        aliases = tuple(sorted(a for a, t in self._aliases.items() if t == info.id))
        return replace(info, aliases=aliases)

    def _resolve(self, name: str) -> tuple[ModelInfo, Engine]:
        found = self._models.get(self._aliases.get(name, name))
        if found is None:
            raise ModelNotFound(name)
        return found

    # -- work -------------------------------------------------------------------------------

    async def tokenize(self, model: str, text: str) -> tuple[ModelInfo, list[Token]]:
        info, engine = self._resolve(model)
        return info, await engine.tokenize(info.id, text)

    async def start(self, request: ChatRequest) -> ChatStream:
        """Validate and start; raises client errors before any output exists."""
        if request.unsupported:
            # Fields the client set that localxai does not honour: refused, never ignored.
            raise UnsupportedParameter(f"Argument not supported: {', '.join(request.unsupported)}")
        info, engine = self._resolve(request.model)
        self._validate(request, info)
        events = await engine.start(
            GenerationRequest(
                model=info.id, messages=request.messages, sampling=request.sampling, n=request.n
            )
        )
        return ChatStream(
            id=str(uuid.uuid4()),
            created=int(time.time()),
            model=info.id,
            fingerprint=info.fingerprint,
            events=events,
        )

    async def complete(self, request: ChatRequest) -> Completion:
        """Non-streaming is a collected stream: one code path."""
        return await collect(await self.start(request), request.n)

    async def close(self) -> None:
        for engine in self._engines:
            await engine.close()

    def _validate(self, request: ChatRequest, info: ModelInfo) -> None:
        if not request.messages:
            raise InvalidArgument("messages must contain at least one message.")
        for i, message in enumerate(request.messages):
            if message.role in UNSUPPORTED_ROLES:
                raise UnsupportedParameter(
                    f"messages[{i}]: role '{UNSUPPORTED_ROLES[message.role]}' is not supported yet."
                )
            if not message.content:
                raise InvalidArgument("Each message must have at least one content element.")
            if message.images and "image" not in info.input_modalities:
                raise InvalidArgument(f"The model {info.id} does not support image input.")
        if not 1 <= request.n <= self._max_n:
            raise InvalidArgument(f"n must be between 1 and {self._max_n}, got {request.n}.")
        _validate_sampling(request)


async def collect(stream: ChatStream, n: int) -> Completion:
    """Gather a stream's events into one Completion."""
    texts: dict[int, list[str]] = {i: [] for i in range(n)}
    reasons: dict[int, FinishReason] = {}
    usage: Usage | None = None
    async for event in stream.events:
        if isinstance(event, TextDelta):
            texts[event.index].append(event.text)
        elif isinstance(event, Finished):
            reasons[event.index] = event.reason
        elif isinstance(event, UsageReport):
            usage = event.usage
    if usage is None or len(reasons) != n:
        raise InternalError("engine ended without finishing every choice")
    choices = tuple(Choice(i, "".join(texts[i]), reasons[i]) for i in range(n))
    return Completion(
        id=stream.id,
        created=stream.created,
        model=stream.model,
        fingerprint=stream.fingerprint,
        choices=choices,
        usage=usage,
    )


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
