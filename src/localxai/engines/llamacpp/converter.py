"""JSON Schema -> GBNF, enforcing every keyword it accepts and refusing the rest with a reason.

llama-cpp-python's converter drops keywords without a word (a `maxLength` beside a `pattern`, siblings
of `anyOf`, a `format` it does not know, keywords beside a type list) and writes strings that may not
be valid JSON (`"` and `\\` in enum values and patterns). This converter writes its own building blocks
(gbnf.py) and decides everything itself:

- strings: lengths (`char` repetitions, as llama.cpp), `pattern` with JSON Schema's search semantics,
  `format` (date, time, date-time, uuid, email, hostname, ipv4, ipv6, uri), and lengths beside them
  (see patterns.py);
- integers: ranges from `minimum`/`maximum`/`exclusive*`; numbers: the same bounds when they are
  whole numbers (numbers are then written without exponent);
- `enum`/`const`: only the values that pass the schema's other keywords;
- `anyOf` (siblings folded into each branch), `oneOf` when its branches are provably disjoint (a
  discriminated union), `allOf` and `$ref` with siblings by merging, type lists as `anyOf`;
- objects: `required` names outside `properties` become properties; additional properties never
  reuse a declared name.

Anything it cannot express exactly raises Refused, naming the keyword and where it is.

Over 400 lines: one visitor per JSON Schema construct, each with its exact refusal; issue 27 weighs
replacing it with a maintained compiler (docs/engine.md, Grammars).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import jsonschema

from localxai.engines.llamacpp import patterns
from localxai.engines.llamacpp.gbnf import DIGITS, PRIMITIVES, SPACE_RULE, repetition
from localxai.schemas import MAX_REPEAT

ANNOTATIONS = frozenset(
    {
        "title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated",
        "readOnly", "writeOnly", "$defs", "definitions", "strict", "discriminator",
    }
)  # fmt: skip
NUMBER_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
KINDS = (  # the type a schema without `type` is written as, by the keywords it has
    ("object", {"properties", "required", "additionalProperties"}),
    ("array", {"items", "prefixItems", "minItems", "maxItems", "uniqueItems"}),
    ("string", {"minLength", "maxLength", "pattern", "format"}),
    ("number", set(NUMBER_BOUNDS)),
)
# A JSON string character: raw (no control characters) or an escape of exactly one code point (no
# surrogate halves, so that lengths count what a client decodes).
HEX = "[0-9a-fA-F]"
CHAR_RULE = (
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" ([0-9a-cA-CefEF] ' + f"{HEX} {HEX} {HEX} | [dD] [0-7] {HEX} {HEX}))"
)
RESERVED_NAMES = frozenset({"root", "space", "char", *PRIMITIVES})
FRACTION_DIGITS = 15
MAX_VISIT_DEPTH = 150
UNIONS_AND_LITERALS = frozenset({"anyOf", "oneOf", "const", "enum"})
_FORMAT_REGEX = {name: re.compile(p[1:-1]) for name, p in patterns.FORMATS.items()}  # used with fullmatch


class Refused(Exception):
    """A schema, or part of one, that a grammar would not enforce (the message says what and where)."""


class Unsatisfiable(Refused):
    """No value this server can write satisfies the (sub)schema; a union drops such a branch."""


def subschemas(schema: Any, path: str) -> Iterator[tuple[Any, str]]:
    """The subschemas directly inside `schema` (where keywords hold schemas), with their paths."""
    if not isinstance(schema, dict):
        return
    for key in ("properties", "$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            for name, sub in schema[key].items():
                yield sub, f"{path}.{key}.{name}"
    for key in ("anyOf", "allOf", "oneOf", "prefixItems", "items"):
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                yield sub, f"{path}.{key}[{i}]"
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield schema[key], f"{path}.{key}"


def format_checker() -> jsonschema.FormatChecker:
    """Formats as this server writes them (for checking enum values)."""
    checker = jsonschema.FormatChecker(formats=())
    for name, regex in _FORMAT_REGEX.items():
        checker.checks(name)(lambda value, regex=regex: not isinstance(value, str) or bool(regex.fullmatch(value)))
    return checker


class Converter:
    def __init__(self, root: Any) -> None:
        self._root = root
        self._rules: dict[str, str] = {"space": SPACE_RULE}
        self._paths: dict[int, str] = {}
        self._keep: list[Any] = []  # synthesized subschemas stay alive, so their ids stay theirs
        self._ref_rules: dict[str, str] = {}
        self._depth = 0
        self._note(root, "schema")

    def grammar(self) -> str:
        self.visit(self._root, "")
        return "\n".join(f"{name} ::= {rule}" for name, rule in sorted(self._rules.items()))

    # -- bookkeeping ------------------------------------------------------------------------------

    def _note(self, schema: Any, path: str) -> Any:
        if isinstance(schema, dict) and id(schema) not in self._paths:
            self._paths[id(schema)] = path
            self._keep.append(schema)
            for sub, where in subschemas(schema, path):
                self._note(sub, where)
        return schema

    def _where(self, schema: Any) -> str:
        return self._paths.get(id(schema), "schema")

    def _refuse(self, keyword: str, schema: Any, detail: str, unsatisfiable: bool = False) -> Refused:
        kind = Unsatisfiable if unsatisfiable else Refused
        return kind(f"'{keyword}' at {self._where(schema)} {detail}")

    def _add_rule(self, name: str, rule: str) -> str:
        name = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in name) or "r"
        key, i = name, 0
        while key in self._rules and self._rules[key] != rule:
            key, i = f"{name}{i}", i + 1
        self._rules[key] = rule
        return key

    def _fresh(self, name: str) -> str:
        key = self._add_rule(name, f"# reserved {len(self._rules)}")
        return key

    def _primitive(self, name: str) -> str:
        body, deps = (CHAR_RULE, ()) if name == "char" else PRIMITIVES[name]
        self._rules[name] = body
        for dep in deps:
            if dep not in self._rules:
                self._primitive(dep)
        return name

    # -- dispatch ---------------------------------------------------------------------------------

    def visit(self, schema: Any, name: str) -> str:
        """The name of a rule that writes exactly values valid against `schema` (or a subset of them)."""
        self._depth += 1
        try:
            if self._depth > MAX_VISIT_DEPTH:
                raise self._refuse("$ref", schema, "nests or recurses too deeply for a grammar")
            return self._visit(schema, name)
        finally:
            self._depth -= 1

    def _visit(self, schema: Any, name: str) -> str:
        if schema is True:
            schema = {}
        if schema is False or not isinstance(schema, dict):
            raise self._refuse("false", schema, "allows no value", unsatisfiable=schema is False)
        rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
        fmt = schema.get("format")
        if fmt is not None and fmt not in patterns.FORMATS:
            supported = ", ".join(sorted(patterns.FORMATS))
            raise self._refuse(
                "format", schema, f"is {fmt!r}, which this server does not enforce (it does: {supported})"
            )
        keys = {k for k in schema if k not in ANNOTATIONS}
        if "$ref" in schema:
            if keys == {"$ref"}:
                return self._add_rule(rule_name, self._ref_rule(schema["$ref"], schema))
            return self.visit(self._flatten(schema), name)
        if "allOf" in schema:
            return self.visit(self._flatten(schema), name)
        if "anyOf" in schema or "oneOf" in schema:
            return self._union(schema, name, rule_name)
        if "const" in schema or "enum" in schema:
            return self._literals(schema, rule_name)
        kind = schema.get("type")
        if isinstance(kind, list):
            if not kind:
                raise self._refuse("type", schema, "is an empty list", unsatisfiable=True)
            branches = [self._note({**schema, "type": t}, self._where(schema)) for t in dict.fromkeys(kind)]
            return self._alternatives(branches, schema, name, rule_name)
        if kind is None:
            kind = next((k for k, words in KINDS if words & keys), None)
        if kind is None:
            return self._add_rule(rule_name, self._primitive("value"))
        if kind == "object":
            return self._object(schema, name, rule_name)
        if kind == "array":
            return self._array(schema, name, rule_name)
        if kind == "string":
            return self._string(schema, rule_name)
        if kind in ("integer", "number"):
            return self._number(schema, rule_name, integer=kind == "integer")
        if kind in ("boolean", "null"):
            return self._add_rule(rule_name, self._primitive(kind))
        raise self._refuse("type", schema, f"is {kind!r}, not a JSON Schema type")

    # -- references, allOf ------------------------------------------------------------------------

    def _target(self, ref: Any, schema: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise self._refuse("$ref", schema, f"is {ref!r}; only local references ('#/...') are enforced")
        node = self._root
        try:
            for part in ref[1:].split("/")[1:]:
                part = unquote(part).replace("~1", "/").replace("~0", "~")
                node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise self._refuse("$ref", schema, f"is {ref!r}, which does not resolve in the schema") from None
        return node

    def _ref_rule(self, ref: str, schema: Any) -> str:
        if ref in self._ref_rules:
            return self._ref_rules[ref]
        target = self._target(ref, schema)
        name = self._fresh("ref-" + ref.rsplit("/", 1)[-1])
        self._ref_rules[ref] = name
        try:
            self._rules[name] = self.visit(target, name + "-value")
        except Refused:
            del self._ref_rules[ref], self._rules[name]
            raise
        return name

    def _flatten(self, schema: Any, seen: frozenset[str] = frozenset()) -> dict[str, Any]:
        """`schema` without `$ref` or `allOf` at its top: references inlined, `allOf` merged."""
        if schema is True:
            return {}
        if not isinstance(schema, dict):
            raise self._refuse("false", schema, "allows no value", unsatisfiable=True)
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref in seen:
                raise self._refuse("$ref", schema, "refers to itself through 'allOf' or siblings of '$ref'")
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return self._merge([self._target(ref, schema), rest], schema, seen | {ref})
        if "allOf" in schema:
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self._merge([rest, *schema["allOf"]], schema, seen)
        return schema

    def _merge(self, parts: list[Any], owner: Any, seen: frozenset[str] = frozenset()) -> dict[str, Any]:
        """One schema that allows exactly what all `parts` allow, or Refused."""
        flat = [self._flatten(self._note(p, self._where(owner)), seen) for p in parts]
        out: dict[str, Any] = {}
        for part in flat:
            for key, value in part.items():
                if key in ANNOTATIONS or key not in out:
                    out.setdefault(key, value)
                elif _same(out[key], value):
                    continue
                elif key == "required":
                    out[key] = list(dict.fromkeys([*out[key], *value]))
                elif key == "properties":
                    both = dict(out[key])
                    for prop, sub in value.items():
                        both[prop] = {"allOf": [both[prop], sub]} if prop in both else sub
                    out[key] = both
                elif key in ("items", "additionalProperties") and isinstance(value, dict | bool):
                    out[key] = False if False in (out[key], value) else {"allOf": [out[key], value]}
                elif key == "type":
                    out[key] = _common_types(out[key], value)
                    if not out[key]:
                        raise self._refuse("allOf", owner, "combines types that share no value", unsatisfiable=True)
                elif key in ("minLength", "minItems", "minimum", "exclusiveMinimum") and _is_number(value):
                    out[key] = max(out[key], value)
                elif key in ("maxLength", "maxItems", "maximum", "exclusiveMaximum") and _is_number(value):
                    out[key] = min(out[key], value)
                elif key == "enum":
                    out[key] = [v for v in out[key] if any(_same(v, w) for w in value)]
                else:
                    raise self._refuse(
                        "allOf", owner, f"gives '{key}' different values, which this server cannot combine"
                    )
        properties = out.get("properties", {})
        for part in flat:
            extra = part.get("additionalProperties", True)
            if extra is True:
                continue
            for prop in [p for p in properties if p not in part.get("properties", {})]:
                if extra is False:
                    detail = f"combines a property {prop!r} with a branch whose 'additionalProperties' is false"
                    raise self._refuse("allOf", owner, detail, unsatisfiable=True)
                properties = {**properties, prop: {"allOf": [properties[prop], extra]}}
            out["properties"] = properties
        return self._note(out, self._where(owner))

    # -- unions, literals -------------------------------------------------------------------------

    def _union(self, schema: dict[str, Any], name: str, rule_name: str) -> str:
        if "anyOf" in schema and "oneOf" in schema:
            raise self._refuse("oneOf", schema, "beside 'anyOf' is not enforced (merge them into one)")
        key = "oneOf" if "oneOf" in schema else "anyOf"
        branches = schema[key]
        rest = {k: v for k, v in schema.items() if k not in (key, "discriminator") and k not in ANNOTATIONS}
        if rest:  # the keywords beside the union apply to each branch
            merged, empty = [], None
            for branch in branches:
                try:
                    merged.append(self._merge([rest, branch], branch))
                except Unsatisfiable as exc:
                    empty = exc
            if not merged:
                raise empty or self._refuse(key, schema, "has no branches", unsatisfiable=True)
            branches = merged
        if key == "oneOf" and len(branches) > 1:
            branches = self._disjoint(branches, schema)
        return self._alternatives(branches, schema, name, rule_name)

    def _alternatives(self, branches: list[Any], schema: Any, name: str, rule_name: str) -> str:
        rules, empty = [], None
        for i, branch in enumerate(branches):
            try:
                rules.append(self.visit(branch, f"{name}{'-' if name else 'alternative-'}{i}"))
            except Unsatisfiable as exc:
                empty = exc
        if not rules:
            raise empty or self._refuse("anyOf", schema, "has no branches", unsatisfiable=True)
        return self._add_rule(rule_name, " | ".join(rules))

    def _disjoint(self, branches: list[Any], schema: dict[str, Any]) -> list[Any]:
        """The branches of a `oneOf`, if no value can match two of them (each then requires its tag)."""
        flat = [self._flatten(self._note(b, self._where(schema))) for b in branches]
        literals = all(set(b) - ANNOTATIONS <= {"const", "enum"} and ("const" in b or "enum" in b) for b in flat)
        if literals and _pairwise_disjoint([self._values(b) for b in flat]):
            return flat
        discriminator = schema.get("discriminator")
        preferred = discriminator.get("propertyName") if isinstance(discriminator, dict) else None
        objects = [b for b in flat if b.get("type", "object") == "object" and not UNIONS_AND_LITERALS & set(b)]
        if len(objects) == len(flat):
            names = [preferred] if isinstance(preferred, str) else []
            names += [n for n in (flat[0].get("properties") or {}) if n != preferred]
            for prop in names:
                tags = [self._values(self._flatten((b.get("properties") or {}).get(prop, {}))) for b in flat]
                if all(t is not None for t in tags) and _pairwise_disjoint(tags):
                    return [
                        self._note(
                            {**b, "required": list(dict.fromkeys([*b.get("required", []), prop]))}, self._where(b)
                        )
                        for b in flat
                    ]
        raise self._refuse(
            "oneOf",
            schema,
            "is enforced only when its branches cannot overlap: objects that each give one property a "
            "different 'const' (or 'enum' values), as a discriminated union does; use 'anyOf' otherwise",
        )

    @staticmethod
    def _values(schema: dict[str, Any]) -> list[Any] | None:
        if "const" in schema:
            return [schema["const"]]
        return list(schema["enum"]) if isinstance(schema.get("enum"), list) else None

    def _literals(self, schema: dict[str, Any], rule_name: str) -> str:
        keyword = "const" if "const" in schema else "enum"
        values = [schema["const"]] if keyword == "const" else list(schema["enum"])
        check = {k: v for k, v in schema.items() if k not in ANNOTATIONS or k in ("$defs", "definitions")}
        root = self._root if isinstance(self._root, dict) else {}
        for defs in ("$defs", "definitions"):
            if defs in root:
                check.setdefault(defs, root[defs])
        try:
            validator = jsonschema.Draft202012Validator(check, format_checker=format_checker())
            kept = [v for v in values if validator.is_valid(v)]
        except Exception:  # a reference the check cannot follow, say
            raise self._refuse(keyword, schema, "cannot be checked against the keywords beside it") from None
        if not kept:
            raise self._refuse(keyword, schema, "has no value that passes the keywords beside it", unsatisfiable=True)
        try:
            texts = [json.dumps(v, ensure_ascii=True, allow_nan=False) for v in kept]
        except ValueError:
            raise self._refuse(keyword, schema, "holds a number JSON cannot write") from None
        return self._add_rule(rule_name, " | ".join(patterns.gbnf_literal(t) for t in texts))

    # -- objects, arrays --------------------------------------------------------------------------

    def _object(self, schema: dict[str, Any], name: str, rule_name: str) -> str:
        properties = dict(schema.get("properties") or {})
        extra = schema.get("additionalProperties")
        if "properties" not in schema and extra is None:
            extra = True  # {"type": "object"}: any object
        required = list(dict.fromkeys(schema.get("required") or []))
        if not required and not properties and extra is True:
            return self._add_rule(rule_name, self._primitive("object"))
        for prop in required:
            if prop not in properties:
                if extra is False:
                    detail = f"names {prop!r}, which 'additionalProperties': false forbids"
                    raise self._refuse("required", schema, detail, unsatisfiable=True)
                properties[prop] = self._note(extra if isinstance(extra, dict) else {}, self._where(schema))
        prefix = f"{name}-" if name else ""
        kv = {}
        for prop, sub in list(properties.items()):
            try:
                value = self.visit(sub, f"{prefix}{prop}" or "property")  # "" would be the root's name
            except Unsatisfiable:
                if prop in required:
                    raise
                del properties[prop]  # a property that allows no value is never written
                continue
            key = patterns.gbnf_literal(json.dumps(prop, ensure_ascii=True))
            kv[prop] = self._add_rule(f"{prefix}{prop}-kv", f'{key} space ":" space {value}')
        optional = [p for p in properties if p not in required]
        if extra is True or isinstance(extra, dict):  # absent: none are written (a subset of what is allowed)
            value = self.visit(extra if isinstance(extra, dict) else {}, f"{prefix}additional-value")
            key = self._key_rule(list(properties), f"{prefix}additional-key")
            kv["*"] = self._add_rule(f"{prefix}additional-kv", f'{key} ":" space {value}')
            optional.append("*")
        rule = '"{" space ' + ' "," space '.join(kv[p] for p in required)
        if optional:
            chains = " | ".join(
                self._optional_chain(optional[i:], kv, prefix, first=True) for i in range(len(optional))
            )
            rule += f' ( "," space ( {chains} ) )?' if required else f" ( {chains} )?"
        return self._add_rule(rule_name, rule + ' "}" space')

    def _optional_chain(self, keys: list[str], kv: dict[str, str], prefix: str, first: bool) -> str:
        """Optional properties in order, each at most once (additional ones, `*`, repeat)."""
        key, rest = keys[0], keys[1:]
        if key == "*":
            out = self._add_rule(f"{prefix}additional-kvs", f'{kv["*"]} ( "," space {kv["*"]} )*')
        else:
            out = kv[key] if first else f'( "," space {kv[key]} )?'
        if rest:
            out += " " + self._add_rule(f"{prefix}{key}-rest", self._optional_chain(rest, kv, prefix, first=False))
        if not first and key == "*":
            out = f'( "," space {out} )?'
        return out

    def _key_rule(self, declared: list[str], name: str) -> str:
        """A JSON string (raw characters) that is none of the declared property names."""
        raw = "[^" + '"\\\\' + r"\x7F\x00-\x1F]"
        trie: dict[str, Any] = {}
        for word in declared:
            if all(patterns.intersect(patterns.chars(c), patterns.WRITABLE) for c in word):
                node = trie
                for c in word:
                    node = node.setdefault(c, {})
                node[""] = {}  # the end of a declared name
        counter = [0]

        def rule(node: dict[str, Any]) -> str:
            counter[0] += 1
            children = [c for c in node if c]
            options = [f"{patterns.gbnf_literal(c)} {rule(node[c])}" for c in children]
            others = patterns.complement(
                patterns.normalize([*patterns.complement(patterns.WRITABLE), *((ord(c), ord(c)) for c in children)])
            )
            options.append(f"{patterns.gbnf_class(others)} {raw}*")
            body = "( " + " | ".join(options) + " )" + ("" if "" in node else "?")
            return self._add_rule(f"{name}-{counter[0]}", body)

        return f'"\\"" {rule(trie)} "\\"" space'

    def _array(self, schema: dict[str, Any], name: str, rule_name: str) -> str:
        low, high = self._count(schema, "minItems") or 0, self._count(schema, "maxItems")
        if high is not None and low > high:
            raise self._refuse("minItems", schema, "is more than 'maxItems'", unsatisfiable=True)
        prefix = f"{name}-" if name else ""
        tuple_items = schema.get("prefixItems", schema.get("items") if isinstance(schema.get("items"), list) else None)
        rest = None if isinstance(schema.get("items"), list) else schema.get("items", {})
        if tuple_items is not None:  # exactly `count` items: the tuple's, then `items` ones
            count = max(low, min(len(tuple_items), len(tuple_items) if high is None else high))
            if count > len(tuple_items) and rest is False:
                raise self._refuse("minItems", schema, "needs more items than 'prefixItems' allows", unsatisfiable=True)
            rules = [self.visit(s, f"{prefix}tuple-{i}") for i, s in enumerate(tuple_items[:count])]
            if count > len(tuple_items):
                rules += [self.visit(rest if rest is not None else {}, f"{prefix}item")] * (count - len(tuple_items))
            return self._add_rule(rule_name, '"[" space ' + ' "," space '.join(rules) + ' "]" space')
        if rest is False:
            high = 0
            if low > 0:
                raise self._refuse("items", schema, "is false but 'minItems' asks for items", unsatisfiable=True)
        if high == 0:
            return self._add_rule(rule_name, '"[" space "]" space')
        item = self.visit(rest if rest is not None else {}, f"{prefix}item")
        body = repetition(item, low, high, separator='"," space')
        return self._add_rule(rule_name, f'"[" space {body} "]" space')

    def _count(self, schema: dict[str, Any], key: str) -> int | None:
        """A length or item count as an int (JSON Schema allows 2.0), within the core's bound."""
        value = schema.get(key)
        if value is None:
            return None
        if not _is_number(value) or (isinstance(value, float) and not value.is_integer()) or value < 0:
            raise self._refuse(key, schema, "is not a non-negative integer")
        if value > MAX_REPEAT:
            raise self._refuse(key, schema, f"is {value}: too large, this server enforces at most {MAX_REPEAT}")
        return int(value)

    # -- strings, numbers -------------------------------------------------------------------------

    def _string(self, schema: dict[str, Any], rule_name: str) -> str:
        low, high = self._count(schema, "minLength") or 0, self._count(schema, "maxLength")
        if high is not None and low > high:
            raise self._refuse("minLength", schema, "is more than 'maxLength'", unsatisfiable=True)
        pattern, fmt = schema.get("pattern"), schema.get("format")
        if pattern is None and fmt is None:
            if low == 0 and high is None:
                return self._add_rule(rule_name, self._primitive("string"))
            char = self._primitive("char")
            return self._add_rule(rule_name, f'"\\"" {repetition(char, low, high)} "\\"" space')
        if pattern is not None and fmt is not None:
            raise self._refuse("pattern", schema, "is not enforced together with 'format'")
        keyword = "pattern" if pattern is not None else "format"
        try:
            node = patterns.parse(pattern if pattern is not None else patterns.FORMATS[str(fmt)])
        except patterns.PatternError as exc:
            raise self._refuse("pattern", schema, f"is not enforced: {exc}") from None
        fitted = None if node == patterns.NOTHING else patterns.fit(node, low, high)
        if fitted is None:  # lone surrogates only, or no such string within the lengths: refused
            detail = "matches no string that a JSON string can hold"
            if low or high is not None:
                detail += " within 'minLength'/'maxLength'"
            raise self._refuse(keyword, schema, detail)
        body = patterns.to_gbnf(fitted, rule_name, self._add_rule)
        return self._add_rule(rule_name, f'"\\"" {body} "\\"" space' if body else '"\\"\\"" space')

    def _number(self, schema: dict[str, Any], rule_name: str, integer: bool) -> str:
        if not any(k in schema for k in NUMBER_BOUNDS):
            return self._add_rule(rule_name, self._primitive("integer" if integer else "number"))
        low, low_open, high, high_open = self._bounds(schema, integer)
        if integer:  # as inclusive integer bounds
            low = None if low is None else (math.floor(low) + 1 if low_open else math.ceil(low))
            high = None if high is None else (math.ceil(high) - 1 if high_open else math.floor(high))
            low_open = high_open = False
        limit = 10**DIGITS - 1
        options = []
        if high is None or high >= 0:  # x = m >= 0
            nonnegative = low is not None and low >= 0
            m = _magnitudes(low if nonnegative else 0, low_open and nonnegative, high, high_open, limit, integer)
            options += [m] if m else []
        if low is None or low < 0:  # x = -m with m > 0
            m_low, m_low_open = (-high, high_open) if high is not None and high < 0 else (0, True)
            m = _magnitudes(m_low, m_low_open, None if low is None else -low, low_open, limit, integer)
            options += [f'"-" {m}'] if m else []
        if not options:
            empty = low is not None and high is not None and (low > high or (low == high and (low_open or high_open)))
            detail = "and the other bounds leave no number" + ("" if empty else f" of at most {DIGITS} digits")
            keyword = next(k for k in NUMBER_BOUNDS if k in schema)
            raise self._refuse(keyword, schema, detail, unsatisfiable=empty)
        return self._add_rule(rule_name, "( " + " | ".join(options) + " ) space")

    def _bounds(self, schema: dict[str, Any], integer: bool) -> tuple[Any, bool, Any, bool]:
        """(low, low exclusive, high, high exclusive); draft-04 boolean `exclusive*` understood."""
        low, high = schema.get("minimum"), schema.get("maximum")
        low_open = schema.get("exclusiveMinimum") is True
        high_open = schema.get("exclusiveMaximum") is True
        ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if _is_number(ex_low) and (low is None or ex_low >= low):
            low, low_open = ex_low, True
        if _is_number(ex_high) and (high is None or ex_high <= high):
            high, high_open = ex_high, True
        for key, value in (("minimum", low), ("maximum", high)):
            if value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise self._refuse(key, schema, "is not a finite number")
            if not integer and isinstance(value, float) and not value.is_integer():
                detail = f"is {value}: this server enforces bounds of numbers only when they are whole numbers"
                raise self._refuse(key, schema, detail)
        if not integer:
            low = None if low is None else int(low)
            high = None if high is None else int(high)
        return low, low_open, high, high_open


