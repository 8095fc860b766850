"""The workloads xAI clients send, against localxai and llama-server in one run (`make bench`).

- W-conv: 32 conversations x 4 turns behind a shared ~1,000-token system prompt, ~100-token user
  turns, 64-token answers, 8 clients, 8 slots. Turns go round the conversations (turn 1 of every
  conversation, then turn 2...), so each conversation's KV has to survive 31 others between turns.
- W-fit: conversations that fit the slots: 16 x 3 turns behind a ~700-token system prompt, 8 clients,
  each continuing its conversation right after the last answer (then taking the next conversation).
- W-mid: in between: 12 conversations (1.5x the 8 slots) x 3 turns, the ~700-token prompt, turns
  round the conversations.
- W-quote: answers that repeat their input (a ~600-token code file to rewrite), 256 output tokens,
  concurrency 1 and 4; llama-server with each of its n-gram speculation modes. Then each server's
  greedy answers to the first round's prompts with logprobs: where two servers' texts part, the
  margin between the two likeliest tokens says whether it was a near-tie (targets()).
- W-defaults: both servers with no tuning flags, the fresh-prompt workload at 1, 4, 8, 16.
- Ceiling: raw llama_decode tokens/s for batches of 1, 4, 8 and 16 one-token sequences, no server.

Every result keeps both sides' exact command lines, prompt token counts and memory (RSS now and the
process's peak, read from /proc when the workload ends). The servers of W-quote
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from load import RequestResult, client, percentile, stream_one
from run import HEADERS, MODEL, grpc, http_port, memory, server, servers

QUOTE_TOKENS = 256
GREEDY_VARIANTS = [10, 11, 12]  # c = 1's first round: compared token by token, with logprobs


@dataclass(frozen=True)
class Shape:
    """A conversation workload: how many, how long, and in which order their turns come."""

    conversations: int
    turns: int
    rules: int  # of the system prompt: 24 is about 1,000 tokens, 16 about 700
    order: str  # "round": turn 1 of every conversation, then turn 2...; "continue": a client keeps its own
    clients: int = 8


W_CONV = Shape(32, 4, 24, "round")
W_FIT = Shape(16, 3, 16, "continue")
W_MID = Shape(12, 3, 16, "round")
SHAPES = {"w_conv": W_CONV, "w_fit": W_FIT, "w_mid": W_MID}
ALL_SUITES = "ceiling,conv,fit,mid,quote,defaults"


# -- W-conv ----------------------------------------------------------------------------------------

TOPICS = [
    "refunds", "lost luggage", "seat upgrades", "pet travel", "visa rules", "connecting flights", "delays",
    "meal options", "loyalty points", "child fares", "sports equipment", "medical devices", "group bookings",
    "name changes", "cancellations", "lounges",
]  # fmt: skip


def system_prompt(count: int = 24) -> str:
    """Airline support policy (about 40 tokens a rule), the same for every conversation."""
    rules = [
        f"Policy {i + 1} on {TOPICS[i % len(TOPICS)]}: agents confirm the booking reference, check the fare "
        f"conditions that apply to {TOPICS[(i * 7) % len(TOPICS)]}, quote the exact amount in euros, and never "
        "promise what the conditions do not allow."
        for i in range(count)
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


async def w_conv(url: str, shape: Shape = W_CONV) -> dict[str, Any]:
    system = system_prompt(shape.rules)
    count, turns = shape.conversations, shape.turns
    histories: list[list[dict[str, str]]] = [[{"role": "system", "content": system}] for _ in range(count)]
    results: dict[tuple[int, int], RequestResult] = {}

    async def turn(http: httpx.AsyncClient, t: int, conv: int) -> None:
        history = histories[conv]
        history.append({"role": "user", "content": user_turn(conv, t)})
        body = {"model": MODEL, "messages": list(history), "max_tokens": 64, "temperature": 0.7, "seed": conv}
        out = await stream_one(http, url, body)
        history.append({"role": "assistant", "content": out.text})
        results[t, conv] = out

    if shape.order == "round":
        done = [asyncio.Event() for _ in range(count * turns)]
        pending = [(t, c) for t in range(turns) for c in range(count)]

        async def worker(http: httpx.AsyncClient) -> None:
            while pending:
                t, conv = pending.pop(0)
                if t:
                    await done[(t - 1) * count + conv].wait()
                await turn(http, t, conv)
                done[t * count + conv].set()

    else:  # "continue": a client takes a conversation and asks its next turn as soon as an answer is in
        left = list(range(count))

        async def worker(http: httpx.AsyncClient) -> None:
            while left:
                conv = left.pop(0)
                for t in range(turns):
                    await turn(http, t, conv)

    async with client(shape.clients, HEADERS) as http:
        await stream_one(http, url, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(shape.clients)))
        wall = time.perf_counter() - start
    ttfts = [r.ttft for r in results.values()]
    per_turn = []
    for t in range(turns):
        rows = [results[t, c] for c in range(count)]
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
        "shape": asdict(shape),
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
    variants = [v + 10 * concurrency + 100 * round_ for v in range(max(3, 2 * concurrency))]
    results: dict[int, RequestResult] = {}
    async with client(concurrency, HEADERS) as http:
        await stream_one(http, url, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        queue = list(variants)
        start = time.perf_counter()

        async def worker() -> None:
            while queue:
                variant = queue.pop(0)
                results[variant] = await stream_one(http, url, quote_body(variant))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    tokens = sum(r.tokens for r in results.values())
    first = results[variants[0]]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "output_tokens": tokens,
        "wall_s": wall,
        "output_tok_s": tokens / wall,
        "prompt_tokens": first.prompt_tokens,
        "sample_output": first.text[:600],
        # Greedy: every server must answer each variant with the same text (compared in targets()).
        "outputs": {str(v): results[v].text for v in variants},
    }


async def greedy_tokens(url: str, variants: list[int]) -> dict[str, list[list[Any]]]:
    """Each variant's greedy answer token by token, with the margin between its two likeliest tokens
    (logprob): where two servers' texts part, a margin below NEAR_TIE on either side is a near-tie."""
    out: dict[str, list[list[Any]]] = {}
    async with client(1, HEADERS) as http:
        for variant in variants:
            body = {**quote_body(variant), "logprobs": True, "top_logprobs": 2}
            response = await http.post(url, json=body)
            response.raise_for_status()
            content = response.json()["choices"][0]["logprobs"]["content"]
            tokens = []
            for item in content:
                top = sorted((t["logprob"] for t in item["top_logprobs"]), reverse=True)
                tokens.append([item["token"], round(top[0] - top[1], 4) if len(top) > 1 else None])
            out[str(variant)] = tokens
    return out


