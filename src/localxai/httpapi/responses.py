"""xAI's Responses API (`/v1/responses`) on the chat core, the output side: a stored response -> the
response object, core events -> the Responses SSE event sequence, input items and compaction listed
(the requests are responses_input.py). Over 400 lines: the object and its event stream share every
item builder.

Shapes follow captures of xAI's traffic (responses-and-messages-spec.md A.4, A.5): bare-UUID ids,
`msg_`/`rs_`/`fc_` item ids, usage with reasoning inside `output_tokens`, `event:` + `data:` framing
with a gap-free `sequence_number`, no `[DONE]`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import anyio

from localxai import sealing
from localxai.chat import (
    ChatRequest,
    Choice,
    Completion,
    FinishReason,
    FormatType,
    ImagePart,
    Message,
    Part,
    ReasoningDelta,
    Role,
    StoredResponse,
    TextDelta,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolMode,
    Usage,
)
from localxai.conversations import TurnStream
from localxai.errors import InvalidArgument, LocalXAIError
from localxai.httpapi.convert import logprobs_body
from localxai.httpapi.errors import error_body
from localxai.httpapi.sse import with_pings
from localxai.sealing import Sealer

log = logging.getLogger(__name__)

# -- response ---------------------------------------------------------------------------------------


def response_body(stored: StoredResponse, sealer: Sealer) -> dict[str, Any]:
    """The response object, as GET /v1/responses/{id} and a non-streamed POST answer it."""
    if stored.error is not None:
        return _envelope(stored, "failed", None, [], None)
    [choice] = stored.completion.choices
    status, incomplete = _status(choice)
    output = _output(stored, choice, sealer)
    return _envelope(stored, status, stored.completed, output, stored.completion.usage, incomplete)


def _status(choice: Choice) -> tuple[str, dict[str, str] | None]:
    if choice.finish_reason is FinishReason.LENGTH:
        return "incomplete", {"reason": "max_output_tokens"}
    if choice.finish_reason is FinishReason.TIME_LIMIT:
        return "incomplete", {"reason": "max_time_limit"}
    return "completed", None


def _envelope(
    stored: StoredResponse,
    status: str,
    completed_at: int | None,
    output: list[dict[str, Any]],
    usage: Usage | None,
    incomplete: dict[str, str] | None = None,
) -> dict[str, Any]:
    request = stored.request
    fmt = request.response_format
    text_format: dict[str, Any] = {"type": fmt.type.value}
    if fmt.type is FormatType.JSON_SCHEMA and fmt.schema is not None:
        text_format.update(name="response", schema=json.loads(fmt.schema), strict=True)
    choice = request.tool_choice
    return {
        "created_at": stored.created,
        "completed_at": completed_at,
        "id": stored.id,
        "max_output_tokens": request.sampling.max_tokens,
        "model": stored.completion.model,
        "object": "response",
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls,
        "previous_response_id": stored.previous_response_id,
        "reasoning": {"effort": request.reasoning_effort, "summary": "detailed" if request.reasoning_effort else None},
        "temperature": request.sampling.temperature,
        "text": {"format": text_format},
        "tool_choice": (
            {"type": "function", "name": choice.function}
            if choice is not None and choice.mode is ToolMode.FUNCTION
            else (choice.mode.value if choice is not None else "auto")
        ),
        "tools": [
            {"type": "function", "name": t.name, "description": t.description, "parameters": json.loads(t.parameters)}
            for t in request.tools
        ],
        "top_p": request.sampling.top_p,
        "usage": None if usage is None else usage_body(usage),
        "user": request.user,
        "incomplete_details": incomplete,
        "status": status,
        "store": stored.stored,
        "metadata": {"system_fingerprint": stored.completion.fingerprint},
        "background": False,
        "service_tier": "default",
        "truncation": "disabled",
        "top_logprobs": request.top_logprobs or 0,
        "error": None if stored.error is None else {"code": "server_error", "message": stored.error},
        "instructions": stored.instructions,
    }


def usage_body(u: Usage) -> dict[str, Any]:
    """Responses count reasoning inside output_tokens (Chat does not): the same record, another view."""
    output = u.completion_tokens + u.reasoning_tokens
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens + output,
        "num_sources_used": 0,
        "num_server_side_tools_used": 0,
    }


def _output(stored: StoredResponse, choice: Choice, sealer: Sealer) -> list[dict[str, Any]]:
    items = []
    if choice.reasoning:
        items.append(_sealed(_reasoning_item(stored.id, choice.reasoning, "completed"), stored, sealer))
    if choice.text or not choice.tool_calls:
        items.append(_message_item(stored.id, choice.text, "completed", choice.logprobs))
    items += [_call_item(call, "completed") for call in choice.tool_calls]
    return items


def _sealed(item: dict[str, Any], stored: StoredResponse, sealer: Sealer) -> dict[str, Any]:
    """A finished reasoning item, with its sealed thinking when the request included it."""
    if stored.sealed_reasoning:
        return {**item, "encrypted_content": sealer.seal(item["summary"][0]["text"], sealing.REASONING)}
    return item


def _reasoning_item(response_id: str, text: str | None, status: str) -> dict[str, Any]:
    summary = [{"text": text, "type": "summary_text"}] if text is not None else []
    return {"id": f"rs_{response_id}", "summary": summary, "type": "reasoning", "status": status}


def _logprobs(entries: Sequence[TokenLogprob] | None) -> list[dict[str, Any]]:
    """Each token's log-probability (and the likeliest alternatives), when the request asked for them."""
    return logprobs_body(tuple(entries))["content"] if entries else []


