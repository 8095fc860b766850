"""Operations: metrics, readiness, request ids, limits, time limit, auth coverage, graceful shutdown."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from test_httpapi import sse_events
from xai_sdk.proto import sample_pb2

from localxai.engines.fake import FakeEngine
from localxai.httpapi.app import PUBLIC_PATHS
from localxai.service import Limits

from conftest import API_KEY, AUTH, Server, fake_app, start_server

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH)


async def test_metrics_after_traffic() -> None:
    async with client_for(fake_app()) as c:
        assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert (await c.post("/v1/chat/completions", json={**CHAT, "model": "nope"})).status_code == 404
        for i in range(20):  # client-chosen names must not become label values (unbounded memory)
            r = await c.post("/v1/chat/completions", json={**CHAT, "model": f"{i}-" + "x" * 100_000})
            assert r.status_code == 404 and len(r.json()["error"]) < 300
        r = await c.get("/metrics")
        assert (await c.get("/metrics", headers={"Authorization": ""})).status_code == 401
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'localxai_requests_total{model="fake-model",route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'localxai_requests_total{model="unknown",route="/v1/chat/completions",status="404"} 21.0' in text
    assert "nope" not in text and "xxxx" not in text and len(text) < 50_000
    assert 'localxai_time_to_first_token_seconds_count{model="fake-model"} 1.0' in text
    assert 'localxai_inter_token_latency_seconds_count{model="fake-model"}' in text
    assert 'localxai_tokens_total{kind="completion",model="fake-model"}' in text
    assert 'localxai_queue_depth{model="fake-model"} 0.0' in text


async def test_health_ready_and_request_ids() -> None:
    async with client_for(fake_app()) as c:
        health = await c.get("/health", headers={"Authorization": ""})
        ready = await c.get("/ready")
    assert health.json() == {"status": "ok"}
    assert ready.json() == {"status": "ready", "models": ["fake-model"]}
    ids = {health.headers["x-request-id"], ready.headers["x-request-id"]}
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)


async def test_body_size_cap_is_413() -> None:
    from localxai.runtime import Runtime

    app = fake_app()
    runtime: Runtime = app.user_middleware[0].kwargs["runtime"]
    object.__setattr__(runtime, "max_body_bytes", 1000)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
    async with client_for(app) as c:
        r = await c.post("/v1/chat/completions", json=big)
        assert r.status_code == 413
        assert r.json()["code"] == "Client specified an invalid argument" and "exceeds" in r.json()["error"]

        async def chunks() -> Any:  # no Content-Length: counted while read
            yield json.dumps(big).encode()

        r = await c.post("/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_message_and_image_limits() -> None:
    async with client_for(fake_app(limits=Limits(max_messages=3, max_images=1))) as c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "messages": CHAT["messages"] * 4})
        assert r.status_code == 400 and "Too many messages" in r.json()["error"]
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
        r = await c.post(
            "/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": [image, image]}]}
        )
        assert r.status_code == 400 and "Too many images" in r.json()["error"]


async def test_request_time_limit_ends_generation() -> None:
    app = fake_app(FakeEngine(reply=" ".join(["word"] * 200), token_delay=0.01), limits=Limits(timeout_s=0.2))
    async with client_for(app) as c:
        body = (await c.post("/v1/chat/completions", json=CHAT)).json()
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] < 200
        events = sse_events((await c.post("/v1/chat/completions", json={**CHAT, "stream": True})).text)
        assert events[-2]["choices"][0]["finish_reason"] == "length" and events[-1] == "[DONE]"


async def test_every_route_but_health_and_the_playground_page_needs_a_key() -> None:
    app = fake_app()
    routes = [(r.path, m) for r in app.routes if isinstance(r, APIRoute) for m in r.methods]
    routes += [("/openapi.json", "GET"), ("/docs", "GET")]
    assert len(routes) > 10
    async with client_for(app) as c:
        for path, method in routes:
            concrete = path.replace("{request_id}", "x").replace("{model_id:path}", "x").replace("{model_id}", "x")
            r = await c.request(method, concrete, headers={"Authorization": ""})
            expected = 200 if path in PUBLIC_PATHS else 401  # /health, the page and its assets, never the API
            assert r.status_code == expected, (method, path, r.status_code)


def test_one_log_line_per_request_tagged_with_its_id(real_server: Server) -> None:
    body = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    r = httpx.post(real_server.v1 + "/chat/completions", json=body, headers=AUTH, timeout=60)
    request_id = r.headers["x-request-id"]
    usage = r.json()["usage"]
    missing = httpx.post(real_server.v1 + "/chat/completions", json={**body, "model": "nope"}, headers=AUTH)
    for _ in range(50):  # the line is written once the response is sent
        log = real_server.log.read_text()
        if missing.headers["x-request-id"] in log:
            break
        time.sleep(0.1)
    [line] = [line for line in log.splitlines() if f"[{request_id}]" in line and "localxai.requests" in line]
    assert "POST /v1/chat/completions 200 model=gemma-3-270m" in line
    assert f"prompt={usage['prompt_tokens']} " in line and f"completion={usage['completion_tokens']} " in line
    assert "ttft_ms=" in line and "duration_ms=" in line
    assert "POST /v1/chat/completions 404 model=unknown" in log


def test_keys_never_reach_the_logs(real_server: Server) -> None:
    wrong = "xai-wrong-secret-key-123456789"
    httpx.post(real_server.v1 + "/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {wrong}"})
    httpx.get(real_server.v1 + "/api-key", headers=AUTH)
    log = real_server.log.read_text()
    assert API_KEY not in log and wrong not in log


def test_graceful_shutdown(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    server = start_server(
        tmp_path,
        "--shutdown-grace-s",
        "4",
        "--ctx-size",
        "2048",
        "--parallel",
        "3",
        "--database-url",
        f"sqlite:///{db}",
    )
    url = server.v1 + "/chat/completions"
    body = {
        "model": "gemma-3-270m",
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 1900,
        "temperature": 0,
        "stream": True,
    }
    deferred_id = httpx.post(
        url, json={**body, "stream": False, "deferred": True}, headers={"Authorization": "Bearer x"}
    ).json()["request_id"]
    events: list[Any] = []
    first = threading.Event()

    def consume() -> None:
        with httpx.stream("POST", url, json=body, headers={"Authorization": "Bearer x"}, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
                    first.set()

    plain: list[httpx.Response] = []
    grpc_chunks: list[Any] = []
    grpc_first = threading.Event()

    def consume_grpc() -> None:  # a gRPC stream ends the same way, from the same core
        from xai_sdk import Client
        from xai_sdk.chat import user

        client = Client(api_key="x", api_host=f"localhost:{server.grpc_port}", timeout=60)
        chat = client.chat.create(model="gemma-3-270m", max_tokens=1900, temperature=0)
        chat.append(user("Tell a long story."))
        for _, chunk in chat.stream():
            grpc_chunks.append(chunk)
            grpc_first.set()

    def complete() -> None:  # a non-streaming request still running when the grace ends
        plain.append(httpx.post(url, json={**body, "stream": False}, headers={"Authorization": "Bearer x"}, timeout=60))

    reader = threading.Thread(target=consume)
    reader.start()
    grpc_reader = threading.Thread(target=consume_grpc)
    grpc_reader.start()
    assert first.wait(60) and grpc_first.wait(60)
    waiter = threading.Thread(target=complete)
    waiter.start()
    time.sleep(0.5)  # let it reach the server
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    reader.join(60)
    grpc_reader.join(60)
    waiter.join(60)
    assert server.process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once done
    assert time.monotonic() - started < 20
    # The stream was ended properly: a final chunk, then [DONE].
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    # The gRPC stream ended without an error, its last output carrying a finish reason.
    reasons = [o.finish_reason for c in grpc_chunks for o in c.proto.outputs if o.finish_reason]
    assert reasons == [sample_pb2.REASON_MAX_LEN]
    # The non-streaming one got xAI's 503, not a bare plain-text 500.
    assert plain[0].status_code == 503
    assert plain[0].json() == {
        "code": "The service is currently unavailable",
        "error": "The server is shutting down; retry the request.",
    }
    # New connections are refused while stopping / after.
    with pytest.raises(httpx.TransportError):
        httpx.post(url, json=body, headers={"Authorization": "Bearer x"}, timeout=5)
    # The deferred request was not lost: it waits in the store for the next run.
    with sqlite3.connect(db) as conn:
        (status,) = conn.execute("SELECT status FROM deferred WHERE id = ?", (deferred_id,)).fetchone()
    assert status in ("pending", "done")


async def test_database_failures_are_503_not_500(tmp_path: Path) -> None:
    """A database that goes away gives xAI's 503 on every route and on /ready, never SQL text."""
    import sqlalchemy as sa

    from localxai.httpapi.app import create_app
    from localxai.runtime import Runtime
    from localxai.store.store import Store, sqlite_url

    store = Store(sqlite_url(tmp_path))
    _, secret = store.create_key("k")
    app = create_app(Runtime.build([FakeEngine()], (), store))
    store.engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # the database is gone
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {secret}"}
    ) as c:
        for method, path in (("GET", "/ready"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
            r = await c.request(method, path, json=CHAT if method == "POST" else None)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["code"] == "The service is currently unavailable"
            assert "sql" not in r.text.lower() and "127.0.0.1" not in r.text


async def test_tokenize_is_bounded_and_follows_the_key_s_models(tmp_path: Path) -> None:
    from localxai.httpapi.app import create_app
    from localxai.runtime import Runtime
    from localxai.service import MAX_TOKENIZE_CHARS
    from localxai.store.store import Store, sqlite_url

    store = Store(sqlite_url(tmp_path))
    _, limited = store.create_key("k", models=("other-model",))
    app = create_app(Runtime.build([FakeEngine()], (API_KEY,), store))
    async with client_for(app) as c:
        r = await c.post("/v1/tokenize-text", json={"model": "fake-model", "text": "a " * MAX_TOKENIZE_CHARS})
        assert r.status_code == 400 and str(MAX_TOKENIZE_CHARS) in r.json()["error"]
        assert (await c.post("/v1/tokenize-text", json={"model": "fake-model", "text": "a b"})).status_code == 200
        r = await c.post(
            "/v1/tokenize-text",
            json={"model": "fake-model", "text": "a b"},
            headers={"Authorization": f"Bearer {limited}"},
        )
        assert r.status_code == 403 and "not allowed to use model fake-model" in r.json()["error"]


async def test_open_access_is_decided_once_at_start(tmp_path: Path) -> None:
    """Keys created while an open server runs do not lock it; revoking the last key of a keyed server
    does not open it."""
    from localxai.httpapi.app import create_app
    from localxai.runtime import Runtime
    from localxai.store.store import Store, sqlite_url

    open_store = Store(sqlite_url(tmp_path / "open"))
    open_app = create_app(Runtime.build([FakeEngine()], (), open_store))
    open_store.create_key("created later")
    async with client_for(open_app) as c:
        assert (await c.get("/v1/models", headers={"Authorization": "Bearer anything"})).status_code == 200

    keyed_store = Store(sqlite_url(tmp_path / "keyed"))
    record, secret = keyed_store.create_key("only key")
    keyed_app = create_app(Runtime.build([FakeEngine()], (), keyed_store))
    async with client_for(keyed_app) as c:
        assert (await c.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})).status_code == 200
        assert keyed_store.revoke_key(record.id)
        for token in (secret, "anything"):
            r = await c.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 400 and "Incorrect API key" in r.json()["error"]


def test_a_second_ctrl_c_exits_at_once_and_cleanly(tmp_path: Path) -> None:
    """uvicorn's forced exit skipped the cleanup: a CancelledError traceback per stream, llama.cpp's
    thread still running into interpreter teardown (once a segfault). Now: one line, exit 130."""
    server = start_server(tmp_path)
    body = {
        "model": "gemma-3-270m",
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 1900,
        "stream": True,
    }
    first = threading.Event()

    def consume() -> None:
        try:
            with httpx.stream("POST", server.v1 + "/chat/completions", json=body, headers=AUTH, timeout=60) as r:
                for _ in r.iter_lines():
                    first.set()
        except httpx.HTTPError:
            pass  # the server went away: expected

    reader = threading.Thread(target=consume)
    reader.start()
    assert first.wait(60)
    server.process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(20) == 128 + signal.SIGINT
    reader.join(20)
    log = server.log.read_text()
    assert "second signal: exiting now" in log
    assert "Traceback" not in log and "CancelledError" not in log
