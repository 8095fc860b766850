"""Embedded models on demand: a model is loaded when a request asks for it (the first one named at start
is loaded at start), unloaded after it has been idle for its keep-alive, and every loaded model fits one memory
budget together: weights (the GGUF and its projector), the KV cache at the model's shape, and the host
prompt caches. A model's parallel sequences, when not given, are chosen from the budget (not from the whole
machine), and the host caches share what weights and KV caches leave free: they give way first when a
model is loaded, before any idle model is unloaded.

Loading a model that does not fit unloads the least recently used idle ones first; one that can never
fit is refused at once, saying what it needs. While busy models hold the memory a load waits, at most
LOAD_WAIT_S, then answers 503 with Retry-After. Nothing in flight is cut: a model is unloaded only while
no request holds it, and a request holds it from its check to its last event. Concurrent first requests
for one model load it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

from localxai import gguf_meta
from localxai.chat import Event, ModelInfo, Token
from localxai.engines.base import Engine, GenerationRequest
from localxai.engines.llamacpp.engine import LlamaCppEngine, model_info
from localxai.engines.llamacpp.model import auto_parallel, kv_bytes_per_token, physical_memory
from localxai.errors import ConfigError, ModelNotFound, Unavailable
from localxai.specs import EmbeddedModel
from localxai.tasks import Background, every

log = logging.getLogger(__name__)

LOAD_WAIT_S = 30.0  # how long a request waits for busy models to free the memory its model needs
REAP_EVERY_S = 1.0
RETRY_AFTER_S = 5.0  # what a request refused for memory held by busy models is told
QUICK_LOAD_S = 1.0  # a load longer than this goes on inside the stream (keep-alive comments meanwhile)
MIB = 1 << 20


class ModelPool:
    """The embedded models of one process and the memory budget they share (None: no budget)."""

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget = budget_bytes
        self.members: list[OnDemandEngine] = []
        self._changed: asyncio.Condition | None = None  # made on the event loop, at first use
        self._reaper = Background("model-reaper")
        self._reaping = False
        self._wakers: set[asyncio.Task[None]] = set()

    @property
    def reserved(self) -> int:
        """What the loaded models' weights and KV caches take, and those of the models being loaded."""
        return sum(m.footprint for m in self.members if m.loaded or m.loading)

    @property
    def used(self) -> int:
        """Reserved memory and what the host prompt caches hold now."""
        return self.reserved + sum(m.host_cache_bytes for m in self.members)

    @property
    def sizing_memory(self) -> int:
        """The memory a model's automatic parallel sequences are chosen from: the budget, else the machine's."""
        return self.budget if self.budget is not None else physical_memory()

    def share_host_memory(self) -> None:
        """Split what weights and KV caches leave of the budget evenly between the models' host prompt caches
        (each at most its --cache-ram); a cache over its share drops its least recently used entries now."""
        if self.budget is None:
            return
        present = [m for m in self.members if m.loaded or m.loading]
        share = max(0, self.budget - self.reserved) // max(1, len(present))
        for model in present:
            model.limit_host_cache(share)

    @property
    def changed(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def make_room(self, model: OnDemandEngine) -> None:
        """Unload least recently used idle models until `model` fits; raises Unavailable when it never
        can, or when busy models still hold the memory after LOAD_WAIT_S."""
        if self.budget is None:
            return
        if model.footprint > self.budget:
            raise Unavailable(
                f"Model {model.model_id} needs {model.footprint // MIB} MiB of memory (weights and KV cache at "
                f"its context and parallel sequences); this server's memory budget is {self.budget // MIB} MiB "
                "(--memory-budget). Give it a smaller --ctx-size or --parallel, or a larger budget."
            )
        deadline = time.monotonic() + LOAD_WAIT_S
        while self.reserved > self.budget:  # `reserved` counts `model` too: it is loading
            idle = [m for m in self.members if m is not model and m.loaded and m.idle]
            if idle:
                victim = min(idle, key=lambda m: m.last_used)
                log.info(
                    "unloading model %s (least recently used) to make room for %s", victim.model_id, model.model_id
                )
                victim.evictions += 1
                await victim.unload()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                held = self.reserved - model.footprint
                raise Unavailable(
                    f"Model {model.model_id} needs {model.footprint // MIB} MiB of memory and the models in use hold "
                    f"{held // MIB} of the {self.budget // MIB} MiB budget; retry shortly.",
                    retry_after=RETRY_AFTER_S,
                )
            await self.wait(left)
        self.share_host_memory()  # the host caches make room for it (`model` counts: it is loading)

    async def wait(self, seconds: float) -> None:
        """Until a model lets go, is unloaded, or `seconds` pass."""
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self.changed.wait()

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def wake(self) -> None:
        """Wake what waits for memory or for a model to become idle (from a callback as well)."""
        if self._changed is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a stream collected off the loop: the waiters look again at their timeout
            return
        task = loop.create_task(self.notify())
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)

    def start(self) -> None:
        if not self._reaping:
            self._reaping = True
            self._reaper.start(every(REAP_EVERY_S, self._reap, "unloading idle models"))

    async def stop(self) -> None:
        await self._reaper.close()
        self._reaping = False

    async def _reap(self) -> None:
        """Unload the models idle for longer than their keep-alive (a failure is logged, the next round goes on)."""
        now = time.monotonic()
        for model in self.members:
            if model.loaded and model.idle and model.keep_alive_s and now - model.last_used > model.keep_alive_s:
                log.info("unloading model %s: idle for %.0f s (keep-alive)", model.model_id, now - model.last_used)
                await model.unload()


