"""Core messages and tools in the OpenAI chat shape, which upstream servers (vLLM, SGLang,
llama-server) and Hugging Face chat templates both read: one writer for both."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from localxai.chat import ImagePart, Message, Part, Role, TextPart, Tool, ToolCall


def role_name(role: Role) -> str:
    """`developer` is a system message; the legacy `function` role is a tool result."""
    return {Role.DEVELOPER: "system", Role.FUNCTION: "tool"}.get(role, role.value)


def tool_definition(tool: Tool) -> dict[str, Any]:
    function = {"name": tool.name, "description": tool.description, "parameters": json.loads(tool.parameters)}
    return {"type": "function", "function": function}


def _part(p: Part) -> dict[str, Any]:
    if isinstance(p, ImagePart):
        return {"type": "image_url", "image_url": {"url": p.url, "detail": p.detail.value}}
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    raise AssertionError("file parts are text by the time a request reaches an engine (attachments.py)")


def message(m: Message, parsed_arguments: bool = False) -> dict[str, Any]:
    """One message; images as `image_url` parts. Chat templates want call arguments as objects
    (`parsed_arguments`), servers as the JSON text the client sent."""
    out: dict[str, Any] = {"role": role_name(m.role)}
    if m.images:
        out["content"] = [_part(p) for p in m.content]
    else:
        out["content"] = m.text
    if m.tool_calls:
        out["tool_calls"] = [_call(c, parsed_arguments) for c in m.tool_calls]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.name and m.role is Role.USER:
        out["name"] = m.name
    return out


def _call(call: ToolCall, parsed_arguments: bool) -> dict[str, Any]:
    arguments: Any = call.arguments
    if parsed_arguments:
        with contextlib.suppress(ValueError):  # not JSON: the template gets the text as it is
            arguments = json.loads(call.arguments)
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}
