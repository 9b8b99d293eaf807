"""``when:`` conditions: a tiny, safe expression language over host facts (nothing is eval'ed).

Grammar::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := "(" expr ")" | operand [OP operand]
    operand    := path | literal
    OP         := == | != | < | <= | > | >= | in | not in
    path       := name ("." name)*          e.g. docker.active, os.id, docker.server_version
    literal    := 'text' | "text" | number | true | false | null | [literal, ...]

A bare path is true when its value is truthy. A path that does not exist evaluates as None. When both
sides of a comparison look like versions ("20.10.24+dfsg1", "20.10", "12") they compare as versions. Values
that cannot be ordered against each other (None < 3) make the comparison false rather than fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)(?:[-+~].*)?$")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>-?\d+(?:\.\d+)?(?![\w.]))
      | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<=|>=|<|>|=)
      | (?P<punct>[()\[\],])
      | (?P<word>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null", "True", "False", "None"}
_CONSTANTS: dict[str, Any] = {"true": True, "True": True, "false": False, "False": False, "null": None,
                              "None": None}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int  # 0-based offset in the expression


@dataclass(frozen=True)
class _Path:
    parts: tuple[str, ...]

    def value(self, facts: Any) -> Any:
        node = facts
        for part in self.parts:
            if isinstance(node, Mapping):
                node = node.get(part)
            elif isinstance(node, Sequence) and not isinstance(node, str) and part.isdigit():
                node = node[int(part)] if int(part) < len(node) else None
            else:
                node = getattr(node, part, None)
            if node is None:
                return None
        return node


@dataclass(frozen=True)
class _Lit:
    value: Any

_Operand = _Path | _Lit


def _get(operand: _Operand, facts: Any) -> Any:
    return operand.value(facts) if isinstance(operand, _Path) else operand.value


@dataclass(frozen=True)
class _Truthy:
    path: _Path

    def eval(self, facts: Any) -> bool:
        return bool(self.path.value(facts))


@dataclass(frozen=True)
class _Compare:
    left: _Operand
    op: str
    right: _Operand

    def eval(self, facts: Any) -> bool:
        return _compare(_get(self.left, facts), self.op, _get(self.right, facts))


@dataclass(frozen=True)
class _Not:
    inner: _Node

    def eval(self, facts: Any) -> bool:
        return not self.inner.eval(facts)


@dataclass(frozen=True)
class _BoolOp:
    op: str  # "and" | "or"
    items: tuple[_Node, ...]

    def eval(self, facts: Any) -> bool:
        if self.op == "and":
            return all(i.eval(facts) for i in self.items)
        return any(i.eval(facts) for i in self.items)


_Node = _Truthy | _Compare | _Not | _BoolOp


class Condition:
    """A parsed ``when`` expression. ``evaluate(facts)`` never raises for missing or odd facts."""

    def __init__(self, source: str, node: _Node) -> None:
        self.source = source
        self._node = node

    def evaluate(self, facts: Mapping[str, Any]) -> bool:
        return self._node.eval(facts)

    def __str__(self) -> str:
        return self.source

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"


def parse(expr: str) -> Condition:
    """Parse ``expr``; raises ValueError saying what is wrong and where (1-based column)."""
    if not isinstance(expr, str):
        raise ValueError(f"a condition must be text, got {expr!r}")
    if not expr.strip():
        raise ValueError("empty condition")
    parser = _Parser(expr, _tokenize(expr))
    node = parser.expr()
    if not parser.done():
        tok = parser.peek()
        raise _error(expr, tok.pos, f"unexpected {tok.text!r} after a complete condition",
                     "join conditions with 'and' / 'or'")
    return Condition(expr, node)


def _error(expr: str, pos: int, message: str, fix: str = "") -> ValueError:
    text = f"{message} at column {pos + 1} of {expr!r}"
    if fix:
        text += f"; {fix}"
    return ValueError(text)


def _tokenize(expr: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN.match(expr, pos)
        if m is None or m.end() == pos:
            start = len(expr) - len(expr[pos:].lstrip())
            ch = expr[start]
            if ch in "\"'":
                raise _error(expr, start, "unterminated string", f"close it with {ch}")
            if ch.isdigit():
                raise _error(expr, start, f"cannot read {expr[start:].split()[0]!r}",
                             'write versions and other dotted values in quotes, e.g. "20.10"')
            raise _error(expr, start, f"unexpected character {ch!r}",
                         "conditions look like: docker.active, not docker.active, os.id == \"debian\"")
        kind = m.lastgroup or ""
        start = m.start(kind)
        tokens.append(_Tok(kind, m.group(kind), start))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, expr: str, tokens: list[_Tok]) -> None:
        self.src = expr
        self.toks = tokens
        self.i = 0

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def peek(self, ahead: int = 0) -> _Tok:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else _Tok("end", "end of condition", len(self.src))

    def take(self) -> _Tok:
        tok = self.peek()
        self.i += 1
        return tok

    def is_word(self, word: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.kind == "word" and tok.text == word

    def expr(self) -> _Node:
        items = [self.and_()]
        while self.is_word("or"):
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else _BoolOp("or", tuple(items))

    def and_(self) -> _Node:
        items = [self.not_()]
        while self.is_word("and"):
            self.take()
            items.append(self.not_())
        return items[0] if len(items) == 1 else _BoolOp("and", tuple(items))

    def not_(self) -> _Node:
        if self.is_word("not"):
            self.take()
            return _Not(self.not_())
        return self.comparison()

    def comparison(self) -> _Node:
        if self.peek().text == "(":
            self.take()
            node = self.expr()
            close = self.take()
            if close.text != ")":
                raise _error(self.src, close.pos, f"expected ')' but found {close.text!r}", "close the parenthesis")
            return node
        start = self.peek()
        left = self.operand()
        op = self.operator()
        if op is None:
            if isinstance(left, _Lit):
                raise _error(self.src, start.pos, f"{start.text!r} is a constant, not a fact",
                             "compare a fact with it, e.g. docker.active == true")
            return _Truthy(left)
        right_tok = self.peek()
        right = self.operand()
        if isinstance(left, _Lit) and isinstance(right, _Lit):
            raise _error(self.src, start.pos, "both sides are constants",
                         "one side must be a fact path such as docker.server_version")
        if op in ("in", "not in") and isinstance(right, _Lit) and not isinstance(right.value, (list, str)):
            raise _error(self.src, right_tok.pos, f"'{op}' needs a list or a string on its right",
                         "write e.g. os.id in [\"debian\", \"ubuntu\"]")
        return _Compare(left, op, right)

    def operator(self) -> str | None:
        tok = self.peek()
        if tok.kind == "op":
            if tok.text == "=":
                raise _error(self.src, tok.pos, "'=' is not an operator", "use '==' to compare")
            self.take()
            return tok.text
        if self.is_word("in"):
            self.take()
            return "in"
        if self.is_word("not") and self.is_word("in", 1):
            self.take()
            self.take()
            return "not in"
        return None

    def operand(self) -> _Operand:
        tok = self.take()
        if tok.kind == "num":
            return _Lit(float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind == "str":
            return _Lit(_unquote(tok.text))
        if tok.kind == "word":
            if tok.text in _CONSTANTS:
                return _Lit(_CONSTANTS[tok.text])
            if tok.text in _KEYWORDS:
                raise _error(self.src, tok.pos, f"expected a fact or a value but found '{tok.text}'")
            return _Path(tuple(tok.text.split(".")))
        if tok.text == "[":
            return _Lit(self.list_items(tok))
        if tok.kind == "end":
            raise _error(self.src, tok.pos, "condition ends too early", "complete the comparison")
        raise _error(self.src, tok.pos, f"expected a fact or a value but found {tok.text!r}")

    def list_items(self, opening: _Tok) -> list[Any]:
        items: list[Any] = []
        if self.peek().text == "]":
            self.take()
            return items
        while True:
            tok = self.peek()
            item = self.operand()
            if not isinstance(item, _Lit):
                raise _error(self.src, tok.pos, "lists may hold only constants",
                             "quote text items, e.g. [\"debian\", \"ubuntu\"]")
            items.append(item.value)
            sep = self.take()
            if sep.text == "]":
                return items
            if sep.text != ",":
                raise _error(self.src, sep.pos, f"expected ',' or ']' in the list opened at column {opening.pos + 1}",
                             "separate items with commas and close with ]")


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _version(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, str):
        m = _VERSION.match(value.strip())
        if m:
            return tuple(int(p) for p in m.group(1).split("."))
    return None


def _pad(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    n = max(len(a), len(b))
    return a + (0,) * (n - len(a)), b + (0,) * (n - len(b))


def _compare(left: Any, op: str, right: Any) -> bool:
    if op in ("in", "not in"):
        try:
            found = left in right if right is not None else False
        except TypeError:
            found = False
        return found if op == "in" else not found
    lv, rv = _version(left), _version(right)
    if lv is not None and rv is not None:
        left, right = _pad(lv, rv)
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if isinstance(left, bool) or isinstance(right, bool):
        return False
    try:
        if op == "<":
            return bool(left < right)
        if op == "<=":
            return bool(left <= right)
        if op == ">":
            return bool(left > right)
        return bool(left >= right)
    except TypeError:
        return False
