"""FHIRPath parser: tokens to an immutable abstract syntax tree.

A Pratt (precedence-climbing) parser over the FHIRPath N1 grammar
(http://hl7.org/fhirpath/N1/grammar.html), operator precedence from
http://hl7.org/fhirpath/N1/#operator-precedence (high to low): ``.`` and ``[]``; unary ``+ -``;
``* / div mod``; ``+ - &``; ``is as``; ``|``; ``< > <= >=``; ``= ~ != !~``; ``in contains``;
``and``; ``or xor``; ``implies``. All binary operators associate to the left.

We parse ourselves rather than walking fhirpathpy's ANTLR tree because the compiler needs a
small typed tree it can pattern-match (``value.ofType(Quantity)`` becomes one dictionary
lookup), and because the ANTLR runtime costs ~1 ms per expression, which adds up over the many
expressions of a mapping file. The compiler hands expressions it does not support (not ones
this parser rejects) to fhirpathpy whole; syntax errors are always errors, see the package
docstring for why.
"""

from __future__ import annotations

from dataclasses import dataclass

from dic_connector.errors import FhirPathError
from dic_connector.sqlonfhir.fhirpath.tokenizer import Kind, Token, tokenize


@dataclass(frozen=True, slots=True)
class Literal:
    """A literal; ``type`` is a System type name, e.g. ``System.Integer``."""

    value: object
    type: str


@dataclass(frozen=True, slots=True)
class Empty:
    """The empty collection ``{}``."""


@dataclass(frozen=True, slots=True)
class Member:
    """``name`` navigated from ``base`` (``None``: from the input focus)."""

    base: Node | None
    name: str


@dataclass(frozen=True, slots=True)
class Call:
    """Function ``name(args)`` invoked on ``base`` (``None``: on the input focus)."""

    base: Node | None
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Index:
    """``base[index]``."""

    base: Node
    index: Node


@dataclass(frozen=True, slots=True)
class Variable:
    """``$this``, ``$index`` or ``$total``."""

    name: str


@dataclass(frozen=True, slots=True)
class External:
    """``%name``: a ViewDefinition constant, ``%rowIndex``, ``%resource`` ..."""

    name: str


