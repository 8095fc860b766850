"""Tool shapes that Responses clients (Codex, the OpenAI SDK) send and run themselves: `namespace`
groups, `custom` tools, `local_shell` and `shell` — accepted, called as functions by the model, and
reported in each kind's own item (fake engine, scripted output)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from test_agent_loop import Recording
from test_responses import events

from localxai.chat import Role
from localxai.engines.fake import FakeEngine

from conftest import app_client, fake_app

NAMESPACE = {
    "type": "namespace",
    "name": "mcp__files__",
    "description": "Tools in the mcp__files__ namespace.",
    "tools": [{"type": "function", "name": "read", "parameters": {"type": "object", "properties": {}}}],
}
PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files.", "format": {"type": "text"}}


def calling(name: str, arguments: dict[str, Any]) -> str:
    return json.dumps({"tool_calls": [{"name": name, "arguments": arguments}]})


async def post(engine: FakeEngine, *bodies: dict[str, Any]) -> list[httpx.Response]:
    async with app_client(fake_app(engine)) as api:
        out = []
        for body in bodies:
            out.append(await api.post("/v1/responses", json={"model": "fake-model", "input": "go", **body}))
        return out


async def test_a_namespaced_call_comes_back_with_its_namespace() -> None:
    engine = Recording(reply=calling("mcp__files__read", {}))
    [r] = await post(engine, {"tools": [NAMESPACE], "tool_choice": "required"})
    [item] = r.json()["output"]
    assert item["type"] == "function_call" and item["name"] == "read" and item["namespace"] == "mcp__files__"
    assert [t.name for t in engine.requests[0].tools] == ["mcp__files__read"]
    assert r.json()["tools"][0]["type"] == "namespace"
    # Codex sends the call back with its namespace, and the output by call_id
    back = [
        {
            "type": "function_call",
            "call_id": item["call_id"],
            "namespace": "mcp__files__",
            "name": "read",
            "arguments": "{}",
        },
        {"type": "function_call_output", "call_id": item["call_id"], "output": "contents"},
    ]
    engine.reply = "thanks"
    [again] = await post(engine, {"tools": [NAMESPACE], "input": back})
    assert again.status_code == 200, again.text
    assert engine.requests[-1].messages[0].tool_calls[0].name == "mcp__files__read"


async def test_a_custom_tool_call_carries_its_free_form_input() -> None:
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hello\n*** End Patch\n"
    engine = Recording(reply=calling("apply_patch", {"input": patch}))
    [whole, streamed] = await post(engine, {"tools": [PATCH], "tool_choice": "required"},
                                   {"tools": [PATCH], "tool_choice": "required", "stream": True})  # fmt: skip
    [item] = whole.json()["output"]
    assert item["type"] == "custom_tool_call" and item["name"] == "apply_patch" and item["input"] == patch
    assert item["id"].startswith("ctc_")
    stream = events(streamed.text)
    done = next(e for e in stream if e["type"] == "response.custom_tool_call_input.done")
    assert done["input"] == patch
    assert any(e["type"] == "response.custom_tool_call_input.delta" for e in stream)
    back = [{"type": "custom_tool_call", "call_id": item["call_id"], "name": "apply_patch", "input": patch},
            {"type": "custom_tool_call_output", "call_id": item["call_id"], "output": "Done!"}]  # fmt: skip
    engine.reply = "patched"
    [again] = await post(engine, {"tools": [PATCH], "input": back})
    assert again.status_code == 200, again.text
    assert [m.role for m in engine.requests[-1].messages] == [Role.ASSISTANT, Role.TOOL]


async def test_local_shell_and_shell_calls() -> None:
    engine = Recording(reply=calling("local_shell", {"command": ["ls", "-la"]}))
    [r] = await post(engine, {"tools": [{"type": "local_shell"}], "tool_choice": "required"})
    [item] = r.json()["output"]
    assert item["type"] == "local_shell_call" and item["action"]["command"] == ["ls", "-la"]
    assert item["action"]["type"] == "exec" and item["id"] == item["call_id"]
    back = [item, {"type": "local_shell_call_output", "id": item["id"], "output": "a.txt"}]
    engine.reply = "one file"
    [again] = await post(engine, {"tools": [{"type": "local_shell"}], "input": back})
    assert again.status_code == 200, again.text
    assert engine.requests[-1].messages[-1].text == "a.txt"
    engine.reply = calling("shell", {"commands": ["pwd"]})
    [shell] = await post(engine, {"tools": [{"type": "shell", "environment": {"type": "local"}}],
                                  "tool_choice": "required"})  # fmt: skip
    [call] = shell.json()["output"]
    assert call["type"] == "shell_call" and call["action"]["commands"] == ["pwd"]
    back = [
        call,
        {
            "type": "shell_call_output",
            "call_id": call["call_id"],
            "output": [{"stdout": "/home", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}],
        },
    ]
    engine.reply = "home"
    [again] = await post(engine, {"tools": [{"type": "shell"}], "input": back})
    assert again.status_code == 200, again.text
    assert engine.requests[-1].messages[-1].text == "/home\nexit code 0"


@pytest.mark.parametrize(
    ("tool", "needle"),
    [
        (
            {
                "type": "custom",
                "name": "p",
                "format": {"type": "grammar", "syntax": "lark", "definition": "start: s s"},
            },
            "this Lark grammar cannot be enforced: line 1: s is not defined",
        ),
        ({"type": "shell", "environment": {"type": "container_auto"}}, "only a local shell"),
        ({"type": "namespace", "name": "n", "tools": []}, "non-empty list"),
        ({"type": "computer_use_preview"}, "computer_use_preview"),
        ({"type": "teleport"}, "tool type 'teleport' is not supported"),
    ],
)
async def test_shapes_that_cannot_be_served_are_refused_by_name(tool: dict[str, Any], needle: str) -> None:
    [r] = await post(FakeEngine(), {"tools": [tool]})
    assert r.status_code == 400 and needle in r.json()["error"], r.text


async def test_a_regex_custom_tool_is_a_pattern_on_its_input() -> None:
    engine = Recording(reply="x")
    tool = {"type": "custom", "name": "code", "format": {"type": "grammar", "syntax": "regex", "definition": "[0-9]+"}}
    await post(engine, {"tools": [tool]})
    assert json.loads(engine.requests[0].tools[0].parameters)["properties"]["input"]["pattern"] == "[0-9]+"


async def test_codex_s_own_request_is_answered() -> None:
    """The fields Codex CLI sends on its first request (web_search with external_web_access, a namespace
    of MCP tools, a text-format custom tool, store false, include, prompt_cache_key, long instructions)."""
    body = {
        "instructions": "You are Codex. " * 800,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "tools": [
            {"type": "function", "name": "shell_command", "description": "Run a command", "strict": False,
             "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}},
            PATCH, NAMESPACE, {"type": "web_search", "external_web_access": False},
        ],
        "tool_choice": "auto", "parallel_tool_calls": True, "reasoning": None, "store": False, "stream": True,
        "include": [], "prompt_cache_key": "019a-thread", "text": {"verbosity": "low"},
    }  # fmt: skip
    async with app_client(fake_app(FakeEngine(reply="hello", context_length=100_000), drop_server_tools=True)) as api:
        r = await api.post("/v1/responses", json={"model": "fake-model", **body})
    assert r.status_code == 200, r.text
    assert events(r.text)[-1]["type"] == "response.completed"