# -- Ceiling ---------------------------------------------------------------------------------------


def ceiling(
    model_path: Path, threads: int, batches: tuple[int, ...] = (1, 4, 8, 16), steps: int = 48
) -> dict[str, float]:
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
    parser.add_argument("--suites", default=ALL_SUITES)
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
            held = memory(url)
        print(f"  {json.dumps(out, default=str)[:400]} {held}", flush=True)
        return {"command": full, "result": out, "memory": held}

    if "ceiling" in suites:
        results["ceiling_tok_s"] = ceiling(model, args.threads)
        print(f"ceiling: {results['ceiling_tok_s']}", flush=True)
    conv_ours = [*tuned_ours, "--parallel", "8", "--ctx-size", "2048"]
    conv_theirs = [*tuned_theirs, "-np", "8", "-c", str(8 * 2048), "--cache-ram", "8192"]
    for suite, key in (("conv", "w_conv"), ("fit", "w_fit"), ("mid", "w_mid")):
        if suite in suites:

            def conversations(url: str, shape: Shape = SHAPES[key]) -> dict[str, Any]:
                return asyncio.run(w_conv(url, shape))

            results[key] = {
                "localxai": serve(f"localxai {suite}", conv_ours, conversations),
                "llama-server": serve(f"llama-server {suite}", conv_theirs, conversations),
            }

    def side_by_side(commands: dict[str, list[str]], work: Any) -> dict[str, Any]:
        """The servers up at once, `work` alternating between them (see run.alternate)."""
        with servers(commands, logs) as up:
            out = work({name: url for name, (url, _) in up.items()})
            held = {name: memory(url) for name, (url, _) in up.items()}
        return {name: {"command": up[name][1], "result": out[name], "memory": held[name]} for name in commands}

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
        greedy: dict[str, Any] = {}

        def quote_and_greedy(urls: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
            out = quote(urls)
            # Both servers see the same prompt tokens (prompt_tokens in each result); their greedy texts
            # are compared token by token with the margins where they part (targets()).
            greedy.update({name: asyncio.run(greedy_tokens(url, GREEDY_VARIANTS)) for name, url in urls.items()})
            return out

        results["w_quote"] = side_by_side(plan, quote_and_greedy)
        results["w_quote_greedy"] = greedy
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
    # Only a whole run is the latest (the README's tables come from it); a part is kept under its stamp.
    whole = suites == set(ALL_SUITES.split(","))
    for name in (f"workloads-{stamp}.json", *(["workloads-latest.json"] if whole else [])):
        (out / name).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["targets"], indent=2))
    print(markdown(results))


CONVERSATION_TABLES = (
    ("w_conv", "W-conv (32 x 4, round)"),
    ("w_fit", "W-fit (16 x 3, fits the slots)"),
    ("w_mid", "W-mid (12 x 3, round)"),
)


