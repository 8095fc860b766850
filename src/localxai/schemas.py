"""JSON Schemas that clients send (tool parameters, structured outputs): parsed, checked and bounded.

A schema becomes a grammar, and a grammar's size follows what the schema asks for: `maxLength:
100000` is a rule nested 100,000 deep, which overflows llama.cpp's parser (the process dies), and
`maxItems: 10**9` makes the conversion itself grow without end. So every schema is measured before
anything recursive or costly touches it: nesting depth, repetition counts (also inside `pattern`),
and size. Each limit is refused with a 400 that names it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from localxai.errors import InvalidArgument

MAX_DEPTH = 64  # nested JSON objects/arrays in one schema (a schema level is about two)
MAX_REPEAT = 1000  # minLength, maxLength, minItems, maxItems and regex {m,n} counts
MAX_NODES = 20_000  # objects, arrays and values in one schema
MAX_PATTERN_EXPANSION = 10_000  # a pattern's size once its {m,n} repetitions are written out
COUNTS = ("minLength", "maxLength", "minItems", "maxItems")
QUANTIFIER = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def parse_schema(text: str, what: str) -> dict[str, Any]:
    """Parse, bound and check a JSON Schema; a schema that is not one is the client's mistake (400)."""
    try:
        schema = json.loads(text)
    except ValueError:
        raise InvalidArgument(f"{what} is not valid JSON.") from None
    except RecursionError:
        raise InvalidArgument(f"{what} is nested more than {MAX_DEPTH} levels deep (this server's limit).") from None
    if not isinstance(schema, dict):
        raise InvalidArgument(f"{what} must be a JSON Schema object.")
    check_bounds(schema, what)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidArgument(f"{what} is not a valid JSON Schema: {exc.message}") from None
    return schema


def check_bounds(schema: Any, what: str) -> None:
    """Refuse a schema whose grammar would be unbounded; iterative, so depth cannot overflow here."""
    stack: list[tuple[Any, int, str]] = [(schema, 1, "schema")]
    nodes = 0
    while stack:
        value, depth, path = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise InvalidArgument(f"{what} is too large: more than {MAX_NODES} values (this server's limit).")
        if depth > MAX_DEPTH:
            raise InvalidArgument(f"{what} is nested more than {MAX_DEPTH} levels deep (this server's limit).")
        if isinstance(value, dict):
            for key in COUNTS:
                count = value.get(key)  # a float such as 1e9 counts too: JSON Schema allows 5.0
                if isinstance(count, (int, float)) and not isinstance(count, bool) and count > MAX_REPEAT:
                    raise InvalidArgument(
                        f"{what}: '{key}' at {path} is {count}; this server enforces at most {MAX_REPEAT}."
                    )
            pattern = value.get("pattern")
            if isinstance(pattern, str):
                _check_pattern(pattern, f"{what}: 'pattern' at {path}")
            stack.extend((v, depth + 1, f"{path}.{k}") for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value))


def _count(digits: str) -> int:
    """A repetition count; one too long to convert is over any limit anyway."""
    return int(digits) if len(digits) <= 9 else 10**9


def _check_pattern(pattern: str, where: str) -> None:
    for match in QUANTIFIER.finditer(pattern):
        if max(_count(g) for g in match.groups() if g) > MAX_REPEAT:
            shown = match.group(0) if len(match.group(0)) <= 24 else match.group(0)[:20] + "...}"
            raise InvalidArgument(f"{where} repeats {shown}; this server enforces at most {MAX_REPEAT}.")
    if _expansion(pattern) > MAX_PATTERN_EXPANSION:
        raise InvalidArgument(
            f"{where} has nested repetitions that expand past {MAX_PATTERN_EXPANSION} elements (this server's limit)."
        )


def _expansion(pattern: str) -> int:
    """An upper bound of the pattern's size with every {m,n} written out (nested ones multiply)."""
    sums, last, i = [0], 0, 0
    while i < len(pattern):
        char = pattern[i]
        quantifier = QUANTIFIER.match(pattern, i)
        if quantifier:
            count = max(_count(g) for g in quantifier.groups() if g)
            sums[-1] += last * (count - 1)
            last *= count
            i = quantifier.end()
            continue
        if char == "(":
            sums.append(0)
        elif char == ")" and len(sums) > 1:
            last = max(1, sums.pop())
            sums[-1] += last
        else:
            if char == "\\":
                i += 1
            elif char == "[":  # a character class is one element
                i = _class_end(pattern, i)
            last = 1
            sums[-1] += 1
        i += 1
    return sum(sums)


def _class_end(pattern: str, start: int) -> int:
    i = start + 1
    if pattern[i : i + 1] == "^":
        i += 1
    if pattern[i : i + 1] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i
