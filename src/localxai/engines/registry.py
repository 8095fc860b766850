"""Engines from a ModelsConfig: the one place that knows which engine serves which kind of model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from localxai.engines.base import Engine
from localxai.errors import ConfigError, InvalidArgument, Unavailable
from localxai.specs import EmbeddedModel, EngineTuning, ModelsConfig
from localxai.tasks import Background, every

if TYPE_CHECKING:
    from localxai.engines.llamacpp.ondemand import ModelPool, OnDemandEngine
    from localxai.hub import Progress
    from localxai.service import ChatService

log = logging.getLogger(__name__)
T = TypeVar("T")
RESCAN_S = 10.0
RETRY_AFTER_S = 5.0  # a removal refused while the model's requests run


def build_engines(models: ModelsConfig, data_dir: Path, pool: ModelPool | None = None) -> list[Engine]:
    """Every engine, started (the first embedded model loaded, children healthy); on a failure the ones
    built are halted. Embedded models share `pool`'s memory budget (engines/llamacpp/ondemand.py)."""
    engines: list[Engine] = []
    try:
        if models.fake:
            from localxai.engines.fake import FakeEngine

            engines += [FakeEngine(model_id=m.id, context_length=m.context_length) for m in models.fake]
        for managed in models.managed:
            from localxai.engines.vllm import ManagedVllmEngine

            engines.append(
                ManagedVllmEngine(
                    managed.model,
                    managed.id,
                    tensor_parallel_size=managed.tensor_parallel_size,
                    extra_args=managed.extra_args,
                    context_length=managed.context_length,
                )
            )
        if models.embedded:
            if pool is None:
                from localxai.engines.llamacpp.ondemand import ModelPool

                pool = ModelPool()
            # The first is loaded now (the server is ready for it at once); the others on their first request.
            engines += [_embedded(m, data_dir, pool, preload=i == 0) for i, m in enumerate(models.embedded)]
        if models.upstream:
            from localxai.engines.upstream import UpstreamEngine

            engines.append(UpstreamEngine(models.upstream))
    except BaseException:
        for engine in engines:
            engine.halt()
        raise
    return engines


def _embedded(model: EmbeddedModel, data_dir: Path, pool: ModelPool, preload: bool) -> Engine:
    from localxai.engines.llamacpp.default_model import default_model_path
    from localxai.engines.llamacpp.ondemand import OnDemandEngine

    path = model.path if model.path is not None else default_model_path(data_dir / "models")
    return OnDemandEngine(model, path, pool, model.tuning.keep_alive_s, preload=preload)


