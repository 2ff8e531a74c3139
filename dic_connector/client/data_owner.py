"""A site's data owner: signed approvals and denials, standing policies, dataset deletion.

An owner may approve at any node, and the request may have been submitted at another: it
reaches the owner's node by replication, so :meth:`DataOwner.approve` first waits until the
node shows it (a 404 there means "not yet", see :mod:`.principal`), then posts one signed
``approval`` payload per request. Each node re-verifies the signature against the key
registered on it, so the approval's word does not depend on the node it was given to.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.client.node import NodeClient
from dic_connector.client.principal import DEFAULT_POLL_S, DEFAULT_WAIT_S, VISIBLE, Principal
from dic_connector.client.views import AnalysisRequest, Policy
from dic_connector.trust import payloads, signing
from dic_connector.vocabulary import Decision


class DataOwner(Principal):
    """The data owner of ``site``, registered on the three nodes, with their signing key."""

    def __init__(self, name: str, site: str, key: Ed25519PrivateKey,
                 nodes: Sequence[NodeClient], at: int = 0,
                 poll_s: float = DEFAULT_POLL_S) -> None:
        super().__init__(name, nodes, at, poll_s)
        self.site = site
        self._key = key

    async def approve(self, ids: str | Iterable[str], at: int | None = None,
                      decision: Decision | str = Decision.APPROVE,
                      timeout_s: float = DEFAULT_WAIT_S) -> list[AnalysisRequest]:
        """Sign ``decision`` (approve or deny) on each request of ``ids`` at node ``at``,
        once that node shows them all; the requests as the node answered.

        :class:`~dic_connector.errors.UnexpectedStatus` if one was already rejected, failed
        or cancelled, :class:`~dic_connector.errors.WaitTimeout` if one does not arrive in
        ``timeout_s``.
        """
        index = self.at if at is None else at
        wanted = [ids] if isinstance(ids, str) else list(ids)
        await self.wait(wanted, until=VISIBLE, nodes=(index,), timeout_s=timeout_s)
        node = self.node(index)
        answers = []
        for request_id in wanted:  # one after the other: each is a write on the node
            body = signing.signed(payloads.approval(request_id, self.site,
                                                    Decision(decision).value), self._key)
            answers.append(await node.approve(request_id, body))
        return answers

    async def add_policy(self, analyses: Sequence[str], columns: Sequence[str],
                         min_cell_count: int, valid_for: dt.timedelta,
                         at: int | None = None,
                         perturbation: dict[str, Any] | None = None,
                         min_subset_size: int | None = None, max_levels: int | None = None,
                         ledger: bool | None = None) -> Policy:
        """Sign a standing policy: every request of ``analyses`` on ``columns`` (``"*"``
        for any) is approved in advance for ``valid_for``, with cells of at least
        ``min_cell_count`` and, with ``perturbation`` (``{"max_noise": D, "variance": V,
        "js": 0}``), cell-key perturbed counts; ``min_subset_size``, ``max_levels`` and
        ``ledger=True`` tighten those settings too (the node refuses a policy that would
        loosen one of its own, :class:`~dic_connector.errors.ApiError` 403)."""
        payload = payloads.policy(self.site, list(analyses), list(columns), min_cell_count,
                                  valid_for, perturbation, min_subset_size, max_levels,
                                  ledger)
        return await self.node(at).add_policy(signing.signed(payload, self._key))

    async def policies(self, at: int | None = None) -> list[Policy]:
        return await self.node(at).policies()

    async def revoke_policy(self, policy_id: str, at: int | None = None) -> Policy:
        return await self.node(at).revoke_policy(policy_id)

    async def delete_dataset(self, dataset_id: str, at: int | None = None) -> int:
        """Erase a dataset of the site on every node (asked at ``at``, which tells the
        others); the number of versions erased there."""
        return await self.node(at).delete_dataset(dataset_id)
