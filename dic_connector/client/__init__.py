"""The researcher's, data owner's and admin's client of the nodes' control API.

People reach the three compute nodes only through their control API over HTTPS, with a
bearer token per node and, for what must be believed by every node, an Ed25519 signature.
This package is that client, and the one the demo, the tests and the benchmarks use; the
``dic`` command and the synchronous facade (:mod:`.sync`) are built on it. It knows the API's JSON and
the signed payloads (:mod:`dic_connector.trust`), never a node's code: it imports no
``dic_connector.node``, so what it does is what any outside client can do. The people's
``dic`` commands are :mod:`.commands`, over a profile file (:mod:`.profile`).

Nothing here is global: each object holds its node's URL, the caller's token, the TLS
context and an ``aiohttp.ClientSession`` the caller opened and will close.

Modules, in dependency order:

- ``views``       the nodes' answers as typed, read-only values (study, request, result,
                  dataset, policy, audit reports)
- ``plots``       results as matplotlib figures, saved as PNG or SVG (matplotlib, the
                  ``plots`` extra, is imported only when a figure is made)
- ``node``        ``NodeClient``: one node's control API as one principal; refusals and
                  silence become ``ApiError``
- ``principal``   ``Principal``: a person's clients of the three nodes; waiting for a
                  status on one or all of them (404: not replicated yet)
- one layer, none of which imports another:

  - ``researcher``  ``Researcher``: studies, signed requests, results the nodes agree on
                    and their plots
  - ``data_owner``  ``DataOwner``: signed approvals and policies, dataset deletion
  - ``admin``       ``Admin``: every node's audit chain, the cross-node comparison

- ``profile``     a person's profile file (name, role, key, CA, the three nodes and their
                  tokens) and ``connect``, which yields them as one of the above
- ``sync``        ``Researcher``, ``DataOwner``, ``Admin`` without ``await``: the same
                  methods, run in a private event loop on a thread of the object's own
                  (scripts, notebooks)
- ``commands``    what ``dic study|analyze|requests|result|approve|deny|policy|datasets``
                  do, with table, JSON and CSV output and ``--plot`` files
"""

from __future__ import annotations

from dic_connector.client.admin import Admin
from dic_connector.client.data_owner import DataOwner
from dic_connector.client.node import NodeClient
from dic_connector.client.principal import VISIBLE, Principal
from dic_connector.client.researcher import Researcher
from dic_connector.client.views import (
    AnalysisInfo,
    AnalysisRequest,
    Approval,
    AuditComparison,
    AuditHead,
    AuditVerification,
    Dataset,
    DatasetVersion,
    NodeAttestation,
    PeerAudit,
    PeerAudits,
    PeerMismatch,
    Policy,
    Result,
    Study,
)

__all__ = ["VISIBLE", "Admin", "AnalysisInfo", "AnalysisRequest", "Approval", "AuditComparison",
           "AuditHead", "AuditVerification", "DataOwner", "Dataset", "DatasetVersion",
           "NodeAttestation", "NodeClient", "PeerAudit", "PeerAudits", "PeerMismatch", "Policy",
           "Principal", "Researcher", "Result", "Study"]