@dataclass(frozen=True, slots=True)
class Unary:
    """``+x`` or ``-x``."""

    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    """``left op right`` for every infix operator except ``is``/``as``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class TypeOp:
    """``operand is Type`` / ``operand as Type``."""

    op: str
    operand: Node
    type_name: str


Node = Literal | Empty | Member | Call | Index | Variable | External | Unary | Binary | TypeOp

_BINARY_POWER: dict[str, int] = {
    "implies": 10, "or": 20, "xor": 20, "and": 30, "in": 40, "contains": 40,
    "=": 50, "~": 50, "!=": 50, "!~": 50, "<": 60, ">": 60, "<=": 60, ">=": 60,
    "|": 70, "is": 80, "as": 80, "+": 90, "-": 90, "&": 90,
    "*": 100, "/": 100, "div": 100, "mod": 100,
}
_WORD_OPERATORS = frozenset(k for k in _BINARY_POWER if k.isalpha())
_UNARY_POWER = 110
_CALENDAR_UNITS = frozenset({
    "year", "years", "month", "months", "week", "weeks", "day", "days", "hour", "hours",
    "minute", "minutes", "second", "seconds", "millisecond", "milliseconds",
})


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def next(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def fail(self, token: Token, what: str) -> FhirPathError:
        return FhirPathError(f"{what} at offset {token.pos} in {self.text!r}")

    def expect_op(self, symbol: str) -> None:
        token = self.next()
        if token.kind is not Kind.OP or token.value != symbol:
            raise self.fail(token, f"expected {symbol!r}")

    def operator(self, token: Token) -> str | None:
        if token.kind is Kind.OP and token.value in _BINARY_POWER:
            return token.value
        if token.kind is Kind.IDENT and not token.quoted and token.value in _WORD_OPERATORS:
            return token.value
        return None

    def expression(self, min_power: int = 0) -> Node:
        left = self.prefix()
        while True:
            op = self.operator(self.peek())
            if op is None or _BINARY_POWER[op] <= min_power:
                return left
            self.next()
            if op in ("is", "as"):
                left = TypeOp(op, left, self.type_name())
            else:
                left = Binary(op, left, self.expression(_BINARY_POWER[op]))

    def type_name(self) -> str:
        token = self.next()
        if token.kind is not Kind.IDENT:
            raise self.fail(token, "expected a type name")
        name = token.value
        if self.peek().kind is Kind.OP and self.peek().value == ".":
            self.next()
            second = self.next()
            if second.kind is not Kind.IDENT:
                raise self.fail(second, "expected a type name")
            name = f"{name}.{second.value}"
        return name

    def prefix(self) -> Node:
        token = self.peek()
        if token.kind is Kind.OP and token.value in ("+", "-"):
            self.next()
            return self.postfix(Unary(token.value, self.expression(_UNARY_POWER)))
        return self.postfix(self.term())

    def term(self) -> Node:
        token = self.next()
        kind, value = token.kind, token.value
        if kind is Kind.STRING:
            return Literal(value, "System.String")
        if kind is Kind.NUMBER:
            return self.number(token)
        if kind is Kind.LONG:
            return Literal(int(value), "System.Long")
        if kind is Kind.DATETIME:
            return Literal(value, "System.DateTime" if "T" in value else "System.Date")
        if kind is Kind.TIME:
            return Literal(value, "System.Time")
        if kind is Kind.SPECIAL:
            return Variable(value)
        if kind is Kind.EXTERNAL:
            return External(value)
        if kind is Kind.OP and value == "(":
            inner = self.expression()
            self.expect_op(")")
            return inner
        if kind is Kind.OP and value == "{":
            self.expect_op("}")
            return Empty()
        if kind is Kind.IDENT:
            if not token.quoted and value in ("true", "false"):
                return Literal(value == "true", "System.Boolean")
            return self.invocation(None, token)
        raise self.fail(token, "unexpected token")

    def number(self, token: Token) -> Node:
        after = self.peek()
        if after.kind is Kind.STRING or (
            after.kind is Kind.IDENT and not after.quoted and after.value in _CALENDAR_UNITS
        ):
            self.next()
            return Literal((token.value, after.value), "System.Quantity")
        if "." in token.value:
            return Literal(token.value, "System.Decimal")
        return Literal(int(token.value), "System.Integer")

    def invocation(self, base: Node | None, name_token: Token) -> Node:
        if name_token.kind is not Kind.IDENT:
            raise self.fail(name_token, "expected a name")
        after = self.peek()
        if after.kind is Kind.OP and after.value == "(" and not name_token.quoted:
            self.next()
            args: list[Node] = []
            if not (self.peek().kind is Kind.OP and self.peek().value == ")"):
                args.append(self.expression())
                while self.peek().kind is Kind.OP and self.peek().value == ",":
                    self.next()
                    args.append(self.expression())
            self.expect_op(")")
            return Call(base, name_token.value, tuple(args))
        return Member(base, name_token.value)

    def postfix(self, node: Node) -> Node:
        while True:
            token = self.peek()
            if token.kind is not Kind.OP:
                return node
            if token.value == ".":
                self.next()
                nxt = self.next()
                if nxt.kind is Kind.SPECIAL:
                    raise self.fail(nxt, "unexpected variable after '.'")
                node = self.invocation(node, nxt)
            elif token.value == "[":
                self.next()
                index = self.expression()
                self.expect_op("]")
                node = Index(node, index)
            else:
                return node


def parse(text: str) -> Node:
    """Parse one FHIRPath expression; FhirPathError names the offset of the problem."""
    if not isinstance(text, str) or not text.strip():
        raise FhirPathError("empty FHIRPath expression")
    parser = _Parser(text)
    node = parser.expression()
    end = parser.peek()
    if end.kind is not Kind.END:
        raise parser.fail(end, "unexpected trailing input")
    return node
