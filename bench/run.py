"""`make bench`: localxai against llama.cpp's llama-server on the same machine, in one run.

Same model file, threads, parallel slots and per-slot context; the same streaming workload at
concurrency 1, 2, 4, 8 and 16. Also a one-request-at-a-time localxai (--parallel 1) and warm vs
cold prefix TTFT with a ~1,000-token shared system prompt. The servers are up at once and each level
runs on all of them in turn, three times; the median counts. Writes bench/results/*.json and a PNG.
Not a test: run it on demand.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from anchors import llama_server_binary
from load import run_level, stream_one

from localxai.engines.llamacpp.default_model import default_model_path

HERE = Path(__file__).parent
KEY = "bench-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
MODEL = "gemma-3-270m"
ROUNDS = 3  # of each level on each server (see alternate)
PIDS: dict[str, int] = {}  # a running server's chat URL -> its process id, for its memory


def memory(url: str) -> dict[str, float]:
    """The server's resident memory now (its process and children) and its process's peak so far, MiB."""
    pid = PIDS[url]
    status = Path(f"/proc/{pid}/status").read_text()
    peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return {"rss_mib": rss_mib(pid), "peak_rss_mib": round(peak / 1024, 1)}


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, MiB (from /proc: Linux)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return round(total / 1024, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(cmd: list[str], port: int, log: Path) -> Iterator[str]:
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited: see {log}")
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[0]} did not start: see {log}")
                time.sleep(0.2)
            PIDS[base + "/v1/chat/completions"] = proc.pid
            yield base + "/v1/chat/completions"
        finally:
            PIDS.pop(base + "/v1/chat/completions", None)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def servers(commands: dict[str, list[str]], logs: Path) -> Iterator[dict[str, tuple[str, list[str]]]]:
    """All the servers up at once, each on a free port: by name, its chat URL and full command line.
    An idle server costs the others nothing measurable (no thread spins), so runs can alternate."""
    with ExitStack() as stack:
        up = {}
        for name, cmd in commands.items():
            port = http_port(cmd)
            full = [*cmd, "--port", str(port)]
            print(f"{name}: {' '.join(full)}", flush=True)
            up[name] = (stack.enter_context(server(full, port, logs / f"{name.replace(' ', '_')}.log")), full)
        yield up


def http_port(cmd: list[str]) -> int:
    """A free port for the server `cmd` starts, other than a port it already names (its gRPC port,
    chosen earlier: the kernel may hand a just-freed port out again)."""
    port = free_port()
    while str(port) in cmd:
        port = free_port()
    return port


def grpc(cmd: list[str]) -> list[str]:
    """A localxai command with a gRPC port of its own: several run at once (a listener, not tuning)."""
    return [*cmd, "--grpc-port", str(free_port())]


def workload(n: int, max_tokens: int, offset: int = 0) -> list[dict[str, Any]]:
    topics = ["a lighthouse", "a dragon", "the ocean", "a city at night", "an old robot", "a garden"]
    return [
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Write a long story about {topics[i % 6]}, part {i + offset}."}],
            "max_tokens": max_tokens,
            "temperature": 0.8,
            "seed": i + offset,
        }
        for i in range(n)
    ]


def alternate(
    urls: dict[str, str], levels: dict[str, list[int]], run: Callable[[str, int, int], dict[str, Any]], rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """`run(url, concurrency, round)` at each level, `rounds` times on every server in turn before the
    next level, each round starting with the next server; a row holds each metric's median over the
    rounds (and every round's tok/s). The machine's speed drifts during a run, by up to 1.8x within
    minutes on the shared 2-core machines: alternating makes the drift weigh on the servers alike, and
    the median drops the round that a swing hit. `run` gives each round prompts of its own, so no
    server answers from a cache what it saw in an earlier round."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
    names = list(urls)
    for c in sorted({c for wanted in levels.values() for c in wanted}):
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names if c in levels[name]}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                if name not in runs:
                    continue
                row = run(urls[name], c, r)
                timings = "".join(
                    f"  {label} {row[key]:7.1f} ms"
                    for key, label in (("ttft_p50_ms", "ttft p50"), ("itl_p50_ms", "itl p50"), ("itl_p99_ms", "p99"))
                    if key in row
                )
                tok_s = row["output_tok_s"]
                print(f"  {name}, concurrency {c:>2}, round {r + 1}: {tok_s:7.1f} tok/s{timings}", flush=True)
                runs[name].append(row)
        for name, done in runs.items():
            rows[name].append(median_row(done))
    return rows


