"""xai_api protobuf messages <-> core types. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from xai_sdk.proto.v5 import chat_pb2, image_pb2, models_pb2, sample_pb2, usage_pb2

from localxai import sealing
from localxai.chat import (
    ChatRequest,
    Choice,
    Completion,
    Detail,
    Event,
    Finished,
    FinishReason,
    FormatType,
    ImagePart,
    Message,
    ModelInfo,
    Part,
    ReasoningDelta,
    ResponseFormat,
    Role,
    Sampling,
    TextDelta,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolMode,
    Usage,
    UsageReport,
)
from localxai.errors import InvalidArgument
from localxai.sealing import Sealer
from localxai.service import ChatStream

ROLES = {
    chat_pb2.ROLE_USER: Role.USER,
    chat_pb2.ROLE_ASSISTANT: Role.ASSISTANT,
    chat_pb2.ROLE_SYSTEM: Role.SYSTEM,
    chat_pb2.ROLE_FUNCTION: Role.FUNCTION,
    chat_pb2.ROLE_TOOL: Role.TOOL,
    chat_pb2.ROLE_DEVELOPER: Role.DEVELOPER,
}
DETAILS = {
    image_pb2.DETAIL_INVALID: Detail.AUTO,
    image_pb2.DETAIL_AUTO: Detail.AUTO,
    image_pb2.DETAIL_LOW: Detail.LOW,
    image_pb2.DETAIL_HIGH: Detail.HIGH,
}
FINISH_REASONS = {
    FinishReason.STOP: sample_pb2.REASON_STOP,
    FinishReason.LENGTH: sample_pb2.REASON_MAX_LEN,
    FinishReason.TOOL_CALLS: sample_pb2.REASON_TOOL_CALLS,
    FinishReason.TIME_LIMIT: sample_pb2.REASON_TIME_LIMIT,
}
TOOL_MODES = {
    chat_pb2.TOOL_MODE_AUTO: ToolMode.AUTO,
    chat_pb2.TOOL_MODE_NONE: ToolMode.NONE,
    chat_pb2.TOOL_MODE_REQUIRED: ToolMode.REQUIRED,
}
FORMATS = {
    chat_pb2.FORMAT_TYPE_INVALID: FormatType.TEXT,
    chat_pb2.FORMAT_TYPE_TEXT: FormatType.TEXT,
    chat_pb2.FORMAT_TYPE_JSON_OBJECT: FormatType.JSON_OBJECT,
    chat_pb2.FORMAT_TYPE_JSON_SCHEMA: FormatType.JSON_SCHEMA,
}
# Every named effort; the core then checks which ones the model accepts.
EFFORTS = {
    value: name.removeprefix("EFFORT_").lower()
    for name, value in chat_pb2.ReasoningEffort.items()
    if name != "INVALID_EFFORT"
}
MODALITIES = {"text": models_pb2.TEXT, "image": models_pb2.IMAGE}
T = TypeVar("T")


def _enum(mapping: Mapping[int, T], value: int, field: str) -> T:
    """Proto3 enums are open: an unknown number decodes fine and must be refused here, by name."""
    if value not in mapping:
        raise InvalidArgument(f"{field}: unknown enum value {value}.")
    return mapping[value]


def chat_request(
    req: chat_pb2.GetCompletionsRequest, stream: bool = False, sealer: Sealer | None = None
) -> ChatRequest:
    """`sealer` opens the sealed thinking (`encrypted_content`) of earlier answers sent back."""
    def optional(name: str):  # type: ignore[no-untyped-def]
        return getattr(req, name) if req.HasField(name) else None

    sampling = Sampling(
        temperature=1.0 if optional("temperature") is None else req.temperature,
        top_p=1.0 if optional("top_p") is None else req.top_p,
        max_tokens=optional("max_tokens"),
        stop=tuple(req.stop),
        seed=optional("seed"),
        presence_penalty=optional("presence_penalty") or 0.0,
        frequency_penalty=optional("frequency_penalty") or 0.0,
    )
    return ChatRequest(
        model=req.model,
        messages=tuple(_message(i, m, sealer) for i, m in enumerate(req.messages)),
        sampling=sampling,
        n=req.n if req.HasField("n") else 1,
        stream=stream,
        include_usage=True,
        user=req.user or None,
        tools=tuple(_tool(t) for t in req.tools if _tool_kind(t) == "function"),
        tool_choice=_tool_choice(req),
        parallel_tool_calls=req.parallel_tool_calls if req.HasField("parallel_tool_calls") else True,
        response_format=_response_format(req),
        logprobs=req.logprobs,
        top_logprobs=optional("top_logprobs"),
        reasoning_effort=(
            _enum(EFFORTS, req.reasoning_effort, "reasoning_effort") if req.HasField("reasoning_effort") else None
        ),
        unsupported=_unsupported(req),
        server_tools=tuple(kind for kind in map(_tool_kind, req.tools) if kind != "function"),
    )


def _tool_kind(tool: chat_pb2.Tool) -> str:
    """`function`, or the server-side tool it names (the core refuses or drops those)."""
    kind = tool.WhichOneof("tool")
    if kind is None:
        raise InvalidArgument("tools: a tool must be a function or one of xAI's server-side tools.")
    return str(kind)


def _tool(tool: chat_pb2.Tool) -> Tool:
    f = tool.function
    return Tool(
        name=f.name, description=f.description, parameters=f.parameters or '{"type": "object", "properties": {}}'
    )


def _tool_choice(req: chat_pb2.GetCompletionsRequest) -> ToolChoice | None:
    if not req.HasField("tool_choice"):
        return None
    if req.tool_choice.WhichOneof("tool_choice") == "function_name":
        return ToolChoice(ToolMode.FUNCTION, req.tool_choice.function_name)
    return ToolChoice(_enum(TOOL_MODES, req.tool_choice.mode, "tool_choice.mode"))


def _response_format(req: chat_pb2.GetCompletionsRequest) -> ResponseFormat:
    if not req.HasField("response_format"):
        return ResponseFormat()
    fmt = req.response_format
    kind = _enum(FORMATS, fmt.format_type, "response_format.format_type")
    return ResponseFormat(kind, fmt.schema if kind is FormatType.JSON_SCHEMA and fmt.HasField("schema") else None)


def _message(index: int, m: chat_pb2.Message, sealer: Sealer | None) -> Message:
    if m.role == chat_pb2.INVALID_ROLE:
        raise InvalidArgument(f"messages[{index}]: a role is required.")
    role = _enum(ROLES, m.role, f"messages[{index}].role")
    parts: list[Part] = []
    for content in m.content:
        kind = content.WhichOneof("content")
        if kind == "text":
            parts.append(TextPart(content.text))
        elif kind == "image_url":
            detail = _enum(DETAILS, content.image_url.detail, f"messages[{index}].content.image_url.detail")
            parts.append(ImagePart(content.image_url.image_url, detail))
        else:
            raise InvalidArgument(f"messages[{index}]: content of type {kind} is not supported.")
    calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls)
    return Message(
        role=role,
        content=tuple(parts),
        name=m.name or None,
        tool_calls=calls,
        tool_call_id=m.tool_call_id or None,
        reasoning=m.reasoning_content or _opened(m.encrypted_content, sealer),
    )


def _opened(blob: str, sealer: Sealer | None) -> str | None:
    """Our own sealed thinking; another server's blob is dropped, never an error (as over REST)."""
    return sealer.open(blob, sealing.REASONING) if blob and sealer is not None else None


