"""FHIR R4 resources for the two synthetic pilot sites ("tm" Munich, "tr" Rome).

Renders :func:`~dic_connector.dev.synthetic.pilot_design.pilot_patients` as the resources a
hospital FHIR server would hold (conventions in :mod:`dic_connector.dev.synthetic.codes`):

- ``Patient`` (MII Person): gender, birth date, ``deceasedDateTime`` for those who died;
- ``Condition`` x 2 (MII Diagnose, ICD-10-GM): the primary tumour, and the adrenal metastasis
  C79.7 with laterality in the ``seitenlokalisation`` extension (L, R, B);
- ``Procedure`` (mCODE RadiotherapyCourseSummary): the MR-guided course, with total dose
  (Gy) and fractions delivered;
- ``Observation``: ECOG (LOINC 89247-1) at baseline and for some patients again after therapy,
  metastasis timing, best local response, maximal toxicity grade, and MII Vitalstatus
  (LOINC 67162-8) every 3 months up to the last contact, which is the death date for those
  who died.

Follow-up months are days / 30.4375 rounded to 0.1, and every date is chosen so that this
rounding gives back exactly the designed value; ages are completed years at therapy start.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from dic_connector.dev.synthetic import codes as c
from dic_connector.dev.synthetic.pilot_design import SITES, PilotPatient, pilot_patients

FIRST_THERAPY = dt.date(2019, 3, 4)
DAYS_PER_MONTH = 365.25 / 12

Resource = dict[str, Any]


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _cc(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def follow_up_days(months: float) -> int:
    """Days whose months (days / 30.4375, rounded to 0.1) are exactly ``months``."""
    days = round(months * DAYS_PER_MONTH)
    assert round(days / DAYS_PER_MONTH, 1) == months
    return days


def _dates(p: PilotPatient, k: int) -> tuple[dt.date, dt.date, dt.date]:
    """(therapy start, birth date, last contact) for patient number ``k`` of the cohort."""
    start = FIRST_THERAPY + dt.timedelta(days=23 * k)
    if start.month == 2 and start.day == 29:
        start += dt.timedelta(days=1)
    birth = start.replace(year=start.year - p.age) - dt.timedelta(days=1 + (37 * k) % 300)
    return start, birth, start + dt.timedelta(days=follow_up_days(p.follow_up_months))


def _observation(pid: str, oid: str, code: dict[str, Any], when: dt.date,
                 value: dict[str, Any], category: str = "exam") -> Resource:
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [_cc("http://terminology.hl7.org/CodeSystem/observation-category",
                         category)],
        "code": code, "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when.isoformat(), **value,
    }


def patient_resources(p: PilotPatient, k: int, prefix: str = "") -> list[Resource]:
    """All resources of one patient; ``k`` is its 0-based number in the pooled cohort."""
    pid = f"{prefix}{p.site}-{p.index:03d}"
    start, birth, last = _dates(p, k)
    patient: Resource = {
        "resourceType": "Patient", "id": pid, "meta": {"profile": [c.MII_PATIENT]},
        "identifier": [{"system": f"https://dic-connector.example/{p.site}/pid",
                        "value": f"{p.site.upper()}{100000 + p.index}"}],
        "gender": p.gender, "birthDate": birth.isoformat(),
    }
    patient["deceasedDateTime" if p.death else "deceasedBoolean"] = (
        last.isoformat() if p.death else False)
    side = {"left": "L", "right": "R", "bilateral": "B"}[p.laterality]
    subject = {"reference": f"Patient/{pid}"}
    out: list[Resource] = [patient, {
        "resourceType": "Condition", "id": f"{pid}-primary", "meta": {"profile": [c.MII_DIAGNOSE]},
        "code": _cc(c.ICD10_GM, p.primary_icd10), "subject": subject,
        "recordedDate": (start - dt.timedelta(days=400 + 11 * k)).isoformat(),
    }, {
        "resourceType": "Condition", "id": f"{pid}-adrenal", "meta": {"profile": [c.MII_DIAGNOSE]},
        "code": {"coding": [{
            "system": c.ICD10_GM, "version": "2023", "code": c.ADRENAL_METASTASIS_ICD10,
            "extension": [{"url": c.SEITENLOKALISATION,
                           "valueCoding": _coding(c.SEITENLOKALISATION_CS, side)}],
        }]},
        "subject": subject, "recordedDate": (start - dt.timedelta(days=30)).isoformat(),
    }, {
        "resourceType": "Procedure", "id": f"{pid}-rt", "meta": {"profile": [c.MCODE_COURSE]},
        "status": "completed", "code": _cc(c.SNOMED, c.RT_COURSE_SNOMED), "subject": subject,
        "performedPeriod": {"start": start.isoformat(),
                            "end": (start + dt.timedelta(days=2 * p.fractions - 2)).isoformat()},
        "extension": [{"url": c.MCODE_DOSE, "extension": [
            {"url": "totalDoseDelivered", "valueQuantity": {
                "value": p.total_dose_gy, "unit": "Gy", "system": c.UCUM, "code": "Gy"}},
            {"url": "fractionsDelivered", "valueUnsignedInt": p.fractions},
        ]}],
    }]
    ecog_code = _cc(c.LOINC, c.ECOG_LOINC, "ECOG Performance Status score")
    out.append(_observation(pid, f"{pid}-ecog-0", ecog_code, start - dt.timedelta(days=7),
                            {"valueCodeableConcept": _cc(c.LOINC, c.ECOG_ANSWERS[p.ecog])},
                            "survey"))
    if k % 3 == 0 and p.follow_up_months > 2.5:
        later = c.ECOG_ANSWERS[min(p.ecog + 1, 4)]
        out.append(_observation(pid, f"{pid}-ecog-1", ecog_code, start + dt.timedelta(days=60),
                                {"valueCodeableConcept": _cc(c.LOINC, later)}, "survey"))
    out.append(_observation(pid, f"{pid}-timing", _cc(c.PILOT_CS, "metastasis-timing"), start,
                            {"valueCodeableConcept": _cc(c.PILOT_CS, p.timing)}))
    if p.local_control is not None:
        out.append(_observation(
            pid, f"{pid}-response", _cc(c.PILOT_CS, "local-response"),
            min(last, start + dt.timedelta(days=90)),
            {"valueCodeableConcept": _cc(c.PILOT_CS, p.local_control)}))
    out.append(_observation(pid, f"{pid}-toxicity", _cc(c.PILOT_CS, "max-toxicity-grade"),
                            start + dt.timedelta(days=30), {"valueInteger": p.toxicity_grade}))
    contacts = [start + dt.timedelta(days=d) for d in range(91, (last - start).days, 91)]
    for n, when in enumerate([*contacts, last]):
        status = "X" if p.death and when == last else "A"
        obs = _observation(pid, f"{pid}-vital-{n}", _cc(c.LOINC, c.VITALSTATUS_LOINC), when,
                           {"valueCodeableConcept": _cc(c.MII_VITALSTATUS_CS, status)}, "survey")
        obs["meta"] = {"profile": [c.MII_VITALSTATUS]}
        out.append(obs)
    return out


def pilot_resources(site: str | None = None, copies: int = 1) -> Iterator[Resource]:
    """Resources of one site (``"tm"``/``"tr"``) or both; ``copies`` > 1 repeats the
    cohort with id prefixes ``c1-``, ``c2-``... (for throughput benchmarks only)."""
    if site is not None and site not in SITES:
        raise ValueError(f"unknown pilot site {site!r}; expected one of {SITES}")
    patients = pilot_patients()
    for copy in range(copies):
        prefix = f"c{copy}-" if copy else ""
        for k, p in enumerate(patients):
            if site is None or p.site == site:
                yield from patient_resources(p, k, prefix)
