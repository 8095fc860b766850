"""Settings: built once from flags > environment (`LOCALXAI_*`) > defaults, then frozen.

This is the only module that reads `os.environ`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from localxai.config import check_gguf, load_config, reasoning_spec
from localxai.engines.llamacpp.default_model import DEFAULT_MODEL_ID
from localxai.errors import ConfigError
from localxai.hub import HubRef, is_hub_ref
from localxai.specs import EmbeddedModel, EngineTuning, FakeModel, ManagedVllmModel, ModelsConfig

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 50051  # 0: no gRPC listener
    engine: str = "llamacpp"  # "vllm": a managed vLLM child; "fake": the scripted engine (tests, benchmarks)
    tensor_parallel_size: int = 1  # with --engine vllm
    vllm_args: tuple[str, ...] = ()  # extra `vllm serve` arguments
    config: Path | None = None  # a models file (TOML): several models, embedded or upstream
    model: Path | None = None  # None: the embedded default model; hf:ORG/REPO[:QUANT] is pulled from the Hub
    model_id: str | None = None  # None: derived from the file name
    mmproj: Path | None = None  # the model's vision projector (GGUF): the model then takes images
    aliases: tuple[tuple[str, str], ...] = ()  # (alias, model id)
    api_keys: tuple[str, ...] = ()
    data_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "localxai")
    ctx_size: int = 8192  # tokens per sequence: prompt + completion of one choice
    parallel: int | None = None  # sequences decoded together (None: from memory and model, see model.py)
    max_queue: int = 64  # requests waiting for a sequence; past it: 429
    threads: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    top_k: int = 40  # server-side sampling cut (xAI's API has no top_k field)
    speculation: str = "ngram"  # "ngram": prompt-lookup speculative decoding; "off"
    cache_ram_mib: int = 8192  # host memory for evicted prompt KV (0: none)
    keep_alive_s: float = 0.0  # an embedded model idle this long is unloaded (0: never)
    memory_budget_mib: int | None = None  # the loaded embedded models together (None: 3/4 of memory; 0: none)
    reasoning: bool = False  # the model thinks between reasoning_tags; split into reasoning_content
    reasoning_tags: tuple[str, str] = ("<think>", "</think>")
    reasoning_open: bool = False  # the chat template opens the thinking block itself
    reasoning_efforts: tuple[str, ...] = ()  # accepted reasoning_effort values
    max_n: int = 16
    max_messages: int = 2048
    max_images: int = 64
    request_timeout_s: float = 600.0  # 0: no limit
    max_body_mb: float = 64.0
    body_timeout_s: float = 30.0  # the whole request body must arrive this long after its request starts
    allow_private_image_urls: bool = False  # let image URLs reach loopback/private addresses
    shutdown_grace_s: float = 30.0  # on SIGTERM, how long in-flight requests may run on
    log_level: str = "info"
    database_url: str | None = None  # None: SQLite in data_dir; postgresql://... to share state
    deferred_lease_s: float = 30.0  # how long a claimed deferred request is held before others retry it
    offline: bool = False  # hf: models come from the local Hugging Face cache only (--offline, HF_HUB_OFFLINE=1)
    server_tools: str = "refuse"  # server-side tools this server cannot run: "refuse" (400) or "drop" (ignored)
    code_execution: str = "auto"  # "auto": served where the bubblewrap sandbox works; "off"
    web_search_url: str | None = None  # a SearXNG instance (its JSON API) for web_search; None: not served
    mcp: str = "on"  # remote MCP servers named by requests: "on" or "off"
    tool_allow_private: bool = False  # let MCP servers and fetched pages be on loopback/private addresses
    agent_max_turns: int = 10  # model turns of one response's agent loop at most
    embedding_models: tuple[str, ...] = ()  # GGUF embedding models beside the default (--embedding-model)
    file_quota_mb: float = 2048.0  # what one key may keep in the Files API (MiB; 0: no limit)
    models: ModelsConfig = field(default_factory=ModelsConfig)  # what to serve: from --config or the flags

    def check(self) -> Settings:
        """Every value in range, with a message naming the flag (and its variable)."""
        for flag, value, low, high in (
            ("--port", self.port, 1, 65535),
            ("--grpc-port", self.grpc_port, 0, 65535),
            ("--ctx-size", self.ctx_size, 16, None),
            ("--max-queue", self.max_queue, 1, None),
            ("--threads", self.threads, 1, None),
            ("--top-k", self.top_k, 0, None),
            ("--cache-ram", self.cache_ram_mib, 0, None),
            ("--keep-alive", self.keep_alive_s, 0, None),
            ("--max-n", self.max_n, 1, None),
            ("--max-messages", self.max_messages, 1, None),
            ("--max-images", self.max_images, 0, None),
            ("--tensor-parallel-size", self.tensor_parallel_size, 1, None),
            ("--request-timeout-s", self.request_timeout_s, 0, None),
            ("--shutdown-grace-s", self.shutdown_grace_s, 0, None),
        ):
            _check_range(flag, value, low, high)
        if self.parallel is not None:
            _check_range("--parallel", self.parallel, 1, None)
        if self.memory_budget_mib is not None:
            _check_range("--memory-budget", self.memory_budget_mib, 0, None)
        if self.grpc_port == self.port:
            # Both listeners set SO_REUSEADDR and bind before either listens, so Linux lets them share
            # the port: HTTP clients would then reach the gRPC server.
            raise ConfigError(f"--grpc-port must differ from --port (both are {self.port}); 0 turns gRPC off")
        if not (self.deferred_lease_s > 0 and math.isfinite(self.deferred_lease_s)):
            raise ConfigError(f"LOCALXAI_DEFERRED_LEASE_S must be more than 0, got {self.deferred_lease_s}")
        _check_positive("--max-body-mb", self.max_body_mb)
        _check_positive("--body-timeout-s", self.body_timeout_s)
        if self.model_id is not None and not MODEL_ID.fullmatch(self.model_id):
            raise ConfigError(f"--model-id must be 1-128 letters, digits or ._:/- characters, got {self.model_id!r}")
        if self.speculation not in ("ngram", "off"):
            raise ConfigError("--speculation (LOCALXAI_SPECULATION) must be ngram or off")
        if self.server_tools not in ("refuse", "drop"):
            raise ConfigError("--server-tools (LOCALXAI_SERVER_TOOLS) must be refuse or drop")
        if self.code_execution not in ("auto", "off"):
            raise ConfigError("--code-execution (LOCALXAI_CODE_EXECUTION) must be auto or off")
        if self.mcp not in ("on", "off"):
            raise ConfigError("--mcp (LOCALXAI_MCP) must be on or off")
        _check_range("--agent-max-turns", self.agent_max_turns, 1, 100)
        _check_range("--file-quota-mb", self.file_quota_mb, 0, None)
        if self.web_search_url is not None and not self.web_search_url.startswith(("http://", "https://")):
            raise ConfigError(f"--web-search-url must be an http(s) URL, got {self.web_search_url!r}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"--log-level (LOCALXAI_LOG_LEVEL) must be one of {', '.join(LOG_LEVELS)}")
        if self.config is not None and self.model is not None:
            raise ConfigError("--config and --model exclude each other: put the model in the config file")
        if self.engine not in ("llamacpp", "vllm", "fake"):
            raise ConfigError(f"unknown engine {self.engine!r} (expected llamacpp, vllm or fake)")
        if self.engine == "vllm" and self.model is None:
            raise ConfigError("--engine vllm needs --model (a Hugging Face model id or a local model directory)")
        if self.engine == "llamacpp" and self.model is not None and not is_hub_ref(self.model):
            check_gguf(self.model, "--model")
        if self.mmproj is not None and (self.engine != "llamacpp" or self.model is None):
            raise ConfigError("--mmproj goes with --model: the vision projector of that GGUF model")
        if self.mmproj is not None:
            check_gguf(self.mmproj, "--mmproj")
        if self.reasoning and not all(self.reasoning_tags):
            raise ConfigError("--reasoning-tags needs a non-empty start and end")
        return self


MODEL_ID = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _check_range(flag: str, value: float, low: float, high: float | None) -> None:
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{flag} ({_env_name(flag)}) must be {bound}, got {value}")


def _check_positive(flag: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{flag} ({_env_name(flag)}) must be more than 0, got {value}")


def _env_name(flag: str) -> str:
    return "LOCALXAI_" + flag.removeprefix("--").replace("-", "_").upper()


def parse_alias(text: str) -> tuple[str, str]:
    name, sep, target = text.partition("=")
    if not sep or not name.strip() or not target.strip():
        raise ConfigError(f"--alias expects NAME=MODEL, got {text!r}")
    return name.strip(), target.strip()


def build_settings(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None, models: bool = True) -> Settings:
    """Merge command-line flags (None = not given) over `LOCALXAI_*` variables over defaults.

    `models`: also resolve what to serve (pulling hf: models); the commands that serve nothing skip it."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    env_keys = [k.strip() for k in env.get("LOCALXAI_API_KEYS", "").split(",") if k.strip()]
    simple = {
        "host": str,
        "port": int,
        "grpc_port": int,
        "engine": str,
        "model": Path,
        "mmproj": Path,
        "config": Path,
        "model_id": str,
        "data_dir": Path,
        "ctx_size": int,
        "parallel": int,
        "max_queue": int,
        "threads": int,
        "top_k": int,
        "speculation": str,
        "cache_ram_mib": int,
        "keep_alive_s": float,
        "memory_budget_mib": int,
        "max_n": int,
        "tensor_parallel_size": int,
        "max_messages": int,
        "max_images": int,
        "request_timeout_s": float,
        "max_body_mb": float,
        "body_timeout_s": float,
        "shutdown_grace_s": float,
        "log_level": str,
        "database_url": str,
        "deferred_lease_s": float,
        "server_tools": str,
        "code_execution": str,
        "web_search_url": str,
        "mcp": str,
        "agent_max_turns": int,
        "file_quota_mb": float,
    }
    for name, convert in simple.items():
        raw = env.get(f"LOCALXAI_{name.upper()}")
        if raw:
            try:
                values[name] = convert(raw)
            except ValueError as exc:
                raise ConfigError(f"LOCALXAI_{name.upper()}: {exc}") from None
        if flags.get(name) is not None:
            values[name] = convert(flags[name])
    if flags.get("reasoning") or env.get("LOCALXAI_REASONING", "").lower() in ("1", "true", "yes"):
        values["reasoning"] = True
    if flags.get("reasoning_open"):
        values["reasoning_open"] = values["reasoning"] = True
    if flags.get("reasoning_tags"):
        values["reasoning_tags"] = tuple(flags["reasoning_tags"])
        values["reasoning"] = True
    efforts = flags.get("reasoning_efforts") or env.get("LOCALXAI_REASONING_EFFORTS")
    if efforts:
        values["reasoning_efforts"] = tuple(e.strip() for e in efforts.split(",") if e.strip())
    if flags.get("allow_private_image_urls") or env.get("LOCALXAI_ALLOW_PRIVATE_IMAGE_URLS", "").lower() in (
        "1",
        "true",
        "yes",
    ):
        values["allow_private_image_urls"] = True
    if flags.get("tool_allow_private") or _truthy(env.get("LOCALXAI_TOOL_ALLOW_PRIVATE")):
        values["tool_allow_private"] = True
    if flags.get("offline") or any(_truthy(env.get(v)) for v in ("LOCALXAI_OFFLINE", "HF_HUB_OFFLINE")):
        values["offline"] = True
    if flags.get("vllm_arg"):
        values["vllm_args"] = tuple(flags["vllm_arg"])
    keys = list(flags.get("api_key") or []) or env_keys
    values["api_keys"] = tuple(keys)
    aliases = list(flags.get("alias") or [])
    if not aliases and env.get("LOCALXAI_ALIASES"):
        aliases = [a for a in env["LOCALXAI_ALIASES"].split(",") if a.strip()]
    values["aliases"] = tuple(parse_alias(a) for a in aliases)
    embedding = list(flags.get("embedding_model") or [])
    if not embedding and env.get("LOCALXAI_EMBEDDING_MODELS"):
        embedding = [m.strip() for m in env["LOCALXAI_EMBEDDING_MODELS"].split(",") if m.strip()]
    values["embedding_models"] = tuple(embedding)
    settings = Settings(**values).check()
    if not models:
        return settings
    return replace(settings, models=models_config(settings, env))


