"""JSON Schema -> GBNF for llama.cpp, failing closed.

llama-cpp-python's converter silently ignores some keywords (numeric bounds, for one), and a grammar
that ignores a constraint would let through output that breaks the schema. So a schema is first
checked against the keywords the converter enforces; anything else is refused with a clear 400.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

from localxai.errors import InvalidArgument

ENFORCED = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
        "maxItems", "enum", "const", "anyOf", "allOf", "$ref", "minLength", "maxLength", "pattern", "format",
    }
)  # fmt: skip
ANNOTATIONS = frozenset(
    {
        "title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated",
        "readOnly", "writeOnly", "$defs", "definitions", "strict",
    }
)  # fmt: skip
UNSAFE_CHAR_RULE = r'char ::= [^"\\] |'
SAFE_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] |'
SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")
# llama.cpp parses a grammar recursively, one native stack frame set per nested group: measured with
# the vendored llama.cpp, it refuses groups nested 1,001 to ~8,000 deep and crashes the process on
# 30,000. The core bounds schemas (schemas.MAX_REPEAT) so that this is never reached; the check
# below makes sure of it for whatever reaches this converter.
MAX_GRAMMAR_DEPTH = 1_000
MAX_GRAMMAR_BYTES = 4 * 1024 * 1024
SUBSCHEMA_LISTS = ("anyOf", "allOf", "prefixItems")


def unenforceable(schema: Any, path: str = "schema") -> list[str]:
    """Keywords (with where they are) that a grammar would not enforce."""
    if not isinstance(schema, dict):
        return [] if isinstance(schema, bool) and schema else [f"{path} (a schema must be an object)"]
    found = [f"'{key}' at {path}" for key in schema if key not in ENFORCED | ANNOTATIONS]
    if schema.get("uniqueItems") is False:
        found = [f for f in found if not f.startswith("'uniqueItems'")]
    for key in SUBSCHEMA_MAPS:
        for name, sub in (schema.get(key) or {}).items():
            found += unenforceable(sub, f"{path}.{key}.{name}")
    for key in SUBSCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key) or []):
            found += unenforceable(sub, f"{path}.{key}[{i}]")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += unenforceable(schema[key], f"{path}.{key}")
    return found


def schema_to_gbnf(schema_text: str) -> str:
    """GBNF for a JSON Schema (given as JSON text); raises InvalidArgument when not enforceable."""
    problems = unenforceable(json.loads(schema_text))
    if problems:
        raise InvalidArgument(
            "The schema cannot be enforced by this server: unsupported keyword "
            + ", ".join(problems[:5])
            + ". Supported: "
            + ", ".join(sorted(ENFORCED))
            + "."
        )
    try:
        gbnf = json_schema_to_gbnf(schema_text)
    except Exception as exc:  # the converter raises bare exceptions (asserts) for what it cannot express
        raise InvalidArgument(f"The schema cannot be enforced by this server: {exc}") from None
    if len(gbnf) > MAX_GRAMMAR_BYTES or nesting_depth(gbnf) > MAX_GRAMMAR_DEPTH:
        raise InvalidArgument("The schema cannot be enforced by this server: its grammar would be too large.")
    # The converter lets raw control characters into strings, which JSON forbids: exclude them.
    return gbnf.replace(UNSAFE_CHAR_RULE, SAFE_CHAR_RULE)


def nesting_depth(gbnf: str) -> int:
    """How deep groups nest in a GBNF grammar (parentheses outside literals and character classes)."""
    depth = deepest = 0
    closing: str | None = None  # the end of the literal or class being read
    escaped = False
    for char in gbnf:
        if closing is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == closing:
                closing = None
        elif char in '"[':
            closing = '"' if char == '"' else "]"
        elif char == "#":
            closing = "\n"  # a comment runs to the end of the line
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest
