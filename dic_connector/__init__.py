"""dic-connector: hospital cohorts analysed by three nodes under secure multiparty computation.

Modules and packages, in dependency order (lower layers never import higher ones):

- ``errors``     the one error hierarchy
- ``mapping``    SQL-on-FHIR v2 ViewDefinitions, FHIRPath, typed cohort mappings
- ``sources``    FHIR REST, Bulk Data $export, NDJSON files, SQL databases
- ``store``      SQLAlchemy async storage, encryption at rest, audit log
- ``cli``        the ``dic`` command

The secure computation engine is the separate package :mod:`mpc`, which knows nothing of
this one.
"""

from __future__ import annotations

__version__ = "0.1.0"
