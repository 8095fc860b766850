"""Upstream replicas without GPUs: local HTTP servers that answer like vLLM, or refuse like a
misconfigured one. Readiness and the start-up log report unreachable upstreams; a replica that
refuses localxai's key is that replica's fault, so the request goes to a healthy one."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from localxai.engines.upstream import UpstreamEngine
from localxai.httpapi.app import create_app
from localxai.runtime import Runtime
from localxai.specs import UpstreamModel
from localxai.store.store import Store, sqlite_url

from conftest import API_KEY, AUTH, free_port, http_server


class OpenAICompatible(BaseHTTPRequestHandler):
    """A one-word streaming Chat Completions server, as vLLM answers."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        chunks = [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hello"}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
        ]
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


class WrongKey(OpenAICompatible):
    """A replica started with another API key than the one localxai sends."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()


def app_for(*base_urls: str):  # type: ignore[no-untyped-def]
    engine = UpstreamEngine([UpstreamModel("up", tuple(base_urls), "up")], health_interval_s=60)
    store = Store(sqlite_url(Path(tempfile.mkdtemp(prefix="localxai-test-"))))
    return create_app(Runtime.build([engine], (API_KEY,), store))


async def test_unreachable_upstream_is_logged_at_start_and_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    app = app_for(dead)
    with caplog.at_level(logging.WARNING, logger="localxai.engines.upstream"):
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH) as c,
        ):
            r = await c.get("/ready")
    assert r.status_code == 503
    assert r.json()["error"] == f"Not ready: model up: none of its 1 upstream replicas is reachable ({dead})."
    assert any("none of its 1 upstream replicas is reachable" in m for m in caplog.messages)


async def test_a_replica_with_a_wrong_key_is_ejected_and_the_request_served_elsewhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = {"model": "up", "messages": [{"role": "user", "content": "hi"}]}
    with http_server(WrongKey) as refusing, http_server(OpenAICompatible) as healthy:
        app = app_for(refusing + "/v1", healthy + "/v1")
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH) as c,
        ):
            assert (await c.get("/ready")).status_code == 200
            for _ in range(4):  # whichever replica is picked first, every request is answered
                r = await c.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["message"]["content"] == "hello"
    assert any("refused localxai's credentials (HTTP 401)" in m for m in caplog.messages)


class Silent(OpenAICompatible):
    """Takes the request and never answers in time."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(3)


async def test_an_upstream_that_does_not_answer_in_time_is_503_not_500() -> None:
    body = {"model": "up", "messages": [{"role": "user", "content": "hi"}]}
    with http_server(Silent) as silent:
        engine = UpstreamEngine([UpstreamModel("up", (silent + "/v1",), "up", timeout_s=0.5)], health_interval_s=60)
        store = Store(sqlite_url(Path(tempfile.mkdtemp(prefix="localxai-test-"))))
        app = create_app(Runtime.build([engine], (API_KEY,), store))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=AUTH) as c,
        ):
            r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == 503
    assert r.json()["error"] == "The upstream engine of model up did not answer in time."
