"""Tokenizer and parser: literals, precedence, invocations, and where bad input is reported."""

from __future__ import annotations

import pytest

from dic_connector.errors import FhirPathError
from dic_connector.sqlonfhir.fhirpath import parser as ast
from dic_connector.sqlonfhir.fhirpath.tokenizer import Kind, tokenize


def test_tokens_cover_the_lexical_grammar() -> None:
    kinds = [(t.kind, t.value) for t in tokenize(
        "%`a b`.x and `div` // c\n /* d */ @2020-01-02T10:00Z @T12:30 'it\\'s' 1.50 3L $this")]
    assert kinds == [
        (Kind.EXTERNAL, "a b"), (Kind.OP, "."), (Kind.IDENT, "x"), (Kind.IDENT, "and"),
        (Kind.IDENT, "div"), (Kind.DATETIME, "2020-01-02T10:00Z"), (Kind.TIME, "12:30"),
        (Kind.STRING, "it's"), (Kind.NUMBER, "1.50"), (Kind.LONG, "3"), (Kind.SPECIAL, "this"),
        (Kind.END, ""),
    ]


@pytest.mark.parametrize(("text", "where"), [
    ("@@", "offset 0"), ("name.given[", "offset 11"), ("'open", "offset 0"),
    ("a ! b", "offset 2"), ("%", "offset 0"), ("name.", "offset 5"), ("a b", "offset 2"),
    ("where(", "offset 6"), ("'\\q'", "offset 1"),
])
def test_errors_name_the_offset(text: str, where: str) -> None:
    with pytest.raises(FhirPathError, match=where):
        ast.parse(text)


def test_empty_expression_is_an_error() -> None:
    with pytest.raises(FhirPathError, match="empty"):
        ast.parse("  ")


def test_precedence_follows_the_specification() -> None:
    tree = ast.parse("a or b and c = 1 + 2 * 3")
    assert tree == ast.Binary("or", ast.Member(None, "a"), ast.Binary(
        "and", ast.Member(None, "b"), ast.Binary(
            "=", ast.Member(None, "c"), ast.Binary(
                "+", ast.Literal(1, "System.Integer"), ast.Binary(
                    "*", ast.Literal(2, "System.Integer"), ast.Literal(3, "System.Integer"))))))


def test_left_associativity_and_unary_minus() -> None:
    assert ast.parse("1 - 2 - 3") == ast.Binary("-", ast.Binary(
        "-", ast.Literal(1, "System.Integer"), ast.Literal(2, "System.Integer")),
        ast.Literal(3, "System.Integer"))
    assert ast.parse("-a.b") == ast.Unary("-", ast.Member(ast.Member(None, "a"), "b"))


def test_invocations_indexers_and_type_operators() -> None:
    tree = ast.parse("name.where(use = %u)[0].given.first() is FHIR.string")
    expected_base = ast.Call(ast.Member(ast.Index(ast.Call(
        ast.Member(None, "name"), "where", (ast.Binary(
            "=", ast.Member(None, "use"), ast.External("u")),)),
        ast.Literal(0, "System.Integer")), "given"), "first", ())
    assert tree == ast.TypeOp("is", expected_base, "FHIR.string")


def test_literals() -> None:
    assert ast.parse("true") == ast.Literal(True, "System.Boolean")
    assert ast.parse("1.50") == ast.Literal("1.50", "System.Decimal")
    assert ast.parse("@2020-01") == ast.Literal("2020-01", "System.Date")
    assert ast.parse("@2020-01-01T10:00") == ast.Literal("2020-01-01T10:00", "System.DateTime")
    assert ast.parse("@T10:00") == ast.Literal("10:00", "System.Time")
    assert ast.parse("4 'mg'") == ast.Literal(("4", "mg"), "System.Quantity")
    assert ast.parse("2 days") == ast.Literal(("2", "days"), "System.Quantity")
    assert ast.parse("{}") == ast.Empty()
    assert ast.parse("`div`") == ast.Member(None, "div")
