"""Keeps grammar-constrained output within its token budget, so that it always ends as a valid document.

llama.cpp's grammar sampler knows what may come next, not how far the document is from its end: a model
writing a long string could reach its token budget inside it and leave nothing a client can use. This
module parses the same GBNF and follows the output character by character as llama.cpp does (a set of
parse stacks), so that it knows at every point the shortest text that completes the document. A
sampled token is taken only while that shortest completion still fits the budget after it; otherwise
the completion is written instead. The shortest document of a grammar bounds the smallest budget
that can hold one, checked before generating. Over 400 lines: the GBNF parser (as llama.cpp reads it)
and the recognizer that walks its result belong together; neither has another user.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Callable
from dataclasses import dataclass

MAX_STACKS = 1_000  # parse stacks followed at once: beyond, the output is left to the grammar alone
MAX_DEPTH = 10_000  # frames in one stack (a grammar that recurses without consuming text)
PARTIAL_CHAR_RESERVE = 8  # tokens kept free while a character is split across tokens
_PREFERRED = "a0 "  # filler characters, when a shortest completion may choose one


class GrammarSyntaxError(ValueError):
    """GBNF this parser does not read (the grammars come from converter.py, so this is a bug)."""


@dataclass(frozen=True)
class Chars:
    """One character from a set: code point ranges, or everything outside them."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool = False

    def matches(self, cp: int) -> bool:
        inside = any(lo <= cp <= hi for lo, hi in self.ranges)
        return inside != self.negated

    def filler(self) -> str:
        """The character a shortest completion writes here."""
        for char in _PREFERRED:
            if self.matches(ord(char)):
                return char
        if self.negated:
            cp = 0
            for lo, hi in sorted(self.ranges):
                if cp < lo:
                    break
                cp = max(cp, hi + 1)
            return chr(cp)
        return chr(min(lo for lo, _ in self.ranges))


Element = Chars | int  # a character, or a reference to a rule by its number
Frame = tuple[int, int]  # (alternative, position of the next element in it)
Stack = tuple[Frame, ...]  # the innermost frame last


class Grammar:
    """A GBNF grammar as alternatives of elements, with the shortest text each part derives."""

    def __init__(self, gbnf: str) -> None:
        parser = _Parser(gbnf)
        self.alternatives = parser.alternatives
        self.rules = parser.rules
        self.root = parser.rule_id("root")
        if any(not alts for alts in self.rules):
            raise GrammarSyntaxError(f"rule {parser.undefined()} is used but not defined")
        self._shortest = self._shortest_texts()
        if self._shortest[self.root] is None:
            raise GrammarSyntaxError("the grammar derives no finite text")
        self._suffix = [self._suffix_lengths(alt) for alt in self.alternatives]

    def start(self) -> frozenset[Stack]:
        out: set[Stack] = set()
        for alt in self.rules[self.root]:
            self._expand(((alt, 0),) if self.alternatives[alt] else (), out)
        return frozenset(out)

    def advance(self, stacks: frozenset[Stack], char: str) -> frozenset[Stack]:
        """The stacks after one more character (empty: the grammar does not allow it)."""
        cp = ord(char)
        out: set[Stack] = set()
        for stack in stacks:
            if not stack:
                continue
            alt, pos = stack[-1]
            element = self.alternatives[alt][pos]
            if isinstance(element, Chars) and element.matches(cp):
                self._expand(self._next(stack), out)
            if len(out) > MAX_STACKS:
                raise GrammarSyntaxError("too many parse stacks")
        return frozenset(out)

    def cost(self, stacks: frozenset[Stack]) -> float:
        """UTF-8 bytes of the shortest completion (an upper bound on its tokens)."""
        return min((self._stack_cost(s) for s in stacks), default=math.inf)

    def completion(self, stacks: frozenset[Stack]) -> str:
        """The shortest text that completes the document from these stacks."""
        best = min(stacks, key=self._stack_cost)
        parts = []
        for alt, pos in reversed(best):
            for element in self.alternatives[alt][pos:]:
                parts.append(self._text(element))
        return "".join(parts)

    def shortest(self) -> str:
        """The shortest document of the grammar."""
        text = self._shortest[self.root]
        assert text is not None
        return text

    # -- internals --------------------------------------------------------------------------------

    def _next(self, stack: Stack) -> Stack:
        alt, pos = stack[-1]
        if pos + 1 < len(self.alternatives[alt]):
            return (*stack[:-1], (alt, pos + 1))
        return stack[:-1]

    def _expand(self, stack: Stack, out: set[Stack]) -> None:
        """Adds the stacks reached from `stack` without consuming text: each ends at a character, or is
        empty (the document may end here)."""
        work, seen = [stack], {stack}
        while work:
            stack = work.pop()
            if not stack:
                out.add(stack)
                continue
            if len(stack) > MAX_DEPTH:
                raise GrammarSyntaxError("the grammar recurses without consuming text")
            alt, pos = stack[-1]
            element = self.alternatives[alt][pos]
            if isinstance(element, Chars):
                out.add(stack)
                continue
            rest = self._next(stack)
            for sub in self.rules[element]:
                reached = (*rest, (sub, 0)) if self.alternatives[sub] else rest
                if reached not in seen:
                    seen.add(reached)
                    work.append(reached)

    def _stack_cost(self, stack: Stack) -> float:
        return sum(self._suffix[alt][pos] for alt, pos in stack)

    def _text(self, element: Element) -> str:
        if isinstance(element, Chars):
            return element.filler()
        text = self._shortest[element]
        assert text is not None
        return text

    def _size(self, element: Element) -> float:
        if isinstance(element, Chars):
            return len(element.filler().encode())
        return self._sizes[element]

    def _shortest_texts(self) -> list[str | None]:
        """The shortest text of each rule (None: none is finite), by fixed point on the sizes: a rule's
        text only changes to a strictly shorter one made of texts already found, so it is well founded."""
        best: list[str | None] = [None] * len(self.rules)
        self._shortest, self._sizes = best, [math.inf] * len(self.rules)
        changed = True
        while changed:
            changed = False
            for rule, alts in enumerate(self.rules):
                for alt in alts:
                    elements = self.alternatives[alt]
                    size = sum(self._size(e) for e in elements)
                    if size < self._sizes[rule]:
                        best[rule] = "".join(self._text(e) for e in elements)
                        self._sizes[rule] = size
                        changed = True
        return best

    def _suffix_lengths(self, alt: tuple[Element, ...]) -> list[float]:
        out = [0.0] * (len(alt) + 1)
        for pos in range(len(alt) - 1, -1, -1):
            out[pos] = out[pos + 1] + self._size(alt[pos])
        return out


