"""The workloads xAI clients send, against localxai and llama-server in one run (`make bench`).

- W-conv: 32 conversations x 4 turns behind a shared ~1,000-token system prompt, ~100-token user
  turns, 64-token answers, 8 clients, 8 slots. Turns go round the conversations (turn 1 of every
  conversation, then turn 2...), so each conversation's KV has to survive 31 others between turns.
- W-quote: answers that repeat their input (a ~600-token code file to rewrite), 256 output tokens,
  concurrency 1 and 4; llama-server with each of its n-gram speculation modes.
- W-defaults: both servers with no tuning flags, the fresh-prompt workload at 1, 4, 8, 16.
- Ceiling: raw llama_decode tokens/s for batches of 1, 8 and 16 one-token sequences, no server.

Every result keeps both sides' exact command lines and prompt token counts. The servers of W-quote
and of W-defaults are up at once and each level runs on all of them in turn, so that the machine's
speed, which drifts during a run, weighs on the servers compared alike. W-quote at 1 and each W-defaults
level run three times and the median counts (see run.alternate).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from load import RequestResult, client, percentile, stream_one
from run import HEADERS, MODEL, grpc, http_port, server, servers

CONVERSATIONS, TURNS, CLIENTS = 32, 4, 8
QUOTE_TOKENS = 256


# -- W-conv ----------------------------------------------------------------------------------------

TOPICS = [
    "refunds", "lost luggage", "seat upgrades", "pet travel", "visa rules", "connecting flights", "delays",
    "meal options", "loyalty points", "child fares", "sports equipment", "medical devices", "group bookings",
    "name changes", "cancellations", "lounges",
]  # fmt: skip


def system_prompt() -> str:
    """About 1,000 tokens of airline support policy, the same for every conversation."""
    rules = [
        f"Policy {i + 1} on {TOPICS[i % len(TOPICS)]}: agents confirm the booking reference, check the fare "
        f"conditions that apply to {TOPICS[(i * 7) % len(TOPICS)]}, quote the exact amount in euros, and never "
        "promise what the conditions do not allow."
        for i in range(24)
    ]
    return "You are the support assistant of a European airline. Follow these policies.\n" + "\n".join(rules)


def user_turn(conversation: int, turn: int) -> str:
    """About 100 tokens: a customer's question that names its conversation and turn."""
    topic = TOPICS[(conversation + turn) % len(TOPICS)]
    return (
        f"Customer {conversation}, message {turn + 1}: I booked flight LX{1000 + conversation} from Zurich to "
        f"Lisbon for next month and I have a question about {topic}. My booking reference is "
        f"Q{conversation:03d}Z{turn}. Could you explain step by step what I need to do, what it costs, and "
        f"whether anything changes if I travel with my partner and two children on the same booking? Please "
        "also tell me which documents I should bring to the airport and how early I should arrive."
    )


async def w_conv(url: str) -> dict[str, Any]:
    system = system_prompt()
    histories: list[list[dict[str, str]]] = [[{"role": "system", "content": system}] for _ in range(CONVERSATIONS)]
    done = [asyncio.Event() for _ in range(CONVERSATIONS * TURNS)]
    order = [(t, c) for t in range(TURNS) for c in range(CONVERSATIONS)]  # round the conversations
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for item in order:
        queue.put_nowait(item)
    results: dict[tuple[int, int], RequestResult] = {}

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            turn, conv = queue.get_nowait()
            if turn:
                await done[(turn - 1) * CONVERSATIONS + conv].wait()
            history = histories[conv]
            history.append({"role": "user", "content": user_turn(conv, turn)})
            body = {"model": MODEL, "messages": list(history), "max_tokens": 64, "temperature": 0.7, "seed": conv}
            out = await stream_one(http, url, body)
            history.append({"role": "assistant", "content": out.text})
            results[turn, conv] = out
            done[turn * CONVERSATIONS + conv].set()

    async with client(CLIENTS, HEADERS) as http:
        await stream_one(http, url, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(CLIENTS)))
        wall = time.perf_counter() - start
    ttfts = [r.ttft for r in results.values()]
    per_turn = []
    for t in range(TURNS):
        rows = [results[t, c] for c in range(CONVERSATIONS)]
        per_turn.append(
            {
                "turn": t + 1,
                "prompt_tokens_mean": statistics.fmean(r.prompt_tokens for r in rows),
                "cached_share": sum(r.cached_tokens for r in rows) / max(1, sum(r.prompt_tokens for r in rows)),
                "ttft_p50_ms": 1000 * percentile([r.ttft for r in rows], 50),
            }
        )
    tokens = sum(r.tokens for r in results.values())
    return {
        "requests": len(results),
        "output_tokens": tokens,
        "wall_s": wall,
        "output_tok_s": tokens / wall,
        "ttft_p50_ms": 1000 * percentile(ttfts, 50),
        "ttft_p99_ms": 1000 * percentile(ttfts, 99),
        "per_turn": per_turn,
        "sample_prompt_tokens": results[0, 0].prompt_tokens,
    }


