"""A person registered on all three nodes, and waiting for requests there: :class:`Principal`.

Researchers, data owners and admins have the same account on every node (one name, one
signing key, a token per node) and usually talk to one of them, yet what they wait for
happens on others: a request submitted at node-1 must reach node-2 before its owner can
approve it there, and it is only done when it is ``completed`` on all three. So a principal
holds a :class:`~.node.NodeClient` per node and the index of the node it talks to, and
:meth:`Principal.wait` follows any of them.

A wait does not poll: it follows each request on each node with status reads that wait on
the node for a change (:meth:`~.node.NodeClient.watch`: ``?wait=`` with the ``ETag`` last
seen), so it makes about one read per status change instead of one per poll interval, and
hears of a change as soon as the node commits it. A node that answers unchanged before the
wait it was asked for (one that cuts waits short, or does not wait) is asked again after
``poll_s``, as before.

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
#: How soon a wait asks a node again that answered unchanged without waiting (see the
#: module docstring).
DEFAULT_POLL_S = 0.1
DEFAULT_WAIT_S = 60.0
#: The longest one status read waits on the node (seconds; the node may cut it shorter).
LONG_POLL_S = 25.0
#: Status reads one wait keeps open per node at once; the other requests are followed as
#: these end (a connection each: a session's pool has 100 by default).
WAITS_PER_NODE = 16

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        seen: dict[tuple[int, str], AnalysisRequest] = {}

        async def follow(k: int, limit: asyncio.Semaphore,
                         request_id: str) -> AnalysisRequest | None:
            """The request on ``clients[k]`` once in ``wanted``; None at the deadline."""
            client, etag = clients[k], None
            async with limit:
                while True:
                    wait_s = max(0.0, min(LONG_POLL_S, deadline - loop.time()))
                    asked = loop.time()
                    read = await client.watch(request_id, etag, wait_s, wanted)
                    if read.request is not None:
                        seen[k, request_id], etag = read.request, read.etag
                    state = seen.get((k, request_id))
                    if state is not None and state.ended and state.status not in wanted:
                        raise UnexpectedStatus(
                            f"request {request_id} ({state.analysis}) is {state.status} on "
                            f"{client.node}: {state.status_reason or 'no reason given'}",
                            state.status, state.status_reason)
                    if state is not None and state.status in wanted:
                        return state
                    if loop.time() >= deadline:
                        return None
                    if (not read.changed or read.etag is None) \
                            and loop.time() - asked < wait_s:  # the node did not wait
                        await asyncio.sleep(min(self.poll_s, deadline - loop.time()))

        limits = [asyncio.Semaphore(WAITS_PER_NODE) for _ in clients]
        tasks = [asyncio.create_task(follow(k, limits[k], request_id))
                 for k in range(len(clients)) for request_id in wanted_ids]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                error = task.exception() if task.done() else None
                if error is not None:
                    raise error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        found = [task.result() for task in tasks]
        pending = [f"{clients[k].node}: {request_id} "
                   f"{state.status if state else 'not there yet'}"
                   for k in range(len(clients)) for request_id in wanted_ids
                   if (state := seen.get((k, request_id))) is None
                   or state.status not in wanted]
        if pending:
            raise WaitTimeout(
                f"{len(pending)} request(s) not {'/'.join(sorted(wanted))} after "
                f"{timeout_s:.0f} s, e.g. {'; '.join(pending[:3])}")
        return [state for state in found if state is not None]
