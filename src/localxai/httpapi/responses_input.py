"""The Responses API's requests (`/v1/responses`, `/v1/responses/compact`): input items, tools and
formats -> the core's Turn, checked field by field (the shapes are a union); xAI's refusals, in its words.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pydantic import Field

from localxai import sealing
from localxai.chat import (
    ChatRequest,
    Detail,
    FormatType,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    Role,
    Sampling,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolMode,
)
from localxai.conversations import Turn
from localxai.errors import Gone, InvalidArgument, UnsupportedParameter
from localxai.httpapi.schema import RequestBody
from localxai.sealing import Sealer

# xAI's server-side tools (spec A.10): not available locally, refused by name.
SERVER_TOOLS = frozenset(
    {
        "web_search", "x_search", "file_search", "code_interpreter", "code_execution", "mcp", "shell",
        "view_image", "view_x_video", "attachment_search", "collections_search", "web_search_preview",
        "custom", "image_generation", "computer_use_preview", "local_shell",
    }
)  # fmt: skip
SERVER_TOOL_ITEMS = frozenset(f"{t}_call" for t in SERVER_TOOLS)  # history items of those tools: skipped
COMPACTED = "A summary of the earlier conversation:"
ROLES = {"user": Role.USER, "assistant": Role.ASSISTANT, "system": Role.SYSTEM, "developer": Role.DEVELOPER}


class ResponsesRequest(RequestBody):
    """POST /v1/responses (spec A.2). Items are checked by hand: their shapes are a union."""

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    include: list[str] | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None  # "not supported, only maintained for compatibility": ignored
    background: bool | None = None
    search_parameters: dict[str, Any] | None = None
    seed: int | None = None


class CompactRequest(RequestBody):
    """POST /v1/responses/compact (spec A.7): the conversation so far, to be summarised."""

    model: str
    input: str | list[dict[str, Any]] = Field(default_factory=list)
    previous_response_id: str | None = None
    instructions: str | None = None


# -- request ----------------------------------------------------------------------------------------


ENCRYPTED_REASONING = "reasoning.encrypted_content"


def turn(body: ResponsesRequest, sealer: Sealer) -> Turn:
    """The turn a Responses request amounts to; raises the client's error (before any byte)."""
    if body.background:
        raise UnsupportedParameter("Argument not supported: background")
    if body.search_parameters and body.search_parameters.get("mode") != "off":
        raise Gone(
            "Live search is deprecated. Please switch to the Agent Tools API: https://docs.x.ai/docs/guides/tools/overview"
        )
    items = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    listed = body.tools or []
    server = [t for t in listed if isinstance(t.get("type"), str) and t["type"] in SERVER_TOOLS]
    tools = tuple(_tool(i, t) for i, t in enumerate(t for t in listed if t not in server))
    request = ChatRequest(
        model=body.model,
        messages=tuple(_messages(items, sealer)),
        sampling=Sampling(
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            max_tokens=body.max_output_tokens,
            seed=body.seed,
        ),
        stream=body.stream,
        include_usage=True,
        user=body.user,
        tools=tools,
        tool_choice=_tool_choice(body.tool_choice),
        parallel_tool_calls=True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        response_format=_format(body.text),
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs if body.logprobs else None,
        reasoning_effort=(body.reasoning or {}).get("effort"),
        server_tools=tuple(t["type"] for t in server),
    )
    return Turn(
        request,
        previous_id=body.previous_response_id,
        instructions=body.instructions,
        store=body.store,
        sealed_reasoning=ENCRYPTED_REASONING in (body.include or ()),
    )


def _messages(items: list[dict[str, Any]], sealer: Sealer) -> list[Message]:
    out: list[Message] = []
    thinking: str | None = None  # an opened reasoning item, for the assistant turn that follows it
    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = _optional_text(item, "type", where) or "message"
        if kind == "message":
            role = ROLES.get(_optional_text(item, "role", where) or "")
            if role is None:
                raise InvalidArgument(f"{where}.role must be user, assistant, system or developer.")
            reasoning, thinking = (thinking, None) if role is Role.ASSISTANT else (None, thinking)
            out.append(Message(role, _parts(item.get("content"), where), reasoning=reasoning))
        elif kind == "function_call":
            call = ToolCall(_text(item, "call_id", where), _text(item, "name", where), _text(item, "arguments", where))
            if out and out[-1].role is Role.ASSISTANT and not out[-1].text:  # parallel calls: one turn
                out[-1] = replace(out[-1], tool_calls=(*out[-1].tool_calls, call))
            else:
                out.append(Message(Role.ASSISTANT, (), tool_calls=(call,), reasoning=thinking))
                thinking = None
        elif kind == "function_call_output":
            call_id = _text(item, "call_id", where)  # that a call precedes it is the core's check
            output = item.get("output")
            if isinstance(output, list):  # Codex sends parts
                output = "".join(_text(p, "text", f"{where}.output") for p in output if isinstance(p, dict))
            if not isinstance(output, str):
                raise InvalidArgument(f"{where}.output must be a string.")
            out.append(Message(Role.TOOL, (TextPart(output),), tool_call_id=call_id))
        elif kind == "reasoning":
            # Our own sealed thinking goes back with its turn; anything else (another provider's blob,
            # a summary only) is dropped, never an error.
            thinking = sealer.open(item.get("encrypted_content"), sealing.REASONING)
        elif kind == "compaction":  # a summary this server wrote (/v1/responses/compact) stands in for history
            summary = sealer.open(item.get("encrypted_content"), sealing.COMPACTION)
            if summary is not None:
                out.append(Message(Role.SYSTEM, (TextPart(f"{COMPACTED}\n{summary}"),)))
        elif kind in SERVER_TOOL_ITEMS:
            continue  # server-side tool calls of another provider: nothing this model can use
        else:
            raise InvalidArgument(f"{where}: input items of type {kind!r} are not supported.")
    return out


