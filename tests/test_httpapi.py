"""The REST protocol layer on the fake engine: shapes, streaming framing, every error path."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from localxai.engines.fake import FakeEngine

from conftest import API_KEY, AUTH, fake_app

USER = [{"role": "user", "content": "hello there"}]
INVALID = "Client specified an invalid argument"
FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": USER, **extra}


def sse_events(text: str) -> list[Any]:
    """Parse an SSE body strictly: every event is `data: ...` followed by a blank line."""
    assert text.endswith("\n\n")
    events = []
    for block in text[:-2].split("\n\n"):
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


async def test_completion_shape(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=chat(seed=3))
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake-model"
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["refusal"] is None
    assert choice["message"]["content"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {
        "text_tokens": usage["prompt_tokens"],
        "audio_tokens": 0,
        "image_tokens": 0,
        "cached_tokens": 0,
    }
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    assert r.headers["x-request-id"]


async def test_alias_resolves_and_response_names_the_model(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json={**chat(), "model": "grok-4"})
    assert r.status_code == 200
    assert r.json()["model"] == "fake-model"


async def test_streaming_framing_and_usage(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/chat/completions", json=chat(stream=True, seed=1, stream_options={"include_usage": True})
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:-1] if c["choices"])
    assert all("usage" not in c for c in chunks[:-1])
    final, usage_chunk = chunks[-2], chunks[-1]
    assert final["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    whole = (await client.post("/v1/chat/completions", json=chat(seed=1))).json()
    assert text == whole["choices"][0]["message"]["content"]


async def test_streaming_without_include_usage_has_no_usage_chunk(client: httpx.AsyncClient) -> None:
    events = sse_events((await client.post("/v1/chat/completions", json=chat(stream=True))).text)
    assert all(e == "[DONE]" or e["choices"] for e in events)


async def test_n_choices_are_independent(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/chat/completions", json=chat(n=3, seed=5))).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    texts = {c["message"]["content"] for c in body["choices"]}
    assert len(texts) == 3


async def test_stop_is_not_emitted() -> None:
    app = fake_app(FakeEngine(reply="one two three four"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH) as c:
        body = (await c.post("/v1/chat/completions", json=chat(stop=["three"]))).json()
        assert body["choices"][0]["message"]["content"] == "one two "
        assert body["choices"][0]["finish_reason"] == "stop"
        body = (await c.post("/v1/chat/completions", json=chat(max_tokens=2))).json()
        assert body["choices"][0]["message"]["content"] == "one two "
        assert body["choices"][0]["finish_reason"] == "length"


async def test_models_endpoints(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    [m] = models["data"]
    assert m["id"] == "fake-model" and m["object"] == "model" and m["aliases"] == ["grok-4"]
    assert (await client.get("/v1/models/grok-4")).json()["id"] == "fake-model"
    lm = (await client.get("/v1/language-models")).json()["models"][0]
    assert lm["input_modalities"] == ["text"] and lm["output_modalities"] == ["text"]
    assert lm["aliases"] == ["grok-4"]
    assert (await client.get("/v1/language-models/fake-model")).json()["fingerprint"] == "fp_fake"
    r = await client.get("/v1/models/grok-9")
    assert r.status_code == 404
    assert r.json()["code"] == "Some requested entity was not found"


async def test_tokenize(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/tokenize-text", json={"model": "fake-model", "text": "ab cd"})).json()
    assert body["token_ids"][1] == {"token_id": 1, "string_token": "cd", "token_bytes": [99, 100]}


async def test_api_key_is_redacted(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/api-key")).json()
    assert body["redacted_api_key"] == "xai-...6789"
    assert API_KEY not in json.dumps(body)
    assert body["acls"] == ["api-key:model:*", "api-key:endpoint:*"]
    assert body["api_key_blocked"] is False


async def test_health_needs_no_key(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"Authorization": ""})
    assert r.status_code == 200


# -- errors ----------------------------------------------------------------------------------


async def expect_error(response: httpx.Response, status: int, code: str, contains: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "error"}
    assert body["code"] == code
    assert contains in body["error"]


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/v1/api-key", "/v1/nope"])
async def test_missing_key_is_401_on_every_route(client: httpx.AsyncClient, path: str) -> None:
    r = await client.request("POST" if "chat" in path else "GET", path, headers={"Authorization": ""})
    await expect_error(r, 401, "The request does not have valid authentication credentials")


async def test_wrong_key_is_400_redacted(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models", headers={"Authorization": "Bearer wrong-key-123"})
    await expect_error(r, 400, INVALID, "Incorrect API key provided: wr***23")


async def test_non_bearer_is_401(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models", headers={"Authorization": f"Basic {API_KEY}"})
    await expect_error(r, 401, "The request does not have valid authentication credentials")


async def test_open_access_accepts_any_token() -> None:
    app = fake_app(keys=())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/v1/models", headers={"Authorization": "Bearer anything"})).status_code == 200
        assert (await c.get("/v1/models")).status_code == 401


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json={**chat(), "model": "grok-beta"})
    await expect_error(r, 404, "Some requested entity was not found", "grok-beta")


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/chat/completions")
    await expect_error(r, 405, "Operation is not implemented or not supported")


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    await expect_error(await client.get("/v1/nothing-here"), 404, "Some requested entity was not found")


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"", {"Content-Type": "application/json"}),
        (json.dumps(chat()).encode(), {"Content-Type": "text/plain"}),
        (json.dumps(chat()).encode(), {}),
        (b"{not json", {"Content-Type": "text/plain"}),
    ],
)
async def test_media_type_errors_are_415(client: httpx.AsyncClient, content: bytes, headers: dict[str, str]) -> None:
    r = await client.post("/v1/chat/completions", content=content, headers=headers)
    await expect_error(r, 415, INVALID)


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/chat/completions", content=b'{"model": "x", ', headers={"Content-Type": "application/json"}
    )
    await expect_error(r, 422, INVALID, "Failed to deserialize the JSON body")


@pytest.mark.parametrize(
    "body",
    [
        {"messages": USER},
        {"model": "fake-model"},
        chat(temperature="hot"),
        chat(max_tokens=1.5),
        chat(n="2"),
        chat(stream="yes"),
        {"model": "fake-model", "messages": [{"role": "wizard", "content": "hi"}]},
        {"model": "fake-model", "messages": [{"role": "user", "content": [{"type": "video", "x": 1}]}]},
        {"model": "fake-model", "messages": "hello"},
    ],
)
async def test_wrong_types_are_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    await expect_error(await client.post("/v1/chat/completions", json=body), 422, INVALID, "Failed to deserialize")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -2.1}, "frequency_penalty"),
        ({"max_tokens": 0}, "max_completion_tokens"),
        ({"max_completion_tokens": -5}, "max_completion_tokens"),
        ({"n": 0}, "n must be"),
        ({"n": 17}, "n must be"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"stop": [""]}, "stop"),
        ({"seed": 2**40}, "seed"),
        ({"logprobs": True, "top_logprobs": 9}, "top_logprobs"),
        ({"top_logprobs": 2}, "requires logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "Invalid function name"),
        ({"tools": [FN, FN]}, "Duplicate function names: f"),
        ({"tools": [FN] * 129}, "At most 128"),
        (
            {"tools": [{"type": "function", "function": {"name": "g", "parameters": {"type": "nonsense"}}}]},
            "not a valid JSON Schema",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "g", "parameters": {"type": "string"}}}]},
            "must be an object schema",
        ),
        ({"tool_choice": "required"}, "requires tools"),
        ({"tools": [FN], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "not in tools"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}}, "valid JSON Schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "needs a schema"),
        ({"reasoning_effort": "high"}, "Model fake-model does not support parameter reasoningEffort"),
        ({"search_parameters": {"mode": "auto"}}, "search_parameters"),
        ({"deferred": True, "stream": True}, "deferred and stream"),
        ({"logit_bias": {"1": 2.0}}, "logit_bias"),
    ],
)
async def test_invalid_values_are_400(client: httpx.AsyncClient, extra: dict[str, Any], needle: str) -> None:
    await expect_error(await client.post("/v1/chat/completions", json=chat(**extra)), 400, INVALID, needle)


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([], "at least one message"),
        ([{"role": "user", "content": []}], "at least one content element"),
        ([{"role": "user"}], "at least one content element"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}],
                }
            ],
            "does not support image input",
        ),
    ],
)
async def test_bad_conversations_are_400(client: httpx.AsyncClient, messages: list[Any], needle: str) -> None:
    r = await client.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages})
    await expect_error(r, 400, INVALID, needle)


async def test_errors_come_before_streaming_starts(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=chat(stream=True, temperature=9))
    await expect_error(r, 400, INVALID, "temperature")


async def test_context_overflow_is_400_not_truncation() -> None:
    app = fake_app(FakeEngine(context_length=10))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH) as c:
        long = {"model": "fake-model", "messages": [{"role": "user", "content": "w " * 50}]}
        r = await c.post("/v1/chat/completions", json=long)
        await expect_error(r, 400, INVALID, "This model's maximum prompt length is 10 but the request contains")


async def test_any_order_of_roles_and_text_parts(client: httpx.AsyncClient) -> None:
    messages = [
        {"role": "assistant", "content": "I start"},
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}]},
        {"role": "system", "content": "again"},
        {"role": "developer", "content": "dev note"},
        {"role": "user", "content": "last"},
    ]
    r = await client.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages})
    assert r.status_code == 200


async def test_internal_errors_do_not_leak(client: httpx.AsyncClient, fake_engine: FakeEngine) -> None:
    async def broken(request):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internal detail /etc/passwd")

    fake_engine.generate = broken  # type: ignore[method-assign]
    transport = httpx.ASGITransport(app=fake_app(fake_engine), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as c:
        r = await c.post("/v1/chat/completions", json=chat())
    assert r.status_code == 500
    assert "secret" not in r.text
    assert r.json()["error"].startswith("internal error (request id ")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", chat(messages=[{"role": "user", "content": "a \ud800 b"}])),
        ("/v1/chat/completions", chat(model="fake-\udfff")),
        ("/v1/chat/completions", chat(messages=[{"role": "user", "content": [{"type": "text", "text": "\ud83d"}]}])),
        ("/v1/chat/completions", chat(tools=[{**FN, "function": {**FN["function"], "description": "\udc00"}}])),
        ("/v1/chat/completions", chat(metadata={"\ud800": 1})),
        ("/v1/tokenize-text", {"model": "fake-model", "text": "x\ud800"}),
    ],
)
async def test_lone_surrogates_are_400(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    """JSON can spell a lone UTF-16 surrogate (\\ud800); no model can take it, and it is the client's error."""
    r = await client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
    await expect_error(r, 400, INVALID, "not valid Unicode")


async def test_a_valid_surrogate_pair_is_text(client: httpx.AsyncClient) -> None:
    body = chat(messages=[{"role": "user", "content": "smile \ud83d\ude00"}])  # one emoji, spelled as a pair
    text = json.dumps(body)
    assert "\\ud83d\\ude00" in text
    r = await client.post("/v1/chat/completions", content=text, headers={"Content-Type": "application/json"})
    assert r.status_code == 200
