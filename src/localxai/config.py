"""The model config file (`--config models.toml`): which engine serves each model id.

[[models]]
id = "gemma-3-270m"            # embedded llama.cpp (path: a GGUF; omitted: the default model)
engine = "llamacpp"
parallel = 8                   # optional: chosen from the machine's memory and the model's KV size
ctx_size = 8192
keep_alive = 300               # optional: unloaded after 5 idle minutes (default: --keep-alive)

[[models]]
id = "gemma-3-4b"              # an embedded vision model: the GGUF and its projector
path = "~/models/gemma-3-4b-it-Q4_K_M.gguf"
mmproj = "~/models/mmproj-gemma-3-4b-it-f16.gguf"

[[models]]
id = "qwen2.5-3b"              # a GGUF from the Hugging Face Hub, pulled into its cache (docs/models.md)
path = "hf:Qwen/Qwen2.5-3B-Instruct-GGUF:Q4_K_M"

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
background_priority = 10       # optional: `priority` of batch requests (vLLM --scheduling-policy priority)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from localxai.errors import ConfigError
from localxai.specs import EmbeddedModel, EngineTuning, ModelsConfig, ReasoningSpec, UpstreamModel

HF_ID = re.compile(r"(hf:)?[A-Za-z0-9][\w.-]*/[\w.-]+")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_config(path: Path, environ: Mapping[str, str], defaults: EngineTuning | None = None) -> ModelsConfig:
    """`defaults`: the tuning the flags give every embedded model (an entry may set `parallel` and
    `ctx_size`). Reads only: hf: paths are pulled at start (hub.pulled)."""
    defaults = defaults or EngineTuning()
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
            model_path, mmproj, source = _model_files(entry, where)
            embedded.append(
                EmbeddedModel(
                    id=model_id,
                    path=model_path,
                    mmproj=mmproj,
                    source=source,
                    tuning=replace(
                        defaults,
                        parallel=_optional(entry, "parallel", int, where, defaults.parallel)
                        if "parallel" in entry
                        else defaults.parallel,
                        ctx_size=_optional(entry, "ctx_size", int, where, defaults.ctx_size),
                        keep_alive_s=float(_optional(entry, "keep_alive", (int, float), where, 1))
                        if "keep_alive" in entry
                        else defaults.keep_alive_s,
                    ),
                    reasoning=reasoning_spec(
                        bool(entry.get("reasoning", False)),
                        tuple(entry.get("reasoning_tags", ("<think>", "</think>"))),  # type: ignore[arg-type]
                        bool(entry.get("reasoning_open", False)),
                    ),
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
            priority = entry.get("background_priority")
            if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
                raise ConfigError(f"{where}: 'background_priority' must be an integer, got {priority!r}")
            upstream.append(
                UpstreamModel(
                    id=model_id,
                    base_urls=tuple(urls),
                    upstream_model=entry.get("upstream_model", model_id),
                    api_key=environ.get(key_env) if key_env else None,
                    context_length=_optional(entry, "context_length", int, where, 8192),
                    vision=bool(entry.get("vision", False)),
                    reasoning=bool(entry.get("reasoning", False)),
                    reasoning_efforts=tuple(entry.get("reasoning_efforts", ())),
                    timeout_s=float(_optional(entry, "timeout_s", (int, float), where, 600)),
                    background_priority=priority,
                )
            )
        else:
            raise ConfigError(f"{where}: engine must be 'llamacpp' or 'upstream', got {engine!r}")
    if not embedded and not upstream:
        raise ConfigError(f"{path}: no [[models]]")
    return ModelsConfig(tuple(embedded), tuple(upstream), aliases=tuple(aliases))


def _model_files(entry: dict[str, Any], where: str) -> tuple[Path | None, Path | None, str | None]:
    """The entry's GGUF and projector as local paths, or an hf: reference to pull at start (checked now)."""
    from localxai.hub import HubRef, is_hub_ref

    for key in ("path", "mmproj"):
        if key in entry and not isinstance(entry[key], str):
            raise ConfigError(f"{where}: '{key}' must be a string")
    mmproj = Path(entry["mmproj"]).expanduser() if "mmproj" in entry else None
    if mmproj is not None:
        check_gguf(mmproj, f"{where}: mmproj")
    if "path" not in entry:
        return None, mmproj, None
    if is_hub_ref(entry["path"]):
        HubRef.parse(entry["path"])  # a malformed reference is refused with the file's other errors
        return None, mmproj, entry["path"]
    model_path = Path(entry["path"]).expanduser()
    check_gguf(model_path, f"{where}: path")
    return model_path, mmproj, None


def check_gguf(path: Path, flag: str) -> None:
    """A readable GGUF file, or a message that says what is wrong and what to do."""
    if path.is_file():
        return
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; pass the path of a .gguf file inside it")
    if HF_ID.fullmatch(str(path)) and not path.parent.exists():
        raise ConfigError(
            f"{flag} {path} is not a file; it looks like a Hugging Face model id. For a GGUF repo write "
            f"hf:{str(path).removeprefix('hf:')} (optionally :QUANT, e.g. :Q4_K_M) and localxai downloads it; "
            f"or serve the Hugging Face model with vLLM (--engine vllm)"
        )
    raise ConfigError(f"{flag}: {'projector ' if flag == '--mmproj' else 'model '}file not found: {path}")


def reasoning_spec(reasoning: bool, tags: tuple[str, str], opens: bool) -> ReasoningSpec | None:
    if not reasoning:
        return None
    if len(tags) != 2 or not all(tags):
        raise ConfigError("reasoning tags need a non-empty start and end")
    return ReasoningSpec(start=tags[0], end=tags[1], starts_thinking=opens)


def _require(entry: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: '{key}' ({kind.__name__}) is required")
    return value


def _optional(entry: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any) -> Any:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, kind) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}: '{key}' must be a positive number, got {value!r}")
    return value
