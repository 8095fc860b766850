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
MAX_DRAFT = 16
FIRST_DRAFT = 4


class NgramIndex:
    """Where each n-gram of a token run last ended, for n in NGRAM_SIZES. Image positions break runs."""

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        self.tokens: list[int | None] = []  # None: an image position (never drafted, never matched)
        self._last: dict[tuple[int | None, ...], int] = {}
        for key in keys:
            self.push(key if isinstance(key, int) else None)

    def push(self, token: int | None) -> None:
        """Append a token; the n-grams ending before it become searchable."""
        tokens, end = self.tokens, len(self.tokens)
        for n in NGRAM_SIZES:
            if end >= n:
                gram = tuple(tokens[end - n : end])
                if None not in gram:
                    self._last[gram] = end
        tokens.append(token)

    def follow(self, tail: tuple[int, ...], limit: int) -> list[int]:
        """The tokens that followed the latest earlier occurrence of `tail` (at most `limit`)."""
        end = self._last.get(tail)
        if end is None:
            return []
        out: list[int] = []
        for token in self.tokens[end : end + limit]:
            if token is None:
                break
            out.append(token)
        return out


class Drafter:
    """One sequence's drafts: the prompt's index (shared by its choices, read-only) and its own output.

    The draft length adapts: it grows while whole drafts are accepted and shrinks to what was
    accepted when a guess fails, so a sequence that never repeats its context stops paying for drafts.
    """

    def __init__(self, prompt: NgramIndex) -> None:
        self._prompt = prompt
        self._own = NgramIndex()
        self._length = FIRST_DRAFT
        self._tail: list[int] = []  # the latest tokens of the whole context (prompt, then generated)
        for token in reversed(prompt.tokens[-max(NGRAM_SIZES) :]):
            if token is None:
                break
            self._tail.insert(0, token)

    def push(self, token: int) -> None:
        """A generated token, now part of the context."""
        self._own.push(token)
        self._tail = [*self._tail[1 - max(NGRAM_SIZES) :], token]

    def draft(self, room: int) -> list[int]:
        """Guessed tokens to follow the context, at most min(room, the adaptive length)."""
        limit = min(room, self._length)
        if limit <= 0:
            return []
        tail = self._tail
        for n in NGRAM_SIZES:
            if len(tail) < n:
                continue
            gram = tuple(tail[-n:])
            # The sequence's own output first: it is the most recent context.
            guess = self._own.follow(gram, limit) or self._prompt.follow(gram, limit)
            if guess:
                return guess
        return []

    def accepted(self, drafted: int, kept: int) -> None:
        """Feedback after a verification: `kept` of `drafted` guessed tokens were right."""
        if drafted == 0:
            return
        self._length = min(MAX_DRAFT, self._length * 2) if kept == drafted else max(1, kept + 1)
