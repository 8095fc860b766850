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
# llama.cpp's CPU matrix kernels take a pass's rows in groups of 4 and the rest one by one: on 2 cores
# with the default model 4 rows cost 50 ms and 5 cost 75, 8 cost less than 7 (80 vs 89 ms) and 16 less
# than 17 (138 vs 163 ms). A guess is therefore lengthened to fill its pass's last group (the extra
# rows are about free) and a pass holds at most MAX_PASS_ROWS.
ROW_GROUP = 4
MAX_PASS_ROWS = 16
CANDIDATES = 8  # latest occurrences of an n-gram compared by how far their match reaches back
MATCH_WINDOW = 96  # how far back a match is measured
# Cost of one more row with logits in a decode step, relative to the rest of a one-token step
# (measured on 2 cores with the default model: about 6 ms against 21 ms; the output layer dominates).
ROW_COST = 0.29
DECAY = 0.8  # weight of earlier verifications in a sequence's acceptance rate


# Alone, a guessed token shares the pass of the sequence's next token, and a step of one row yields one
# token: one more row pays when the guessed token is right more often than ROW_COST / (1 + ROW_COST),
# about one time in four.
ALONE_BAR = ROW_COST / (1 + ROW_COST)


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
    right against what its row costs: the j-th guessed token is right with probability p**j, and
    guessing stops where p**j falls below the bar. The scheduler guesses only for a sequence that
    generates alone (docs/engine.md, Speculative decoding).
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

    def draft(self, room: int, bar: float = 0.0, beside: int = 0) -> list[int]:
        """Guessed tokens to follow the context: at most `room`, each likelier than `bar` to be right
        (by the acceptance rate so far, or the match length when that says more: a long copy tends to
        go on), then as many more as fill the last row group of a pass that `beside` other rows share."""
        found = self._follow()
        if found is None:
            return []
        best, reach = found
        length = self._length(max(self._rate(), reach / (reach + 2)), bar, MAX_PASS_ROWS - beside)
        if length:
            length = -(-(length + beside) // ROW_GROUP) * ROW_GROUP - beside
        return self._copy(best, min(room, length))

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

    def _length(self, p: float, bar: float, most: int) -> int:
        """How many tokens are worth guessing (at most `most`): while p**j stays above `bar`."""
        p = min(0.98, p)
        if p <= bar:
            return 0
        length, chance = 0, p
        while chance > bar and length < most:
            length += 1
            chance *= p
        return length

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
