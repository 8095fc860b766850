"""Interactive TTFT with a 1,000-request batch running against without, through the real server.

One localxai server (default model). First the interactive probe alone: streamed chat requests with a
think time between them, from `--clients` clients, TTFT measured at the first content byte. Then a batch
of 1,000 requests (a shared system prompt, 16 output tokens each) is added and the same probe runs while
the batch works; afterwards the batch finishes alone, which gives its throughput on an otherwise idle
engine. Target: interactive TTFT p50 and p90 with the batch within 10 % (+20 ms) of without it.

Writes bench/results/batch-*.json and batch-latest.png. Not a test: run it on demand
(`.venv/bin/python bench/batch.py`), alone on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from run import HEADERS, KEY, MODEL, free_port, server

HERE = Path(__file__).parent
SYSTEM = "You are a terse assistant for a warehouse. Answer with one short sentence. " * 6


def probe(base: str, clients: int, requests: int, think_s: float) -> list[float]:
    """TTFT (ms) of `requests` streamed requests from each of `clients` clients."""
    out: list[float] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        with httpx.Client(base_url=base, headers=HEADERS, timeout=300) as http:
            for i in range(requests):
                question = f"Client {index}, question {i}: name a fruit."
                body = {"model": MODEL, "stream": True, "max_tokens": 24, "temperature": 0,
                        "messages": [{"role": "user", "content": question}]}  # fmt: skip
                started = time.perf_counter()
                with http.stream("POST", "/v1/chat/completions", json=body) as answer:
                    answer.raise_for_status()
                    first = None
                    for line in answer.iter_lines():
                        if first is None and '"content"' in line:
                            first = time.perf_counter() - started
                if first is not None:
                    with lock:
                        out.append(first * 1000)
                time.sleep(think_s)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def summary(ttfts: list[float]) -> dict[str, float]:
    ordered = sorted(ttfts)
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 1),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 1), "max_ms": round(ordered[-1], 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--requests", type=int, default=15, help="per client, in each phase")
    parser.add_argument("--think", type=float, default=0.5)
    args = parser.parse_args()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "localxai", "serve", "--api-key", KEY, "--grpc-port", "0", "--port", str(port),
           "--ctx-size", "1024", "--database-url", f"sqlite:///{results / 'batch-bench.db'}"]  # fmt: skip
    (results / "batch-bench.db").unlink(missing_ok=True)
    with server(cmd, port, results / "batch-server.log") as chat_url:
        base = chat_url.removesuffix("/v1/chat/completions")
        http = httpx.Client(base_url=base, headers=HEADERS, timeout=600)
        probe(base, 1, 2, 0)  # warm
        alone = probe(base, args.clients, args.requests, args.think)
        batch_id = http.post("/v1/batches", json={"name": "bench"}).json()["batch_id"]
        lines = [{"batch_request_id": f"r{i}", "batch_request": {"chat_get_completion": {
            "model": MODEL, "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Item {i}: where is it?"}],
        }}} for i in range(args.batch)]  # fmt: skip
        http.post(f"/v1/batches/{batch_id}/requests", json={"batch_requests": lines}).raise_for_status()
        time.sleep(2)  # the batch fills the engine first
        started = time.perf_counter()
        beside = probe(base, args.clients, args.requests, args.think)
        probe_s = time.perf_counter() - started
        during = http.get(f"/v1/batches/{batch_id}").json()["state"]["num_success"]
        alone_started = time.perf_counter()
        while (state := http.get(f"/v1/batches/{batch_id}").json()["state"])["num_pending"]:
            time.sleep(1)
        finish_s = time.perf_counter() - alone_started
        ledger = http.get("/v1/batches/" + batch_id + "/results", params={"limit": 1}).json()
        assert ledger["results"], ledger
    report: dict[str, Any] = {
        "when": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": cmd,
        "args": vars(args),
        "interactive_alone": summary(alone),
        "interactive_with_batch": summary(beside),
        "batch_done_during_probe": during,
        "probe_seconds": round(probe_s, 1),
        "batch_rest_seconds": round(finish_s, 1),
        "batch_rest_requests_per_s": round((args.batch - during) / finish_s, 2) if finish_s else None,
        "batch_state": state,
    }
    a, b = report["interactive_alone"], report["interactive_with_batch"]
    report["met"] = all(b[k] <= a[k] * 1.1 + 20 for k in ("p50_ms", "p90_ms"))
    print(json.dumps(report, indent=2))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in (f"batch-{stamp}.json", "batch-latest.json"):
        (results / name).write_text(json.dumps(report, indent=2))
    chart(alone, beside, results / "batch-latest.png")


def chart(alone: list[float], beside: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.boxplot([alone, beside], tick_labels=["interactive alone", "with a 1,000-request batch"])
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("Interactive TTFT beside batch work (localxai)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