def ceiling_at(results: dict[str, Any], batch: int) -> float | None:
    """The raw llama_decode tokens/s at the largest measured batch not above `batch`."""
    measured = {int(k): v for k, v in results.get("ceiling_tok_s", {}).items()}
    fitting = [b for b in measured if b <= batch]
    return measured[max(fitting)] if fitting else None


def share(tok_s: float, ceiling: float | None) -> str:
    return f"{tok_s / ceiling:.2f}" if ceiling else "-"


def peak(run: dict[str, Any]) -> str:
    held = run.get("memory")
    return f"{held['peak_rss_mib']:.0f}" if held else "-"


def markdown(results: dict[str, Any]) -> str:
    """The README's tables: each workload, both servers, the share of the raw decode ceiling, peak RSS."""
    lines = []
    if "ceiling_tok_s" in results:
        ceiling = results["ceiling_tok_s"]
        lines += ["Raw `llama_decode` ceiling: " + ", ".join(f"{v:.0f} tok/s at batch {k}" for k, v in ceiling.items())]
    for key, title in CONVERSATION_TABLES:
        if key not in results:
            continue
        clients = results[key]["localxai"]["result"]["shape"]["clients"]
        lines += [
            "",
            f"| {title} | output tok/s | of the ceiling | TTFT p50 (ms) | TTFT p99 (ms) | cached share by turn "
            "| peak RSS (MiB) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ("localxai", "llama-server"):
            run = results[key][name]
            r = run["result"]
            shares = " / ".join(f"{t['cached_share']:.2f}" for t in r["per_turn"])
            lines.append(
                f"| {name} | {r['output_tok_s']:.1f} | {share(r['output_tok_s'], ceiling_at(results, clients))} "
                f"| {r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} | {shares} | {peak(run)} |"
            )
    if "w_quote" in results:
        lines += ["", "| W-quote | tok/s at c=1 | of the ceiling | tok/s at c=4 | of the ceiling | peak RSS (MiB) |"]
        lines += ["|---|---|---|---|---|---|"]
        for name, run in results["w_quote"].items():
            by = {r["concurrency"]: r["output_tok_s"] for r in run["result"]}
            one, four = by.get(1, 0), by.get(4, 0)
            lines.append(
                f"| {name} | {one:.1f} | {share(one, ceiling_at(results, 1))} | {four:.1f} "
                f"| {share(four, ceiling_at(results, 4))} | {peak(run)} |"
            )
    if "w_defaults" in results:
        runs = results["w_defaults"]
        levels = [r["concurrency"] for r in runs["localxai"]["result"]]
        lines += ["", "| W-defaults tok/s | " + " | ".join(f"c={c}" for c in levels) + " | peak RSS (MiB) |"]
        lines += ["|---|" + "---|" * (len(levels) + 1)]
        for name, run in runs.items():
            cells = [f"{r['output_tok_s']:.1f} ({share(r['output_tok_s'], ceiling_at(results, r['concurrency']))})"
                     for r in run["result"]]  # fmt: skip
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {peak(run)} |")
        lines += ["", "(in brackets: the share of the raw decode ceiling at that batch)"]
    return "\n".join(lines)


NEAR_TIE = 0.5  # logprob margin between the two likeliest tokens (tests/test_speculation.py)


def parting(ours: dict[str, list[list[Any]]], theirs: dict[str, list[list[Any]]]) -> dict[str, Any]:
    """Where two servers' greedy answers to the same prompts first differ, and whether each parting is
    a near-tie (the two likeliest tokens closer than NEAR_TIE on either side), which llama.cpp's kernels
    may settle either way (docs/engine.md, Determinism)."""
    partings = {}
    for variant in sorted(set(ours) & set(theirs)):
        a, b = ours[variant], theirs[variant]
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x[0] != y[0]), None)
        if at is None:
            partings[variant] = None if len(a) == len(b) else {"at": min(len(a), len(b)), "near_tie": False}
            continue
        margins = [m for m in (a[at][1], b[at][1]) if m is not None]
        partings[variant] = {"at": at, "margin": min(margins, default=None),
                             "near_tie": bool(margins) and min(margins) < NEAR_TIE}  # fmt: skip
    return {
        "identical": sum(1 for p in partings.values() if p is None),
        "parted_at_near_tie": sum(1 for p in partings.values() if p is not None and p["near_tie"]),
        "parted_elsewhere": sum(1 for p in partings.values() if p is not None and not p["near_tie"]),
        "compared": len(partings),
        "partings": partings,
    }


def met(value: float, target: str) -> dict[str, Any]:
    """A ratio against its target (">= 1.1", "<= 0.7")."""
    op, bound = target.split()
    return {"value": value, "target": target, "met": value >= float(bound) if op == ">=" else value <= float(bound)}


