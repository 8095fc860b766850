"""String constraints as GBNF: JSON Schema `pattern` (ECMA-262), `format` and the lengths beside them.

A pattern is parsed into a small regular-expression tree (characters, sequences, alternatives,
repetitions) over the text a client decodes, and written out as GBNF of the JSON string that holds it:
a character JSON allows raw is written raw, a quote, backslash or control character as its JSON escape
(`\\"`, `\\\\`, `\\n`, `\\u0001`, ...), so the decoded string is exactly a text the pattern matches.
Only lone surrogates are left out (no JSON text decodes to one); that narrows what may be written, never
widens it. The "any text" an unanchored side gets is raw text.

Patterns are unanchored in JSON Schema (`"abc"` means "contains abc"), so a side without `^` or `$`
gets "any text" added. `minLength`/`maxLength` beside a pattern or format are applied to the tree
itself: repetitions get bounds so that every string the tree allows has a length within them (when
the lengths need splitting between several parts, each gets a fair share: a subset of the strings
the schema allows, never one outside it).

Refused, with a reason: lookarounds, backreferences, word boundaries, anchors inside groups, Unicode
property escapes and flags.

Over 400 lines: an ECMA-262 parser and its GBNF writer, with the formats as patterns; one job.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, inclusive code point ranges

MAX_CODE_POINT = 0x10FFFF
MAX_GROUP_DEPTH = 50


class PatternError(ValueError):
    """A pattern that this server does not enforce (the message says why)."""


# -- character sets ----------------------------------------------------------------------------------


def normalize(ranges: list[tuple[int, int]]) -> Ranges:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(r for r in ranges if r[0] <= r[1]):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def complement(ranges: Ranges) -> Ranges:
    out, start = [], 0
    for lo, hi in ranges:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODE_POINT:
        out.append((start, MAX_CODE_POINT))
    return tuple(out)


def intersect(a: Ranges, b: Ranges) -> Ranges:
    return complement(normalize([*complement(a), *complement(b)]))


def chars(text: str) -> Ranges:
    return normalize([(ord(c), ord(c)) for c in text])


# What a grammar may write raw inside a JSON string: no quote, backslash, control character or surrogate.
WRITABLE = complement(normalize([(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F), (0xD800, 0xDFFF)]))
# What a JSON string can hold, raw or escaped: everything but lone surrogates.
ENCODABLE = complement(((0xD800, 0xDFFF),))
JSON_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
ASCII = ((0x00, 0x7F),)
DIGIT = ((0x30, 0x39),)
WORD = normalize([(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
# White space for both ECMA-262 and Python's `re` (jsonschema validates with the latter).
SPACE = normalize([(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029)])
SPACE = normalize([*SPACE, (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)])
LINE_TERMINATORS = chars("\n\r\u2028\u2029")
# \D, \W and \S mean different sets beyond ASCII in ECMA-262 and in Python's `re`: keep to ASCII.
SHORTHANDS = {
    "d": DIGIT,
    "w": WORD,
    "s": SPACE,
    "D": intersect(complement(DIGIT), ASCII),
    "W": intersect(complement(WORD), ASCII),
    "S": intersect(complement(normalize([*SPACE, (0x1C, 0x1F)])), ASCII),  # Python's `re` takes 1C-1F as space
}


# -- the tree ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chars:
    ranges: Ranges


@dataclass(frozen=True)
class Seq:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    options: tuple[Node, ...]  # no options: matches nothing


@dataclass(frozen=True)
class Repeat:
    item: Node
    low: int
    high: int | None


Node = Chars | Seq | Alt | Repeat
NOTHING = Alt(())
EMPTY = Seq(())


def length_range(node: Node) -> tuple[int, int | None]:
    """Shortest and longest length (None: unbounded) of the strings `node` matches."""
    if isinstance(node, Chars):
        return 1, 1
    if isinstance(node, Seq):
        spans = [length_range(i) for i in node.items]
        highs = [h for _, h in spans]
        return sum(lo for lo, _ in spans), None if None in highs else sum(h for h in highs if h is not None)
    if isinstance(node, Alt):
        spans = [length_range(o) for o in node.options] or [(0, 0)]
        highs = [h for _, h in spans]
        return min(lo for lo, _ in spans), None if None in highs else max(h for h in highs if h is not None)
    lo, hi = length_range(node.item)
    if hi == 0:
        return 0, 0
    return node.low * lo, None if node.high is None or hi is None else node.high * hi


def writable(node: Node) -> Node:
    """`node` with every character set cut down to what a JSON string can hold; NOTHING if no string is left."""
    if isinstance(node, Chars):
        ranges = intersect(node.ranges, ENCODABLE)
        return Chars(ranges) if ranges else NOTHING
    if isinstance(node, Seq):
        items = tuple(writable(i) for i in node.items)
        return NOTHING if NOTHING in items else Seq(tuple(i for i in items if i != EMPTY))
    if isinstance(node, Alt):
        options = tuple(o for o in (writable(o) for o in node.options) if o != NOTHING)
        return options[0] if len(options) == 1 else Alt(options)
    item = writable(node.item)
    if item == NOTHING:
        return EMPTY if node.low == 0 else NOTHING
    return EMPTY if item == EMPTY or node.high == 0 else Repeat(item, node.low, node.high)


# -- the parser --------------------------------------------------------------------------------------


class Parser:
    """ECMA-262 regular expressions, the subset a grammar can express exactly."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 0
        self.depth = 0

    def parse(self) -> Node:
        """The pattern with JSON Schema's search semantics made explicit: any text where no anchor is."""
        anything = Repeat(Chars(WRITABLE), 0, None)
        options: list[Node] = []
        while True:
            start = self.take("^")
            items = self.sequence(top=True)
            end = self.take("$")
            if not items and not start and not end:
                options.append(anything)
            else:
                options.append(Seq((*(() if start else (anything,)), *items, *(() if end else (anything,)))))
            if self.pos == len(self.text):
                break
            if not self.take("|"):
                raise PatternError(self.unexpected())
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def take(self, char: str) -> bool:
        if self.text.startswith(char, self.pos):
            self.pos += len(char)
            return True
        return False

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def unexpected(self) -> str:
        char = self.peek()
        if char in "^$":
            return f"the anchor {char!r} at index {self.pos} is not at the start or end of the pattern"
        return f"unexpected {char!r} at index {self.pos}"

    def alternation(self) -> Node:
        options = [Seq(tuple(self.sequence(top=False)))]
        while self.take("|"):
            options.append(Seq(tuple(self.sequence(top=False))))
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def sequence(self, top: bool) -> list[Node]:
        items: list[Node] = []
        while self.pos < len(self.text) and self.peek() not in "|)":
            if top and self.peek() == "$" and self.text[self.pos + 1 : self.pos + 2] in ("", "|"):
                break  # the end anchor of a top-level alternative
            items.append(self.quantified(self.atom()))
        return items

    def quantified(self, atom: Node) -> Node:
        char = self.peek()
        if char in ("*", "+", "?"):
            self.pos += 1
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
        elif char == "{" and (bounds := self.braces()) is not None:
            low, high = bounds
        else:
            return atom
        self.take("?")  # lazy: the same strings
        if self.repeats_here():
            raise PatternError(f"nothing to repeat at index {self.pos}")
        return Repeat(atom, low, high)

    def repeats_here(self) -> bool:
        return self.peek() in ("*", "+", "?") or (self.peek() == "{" and self.braces(peek=True) is not None)

    def braces(self, peek: bool = False) -> tuple[int, int | None] | None:
        """A `{n}`, `{n,}` or `{n,m}` quantifier at the position (None: a literal brace)."""
        end = self.text.find("}", self.pos)
        if end < 0:
            return None
        body = self.text[self.pos + 1 : end]
        low, comma, high = body.partition(",")
        if not low.isdigit() or not (high.isdigit() or not high):
            if body.startswith(","):
                raise PatternError(f"{{{body}}} at index {self.pos} means different things to different regex engines")
            return None
        bounds = (int(low), int(high) if high else None if comma else int(low))
        if bounds[1] is not None and bounds[1] < bounds[0]:
            raise PatternError(f"the quantifier {{{body}}} at index {self.pos} is out of order")
        if not peek:
            self.pos = end + 1
        return bounds

    def atom(self) -> Node:
        if self.repeats_here():
            raise PatternError(f"nothing to repeat at index {self.pos}")
        char = self.peek()
        self.pos += 1
        if char == "(":
            return self.group()
        if char == "[":
            return Chars(self.char_class())
        if char == ".":
            return Chars(complement(LINE_TERMINATORS))
        if char == "\\":
            return Chars(self.escape())
        if char in "^$":
            self.pos -= 1
            raise PatternError(self.unexpected())
        if char == ")":
            self.pos -= 1
            raise PatternError(f"unbalanced ')' at index {self.pos}")
        return Chars(chars(char))

    def group(self) -> Node:
        start = self.pos - 1
        if self.take("?"):
            if self.take(":"):
                pass
            elif self.take("<") and self.peek() not in ("=", "!"):
                end = self.text.find(">", self.pos)
                if end < 0 or not self.text[self.pos : end].isidentifier():
                    raise PatternError(f"a malformed group name at index {start}")
                self.pos = end + 1
            else:
                raise PatternError(f"lookarounds and inline flags (at index {start}) are not enforced")
        self.depth += 1
        if self.depth > MAX_GROUP_DEPTH:
            raise PatternError(f"groups nest more than {MAX_GROUP_DEPTH} deep")
        node = self.alternation()
        self.depth -= 1
        if not self.take(")"):
            raise PatternError(f"the group at index {start} is not closed")
        return node

    def char_class(self) -> Ranges:
        start = self.pos - 1
        negated = self.take("^")
        if self.peek() == "]":
            raise PatternError(f"the class at index {start} is empty or ambiguous ('[]' / '[^]')")
        parts: list[tuple[int, int]] = []
        shorthand = False
        while True:
            if self.pos >= len(self.text):
                raise PatternError(f"the class at index {start} is not closed")
            if self.take("]"):
                break
            low = self.class_atom()
            if isinstance(low, tuple):
                parts += low
                shorthand = True
                continue
            if self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self.class_atom()
                if isinstance(high, tuple):
                    raise PatternError(f"a range ends in a class escape in the class at index {start}")
                if high < low:
                    raise PatternError(f"the range at index {start} is out of order")
                parts.append((low, high))
            else:
                parts.append((low, low))
        ranges = normalize(parts)
        if negated:
            ranges = complement(ranges)
            if shorthand:  # \d, \w, \s mean more in Python's `re` than in ECMA-262: keep to ASCII
                ranges = intersect(ranges, ASCII)
        return ranges

    def class_atom(self) -> int | Ranges:
        char = self.peek()
        self.pos += 1
        if char == "\\":
            if self.take("b"):
                return 0x08
            shorthand = self.peek() in SHORTHANDS
            ranges = self.escape()
            return ranges if shorthand else ranges[0][0]
        if char == "[" and self.peek() in ":=.":
            raise PatternError(f"POSIX classes (at index {self.pos - 1}) are not enforced")
        return ord(char)

    def escape(self) -> Ranges:
        char = self.peek()
        if not char:
            raise PatternError("the pattern ends with a lone backslash")
        self.pos += 1
        if char in SHORTHANDS:
            return SHORTHANDS[char]
        simple = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v"}
        if char in simple:
            return chars(simple[char])
        if char in "xu":
            size = 2 if char == "x" else 4
            digits = self.text[self.pos : self.pos + size]
            if len(digits) == size and all(c in "0123456789abcdefABCDEF" for c in digits):
                self.pos += size
                return chars(chr(int(digits, 16)))
            raise PatternError(f"a malformed \\{char} escape at index {self.pos - 2}")
        if char == "0" and not self.peek().isdigit():
            return chars("\0")
        if char.isalnum():
            what = {
                "b": "word boundaries",
                "B": "word boundaries",
                "p": "Unicode property escapes",
                "P": "Unicode property escapes",
                "k": "backreferences",
            }.get(char, "backreferences" if char.isdigit() else f"the escape \\{char}")
            raise PatternError(f"{what} (at index {self.pos - 2}) are not enforced")
        return chars(char)  # an escaped punctuation character stands for itself


