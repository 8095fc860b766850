"""The filters of document search (`filter` of `POST /v1/documents/search`): the part of Google's AIP-160
that documents need, over a document's fields and its `file_id` and `name`.

    topic = "pets" AND (year >= 2024 OR NOT draft = "yes")

Comparisons `=`, `!=`, `<`, `<=`, `>`, `>=` (`:` is `=`) between a field and a value (a "quoted" string,
or a bare word or number), joined by `AND` (or nothing), `OR`, `NOT` / `-`, and parentheses; `OR` binds
tighter than `AND`, as AIP-160 says. Two numbers compare as numbers, anything else as text. A document
without the field fails a comparison, except `!=`. Anything else is a 400 naming where it went wrong.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from localxai.errors import InvalidArgument

Predicate = Callable[[Mapping[str, str]], bool]
TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<op><=|>=|!=|=|<|>|:)|(?P<paren>[()])|(?P<word>[^\s()=<>!:"]+))'
)
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, ":": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}  # fmt: skip
MAX_FILTER = 2000
MAX_DEPTH = 32  # nested parentheses and NOTs


def parse(text: str) -> Predicate:
    """The filter as a predicate over a document's fields (its `file_id` and `name` among them)."""
    if len(text) > MAX_FILTER:
        raise InvalidArgument(f"filter is longer than {MAX_FILTER} characters.")
    tokens: list[tuple[str, str, int]] = []
    at = 0
    while at < len(text.rstrip()):
        match = TOKEN.match(text, at)
        if match is None or match.end() == at:
            raise InvalidArgument(f"filter: unexpected character at position {at}: {text[at : at + 10]!r}.")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind), match.start(kind)))
        at = match.end()
    parser = _Parser(tokens, text)
    predicate = parser.expression()
    if parser.at < len(tokens):
        raise InvalidArgument(f"filter: unexpected {tokens[parser.at][1]!r} at position {tokens[parser.at][2]}.")
    return predicate


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]], text: str) -> None:
        self.tokens, self.text, self.at, self.depth = tokens, text, 0, 0

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _take(self) -> tuple[str, str, int]:
        token = self._peek()
        if token is None:
            raise InvalidArgument("filter: it ends too soon.")
        self.at += 1
        return token

    def expression(self) -> Predicate:  # a AND b, or a b: every term holds
        terms = [self._disjunction()]
        while (token := self._peek()) is not None and token[1] != ")":
            if token == ("word", "AND", token[2]):
                self.at += 1
            terms.append(self._disjunction())
        return terms[0] if len(terms) == 1 else lambda f: all(t(f) for t in terms)

    def _disjunction(self) -> Predicate:
        terms = [self._unary()]
        while (token := self._peek()) is not None and token[:2] == ("word", "OR"):
            self.at += 1
            terms.append(self._unary())
        return terms[0] if len(terms) == 1 else lambda f: any(t(f) for t in terms)

    def _unary(self) -> Predicate:
        self.depth += 1
        try:
            return self._unary_inner()
        finally:
            self.depth -= 1

    def _unary_inner(self) -> Predicate:
        if self.depth > MAX_DEPTH:
            raise InvalidArgument(f"filter: nested more than {MAX_DEPTH} deep.")
        token = self._take()
        if token[:2] == ("word", "NOT") or token[:2] == ("word", "-"):
            inner = self._unary()
            return lambda f: not inner(f)
        if token[1] == "(":
            inner = self.expression()
            close = self._peek()
            self.at += 1
            if close is None or close[1] != ")":
                raise InvalidArgument(f"filter: a parenthesis opened at position {token[2]} is not closed.")
            return inner
        if token[0] != "word":
            raise InvalidArgument(f"filter: expected a field name at position {token[2]}, got {token[1]!r}.")
        field = token[1]
        op = self._take()
        if op[0] != "op":
            raise InvalidArgument(f"filter: expected a comparison after {field!r} at position {op[2]}.")
        value_token = self._take()
        if value_token[0] not in ("string", "word"):
            raise InvalidArgument(f"filter: expected a value at position {value_token[2]}.")
        value = value_token[1]
        if value_token[0] == "string":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        compare = OPERATORS[op[1]]
        negated = op[1] == "!="

        def test(fields: Mapping[str, str]) -> bool:
            if field not in fields:
                return negated
            left, right = _number(fields[field]), _number(value)
            if left is None or right is None:
                return compare(fields[field], value)
            return compare(left, right)

        return test


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
