"""Engines from a ModelsConfig: the one place that knows which engine serves which kind of model."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from localxai.engines.base import Engine
from localxai.errors import ConfigError
from localxai.specs import EmbeddedModel, EngineTuning, ModelsConfig
from localxai.tasks import Background, every

if TYPE_CHECKING:
    from localxai.engines.llamacpp.ondemand import ModelPool
    from localxai.service import ChatService

log = logging.getLogger(__name__)
RESCAN_S = 10.0


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
    every RESCAN_S while running, so a model pulled meanwhile is servable without a restart."""

    def __init__(self, service: ChatService, pool: ModelPool, tuning: EngineTuning) -> None:
        self._service = service
        self._pool = pool
        self._tuning = tuning
        self._task = Background("model-cache-scan")
        self._ignored: set[Path] = set()  # cached files not served: unreadable, or their id is taken

    async def start(self) -> None:
        self._task.start(every(RESCAN_S, self.scan, "scanning the model cache"))

    async def close(self) -> None:
        await self._task.close()

    async def scan(self) -> list[str]:
        """Serve the cached models not served yet; returns their ids."""
        from localxai.engines.llamacpp.ondemand import OnDemandEngine

        served = {member.path for member in self._pool.members} | self._ignored
        added: list[str] = []
        for spec in await asyncio.to_thread(cached_specs, self._tuning, served):
            assert spec.path is not None
            try:
                # Its header is read here: off the event loop.
                engine = await asyncio.to_thread(OnDemandEngine, spec, spec.path, self._pool, spec.tuning.keep_alive_s)
            except ConfigError as exc:  # not a model llama.cpp could read: say so once, serve the rest
                log.warning("not serving %s from the download cache: %s", spec.path, exc)
                self._ignored.add(spec.path)
                continue
            if self._service.add_engine(engine):
                await engine.open()
                added.append(spec.id)
                log.info("serving %s from the download cache (%s), loaded on its first request", spec.id, spec.path)
            else:
                log.info("not serving %s from the download cache: a model named %s is served", spec.path, spec.id)
                self._pool.members.remove(engine)
                self._ignored.add(spec.path)
        return added


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
