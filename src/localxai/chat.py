"""Core chat types shared by every adapter and engine: frozen, wire-format free."""

from __future__ import annotations

import enum
from collections.abc import Sequence
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


@dataclass(frozen=True)
class FilePart:
    """A document attached to a message: an uploaded file, its bytes, or a URL (exactly one). The chat
    service puts its text in the prompt (attachments.py); engines never see one."""

    file_id: str | None = None
    data: bytes | None = None
    url: str | None = None
    filename: str | None = None


Part = TextPart | ImagePart | FilePart


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON text, as on the wire
    kind: str = "function"  # a client's function, or the server-side tool that ran it (ServerTool.kind)


@dataclass(frozen=True)
class Message:
    role: Role
    content: tuple[Part, ...] = ()
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool turn answering that call
    reasoning: str | None = None  # an assistant turn's thinking, sent back by the client

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
class Tool:
    """A tool the client runs. The model calls every kind as a function named `name`; the Responses API
    reports the call in the kind's own item (custom_tool_call, local_shell_call, ...)."""

    name: str  # as the model sees it: a namespaced tool's is namespace + its own name (Codex: mcp__srv__tool)
    description: str = ""
    parameters: str = '{"type": "object", "properties": {}}'  # JSON Schema, as JSON text
    kind: str = "function"  # function, custom (free-form `input`), local_shell or shell
    namespace: str = ""  # the `namespace` group it came in (Responses API)


@dataclass(frozen=True)
class ServerTool:
    """One of xAI's server-side tools a request enables: the server runs its calls (agent/)."""

    kind: str  # web_search, x_search, code_execution, mcp, collections_search, attachment_search, ...
    config: str = "{}"  # its settings as a JSON object text (domains, server_url, allowed tools, ...)


class ToolMode(str, enum.Enum):
    NONE = "none"
    AUTO = "auto"
    REQUIRED = "required"
    FUNCTION = "function"  # one named function must be called


@dataclass(frozen=True)
class ToolChoice:
    mode: ToolMode = ToolMode.AUTO
    function: str | None = None  # with ToolMode.FUNCTION


