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
    CallStatus,
    ChatRequest,
    Choice,
    Completion,
    Event,
    FilePart,
    FinishReason,
    FormatType,
    ImagePart,
    Message,
    Part,
    Progress,
    ReasoningDelta,
    Role,
    ServerCall,
    ServerCallEvent,
    StoredResponse,
    TextDelta,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolMode,
    Usage,
    inline_citations,
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
    if stored.progress in (Progress.QUEUED, Progress.IN_PROGRESS):  # a background one, not yet run to its end
        return _envelope(stored, stored.progress.value, None, [], None)
    if stored.error is not None:
        return _envelope(stored, "failed", None, [], None)
    if not stored.completion.choices:  # cancelled before it ran
        return _envelope(stored, "cancelled", stored.completed, [], None)
    [choice] = stored.completion.choices
    status, incomplete = _status(stored, choice)
    output = _output(stored, choice, sealer)
    return _envelope(stored, status, stored.completed, output, stored.completion.usage, incomplete)


def _status(stored: StoredResponse, choice: Choice) -> tuple[str, dict[str, str] | None]:
    if stored.progress is Progress.CANCELLED:
        return "cancelled", None
    if choice.finish_reason is FinishReason.LENGTH:
        return "incomplete", {"reason": "max_output_tokens"}
    if choice.finish_reason is FinishReason.TIME_LIMIT:
        return "incomplete", {"reason": "max_time_limit"}
    if choice.finish_reason is FinishReason.MAX_TURNS:
        return "incomplete", {"reason": "max_turns"}
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
        "tools": _tools_body(request),
        "top_p": request.sampling.top_p,
        "usage": None if usage is None else usage_body(usage),
        "user": request.user,
        "incomplete_details": incomplete,
        "status": status,
        "store": stored.stored,
        "metadata": {"system_fingerprint": stored.completion.fingerprint},
        "background": stored.background,
        "service_tier": "default",
        "truncation": "disabled",
        "top_logprobs": request.top_logprobs or 0,
        "error": None if stored.error is None else {"code": "server_error", "message": stored.error},
        "instructions": stored.instructions,
    }


def _tools_body(request: ChatRequest) -> list[dict[str, Any]]:
    """The tools the request offered, as it sent them (an MCP server's credentials left out)."""
    tools: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for t in request.tools:
        if t.kind in ("local_shell", "shell"):
            tools.append({"type": t.kind})
            continue
        name = t.name.removeprefix(t.namespace)
        if t.kind == "custom":
            echo = {"type": "custom", "name": name, "description": t.description}
        else:
            echo = {"type": "function", "name": name, "description": t.description,
                    "parameters": json.loads(t.parameters)}  # fmt: skip
        if not t.namespace:
            tools.append(echo)
        elif t.namespace in groups:
            groups[t.namespace]["tools"].append(echo)
        else:
            groups[t.namespace] = {"type": "namespace", "name": t.namespace, "tools": [echo]}
            tools.append(groups[t.namespace])
    for tool in request.server_tools:
        settings = {k: v for k, v in json.loads(tool.config).items() if k not in ("authorization", "headers")}
        tools.append({"type": tool.kind, **settings})
    return tools


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
        "num_server_side_tools_used": len(u.server_tools_used),
        "server_side_tool_usage_details": {
            f"{USAGE_NAMES.get(kind, kind)}_calls": u.server_tools_used.count(kind)
            for kind in ("web_search", "x_search", "code_execution", "file_search", "mcp", "collections_search")
        },
    }


