"""JSON Schema -> GBNF, without a model: what each grammar accepts, and that whatever it can write validates.

A small GBNF interpreter below reads the grammars the converter writes: `accepts` says whether a text
is in the grammar's language, `samples` draws random texts from it. Every sample must be JSON that
validates against the schema (jsonschema, and jsonschema_rs with format assertion): a grammar that
ignores a keyword fails here.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from localxai.chat import Tool, ToolChoice, ToolMode
from localxai.engines import toolcalls
from localxai.engines.llamacpp.grammar import schema_to_gbnf
from localxai.engines.llamacpp.patterns import FORMATS
from localxai.errors import InvalidArgument

# -- a GBNF interpreter ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Cls:
    ranges: tuple[tuple[int, int], ...]
    negated: bool

    def has(self, code: int) -> bool:
        return any(lo <= code <= hi for lo, hi in self.ranges) != self.negated


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Seq:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Alt:
    options: tuple[Any, ...]


@dataclass(frozen=True)
class Rep:
    item: Any
    low: int
    high: int | None


ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}


class Gbnf:
    def __init__(self, text: str) -> None:
        self.rules: dict[str, Any] = {}
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                name, _, body = line.partition(" ::= ")
                self.src, self.pos = body, 0
                self.rules[name.strip()] = self.alternatives()
                assert self.pos == len(self.src), (name, body[self.pos :])
        self.shortest = self._shortest()

    # parsing
    def skip(self) -> None:
        while self.pos < len(self.src) and self.src[self.pos] == " ":
            self.pos += 1

    def alternatives(self) -> Any:
        options = [self.sequence()]
        while self.pos < len(self.src) and self.src[self.pos] == "|":
            self.pos += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def sequence(self) -> Any:
        items = []
        while True:
            self.skip()
            if self.pos >= len(self.src) or self.src[self.pos] in "|)":
                return Seq(tuple(items))
            items.append(self.postfix(self.atom()))

    def char(self) -> str:
        c = self.src[self.pos]
        if c != "\\":
            self.pos += 1
            return c
        kind = self.src[self.pos + 1]
        size = {"x": 2, "u": 4, "U": 8}.get(kind)
        if size:
            self.pos += 2 + size
            return chr(int(self.src[self.pos - size : self.pos], 16))
        self.pos += 2
        return ESCAPES[kind]

    def atom(self) -> Any:
        c = self.src[self.pos]
        if c == '"':
            self.pos += 1
            text = ""
            while self.src[self.pos] != '"':
                text += self.char()
            self.pos += 1
            return Lit(text)
        if c == "[":
            self.pos += 1
            negated = self.src[self.pos] == "^"
            self.pos += negated
            ranges = []
            while self.src[self.pos] != "]":
                lo = self.char()
                hi = lo
                if self.src[self.pos] == "-" and self.src[self.pos + 1] != "]":
                    self.pos += 1
                    hi = self.char()
                ranges.append((ord(lo), ord(hi)))
            self.pos += 1
            return Cls(tuple(ranges), negated)
        if c == "(":
            self.pos += 1
            inner = self.alternatives()
            assert self.src[self.pos] == ")"
            self.pos += 1
            return inner
        name = re.match(r"[A-Za-z0-9-]+", self.src[self.pos :])
        assert name, self.src[self.pos :]
        self.pos += name.end()
        return Ref(name.group())

    def postfix(self, atom: Any) -> Any:
        while self.pos < len(self.src):
            c = self.src[self.pos]
            if c in "*+?":
                self.pos += 1
                atom = Rep(atom, *{"*": (0, None), "+": (1, None), "?": (0, 1)}[c])
            elif c == "{":
                end = self.src.index("}", self.pos)
                low, comma, high = self.src[self.pos + 1 : end].partition(",")
                atom = Rep(atom, int(low), int(high) if high else None if comma else int(low))
                self.pos = end + 1
            else:
                break
        return atom

    # matching
    def accepts(self, text: str) -> bool:
        self._ends.cache_clear()
        return len(text) in self._ends(self.rules["root"], text, 0)

    @functools.cache  # noqa: B019 - per test grammar, cleared per text
    def _ends(self, node: Any, text: str, i: int) -> frozenset[int]:
        if isinstance(node, Lit):
            return frozenset({i + len(node.text)}) if text.startswith(node.text, i) else frozenset()
        if isinstance(node, Cls):
            return frozenset({i + 1}) if i < len(text) and node.has(ord(text[i])) else frozenset()
        if isinstance(node, Ref):
            return self._ends(self.rules[node.name], text, i)
        if isinstance(node, Alt):
            return frozenset().union(*(self._ends(o, text, i) for o in node.options))
        if isinstance(node, Seq):
            here = frozenset({i})
            for item in node.items:
                here = frozenset().union(*(self._ends(item, text, j) for j in here))
            return here
        out, here, count, seen = set(), frozenset({i}), 0, set()
        while here and (node.high is None or count <= node.high):
            if count >= node.low:
                out |= here
            if node.high is not None and count == node.high:
                break
            here = frozenset().union(*(self._ends(node.item, text, j) for j in here))
            count += 1
            if node.high is None and count > node.low:
                here = frozenset(here - seen)
                seen |= here
        return frozenset(out)

    # sampling
    def _shortest(self) -> dict[str, int]:
        best = {name: 10**9 for name in self.rules}

        def size(node: Any) -> int:
            if isinstance(node, Lit):
                return len(node.text)
            if isinstance(node, Cls):
                return 1
            if isinstance(node, Ref):
                return best[node.name]
            if isinstance(node, Alt):
                return min(size(o) for o in node.options)
            if isinstance(node, Seq):
                return sum(size(i) for i in node.items)
            return node.low * size(node.item)

        for _ in range(len(self.rules) + 2):
            for name, node in self.rules.items():
                best[name] = min(best[name], size(node))
        self._size = size
        return best

    def sample(self, rng: random.Random) -> str:
        out: list[str] = []
        self._gen(self.rules["root"], rng, out, 0)
        return "".join(out)

    def _gen(self, node: Any, rng: random.Random, out: list[str], depth: int) -> None:
        deep = depth > 12
        if isinstance(node, Lit):
            out.append(node.text)
        elif isinstance(node, Cls):
            out.append(chr(self._pick(node, rng)))
        elif isinstance(node, Ref):
            self._gen(self.rules[node.name], rng, out, depth + 1)
        elif isinstance(node, Alt):
            options = node.options
            if deep:
                least = min(self._size(o) for o in options)
                options = tuple(o for o in options if self._size(o) == least)
            self._gen(rng.choice(options), rng, out, depth)
        elif isinstance(node, Seq):
            for item in node.items:
                self._gen(item, rng, out, depth)
        else:
            top = node.low if deep else node.low + rng.choice([0, 0, 1, 2, 3, 8, 40])
            count = top if node.high is None else min(top, node.high)
            if rng.random() < 0.15 and node.high is not None and not deep:
                count = node.high  # the longest, now and then
            for _ in range(count):
                self._gen(node.item, rng, out, depth + 1)

    @staticmethod
    def _pick(node: Cls, rng: random.Random) -> int:
        for _ in range(1000):
            if node.negated:
                code = rng.choice(
                    [rng.randrange(0x20, 0x7F), rng.randrange(0x80, 0x3000), rng.randrange(0x10000, 0x10FFFF)]
                )
            else:
                lo, hi = rng.choice(node.ranges)
                code = rng.randint(lo, min(hi, lo + 0x3000)) if rng.random() < 0.8 else rng.randint(lo, hi)
            if node.has(code) and not 0xD800 <= code <= 0xDFFF:
                return code
        raise AssertionError(f"no character in {node}")


def grammar(schema: Any) -> Gbnf:
    return Gbnf(schema_to_gbnf(json.dumps(schema)))


def values(schema: Any, count: int = 150, seed: int = 0) -> Iterator[Any]:
    g, rng = grammar(schema), random.Random(seed)
    for _ in range(count):
        text = g.sample(rng)
        assert g.accepts(text), text
        yield json.loads(text)


FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER


def check(schema: Any, value: Any) -> None:
    """`value` passes `schema` with formats asserted (two validators, and Python's own parsers)."""
    jsonschema.Draft202012Validator(schema, format_checker=FORMAT_CHECKER).validate(value)
    rs = pytest.importorskip("jsonschema_rs")
    assert rs.validator_for(schema, validate_formats=True).is_valid(value), (schema, value)


def refused(schema: Any) -> str:
    with pytest.raises(InvalidArgument) as caught:
        schema_to_gbnf(json.dumps(schema))
    assert caught.value.message.startswith("The schema cannot be enforced by this server: ")
    return caught.value.message


# -- formats -------------------------------------------------------------------------------------------

ACCEPTED = {
    "date": ["2024-02-29", "0001-01-01", "2023-12-31", "2000-02-29"],
    "time": ["23:59:59Z", "00:00:00.123+05:30", "12:00:00.5-01:00"],
    "date-time": ["2024-01-31T10:00:00Z"],
    "uuid": ["123e4567-e89b-12d3-a456-426614174000"],
    "email": ["ann@example.com", "a.b+c@mail.example.org"],
    "hostname": ["localhost", "api.x.ai", "a-b.c0"],
    "ipv4": ["0.0.0.0", "192.168.1.255", "255.255.255.255"],
    "ipv6": ["::", "::1", "fe80::1:2", "2001:db8:0:0:0:0:2:1", "1::", "1:2:3:4:5:6:7:8"],
    "uri": ["https://x.ai/docs?q=1#top", "http://10.0.0.1:8080/a/b%20c", "ftp://files.example.org"],
}
REJECTED = {
    "date": ["0000-01-01", "2023-13-01", "2023-01-32", "2023-02-29", "1900-02-29", "2023-04-31", "2023-1-01"],
    "time": ["24:00:00Z", "12:60:00Z", "12:00:00", "12:00Z"],
    "date-time": ["2024-01-31 10:00:00Z", "2024-01-31T10:00:00"],
    "uuid": ["123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400g"],
    "email": ["ann", "ann@", "@example.com", "a..b@example.com", "ann@example", "a b@example.com"],
    "hostname": ["-a.com", "a-.com", "a..b", "a_b.com", "a" * 64],
    "ipv4": ["256.1.1.1", "1.2.3", "01.2.3.4", "1.2.3.4.5", "1.2.3.-4"],
    "ipv6": ["1:2:3:4:5:6:7:8:9", "12345::", "1::2::3", ":1", "g::"],
    "uri": ["x.ai", "https://", "https://x.ai/a b", "//x.ai"],
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_formats_are_enforced(fmt: str) -> None:
    schema = {"type": "string", "format": fmt}
    g = grammar(schema)
    for text in ACCEPTED[fmt]:
        assert g.accepts(json.dumps(text)), text
    for text in REJECTED[fmt]:
        assert not g.accepts(json.dumps(text)), text
    for value in values(schema, 300, seed=hash(fmt) % 1000):
        check(schema, value)
        if fmt == "ipv4":
            ipaddress.IPv4Address(value)
        elif fmt == "ipv6":
            ipaddress.IPv6Address(value)
        elif fmt == "date":
            datetime.date.fromisoformat(value)
        elif fmt == "date-time":
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.parametrize("fmt", ["idn-email", "iri", "regex", "made-up", "uuid4", "int32"])
def test_other_formats_are_refused_naming_them(fmt: str) -> None:
    message = refused({"type": "object", "properties": {"x": {"type": "string", "format": fmt}}})
    assert f"'format' at schema.properties.x is {fmt!r}" in message


def test_a_format_in_tool_parameters_is_enforced_and_an_unknown_one_refused() -> None:
    params = {"type": "object", "properties": {"ip": {"type": "string", "format": "ipv4"}}, "required": ["ip"]}
    tool = Tool("ping", "", json.dumps(params))
    schema = toolcalls.forced_schema((tool,), ToolChoice(ToolMode.REQUIRED), parallel=False)
    g = grammar(schema)
    call = {"tool_calls": [{"name": "ping", "arguments": {"ip": "%s"}}]}
    assert g.accepts(json.dumps(call) % "10.0.0.1")
    assert not g.accepts(json.dumps(call) % "10.0.0.256")
    params["properties"]["ip"]["format"] = "made-up"  # type: ignore[index]
    tool = Tool("ping", "", json.dumps(params))
    message = refused(toolcalls.forced_schema((tool,), ToolChoice(ToolMode.REQUIRED), parallel=False))
    assert "'format' at schema.$defs.ping.properties.ip is 'made-up'" in message


# -- strings: patterns and lengths -------------------------------------------------------------------


def test_pattern_and_max_length_are_both_enforced() -> None:
    class Code(BaseModel):
        code: str = Field(pattern=r"^[A-Z]+$", max_length=4)
        word: str = Field(pattern=r"^[a-z]+$", min_length=3, max_length=5)

    schema = Code.model_json_schema()
    g = grammar(schema)
    assert g.accepts('{"code": "ABCD", "word": "abc"}')
    assert not g.accepts('{"code": "ABCDE", "word": "abc"}')
    assert not g.accepts('{"code": "ABC", "word": "ab"}')
    for value in values(schema):
        check(schema, value)
        Code.model_validate(value)


PATTERN_CASES: list[tuple[dict[str, Any], list[str], list[str]]] = [
    ({"type": "string", "pattern": "abc"}, ["abc", "xxabcyy", "é abc"], ["ab", "acb"]),
    ({"type": "string", "pattern": "^ab"}, ["ab", "abzz"], ["zab"]),
    ({"type": "string", "pattern": "yz$"}, ["yz", "xyz"], ["yza"]),
    ({"type": "string", "pattern": "^a|b$"}, ["a", "azz", "zzb"], ["za", "bz"]),
    ({"type": "string", "pattern": r"^\d{3}-\d{2}$"}, ["123-45"], ["12-345", "١٢٣-45"]),
    ({"type": "string", "pattern": r"^\w+\s\S$"}, ["a_1 b"], ["a  b", "a b c"]),
    ({"type": "string", "pattern": r"^(?:ab|c)+[^x]?$"}, ["abcab", "cz"], ["ax", "cxx"]),
    # Quotes, backslashes and control characters are written as their JSON escapes.
    ({"type": "string", "pattern": "^a.c$"}, ["abc", "a-c", "aéc", 'a"c', "a\\c", "a\tc"], ["ac", "a\nc"]),
    ({"type": "string", "pattern": '^say "hi"\\n[^a]$'}, ['say "hi"\n\x01', 'say "hi"\n"'], ['say "hi"\na', "say hi"]),
    ({"type": "string", "pattern": "^(?:[a-z]{2,3})!?$"}, ["ab", "abc!"], ["a", "abcd"]),
    ({"type": "string", "pattern": r"^[\x41-\x43\u00e9]+\.$"}, ["ABé."], ["D."]),
    ({"type": "string", "pattern": "^a{2}b{1,}c{1,2}$"}, ["aabcc", "aabbbc"], ["abc", "aabccc"]),
    ({"type": "string", "pattern": "^x{3}$", "minLength": 3}, ["xxx"], ["xx"]),
    ({"type": "string", "pattern": "abc", "maxLength": 5}, ["abc", "xabcx"], ["xxabcx"]),
    ({"type": "string", "pattern": "[0-9]", "minLength": 4}, ["ab1c", "xy12345"], ["a1b", "abcd"]),
    ({"type": "string", "format": "email", "maxLength": 12}, ["ab@cd.ef"], ["abcdef@gh.ij"]),
    ({"type": "string", "format": "date", "minLength": 10}, ["2024-01-01"], ["2024-1-1"]),
]


@pytest.mark.parametrize(("schema", "yes", "no"), PATTERN_CASES)
def test_patterns_have_json_schema_semantics(schema: dict[str, Any], yes: list[str], no: list[str]) -> None:
    g = grammar(schema)
    for text in yes:
        assert g.accepts(json.dumps(text, ensure_ascii=False)), text
    for text in no:
        assert not g.accepts(json.dumps(text, ensure_ascii=False)), text
    for value in values(schema):
        check(schema, value)


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        ("^(?=a)a$", "lookarounds"),
        (r"^(a)\1$", "backreferences"),
        (r"\bword\b", "word boundaries"),
        ("^a(^b)$", "anchor"),
        (r"^\p{L}+$", "Unicode property"),
        ("^a{,3}$", "different things"),
    ],
)
def test_patterns_a_grammar_cannot_express_are_refused(pattern: str, named: str) -> None:
    message = refused({"type": "object", "properties": {"p": {"type": "string", "pattern": pattern}}})
    assert "'pattern' at schema.properties.p" in message and named in message


