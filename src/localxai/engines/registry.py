"""Engines from a ModelsConfig: the one place that knows which engine serves which kind of model."""

from __future__ import annotations

from pathlib import Path

from localxai.engines.base import Engine
from localxai.specs import EmbeddedModel, ModelsConfig


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

    return LlamaCppEngine(model, model.path if model.path is not None else default_model_path(data_dir / "models"))
