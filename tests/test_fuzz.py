"""Fuzzing: schemathesis against the app's own OpenAPI schema, hypothesis on SSE framing and validators.

Bounded numbers of examples, deterministic seeds: no 5xx, and every error in xAI's format.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_httpapi import sse_events

from localxai.chat import Finished, FinishReason, TextDelta, Usage, UsageReport
from localxai.engines.fake import FakeEngine
from localxai.httpapi.sse import chat_chunks
from localxai.service import ChatStream

from conftest import AUTH, fake_app

APP = fake_app(FakeEngine(reply="fuzzed reply"))
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP, headers=AUTH)


def check_response(status: int, text: str, content_type: str) -> None:
    assert status < 500, text
    if status >= 400:
        assert content_type.startswith("application/json"), content_type
        body = json.loads(text)
        assert set(body) == {"code", "error"} and isinstance(body["error"], str), body


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_openapi_fuzz_no_5xx_and_xai_errors(case: Any) -> None:
    response = case.call(headers=AUTH)
    content_type = response.headers.get("content-type", [""])
    check_response(
        response.status_code, response.text, content_type[0] if isinstance(content_type, list) else content_type
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
FIELDS = [
    "temperature",
    "top_p",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "response_format",
    "stream",
    "stream_options",
    "reasoning_effort",
    "deferred",
    "parallel_tool_calls",
    "messages",
    "model",
]


@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=5))
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_validators_never_fail_open_or_crash(overrides: dict[str, Any]) -> None:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **overrides}

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://t", headers=AUTH) as c:
            return await c.post("/v1/chat/completions", json=body)

    response = asyncio.run(send())
    check_response(response.status_code, response.text, response.headers.get("content-type", ""))
    if response.status_code == 200 and body.get("stream") is True and not body.get("deferred"):
        assert response.text.endswith("data: [DONE]\n\n")


@given(st.lists(st.text(min_size=0, max_size=12), max_size=12), st.integers(min_value=1, max_value=3))
@settings(max_examples=100, deadline=None, derandomize=True)
def test_sse_framing_round_trips_any_text(pieces: list[str], n: int) -> None:
    async def events() -> Any:
        for i, piece in enumerate(pieces):
            yield TextDelta(i % n, piece)
        for index in range(n):
            yield Finished(index, FinishReason.STOP)
        yield UsageReport(Usage(prompt_tokens=1, completion_tokens=len(pieces)))

    async def render() -> str:
        stream = ChatStream(id="id", created=0, model="m", fingerprint="fp", events=events())
        return "".join([chunk.decode() async for chunk in chat_chunks(stream, True, "rid")])

    parsed = sse_events(asyncio.run(render()))
    assert (
        parsed[-1] == "[DONE]"
        and parsed[-2]["choices"] == []
        and parsed[-2]["usage"]["completion_tokens"] == len(pieces)
    )
    for index in range(n):
        deltas = [c["choices"][0] for c in parsed[:-2] if c["choices"] and c["choices"][0]["index"] == index]
        assert "".join(d["delta"].get("content", "") for d in deltas) == "".join(pieces[index::n])
        assert deltas[0]["delta"]["role"] == "assistant"
        assert deltas[-1]["finish_reason"] == "stop"
