"""Engines from a ModelsConfig: the one place that knows which engine serves which kind of model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from localxai.engines.base import Engine
from localxai.specs import EmbeddedModel, ModelsConfig

if TYPE_CHECKING:
    from localxai.engines.llamacpp.ondemand import ModelPool


def build_engines(models: ModelsConfig, data_dir: Path, memory_budget: int | None = None) -> list[Engine]:
    """Every engine, started (models loaded, children healthy); on a failure the ones built are halted.
    Embedded models share one memory budget in bytes (None: none; engines/llamacpp/ondemand.py)."""
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
            from localxai.engines.llamacpp.ondemand import ModelPool

            pool = ModelPool(memory_budget)
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
