"""A person registered on all three nodes, and waiting for requests there: :class:`Principal`.

Researchers, data owners and admins have the same account on every node (one name, one
signing key, a token per node) and usually talk to one of them, yet what they wait for
happens on others: a request submitted at node-1 must reach node-2 before its owner can
approve it there, and it is only done when it is ``completed`` on all three. So a principal
holds a :class:`~.node.NodeClient` per node and the index of the node it talks to, and
:meth:`Principal.wait` polls any of them.

While a request has not been replicated to a node, that node answers 404: waiting treats it
as "not there yet", never as an error. A request that *ends* in a status other than the one
awaited (``failed`` while waiting for ``completed``) stops the wait at once with the node's
reason (:class:`~dic_connector.errors.UnexpectedStatus`): it will never get there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Sequence

from dic_connector.client.node import NodeClient
from dic_connector.client.views import ENDED, AnalysisRequest, Dataset
from dic_connector.errors import ApiError, UnexpectedStatus, WaitTimeout
from dic_connector.vocabulary import RequestStatus

#: Every status but the ends other than ``completed`` (rejected, failed, cancelled): the
#: request has reached the node and may still complete (what an owner waits for before
#: approving it there).
VISIBLE: frozenset[RequestStatus] = frozenset(RequestStatus) - (ENDED - {RequestStatus.COMPLETED})
#: How often a wait asks the nodes: a request's status changes on the nodes' coordination
#: tick (1 s by default), so polling much faster only loads them.
DEFAULT_POLL_S = 0.1
DEFAULT_WAIT_S = 60.0

#: A status, given as the enum or its value (``"completed"``).
StatusLike = RequestStatus | str


def statuses(until: StatusLike | Iterable[StatusLike]) -> frozenset[RequestStatus]:
    """``until`` as a set of statuses; one status may be given alone."""
    items = (until,) if isinstance(until, str) else until
    return frozenset(RequestStatus(s) for s in items)


async def _find(node: NodeClient, request_id: str) -> AnalysisRequest | None:
    """The request on ``node``; None for the 404 of a request not replicated there yet."""
    try:
        return await node.request(request_id)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


async def _seen(node: NodeClient, ids: Sequence[str]) -> dict[str, AnalysisRequest | None]:
    """The requests of ``ids`` on ``node``: one ``GET`` for one id (cheap to poll fast),
    the caller's listing for several (one call instead of one per id)."""
    if len(ids) == 1:
        return {ids[0]: await _find(node, ids[0])}
    listing = {request.id: request for request in await node.requests()}
    return {request_id: listing.get(request_id) for request_id in ids}


class Principal:
    """One person's clients of the three nodes, and the node they talk to (``at``)."""

    def __init__(self, name: str, nodes: Sequence[NodeClient], at: int = 0,
                 poll_s: float = DEFAULT_POLL_S) -> None:
        self.name = name
        self.nodes = tuple(nodes)
        self.at = at
        self.poll_s = poll_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, at={self.node().node})"

    def node(self, at: int | None = None) -> NodeClient:
        """The client of node ``at``, by default of the node this person talks to."""
        return self.nodes[self.at if at is None else at]

    def clients(self, nodes: Collection[int] | None = None) -> tuple[NodeClient, ...]:
        """The clients of the nodes of ``nodes`` (indices), by default of all three."""
        return self.nodes if nodes is None else tuple(self.nodes[i] for i in nodes)

    async def datasets(self, at: int | None = None) -> list[Dataset]:
        return await self.node(at).datasets()

    async def requests(self, at: int | None = None) -> list[AnalysisRequest]:
        return await self.node(at).requests()

    async def status(self, request_id: str, at: int | None = None) -> AnalysisRequest | None:
        """The request as node ``at`` sees it; None while it has not reached that node."""
        return await _find(self.node(at), request_id)

    async def wait(self, ids: str | Iterable[str],
                   until: StatusLike | Iterable[StatusLike] = RequestStatus.COMPLETED,
                   nodes: Collection[int] | None = None,
                   timeout_s: float = DEFAULT_WAIT_S) -> list[AnalysisRequest]:
        """Until every request of ``ids`` has a status in ``until`` on every node of
        ``nodes`` (default: all); the requests as last seen, node by node in the order of
        ``nodes``, each in the order of ``ids``.

        :class:`UnexpectedStatus` as soon as one ends in a status not in ``until``;
        :class:`WaitTimeout` after ``timeout_s``; an :class:`ApiError` other than 404 (a
        node down, a refusal) is raised as it comes.
        """
        wanted = statuses(until)
        wanted_ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        clients = self.clients(nodes)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            seen = await asyncio.gather(*(_seen(c, wanted_ids) for c in clients))
            pending: list[str] = []
            found: list[AnalysisRequest] = []
            for client, states in zip(clients, seen, strict=True):
                for request_id in wanted_ids:
                    state = states[request_id]
                    if state is not None and state.ended and state.status not in wanted:
                        raise UnexpectedStatus(
                            f"request {request_id} ({state.analysis}) is {state.status} on "
                            f"{client.node}: {state.status_reason or 'no reason given'}",
                            state.status, state.status_reason)
                    if state is None or state.status not in wanted:
                        pending.append(f"{client.node}: {request_id} "
                                       f"{state.status if state else 'not there yet'}")
                    else:
                        found.append(state)
            if not pending:
                return found
            if asyncio.get_running_loop().time() > deadline:
                raise WaitTimeout(
                    f"{len(pending)} request(s) not {'/'.join(sorted(wanted))} after "
                    f"{timeout_s:.0f} s, e.g. {'; '.join(pending[:3])}")
            await asyncio.sleep(self.poll_s)
