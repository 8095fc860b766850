"""The pieces of speculation and the host cache that need no model."""

from __future__ import annotations

import ctypes

from hypothesis import given
from hypothesis import strategies as st

from localxai.engines.llamacpp.hostcache import HostCache, common_prefix
from localxai.engines.llamacpp.prompt import Key
from localxai.engines.llamacpp.speculation import ALONE_BAR, MAX_PASS_ROWS, ROW_GROUP, Drafter, NgramIndex


def state(size: int) -> ctypes.Array[ctypes.c_uint8]:
    return (ctypes.c_uint8 * size)()


def test_draft_follows_the_latest_earlier_occurrence() -> None:
    assert Drafter(NgramIndex([1, 2, 3, 4, 5, 6, 9, 2, 3, 4, 7, 8])).draft(8) == []  # (4, 7, 8): new
    drafter = Drafter(NgramIndex([1, 2, 3, 4, 5, 6, 0, 1, 2, 3]))
    assert drafter.draft(4) == [4, 5, 6, 0]  # (1, 2, 3) seen before: what followed, then the loop
    assert drafter.draft(2) == [4, 5]  # the room caps it


def test_image_positions_break_runs() -> None:
    keys: list[Key] = [1, 2, 3, ("img", 0), ("img", 1), 4, 1, 2, 3]
    assert Drafter(NgramIndex(keys)).draft(8) == []  # what followed (1, 2, 3) was an image


def test_own_output_is_searched_and_length_follows_the_odds() -> None:
    drafter = Drafter(NgramIndex([50, 51]))
    for token in [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 7, 8, 9]:
        drafter.push(token)
    assert drafter.draft(100) == [*range(10, 24), 7, 8]  # free rows: as much as the cap allows
    assert 0.2 < ALONE_BAR < 0.25  # alone, a guessed token right one time in four pays for its row
    busy = 0.65
    assert drafter.draft(100, busy) == []  # a short match and no history: not worth a row
    for _ in range(3):
        drafter.accepted(10, 10)
    assert 5 <= len(drafter.draft(100, busy)) < MAX_PASS_ROWS  # right so far: a few rows are worth it
    for _ in range(8):
        drafter.accepted(6, 0)
    assert drafter.draft(100, busy) == []  # wrong lately: none


def test_a_guess_fills_the_last_row_group_of_its_pass() -> None:
    drafter = Drafter(NgramIndex([*range(100, 140), 1, 2, 3, 4, *range(200, 240), 1, 2, 3, 4]))
    busy = 0.37  # the match reaches 4 tokens back: two guesses are worth their rows...
    sizes = {}
    for beside in (0, 1, 3):
        guess = drafter.draft(100, busy, beside)
        sizes[beside] = len(guess)
        assert guess == list(range(200, 240))[: len(guess)]
        assert (len(guess) + beside) % ROW_GROUP == 0  # ...and lengthened: the extra rows are about free
    assert sizes[0] > 0 and sizes[1] == sizes[0] - 1
    assert len(drafter.draft(100, 0.0, 1)) == MAX_PASS_ROWS - 1  # sure guesses: one full pass
    assert len(drafter.draft(5, 0.0, 1)) == 5  # the room still caps it


def test_a_loop_is_drafted_past_the_end_of_the_context() -> None:
    assert Drafter(NgramIndex([5, 1, 2, 3, 1, 2, 3, 1, 2, 3])).draft(4) == [1, 2, 3, 1]


def test_the_occurrence_matching_furthest_back_is_followed() -> None:
    #        a run of the context: 9 8 7 1 2 3 -> 4;  elsewhere: 6 1 2 3 -> 5 (later, shorter match)
    drafter = Drafter(NgramIndex([9, 8, 7, 1, 2, 3, 4, 0, 6, 1, 2, 3, 5, 0, 9, 8, 7, 1, 2, 3]))
    assert drafter.draft(1) == [4]


@given(st.lists(st.integers(0, 3), max_size=60), st.lists(st.integers(0, 3), max_size=60), st.integers(0, 70))
def test_common_prefix_matches_the_plain_definition(a: list[int], b: list[int], limit: int) -> None:
    expected = 0
    while expected < min(len(a), len(b), limit) and a[expected] == b[expected]:
        expected += 1
    assert common_prefix(a, b, limit) == expected  # type: ignore[arg-type]


def test_host_cache_keeps_one_entry_per_growing_conversation_and_its_budget() -> None:
    cache = HostCache(1000)
    cache.put([1, 2, 3], state(100))
    cache.put([1, 2, 3, 4, 5], state(150))  # extends the first: replaces it
    assert len(cache) == 1 and cache.used == 150
    assert cache.covers([1, 2, 3, 4]) and not cache.covers([1, 2, 9])
    cache.put([7, 8], state(400))
    cache.put([9, 9], state(400))
    entry, length = cache.best([1, 2, 3, 4, 6], 10)  # touched: now the most recently used
    assert entry is not None and length == 4
    cache.put([5, 5], state(400))  # over budget: the least recently used ([7, 8]) goes
    assert cache.used <= 1000
    assert cache.best([7, 8], 10) == (None, 0)
    assert cache.best([1, 2, 3, 4, 5], 10)[1] == 5
    cache.put([6], state(5000))  # larger than the whole budget: not kept
    assert cache.used <= 1000
    cache.limit(500)  # the model pool gives it a smaller share: the least recently used go now
    assert cache.used <= 500 and cache.best([1, 2, 3, 4, 5], 10)[1] == 5
    cache.put([4, 4], state(400))
    assert cache.used <= 500
