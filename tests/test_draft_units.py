"""The pieces of speculation and the host cache that need no model."""

from __future__ import annotations

import ctypes

from hypothesis import given
from hypothesis import strategies as st

from localxai.engines.llamacpp.hostcache import HostCache, common_prefix
from localxai.engines.llamacpp.prompt import Key
from localxai.engines.llamacpp.speculation import MAX_PASS_ROWS, ROW_GROUP, SAMPLES, Drafter, NgramIndex, PassTimes


def state(size: int) -> ctypes.Array[ctypes.c_uint8]:
    return (ctypes.c_uint8 * size)()


def draft(drafter: Drafter, room: int, times: PassTimes) -> list[int]:
    """What the scheduler guesses for a sequence generating alone."""
    guess = drafter.lookup()
    return [] if guess is None else drafter.copy(guess, times.guess_length([guess.p], room))


def guesses(keys: list[Key], room: int = 100) -> list[int]:
    return draft(Drafter(NgramIndex(keys)), room, free_rows())


def timed(costs: dict[int, float], prompt_row: float | None = None) -> PassTimes:
    """Pass times measured SAMPLES times for each size in `costs` (seconds by rows with logits)."""
    times = PassTimes()
    for rows, seconds in costs.items():
        for _ in range(SAMPLES):
            times.observe(1, rows, 0, seconds)
    for _ in range(SAMPLES if prompt_row is not None else 0):
        times.observe(0, 0, 100, 100 * prompt_row)  # type: ignore[operator]
    return times


def free_rows() -> PassTimes:
    """Passes that cost the same whatever their rows: every guess that may be right is worth making."""
    return timed(dict.fromkeys(range(1, MAX_PASS_ROWS + 1), 0.02))


def test_draft_follows_the_latest_earlier_occurrence() -> None:
    assert guesses([1, 2, 3, 4, 5, 6, 9, 2, 3, 4, 7, 8]) == []  # (4, 7, 8): new
    drafter = Drafter(NgramIndex([1, 2, 3, 4, 5, 6, 0, 1, 2, 3]))
    assert draft(drafter, 4, free_rows()) == [4, 5, 6, 0]  # (1, 2, 3) seen before: what followed, then the loop
    assert draft(drafter, 2, free_rows()) == [4, 5]  # the room caps it


def test_image_positions_break_runs() -> None:
    assert guesses([1, 2, 3, ("img", 0), ("img", 1), 4, 1, 2, 3]) == []  # what followed (1, 2, 3) was an image


def test_own_output_is_searched_and_length_follows_the_odds() -> None:
    drafter = Drafter(NgramIndex([50, 51]))
    for token in [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 7, 8, 9]:
        drafter.push(token)
    assert draft(drafter, 100, free_rows()) == [*range(10, 24), 7]  # free rows: a full pass with its next token
    dear = timed({rows: 0.02 * (1 + 0.7 * (rows - 1)) for rows in range(1, MAX_PASS_ROWS + 1)})  # 0.7 a row
    assert draft(drafter, 100, dear) == []  # a short match and no history: not worth a row
    for _ in range(3):
        drafter.accepted(10, 10)
    assert 3 <= len(draft(drafter, 100, dear)) < MAX_PASS_ROWS - 1  # right so far: a few rows are worth it
    for _ in range(8):
        drafter.accepted(6, 0)
    assert draft(drafter, 100, dear) == []  # wrong lately: none


def test_a_guess_fills_the_last_row_group_of_its_pass_until_passes_are_timed() -> None:
    times = PassTimes()  # nothing measured: llama.cpp's CPU kernels take rows in groups of 4
    for p in (0.3, 0.5, 0.7, 0.9, 0.98):
        length = times.guess_length([p], 100)
        assert length == 0 or length < ROW_GROUP or (1 + length) % ROW_GROUP == 0
    assert times.guess_length([0.98], 100) == MAX_PASS_ROWS - 1  # sure guesses: one full pass
    assert times.guess_length([0.98], 5) == 3  # room for 5 guesses: 6 rows would cost as much as 8, 4 pay best
    assert times.guess_length([0.1], 100) == 0  # a row costs more than a guess right one time in ten yields