class CachedModels:
    """The download cache's GGUF models, served on demand beside the named ones, each under its repo's
    name without -GGUF (with `:tag` when several quantisations of one repo are cached): found at start and
    every RESCAN_S while running, so a model pulled meanwhile is servable without a restart, and one whose
    files were deleted is no longer listed. `pull` and `remove` do the same at once, for the admin routes."""

    def __init__(self, service: ChatService, pool: ModelPool, tuning: EngineTuning, offline: bool = False) -> None:
        self._service = service
        self._pool = pool
        self._tuning = tuning
        self._offline = offline
        self._task = Background("model-cache-scan")
        self._served: dict[Path, OnDemandEngine] = {}  # the models this serves, by file
        self._ignored: dict[Path, str] = {}  # cached files not served, and why: unreadable, or their id is taken
        self._locks: dict[str, asyncio.Lock] = {}  # one pull or removal of a repo at a time
        self._scanning = asyncio.Lock()  # one scan at a time: two would both add a new file
        self._removing: set[Path] = set()  # files a removal is deleting: not served again meanwhile

    async def start(self) -> None:
        self._task.start(every(RESCAN_S, self.scan, "scanning the model cache"))

    async def close(self) -> None:
        await self._task.close()

    async def scan(self) -> list[str]:
        """Serve the cached models not served yet, and stop serving idle ones whose files are gone; returns
        the ids added."""
        async with self._scanning:
            return await self._scan()

    async def _scan(self) -> list[str]:
        from localxai.engines.llamacpp.ondemand import OnDemandEngine

        for path, member in list(self._served.items()):
            if path not in self._removing and not await asyncio.to_thread(path.is_file):
                await self._drop(member, wait_s=0.0)  # one still in use stays until a later scan finds it idle
        served = {member.path for member in self._pool.members} | set(self._ignored) | self._removing
        added: list[str] = []
        for spec in await asyncio.to_thread(cached_specs, self._tuning, served):
            assert spec.path is not None
            try:
                # Its header is read here: off the event loop.
                engine = await asyncio.to_thread(OnDemandEngine, spec, spec.path, self._pool, spec.tuning.keep_alive_s)
            except ConfigError as exc:  # not a model llama.cpp could read: say so once, serve the rest
                log.warning("not serving %s from the download cache: %s", spec.path, exc)
                self._ignored[spec.path] = f"llama.cpp cannot read it ({exc})"
                continue
            if self._service.add_engine(engine):
                await engine.open()
                self._served[spec.path] = engine
                added.append(spec.id)
                log.info("serving %s from the download cache (%s), loaded on its first request", spec.id, spec.path)
            else:
                log.info("not serving %s from the download cache: a model named %s is served", spec.path, spec.id)
                self._pool.members.remove(engine)
                self._ignored[spec.path] = f"a model named {spec.id} is served already"
        return added

    async def pull(self, text: str, progress: Progress) -> str:
        """Pull `hf:ORG/REPO[:QUANT]` into the cache (events to `progress`, from a worker thread) and serve
        it at once; returns the id it is served under. ConfigError: a bad reference, a failed download, or a
        model pulled but not servable (why is said)."""
        from localxai.hub import HubRef, pull

        ref = HubRef.parse(text)
        async with self._lock(ref.repo):
            # A thread of its own that does not hold up the server's exit: a download cannot be cancelled.
            local = await in_daemon_thread(lambda: pull(ref, self._offline, "all", progress), f"pull {ref}")
            self._ignored.pop(local.path, None)  # a file that was unreadable may have been fetched again
            await self.scan()
        member = next((m for m in self._pool.members if m.path == local.path), None)
        if member is None:
            why = self._ignored.get(local.path, "it is not a model this server can serve")
            raise ConfigError(f"{ref} was pulled to {local.path} but is not served: {why}")
        return member.model_id

    async def remove(self, text: str, wait_s: float) -> list[Path]:
        """Delete a cached model as `localxai rm` does, unloading the models served from its files first
        (each waits at most `wait_s` for its requests to end: past it Unavailable, and nothing is deleted).
        A model the server was started with is refused: its configuration names it."""
        from localxai.hub import HubRef, removal

        ref = HubRef.parse(text)
        async with self._lock(ref.repo):
            paths, deletion = await asyncio.to_thread(removal, ref)
            doomed = set(paths)
            named = [m.model_id for m in self._pool.members if m.path in doomed and m.path not in self._served]
            if named:
                raise InvalidArgument(
                    f"{ref} holds the file of {', '.join(named)}, which this server was started with: stop the "
                    "server (or take the model out of its configuration) before removing it."
                )
            self._removing |= doomed
            try:
                for path in paths:
                    if path in self._served and not await self._drop(self._served[path], wait_s):
                        raise Unavailable(
                            f"Model {self._served[path].model_id} is in use; retry the removal shortly.", RETRY_AFTER_S
                        )
                await asyncio.to_thread(deletion.execute)
            finally:
                self._removing -= doomed
            for path in paths:
                self._ignored.pop(path, None)
        return paths

    async def _drop(self, member: OnDemandEngine, wait_s: float) -> bool:
        """Stop serving `member`: no request finds it any more, and it is unloaded once the ones holding it
        end (waiting at most `wait_s`; with 0, only if none does). False: still in use, served as before."""
        ids = self._service.remove_engine(member)
        member.retired = True
        busy = True
        try:
            await member.unload(wait_s=wait_s)
            busy = member.loaded or member.loading or not member.idle
        finally:
            if busy:
                member.retired = False
                self._service.add_engine(member)
        if busy:
            return False
        self._pool.members.remove(member)
        del self._served[member.path]
        log.info("no longer serving %s: its files left the download cache", ", ".join(ids))
        return True

    def _lock(self, repo: str) -> asyncio.Lock:
        return self._locks.setdefault(repo, asyncio.Lock())


async def in_daemon_thread(work: Callable[[], T], name: str) -> T:
    """`work()` in a daemon thread, awaited: unlike asyncio.to_thread, the process may exit while it runs."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = work(), None
        except BaseException as exc:  # handed to the awaiting task
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future


def cached_specs(tuning: EngineTuning, served: set[Path]) -> list[EmbeddedModel]:
    """The complete cached models whose files no model is served from."""
    from localxai.hub import cached_models

    complete = [m for m in cached_models() if not m.missing]
    names = Counter(m.ref.model_id for m in complete)  # every quantisation counts, served or not
    found = [m for m in complete if m.path not in served]
    return [
        EmbeddedModel(
            id=m.ref.model_id if names[m.ref.model_id] == 1 else f"{m.ref.model_id}:{(m.ref.tag or '').lower()}",
            path=m.path,
            mmproj=m.mmproj,
            tuning=tuning,
        )
        for m in found
    ]
