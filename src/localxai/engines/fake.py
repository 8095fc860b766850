"""A scripted engine for protocol tests (like httpx's MockTransport): no model, instant, exact.

Tokens are whitespace-separated words. Without a fixed `reply` it draws words from a small
vocabulary with the request's seed, so seeding, `n`, stops and limits behave as with a model.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator

from localxai.chat import Event, Finished, FinishReason, ModelInfo, TextDelta, Token, Usage, UsageReport
from localxai.engines.base import Engine, GenerationRequest
from localxai.engines.stops import TextAssembler
from localxai.errors import ContextLengthExceeded

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")


class FakeEngine(Engine):
    def __init__(
        self,
        model_id: str = "fake-model",
        context_length: int = 4096,
        reply: str | None = None,
        token_delay: float = 0.0,
    ) -> None:
        self.model_id = model_id
        self.context_length = context_length
        self.reply = reply
        self.token_delay = token_delay
        self.cancelled = 0  # generations closed before they finished, for tests
        self._created = int(time.time())

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                id=self.model_id,
                created=self._created,
                context_length=self.context_length,
                fingerprint="fp_fake",
            )
        ]

    async def tokenize(self, model: str, text: str) -> list[Token]:
        return [Token(id=i, text=w, bytes=w.encode()) for i, w in enumerate(_words(text))]

    async def start(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        prompt = "\n".join(f"{m.role.value}: {m.text}" for m in request.messages)
        prompt_tokens = len(_words(prompt))
        if prompt_tokens > self.context_length:
            raise ContextLengthExceeded(self.context_length, prompt_tokens)
        return self._generate(request, prompt_tokens)

    async def _generate(self, request: GenerationRequest, prompt_tokens: int) -> AsyncGenerator[Event, None]:
        finished = False
        completion_tokens = 0
        try:
            for index in range(request.n):
                budget = min(
                    request.sampling.max_tokens or self.context_length,
                    self.context_length - prompt_tokens,
                )
                assembler = TextAssembler(request.sampling.stop)
                reason = FinishReason.STOP
                for i, word in enumerate(self._script(request, index)):
                    if i >= budget:
                        reason = FinishReason.LENGTH
                        break
                    if self.token_delay:
                        await asyncio.sleep(self.token_delay)
                    completion_tokens += 1
                    text = assembler.feed(word.encode())
                    if text:
                        yield TextDelta(index, text)
                    if assembler.stopped:
                        break
                tail = assembler.flush()
                if tail:
                    yield TextDelta(index, tail)
                yield Finished(index, reason)
            yield UsageReport(Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))
            finished = True
        finally:
            if not finished:
                self.cancelled += 1

    def _script(self, request: GenerationRequest, index: int) -> list[str]:
        if self.reply is not None:
            words = self.reply.split(" ")
            return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]
        seed = request.sampling.seed
        rng = random.Random(None if seed is None else seed + index)
        count = rng.randint(8, 16)
        return [rng.choice(WORDS) + ("" if i == count - 1 else " ") for i in range(count)]


def _words(text: str) -> list[str]:
    return text.split()