def _output(stored: StoredResponse, choice: Choice, sealer: Sealer) -> list[dict[str, Any]]:
    """The output items: each agent-loop turn that called server-side tools (its thinking, its text, its
    calls as they ended), then the answer (its thinking, its text with the citations, its client calls)."""
    ended = {call.call.id: call for call in choice.server_calls}
    items: list[dict[str, Any]] = []
    ids = _ItemIds(stored.id)
    for step in choice.steps:
        if step.role is not Role.ASSISTANT:
            continue
        if step.reasoning:
            items.append(_sealed(_reasoning_item(ids.next("rs"), step.reasoning, "completed"), stored, sealer))
        if step.text:
            items.append(_message_item(ids.next("msg"), step.text, "completed"))
        items += [server_call_item(ended[c.id], stored.tool_outputs) for c in step.tool_calls if c.id in ended]
    if choice.reasoning:
        items.append(_sealed(_reasoning_item(ids.next("rs"), choice.reasoning, "completed"), stored, sealer))
    if choice.text or not choice.tool_calls:
        items.append(_message_item(ids.next("msg"), choice.text, "completed", choice.logprobs, choice.citations))
    items += [_call_item(call, "completed", stored.request.tools) for call in choice.tool_calls]
    return items


class _ItemIds:
    """Item ids of one response: the first item of a kind is `msg_<id>` (as before the agent loop), the
    next ones `msg_<id>_1`, ...: the same on every rendering, streamed or stored."""

    def __init__(self, response_id: str) -> None:
        self._id = response_id
        self._counts: dict[str, int] = {}

    def next(self, prefix: str) -> str:
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}_{self._id}" + (f"_{n}" if n else "")


# The Responses item of each server-side tool kind, and the name of its usage detail.
CALL_ITEMS = {"web_search": "web_search_call", "code_execution": "code_interpreter_call", "mcp": "mcp_call",
              "x_search": "x_search_call", "file_search": "file_search_call",
              "collections_search": "file_search_call", "attachment_search": "attachment_search_call"}  # fmt: skip
USAGE_NAMES = {"code_execution": "code_interpreter", "collections_search": "document_search"}


def server_call_item(call: ServerCall, shown: Sequence[str]) -> dict[str, Any]:
    """xAI's function-call-shaped item (`name`, `arguments`, `call_id` "", `status`), with OpenAI's fields
    for the same tool (`action`, `code`/`outputs`, `server_label`/`output`) so its SDK reads it too;
    the output only where the request `include`d it."""
    c = call.call
    item: dict[str, Any] = {
        "type": CALL_ITEMS.get(c.kind, f"{c.kind}_call"),
        "id": f"fc_{uuid.uuid5(uuid.NAMESPACE_OID, c.id)}",
        "name": c.name,
        "arguments": c.arguments,
        "call_id": "",
        "status": call.status.value,
    }
    show = c.kind in shown and call.status is not CallStatus.IN_PROGRESS
    try:
        args = json.loads(c.arguments or "{}")
    except json.JSONDecodeError:
        args = {}
    args = args if isinstance(args, dict) else {}
    if c.kind == "web_search":
        if "url" in args:
            item["action"] = {"type": "open_page", "url": str(args["url"])}
        else:
            item["action"] = {"type": "search", "query": str(args.get("query", ""))}
            if show:
                item["action"]["sources"] = [{"type": "url", "url": url} for url in call.sources]
    elif c.kind == "code_execution":
        item.update(code=str(args.get("code", "")), container_id="", outputs=None)
        if show:
            item["outputs"] = [{"type": "logs", "logs": call.output}]
    elif c.kind == "mcp":
        item["server_label"] = call.server_label or ""
        item["output"] = call.output if call.status is CallStatus.COMPLETED else None
    elif c.kind in ("file_search", "collections_search"):
        item["queries"] = [str(args.get("query", ""))]
        item["results"] = [
            {"file_id": r.file_id, "filename": r.filename, "score": r.score, "text": r.text,
             "attributes": {"collection_id": r.collection_id, "chunk_id": r.chunk_id}}
            for r in call.results
        ] if show else None  # fmt: skip
    if call.error is not None:
        item["error"] = call.error
    return item


def _sealed(item: dict[str, Any], stored: StoredResponse, sealer: Sealer) -> dict[str, Any]:
    """A finished reasoning item, with its sealed thinking when the request included it."""
    if stored.sealed_reasoning:
        return {**item, "encrypted_content": sealer.seal(item["summary"][0]["text"], sealing.REASONING)}
    return item


