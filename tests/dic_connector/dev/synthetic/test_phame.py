"""PHAME-like generator: deterministic, FHIR-valid, NDJSON/Bulk output, and phame.yaml
computes the same flags as a direct reading of the resources."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from fhir.resources.R4B import get_fhir_model_class

from dic_connector.dev.synthetic import (
    ndjson_lines,
    phame_resource_count,
    phame_resources,
    read_bulk,
    write_bulk,
)
from dic_connector.dev.synthetic.phame import DISEASES
from dic_connector.encoding.encode import encode_table
from dic_connector.encoding.validate import validate_rows
from dic_connector.mapping.assemble import build_cohort
from dic_connector.mapping.cohort import load_mapping
from dic_connector.mapping.columns import completed_years

MAPPING = Path(__file__).resolve().parents[4] / "mappings" / "phame.yaml"
PREFIXES = {"diabetes": ("E08", "E09", "E10", "E11", "E13"),
            "hypertension": ("I10", "I11", "I12", "I13", "I15", "I16"),
            "cervical_cancer": ("C53",), "breast_cancer": ("C50",), "lung_cancer": ("C34",),
            "colorectal_cancer": ("C18", "C19", "C20")}


def test_deterministic_and_seeded() -> None:
    a = list(phame_resources(500, seed=7))
    assert a == list(phame_resources(500, seed=7))
    assert a != list(phame_resources(500, seed=8))
    kinds = Counter(r["resourceType"] for r in a)
    assert kinds["Patient"] == 500 and 400 < kinds["Coverage"] < 500
    assert len({r["id"] for r in a}) == len(a)


def test_sample_validates_with_fhir_resources_r4b() -> None:
    resources = list(phame_resources(300, seed=1))
    for r in resources[::5]:
        get_fhir_model_class(r["resourceType"]).model_validate(r)


def test_code_sets_are_realistic() -> None:
    codes = {r["code"]["coding"][0]["code"] for r in phame_resources(5000, seed=2)
             if r["resourceType"] == "Condition"}
    for name, (disease_codes, _, _) in DISEASES.items():
        assert all(code.startswith(PREFIXES[name]) for code in disease_codes)
        assert codes & set(disease_codes), name
    assert "E78.5" in codes  # a look-alike that is not diabetes


def test_resource_count_is_about_right() -> None:
    resources = list(phame_resource_count(10_000))
    assert 10_000 <= len(resources) < 10_020
    assert resources[-1]["resourceType"] != "Patient" or len(resources) == 10_000


def test_ndjson_and_bulk_manifest(tmp_path: Path) -> None:
    resources = list(phame_resources(200, seed=3))
    lines = list(ndjson_lines(resources))
    assert all(line.endswith("\n") and "\n" not in line[:-1] for line in lines)
    manifest = write_bulk(tmp_path, resources)
    assert {o["type"] for o in manifest["output"]} == {"Patient", "Coverage", "Condition"}
    assert sum(o["count"] for o in manifest["output"]) == len(resources)
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert sorted(map(json.dumps, read_bulk(tmp_path))) == sorted(map(json.dumps, resources))


def test_phame_mapping_matches_direct_reading() -> None:
    resources = list(phame_resources(3000, seed=4))
    mapping = load_mapping(MAPPING)
    table = build_cohort(mapping, resources)
    clean, report, _ = validate_rows(table.rows, mapping)
    assert report.rows_rejected == 0 and len(clean) == 3000
    enc = encode_table(clean, mapping)
    codes: dict[str, list[str]] = defaultdict(list)
    for r in resources:
        if r["resourceType"] == "Condition":
            codes[r["subject"]["reference"].split("/")[1]].append(r["code"]["coding"][0]["code"])
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    for name, prefixes in PREFIXES.items():
        expected = [any(c.startswith(prefixes) for c in codes[p["id"]]) for p in patients]
        assert enc.column(name).tolist() == [int(e) for e in expected], name
    ages = [completed_years(dt.date.fromisoformat(p["birthDate"]), dt.date(2024, 1, 1))
            for p in patients]
    edges = [18, 35, 50, 65, 75]
    groups = np.searchsorted(edges, np.array(ages), side="right")
    assert np.array_equal(enc.column("age_group"), groups)
    coverage = sum(1 for r in resources if r["resourceType"] == "Coverage")
    assert int(enc.column("payer__present").sum()) == coverage
    assert enc.column("diagnoses").tolist() == [len(codes[p["id"]]) for p in patients]
    assert int(enc.column("zip=other").sum()) > 0
    race = Counter(p["extension"][0]["extension"][0]["valueCoding"]["code"] for p in patients)
    assert int(enc.column("race=white").sum()) == race["2106-3"]
    assert int(enc.column("race=unknown").sum()) == race["UNK"]
    payer = Counter(r["type"]["coding"][0]["code"] for r in resources
                    if r["resourceType"] == "Coverage")
    assert int(enc.column("payer=medicaid").sum()) == payer["2"]
    sex = Counter(p["gender"] for p in patients)
    assert int(enc.column("sex=female").sum()) == sex["female"]


def test_command_line_writes_bulk_directory(tmp_path: Path) -> None:
    from dic_connector.dev.synthetic.__main__ import main

    main(["phame", "--patients", "50", "--seed", "5", str(tmp_path / "phame")])
    main(["pilot", "--site", "tr", str(tmp_path / "pilot")])
    assert sum(1 for r in read_bulk(tmp_path / "phame") if r["resourceType"] == "Patient") == 50
    assert sum(1 for r in read_bulk(tmp_path / "pilot") if r["resourceType"] == "Patient") == 24