def _unsupported(req: chat_pb2.GetCompletionsRequest) -> tuple[str, ...]:
    checks = {
        "search_parameters": req.HasField("search_parameters")
        and req.search_parameters.mode != chat_pb2.OFF_SEARCH_MODE,
        "max_turns": req.HasField("max_turns"),
        "include": len(req.include) > 0,
        "agent_count": req.HasField("agent_count"),
        "guidelines": len(req.guidelines) > 0,
    }
    return tuple(name for name, is_set in checks.items() if is_set)


def timestamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def usage(u: Usage) -> usage_pb2.SamplingUsage:
    return usage_pb2.SamplingUsage(
        completion_tokens=u.completion_tokens,
        reasoning_tokens=u.reasoning_tokens,
        prompt_tokens=u.prompt_tokens,
        total_tokens=u.total_tokens,
        prompt_text_tokens=u.text_tokens,
        cached_prompt_text_tokens=u.cached_tokens,
        prompt_image_tokens=u.image_tokens,
        num_sources_used=0,
    )


def tool_calls(calls: tuple[ToolCall, ...]) -> list[chat_pb2.ToolCall]:
    return [
        chat_pb2.ToolCall(
            id=c.id,
            type=chat_pb2.TOOL_CALL_TYPE_CLIENT_SIDE_TOOL,
            status=chat_pb2.TOOL_CALL_STATUS_COMPLETED,
            function=chat_pb2.FunctionCall(name=c.name, arguments=c.arguments),
        )
        for c in calls
    ]


