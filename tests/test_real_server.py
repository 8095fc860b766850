"""A real `localxai serve` process with the real default model, driven by `openai` and raw httpx.

Assertions are on structure, determinism and limits, never on the meaning of the base model's text.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from conftest import API_KEY, AUTH, Server

MODEL = "gemma-3-270m"
SHORT = [{"role": "user", "content": "Write a short story about a robot."}]


@pytest.fixture(scope="module")
def oai(real_server: Server) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, base_url=real_server.v1, max_retries=0, timeout=120)


def test_openai_client_completion(oai: openai.OpenAI) -> None:
    c = oai.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are a test assistant."},
            {"role": "user", "content": "Testing. Just say hi and hello world and nothing else."},
        ],
        max_tokens=12,
        seed=7,
    )
    assert c.object == "chat.completion"
    assert c.model == MODEL
    assert c.id and c.created > 0 and c.system_fingerprint.startswith("fp_")
    [choice] = c.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    u = c.usage
    assert u is not None
    assert u.prompt_tokens > 10
    assert 1 <= u.completion_tokens <= 12
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details is not None
    assert 0 <= (u.prompt_tokens_details.cached_tokens or 0) < u.prompt_tokens


def test_max_tokens_gives_finish_reason_length(oai: openai.OpenAI) -> None:
    c = oai.chat.completions.create(model=MODEL, messages=SHORT, max_completion_tokens=5, temperature=0)
    assert c.choices[0].finish_reason == "length"
    assert c.usage is not None and c.usage.completion_tokens == 5


def test_seed_makes_output_repeatable(oai: openai.OpenAI) -> None:
    def run() -> str:
        c = oai.chat.completions.create(model=MODEL, messages=SHORT, max_tokens=16, seed=1234, temperature=1.0)
        return c.choices[0].message.content or ""

    first = run()
    assert first
    assert run() == first


def test_streaming_matches_non_streaming(oai: openai.OpenAI) -> None:
    args = {"model": MODEL, "messages": SHORT, "max_tokens": 16, "seed": 99, "temperature": 0.8}
    whole = oai.chat.completions.create(**args)  # type: ignore[call-overload]
    chunks = list(oai.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))  # type: ignore[call-overload]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert len({c.id for c in chunks}) == 1


def test_raw_sse_framing(real_server: Server) -> None:
    body = {"model": MODEL, "messages": SHORT, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", real_server.v1 + "/chat/completions", json=body, headers=AUTH, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    blocks = raw.split("\n\n")
    assert blocks[-1] == "" and blocks[-2] == "data: [DONE]"
    for block in blocks[:-2]:
        assert block.startswith("data: ")
        json.loads(block[6:])


def test_stop_sequences_are_cut_even_across_tokens(oai: openai.OpenAI) -> None:
    args = {"model": MODEL, "messages": SHORT, "max_tokens": 24, "temperature": 0}
    text = oai.chat.completions.create(**args).choices[0].message.content or ""  # type: ignore[call-overload]
    assert len(text) > 20, text
    # A stop string starting mid-text, spanning several characters (and so usually a token boundary).
    stop = text[10:14]
    expected = text[: text.find(stop)]
    c = oai.chat.completions.create(**args, stop=[stop, "zzzz-never"])  # type: ignore[call-overload]
    assert c.choices[0].message.content == expected
    assert c.choices[0].finish_reason == "stop"
    streamed = oai.chat.completions.create(**args, stop=[stop], stream=True)  # type: ignore[call-overload]
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices) == expected


def test_n_choices(oai: openai.OpenAI) -> None:
    c = oai.chat.completions.create(model=MODEL, messages=SHORT, max_tokens=8, n=3, seed=5, temperature=1.0)
    assert [ch.index for ch in c.choices] == [0, 1, 2]
    assert len({ch.message.content for ch in c.choices}) > 1
    assert c.usage is not None and 3 <= c.usage.completion_tokens <= 3 * 8


def test_penalties_and_top_p_are_accepted(oai: openai.OpenAI) -> None:
    c = oai.chat.completions.create(
        model=MODEL,
        messages=SHORT,
        max_tokens=6,
        presence_penalty=1.5,
        frequency_penalty=1.0,
        top_p=0.5,
        seed=3,
    )
    assert c.choices[0].message.content is not None


def test_multi_turn_in_any_order(oai: openai.OpenAI) -> None:
    c = oai.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "assistant", "content": "Anything else?"},
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
        ],
        max_tokens=4,
    )
    assert c.choices[0].finish_reason in ("stop", "length")


def test_alias_runs_unchanged(oai: openai.OpenAI) -> None:
    c = oai.chat.completions.create(model="grok-4", messages=SHORT, max_tokens=2)
    assert c.model == MODEL
    listed = {m.id: m for m in oai.models.list()}
    assert listed[MODEL].model_extra["aliases"] == ["grok-4"]  # type: ignore[index]


def test_context_overflow_is_rejected_with_xai_message(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello " * 1500}], max_tokens=2)
    body = info.value.response.json()
    assert body["code"] == "Client specified an invalid argument"
    assert body["error"].startswith("This model's maximum prompt length is 1023 but the request contains ")


def test_errors_over_real_http(real_server: Server) -> None:
    url = real_server.v1 + "/chat/completions"
    ok = {"model": MODEL, "messages": SHORT, "max_tokens": 1}
    cases = [
        (httpx.post(url, json=ok), 401),
        (httpx.post(url, json=ok, headers={"Authorization": "Bearer nope-nope"}), 400),
        (httpx.post(url, json={**ok, "model": "grok-1"}, headers=AUTH), 404),
        (httpx.get(url, headers=AUTH), 405),
        (httpx.post(url, content=json.dumps(ok), headers={**AUTH, "Content-Type": "text/plain"}), 415),
        (httpx.post(url, content=b"", headers={**AUTH, "Content-Type": "application/json"}), 415),
        (httpx.post(url, content=b"{oops", headers={**AUTH, "Content-Type": "application/json"}), 422),
        (httpx.post(url, json={**ok, "max_tokens": "many"}, headers=AUTH), 422),
        (httpx.post(url, json={**ok, "top_p": 2}, headers=AUTH), 400),
        (
            httpx.post(
                url,
                json={
                    **ok,
                    "messages": [
                        {
                            "role": "user",
                            "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                        }
                    ],
                },
                headers=AUTH,
            ),
            400,
        ),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert set(response.json()) == {"code", "error"}


def test_other_endpoints(real_server: Server) -> None:
    tokens = httpx.post(
        real_server.v1 + "/tokenize-text", json={"model": "grok-4", "text": "Hello world"}, headers=AUTH
    ).json()["token_ids"]
    assert "".join(t["string_token"] for t in tokens) == "Hello world"
    assert bytes(b for t in tokens for b in t["token_bytes"]) == b"Hello world"
    lm = httpx.get(real_server.v1 + "/language-models/" + MODEL, headers=AUTH).json()
    assert lm["input_modalities"] == ["text"] and lm["aliases"] == ["grok-4"]
    key = httpx.get(real_server.v1 + "/api-key", headers=AUTH).json()
    assert key["redacted_api_key"] == "xai-...6789"
    assert httpx.get(real_server.base_url + "/health").json() == {"status": "ok"}


def _wait_for_log(server: Server, needle: str, seen: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.log.read_text().count(needle) > seen:
            return True
        time.sleep(0.1)
    return False


def test_client_disconnect_cancels_generation(real_server: Server) -> None:
    needle = "generation cancelled after"
    seen = real_server.log.read_text().count(needle)
    body = {"model": MODEL, "messages": SHORT, "max_tokens": 1500, "temperature": 0, "stream": True}
    with httpx.stream("POST", real_server.v1 + "/chat/completions", json=body, headers=AUTH, timeout=60) as r:
        for _ in r.iter_lines():
            break  # first chunk arrived: go away
    assert _wait_for_log(real_server, needle, seen)
    # Non-streaming: the client gives up waiting.
    seen = real_server.log.read_text().count(needle)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(real_server.v1 + "/chat/completions", json={**body, "stream": False}, headers=AUTH, timeout=1.5)
    assert _wait_for_log(real_server, needle, seen)
    # The engine is free again.
    r2 = httpx.post(
        real_server.v1 + "/chat/completions",
        json={**body, "stream": False, "max_tokens": 2},
        headers=AUTH,
        timeout=60,
    )
    assert r2.status_code == 200


def test_deferred_completion_with_the_real_model(real_server: Server) -> None:
    body = {"model": "grok-4", "messages": SHORT, "max_tokens": 4, "deferred": True}
    request_id = httpx.post(real_server.v1 + "/chat/completions", json=body, headers=AUTH).json()["request_id"]
    url = f"{real_server.v1}/chat/deferred-completion/{request_id}"
    deadline = time.monotonic() + 60
    while (r := httpx.get(url, headers=AUTH)).status_code == 202:
        assert r.content == b""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert r.status_code == 200
    assert r.json()["model"] == MODEL and r.json()["usage"]["completion_tokens"] <= 4
    assert httpx.get(url, headers=AUTH).status_code == 404
