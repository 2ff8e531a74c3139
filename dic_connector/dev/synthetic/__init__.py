"""Seeded, deterministic synthetic FHIR R4 data for tests, demo and benchmarks.

Modules, in dependency order:

- ``codes``         code systems, profiles and extension URLs shared with ``mappings/``
- ``ndjson``        NDJSON files with a Bulk Data style manifest
- ``pilot_design``  the 48 patients of the LMU/Gemelli pilot, built to reproduce PILOT.md
- ``pilot``         their FHIR resources (MII KDS / mCODE / LOINC conventions), per site
- ``phame``         PHAME-like US sites of any size (Catalyst/CAPriCORN), numpy-vectorised

``python -m dic_connector.dev.synthetic pilot|phame DIR`` writes them as NDJSON.
"""

from __future__ import annotations

from dic_connector.dev.synthetic.ndjson import ndjson_lines, read_bulk, write_bulk
from dic_connector.dev.synthetic.phame import phame_resource_count, phame_resources
from dic_connector.dev.synthetic.pilot import patient_resources, pilot_resources
from dic_connector.dev.synthetic.pilot_design import PilotPatient, pilot_patients

__all__ = [
    "PilotPatient",
    "ndjson_lines",
    "patient_resources",
    "phame_resource_count",
    "phame_resources",
    "pilot_patients",
    "pilot_resources",
    "read_bulk",
    "write_bulk",
]
