"""Keys, limits, usage and durable deferred completions with real server processes and real databases."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import Server, free_port, start_server, stop_server

MODEL = "gemma-3-270m"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "localxai", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_keys_acls_limits_and_usage(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'state.db'}"
    secret = cli("keys", "create", "--name", "ci", "--database-url", db).strip()
    limited = cli("keys", "create", "--name", "limited", "--rpm", "3", "--database-url", db).strip()
    other_model = cli("keys", "create", "--name", "acl", "--models", "some-other-model", "--database-url", db).strip()
    cli("keys", "create", "--name", "agents", "--tools", "mcp,web_search", "--database-url", db)
    listing = cli("keys", "list", "--database-url", db)
    assert "ci" in listing and "limited" in listing and secret not in listing and secret[-4:] in listing
    assert " tools " in listing.splitlines()[0] and "mcp,web_search" in listing  # what each key may run
    server = start_server(tmp_path, "--database-url", db, "--ctx-size", "256", "--parallel", "2")
    try:
        url = server.v1 + "/chat/completions"
        assert httpx.post(url, json=BODY, headers=bearer(secret), timeout=60).status_code == 200
        assert httpx.post(url, json=BODY, headers=bearer("xai-not-a-key"), timeout=60).status_code == 400
        assert httpx.post(url, json=BODY, timeout=60).status_code == 401
        info = httpx.get(server.v1 + "/api-key", headers=bearer(secret)).json()
        assert info["name"] == "ci" and info["redacted_api_key"] == f"{secret[:4]}...{secret[-4:]}"
        assert info["acls"] == ["api-key:model:*", "api-key:endpoint:*"] and info["api_key_id"].startswith("key_")
        denied = httpx.post(url, json=BODY, headers=bearer(other_model), timeout=60)
        assert denied.status_code == 403
        assert denied.json()["code"] == "The caller does not have permission to execute the specified operation"
        # 3 per clock minute: a burst of quick requests meets a 429 after at least 3 answers, even if it
        # crosses a minute boundary (exact window arithmetic is tested in-process with a clock).
        statuses = []
        while 429 not in statuses and len(statuses) < 8:
            statuses.append(httpx.post(url, json=BODY, headers=bearer(limited), timeout=60).status_code)
        assert statuses[-1] == 429 and statuses.count(200) >= 3 and set(statuses) == {200, 429}
        limited_reply = httpx.post(url, json=BODY, headers=bearer(limited), timeout=60)
        assert limited_reply.json()["code"] == "Some resource has been exhausted"
        assert 1 <= int(limited_reply.headers["Retry-After"]) <= 60
        key_id = info["api_key_id"]
        cli("keys", "disable", key_id, "--database-url", db)
        assert httpx.post(url, json=BODY, headers=bearer(secret), timeout=60).status_code == 403
        cli("keys", "enable", key_id, "--database-url", db)
        assert httpx.post(url, json=BODY, headers=bearer(secret), timeout=60).status_code == 200
        cli("keys", "revoke", key_id, "--database-url", db)
        assert httpx.post(url, json=BODY, headers=bearer(secret), timeout=60).status_code == 400
    finally:
        stop_server(server)
    report = cli("usage", "--database-url", db, "--since", "1h")
    lines = [line for line in report.splitlines() if line.startswith(key_id)]
    assert len(lines) == 1 and MODEL in lines[0]
    assert lines[0].split()[2] == "2"  # two answered requests on that key (refusals are not usage)
    assert key_id not in cli("usage", "--database-url", db, "--key", "key_nobody")


def test_rate_limit_holds_across_processes_sharing_postgresql(tmp_path: Path, pg_url: str) -> None:
    secret = cli("keys", "create", "--name", "shared", "--rpm", "5", "--database-url", pg_url).strip()
    servers = [start_server(tmp_path, "--database-url", pg_url, "--ctx-size", "256") for _ in range(2)]
    try:

        async def burst() -> list[int]:
            async with httpx.AsyncClient(headers=bearer(secret), timeout=120) as client:
                calls = [client.post(servers[i % 2].v1 + "/chat/completions", json=BODY) for i in range(12)]
                return [r.status_code for r in await asyncio.gather(*calls)]

        started = time.time()
        statuses = asyncio.run(burst())
        windows = int(time.time() // 60) - int(started // 60) + 1  # a burst may cross a minute boundary
        assert set(statuses) == {200, 429}
        assert statuses.count(200) == 5 if windows == 1 else 5 <= statuses.count(200) <= 5 * windows
    finally:
        for server in servers:
            stop_server(server)


def _status(db: Path, request_id: str) -> str | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT status FROM deferred WHERE id = ?", (request_id,)).fetchone()
    return None if row is None else str(row[0])


def _wait_for(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _poll(server: Server, request_id: str, timeout: float = 120) -> httpx.Response:
    url = f"{server.v1}/chat/deferred-completion/{request_id}"
    deadline = time.monotonic() + timeout
    while (r := httpx.get(url, headers=bearer("x"))).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return r


def _kill(server: Server) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=30)


def test_deferred_survives_kill_and_restart(tmp_path: Path) -> None:
    db_path = tmp_path / "state.db"
    port = free_port()
    args = ("--database-url", f"sqlite:///{db_path}", "--ctx-size", "512", "--parallel", "1", "--port", str(port))
    server = start_server(tmp_path, *args)
    try:
        # A finished result survives a crash.
        done_id = httpx.post(
            server.v1 + "/chat/completions", json={**BODY, "deferred": True}, headers=bearer("x")
        ).json()["request_id"]
        _wait_for(lambda: _status(db_path, done_id) == "done")
        # Work in progress survives it too: it is re-queued when the server comes back.
        long = {**BODY, "max_tokens": 300, "temperature": 0, "deferred": True}
        running_id = httpx.post(server.v1 + "/chat/completions", json=long, headers=bearer("x")).json()["request_id"]
        _wait_for(lambda: _status(db_path, running_id) == "running")
        _kill(server)
        assert _status(db_path, running_id) == "running"
        server = start_server(tmp_path, *args)
        finished = _poll(server, done_id)
        assert finished.status_code == 200 and finished.json()["object"] == "chat.completion"
        resumed = _poll(server, running_id)
        assert resumed.status_code == 200
        assert resumed.json()["usage"]["completion_tokens"] >= 1
        assert httpx.get(f"{server.v1}/chat/deferred-completion/{running_id}", headers=bearer("x")).status_code == 404
    finally:
        if server.process.poll() is None:
            stop_server(server)


def test_a_thousand_request_batch_survives_kill_and_restart(tmp_path: Path) -> None:
    """Every result exactly once across a kill -9: what finished stays finished (never run again), what
    was running runs again after the restart, and the counts always add up."""
    db_path = tmp_path / "state.db"
    port = free_port()
    args = ("--database-url", f"sqlite:///{db_path}", "--ctx-size", "256", "--port", str(port))
    server = start_server(tmp_path, *args)
    headers = bearer("x")
    try:
        batch_id = httpx.post(server.v1 + "/batches", json={"name": "big"}, headers=headers).json()["batch_id"]
        requests = [
            {"batch_request_id": f"r{i}", "batch_request": {"chat_get_completion": {**BODY, "max_tokens": 2,
             "messages": [{"role": "system", "content": "You count."}, {"role": "user", "content": f"Say {i}"}]}}}
            for i in range(1000)
        ]  # fmt: skip
        added = httpx.post(f"{server.v1}/batches/{batch_id}/requests", json={"batch_requests": requests},
                           headers=headers, timeout=120)  # fmt: skip
        assert added.status_code == 200, added.text

        def state() -> dict[str, int]:
            got = httpx.get(f"{server.v1}/batches/{batch_id}", headers=headers, timeout=30).json()["state"]
            assert got["num_requests"] == 1000
            assert got["num_pending"] + got["num_success"] + got["num_error"] + got["num_cancelled"] == 1000
            return dict(got)

        _wait_for(lambda: state()["num_success"] >= 100, timeout=300)
        _kill(server)
        with sqlite3.connect(db_path) as db:
            done_before = {r[0] for r in db.execute("SELECT batch_request_id FROM deferred WHERE status = 'done'")}
            running = db.execute("SELECT count(*) FROM deferred WHERE status = 'running'").fetchone()[0]
        assert len(done_before) >= 100
        server = start_server(tmp_path, *args)
        _wait_for(lambda: state()["num_pending"] == 0, timeout=600)
        assert state()["num_success"] == 1000
        seen: list[str] = []
        token = None
        while True:
            params = {"limit": 300, **({"pagination_token": token} if token else {})}
            page = httpx.get(f"{server.v1}/batches/{batch_id}/results", params=params, headers=headers).json()
            seen += [r["batch_request_id"] for r in page["results"] if "response" in r["batch_result"]]
            if not (token := page["pagination_token"]):
                break
        assert sorted(seen) == sorted(f"r{i}" for i in range(1000))  # each once
        with sqlite3.connect(db_path) as db:
            runs = db.execute("SELECT count(*) FROM usage WHERE api = 'batch'").fetchone()[0]
        # A finished request is never run again; only those running at the kill (and at most they) twice.
        assert 1000 <= runs <= 1000 + running
    finally:
        if server.process.poll() is None:
            stop_server(server)
