"""Secret-share an encoded cohort table and deliver it to the three nodes, all or nothing.

For each column x of the encoded table (integers, already fixed-point: see
``mapping.encode``), the connector draws a fresh replicated sharing x = x_0 + x_1 + x_2
(:func:`mpc.sharing.share`), zeroes that column of the plaintext matrix it was handed, and
sends node i only its pair (x_i, x_(i+1)). Columns are shared one after another as the
sends proceed, never all at once: the uploader holds the share pairs of a few columns
(:data:`SENDS_PER_NODE`, :data:`QUEUED_COLUMNS`), 16 bytes per row and node each, not the
whole matrix's. The transfer is a two-phase commit (Gray, "Notes on Data Base Operating
Systems", 1978) driven by the connector over mutual TLS, the connector authenticated by its
site certificate:

1. begin on every node (a ``receiving`` version under one id chosen here);
2. every column's pair to every node (one ``PUT`` per column and node, in column order);
3. prepare on every node: each votes ready only with every column stored;
4. commit on every node. Any failure before 4 aborts on every node it can reach (what it
   cannot reach, the node's stale-upload cleanup removes if it never voted; a node that
   voted ready learns from its peers that the version was aborted everywhere). A failure
   during 4 is retried (commit is idempotent); if a node stays unreachable the version id
   is reported as in doubt, and analyses, which require the version committed on all three
   nodes, do not use it until that node commits too: when it is back it asks its peers,
   learns the version was committed (:mod:`dic_connector.node.coordination.recovery`) and
   commits on its own, and :meth:`Uploader.commit` retries the commit from here.

:meth:`Uploader.delete_dataset` withdraws a dataset of the site (consent or data withdrawn
by the hospital): ``DELETE /v1/uploads/datasets/{id}`` on every node, where ``id`` is the
dataset id every node derives from site and name
(:func:`~dic_connector.node.store.datasets.dataset_uuid`). Each node erases every version's blobs
and keys and audits the deletion. Deleting is idempotent on the nodes, so it shares the
commit's retry loop (:meth:`Uploader._until_confirmed`): nodes that failed are asked again
with exponential backoff, and nodes that still have not confirmed are named in the
:class:`~dic_connector.errors.CoordinationError`; calling it again later completes it.

:meth:`Uploader.erase_older` erases a dataset's superseded versions: once a new version is
committed on all three nodes (e.g. after a patient withdrew consent and the new version
leaves their rows out), ``POST /v1/uploads/{version}/supersede`` on every node erases every
older version of that dataset there (blobs and keys; see
:func:`dic_connector.node.api.uploads.supersede`). It shares the same retry loop and
reports the nodes that did not confirm in the same way. :meth:`Uploader.upload` never calls
it: the connector service decides when, so it can record the erasure as pending before it
asks and retry it later until all three nodes confirm.

:meth:`Uploader.upload_delta` sends a *delta version* (:mod:`.delta`) through the same
two-phase commit: its manifest names the base version and the base row positions to keep,
and the bodies hold the pairs of the fresh rows only (several columns per request, up to
:data:`FRESH_BATCH_BYTES`), which every node appends to its own pairs of the kept base
rows. A node that cannot (base not committed there, other
columns) refuses the begin; the upload is then aborted everywhere before any row is shared
and :class:`~dic_connector.errors.DeltaRefused` tells the caller to send it in full.

Retries are for failures that may pass (no answer, 5xx, 408, 429); a node that refuses
(another 4xx, e.g. a certificate of another site) is not asked again.

Transport seam (the same shape as ``sources.http.HttpClient`` and
``node.coordination.peers.PeerClient``): ``Uploader(..., session=s)`` sends every call of
every upload and erasure through the caller's ``aiohttp.ClientSession``, which the caller
owns and the uploader never closes. Without ``session`` each :meth:`Uploader.upload`,
:meth:`Uploader.delete_dataset` and :meth:`Uploader.erase_older` opens and closes a session
of its own. The
connector's client certificate, the node's expected certificate name (``server_hostname``)
and the timeout are passed per request, so an injected session (a test's counting or
fault-injecting middleware) still authenticates by mutual TLS exactly as our own does.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from dic_connector.errors import CoordinationError, DeltaRefused, UploadError
from dic_connector.trust.dataset_ids import dataset_uuid
from mpc.ring import as_ring
from mpc.sharing import share
from mpc.tls import NodeTls

N_NODES = 3
#: column bodies waiting per node behind the one being sent (see Uploader._send_columns)
QUEUED_COLUMNS = 1
#: column requests in flight per node at once. One: two overlapped a node's store of one
#: column with the next transfer, but showed no gain on 2 cores, cost ~150 MiB at 10^6
#: rows, and opened a second connection per node mid-upload (one keep-alive connection per
#: node is what operators see in their proxies and firewalls)
SENDS_PER_NODE = 1
#: most share bytes per node in one request of a delta version's fresh rows (several
#: columns each; :meth:`Uploader._send_fresh`)
FRESH_BATCH_BYTES = 4 << 20
OCTETS = {"Content-Type": "application/octet-stream"}


@dataclass(frozen=True)
class NodeEndpoint:
    """A node's control API base URL and the name its TLS certificate carries."""

    url: str
    name: str



