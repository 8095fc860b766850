"""A tokenized prompt: tokens and images, and one key per position for the prefix cache.

A text token's key is its id; position `i` of an image is `(digest, i)`, the digest being a hash of
the image's bytes and the resolution the model sees. Every request's prompt is one of these.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
from llama_cpp import mtmd_cpp as mtmd

Key: TypeAlias = int | tuple[str, int]  # what one prompt position holds


@dataclass(eq=False)
class ImageChunk:
    """One image in a prompt: the positions it takes, its price, and mtmd's preprocessed input."""

    digest: str
    n_pos: int  # prompt positions it takes (its embeddings, for most models)
    billed: int  # prompt tokens it costs the client (xAI's rule)
    handle: int  # an mtmd_input_chunk owned by this object until decoded
    embeddings: npt.NDArray[np.float32] | None = None  # the vision tower's output, once encoded
    _free: weakref.finalize = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._free = weakref.finalize(self, mtmd.mtmd_input_chunk_free, self.handle)

    @property
    def keys(self) -> list[Key]:
        return [(self.digest, i) for i in range(self.n_pos)]

    def release(self) -> None:
        self._free()
        self.embeddings = None


Unit: TypeAlias = int | ImageChunk  # what a prompt is made of: tokens and images


@dataclass(frozen=True)
class Prompt:
    """A tokenized prompt: its units, and one key per position (for the prefix cache)."""

    units: list[Unit]
    keys: list[Key]

    @classmethod
    def of(cls, units: list[Unit]) -> Prompt:
        if all(isinstance(u, int) for u in units):
            return cls(units, units)  # type: ignore[arg-type]  # text only: tokens are their own keys
        keys: list[Key] = []
        for unit in units:
            keys.extend(unit.keys if isinstance(unit, ImageChunk) else [unit])
        return cls(units, keys)

    def __len__(self) -> int:
        return len(self.keys)

    def boundary(self, position: int) -> int:
        """The last position at or before `position` that does not cut an image in two."""
        if position < len(self.keys) and isinstance(key := self.keys[position], tuple):
            return position - key[1]
        return position

    def units_from(self, position: int) -> list[Unit]:
        """The units from `position` (a boundary) on."""
        if self.units is self.keys:
            return list(self.units[position:])
        at = 0
        for i, unit in enumerate(self.units):
            if at >= position:
                return list(self.units[i:])
            at += unit.n_pos if isinstance(unit, ImageChunk) else 1
        return []

    def usage(self, cached: int) -> tuple[int, int, int]:
        """(prompt_tokens, cached_tokens, image_tokens) as billed, the first `cached` positions cached."""
        prompt = cached_tokens = images = at = 0
        for unit in self.units:
            size, cost = (unit.n_pos, unit.billed) if isinstance(unit, ImageChunk) else (1, 1)
            at += size
            prompt += cost
            images += cost if isinstance(unit, ImageChunk) else 0
            cached_tokens += cost if at <= cached else 0
        return prompt, cached_tokens, images
