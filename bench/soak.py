"""Load and soak: hold N concurrent streams against a real localxai for M minutes (bounded).

Starts `localxai serve` itself (default model), keeps `--streams` streaming requests in flight until
`--minutes` have passed, samples the server's RSS every few seconds, and reports errors, latency
percentiles and memory growth. Writes bench/results/soak-*.json. Not a test: run it on demand.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from load import percentile, stream_one
from run import HEADERS, KEY, MODEL, free_port, server

HERE = Path(__file__).parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def soak(url: str, pid: int, streams: int, seconds: float, max_tokens: int) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    results, errors, rss = [], [], []
    counter = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal counter
        while time.monotonic() < deadline:
            counter += 1
            body = {
                "model": MODEL,
                "max_tokens": max_tokens,
                "temperature": 0.8,
                "seed": counter,
                "messages": [{"role": "user", "content": f"Tell me about item {counter}."}],
            }
            try:
                results.append(await stream_one(client, url, body))
            except Exception as exc:  # counted, not raised: the report says how many and which
                errors.append(repr(exc))

    async def sampler() -> None:
        start = time.monotonic()
        while time.monotonic() < deadline:
            rss.append((round(time.monotonic() - start, 1), rss_mib(pid)))
            await asyncio.sleep(5)

    limits = httpx.Limits(max_connections=streams + 2, max_keepalive_connections=0)
    async with httpx.AsyncClient(headers=HEADERS, timeout=300, limits=limits) as client:
        await asyncio.gather(sampler(), *(worker(client) for _ in range(streams)))
    ttfts = [r.ttft for r in results]
    gaps = [g for r in results for g in r.gaps]
    # The allocator breathes by a few tens of MiB: compare medians of the first and last 30 s after warm-up.
    settled = [m for t, m in rss if t >= 30] or [m for _, m in rss]
    return {
        "requests": len(results),
        "errors": len(errors),
        "error_samples": errors[:5],
        "output_tokens": sum(r.tokens for r in results),
        "ttft_p50_ms": 1000 * percentile(ttfts, 50),
        "ttft_p99_ms": 1000 * percentile(ttfts, 99),
        "itl_p50_ms": 1000 * percentile(gaps, 50),
        "itl_p99_ms": 1000 * percentile(gaps, 99),
        "rss_mib_samples": rss,
        "rss_growth_after_warmup_mib": statistics.median(settled[-6:]) - statistics.median(settled[:6])
        if settled
        else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    port = free_port()
    logs = HERE / ".cache" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "localxai",
        "serve",
        "--api-key",
        KEY,
        "--parallel",
        str(args.parallel),
        "--ctx-size",
        "1024",
        "--grpc-port",
        "0",
        "--database-url",
        f"sqlite:///{HERE / '.cache' / 'soak.db'}",
        "--port",
        str(port),
    ]
    with server(cmd, port, logs / "soak.log") as url:
        pid = _server_pid(port)
        report = asyncio.run(soak(url, pid, args.streams, args.minutes * 60, args.max_tokens))
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "config": vars(args), **report}
    out = HERE / "results" / f"soak-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k != "rss_mib_samples"}
    print(json.dumps(summary, indent=2))


def _server_pid(port: int) -> int:
    """The process listening on `port` (the server started above)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            inode = fields[9]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]" for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:
            continue
    raise RuntimeError("server process not found")


if __name__ == "__main__":
    main()
