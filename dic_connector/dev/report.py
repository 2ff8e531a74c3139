"""The demo's report as one JSON object (``dic demo --json``), and what ``--keep`` leaves a
person to go on with: a signing key and a client profile per principal.

**Timings.** Each request is timed from the moment its submission returned to the first
poll that saw it ``completed`` on all three nodes, and from the first poll that saw it
``running`` on any node to that same poll (the nodes compute one request at a time, so the
first includes waiting for the approvals and for the requests before it; the second is the
request's own computation, to the polling interval). Next to them stand Sharemind's
published timings where the function is the same (``../shared/PILOT.md``, "Timings to
beat": Ballhausen et al., npj Digit Med 7:280, 2024, Tables 2 and 3; three physical
servers, so not the same machine).

**Profiles** follow :mod:`dic_connector.client.profile`; each profile and key file is 0600
(a profile holds its person's tokens).

**Web pages.** The demo's node certificates name the nodes (``node-0``...), not 127.0.0.1,
so a browser opening ``https://127.0.0.1:<port>/ui/`` must be told to trust exactly them:
Chromium's ``--ignore-certificate-errors-spki-list`` takes the base64 SHA-256 of each
certificate's SubjectPublicKeyInfo (as ``tests/e2e/test_web.py`` runs it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dic_connector.trust.signing import write_private_key
from dic_connector.vocabulary import Role

#: Sharemind's function for each of our analyses that computes the same thing.
SHAREMIND_FUNCTIONS: dict[str, str] = {
    "frequency": "freq",
    "mean": "mean",
    "median": "median",
    "quantiles": "quantile",
}
#: PILOT.md "Timings to beat": seconds by function, for one site (24 rows) and both (48).
SHAREMIND_SECONDS: dict[str, tuple[float, float]] = {
    "freq": (0.31, 0.38),
    "mean": (0.60, 0.82),
    "median": (0.68, 0.85),
    "quantile": (0.70, 0.96),
}


@dataclass(frozen=True)
class Timing:
    """When one request was seen where, in seconds on one monotonic clock (None: not seen)."""

    submitted: float
    running: float | None = None  #: first poll that saw it running on any node
    completed: float | None = None  #: first poll that saw it completed on all three


def sharemind(analysis: str, sites: int) -> tuple[str, float] | None:
    """(Sharemind's function, its published seconds) for ``analysis`` over one or two
    sites; None where PILOT.md publishes no timing of that function or site count."""
    function = SHAREMIND_FUNCTIONS.get(analysis)
    if function is None or sites not in (1, 2):
        return None
    return function, SHAREMIND_SECONDS[function][sites - 1]


def _seconds(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 3)


def timing_json(timing: Timing | None, analysis: str, sites: int) -> dict[str, Any]:
    """One question's timings with Sharemind's next to them."""
    published = sharemind(analysis, sites)
    return {
        "submitted_to_completed_s": None
        if timing is None
        else _seconds(timing.submitted, timing.completed),
        "running_to_completed_s": None
        if timing is None
        else _seconds(timing.running, timing.completed),
        "sharemind_function": None if published is None else published[0],
        "sharemind_s": None if published is None else published[1],
    }


def json_line(report: Mapping[str, Any]) -> str:
    """The report as one line of JSON (what ``--json`` prints last)."""
    return json.dumps(report, separators=(",", ":"), sort_keys=False, allow_nan=False)


# -- what --keep leaves ------------------------------------------------------------------


def spki_sha256(cert: Path) -> str:
    """The base64 SHA-256 of a PEM certificate's SubjectPublicKeyInfo (Chromium's pin)."""
    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def chromium_command(certs: Sequence[Path], url: str) -> str:
    """A Chromium command line that trusts exactly ``certs`` and opens ``url``."""
    pins = ",".join(spki_sha256(cert) for cert in certs)
    return f"chromium --ignore-certificate-errors-spki-list={pins} {url}"


@dataclass(frozen=True)
class Person:
    """A principal of the demo, as its profile names it."""

    name: str
    role: Role
    site: str | None = None


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def profile_data(
    person: Person,
    urls: Sequence[str],
    names: Sequence[str],
    tokens: Sequence[Mapping[str, str]],
    ca_cert: Path,
    key_file: Path | None,
    at: int,
) -> dict[str, Any]:
    """The profile of ``person`` (:mod:`dic_connector.client.profile`): its key, the CA,
    the three nodes with the token each issued."""
    data: dict[str, Any] = {"name": person.name, "role": person.role.value}
    if key_file is not None:
        data["key"] = str(key_file)
    if person.site is not None:
        data["site"] = person.site
    data["ca_cert"] = str(ca_cert)
    data["at"] = at
    data["nodes"] = [
        {"url": url, "name": name, "token": node_tokens[person.name]}
        for url, name, node_tokens in zip(urls, names, tokens, strict=True)
    ]
    return data


def write_access(
    directory: Path,
    people: Sequence[Person],
    keys: Mapping[str, Ed25519PrivateKey],
    urls: Sequence[str],
    names: Sequence[str],
    tokens: Sequence[Mapping[str, str]],
    ca_cert: Path,
    at: Mapping[str, int],
) -> dict[str, dict[str, str | None]]:
    """Write ``<name>.pem`` (researchers and data owners) and ``<name>.yaml`` per person
    into ``directory``, both 0600; name -> {"profile", "key"} paths."""
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, str | None]] = {}
    for person in people:
        key_file = None
        if person.role in (Role.RESEARCHER, Role.DATA_OWNER):
            key_file = directory / f"{person.name}.pem"
            write_private_key(key_file, keys[person.name])
        profile = directory / f"{person.name}.yaml"
        data = profile_data(person, urls, names, tokens, ca_cert, key_file, at.get(person.name, 0))
        _write_private(profile, yaml.safe_dump(data, sort_keys=False))
        out[person.name] = {
            "profile": str(profile),
            "key": None if key_file is None else str(key_file),
        }
    return out


__all__ = [
    "SHAREMIND_FUNCTIONS",
    "SHAREMIND_SECONDS",
    "Person",
    "Timing",
    "chromium_command",
    "json_line",
    "profile_data",
    "sharemind",
    "spki_sha256",
    "timing_json",
    "write_access",
]