def _magnitudes(low: int, low_open: bool, high: int | None, high_open: bool, limit: int, integer: bool) -> str | None:
    """GBNF for a number m >= 0 (no sign, no exponent) within the bounds; None if there is none."""
    if high is not None and (high < low or (high == low and (low_open or high_open))):
        return None
    if integer:
        first, last = low + low_open, limit if high is None else min(high - high_open, limit)
        return _int_range(first, last) if first <= last else None
    fraction = f'( "." [0-9]{{1,{FRACTION_DIGITS}}} )?'
    options = []
    first = low + 1 if low_open else low
    last = min(limit, high - 1) if high is not None else limit
    if first <= last:
        options.append(f"{_int_range(first, last)} {fraction}")
    if low_open and (high is None or low < high) and low <= limit:  # (low, low + 1): a non-zero fraction
        options.append(
            f'{_int_range(low, low)} "." "0"{{0,{FRACTION_DIGITS - 1}}} [1-9] [0-9]{{0,{FRACTION_DIGITS - 1}}}'
        )
    if high is not None and not high_open and high <= limit and (high > low or not low_open):  # exactly high
        options.append(f'{_int_range(high, high)} ( "." "0"{{1,{FRACTION_DIGITS}}} )?')
    return "( " + " | ".join(options) + " )" if options else None


