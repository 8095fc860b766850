"""The pieces of speculation and the host cache that need no model."""

from __future__ import annotations

import ctypes

from hypothesis import given
from hypothesis import strategies as st

from localxai.engines.llamacpp.hostcache import HostCache, common_prefix
from localxai.engines.llamacpp.prompt import Key
from localxai.engines.llamacpp.speculation import (
    ALONE_BAR,
    MAX_PASS_ROWS,
    OWN_PASS_DRAFT,
    ROW_GROUP,
    Drafter,
    NgramIndex,
    PassCosts,
    kept_on_average,
)


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


def test_kept_on_average_is_the_sum_of_the_chances_of_each_run() -> None:
    for p in (0.0, 0.3, 0.9, 1.0):
        for length in (1, 8, 16):
            assert abs(kept_on_average(p, length) - sum(p**j for j in range(1, length + 1))) < 1e-9


def loop(period: int, times: int) -> list[int]:
    return [*range(100, 100 + period)] * times


def measured(table: dict[int, float]) -> PassCosts:
    costs = PassCosts()
    for rows, ms in table.items():
        costs.record(rows, ms)
    return costs


# One pass's time by its rows with logits, as measured on an Intel machine of 2 cores.
COSTS = measured({2: 44, 3: 55, 4: 60, 8: 106, 12: 150, 16: 190})


def test_pass_costs_follow_the_latest_measurements() -> None:
    costs = measured({4: 60})
    assert costs.ms(4) == 60 and costs.ms(8) is None
    for _ in range(60):
        costs.record(4, 40)
    assert abs(costs.ms(4) - 40) < 0.1  # type: ignore[operator]


def test_an_own_pass_needs_a_rate_earned_by_guesses_that_came_true() -> None:
    drafter = Drafter(NgramIndex(loop(20, 3)))  # a context that loops: the guess is the loop
    gain, guess = drafter.own_pass(100, 2, COSTS)
    assert len(guess) >= OWN_PASS_DRAFT and len(guess) % ROW_GROUP == 0
    assert guess == loop(20, 1)[: len(guess)]
    assert gain < 0  # the match reaches far back, but no guess of this sequence came true yet
    for _ in range(4):  # the guesses were not decoded, yet the tokens generated next agree with them
        gain, guess = drafter.own_pass(100, 2, COSTS)
        drafter.unsent(guess)
        for token in guess:
            drafter.push(token)
    beside_one, _ = drafter.own_pass(100, 2, COSTS)
    beside_three, _ = drafter.own_pass(100, 4, COSTS)
    assert beside_one > 0  # now worth a pass of its own beside one other sequence...
    assert beside_three < beside_one  # ...and a pass is worth less the more sequences it holds up
    assert drafter.own_pass(7, 2, COSTS) == (0.0, [])  # no room for a pass worth its cost
    dear = measured({2: 44, 8: 1000, 12: 1000, 16: 1000})
    assert drafter.own_pass(100, 2, dear)[0] < 0
    untried = measured({2: 44, 8: 1000, 12: 1000})
    gain, guess = drafter.own_pass(100, 2, untried)
    assert gain > 0 and len(guess) == 16  # a pass never measured is tried (once: then its time is known)
    gain, guess = drafter.own_pass(100, 2, measured({}))
    assert gain == 0 and len(guess) == OWN_PASS_DRAFT  # the shared pass not measured: a guess only to check


def test_unsent_guesses_that_fail_lower_the_rate() -> None:
    drafter = Drafter(NgramIndex(loop(20, 3)))
    for turn in range(6):
        _, guess = drafter.own_pass(100, 2, COSTS)
        drafter.unsent(guess)
        drafter.push(guess[0])
        drafter.push(1000 + turn)  # a new token: one of the guessed tokens would have been kept
        for token in loop(20, 2):
            drafter.push(token)
    gain_then = drafter.own_pass(100, 2, COSTS)[0]
    assert gain_then < 0
    for _ in range(4):
        _, guess = drafter.own_pass(100, 2, COSTS)
        drafter.unsent(guess)
        for token in guess:
            drafter.push(token)
    assert drafter.own_pass(100, 2, COSTS)[0] > gain_then  # the latest guesses weigh most


def test_a_verified_guess_settles_a_pending_unsent_one_without_counting_it_twice() -> None:
    drafter = Drafter(NgramIndex(loop(20, 3)))
    _, guess = drafter.own_pass(100, 2, COSTS)
    drafter.unsent(guess)
    drafter.push(guess[0])
    drafter.accepted(8, 0)  # a real verification: the pending guess is dropped, not counted as right
    for token in guess[1:]:
        drafter.push(token)
    assert drafter.own_pass(100, 2, COSTS)[0] < 0


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
