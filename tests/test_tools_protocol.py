"""Tools, reasoning and logprobs through the REST protocol layer (fake engine, scripted output)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from test_httpapi import sse_events

from localxai.engines.fake import FakeEngine
from localxai.specs import ReasoningSpec

from conftest import AUTH, fake_app

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'


def client_for(engine: FakeEngine) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=fake_app(engine)), base_url="http://t", headers=AUTH)


def ask(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": "weather in Paris?"}], **extra}


async def test_tool_call_non_streaming_shape() -> None:
    async with client_for(FakeEngine(reply=CALL)) as c:
        body = (await c.post("/v1/chat/completions", json=ask(tools=[WEATHER], tool_choice="required"))).json()
    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "" and message["refusal"] is None
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_") and "index" not in call
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


async def test_tool_call_streams_whole_in_one_chunk() -> None:
    async with client_for(FakeEngine(reply=CALL)) as c:
        r = await c.post("/v1/chat/completions", json=ask(tools=[WEATHER], stream=True))
    chunks = [e for e in sse_events(r.text) if e != "[DONE]"]
    with_calls = [c for c in chunks if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    assert len(with_calls) == 1
    [call] = with_calls[0]["choices"][0]["delta"]["tool_calls"]
    assert call["index"] == 0 and call["function"]["arguments"] == '{"city": "Paris"}'
    assert not any(c["choices"][0]["delta"].get("content") for c in chunks if c["choices"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_plain_answer_with_tools_offered_is_text() -> None:
    async with client_for(FakeEngine(reply="It is sunny.")) as c:
        body = (await c.post("/v1/chat/completions", json=ask(tools=[WEATHER]))).json()
    assert body["choices"][0]["message"]["content"] == "It is sunny."
    assert body["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in body["choices"][0]["message"]


async def test_tool_round_trip_is_accepted() -> None:
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "40 C", "tool_call_id": "call_1"},
    ]
    async with client_for(FakeEngine(reply="It is hot.")) as c:
        r = await c.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages, "tools": [WEATHER]})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "It is hot."


async def test_reasoning_split_and_accounting() -> None:
    engine = FakeEngine(
        reply="<think> let me see </think> forty two", reasoning=ReasoningSpec(), reasoning_efforts=("low",)
    )
    async with client_for(engine) as c:
        body = (await c.post("/v1/chat/completions", json=ask(reasoning_effort="low"))).json()
        message = body["choices"][0]["message"]
        assert message["reasoning_content"].strip() == "let me see"
        assert message["content"] == "forty two"
        usage = body["usage"]
        assert usage["completion_tokens_details"]["reasoning_tokens"] > 0
        assert usage["total_tokens"] == (
            usage["prompt_tokens"] + usage["completion_tokens"] + usage["completion_tokens_details"]["reasoning_tokens"]
        )
        r = await c.post("/v1/chat/completions", json=ask(stream=True))
        chunks = [e for e in sse_events(r.text) if e != "[DONE]"]
        thinking = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"])
        answer = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert thinking.strip() == "let me see" and answer == "forty two"
        for extra, parameter in (
            ({"presence_penalty": 1.0}, "presencePenalty"),
            ({"frequency_penalty": 1.0}, "frequencyPenalty"),
            ({"stop": ["x"]}, "stop"),
            ({"reasoning_effort": "high"}, "reasoningEffort"),
        ):
            r = await c.post("/v1/chat/completions", json=ask(**extra))
            assert r.status_code == 400
            assert r.json()["error"] == f"Model fake-model does not support parameter {parameter}"
        # Reasoning sent back on an assistant turn (either spelling) is accepted.
        history = [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "reasoning_content": "t"},
            {"role": "assistant", "content": "b", "reasoning": "t"},
            {"role": "user", "content": "q2"},
        ]
        r = await c.post("/v1/chat/completions", json={"model": "fake-model", "messages": history})
        assert r.status_code == 200


async def test_logprobs_shapes() -> None:
    async with client_for(FakeEngine(reply="a b c")) as c:
        body = (await c.post("/v1/chat/completions", json=ask(logprobs=True, top_logprobs=2))).json()
        content = body["choices"][0]["logprobs"]["content"]
        assert [e["token"] for e in content] == ["a ", "b ", "c"]
        assert set(content[0]) == {"token", "logprob", "bytes", "top_logprobs"}
        assert len(content[0]["top_logprobs"]) == 2
        r = await c.post("/v1/chat/completions", json=ask(logprobs=True, stream=True))
        chunks = [e for e in sse_events(r.text) if e != "[DONE]"]
        streamed = [
            e["token"]
            for ch in chunks
            if ch["choices"]
            for e in ch["choices"][0].get("logprobs", {}).get("content", [])
        ]
        assert streamed == ["a ", "b ", "c"]
        plain = (await c.post("/v1/chat/completions", json=ask())).json()
        assert "logprobs" not in plain["choices"][0]