# -- W-quote ---------------------------------------------------------------------------------------


def code_file(variant: int) -> str:
    """About 600 tokens of plausible Python; variants differ in names so prompts are not cached."""
    name = ["inventory", "ledger", "roster", "catalog"][variant % 4] + f"_v{variant}"
    functions = []
    for i, verb in enumerate(["load", "validate", "merge", "summarize", "export"]):
        functions.append(
            f"def {verb}_{name}(records, limit={10 * (i + 1)}):\n"
            f'    """{verb.capitalize()} the {name} records, at most {10 * (i + 1)} at a time."""\n'
            f"    result = []\n"
            f"    for index, record in enumerate(records):\n"
            f"        if index >= limit:\n"
            f"            break\n"
            f"        if record.get('status') == 'archived':\n"
            f"            continue\n"
            f"        value = record.get('amount', 0) * {i + 2}\n"
            f"        result.append({{'id': record['id'], 'value': value, 'source': '{name}'}})\n"
            f"    return result\n"
        )
    return f"import json\nimport logging\n\nlog = logging.getLogger('{name}')\n\n\n" + "\n\n".join(functions)


def quote_body(variant: int) -> dict[str, Any]:
    """A file to rewrite with one small change: the default base model copies it (with a system
    prompt that asks for it; a bare "copy this" makes it loop on one line instead)."""
    messages = [
        {"role": "system", "content": "You repeat the user's file exactly, changing only what is asked."},
        {
            "role": "user",
            "content": f"```python\n{code_file(variant)}```\nRewrite this file with the logger named 'app'.",
        },
    ]
    return {"model": MODEL, "messages": messages, "max_tokens": QUOTE_TOKENS, "temperature": 0}


