"""Model specs: what the server serves, one frozen type per engine kind, written once. Settings and the
config file build them (settings.py, config.py); the engines read them (engines/registry.py). Like
chat.py, this module imports nothing of the rest of localxai, so every layer can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ReasoningSpec:
    """How a reasoning model delimits its thinking."""

    start: str = "<think>"
    end: str = "</think>"
    starts_thinking: bool = False  # the template opens the thinking block: output begins inside it


@dataclass(frozen=True)
class EngineTuning:
    """How llama.cpp runs an embedded model: set for every model by the flags, per model by the config."""

    parallel: int | None = None  # None: chosen from memory and the model (engines/llamacpp/model.py)
    ctx_size: int = 8192  # tokens per sequence: prompt + completion of one choice
    threads: int = 1
    top_k: int = 40
    max_queue: int = 64
    speculation: bool = True  # n-gram speculative decoding
    cache_ram_mib: int = 8192  # host memory for evicted prompt KV (0: none)
    keep_alive_s: float = 0.0  # unloaded when idle this long (0: never); loaded again on demand


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model run in-process by llama.cpp."""

    id: str
    path: Path | None = None  # None: the embedded default model, or `source` once pulled
    mmproj: Path | None = None  # vision projector of `path`
    source: str | None = None  # hf:ORG/REPO[:QUANT]: its files are pulled at start (hub.pulled, runtime.py)
    tuning: EngineTuning = field(default_factory=EngineTuning)
    reasoning: ReasoningSpec | None = None
    reasoning_efforts: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpstreamModel:
    """A model of an existing OpenAI-compatible deployment (vLLM, SGLang, llama-server), routed to."""

    id: str  # the id clients use
    base_urls: tuple[str, ...]  # OpenAI-compatible bases, e.g. http://10.0.0.5:8000/v1
    upstream_model: str  # the model name the upstream knows
    api_key: str | None = None
    context_length: int = 8192
    vision: bool = False
    reasoning: bool = False
    reasoning_efforts: tuple[str, ...] = ()
    timeout_s: float = 600.0
    connect_timeout_s: float = 5.0
    # Sent as `priority` with background work (batch requests), for an engine that schedules by it: vLLM
    # with --scheduling-policy priority (lower runs first; interactive requests carry its default 0),
    # SGLang with --enable-priority-scheduling (higher runs first by default). None: not sent.
    background_priority: int | None = None


@dataclass(frozen=True)
class ManagedVllmModel:
    """`vllm serve` started and stopped by localxai, routed like an upstream."""

    id: str
    model: str  # a Hugging Face id or a local model directory
    tensor_parallel_size: int = 1
    extra_args: tuple[str, ...] = ()
    context_length: int = 8192


@dataclass(frozen=True)
class FakeModel:
    """The scripted test engine (tests, benchmarks)."""

    id: str = "fake-model"
    context_length: int = 8192


@dataclass(frozen=True)
class ModelsConfig:
    """Every model the server serves and which engine runs it: from --config, or from the flags."""

    embedded: tuple[EmbeddedModel, ...] = ()
    upstream: tuple[UpstreamModel, ...] = ()
    managed: tuple[ManagedVllmModel, ...] = ()
    fake: tuple[FakeModel, ...] = ()
    aliases: tuple[tuple[str, str], ...] = field(default=())
