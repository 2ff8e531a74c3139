"""The compute node: one of three, each run by a different institution (DESIGN.md §2, §6).

A node stores the share pairs connectors send it (never a row), verifies every request,
approval and policy itself, agrees with its two peers before any computation, runs the
analyses under MPC with them and serves the control-flow API.

Packages and modules, in dependency order:

- ``config``        the node's configuration (``DIC_*``), frozen and checked at load
- ``store``         SQLAlchemy async storage, encryption at rest, the audit log
- ``analyses``      the analyses catalogue with disclosure control under MPC
- ``coordination``  three-node agreement, replication, the computation itself
- ``api``           the control API (aiohttp, OpenAPI 3.1), ``create_app(config)``
- ``admin``         operator actions: migrate, register principals, issue tokens

``web/`` is not Python: the static files of the web page (HTML, ES modules, CSS) that
``api.ui`` serves at ``/ui/``.
"""
