"""REST wire <-> core types. Pure functions, no I/O."""

from __future__ import annotations

import datetime
import json
from typing import Any

from localxai.attachments import decode_file_data, file_part
from localxai.chat import (
    ChatRequest,
    Choice,
    Completion,
    Detail,
    FinishReason,
    FormatType,
    ImagePart,
    Message,
    ModelInfo,
    Part,
    ResponseFormat,
    Role,
    Sampling,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolChoice,
    ToolMode,
    Usage,
)
from localxai.httpapi.schema import (
    ChatCompletionRequest,
    ChatMessage,
    ContentPart,
    ImageContent,
    JsonObjectFormat,
    JsonSchemaResponseFormat,
    NamedToolChoice,
    TextContent,
)

OWNED_BY = "localxai"


def chat_request(body: ChatCompletionRequest) -> ChatRequest:
    sampling = Sampling(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        max_tokens=body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens,
        stop=(body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ()),
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
    )
    return ChatRequest(
        model=body.model,
        messages=tuple(_message(m) for m in body.messages),
        sampling=sampling,
        n=1 if body.n is None else body.n,
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        user=body.user,
        tools=tuple(
            Tool(
                name=t.function.name,
                description=t.function.description or "",
                parameters=json.dumps(t.function.parameters or {"type": "object", "properties": {}}),
            )
            for t in body.tools or ()
        ),
        tool_choice=_tool_choice(body.tool_choice),
        parallel_tool_calls=body.parallel_tool_calls is not False,
        response_format=_response_format(body),
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs,
        reasoning_effort=body.reasoning_effort,
        unsupported=_unsupported(body),
    )


def _tool_choice(choice: str | NamedToolChoice | None) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, NamedToolChoice):
        return ToolChoice(ToolMode.FUNCTION, choice.function.name)
    return ToolChoice(ToolMode(choice))


def _response_format(body: ChatCompletionRequest) -> ResponseFormat:
    fmt = body.response_format
    if isinstance(fmt, JsonSchemaResponseFormat):
        schema = fmt.json_schema.schema_
        return ResponseFormat(FormatType.JSON_SCHEMA, None if schema is None else json.dumps(schema))
    if isinstance(fmt, JsonObjectFormat):
        return ResponseFormat(FormatType.JSON_OBJECT)
    return ResponseFormat()


def _part(p: ContentPart) -> Part:
    if isinstance(p, TextContent):
        return TextPart(p.text)
    if isinstance(p, ImageContent):
        return ImagePart(p.image_url.url, Detail(p.image_url.detail or "auto"))
    ref, where = p.file, "a file part"
    return file_part(where, ref.file_id, decode_file_data(ref.file_data, where), ref.url, ref.filename)


def _message(m: ChatMessage) -> Message:
    if m.content is None:
        parts: tuple[Part, ...] = ()
    elif isinstance(m.content, str):
        parts = (TextPart(m.content),)
    else:
        parts = tuple(_part(p) for p in m.content)
    calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
    return Message(
        role=Role(m.role),
        content=parts,
        name=m.name,
        tool_calls=calls,
        tool_call_id=m.tool_call_id,
        reasoning=m.reasoning_content if m.reasoning_content is not None else m.reasoning,
    )


def _unsupported(body: ChatCompletionRequest) -> tuple[str, ...]:
    """Fields set to something localxai does not implement yet; the core refuses them."""
    search = body.search_parameters or {}
    checks = {
        "logit_bias": bool(body.logit_bias),
        "search_parameters": bool(search) and search.get("mode") != "off",
        "web_search_options": body.web_search_options is not None,
    }
    return tuple(name for name, is_set in checks.items() if is_set)


# -- responses ------------------------------------------------------------------------------


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {
            "text_tokens": usage.text_tokens,
            "audio_tokens": 0,
            "image_tokens": usage.image_tokens,
            "cached_tokens": usage.cached_tokens,
        },
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
        "num_sources_used": 0,
    }


def tool_call_body(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "function": {"name": call.name, "arguments": call.arguments}, "type": "function"}


def logprobs_body(entries: tuple[TokenLogprob, ...]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": e.token,
                "logprob": e.logprob,
                "bytes": list(e.bytes),
                "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in e.top],
            }
            for e in entries
        ]
    }


def _choice_body(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.text}
    if choice.reasoning is not None:
        message["reasoning_content"] = choice.reasoning
    if choice.tool_calls:
        message["tool_calls"] = [tool_call_body(c) for c in choice.tool_calls]
    message["refusal"] = None
    body: dict[str, Any] = {
        "index": choice.index,
        "message": message,
        "finish_reason": finish_reason(choice.finish_reason),
    }
    if choice.logprobs is not None:
        body["logprobs"] = logprobs_body(choice.logprobs)
    return body


def finish_reason(reason: FinishReason) -> str:
    # REST has no spelling for the time limit (gRPC: REASON_TIME_LIMIT); "length" is the nearest.
    return "length" if reason is FinishReason.TIME_LIMIT else reason.value


def completion_body(c: Completion) -> dict[str, Any]:
    return {
        "id": c.id,
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "choices": [_choice_body(choice) for choice in c.choices],
        "usage": usage_body(c.usage),
        "system_fingerprint": c.fingerprint,
    }


def model_body(info: ModelInfo) -> dict[str, Any]:
    """GET /v1/models entry (prices are zero: nothing is billed here)."""
    return {
        "id": info.id,
        "created": info.created,
        "object": "model",
        "owned_by": OWNED_BY,
        "aliases": list(info.aliases),
        "context_length": info.context_length,
        **_prices(),
        **_state(info),
    }


def language_model_body(info: ModelInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "fingerprint": info.fingerprint,
        "created": info.created,
        "object": "model",
        "owned_by": OWNED_BY,
        "version": "1.0.0",
        "input_modalities": list(info.input_modalities),
        "output_modalities": list(info.output_modalities),
        **_prices(),
        "search_price": 0,
        "aliases": list(info.aliases),
        **_state(info),
    }


def _state(info: ModelInfo) -> dict[str, Any]:
    """localxai's extra fields: whether an embedded model is in memory now (it loads on first use); whether
    an upstream model can answer now (some replica healthy), and its replicas."""
    state: dict[str, Any] = {} if info.loaded is None else {"loaded": info.loaded}
    if info.replicas is not None:
        state["healthy"] = info.replicas.healthy > 0
        state["replicas"] = {"healthy": info.replicas.healthy, "total": info.replicas.total}
    return state


def _prices() -> dict[str, int]:
    names = (
        "prompt_text_token_price",
        "cached_prompt_text_token_price",
        "prompt_image_token_price",
        "completion_text_token_price",
    )
    return {name: 0 for name in names}


def rfc3339(seconds: float) -> str:
    """A time as xAI's REST JSON writes one (`create_time`): RFC 3339, UTC, `Z`."""
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).isoformat().replace("+00:00", "Z")
