"""A Lark grammar (a custom tool's `format: {"type": "grammar", "syntax": "lark"}`) as a regular expression.

OpenAI's custom tools constrain their free-form input with a Lark grammar (Codex's `apply_patch` is one).
The grammars clients send describe a regular language more often than not: rules and terminals that
refer to each other without recursion, string literals, `/regex/` terminals, `"a".."z"` ranges, groups,
`[optional]`, `?`, `*`, `+`, `~ n` and `~ n..m`, and `%import common.NAME`. Such a grammar is inlined,
from `start`, into one anchored regular expression, which then takes the pattern path of the grammar
compiler (a JSON string's pattern). What cannot be expressed is refused by name: recursion (a
context-free language), `%ignore` (the input is matched as written), flags on a literal or a regex, and
`%declare`. Lark's `/regex/` terminals are Python-flavoured; the pattern compiler refuses what it cannot
enforce (lookarounds, backreferences, ...).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

MAX_GRAMMAR_CHARS = 50_000
MAX_REGEX_CHARS = 100_000  # inlining can multiply: past this the grammar is refused, not cut

# Lark's common.lark, the terminals grammars import most, as regular expressions.
COMMON = {
    "DIGIT": "[0-9]",
    "HEXDIGIT": "[0-9a-fA-F]",
    "INT": "[0-9]+",
    "SIGNED_INT": "[+-]?[0-9]+",
    "DECIMAL": r"(?:[0-9]+\.[0-9]*|\.[0-9]+)",
    "FLOAT": r"(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)",
    "SIGNED_FLOAT": r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)",
    "NUMBER": r"(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)",
    "SIGNED_NUMBER": r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)",
    "ESCAPED_STRING": r'"(?:[^"\\\n]|\\.)*"',
    "LCASE_LETTER": "[a-z]",
    "UCASE_LETTER": "[A-Z]",
    "LETTER": "[a-zA-Z]",
    "WORD": "[a-zA-Z]+",
    "CNAME": "[_a-zA-Z][_a-zA-Z0-9]*",
    "WS_INLINE": "[ \\t]+",
    "WS": "[ \\t\\f\\r\\n]+",
    "CR": "\\r",
    "LF": "\\n",
    "NEWLINE": "(?:\\r?\\n)+",
}

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\f\r]+|\\\n)
  | (?P<comment>//[^\n]*)
  | (?P<newline>\n)
  | (?P<string>"(?:[^"\\\n]|\\.)*"i?)
  | (?P<regex>/(?:[^/\\\n]|\\.)+/[imslux]*)
  | (?P<directive>%[a-z]+)
  | (?P<arrow>->)
  | (?P<range>\.\.)
  | (?P<priority>\.-?[0-9]+)
  | (?P<number>[0-9]+)
  | (?P<name>[?!]?[_a-zA-Z][_a-zA-Z0-9]*(?:\.[_a-zA-Z][_a-zA-Z0-9]*)*)
  | (?P<op>[:|()\[\]?*+~,])
    """,
    re.VERBOSE,
)


class LarkError(ValueError):
    """A Lark grammar that is malformed or cannot be enforced as a regular expression (the message says why)."""


@dataclass
class _Token:
    kind: str
    text: str
    line: int


