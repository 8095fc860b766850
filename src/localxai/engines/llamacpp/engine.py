"""LlamaCppEngine: the async face of the embedded engine.

Requests are rendered and tokenized here, off the event loop, so that context overflow and a full
queue are clean errors before any byte is sent; the scheduler thread then batches the generation
and streams events back. A generation whose consumer goes away is cancelled at the next step.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import weakref
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import llama_cpp as ll

from localxai import __version__
from localxai.chat import Event, FormatType, ModelInfo, Token, ToolMode
from localxai.engines.base import Engine, GenerationRequest
from localxai.engines.llamacpp.grammar import schema_to_gbnf
from localxai.engines.llamacpp.model import ContextShape, LlamaModel
from localxai.engines.llamacpp.scheduler import Job, Scheduler
from localxai.engines.llamacpp.templates import Conversation, template_for
from localxai.engines.output import ReasoningSpec
from localxai.engines.toolcalls import forced_schema
from localxai.errors import ContextLengthExceeded, InvalidArgument

log = logging.getLogger(__name__)


class LlamaCppEngine(Engine):
    def __init__(
        self,
        path: Path,
        model_id: str,
        shape: ContextShape,
        top_k: int = 40,
        max_queue: int = 64,
        reasoning: ReasoningSpec | None = None,
        reasoning_efforts: tuple[str, ...] = (),
    ) -> None:
        self.model_id = model_id
        self._reasoning = reasoning
        self._model = LlamaModel(path, shape)
        self._template = template_for(self._model.metadata, self._model.bos_text, self._model.eos_text)
        stat = path.stat()
        digest = hashlib.sha256(f"{path.name}:{stat.st_size}:{__version__}".encode()).hexdigest()
        self._info = ModelInfo(
            id=model_id,
            created=int(stat.st_mtime),
            context_length=shape.ctx_size,
            fingerprint=f"fp_{digest[:10]}",
            reasoning=reasoning is not None,
            reasoning_efforts=reasoning_efforts,
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
        prompt, grammar = await asyncio.to_thread(self._prepare, request)
        if len(prompt) > self.max_prompt_tokens:
            raise ContextLengthExceeded(self.max_prompt_tokens, len(prompt))
        loop = asyncio.get_running_loop()
        job = Job(
            prompt,
            request,
            loop,
            asyncio.Queue(),
            grammar=grammar,
            capped=not calls_forced(request),
            reasoning=self._reasoning,
        )
        self._scheduler.submit(job)
        events = self._events(job)
        # A generator dropped before its first step never runs its `finally`: cancel on collection too.
        weakref.finalize(events, job.cancelled.set)
        return events

    def _prepare(self, request: GenerationRequest) -> tuple[list[int], str | None]:
        conversation = Conversation(request.messages, request.tools, request.tool_choice, request.reasoning_effort)
        prompt = self._model.tokenize_segments(self._template.render(conversation))
        schema = output_schema(request)
        return prompt, None if schema is None else self._grammar(json.dumps(schema, sort_keys=True))

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one engine per model, for the process lifetime
    def _grammar(self, schema: str) -> str:
        """GBNF enforcing `schema`; a schema llama.cpp cannot enforce is refused (fail closed)."""
        gbnf = schema_to_gbnf(schema)
        sampler = self._model.grammar_sampler(gbnf)
        if sampler is None:
            raise InvalidArgument("The schema cannot be enforced by this server: its grammar does not compile.")
        ll.llama_sampler_free(sampler)
        return gbnf

    async def _events(self, job: Job) -> AsyncGenerator[Event, None]:
        try:
            while (item := await job.events.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled.set()  # no-op when finished; frees the slot when the client left

    def stats(self) -> dict[str, dict[str, float]]:
        return {self.model_id: {**self._scheduler.stats(), "kv_capacity": float(self._model.shape.cells)}}

    async def close(self) -> None:
        await asyncio.to_thread(self._scheduler.stop)
        self._model.close()


def calls_forced(request: GenerationRequest) -> bool:
    return bool(request.tools) and request.tool_choice.mode in (ToolMode.REQUIRED, ToolMode.FUNCTION)


def output_schema(request: GenerationRequest) -> dict[str, Any] | None:
    """The JSON Schema the output must follow: a required tool call, or the response format."""
    if calls_forced(request):
        return forced_schema(request.tools, request.tool_choice, request.parallel_tool_calls)
    fmt = request.response_format
    if fmt.type is FormatType.JSON_SCHEMA and fmt.schema is not None:
        return dict(json.loads(fmt.schema))
    if fmt.type is FormatType.JSON_OBJECT:
        return {"type": "object"}
    return None