@dataclass(frozen=True)
class Constraint:
    """A compiled output grammar: the GBNF llama.cpp samples with, the same grammar parsed here (None
    when it could not be: the output is then left to llama.cpp alone), and the tokens of its shortest
    document."""

    gbnf: str
    grammar: Grammar | None
    shortest_tokens: int


def utf8_size(text: str) -> int:
    return len(text.encode())


class Tracker:
    """One sequence's place in its grammar, fed the bytes of each token it takes. `count` is the
    number of tokens a text is written in (its UTF-8 size, an upper bound, when no tokenizer is given);
    it is asked only near the end of the budget, where the cheaper bound no longer fits."""

    def __init__(self, grammar: Grammar, count: Callable[[str], int] = utf8_size) -> None:
        self._grammar = grammar
        self._count = count
        self._stacks = grammar.start()
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.lost = False  # the output left this parse (a bug): the budget is no longer enforced

    @property
    def complete(self) -> bool:
        """The output so far is a whole document."""
        return () in self._stacks

    def take(self, piece: bytes, remaining: int) -> str | None:
        """Take the token `piece` if the document can still end within `remaining` tokens (counting this
        one) after it, and return None; otherwise take nothing and return the shortest completion,
        which fits in `remaining` tokens (each token taken left room for it; before the first, the
        engine checked that the shortest document fits)."""
        if self.lost:
            return None
        decoder_state = self._decoder.getstate()
        try:
            stacks = self._stacks
            for char in self._decoder.decode(piece):
                stacks = self._grammar.advance(stacks, char)
        except (UnicodeDecodeError, GrammarSyntaxError):
            stacks = frozenset()
        if not stacks:
            self.lost = True
            return None
        reserve = PARTIAL_CHAR_RESERVE if self._decoder.getstate()[0] else 0  # the rest of a split character
        cost = self._grammar.cost(stacks) + reserve
        if cost > remaining - 1 and cost < math.inf:
            cost = self._count(self._grammar.completion(stacks)) + reserve
        mid_char = bool(decoder_state[0])
        if cost <= remaining - 1 or mid_char:  # a split character is finished first (room was kept)
            self._stacks = stacks
            return None
        self._decoder.setstate(decoder_state)
        return self._grammar.completion(self._stacks)