async def w_quote(url: str, concurrency: int, round_: int = 0) -> dict[str, Any]:
    bodies = [quote_body(v + 10 * concurrency + 100 * round_) for v in range(max(3, 2 * concurrency))]
    results: list[RequestResult] = []
    async with client(concurrency, HEADERS) as http:
        await stream_one(http, url, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        queue = list(bodies)
        start = time.perf_counter()

        async def worker() -> None:
            while queue:
                results.append(await stream_one(http, url, queue.pop(0)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    tokens = sum(r.tokens for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "output_tokens": tokens,
        "wall_s": wall,
        "output_tok_s": tokens / wall,
        "prompt_tokens": results[0].prompt_tokens,
        "sample_output": results[0].text[:600],
    }


# -- Ceiling ---------------------------------------------------------------------------------------


def ceiling(model_path: Path, threads: int, batches: tuple[int, ...] = (1, 8, 16), steps: int = 48) -> dict[str, float]:
    """Tokens/s of bare llama_decode calls: a batch of B sequences, one new token each, B in `batches`."""
    from localxai.engines.llamacpp.model import ContextShape, LlamaModel

    out = {}
    for size in batches:
        model = LlamaModel(model_path, ContextShape(ctx_size=256, threads=threads, parallel=size))
        try:
            prompt = model.tokenize("The history of the lighthouse begins", True, False)
            model.batch_clear()
            for seq in range(size):
                for pos, token in enumerate(prompt):
                    model.batch_add(token, pos, seq, pos == len(prompt) - 1)
            model.batch_decode()
            start = time.perf_counter()
            for step in range(steps):
                model.batch_clear()
                for seq in range(size):
                    model.batch_add(prompt[step % len(prompt)], len(prompt) + step, seq, True)
                model.batch_decode()
            out[str(size)] = size * steps / (time.perf_counter() - start)
        finally:
            model.close()
    return out


# -- the run ---------------------------------------------------------------------------------------


def main() -> None:
    import argparse
    import datetime as dt
    import os
    import platform

    from anchors import llama_server_binary
    from run import KEY, ROUNDS, alternate, run_levels

    from localxai.engines.llamacpp.default_model import default_model_path

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--suites", default="ceiling,conv,quote,defaults")
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help="of W-quote at 1 and each W-defaults level; the median counts"
    )
    args = parser.parse_args()
    suites = set(args.suites.split(","))
    here = Path(__file__).parent
    model = default_model_path(Path.home() / ".cache" / "localxai" / "models")
    binary = str(llama_server_binary(here / ".cache"))
    logs = here / ".cache" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = str(args.threads)
    ours = [sys.executable, "-m", "localxai", "serve", "--model", str(model), "--model-id", MODEL, "--api-key", KEY]
    theirs = [binary, "-m", str(model), "--no-jinja", "--chat-template", "gemma", "--no-webui", "--api-key", KEY]
    tuned_ours = [*ours, "--threads", threads, "--max-queue", "256"]
    tuned_theirs = [*theirs, "-t", threads]
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "model": MODEL,
    }

    def serve(name: str, cmd: list[str], work: Any) -> dict[str, Any]:
        port = http_port(cmd)
        full = [*cmd, "--port", str(port)]
        print(f"{name}: {' '.join(full)}", flush=True)
        with server(full, port, logs / f"{name.replace(' ', '_')}.log") as url:
            out = work(url)
        print(f"  {json.dumps(out, default=str)[:400]}", flush=True)
        return {"command": full, "result": out}

    if "ceiling" in suites:
        results["ceiling_tok_s"] = ceiling(model, args.threads)
        print(f"ceiling: {results['ceiling_tok_s']}", flush=True)
    if "conv" in suites:
        conv_ours = [*tuned_ours, "--parallel", "8", "--ctx-size", "2048"]
        conv_theirs = [*tuned_theirs, "-np", "8", "-c", str(8 * 2048), "--cache-ram", "8192"]
        results["w_conv"] = {
            "localxai": serve("localxai conv", conv_ours, lambda u: asyncio.run(w_conv(u))),
            "llama-server": serve("llama-server conv", conv_theirs, lambda u: asyncio.run(w_conv(u))),
        }

    def side_by_side(commands: dict[str, list[str]], work: Any) -> dict[str, Any]:
        """The servers up at once, `work` alternating between them (see run.alternate)."""
        with servers(commands, logs) as up:
            out = work({name: url for name, (url, _) in up.items()})
        return {name: {"command": up[name][1], "result": out[name]} for name in commands}

    if "quote" in suites:

        def quote(urls: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
            def level(url: str, c: int, r: int) -> dict[str, Any]:
                return asyncio.run(w_quote(url, c, r))

            # The targets are at c = 1: its rounds take seconds, c = 4's minutes.
            one = alternate(urls, {name: [1] for name in urls}, level, args.rounds)
            four = alternate(urls, {name: [4] for name in urls}, level, 1)
            return {name: one[name] + four[name] for name in urls}

        base_ours = [*tuned_ours, "--parallel", "4", "--ctx-size", "2048"]
        base_theirs = [*tuned_theirs, "-np", "4", "-c", str(4 * 2048)]
        plan = {
            "localxai": grpc([*base_ours, "--speculation", "ngram"]),
            "localxai --speculation off": grpc([*base_ours, "--speculation", "off"]),
        }
        for mode in ("none", "ngram-simple", "ngram-map-k", "ngram-mod"):
            plan[f"llama-server --spec-type {mode}"] = [*base_theirs, "--spec-type", mode]
        results["w_quote"] = side_by_side(plan, quote)
    if "defaults" in suites:
        levels = [1, 4, 8, 16]
        plan = {
            "localxai": grpc(ours),
            "llama-server": theirs,
            # Speculation is on by default only if it does not lose here: the same server without it.
            "localxai --speculation off": grpc([*ours, "--speculation", "off"]),
        }
        results["w_defaults"] = side_by_side(
            plan, lambda urls: run_levels(urls, dict.fromkeys(urls, levels), 128, args.rounds)
        )
    results["targets"] = targets(results)
    out = here / "results"
    out.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in (f"workloads-{stamp}.json", "workloads-latest.json"):
        (out / name).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["targets"], indent=2))
    print(markdown(results))