class OnDemandEngine(Engine):
    """One embedded model, loaded while it is wanted. `keep_alive_s` 0: never unloaded for idleness."""

    def __init__(
        self, spec: EmbeddedModel, path: Path, pool: ModelPool, keep_alive_s: float = 0.0, preload: bool = False
    ) -> None:
        """`preload`: load it now (a model named at start: a bad file is a start-up error, as before)."""
        self.model_id = spec.id
        self.path = path
        self._pool = pool
        self.keep_alive_s = keep_alive_s
        self._info = model_info(spec, path)
        self._spec = sized(spec, path, pool.sizing_memory)
        self.footprint = footprint(self._spec, path)
        self._engine: LlamaCppEngine | None = None
        self._holders = 0
        self._loading: asyncio.Task[LlamaCppEngine] | None = None
        self.retired = False  # its files are being removed: it is not loaded again
        self.loads, self.load_seconds, self.evictions = 0, 0.0, 0
        self.last_used = time.monotonic()
        pool.members.append(self)
        if preload:
            if pool.budget is not None and pool.reserved + self.footprint > pool.budget:
                raise ConfigError(
                    f"model {spec.id} needs {self.footprint // MIB} MiB (weights and KV cache); with the models "
                    f"before it that exceeds --memory-budget {pool.budget // MIB} MiB"
                )
            started = time.monotonic()
            self._engine = LlamaCppEngine(self._spec, path)
            self.loads, self.load_seconds = 1, time.monotonic() - started
            pool.share_host_memory()

    async def open(self) -> None:
        self._pool.start()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def loading(self) -> bool:
        return self._loading is not None

    @property
    def idle(self) -> bool:
        return self._holders == 0

    @property
    def host_cache_bytes(self) -> int:
        return self._engine.host_cache_bytes if self._engine is not None else 0

    def limit_host_cache(self, budget_bytes: int) -> None:
        if self._engine is not None:
            self._engine.limit_host_cache(budget_bytes)

    def models(self) -> list[ModelInfo]:
        return [self._info]

    def is_loaded(self, model: str) -> bool | None:
        return self.loaded

    async def load(self, model: str = "") -> LlamaCppEngine:  # type: ignore[override]
        """The loaded engine, loading it now if it is not: one load, whoever asks meanwhile; a caller that
        goes away does not stop it (the model is loaded for the next one, not leaked half-made)."""
        if self._engine is not None:
            return self._engine
        if self.retired:
            raise ModelNotFound(self.model_id)
        if self._loading is None:
            self._loading = asyncio.create_task(self._load(), name=f"load-{self.model_id}")
        return await asyncio.shield(self._loading)

    async def _load(self) -> LlamaCppEngine:
        try:
            await self._pool.make_room(self)
            started = time.monotonic()
            engine = await asyncio.to_thread(LlamaCppEngine, self._spec, self.path)
            self._engine = engine
            self._pool.share_host_memory()
            self.loads += 1
            self.load_seconds += time.monotonic() - started
            self.last_used = time.monotonic()
            log.info("model %s loaded in %.1f s", self.model_id, time.monotonic() - started)
            return engine
        finally:
            self._loading = None
            if self._engine is None:  # it failed: the caches shrunk to make room for it may grow back
                self._pool.share_host_memory()

    async def unload(self, model: str = "", wait_s: float = 0.0) -> None:
        """Free the model once no request holds it, waiting at most `wait_s` for that (past it: 503); with
        no wait, only if none holds it now. A request that arrives afterwards loads it again."""
        deadline = time.monotonic() + wait_s
        while self._holders and wait_s:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(f"Model {self.model_id} is in use; retry the unload shortly.", RETRY_AFTER_S)
            await self._pool.wait(left)
        engine = self._engine
        if engine is None or self._holders:
            return
        self._engine = None
        await engine.close()
        _trim()
        self._pool.share_host_memory()  # the models left may keep more evicted prompts
        await self._pool.notify()

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[LlamaCppEngine]:
        lease = self._hold()
        try:
            yield await self.load()
        finally:
            lease.release()

    def _hold(self) -> _Hold:
        self._holders += 1
        return _Hold(self)

    def _let_go(self) -> None:
        self._holders -= 1
        self.last_used = time.monotonic()
        self._pool.wake()  # a load waiting for memory, an unload waiting for idleness

    async def tokenize(self, model: str, text: str) -> list[Token]:
        async with self._held() as engine:
            return await engine.tokenize(model, text)

    async def check(self, request: GenerationRequest) -> None:
        async with self._held() as engine:
            await engine.check(request)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        """Start generating. A load that takes longer than QUICK_LOAD_S goes on inside the stream (its
        adapter sends keep-alive comments meanwhile), so what the loaded engine refuses then comes as the
        stream's error; a model already loaded, or quick to load, refuses before any output."""
        lease = self._hold()
        loading = asyncio.ensure_future(self.load())  # load() shields the load itself from cancellation
        try:
            done, _ = await asyncio.wait({loading}, timeout=QUICK_LOAD_S)
            if done:
                events = await loading.result().generate(request)
            else:
                events = self._after(loading, request)
        except BaseException:
            loading.cancel()
            lease.release()
            raise
        stream = _holding(lease, events)
        # A stream dropped before its first step never runs its `finally`: let go of the model then too.
        weakref.finalize(stream, lease.release)
        return stream

    @staticmethod
    async def _after(
        loading: asyncio.Future[LlamaCppEngine], request: GenerationRequest
    ) -> AsyncGenerator[Event, None]:
        events = await (await loading).generate(request)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()

    def stats(self) -> dict[str, dict[str, float]]:
        engine = self._engine
        counts = {"loads": float(self.loads), "load_seconds": self.load_seconds, "evictions": float(self.evictions)}
        if engine is None:
            return {self.model_id: {"loaded": 0.0, "memory_bytes": 0.0, **counts}}
        loaded = {"loaded": 1.0, "memory_bytes": float(self.footprint + engine.host_cache_bytes), **counts}
        return {self.model_id: {**engine.stats()[self.model_id], **loaded}}

    async def close(self) -> None:
        await self._pool.stop()
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.close()

    def halt(self) -> None:
        if self._engine is not None:
            self._engine.halt()


