"""Prometheus metrics: one registry per server (no process-global state), rendered at /metrics."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from localxai.chat import Usage
from localxai.engines.base import Engine

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, engines: Sequence[Engine] = ()) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "localxai_requests", "HTTP requests by route, status and model", ["route", "status", "model"], registry=r
        )
        self.grpc_requests = Counter(
            "localxai_grpc_requests",
            "gRPC calls by method, status code and model",
            ["method", "code", "model"],
            registry=r,
        )
        self.ttft = Histogram(
            "localxai_time_to_first_token_seconds",
            "Time to first token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "localxai_inter_token_latency_seconds",
            "Time between streamed tokens",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("localxai_tokens", "Tokens by model and kind", ["model", "kind"], registry=r)
        self.image_failures = Counter(
            "localxai_image_fetch_failures", "Images refused or not fetched", ["model"], registry=r
        )
        self.tool_calls = Counter(
            "localxai_server_tool_calls", "Server-side tool calls by tool and status", ["tool", "status"], registry=r
        )
        self.tool_seconds = Histogram(
            "localxai_server_tool_call_seconds", "Server-side tool call duration", ["tool"], registry=r,
            buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        r.register(_EngineCollector(engines))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- observations from the core (the Observer the ChatService reports to) --------------------

    def first_token(self, model: str, seconds: float) -> None:
        self.ttft.labels(model).observe(seconds)

    def token_gap(self, model: str, seconds: float) -> None:
        self.itl.labels(model).observe(seconds)

    def image_failure(self, model: str) -> None:
        self.image_failures.labels(model).inc()

    def tool_call(self, tool: str, status: str, seconds: float) -> None:
        self.tool_calls.labels(tool, status).inc()
        self.tool_seconds.labels(tool).observe(seconds)

    def usage(self, model: str, usage: Usage) -> None:
        for kind, value in (
            ("prompt", usage.prompt_tokens),
            ("cached", usage.cached_tokens),
            ("image", usage.image_tokens),
            ("completion", usage.completion_tokens),
            ("reasoning", usage.reasoning_tokens),
        ):
            self.tokens.labels(model, kind).inc(value)


class _EngineCollector(Collector):
    """Engine gauges, read when Prometheus scrapes."""

    def __init__(self, engines: Iterable[Engine]) -> None:
        self._engines = list(engines)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "queue_depth": GaugeMetricFamily(
                "localxai_queue_depth", "Requests waiting for a sequence", labels=["model"]
            ),
            "running": GaugeMetricFamily("localxai_running_sequences", "Sequences being generated", labels=["model"]),
            "kv_used": GaugeMetricFamily(
                "localxai_kv_cache_tokens",
                "Tokens held in the KV cache (shared prefixes once per sequence)",
                labels=["model"],
            ),
            "kv_capacity": GaugeMetricFamily("localxai_kv_cache_capacity_tokens", "KV cache cells", labels=["model"]),
            "host_cache_bytes": GaugeMetricFamily(
                "localxai_host_cache_bytes", "Evicted prompt KV kept in host memory", labels=["model"]
            ),
            "host_cache_restores": CounterMetricFamily(
                "localxai_host_cache_restores",
                "Prompts whose prefix was copied back from host memory",
                labels=["model"],
            ),
            "draft_tokens": CounterMetricFamily(
                "localxai_draft_tokens", "Tokens guessed by n-gram speculative decoding", labels=["model"]
            ),
            "draft_tokens_accepted": CounterMetricFamily(
                "localxai_draft_tokens_accepted", "Guessed tokens the model's samples confirmed", labels=["model"]
            ),
            "loaded": GaugeMetricFamily("localxai_model_loaded", "1 while the model is in memory", labels=["model"]),
            "memory_bytes": GaugeMetricFamily(
                "localxai_model_memory_bytes",
                "What the loaded model takes of --memory-budget (weights and KV cache)",
                labels=["model"],
            ),
            "loads": CounterMetricFamily("localxai_model_loads", "Times the model was loaded", labels=["model"]),
            "load_seconds": CounterMetricFamily(
                "localxai_model_load_seconds", "Time spent loading the model", labels=["model"]
            ),
            "evictions": CounterMetricFamily(
                "localxai_model_evictions", "Times the model was unloaded to make room for another", labels=["model"]
            ),
        }
        for engine in self._engines:
            for model, stats in engine.stats().items():
                for name, family in families.items():
                    if name in stats:
                        family.add_metric([model], stats[name])
        yield from families.values()