def run_levels(
    urls: dict[str, str], levels: dict[str, list[int]], max_tokens: int, rounds: int = ROUNDS
) -> dict[str, list[dict[str, Any]]]:
    """The fresh-prompt workload at each concurrency level, alternating between the servers (see
    `alternate`)."""
    for url in urls.values():
        asyncio.run(run_level(url, HEADERS, workload(2, 16, offset=1000), 2))  # warm-up

    def level(url: str, c: int, r: int) -> dict[str, Any]:
        return asyncio.run(run_level(url, HEADERS, workload(max(4, 2 * c), max_tokens, offset=100 * c + 10_000 * r), c))

    return alternate(urls, levels, level, rounds)


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number's median over the rounds of one level on one server (a mapping: every round's
    entries; other fields: the first round's), and every round's tok/s."""

    def merged(key: str, value: Any) -> Any:
        if isinstance(value, (int, float)):
            return statistics.median(r[key] for r in runs)
        if isinstance(value, dict):
            return {k: v for r in runs for k, v in r[key].items()}
        return value

    row = {key: merged(key, value) for key, value in runs[0].items()}
    return {**row, "concurrency": runs[0]["concurrency"], "rounds_tok_s": [r["output_tok_s"] for r in runs]}


def prefix_ttft(url: str, trials: int = 3) -> dict[str, float]:
    """TTFT of a request whose ~1,000-token system prompt is new (cold) vs already seen (warm)."""
    cold, warm = [], []

    async def one(system: str, question: str) -> float:
        body = {
            "model": MODEL,
            "max_tokens": 4,
            "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        }
        async with httpx.AsyncClient(headers=HEADERS, timeout=600) as client:
            return (await stream_one(client, url, body)).ttft

    for t in range(trials):
        system = f"Session {t} {time.time_ns()}. " + "The quick brown fox jumps over the lazy dog. " * 90
        cold.append(asyncio.run(one(system, "What is the first question?")))
        warm.append(asyncio.run(one(system, "And what is a different question?")))
    return {"cold_ttft_ms": 1000 * statistics.median(cold), "warm_ttft_ms": 1000 * statistics.median(warm)}


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in results["servers"].items():
        xs = [r["concurrency"] for r in rows]
        left.plot(xs, [r["output_tok_s"] for r in rows], marker="o", label=name)
        right.plot(xs, [r["ttft_p50_ms"] for r in rows], marker="o", label=name)
    right.set_yscale("log")
    for ax, title in ((left, "output tokens/s"), (right, "TTFT p50 (ms, log scale)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streams")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"{MODEL}, {results['config']['threads']} threads, {results['config']['parallel']} slots, "
        f"{results['config']['max_tokens']} output tokens"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--levels", default="1,2,4,8,16")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="of each level on each server; the median counts")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    model = default_model_path(Path.home() / ".cache" / "localxai" / "models")
    binary = llama_server_binary(HERE / ".cache")
    logs = HERE / ".cache" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    common = ["--threads", str(args.threads), "--ctx-size", str(args.ctx_size)]

    def localxai(parallel: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "localxai",
            "serve",
            "--model",
            str(model),
            "--model-id",
            MODEL,
            "--api-key",
            KEY,
            "--parallel",
            str(parallel),
            "--max-queue",
            "256",
            *common,
        ]

    llama = [
        str(binary),
        "-m",
        str(model),
        "-t",
        str(args.threads),
        "-np",
        str(args.parallel),
        "-c",
        str(args.ctx_size * args.parallel),
        "--no-jinja",
        "--chat-template",
        "gemma",
        "--no-webui",
        "--api-key",
        KEY,
    ]
    plan = {
        "localxai": grpc(localxai(args.parallel)),
        "llama-server": llama,
        "localxai --parallel 1": grpc(localxai(1)),
    }
    wanted = {"localxai": levels, "llama-server": levels, "localxai --parallel 1": [1, 8]}
    prefix: dict[str, dict[str, float]] = {}
    with servers(plan, logs) as up:
        commands = {name: full for name, (_, full) in up.items()}
        servers_rows = run_levels({name: url for name, (url, _) in up.items()}, wanted, args.max_tokens, args.rounds)
        for name in ("localxai", "llama-server"):
            prefix[name] = prefix_ttft(up[name][0])
            print(f"  {name} prefix TTFT: {prefix[name]}", flush=True)

    ours = {r["concurrency"]: r for r in servers_rows["localxai"]}
    anchor = {r["concurrency"]: r for r in servers_rows["llama-server"]}
    serial = {r["concurrency"]: r for r in servers_rows["localxai --parallel 1"]}
    ratios = {str(c): ours[c]["output_tok_s"] / anchor[c]["output_tok_s"] for c in levels if c in anchor}
    targets = {
        "tok_s_vs_llama_server_ge_1.0_every_level": all(v >= 1.0 for v in ratios.values()),
        "tok_s_vs_llama_server_ge_0.95_at_1": ratios.get("1", 0) >= 0.95,
        "speedup_vs_serial_at_8": ours[8]["output_tok_s"] / serial[8]["output_tok_s"] if 8 in ours else None,
        "warm_over_cold_ttft": prefix["localxai"]["warm_ttft_ms"] / prefix["localxai"]["cold_ttft_ms"],
    }
    results = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "config": {**vars(args), "model": MODEL},
        "commands": commands,
        "servers": servers_rows,
        "prefix_ttft": prefix,
        "ratios_tok_s_localxai_over_llama_server": ratios,
        "targets": targets,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in (f"throughput-{stamp}.json", "throughput-latest.json"):
        (out / name).write_text(json.dumps(results, indent=2) + "\n")
    chart(results, out / "throughput-latest.png")
    print(markdown(results))


def markdown(results: dict[str, Any]) -> str:
    """The README table."""
    lines = [
        "| concurrency | localxai tok/s | llama-server tok/s | ratio | localxai TTFT p50 / ITL p50 / p99 (ms) "
        "| llama-server TTFT p50 / ITL p50 / p99 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    anchor = {r["concurrency"]: r for r in results["servers"]["llama-server"]}
    for r in results["servers"]["localxai"]:
        a = anchor[r["concurrency"]]
        lines.append(
            f"| {r['concurrency']} | {r['output_tok_s']:.1f} | {a['output_tok_s']:.1f} "
            f"| {r['output_tok_s'] / a['output_tok_s']:.2f} "
            f"| {r['ttft_p50_ms']:.0f} / {r['itl_p50_ms']:.1f} / {r['itl_p99_ms']:.1f} "
            f"| {a['ttft_p50_ms']:.0f} / {a['itl_p50_ms']:.1f} / {a['itl_p99_ms']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
