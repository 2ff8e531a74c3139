"""dic-connector: hospital cohorts analysed by three nodes under secure multiparty computation.

Two deployables live here, the hospital's **connector** and the **compute node**, beside what
both share and a **client** for the people who use them. A layer imports only layers above it
in the list below (``tests/test_layers.py`` reads the list in every package and enforces it).

Packages and modules, in dependency order:

- ``errors``       the one error hierarchy, grouped by who must act
- ``config``       configuration loading shared by the deployables (file, env, typed checks)
- ``database``     SQLite/PostgreSQL engines, column types, Alembic environments run from Python
- ``vocabulary``   roles, request states, decisions: the words of the control API
- ``trust``        canonical JSON, Ed25519 signatures, signed payloads, dataset ids, keyrings
- ``sqlonfhir``    SQL-on-FHIR v2 ViewDefinitions over FHIR R4, FHIRPath in two tiers
- ``mapping``      cohort mapping files and their typed columns
- ``encoding``     conversion, validation, fixed-point and one-hot encoding of a cohort table
- ``sources``      FHIR REST, Bulk Data ``$export``, NDJSON files, SQL databases
- one layer, none of which imports another:

  - ``connector``  the hospital's deployable: pipeline and upload of secret shares
  - ``client``     the researcher's and data owner's client of the nodes' control API
  - ``node``       the compute node's deployable: store, analyses, coordination, API

- ``dev``          the embedded demo, a local three-node deployment, synthetic FHIR data
- ``cli``          the ``dic`` command

The secure computation engine is the separate package :mod:`mpc`, which knows nothing of
this one.
"""

from __future__ import annotations

__version__ = "0.1.0"