class _Hold:
    """One request's hold on a model: released once, however its stream ends (or is dropped unread)."""

    def __init__(self, model: OnDemandEngine) -> None:
        self._model = model
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._model._let_go()


async def _holding(lease: _Hold, events: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
    try:
        async for event in events:
            yield event
    finally:
        await events.aclose()
        lease.release()


def _trim() -> None:
    """Hand the heap's free pages back to the system (glibc keeps what a freed model's buffers held)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def sized(spec: EmbeddedModel, path: Path, memory: int) -> EmbeddedModel:
    """`spec` with its parallel sequences chosen from `memory` when it names none, so that the footprint
    counted and the engine loaded agree."""
    if spec.tuning.parallel is not None:
        return spec
    parallel = auto_parallel(spec.tuning.ctx_size, _kv_per_token(spec, path), memory)
    return dataclasses.replace(spec, tuning=dataclasses.replace(spec.tuning, parallel=parallel))


def footprint(spec: EmbeddedModel, path: Path) -> int:
    """The memory a `sized` model takes loaded, host prompt cache apart: its files (weights are mapped
    whole) and its KV cache."""
    tuning = spec.tuning
    assert tuning.parallel is not None, "size the spec first (sized): the pool and the engine must agree"
    projector = spec.mmproj.stat().st_size if spec.mmproj is not None else 0
    return path.stat().st_size + projector + tuning.parallel * tuning.ctx_size * _kv_per_token(spec, path)


def _kv_per_token(spec: EmbeddedModel, path: Path) -> int:
    try:
        return kv_bytes_per_token(gguf_meta.read_metadata(path))
    except (OSError, gguf_meta.NotGGUF) as exc:
        raise ConfigError(f"model {spec.id}: cannot read {path}: {exc}") from None
