"""The embedded engine in-process: a generation nobody reads is not left running."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from pathlib import Path

from localxai.chat import ChatRequest, Finished, Message, Role, Sampling, TextPart
from localxai.engines.base import GenerationRequest
from localxai.engines.llamacpp.default_model import default_model_path
from localxai.engines.llamacpp.engine import LlamaCppEngine
from localxai.specs import EmbeddedModel, EngineTuning


async def test_dropped_generation_is_cancelled() -> None:
    path = default_model_path(Path.home() / ".cache" / "localxai" / "models")
    tuning = EngineTuning(ctx_size=2048, threads=2, parallel=1, cache_ram_mib=0)
    engine = LlamaCppEngine(EmbeddedModel("m", tuning=tuning), path)
    try:
        chat = ChatRequest(
            model="m",
            messages=(Message(Role.USER, (TextPart("Write a very long story."),)),),
            sampling=Sampling(temperature=0, max_tokens=2000),
        )
        request = GenerationRequest(chat, model="m")
        events = await engine.generate(request)
        deadline = time.monotonic() + 10
        while engine.stats()["m"]["running"] == 0:  # the scheduler took it
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        del events  # never iterated: no `finally` will run
        gc.collect()
        while engine.stats()["m"]["running"] > 0:  # 2000 tokens would take ~30 s; a drop takes a step
            assert time.monotonic() < deadline, "the dropped generation kept running"
            await asyncio.sleep(0.05)
    finally:
        await engine.close()


async def test_a_step_wakes_the_event_loop_once() -> None:
    """Every choice's token of one step reaches the loop in one wake-up: a wake-up per token made the
    loop's work contend with the scheduler's sampling for the GIL (docs/engine.md, Where a step's time goes)."""
    path = default_model_path(Path.home() / ".cache" / "localxai" / "models")
    tuning = EngineTuning(ctx_size=1024, threads=2, parallel=3, speculation=False, cache_ram_mib=0)
    engine = LlamaCppEngine(EmbeddedModel("m", tuning=tuning), path)
    loop = asyncio.get_running_loop()
    wakeups = 0
    original = loop.call_soon_threadsafe

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal wakeups
        wakeups += 1
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
    try:
        chat = ChatRequest(
            model="m",
            messages=(Message(Role.USER, (TextPart("Count from one to twenty."),)),),
            sampling=Sampling(temperature=0.8, max_tokens=8, seed=1),
            n=3,
        )
        events = [event async for event in await engine.generate(GenerationRequest(chat, model="m"))]
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
        await engine.close()
    finished = [e for e in events if isinstance(e, Finished)]
    assert sorted(e.index for e in finished) == [0, 1, 2]
    # 3 choices x 8 tokens and their ends (27 events) in 8 sampling steps: a wake-up per step, plus
    # the hand-back of the prompt's preparation (asyncio.to_thread).
    assert wakeups <= 10, wakeups


async def test_background_work_yields_to_interactive_requests() -> None:
    """Batch work sits out every step with an interactive sequence in it, and an interactive request that
    finds every slot taken gets one at once: the background job it takes the slot from ends Preempted."""
    from localxai.errors import Preempted

    path = default_model_path(Path.home() / ".cache" / "localxai" / "models")
    tuning = EngineTuning(ctx_size=1024, threads=2, parallel=2, speculation=False, cache_ram_mib=0)
    engine = LlamaCppEngine(EmbeddedModel("m", tuning=tuning), path)

    def request(text: str, tokens: int, background: bool = False) -> GenerationRequest:
        chat = ChatRequest(
            model="m",
            messages=(Message(Role.USER, (TextPart(text),)),),
            sampling=Sampling(temperature=0, max_tokens=tokens),
        )
        return GenerationRequest(chat, model="m", background=background)

    async def drain(events, log: list[tuple[str, float]], name: str) -> None:  # type: ignore[no-untyped-def]
        async for event in events:
            log.append((name if not isinstance(event, Finished) else f"{name}-end", time.monotonic()))

    try:
        log: list[tuple[str, float]] = []
        batch = asyncio.create_task(drain(await engine.generate(request("Count to a thousand.", 600, True)), log, "bg"))
        while not any(name == "bg" for name, _ in log):
            await asyncio.sleep(0.01)
        # One slot is left free beside background work: a lone interactive request takes it at once.
        first = asyncio.create_task(drain(await engine.generate(request("Write a long poem.", 40)), log, "i1"))
        while not any(name == "i1" for name, _ in log):
            await asyncio.sleep(0.01)
        # Every slot is taken now: the next interactive request takes the background job's.
        second = await engine.generate(request("Name a colour.", 4))
        await drain(second, log, "i2")
        with contextlib.suppress(Preempted):
            await batch
        assert batch.done() and isinstance(batch.exception(), Preempted)
        assert not any(name == "bg-end" for name, _ in log)
        await first
        # While an interactive sequence ran, the background one made no step (one may be in flight).
        started = next(t for name, t in log if name == "i1")
        during = [name for name, t in log if name == "bg" and t > started]
        assert len(during) <= 1, during
        # With the engine idle again, background work runs to its end.
        done: list[tuple[str, float]] = []
        await drain(await engine.generate(request("Say yes.", 3, True)), done, "bg")
        assert any(name == "bg-end" for name, _ in done)
    finally:
        await engine.close()
