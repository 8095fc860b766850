"""Embedding throughput through the real server: texts per second at batch 1 (one text a request, one
client and four at once) and batch 32 (32 texts a request), for the bundled default model and for a
GGUF through llama.cpp's embedding mode (the default chat model's GGUF, mean-pooled).

Texts are sentences of 8 to 64 words drawn from a fixed vocabulary (seeded), so runs compare. Writes
bench/results/embeddings-*.json and embeddings-latest.png. Not a test: run it on demand
(`.venv/bin/python bench/embeddings.py`), alone on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from run import HEADERS, KEY, free_port, server

from localxai.embeddings import DEFAULT_EMBEDDING_MODEL
from localxai.engines.llamacpp.default_model import default_model_path

HERE = Path(__file__).parent
WORDS = [
    "the",
    "a",
    "model",
    "server",
    "request",
    "answer",
    "token",
    "file",
    "document",
    "search",
    "vector",
    "query",
    "cache",
    "memory",
    "engine",
    "fast",
    "slow",
    "small",
    "large",
    "local",
    "remote",
    "user",
    "system",
    "prompt",
    "context",
    "batch",
    "stream",
    "result",
    "error",
    "limit",
    "key",
    "store",
    "index",
]


def texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 64))) for _ in range(count)]


def measure(base: str, model: str, batch: int, clients: int, total: int, seed: int) -> dict[str, Any]:
    corpus = texts(total, seed)
    batches = [corpus[i : i + batch] for i in range(0, total, batch)]
    http = httpx.Client(base_url=base.removesuffix("/v1/chat/completions"), headers=HEADERS, timeout=300)

    def one(inputs: list[str]) -> int:
        answer = http.post("/v1/embeddings", json={"model": model, "input": inputs, "encoding_format": "base64"})
        answer.raise_for_status()
        return int(answer.json()["usage"]["prompt_tokens"])

    one(batches[0])  # warm
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(one, batches))
    seconds = time.perf_counter() - started
    return {"model": model, "batch": batch, "clients": clients, "texts": total, "seconds": round(seconds, 3),
            "texts_per_s": round(total / seconds, 1), "tokens_per_s": round(tokens / seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=512)
    args = parser.parse_args()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    gguf = default_model_path(Path.home() / ".cache" / "localxai-bench")
    port = free_port()
    cmd = [sys.executable, "-m", "localxai", "serve", "--api-key", KEY, "--grpc-port", "0", "--port", str(port),
           "--ctx-size", "512", "--embedding-model", f"gemma-embed={gguf}"]  # fmt: skip
    rows = []
    with server(cmd, port, results / "embeddings-server.log") as base:
        for model in (DEFAULT_EMBEDDING_MODEL, "gemma-embed"):
            for batch, clients in ((1, 1), (1, 4), (32, 1)):
                count = args.texts if model == DEFAULT_EMBEDDING_MODEL else args.texts // 8  # the GGUF is slow here
                row = measure(base, model, batch, clients, count, seed=batch * 10 + clients)
                print(json.dumps(row), flush=True)
                rows.append(row)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    report = {"when": stamp, "command": cmd, "rows": rows}
    (results / f"embeddings-{stamp}.json").write_text(json.dumps(report, indent=2))
    (results / "embeddings-latest.json").write_text(json.dumps(report, indent=2))
    chart(rows, results / "embeddings-latest.png")


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"batch {r['batch']}, {r['clients']} client{'s' if r['clients'] > 1 else ''}" for r in rows[:3]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    for offset, model in ((-width / 2, DEFAULT_EMBEDDING_MODEL), (width / 2, "gemma-embed")):
        values = [r["texts_per_s"] for r in rows if r["model"] == model]
        ax.bar([i + offset for i in range(len(values))], values, width, label=model)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("texts / s")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Embedding throughput through localxai (REST)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
