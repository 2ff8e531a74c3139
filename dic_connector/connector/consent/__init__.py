"""Consent and opt-out: which patients a dataset version must leave out (issue 12).

A patient whose FHIR ``Consent`` denies, withdraws or rejects the policies the connector
needs, or who is on a configured opt-out file or FHIR ``List``/``Group``, is excluded from
the next version: the pipeline drops their rows before anything is validated or shared.
Under opt-in (the MII broad consent as legal basis) only patients whose consents permit
every required policy at the evaluation time stay. ``docs/consent.md`` is the operator's
summary; the rules and their sources are in :mod:`.decisions`.

Modules, in dependency order:

- ``policy``      the ``consent`` config section (:class:`ConsentMode`, :class:`ConsentPolicy`,
                  :func:`parse_consent_policy`), the default MII policy codes, opt-out files
- ``decisions``   :func:`evaluate_consents`: per patient, permitted / denied / no consent /
                  malformed at one instant, over MII-shaped Consent resources (pure)
- ``exclusions``  :func:`exclusions`: opt-out files, Lists/Groups and Consents read from the
                  server, combined into the keys to drop with counts by reason

Specifications: MII module consent
(https://www.medizininformatik-initiative.de/fhir/modul-consent/StructureDefinition/mii-pr-consent-einwilligung,
policy CodeSystem ``urn:oid:2.16.840.1.113883.3.1937.777.24.5.3``), FHIR R4 Consent
(https://hl7.org/fhir/R4/consent.html), List and Group.
"""

from __future__ import annotations

from dic_connector.connector.consent.decisions import (
    ConsentDecision,
    ConsentEvaluation,
    ConsentOutcome,
    ConsentReason,
    evaluate,
    evaluate_consents,
    patient_key,
)
from dic_connector.connector.consent.exclusions import REASONS, Exclusions, exclusions
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

__all__ = [
    "MDAT_SCIENTIFIC_USE", "MDAT_STORE_PROCESS", "MII_POLICY_SYSTEM", "REASONS",
    "ConsentDecision", "ConsentEvaluation", "ConsentMode", "ConsentOutcome", "ConsentPolicy",
    "ConsentReason", "Exclusions", "evaluate", "evaluate_consents", "exclusions",
    "parse_consent_policy", "parse_opt_out_text", "patient_key", "read_opt_out_file",
]
