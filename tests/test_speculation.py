"""N-gram speculative decoding and the host-memory prompt cache, on the real model in-process."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from localxai.chat import (
    ChatRequest,
    Event,
    Finished,
    FormatType,
    Message,
    ResponseFormat,
    Role,
    Sampling,
    TextDelta,
    TextPart,
    TokenLogprob,
    Usage,
    UsageReport,
)
from localxai.engines.base import GenerationRequest
from localxai.engines.llamacpp.default_model import default_model_path
from localxai.engines.llamacpp.engine import LlamaCppEngine
from localxai.errors import ResourceExhausted
from localxai.specs import EmbeddedModel, EngineTuning

MODEL = "m"
CODE = """def parse_config(path):
    with open(path) as handle:
        lines = handle.read().splitlines()
    config = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        config[key.strip()] = value.strip()
    return config
"""


def request(text: str, *, system: str | None = None, **sampling: object) -> GenerationRequest:
    messages = [Message(Role.SYSTEM, (TextPart(system),))] if system else []
    messages.append(Message(Role.USER, (TextPart(text),)))
    n = int(sampling.pop("n", 1))  # type: ignore[call-overload]
    fmt = sampling.pop("response_format", ResponseFormat())
    logprobs = bool(sampling.pop("logprobs", False))
    chat = ChatRequest(
        model=MODEL,
        messages=tuple(messages),
        sampling=Sampling(**{"temperature": 0, "max_tokens": 48, **sampling}),  # type: ignore[arg-type]
        n=n,
        response_format=fmt,  # type: ignore[arg-type]
        logprobs=logprobs,
        top_logprobs=2 if logprobs else None,
    )
    return GenerationRequest(chat, model=MODEL)


async def run(engine: LlamaCppEngine, req: GenerationRequest) -> tuple[list[str], list[str], Usage]:
    return await collect(await engine.generate(req), req.chat.n)


async def collect(events: AsyncIterator[Event], n: int) -> tuple[list[str], list[str], Usage]:
    texts = [""] * n
    reasons = [""] * n
    usage = Usage()
    async for event in events:
        if isinstance(event, TextDelta):
            texts[event.index] += event.text
        elif isinstance(event, Finished):
            reasons[event.index] = event.reason.value
        elif isinstance(event, UsageReport):
            usage = event.usage
    return texts, reasons, usage


@pytest.fixture(scope="module")
def model_path() -> Path:
    return default_model_path(Path.home() / ".cache" / "localxai" / "models")


async def make_engine(path: Path, *, parallel: int = 2, **options: object) -> AsyncIterator[LlamaCppEngine]:
    options = {"cache_ram_mib": 0, **options}
    tuning = EngineTuning(ctx_size=2048, threads=2, parallel=parallel, **options)  # type: ignore[arg-type]
    engine = LlamaCppEngine(EmbeddedModel(MODEL, tuning=tuning), path)
    try:
        yield engine
    finally:
        await engine.close()


QUOTING = [
    request(f"Here is a file:\n{CODE}\nRepeat the file exactly:\n", max_tokens=96, logprobs=True),
    request(f"{CODE}\n{CODE}", max_tokens=64, stop=("return",), logprobs=True),
    request(f"Copy this code.\n{CODE}", max_tokens=7, logprobs=True),
    # Two choices copying at once: they guess together (see the test below), the same output.
    request(f"Here is a file:\n{CODE}\nRepeat the file exactly:\n", n=2, max_tokens=48, logprobs=True),
    request(
        "Spell the list again: red, green, blue, yellow, red, green, blue, yellow, red,", max_tokens=33, logprobs=True
    ),
    request(
        "Give the config as JSON: name=alpha, size=3, name=alpha, size=3.",
        max_tokens=64,
        logprobs=True,
        response_format=ResponseFormat(
            FormatType.JSON_SCHEMA,
            json.dumps({"type": "object", "properties": {"name": {"type": "string"}, "size": {"type": "integer"}}}),
        ),
    ),
]


# llama.cpp's CPU kernels are not batch-invariant: a position verified in a step of several rows gets
# logits that differ from the same position decoded alone — on an AMD EPYC build, by up to 0.5-1.9 in
# the largest logit of the vocabulary and by about 0.2 between the two likeliest tokens (docs/engine.md).
# Greedy outputs are equal token for token, except that where the two likeliest tokens are closer than
# this (in logprob) either may win; from there on the texts may differ. A draft wrongly accepted would
# show where the model is sure (margins of 2-5 on quoted text), far above this.
NEAR_TIE = 0.5


async def tokens(engine: LlamaCppEngine, req: GenerationRequest) -> tuple[list[list[TokenLogprob]], Usage]:
    """Each choice's generated tokens with their two likeliest alternatives, and the usage."""
    out: list[list[TokenLogprob]] = [[] for _ in range(req.chat.n)]
    usage = Usage()
    async for event in await engine.generate(req):
        if isinstance(event, TextDelta):
            out[event.index] += event.logprobs
        elif isinstance(event, UsageReport):
            usage = event.usage
    return out, usage


