"""The 48 pilot patients, constructed so every published figure of the pilot is reproduced.

Ballhausen et al., npj Digit Med 7:280 (2024), doi:10.1038/s41746-024-01293-4, report only
aggregates (``../shared/PILOT.md``). This module builds patient-level data whose aggregates
are those figures, by construction rather than by sampling:

- each categorical column is the exact list of published counts (ECOG 18/22/8, laterality
  24/18/6, timing 23/13/8/4, ...), shuffled with a fixed :class:`random.Random` seed; a
  shuffle changes which patient has which value, never a count;
- columns whose *joint* distribution is published travel together as one tuple: (fractions,
  dose per fraction, local control) for "CR by BED10 < 80 Gy: 5 of 36, >= 80 Gy: 5 of 10";
  (follow-up, death, ECOG 2) for the survival figures;
- ages are two explicit per-site lists solved by hand for R's type-7 quantiles: with n = 24,
  Q1 = x[5] + 0.75 (x[6] - x[5]) = 61 + 1.5 = 62.5 and Q3 = x[17] + 0.25 (x[18] - x[17]) = 72.25;
  pooled (n = 48) Q1 = y[11] + 0.75 (y[12] - y[11]) = 60 + 0.75 = 60.75, Q3 = y[35] = y[36] = 73;
- BED10 = n d (1 + d / 10): 3 x 8 Gy = 43.2 (min, published 43), 5 x 8 Gy = 72 (23 patients, so
  the median is exactly 72), 5 x 10.8 Gy = 112.3 (max, published 112);
- the survival triples were found once by a simulated-annealing search over
  (months, event, ECOG 2) and are frozen here. With them (lifelines 0.30, Kaplan-Meier and
  ``logrank_test``): median OS 19.0 months, OS(12) = 0.733, OS(24) = 0.481, log-rank ECOG 0-1
  vs 2 chi2 = 1.80, p = 0.180 (published: 19.0, 73 %, 48 %, 1.8, 0.18); follow-up median 8.5
  (0.5-26.9); 17 deaths.

Not published, so invented and labelled as such: toxicity grades, primary tumours and all
dates (therapy between 2019 and 2022).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

SITES = ("tm", "tr")  #: Munich (LMU), Rome (Gemelli)

#: Ages per site, sorted; see the module docstring for the quantile arithmetic.
AGES = {
    "tm": (38, 45, 50, 54, 58, 61, 63, 64, 65, 65, 66, 66, 66, 68, 69, 70, 71, 72, 73, 75, 78,
           80, 85, 91),
    "tr": (42, 48, 52, 55, 57, 59, 60, 62, 63, 64, 65, 66, 67, 68, 70, 71, 73, 73, 74, 77, 79,
           82, 86, 89),
}
MALES = {"tm": 16, "tr": 13}  #: pooled 29 male, 19 female

#: (follow-up months, death 1/0, ECOG 2 yes 1/0), one per patient of the pooled cohort.
SURVIVAL: tuple[tuple[float, int, int], ...] = (
    (1.0, 1, 1), (6.6, 0, 0), (7.4, 0, 0), (4.2, 1, 1), (2.9, 0, 0), (2.4, 0, 0), (1.4, 1, 0),
    (4.7, 0, 0), (7.8, 1, 0), (3.5, 0, 1), (8.2, 1, 0), (0.7, 0, 0), (2.5, 0, 0), (5.5, 0, 0),
    (6.1, 0, 0), (1.5, 0, 1), (8.3, 1, 0), (7.6, 0, 1), (7.1, 1, 0), (7.4, 1, 0), (0.5, 0, 0),
    (0.5, 0, 0), (5.6, 1, 0), (1.1, 1, 0), (12.9, 0, 0), (24.9, 0, 0), (26.9, 0, 0),
    (20.9, 0, 0), (15.8, 0, 0), (12.8, 0, 0), (14.2, 0, 0), (15.3, 0, 0), (16.8, 1, 0),
    (16.7, 1, 1), (22.9, 0, 0), (13.2, 0, 0), (13.2, 1, 0), (11.8, 0, 0), (26.9, 1, 1),
    (13.9, 0, 0), (26.9, 0, 0), (17.7, 0, 0), (12.5, 1, 0), (9.6, 0, 0), (25.3, 1, 0),
    (19.0, 1, 1), (18.5, 0, 0), (8.7, 0, 0),
)

#: (count, fractions, Gy per fraction, local-control outcomes of those patients)
_COURSES: tuple[tuple[int, int, float, tuple[str | None, ...]], ...] = (
    (1, 3, 8.0, ("SD",)),
    (7, 3, 10.0, ("CR", "PR", "PR", "SD", "SD", "SD", "PD")),
    (3, 5, 6.0, ("SD", "SD", "PD")),
    (4, 5, 7.0, ("CR", "PR", "SD", None)),
    (23, 5, 8.0, ("CR",) * 3 + ("PR",) * 7 + ("SD",) * 10 + ("PD",) * 2 + (None,)),
    (2, 3, 12.5, ("CR", "SD")),
    (4, 5, 9.0, ("CR", "CR", "PR", "SD")),
    (3, 5, 10.0, ("CR", "PR", "PR")),
    (1, 5, 10.8, ("CR",)),
)

_COUNTS = {
    "ecog01": (("0", 18), ("1", 22)),
    "laterality": (("left", 24), ("right", 18), ("bilateral", 6)),
    "timing": (("metachronous", 23), ("oligoprogressive", 13), ("synchronous", 8),
               ("other", 4)),
    "toxicity": (("0", 30), ("1", 14), ("2", 4)),
    "primary": (("C34.1", 18), ("C64", 12), ("C43.5", 7), ("C18.7", 6), ("C22.0", 5)),
}

SEED = 20241014


@dataclass(frozen=True)
class PilotPatient:
    """One synthetic pilot patient (values as a clinician would record them)."""

    site: str
    index: int  #: 1-based within the site
    age: int
    gender: str
    ecog: int
    laterality: str
    timing: str
    fractions: int
    dose_per_fraction_gy: float
    local_control: str | None  #: None = not assessed ("n/a")
    toxicity_grade: int
    follow_up_months: float
    death: bool
    primary_icd10: str

    @property
    def total_dose_gy(self) -> float:
        return round(self.fractions * self.dose_per_fraction_gy, 2)

    @property
    def bed10(self) -> float:
        """Biologically effective dose, alpha/beta = 10 Gy: n d (1 + d / 10)."""
        return self.total_dose_gy * (1 + self.dose_per_fraction_gy / 10)


def _expand(pairs: tuple[tuple[str, int], ...]) -> list[str]:
    return [value for value, count in pairs for _ in range(count)]


def pilot_patients() -> tuple[PilotPatient, ...]:
    """The 48 patients, Munich first (index 1-24), then Rome; deterministic."""
    rng = random.Random(SEED)

    def shuffled(items: list[T]) -> list[T]:
        rng.shuffle(items)
        return items

    courses = shuffled([(n, d, lc) for count, n, d, outcomes in _COURSES
                        for lc, _ in zip(outcomes, range(count), strict=True)])
    survival = shuffled(list(SURVIVAL))
    ecog01 = shuffled(_expand(_COUNTS["ecog01"]))
    columns = {name: shuffled(_expand(pairs)) for name, pairs in _COUNTS.items()
               if name != "ecog01"}
    patients: list[PilotPatient] = []
    for site in SITES:
        ages = shuffled(list(AGES[site]))
        genders = shuffled(["male"] * MALES[site] + ["female"] * (24 - MALES[site]))
        for i in range(24):
            k = len(patients)
            n, d, lc = courses[k]
            months, death, ecog2 = survival[k]
            patients.append(PilotPatient(
                site=site, index=i + 1, age=ages[i], gender=genders[i],
                ecog=2 if ecog2 else int(ecog01.pop()),
                laterality=columns["laterality"][k], timing=columns["timing"][k],
                fractions=n, dose_per_fraction_gy=d, local_control=lc,
                toxicity_grade=int(columns["toxicity"][k]),
                follow_up_months=months, death=bool(death),
                primary_icd10=columns["primary"][k],
            ))
    return tuple(patients)
