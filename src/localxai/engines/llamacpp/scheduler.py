"""Continuous batching: one thread owns the llama.cpp context and decodes every running sequence.

Each step builds one batch holding the next token of every generating sequence plus a bounded chunk
of pending prompt tokens (chunked prefill), decodes it once, and samples per sequence. Requests join
between steps and leave as they finish or their client goes away. A step's events reach the event
loop together, just before the next decode.

Sequences live in slots (llama.cpp sequence ids, each with a KV stream of its own). An idle slot keeps
its KV as prefix cache: a new request starts from the longest prefix any slot holds (shared system
prompts, multi-turn history), copied into its slot when it lies in another; otherwise the free slot
with the lowest id is taken, so that running sequences have consecutive ids (llama.cpp decodes a run of
consecutive sequence ids in one pass, and breaks the batch at every gap). With `--cache-ram`, what a
reused slot held goes to host memory first. `n > 1` choices decode the prompt once and share it.

Background jobs (batch requests) use what interactive ones leave: they are admitted only when no
interactive job waits and a slot stays free beside them, they sit out every step that has an interactive
sequence in it, and an interactive job that finds no free slot takes a background job's (the one that has
generated least), which ends with Preempted for its caller to run again.

Images (vision models) are decoded in a llama.cpp call of their own when a sequence's prefill
reaches them; a cached prefix never ends inside an image.

Over 400 lines: admission, the step, speculation's verify, prompt sharing and the host cache all
change the same slots within one step; split, each would reach into the others' state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field

from localxai.chat import Event, FinishReason, TokenLogprob, Usage, UsageReport
from localxai.engines.base import GenerationRequest
from localxai.engines.llamacpp.budget import Constraint, Tracker
from localxai.engines.llamacpp.hostcache import MIN_TOKENS, HostCache, common_prefix
from localxai.engines.llamacpp.model import LlamaModel
from localxai.engines.llamacpp.prompt import ImageChunk, Key, Prompt, Unit
from localxai.engines.llamacpp.sampling import Sampler, choice_seed
from localxai.engines.llamacpp.speculation import Drafter, NgramIndex, PassTimes
from localxai.engines.llamacpp.vision import Vision
from localxai.engines.output import ChoiceOutput
from localxai.engines.stops import TextAssembler
from localxai.errors import InternalError, LocalXAIError, Preempted, ResourceExhausted
from localxai.specs import ReasoningSpec

log = logging.getLogger(__name__)

AT_CAPACITY = "The service is temporarily at capacity. Please retry your request shortly."
IDLE_WAIT_S = 0.5
BACKGROUND_PREFILL = 64  # prompt tokens in a step of background work alone (bench/batch.py)
# While interactive requests come and go (one was seen in the last INTERACTIVE_RECENT_S), a step of
# background work alone is kept near BACKGROUND_STEP_S, so one that arrives waits little for the step in
# flight (the tokens such a step holds adapt to the time the last ones took).
INTERACTIVE_RECENT_S = 2.0
BACKGROUND_STEP_S = 0.02


@dataclass(eq=False)
class Job:
    """One request: its prompt, its choices, and the way back to the event loop."""

    prompt: Prompt
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event | BaseException | None]
    constraint: Constraint | None = None  # the grammar every choice must follow
    reasoning: ReasoningSpec | None = None
    ngrams: NgramIndex | None = None  # the prompt's n-grams: speculative decoding is on
    cancelled: threading.Event = field(default_factory=threading.Event)
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    unfinished: int = 0

    @property
    def n(self) -> int:
        return self.request.chat.n

    @property
    def background(self) -> bool:
        return self.request.background


@dataclass(eq=False)
class Slot:
    seq_id: int
    tokens: list[Key] = field(default_factory=list)  # what this sequence's KV holds, by position
    seq: Sequence | None = None


@dataclass(eq=False)
class Sequence:
    """One choice being generated in one slot."""

    job: Job
    index: int
    slot: Slot
    sampler: Sampler
    assembler: TextAssembler
    output: ChoiceOutput
    limit: int  # most tokens it may generate
    pending: list[Unit] = field(default_factory=list)  # prompt units still to prefill
    next_token: int | None = None  # decoded in the next step: the last prompt token, then samples
    in_prompt: bool = False  # next_token is the last prompt token (its logits start sampling)
    generated: int = 0
    reasoning: int = 0  # of the generated tokens, those inside the model's thinking
    drafter: Drafter | None = None
    tracker: Tracker | None = None  # where constrained output is in its grammar, to end it within `limit`


class Scheduler:
    def __init__(
        self,
        model: LlamaModel,
        top_k: int,
        max_queue: int,
        prefill_chunk: int = 128,
        vision: Vision | None = None,
        host_cache_bytes: int = 0,
    ) -> None:
        self._model = model
        self._vision = vision
        self._top_k = top_k
        self._max_queue = max_queue
        self._prefill_chunk = prefill_chunk
        self._host = HostCache(host_cache_bytes) if host_cache_bytes > 0 else None
        self._times = PassTimes()  # how long this model's passes take here: what a guess costs
        # Drafted/accepted tokens and host cache restores; every key exists from the start, so a
        # metrics read from another thread never sees the dict change size.
        self._counts = dict.fromkeys(("draft_tokens", "draft_tokens_accepted", "host_cache_restores"), 0)
        self._slots = [Slot(seq_id=i) for i in range(model.parallel)]
        self._waiting: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition()
        self._running: list[Job] = []
        self._outbox: list[tuple[Job, Event | BaseException | None]] = []  # sent at _flush
        self._interactive_at = -INTERACTIVE_RECENT_S  # when an interactive job was last seen (monotonic)
        self._background_tokens = model.parallel  # most tokens of a background step beside them (adapts)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="llamacpp-scheduler", daemon=True)
        self._thread.start()

    # -- called from the event loop ---------------------------------------------------------------

    def submit(self, job: Job) -> None:
        if not job.background:
            self._interactive_at = time.monotonic()
        with self._wake:
            # The queue bounds interactive jobs; background ones are bounded by whoever submits them.
            if not job.background and self._interactive_waiting() >= self._max_queue:
                self._waiting = collections.deque(j for j in self._waiting if not j.cancelled.is_set())
                if self._interactive_waiting() >= self._max_queue:  # not only requests whose client left
                    raise ResourceExhausted(AT_CAPACITY, retry_after=1.0)
            self._waiting.append(job)
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()

    def limit_host_cache(self, budget_bytes: int) -> None:
        """Keep at most `budget_bytes` of evicted prompt KV in host memory (no host cache: nothing to do)."""
        if self._host is not None:
            self._host.limit(budget_bytes)

    @property
    def host_cache_bytes(self) -> int:
        return self._host.used if self._host is not None else 0

    def stats(self) -> dict[str, float]:
        """A racy but harmless read from another thread, for metrics."""
        slots = list(self._slots)
        return {
            "queue_depth": float(len(self._waiting)),
            "running": float(sum(1 for s in slots if s.seq is not None)),
            "kv_used": float(sum(len(s.tokens) for s in slots)),
            "host_cache_bytes": float(self.host_cache_bytes),
            **{name: float(value) for name, value in self._counts.items()},
        }

    # -- scheduler thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._waiting and not self._running:
                    self._wake.wait(IDLE_WAIT_S)
                if self._stopping:
                    break
            try:
                self._drop_cancelled()
                self._admit()
                self._step_once()
            except Exception as exc:
                log.exception("scheduler step failed")
                error = exc if isinstance(exc, LocalXAIError) else InternalError()
                for job in list(self._running):
                    self._fail(job, error)
            self._flush()
        for job in [*self._running, *self._waiting]:
            self._fail(job, InternalError("the server is shutting down"))
        self._flush()

    def _emit(self, job: Job, item: Event | BaseException | None) -> None:
        self._outbox.append((job, item))

    def _flush(self) -> None:
        """Hand the step's events to their event loops, one wake-up per loop: the loop's work then
        overlaps the next decode (which releases the GIL) instead of contending with this thread's
        sampling for the GIL token by token."""
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Event | BaseException | None]]] = {}
        for job, item in self._outbox:
            by_loop.setdefault(job.loop, []).append((job, item))
        self._outbox = []
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed: no one is left to hear
                loop.call_soon_threadsafe(_deliver, items)

    def _drop_cancelled(self) -> None:
        now = time.monotonic()
        for job in [j for j in self._running if j.request.deadline is not None and now > j.request.deadline]:
            for seq in self._sequences(job):
                self._finish(seq, FinishReason.TIME_LIMIT)
        for job in [j for j in self._running if j.cancelled.is_set()]:
            sequences = self._sequences(job)
            done = sum(seq.generated for seq in sequences) + job.completion_tokens
            log.info("generation cancelled after %d tokens: the client went away", done)
            for seq in sequences:
                self._release(seq)
            self._running.remove(job)
        with self._wake:
            kept = [j for j in self._waiting if not j.cancelled.is_set()]
            self._waiting = collections.deque(kept)

    def _interactive_waiting(self) -> int:
        return sum(1 for j in self._waiting if not j.background)

    def _admit(self) -> None:
        while True:
            with self._wake:
                # Interactive jobs first, in order; background ones when none waits.
                job = self._next_job()
                if job is None:
                    return
                idle = sum(1 for s in self._slots if s.seq is None)
                if job.background:
                    # One slot stays free beside background work, so a lone interactive request never
                    # has to stop it.
                    if idle < job.n + (1 if len(self._slots) > job.n else 0):
                        return
                elif idle < job.n and not self._preempt(job.n - idle):
                    return  # FIFO: wait for enough slots rather than starve big requests
                self._waiting.remove(job)
                free = sorted((s for s in self._slots if s.seq is None), key=lambda s: s.seq_id)  # see above
            self._start(job, free)

    def _next_job(self) -> Job | None:
        """The next job to start: interactive ones first, in order, then background ones; a job waits
        while a prompt in prefill is decoding a longer prefix of its own than any slot or the host cache
        holds (by MIN_TOKENS or more): it copies that prefix once decoded instead of decoding it again
        beside it (concurrent requests behind one new system prompt decode it once)."""
        prefilling = [seq for job in self._running for seq in self._sequences(job) if seq.in_prompt]
        for background in (False, True):
            for job in self._waiting:
                if job.background == background and not (prefilling and self._shares_coming(job, prefilling)):
                    return job
        return None

    def _shares_coming(self, job: Job, prefilling: list[Sequence]) -> bool:
        prompt = job.prompt
        reusable = len(prompt) - 1
        coming = max(common_prefix(seq.job.prompt.keys, prompt.keys, reusable) for seq in prefilling)
        if coming < MIN_TOKENS:
            return False
        held = max(common_prefix(slot.tokens, prompt.keys, reusable) for slot in self._slots)
        if self._host is not None and coming - held >= MIN_TOKENS:
            held = max(held, self._host.best(prompt.keys, reusable, use=False)[1])
        return coming - held >= MIN_TOKENS

    def _preempt(self, slots: int) -> bool:
        """Free `slots` slots by stopping background jobs, those that have generated least first; False
        (stopping none) when they hold too few. A stopped job's KV stays as prefix cache for its rerun."""
        victims: list[Job] = []
        held = 0
        for job in sorted((j for j in self._running if j.background), key=self._progress):
            if held >= slots:
                break
            victims.append(job)
            held += len(self._sequences(job))
        if held < slots:
            return False
        for job in victims:
            for seq in self._sequences(job):
                self._release(seq)
            self._running.remove(job)
            self._emit(job, Preempted("the batch request gave its slot to an interactive request"))
        return True

    def _progress(self, job: Job) -> int:
        return job.completion_tokens + sum(seq.generated for seq in self._sequences(job))

    def _start(self, job: Job, free: list[Slot]) -> None:
        prompt = job.prompt
        reusable = len(prompt) - 1  # the last prompt token is always decoded: its logits start sampling
        source, common = max(
            ((slot, prompt.boundary(common_prefix(slot.tokens, prompt.keys, reusable))) for slot in self._slots),
            key=lambda pair: (pair[1], pair[0].seq is None),
        )
        first = source if source.seq is None and common > 0 else free[0]
        others = [s for s in free if s is not first][: job.n - 1]
        model = self._model
        entry, stored = self._host.best(prompt.keys, reusable) if self._host is not None else (None, 0)
        stored = prompt.boundary(stored)
        if entry is not None and stored > common:  # the longest prefix is in host memory: copy it back
            self._evict(first, 0)
            if model.seq_restore(first.seq_id, entry.state):
                first.tokens, source, common = list(entry.keys), first, stored
                self._counts["host_cache_restores"] += 1
            else:
                log.warning("a cached prompt of %d tokens did not fit in the KV cache; decoding it again", stored)
                common = 0 if source is first else common
        if first is source:
            self._evict(first, common)
        else:
            self._evict(first, 0)
            if common:
                model.seq_copy_prefix(source.seq_id, first.seq_id, common)
        first.tokens = prompt.keys[:common]
        job.cached_tokens = common
        job.unfinished = job.n
        request = job.request
        sampling = request.chat.sampling
        limit = model.shape.ctx_size - len(prompt)
        if sampling.max_tokens is not None:
            limit = min(limit, sampling.max_tokens)
        constraint = job.constraint
        for index, slot in enumerate([first, *others]):
            grammar = model.grammar_sampler(constraint.gbnf) if constraint is not None else None
            slot.seq = Sequence(
                job=job,
                index=index,
                slot=slot,
                sampler=Sampler(sampling, choice_seed(sampling.seed, index), self._top_k, model.n_vocab, grammar),
                assembler=TextAssembler(sampling.stop),
                output=ChoiceOutput(index, request.chat.tools, request.tool_choice, job.reasoning),
                limit=limit,
                drafter=Drafter(job.ngrams) if job.ngrams is not None else None,
                tracker=self._tracker(constraint),
            )
            if index == 0:
                # The last prompt token is decoded on its own, like a generated token, so its logits
                # do not depend on how much of the prompt came from the cache: a repeated seeded
                # request gives the same output whether or not its prefix was cached.
                *slot.seq.pending, last = prompt.units_from(common)
                assert isinstance(last, int), "a prompt ends with text (the generation prompt)"
                slot.seq.next_token = last
                slot.seq.in_prompt = True
        self._running.append(job)

    def _step_once(self) -> None:
        self._decode_images()
        model = self._model
        model.batch_clear()
        decoding: list[tuple[Sequence, list[int], list[int]]] = []  # (sequence, batch indices, draft)
        prefilling: list[tuple[Sequence, list[int]]] = []
        active = [s.seq for s in self._slots if s.seq is not None]
        started = time.monotonic()
        if any(not seq.job.background for seq in active):  # background sequences sit this step out
            active = [seq for seq in active if not seq.job.background]
            self._interactive_at = started
        background = bool(active) and all(seq.job.background for seq in active)
        beside = background and started - self._interactive_at < INTERACTIVE_RECENT_S  # a short step
        generating = [seq for seq in active if seq.next_token is not None and not seq.pending]
        if beside:  # the others keep their next token for a later step
            generating = generating[: self._background_tokens]
        prompts = sorted((seq for seq in active if seq.pending), key=lambda s: self._running.index(s.job))
        # Beside interactive traffic a background step's guesses count against its tokens too.
        width = self._background_tokens if beside else model.shape.n_batch
        drafts = self._drafts(generating, width - len(generating), prompts)
        room = model.shape.n_batch - len(generating) - sum(len(d) for d in drafts.values())
        for seq in generating:
            assert seq.next_token is not None
            pos, seq_id = len(seq.slot.tokens), seq.slot.seq_id
            draft = drafts.get(seq, [])
            indices = [model.batch_add(seq.next_token, pos, seq_id, True)]
            indices += [model.batch_add(t, pos + 1 + i, seq_id, True) for i, t in enumerate(draft)]
            decoding.append((seq, indices, draft))
        # Running streams first; prompts get a bounded share so they never stall them for long.
        budget = min(room, self._prefill_chunk) if decoding else room
        if background:
            # An interactive request that arrives waits for the step in flight: keep background steps short.
            budget = min(budget, BACKGROUND_PREFILL)
        if beside:
            budget = min(budget, self._background_tokens - len(generating))
        for seq in prompts:
            if budget <= 0:
                break
            chunk = _leading_tokens(seq.pending, budget)
            if not chunk:
                continue  # an image comes first: decoded at the start of the next step
            start = len(seq.slot.tokens)
            for offset, token in enumerate(chunk):
                model.batch_add(token, start + offset, seq.slot.seq_id, False)
            prefilling.append((seq, chunk))
            budget -= len(chunk)
        if model.batch_size() == 0:
            return
        self._flush()
        decode_started = time.monotonic()
        model.batch_decode()
        for seq, _, _ in decoding:
            assert seq.next_token is not None
            seq.slot.tokens.append(seq.next_token)
            seq.next_token = None
        for seq, chunk in prefilling:
            seq.slot.tokens.extend(chunk)
            del seq.pending[: len(chunk)]
        for seq, indices, draft in decoding:
            if seq.in_prompt:
                seq.in_prompt = False
                self._prompt_done(seq, indices[0])
            else:
                self._verify(seq, indices, draft)
        rows = {len(indices) for _, indices, _ in decoding}
        if len(rows) <= 1:  # sequences of as many rows each (and prompts): what a guess would cost
            took, prompt_rows = time.monotonic() - decode_started, sum(len(chunk) for _, chunk in prefilling)
            self._times.observe(len(decoding), rows.pop() if rows else 0, prompt_rows, took)
        if beside:  # fewer tokens when the step took longer than its time, one more when it did not
            took, tokens = time.monotonic() - started, self._background_tokens
            self._background_tokens = max(1, int(tokens * 0.7)) if took > BACKGROUND_STEP_S else tokens + 1
            self._background_tokens = min(self._background_tokens, model.shape.n_batch)

    def _drafts(self, generating: list[Sequence], room: int, prompts: list[Sequence]) -> dict[Sequence, list[int]]:
        """Guessed next tokens for speculative decoding, by sequence, as many for every generating one
        or none: each sequence has a KV stream of its own, and llama.cpp decodes unequal token counts of
        several sequences in separate passes, which the others wait for (docs/engine.md). So a guess is
        made only when every generating sequence has one (none is at a prompt's last token), each as
        long as the measured pass times say makes the pass, shared with the prompts being prefilled,
        progress fastest."""
        if not generating or any(seq.drafter is None or seq.in_prompt for seq in generating):
            return {}
        guesses = []
        for seq in generating:
            assert seq.drafter is not None
            if (guess := seq.drafter.lookup(beside=len(generating) > 1)) is None:
                return {}
            guesses.append(guess)
        # The next token is the context's last (its sample made it so); a guess follows it.
        ctx_size = self._model.shape.ctx_size
        most = min(min(seq.limit - seq.generated, ctx_size - len(seq.slot.tokens)) - 1 for seq in generating)
        most = min(most, room // len(generating))
        reached, prompt_rows = 0, 0  # the prompts this step's prefill reaches, and its tokens
        for prompt in prompts:
            if prompt_rows >= self._prefill_chunk:
                break
            reached, prompt_rows = reached + 1, min(self._prefill_chunk, prompt_rows + len(prompt.pending))
        length = self._times.guess_length([g.p for g in guesses], most, reached, prompt_rows)
        if length <= 0:
            return {}
        drafts = [seq.drafter.copy(guess, length) for seq, guess in zip(generating, guesses, strict=True)]  # type: ignore[union-attr]
        length = min(len(d) for d in drafts)  # a copy stops at an image: all as short
        return {seq: d[:length] for seq, d in zip(generating, drafts, strict=True)} if length else {}

    def _verify(self, seq: Sequence, indices: list[int], draft: list[int]) -> None:
        """Sample each decoded position in order; a draft token whose sample agrees is kept, and the
        first sample that differs becomes the next token. KV of the guesses after it is dropped."""
        kept = 0
        for i, index in enumerate(indices):
            token = self._sample(seq, index)
            if token is None or i == len(draft) or token != draft[i]:
                break
            # The draft's KV at this position is right: the token is in the context already.
            seq.slot.tokens.append(token)
            seq.next_token = None
            kept += 1
        if draft:
            assert seq.drafter is not None
            seq.drafter.accepted(len(draft), kept)
            self._counts["draft_tokens"] += len(draft)
            self._counts["draft_tokens_accepted"] += kept
            self._model.seq_keep_prefix(seq.slot.seq_id, len(seq.slot.tokens))

    def _decode_images(self) -> None:
        """Sequences whose prefill reached an image decode it, each in a llama.cpp call of its own."""
        for slot in self._slots:
            seq = slot.seq
            if seq is None or not seq.pending or not isinstance(image := seq.pending[0], ImageChunk):
                continue
            assert self._vision is not None
            try:
                self._vision.decode(image, len(slot.tokens), slot.seq_id)
            except LocalXAIError as error:
                self._fail(seq.job, error)
                continue
            slot.tokens.extend(image.keys)
            del seq.pending[0]

    def _prompt_done(self, first: Sequence, batch_index: int) -> None:
        """The prompt is in the KV: siblings share it, and every choice samples its first token."""
        job = first.job
        siblings = [s.seq for s in self._slots if s.seq is not None and s.seq.job is job and s.seq is not first]
        for seq in siblings:
            self._evict(seq.slot, 0)
            self._model.seq_copy_prefix(first.slot.seq_id, seq.slot.seq_id, len(job.prompt))
            seq.slot.tokens = list(job.prompt.keys)
        for seq in [first, *siblings]:
            self._sample(seq, batch_index)

    def _tracker(self, constraint: Constraint | None) -> Tracker | None:
        if constraint is None or constraint.grammar is None:
            return None
        return Tracker(constraint.grammar, lambda text: len(self._model.continuation(text) or text.encode()))

    def _sample(self, seq: Sequence, batch_index: int) -> int | None:
        """Sample the sequence's next token; None when that ended the sequence."""
        token = seq.sampler.sample(self._model.ctx, batch_index)
        if seq.tracker is not None and not self._model.is_eog(token):
            ending = seq.tracker.take(self._model.piece(token), seq.limit - seq.generated)
            if ending is not None:
                self._close(seq, ending)
                return None
        chat = seq.job.request.chat
        logprob = self._model.logprob(batch_index, token, chat.top_logprobs or 0) if chat.logprobs else None
        return token if self._accept(seq, token, logprob) else None

    def _accept(self, seq: Sequence, token: int, logprob: TokenLogprob | None) -> bool:
        """Take a sampled token; False when it ended the sequence."""
        seq.generated += 1
        if seq.output.thinking:
            seq.reasoning += 1
        if self._model.is_eog(token):
            return self._finish(seq, FinishReason.STOP)
        for event in seq.output.feed(seq.assembler.feed(self._model.piece(token)), logprob):
            self._emit(seq.job, event)
        if seq.assembler.stopped:
            return self._finish(seq, FinishReason.STOP)
        if seq.generated >= seq.limit:
            return self._finish(seq, FinishReason.LENGTH)
        seq.next_token = token
        if seq.drafter is not None:
            seq.drafter.push(token)
        return True

    def _close(self, seq: Sequence, ending: str) -> None:
        """End constrained output whose budget is running out with the shortest text that makes it a
        whole document (it fits what is left). Its tokens are written, not sampled: no logprobs."""
        tokens = self._model.continuation(ending)
        if tokens is None:  # not seen with any vocabulary: the output ends cut, as without a budget
            log.warning("this vocabulary cannot write the completion %r; the output ends cut", ending)
            tokens = []
        for token in tokens:
            seq.generated += 1
            for event in seq.output.feed(seq.assembler.feed(self._model.piece(token))):
                self._emit(seq.job, event)
        self._finish(seq, FinishReason.LENGTH)

    def _finish(self, seq: Sequence, reason: FinishReason) -> bool:
        job = seq.job
        for event in seq.output.feed(seq.assembler.flush()) + seq.output.finish(reason):
            self._emit(job, event)
        job.completion_tokens += seq.generated - seq.reasoning
        job.reasoning_tokens += seq.reasoning
        job.unfinished -= 1
        self._release(seq)
        if job.unfinished == 0:
            prompt_tokens, cached_tokens, image_tokens = job.prompt.usage(job.cached_tokens)
            usage = Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=job.completion_tokens,
                cached_tokens=cached_tokens,
                image_tokens=image_tokens,
                reasoning_tokens=job.reasoning_tokens,
            )
            self._emit(job, UsageReport(usage))
            self._emit(job, None)
            self._running.remove(job)
        return False

    def _release(self, seq: Sequence) -> None:
        seq.sampler.close()
        seq.slot.seq = None
        if seq.pending:  # never finished its prompt: what is in the KV is still exact, keep it
            seq.pending = []

    def _evict(self, slot: Slot, keep: int) -> None:
        """Cut the slot's KV to its first `keep` positions, saving what it held to host memory first
        when that is worth keeping and held nowhere else."""
        tokens = slot.tokens
        if (
            self._host is not None
            and len(tokens) - keep >= MIN_TOKENS
            and not self._host.covers(tokens)
            and not any(other is not slot and other.tokens[: len(tokens)] == tokens for other in self._slots)
        ):
            self._host.put(tokens, self._model.seq_state(slot.seq_id))
        self._model.seq_keep_prefix(slot.seq_id, keep)
        slot.tokens = tokens[:keep]

    def _sequences(self, job: Job) -> list[Sequence]:
        return [slot.seq for slot in self._slots if slot.seq is not None and slot.seq.job is job]

    def _fail(self, job: Job, error: LocalXAIError) -> None:
        for seq in self._sequences(job):
            self._model.seq_keep_prefix(seq.slot.seq_id, 0)  # its KV may be half-written
            seq.slot.tokens = []
            self._release(seq)
        if job in self._running:
            self._running.remove(job)
        self._emit(job, error)


def _deliver(items: list[tuple[Job, Event | BaseException | None]]) -> None:
    for job, item in items:
        job.events.put_nowait(item)


def _leading_tokens(units: list[Unit], limit: int) -> list[int]:
    """The tokens at the head of `units` (at most `limit`), up to the first image."""
    out: list[int] = []
    for unit in units[:limit]:
        if not isinstance(unit, int):
            break
        out.append(unit)
    return out