class _Parser:
    """GBNF as llama.cpp reads it: `name ::= alternatives` per line (newlines only inside groups),
    literals, character classes, `.`, groups and the repetitions `* + ? {m} {m,} {m,n}`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.alternatives: list[tuple[Element, ...]] = []
        self.rules: list[list[int]] = []
        self._ids: dict[str, int] = {}
        self._space(newlines=True)
        while self.pos < len(text):
            name = self._name()
            self._space(newlines=False)
            if not text.startswith("::=", self.pos):
                raise GrammarSyntaxError(f"expected '::=' at {self.pos}")
            self.pos += 3
            self._space(newlines=True)
            self._define(self.rule_id(name))
            self._space(newlines=True)

    def rule_id(self, name: str) -> int:
        if name not in self._ids:
            self._ids[name] = len(self.rules)
            self.rules.append([])
        return self._ids[name]

    def undefined(self) -> str:
        return next(name for name, rule in self._ids.items() if not self.rules[rule])

    def _new_rule(self, alternatives: list[list[Element]]) -> int:
        rule = len(self.rules)
        self.rules.append([])
        for alt in alternatives:
            self.rules[rule].append(len(self.alternatives))
            self.alternatives.append(tuple(alt))
        return rule

    def _define(self, rule: int) -> None:
        if self.rules[rule]:
            raise GrammarSyntaxError(f"rule defined twice at {self.pos}")
        for alt in self._alternates():
            self.rules[rule].append(len(self.alternatives))
            self.alternatives.append(tuple(alt))

    def _alternates(self) -> list[list[Element]]:
        """One rule's body. Groups nest up to the converter's limit (a thousand deep): they are kept on
        a list rather than parsed by recursion."""
        text = self.text
        outer: list[tuple[list[list[Element]], list[Element], int]] = []  # the groups around this one
        alts: list[list[Element]] = []
        out: list[Element] = []
        last = 0  # where the last symbol starts in `out`, for a repetition
        while True:
            self._space(newlines=bool(outer))  # a newline ends a rule, except inside a group
            char = text[self.pos] if self.pos < len(text) else ""
            if char == '"':
                self.pos += 1
                last = len(out)
                while self.pos < len(text) and text[self.pos] != '"':
                    cp = self._char()
                    out.append(Chars(((cp, cp),)))
                self._expect('"')
            elif char == "[":
                self.pos += 1
                last = len(out)
                out.append(self._class())
            elif char == ".":
                self.pos += 1
                last = len(out)
                out.append(Chars(((0, 0x10FFFF),)))
            elif char == "(":
                self.pos += 1
                outer.append((alts, out, len(out)))
                alts, out, last = [], [], 0
            elif char == ")" and outer:
                self.pos += 1
                group = self._new_rule([*alts, out])
                alts, out, last = outer.pop()
                out.append(group)
            elif char == "|":
                self.pos += 1
                alts.append(out)
                out, last = [], 0
                self._space(newlines=True)
            elif char and char in "*+?{":
                symbol = out[last:]
                del out[last:]
                out += self._repetition(symbol)
            elif char and _is_name_char(char):
                last = len(out)
                out.append(self.rule_id(self._name()))
            else:
                break
        if outer:
            raise GrammarSyntaxError(f"unclosed group at {self.pos}")
        return [*alts, out]

    def _repetition(self, symbol: list[Element]) -> list[Element]:
        if not symbol:
            raise GrammarSyntaxError(f"a repetition without a symbol at {self.pos}")
        char = self.text[self.pos]
        self.pos += 1
        low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}.get(char, (0, 0))
        if char == "{":
            low, high = self._bounds()
        out = symbol * low
        if high is None:
            star = self._new_rule([[], []])  # star ::= symbol star | (empty)
            self.alternatives[self.rules[star][0]] = (*symbol, star)
            return [*out, star]
        tail: list[Element] = []
        for _ in range(high - low):  # nested optionals: opt ::= symbol opt | (empty)
            tail = [self._new_rule([[*symbol, *tail], []])]
        return out + tail

    def _bounds(self) -> tuple[int, int | None]:
        close = self.text.find("}", self.pos)
        if close < 0:
            raise GrammarSyntaxError(f"unclosed repetition at {self.pos}")
        body, self.pos = self.text[self.pos : close], close + 1
        try:
            if "," not in body:
                return int(body), int(body)
            low, high = body.split(",", 1)
            return int(low), int(high) if high.strip() else None
        except ValueError:
            raise GrammarSyntaxError(f"bad repetition bounds {{{body}}}") from None

    def _class(self) -> Chars:
        text = self.text
        negated = text.startswith("^", self.pos)
        if negated:
            self.pos += 1
        ranges = []
        while self.pos < len(text) and text[self.pos] != "]":
            low = self._char()
            high = low
            if text.startswith("-", self.pos) and self.pos + 1 < len(text) and text[self.pos + 1] != "]":
                self.pos += 1
                high = self._char()
            ranges.append((low, high))
        self._expect("]")
        return Chars(tuple(ranges), negated)

    def _char(self) -> int:
        text = self.text
        if self.pos >= len(text):
            raise GrammarSyntaxError("unexpected end of grammar")
        char = text[self.pos]
        self.pos += 1
        if char != "\\":
            return ord(char)
        escape = text[self.pos]
        self.pos += 1
        digits = {"x": 2, "u": 4, "U": 8}.get(escape)
        if digits is not None:
            code, self.pos = text[self.pos : self.pos + digits], self.pos + digits
            return int(code, 16)
        simple = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}
        if escape not in simple:
            raise GrammarSyntaxError(f"unknown escape \\{escape} at {self.pos}")
        return ord(simple[escape])

    def _name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and _is_name_char(self.text[self.pos]):
            self.pos += 1
        if start == self.pos:
            raise GrammarSyntaxError(f"expected a rule name at {start}")
        return self.text[start : self.pos]

    def _expect(self, char: str) -> None:
        if not self.text.startswith(char, self.pos):
            raise GrammarSyntaxError(f"expected {char!r} at {self.pos}")
        self.pos += 1

    def _space(self, newlines: bool) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "#":
                while self.pos < len(text) and text[self.pos] not in "\r\n":
                    self.pos += 1
            elif char in " \t" or (newlines and char in "\r\n"):
                self.pos += 1
            else:
                break


def _is_name_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char in "-_")
