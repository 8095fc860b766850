"""The Responses API's requests (`/v1/responses`, `/v1/responses/compact`): input items, tools and
formats -> the core's Turn, checked field by field (the shapes are a union); xAI's refusals, in its words.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pydantic import Field

from localxai import lark_regex, sealing
from localxai.agent import collections_search
from localxai.agent.attachment_search import attachment_settings
from localxai.agent.base import MAX_DOMAINS
from localxai.attachments import decode_file_data, file_part
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
    ServerTool,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolMode,
)
from localxai.conversations import Turn
from localxai.errors import Gone, InvalidArgument
from localxai.httpapi.schema import RequestBody
from localxai.sealing import Sealer

# xAI's server-side tools (platform spec 2.1) and OpenAI's names for the same: the agent loop runs
# those it has an executor for; the others are refused by name (or dropped with --server-tools drop).
SERVER_TOOLS = {
    "web_search": "web_search", "web_search_preview": "web_search", "x_search": "x_search",
    "code_interpreter": "code_execution", "code_execution": "code_execution", "mcp": "mcp",
    "file_search": "file_search", "collections_search": "collections_search",
    "attachment_search": "attachment_search", "image_generation": "image_generation",
    "view_image": "view_image", "view_x_video": "view_x_video", "tool_search": "tool_search",
    "computer_use_preview": "computer_use_preview",
}  # fmt: skip
SERVER_TOOL_ITEMS = frozenset(
    {f"{t}_call" for t in SERVER_TOOLS} | {"mcp_list_tools", "mcp_approval_request", "mcp_approval_response"}
)  # history items of server-side calls: the server keeps their context itself (previous_response_id)
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
    max_turns: int | None = None  # the agent loop's model turns (xAI's field)


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
    if body.search_parameters and body.search_parameters.get("mode") != "off":
        raise Gone(
            "Live search is deprecated. Please switch to the Agent Tools API: https://docs.x.ai/docs/guides/tools/overview"
        )
    items = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    listed = body.tools or []
    kinds = [_optional_text(_object(t, f"tools[{i}]"), "type", f"tools[{i}]") for i, t in enumerate(listed)]
    server = tuple(_server_tool(i, t) for i, t in enumerate(listed) if kinds[i] in SERVER_TOOLS)
    tools = tuple(t for i, tool in enumerate(listed) if kinds[i] not in SERVER_TOOLS for t in _tools(i, tool))
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
        server_tools=server,
        max_turns=body.max_turns,
    )
    return Turn(
        request,
        previous_id=body.previous_response_id,
        instructions=body.instructions,
        store=body.store,
        sealed_reasoning=ENCRYPTED_REASONING in (body.include or ()),
        tool_outputs=_shown_outputs(body.include),
    )


def _shown_outputs(include: list[str] | None) -> tuple[str, ...]:
    return tuple(sorted({"mcp", *(INCLUDED_OUTPUTS[i] for i in include or () if i in INCLUDED_OUTPUTS)}))


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
        elif kind in CALL_ITEMS:
            call = _history_call(kind, item, where)
            if out and out[-1].role is Role.ASSISTANT and not out[-1].text:  # parallel calls: one turn
                out[-1] = replace(out[-1], tool_calls=(*out[-1].tool_calls, call))
            else:
                out.append(Message(Role.ASSISTANT, (), tool_calls=(call,), reasoning=thinking))
                thinking = None
        elif kind in OUTPUT_ITEMS:
            # that a call precedes it is the core's check
            call_id = _text(item, "id" if kind == "local_shell_call_output" and "call_id" not in item else "call_id",
                            where)  # fmt: skip
            out.append(Message(Role.TOOL, (TextPart(_output_text(item.get("output"), where)),), tool_call_id=call_id))
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


CALL_ITEMS = frozenset({"function_call", "custom_tool_call", "local_shell_call", "shell_call"})
OUTPUT_ITEMS = frozenset(
    {"function_call_output", "custom_tool_call_output", "local_shell_call_output", "shell_call_output"}
)


def _history_call(kind: str, item: dict[str, Any], where: str) -> ToolCall:
    """A client tool call sent back as history, as the model made it (a function call)."""
    namespace = _optional_text(item, "namespace", where) or ""
    if kind == "function_call":
        return ToolCall(_text(item, "call_id", where), namespace + _text(item, "name", where),
                        _text(item, "arguments", where))  # fmt: skip
    if kind == "custom_tool_call":
        arguments = json.dumps({"input": _text(item, "input", where)})
        return ToolCall(_text(item, "call_id", where), namespace + _text(item, "name", where), arguments)
    action = {k: v for k, v in _object(item.get("action"), f"{where}.action").items() if k != "type"}
    call_id = item.get("call_id") or _text(item, "id", where)
    if not isinstance(call_id, str):
        raise InvalidArgument(f"{where}.call_id must be a string.")
    return ToolCall(call_id, "local_shell" if kind == "local_shell_call" else "shell", json.dumps(action))


def _output_text(output: Any, where: str) -> str:
    """A tool result as text: a string, text parts (Codex), or a shell's stdout/stderr/outcome records."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for part in output:
            part = _object(part, f"{where}.output[]")
            if "text" in part:
                texts.append(_text(part, "text", f"{where}.output[]"))
            elif "stdout" in part or "stderr" in part or "outcome" in part:
                outcome: dict[str, Any] = part["outcome"] if isinstance(part.get("outcome"), dict) else {}
                end = f"exit code {outcome['exit_code']}" if "exit_code" in outcome else outcome.get("type", "")
                texts.append("\n".join(str(x) for x in (part.get("stdout") or "", part.get("stderr") or "", end) if x))
        return "".join(texts)
    raise InvalidArgument(f"{where}.output must be a string.")


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
        elif kind == "input_file":
            at = f"{where}.content[{j}]"
            file_id, data, url, name = (
                _optional_text(part, k, at) for k in ("file_id", "file_data", "file_url", "filename")
            )
            parts.append(file_part(at, file_id, decode_file_data(data, at), url, name))
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


