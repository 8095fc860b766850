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


async def stream_one(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> RequestResult:
    start = time.perf_counter()
    first = None
    last = start
    gaps: list[float] = []
    chunks = 0
    usage_tokens = None
    async with client.stream(
        "POST", url, json={**body, "stream": True, "stream_options": {"include_usage": True}}
    ) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage_tokens = chunk["usage"].get("completion_tokens")
            if not any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                continue
            now = time.perf_counter()
            if first is None:
                first = now
            else:
                gaps.append(now - last)
            last = now
            chunks += 1
    end = time.perf_counter()
    return RequestResult(
        ttft=(first or end) - start,
        latency=end - start,
        tokens=usage_tokens if usage_tokens is not None else chunks,
        gaps=gaps,
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

    # A fresh connection per request: llama-server closes kept-alive streaming connections.
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(headers=headers, timeout=600, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
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


__all__ = ["RequestResult", "asdict", "run_level", "stream_one"]