def test_pattern_with_format_and_impossible_lengths_are_refused() -> None:
    assert "together with 'format'" in refused({"type": "string", "pattern": "a", "format": "email"})
    assert "'minLength' at schema" in refused({"type": "string", "minLength": 3, "maxLength": 2})
    assert "within 'minLength'/'maxLength'" in refused({"type": "string", "format": "ipv4", "maxLength": 6})


def test_random_patterns_with_lengths_write_only_matching_strings_of_those_lengths() -> None:
    rng = random.Random(7)
    atoms = ["a", "[a-c]", ".", "(ab|c)", "(a|bcd)?", "x+", "(de)*", "[0-9]{2}", "(f|gh){1,3}", r"\d", "y{0,2}"]
    enforced = 0
    for trial in range(250):
        parts = [rng.choice(atoms) for _ in range(rng.randint(1, 4))]
        pattern = "".join(p if p[-1] in "*+?}" else p + rng.choice(["", "", "*", "?", "{1,2}"]) for p in parts)
        pattern = rng.choice(["", "^"]) + pattern + rng.choice(["", "$"])
        low = rng.choice([0, 0, 1, 2, 3, 5, 8])
        high = rng.choice([None, low, low + 1, low + 3, low + 10])
        schema = {
            "type": "string",
            "pattern": pattern,
            "minLength": low,
            **({} if high is None else {"maxLength": high}),
        }
        try:
            g = grammar(schema)
        except InvalidArgument:
            continue
        enforced += 1
        sampler = random.Random(trial)
        for _ in range(30):
            value = json.loads(g.sample(sampler))
            assert re.search(pattern, value) and low <= len(value) <= (high or 10**9), (schema, value)
    assert enforced > 200  # the rest: no string of those lengths matches (or none that fair shares find)


