"""Models on demand through a real server with the real engine: the default model's GGUF copied under three
names (and once too big for the budget), a memory budget that holds two of them. Load on first request,
least-recently-used eviction, keep-alive unload, one load for concurrent first requests, a too-big model
refused at once saying what it needs, an unload that never cuts a running stream, and a restart that
keeps nothing stale."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localxai.engines.llamacpp import ondemand
from localxai.engines.llamacpp.default_model import default_model_path
from localxai.engines.llamacpp.ondemand import ModelPool, footprint
from localxai.errors import Unavailable
from localxai.httpapi.errors import error_response
from localxai.specs import EmbeddedModel, EngineTuning

from conftest import Server, start_server, stop_server

HEADERS = {"Authorization": "Bearer x"}
TUNING = ("--ctx-size", "512", "--parallel", "2")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A models file: m-a, m-b (keep-alive 2 s), m-c, and m-big (too big for any budget the test sets)."""
    tmp = tmp_path_factory.mktemp("on-demand")
    source = default_model_path(Path.home() / ".cache" / "localxai" / "models")
    entries = []
    for name, extra in (
        ("m-a", ""),
        ("m-b", "keep_alive = 2\n"),
        ("m-c", ""),
        ("m-big", "ctx_size = 8192\nparallel = 16\n"),
    ):
        path = tmp / f"{name}.gguf"
        shutil.copyfile(source, path)
        entries.append(f'[[models]]\nid = "{name}"\npath = "{path}"\n{extra}')
    config = tmp / "models.toml"
    config.write_text("\n".join(entries))
    return config, ["m-a", "m-b", "m-c", "m-big"]


