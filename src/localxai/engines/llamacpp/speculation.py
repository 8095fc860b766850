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
OWN_PASS_DRAFT = 8  # the shortest guess worth a llama.cpp pass of its own (beside other sequences)
CANDIDATES = 8  # latest occurrences of an n-gram compared by how far their match reaches back
MATCH_WINDOW = 96  # how far back a match is measured
# Cost of one more row with logits in a decode step, relative to the rest of a one-token step
# (measured on 2 cores with the default model: about 6 ms against 21 ms; the output layer dominates).
ROW_COST = 0.29
DECAY = 0.8  # weight of earlier verifications in a sequence's acceptance rate
# With more sequences generating, no guesses at all: the batch keeps the machine busy, and an own pass
# would need nearly every guessed token right (measured: guesses lost 14-22% at 8 and 16).
MAX_SPECULATING = 4


# Alone, a guessed token shares the pass of the sequence's next token, and a step of one row yields one
# token: one more row pays when the guessed token is right more often than ROW_COST / (1 + ROW_COST),
# about one time in four.
ALONE_BAR = ROW_COST / (1 + ROW_COST)
COST_WEIGHT = 0.1  # weight of the latest measurement of a pass's time


class PassCosts:
    """How long one llama.cpp pass of a given number of rows with logits takes on this machine, measured
    as the server runs (a moving average of the steps that were one such pass). How these costs grow
    with the rows differs from CPU to CPU by a factor of two (docs/engine.md), so a guess's own pass is
    weighed with this machine's numbers."""

    def __init__(self) -> None:
        self._ms: dict[int, float] = {}

    def record(self, rows: int, ms: float) -> None:
        known = self._ms.get(rows)
        self._ms[rows] = ms if known is None else known + COST_WEIGHT * (ms - known)

    def ms(self, rows: int) -> float | None:
        return self._ms.get(rows)


def kept_on_average(p: float, length: int) -> float:
    """Guessed tokens kept out of `length` when each is right with probability `p` (a token counts only
    if the ones before it were right): p + p**2 + ... + p**length."""
    return length if p >= 1 else p * (1 - p**length) / (1 - p)


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
    right against what its row costs: the j-th guessed token is right with probability p**j. Alone
    (`draft`), guessing stops where p**j falls below the bar; beside other sequences (`own_pass`), the
    guess's pass must yield more tokens than the shared pass would in the same time.
    """

    def __init__(self, prompt: NgramIndex) -> None:
        self._prompt = prompt
        self._own = NgramIndex()
        self._hits = 0.0  # decayed counts of guessed tokens that were right, and of guesses tried
        self._tries = 0.0
        self._shadow: tuple[int, list[int]] | None = None  # (own tokens then, guess) of an unsent guess

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
        self._settle_shadow()
        found = self._follow()
        if found is None:
            return []
        best, reach = found
        length = self._length(max(self._rate(), reach / (reach + 2)), bar, MAX_PASS_ROWS - beside)
        if length:
            length = -(-(length + beside) // ROW_GROUP) * ROW_GROUP - beside
        return self._copy(best, min(room, length))

    def own_pass(self, room: int, generating: int, costs: PassCosts) -> tuple[float, list[int]]:
        """A guess for a llama.cpp pass of its own, after the one-token rows of `generating` sequences
        (one KV stream per sequence: llama.cpp passes the tokens a sequence has beyond the others'
        separately), and what it is expected to gain: the guessed tokens kept on average, less the
        tokens the shared pass would have made in the time the own pass takes. The guess is worth its
        pass when that is positive; the scheduler hands back the others with `unsent`.

        The chance that a guessed token is right is the sequence's acceptance rate alone — its real and
        unsent guesses — not the match length, which is too confident for sampled text."""
        self._settle_shadow()
        found = self._follow()
        shared = costs.ms(generating)
        lengths = range(OWN_PASS_DRAFT, min(room, MAX_PASS_ROWS) + 1, ROW_GROUP)
        if found is None or not lengths:
            return 0.0, []
        if shared is None:
            return 0.0, self._copy(found[0], OWN_PASS_DRAFT)  # not proposed, but it counts as unsent
        p = self._rate()
        # A pass never measured is tried once as if it were free: from then on its time is known.
        gain, length = max((kept_on_average(p, n) - generating * (costs.ms(n) or 0.0) / shared, n) for n in lengths)
        return gain, self._copy(found[0], length)

    def unsent(self, guess: list[int]) -> None:
        """A guess that was not decoded: the tokens generated next tell whether it would have been
        right, and count as a verification. Beside other sequences guesses are rarely decoded, so this
        is what keeps a sequence's acceptance rate current there."""
        if guess and self._shadow is None:
            self._shadow = (len(self._own.tokens), guess)

    def _settle_shadow(self) -> None:
        if self._shadow is None:
            return
        start, guess = self._shadow
        since = self._own.tokens[start:]
        kept = 0
        while kept < min(len(since), len(guess)) and since[kept] == guess[kept]:
            kept += 1
        if kept == len(guess) or kept < len(since):  # all of it came, or a token differed
            self._shadow = None
            self._count(len(guess), kept)

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
        tried only if the ones before it were right). An unsent guess still waiting for its tokens is
        dropped: they are the ones just verified."""
        self._shadow = None
        self._count(drafted, kept)

    def _count(self, drafted: int, kept: int) -> None:
        if drafted == 0:
            return
        self._hits = DECAY * self._hits + kept
        self._tries = DECAY * self._tries + kept + (kept < drafted)
