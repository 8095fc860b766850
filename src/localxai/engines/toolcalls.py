"""Tool calling for engines that generate text.

localxai's calling convention — a reply that is only `{"tool_calls": [{"name": ..., "arguments": {...}}]}` —
is taught to models whose chat template has no tool support (and to the built-in templates), and is
what a grammar forces when a call is required. The parser also reads the common native format
`<tool_call>{"name": ..., "arguments": ...}</tool_call>` of tool-capable instruct models.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from typing import Any

from localxai.chat import Tool, ToolCall, ToolChoice, ToolMode

MAX_PARALLEL_CALLS = 16  # per reply when a call is forced: bounds what a grammar lets a model emit
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def new_call_id() -> str:
    return f"call_{random.randrange(10**8):08d}"


def preamble(tools: Sequence[Tool], choice: ToolChoice) -> str:
    """System text that presents the functions and the calling convention."""
    listed = "\n".join(
        json.dumps({"name": t.name, "description": t.description, "parameters": json.loads(t.parameters)})
        for t in tools
        if choice.mode is not ToolMode.FUNCTION or t.name == choice.function
    )
    must = {
        ToolMode.REQUIRED: "You must call one or more of these functions.",
        ToolMode.FUNCTION: f"You must call the function {choice.function}.",
    }.get(choice.mode, "Call functions only when they help to answer.")
    return (
        f"You can call these functions:\n{listed}\n{must} To call functions, reply with only a JSON object "
        'of the form {"tool_calls": [{"name": "<function name>", "arguments": {<arguments>}}]} and nothing else.'
    )


def history_text(calls: Sequence[ToolCall]) -> str:
    """An earlier assistant turn's calls, written in the convention (for templates without tools)."""
    return json.dumps({"tool_calls": [{"name": c.name, "arguments": _loads(c.arguments)} for c in calls]})


def forced_schema(tools: Sequence[Tool], choice: ToolChoice, parallel: bool) -> dict[str, Any]:
    """JSON Schema of a reply that is a valid call (or calls) — compiled to a grammar.

    Each function's parameters sit at `$defs/<name>`, their own local references moved with them,
    so that a schema with `$defs` (as Pydantic writes them) still resolves inside the wrapper."""
    allowed = [t for t in tools if choice.mode is not ToolMode.FUNCTION or t.name == choice.function]
    call = {
        "anyOf": [
            {
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": {"$ref": f"#/$defs/{t.name}"}},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in allowed
        ]
    }
    calls: dict[str, Any] = {"type": "array", "items": call, "minItems": 1}
    calls["maxItems"] = MAX_PARALLEL_CALLS if parallel else 1
    return {
        "type": "object",
        "properties": {"tool_calls": calls},
        "required": ["tool_calls"],
        "additionalProperties": False,
        "$defs": {t.name: _relocated(_arguments_schema(t), f"#/$defs/{t.name}") for t in allowed},
    }


def _arguments_schema(tool: Tool) -> Any:
    schema = json.loads(tool.parameters)
    if isinstance(schema, dict) and "type" not in schema:
        schema = {**schema, "type": "object"}  # arguments are an object (the core checks the rest)
    return schema


def _relocated(schema: Any, base: str) -> Any:
    """`schema` with its local references (`#...`) pointing below `base`."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("$ref"), str) and out["$ref"].startswith("#"):
        out["$ref"] = base + out["$ref"][1:]
    for key in ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas"):
        if isinstance(out.get(key), dict):
            out[key] = {k: _relocated(v, base) for k, v in out[key].items()}
    for key in ("anyOf", "allOf", "oneOf", "prefixItems", "items"):
        if isinstance(out.get(key), list):
            out[key] = [_relocated(v, base) for v in out[key]]
    for key in ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames"):
        if isinstance(out.get(key), dict):
            out[key] = _relocated(out[key], base)
    return out


def parse(text: str, tools: Sequence[Tool]) -> tuple[ToolCall, ...] | None:
    """The calls in a reply, or None when the reply is not (only) tool calls of known functions."""
    stripped = text.strip()
    tagged = _TAGGED.findall(stripped)
    if tagged and not _TAGGED.sub("", stripped).strip():
        items: Any = [_loads(t) for t in tagged]
    else:
        data = _loads(stripped)
        items = data.get("tool_calls") if isinstance(data, dict) and "tool_calls" in data else [data]
    names = {t.name for t in tools}
    if not isinstance(items, list) or not items:
        return None
    calls = []
    for item in items:
        if not isinstance(item, dict) or item.get("name") not in names:
            return None
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            arguments = _loads(arguments)
        if not isinstance(arguments, dict):
            return None
        calls.append(ToolCall(new_call_id(), item["name"], json.dumps(arguments, ensure_ascii=False)))
    return tuple(calls)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
