"""Stored conversations: a three-turn conversation of about 2,000 tokens continued with
`previous_response_id`, against the same conversation resent whole through chat completions.
Reports the time to first token of each turn (streamed) and the cached prompt tokens.
Target: continued turns <= 0.3x the first turn's TTFT. Writes bench/results/responses-*.json.
Not a test: run it on demand (`.venv/bin/python bench/responses.py`), alone on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from run import HEADERS, KEY, MODEL, free_port, server

HERE = Path(__file__).parent
SYSTEM = (
    "You are the assistant of a travel agency. Answer briefly and precisely. You know the opening hours, "
    "prices and rules of every museum, station and airport in Europe, and you quote them exactly. "
)
TURNS = ["Which museums in Paris open on Mondays?", "And in Rome?", "Which of them is cheapest?"]


def first_token(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """(seconds to the first text, the final usage or response object) of one streamed request."""
    started, ttft, last = time.perf_counter(), None, {}
    with client.stream("POST", url, json=body, headers=HEADERS, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if ttft is None and (event.get("type") == "response.output_text.delta" or event.get("choices")):
                ttft = time.perf_counter() - started
            last = event
    return ttft or time.perf_counter() - started, last


def responses_run(client: httpx.Client, base: str, system: str, max_tokens: int) -> list[dict[str, Any]]:
    turns, previous = [], None
    for i, text in enumerate(TURNS):
        body: dict[str, Any] = {"model": MODEL, "input": text, "stream": True, "max_output_tokens": max_tokens}
        body.update({"instructions": system} if i == 0 else {"previous_response_id": previous})
        ttft, last = first_token(client, base + "/v1/responses", body)
        response = last["response"]
        previous = response["id"]
        usage = response["usage"]
        turns.append({"ttft_s": ttft, "input_tokens": usage["input_tokens"],
                      "cached_tokens": usage["input_tokens_details"]["cached_tokens"]})  # fmt: skip
    return turns


def chat_run(client: httpx.Client, base: str, system: str, max_tokens: int) -> list[dict[str, Any]]:
    turns, messages = [], [{"role": "system", "content": system}]
    for text in TURNS:
        messages.append({"role": "user", "content": text})
        body = {"model": MODEL, "messages": messages, "stream": True, "max_tokens": max_tokens,
                "stream_options": {"include_usage": True}}  # fmt: skip
        answer = []
        with client.stream("POST", base + "/v1/chat/completions", json=body, headers=HEADERS, timeout=600) as r:
            started, ttft, usage = time.perf_counter(), None, {}
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    ttft = ttft or time.perf_counter() - started
                    answer.append(chunk["choices"][0]["delta"]["content"])
                usage = chunk.get("usage") or usage
        messages.append({"role": "assistant", "content": "".join(answer)})
        turns.append({"ttft_s": ttft or 0.0, "input_tokens": usage["prompt_tokens"],
                      "cached_tokens": usage["prompt_tokens_details"]["cached_tokens"]})  # fmt: skip
    return turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--system-tokens", type=int, default=2000, help="about this many prompt tokens")
    args = parser.parse_args()
    system = SYSTEM * max(1, args.system_tokens // 40)
    port = free_port()
    (HERE / ".cache").mkdir(exist_ok=True)
    log = HERE / ".cache" / "responses-server.log"
    database = f"sqlite:///{HERE / '.cache' / 'responses.db'}"
    cmd = [sys.executable, "-m", "localxai", "serve", "--port", str(port), "--grpc-port", "0", "--api-key", KEY,
           "--ctx-size", "4096", "--parallel", "4", "--database-url", database]  # fmt: skip
    runs: dict[str, list[list[dict[str, Any]]]] = {"responses": [], "chat": []}
    with server(cmd, port, log) as url, httpx.Client() as client:
        base = url.split("/v1/")[0]
        for repeat in range(args.repeats):
            salt = f"(session {repeat}) "  # a fresh conversation each time: turn 1 is cold
            runs["responses"].append(responses_run(client, base, salt + system, args.max_tokens))
            runs["chat"].append(chat_run(client, base, salt + "(chat) " + system, args.max_tokens))
    summary = {}
    for api, repeats in runs.items():
        per_turn = [statistics.median(r[t]["ttft_s"] for r in repeats) for t in range(len(TURNS))]
        summary[api] = {
            "ttft_s_median_per_turn": per_turn,
            "continued_vs_first": [round(t / per_turn[0], 3) for t in per_turn[1:]],
            "input_tokens": [repeats[-1][t]["input_tokens"] for t in range(len(TURNS))],
            "cached_tokens": [repeats[-1][t]["cached_tokens"] for t in range(len(TURNS))],
        }
    target = max(summary["responses"]["continued_vs_first"]) <= 0.3
    result = {"date": dt.datetime.now().isoformat(timespec="seconds"), "args": vars(args), "summary": summary,
              "target_continued_le_0_3x_first": target, "runs": runs}  # fmt: skip
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = HERE / "results" / f"responses-{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2), f"\ntarget (continued <= 0.3x first): {'met' if target else 'not met'}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