def test_strings_never_count_half_a_surrogate_pair() -> None:
    g = grammar({"type": "string", "minLength": 2})
    assert not g.accepts('"\\ud83d\\ude00"')  # one character, written as two escapes
    assert g.accepts('"\\u00e9x"')


# -- numbers -------------------------------------------------------------------------------------------


INTEGER_BOUNDS: list[dict[str, Any]] = [
    {"minimum": 0},
    {"minimum": 1, "maximum": 10},
    {"minimum": -150, "maximum": 150},
    {"exclusiveMinimum": -7, "exclusiveMaximum": 120},
    {"maximum": -3},
    {"minimum": 17, "maximum": 17},
    {"minimum": 0.5, "maximum": 99.5},
    {"minimum": 95, "maximum": 1305},
]
NUMBER_BOUNDS: list[dict[str, Any]] = [
    {"minimum": 0},
    {"exclusiveMinimum": 0},
    {"minimum": 0, "maximum": 1},
    {"exclusiveMinimum": -2, "exclusiveMaximum": 3},
    {"minimum": -1.0, "exclusiveMaximum": 0},
    {"maximum": -5},
]


@pytest.mark.parametrize("bounds", INTEGER_BOUNDS)
def test_integer_ranges_are_exact(bounds: dict[str, Any]) -> None:
    schema = {"type": "integer", **bounds}
    g = grammar(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for n in range(-1400, 1400):
        assert g.accepts(str(n)) == validator.is_valid(n), n
    assert not g.accepts("-0") and not g.accepts("007")
    for value in values(schema):
        check(schema, value)


@pytest.mark.parametrize("bounds", NUMBER_BOUNDS)
def test_number_bounds_are_exact_for_whole_bounds(bounds: dict[str, Any]) -> None:
    schema = {"type": "number", **bounds}
    g = grammar(schema)
    validator = jsonschema.Draft202012Validator(schema)
    texts = [f"{sign}{i}{frac}" for sign in ("", "-") for i in range(0, 8) for frac in ("", ".0", ".00", ".5", ".001")]
    for text in texts:
        if g.accepts(text):
            assert validator.is_valid(json.loads(text)), text
        elif validator.is_valid(json.loads(text)) and text not in ("-0", "-0.0", "-0.00"):
            raise AssertionError(f"{text} is allowed but not written")
    assert not g.accepts("1e2")  # no exponents: their value is not bounded by the digits
    for value in values(schema):
        check(schema, value)


def test_number_bounds_that_are_not_whole_are_refused() -> None:
    message = refused({"type": "object", "properties": {"p": {"type": "number", "minimum": 0.5}}})
    assert "'minimum' at schema.properties.p is 0.5" in message


# -- unions --------------------------------------------------------------------------------------------


class Cat(BaseModel):
    kind: Literal["cat"]
    name: str = Field(max_length=12)


class Dog(BaseModel):
    kind: Literal["dog"] = "dog"  # not required: the grammar writes it anyway
    bark: int = Field(ge=0, le=10)


class Owner(BaseModel):
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    pets: list[Annotated[Cat | Dog, Field(discriminator="kind")]] = Field(max_length=2)


def test_discriminated_union_is_enforced() -> None:
    schema = Owner.model_json_schema()
    assert "oneOf" in json.dumps(schema) and "discriminator" in json.dumps(schema)
    g = grammar(schema)
    assert g.accepts('{"pet": {"kind": "cat", "name": "Tom"}, "pets": []}')
    assert not g.accepts('{"pet": {"kind": "cat", "bark": 3}, "pets": []}')
    for value in values(schema):
        check(schema, value)
        Owner.model_validate(value)


def test_one_of_whose_branches_may_overlap_is_refused() -> None:
    overlapping = {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}
    assert "'oneOf' at schema is enforced only when" in refused(overlapping)
    untagged = {"oneOf": [{"properties": {"a": {"const": 1}}}, {"properties": {"a": {"const": 1}}}]}
    refused(untagged)
    literals = {"oneOf": [{"const": 1}, {"enum": [2, 3]}]}
    assert set(values(literals, 60)) == {1, 2, 3}
    assert "'oneOf'" in refused({"oneOf": [{"const": 1}, {"enum": [1.0, 3]}]})


MISC_SCHEMAS: list[Any] = [
    {"type": ["string", "null"], "maxLength": 3},
    {"type": ["integer", "string"], "minimum": 5, "maximum": 6, "format": "ipv4"},
    {"type": "object", "required": ["a"], "anyOf": [{"properties": {"a": {"type": "integer"}}}, {"maxProperties": 1}]},
    {"anyOf": [{"type": "string"}, {"type": "integer"}], "maxLength": 2},
    {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s", "maxLength": 2},
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"a": {"maxLength": 2}, "b": {"type": "boolean"}}, "required": ["b"]},
        ]
    },
    {"type": "string", "enum": ["ab", "abcd", 3, None], "maxLength": 3},
    {"enum": ['q"uote', "back\\slash", "new\nline", "é", {"a": [1]}]},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
    {"type": "object", "required": ["x", "y"], "properties": {"y": {"type": "null"}}},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 3},
    {"properties": {"n": {"type": "integer", "maximum": 3}}, "additionalProperties": False},
    {"title": "anything"},
]


