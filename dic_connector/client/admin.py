"""A node operator's view of the audit logs: :class:`Admin`.

Each node keeps its own hash-chained audit log; an admin asks every node to recompute its
chain (:meth:`Admin.verify_audit`), and one node to compare, for a computed request, every
node's chain against the heads the three recorded when they agreed
(:meth:`Admin.compare_audit`); and every node says what it witnessed of its peers' logs
in the periodic exchange of heads (:meth:`Admin.audit_peers`: a peer whose log has since
been truncated or rewritten is flagged there). None of them raises for a broken chain: the
report *is* the answer, and the caller decides what a broken chain means for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from dic_connector.client.principal import Principal
from dic_connector.client.views import AuditComparison, AuditVerification, PeerAudits


class Admin(Principal):
    """An admin registered on the three nodes."""

    async def verify_audit(self, nodes: Collection[int] | None = None
                           ) -> list[AuditVerification]:
        """Every node of ``nodes`` (default: all) recomputes its whole audit chain."""
        clients = self.clients(nodes)
        return list(await asyncio.gather(*(client.verify_audit() for client in clients)))

    async def compare_audit(self, request_id: str, at: int | None = None) -> AuditComparison:
        """Node ``at`` asks every node to attest its chain and result digest for
        ``request_id``."""
        return await self.node(at).compare_audit(request_id)

    async def audit_peers(self, nodes: Collection[int] | None = None) -> list[PeerAudits]:
        """What every node of ``nodes`` (default: all) recorded of its peers' audit heads,
        and the peers it flagged."""
        clients = self.clients(nodes)
        return list(await asyncio.gather(*(client.audit_peers() for client in clients)))
