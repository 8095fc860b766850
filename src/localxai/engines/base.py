"""The narrow interface between the core and every engine."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from localxai.chat import (
    ChatRequest,
    Event,
    ModelInfo,
    Replicas,
    Token,
    ToolChoice,
    ToolMode,
)
from localxai.errors import InvalidArgument
from localxai.media.images import LoadedImage


@dataclass(frozen=True)
class GenerationRequest:
    """What the core asks of an engine: the validated ChatRequest (engines read it as `request.chat`),
    plus what the engine needs beyond it."""

    chat: ChatRequest
    model: str  # the served id: aliases resolved
    tool_choice: ToolChoice = field(default_factory=lambda: ToolChoice(ToolMode.NONE))  # resolved
    deadline: float | None = None  # time.monotonic() past which the generation stops (TIME_LIMIT)
    images: tuple[LoadedImage, ...] = ()  # every image part of `messages`, in order, fetched and checked
    # Batch work: it runs on what interactive requests leave free, and an engine that schedules may stop
    # it for one (raising errors.Preempted) so that its caller runs it again later.
    background: bool = False


class Engine(abc.ABC):
    """Serves one or more models.

    `generate` does everything that can fail because of the request (template, tokenizing, context
    length) and raises before any output exists, so adapters can still answer with a clean error.
    The iterator it returns yields `TextDelta`/`Finished` per choice and ends with one
    `UsageReport`. Closing the iterator early (client gone) cancels the generation.
    """

    @abc.abstractmethod
    def models(self) -> list[ModelInfo]: ...

    @abc.abstractmethod
    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Event, None]: ...

    @abc.abstractmethod
    async def tokenize(self, model: str, text: str) -> list[Token]: ...

    async def check(self, request: GenerationRequest) -> None:  # noqa: B027 - nothing to check by default
        """Raise what `generate` would raise for `request` (template, context length, grammar) without
        generating: deferred requests are checked at submission exactly like live ones. Engines that
        can only learn it by running (upstream servers) check nothing more than the core does."""

    async def open(self) -> None:  # noqa: B027 - engines without background work need nothing
        """Start background work (health checks); called once by the runtime before serving."""

    async def load(self, model: str) -> None:  # noqa: B027 - always loaded: nothing to do
        """Load the model now (models on demand); engines whose models are always there do nothing."""

    async def unload(self, model: str, wait_s: float = 0.0) -> None:
        """Free the model's memory once no request holds it, waiting at most `wait_s` (models on demand)."""
        raise InvalidArgument(f"Model {model} is not loaded on demand: there is nothing to unload.")

    def is_loaded(self, model: str) -> bool | None:
        """Whether the model is in memory now (models on demand); None where that does not apply."""
        return None

    def replicas(self, model: str) -> Replicas | None:
        """The model's replicas and how many are healthy (upstream engines); None where that does not apply."""
        return None

    def problems(self) -> list[str]:
        """What keeps this engine's models from being served now (for /ready and the start-up log)."""
        return []

    def stats(self) -> dict[str, dict[str, float]]:
        """Gauges per model (queue_depth, running, kv_used, kv_capacity) for /metrics."""
        return {}

    async def close(self) -> None:  # noqa: B027 - engines without resources need nothing
        """Release the engine's resources."""

    def halt(self) -> None:  # noqa: B027 - engines without threads or children need nothing
        """Stop at once, from a signal handler, before the process exits without cleanup: no thread
        of the engine may still run native code then, and no child process may be left behind."""
