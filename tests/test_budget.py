"""Grammar-constrained output that must end within its token budget (engines/llamacpp/budget.py), without
a model: wherever a document is cut, the completion the budget module writes makes it valid.

The oracle is the independent GBNF interpreter of test_grammar.py: it draws documents from each grammar,
and every cut of one, completed, must be accepted by it and validate against the schema.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from localxai.chat import Tool, ToolChoice, ToolMode
from localxai.engines import toolcalls
from localxai.engines.llamacpp.budget import Grammar, GrammarSyntaxError, Tracker
from localxai.engines.llamacpp.grammar import schema_to_gbnf
from localxai.engines.llamacpp.patterns import FORMATS

from test_grammar import INTEGER_BOUNDS, MISC_SCHEMAS, PATTERN_CASES, Gbnf, Owner, check

FORCED = toolcalls.forced_schema(
    [
        Tool("get_weather", "", json.dumps({"type": "object", "properties": {"city": {"type": "string"}}})),
        Tool("Owner", "", json.dumps(Owner.model_json_schema())),
    ],
    ToolChoice(ToolMode.REQUIRED),
    parallel=True,
)
SCHEMAS: list[Any] = [
    {"type": "object"},
    {"type": "string", "minLength": 5, "maxLength": 9},
    {"type": "array", "items": {"type": "string"}, "minItems": 3},
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "array"}}}}},
    *({"type": "string", "format": f} for f in sorted(FORMATS)),
    *(case[0] for case in PATTERN_CASES[:6]),
    *({"type": "integer", **b} for b in INTEGER_BOUNDS[:4]),
    *(s for s in MISC_SCHEMAS if "maxProperties" not in json.dumps(s)),
    Owner.model_json_schema(),
    FORCED,
]


def compiled(schema: Any) -> tuple[str, Gbnf, Grammar]:
    gbnf = schema_to_gbnf(json.dumps(schema))
    return gbnf, Gbnf(gbnf), Grammar(gbnf)


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_every_cut_of_a_document_completes_to_a_valid_one(schema: Any) -> None:
    _, oracle, grammar = compiled(schema)
    shortest = grammar.shortest()
    assert oracle.accepts(shortest), shortest
    check(schema, json.loads(shortest))
    rng = random.Random(7)
    for _ in range(12):
        text = oracle.sample(rng)
        stacks = grammar.start()
        cuts = sorted(rng.sample(range(len(text) + 1), min(6, len(text) + 1)))
        for i, char in enumerate(text + "\0"):
            if i in cuts:
                done = text[:i] + grammar.completion(stacks)
                assert oracle.accepts(done), (text[:i], done)
                check(schema, json.loads(done))
                assert len(grammar.completion(stacks).encode()) == grammar.cost(stacks)
            if i < len(text):
                stacks = grammar.advance(stacks, char)
                assert stacks, (text, i)
        assert () in stacks  # the whole sample is a document


@pytest.mark.parametrize("budget", [6, 9, 14, 25, 60])
@pytest.mark.parametrize("schema", [*SCHEMAS[:12], Owner.model_json_schema(), FORCED], ids=range(14))
def test_a_tracker_ends_every_document_within_its_budget(schema: Any, budget: int) -> None:
    """Tokens of one to four characters from long documents: the tracker takes them while the
    document can still end in time, then completes it; a budget too small for any document is the
    caller's refusal (the engine answers 400), so it starts from the smallest that fits."""
    _, oracle, grammar = compiled(schema)
    budget = max(budget, len(grammar.shortest().encode()))
    rng = random.Random(budget)
    for _ in range(6):
        text = oracle.sample(rng)
        tracker, taken, used = Tracker(grammar), "", 0
        ending = None
        while text and ending is None and used < budget:
            size = 1 + rng.randrange(4)
            piece, text = text[:size], text[size:]
            ending = tracker.take(piece.encode(), budget - used)
            if ending is None:
                taken += piece
                used += 1
        assert not tracker.lost
        done = taken + (ending or "")
        assert used + len((ending or "").encode()) <= budget
        assert oracle.accepts(done), done
        check(schema, json.loads(done))


def test_a_character_split_across_tokens_is_finished_before_the_document_is_closed() -> None:
    grammar = Grammar(schema_to_gbnf(json.dumps({"type": "string"})))
    tracker = Tracker(grammar)
    snowman = "☃".encode()
    assert tracker.take(b'"a', 20) is None
    assert tracker.take(snowman[:1], 19) is None  # room kept for the rest and the closing quote
    assert tracker.take(snowman[1:], 3) is None  # a split character is finished, whatever is left
    assert tracker.take(b"bcd", 1) == '"'
    assert tracker.complete is False


def test_a_tracker_that_loses_the_parse_stops_steering_rather_than_guess() -> None:
    tracker = Tracker(Grammar(schema_to_gbnf(json.dumps({"type": "integer"}))))
    assert tracker.take(b"x", 10) is None
    assert tracker.lost


def test_grammar_syntax_this_parser_does_not_read_is_an_error() -> None:
    for text in ['root ::= "a" missing', 'root "a"', "root ::= [a-", 'root ::= "\\q"']:
        with pytest.raises(GrammarSyntaxError):
            Grammar(text)


def test_repetitions_and_groups_as_llama_cpp_reads_them() -> None:
    grammar = Grammar('root ::= ("ab" | "c"){2,3} [0-9]+ x?\nx ::= "!"')
    assert grammar.shortest() == "cc0"
    stacks = grammar.start()
    for char in "abcab7":
        stacks = grammar.advance(stacks, char)
    assert grammar.completion(stacks) == ""
    assert not grammar.advance(stacks, "c")  # at most three of the group


def test_the_deepest_groups_the_converter_writes_are_read_without_recursion() -> None:
    """maxLength 1,000 is a thousand nested groups: parsed on a list, not the Python stack."""
    grammar = Grammar(schema_to_gbnf(json.dumps({"type": "array", "items": {"type": "string", "maxLength": 1000}})))
    tracker = Tracker(grammar)
    assert tracker.take(b'["', 600) is None
    for left in range(599, 299, -1):
        assert tracker.take(b"ab", left) is None
    assert tracker.take(b"c", 2) == '"]'
