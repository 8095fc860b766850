"""A scripted engine for protocol tests (like httpx's MockTransport): no model, instant, exact.

Tokens are whitespace-separated words. Without a fixed `reply` it draws words from a small
vocabulary with the request's seed, so seeding, `n`, stops and limits behave as with a model.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Callable

from localxai.chat import (
    ChatRequest,
    Event,
    FinishReason,
    ModelInfo,
    Token,
    TokenLogprob,
    TopLogprob,
    Usage,
    UsageReport,
)
from localxai.engines.base import Engine, GenerationRequest
from localxai.engines.output import ChoiceOutput
from localxai.engines.stops import TextAssembler
from localxai.errors import ContextLengthExceeded
from localxai.specs import ReasoningSpec

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")


class FakeEngine(Engine):
    def __init__(
        self,
        model_id: str = "fake-model",
        context_length: int = 4096,
        reply: str | Callable[[ChatRequest], str] | None = None,  # a script: the reply to each request
        token_delay: float = 0.0,
        reasoning: ReasoningSpec | None = None,
        reasoning_efforts: tuple[str, ...] = (),
    ) -> None:
        self.model_id = model_id
        self.context_length = context_length
        self.reply = reply
        self.token_delay = token_delay
        self.reasoning = reasoning
        self.reasoning_efforts = reasoning_efforts
        self.cancelled = 0  # generations closed before they finished, for tests
        self._created = int(time.time())

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                id=self.model_id,
                created=self._created,
                context_length=self.context_length,
                fingerprint="fp_fake",
                reasoning=self.reasoning is not None,
                reasoning_efforts=self.reasoning_efforts,
            )
        ]

    def stats(self) -> dict[str, dict[str, float]]:
        return {self.model_id: {"queue_depth": 0.0, "running": 0.0}}

    async def tokenize(self, model: str, text: str) -> list[Token]:
        return [Token(id=i, text=w, bytes=w.encode()) for i, w in enumerate(_words(text))]

    async def check(self, request: GenerationRequest) -> None:
        self._prompt_tokens(request)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        return self._generate(request, self._prompt_tokens(request))

    def _prompt_tokens(self, request: GenerationRequest) -> int:
        prompt = request.chat.prompt or "\n".join(f"{m.role.value}: {m.text}" for m in request.chat.messages)
        prompt_tokens = len(_words(prompt))
        if prompt_tokens > self.context_length:
            raise ContextLengthExceeded(self.context_length, prompt_tokens)
        return prompt_tokens

    async def _generate(self, request: GenerationRequest, prompt_tokens: int) -> AsyncGenerator[Event, None]:
        finished = False
        completion_tokens = reasoning_tokens = 0
        try:
            for index in range(request.chat.n):
                budget = min(
                    request.chat.sampling.max_tokens or self.context_length,
                    self.context_length - prompt_tokens,
                )
                assembler = TextAssembler(request.chat.sampling.stop)
                output = ChoiceOutput(index, request.chat.tools, request.tool_choice, self.reasoning)
                reason = FinishReason.STOP
                for i, word in enumerate(self._script(request, index)):
                    if i >= budget:
                        reason = FinishReason.LENGTH
                        break
                    if request.deadline is not None and time.monotonic() > request.deadline:
                        reason = FinishReason.TIME_LIMIT
                        break
                    if self.token_delay:
                        await asyncio.sleep(self.token_delay)
                    if output.thinking:
                        reasoning_tokens += 1
                    else:
                        completion_tokens += 1
                    logprob = _fake_logprob(word, request.chat.top_logprobs or 0) if request.chat.logprobs else None
                    for event in output.feed(assembler.feed(word.encode()), logprob):
                        yield event
                    if assembler.stopped:
                        break
                for event in output.feed(assembler.flush()) + output.finish(reason):
                    yield event
            usage = Usage(
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, reasoning_tokens=reasoning_tokens
            )
            yield UsageReport(usage)
            finished = True
        finally:
            if not finished:
                self.cancelled += 1

    def _script(self, request: GenerationRequest, index: int) -> list[str]:
        if self.reply is not None:
            reply = self.reply(request.chat) if callable(self.reply) else self.reply
            words = reply.split(" ")
            return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]
        seed = request.chat.sampling.seed
        rng = random.Random(None if seed is None else seed + index)
        count = rng.randint(8, 16)
        return [rng.choice(WORDS) + ("" if i == count - 1 else " ") for i in range(count)]


def _words(text: str) -> list[str]:
    return text.split()


def _fake_logprob(word: str, top: int) -> TokenLogprob:
    alternatives = tuple(TopLogprob(w, -1.0 - i, w.encode()) for i, w in enumerate(WORDS[:top]))
    return TokenLogprob(word, -0.5, word.encode(), alternatives)
