"""Core chat types shared by every adapter and engine: frozen, wire-format free."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Role(str, enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    FUNCTION = "function"
    DEVELOPER = "developer"


class Detail(str, enum.Enum):
    AUTO = "auto"
    LOW = "low"
    HIGH = "high"


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    url: str
    detail: Detail = Detail.AUTO


Part = TextPart | ImagePart


@dataclass(frozen=True)
class Message:
    role: Role
    content: tuple[Part, ...] = ()
    name: str | None = None

    @property
    def text(self) -> str:
        """The text parts joined; images are handled by engines that accept them."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        return tuple(p for p in self.content if isinstance(p, ImagePart))


@dataclass(frozen=True)
class Sampling:
    """Per-choice sampling settings, already validated against the API's ranges."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request as both adapters hand it to the core."""

    model: str
    messages: tuple[Message, ...]
    sampling: Sampling = field(default_factory=Sampling)
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    unsupported: tuple[str, ...] = ()  # names of set fields localxai does not honour (-> 400)


class FinishReason(str, enum.Enum):
    STOP = "stop"
    LENGTH = "length"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    image_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def text_tokens(self) -> int:
        return self.prompt_tokens - self.image_tokens

    @property
    def total_tokens(self) -> int:
        # xAI's accounting: reasoning tokens are not part of completion_tokens.
        return self.prompt_tokens + self.completion_tokens + self.reasoning_tokens


# Events an engine yields while generating. Choices are told apart by `index`.


@dataclass(frozen=True)
class TextDelta:
    index: int
    text: str


@dataclass(frozen=True)
class Finished:
    index: int
    reason: FinishReason


@dataclass(frozen=True)
class UsageReport:
    usage: Usage


Event = TextDelta | Finished | UsageReport


@dataclass(frozen=True)
class Choice:
    index: int
    text: str
    finish_reason: FinishReason


@dataclass(frozen=True)
class Completion:
    """A whole (non-streamed) completion: the collected events of one generation."""

    id: str
    created: int
    model: str
    fingerprint: str
    choices: tuple[Choice, ...]
    usage: Usage


@dataclass(frozen=True)
class ModelInfo:
    """What the models endpoints list about one served model."""

    id: str
    created: int
    context_length: int
    fingerprint: str
    input_modalities: tuple[str, ...] = ("text",)
    output_modalities: tuple[str, ...] = ("text",)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Token:
    id: int
    text: str
    bytes: bytes
