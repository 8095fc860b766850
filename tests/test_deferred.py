"""Deferred completions over REST: request id, 202 while pending, 200 once, then 404; owner only."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from localxai import codec
from localxai.auth import ApiKey
from localxai.chat import ChatRequest, Message, Role, TextPart
from localxai.deferred import MAX_ATTEMPTS, DeferredCompletions
from localxai.engines.fake import FakeEngine
from localxai.errors import Abandoned, NotFound, ResourceExhausted
from localxai.httpapi.app import create_app
from localxai.runtime import Runtime
from localxai.service import ChatService
from localxai.store.store import Store, sqlite_url

from conftest import API_KEY, AUTH, app_client, fake_app

OTHER = {"Authorization": "Bearer another-key-0000"}
BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "deferred": True, "seed": 1}


async def test_deferred_round_trip() -> None:
    app = fake_app(FakeEngine(token_delay=0.02), keys=(AUTH["Authorization"].split()[1], "another-key-0000"))
    async with app_client(app) as c:
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


POISON_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "x", "schema": {"type": "string", "maxLength": 100_000}},
}


async def test_deferred_submission_checks_what_a_live_request_checks() -> None:
    """A request that a live call refuses is refused at submission too, with the same error."""
    app = fake_app(FakeEngine(context_length=8))
    long_prompt = [{"role": "user", "content": "word " * 50}]
    headers = {**AUTH, "Content-Type": "application/json"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=headers) as c:
        for change in (
            {"response_format": POISON_FORMAT},
            {"messages": long_prompt},
            {"messages": [{"role": "user", "content": "bad \ud800 text"}]},
            {"model": "fake-\udc00"},
        ):
            # json.dumps spells a lone surrogate as JSON allows (\ud800); httpx's json= cannot send one.
            live = await c.post("/v1/chat/completions", content=json.dumps({**BODY, "deferred": False, **change}))
            deferred = await c.post("/v1/chat/completions", content=json.dumps({**BODY, **change}))
            assert live.status_code == deferred.status_code == 400, (change, live.text, deferred.text)
            assert live.json() == deferred.json()


class BusyOnce(FakeEngine):
    """At capacity for the first `busy` starts, as an engine full of live requests is."""

    def __init__(self, busy: int) -> None:
        super().__init__()
        self.busy = busy

    async def generate(self, request):  # type: ignore[no-untyped-def]
        if self.busy:
            self.busy -= 1
            raise ResourceExhausted("The service is temporarily at capacity.", retry_after=0.05)
        return await super().generate(request)


async def test_deferred_waits_for_capacity_instead_of_failing(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    deferred = DeferredCompletions(ChatService([BusyOnce(busy=3)]), store, "w")
    await deferred.start()
    request = ChatRequest(model="fake-model", messages=(Message(Role.USER, (TextPart("hi"),)),))
    caller = ApiKey(key_id="k", redacted="***", name="k", created=0, modified=0)
    request_id = await deferred.submit(request, caller)
    try:
        for _ in range(300):
            completion = await deferred.fetch(request_id, caller)
            if completion is not None:
                break
            await asyncio.sleep(0.02)
        assert completion is not None and completion.choices[0].text
    finally:
        await deferred.close()


async def test_a_request_that_keeps_killing_its_server_is_failed(tmp_path: Path) -> None:
    """Each start of a worker re-queues what its crashed previous life ran; after MAX_ATTEMPTS runs
    that never ended, the request is failed with a clear error instead of crashing the server again."""
    store = Store(sqlite_url(tmp_path))
    caller = ApiKey(key_id="k", redacted="***", name="k", created=0, modified=0)
    request = ChatRequest(model="fake-model", messages=(Message(Role.USER, (TextPart("hi"),)),))
    store.create_deferred("00000000-0000-4000-8000-000000000001", "k", codec.dumps(request))
    for _ in range(MAX_ATTEMPTS):  # a process claims it and dies; its restart releases the claim
        assert store.claim_deferred("w", lease_s=60, max_attempts=MAX_ATTEMPTS) is not None
        assert store.release_claims("w") == 1
    assert store.claim_deferred("w", lease_s=60, max_attempts=MAX_ATTEMPTS) is None
    deferred = DeferredCompletions(ChatService([FakeEngine()]), store, "w")
    with pytest.raises(Abandoned, match="stopped while running this request 3 times"):
        await deferred.fetch("00000000-0000-4000-8000-000000000001", caller)


async def test_clean_stops_and_capacity_waits_do_not_count_as_attempts(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    store.create_deferred("r1", "k", "{}")
    for _ in range(MAX_ATTEMPTS + 2):
        assert store.claim_deferred("w", lease_s=60, max_attempts=MAX_ATTEMPTS) == ("r1", "{}", None)
        assert store.release_claims("w", clean=True) == 1
        assert store.claim_deferred("w", lease_s=60, max_attempts=MAX_ATTEMPTS) == ("r1", "{}", None)
        store.requeue_deferred("r1")


async def test_abandoned_request_answers_the_poll_with_its_reason(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    owner = "key_" + hashlib.sha256(API_KEY.encode()).hexdigest()[:16]  # a configured key's id
    request = ChatRequest(model="fake-model", messages=(Message(Role.USER, (TextPart("hi"),)),))
    request_id = "00000000-0000-4000-8000-000000000002"
    store.create_deferred(request_id, owner, codec.dumps(request))
    for _ in range(MAX_ATTEMPTS):  # three lives of a server died running it
        assert store.claim_deferred("dead", lease_s=0.0, max_attempts=MAX_ATTEMPTS) is not None
    app = create_app(Runtime.build([FakeEngine()], (API_KEY,), store))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as c,
    ):
        for _ in range(200):
            r = await c.get(f"/v1/chat/deferred-completion/{request_id}")
            if r.status_code != 202:
                break
            await asyncio.sleep(0.02)
    assert r.status_code == 500
    assert r.json() == {
        "code": "Internal error",
        "error": "The server stopped while running this request 3 times; it is not run again.",
    }


@pytest.mark.parametrize("request_id", ["nul%00byte", "x" * 5000, "..%2F..%2Fetc", "%27%20OR%201=1%20--"])
async def test_malformed_deferred_ids_are_404_before_the_database(client: httpx.AsyncClient, request_id: str) -> None:
    r = await client.get(f"/v1/chat/deferred-completion/{request_id}")
    assert r.status_code == 404
    assert r.json()["code"] == "Some requested entity was not found"


async def test_nul_in_a_deferred_id_never_reaches_postgresql(pg_url: str) -> None:
    deferred = DeferredCompletions(ChatService([FakeEngine()]), Store(pg_url), "w")
    caller = ApiKey(key_id="k", redacted="***", name="k", created=0, modified=0)
    with pytest.raises(NotFound):
        await deferred.fetch("00000000-0000-4000-8000-00000000000\x00", caller)
    await deferred.close()


class Counting(FakeEngine):
    def __init__(self) -> None:
        super().__init__(token_delay=0.01)
        self.starts = 0

    async def generate(self, request):  # type: ignore[no-untyped-def]
        self.starts += 1
        return await super().generate(request)


async def test_a_restart_never_runs_a_request_twice(tmp_path: Path) -> None:
    """Start-up releases the previous run's claims before the worker claims anything: in the other
    order the release could hand back a request the new worker had just started, which then ran twice."""
    request = ChatRequest(model="fake-model", messages=(Message(Role.USER, (TextPart("hi"),)),))
    caller = ApiKey(key_id="k", redacted="***", name="k", created=0, modified=0)
    for attempt in range(5):
        store = Store(sqlite_url(tmp_path / str(attempt)))
        ids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(3)]
        for request_id in ids:
            store.create_deferred(request_id, "k", codec.dumps(request))
        assert store.claim_deferred("w", lease_s=60) is not None  # the previous life was running one
        engine = Counting()
        deferred = DeferredCompletions(ChatService([engine]), store, "w")
        await deferred.start()
        try:
            for request_id in ids:
                for _ in range(500):
                    if await deferred.fetch(request_id, caller) is not None:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError(f"{request_id} never finished")
        finally:
            await deferred.close()
        assert engine.starts == len(ids)


async def test_close_stops_the_worker_when_a_wake_arrives_with_the_cancel(tmp_path: Path) -> None:
    """A request finishing wakes the worker; close() right after must still stop it. Python 3.11's
    asyncio.wait_for returned the wake's result and dropped the cancellation, so close() hung (CI, once)."""
    deferred = DeferredCompletions(ChatService([FakeEngine()]), Store(sqlite_url(tmp_path / "db")), "w")
    await deferred.start()
    await asyncio.sleep(0.1)  # the worker found nothing and waits for a wake
    deferred._wake.set()  # as a finishing request does, in the same tick as the cancel below
    async with asyncio.timeout(10):
        await deferred.close()