def divergence(with_drafts: list[TokenLogprob], without: list[TokenLogprob]) -> int | None:
    """Where two greedy outputs first differ (None: nowhere); asserts the difference is a near-tie."""
    for i, (a, b) in enumerate(zip(with_drafts, without, strict=False)):
        if a.bytes != b.bytes:
            margin = abs(b.top[0].logprob - b.top[1].logprob)
            assert margin < NEAR_TIE, f"token {i}: {a.token!r} != {b.token!r}, but not a near-tie ({margin:.4f})"
            return i
    assert len(with_drafts) == len(without)
    return None


async def test_greedy_output_is_the_same_with_and_without_speculation(model_path: Path) -> None:
    results = {}
    stats = {}
    for speculation in (False, True):
        async for engine in make_engine(model_path, speculation=speculation):
            results[speculation] = [await tokens(engine, r) for r in QUOTING]
            stats[speculation] = engine.stats()[MODEL]
    exact = 0
    for (with_drafts, usage_on), (without, usage_off) in zip(results[True], results[False], strict=True):
        where = [divergence(a, b) for a, b in zip(with_drafts, without, strict=True)]
        if all(w is None for w in where):
            assert usage_on == usage_off
            exact += 1
    # Near-ties are rare: most outputs are equal to the last token.
    assert exact >= len(QUOTING) - 1, exact
    assert stats[False]["draft_tokens"] == 0
    # Not vacuous: the quoting prompts were mostly decoded from accepted guesses.
    assert stats[True]["draft_tokens_accepted"] > 100, stats[True]


async def test_choices_copying_at_once_guess_together(model_path: Path) -> None:
    """Beside another generating sequence a guess of unequal length would need a llama.cpp pass of its
    own, which the other waits for (docs/engine.md): two choices copying at once guess as many tokens
    each, in one pass, once their matches reach far enough back (the equality test above checks their
    output); two that write stories guess nothing."""
    two_choices = QUOTING[3]
    assert two_choices.chat.n == 2
    async for engine in make_engine(model_path, speculation=True):
        await tokens(engine, two_choices)
        copied = engine.stats()[MODEL]
        assert copied["draft_tokens"] > 0 and copied["draft_tokens"] % 2 == 0  # as many for each, every step
        assert copied["draft_tokens_accepted"] > 0.8 * copied["draft_tokens"]
        stories = request("Write a story about a dragon.", n=2, temperature=0.9, seed=3, max_tokens=48)
        await tokens(engine, stories)
        told = engine.stats()[MODEL]
        drafted = told["draft_tokens"] - copied["draft_tokens"]
        right = told["draft_tokens_accepted"] - copied["draft_tokens_accepted"]
        assert drafted <= 16 and right >= 0.75 * drafted  # few, and only where a match reached far back


async def test_seeded_sampling_works_with_speculation(model_path: Path) -> None:
    async for engine in make_engine(model_path, speculation=True):
        req = request(f"Repeat:\n{CODE}", temperature=0.8, seed=7, max_tokens=64)
        first = await run(engine, req)
        again = await run(engine, req)  # from the prefix cache, so only the texts compare
        assert first[:2] == again[:2] and first[2].completion_tokens == 64