def parse(pattern: str) -> Node:
    """The strings (a JSON string can hold) that contain a match of `pattern`."""
    return writable(Parser(pattern).parse())


# -- lengths -----------------------------------------------------------------------------------------


def fit(node: Node, low: int, high: int | None) -> Node | None:
    """A tree matching only strings of `node` whose length is within [low, high]; None if none is found.

    Exact for repetitions of a fixed-length item (the common case: `[a-z]+`); otherwise the length is
    shared out between the parts, which may leave out some strings but never adds one."""
    lo, hi = length_range(node)
    if lo >= low and (high is None or (hi is not None and hi <= high)):
        return node
    if (high is not None and lo > high) or (hi is not None and hi < low):
        return None
    if isinstance(node, Chars):
        return None  # a character is length 1: handled above
    if isinstance(node, Alt):
        options = tuple(o for o in (fit(o, low, high) for o in node.options) if o is not None)
        return (options[0] if len(options) == 1 else Alt(options)) if options else None
    if isinstance(node, Seq):
        return _fit_sequence(node, low, high)
    fitted = _fit_repeat(node, low, high)
    if fitted is None and node.low == 0 and low == 0:
        return EMPTY  # no copy at all
    if fitted is None and node.low <= 1 and (node.high is None or node.high >= 1):
        return fit(node.item, low, high)  # exactly one copy
    return fitted


