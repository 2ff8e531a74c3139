"""SQL-on-FHIR v2: ViewDefinitions over FHIR R4 resources, with FHIRPath in two tiers.

A ViewDefinition (https://sql-on-fhir.org/ig/latest/) flattens resources into rows with
FHIRPath columns, ``forEach``, ``where``, ``unionAll`` and constants. The engine passes the
whole HL7 conformance suite; its public entry point is :func:`run_view`.

Modules, in dependency order:

- ``fhirpath``      FHIRPath in two tiers: compiled closures, fhirpathpy fallback
- ``view_types``    declared column types checked against what the paths give
- ``view_tree``     the select tree: columns, selects, rows (what codegen is given)
- ``view_codegen``  the select tree as one generated Python function per view
- ``view_compile``  ViewDefinition validation and compilation to a select tree
- ``view``          ``run_view``: the rows of a ViewDefinition over resources

FHIR decimals: parse resources with ``json.loads(text, parse_float=decimal.Decimal)`` to keep
their written precision (FHIR says it is significant; ``lowBoundary()`` depends on it).
"""

from __future__ import annotations

from dic_connector.sqlonfhir.view import run_view

__all__ = ["run_view"]