def _server_tool(index: int, tool: dict[str, Any]) -> ServerTool:
    """A server-side tool with its settings checked (what the executor reads); unknown fields are refused."""
    where = f"tools[{index}]"
    kind = SERVER_TOOLS[tool["type"]]
    settings = {k: v for k, v in tool.items() if k != "type"}
    if kind == "web_search":
        return ServerTool(kind, json.dumps(_web_search(settings, where)))
    if kind == "code_execution":
        container = settings.pop("container", None)  # OpenAI's SDK sends {"type": "auto"}
        if container not in (None, "auto") and not (isinstance(container, dict) and container.get("type") == "auto"):
            raise InvalidArgument(f"{where}.container: only an automatic container is served (type auto).")
        _no_others(settings, where)
        return ServerTool(kind)
    if kind == "mcp":
        return ServerTool(kind, json.dumps(_mcp(settings, where)))
    if kind in ("file_search", "collections_search"):
        return ServerTool(kind, json.dumps(collections_search.settings(kind, settings, where)))
    if kind == "attachment_search":  # over the request's attached files (attachments.plan), nothing else
        limit = settings.pop("limit", None)
        _no_others(settings, where)
        return ServerTool(kind, json.dumps(attachment_settings(limit, where)))
    return ServerTool(kind, json.dumps(settings))  # not served: refused with its name (agent.unavailable)


def _web_search(settings: dict[str, Any], where: str) -> dict[str, Any]:
    filters = _object(settings.pop("filters", None) or {}, f"{where}.filters")
    out: dict[str, Any] = {}
    for key in ("allowed_domains", "excluded_domains"):
        value = settings.pop(key, None) or filters.pop(key, None)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(d, str) and d for d in value):
            raise InvalidArgument(f"{where}.{key} must be a list of domain names.")
        if len(value) > MAX_DOMAINS:
            raise InvalidArgument(f"{where}.{key} takes at most {MAX_DOMAINS} domains, got {len(value)}.")
        out[key] = value
    _no_others(filters, f"{where}.filters")
    if len(out) > 1:
        raise InvalidArgument(f"{where}: allowed_domains and excluded_domains cannot both be set.")
    for key in ("enable_image_understanding", "enable_image_search"):
        if settings.pop(key, None):
            raise InvalidArgument(f"{where}.{key}: image understanding in web search is not served by localxai.")
    # Accepted with no effect (docs/api.md): xAI echoes search_context_size; a self-hosted search backend
    # has no user location; Codex sends external_web_access (false: live pages are not fetched).
    settings.pop("search_context_size", None)
    settings.pop("user_location", None)
    if settings.pop("external_web_access", True) is False:
        out["external_web_access"] = False
    _no_others(settings, where)
    return out


