"""The demo report's pieces: Sharemind's timings by function and site count, a question's
timings, and the keys and profiles ``--keep`` leaves (which the CLI's profile loader must
accept)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.client.profile import load_profile
from dic_connector.dev.report import (
    Person,
    Timing,
    chromium_command,
    json_line,
    sharemind,
    spki_sha256,
    timing_json,
    write_access,
)
from dic_connector.trust.signing import load_private_key, public_key_bytes
from dic_connector.vocabulary import Role
from mpc.tls import write_dev_pki


@pytest.mark.parametrize(
    ("analysis", "sites", "expected"),
    [
        ("frequency", 1, ("freq", 0.31)),
        ("frequency", 2, ("freq", 0.38)),
        ("mean", 2, ("mean", 0.82)),
        ("median", 1, ("median", 0.68)),
        ("quantiles", 2, ("quantile", 0.96)),
        ("count", 2, None),
        ("logrank", 2, None),
        ("median", 3, None),
    ],
)
def test_sharemind_timings_are_pilot_md_s_by_function_and_sites(
    analysis: str, sites: int, expected: tuple[str, float] | None
) -> None:
    assert sharemind(analysis, sites) == expected


def test_a_timing_is_reported_next_to_sharemind_s() -> None:
    timed = timing_json(Timing(submitted=10.0, running=12.25, completed=12.5), "median", 2)
    assert timed == {
        "submitted_to_completed_s": 2.5,
        "running_to_completed_s": 0.25,
        "sharemind_function": "median",
        "sharemind_s": 0.85,
    }
    # never seen running (it ran between two polls) or not timed at all: null, not 0
    unseen = timing_json(Timing(submitted=1.0, completed=2.0), "count", 1)
    assert unseen["running_to_completed_s"] is None and unseen["sharemind_s"] is None
    assert timing_json(None, "mean", 1)["submitted_to_completed_s"] is None


def test_the_report_is_one_line_of_strict_json() -> None:
    line = json_line({"a": [1, {"b": None}], "text": "two\nlines"})
    assert "\n" not in line and json.loads(line) == {"a": [1, {"b": None}], "text": "two\nlines"}
    with pytest.raises(ValueError):
        json_line({"x": float("nan")})


def test_kept_keys_and_profiles_are_private_and_load_as_the_cli_reads_them(tmp_path: Path) -> None:
    people = [
        Person("researcher", Role.RESEARCHER),
        Person("owner_tm", Role.DATA_OWNER, "tm"),
        Person("admin", Role.ADMIN),
    ]
    keys = {p.name: Ed25519PrivateKey.generate() for p in people}
    urls = [f"https://127.0.0.1:{port}" for port in (8001, 8002, 8003)]
    names = ["node-0", "node-1", "node-2"]
    tokens = [{p.name: f"dic_{p.name}_{i}" for p in people} for i in range(3)]
    ca = tmp_path / "pki" / "ca.pem"
    access = write_access(
        tmp_path / "people", people, keys, urls, names, tokens, ca, {"researcher": 1}
    )
    assert access["admin"]["key"] is None
    for person in people:
        files = access[person.name]
        profile_file = Path(str(files["profile"]))
        assert stat.S_IMODE(profile_file.stat().st_mode) == 0o600
        profile = load_profile(profile_file, env={})
        assert (profile.name, profile.role, profile.site) == (person.name, person.role, person.site)
        assert [n.url for n in profile.nodes] == urls and [n.name for n in profile.nodes] == names
        assert [n.token for n in profile.nodes] == [f"dic_{person.name}_{i}" for i in range(3)]
        assert profile.ca_cert == ca and profile.at == (1 if person.name == "researcher" else 0)
        if person.role is Role.ADMIN:
            assert profile.key_file is None
            continue
        assert profile.key_file is not None
        assert stat.S_IMODE(profile.key_file.stat().st_mode) == 0o600
        assert public_key_bytes(load_private_key(profile.key_file)) == public_key_bytes(
            keys[person.name]
        )


def test_the_browser_command_pins_exactly_the_node_certificates(tmp_path: Path) -> None:
    pki = write_dev_pki(tmp_path, ["node-0", "node-1"])
    certs = [pki["node-0"].cert, pki["node-1"].cert]
    command = chromium_command(certs, "https://127.0.0.1:8443/ui/")
    pins = command.split("--ignore-certificate-errors-spki-list=")[1].split()[0].split(",")
    assert pins == [spki_sha256(c) for c in certs] and len(set(pins)) == 2
    assert all(len(base64.b64decode(pin)) == 32 for pin in pins)
    assert command.endswith(" https://127.0.0.1:8443/ui/")
