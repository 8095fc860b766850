"""Front-door overhead: the same streaming workload sent to an upstream directly and through a
localxai front door routing to it (`engine = "upstream"`). The upstream is localxai's scripted fake
engine, so the measurement is the gateway alone, not the model. Writes bench/results/gateway-*.json.
Not a test: run it on demand.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from load import run_level
from run import HEADERS, KEY, free_port, server

HERE = Path(__file__).parent


def body(i: int, model: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"request {i}"}],
        "max_tokens": max_tokens,
        "seed": i,
    }


def measure(url: str, concurrency: int, requests: int, model: str, max_tokens: int) -> dict[str, Any]:
    asyncio.run(run_level(url, HEADERS, [body(i, model, max_tokens) for i in range(4)], 2))  # warm-up
    bodies = [body(1000 + i, model, max_tokens) for i in range(requests)]
    return asyncio.run(run_level(url, HEADERS, bodies, concurrency))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--levels", default="1,8")
    parser.add_argument("--real", action="store_true", help="upstream: the default model, not the fake engine")
    args = parser.parse_args()
    model, max_tokens = ("gemma-3-270m", 32) if args.real else ("fake-model", 16)
    engine = ["--parallel", "8", "--ctx-size", "512"] if args.real else ["--engine", "fake"]
    logs = HERE / ".cache" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    common = ["--api-key", KEY, "--grpc-port", "0", "--log-level", "warning"]
    up_port, front_port = free_port(), free_port()
    upstream = [
        sys.executable,
        "-m",
        "localxai",
        "serve",
        *engine,
        "--max-queue",
        "1024",
        "--database-url",
        f"sqlite:///{HERE / '.cache' / 'gw-up.db'}",
        *common,
        "--port",
        str(up_port),
    ]
    config = HERE / ".cache" / "gateway.toml"
    config.write_text(
        f'[[models]]\nid = "{model}"\nengine = "upstream"\n'
        f'base_urls = ["http://127.0.0.1:{up_port}/v1"]\napi_key_env = "GW_KEY"\n'
    )
    front = [
        sys.executable,
        "-m",
        "localxai",
        "serve",
        "--config",
        str(config),
        "--database-url",
        f"sqlite:///{HERE / '.cache' / 'gw-front.db'}",
        *common,
        "--port",
        str(front_port),
    ]
    import os

    os.environ["GW_KEY"] = KEY
    rows = []
    with (
        server(upstream, up_port, logs / "gw-upstream.log") as direct_url,
        server(front, front_port, logs / "gw-front.log") as front_url,
    ):
        for c in (int(x) for x in args.levels.split(",")):
            direct = measure(direct_url, c, args.requests, model, max_tokens)
            via = measure(front_url, c, args.requests, model, max_tokens)
            rows.append(
                {
                    "concurrency": c,
                    "direct": direct,
                    "front_door": via,
                    "added_ttft_p50_ms": via["ttft_p50_ms"] - direct["ttft_p50_ms"],
                    "throughput_ratio": via["output_tok_s"] / direct["output_tok_s"],
                }
            )
            print(
                f"concurrency {c}: TTFT p50 direct {direct['ttft_p50_ms']:.2f} ms, via front "
                f"{via['ttft_p50_ms']:.2f} ms (+{rows[-1]['added_ttft_p50_ms']:.2f}); "
                f"tok/s ratio {rows[-1]['throughput_ratio']:.3f}",
                flush=True,
            )
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": {**vars(args), "model": model, "max_tokens": max_tokens},
        "levels": rows,
        "median_added_ttft_ms": statistics.median(r["added_ttft_p50_ms"] for r in rows),
    }
    kind = "real" if args.real else "fake"
    out = HERE / "results" / f"gateway-{kind}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