def client_api_key(environ: Mapping[str, str] | None = None) -> str | None:
    """The key `localxai chat` sends to a server: XAI_API_KEY, as xAI's own clients read it."""
    return (os.environ if environ is None else environ).get("XAI_API_KEY") or None


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


def engine_tuning(settings: Settings) -> EngineTuning:
    """What the flags give every embedded model (a --config entry may override some)."""
    return EngineTuning(
        parallel=settings.parallel,
        ctx_size=settings.ctx_size,
        threads=settings.threads,
        top_k=settings.top_k,
        max_queue=settings.max_queue,
        speculation=settings.speculation == "ngram",
        cache_ram_mib=settings.cache_ram_mib,
        keep_alive_s=settings.keep_alive_s,
    )


def models_config(settings: Settings, environ: Mapping[str, str]) -> ModelsConfig:
    """The models to serve: the --config file, or the one model the flags describe, in the same shape."""
    defaults = engine_tuning(settings)
    if settings.config is not None:
        return load_config(settings.config, environ, defaults)
    if settings.engine == "fake":
        return ModelsConfig(fake=(FakeModel(settings.model_id or "fake-model", settings.ctx_size),))
    if settings.engine == "vllm":
        assert settings.model is not None  # check() requires it
        managed = ManagedVllmModel(
            id=settings.model_id or str(settings.model),
            model=str(settings.model),
            tensor_parallel_size=settings.tensor_parallel_size,
            extra_args=settings.vllm_args,
            context_length=settings.ctx_size,
        )
        return ModelsConfig(managed=(managed,))
    source = str(settings.model) if is_hub_ref(settings.model) else None  # pulled at start (hub.pulled)
    if source is not None:
        derived = HubRef.parse(source).model_id
    else:
        derived = settings.model.name.removesuffix(".gguf") if settings.model else DEFAULT_MODEL_ID
    model_id = settings.model_id or derived
    embedded = EmbeddedModel(
        id=model_id,
        path=None if source is not None else settings.model,
        mmproj=settings.mmproj,
        source=source,
        tuning=defaults,
        reasoning=reasoning_spec(settings.reasoning, settings.reasoning_tags, settings.reasoning_open),
        reasoning_efforts=settings.reasoning_efforts,
    )
    return ModelsConfig(embedded=(embedded,))
