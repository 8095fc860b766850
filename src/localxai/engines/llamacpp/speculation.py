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

from collections.abc import Iterable

from localxai.engines.llamacpp.prompt import Key

NGRAM_SIZES = (4, 3)  # longest first: a longer match predicts better
# A pass holds at most MAX_PASS_ROWS rows: beyond 16 a row costs little less (docs/engine.md), not enough
# to pay for longer guesses that fail more often.
MAX_PASS_ROWS = 16
CANDIDATES = 8  # latest occurrences of an n-gram compared by how far their match reaches back
MATCH_WINDOW = 96  # how far back a match is measured
DECAY = 0.8  # weight of earlier verifications in a sequence's acceptance rate
# Until the server has timed passes of its own, a pass's cost is assumed to follow the default model's
# on 2 cores: one more row with logits costs ROW_COST of a one-row pass (the 262k-token output layer
# runs for every row), and llama.cpp's CPU matrix kernels take rows in groups of ROW_GROUP and the rest
# one by one, so 5 rows cost about as much as 8. Measured times replace the assumption size by size.
ROW_COST = 0.29
ROW_GROUP = 4
TIME_WEIGHT = 0.2  # weight of the latest pass in a moving average of pass times


class PassTimes:
    """How long this server's passes take, measured: a moving average of the seconds a pass of one
    sequence takes by how many rows with logits it decodes (its next token and its guesses), and of
    the seconds a prompt token adds to a pass. One per model; only the scheduler thread uses it."""

    def __init__(self) -> None:
        self._rows: list[float | None] = [None] * (MAX_PASS_ROWS + 1)
        self._prompt_row: float | None = None

    def observe(self, rows: int, prompt_rows: int, seconds: float) -> None:
        """A pass of one sequence's `rows` rows with logits (0: none) and `prompt_rows` prompt tokens."""
        if prompt_rows:
            per_row = max(0.0, seconds - (self.decode(rows) if rows else 0.0)) / prompt_rows
            self._prompt_row = _average(self._prompt_row, per_row)
        elif 1 <= rows <= MAX_PASS_ROWS:
            self._rows[rows] = _average(self._rows[rows], seconds)

    def decode(self, rows: int) -> float:
        """Seconds for a pass of `rows` rows with logits: measured, else scaled from the nearest
        measured smaller pass by the assumed shape (1.0 for one row while nothing is measured)."""
        for known in range(rows, 0, -1):
            if (seconds := self._rows[known]) is not None:
                return seconds * _assumed(rows) / _assumed(known)
        return _assumed(rows)

    def prompt(self, rows: int) -> float:
        """Seconds that `rows` prompt tokens add to a pass (a quarter of a row with logits until measured)."""
        per_row = self._prompt_row if self._prompt_row is not None else self.decode(1) * ROW_COST / 4
        return rows * per_row

    def guess_length(self, p: float, most: int, prompts: int = 0, prompt_rows: int = 0) -> int:
        """How many tokens a sequence generating alone should guess, each right with probability `p`
        given the ones before it: the length that makes its pass progress fastest. Its next token and
        `j` guessed ones yield `1 + p + ... + p**j` tokens, and each of the `prompts` sharing the pass
        (`prompt_rows` tokens in all) one chunk of its prefill, whatever the guess. So a guess pays
        only when the tokens it keeps outweigh the time it adds to every sequence in the pass."""
        p = min(0.98, p)
        one = self.decode(1)
        plain = one + self.prompt(prompt_rows)
        best, best_rate = 0, (1 + prompts) / plain
        tokens, chance = 1.0, 1.0
        for length in range(1, min(most, MAX_PASS_ROWS - 1) + 1):
            chance *= p
            tokens += chance
            rate = (tokens + prompts) / (plain - one + self.decode(1 + length))
            if rate > best_rate:
                best, best_rate = length, rate
        return best


def _assumed(rows: int) -> float:
    """A pass's cost by its rows with logits, in one-row passes, until measured (see ROW_COST)."""
    if rows > ROW_GROUP:
        rows = -(-rows // ROW_GROUP) * ROW_GROUP
    return 1 + ROW_COST * (rows - 1)


def _average(current: float | None, seconds: float) -> float:
    return seconds if current is None else current + TIME_WEIGHT * (seconds - current)


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
    probability p**j. The scheduler guesses only for a sequence that generates alone (docs/engine.md,
    Speculative decoding).
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

    def draft(self, room: int, times: PassTimes, prompts: int = 0, prompt_rows: int = 0) -> list[int]:
        """Guessed tokens to follow the context, at most `room`: as many as make its pass (shared with
        `prompts` prompts of `prompt_rows` tokens) progress fastest by `times`, each taken to be right
        as often as the guesses so far, or as the match length says when that says more (a long copy
        tends to go on)."""
        found = self._follow()
        if found is None:
            return []
        best, reach = found
        p = max(self._rate(), reach / (reach + 2))
        return self._copy(best, times.guess_length(p, room, prompts, prompt_rows))

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

    def _copy(self, start: int, limit: int) -> list[int]:
        """Up to `limit` tokens of the context from `start`, up to an image position."""
        end = len(self)
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
