"""LlamaCppEngine: the async face of the embedded engine.

Requests are rendered and tokenized here, off the event loop, so that context overflow and a full
queue are clean errors before any byte is sent; the scheduler thread then batches the generation
and streams events back. A generation whose consumer goes away is cancelled at the next step.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator
from pathlib import Path

from localxai import __version__
from localxai.chat import Event, ModelInfo, Token
from localxai.engines.base import Engine, GenerationRequest
from localxai.engines.llamacpp.model import ContextShape, LlamaModel
from localxai.engines.llamacpp.scheduler import Job, Scheduler
from localxai.engines.llamacpp.templates import template_for
from localxai.errors import ContextLengthExceeded, InvalidArgument

log = logging.getLogger(__name__)


class LlamaCppEngine(Engine):
    def __init__(
        self, path: Path, model_id: str, shape: ContextShape, top_k: int = 40, max_queue: int = 64
    ) -> None:
        self.model_id = model_id
        self._model = LlamaModel(path, shape)
        self._template = template_for(self._model.metadata, self._model.bos_text, self._model.eos_text)
        stat = path.stat()
        digest = hashlib.sha256(f"{path.name}:{stat.st_size}:{__version__}".encode()).hexdigest()
        self._info = ModelInfo(
            id=model_id,
            created=int(stat.st_mtime),
            context_length=shape.ctx_size,
            fingerprint=f"fp_{digest[:10]}",
        )
        self._scheduler = Scheduler(self._model, top_k=top_k, max_queue=max_queue)
        log.info(
            "model %s: %s; %d parallel sequences of %d context tokens each (trained for %d)",
            model_id,
            path,
            shape.parallel,
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
        parallel = self._model.shape.parallel
        if request.n > parallel:
            raise InvalidArgument(
                f"n={request.n} exceeds the {parallel} parallel sequences of this server "
                "(the operator can raise --parallel)."
            )
        prompt = await asyncio.to_thread(self._prompt_tokens, request)
        if len(prompt) > self.max_prompt_tokens:
            raise ContextLengthExceeded(self.max_prompt_tokens, len(prompt))
        job = Job(prompt, request.sampling, request.n, asyncio.get_running_loop(), asyncio.Queue())
        self._scheduler.submit(job)
        return self._events(job)

    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        return self._model.tokenize_segments(self._template.render(request.messages))

    async def _events(self, job: Job) -> AsyncGenerator[Event, None]:
        try:
            while (item := await job.events.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled.set()  # no-op when finished; frees the slot when the client left

    async def close(self) -> None:
        await asyncio.to_thread(self._scheduler.stop)
        self._model.close()
