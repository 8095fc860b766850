"""Turns a stream of token bytes into text, cutting it at stop strings.

Stop strings never reach the client, also when a stop is split across tokens: text that could be
the start of a stop string is held back until the next token decides.
"""

from __future__ import annotations

import codecs


class TextAssembler:
    """Incremental UTF-8 decoding plus stop-string detection for one choice."""

    def __init__(self, stops: tuple[str, ...] = ()) -> None:
        self._stops = tuple(s for s in stops if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that is now safe to emit."""
        if self.stopped:
            return ""
        text = self._pending + self._decoder.decode(piece)
        cut = self._earliest_stop(text)
        if cut is not None:
            self.stopped = True
            self._pending = ""
            return text[:cut]
        hold = self._held_suffix(text)
        self._pending = text[len(text) - hold :]
        return text[: len(text) - hold]

    def flush(self) -> str:
        """End of generation: whatever was held back (and any partial byte sequence) is text."""
        if self.stopped:
            return ""
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        cut = self._earliest_stop(text)
        if cut is not None:
            self.stopped = True
            return text[:cut]
        return text

    def _earliest_stop(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        return min(hits) if hits else None

    def _held_suffix(self, text: str) -> int:
        """Length of the longest end of `text` that is a proper prefix of some stop string."""
        hold = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(text)), hold, -1):
                if text.endswith(stop[:k]):
                    hold = k
                    break
        return hold