def logprobs(entries: tuple[TokenLogprob, ...]) -> chat_pb2.LogProbs:
    return chat_pb2.LogProbs(
        content=[
            chat_pb2.LogProb(
                token=e.token,
                logprob=e.logprob,
                bytes=e.bytes,
                top_logprobs=[chat_pb2.TopLogProb(token=t.token, logprob=t.logprob, bytes=t.bytes) for t in e.top],
            )
            for e in entries
        ]
    )


def _output(choice: Choice, sealer: Sealer | None) -> chat_pb2.CompletionOutput:
    message = chat_pb2.CompletionMessage(
        content=choice.text,
        reasoning_content=choice.reasoning or "",
        role=chat_pb2.ROLE_ASSISTANT,
        tool_calls=tool_calls(choice.tool_calls),
        encrypted_content=_sealed(choice, sealer),
    )
    output = chat_pb2.CompletionOutput(
        finish_reason=FINISH_REASONS[choice.finish_reason], index=choice.index, message=message
    )
    if choice.logprobs is not None:
        output.logprobs.CopyFrom(logprobs(choice.logprobs))
    return output


def _sealed(choice: Choice, sealer: Sealer | None) -> str:
    """The choice's thinking sealed, when the client asked for it (`use_encrypted_content`)."""
    return sealer.seal(choice.reasoning, sealing.REASONING) if sealer is not None and choice.reasoning else ""


def completion(c: Completion, sealer: Sealer | None = None) -> chat_pb2.GetChatCompletionResponse:
    return chat_pb2.GetChatCompletionResponse(
        id=c.id,
        outputs=[_output(choice, sealer) for choice in c.choices],
        created=timestamp(c.created),
        model=c.model,
        system_fingerprint=c.fingerprint,
        usage=usage(c.usage),
    )


def language_model(info: ModelInfo) -> models_pb2.LanguageModel:
    return models_pb2.LanguageModel(
        name=info.id,
        aliases=list(info.aliases),
        version="1.0.0",
        input_modalities=[MODALITIES[m] for m in info.input_modalities],
        output_modalities=[MODALITIES[m] for m in info.output_modalities],
        created=timestamp(info.created),
        max_prompt_length=info.context_length,
        system_fingerprint=info.fingerprint,
    )


def _head(stream: ChatStream) -> dict[str, Any]:
    return {
        "id": stream.id,
        "created": timestamp(stream.created),
        "model": stream.model,
        "system_fingerprint": stream.fingerprint,
    }


def sealed_chunk(stream: ChatStream, choice: Choice, sealer: Sealer) -> chat_pb2.GetChatCompletionChunk | None:
    """The chunk that carries a finished choice's sealed thinking (None: it did not think)."""
    sealed = _sealed(choice, sealer)
    if not sealed:
        return None
    delta = chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT, encrypted_content=sealed)
    return chat_pb2.GetChatCompletionChunk(**_head(stream), outputs=[chat_pb2.CompletionOutputChunk(
        index=choice.index, delta=delta)])  # fmt: skip


def chunk(stream: ChatStream, event: Event) -> chat_pb2.GetChatCompletionChunk:
    """One stream event as a chunk. Every output carries role ASSISTANT: the SDK drops text without it."""
    head = _head(stream)
    if isinstance(event, UsageReport):
        return chat_pb2.GetChatCompletionChunk(**head, usage=usage(event.usage))
    delta = chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT)
    output = chat_pb2.CompletionOutputChunk(index=event.index)
    if isinstance(event, TextDelta):
        delta.content = event.text
        if event.logprobs:
            output.logprobs.CopyFrom(logprobs(event.logprobs))
    elif isinstance(event, ReasoningDelta):
        delta.reasoning_content = event.text
    elif isinstance(event, ToolCallDelta):
        delta.tool_calls.extend(tool_calls(event.calls))
    elif isinstance(event, Finished):
        output.finish_reason = FINISH_REASONS[event.reason]
    output.delta.CopyFrom(delta)
    return chat_pb2.GetChatCompletionChunk(**head, outputs=[output])