def _parts(content: Any, where: str) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(content),)
    if not isinstance(content, list) or not content:
        raise InvalidArgument(f"{where}.content must be a string or a non-empty list of parts.")
    parts: list[Part] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append(TextPart(_text(part, "text", f"{where}.content[{j}]")))
        elif kind == "input_image":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise InvalidArgument(f"{where}.content[{j}].image_url must be a URL string.")
            try:
                detail = Detail(part.get("detail") or "auto")
            except ValueError:
                raise InvalidArgument(f"{where}.content[{j}].detail must be auto, low or high.") from None
            parts.append(ImagePart(url, detail))
        else:
            raise InvalidArgument(f"{where}.content[{j}]: parts of type {kind!r} are not supported.")
    return tuple(parts)


def _optional_text(item: dict[str, Any], key: str, where: str) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"{where}.{key} must be a string.")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be an object.")
    return value


def _text(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}.{key} must be a string.")
    return value


def _tool(index: int, tool: dict[str, Any]) -> Tool:
    kind = _optional_text(tool, "type", f"tools[{index}]")
    if kind != "function":
        raise InvalidArgument(
            f"Tool type {kind!r} is not supported by this server: server-side tools (web_search, x_search, "
            "file_search, code_interpreter, mcp, …) are not available in localxai"
        )
    nested = tool.get("function")
    spec: dict[str, Any] = nested if isinstance(nested, dict) else tool  # flat, or Chat's nesting
    where = f"tools[{index}]"
    parameters = _object(spec.get("parameters") or {"type": "object", "properties": {}}, f"{where}.parameters")
    description = _optional_text(spec, "description", where) or ""
    return Tool(name=_text(spec, "name", where), description=description, parameters=json.dumps(parameters))


def _tool_choice(choice: str | dict[str, Any] | None) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        try:
            return ToolChoice(ToolMode(choice))
        except ValueError:
            raise InvalidArgument("tool_choice must be none, auto, required or a function.") from None
    nested = choice.get("function")
    name = choice.get("name") or (nested.get("name") if isinstance(nested, dict) else None)
    if choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidArgument('tool_choice must be {"type": "function", "name": "<function name>"}.')
    return ToolChoice(ToolMode.FUNCTION, name)


def _format(text: dict[str, Any] | None) -> ResponseFormat:
    fmt = _object((text or {}).get("format") or {"type": "text"}, "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return ResponseFormat()
    if kind == "json_object":
        return ResponseFormat(FormatType.JSON_OBJECT)
    if kind == "json_schema":
        nested = fmt.get("json_schema")
        schema = fmt.get("schema", nested.get("schema") if isinstance(nested, dict) else None)
        if not isinstance(schema, dict):
            raise InvalidArgument("text.format json_schema needs a schema object.")
        return ResponseFormat(FormatType.JSON_SCHEMA, json.dumps(schema))
    raise InvalidArgument("text.format.type must be text, json_object or json_schema.")


MAX_INPUT_ITEMS_PAGE = 100


def input_items_query(limit: str, order: str) -> tuple[int, bool]:
    """`?limit=1..100&order=asc|desc` of GET /v1/responses/{id}/input_items: (limit, descending)."""
    try:
        count = int(limit)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_INPUT_ITEMS_PAGE:
        raise InvalidArgument(f"limit must be an integer between 1 and {MAX_INPUT_ITEMS_PAGE}, got {limit!r}.")
    if order not in ("asc", "desc"):
        raise InvalidArgument(f"order must be asc or desc, got {order!r}.")
    return count, order == "desc"




def compact_turn(body: CompactRequest, sealer: Sealer) -> Turn:
    """The conversation a compaction summarises (the core asks the model for the summary)."""
    as_response = ResponsesRequest(
        model=body.model, input=body.input, previous_response_id=body.previous_response_id,
        instructions=body.instructions,
    )  # fmt: skip
    return replace(turn(as_response, sealer), store=False)
