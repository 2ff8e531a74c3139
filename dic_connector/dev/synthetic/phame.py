"""PHAME-like synthetic sites: demographics, payer and diagnoses at any scale (10^3-10^6).

The Catalyst/CAPriCORN pilot (DESIGN.md section 1, PILOT.md) pooled six Chicago-area sites'
*demographic* (age, sex, race, ethnicity, zip code, payer) and *diagnosis* tables to estimate
the prevalence of diabetes, hypertension and cervical, breast, lung and colorectal cancer by
zip code, age group, sex, race/ethnicity and payer. This generator produces the FHIR R4
resources a US site would hold for that:

- ``Patient`` with ``gender``, ``birthDate``, ``address.postalCode`` and the US Core race and
  ethnicity extensions (OMB categories, urn:oid:2.16.840.1.113883.6.238);
- ``Coverage`` (about 92 % of patients) typed by the Source of Payment Typology (SOPT);
- ``Condition`` coded in ICD-10-CM: the six target diseases at plausible, age- and
  sex-dependent prevalences (several codes per disease, so a mapping needs the whole code
  set), plus common unrelated diagnoses (some with look-alike prefixes such as E78).

Attributes are drawn for a whole batch at once with numpy (one seeded
:class:`numpy.random.Generator` per batch, so output is deterministic for a given seed and
batch size); only the final dict construction is per resource. Use :func:`phame_resources`
for an iterable of dicts and :func:`dic_connector.dev.synthetic.ndjson.write_bulk` for NDJSON
files with a Bulk Data style manifest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from dic_connector.dev.synthetic import codes as c

REFERENCE_DATE = dt.date(2024, 1, 1)  #: ages are computed at this date
ZIP_CODES = (
    "60601", "60605", "60607", "60608", "60609", "60612", "60614", "60615", "60617", "60619",
    "60620", "60621", "60623", "60624", "60625", "60626", "60628", "60629", "60632", "60636",
    "60637", "60640", "60643", "60644", "60647", "60649", "60651", "60653", "60657", "60660",
)
OUT_OF_AREA_ZIPS = ("46320", "60302", "60402", "60409")  #: Hammond IN, Oak Park, Berwyn ...
RACES = (("2106-3", "White", 0.45), ("2054-5", "Black or African American", 0.32),
         ("2028-9", "Asian", 0.07), ("1002-5", "American Indian or Alaska Native", 0.01),
         ("2076-8", "Native Hawaiian or Other Pacific Islander", 0.005),
         ("2131-1", "Other Race", 0.095), ("UNK", "Unknown", 0.05))
ETHNICITIES = (("2135-2", "Hispanic or Latino", 0.27),
               ("2186-5", "Not Hispanic or Latino", 0.68), ("UNK", "Unknown", 0.05))
PAYERS = (("1", "Medicare", 0.22), ("2", "Medicaid", 0.28), ("5", "Private Health Insurance",
          0.40), ("3", "Other Government", 0.03), ("81", "Self-pay", 0.07))
GENDERS = np.array(["female", "male", "other", "unknown"])
#: disease -> (ICD-10-CM codes, base prevalence, extra prevalence per decade of age)
DISEASES: dict[str, tuple[tuple[str, ...], float, float]] = {
    "diabetes": (("E11.9", "E11.65", "E11.22", "E10.9", "E13.9", "E08.65"), 0.01, 0.022),
    "hypertension": (("I10", "I11.9", "I12.9", "I13.10", "I15.0", "I16.9"), 0.01, 0.06),
    "cervical_cancer": (("C53.9", "C53.0", "C53.1"), 0.002, 0.0),
    "breast_cancer": (("C50.911", "C50.912", "C50.919", "C50.411"), 0.0, 0.004),
    "lung_cancer": (("C34.90", "C34.11", "C34.12", "C34.31"), 0.0, 0.002),
    "colorectal_cancer": (("C18.9", "C18.7", "C18.2", "C19", "C20"), 0.0, 0.002),
}
OTHER_CODES = ("J45.909", "M54.50", "E78.5", "E66.9", "F32.9", "K21.9", "Z00.00", "N39.0",
               "I25.10", "J44.9", "E03.9", "R73.03", "Z12.31", "D50.9")

Resource = dict[str, Any]


def _choice(rng: np.random.Generator, table: tuple[tuple[str, str, float], ...], n: int
            ) -> npt.NDArray[np.intp]:
    weights = np.array([w for _, _, w in table])
    return rng.choice(len(table), size=n, p=weights / weights.sum())


def _omb_extension(url: str, code: str, display: str) -> dict[str, Any]:
    system = ("http://terminology.hl7.org/CodeSystem/v3-NullFlavor" if code == "UNK"
              else c.OMB_RACE_ETHNICITY)
    return {"url": url, "extension": [
        {"url": "ombCategory", "valueCoding": {"system": system, "code": code,
                                                "display": display}},
        {"url": "text", "valueString": display}]}


def _batch(site: str, start: int, n: int, rng: np.random.Generator) -> Iterator[Resource]:
    age_days = (rng.gamma(4.0, 11.0, n) * 365.25).astype(np.int64) % (100 * 365)
    gender = GENDERS[rng.choice(4, size=n, p=[0.53, 0.465, 0.003, 0.002])]
    in_area = rng.random(n) < 0.95
    zips = np.where(in_area, np.array(ZIP_CODES)[rng.integers(0, len(ZIP_CODES), n)],
                    np.array(OUT_OF_AREA_ZIPS)[rng.integers(0, len(OUT_OF_AREA_ZIPS), n)])
    race, eth, payer = _choice(rng, RACES, n), _choice(rng, ETHNICITIES, n), _choice(rng, PAYERS, n)
    has_coverage = rng.random(n) < 0.92
    decades = age_days / 3652.5
    female = gender == "female"
    flags = {}
    for name, (_, base, slope) in DISEASES.items():
        p = base + slope * decades
        if name == "cervical_cancer":
            p = np.where(female, p, 0.0)
        elif name == "breast_cancer":
            p = np.where(female, p, p / 100)
        flags[name] = rng.random(n) < np.clip(p, 0, 0.9)
    n_other = rng.poisson(1.2, n)
    code_pick = rng.integers(0, 1 << 30, (n, 8))
    onset = rng.integers(30, 3650, (n, 8))
    for i in range(n):
        pid = f"{site}-{start + i:07d}"
        birth = REFERENCE_DATE - dt.timedelta(days=int(age_days[i]) + 1)
        patient: Resource = {
            "resourceType": "Patient", "id": pid,
            "extension": [_omb_extension(c.US_CORE_RACE, *RACES[race[i]][:2]),
                          _omb_extension(c.US_CORE_ETHNICITY, *ETHNICITIES[eth[i]][:2])],
            "gender": str(gender[i]), "birthDate": birth.isoformat(),
            "address": [{"use": "home", "postalCode": str(zips[i]), "country": "US"}],
        }
        yield patient
        subject = {"reference": f"Patient/{pid}"}
        if has_coverage[i]:
            code, display, _ = PAYERS[payer[i]]
            yield {"resourceType": "Coverage", "id": f"{pid}-cov", "status": "active",
                   "type": {"coding": [{"system": c.SOPT, "code": code, "display": display}]},
                   "beneficiary": subject, "payor": [{"display": display}],
                   "period": {"start": "2023-01-01"}}
        codes = [DISEASES[name][0][code_pick[i, k] % len(DISEASES[name][0])]
                 for k, name in enumerate(DISEASES) if flags[name][i]]
        codes += [OTHER_CODES[(code_pick[i, 6 + k % 2] >> (5 * k)) % len(OTHER_CODES)]
                  for k in range(min(int(n_other[i]), 4))]
        for k, code in enumerate(codes):
            recorded = REFERENCE_DATE - dt.timedelta(days=int(onset[i, k % 8]) % max(
                1, int(age_days[i])) + 1)
            yield {"resourceType": "Condition", "id": f"{pid}-dx{k}",
                   "clinicalStatus": {"coding": [{
                       "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                       "code": "active"}]},
                   "code": {"coding": [{"system": c.ICD10_CM, "code": code}]},
                   "subject": subject, "recordedDate": recorded.isoformat()}


def phame_resources(patients: int, seed: int = 0, site: str = "s1",
                    batch_size: int = 20_000) -> Iterator[Resource]:
    """FHIR R4 resources of a PHAME-like site with ``patients`` patients, deterministic."""
    for start in range(0, patients, batch_size):
        rng = np.random.default_rng([seed, start])
        yield from _batch(site, start, min(batch_size, patients - start), rng)


def phame_resource_count(resources: int, seed: int = 0, site: str = "s1"
                         ) -> Iterator[Resource]:
    """About ``resources`` resources (whole patients; stops at the first patient past it)."""
    for produced, resource in enumerate(phame_resources(max(1, resources), seed, site)):
        if produced >= resources and resource["resourceType"] == "Patient":
            return
        yield resource