class FormatType(str, enum.Enum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


@dataclass(frozen=True)
class ResponseFormat:
    type: FormatType = FormatType.TEXT
    schema: str | None = None  # JSON Schema as JSON text, with FormatType.JSON_SCHEMA


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
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None  # None: auto with tools, none without
    parallel_tool_calls: bool = True
    response_format: ResponseFormat = field(default_factory=ResponseFormat)
    logprobs: bool = False
    top_logprobs: int | None = None
    reasoning_effort: str | None = None
    unsupported: tuple[str, ...] = ()  # names of set fields localxai does not honour (-> 400)
    server_tools: tuple[ServerTool, ...] = ()  # run by the agent loop (agent/), refused or dropped where it cannot
    max_turns: int | None = None  # the agent loop's model turns (None: the server's cap)
    prompt: str | None = None  # legacy /v1/completions: raw text continued as is, no chat template


class FinishReason(str, enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    TIME_LIMIT = "time_limit"  # the server's per-request time limit; REST spells it "length"
    MAX_TURNS = "max_turns"  # the agent loop ran out of turns with server-side calls still wanted


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    image_tokens: int = 0
    reasoning_tokens: int = 0
    server_tools_used: tuple[str, ...] = ()  # the kind of each server-side call that succeeded, in order

    @property
    def text_tokens(self) -> int:
        return self.prompt_tokens - self.image_tokens

    @property
    def total_tokens(self) -> int:
        # xAI's accounting: reasoning tokens are not part of completion_tokens.
        return self.prompt_tokens + self.completion_tokens + self.reasoning_tokens


# Events an engine yields while generating. Choices are told apart by `index`.


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: bytes


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: bytes
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ReasoningDelta:
    index: int
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """Whole tool calls (xAI streams each call complete, in one chunk)."""

    index: int
    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class Finished:
    index: int
    reason: FinishReason


@dataclass(frozen=True)
class UsageReport:
    usage: Usage


class CallStatus(str, enum.Enum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class SearchResult:
    """A passage a collections search found: the chunk, its document and where it came from."""

    file_id: str
    filename: str
    chunk_id: str
    collection_id: str
    score: float
    text: str


@dataclass(frozen=True)
class ServerCall:
    """A server-side tool call of the agent loop, as the client sees it."""

    call: ToolCall  # call.kind: the tool that ran it
    status: CallStatus = CallStatus.IN_PROGRESS
    output: str = ""  # what the model read (a failure's message too)
    error: str | None = None  # why it failed (status FAILED)
    sources: tuple[str, ...] = ()  # URLs it read (web search): the answer's citations
    server_label: str | None = None  # mcp: the server it went to
    results: tuple[SearchResult, ...] = ()  # collections search: the passages it found


@dataclass(frozen=True)
class ServerCallEvent:
    """A server-side call started (IN_PROGRESS) or ended (COMPLETED / FAILED)."""

    index: int
    call: ServerCall


@dataclass(frozen=True)
class StepDone:
    """One turn of the agent loop ended in server-side calls, which ran: `messages` (the model's turn and
    the results) go into the context, and the answer so far starts over."""

    index: int
    messages: tuple[Message, ...]


Event = TextDelta | ReasoningDelta | ToolCallDelta | Finished | UsageReport | ServerCallEvent | StepDone


@dataclass(frozen=True)
class Choice:
    index: int
    text: str
    finish_reason: FinishReason
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] | None = None  # None: not requested
    steps: tuple[Message, ...] = ()  # the agent loop's earlier turns and their results (the answer is the last)
    server_calls: tuple[ServerCall, ...] = ()  # those turns' server-side calls, as they ended

    @property
    def citations(self) -> tuple[str, ...]:
        """Every source the server-side calls read, once each, in order."""
        return tuple(dict.fromkeys(url for call in self.server_calls for url in call.sources))


def inline_citations(text: str, sources: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
    """Each place `text` names one of `sources` (its URL, with or without a trailing slash), in text order.
    The model does not mark where it used a source, so a source it only paraphrases has no position."""
    found: list[tuple[str, int, int]] = []
    taken: set[int] = set()
    for url in sorted(sources, key=len, reverse=True):  # a longer URL first: it may contain a shorter one
        for form in dict.fromkeys((url, url.rstrip("/"))):
            start = text.find(form)
            while form and start >= 0:
                end = start + len(form)
                if not taken.intersection(range(start, end)):
                    found.append((url, start, end))
                    taken.update(range(start, end))
                start = text.find(form, end)
    return tuple(sorted(found, key=lambda f: f[1]))


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
    reasoning: bool = False  # thinking is split into reasoning_content
    reasoning_efforts: tuple[str, ...] = ()  # accepted reasoning_effort values (empty: refused)
    loaded: bool | None = None  # in memory now (embedded models load on demand); None: always available
    replicas: Replicas | None = None  # an upstream model's replicas (None: not routed to an upstream)
    path: str | None = None  # an embedded model's file (listed to operator keys only)


@dataclass(frozen=True)
class Replicas:
    """How many of an upstream model's replicas take requests now (health-checked, not ejected)."""

    healthy: int
    total: int


@dataclass(frozen=True)
class Token:
    id: int
    text: str
    bytes: bytes


class Progress(str, enum.Enum):
    """Where a background response stands (a response answered at once is always FINISHED)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    FINISHED = "finished"  # its completion (or error) says how it ended
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class StoredResponse:
    """A response of the Responses API as the store keeps it (see conversations.py)."""

    id: str
    created: int
    request: ChatRequest  # as it ran: messages = the whole context (chain history + this input)
    completion: Completion
    instructions: str | None = None
    previous_response_id: str | None = None
    stored: bool = True  # False: rendered once, never kept (`store: false`)
    sealed_reasoning: bool = False  # include: ["reasoning.encrypted_content"] was asked
    tool_outputs: tuple[str, ...] = ()  # the server-side tool kinds whose call outputs the client asked to see
    error: str | None = None  # the stream failed after its first byte: status "failed" with this message
    completed: int | None = None  # when the answer was finished (unix seconds)
    background: bool = False  # run from the queue (`background: true`), polled and streamed from its log
    progress: Progress = Progress.FINISHED

    def context(self) -> tuple[Message, ...]:
        """The conversation so far, the answer included: where a continuation starts."""
        if not self.completion.choices:  # it failed before answering: the question alone
            return self.request.messages
        choice = self.completion.choices[0]
        answer = Message(
            Role.ASSISTANT,
            (TextPart(choice.text),) if choice.text or not choice.tool_calls else (),
            tool_calls=choice.tool_calls,
            reasoning=choice.reasoning,
        )
        return (*self.request.messages, *choice.steps, answer)