async def test_cancellation_and_429_with_both_features_on(model_path: Path) -> None:
    async for engine in make_engine(model_path, parallel=1, speculation=True, cache_ram_mib=64, max_queue=1):
        long = request(f"Repeat forever:\n{CODE}", max_tokens=900)
        events = await engine.generate(long)
        got = [await anext(events) for _ in range(3)]  # noqa: F841 - the stream is running
        waiting = await engine.generate(request("Say hi.", max_tokens=4))
        with pytest.raises(ResourceExhausted):
            await engine.generate(request("b"))
        await events.aclose()  # the client went away: its slot goes to the waiting request
        texts, reasons, _ = await collect(waiting, 1)
        assert texts[0] and reasons == ["length"]
        assert engine.stats()[MODEL]["running"] == 0


async def test_evicted_conversation_is_restored_from_host_memory(model_path: Path) -> None:
    system = "You are a careful assistant. " + " ".join(f"Rule {i}: answer briefly." for i in range(40))
    first = request("What is the capital of France?", system=system, max_tokens=16)
    other = request("Name a colour. " + " ".join(f"Fact {i}." for i in range(60)), max_tokens=4)
    outcomes = {}
    for cache in (0, 64):
        async for engine in make_engine(model_path, parallel=1, speculation=False, cache_ram_mib=cache):
            solo = await run(engine, first)
            await run(engine, other)  # takes the only slot: the first conversation's KV is evicted
            again = await run(engine, first)
            outcomes[cache] = (solo, again, engine.stats()[MODEL])
    solo, again, stats = outcomes[64]
    assert again[0] == solo[0]  # the same greedy continuation from restored KV
    prompt = again[2].prompt_tokens
    assert again[2].cached_tokens == prompt - 1  # all but the last prompt token, which is always decoded
    assert stats["host_cache_restores"] == 1 and stats["host_cache_bytes"] > 0
    _solo0, again0, stats0 = outcomes[0]
    assert again0[0] == solo[0] and again0[2].cached_tokens < 8  # without it: decoded again (but the
    # turn markers both prompts start with), and said so
    assert stats0["host_cache_restores"] == 0


async def test_host_memory_budget_is_respected(model_path: Path) -> None:
    budget_mib = 4
    rng = random.Random(5)
    words = [
        "apple",
        "river",
        "stone",
        "cloud",
        "lamp",
        "violin",
        "forest",
        "engine",
        "paper",
        "silver",
        "garden",
        "window",
    ]
    async for engine in make_engine(model_path, parallel=2, speculation=True, cache_ram_mib=budget_mib):
        peak = 0.0
        for i in range(200):
            text = f"Note {i}: " + " ".join(rng.choice(words) for _ in range(70 + i % 40))
            await run(engine, request(text, max_tokens=1))
            peak = max(peak, engine.stats()[MODEL]["host_cache_bytes"])
        stats = engine.stats()[MODEL]
        assert 0 < peak <= budget_mib << 20
        assert stats["host_cache_bytes"] <= budget_mib << 20
        held = engine.host_cache_bytes
        assert held > 0
        engine.limit_host_cache(held - 1)  # the model pool's share for it shrinks (another model loads)
        assert engine.host_cache_bytes < held
        for i in range(20):
            await run(engine, request(f"Later {i}: " + " ".join(rng.choice(words) for _ in range(80)), max_tokens=1))
            assert engine.host_cache_bytes < held
        engine.limit_host_cache(64 << 20)  # never above its own --cache-ram
        assert engine._scheduler._host is not None and engine._scheduler._host.budget == budget_mib << 20


async def test_restored_prefix_serves_many_concurrent_conversations(model_path: Path) -> None:
    """More conversations than slots, each continued: answers match a cache-less engine's."""
    turns = [request(f"Conversation {c}: " + "tell me about the sea. " * 30, max_tokens=8) for c in range(5)]
    outputs = {}
    for cache in (0, 64):
        async for engine in make_engine(model_path, parallel=2, speculation=True, cache_ram_mib=cache):
            await asyncio.gather(*(run(engine, t) for t in turns))
            outputs[cache] = [(await run(engine, t))[0] for t in turns]
            if cache:
                assert engine.stats()[MODEL]["host_cache_restores"] >= 1
    assert outputs[0] == outputs[64]
