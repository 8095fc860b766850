"""JSON Schema -> GBNF for llama.cpp, failing closed.

A grammar that ignores a constraint would let through output that breaks the schema. So a schema is
first checked against the keywords the converter enforces (anything else is refused with a clear
400), then converted by converter.py, which enforces each of them exactly or refuses the schema,
naming the keyword and where it is.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from localxai.engines.llamacpp.converter import ANNOTATIONS, Converter, Refused, subschemas
from localxai.errors import InvalidArgument

ENFORCED = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
        "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "minLength", "maxLength", "pattern",
        "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    }
)  # fmt: skip
# llama.cpp parses a grammar recursively, one native stack frame set per nested group: measured with
# the vendored llama.cpp, it refuses groups nested 1,001 to ~8,000 deep and crashes the process on
# 30,000. The core bounds schemas (schemas.MAX_REPEAT) so that this is never reached; the check
# below makes sure of it for whatever reaches this converter.
MAX_GRAMMAR_DEPTH = 1_000
MAX_GRAMMAR_BYTES = 4 * 1024 * 1024
REFUSED = "The schema cannot be enforced by this server: "
log = logging.getLogger(__name__)


def unenforceable(schema: Any, path: str = "schema") -> list[str]:
    """Keywords (with where they are) that a grammar would not enforce."""
    if not isinstance(schema, dict):
        return [] if isinstance(schema, bool) else [f"{path} (a schema must be an object)"]
    found = [f"'{key}' at {path}" for key in schema if key not in ENFORCED | ANNOTATIONS]
    if schema.get("uniqueItems") is False:
        found = [f for f in found if not f.startswith("'uniqueItems'")]
    for sub, where in subschemas(schema, path):
        found += unenforceable(sub, where)
    return found


def schema_to_gbnf(schema_text: str) -> str:
    """GBNF for a JSON Schema (given as JSON text); raises InvalidArgument when not enforceable."""
    schema = json.loads(schema_text)
    problems = unenforceable(schema)
    if problems:
        raise InvalidArgument(
            REFUSED
            + "unsupported keyword "
            + ", ".join(problems[:5])
            + ". Supported: "
            + ", ".join(sorted(ENFORCED))
            + "."
        )
    try:
        gbnf = Converter(schema).grammar()
    except Refused as exc:
        raise InvalidArgument(f"{REFUSED}{exc}.") from None
    except RecursionError:
        raise InvalidArgument(f"{REFUSED}it nests too deeply for a grammar.") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError):
        # Valid JSON Schema this converter did not expect: refused (fail closed), and logged to be fixed.
        log.exception("schema conversion failed")
        raise InvalidArgument(f"{REFUSED}it uses a construct this server does not convert.") from None
    if len(gbnf) > MAX_GRAMMAR_BYTES or nesting_depth(gbnf) > MAX_GRAMMAR_DEPTH:
        raise InvalidArgument(f"{REFUSED}its grammar would be too large.")
    return gbnf


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
