"""The GBNF building blocks converter.py writes with: JSON's primitive rules and bounded repetition.

Written here rather than imported from llama-cpp-python's private helpers, so that the grammars do not
depend on that module's internals. The primitive rules write the same languages as llama.cpp's own
JSON rules (numbers of at most DIGITS digits before and after the point), with one optional space
after each value.
"""

from __future__ import annotations

DIGITS = 16  # the longest integral part written (as llama.cpp's own number rule), and the longest fraction
SPACE_RULE = '" "?'


def repetition(item: str, low: int, high: int | None, separator: str | None = None) -> str:
    """GBNF for `low` to `high` (None: any number of) `item`, with `separator` between them. The
    optional ones nest, `(a (a (a)?)?)?`, so the parse never has two ways to read the same text."""
    then = f"{separator} {item}" if separator else item  # every item after the first
    required = " ".join([item] + [then] * (low - 1)) if low else ""
    if high is None:
        if not low:
            return f"({item} ({then})*)?" if separator else f"({item})*"
        return f"{required} ({then})*"
    extra = high - low
    if not extra:
        return required
    if low:
        return f"{required} {_nested(then, extra)}"
    return f"({item} {_nested(then, extra - 1)})?" if extra > 1 else f"({item})?"  # the first has no separator


def _nested(content: str, count: int) -> str:
    """Up to `count` more of `content`, as nested optionals."""
    nested = ""
    for _ in range(count):
        nested = f"({content} {nested})?" if nested else f"({content})?"
    return nested


# name -> (rule body, the primitive rules it uses); `char` is converter.py's own (JSON's string escapes)
PRIMITIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "boolean": ('("true" | "false") space', ()),
    "null": ('"null" space', ()),
    "integral-part": (f'"0" | [1-9] {repetition("[0-9]", 0, DIGITS - 1)}', ()),
    "decimal-part": (repetition("[0-9]", 1, DIGITS), ()),
    "integer": ('"-"? integral-part space', ("integral-part",)),
    "number": (
        '"-"? integral-part ("." decimal-part)? ([eE] [-+]? integral-part)? space',
        ("integral-part", "decimal-part"),
    ),
    "string": ('"\\"" char* "\\"" space', ("char",)),
    "value": (
        "object | array | string | number | boolean | null",
        ("object", "array", "string", "number", "boolean", "null"),
    ),
    "object": (
        '"{" space ( string ":" space value ("," space string ":" space value)* )? "}" space',
        ("string", "value"),
    ),
    "array": ('"[" space ( value ("," space value)* )? "]" space', ("value",)),
}
