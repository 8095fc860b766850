"""Legacy text completions (/v1/completions): a raw prompt, no chat template, on the same core."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from test_httpapi import sse_events

from localxai.engines.fake import FakeEngine
from localxai.specs import ReasoningSpec

from conftest import API_KEY, Server, app_client, fake_app


async def test_shape_echo_n_and_logprobs(client: httpx.AsyncClient) -> None:
    body = {"model": "fake-model", "prompt": "Once upon a time", "max_tokens": 5, "n": 2, "seed": 1, "echo": True}
    r = await client.post("/v1/completions", json={**body, "logprobs": 2})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "text_completion" and len(out["choices"]) == 2
    for choice in out["choices"]:
        assert choice["text"].startswith("Once upon a time") and choice["finish_reason"] == "length"
        assert len(choice["logprobs"]["tokens"]) == 5 and len(choice["logprobs"]["top_logprobs"][0]) == 2
    assert out["usage"]["completion_tokens"] == 10
    again = (await client.post("/v1/completions", json={**body, "logprobs": 2})).json()
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in out["choices"]]  # seeded


async def test_a_list_of_prompts_gets_a_block_of_choices_each(client: httpx.AsyncClient) -> None:
    body = {"model": "fake-model", "prompt": ["alpha beta", "gamma"], "n": 2, "max_tokens": 3, "echo": True}
    out = (await client.post("/v1/completions", json=body)).json()
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    prompts = ["alpha beta", "alpha beta", "gamma", "gamma"]
    assert all(c["text"].startswith(p) for c, p in zip(out["choices"], prompts, strict=True))
    assert out["usage"]["completion_tokens"] == 12


async def test_stream(client: httpx.AsyncClient) -> None:
    body = {
        "model": "fake-model",
        "prompt": "x",
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = await client.post("/v1/completions", json=body)
    events = sse_events(r.text)
    assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 4
    assert all(e["object"] == "text_completion" for e in events[:-1])
    assert events[-3]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("change", "status", "needle"),
    [
        ({"prompt": ["a", "b"], "stream": True}, 400, "one prompt"),
        ({"prompt": []}, 400, "between 1 and 16 prompts"),
        ({"prompt": [1, 2, 3]}, 422, "prompt"),
        ({"logprobs": 9}, 400, "logprobs"),
        ({"temperature": 5}, 400, "temperature"),
        ({"model": "nope"}, 404, "fake-model"),
    ],
)
async def test_refusals(client: httpx.AsyncClient, change: dict[str, Any], status: int, needle: str) -> None:
    r = await client.post("/v1/completions", json={"model": "fake-model", "prompt": "x", **change})
    assert r.status_code == status and needle in r.json()["error"]


async def test_reasoning_models_are_refused() -> None:
    async with app_client(fake_app(FakeEngine(reasoning=ReasoningSpec()))) as api:
        r = await api.post("/v1/completions", json={"model": "fake-model", "prompt": "x"})
    assert r.status_code == 400 and "reasoning models" in r.json()["error"]


def test_openai_client_on_the_real_model(real_server: Server) -> None:
    """The raw prompt reaches the model without a chat template: the continuation follows the text."""
    client = openai.OpenAI(api_key=API_KEY, base_url=real_server.v1, max_retries=0, timeout=120)
    done = client.completions.create(model="gemma-3-270m", prompt="1, 2, 3, 4,", max_tokens=6, temperature=0)
    assert done.object == "text_completion" and done.choices[0].text
    assert done.usage is not None
    chat_tokens = client.chat.completions.create(
        model="gemma-3-270m", messages=[{"role": "user", "content": "1, 2, 3, 4,"}], max_tokens=1
    ).usage
    assert chat_tokens is not None and chat_tokens.prompt_tokens > done.usage.prompt_tokens
