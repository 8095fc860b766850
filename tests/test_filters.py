"""Document-search filters (filters.py): AIP-160's comparisons, AND / OR / NOT, parentheses, and errors."""

from __future__ import annotations

import pytest

from localxai.errors import InvalidArgument
from localxai.filters import parse

DOC = {"topic": "pets", "year": "2024", "name": "cats.txt", "title": 'say "hi"'}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('topic = "pets"', True),
        ("topic = pets", True),
        ("topic:pets", True),
        ('topic != "pets"', False),
        ("missing != x", True),
        ("missing = x", False),
        ("year >= 2024", True),
        ("year > 2024", False),
        ("year < 10000", True),  # numbers compare as numbers, not as text
        ('topic = "pets" AND year = 2024', True),
        ('topic = "pets" year = 2023', False),  # adjacency is AND
        ('topic = "cars" OR year = 2024', True),
        ('NOT topic = "cars"', True),
        ('-topic = "pets"', False),
        ('(topic = "cars" OR topic = "pets") AND NOT (year < 2000)', True),
        ('title = "say \\"hi\\""', True),
        ('name = "cats.txt"', True),
    ],
)
def test_filters_match_as_aip_160_says(text: str, expected: bool) -> None:
    assert parse(text)(DOC) is expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("topic", "ends too soon"),
        ("topic pets", "comparison"),
        ("topic =", "ends too soon"),
        ("(topic = x", "not closed"),
        ("topic = x)", "unexpected ')'"),
        ("= x", "field name"),
        ('topic = "open', "unexpected character"),
        ("x" * 3000, "longer than"),
    ],
)
def test_bad_filters_say_where(text: str, needle: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse(text)
    assert needle in refused.value.message


def test_deep_nesting_is_a_clear_error() -> None:
    for text in ("- " * 1000 + "a = 1", "(" * 600 + "a = 1" + ")" * 600):
        with pytest.raises(InvalidArgument) as refused:
            parse(text)
        assert "nested more than" in refused.value.message or "longer than" in refused.value.message
