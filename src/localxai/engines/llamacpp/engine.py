"""LlamaCppEngine: the async face of the embedded engine.

Requests are rendered and tokenized here, off the event loop, so that context overflow and a full
queue are clean errors before any byte is sent; the scheduler thread then batches the generation
and streams events back. A generation whose consumer goes away is cancelled at the next step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import secrets
import weakref
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import llama_cpp as ll

from localxai import __version__
from localxai.chat import Event, FormatType, ImagePart, Message, ModelInfo, TextPart, Token, ToolMode
from localxai.engines.base import Engine, GenerationRequest
from localxai.engines.llamacpp.budget import Constraint, Grammar, GrammarSyntaxError
from localxai.engines.llamacpp.grammar import schema_to_gbnf
from localxai.engines.llamacpp.model import ContextShape, LlamaModel
from localxai.engines.llamacpp.prompt import Prompt, Unit
from localxai.engines.llamacpp.scheduler import Job, Scheduler
from localxai.engines.llamacpp.speculation import NgramIndex
from localxai.engines.llamacpp.templates import Conversation, Segment, template_for
from localxai.engines.llamacpp.vision import Vision
from localxai.engines.toolcalls import forced_schema
from localxai.errors import ContextLengthExceeded, InvalidArgument
from localxai.media.images import LoadedImage
from localxai.specs import EmbeddedModel

log = logging.getLogger(__name__)


class LlamaCppEngine(Engine):
    def __init__(self, spec: EmbeddedModel, path: Path) -> None:
        """`path`: the spec's GGUF, resolved (the default model's when the spec names none)."""
        tuning = spec.tuning
        shape = ContextShape(ctx_size=tuning.ctx_size, threads=tuning.threads, parallel=tuning.parallel)
        self.model_id = spec.id
        self._speculation = tuning.speculation
        self._reasoning = spec.reasoning
        self._model = LlamaModel(path, shape)
        self._vision = Vision(spec.mmproj, self._model) if spec.mmproj is not None else None
        # Where an image sits in the rendered conversation; random, so no message text can forge one.
        self._image_marker = f"<localxai-image-{secrets.token_hex(8)}>"
        self._template = template_for(self._model.metadata, self._model.bos_text, self._model.eos_text)
        self._info = model_info(spec, path)
        self._host_cache_cap = tuning.cache_ram_mib << 20
        self._scheduler = Scheduler(
            self._model,
            top_k=tuning.top_k,
            max_queue=tuning.max_queue,
            vision=self._vision,
            host_cache_bytes=self._host_cache_cap,
        )
        log.info(
            "model %s: %s%s; %d parallel sequences of %d context tokens each (trained for %d)",
            spec.id,
            path,
            f" with projector {spec.mmproj}" if spec.mmproj is not None else "",
            self._model.parallel,
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

    async def check(self, request: GenerationRequest) -> None:
        self._check_n(request)
        prompt, constraint = await asyncio.to_thread(self._prepare, request)
        self._check_length(prompt)
        self._check_budget(request, prompt, constraint)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        self._check_n(request)
        prompt, constraint = await asyncio.to_thread(self._prepare, request)
        self._check_length(prompt)
        self._check_budget(request, prompt, constraint)
        ngrams = await asyncio.to_thread(NgramIndex, prompt.keys) if self._speculation else None
        loop = asyncio.get_running_loop()
        job = Job(
            prompt,
            request,
            loop,
            asyncio.Queue(),
            constraint=constraint,
            reasoning=self._reasoning,
            ngrams=ngrams,
        )
        self._scheduler.submit(job)
        events = self._events(job)
        # A generator dropped before its first step never runs its `finally`: cancel on collection too.
        weakref.finalize(events, job.cancelled.set)
        return events

    def _check_n(self, request: GenerationRequest) -> None:
        parallel = self._model.parallel
        if request.chat.n > parallel:
            raise InvalidArgument(
                f"n={request.chat.n} exceeds the {parallel} parallel sequences of this server "
                "(the operator can raise --parallel)."
            )

    def _check_length(self, prompt: Prompt) -> None:
        if len(prompt) > self.max_prompt_tokens:
            raise ContextLengthExceeded(self.max_prompt_tokens, len(prompt))

    def _check_budget(self, request: GenerationRequest, prompt: Prompt, constraint: Constraint | None) -> None:
        """Constrained output always ends as a whole document within its budget (budget.py): refused
        before generating when even the shortest one does not fit."""
        if constraint is None:
            return
        limit, which = self._model.shape.ctx_size - len(prompt), "the context left after the prompt"
        max_tokens = request.chat.sampling.max_tokens
        if max_tokens is not None and max_tokens <= limit:
            limit, which = max_tokens, "max_tokens"
        if constraint.shortest_tokens > limit:
            what = "tool call" if calls_forced(request) else "output"
            raise InvalidArgument(
                f"The shortest {what} the schema allows takes {constraint.shortest_tokens} tokens, more than the "
                f"{limit} this request may generate ({which}). Raise max_tokens or relax the schema."
            )

    def _prepare(self, request: GenerationRequest) -> tuple[Prompt, Constraint | None]:
        """Prompt and output constraint (images are preprocessed here; the scheduler thread encodes them)."""
        if request.chat.prompt is not None:  # legacy completions: the text as it is, after BOS
            segments = [Segment(request.chat.prompt, special=False)]
        else:
            chat = request.chat
            messages = tuple(self._marked(m) for m in chat.messages) if request.images else chat.messages
            conversation = Conversation(messages, chat.tools, request.tool_choice, chat.reasoning_effort)
            segments = self._template.render(conversation)
        prompt = Prompt.of(self._tokenize(segments, request.images))
        schema = output_schema(request)
        return prompt, None if schema is None else self._constraint(json.dumps(schema, sort_keys=True))

    def _marked(self, message: Message) -> Message:
        """The message with each image replaced by the marker, so templates place it like text."""
        parts = tuple(TextPart(self._image_marker) if isinstance(p, ImagePart) else p for p in message.content)
        return dataclasses.replace(message, content=parts)

    def _tokenize(self, segments: list[Segment], images: tuple[LoadedImage, ...]) -> list[Unit]:
        """The rendered conversation as prompt units: tokens, and the images where the markers are."""
        if not images:
            return list(self._model.tokenize_segments(segments))
        assert self._vision is not None  # the core refuses images for models without image input
        pieces: list[Segment | int] = []  # text, and images by their index
        placed = 0
        for segment in segments:
            for j, text in enumerate(segment.text.split(self._image_marker)):
                if j:
                    pieces.append(placed)
                    placed += 1
                if text:
                    pieces.append(Segment(text, segment.special))
        if placed != len(images):
            raise InvalidArgument("This model's chat template does not keep the images of the conversation.")
        units: list[Unit] = []
        for piece in pieces:
            if isinstance(piece, Segment):
                units += self._model.tokenize_segments([piece], bos=not units)
            else:
                units += self._vision.units(images[piece], piece)
        return units

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one engine per model, for the process lifetime
    def _constraint(self, schema: str) -> Constraint:
        """The grammar enforcing `schema`; a schema llama.cpp cannot enforce is refused (fail closed)."""
        gbnf = schema_to_gbnf(schema)
        sampler = self._model.grammar_sampler(gbnf)
        if sampler is None:
            raise InvalidArgument("The schema cannot be enforced by this server: its grammar does not compile.")
        ll.llama_sampler_free(sampler)
        try:
            grammar = Grammar(gbnf)
        except GrammarSyntaxError:  # a converter grammar this parser misreads: a bug, but not the client's
            log.exception("the output budget cannot follow this grammar; output may be cut by max_tokens")
            return Constraint(gbnf, None, 1)
        tokens = self._model.continuation(grammar.shortest())
        return Constraint(gbnf, grammar, len(tokens) if tokens is not None else len(grammar.shortest().encode()))

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

    @property
    def host_cache_bytes(self) -> int:
        """Evicted prompt KV held in host memory now."""
        return self._scheduler.host_cache_bytes

    def limit_host_cache(self, budget_bytes: int) -> None:
        """Hold at most `budget_bytes` of evicted prompt KV from now on (never more than --cache-ram)."""
        self._scheduler.limit_host_cache(min(budget_bytes, self._host_cache_cap))

    def halt(self) -> None:
        self._scheduler.stop()  # waits for the step in flight: llama.cpp is idle afterwards

    async def close(self) -> None:
        await asyncio.to_thread(self._scheduler.stop)
        if self._vision is not None:
            self._vision.close()
        self._model.close()


def model_info(spec: EmbeddedModel, path: Path) -> ModelInfo:
    """What the model list says of an embedded model, known without loading it."""
    stat = path.stat()
    digest = hashlib.sha256(f"{path.name}:{stat.st_size}:{__version__}".encode()).hexdigest()
    return ModelInfo(
        id=spec.id,
        created=int(stat.st_mtime),
        context_length=spec.tuning.ctx_size,
        fingerprint=f"fp_{digest[:10]}",
        reasoning=spec.reasoning is not None,
        reasoning_efforts=spec.reasoning_efforts,
        input_modalities=("text", "image") if spec.mmproj is not None else ("text",),
        path=str(path),
    )


def calls_forced(request: GenerationRequest) -> bool:
    return bool(request.chat.tools) and request.tool_choice.mode in (ToolMode.REQUIRED, ToolMode.FUNCTION)


def output_schema(request: GenerationRequest) -> dict[str, Any] | None:
    """The JSON Schema the output must follow: a required tool call, or the response format."""
    if calls_forced(request):
        return forced_schema(request.chat.tools, request.tool_choice, request.chat.parallel_tool_calls)
    fmt = request.chat.response_format
    if fmt.type is FormatType.JSON_SCHEMA and fmt.schema is not None:
        return dict(json.loads(fmt.schema))
    if fmt.type is FormatType.JSON_OBJECT:
        return {"type": "object"}
    return None
