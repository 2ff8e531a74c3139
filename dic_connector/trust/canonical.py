"""Canonical JSON: one byte string per JSON value, so that hashes and signatures are stable.

The audit chain hashes, and data owners sign, the *canonical* serialisation of a JSON value.
We follow the JSON Canonicalization Scheme (JCS, RFC 8785, https://www.rfc-editor.org/rfc/rfc8785)
for the subset of JSON the service produces:

- object members sorted by their names compared as UTF-16 code units (RFC 8785 §3.2.3),
  no insignificant whitespace, ``,`` and ``:`` as separators (§3.2.1);
- strings escaped minimally: ``"``, ``\\`` and the control characters U+0000..U+001F only,
  with the short forms ``\\b \\f \\n \\r \\t`` and lowercase ``\\u00xx`` otherwise (§3.2.2.2);
  everything else is emitted as UTF-8 (§3.2.4); lone surrogates are refused;
- ``true``, ``false``, ``null``; integers in the I-JSON safe range ``|n| <= 2**53 - 1``
  (RFC 7493 §2.2).

Where we deviate: **floating-point numbers are refused** rather than serialised with the
ECMAScript ``Number.prototype.toString`` algorithm of §3.2.2.3, because nothing we hash or sign
needs them (counts, identifiers, names, thresholds are integers or strings) and a partial
implementation of that algorithm would silently disagree with other JCS implementations.
Booleans are not integers here, although Python's ``bool`` subclasses ``int``.

:func:`strict_loads` is the one parser for JSON that comes from outside (API bodies, signed
payloads): UTF-8 only, no lone surrogates, no ``NaN``, bounded nesting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from dic_connector.errors import CanonicalJSONError

MAX_SAFE_INTEGER = 2**53 - 1
#: Deepest nesting of arrays and objects accepted from outside (bodies, signed payloads).
MAX_DEPTH = 32


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON from outside, refusing what the standard parser lets through.

    UTF-8 only (invalid bytes refused), no ``NaN``/``Infinity``, no lone surrogates in any
    string or name (RFC 8259 §8.2; they cannot be stored or canonicalised), nesting of at
    most ``max_depth``. Every refusal is a :class:`ValueError` saying what was wrong, never
    a ``RecursionError`` (Python's parser recurses once per level).
    """
    try:
        decoded = text.decode("utf-8") if isinstance(text, bytes) else text
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8") from None
    try:
        value = json.loads(decoded, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a JSON string holds a lone surrogate") from None
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise ValueError(f"JSON nested deeper than {max_depth} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return value



def _string(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalJSONError("string contains a lone surrogate") from exc
    return json.dumps(value, ensure_ascii=False)


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be", errors="surrogatepass")


def _serialise(value: Any, out: list[str], path: str) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalJSONError(f"{path}: integer outside the I-JSON safe range")
        out.append(str(int(value)))
    elif isinstance(value, float):
        raise CanonicalJSONError(f"{path}: floating-point numbers are not canonicalised")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, Mapping):
        names = list(value.keys())
        if not all(isinstance(name, str) for name in names):
            raise CanonicalJSONError(f"{path}: object member names must be strings")
        out.append("{")
        for i, name in enumerate(sorted(names, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(_string(name))
            out.append(":")
            _serialise(value[name], out, f"{path}.{name}")
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _serialise(item, out, f"{path}[{i}]")
        out.append("]")
    else:
        raise CanonicalJSONError(f"{path}: unsupported type {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """The RFC 8785 canonical text of ``value`` (see the module docstring for the subset)."""
    out: list[str] = []
    _serialise(value, out, "$")
    return "".join(out)


def canonical_bytes(value: Any) -> bytes:
    """UTF-8 bytes of :func:`canonical_json`; this is what is hashed and signed."""
    return canonical_json(value).encode("utf-8")
