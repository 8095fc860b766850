"""Pure units: tool-call parsing, reasoning split, and which schemas a grammar can enforce."""

from __future__ import annotations

import json

import pytest

from localxai.chat import FinishReason, ReasoningDelta, TextDelta, Tool, ToolCallDelta, ToolChoice, ToolMode
from localxai.engines import toolcalls
from localxai.engines.llamacpp.grammar import schema_to_gbnf, unenforceable
from localxai.engines.output import ChoiceOutput
from localxai.errors import InvalidArgument
from localxai.specs import ReasoningSpec

TOOLS = (Tool("get_weather", "", '{"type": "object", "properties": {"city": {"type": "string"}}}'),)


@pytest.mark.parametrize(
    "text",
    [
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}',
        '  {"name": "get_weather", "arguments": {"city": "Paris"}} ',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        '{"name": "get_weather", "parameters": "{\\"city\\": \\"Paris\\"}"}',
    ],
)
def test_parse_accepts_the_known_formats(text: str) -> None:
    [call] = toolcalls.parse(text, TOOLS) or ()
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}


@pytest.mark.parametrize(
    "text",
    ["It is sunny.", '{"name": "unknown_fn", "arguments": {}}', '{"tool_calls": []}', "<tool_call>{bad</tool_call>"],
)
def test_parse_rejects_everything_else(text: str) -> None:
    assert toolcalls.parse(text, TOOLS) is None


def test_forced_schema_limits_calls() -> None:
    single = toolcalls.forced_schema(TOOLS, ToolChoice(ToolMode.REQUIRED), parallel=False)
    assert single["properties"]["tool_calls"]["maxItems"] == 1
    parallel = toolcalls.forced_schema(TOOLS, ToolChoice(ToolMode.REQUIRED), parallel=True)
    assert parallel["properties"]["tool_calls"]["maxItems"] == toolcalls.MAX_PARALLEL_CALLS


def feed(output: ChoiceOutput, pieces: list[str], reason: FinishReason = FinishReason.STOP) -> list[object]:
    events: list[object] = []
    for piece in pieces:
        events += output.feed(piece)
    return events + output.finish(reason)


def test_reasoning_split_across_pieces() -> None:
    events = feed(ChoiceOutput(0, reasoning=ReasoningSpec()), ["<th", "ink>pla", "n</thi", "nk>\n\nAns", "wer"])
    thinking = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert (thinking, answer) == ("plan", "Answer")


def test_reasoning_open_block_and_no_reasoning_at_all() -> None:
    events = feed(ChoiceOutput(0, reasoning=ReasoningSpec(starts_thinking=True)), ["x", "y</think>z"])
    assert [type(e).__name__ for e in events][:2] == ["ReasoningDelta", "ReasoningDelta"]
    events = feed(ChoiceOutput(0, reasoning=ReasoningSpec()), ["Just ", "text"])
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Just text"


def test_auto_tools_text_streams_and_calls_are_held() -> None:
    text = feed(ChoiceOutput(0, TOOLS, ToolChoice(ToolMode.AUTO)), ["Hello", " there"])
    assert [e.text for e in text if isinstance(e, TextDelta)] == ["Hello", " there"]
    call = feed(ChoiceOutput(0, TOOLS, ToolChoice(ToolMode.AUTO)), ['{"name": "get_weather", ', '"arguments": {}}'])
    assert isinstance(call[0], ToolCallDelta) and call[-1].reason is FinishReason.TOOL_CALLS  # type: ignore[attr-defined]


def test_forced_call_cut_short_never_leaks_the_wrapper_as_text() -> None:
    events = feed(ChoiceOutput(0, TOOLS, ToolChoice(ToolMode.REQUIRED)), ['{"tool_calls": [{"na'], FinishReason.LENGTH)
    assert not any(isinstance(e, TextDelta) and e.text for e in events)
    assert events[-1].reason is FinishReason.LENGTH  # type: ignore[attr-defined]


def test_unenforceable_keywords_are_found_everywhere() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "number", "multipleOf": 3}, "b": {"type": "array", "items": {"not": {}}}},
        "$defs": {"c": {"type": "number", "multipleOf": 2}},
        "anyOf": [{"minProperties": 1}],
    }
    found = unenforceable(schema)
    assert len(found) == 4
    assert (
        unenforceable({"type": "object", "title": "T", "properties": {"x": {"type": "string", "maxLength": 3}}}) == []
    )
    with pytest.raises(InvalidArgument, match=r"'multipleOf' at schema\.properties\.a"):
        schema_to_gbnf(json.dumps(schema))


def test_grammar_strings_exclude_control_characters() -> None:
    gbnf = schema_to_gbnf(json.dumps({"type": "object", "properties": {"s": {"type": "string"}}}))
    assert r"\x00-\x1F" in gbnf
