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
MAX_DRAFT = 12  # measured: a verified row with logits costs ~0.22 of a one-token step here
FIRST_DRAFT = 8
CANDIDATES = 8  # latest occurrences of an n-gram compared by how far their match reaches back
MATCH_WINDOW = 96  # how far back a match is measured


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
    reaches furthest back is followed. The draft length adapts: it grows while whole drafts are
    accepted (and with the length of the match: a long copy tends to go on) and shrinks to what
    was accepted when a guess fails, so a sequence that does not repeat its context stops paying
    for drafts.
    """

    def __init__(self, prompt: NgramIndex) -> None:
        self._prompt = prompt
        self._own = NgramIndex()
        self._length = FIRST_DRAFT

    def __len__(self) -> int:
        return len(self._prompt.tokens) + len(self._own.tokens)

    def _token(self, position: int) -> int | None:
        prompt = self._prompt.tokens
        return prompt[position] if position < len(prompt) else self._own.tokens[position - len(prompt)]

    def push(self, token: int) -> None:
        """A generated token, now part of the context."""
        self._own.push(token)

    def draft(self, room: int) -> list[int]:
        """Guessed tokens to follow the context, at most `room`."""
        end = len(self)
        offset = len(self._prompt.tokens)
        for n in NGRAM_SIZES:
            if end < n:
                continue
            gram = tuple(self._token(i) for i in range(end - n, end))
            if None in gram:
                continue
            candidates = [*self._prompt.ends(gram), *(offset + e for e in self._own.ends(gram))]  # type: ignore[arg-type]
            if not candidates:
                continue
            best, reach = max(((e, self._reach(e, end)) for e in candidates), key=lambda pair: (pair[1], pair[0]))
            limit = min(room, MAX_DRAFT, max(self._length, reach // 2))
            out: list[int] = []
            for position in range(best, best + limit):
                # Past the end of the context the guess copies itself: a loop goes on looping.
                token = self._token(position) if position < end else out[position - end]
                if token is None:
                    break
                out.append(token)
            return out
        return []

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
        """Feedback after a verification: `kept` of `drafted` guessed tokens were right."""
        if drafted == 0:
            return
        self._length = min(MAX_DRAFT, self._length * 2) if kept == drafted else max(1, kept + 1)
