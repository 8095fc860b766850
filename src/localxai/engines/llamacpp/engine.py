"""LlamaCppEngine: one scheduler thread owns the llama.cpp context and runs generations.

Requests are tokenized on the caller's side (so context overflow is a clean 400 before any byte is
sent), then queued for the scheduler thread, which streams events back to the event loop. A
generation whose consumer goes away is cancelled at the next token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path

from localxai import __version__
from localxai.chat import (
    Event,
    Finished,
    FinishReason,
    ModelInfo,
    Sampling,
    TextDelta,
    Token,
    Usage,
    UsageReport,
)
from localxai.engines.base import Engine, GenerationRequest
from localxai.engines.llamacpp.model import ContextShape, LlamaModel
from localxai.engines.llamacpp.sampling import Sampler, choice_seed
from localxai.engines.llamacpp.templates import template_for
from localxai.engines.stops import TextAssembler
from localxai.errors import ContextLengthExceeded, InternalError, LocalXAIError

log = logging.getLogger(__name__)


@dataclass
class _Job:
    prompt: list[int]
    sampling: Sampling
    n: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event | BaseException | None]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: Event | BaseException | None) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


class LlamaCppEngine(Engine):
    def __init__(self, path: Path, model_id: str, shape: ContextShape, top_k: int = 40) -> None:
        self.model_id = model_id
        self._model = LlamaModel(path, shape)
        self._template = template_for(self._model.metadata, self._model.bos_text, self._model.eos_text)
        self._top_k = top_k
        stat = path.stat()
        digest = hashlib.sha256(f"{path.name}:{stat.st_size}:{__version__}".encode()).hexdigest()
        self._info = ModelInfo(
            id=model_id,
            created=int(stat.st_mtime),
            context_length=shape.ctx_size,
            fingerprint=f"fp_{digest[:10]}",
        )
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="llamacpp-scheduler", daemon=True)
        self._thread.start()
        log.info(
            "model %s: %s, context %d tokens per request (trained for %d)",
            model_id,
            path,
            shape.ctx_size,
            self._model.n_ctx_train,
        )

    @property
    def max_prompt_tokens(self) -> int:
        return self._model.shape.ctx_size - 1  # room for at least one generated token

    def models(self) -> list[ModelInfo]:
        return [self._info]

    async def tokenize(self, model: str, text: str) -> list[Token]:
        ids = await asyncio.to_thread(self._model.tokenize, text, False, False)
        out = []
        for token in ids:
            raw = self._model.piece(token, special=True)
            out.append(Token(id=token, text=raw.decode(errors="replace"), bytes=raw))
        return out

    async def start(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        prompt = await asyncio.to_thread(self._prompt_tokens, request)
        if len(prompt) > self.max_prompt_tokens:
            raise ContextLengthExceeded(self.max_prompt_tokens, len(prompt))
        job = _Job(prompt, request.sampling, request.n, asyncio.get_running_loop(), asyncio.Queue())
        self._jobs.put(job)
        return self._events(job)

    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        return self._model.tokenize_segments(self._template.render(request.messages))

    async def _events(self, job: _Job) -> AsyncGenerator[Event, None]:
        try:
            while (item := await job.events.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled.set()  # no-op when finished; stops the scheduler when the client left

    async def close(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        self._model.close()

    # -- scheduler thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancelled.is_set():
                continue
            try:
                completion_tokens = 0
                for index in range(job.n):
                    if job.cancelled.is_set():
                        break
                    completion_tokens += self._generate(job, index)
                else:
                    job.emit(
                        UsageReport(Usage(prompt_tokens=len(job.prompt), completion_tokens=completion_tokens))
                    )
                job.emit(None)
            except LocalXAIError as exc:
                job.emit(exc)
            except Exception:
                log.exception("generation failed")
                job.emit(InternalError())

    def _generate(self, job: _Job, index: int) -> int:
        """Generate one choice from a fresh KV cache; returns the number of tokens sampled."""
        model = self._model
        limit = model.shape.ctx_size - len(job.prompt)
        if job.sampling.max_tokens is not None:
            limit = min(limit, job.sampling.max_tokens)
        sampler = Sampler(job.sampling, choice_seed(job.sampling.seed, index), self._top_k, model.n_vocab)
        assembler = TextAssembler(job.sampling.stop)
        try:
            model.clear()
            model.decode(job.prompt, 0)
            count = 0
            reason = FinishReason.LENGTH
            while count < limit and not job.cancelled.is_set():
                token = sampler.sample(model.ctx)
                count += 1
                if model.is_eog(token):
                    reason = FinishReason.STOP
                    break
                text = assembler.feed(model.piece(token))
                if text:
                    job.emit(TextDelta(index, text))
                if assembler.stopped:
                    reason = FinishReason.STOP
                    break
                if count < limit:
                    model.decode([token], len(job.prompt) + count - 1)
            if job.cancelled.is_set():
                log.info("generation cancelled after %d tokens: the client went away", count)
                return count
            tail = assembler.flush()
            if tail:
                job.emit(TextDelta(index, tail))
            job.emit(Finished(index, reason))
            return count
        finally:
            sampler.close()
