"""Models on demand: localxai against llama-server's router mode on the same GGUF.

Three copies of the default model (m-a, m-b, m-c) are configured on both servers, with the same context,
slots and threads. Measured: the cold start of a model by request (time to the first streamed token of a
request for m-b while m-b is unloaded, unloaded again by each server's own POST /models/unload between
rounds; the median of the rounds), and the memory each server holds (RSS of its process and children) with
the three configured and only m-b loaded, after a request. No target was set; the README reports it.

Writes bench/results/models-*.json and models-latest.png. Not a test: run it on demand
(`.venv/bin/python bench/models.py`), alone on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from anchors import llama_server_binary
from run import HEADERS, KEY, free_port, rss_mib, server

from localxai.engines.llamacpp.default_model import default_model_path

HERE = Path(__file__).parent
NAMES = ("m-a", "m-b", "m-c")


def server_pid(port: int) -> int:
    """The pid listening on `port` (from /proc/net/tcp and the fds of our children)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inode = fields[9]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return int(proc.name)
        except OSError:
            continue
    raise RuntimeError(f"no process listens on {port}")


def first_token_ms(base: str, model: str) -> float:
    body = {"model": model, "stream": True, "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "Name a fruit."}]}  # fmt: skip
    started, first = time.perf_counter(), None
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, headers=HEADERS, timeout=300) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():  # read to the end: the request is over before the next one
            if first is None and '"content"' in line:
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{model}: no content streamed")
    return round(first * 1000, 1)


def unload(base: str, model: str) -> None:
    r = httpx.post(f"{base}/models/unload", json={"model": model}, headers=HEADERS, timeout=120)
    if r.status_code >= 400 and "not loaded" not in r.text.lower():
        raise RuntimeError(f"unload {model}: {r.status_code} {r.text}")


def loaded(base: str) -> list[str]:
    listed = httpx.get(f"{base}/models", headers=HEADERS, timeout=30).json()["data"]
    return sorted(m["id"] for m in listed if m["status"]["value"] == "loaded")


def measure(base: str, port: int, rounds: int) -> dict[str, Any]:
    for name in NAMES:
        if name in loaded(base):
            unload(base, name)
    colds, warms = [], []
    for _ in range(rounds):
        colds.append(first_token_ms(base, "m-b"))
        warms.append(first_token_ms(base, "m-b"))  # loaded now: the same request, for scale
        unload(base, "m-b")
        deadline = time.monotonic() + 60
        while "m-b" in loaded(base):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    first_token_ms(base, "m-b")  # m-b loaded, the only one: what each server then holds
    time.sleep(1)
    return {"cold_ttft_ms": colds, "cold_ttft_p50_ms": statistics.median(colds), "warm_ttft_ms": warms,
            "warm_ttft_p50_ms": statistics.median(warms),
            "loaded": loaded(base), "rss_mib_one_of_three_loaded": rss_mib(server_pid(port))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ctx-size", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    work = HERE / ".cache" / "models-bench"
    work.mkdir(parents=True, exist_ok=True)
    source = default_model_path(Path.home() / ".cache" / "localxai" / "models")
    for name in NAMES:
        if not (work / f"{name}.gguf").is_file():
            shutil.copyfile(source, work / f"{name}.gguf")
    config = work / "models.toml"
    config.write_text("".join(f'[[models]]\nid = "{n}"\npath = "{work / n}.gguf"\n\n' for n in NAMES))
    shape = ["--ctx-size", str(args.ctx_size), "--parallel", str(args.parallel), "--threads", str(args.threads)]
    report: dict[str, Any] = {"when": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "args": vars(args)}
    port = free_port()
    ours = [sys.executable, "-m", "localxai", "serve", "--config", str(config), "--api-key", KEY, "--grpc-port", "0",
            "--port", str(port), *shape]  # fmt: skip
    with server(ours, port, work / "localxai.log"):
        report["localxai"] = measure(f"http://127.0.0.1:{port}", port, args.rounds)
    port = free_port()
    binary = llama_server_binary(HERE / ".cache")
    theirs = [str(binary), "--models-dir", str(work), "--models-max", "3", "--port", str(port), "--api-key", KEY,
              "-c", str(args.ctx_size * args.parallel), "-np", str(args.parallel), "-t", str(args.threads),
              "--no-jinja", "--chat-template", "gemma"]  # fmt: skip
    with server(theirs, port, work / "llama-server.log"):
        report["llama_server_router"] = measure(f"http://127.0.0.1:{port}", port, args.rounds)
    print(json.dumps(report, indent=2))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in (f"models-{stamp}.json", "models-latest.json"):
        (results / name).write_text(json.dumps(report, indent=2))
    chart(report, results / "models-latest.png")


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["localxai", "llama_server_router"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.5))
    left.bar(names, [report[n]["cold_ttft_p50_ms"] for n in names], color=["tab:blue", "tab:gray"])
    left.set_ylabel("cold-start TTFT p50 (ms)")
    right.bar(names, [report[n]["rss_mib_one_of_three_loaded"] for n in names], color=["tab:blue", "tab:gray"])
    right.set_ylabel("RSS, 3 configured, 1 loaded (MiB)")
    fig.suptitle("Models on demand: localxai vs llama-server router mode")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
