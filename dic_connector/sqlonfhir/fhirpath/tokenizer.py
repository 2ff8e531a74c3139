"""FHIRPath lexer: expression text to a list of tokens.

Follows the lexical grammar of FHIRPath N1 (http://hl7.org/fhirpath/N1/grammar.html):
string literals in single quotes with ``\\`` escapes, numbers, date/time literals after ``@``,
identifiers (plain or in backticks), ``$this``/``$index``/``$total``, external constants
(``%name``, ``%`name```, ``%'name'``), comments, and the operator symbols. Keywords (``and``,
``div``, ``true`` ...) come out as identifiers; the parser decides by position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from dic_connector.errors import FhirPathError


class Kind(StrEnum):
    """Token kinds."""

    STRING = "string"  #: '...' literal, value unescaped
    NUMBER = "number"  #: 12, 1.5 (text kept so decimal precision is not lost)
    LONG = "long"  #: 12L
    DATETIME = "datetime"  #: @2020-01-01T10:00 (value without the @)
    TIME = "time"  #: @T10:00 (value without the @T)
    IDENT = "ident"  #: name or `quoted name`
    SPECIAL = "special"  #: $this, $index, $total
    EXTERNAL = "external"  #: %name (value without the %)
    OP = "op"  #: punctuation and operator symbols
    END = "end"  #: end of input


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token and its offset in the expression."""

    kind: Kind
    value: str
    pos: int
    quoted: bool = False


_DATE = r"\d{4}(?:-\d{2}(?:-\d{2})?)?"
_TIME = r"\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?"
_TZ = r"(?:Z|[+-]\d{2}:\d{2})"
_PATTERNS: tuple[tuple[Kind | None, re.Pattern[str]], ...] = (
    (None, re.compile(r"\s+|//[^\n]*|/\*.*?\*/", re.S)),
    (Kind.TIME, re.compile(rf"@T({_TIME})")),
    (Kind.DATETIME, re.compile(rf"@({_DATE}(?:T(?:{_TIME})?{_TZ}?)?)")),
    (Kind.LONG, re.compile(r"(\d+)L")),
    (Kind.NUMBER, re.compile(r"(\d+(?:\.\d+)?)")),
    (Kind.SPECIAL, re.compile(r"\$(this|index|total)\b")),
    (Kind.IDENT, re.compile(r"([A-Za-z_][A-Za-z0-9_]*)")),
    (Kind.OP, re.compile(r"(<=|>=|!=|!~|[-+*/&|=~<>()\[\]{},.])")),
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n",
            "r": "\r", "t": "\t"}


def _quoted(text: str, start: int, quote: str) -> tuple[str, int]:
    """Unescape a quoted string starting after its opening quote; return (value, end)."""
    out: list[str] = []
    i = start
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            if nxt not in _ESCAPES:
                raise FhirPathError(f"invalid escape at offset {i} in {text!r}")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise FhirPathError(f"unterminated {quote} at offset {start - 1} in {text!r}")


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with one END token; FhirPathError on bad input."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch in "'`":
            value, end = _quoted(text, pos + 1, ch)
            kind = Kind.STRING if ch == "'" else Kind.IDENT
            tokens.append(Token(kind, value, pos, quoted=ch == "`"))
            pos = end
            continue
        if ch == "%":
            nxt = text[pos + 1 : pos + 2]
            if nxt in ("'", "`"):
                value, end = _quoted(text, pos + 2, nxt)
            else:
                match = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, pos + 1)
                if match is None:
                    raise FhirPathError(f"bad external constant at offset {pos} in {text!r}")
                value, end = match.group(0), match.end()
            tokens.append(Token(Kind.EXTERNAL, value, pos))
            pos = end
            continue
        for token_kind, pattern in _PATTERNS:
            match = pattern.match(text, pos)
            if match is None:
                continue
            if token_kind is not None:
                tokens.append(Token(token_kind, match.group(1), pos))
            pos = match.end()
            break
        else:
            raise FhirPathError(f"unexpected character {ch!r} at offset {pos} in {text!r}")
    tokens.append(Token(Kind.END, "", len(text)))
    return tokens
