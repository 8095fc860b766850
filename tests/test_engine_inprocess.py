"""The embedded engine in-process: a generation nobody reads is not left running."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

from localxai.chat import ChatRequest, Message, Role, Sampling, TextPart
from localxai.engines.base import GenerationRequest
from localxai.engines.llamacpp.default_model import default_model_path
from localxai.engines.llamacpp.engine import LlamaCppEngine
from localxai.engines.llamacpp.model import ContextShape


async def test_dropped_generation_is_cancelled() -> None:
    path = default_model_path(Path.home() / ".cache" / "localxai" / "models")
    engine = LlamaCppEngine(path, "m", ContextShape(ctx_size=2048, threads=2, parallel=1))
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
