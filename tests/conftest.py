"""Fixtures: an in-process app on the fake engine, and one real `localxai serve` process per session."""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from localxai.engines.fake import FakeEngine
from localxai.httpapi.app import create_app
from localxai.runtime import Options, Runtime
from localxai.store.store import Store, sqlite_url

# What makes a test need the real model or a server process: `make test-fast` runs the others.
HEAVY = ("start_server(", "LlamaCppEngine(", "LlamaModel(", "subprocess.", "default_model_path(")

API_KEY = "xai-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def fake_app(engine: FakeEngine | None = None, keys: tuple[str, ...] = (API_KEY,), **service_kwargs):  # type: ignore[no-untyped-def]
    store = Store(sqlite_url(Path(tempfile.mkdtemp(prefix="localxai-test-"))))
    return create_app(Runtime.build([engine or FakeEngine()], keys, store, Options(**service_kwargs)))


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@asynccontextmanager
async def app_client(app: Any, headers: dict[str, str] | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of `app` with its lifespan run (engines opened, deferred worker started)."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=AUTH if headers is None else headers
        ) as c,
    ):
        yield c


@pytest.fixture
async def client(fake_engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(fake_app(fake_engine, aliases=[("grok-4", "fake-model")])) as c:
        yield c


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on a free loopback port, serving `handler` from threads; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def mcp_server(mode: str) -> Iterator[str]:
    """tests/servers/mcp_server.py (the mcp package's own server, or a hostile one) in its own process;
    yields its endpoint URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(Path(__file__).parent / "servers" / "mcp_server.py"), str(port),
                                mode], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}/{'sse' if mode == 'sse' else 'mcp'}"
    finally:
        process.kill()
        process.wait()


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path
    grpc_port: int

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"


def start_server(tmp: Path, *args: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> Server:
    port = int(args[args.index("--port") + 1]) if "--port" in args else free_port()
    args = tuple(a for i, a in enumerate(args) if a != "--port" and (i == 0 or args[i - 1] != "--port"))
    grpc_port = free_port()
    while grpc_port == port:  # the kernel may hand out a just-freed port again
        grpc_port = free_port()
    log = tmp / f"server-{port}-{time.monotonic_ns()}.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LOCALXAI_")}, **(env or {})}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localxai",
            "serve",
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            *args,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    server = Server(f"http://127.0.0.1:{port}", process, log, grpc_port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(server.base_url + "/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not become healthy:\n{log.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real default model behind a real HTTP server, shared by the whole session."""
    server = start_server(
        tmp_path_factory.mktemp("real"),
        "--api-key",
        API_KEY,
        "--alias",
        "grok-4=gemma-3-270m",
        "--ctx-size",
        "1024",
    )
    yield server
    stop_server(server)


PG_URL = os.environ.get("LOCALXAI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def private_database(kind: str, tmp: Path) -> Iterator[str]:
    """A database of its own: an SQLite file in `tmp`, or a private schema in the PostgreSQL test database
    (the one this machine and CI start), dropped afterwards. (A server left to its default data dir would
    share that directory's database with every other test server.)"""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'state.db'}"
        return
    import uuid

    import psycopg

    schema = f"lx_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with private_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_url"))


def _heavy(function: object) -> bool:
    try:
        source = inspect.getsource(function)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    return any(marker in source for marker in HEAVY)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `model` every test that (itself or through a fixture) loads the model or starts a process."""
    for item in items:
        function = getattr(item, "function", None)
        fixtures = getattr(item, "_fixtureinfo", None)
        definitions = [d[-1].func for d in fixtures.name2fixturedefs.values()] if fixtures else []
        if any(_heavy(f) for f in (function, *definitions) if f is not None):
            item.add_marker(pytest.mark.model)
