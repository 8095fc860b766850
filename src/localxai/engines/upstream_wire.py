"""The OpenAI dialect of upstream servers: the request body localxai sends, and the stream it reads
back turned into core events (tool-call fragments reassembled into whole calls, `reasoning` and
`reasoning_content` as reasoning, usage with cached and reasoning tokens, refusals as xAI errors)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx

from localxai.chat import (
    Event,
    Finished,
    FinishReason,
    FormatType,
    ImagePart,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolMode,
    TopLogprob,
    Usage,
)
from localxai.engines import openai_format
from localxai.engines.base import GenerationRequest
from localxai.errors import InternalError, InvalidArgument, LocalXAIError, ResourceExhausted, Unavailable


def with_data_urls(request: GenerationRequest) -> GenerationRequest:
    """Images go upstream as the data URLs of what the core fetched and checked: the upstream never
    fetches a client's URL (its network is not the client's to reach)."""
    if not request.images:
        return request
    loaded = iter(request.images)
    messages = tuple(
        replace(m, content=tuple(
            ImagePart(next(loaded).data_url, p.detail) if isinstance(p, ImagePart) else p for p in m.content
        ))
        for m in request.chat.messages
    )  # fmt: skip
    return replace(request, chat=replace(request.chat, messages=messages))


def openai_body(request: GenerationRequest, upstream_model: str) -> dict[str, Any]:
    s = request.chat.sampling
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": [openai_format.message(m) for m in request.chat.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": s.temperature,
        "top_p": s.top_p,
        "n": request.chat.n,
    }
    optional = {
        "max_tokens": s.max_tokens,
        "seed": s.seed,
        "stop": list(s.stop) or None,
        "presence_penalty": s.presence_penalty or None,
        "frequency_penalty": s.frequency_penalty or None,
        "reasoning_effort": request.chat.reasoning_effort,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if request.chat.tools:
        body["tools"] = [openai_format.tool_definition(t) for t in request.chat.tools]
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.function}}
            if choice.mode is ToolMode.FUNCTION
            else choice.mode.value
        )
        body["parallel_tool_calls"] = request.chat.parallel_tool_calls
    fmt = request.chat.response_format
    if fmt.type is FormatType.JSON_OBJECT:
        body["response_format"] = {"type": "json_object"}
    elif fmt.type is FormatType.JSON_SCHEMA and fmt.schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": json.loads(fmt.schema), "strict": True},
        }
    if request.chat.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = request.chat.top_logprobs or 0
    return body


FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "tool_calls": FinishReason.TOOL_CALLS}


def choice_events(choice: dict[str, Any], calls: dict[int, dict[int, dict[str, str]]]) -> list[Event]:
    index = int(choice.get("index", 0))
    delta = choice.get("delta") or {}
    events: list[Event] = []
    thought = delta.get("reasoning_content") or delta.get("reasoning")
    if thought:
        events.append(ReasoningDelta(index, thought))
    content = delta.get("content")
    logprobs = logprobs_of((choice.get("logprobs") or {}).get("content") or [])
    if content or logprobs:
        events.append(TextDelta(index, content or "", logprobs))
    for fragment in delta.get("tool_calls") or []:
        # OpenAI-style servers stream a call in pieces; xAI clients get it whole at the end.
        slot = calls.setdefault(index, {}).setdefault(int(fragment.get("index", 0)), {"id": "", "name": "", "args": ""})
        function = fragment.get("function") or {}
        slot["id"] = fragment.get("id") or slot["id"]
        slot["name"] += function.get("name") or ""
        slot["args"] += function.get("arguments") or ""
    reason = choice.get("finish_reason")
    if reason:
        whole = calls.pop(index, {})
        if whole:
            events.append(
                ToolCallDelta(
                    index,
                    tuple(
                        ToolCall(c["id"] or f"call_{index}{i}", c["name"], c["args"] or "{}")
                        for i, c in sorted(whole.items())
                    ),
                )
            )
        events.append(Finished(index, FINISH.get(reason, FinishReason.STOP)))
    return events


def logprobs_of(entries: list[dict[str, Any]]) -> tuple[TokenLogprob, ...]:
    def raw(entry: dict[str, Any]) -> bytes:
        return bytes(entry.get("bytes") or []) or str(entry.get("token", "")).encode()

    return tuple(
        TokenLogprob(
            token=str(e.get("token", "")),
            logprob=float(e.get("logprob", 0.0)),
            bytes=raw(e),
            top=tuple(
                TopLogprob(str(t.get("token", "")), float(t.get("logprob", 0.0)), raw(t))
                for t in e.get("top_logprobs") or []
            ),
        )
        for e in entries
    )


def usage(u: dict[str, Any]) -> Usage:
    """OpenAI counts reasoning inside completion_tokens; xAI does not."""
    reasoning = int((u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    details = u.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(u.get("prompt_tokens") or 0),
        completion_tokens=max(0, int(u.get("completion_tokens") or 0) - reasoning),
        cached_tokens=int(details.get("cached_tokens") or 0),
        image_tokens=int(details.get("image_tokens") or 0),
        reasoning_tokens=reasoning,
    )


def upstream_error(response: httpx.Response) -> LocalXAIError:
    """The upstream's refusal in xAI's terms, without its internals."""
    status = response.status_code
    if status in (400, 422):
        return InvalidArgument(f"The upstream engine rejected the request (HTTP {status}).")
    if status == 429:
        retry = response.headers.get("retry-after", "")
        return ResourceExhausted(
            "The service is temporarily at capacity. Please retry your request shortly.",
            retry_after=float(retry) if retry.replace(".", "", 1).isdigit() else 1.0,
        )
    if status == 404:  # (401 and 403 never arrive here: the replica is ejected and the request retried)
        return Unavailable("The upstream engine is misconfigured for this model.")
    return InternalError()