def _mcp(settings: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {"server_url": _text(settings, "server_url", where)}
    out["server_label"] = _optional_text(settings, "server_label", where) or ""
    out["server_description"] = _optional_text(settings, "server_description", where) or ""
    allowed = settings.get("allowed_tools")
    if isinstance(allowed, dict):  # OpenAI's filter object
        allowed = allowed.get("tool_names")
    if allowed is not None:
        if not isinstance(allowed, list) or not all(isinstance(n, str) for n in allowed):
            raise InvalidArgument(f"{where}.allowed_tools must be a list of tool names.")
        out["allowed_tools"] = allowed
    if (authorization := _optional_text(settings, "authorization", where)) is not None:
        out["authorization"] = authorization
    headers = _object(settings.get("headers") or {}, f"{where}.headers")
    if not all(isinstance(v, str) for v in headers.values()):
        raise InvalidArgument(f"{where}.headers values must be strings.")
    out["headers"] = headers
    approval = settings.get("require_approval")
    if approval not in (None, "never") and approval != {"never": {}}:  # the server calls without asking
        raise InvalidArgument(f"{where}.require_approval: only never is served (calls run without approval).")
    for key in ("server_url", "server_label", "server_description", "allowed_tools", "authorization", "headers",
                "require_approval"):  # fmt: skip
        settings.pop(key, None)
    _no_others(settings, where)
    return out


def _no_others(settings: dict[str, Any], where: str) -> None:
    if settings:
        raise InvalidArgument(f"{where}: {', '.join(sorted(settings))} not supported for this tool.")


LOCAL_SHELL = {
    "type": "object",
    "properties": {
        "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "working_directory": {"type": "string"},
        "timeout_ms": {"type": "integer", "minimum": 1},
    },
    "required": ["command"],
}
SHELL = {
    "type": "object",
    "properties": {
        "commands": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "timeout_ms": {"type": "integer", "minimum": 1},
    },
    "required": ["commands"],
}


def _tools(index: int, tool: dict[str, Any], namespace: str = "") -> list[Tool]:
    """The client tools one `tools` entry stands for: a function, a custom tool, a shell, or each tool of
    a namespace (the model sees a namespaced tool as namespace + name, as Codex's flat MCP names are)."""
    where = f"tools[{index}]"
    kind = _optional_text(tool, "type", where)
    if kind == "namespace" and not namespace:
        prefix = _text(tool, "name", where)
        nested = tool.get("tools")
        if not isinstance(nested, list) or not nested:
            raise InvalidArgument(f"{where}.tools must be a non-empty list of function or custom tools.")
        return [t for inner in nested for t in _tools(index, _object(inner, f"{where}.tools[]"), prefix)]
    if kind == "custom":
        return [_custom(where, tool, namespace)]
    if kind == "local_shell" and not namespace:
        return [Tool("local_shell", "Run a command on the user's machine.", json.dumps(LOCAL_SHELL), "local_shell")]
    if kind == "shell" and not namespace:
        environment = tool.get("environment") or {"type": "local"}
        if not isinstance(environment, dict) or environment.get("type") != "local":
            raise InvalidArgument(
                f"{where}.environment: only a local shell (type local) is served: the client runs it."
            )
        return [Tool("shell", "Run shell commands on the user's machine.", json.dumps(SHELL), "shell")]
    function = _tool(index, tool)
    return [replace(function, name=namespace + function.name, namespace=namespace)]


def _custom(where: str, tool: dict[str, Any], namespace: str) -> Tool:
    """A custom tool: free-form text `input`, constrained by its grammar when it has one (a regular
    expression, or a Lark grammar of a regular language, as one anchored pattern: lark_regex.py)."""
    name = _text(tool, "name", where)
    fmt = _object(tool.get("format") or {"type": "text"}, f"{where}.format")
    text: dict[str, Any] = {"type": "string", "description": "The tool's input, as free-form text."}
    if fmt.get("type") == "grammar":
        syntax, definition = fmt.get("syntax"), fmt.get("definition")
        if not isinstance(definition, str):
            raise InvalidArgument(f"{where}.format.definition must be a string.")
        if syntax == "lark":
            try:
                definition = lark_regex.to_regex(definition)
            except lark_regex.LarkError as exc:
                raise InvalidArgument(f"{where}.format: this Lark grammar cannot be enforced: {exc}.") from None
        elif syntax != "regex":
            raise InvalidArgument(f"{where}.format.syntax must be lark or regex, got {syntax!r}.")
        text["pattern"] = definition
    elif fmt.get("type") != "text":
        raise InvalidArgument(f"{where}.format.type must be text or grammar.")
    description = _optional_text(tool, "description", where) or ""
    parameters = {"type": "object", "properties": {"input": text}, "required": ["input"]}
    return Tool(namespace + name, description, json.dumps(parameters), "custom", namespace)


def _tool(index: int, tool: dict[str, Any]) -> Tool:
    kind = _optional_text(tool, "type", f"tools[{index}]")
    if kind != "function":
        raise InvalidArgument(f"tools[{index}]: tool type {kind!r} is not supported by this server.")
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


# What a Responses `include` asks to see of server-side calls (mcp_call shows its output always, as OpenAI's).
INCLUDED_OUTPUTS = {"code_interpreter_call.outputs": "code_execution", "web_search_call.action.sources": "web_search",
                    "web_search_call.results": "web_search", "file_search_call.results": "file_search"}  # fmt: skip
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


def retrieve_query(stream: str, starting_after: str | None) -> tuple[bool, int]:
    """`?stream=true&starting_after=N` of GET /v1/responses/{id}: (streamed, the last event not to send)."""
    if stream not in ("true", "false", "True", "False", "1", "0"):
        raise InvalidArgument(f"stream must be true or false, got {stream[:64]!r}.")
    after = -1
    if starting_after is not None:
        try:
            after = int(starting_after)
        except ValueError:
            after = -2
        if after < -1:
            raise InvalidArgument(f"starting_after must be a sequence number (0 or more), got {starting_after[:64]!r}.")
    return stream in ("true", "True", "1"), after


def compact_turn(body: CompactRequest, sealer: Sealer) -> Turn:
    """The conversation a compaction summarises (the core asks the model for the summary)."""
    as_response = ResponsesRequest(
        model=body.model, input=body.input, previous_response_id=body.previous_response_id,
        instructions=body.instructions,
    )  # fmt: skip
    return replace(turn(as_response, sealer), store=False)