def test_measured_pass_times_decide_the_length() -> None:
    stepped = {1: 28, 2: 39, 3: 46, 4: 50, 5: 75, 6: 82, 7: 89, 8: 80, 12: 112, 16: 138}  # ms, docs/engine.md
    times = timed({rows: ms / 1000 for rows, ms in stepped.items()})
    assert times.decode(1, 8) < times.decode(1, 7)
    lengths = {p: times.guess_length([p], 100) for p in (0.6, 0.8, 0.9, 0.95)}
    assert all(1 + length in stepped for length in lengths.values())  # only sizes it timed
    assert lengths[0.6] <= lengths[0.8] <= lengths[0.9] <= lengths[0.95] and lengths[0.95] >= 7
    # Another machine, where wide passes are dearer (another model, another CPU): the same odds guess less.
    slower = timed({1: 0.028, **{rows: 0.028 * rows for rows in range(2, MAX_PASS_ROWS + 1)}})
    assert slower.guess_length([0.8], 100) < lengths[0.8] and slower.guess_length([0.6], 100) == 0


def test_a_pass_size_is_timed_once_then_fixed() -> None:
    """The median of its first SAMPLES timings: an outlier does not move it, and later timings do not
    either, so a request repeated on an idle server gets the same guesses (and the same output)."""
    times = PassTimes()
    assert times.decode(1, 4) == times.decode(1) * (1 + 3 * 0.29)  # nothing timed: the assumed shape
    for seconds in [0.05] * (SAMPLES - 1):
        times.observe(1, 4, 0, seconds)
    assert times.decode(1, 4) != 0.05  # not yet
    times.observe(1, 4, 0, 9.0)  # one outlier among them
    assert times.decode(1, 4) == 0.05
    lengths = [times.guess_length([p], 100) for p in (0.5, 0.7, 0.9)]
    for _ in range(50):
        times.observe(1, 4, 0, 0.5)
    assert times.decode(1, 4) == 0.05
    assert [times.guess_length([p], 100) for p in (0.5, 0.7, 0.9)] == lengths


def test_a_guess_beside_prompts_pays_for_the_time_it_adds_to_them() -> None:
    times = timed({1: 0.020, 4: 0.040, 8: 0.060, 16: 0.100}, prompt_row=0.001)  # a prompt token adds 1 ms
    assert times.prompt(128) == 0.128
    alone = times.guess_length([0.7], 100)
    assert alone > 0
    # One prompt's chunk of 128 tokens in the pass: the guess's rows add little to its 148 ms.
    assert times.guess_length([0.7], 100, prompts=1, prompt_rows=128) >= alone
    # Seven short prompts finishing their prefill: each would wait for the guess's rows.
    assert times.guess_length([0.7], 100, prompts=7, prompt_rows=7) == 0


def test_sequences_generating_together_guess_as_many_tokens_or_none() -> None:
    """Unequal token counts would split the pass (one KV stream per sequence): one count for all,
    chosen from the measured passes of that many sequences."""
    times = timed({})
    for rows, ms in {1: 60, 2: 85, 4: 138}.items():  # 4 sequences of 1, 2 and 4 rows each
        for _ in range(SAMPLES):
            times.observe(4, rows, 0, ms / 1000)
    assert times.decode(4, 4) == 0.138
    copying = [0.97, 0.95, 0.96, 0.98]
    assert times.guess_length(copying, 100) == 3  # 16 rows: the most a pass holds
    assert times.guess_length([0.3] * 4, 100) == 0  # the guesses would not pay for their rows
    assert times.guess_length(copying * 2, 100) <= 1  # 8 sequences: at most 2 rows each
    assert times.guess_length(copying * 4, 100) == 0  # 16: no room at all
    # Beside others a short match is no evidence of a copy; a long one is, and so are kept guesses.
    story = Drafter(NgramIndex([5, 1, 2, 3, 9, 9, 4, 1, 2, 3]))
    alone, beside = story.lookup(), story.lookup(beside=True)
    assert alone is not None and beside is not None and beside.p < 0.3 < alone.p
    for _ in range(3):
        story.accepted(4, 4)
    assert story.lookup(beside=True).p > 0.9  # type: ignore[union-attr]


def test_a_loop_is_drafted_past_the_end_of_the_context() -> None:
    assert guesses([5, 1, 2, 3, 1, 2, 3, 1, 2, 3], 4) == [1, 2, 3, 1]


def test_the_occurrence_matching_furthest_back_is_followed() -> None:
    #        a run of the context: 9 8 7 1 2 3 -> 4;  elsewhere: 6 1 2 3 -> 5 (later, shorter match)
    assert guesses([9, 8, 7, 1, 2, 3, 4, 0, 6, 1, 2, 3, 5, 0, 9, 8, 7, 1, 2, 3], 1) == [4]


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
