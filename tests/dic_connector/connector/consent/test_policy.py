"""The consent config section and opt-out files: every error names its key or file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dic_connector.connector.consent.policy import (
    MDAT_SCIENTIFIC_USE,
    MDAT_STORE_PROCESS,
    MII_POLICY_SYSTEM,
    ConsentMode,
    ConsentPolicy,
    parse_consent_policy,
    parse_opt_out_text,
    read_opt_out_file,
)
from dic_connector.errors import ConfigError, SourceError

KEY = "datasets.pilot.consent"


def test_no_section_is_mode_none_with_the_mii_defaults(tmp_path: Path) -> None:
    policy = parse_consent_policy(KEY, None, tmp_path)
    assert policy == ConsentPolicy()
    assert policy.mode is ConsentMode.NONE and not policy.needs_server
    assert policy.required_codes == (MDAT_STORE_PROCESS, MDAT_SCIENTIFIC_USE)
    assert policy.system == MII_POLICY_SYSTEM == "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"
    assert MDAT_SCIENTIFIC_USE == "2.16.840.1.113883.3.1937.777.24.5.3.8"


def test_a_full_section(tmp_path: Path) -> None:
    policy = parse_consent_policy(KEY, {
        "mode": "opt-in", "required_codes": [MDAT_SCIENTIFIC_USE], "system": "urn:x",
        "opt_out_files": ["optout.txt", "/abs/objections.txt"],
        "opt_out_lists": ["List/research-objections", "Group/g.1"]}, tmp_path)
    assert policy == ConsentPolicy(ConsentMode.OPT_IN, (MDAT_SCIENTIFIC_USE,), "urn:x",
                                   (tmp_path / "optout.txt", Path("/abs/objections.txt")),
                                   ("List/research-objections", "Group/g.1"))
    assert policy.needs_server
    assert parse_consent_policy(KEY, {"opt_out_lists": ["List/a"]}, tmp_path).needs_server


@pytest.mark.parametrize(("raw", "message"), [
    ("opt-out", f"Config '{KEY}' has value 'opt-out'. Expected a mapping."),
    ({"mode": "x"}, f"Config '{KEY}.mode' has value 'x'. Expected none, opt-out or opt-in."),
    ({"mode": None}, f"Config '{KEY}.mode' has value None. Expected none, opt-out or opt-in."),
    ({"modus": "opt-in"}, f"Config '{KEY}.modus' is not a known setting. Expected one of mode"),
    ({"required_codes": []}, f"Config '{KEY}.required_codes' is empty."),
    ({"required_codes": "2.16"}, f"Config '{KEY}.required_codes' has value '2.16'. Expected "
                                 "a list of strings."),
    ({"required_codes": ["a", 3]}, f"Config '{KEY}.required_codes.1' has value 3."),
    ({"system": ""}, f"Config '{KEY}.system' has value ''. Expected a non-empty string."),
    ({"opt_out_files": [""]}, f"Config '{KEY}.opt_out_files.0' has value ''."),
    ({"opt_out_lists": ["List/a", "Patient/b"]},
     f"Config '{KEY}.opt_out_lists.1' has value 'Patient/b'. Expected List/<id> or Group/<id>."),
    ({"opt_out_lists": ["List/a b"]}, f"Config '{KEY}.opt_out_lists.0' has value 'List/a b'."),
])
def test_errors_name_the_full_key(tmp_path: Path, raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_consent_policy(KEY, raw, tmp_path)
    assert str(caught.value).startswith(message)


def test_opt_out_text_drops_comments_and_blank_lines() -> None:
    text = "# objections, updated weekly\n\np1\n  p2  \np3 # asked by letter\n\tp-4.x\n#p5\n"
    assert parse_opt_out_text(text) == {"p1", "p2", "p3", "p-4.x"}
    assert parse_opt_out_text("") == frozenset()


def test_opt_out_file_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "optout.txt"
    path.write_bytes(b"\xef\xbb\xbfp1\r\np2\r\n")
    assert read_opt_out_file(path) == {"p1", "p2"}


def test_an_unreadable_opt_out_file_is_a_source_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "gone.txt"
    with pytest.raises(SourceError, match=f"Opt-out file {missing} cannot be read"):
        read_opt_out_file(missing)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"p1\np2\n\xff\xfe\n")
    with pytest.raises(SourceError) as caught:
        read_opt_out_file(binary)
    assert str(caught.value) == f"Opt-out file {binary} is not UTF-8 text (line 3)."
    assert "p1" not in str(caught.value)