def _reasoning_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    summary = [{"text": text, "type": "summary_text"}] if text is not None else []
    return {"id": item_id, "summary": summary, "type": "reasoning", "status": status}


def _logprobs(entries: Sequence[TokenLogprob] | None) -> list[dict[str, Any]]:
    """Each token's log-probability (and the likeliest alternatives), when the request asked for them."""
    return logprobs_body(tuple(entries))["content"] if entries else []


def _text_part(
    text: str, logprobs: Sequence[TokenLogprob] | None = None, citations: Sequence[str] = ()
) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "logprobs": _logprobs(logprobs),
            "annotations": _annotations(text, citations)}  # fmt: skip


def _annotations(text: str, citations: Sequence[str]) -> list[dict[str, Any]]:
    """The answer's sources as url_citation annotations: where the text names one, at that place; the
    others at 0..0, as xAI annotates a source without a position."""
    placed = inline_citations(text, citations)
    named = {url for url, _, _ in placed}
    spans = [*placed, *((url, 0, 0) for url in citations if url not in named)]
    return [{"type": "url_citation", "url": url, "title": url, "start_index": start, "end_index": end}
            for url, start, end in spans]  # fmt: skip


def _message_item(
    item_id: str,
    text: str | None,
    status: str,
    logprobs: Sequence[TokenLogprob] | None = None,
    citations: Sequence[str] = (),
) -> dict[str, Any]:
    content = [_text_part(text, logprobs, citations)] if text is not None else []
    return {"content": content, "id": item_id, "role": "assistant", "type": "message", "status": status}


def _call_item(call: ToolCall, status: str, tools: Sequence[Tool] = (), opening: bool = False) -> dict[str, Any]:
    """A client tool call in its tool kind's item (function_call, custom_tool_call, local_shell_call,
    shell_call), named as the client named the tool (`namespace` apart); `opening`: as first announced."""
    tool = next((t for t in tools if t.name == call.name), None)
    kind, namespace = (tool.kind, tool.namespace) if tool is not None else ("function", "")
    name = call.name.removeprefix(namespace)
    uid = uuid.uuid5(uuid.NAMESPACE_OID, call.id)
    item: dict[str, Any]
    if kind == "function":
        arguments = "" if opening else call.arguments
        item = {"id": f"fc_{uid}", "type": "function_call", "call_id": call.id, "name": name, "arguments": arguments,
                "status": status}  # fmt: skip
    elif kind == "custom":
        text = "" if opening else str(_arguments(call).get("input", ""))
        item = {"id": f"ctc_{uid}", "type": "custom_tool_call", "call_id": call.id, "name": name, "input": text,
                "status": status}  # fmt: skip
    elif kind == "local_shell":
        args = _arguments(call)
        action = {"type": "exec", "command": args.get("command", []), "env": {}, "timeout_ms": args.get("timeout_ms"),
                  "working_directory": args.get("working_directory"), "user": None}  # fmt: skip
        item = {"id": call.id, "type": "local_shell_call", "call_id": call.id, "status": status, "action": action}
    else:
        args = _arguments(call)
        action = {"commands": args.get("commands", []), "timeout_ms": args.get("timeout_ms"), "max_output_length": None}
        item = {"id": f"sh_{uid}", "type": "shell_call", "call_id": call.id, "status": status, "action": action,
                "environment": {"type": "local"}}  # fmt: skip
    if namespace:
        item["namespace"] = namespace
    return item


