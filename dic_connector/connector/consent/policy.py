"""What a dataset's consent section asks for, and the opt-out files it names.

A dataset's ``consent`` section in ``connector.yaml`` chooses how consent shapes the cohort::

    consent:
      mode: opt-in                     # none (default) | opt-out | opt-in
      required_codes: [2.16.840.1.113883.3.1937.777.24.5.3.7,
                       2.16.840.1.113883.3.1937.777.24.5.3.8]
      system: urn:oid:2.16.840.1.113883.3.1937.777.24.5.3
      opt_out_files: [optout/objections.txt]
      opt_out_lists: [List/research-objections, Group/opt-out]

The default codes are the two policies of the MII broad consent that the connector's work
needs: ``…24.5.3.7`` *MDAT speichern, verarbeiten* (store and process medical data) and
``…24.5.3.8`` *MDAT wissenschaftlich nutzen EU DSGVO NIVEAU* (use medical data for research
at the level of the GDPR), both in the MII policy CodeSystem
``urn:oid:2.16.840.1.113883.3.1937.777.24.5.3`` (``MII_CS_Consent_Policy``, module consent of
the MII core data set, https://github.com/medizininformatik-initiative/kerndatensatzmodul-consent,
``input/fsh/codesystems/MII_CS_Consent_Policy.fsh``). Secret-sharing a cohort to three
compute nodes stores and processes it; the nodes' analyses are its scientific use.

Opt-out files hold one patient key per line (the Patient id for FHIR mappings, the key column
for SQL ones); blank lines and ``#`` comments (a whole line, or after whitespace) are ignored.
A file that cannot be read is a :class:`~dic_connector.errors.SourceError` naming the file, so
the run fails rather than share patients whose objection it could not read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from dic_connector.config import known_keys, str_value
from dic_connector.errors import ConfigError, SourceError

#: The MII consent policy CodeSystem (``MII_CS_Consent_Policy``).
MII_POLICY_SYSTEM = "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"
#: "MDAT speichern, verarbeiten": store and process medical data.
MDAT_STORE_PROCESS = "2.16.840.1.113883.3.1937.777.24.5.3.7"
#: "MDAT wissenschaftlich nutzen EU DSGVO NIVEAU": use medical data for research (GDPR level).
MDAT_SCIENTIFIC_USE = "2.16.840.1.113883.3.1937.777.24.5.3.8"

_LIST_REFERENCE = re.compile(r"(List|Group)/[A-Za-z0-9\-.]{1,64}")
_COMMENT = re.compile(r"(^|\s)#.*$")
_KNOWN = ("mode", "opt_out_files", "opt_out_lists", "required_codes", "system")


class ConsentMode(StrEnum):
    """How FHIR ``Consent`` resources decide who is in the cohort."""

    #: Consent resources are not read (opt-out files and lists still apply)
    NONE = "none"
    #: everyone stays except patients with a denied or withdrawn consent for a required code
    OPT_OUT = "opt-out"
    #: only patients whose consents permit every required code at the evaluation time stay
    OPT_IN = "opt-in"


@dataclass(frozen=True)
class ConsentPolicy:
    """A dataset's consent rules (see the module docstring for the YAML form)."""

    mode: ConsentMode = ConsentMode.NONE
    required_codes: tuple[str, ...] = (MDAT_STORE_PROCESS, MDAT_SCIENTIFIC_USE)
    system: str = MII_POLICY_SYSTEM
    #: text files, one patient key per line, ``#`` comments, blank lines ignored
    opt_out_files: tuple[Path, ...] = ()
    #: ``List/<id>`` or ``Group/<id>`` on the source server whose entries are Patients
    opt_out_lists: tuple[str, ...] = ()

    @property
    def excludes_anyone(self) -> bool:
        """Whether the policy can leave a patient out (consent rules or an opt-out list)."""
        return self.mode is not ConsentMode.NONE or bool(self.opt_out_files) \
            or bool(self.opt_out_lists)

    @property
    def needs_server(self) -> bool:
        """Whether applying the policy reads resources from the FHIR server."""
        return self.mode is not ConsentMode.NONE or bool(self.opt_out_lists)


def _strings(key: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ConfigError(f"Config '{key}' has value {value!r}. Expected a list of strings.")
    return [str_value(f"{key}.{i}", item) for i, item in enumerate(value)]


def parse_consent_policy(key: str, raw: Mapping[str, Any] | None, base_dir: Path
                         ) -> ConsentPolicy:
    """The policy of the config section ``raw`` found at ``key`` (e.g.
    ``datasets.pilot.consent``); relative file paths are resolved against ``base_dir``.

    Every problem is a :class:`~dic_connector.errors.ConfigError` naming the full key.
    """
    if raw is None:
        return ConsentPolicy()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"Config '{key}' has value {raw!r}. Expected a mapping.")
    known_keys(key, raw, _KNOWN)
    mode_text = raw.get("mode", ConsentMode.NONE.value)
    try:
        mode = ConsentMode(mode_text)
    except ValueError:
        raise ConfigError(f"Config '{key}.mode' has value {mode_text!r}. Expected none, "
                          "opt-out or opt-in.") from None
    defaults = ConsentPolicy()
    codes = tuple(_strings(f"{key}.required_codes", raw["required_codes"])
                  ) if "required_codes" in raw else defaults.required_codes
    if not codes:
        raise ConfigError(f"Config '{key}.required_codes' is empty. Expected at least one "
                          "policy code.")
    system = str_value(f"{key}.system", raw["system"]) if "system" in raw else defaults.system
    files = []
    for text in _strings(f"{key}.opt_out_files", raw.get("opt_out_files", [])):
        path = Path(text).expanduser()
        files.append(path if path.is_absolute() else base_dir / path)
    lists = _strings(f"{key}.opt_out_lists", raw.get("opt_out_lists", []))
    for i, reference in enumerate(lists):
        if not _LIST_REFERENCE.fullmatch(reference):
            raise ConfigError(f"Config '{key}.opt_out_lists.{i}' has value {reference!r}. "
                              "Expected List/<id> or Group/<id>.")
    return ConsentPolicy(mode=mode, required_codes=codes, system=system,
                         opt_out_files=tuple(files), opt_out_lists=tuple(lists))


def parse_opt_out_text(text: str) -> frozenset[str]:
    """The patient keys of an opt-out file's text: one per line, comments and blanks dropped."""
    keys = (_COMMENT.sub("", line).strip() for line in text.splitlines())
    return frozenset(key for key in keys if key)


def read_opt_out_file(path: Path) -> frozenset[str]:
    """The patient keys in the opt-out file ``path`` (UTF-8 text).

    Raises :class:`~dic_connector.errors.SourceError` naming the file when it cannot be read:
    a lost objection must fail the run, never widen the cohort.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"Opt-out file {path} cannot be read: "
                          f"{exc.strerror or type(exc).__name__}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SourceError(f"Opt-out file {path} is not UTF-8 text (line {line}).") from None
    return parse_opt_out_text(text)