def _text_part(text: str, logprobs: Sequence[TokenLogprob] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "logprobs": _logprobs(logprobs), "annotations": []}


def _message_item(
    response_id: str, text: str | None, status: str, logprobs: Sequence[TokenLogprob] | None = None
) -> dict[str, Any]:
    content = [_text_part(text, logprobs)] if text is not None else []
    return {"content": content, "id": f"msg_{response_id}", "role": "assistant", "type": "message", "status": status}


def _call_item(call: ToolCall, status: str, arguments: str | None = None) -> dict[str, Any]:
    return {
        "id": f"fc_{uuid.uuid5(uuid.NAMESPACE_OID, call.id)}",
        "type": "function_call",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
        "status": status,
    }


# -- streaming --------------------------------------------------------------------------------------

ItemKind = Literal["reasoning", "message"]


class _Events:
    """Numbers events gap-free from 0 and frames them (`event:` + `data:`)."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        payload = {"sequence_number": self.sequence, "type": kind, **fields}
        self.sequence += 1
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        return f"event: {kind}\ndata: {data}\n\n".encode()


async def response_events(
    running: TurnStream, request_id: str, sealer: Sealer, ping_interval: float = 10.0
) -> AsyncIterator[bytes]:
    """The full Responses event sequence for one turn (the core stores the response as it ends: the
    finished answer before the last event, or the failure of a stream that broke after its first byte)."""
    event = _Events()
    stream, stored, collector = running.stream, running.response, running.collector
    rid = stored.id
    yield event("response.created", response=_envelope(stored, "in_progress", None, [], None))
    yield event("response.in_progress", response=_envelope(stored, "in_progress", None, [], None))
    output: list[dict[str, Any]] = []
    open_kind: ItemKind | None = None

    def close() -> list[bytes]:
        nonlocal open_kind
        if open_kind is None:
            return []
        index, kind, so_far = len(output), open_kind, collector.choice(0)
        open_kind = None
        if kind == "reasoning":
            text = so_far.reasoning or ""
            part = {"text": text, "type": "summary_text"}
            item = _sealed(_reasoning_item(rid, text, "completed"), stored, sealer)
            frames = [
                event("response.reasoning_summary_text.done", item_id=f"rs_{rid}", output_index=index,
                      summary_index=0, text=text),
                event("response.reasoning_summary_part.done", item_id=f"rs_{rid}", output_index=index,
                      part=part, summary_index=0),
            ]  # fmt: skip
        else:
            text, tokens = so_far.text, so_far.logprobs
            item = _message_item(rid, text, "completed", tokens)
            frames = [
                event("response.output_text.done", content_index=0, item_id=f"msg_{rid}", output_index=index,
                      text=text, logprobs=_logprobs(tokens)),
                event("response.content_part.done", content_index=0, item_id=f"msg_{rid}", output_index=index,
                      part=_text_part(text, tokens)),
            ]  # fmt: skip
        output.append(item)
        return [*frames, event("response.output_item.done", item=item, output_index=index)]

    def open_item(kind: ItemKind) -> list[bytes]:
        nonlocal open_kind
        frames = close() if open_kind != kind else []
        if open_kind == kind:
            return frames
        open_kind = kind
        index = len(output)
        if kind == "reasoning":
            return [
                *frames,
                event("response.output_item.added", item=_reasoning_item(rid, None, "in_progress"), output_index=index),
                event("response.reasoning_summary_part.added", item_id=f"rs_{rid}", output_index=index,
                      part={"text": "", "type": "summary_text"}, summary_index=0),
            ]  # fmt: skip
        return [
            *frames,
            event("response.output_item.added", item=_message_item(rid, None, "in_progress"), output_index=index),
            event("response.content_part.added", content_index=0, item_id=f"msg_{rid}", output_index=index,
                  part=_text_part("")),
        ]  # fmt: skip

    try:
        async for item in with_pings(stream.events, ping_interval):
            if item is None:
                yield b": keep-alive\n\n"
                continue
            if isinstance(item, ReasoningDelta):
                for frame in open_item("reasoning"):
                    yield frame
                yield event("response.reasoning_summary_text.delta", delta=item.text, item_id=f"rs_{rid}",
                            output_index=len(output), summary_index=0)  # fmt: skip
            elif isinstance(item, TextDelta):
                if not item.text and not item.logprobs:
                    continue
                for frame in open_item("message"):
                    yield frame
                yield event("response.output_text.delta", content_index=0, delta=item.text, item_id=f"msg_{rid}",
                            output_index=len(output), logprobs=_logprobs(item.logprobs))  # fmt: skip
            elif isinstance(item, ToolCallDelta):
                for frame in close():
                    yield frame
                for call in item.calls:  # whole calls: one delta each, as xAI sends them
                    index = len(output)
                    done = _call_item(call, "completed")
                    yield event("response.output_item.added", item=_call_item(call, "in_progress", ""),
                                output_index=index)  # fmt: skip
                    yield event("response.function_call_arguments.delta", item_id=done["id"], output_index=index,
                                delta=call.arguments)  # fmt: skip
                    yield event("response.function_call_arguments.done", item_id=done["id"], output_index=index,
                                arguments=call.arguments)  # fmt: skip
                    output.append(done)
                    yield event("response.output_item.done", item=done, output_index=index)
        if open_kind != "message" and not any(o["type"] in ("message", "function_call") for o in output):
            for frame in open_item("message"):  # an empty answer is still a message item
                yield frame
        for frame in close():
            yield frame
        finished = running.response  # as stored
        completion = finished.completion
        status, incomplete = _status(completion.choices[0])
        final = _envelope(finished, status, finished.completed, output, completion.usage, incomplete)
        yield event("response.completed" if status == "completed" else "response.incomplete", response=final)
    except Exception as exc:  # after the first byte: one error event (xAI's shape); the core stored it as failed
        if not isinstance(exc, LocalXAIError):
            log.exception("response stream failed after the first byte (response %s)", rid)
        message = error_body(exc if isinstance(exc, LocalXAIError) else None, request_id)["error"]
        yield event("error", code=None, message=message, param=None)
    finally:
        with anyio.CancelScope(shield=True):
            await stream.events.aclose()


# -- input items ------------------------------------------------------------------------------------

ID_PREFIXES = {"message": "msg", "reasoning": "rs", "function_call": "fc", "function_call_output": "fco"}

def input_items_body(stored: StoredResponse, limit: int, descending: bool, after: str | None) -> dict[str, Any]:
    """One page of the response's input items (OpenAI's list shape), after the item `after`."""
    items = input_items(stored)
    if descending:
        items.reverse()
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise InvalidArgument(f"after: response {stored.id} has no input item {after!r}.")
        start = ids.index(after) + 1
    page = items[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + limit < len(items),
    }


def input_items(stored: StoredResponse) -> list[dict[str, Any]]:
    """The resolved input the response ran on (the chain's history with its answers, `instructions` as the
    system message it became, then the request's own input), oldest first, as input items. The store keeps
    messages, not items: an item's id is derived from the response id and the item's position, the same
    on every read."""
    items = [item for message in stored.request.messages for item in _input_items(message)]
    return [
        {**item, "id": f"{ID_PREFIXES[item['type']]}_{uuid.uuid5(uuid.NAMESPACE_URL, f'{stored.id}/{i}')}"}
        for i, item in enumerate(items)
    ]


def _input_items(message: Message) -> list[dict[str, Any]]:
    """One message as the input items that stand for it (an assistant turn: reasoning, text, calls); the
    output builders' ids are replaced by `input_items`."""
    if message.role in (Role.TOOL, Role.FUNCTION):
        call_id = message.tool_call_id or ""
        return [{"type": "function_call_output", "call_id": call_id, "output": message.text, "status": "completed"}]
    if message.role is not Role.ASSISTANT:
        content = [_input_part(part) for part in message.content]
        return [{"type": "message", "role": message.role.value, "content": content, "status": "completed"}]
    items = [_reasoning_item("", message.reasoning, "completed")] if message.reasoning else []
    if message.text or not message.tool_calls:
        items.append(_message_item("", message.text, "completed"))
    return items + [_call_item(call, "completed") for call in message.tool_calls]


def _input_part(part: Part) -> dict[str, Any]:
    if isinstance(part, ImagePart):
        return {"type": "input_image", "image_url": part.url, "detail": part.detail.value}
    return {"type": "input_text", "text": part.text}


# -- compaction -------------------------------------------------------------------------------------


def compaction_body(request: ChatRequest, completion: Completion, sealer: Sealer) -> dict[str, Any]:
    """OpenAI's CompactedResponse (what `responses.compact()` parses): every user message of the
    context, then one compaction item holding the sealed summary (spec A.7, D3)."""
    users = [m for m in request.messages if m.role is Role.USER]
    output: list[dict[str, Any]] = [
        {
            "type": "message",
            "id": f"msg_{uuid.uuid4()}",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": m.text}],
        }
        for m in users
    ]
    summary = completion.choices[0].text
    output.append({"type": "compaction", "id": f"cmp_{uuid.uuid4()}", "encrypted_content":
                   sealer.seal(summary, sealing.COMPACTION)})  # fmt: skip
    return {
        "id": str(uuid.uuid4()),
        "object": "response.compaction",
        "created_at": completion.created,
        "output": output,
        "usage": usage_body(completion.usage),
    }