def same_texts(ours: dict[str, str], theirs: dict[str, str]) -> dict[str, Any]:
    """Greedy answers to the same prompts: how many of those both servers answered are identical."""
    common = sorted(set(ours) & set(theirs))
    same = [v for v in common if ours[v] == theirs[v]]
    return {"identical": len(same), "compared": len(common), "met": bool(common) and len(same) == len(common)}


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Issue 32's targets, as ratios localxai / llama-server, each with met or not; and the memory of each
    workload's servers (localxai's peak RSS at or below llama-server's for the same slots and context)."""
    out: dict[str, Any] = {}
    conversation_targets = {"w_conv": (">= 1.5", "<= 0.3"), "w_fit": (">= 1.1", "<= 0.7"), "w_mid": (None, None)}
    for key, (tok_target, ttft_target) in conversation_targets.items():
        if key not in results:
            continue
        ours, theirs = (results[key][k]["result"] for k in ("localxai", "llama-server"))
        tok = ours["output_tok_s"] / theirs["output_tok_s"]
        ttft = ours["ttft_p50_ms"] / theirs["ttft_p50_ms"]
        out[f"{key}_tok_s_ratio"] = met(tok, tok_target) if tok_target else {"value": tok}
        out[f"{key}_ttft_p50_ratio"] = met(ttft, ttft_target) if ttft_target else {"value": ttft}
    if "w_quote" in results:
        runs = results["w_quote"]

        def at(name: str, c: int) -> float:
            return float(next(r["output_tok_s"] for r in runs[name]["result"] if r["concurrency"] == c))

        def outputs(name: str, c: int) -> dict[str, str]:
            return dict(next(r for r in runs[name]["result"] if r["concurrency"] == c).get("outputs", {}))

        modes = [k for k in runs if k.startswith("llama-server") and "none" not in k]
        best = max(modes, key=lambda k: at(k, 1))
        best4 = max(modes, key=lambda k: at(k, 4))
        text = same_texts(outputs("localxai", 1), outputs(best, 1))
        out["w_quote_greedy_text_vs_best_c1"] = text
        ratio = at("localxai", 1) / at(best, 1)
        out["w_quote_vs_best_llama_server_c1"] = {**met(ratio, ">= 1.3"), "best": best,
                                                  "met": ratio >= 1.3 and text["met"]}  # fmt: skip
        out["w_quote_vs_best_llama_server_c4"] = {**met(at("localxai", 4) / at(best4, 4), ">= 1.0"), "best": best4}
        out["w_quote_vs_speculation_off_c1"] = {"value": at("localxai", 1) / at("localxai --speculation off", 1)}
        if greedy := results.get("w_quote_greedy"):
            # Where greedy texts part, and whether at a near-tie: llama.cpp's logits for a row depend on
            # the pass it is decoded in, so each server's own modes part from each other too.
            pairs = [("localxai", best), ("localxai", "llama-server --spec-type none"),
                     ("localxai", "localxai --speculation off"),
                     ("localxai --speculation off", "llama-server --spec-type none"),
                     ("llama-server --spec-type none", best)]  # fmt: skip
            out["w_quote_greedy_partings"] = {
                f"{a} vs {b}": parting(greedy[a], greedy[b]) for a, b in pairs if a in greedy and b in greedy
            }
    if "w_defaults" in results:
        ours = {r["concurrency"]: r for r in results["w_defaults"]["localxai"]["result"]}
        theirs = {r["concurrency"]: r for r in results["w_defaults"]["llama-server"]["result"]}
        ratios = {str(c): ours[c]["output_tok_s"] / theirs[c]["output_tok_s"] for c in ours}
        out["w_defaults_ratios"] = {"value": ratios, "target": ">= 1.0 everywhere",
                                    "met": all(v >= 1.0 for v in ratios.values())}  # fmt: skip
        if "localxai --speculation off" in results["w_defaults"]:
            off = {r["concurrency"]: r for r in results["w_defaults"]["localxai --speculation off"]["result"]}
            out["w_defaults_speculation_on_over_off"] = {
                str(c): ours[c]["output_tok_s"] / off[c]["output_tok_s"] for c in ours
            }
    memory_pairs = {"w_quote": "llama-server --spec-type none", "w_defaults": "llama-server"}
    for key in ("w_conv", "w_fit", "w_mid", "w_quote", "w_defaults"):
        runs = results.get(key, {})
        theirs_name = memory_pairs.get(key, "llama-server")
        if "memory" in runs.get("localxai", {}) and "memory" in runs.get(theirs_name, {}):
            ratio = runs["localxai"]["memory"]["peak_rss_mib"] / runs[theirs_name]["memory"]["peak_rss_mib"]
            # Untuned, the two take different slots and context (W-defaults): the ratio is reported alone.
            out[f"{key}_peak_rss_ratio"] = {"value": ratio} if key == "w_defaults" else met(ratio, "<= 1.0")
    return out


if __name__ == "__main__":
    main()
