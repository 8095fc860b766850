"""Lark grammars of custom tools as one anchored pattern (lark_regex.py), and the refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from localxai.lark_regex import LarkError, to_regex

from test_grammar import grammar

APPLY_PATCH = (Path(__file__).parent / "fixtures" / "apply_patch.lark").read_text()


def test_codex_s_apply_patch_grammar_is_a_pattern_the_grammar_compiler_takes() -> None:
    pattern = to_regex(APPLY_PATCH)
    update = '*** Begin Patch\n*** Update File: a.py\n@@ def f():\n-    return "1"\n+    return 2\n*** End Patch\n'
    add = "*** Begin Patch\n*** Add File: b.txt\n+hi\n+there\n*** End Patch"
    assert re.fullmatch(pattern, update) and re.fullmatch(pattern, add)
    for wrong in ("*** Begin Patch\n*** End Patch\n", "*** Begin Patch\n*** Add File: b\n*** End Patch\n", "patch"):
        assert not re.fullmatch(pattern, wrong), wrong
    schema = {"type": "object", "properties": {"input": {"type": "string", "pattern": pattern}}, "required": ["input"]}
    g = grammar(schema)  # the tool's arguments: quotes and newlines in the patch are written as JSON escapes
    assert g.accepts(json.dumps({"input": update})) and g.accepts(json.dumps({"input": add}))
    assert not g.accepts(json.dumps({"input": "*** Begin Patch\n*** End Patch\n"}))


def test_operators_ranges_repeats_and_imports() -> None:
    pattern = to_regex('start: "a".."c" ~ 2..3 [","] _N? (X | "y")+\n_N: NUMBER\nX: /x+/\n%import common.NUMBER')
    for text in ("ab1.5xx", "abcy", "ab,-"[:3] + "y"):
        assert re.fullmatch(pattern, text), text
    for text in ("a1", "abcd", "ab"):
        assert not re.fullmatch(pattern, text), text
    assert re.fullmatch(to_regex('start: "a" -> alias\n    | "b"  // a comment\n'), "b")
    assert re.fullmatch(to_regex("start: W\n%import common.WORD -> W"), "word")
    assert re.fullmatch(to_regex('start: "." "*" "\\n"'), ".*\n") and not re.fullmatch(to_regex('start: "."'), "x")


@pytest.mark.parametrize(
    ("grammar", "needle"),
    [
        ('start: a\na: "(" a ")" | "x"', "a is recursive (a -> a)"),
        ('start: "x"\n%ignore " "', "%ignore is not served"),
        ('start: "x"i', "case-insensitive"),
        ("start: /x/i", "regex flags"),
        ('a: "x"', "no start rule"),
        ("start: B", "B is not defined"),
        ("start: A\n%import common.NOPE", "common.NOPE is not served"),
        ("start: _sep{x}", "unexpected '{'"),
        ('start: "ab".."c"', "one-character strings"),
        ('start: "x"\nstart: "y"', "defined twice"),
    ],
)
def test_what_cannot_be_enforced_is_refused_by_name(grammar: str, needle: str) -> None:
    with pytest.raises(LarkError) as caught:
        to_regex(grammar)
    assert needle in str(caught.value)
