"""The synthetic pilot, run through ``mappings/pilot_adrenal.yaml``, gives every figure of
``../shared/PILOT.md`` (Ballhausen et al. 2024, doi:10.1038/s41746-024-01293-4).

Achieved (asserted below): all counts, quantiles, BED10 median/range, Fisher p = 0.0266 and
follow-up median/range exactly; median OS 19.0, OS(12) = 0.733, OS(24) = 0.481, log-rank
chi2 = 1.80, p = 0.180.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fhir.resources.R4B import get_fhir_model_class
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test
from scipy.stats import fisher_exact

from dic_connector.dev.synthetic.pilot import pilot_resources
from dic_connector.dev.synthetic.pilot_design import pilot_patients
from dic_connector.encoding.encode import EncodedTable, encode_table
from dic_connector.encoding.validate import validate_rows
from dic_connector.mapping.assemble import build_cohort
from dic_connector.mapping.cohort import CohortMapping, load_mapping

MAPPING = Path(__file__).resolve().parents[4] / "mappings" / "pilot_adrenal.yaml"
PROBS = [0, 0.25, 0.5, 0.75, 1]


@pytest.fixture(scope="module")
def mapping() -> CohortMapping:
    return load_mapping(MAPPING)


@pytest.fixture(scope="module")
def sites(mapping: CohortMapping) -> dict[str, EncodedTable]:
    out = {}
    for site in ("tm", "tr"):
        table = build_cohort(mapping, pilot_resources(site))
        assert table.orphan_rows == 0
        clean, report, _ = validate_rows(table.rows, mapping)
        assert report.rows_rejected == 0
        out[site] = encode_table(clean, mapping)
    return out


def col(sites: dict[str, EncodedTable], name: str, site: str | None = None) -> np.ndarray:
    tables = [sites[site]] if site else [sites["tm"], sites["tr"]]
    values = np.concatenate([t.column(name) for t in tables])
    scale = tables[0].columns[tables[0].names.index(name)].scale
    return values / 10**scale if scale else values


def counts(sites: dict[str, EncodedTable], name: str, levels: list[str],
           site: str | None = None) -> list[int]:
    return [int(col(sites, f"{name}={lv}", site).sum()) for lv in levels]


def test_site_sizes_and_munich_outputs(sites: dict[str, EncodedTable]) -> None:
    assert len(col(sites, "age", "tm")) == 24 and len(col(sites, "age", "tr")) == 24
    assert np.quantile(col(sites, "age", "tm"), PROBS, method="linear").tolist() == [
        38.0, 62.5, 66.0, 72.25, 91.0]
    assert counts(sites, "gender", ["male", "female"], "tm") == [16, 8]


def test_pooled_demographics(sites: dict[str, EncodedTable]) -> None:
    assert counts(sites, "gender", ["male", "female"]) == [29, 19]
    age = col(sites, "age")
    assert np.quantile(age, PROBS, method="linear").tolist() == [38.0, 60.75, 66.0, 73.0, 91.0]
    assert counts(sites, "ecog", ["0", "1", "2"]) == [18, 22, 8]
    assert counts(sites, "laterality", ["left", "right", "bilateral"]) == [24, 18, 6]
    assert counts(sites, "timing", ["metachronous", "oligoprogressive", "synchronous",
                                    "other"]) == [23, 13, 8, 4]


def test_treatment_and_local_control(sites: dict[str, EncodedTable]) -> None:
    fractions = col(sites, "fractions")
    assert Counter(fractions.tolist()) == {3: 10, 5: 38}
    bed = col(sites, "bed10")
    assert np.median(bed) == 72.0
    assert (round(bed.min()), round(bed.max())) == (43, 112)
    assert counts(sites, "local_control", ["CR", "PR", "SD", "PD"]) == [10, 13, 19, 4]
    present = col(sites, "local_control__present")
    assert int((present == 0).sum()) == 2
    cr = col(sites, "local_control=CR")
    low, high = (bed < 80) & (present == 1), (bed >= 80) & (present == 1)
    table = [[int(cr[low].sum()), int(low.sum() - cr[low].sum())],
             [int(cr[high].sum()), int(high.sum() - cr[high].sum())]]
    assert table == [[5, 31], [5, 5]]
    assert round(fisher_exact(table).pvalue, 3) == 0.027


def test_follow_up_and_survival(sites: dict[str, EncodedTable]) -> None:
    months, death = col(sites, "follow_up"), col(sites, "event_death")
    assert (np.median(months), months.min(), months.max()) == (8.5, 0.5, 26.9)
    km = KaplanMeierFitter().fit(months, death)
    assert km.median_survival_time_ == 19.0
    assert round(float(km.predict(12.0)), 2) == 0.73
    assert round(float(km.predict(24.0)), 2) == 0.48
    ecog2 = col(sites, "ecog=2") == 1
    test = logrank_test(months[~ecog2], months[ecog2], death[~ecog2], death[ecog2])
    assert round(test.test_statistic, 1) == 1.8
    assert round(test.p_value, 2) == 0.18


def test_censored_follow_up_table(sites: dict[str, EncodedTable]) -> None:
    """PILOT.md's survival-table command: censored counts per follow-up month."""
    months, death = col(sites, "follow_up"), col(sites, "event_death")
    censored = Counter(np.floor(months[death == 0]).astype(int).tolist())
    assert sum(censored.values()) == 48 - 17


def test_design_is_deterministic_and_fhir_valid() -> None:
    assert pilot_patients() == pilot_patients()
    resources = list(pilot_resources())
    assert resources == list(pilot_resources())
    assert Counter(r["resourceType"] for r in resources)["Patient"] == 48
    for r in resources[::7]:
        get_fhir_model_class(r["resourceType"]).model_validate(r)


def test_copies_have_distinct_ids() -> None:
    ids = [r["id"] for r in pilot_resources("tm", copies=3)]
    assert len(ids) == len(set(ids))