def _tokens(text: str) -> list[_Token]:
    out, pos, line = [], 0, 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise LarkError(f"line {line}: unexpected {text[pos]!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            out.append(_Token(kind, match.group(), line))
        line += match.group().count("\n")
        pos = match.end()
    out.append(_Token("newline", "\n", line))
    return out


class _Parser:
    """Definitions (name -> its expansions as a regex source) of the Lark grammar's subset above."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.definitions: dict[str, list[_Token]] = {}
        self.imports: dict[str, str] = {}

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> None:
        while self.pos < len(self.tokens):
            token = self.take()
            if token.kind == "newline":
                continue
            if token.kind == "directive":
                self.directive(token)
            elif token.kind == "name":
                self.definition(token)
            else:
                raise LarkError(f"line {token.line}: a rule or terminal definition expected, not {token.text!r}")

    def directive(self, token: _Token) -> None:
        body = self.rest_of_line()
        if token.text != "%import":
            raise LarkError(f"line {token.line}: {token.text} is not served (the input is matched as written)")
        words = [t.text for t in body if t.kind == "name"]
        if words[:1] == ["common"] and any(t.text == "(" for t in body):  # %import common (A, B)
            pairs = [(name, name) for name in words[1:]]
        elif words and words[0].startswith("common."):  # %import common.A, or %import common.A -> B
            name = words[0].removeprefix("common.")
            pairs = [(name, words[-1] if any(t.kind == "arrow" for t in body) else name)]
        else:
            raise LarkError(f"line {token.line}: only %import common.NAME is served")
        for name, alias in pairs:
            if name not in COMMON:
                raise LarkError(f"line {token.line}: common.{name} is not served ({', '.join(sorted(COMMON))} are)")
            self.imports[alias] = COMMON[name]

    def rest_of_line(self) -> list[_Token]:
        out = []
        while self.peek().kind != "newline":
            out.append(self.take())
        return out

    def definition(self, name: _Token) -> None:
        if self.peek().kind == "priority":
            self.take()
        colon = self.take()
        if colon.text != ":":
            raise LarkError(f"line {name.line}: ':' expected after {name.text}")
        body: list[_Token] = []
        while True:  # a definition goes on over lines that start with '|'
            body += self.rest_of_line()
            ahead = self.pos
            while ahead < len(self.tokens) and self.tokens[ahead].kind == "newline":
                ahead += 1
            if ahead < len(self.tokens) and self.tokens[ahead].text == "|":
                self.pos = ahead
                continue
            break
        key = name.text.lstrip("?!")
        if key in self.definitions:
            raise LarkError(f"line {name.line}: {key} is defined twice")
        self.definitions[key] = body


class _Inliner:
    def __init__(self, parser: _Parser) -> None:
        self.definitions = parser.definitions
        self.imports = parser.imports
        self.done: dict[str, str] = {}
        self.stack: list[str] = []
        self.tokens: list[_Token] = []  # the definition being read, and where
        self.pos = 0

    def name(self, name: str, line: int) -> str:
        if name in self.done:
            return self.done[name]
        if name in self.stack:
            path = " -> ".join([*self.stack[self.stack.index(name) :], name])
            raise LarkError(
                f"{name} is recursive ({path}): a recursive Lark grammar is not a regular language, and only "
                "regular ones are enforced; write the repetition with + or * instead"
            )
        if name not in self.definitions:
            if name in self.imports:
                return self.imports[name]
            raise LarkError(f"line {line}: {name} is not defined")
        self.stack.append(name)
        tokens = self.definitions[name]
        saved = self.tokens, self.pos
        self.tokens, self.pos = tokens, 0
        regex = self.alternatives()
        if self.pos != len(tokens):
            raise LarkError(f"line {tokens[self.pos].line}: unexpected {tokens[self.pos].text!r} in {name}")
        self.tokens, self.pos = saved
        self.stack.pop()
        self.done[name] = regex
        if len(regex) > MAX_REGEX_CHARS:
            raise LarkError(f"the grammar expands to more than {MAX_REGEX_CHARS} characters of pattern")
        return regex

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def alternatives(self) -> str:
        options = [self.sequence()]
        while (token := self.peek()) is not None and token.text == "|":
            self.pos += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"

    def sequence(self) -> str:
        parts = []
        while (token := self.peek()) is not None and token.text not in ("|", ")", "]"):
            if token.kind == "arrow":  # an alias names the tree node: nothing to match
                self.pos += 2
                continue
            parts.append(self.repeated())
        return "".join(parts)

    def repeated(self) -> str:
        atom = self.atom()
        token = self.peek()
        if token is None:
            return atom
        if token.text in ("?", "*", "+"):
            self.pos += 1
            return f"(?:{atom}){token.text}"
        if token.text == "~":
            self.pos += 1
            low = self.number()
            if (after := self.peek()) is not None and after.kind == "range":
                self.pos += 1
                return f"(?:{atom}){{{low},{self.number()}}}"
            return f"(?:{atom}){{{low}}}"
        return atom

    def number(self) -> int:
        token = self.peek()
        if token is None or token.kind != "number":
            raise LarkError("a number expected after ~")
        self.pos += 1
        return int(token.text)

    def atom(self) -> str:
        token = self.peek()
        assert token is not None
        self.pos += 1
        if token.text in ("(", "["):
            inner = self.alternatives()
            close = self.peek()
            if close is None or close.text != (")" if token.text == "(" else "]"):
                raise LarkError(f"line {token.line}: {token.text!r} is not closed")
            self.pos += 1
            return f"(?:{inner})" if token.text == "(" else f"(?:{inner})?"
        if token.kind == "string":
            text = _literal(token)
            if (after := self.peek()) is not None and after.kind == "range":
                self.pos += 1
                end = self.peek()
                if end is None or end.kind != "string":
                    raise LarkError(f"line {token.line}: a range needs two one-character strings")
                self.pos += 1
                last = _literal(end)
                if len(text) != 1 or len(last) != 1 or text > last:
                    raise LarkError(f"line {token.line}: a range needs two one-character strings in order")
                return f"[{_class_char(text)}-{_class_char(last)}]"
            return "".join(_escaped(c) for c in text)
        if token.kind == "regex":
            body, flags = token.text[1:].rsplit("/", 1)
            if flags:
                raise LarkError(f"line {token.line}: regex flags ({flags}) are not served")
            return f"(?:{body.replace(chr(92) + '/', '/')})"
        if token.kind == "name":
            return f"(?:{self.name(token.text.lstrip('?!'), token.line)})"
        raise LarkError(f"line {token.line}: unexpected {token.text!r}")


def _literal(token: _Token) -> str:
    if token.text.endswith("i"):
        raise LarkError(f'line {token.line}: case-insensitive strings ("..."i) are not served')
    try:
        value = ast.literal_eval(token.text)
    except (SyntaxError, ValueError) as exc:
        raise LarkError(f"line {token.line}: a malformed string {token.text}: {exc}") from None
    return str(value)


def _escaped(char: str) -> str:
    """One literal character in ECMA-262 syntax (which the pattern compiler reads)."""
    if char in "\\^$.|?*+()[]{}/":
        return "\\" + char
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(char, f"\\x{ord(char):02x}")
    return char


def _class_char(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else _escaped(char)


def to_regex(grammar: str) -> str:
    """The anchored regular expression that matches exactly the texts `grammar` (from `start`) derives."""
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise LarkError(f"the grammar is longer than {MAX_GRAMMAR_CHARS} characters")
    parser = _Parser(grammar)
    parser.parse()
    if "start" not in parser.definitions:
        raise LarkError("the grammar has no start rule")
    return "^" + _Inliner(parser).name("start", 1) + "$"