def markdown(results: dict[str, Any]) -> str:
    """The README's tables: each workload, both servers, the ratio."""
    lines = []
    if "ceiling_tok_s" in results:
        ceiling = results["ceiling_tok_s"]
        lines += ["Raw `llama_decode` ceiling: " + ", ".join(f"{v:.0f} tok/s at batch {k}" for k, v in ceiling.items())]
    if "w_conv" in results:
        ours, theirs = (results["w_conv"][k]["result"] for k in ("localxai", "llama-server"))
        lines += [
            "",
            "| W-conv | output tok/s | TTFT p50 (ms) | TTFT p99 (ms) | cached share, turns 1-4 |",
            "|---|---|---|---|---|",
        ]
        for name, r in (("localxai", ours), ("llama-server", theirs)):
            shares = " / ".join(f"{t['cached_share']:.2f}" for t in r["per_turn"])
            lines.append(
                f"| {name} | {r['output_tok_s']:.1f} | {r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} | {shares} |"
            )
    if "w_quote" in results:
        lines += ["", "| W-quote | tok/s at c=1 | tok/s at c=4 |", "|---|---|---|"]
        for name, run in results["w_quote"].items():
            by = {r["concurrency"]: r["output_tok_s"] for r in run["result"]}
            lines.append(f"| {name} | {by.get(1, 0):.1f} | {by.get(4, 0):.1f} |")
    if "w_defaults" in results:
        runs = results["w_defaults"]
        levels = [r["concurrency"] for r in runs["localxai"]["result"]]
        lines += ["", "| W-defaults tok/s | " + " | ".join(f"c={c}" for c in levels) + " |"]
        lines += ["|---|" + "---|" * len(levels)]
        for name, run in runs.items():
            lines.append(f"| {name} | " + " | ".join(f"{r['output_tok_s']:.1f}" for r in run["result"]) + " |")
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Issue 17's targets, as ratios localxai / llama-server, each with met or not."""
    out: dict[str, Any] = {}
    if "w_conv" in results:
        ours, theirs = (results["w_conv"][k]["result"] for k in ("localxai", "llama-server"))
        ttft = ours["ttft_p50_ms"] / theirs["ttft_p50_ms"]
        tok = ours["output_tok_s"] / theirs["output_tok_s"]
        out["w_conv_ttft_p50_ratio"] = {"value": ttft, "target": "<= 0.7", "met": ttft <= 0.7}
        out["w_conv_tok_s_ratio"] = {"value": tok, "target": ">= 1.1", "met": tok >= 1.1}
    if "w_quote" in results:
        runs = results["w_quote"]

        def at(name: str, c: int) -> float:
            return float(next(r["output_tok_s"] for r in runs[name]["result"] if r["concurrency"] == c))

        best = max((k for k in runs if k.startswith("llama-server") and "none" not in k), key=lambda k: at(k, 1))
        vs_best = at("localxai", 1) / at(best, 1)
        vs_off = at("localxai", 1) / at("localxai --speculation off", 1)
        out["w_quote_vs_best_llama_server_c1"] = {"value": vs_best, "best": best, "target": ">= 1.3",
                                                  "met": vs_best >= 1.3}  # fmt: skip
        out["w_quote_vs_speculation_off_c1"] = {"value": vs_off, "target": ">= 1.5", "met": vs_off >= 1.5}
        out["w_quote_vs_best_llama_server_c4"] = {"value": at("localxai", 4) / at(best, 4)}
    if "w_defaults" in results:
        ours = {r["concurrency"]: r for r in results["w_defaults"]["localxai"]["result"]}
        theirs = {r["concurrency"]: r for r in results["w_defaults"]["llama-server"]["result"]}
        ratios = {str(c): ours[c]["output_tok_s"] / theirs[c]["output_tok_s"] for c in ours}
        out["w_defaults_ratios"] = {
            "value": ratios,
            "target": ">= 1.0 everywhere, >= 1.2 at 16",
            "met": all(v >= 1.0 for v in ratios.values()) and ratios.get("16", 0) >= 1.2,
        }
        if "localxai --speculation off" in results["w_defaults"]:
            off = {r["concurrency"]: r for r in results["w_defaults"]["localxai --speculation off"]["result"]}
            out["w_defaults_speculation_on_over_off"] = {
                str(c): ours[c]["output_tok_s"] / off[c]["output_tok_s"] for c in ours
            }
    return out


if __name__ == "__main__":
    main()
