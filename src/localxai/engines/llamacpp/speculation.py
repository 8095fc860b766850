"""N-gram (prompt-lookup) drafts for speculative decoding.

When a sequence's last few tokens appeared earlier in its own context (the prompt or what it has
generated), the tokens that followed them then are a cheap guess of what comes next: answers that
quote their input — code edits, extraction, summaries with quotes — repeat long runs of it. The
scheduler decodes the guess together with the sequence's next token in the batch it builds anyway,
samples every position as usual, and keeps the guessed tokens only as long as the samples agree.

Why the output distribution does not change: a draft token `d` is accepted exactly when the token
sampled at its position (from the true logits, with the sequence's own sampler chain) equals `d`,
and the first sampled token that differs is kept as the next token. Every kept token is therefore a
sample of the model's distribution given the tokens before it — speculative sampling with a draft
distribution concentrated on one token, for which the usual accept/resample rule reduces to this.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from localxai.engines.llamacpp.prompt import Key

NGRAM_SIZES = (4, 3)  # longest first: a longer match predicts better
# A pass holds at most MAX_PASS_ROWS rows: beyond 16 a row costs little less (docs/engine.md), not enough
# to pay for longer guesses that fail more often.
MAX_PASS_ROWS = 16
CANDIDATES = 8  # latest occurrences of an n-gram compared by how far their match reaches back
MATCH_WINDOW = 96  # how far back a match is measured
DECAY = 0.8  # weight of earlier verifications in a sequence's acceptance rate
BESIDE_PRIOR = 8  # beside others a match reaching r tokens back is taken to be right r / (r + 8) of the time
# Until the server has timed passes of its own, a pass's cost is assumed to follow the default model's
# on 2 cores: one more row with logits costs ROW_COST of a one-row pass (the 262k-token output layer
# runs for every row), and llama.cpp's CPU matrix kernels take rows in groups of ROW_GROUP and the rest
# one by one, so 5 rows cost about as much as 8. Measured times replace the assumption size by size.
ROW_COST = 0.29
ROW_GROUP = 4
# A pass size's cost is the median of its first SAMPLES timings, then fixed: a guess's length then
# depends on the request alone, so a request repeated on an otherwise idle server gets the same passes
# and the same output (a row's logits differ slightly between a 4-row and a 1-row kernel).
SAMPLES = 9


class PassTimes:
    """How long this server's passes take, measured: the seconds a pass takes by how many sequences it
    decodes and how many rows with logits each has (its next token and its guesses), and the seconds a
    prompt token adds to a pass, each the median of its first SAMPLES timings. One per model; only the
    scheduler thread uses it."""

    def __init__(self) -> None:
        self._passes: dict[tuple[int, int], float] = {}  # (sequences, rows each): seconds
        self._prompt_row: float | None = None
        self._timings: dict[tuple[int, int], list[float]] = {}  # until SAMPLES; (0, 0): a prompt token

    def observe(self, sequences: int, rows: int, prompt_rows: int, seconds: float) -> None:
        """A pass of `sequences` sequences of `rows` rows with logits each (0: none) and `prompt_rows`
        prompt tokens."""
        if prompt_rows:
            known = self._passes.get((sequences, rows)) if sequences else 0.0
            if self._prompt_row is None and known is not None:
                self._prompt_row = self._sample((0, 0), max(0.0, seconds - known) / prompt_rows)
        elif sequences and rows and (key := (sequences, rows)) not in self._passes:
            median = self._sample(key, seconds)
            if median is not None:
                self._passes[key] = median

    def _sample(self, key: tuple[int, int], seconds: float) -> float | None:
        """The median once SAMPLES timings are in (None until then)."""
        timings = self._timings.setdefault(key, [])
        timings.append(seconds)
        if len(timings) < SAMPLES:
            return None
        del self._timings[key]
        return statistics.median(timings)

    def decode(self, sequences: int, rows: int = 1) -> float:
        """Seconds for a pass of `sequences` sequences with `rows` rows with logits each: measured, else
        scaled from the nearest measured smaller pass of as many sequences (or from one sequence's
        one-row pass) by the assumed shape, in one-row passes while nothing is measured."""
        for known in range(rows, 0, -1):
            if (seconds := self._passes.get((sequences, known))) is not None:
                return seconds * _assumed(sequences * rows) / _assumed(sequences * known)
        return self._passes.get((1, 1), 1.0) * _assumed(sequences * rows)

    def prompt(self, rows: int) -> float:
        """Seconds that `rows` prompt tokens add to a pass (a quarter of a row with logits until measured)."""
        per_row = self._prompt_row if self._prompt_row is not None else self.decode(1) * ROW_COST / 4
        return rows * per_row

    def guess_length(self, ps: Sequence[float], most: int, prompts: int = 0, prompt_rows: int = 0) -> int:
        """How many tokens each of the sequences generating should guess (all as many, so that they stay
        one pass), sequence i's guessed tokens each right with probability `ps[i]` given the ones before
        them: the length that makes the pass progress fastest. A sequence's next token and `j` guessed ones
        yield `1 + p + ... + p**j` tokens, and each of the `prompts` sharing the pass (`prompt_rows`
        tokens in all) one chunk of its prefill, whatever the guess. So a guess pays only when the
        tokens kept outweigh the time it adds to every sequence in the pass."""
        n = len(ps)
        ps = [min(0.98, p) for p in ps]
        one = self.decode(n)
        plain = one + self.prompt(prompt_rows)
        best, best_rate = 0, (n + prompts) / plain
        tokens, chances = float(n), [1.0] * n
        for length in range(1, min(most, MAX_PASS_ROWS // n - 1) + 1):
            chances = [c * p for c, p in zip(chances, ps, strict=True)]
            tokens += sum(chances)
            rate = (tokens + prompts) / (plain - one + self.decode(n, 1 + length))
            if rate > best_rate:
                best, best_rate = length, rate
        return best


def _assumed(rows: int) -> float:
    """A pass's cost by its rows with logits, in one-row passes, until measured (see ROW_COST)."""
    if rows > ROW_GROUP:
        rows = -(-rows // ROW_GROUP) * ROW_GROUP
    return 1 + ROW_COST * (rows - 1)


@dataclass(frozen=True)
class Guess:
    start: int  # the context position the guessed tokens are copied from
    p: float  # the chance that each is right, given the ones before it


class NgramIndex:
    """Where each n-gram of a token run ended, for n in NGRAM_SIZES. Image positions break runs."""

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        self.tokens: list[int | None] = []  # None: an image position (never drafted, never matched)
        self._ends: dict[tuple[int | None, ...], list[int]] = {}
        for key in keys:
            self.push(key if isinstance(key, int) else None)

    def push(self, token: int | None) -> None:
        """Append a token; the n-grams ending before it become searchable."""
        tokens, end = self.tokens, len(self.tokens)
        for n in NGRAM_SIZES:
            if end >= n:
                gram = tuple(tokens[end - n : end])
                if None not in gram:
                    self._ends.setdefault(gram, []).append(end)
        tokens.append(token)

    def ends(self, gram: tuple[int, ...]) -> list[int]:
        """The latest positions right after an earlier occurrence of `gram`."""
        return self._ends.get(gram, [])[-CANDIDATES:]


class Drafter:
    """One sequence's drafts: the prompt's index (shared by its choices, read-only) and its own output.

    Of the earlier occurrences of the context's last n-gram, the one whose match with the context
    reaches furthest back is followed. How many tokens to guess follows from the chance that each is
    right against what its rows cost (PassTimes.guess_length): the j-th guessed token is right with
    probability p**j. Beside other sequences every one guesses as many tokens, or none does
    (docs/engine.md, Speculative decoding).
    """

    def __init__(self, prompt: NgramIndex) -> None:
        self._prompt = prompt
        self._own = NgramIndex()
        self._hits = 0.0  # decayed counts of guessed tokens that were right, and of guesses tried
        self._tries = 0.0

    def __len__(self) -> int:
        return len(self._prompt.tokens) + len(self._own.tokens)

    def _token(self, position: int) -> int | None:
        prompt = self._prompt.tokens
        return prompt[position] if position < len(prompt) else self._own.tokens[position - len(prompt)]

    def push(self, token: int) -> None:
        """A generated token, now part of the context."""
        self._own.push(token)

    def lookup(self, beside: bool = False) -> Guess | None:
        """Where a guess would copy from, and the chance that each of its tokens is right given the ones
        before: the acceptance rate so far, or what the match length says when that says more (a long
        copy tends to go on). Beside other sequences, which wait for every guess's rows, a sequence that
        has not guessed yet has no rate, and a match must reach further back for the same chance (a
        short match in a story is no copy). None: the context's last n-gram occurred nowhere before."""
        found = self._follow()
        if found is None:
            return None
        start, reach = found
        if beside:
            return Guess(start, max(self._rate() if self._tries else 0.0, reach / (reach + BESIDE_PRIOR)))
        return Guess(start, max(self._rate(), reach / (reach + 2)))

    def _follow(self) -> tuple[int, int] | None:
        """Of the earlier occurrences of the context's last n-gram, the position after the one whose
        match with the context reaches furthest back, and how far (None: no occurrence)."""
        end = len(self)
        offset = len(self._prompt.tokens)
        for n in NGRAM_SIZES:
            if end < n:
                continue
            gram = tuple(self._token(i) for i in range(end - n, end))
            if None in gram:
                continue
            candidates = [*self._prompt.ends(gram), *(offset + e for e in self._own.ends(gram))]  # type: ignore[arg-type]
            if candidates:
                return max(((e, self._reach(e, end)) for e in candidates), key=lambda pair: (pair[1], pair[0]))
        return None

    def copy(self, guess: Guess, limit: int) -> list[int]:
        """Up to `limit` tokens of the context from the guess's start, up to an image position."""
        start, end = guess.start, len(self)
        out: list[int] = []
        for position in range(start, start + limit):
            # Past the end of the context the guess copies itself: a loop goes on looping.
            token = self._token(position) if position < end else out[position - end]
            if token is None:
                break
            out.append(token)
        return out

    def _rate(self) -> float:
        return (self._hits + 1) / (self._tries + 2)  # Laplace: an unknown sequence starts at 1/2

    def _reach(self, candidate: int, end: int) -> int:
        """How many tokens before `candidate` equal those before `end` (at most MATCH_WINDOW)."""
        k = 0
        while k < MATCH_WINDOW and candidate - 1 - k >= 0:
            token = self._token(candidate - 1 - k)
            if token is None or token != self._token(end - 1 - k):
                break
            k += 1
        return k

    def accepted(self, drafted: int, kept: int) -> None:
        """Feedback after a verification: `kept` of `drafted` guessed tokens were right (a token is
        tried only if the ones before it were right)."""
        if drafted == 0:
            return
        self._hits = DECAY * self._hits + kept
        self._tries = DECAY * self._tries + kept + (kept < drafted)
