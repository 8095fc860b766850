"""Deferred completions over REST: request id, 202 while pending, 200 once, then 404; owner only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from localxai.auth import ApiKey
from localxai.chat import ChatRequest, Message, Role, TextPart
from localxai.deferred import DeferredCompletions
from localxai.engines.fake import FakeEngine
from localxai.errors import NotFound
from localxai.service import ChatService
from localxai.store.store import Store, sqlite_url

from conftest import AUTH, fake_app

OTHER = {"Authorization": "Bearer another-key-0000"}
BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "deferred": True, "seed": 1}


async def test_deferred_round_trip() -> None:
    app = fake_app(FakeEngine(token_delay=0.02), keys=(AUTH["Authorization"].split()[1], "another-key-0000"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH) as c:
        r = await c.post("/v1/chat/completions", json=BODY)
        assert r.status_code == 200
        assert set(r.json()) == {"request_id"}
        request_id = r.json()["request_id"]
        url = f"/v1/chat/deferred-completion/{request_id}"
        pending = await c.get(url)
        assert pending.status_code == 202 and pending.content == b""
        # Another key cannot read it, not even to learn that it exists.
        assert (await c.get(url, headers=OTHER)).status_code == 404
        for _ in range(200):
            r = await c.get(url)
            if r.status_code == 200:
                break
            await asyncio.sleep(0.02)
        assert r.status_code == 200
        body = r.json()
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
        direct = await c.post("/v1/chat/completions", json={**BODY, "deferred": False})
        assert body["choices"][0]["message"]["content"] == direct.json()["choices"][0]["message"]["content"]
        gone = await c.get(url)  # exactly once
        assert gone.status_code == 404
        assert gone.json()["code"] == "Some requested entity was not found"


async def test_deferred_validates_at_submission(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json={**BODY, "temperature": 7})
    assert r.status_code == 400
    r = await client.post("/v1/chat/completions", json={**BODY, "model": "nope"})
    assert r.status_code == 404


async def test_unknown_deferred_id_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/chat/deferred-completion/not-a-real-id")).status_code == 404


async def test_results_expire(tmp_path: Path) -> None:
    deferred = DeferredCompletions(ChatService([FakeEngine()]), Store(sqlite_url(tmp_path)), "w", ttl_s=0)
    request = ChatRequest(model="fake-model", messages=(Message(Role.USER, (TextPart("hi"),)),))
    caller = ApiKey(key_id="k", redacted="***", name="k", created=0, modified=0)
    request_id = await deferred.submit(request, caller)
    await asyncio.sleep(0.01)
    with pytest.raises(NotFound):
        await deferred.fetch(request_id, caller)
    await deferred.close()
