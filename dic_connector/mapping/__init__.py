"""Declarative mappings: SQL-on-FHIR v2 ViewDefinitions over FHIR R4 resources.

Modules, in dependency order:

- ``fhirpath``      FHIRPath in two tiers: compiled closures, fhirpathpy fallback
- ``view_types``    declared column types checked against what the paths give
- ``view_compile``  ViewDefinition validation and compilation to a select tree
- ``view_codegen``  the select tree as one generated Python function per view
- ``view``          ``run_view``: the rows of a ViewDefinition over resources
- ``yaml_lines``    YAML with the line of every JSON path (for mapping-file errors)
- ``columns``       typed cohort columns and the rule for one value
- ``cohort``        mapping files (``dic-cohort/1``, ``mapping.schema.json``): load and check
- ``convert``       the column rules applied a whole column at a time
- ``assemble``      views -> one raw row per patient (join, per-patient aggregation)
- ``validate``      ``validate_rows``: typed clean rows + report, per-column policies
- ``encode``        ``encode_table``: int64 matrix + manifest, ready for secret sharing

Specification: https://sql-on-fhir.org/ig/latest/ (ViewDefinition), http://hl7.org/fhirpath/.

FHIR decimals: parse resources with ``json.loads(text, parse_float=decimal.Decimal)`` to keep
their written precision (FHIR says it is significant; ``lowBoundary()`` depends on it). Every
stage here takes a :class:`~decimal.Decimal` as it is; plain floats work too, with the
precision of their shortest repr.
"""

from __future__ import annotations

from .assemble import assemble_rows, build_cohort
from .cohort import CohortMapping, load_mapping, loads_mapping
from .encode import EncodedTable, encode_table
from .validate import ValidationReport, validate_rows
from .view import run_view

__all__ = [
    "CohortMapping",
    "EncodedTable",
    "ValidationReport",
    "assemble_rows",
    "build_cohort",
    "encode_table",
    "load_mapping",
    "loads_mapping",
    "run_view",
    "validate_rows",
]
