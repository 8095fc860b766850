"""Engines from a ModelsConfig: the one place that knows which engine serves which kind of model."""

from __future__ import annotations

from pathlib import Path

from localxai.config import EmbeddedModel, ModelsConfig
from localxai.engines.base import Engine


def build_engines(models: ModelsConfig, data_dir: Path) -> list[Engine]:
    """Every engine, started (models loaded, children healthy); on a failure the ones built are halted."""
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
        engines += [_embedded(m, data_dir) for m in models.embedded]
        if models.upstream:
            from localxai.engines.upstream import UpstreamEngine

            engines.append(UpstreamEngine(models.upstream))
    except BaseException:
        for engine in engines:
            engine.halt()
        raise
    return engines


def _embedded(model: EmbeddedModel, data_dir: Path) -> Engine:
    from localxai.engines.llamacpp.default_model import default_model_path
    from localxai.engines.llamacpp.engine import LlamaCppEngine
    from localxai.engines.llamacpp.model import ContextShape

    path = model.path if model.path is not None else default_model_path(data_dir / "models")
    return LlamaCppEngine(
        path,
        model.id,
        ContextShape(ctx_size=model.ctx_size, threads=model.threads, parallel=model.parallel),
        top_k=model.top_k,
        speculation=model.speculation,
        cache_ram_mib=model.cache_ram_mib,
        max_queue=model.max_queue,
        reasoning=model.reasoning,
        reasoning_efforts=model.reasoning_efforts,
        mmproj=model.mmproj,
    )