def _fit_sequence(node: Seq, low: int, high: int | None) -> Node | None:
    spans = [length_range(i) for i in node.items]
    mins = [lo for lo, _ in spans]
    tops: list[int | None] = [hi for _, hi in spans]
    if high is not None:
        extra = _share(high - sum(mins), [None if hi is None else hi - lo for lo, hi in spans])
        tops = [lo + e for lo, e in zip(mins, extra, strict=True)]
    lows = list(mins)
    deficit = low - sum(mins)
    if deficit > 0:
        rooms = [None if top is None else top - lo for lo, top in zip(mins, tops, strict=True)]
        more = _share(deficit, rooms)
        if sum(more) < deficit:
            return None
        lows = [lo + m for lo, m in zip(mins, more, strict=True)]
    items = []
    for item, lo, top in zip(node.items, lows, tops, strict=True):
        fitted = fit(item, lo, top)
        if fitted is None:
            return None
        items.append(fitted)
    return Seq(tuple(items))


def _fit_repeat(node: Repeat, low: int, high: int | None) -> Node | None:
    item = node.item
    lo, hi = length_range(item)
    if hi == 0:
        return node if low == 0 else None
    if lo != hi or lo == 0:  # an item of varying length: give it a length range, then count
        top = hi if high is None else min(high // max(node.low, 1), high if hi is None else hi)
        if top is not None and top < max(lo, 1):
            return None
        fitted = fit(item, max(lo, 1), top)
        if fitted is None:
            return None
        item = fitted
        lo, hi = length_range(item)
    count_low = max(node.low, math.ceil(low / lo))
    if high is None:
        count_high = node.high
    else:
        assert hi is not None  # the item was fitted to at most `high`
        count_high = high // hi if node.high is None else min(high // hi, node.high)
    if count_high is not None and count_high < count_low:
        return None
    return Repeat(item, count_low, count_high)


def _share(amount: int, rooms: list[int | None]) -> list[int]:
    """Split `amount` between parts with the given room (None: unlimited), as evenly as possible."""
    shares = [0] * len(rooms)
    open_ = [i for i, room in enumerate(rooms) if room is None or room > 0]
    while amount > 0 and open_:
        each = max(1, amount // len(open_))
        for i in list(open_):
            room = rooms[i]
            give = min(each, amount) if room is None else min(each, amount, room - shares[i])
            shares[i] += give
            amount -= give
            if room is not None and shares[i] >= room:
                open_.remove(i)
            if amount == 0:
                break
    return shares


# -- GBNF --------------------------------------------------------------------------------------------


def gbnf_char(code: int, in_class: bool) -> str:
    if 0x30 <= code <= 0x39 or 0x41 <= code <= 0x5A or 0x61 <= code <= 0x7A:
        return chr(code)
    if 0x20 <= code < 0x7F and chr(code) not in ('"\\' + ("]^-[" if in_class else "")):
        return chr(code)
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def gbnf_literal(text: str) -> str:
    return '"' + "".join(gbnf_char(ord(c), in_class=False) for c in text) + '"'


def gbnf_class(ranges: Ranges) -> str:
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return gbnf_literal(chr(ranges[0][0]))
    negated = complement(ranges)
    body, mark = (negated, "^") if len(negated) < len(ranges) else (ranges, "")
    parts = [gbnf_char(lo, True) if lo == hi else f"{gbnf_char(lo, True)}-{gbnf_char(hi, True)}" for lo, hi in body]
    return f"[{mark}{''.join(parts)}]"


def json_escape(code: int) -> str:
    return JSON_ESCAPES.get(code) or f"\\u{code:04x}"


def gbnf_json_chars(ranges: Ranges) -> str:
    """One character of `ranges` inside a JSON string: raw where JSON allows it, else its escape."""
    raw = intersect(ranges, WRITABLE)
    escaped = intersect(ranges, complement(WRITABLE))
    options = [gbnf_class(raw)] if raw else []
    options += [gbnf_literal(json_escape(code)) for lo, hi in escaped for code in range(lo, hi + 1)]
    return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"


def to_gbnf(node: Node, name: str, add_rule: Callable[[str, str], str]) -> str:
    """GBNF of the JSON string body for `node`; repeated groups become rules of their own (after `name`)."""
    counter = [0]

    def emit(node: Node, group: bool) -> str:
        if isinstance(node, Chars):
            return gbnf_json_chars(node.ranges)
        if isinstance(node, Seq):
            parts = [p for p in (emit(i, True) for i in node.items) if p]
            text = " ".join(_merge_literals(parts))
            return f"( {text} )" if group and len(parts) > 1 else text or '""'
        if isinstance(node, Alt):
            options = [emit(o, False) for o in node.options]
            return "( " + " | ".join(options) + " )" if len(options) > 1 else options[0]
        if node.high == 0:
            return ""
        if isinstance(node.item, Chars):
            item = emit(node.item, True)
        else:  # a repeated group gets a rule of its own: llama.cpp bounds nested repetitions
            counter[0] += 1
            item = add_rule(f"{name}-{counter[0]}", emit(node.item, False))
        if (node.low, node.high) == (1, 1):
            return item
        suffix = {(0, None): "*", (1, None): "+", (0, 1): "?"}.get((node.low, node.high))
        if suffix is None:
            suffix = f"{{{node.low}}}" if node.low == node.high else f"{{{node.low},{node.high or ''}}}"
        return item + suffix

    return emit(node, False)


def _merge_literals(parts: list[str]) -> list[str]:
    """Adjacent single literals as one: `"a" "b"` -> `"ab"`."""
    out: list[str] = []
    for part in parts:
        if out and _is_literal(out[-1]) and _is_literal(part):
            out[-1] = out[-1][:-1] + part[1:]
        else:
            out.append(part)
    return out


def _is_literal(part: str) -> bool:
    return len(part) > 2 and part[0] == '"' and part[-1] == '"'  # a quote inside is always escaped


# -- formats -----------------------------------------------------------------------------------------

_YEAR = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"  # 0001-9999
_LEAP = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_DATE = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP}-02-29)"
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
# Host name labels of at most 63 characters, no "--" (IDNA reserves it), the last starting with a letter.
_LABEL = "[A-Za-z0-9](?:-?[A-Za-z0-9]){0,31}"
_TOP_LABEL = "[A-Za-z](?:-?[A-Za-z0-9]){0,31}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = f"{_OCTET}(?:\\.{_OCTET}){{3}}"
_H16 = "[0-9a-fA-F]{1,4}"
_IPV6 = (
    f"(?:(?:{_H16}:){{7}}{_H16}|(?:{_H16}:){{1,7}}:|(?:{_H16}:){{1,6}}:{_H16}"
    f"|(?:{_H16}:){{1,5}}(?::{_H16}){{1,2}}|(?:{_H16}:){{1,4}}(?::{_H16}){{1,3}}"
    f"|(?:{_H16}:){{1,3}}(?::{_H16}){{1,4}}|(?:{_H16}:){{1,2}}(?::{_H16}){{1,5}}"
    f"|{_H16}:(?::{_H16}){{1,6}}|:(?:(?::{_H16}){{1,7}}|:))"
)
_PCHAR = "(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-F]{2})"

# Each format as an anchored pattern: a subset of what the format allows (documented in docs/api.md).
FORMATS: dict[str, str] = {
    "date": f"^{_DATE}$",
    "time": f"^{_TIME}$",
    "date-time": f"^{_DATE}T{_TIME}$",
    "uuid": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    "email": f"^[A-Za-z0-9_%+-]{{1,32}}(?:\\.[A-Za-z0-9_%+-]{{1,31}})?@(?:{_LABEL}\\.){{1,2}}[A-Za-z]{{2,24}}$",
    "hostname": f"^(?:{_LABEL}\\.){{0,2}}{_TOP_LABEL}$",
    "ipv4": f"^{_IPV4}$",
    "ipv6": f"^{_IPV6}$",
    "uri": (
        f"^[a-z][a-z0-9+.-]{{0,15}}://(?:(?:{_LABEL}\\.){{0,2}}{_TOP_LABEL}|{_IPV4})(?::[1-9][0-9]{{0,3}})?"
        f"(?:/{_PCHAR}*)*(?:\\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?$"
    ),
}
