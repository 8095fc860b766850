"""xai_api protobuf messages <-> core types. Pure functions, no I/O."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from xai_sdk.proto.v5 import chat_pb2, image_pb2, models_pb2, sample_pb2, usage_pb2

from localxai.chat import (
    ChatRequest,
    Choice,
    Completion,
    Detail,
    FinishReason,
    ImagePart,
    Message,
    ModelInfo,
    Part,
    Role,
    Sampling,
    TextPart,
    Usage,
)
from localxai.errors import InvalidArgument

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
FINISH_REASONS = {FinishReason.STOP: sample_pb2.REASON_STOP, FinishReason.LENGTH: sample_pb2.REASON_MAX_LEN}
MODALITIES = {"text": models_pb2.TEXT, "image": models_pb2.IMAGE}


def chat_request(req: chat_pb2.GetCompletionsRequest, stream: bool = False) -> ChatRequest:
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
        messages=tuple(_message(i, m) for i, m in enumerate(req.messages)),
        sampling=sampling,
        n=req.n if req.HasField("n") else 1,
        stream=stream,
        include_usage=True,
        user=req.user or None,
        unsupported=_unsupported(req),
    )


def _message(index: int, m: chat_pb2.Message) -> Message:
    if m.role not in ROLES:
        raise InvalidArgument(f"messages[{index}]: a role is required.")
    parts: list[Part] = []
    for content in m.content:
        kind = content.WhichOneof("content")
        if kind == "text":
            parts.append(TextPart(content.text))
        elif kind == "image_url":
            parts.append(
                ImagePart(content.image_url.image_url, DETAILS.get(content.image_url.detail, Detail.AUTO))
            )
        else:
            raise InvalidArgument(f"messages[{index}]: content of type {kind} is not supported.")
    return Message(role=ROLES[m.role], content=tuple(parts), name=m.name or None)


def _unsupported(req: chat_pb2.GetCompletionsRequest) -> tuple[str, ...]:
    checks = {
        "logprobs": req.logprobs,
        "top_logprobs": req.HasField("top_logprobs"),
        "tools": len(req.tools) > 0,
        "tool_choice": req.HasField("tool_choice") and req.tool_choice.mode != chat_pb2.TOOL_MODE_NONE,
        "response_format": req.HasField("response_format")
        and req.response_format.format_type not in (chat_pb2.FORMAT_TYPE_INVALID, chat_pb2.FORMAT_TYPE_TEXT),
        "reasoning_effort": req.HasField("reasoning_effort"),
        "search_parameters": req.HasField("search_parameters")
        and req.search_parameters.mode != chat_pb2.OFF_SEARCH_MODE,
        "previous_response_id": req.HasField("previous_response_id"),
        "store_messages": req.store_messages,
        "use_encrypted_content": req.use_encrypted_content,
        "max_turns": req.HasField("max_turns"),
        "include": len(req.include) > 0,
        "agent_count": req.HasField("agent_count"),
        "guidelines": len(req.guidelines) > 0,
        "messages[].tool_calls": any(len(m.tool_calls) for m in req.messages),
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


def _output(choice: Choice) -> chat_pb2.CompletionOutput:
    return chat_pb2.CompletionOutput(
        finish_reason=FINISH_REASONS[choice.finish_reason],
        index=choice.index,
        message=chat_pb2.CompletionMessage(content=choice.text, role=chat_pb2.ROLE_ASSISTANT),
    )


def completion(c: Completion) -> chat_pb2.GetChatCompletionResponse:
    return chat_pb2.GetChatCompletionResponse(
        id=c.id,
        outputs=[_output(choice) for choice in c.choices],
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
