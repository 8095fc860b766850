"""The model config file (`--config models.toml`): which engine serves each model id.

[[models]]
id = "gemma-3-270m"            # embedded llama.cpp (path: a GGUF; omitted: the default model)
engine = "llamacpp"
parallel = 4
ctx_size = 8192

[[models]]
id = "gemma-3-4b"              # an embedded vision model: the GGUF and its projector
path = "~/models/gemma-3-4b-it-Q4_K_M.gguf"
mmproj = "~/models/mmproj-gemma-3-4b-it-f16.gguf"

[[models]]
id = "qwen3-32b"               # an existing deployment (vLLM, SGLang, llama-server, localxai)
engine = "upstream"
base_urls = ["http://10.0.0.5:8000/v1", "http://10.0.0.6:8000/v1"]
upstream_model = "Qwen/Qwen3-32B"
api_key_env = "QWEN_KEY"       # read from the environment, never written in the file
reasoning = true
reasoning_efforts = ["low", "high"]
vision = false
aliases = ["grok-4"]
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localxai.engines.upstream import UpstreamModel
from localxai.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class EmbeddedModel:
    id: str
    path: Path | None = None  # None: the embedded default model
    mmproj: Path | None = None  # vision projector of `path`
    parallel: int | None = None
    ctx_size: int | None = None
    reasoning: bool = False
    reasoning_tags: tuple[str, str] = ("<think>", "</think>")
    reasoning_open: bool = False
    reasoning_efforts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelsConfig:
    embedded: tuple[EmbeddedModel, ...] = ()
    upstream: tuple[UpstreamModel, ...] = ()
    aliases: tuple[tuple[str, str], ...] = field(default=())


def load_config(path: Path, environ: Mapping[str, str]) -> ModelsConfig:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    models = data.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ConfigError(f"{path}: each model is a [[models]] table (two brackets), not [models]")
    embedded, upstream, aliases = [], [], []
    for i, entry in enumerate(models):
        where = f"{path}: models[{i}]"
        model_id = _require(entry, "id", str, where)
        aliases += [(a, model_id) for a in entry.get("aliases", [])]
        engine = entry.get("engine", "llamacpp")
        if engine == "llamacpp":
            if "mmproj" in entry and "path" not in entry:
                raise ConfigError(f"{where}: mmproj needs the path of the model it belongs to")
            embedded.append(
                EmbeddedModel(
                    id=model_id,
                    path=Path(entry["path"]).expanduser() if "path" in entry else None,
                    mmproj=Path(entry["mmproj"]).expanduser() if "mmproj" in entry else None,
                    parallel=entry.get("parallel"),
                    ctx_size=entry.get("ctx_size"),
                    reasoning=bool(entry.get("reasoning", False)),
                    reasoning_tags=tuple(entry.get("reasoning_tags", ("<think>", "</think>"))),  # type: ignore[arg-type]
                    reasoning_open=bool(entry.get("reasoning_open", False)),
                    reasoning_efforts=tuple(entry.get("reasoning_efforts", ())),
                )
            )
        elif engine == "upstream":
            key_env = entry.get("api_key_env")
            if key_env and key_env not in environ:
                raise ConfigError(f"{where}: environment variable {key_env} (api_key_env) is not set")
            urls = _require(entry, "base_urls", list, where)
            if not urls:
                raise ConfigError(f"{where}: base_urls is empty")
            upstream.append(
                UpstreamModel(
                    id=model_id,
                    base_urls=tuple(urls),
                    upstream_model=entry.get("upstream_model", model_id),
                    api_key=environ.get(key_env) if key_env else None,
                    context_length=int(entry.get("context_length", 8192)),
                    vision=bool(entry.get("vision", False)),
                    reasoning=bool(entry.get("reasoning", False)),
                    reasoning_efforts=tuple(entry.get("reasoning_efforts", ())),
                    timeout_s=float(entry.get("timeout_s", 600)),
                )
            )
        else:
            raise ConfigError(f"{where}: engine must be 'llamacpp' or 'upstream', got {engine!r}")
    if not embedded and not upstream:
        raise ConfigError(f"{path}: no [[models]]")
    return ModelsConfig(tuple(embedded), tuple(upstream), tuple(aliases))


def _require(entry: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: '{key}' ({kind.__name__}) is required")
    return value
