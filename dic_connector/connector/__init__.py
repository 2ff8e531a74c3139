"""The per-hospital connector: what runs beside the FHIR server or clinical database.

Modules, in dependency order:

- ``state``    the connector's own database: watermarks, run history in counts only,
               superseded versions still to erase (its own Alembic history)
- ``upload``   secret-share an encoded cohort table and deliver one share pair per node,
               with a two-phase commit so a version exists on all three nodes or on none;
               erase superseded versions and withdrawn datasets on all three
- ``lineage``  how a new version differs from every earlier one (rows only in either),
               counted from keyed row digests and declared to the nodes
- ``delta``    delta versions: which rows of the newest committed version a new pull keeps
               (by their keyed digests) and which are fresh, so only those are shared
- ``incremental`` after a notification, only the changed patients: discovered from the
               server's history, pulled by id, their base rows found by keyed pseudonyms
- ``consent``  who must be left out: MII broad-consent Consents (opt-out / opt-in), opt-out
               files and FHIR Lists/Groups, as patient keys with counts by reason
- ``config``   ``connector.yaml`` + ``DIC_CONNECTOR_*``: site, certificate, nodes, datasets
               (sources, mappings, triggers), every error naming its key
- ``logs``     JSON log lines, counts and names only; exceptions without their messages
- ``parallel`` NDJSON lines parsed and mapped in worker processes (both cores), only the
               compact view rows sent back
- ``pipeline`` the connector's job: source -> mapping -> validation -> encoding -> upload,
               the plaintext wiped as soon as each step has used it
- ``metrics``  Prometheus counters per dataset: rows pulled, rejected per rule, bytes per
               node, run durations, erasures still owed
- ``schedule`` when a dataset is due (intervals, cron in UTC, a subscription's reconcile
               period) and the loop that waits
- ``runs``     one run of a dataset: pull, consent, share, erase what it supersedes, record
- ``subscriptions`` FHIR Subscriptions (R5 Backport IG, classic R4 rest-hook) as a trigger:
               the subscription kept on the source server, the notification receiver,
               event numbers (duplicates, gaps), debounced runs, a watchdog
- ``service``  ``dic connector serve``: ``create_app(config)`` with the scheduler,
               ``/live``, ``/ready``, ``/metrics`` and the operator's ``/v1``
- ``commands`` what ``dic connector serve|pull|migrate|token`` do; ``pull``'s exit codes
"""
