"""Persistent, multiplexed peer channels: one mutual-TLS connection per peer pair for every
session of a node (issue 17, part 2).

A :class:`ChannelPool` belongs to one party for its lifetime (the node app's lifecycle owns
it). Towards each peer it keeps one connection: party i dials every peer j < i and accepts
from every peer j > i (party 0 and 1 listen on ``peers[party]``; party 2 only dials). A
connection is dialled when a session first needs it and dialled anew after it failed. The
TLS checks are those of :mod:`mpc.tls` and :class:`mpc.channels.TlsChannels`: the dialler
verifies the listener's certificate name (TLS hostname check), the listener reads the name
from the dialler's verified certificate and refuses a connection whose certificate is not
the party its hello announces.

Frame, version 3 (all three nodes upgrade together; version 2 frames are refused)::

    magic "DMPC" | version u8 | kind u8 | sender u8 | flags u8 | session id 16 B
    | step u64 | length u32 (this frame's payload) | total u64 (the whole message's length)

Kinds: HELLO (a connection's first frame each way, session id zero), BYTES and RING (a
message of a session; RING payloads are uint64 ring elements), OPEN and CLOSE (a session
begins or ends on the sender). A message longer than :data:`CHUNK_BYTES` travels in several
frames (flag MORE on all but the last) and one writer task per connection takes one frame
at a time from each session with something to send, round-robin, so a session's large
message delays another session's small one by at most one frame; a chunk is a memoryview
slice of the message (a ring array is not copied). Reading is zero-copy
(:class:`_LinkProtocol`): each payload goes from the TLS layer straight into its place in
its message's final buffer (a ring message's numpy array, allocated at its first frame from
the total in the header), and the message is delivered when its last frame is in.

**Sessions.** :meth:`ChannelPool.open` registers a session (a :class:`PooledChannels`, the
:class:`mpc.channels.Channels` a :class:`mpc.session.Party` computes on), makes sure both
connections are up, sends OPEN to both peers and waits for theirs. Frames of a session the
pool does not know yet (a peer that opened a few ms earlier) are buffered, up to
:data:`PENDING_MAX_BYTES` in all and for :data:`PENDING_TIMEOUT_S`, and handed to the
session when it opens; nothing is refused and retried. A session whose frames went beyond
those bounds (or came on a connection lost since) cannot open any more: its
:meth:`ChannelPool.open` fails at once with the reason. Each session keeps its own mailbox,
step numbers and replay/loss detection (:class:`mpc.channels.Mailbox`): a replayed step or a
frame that does not fit its message fails that session alone (it knows at once; its peers
when its CLOSE arrives), a frame header that breaks the framing (wrong magic or version, a
sender that is not the connection's peer, an oversized frame) fails the connection and every
session on it with :class:`mpc.errors.PeerError`, as a lost connection does. A CLOSE from a
peer fails what the session still waits for from that peer, so a session that fails on one
party fails on the others without waiting for their timeouts; messages that arrived before
the CLOSE are still delivered. Frames for a session this party already closed are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import struct
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mpc.channels import (
    DIAL_FIRST_BACKOFF_S,
    DIAL_MAX_BACKOFF_S,
    HELLO_TIMEOUT_S,
    READ_BUFFER_BYTES,
    Channels,
    Payload,
    PeerAddress,
)
from mpc.errors import PeerError
from mpc.tls import NodeTls, peer_names

FRAME = struct.Struct("!4sBBBB16sQIQ")
MAGIC = b"DMPC"
#: 3: one connection per peer pair, sessions multiplexed on it, messages chunked
VERSION = 3
KIND_HELLO = 0
KIND_BYTES = 1
KIND_RING = 2
KIND_OPEN = 3
KIND_CLOSE = 4
#: flag: more frames of this message follow
FLAG_MORE = 1
#: Largest payload of one frame; longer messages are chunked (the fairness quantum; a
#: pool may send smaller frames, ``chunk_bytes``).
CHUNK_BYTES = 1 << 20
#: Largest message accepted (a peer is authenticated, but a bug must not OOM us).
MAX_MESSAGE_BYTES = 1 << 31
#: Frames of sessions not opened here yet: at most this many bytes in all ...
PENDING_MAX_BYTES = 1 << 26
#: ... kept at most this long.
PENDING_TIMEOUT_S = 30.0
#: How many closed session ids are remembered (their late frames are dropped).
CLOSED_REMEMBERED = 4096

#: Idle seconds before TCP keepalive probes start on a connection (then 3 probes 5 s apart).
KEEPALIVE_IDLE_S = 30

NO_SESSION = bytes(16)


@dataclass
class _Outgoing:
    """A message (or control frame) queued on a connection."""

    kind: int
    step: int
    body: memoryview | bytes
    done: asyncio.Future[None] | None
    offset: int = 0


#: A message as read off a connection: a ring message's array, a byte message's buffer, or
#: the error of a frame that did not fit its message (delivered in order, failing the session).
Arrival = np.ndarray | bytearray | PeerError


@dataclass
class _Partial:
    """A chunked message being read: its final buffer, allocated at its first frame from the
    total length in the header, and how much of it has arrived."""

    kind: int
    buffer: np.ndarray | bytearray
    view: memoryview
    offset: int = 0


@dataclass
class _Pending:
    """Messages of a session not opened here yet, in arrival order."""

    since: float
    frames: list[tuple[Link, int, int, Arrival]] = field(default_factory=list)
    nbytes: int = 0


def _nbytes(data: Arrival) -> int:
    if isinstance(data, PeerError):
        return 0
    return data.nbytes if isinstance(data, np.ndarray) else len(data)


def _buffer(kind: int, nbytes: int) -> tuple[np.ndarray | bytearray, memoryview]:
    """A message's final buffer and its byte view: ring messages are read straight into the
    uint64 array they are delivered as."""
    if kind == KIND_RING and nbytes % 8 == 0:
        array = np.empty(nbytes // 8, dtype=np.uint64)
        return array, array.data.cast("B")
    raw = bytearray(nbytes)
    return raw, memoryview(raw)


class _LinkProtocol(asyncio.BufferedProtocol):
    """A connection's reading after the hello (what :class:`mpc.channels._PeerProtocol` does
    for per-session connections): the TLS layer reads each frame header into a small buffer
    and each payload straight into its place in its message's final buffer, chunk by chunk
    at its offset, where a stream reader copied every payload three times and reassembly a
    fourth. Installed with ``set_protocol`` by :meth:`Link.start`."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self._header = bytearray(FRAME.size)
        self._view = memoryview(self._header)
        self._filled = 0
        self._reading_body = False
        self.lost = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        if self._filled < len(self._view):
            return
        link = self.link
        try:
            if self._reading_body:
                self._view, self._filled, self._reading_body = memoryview(self._header), 0, \
                    False
                link.frame_read()
            else:
                self._filled = 0
                self._view = link.frame_header(self._header)
                self._reading_body = True
                if not len(self._view):
                    self._view, self._reading_body = memoryview(self._header), False
                    link.frame_read()
        except PeerError as exc:
            link.pool._link_failed(link, exc)
        except Exception as exc:  # a bug: the connection is failed, not left hanging
            link.pool._link_failed(link, PeerError(f"receiving failed: {exc!r}", link.peer),
                                   exc)

    def feed(self, data: bytes | bytearray) -> None:
        """Bytes a stream reader had already read past the hello."""
        done = 0
        while done < len(data) and self.link.alive:
            target = self.get_buffer(-1)
            n = min(len(target), len(data) - done)
            target[:n] = data[done:done + n]
            done += n
            self.buffer_updated(n)

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        error = PeerError("channel closed" if self.link.closing else "connection lost",
                          self.link.peer)
        self.link.pool._link_failed(self.link, error, exc)
        self.lost.set()
        self.writable.set()  # a writer waiting for the buffer to drain finds the loss

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class Link:
    """One authenticated connection to a peer, shared by every session."""

    def __init__(self, pool: ChannelPool, peer: int, writer: asyncio.StreamWriter) -> None:
        self.pool = pool
        self.peer = peer
        # kept: a stream writer closes its transport when it is garbage-collected
        self._writer = writer
        self._transport = writer.transport
        tls = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        self.certificate: bytes | None = der or None
        self.failure: PeerError | None = None
        self.closing = False
        self._protocol = _LinkProtocol(self)
        self._queues: OrderedDict[bytes, deque[_Outgoing]] = OrderedDict()
        self._wake = asyncio.Event()
        self._partial: dict[tuple[bytes, int], _Partial] = {}
        #: the frame being read: kind, session, step, its message (None: discarded), and
        #: whether it is the message's last frame
        self._frame: tuple[int, bytes, int, _Partial | PeerError | None, bool] = (
            0, NO_SESSION, 0, None, False)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, reader: asyncio.StreamReader) -> None:
        """Read through :class:`_LinkProtocol` from now on (what ``reader`` had read past
        the hello first) and start the writer."""
        self._tasks.append(asyncio.create_task(self._write_loop()))
        # frames the peer sent right after its hello acknowledgement, read with it (the
        # stream reader has no public way to hand over its buffer)
        buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
        leftover = bytes(buffered)
        buffered.clear()
        self._transport.set_protocol(self._protocol)
        self._protocol.feed(leftover)
        if reader.at_eof() or self._transport.is_closing():
            self.pool._link_failed(self, PeerError("connection lost", self.peer))

    @property
    def alive(self) -> bool:
        return self.failure is None

    @property
    def finished(self) -> bool:
        """Whether its writer has ended and its transport is closed."""
        return all(t.done() for t in self._tasks) and (
            self._protocol.lost.is_set() or self._transport.is_closing())

    def enqueue(self, session: bytes, kind: int, step: int, body: memoryview | bytes,
                done: asyncio.Future[None] | None) -> None:
        if self.failure is not None:
            raise self.failure
        view = body if isinstance(body, memoryview) else memoryview(body)
        self._queues.setdefault(session, deque()).append(_Outgoing(kind, step, view, done))
        self._wake.set()

    async def send(self, session: bytes, kind: int, step: int,
                   body: memoryview | bytes) -> None:
        """Queue one message; returns once its last frame is handed to the transport."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.enqueue(session, kind, step, body, done)
        await done

    async def _write_loop(self) -> None:
        """One frame at a time from each session with something to send, round-robin; a
        chunk is a memoryview slice of the message (no copy of a ring array), and the loop
        waits while the transport holds more than its high-water mark."""
        party, chunk = self.pool.party, self.pool.chunk_bytes
        transport, protocol = self._transport, self._protocol
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queues:
                    session, queue = self._queues.popitem(last=False)
                    message = queue[0]
                    end = min(message.offset + chunk, len(message.body))
                    more = end < len(message.body)
                    header = FRAME.pack(
                        MAGIC, VERSION, message.kind, party, FLAG_MORE if more else 0,
                        session, message.step, end - message.offset, len(message.body))
                    # one call: the TLS layer takes header and chunk in one pass
                    if end > message.offset:
                        transport.writelines((header, message.body[message.offset:end]))
                    else:
                        transport.write(header)
                    message.offset = end
                    if not more:
                        queue.popleft()
                    if queue:
                        self._queues[session] = queue  # to the back: round-robin
                    if not protocol.writable.is_set():
                        await protocol.writable.wait()
                    if protocol.lost.is_set() or transport.is_closing():
                        raise ConnectionError("transport closed")
                    if not more and message.done is not None and not message.done.done():
                        message.done.set_result(None)
        except (ConnectionError, OSError, RuntimeError) as exc:
            self.pool._link_failed(self, PeerError("connection lost while sending", self.peer),
                                   exc)
        except asyncio.CancelledError:
            self.pool._link_failed(self, PeerError("channel closed", self.peer))
            raise
        except Exception as exc:  # a bug: the connection is failed, not left hanging
            self.pool._link_failed(self, PeerError(f"sending failed: {exc!r}", self.peer), exc)

    def frame_header(self, header: bytearray) -> memoryview:
        """Check a frame header; where its payload goes: its place in its message's final
        buffer, or a scratch buffer (a frame dropped, or one that does not fit its message).
        PeerError (the connection fails) when the header breaks the framing."""
        magic, version, kind, sender, flags, session, step, length, total = \
            FRAME.unpack(header)
        if magic != MAGIC or version != VERSION or sender != self.peer:
            raise PeerError("malformed frame header", self.peer)
        if length > CHUNK_BYTES or total > MAX_MESSAGE_BYTES or length > total:
            raise PeerError(f"frame of {length} bytes (message {total}) refused", self.peer)
        last = not flags & FLAG_MORE
        if kind not in (KIND_BYTES, KIND_RING):
            self._frame = (kind, session, step, None, last)
            return memoryview(bytearray(length))
        key = (session, step)
        partial = self._partial.get(key)
        if partial is None:
            if last and length != total:
                error = PeerError(f"step {step}: a message of {total} bytes in one frame of "
                                  f"{length}", self.peer)
                self._frame = (kind, session, step, error, True)
                return memoryview(bytearray(length))
            if not self.pool._admit(session, total):
                self._frame = (kind, session, step, None, True)
                return memoryview(bytearray(length))
            buffer, view = _buffer(kind, total)
            partial = _Partial(kind, buffer, view)
            if not last:
                self._partial[key] = partial
        elif partial.kind != kind or len(partial.view) != total \
                or partial.offset + length > total:
            del self._partial[key]
            error = PeerError(f"step {step}: a frame that does not continue its message",
                              self.peer)
            self._frame = (kind, session, step, error, True)
            return memoryview(bytearray(length))
        start = partial.offset
        partial.offset += length
        if last:
            self._partial.pop(key, None)
            if partial.offset != total:
                error = PeerError(f"step {step}: message of {total} bytes ended after "
                                  f"{partial.offset}", self.peer)
                self._frame = (kind, session, step, error, True)
                return memoryview(bytearray(length))
        self._frame = (kind, session, step, partial, last)
        return partial.view[start:start + length]

    def frame_read(self) -> None:
        """A frame's payload is in: hand a whole message (or control frame, or the error of
        a frame that broke its message) to the pool."""
        kind, session, step, message, last = self._frame
        self._frame = (0, NO_SESSION, 0, None, False)
        if not last:
            return
        if kind in (KIND_BYTES, KIND_RING):
            if message is None:  # dropped: a closed session, or beyond the pending bound
                return
            data: Arrival = message if isinstance(message, PeerError) else message.buffer
        else:
            data = bytearray()
        self.pool._arrived(self, kind, session, step, data)

    def forget(self, session: bytes) -> None:
        """Drop a closed session's partial messages."""
        for key in [k for k in self._partial if k[0] == session]:
            del self._partial[key]

    def fail_outgoing(self, error: PeerError) -> None:
        for queue in self._queues.values():
            for message in queue:
                if message.done is not None and not message.done.done():
                    message.done.set_exception(error)
        self._queues.clear()

    def close(self) -> None:
        self.closing = True
        for task in self._tasks:
            task.cancel()
        self._transport.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._protocol.lost.wait(), 2.0)
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _keepalive(writer: asyncio.StreamWriter) -> None:
    """TCP keepalive on a long-lived connection: a peer that vanished without a reset (a
    host lost, a middlebox that forgot the flow) shows as a lost connection within about
    a minute instead of leaving a connection that every new session would time out on."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", 5),
                              ("TCP_KEEPCNT", 3)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _payload(kind: int, data: np.ndarray | bytearray, step: int, peer: int) -> Payload:
    if kind == KIND_RING:
        if isinstance(data, np.ndarray):
            return data  # read into place: no copy
        raise PeerError(f"step {step}: ring message of {len(data)} bytes", peer)
    if kind == KIND_BYTES:
        return bytes(data)
    raise PeerError(f"step {step}: unknown message kind {kind}", peer)


class PooledChannels(Channels):
    """One session's channels on a :class:`ChannelPool` (its own mailbox and steps)."""

    def __init__(self, pool: ChannelPool, session: bytes) -> None:
        super().__init__(pool.party)
        self.pool = pool
        self.session = session
        self.links: dict[int, Link] = {}
        self.opened: dict[int, asyncio.Event] = {p: asyncio.Event() for p in pool.others}
        self.closed = False

    async def send(self, to: int, session: bytes, step: int, payload: Payload) -> None:
        if session != self.session:
            raise PeerError(f"session {session.hex()[:8]} sent on the channels of session "
                            f"{self.session.hex()[:8]}", to)
        failure = self.mailbox.failure(to)
        if failure is not None:
            raise failure
        link = self.links.get(to)
        if link is None or self.closed:
            raise PeerError(f"session {session.hex()[:8]} is not open", to)
        if isinstance(payload, np.ndarray):
            array = np.ascontiguousarray(payload, dtype=np.uint64)
            body: memoryview | bytes = array.data.cast("B")
            kind = KIND_RING
        else:
            body, kind = payload, KIND_BYTES
        chunks = max(1, -(-len(body) // self.pool.chunk_bytes))
        self.bytes_sent[to] = self.bytes_sent.get(to, 0) + chunks * FRAME.size + len(body)
        try:
            await link.send(session, kind, step, body)
        except PeerError as exc:
            self.mailbox.fail(to, exc)
            raise

    def peer_certificate(self, peer: int) -> bytes:
        """The DER certificate of the connection to ``peer`` this session runs on (verified
        by the handshake against the deployment CA and the peer's name)."""
        link = self.links.get(peer)
        if link is None or link.certificate is None:
            raise PeerError(f"no verified certificate from party {peer}", peer)
        return link.certificate

    def close_session(self, session: bytes) -> None:
        super().close_session(session)
        self.pool._release(self)

    async def close(self) -> None:
        """End this session on the pool (CLOSE to the peers); the connections stay."""
        self.pool._release(self)


class ChannelPool:
    """Party ``party``'s connections to its two peers, shared by all its sessions.

    :meth:`start` listens (party 0 and 1), :meth:`open` opens a session, :meth:`close`
    ends everything (open sessions fail with :class:`PeerError`).
    """

    def __init__(self, party: int, peers: Sequence[PeerAddress], tls: NodeTls,
                 handshake_timeout_s: float = 30.0, chunk_bytes: int = CHUNK_BYTES,
                 pending_max_bytes: int = PENDING_MAX_BYTES) -> None:
        if len(peers) != 3 or not 0 <= party < 3:
            raise ValueError("three peer addresses and a party index in 0..2 are required")
        if not 0 < chunk_bytes <= CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be in 1..{CHUNK_BYTES}")
        self.party = party
        self.chunk_bytes = chunk_bytes
        self.pending_max_bytes = pending_max_bytes
        self.peers = list(peers)
        self.others = tuple(p for p in range(3) if p != party)
        self._tls = tls
        self._client_context: ssl.SSLContext | None = None
        self._handshake_timeout_s = handshake_timeout_s
        self._server: asyncio.Server | None = None
        self._links: dict[int, Link] = {}
        self._up = {p: asyncio.Event() for p in self.others if p > party}
        self._dialling = {p: asyncio.Lock() for p in self.others if p < party}
        self._sessions: dict[bytes, PooledChannels] = {}
        self._pending: dict[bytes, _Pending] = {}
        self._pending_bytes = 0
        #: sessions that cannot open (any more), and why
        self._closed: OrderedDict[bytes, str] = OrderedDict()
        self._retired: list[Link] = []
        #: incoming connections closed without an acknowledgement (bad hello, wrong party)
        self.refused = 0
        #: connections established so far (dialled or accepted), per peer
        self.connections = {p: 0 for p in self.others}
        #: frames dropped: for closed sessions, or beyond the pending bounds
        self.dropped = 0

    @property
    def sessions(self) -> int:
        """How many sessions are open here now."""
        return len(self._sessions)

    async def start(self) -> None:
        """Listen on ``peers[party]`` (party 0 and 1; an OSError if the port is taken)."""
        if self.party == 2 or self._server is not None:
            return
        me = self.peers[self.party]
        self._server = await asyncio.start_server(
            self._accept, me.host, me.port, ssl=self._tls.server_context(),
            limit=READ_BUFFER_BYTES, ssl_handshake_timeout=self._handshake_timeout_s)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        links = [*self._links.values(), *self._retired]
        for link in links:
            link.close()
        for link in links:
            await link.wait_closed()
        self._links.clear()
        self._retired.clear()

    def link(self, peer: int) -> Link | None:
        """The live connection to ``peer`` (None: none now)."""
        link = self._links.get(peer)
        return link if link is not None and link.alive else None

    async def open(self, session: bytes, timeout_s: float = 30.0) -> PooledChannels:
        """Open ``session``: both connections up, OPEN sent to and received from both peers
        within ``timeout_s`` (else :class:`PeerError`)."""
        if len(session) != 16:
            raise ValueError("a session id is 16 bytes")
        if session in self._sessions:
            raise PeerError(f"session {session.hex()[:8]} is open already")
        if session in self._closed:
            raise PeerError(f"session {session.hex()[:8]} {self._closed[session]}")
        channels = PooledChannels(self, session)
        self._sessions[session] = channels
        pending = self._pending.pop(session, None)
        if pending is not None:
            self._pending_bytes -= pending.nbytes
            for link, kind, step, data in pending.frames:
                self._dispatch(channels, link, kind, step, data)

        async def join(peer: int) -> None:
            link = await self._connect(peer)
            if channels.links.setdefault(peer, link) is not link:
                raise PeerError("connection lost", peer)  # its frames came on an older one
            if (failure := channels.mailbox.failure(peer)) is not None:
                raise failure
            link.enqueue(session, KIND_OPEN, 0, b"", None)
            await channels.opened[peer].wait()
            if (failure := channels.mailbox.failure(peer)) is not None:
                raise failure

        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(join(p) for p in self.others))
        except TimeoutError:
            unconnected = [p for p in self.others if p not in channels.links]
            missing = [p for p in self.others
                       if p in channels.links and not channels.opened[p].is_set()]
            self._release(channels)
            what = [f"peers {unconnected} not connected"] if unconnected else []
            what += [f"peers {missing} did not open it"] if missing else []
            raise PeerError(f"session {session.hex()[:8]} not open within {timeout_s:g} s: "
                            + ", ".join(what)) from None
        except BaseException:
            self._release(channels)
            raise
        return channels

    async def _connect(self, peer: int) -> Link:
        while True:
            link = self.link(peer)
            if link is not None:
                return link
            if peer > self.party:  # it dials us
                await self._up[peer].wait()
                continue
            async with self._dialling[peer]:
                if self.link(peer) is None:
                    await self._dial(peer)

    async def _dial(self, peer: int) -> None:
        addr = self.peers[peer]
        if self._client_context is None:
            self._client_context = self._tls.client_context()
        delay = DIAL_FIRST_BACKOFF_S
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    addr.host, addr.port, ssl=self._client_context,
                    server_hostname=addr.name, limit=READ_BUFFER_BYTES)
            except ssl.SSLCertVerificationError as exc:
                raise PeerError(f"certificate of {addr.name} rejected: {exc.verify_message}",
                                peer) from exc
            except (ConnectionError, OSError):
                pass  # the peer is not listening yet
            else:
                if await self._hello(peer, reader, writer):
                    self._adopt(peer, reader, writer)
                    return
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, DIAL_MAX_BACKOFF_S)

    async def _hello(self, peer: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        try:
            writer.write(FRAME.pack(MAGIC, VERSION, KIND_HELLO, self.party, 0, NO_SESSION,
                                    0, 0, 0))
            await writer.drain()
            answer = await asyncio.wait_for(reader.readexactly(FRAME.size), HELLO_TIMEOUT_S)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError,
                ssl.SSLError):
            writer.close()
            return False
        if FRAME.unpack(answer)[:5] != (MAGIC, VERSION, KIND_HELLO, peer, 0):
            writer.close()
            raise PeerError("malformed hello acknowledgement", peer)
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            header = await asyncio.wait_for(reader.readexactly(FRAME.size), HELLO_TIMEOUT_S)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError,
                ssl.SSLError):
            self.refused += 1
            writer.close()
            return
        magic, version, kind, sender, *_ = FRAME.unpack(header)
        names = peer_names(writer.get_extra_info("peercert"))
        if (magic != MAGIC or version != VERSION or kind != KIND_HELLO
                or not self.party < sender < 3 or self.peers[sender].name not in names):
            self.refused += 1
            writer.close()
            return
        writer.write(FRAME.pack(MAGIC, VERSION, KIND_HELLO, self.party, 0, NO_SESSION, 0, 0, 0))
        self._adopt(sender, reader, writer)

    def _adopt(self, peer: int, reader: asyncio.StreamReader,
               writer: asyncio.StreamWriter) -> None:
        old = self._links.get(peer)
        if old is not None:  # the peer dialled anew: the old connection is gone for it
            self._link_failed(old, PeerError("connection replaced by a new one", peer))
        self._retired = [r for r in self._retired if not r.finished]
        _keepalive(writer)
        # a frame or two in the transport while the next is taken: the pipe stays full, and a
        # small message waits behind at most that much of another session's
        writer.transport.set_write_buffer_limits(high=2 * self.chunk_bytes,
                                                 low=self.chunk_bytes)
        link = self._links[peer] = Link(self, peer, writer)
        self.connections[peer] += 1
        if peer in self._up:
            self._up[peer].set()
        link.start(reader)

    def _link_failed(self, link: Link, error: PeerError,
                     cause: BaseException | None = None) -> None:
        if link.failure is not None:
            return
        if cause is not None:
            error.__cause__ = cause
        link.failure = error
        link.fail_outgoing(error)
        if self._links.get(link.peer) is link:
            del self._links[link.peer]
            if link.peer in self._up:
                self._up[link.peer].clear()
        self._retired.append(link)
        link.close()
        for channels in self._sessions.values():
            if channels.links.get(link.peer) is link:
                channels.mailbox.fail(link.peer, error)
                channels.opened[link.peer].set()  # wakes open(), which sees the failure
        for session in [s for s, p in self._pending.items()
                        if any(f[0] is link for f in p.frames)]:
            self._drop_pending(session, f"lost frames buffered before it opened ({error})")

    def _admit(self, session: bytes, total: int) -> bool:
        """Whether a message of ``total`` bytes for ``session`` gets a buffer at its first
        frame: not for a closed session (dropped), nor for one not opened here yet when
        holding it would go beyond :attr:`pending_max_bytes` (the session then cannot open;
        checked before the buffer is allocated, from the header's total)."""
        if session in self._sessions:
            return True
        if session in self._closed:
            self.dropped += 1
            return False
        if self._pending_bytes + total > self.pending_max_bytes:
            self._drop_pending(session, "was sent more than "
                               f"{self.pending_max_bytes} bytes before it opened here")
            self.dropped += 1
            return False
        return True

    def _arrived(self, link: Link, kind: int, session: bytes, step: int,
                 data: Arrival) -> None:
        """A whole message (or control frame, or a frame error) read from ``link``."""
        channels = self._sessions.get(session)
        if channels is not None:
            self._dispatch(channels, link, kind, step, data)
        elif session in self._closed:
            self.dropped += 1
        else:
            self._hold(link, kind, session, step, data)

    def _hold(self, link: Link, kind: int, session: bytes, step: int, data: Arrival) -> None:
        now = asyncio.get_running_loop().time()
        for stale in [s for s, p in self._pending.items()
                      if now - p.since > PENDING_TIMEOUT_S]:
            self._drop_pending(stale, f"was not opened here within {PENDING_TIMEOUT_S:g} s "
                               "of its peers' first frames")
        pending = self._pending.setdefault(session, _Pending(now))
        nbytes = _nbytes(data)
        if self._pending_bytes + nbytes > self.pending_max_bytes:
            self._drop_pending(session, "was sent more than "
                               f"{self.pending_max_bytes} bytes before it opened here")
            self.dropped += 1
            return
        pending.frames.append((link, kind, step, data))
        pending.nbytes += nbytes
        self._pending_bytes += nbytes

    def _drop_pending(self, session: bytes, reason: str) -> None:
        pending = self._pending.pop(session, None)
        if pending is not None:
            self._pending_bytes -= pending.nbytes
            self.dropped += len(pending.frames)
        for link in self._links.values():
            link.forget(session)  # its chunked messages still arriving are dropped
        self._remember_closed(session, reason)

    def _dispatch(self, channels: PooledChannels, link: Link, kind: int, step: int,
                  data: Arrival) -> None:
        peer = link.peer
        if channels.links.setdefault(peer, link) is not link:
            return  # a frame on a connection the session does not run on
        if kind == KIND_OPEN:
            channels.opened[peer].set()
            return
        if kind == KIND_CLOSE:
            channels.mailbox.fail(peer, PeerError(
                f"closed session {channels.session.hex()[:8]}", peer))
            channels.opened[peer].set()
            return
        if channels.mailbox.failure(peer) is not None:
            return
        try:
            if kind not in (KIND_BYTES, KIND_RING):
                raise PeerError(f"step {step}: unknown frame kind {kind}", peer)
            if isinstance(data, PeerError):
                raise data
            channels.mailbox.deliver(peer, channels.session, step,
                                     _payload(kind, data, step, peer))
        except PeerError as exc:  # this session alone: the framing still holds
            channels.mailbox.fail(peer, exc)

    def _release(self, channels: PooledChannels) -> None:
        if channels.closed:
            return
        channels.closed = True
        session = channels.session
        if self._sessions.get(session) is channels:
            del self._sessions[session]
        self._remember_closed(session, "was opened here already")
        for link in channels.links.values():
            link.forget(session)
            if link.alive:
                link.enqueue(session, KIND_CLOSE, 0, b"", None)

    def _remember_closed(self, session: bytes, reason: str) -> None:
        self._closed[session] = reason
        while len(self._closed) > CLOSED_REMEMBERED:
            self._closed.popitem(last=False)