def _int_range(low: int, high: int) -> str:
    """GBNF for the decimal integers low..high (0 <= low <= high), without leading zeros."""
    parts = []
    for size in range(len(str(low)), len(str(high)) + 1):
        lo = max(low, 10 ** (size - 1) if size > 1 else 0)
        hi = min(high, 10**size - 1)
        if lo <= hi:
            parts.append(_same_length(str(lo), str(hi)))
    return parts[0] if len(parts) == 1 else "( " + " | ".join(parts) + " )"


def _same_length(lo: str, hi: str) -> str:
    """GBNF for the digit strings from lo to hi, both of the same length."""
    if lo == hi:
        return f'"{lo}"'
    common = 0
    while lo[common] == hi[common]:
        common += 1
    head = f'"{lo[:common]}" ' if common else ""
    lo, hi = lo[common:], hi[common:]
    rest = len(lo) - 1
    tail = "" if not rest else " [0-9]" if rest == 1 else f" [0-9]{{{rest}}}"
    options = []
    start = int(lo[0])
    if lo[1:] != "0" * rest:
        options.append(f'"{lo[0]}" {_same_length(lo[1:], "9" * rest)}')
        start += 1
    end = int(hi[0]) if hi[1:] == "9" * rest else int(hi[0]) - 1
    if start <= end:
        options.append((f"[{start}-{end}]" if start < end else f'"{start}"') + tail)
    if hi[1:] != "9" * rest:
        options.append(f'"{hi[0]}" {_same_length("0" * rest, hi[1:])}')
    body = options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"
    return head + body


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _common_types(a: Any, b: Any) -> Any:
    left = {a} if isinstance(a, str) else set(a)
    right = {b} if isinstance(b, str) else set(b)
    if "number" in left and "integer" in right:
        left.add("integer")
    if "number" in right and "integer" in left:
        right.add("integer")
    both = sorted(left & right)
    return both[0] if len(both) == 1 else both


def _pairwise_disjoint(groups: list[list[Any] | None]) -> bool:
    seen: set[str] = set()
    for group in groups:
        if group is None:
            return False
        keys = {json.dumps(_canonical(v), sort_keys=True) for v in group}
        if keys & seen:
            return False
        seen |= keys
    return True


def _canonical(value: Any) -> Any:
    """JSON Schema equality: 1 and 1.0 are the same value, true and 1 are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value
