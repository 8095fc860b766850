"""Prompt KV kept in host memory after its slot is given to another conversation.

The slots' KV (the prefix cache) holds `--parallel` conversations; a server has more. Before a slot's
KV is cut, its sequence state (llama.cpp's per-sequence state copy: every cell with its position) is
saved here, keyed by the positions it holds. A new prompt whose longest cached prefix lies here, not
in a slot, gets it copied back into its slot instead of decoding it again. Entries are dropped least
recently used first to stay within the byte budget, and an entry whose keys another one extends is
replaced by it, so a growing conversation keeps one entry.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

from localxai.engines.llamacpp.prompt import Key

MIN_TOKENS = 64  # shorter runs are cheaper to decode again than to keep


@dataclass(eq=False)
class Entry:
    keys: list[Key]
    state: ctypes.Array[ctypes.c_uint8]
    last_used: int = 0

    @property
    def size(self) -> int:
        return len(self.state)


class HostCache:
    """Sequence states within a byte budget, least recently used out first. Used by the scheduler thread;
    `limit` may be called from any thread (the model pool shrinks the cache to make room for a model)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._entries: list[Entry] = []
        self._clock = 0
        self._lock = threading.Lock()

    def limit(self, budget_bytes: int) -> None:
        """Hold at most `budget_bytes` from now on, dropping the least recently used entries now."""
        with self._lock:
            self.budget = budget_bytes
            self._evict()

    def _evict(self) -> None:
        while self.used > self.budget:
            oldest = min(self._entries, key=lambda e: e.last_used)
            self._entries.remove(oldest)
            self.used -= oldest.size

    def __len__(self) -> int:
        return len(self._entries)

    def covers(self, keys: list[Key]) -> bool:
        """Whether some entry already holds `keys` as (a prefix of) its own."""
        with self._lock:
            return any(common_prefix(e.keys, keys, len(keys)) == len(keys) for e in self._entries)

    def put(self, keys: list[Key], state: ctypes.Array[ctypes.c_uint8]) -> None:
        with self._lock:
            if len(state) > self.budget:
                return
            self._entries = [e for e in self._entries if not self._extends(keys, e)]
            self._clock += 1
            self._entries.append(Entry(list(keys), state, self._clock))
            self.used = sum(e.size for e in self._entries)
            self._evict()

    def best(self, keys: list[Key], limit: int, use: bool = True) -> tuple[Entry | None, int]:
        """The entry sharing the longest prefix with `keys` (at most `limit` positions), and its length;
        `use`: it counts as used now (least recently used entries go first), else only looked at."""
        best, length = None, 0
        with self._lock:
            for entry in self._entries:
                common = common_prefix(entry.keys, keys, limit)
                if common > length:
                    best, length = entry, common
            if best is not None and use:
                self._clock += 1
                best.last_used = self._clock
        return best, length

    @staticmethod
    def _extends(keys: list[Key], entry: Entry) -> bool:
        return len(entry.keys) <= len(keys) and common_prefix(entry.keys, keys, len(entry.keys)) == len(entry.keys)


def common_prefix(a: list[Key], b: list[Key], limit: int) -> int:
    """Length of the common prefix of `a` and `b`, at most `limit`: a binary search over slice
    comparisons, which run in C (a prompt is thousands of positions, compared against every slot)."""
    high = min(len(a), len(b), limit)
    if a[:high] == b[:high]:
        return high
    low = 0  # a[:low] == b[:low] always; a[:high] != b[:high]
    while high - low > 1:
        mid = (low + high) // 2
        if a[low:mid] == b[low:mid]:
            low = mid
        else:
            high = mid
    return low