def budget_for_two(config: Path) -> int:
    one = footprint(EmbeddedModel("m", tuning=EngineTuning(ctx_size=512, parallel=2)), config.parent / "m-a.gguf")
    return (2 * one + one // 2) >> 20  # MiB: two fit, three do not


@pytest.fixture(scope="module")
def server(files: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config, _ = files
    budget = str(budget_for_two(config))
    running = start_server(tmp_path_factory.mktemp("od-server"), "--config", str(config), *TUNING,
                           "--memory-budget", budget)  # fmt: skip
    yield running
    stop_server(running)


def loaded(server: Server) -> dict[str, bool]:
    listed = httpx.get(f"{server.v1}/models", headers=HEADERS).json()["data"]
    return {m["id"]: m["loaded"] for m in listed}


def ask(server: Server, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3, **extra}
    return httpx.post(f"{server.v1}/chat/completions", json=body, headers=HEADERS, timeout=120)


def loads_of(server: Server, model: str) -> int:
    return server.log.read_text().count(f"model {model} loaded in")


def test_models_load_on_first_request_and_the_least_recently_used_goes(server: Server) -> None:
    assert loaded(server) == {"m-a": True, "m-b": False, "m-c": False, "m-big": False}  # the first, at start
    language = httpx.get(f"{server.v1}/language-models", headers=HEADERS).json()["models"]
    assert {m["id"]: m["loaded"] for m in language} == loaded(server)
    assert ask(server, "m-b").status_code == 200
    assert loaded(server) == {"m-a": True, "m-b": True, "m-c": False, "m-big": False}
    assert ask(server, "m-a").status_code == 200  # m-b is now the least recently used
    assert ask(server, "m-c").status_code == 200
    assert loaded(server) == {"m-a": True, "m-b": False, "m-c": True, "m-big": False}
    metrics = httpx.get(f"{server.base_url}/metrics", headers=HEADERS).text
    assert 'localxai_model_evictions_total{model="m-b"} 1.0' in metrics
    assert 'localxai_model_loaded{model="m-c"} 1.0' in metrics


def test_a_model_that_can_never_fit_is_refused_at_once(server: Server) -> None:
    started = time.monotonic()
    r = ask(server, "m-big")
    assert r.status_code == 503 and time.monotonic() - started < 10
    assert "needs" in r.json()["error"] and "MiB" in r.json()["error"] and "--memory-budget" in r.json()["error"]
    assert loaded(server)["m-big"] is False


def test_keep_alive_unloads_an_idle_model(server: Server) -> None:
    assert ask(server, "m-b").status_code == 200
    assert loaded(server)["m-b"] is True
    deadline = time.monotonic() + 20
    while loaded(server)["m-b"]:  # keep_alive = 2 s, checked every second
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert "unloading model m-b: idle" in server.log.read_text()


def test_concurrent_first_requests_load_a_model_once(server: Server) -> None:
    assert ask(server, "m-a").status_code == 200
    assert ask(server, "m-b").status_code == 200  # m-c is evicted: least recently used of the three
    assert loaded(server)["m-c"] is False
    before = loads_of(server, "m-c")
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(ask(server, "m-c").status_code)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 4
    assert loads_of(server, "m-c") == before + 1


def test_an_unload_never_cuts_a_running_stream(server: Server) -> None:
    assert ask(server, "m-a").status_code == 200
    body = {"model": "m-a", "messages": [{"role": "user", "content": "Count from 1 to 100."}], "max_tokens": 200,
            "temperature": 0, "stream": True}  # fmt: skip
    finish: list[str] = []
    with httpx.stream("POST", f"{server.v1}/chat/completions", json=body, headers=HEADERS, timeout=120) as stream:
        lines = stream.iter_lines()
        next(line for line in lines if line.startswith("data: {"))  # m-a is streaming
        # Two other models while m-a streams: each evicts the idle one, never m-a.
        assert ask(server, "m-b").status_code == 200
        assert ask(server, "m-c").status_code == 200
        assert loaded(server)["m-a"] is True
        finish = [line for line in lines if '"finish_reason":"' in line]
    assert finish and ('"finish_reason":"length"' in finish[-1] or '"finish_reason":"stop"' in finish[-1])


def test_a_restart_keeps_nothing_stale(files: tuple[Path, list[str]], tmp_path: Path) -> None:
    config, _ = files
    args = ("--config", str(config), *TUNING, "--memory-budget", str(budget_for_two(config)))
    first = start_server(tmp_path, *args)
    try:
        assert ask(first, "m-c").status_code == 200
    finally:
        stop_server(first)
    again = start_server(tmp_path, *args)
    try:
        assert loaded(again) == {"m-a": True, "m-b": False, "m-c": False, "m-big": False}
        assert ask(again, "m-c").status_code == 200
    finally:
        stop_server(again)


def test_a_budget_that_cannot_hold_the_first_model_stops_the_start(
    files: tuple[Path, list[str]], tmp_path: Path
) -> None:
    config, _ = files
    with pytest.raises(RuntimeError, match="memory-budget"):
        start_server(tmp_path, "--config", str(config), *TUNING, "--memory-budget", "1", timeout=60)


class Member:
    """Stands for an OnDemandEngine in the pool's arithmetic (the pool reads these attributes only)."""

    def __init__(self, pool: ModelPool, model_id: str, size: int, loaded: bool, idle: bool = True) -> None:
        self.model_id, self.footprint, self.loaded, self.idle = model_id, size, loaded, idle
        self.last_used, self.evictions, self.loading = time.monotonic(), 0, False
        self.host_cache_bytes, self.host_cache_limit = 0, -1
        pool.members.append(self)  # type: ignore[arg-type]

    async def unload(self) -> None:
        self.loaded = False

    def limit_host_cache(self, budget_bytes: int) -> None:
        self.host_cache_limit = budget_bytes
        self.host_cache_bytes = min(self.host_cache_bytes, budget_bytes)


async def test_the_pool_waits_for_busy_models_then_503_with_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ondemand, "LOAD_WAIT_S", 0.2)
    pool = ModelPool(1000)
    busy = Member(pool, "a", 600, loaded=True, idle=False)
    wanted = Member(pool, "b", 600, loaded=False)
    wanted.loading = True  # as make_room sees the model it runs for
    with pytest.raises(Unavailable) as refused:
        await pool.make_room(wanted)  # type: ignore[arg-type]
    assert refused.value.retry_after == ondemand.RETRY_AFTER_S
    assert error_response(refused.value).status_code == 503
    assert error_response(refused.value).headers["Retry-After"] == "5"
    busy.idle = True  # its request ended: it is the one to go
    await pool.make_room(wanted)  # type: ignore[arg-type]
    assert not busy.loaded and busy.evictions == 1


async def test_host_prompt_caches_give_way_before_any_idle_model_is_unloaded() -> None:
    """The host caches share what weights and KV caches leave of the budget: a load shrinks them first,
    and evicts an idle model only when weights and KV caches alone do not fit."""
    pool = ModelPool(1000)
    first = Member(pool, "a", 300, loaded=True)
    first.host_cache_bytes = 650  # all that was left to it while it was alone
    wanted = Member(pool, "b", 300, loaded=False)
    wanted.loading = True
    await pool.make_room(wanted)  # type: ignore[arg-type]
    assert first.loaded and first.evictions == 0  # 300 + 300 reserved: both fit, caches share 400
    assert first.host_cache_limit == 200 and first.host_cache_bytes == 200
    assert pool.used <= pool.budget  # type: ignore[operator]
    third = Member(pool, "c", 500, loaded=False)
    first.last_used = 0.0
    wanted.loading, wanted.loaded = False, True
    third.loading = True
    await pool.make_room(third)  # type: ignore[arg-type]
    assert not first.loaded and wanted.loaded  # 1,100 reserved: the least recently used idle one goes


async def test_a_failed_load_gives_the_host_caches_back_what_it_took(
    files: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caches shrunk to make room for a model that then fails to load share the whole rest again."""
    from localxai.errors import ConfigError

    config, _ = files
    spec = EmbeddedModel("broken", tuning=EngineTuning(ctx_size=512, parallel=2))
    pool = ModelPool(None)
    broken = ondemand.OnDemandEngine(spec, config.parent / "m-a.gguf", pool)
    pool.budget = broken.footprint + 1000
    first = Member(pool, "a", 300, loaded=True)
    first.host_cache_bytes = 700

    def fails(*args: object) -> None:
        assert first.host_cache_limit == (1000 - 300) // 2  # what weights and KV leave, shared with it
        raise ConfigError("not a model")

    monkeypatch.setattr(ondemand, "LlamaCppEngine", fails)
    with pytest.raises(ConfigError):
        await broken.load()
    assert not broken.loaded and first.host_cache_limit == broken.footprint + 1000 - 300  # all that is left


def test_parallel_sequences_are_chosen_from_the_budget() -> None:
    from localxai.engines.llamacpp.model import kv_bytes_per_token
    from localxai.engines.llamacpp.ondemand import sized
    from localxai.gguf_meta import read_metadata

    path = default_model_path(Path.home() / ".cache" / "localxai" / "models")
    spec = EmbeddedModel("m", tuning=EngineTuning(ctx_size=8192))
    one = 8192 * kv_bytes_per_token(read_metadata(path))  # one sequence's KV at full context
    assert sized(spec, path, 4 * 16 * one).tuning.parallel == 16  # a quarter of the budget for KV caches
    assert sized(spec, path, 4 * 5 * one).tuning.parallel == 4
    assert sized(spec, path, 4 * 2 * one).tuning.parallel == 2
    given = EmbeddedModel("m", tuning=EngineTuning(ctx_size=8192, parallel=3))
    assert sized(given, path, 4 * one).tuning.parallel == 3  # --parallel is kept
    assert footprint(sized(spec, path, 4 * 5 * one), path) == path.stat().st_size + 4 * one


def test_router_routes_load_and_unload_with_an_operator_key(files: tuple[Path, list[str]], tmp_path: Path) -> None:
    """llama-server's router routes: GET /models, POST /models/load and /models/unload. A key made with
    `localxai keys create` may list, not manage; an unload waits for a running stream (never cuts it)."""
    import subprocess
    import sys

    config, _ = files
    db = f"sqlite:///{tmp_path / 'state.db'}"
    made = subprocess.run([sys.executable, "-m", "localxai", "keys", "create", "--name", "user", "--database-url", db],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    user_key = next(w for w in made.stdout.split() if w.startswith("xai-"))
    operator = {"Authorization": "Bearer xai-operator-key-0000000"}
    server = start_server(tmp_path, "--config", str(config), *TUNING, "--api-key", "xai-operator-key-0000000",
                          "--database-url", db)  # fmt: skip
    try:
        listed = httpx.get(f"{server.base_url}/models", headers=operator).json()["data"]
        assert {m["id"]: m["status"]["value"] for m in listed}["m-b"] == "unloaded"
        user = {"Authorization": f"Bearer {user_key}"}
        assert httpx.get(f"{server.base_url}/models", headers=user).status_code == 200
        refused = httpx.post(f"{server.base_url}/models/load", json={"model": "m-b"}, headers=user)
        assert refused.status_code == 403 and "--api-key" in refused.json()["error"]
        loaded_now = httpx.post(f"{server.base_url}/models/load", json={"model": "m-b"}, headers=operator, timeout=60)
        assert loaded_now.status_code == 200 and loaded_now.json()["status"]["value"] == "loaded"
        missing = httpx.post(f"{server.base_url}/models/load", json={"model": "nope"}, headers=operator)
        assert missing.status_code == 404
        body = {"model": "m-b", "messages": [{"role": "user", "content": "Count from 1 to 100."}], "max_tokens": 60,
                "temperature": 0, "stream": True}  # fmt: skip
        done: list[httpx.Response] = []
        with httpx.stream("POST", f"{server.v1}/chat/completions", json=body, headers=operator, timeout=60) as stream:
            lines = stream.iter_lines()
            next(line for line in lines if line.startswith("data: {"))
            unloading = threading.Thread(target=lambda: done.append(httpx.post(
                f"{server.base_url}/models/unload", json={"model": "m-b"}, headers=operator, timeout=60)))  # fmt: skip
            unloading.start()
            rest = list(lines)
        unloading.join()
        assert any('"finish_reason":"length"' in line or '"finish_reason":"stop"' in line for line in rest)
        assert done[0].status_code == 200 and done[0].json()["status"]["value"] == "unloaded"
    finally:
        stop_server(server)


async def test_a_slow_load_goes_on_inside_the_stream_and_every_hold_is_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past QUICK_LOAD_S the stream is handed back before the model is loaded (its adapter pings meanwhile)
    and loads as it is read; a stream dropped unread lets go of the model too, so it can be unloaded."""
    import gc

    from localxai.chat import ChatRequest, Message, Role, TextPart
    from localxai.engines.base import GenerationRequest
    from localxai.engines.llamacpp.ondemand import OnDemandEngine

    monkeypatch.setattr(ondemand, "QUICK_LOAD_S", 0.0)
    path = default_model_path(Path.home() / ".cache" / "localxai" / "models")
    model = OnDemandEngine(EmbeddedModel("m", tuning=EngineTuning(ctx_size=256, parallel=1)), path, ModelPool())
    chat = ChatRequest(model="m", messages=(Message(Role.USER, (TextPart("Hi"),)),), stream=True)
    try:
        stream = await model.generate(GenerationRequest(chat, model="m"))
        assert not model.loaded and not model.idle  # handed back at once, held
        events = [event async for event in stream]
        assert events and model.loaded and model.idle
        dropped = await model.generate(GenerationRequest(chat, model="m"))
        assert not model.idle
        del dropped
        gc.collect()
        assert model.idle
        await model.unload(wait_s=1.0)
        assert not model.loaded
    finally:
        await model.close()
