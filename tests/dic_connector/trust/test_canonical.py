"""Canonical JSON against the examples of RFC 8785 and the subset we refuse."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dic_connector.errors import CanonicalJSONError
from dic_connector.trust.canonical import canonical_bytes, canonical_json


def test_rfc8785_sorting_example_uses_utf16_code_units() -> None:
    """RFC 8785 §3.2.3: the emoji (a surrogate pair, D83D...) sorts before U+FB33."""
    value = {"\u20ac": "Euro Sign", "\r": "Carriage Return",
             "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One",
             "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control",
             "\u00f6": "Latin Small Letter O With Diaeresis"}
    order = [v for _, v in json.loads(canonical_json(value), object_pairs_hook=list)]
    assert order == ["Carriage Return", "One", "Control", "Latin Small Letter O With Diaeresis",
                     "Euro Sign", "Emoji: Grinning Face", "Hebrew Letter Dalet With Dagesh"]


def test_rfc8785_string_escaping_example() -> None:
    """RFC 8785 §3.2.2.2: only quote, backslash and controls are escaped, lowercase hex."""
    assert canonical_json("€$\x0f\nA'B\"\\\\\"/") == r'"€$\u000f\nA' + "'" + r'B\"\\\\\"/"'


def test_structure_has_no_whitespace_and_utf8_bytes() -> None:
    value = {"b": [1, True, None, {"z": "ü", "a": False}], "a": -(2**53 - 1)}
    assert canonical_json(value) == '{"a":-9007199254740991,"b":[1,true,null,{"a":false,"z":"ü"}]}'
    assert canonical_bytes({"z": "ü"}) == b'{"z":"\xc3\xbc"}'


@pytest.mark.parametrize("bad", [1.5, 2**53, {1: "x"}, b"raw", {"s": "\ud800"}, {1, 2}])
def test_outside_the_subset_is_refused(bad: object) -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_json(bad)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_json)
def test_canonical_form_parses_back_and_is_a_fixed_point(value: object) -> None:
    text = canonical_json(value)
    assert json.loads(text) == value
    assert canonical_json(json.loads(text)) == text
