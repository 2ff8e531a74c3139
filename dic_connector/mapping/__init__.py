"""Declarative cohort mappings: which patients, which typed columns, from which views.

A mapping file (``dic-cohort/1``, ``mappings/README.md``) declares a cohort table: SQL-on-FHIR
v2 ViewDefinitions (run by :mod:`dic_connector.sqlonfhir`) or a SQL query, the join to one
row per patient, and typed columns (numeric, categorical, boolean, date).

Modules, in dependency order:

- ``yaml_lines``  YAML with the line of every JSON path (for mapping-file errors)
- ``columns``     typed cohort columns and the rule for one value
- ``ordering``    ``order_by`` values ordered as instants (FHIRPath partial precision)
- ``cohort``      mapping files (``mapping.schema.json``): load and check
- ``assemble``    views -> one raw row per patient (chunked view runs, join, aggregation)

``run_view`` is re-exported here (``dic_connector.mapping.run_view``, the name DESIGN.md
gives); it lives in :mod:`dic_connector.sqlonfhir`.
"""

from __future__ import annotations

from dic_connector.mapping.assemble import CohortBuilder, assemble_rows, build_cohort
from dic_connector.mapping.cohort import CohortMapping, load_mapping, loads_mapping
from dic_connector.sqlonfhir import run_view

__all__ = [
    "CohortBuilder",
    "CohortMapping",
    "assemble_rows",
    "build_cohort",
    "load_mapping",
    "loads_mapping",
    "run_view",
]