def test_keywords_beside_unions_type_lists_and_refs_are_enforced() -> None:
    for schema in MISC_SCHEMAS:
        if "maxProperties" in json.dumps(schema):
            assert "'maxProperties'" in refused(schema)
            continue
        for value in values(schema, 120):
            check(schema, value)


def test_additional_properties_never_repeat_a_declared_name() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "ab": {"type": "integer"}}}
    g = grammar({**schema, "additionalProperties": {"type": "string"}})
    assert g.accepts('{"a": 1, "abc": "x"}') and g.accepts('{"b": "x"}')
    assert not g.accepts('{"a": 1, "ab": "x"}') and not g.accepts('{"a": "x"}')


def test_tool_parameters_keep_their_own_definitions() -> None:
    class Item(BaseModel):
        sku: str = Field(pattern=r"^[A-Z]{3}$")

    class Order(BaseModel):
        items: list[Item] = Field(max_length=2)

    tool = Tool("order", "", json.dumps(Order.model_json_schema()))
    schema = toolcalls.forced_schema((tool,), ToolChoice(ToolMode.FUNCTION, "order"), parallel=True)
    for value in values(schema, 80):
        check(schema, value)
        for call in value["tool_calls"]:
            Order.model_validate(call["arguments"])


HOSTILE: list[Any] = [
    {"type": "string", "maxLength": 1e9},
    {"type": "array", "minItems": 2.0, "maxItems": 3.0},
    {"type": "string", "minLength": 2.0, "maxLength": 3.0},
    {"type": "integer", "minimum": 10**400},
    {"type": "number", "maximum": 10**400, "minimum": -1e308},
    {"type": "integer", "maximum": 1e300, "exclusiveMinimum": 2**70},
    {"properties": {"a": True, "b": False}},
    {"properties": {"a": False}, "required": ["a"]},
    {"type": "array", "items": False},
    {"type": "array", "prefixItems": [{"const": 1}], "maxItems": 0},
    {"enum": [1e308, -0.0, 1.5, {"a": [None, True]}, "\u0000"]},
    {"allOf": [{"$ref": "#"}]},
    {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    {"$defs": {"a/b~c": {"type": "null"}}, "$ref": "#/$defs/a~1b~0c"},
    {"$ref": "#/$defs/missing"},
    {"type": ["string", "null"], "minLength": 2},
    {"type": "object", "required": ["a"], "additionalProperties": False},
    {"oneOf": [{"type": "null"}]},
    {"type": "string", "pattern": ""},
    {"type": "string", "pattern": "^$"},
    {"type": "string", "pattern": "^$", "minLength": 1},
    {"type": "string", "pattern": "^[^\\x00-\\uffff]$"},
    {"type": "string", "pattern": "(" * 60 + "a" + ")" * 60},
    {"properties": {"\u0000x": {"type": "integer"}, "": {"type": "null"}}, "additionalProperties": True},
    {"allOf": [{"properties": {"a": {"type": "string"}}, "additionalProperties": False}, {"properties": {"b": {}}}]},
    {"allOf": [{"type": "string"}, {"type": "integer"}]},
    {"anyOf": [{"type": "string"}], "oneOf": [{"type": "string"}]},
]


@pytest.mark.parametrize("schema", HOSTILE, ids=range(len(HOSTILE)))
def test_odd_schemas_are_enforced_or_refused_never_crash(schema: Any) -> None:
    jsonschema.validators.validator_for(schema).check_schema(schema)  # as the core does first
    try:
        text = schema_to_gbnf(json.dumps(schema))
    except InvalidArgument as exc:
        assert exc.message.startswith("The schema cannot be enforced by this server: ")
        return
    if "$ref" in json.dumps(schema) and "a~1b" not in json.dumps(schema):
        return  # a cycle without any value: llama.cpp refuses it (left recursion)
    g, rng = Gbnf(text), random.Random(1)
    for _ in range(50):
        check(schema, json.loads(g.sample(rng)))


def test_existing_schemas_still_convert() -> None:
    assert grammar({"type": "object"}).accepts('{"any": [1, {"x": null}]}')
    assert grammar({"type": "string", "maxLength": 3}).accepts('"abc"')
    assert "'$ref' at schema is 'https://example.com/s.json'" in refused({"$ref": "https://example.com/s.json"})


@pytest.mark.model
def test_llama_cpp_compiles_every_grammar_here() -> None:
    """The real parser (llama.cpp, vocabulary only) accepts each grammar these tests read."""
    import llama_cpp as ll

    from localxai.engines.llamacpp.default_model import default_model_path
    from localxai.settings import Settings

    params = ll.llama_model_default_params()
    params.vocab_only = True
    model = ll.llama_model_load_from_file(str(default_model_path(Settings().data_dir / "models")).encode(), params)
    assert model
    try:
        vocab = ll.llama_model_get_vocab(model)
        schemas: list[Any] = [{"type": "string", "format": f} for f in FORMATS]
        schemas += [case[0] for case in PATTERN_CASES] + MISC_SCHEMAS + [Owner.model_json_schema()]
        schemas += [{"type": "integer", **b} for b in INTEGER_BOUNDS] + [{"type": "number", **b} for b in NUMBER_BOUNDS]
        for schema in schemas:
            if "maxProperties" in json.dumps(schema):
                continue
            sampler = ll.llama_sampler_init_grammar(vocab, schema_to_gbnf(json.dumps(schema)).encode(), b"root")
            assert sampler, schema
            ll.llama_sampler_free(sampler)
    finally:
        ll.llama_model_free(model)


def test_repetition_writes_exactly_low_to_high_items() -> None:
    from localxai.engines.llamacpp.gbnf import repetition

    for separator in (None, '","'):
        for low in range(4):
            for high in [None, *range(low, 6)]:
                g = Gbnf("root ::= " + (repetition('"a"', low, high, separator) or '""') + "\n")
                for count in range(8):
                    text = ("," if separator else "").join(["a"] * count)
                    assert g.accepts(text) == (low <= count and (high is None or count <= high)), (low, high, count)