def _arguments(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# -- streaming --------------------------------------------------------------------------------------

ItemKind = Literal["reasoning", "message"]


class _Events:
    """Numbers events gap-free from 0 and frames them (`event:` + `data:`); those numbered up to `after`
    (a resumed stream's `starting_after`) are counted but not sent (empty frames)."""

    def __init__(self, after: int = -1) -> None:
        self.sequence = 0
        self._after = after

    def __call__(self, kind: str, **fields: Any) -> bytes:
        payload = {"sequence_number": self.sequence, "type": kind, **fields}
        self.sequence += 1
        if payload["sequence_number"] <= self._after:
            return b""
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        return f"event: {kind}\ndata: {data}\n\n".encode()


async def response_events(
    running: TurnStream, request_id: str, sealer: Sealer, ping_interval: float = 10.0, after: int = -1
) -> AsyncIterator[bytes]:
    """The full Responses event sequence for one turn (the core stores the response as it ends: the
    finished answer before the last event, or the failure of a stream that broke after its first byte).
    A background response's stream is its log's replay: the same events, numbered the same, every time
    (sent from after `after`): it opens queued and turns in_progress at its first event."""
    async for frame in _response_events(running, request_id, sealer, ping_interval, _Events(after)):
        if frame:
            yield frame


async def _response_events(
    running: TurnStream, request_id: str, sealer: Sealer, ping_interval: float, event: _Events
) -> AsyncIterator[bytes]:
    stream, stored = running.stream, running.response
    opened = "queued" if stored.background else "in_progress"
    yield event("response.created", response=_envelope(stored, opened, None, [], None))
    in_progress = _envelope(stored, "in_progress", None, [], None)
    yield event("response.queued" if stored.background else "response.in_progress",
                response=_envelope(stored, opened, None, [], None))  # fmt: skip
    started = not stored.background
    items = _StreamedItems(running, sealer, event)
    try:
        async for item in with_pings(stream.events, ping_interval):
            if item is None:
                yield b": keep-alive\n\n"
                continue
            if not started:
                started = True
                yield event("response.in_progress", response=in_progress)
            for frame in items.feed(item):
                yield frame
        finished = running.response  # as stored
        if not finished.completion.choices:  # a background response cancelled before it ran
            yield event("response.cancelled", response=_envelope(finished, "cancelled", finished.completed, [], None))
            return
        if not started:
            yield event("response.in_progress", response=in_progress)
        for frame in items.finish():
            yield frame
        completion = finished.completion
        status, incomplete = _status(finished, completion.choices[0])
        final = _envelope(finished, status, finished.completed, items.output, completion.usage, incomplete)
        kind = "response.completed" if status == "completed" else f"response.{status}"
        yield event(kind, response=final)
    except Exception as exc:  # after the first byte: one error event (xAI's shape); the core stored it as failed
        if not isinstance(exc, LocalXAIError):
            log.exception("response stream failed after the first byte (response %s)", stored.id)
        message = error_body(exc if isinstance(exc, LocalXAIError) else None, request_id)["error"]
        yield event("error", code=None, message=message, param=None)
    finally:
        with anyio.CancelScope(shield=True):
            await stream.events.aclose()


# The events a server-side call of each kind adds (OpenAI's names, xAI's for code execution):
# (kind -> (started, running, ended)); the item's own added/done events frame them.
CALL_EVENTS = {
    "web_search": ("response.web_search_call.in_progress", "response.web_search_call.searching",
                   "response.web_search_call.completed"),
    "code_execution": ("response.code_interpreter_call.in_progress", "response.code_interpreter_call.interpreting",
                       "response.code_interpreter_call.completed"),
    "mcp": ("response.mcp_call.in_progress", None, "response.mcp_call.completed"),
}  # fmt: skip


class _StreamedItems:
    """The output items of a streamed turn, opened and closed as the events arrive: the reasoning or the
    message being written (one at a time), and each server-side call from its start to its end (several
    at once when the model asked for them together)."""

    def __init__(self, running: TurnStream, sealer: Sealer, event: _Events) -> None:
        self._running = running
        self._sealer = sealer
        self._event = event
        self._ids = _ItemIds(running.response.id)
        self.output: list[dict[str, Any]] = []
        self._open: ItemKind | None = None
        self._open_id = ""
        self._calls: dict[str, int] = {}  # a running server-side call's id -> its output index

    def feed(self, item: Event) -> list[bytes]:
        event, index = self._event, len(self.output)
        if isinstance(item, ReasoningDelta):
            return [*self._opened("reasoning"), event("response.reasoning_summary_text.delta", delta=item.text,
                    item_id=self._open_id, output_index=index, summary_index=0)]  # fmt: skip
        if isinstance(item, TextDelta):
            if not item.text and not item.logprobs:
                return []
            return [*self._opened("message"), event("response.output_text.delta", content_index=0, delta=item.text,
                    item_id=self._open_id, output_index=index, logprobs=_logprobs(item.logprobs))]  # fmt: skip
        if isinstance(item, ToolCallDelta):
            frames = self._closed()
            tools = self._running.response.request.tools
            for call in item.calls:  # whole calls: one delta each, as xAI sends them
                index = len(self.output)
                done = _call_item(call, "completed", tools)
                frames.append(event("response.output_item.added", item=_call_item(call, "in_progress", tools, True),
                                    output_index=index))  # fmt: skip
                if done["type"] == "function_call":
                    frames += [
                        event("response.function_call_arguments.delta", item_id=done["id"], output_index=index,
                              delta=call.arguments),
                        event("response.function_call_arguments.done", item_id=done["id"], output_index=index,
                              arguments=call.arguments),
                    ]  # fmt: skip
                elif done["type"] == "custom_tool_call":
                    frames += [
                        event("response.custom_tool_call_input.delta", item_id=done["id"], output_index=index,
                              delta=done["input"]),
                        event("response.custom_tool_call_input.done", item_id=done["id"], output_index=index,
                              input=done["input"]),
                    ]  # fmt: skip
                frames.append(event("response.output_item.done", item=done, output_index=index))
                self.output.append(done)
            return frames
        if isinstance(item, ServerCallEvent):
            return self._server_call(item.call)
        return []

    def finish(self) -> list[bytes]:
        """The last item closed (an empty answer is still a message item), with the citations."""
        frames: list[bytes] = []
        if self._open != "message" and not any(o["type"] in ("message", "function_call") for o in self.output[
                self._answer_start():]):  # fmt: skip
            frames += self._opened("message")
        return frames + self._closed(final=True)

    def _answer_start(self) -> int:
        """Where the answer's items begin: after the last server-side call."""
        calls = [i for i, o in enumerate(self.output) if o["type"] in CALL_ITEMS.values()]
        return calls[-1] + 1 if calls else 0

    def _server_call(self, call: ServerCall) -> list[bytes]:
        event, kind = self._event, call.call.kind
        started, running, ended = CALL_EVENTS.get(kind, (None, None, None))
        shown = self._running.response.tool_outputs
        if call.status is CallStatus.IN_PROGRESS:
            frames = self._closed()
            index = len(self.output)
            item = server_call_item(call, shown)
            self._calls[call.call.id] = index
            self.output.append(item)
            frames.append(event("response.output_item.added", item=item, output_index=index))
            if started:
                frames.append(event(started, item_id=item["id"], output_index=index))
            if kind == "code_execution":
                code = item["code"]
                frames += [
                    event("response.code_interpreter_call_code.delta", item_id=item["id"], output_index=index,
                          delta=code),
                    event("response.code_interpreter_call_code.done", item_id=item["id"], output_index=index,
                          code=code),
                ]  # fmt: skip
            if running:
                frames.append(event(running, item_id=item["id"], output_index=index))
            return frames
        index = self._calls.pop(call.call.id)
        item = server_call_item(call, shown)
        self.output[index] = item
        frames = []
        if ended:
            name = "response.mcp_call.failed" if call.status is CallStatus.FAILED and kind == "mcp" else ended
            frames.append(event(name, item_id=item["id"], output_index=index))
        return [*frames, event("response.output_item.done", item=item, output_index=index)]

    def _opened(self, kind: ItemKind) -> list[bytes]:
        if self._open == kind:
            return []
        frames = self._closed()
        event, index = self._event, len(self.output)
        self._open = kind
        if kind == "reasoning":
            self._open_id = self._ids.next("rs")
            return [
                *frames,
                event("response.output_item.added", item=_reasoning_item(self._open_id, None, "in_progress"),
                      output_index=index),
                event("response.reasoning_summary_part.added", item_id=self._open_id, output_index=index,
                      part={"text": "", "type": "summary_text"}, summary_index=0),
            ]  # fmt: skip
        self._open_id = self._ids.next("msg")
        return [
            *frames,
            event("response.output_item.added", item=_message_item(self._open_id, None, "in_progress"),
                  output_index=index),
            event("response.content_part.added", content_index=0, item_id=self._open_id, output_index=index,
                  part=_text_part("")),
        ]  # fmt: skip

    def _closed(self, final: bool = False) -> list[bytes]:
        """The open reasoning or message item finished (`final`: the answer's, which carries the citations)."""
        if self._open is None:
            return []
        event, index, so_far, item_id = self._event, len(self.output), self._running.collector.choice(0), self._open_id
        kind, self._open = self._open, None
        if kind == "reasoning":
            text = so_far.reasoning or ""
            part = {"text": text, "type": "summary_text"}
            item = _sealed(_reasoning_item(item_id, text, "completed"), self._running.response, self._sealer)
            frames = [
                event("response.reasoning_summary_text.done", item_id=item_id, output_index=index,
                      summary_index=0, text=text),
                event("response.reasoning_summary_part.done", item_id=item_id, output_index=index,
                      part=part, summary_index=0),
            ]  # fmt: skip
        else:
            text, tokens = so_far.text, so_far.logprobs
            citations = so_far.citations if final else ()
            item = _message_item(item_id, text, "completed", tokens, citations)
            frames = [
                event("response.output_text.annotation.added", item_id=item_id, output_index=index,
                      content_index=0, annotation_index=i, annotation=annotation)
                for i, annotation in enumerate(item["content"][0]["annotations"])
            ]  # fmt: skip
            frames += [
                event("response.output_text.done", content_index=0, item_id=item_id, output_index=index,
                      text=text, logprobs=_logprobs(tokens)),
                event("response.content_part.done", content_index=0, item_id=item_id, output_index=index,
                      part=item["content"][0]),
            ]  # fmt: skip
        self.output.append(item)
        return [*frames, event("response.output_item.done", item=item, output_index=index)]


# -- input items ------------------------------------------------------------------------------------

ID_PREFIXES = {"message": "msg", "reasoning": "rs", "function_call": "fc", "function_call_output": "fco",
               "custom_tool_call": "ctc", "local_shell_call": "lsh", "shell_call": "sh"}  # fmt: skip


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
    server = {c.id for m in stored.request.messages for c in m.tool_calls if c.kind != "function"}
    messages = [m for m in stored.request.messages if not (m.role is Role.TOOL and m.tool_call_id in server)]
    items = [item for message in messages for item in _input_items(message, stored.request.tools)]
    return [
        {**item, "id": f"{ID_PREFIXES[item['type']]}_{uuid.uuid5(uuid.NAMESPACE_URL, f'{stored.id}/{i}')}"}
        for i, item in enumerate(items)
    ]


def _input_items(message: Message, tools: Sequence[Tool]) -> list[dict[str, Any]]:
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
    return items + [_call_item(call, "completed", tools) for call in message.tool_calls if call.kind == "function"]


def _input_part(part: Part) -> dict[str, Any]:
    if isinstance(part, ImagePart):
        return {"type": "input_image", "image_url": part.url, "detail": part.detail.value}
    if isinstance(part, FilePart):  # the reference as sent; inline bytes are not echoed back
        ref = {"file_id": part.file_id} if part.file_id else {"file_url": part.url} if part.url else {}
        return {"type": "input_file", **ref, **({"filename": part.filename} if part.filename else {})}
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
