"""The upstream dialect without servers: recorded stream shapes of vLLM, SGLang and llama-server
through httpx.MockTransport, into the core's completions and errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from localxai.chat import ChatRequest, FinishReason, Message, Role, TextPart, Tool, ToolChoice, ToolMode
from localxai.engines.upstream import UpstreamEngine
from localxai.errors import InvalidArgument, ResourceExhausted, Unavailable
from localxai.service import ChatService, collect
from localxai.specs import UpstreamModel

TOOL = Tool("get_weather", "", '{"type": "object", "properties": {"city": {"type": "string"}}}')


def sse(*chunks: dict[str, Any]) -> bytes:
    return ("".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n").encode()


def service(handler: Callable[[httpx.Request], httpx.Response], reasoning: bool = False) -> ChatService:
    model = UpstreamModel("up", ("http://replica/v1",), "up", reasoning=reasoning, reasoning_efforts=("high",))
    return ChatService([UpstreamEngine([model], transport=httpx.MockTransport(handler))])


def request(**fields: Any) -> ChatRequest:
    return ChatRequest(model="up", messages=(Message(Role.USER, (TextPart("hi"),)),), stream=True, **fields)


async def complete(chat: ChatService, req: ChatRequest) -> Any:
    return await collect(await chat.generate(req), req.n)


VLLM_TOOL_FRAGMENTS = sse(
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "chatcmpl-tool-1", "type": "function",
                                                        "function": {"name": "get_weather", "arguments": ""}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52,
                              "prompt_tokens_details": {"cached_tokens": 32}}},
)  # fmt: skip


async def test_vllm_tool_call_fragments_arrive_whole_with_cached_usage() -> None:
    sent: list[dict[str, Any]] = []

    def handler(r: httpx.Request) -> httpx.Response:
        sent.append(json.loads(r.content))
        return httpx.Response(200, content=VLLM_TOOL_FRAGMENTS, headers={"content-type": "text/event-stream"})

    req = request(tools=(TOOL,), tool_choice=ToolChoice(ToolMode.REQUIRED))
    completion = await complete(service(handler), req)
    [choice] = completion.choices
    [call] = choice.tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == ("chatcmpl-tool-1", "get_weather", {"city": "Paris"})
    assert choice.finish_reason is FinishReason.TOOL_CALLS
    assert (completion.usage.prompt_tokens, completion.usage.cached_tokens) == (40, 32)
    body = sent[0]
    assert body["tool_choice"] == "required" and body["tools"][0]["function"]["name"] == "get_weather"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])  # SGLang/llama-server vs newer vLLM
async def test_both_reasoning_spellings_become_reasoning(field: str) -> None:
    stream = sse(
        {"choices": [{"index": 0, "delta": {field: "Let me think."}}]},
        {"choices": [{"index": 0, "delta": {"content": "42"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14,
                                  "completion_tokens_details": {"reasoning_tokens": 4}}},
    )  # fmt: skip
    chat = service(lambda r: httpx.Response(200, content=stream), reasoning=True)
    completion = await complete(chat, request(reasoning_effort="high"))
    [choice] = completion.choices
    assert (choice.reasoning, choice.text) == ("Let me think.", "42")
    # OpenAI counts reasoning inside completion_tokens; xAI does not.
    assert (completion.usage.completion_tokens, completion.usage.reasoning_tokens) == (5, 4)


async def test_an_error_frame_mid_stream_is_unavailable_without_its_text() -> None:
    stream = sse(
        {"choices": [{"index": 0, "delta": {"content": "par"}}]},
        {"error": {"message": "CUDA out of memory at /opt/vllm/worker.py:123", "code": 500}},
    )
    with pytest.raises(Unavailable) as failed:
        await complete(service(lambda r: httpx.Response(200, content=stream)), request())
    assert "CUDA" not in failed.value.message and "failed mid-stream" in failed.value.message


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [(400, {}, InvalidArgument), (422, {}, InvalidArgument), (429, {"retry-after": "7"}, ResourceExhausted)],
)
async def test_refusals_become_xai_errors(status: int, headers: dict[str, str], error: type[Exception]) -> None:
    detail = b'{"object": "error", "message": "internal detail"}'
    chat = service(lambda r: httpx.Response(status, content=detail, headers=headers))
    with pytest.raises(error) as refused:
        await chat.generate(request())
    assert "internal detail" not in str(refused.value)
    if status == 429:
        assert refused.value.retry_after == 7  # type: ignore[attr-defined]


async def test_background_work_carries_the_configured_priority() -> None:
    """Batch requests go upstream with `priority` when the model sets background_priority; interactive
    ones (and every request of a model without it) never carry it."""
    bodies: list[dict[str, Any]] = []

    def handler(sent: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(sent.content))
        done = {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}
        return httpx.Response(200, content=sse(done), headers={"content-type": "text/event-stream"})

    for priority in (10, None):
        model = UpstreamModel("up", ("http://replica/v1",), "up", background_priority=priority)
        chat = ChatService([UpstreamEngine([model], transport=httpx.MockTransport(handler))])
        for background in (True, False):
            admission = await chat.admit(request())
            await collect(await chat.run(admission, background=background), 1)
    assert [b.get("priority") for b in bodies] == [10, None, None, None]
