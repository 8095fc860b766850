"""A bounded streaming load generator for OpenAI-compatible chat endpoints."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx


@dataclass
class RequestResult:
    ttft: float
    latency: float
    tokens: int
    gaps: list[float] = field(default_factory=list)  # seconds between streamed chunks
    text: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0  # from usage (xAI, OpenAI shape) or llama-server's timings.cache_n


def client(concurrency: int, headers: dict[str, str]) -> httpx.AsyncClient:
    # A fresh connection per request: llama-server closes kept-alive streaming connections.
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=0)
    return httpx.AsyncClient(headers=headers, timeout=900, limits=limits)


async def stream_one(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> RequestResult:
    start = time.perf_counter()
    first = None
    last = start
    gaps: list[float] = []
    chunks = 0
    text = ""
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    async with client.stream(
        "POST", url, json={**body, "stream": True, "stream_options": {"include_usage": True}}
    ) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            timings = chunk.get("timings") or timings
            deltas = [c.get("delta", {}).get("content") or "" for c in chunk.get("choices", [])]
            if not any(deltas):
                continue
            text += "".join(deltas)
            now = time.perf_counter()
            if first is None:
                first = now
            else:
                gaps.append(now - last)
            last = now
            chunks += 1
    end = time.perf_counter()
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    return RequestResult(
        ttft=(first or end) - start,
        latency=end - start,
        tokens=int(usage.get("completion_tokens", chunks)),
        gaps=gaps,
        text=text,
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        cached_tokens=int(cached if cached is not None else timings.get("cache_n", 0)),
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run_level(
    url: str, headers: dict[str, str], bodies: list[dict[str, Any]], concurrency: int
) -> dict[str, Any]:
    """Send `bodies` with `concurrency` requests in flight; return aggregate metrics."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    results: list[RequestResult] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            results.append(await stream_one(client, url, queue.get_nowait()))

    async with client(concurrency, headers) as http:
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    tokens = sum(r.tokens for r in results)
    ttfts = [r.ttft for r in results]
    gaps = [g for r in results for g in r.gaps]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "output_tokens": tokens,
        "wall_s": wall,
        "output_tok_s": tokens / wall,
        "ttft_p50_ms": 1000 * percentile(ttfts, 50),
        "ttft_p99_ms": 1000 * percentile(ttfts, 99),
        "itl_p50_ms": 1000 * percentile(gaps, 50),
        "itl_p99_ms": 1000 * percentile(gaps, 99),
        "mean_latency_s": statistics.fmean(r.latency for r in results),
    }


__all__ = ["RequestResult", "asdict", "client", "run_level", "stream_one"]
