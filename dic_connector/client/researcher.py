"""A researcher: studies, signed analysis requests, and results the nodes agree on.

A researcher's word reaches the nodes signed: :meth:`Researcher.submit` builds the
``analysis_request`` payload (:mod:`dic_connector.trust.payloads`) with an id chosen here,
so submitting it again is idempotent, and signs it with the researcher's Ed25519 key, whose
public half an admin registered on every node; each node verifies it on its own. The key
never leaves this object (it is not in its ``repr``).

A result is read from every node and used only when all of them hold the same aggregates:
the nodes compute the same opened values from their shares, so a difference means one of
them is broken or lying (:class:`~dic_connector.errors.ResultMismatch`); :meth:`Researcher.plot`
draws such a result into a PNG or SVG file (:mod:`.plots`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.client import plots
from dic_connector.client.node import NodeClient
from dic_connector.client.principal import DEFAULT_POLL_S, Principal
from dic_connector.client.views import AnalysisInfo, AnalysisRequest, Result, Study
from dic_connector.errors import ClientError, ResultMismatch
from dic_connector.trust import payloads, signing

#: How long a researcher's client trusts a node's catalogue before reading it again (s).
CATALOGUE_TTL_S = 300.0


class Researcher(Principal):
    """A researcher registered on the three nodes, with their signing key."""

    def __init__(self, name: str, key: Ed25519PrivateKey, nodes: Sequence[NodeClient],
                 at: int = 0, poll_s: float = DEFAULT_POLL_S) -> None:
        super().__init__(name, nodes, at, poll_s)
        self._key = key
        #: each node's catalogue as read last, and when (loop time): a submission names
        #: the newest version, and reading the catalogue for every one was a call (and
        #: the node's whole catalogue serialised) in each request's latency
        self._catalogues: dict[int, tuple[float, list[AnalysisInfo]]] = {}

    async def create_study(self, title: str, description: str = "",
                           at: int | None = None) -> Study:
        """A new study on node ``at`` (studies travel to the other nodes with the first
        request submitted in them)."""
        return await self.node(at).create_study(title, description)

    async def studies(self, at: int | None = None) -> list[Study]:
        return await self.node(at).studies()

    async def submit(self, study: Study | str, analysis: str,
                     datasets: Iterable[uuid.UUID | str],
                     parameters: Mapping[str, Any] | None = None,
                     analysis_version: str | None = None,
                     request_id: uuid.UUID | str | None = None,
                     at: int | None = None) -> str:
        """Sign and submit a request of ``analysis`` on ``datasets`` (ids) at node ``at``;
        its id. ``analysis_version`` defaults to the newest the node's catalogue offers (so
        ``count`` on a boolean counts the rows where it is true: count v2). Give
        ``request_id`` to resubmit the same request (the node answers the one it holds)."""
        study_id = study.id if isinstance(study, Study) else str(study)
        if analysis_version is None:
            analysis_version = await self.newest_version(analysis, at)
        payload = payloads.analysis_request(
            study_id, self.name, analysis, datasets, dict(parameters or {}), analysis_version,
            None if request_id is None else uuid.UUID(str(request_id)))
        accepted = await self.node(at).submit(study_id, signing.signed(payload, self._key))
        return accepted.id

    async def catalogue(self, at: int | None = None) -> list[AnalysisInfo]:
        """Node ``at``'s analyses catalogue, read again once :data:`CATALOGUE_TTL_S` old (a
        catalogue changes when the node is upgraded, not between requests)."""
        index = self.at if at is None else at
        now = asyncio.get_running_loop().time()
        cached = self._catalogues.get(index)
        if cached is None or now - cached[0] > CATALOGUE_TTL_S:
            cached = self._catalogues[index] = (now, await self.node(index).analyses())
        return cached[1]

    async def newest_version(self, analysis: str, at: int | None = None) -> str:
        """The highest version of ``analysis`` in node ``at``'s catalogue."""
        catalogue = await self.catalogue(at)
        versions = [info.version for info in catalogue if info.name == analysis]
        if not versions:
            known = sorted({info.name for info in catalogue})
            raise ClientError(f"no analysis '{analysis}' in the catalogue of "
                              f"{self.node(at).node} (it offers: {', '.join(known)})")
        return max(versions, key=lambda v: tuple(int(part) for part in v.split(".")))

    async def cancel(self, request_id: str, at: int | None = None) -> AnalysisRequest:
        """Withdraw a request before it completes (the node tells the others)."""
        return await self.node(at).cancel(request_id)

    async def result(self, request_id: str, nodes: Collection[int] | None = None) -> Result:
        """The result of a completed request, read from every node of ``nodes`` (default:
        all); :class:`ResultMismatch` when their aggregates differ."""
        clients = self.clients(nodes)
        results = await asyncio.gather(*(client.result(request_id) for client in clients))
        first = results[0]
        differing = [client.node for client, result in zip(clients, results, strict=True)
                     if result.aggregates != first.aggregates]
        if differing:
            raise ResultMismatch(f"request {request_id}: {', '.join(differing)} hold(s) "
                                 f"another result than {clients[0].node}; trust none of them")
        return first

    async def plot(self, request_id: str, path: str | Path,
                   nodes: Collection[int] | None = None) -> Path:
        """Draw the result of a completed request (read from every node of ``nodes`` and
        compared, as :meth:`result`) into ``path``, PNG or SVG by its suffix; the path.
        :class:`~dic_connector.errors.PlotError` when the analysis has no plot or the
        result releases nothing to draw."""
        request = await self.node().request(request_id)
        plots.check(request.analysis, path)
        result = await self.result(request_id, nodes)
        return plots.save(plots.draw(request.analysis, result.aggregates, request.parameters),
                          path)