class Uploader:
    """Delivers dataset versions of one site to the three nodes, erases superseded versions
    and withdraws datasets.

    ``commit_retries`` is the number of attempts per node of an idempotent step (commit,
    dataset deletion, erasure of superseded versions); ``retry_delay_s`` the first backoff,
    doubled after each attempt. ``session``, if given, carries every request and stays open
    (see the module docstring).
    """

    def __init__(self, nodes: Sequence[NodeEndpoint], tls: NodeTls, site: str,
                 timeout_s: float = 60.0, commit_retries: int = 5,
                 retry_delay_s: float = 0.5, *,
                 session: aiohttp.ClientSession | None = None) -> None:
        if len(nodes) != N_NODES:
            raise ValueError("exactly three nodes are required")
        self.nodes = list(nodes)
        self.site = site
        self._ssl = tls.client_context()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._commit_retries = commit_retries
        self._retry_delay_s = retry_delay_s
        self._injected = session

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """The injected session, left open; or one of our own for this operation, closed after."""
        if self._injected is not None:
            yield self._injected
            return
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            yield session

    async def _call(self, session: aiohttp.ClientSession, node: int, method: str, path: str,
                    **kwargs: Any) -> dict[str, Any]:
        endpoint = self.nodes[node]
        try:
            async with session.request(method, endpoint.url.rstrip("/") + path, ssl=self._ssl,
                                       server_hostname=endpoint.name, timeout=self._timeout,
                                       **kwargs) as response:
                if response.status >= 400:
                    detail = (await response.json(content_type=None) or {}).get("detail", "")
                    raise UploadError(f"{endpoint.name}: {method} {path.split('/columns/')[0]} "
                                      f"answered {response.status}: {detail}", response.status)
                return dict(await response.json())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise UploadError(f"{endpoint.name}: {method} failed: {type(exc).__name__}") from exc

    async def _everywhere(self, session: aiohttp.ClientSession, method: str, path: str,
                          **kwargs: Any) -> list[dict[str, Any]]:
        return await self._settle(self._call(session, i, method, path, **kwargs)
                                  for i in range(N_NODES))

    @staticmethod
    async def _settle(calls: Any) -> list[Any]:
        """Await every call before deciding: raising at the first failure would let an abort
        overtake a slower node's still-running step and leave that step's effect behind."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(results)

    @staticmethod
    def share_column(column: npt.NDArray[np.int64]) -> list[bytearray]:
        """``column`` freshly shared: node i's pair ``x_i || x_(i+1)`` as the body of its
        ``PUT .../columns/{name}`` (16 bytes per row, little-endian uint64, as
        :meth:`mpc.sharing.SharePair.to_bytes`); zeroes ``column`` (which may be a view into
        the caller's matrix)."""
        try:
            views = share(as_ring(np.ascontiguousarray(column)))
        finally:
            column.fill(0)  # the plaintext leaves this process only as shares
        rows = len(column)
        bodies = []
        for view in views:
            body = bytearray(16 * rows)
            both = np.frombuffer(body, dtype="<u8")
            both[:rows] = view.a
            both[rows:] = view.b
            bodies.append(body)
        return bodies

    async def upload(self, dataset: str, values: npt.NDArray[np.int64],
                     manifest: dict[str, Any], version_id: uuid.UUID | None = None
                     ) -> uuid.UUID:
        """Share ``values`` (rows x columns of ``manifest``) to the nodes; the new version id.

        Each column of ``values`` is zeroed as soon as it is shared, and ``values`` entirely
        before this returns or raises, whatever happens.
        """
        if values.ndim != 2 or values.shape[1] != len(manifest["columns"]):
            raise ValueError(f"values must be rows x {len(manifest['columns'])} columns")
        try:
            return await self.upload_columns(
                dataset, int(values.shape[0]), (values[:, j] for j in range(values.shape[1])),
                manifest, version_id)
        finally:
            values.fill(0)

    async def upload_columns(self, dataset: str, rows: int,
                             columns: Iterable[npt.NDArray[np.int64]],
                             manifest: dict[str, Any], version_id: uuid.UUID | None = None
                             ) -> uuid.UUID:
        """:meth:`upload` for a matrix given column by column: ``columns`` yields the
        manifest's columns in order, ``rows`` int64 values each, and is consumed only as
        fast as the columns are sent, so it may produce them lazily (as
        :meth:`~dic_connector.encoding.EncodedColumns.matrix_columns` does). Each column is
        zeroed once shared. A column of another length, or another number of columns than
        the manifest's, aborts the upload with a :class:`ValueError`.
        """
        return await self._upload(dataset, rows, rows, columns, manifest, version_id)

    async def upload_delta(self, dataset: str, rows: int, fresh: int,
                           columns: Iterable[npt.NDArray[np.int64]],
                           manifest: dict[str, Any], version_id: uuid.UUID | None = None
                           ) -> uuid.UUID:
        """:meth:`upload_columns` of a delta version (:mod:`.delta`): ``manifest`` carries
        the ``delta`` section (base version, kept positions), ``rows`` is the new version's
        row count and ``columns`` yields only the ``fresh`` rows of each column, which every
        node appends to its kept base rows. The same two-phase commit; if a node refuses the
        begin (base not committed there, columns differ: a 4xx), the upload is aborted
        everywhere and :class:`~dic_connector.errors.DeltaRefused` raised before a column
        is taken from ``columns``, so the caller can send the version in full."""
        if "delta" not in manifest:
            raise ValueError("a delta version's manifest needs its 'delta' section")
        return await self._upload(dataset, rows, fresh, columns, manifest, version_id)

    async def _send_fresh(self, session: aiohttp.ClientSession, base: str, names: list[str],
                          fresh: int, columns: Iterator[npt.NDArray[np.int64]]) -> None:
        """A delta version's columns (``fresh`` rows each) shared and sent in batches of
        consecutive columns, at most :data:`FRESH_BATCH_BYTES` per node and request
        (``PUT .../fresh/{first}/{count}``), one batch after another: a few changed rows
        need a few requests, not one per column."""
        per_batch = max(1, FRESH_BATCH_BYTES // max(16 * fresh, 1))
        first = 0
        while first < len(names):
            count = min(per_batch, len(names) - first)
            bodies = [bytearray() for _ in range(N_NODES)]
            for name in names[first:first + count]:
                column = _next_column(columns, len(names), name, fresh)
                for body, pair in zip(bodies, self.share_column(column), strict=True):
                    body += pair
            await self._settle(
                self._call(session, i, "PUT", f"{base}/fresh/{first}/{count}",
                           data=bytes(bodies[i]), headers=OCTETS) for i in range(N_NODES))
            first += count
        extra = next(columns, None)
        if extra is not None:
            extra.fill(0)
            raise ValueError(f"more columns given than the {len(names)} declared")

    async def _upload(self, dataset: str, rows: int, sent: int,
                      columns: Iterable[npt.NDArray[np.int64]], manifest: dict[str, Any],
                      version_id: uuid.UUID | None) -> uuid.UUID:
        names = [c["name"] for c in manifest["columns"]]
        version = version_id or uuid.uuid4()
        base = f"/v1/uploads/{version}"
        async with self._session() as session:
            try:
                try:
                    await self._everywhere(session, "PUT", base, json={
                        "dataset": dataset, "site": self.site, "row_count": rows,
                        "manifest": manifest})
                except UploadError as exc:
                    if "delta" in manifest and not exc.transient:
                        raise DeltaRefused(str(exc), exc.status) from exc
                    raise
                if "delta" in manifest:
                    await self._send_fresh(session, base, names, sent, iter(columns))
                else:
                    await self._send_columns(session, base, names, sent, iter(columns))
                await self._everywhere(session, "POST", f"{base}/prepare")
            except (UploadError, ValueError):
                await self._abort(session, base)
                raise
            await self._commit(session, base)
        return version

    async def _send_columns(self, session: aiohttp.ClientSession, base: str,
                            names: list[str], rows: int,
                            columns: Iterator[npt.NDArray[np.int64]]) -> None:
        """Share column after column and send node i its pair, in column order.

        :data:`SENDS_PER_NODE` sender tasks per node take the bodies, in column order, from
        the node's queue of :data:`QUEUED_COLUMNS`; the next column is taken from
        ``columns`` and shared only when every queue has room, so at most
        ``SENDS_PER_NODE + QUEUED_COLUMNS + 1`` columns' bodies are held per node (those
        being sent, the queued ones, the one just shared): memory is bounded by a few
        columns, not the matrix. After a node's send fails, no further column is shared; every sender
        finishes what it is sending before the first failure is raised (as
        :meth:`_settle`: an abort must not overtake a node's still-running step).
        """
        queues: list[asyncio.Queue[tuple[str, bytearray] | None]] = [
            asyncio.Queue(maxsize=QUEUED_COLUMNS) for _ in range(N_NODES)]
        failed = asyncio.Event()

        async def sender(node: int) -> None:
            error: Exception | None = None
            while (item := await queues[node].get()) is not None:
                if error is None:  # after a failure, only drain the queue
                    name, body = item
                    try:
                        await self._call(session, node, "PUT", f"{base}/columns/{name}",
                                         data=body, headers=OCTETS)
                    except Exception as exc:  # raised below, once the queue is drained
                        error = exc
                        failed.set()
            if error is not None:
                raise error

        tasks = [asyncio.ensure_future(sender(i)) for i in range(N_NODES)
                 for _ in range(SENDS_PER_NODE)]
        try:
            for name in names:
                if failed.is_set():
                    break
                column = _next_column(columns, len(names), name, rows)
                bodies = self.share_column(column)
                for node in range(N_NODES):
                    await queues[node].put((name, bodies[node]))
                del bodies, column
            else:
                extra = next(columns, None)
                if extra is not None:
                    extra.fill(0)
                    raise ValueError(f"more columns given than the {len(names)} declared")
            for queue in queues:
                for _ in range(SENDS_PER_NODE):
                    await queue.put(None)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        await self._settle(tasks)

    async def _abort(self, session: aiohttp.ClientSession, base: str) -> None:
        await asyncio.gather(*(self._call(session, i, "DELETE", base) for i in range(N_NODES)),
                             return_exceptions=True)

    async def commit(self, version_id: uuid.UUID) -> None:
        """Commit an upload again on every node (after a
        :class:`~dic_connector.errors.CoordinationError` "in doubt"): idempotent where it is
        committed, and a node that voted ready on it keeps it until then, however long it
        was away. Raises the same error naming the nodes that still did not confirm."""
        async with self._session() as session:
            await self._commit(session, f"/v1/uploads/{version_id}")

    async def _commit(self, session: aiohttp.ClientSession, base: str) -> None:
        pending, last = await self._until_confirmed(session, "POST", f"{base}/commit")
        if pending:
            raise CoordinationError(
                f"upload {base.rsplit('/', 1)[1]} is in doubt: committed except on "
                f"{self._names(pending)} ({last}); retry the commit when they are back")

    async def _until_confirmed(self, session: aiohttp.ClientSession, method: str, path: str
                               ) -> tuple[list[int], UploadError | None]:
        """Call an idempotent operation on every node until each confirms.

        Nodes whose call failed transiently are asked again, up to ``commit_retries``
        attempts in all with exponential backoff; a node that refuses is not. Returns the
        nodes that never confirmed and the last error seen (empty and None on success).
        """
        pending = list(range(N_NODES))
        refused: list[int] = []
        last: UploadError | None = None
        for attempt in range(self._commit_retries):
            if not pending:
                break
            if attempt:
                await asyncio.sleep(self._retry_delay_s * (2 ** (attempt - 1)))
            results = await asyncio.gather(
                *(self._call(session, i, method, path) for i in pending), return_exceptions=True)
            retry: list[int] = []
            for node, result in zip(pending, results, strict=True):
                if isinstance(result, UploadError):
                    last = result
                    (retry if result.transient else refused).append(node)
                elif isinstance(result, BaseException):
                    raise result
            pending = retry
        return sorted(pending + refused), last

    def _names(self, nodes: Sequence[int]) -> list[str]:
        return [self.nodes[i].name for i in nodes]

    async def delete_dataset(self, name: str) -> None:
        """Erase dataset ``name`` of this site (every version) on all three nodes.

        Raises :class:`~dic_connector.errors.CoordinationError` naming the nodes that did not
        confirm the erasure (the others did); calling again when they are back completes it.
        """
        dataset_id = dataset_uuid(self.site, name)
        await self._erased_everywhere(
            "DELETE", f"/v1/uploads/datasets/{dataset_id}",
            f"dataset '{name}' ({dataset_id}) of site '{self.site}' is", "delete_dataset")

    async def erase_older(self, version_id: uuid.UUID) -> None:
        """Erase every version older than ``version_id`` of its dataset on all three nodes.

        ``version_id`` must be committed on every node (an :meth:`upload` that returned).
        Raises :class:`~dic_connector.errors.CoordinationError` naming the nodes that did not
        confirm the erasure (the others did); calling again when they are back completes it.
        """
        await self._erased_everywhere(
            "POST", f"/v1/uploads/{version_id}/supersede",
            f"versions of site '{self.site}' older than {version_id} are", "erase_older")

    async def _erased_everywhere(self, method: str, path: str, subject: str,
                                 again: str) -> None:
        """Ask every node to erase (``method path``) until each confirms; a
        :class:`CoordinationError` naming those that did not, and those that did."""
        async with self._session() as session:
            pending, last = await self._until_confirmed(session, method, path)
        if pending:
            done = [i for i in range(N_NODES) if i not in pending]
            raise CoordinationError(
                f"{subject} not confirmed erased on {self._names(pending)} (erased on "
                f"{self._names(done)}; {last}); call {again} again when they are back")


def _next_column(columns: Iterator[npt.NDArray[np.int64]], declared: int, name: str,
                 rows: int) -> npt.NDArray[np.int64]:
    """The next column of ``columns`` for ``name``, which must have ``rows`` rows (one that
    does not is zeroed, as every plaintext column is once shared, before the error)."""
    column = next(columns, None)
    if column is None:
        raise ValueError(f"{declared} columns declared, fewer given")
    if column.shape != (rows,):
        column.fill(0)
        raise ValueError(f"column '{name}' has shape {column.shape}, not ({rows},)")
    return column
