"""Peer channels between the three parties: framing, delivery, failure detection.

Every message is one frame::

    magic "DMPC" | version u8 | kind u8 | sender u8 | pad | session id 16 B | step u64 | length u64
    payload (length bytes): raw uint64 ring elements (kind RING) or opaque bytes (kind BYTES)

A frame is delivered to the receiver waiting for (sender, session, step). A second frame for
the same key is a replay and fails the channel; a frame for a closed session is rejected; a
receiver that waits longer than its timeout, or whose peer disconnects, gets a
:class:`~mpc.errors.PeerError` instead of hanging. Because each party's reader task always
consumes what arrives, all three parties can send large messages to each other at once
without deadlock (a pitfall met while prototyping).

Two implementations share :class:`Mailbox`:

- :class:`LoopbackNetwork`: three parties in one event loop, for unit tests of protocols;
  arrays are copied on send so no party can alias another's memory. Its
  :meth:`~LoopbackNetwork.record` keeps a transcript of every delivery (sender, receiver,
  step, payload), from which view tests read exactly what each party received.
- :class:`TlsChannels`: one session's TCP connections with mutual TLS 1.3 (:mod:`mpc.tls`).
  Party i listens; parties j > i dial it. The dialler checks the listener's certificate
  name, the listener checks the dialler's certificate name against the index announced in
  the hello frame. Ring arrays are written from their own memory (a memoryview, no copy)
  and decrypted by the TLS layer straight into the array they are delivered as (a
  buffered protocol, no copy either).

**Several sessions at once** (issue 17, part 3). A party listens on one port for every
session: a :class:`SessionListener` (long-lived; or private to one
:meth:`TlsChannels.connect`). The nodes no longer use this path: they run every session on
one connection per peer pair (:mod:`mpc.mux`, frame version 3); connections per session
remain for the engine's own tests and benchmarks (:class:`mpc.local.LocalDeployment`). The dialler's hello frame carries the session id; the
listener hands the connection to the :class:`TlsChannels` of that session still waiting
for that peer and answers with a hello of its own (the acknowledgement), or closes it
without a word: an unknown or finished session, a peer already connected for it, a
certificate that is not the announced party's. A dialler whose hello is not acknowledged
retries with back-off until its connect timeout (the listener's side of the session may
not be registered yet: the three parties start within a few ms of each other). Each
session has its own connections, mailbox and step counter, so replay and loss detection
stay per session, and a failing session never touches another.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import struct
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpc.errors import PeerError
from mpc.ring import RingArray
from mpc.tls import NodeTls, peer_names

FRAME = struct.Struct("!4sBBBx16sQQ")
MAGIC = b"DMPC"
#: 2: the listener acknowledges a hello with one of its own (a session per connection)
VERSION = 2
KIND_HELLO = 0
KIND_BYTES = 1
KIND_RING = 2
#: Largest payload accepted in one frame (a peer is authenticated, but a bug must not OOM us).
MAX_FRAME_BYTES = 1 << 31
#: Dialling a peer that is not listening yet: the first retry after this, doubling (with
#: jitter) up to DIAL_MAX_BACKOFF_S. The three nodes open their channels within a few ms of
#: each other, so a fixed 50 ms first wait was most of a small computation's setup.
DIAL_FIRST_BACKOFF_S = 0.002
DIAL_MAX_BACKOFF_S = 0.5
#: StreamReader buffer: large enough that big frames do not pause the socket constantly.
READ_BUFFER_BYTES = 1 << 24
#: How long a listener waits for a dialler's hello, and a dialler for the acknowledgement.
HELLO_TIMEOUT_S = 10.0

Payload = RingArray | bytes
SessionId = bytes


class Mailbox:
    """Frames that arrived, and receivers waiting for frames, keyed by sender/session/step."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[int, bytes, int], asyncio.Future[Payload]] = {}
        self._arrived: dict[tuple[int, bytes, int], Payload] = {}
        self._seen: dict[tuple[int, bytes], set[int]] = {}
        self._closed: set[bytes] = set()
        self._failed: dict[int, PeerError] = {}

    def deliver(self, sender: int, session: bytes, step: int, payload: Payload) -> None:
        if sender in self._failed:
            return
        if session in self._closed:
            raise PeerError(f"message for closed session {session.hex()[:8]} (step {step})",
                            sender)
        seen = self._seen.setdefault((sender, session), set())
        if step in seen:
            raise PeerError(f"replayed message for session {session.hex()[:8]} step {step}",
                            sender)
        seen.add(step)
        key = (sender, session, step)
        waiter = self._waiting.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(payload)
        else:
            self._arrived[key] = payload

    async def receive(self, sender: int, session: bytes, step: int, timeout_s: float) -> Payload:
        key = (sender, session, step)
        if key in self._arrived:  # delivered before the peer went away: still valid
            return self._arrived.pop(key)
        if sender in self._failed:
            raise self._failed[sender]
        waiter: asyncio.Future[Payload] = asyncio.get_running_loop().create_future()
        self._waiting[key] = waiter
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            raise PeerError(
                f"no message for session {session.hex()[:8]} step {step} within {timeout_s:g} s",
                sender) from None
        finally:
            self._waiting.pop(key, None)

    def fail(self, sender: int, error: PeerError) -> None:
        """Mark ``sender`` as gone: current and future receives from it raise ``error``."""
        self._failed.setdefault(sender, error)
        for key, waiter in list(self._waiting.items()):
            if key[0] == sender and not waiter.done():
                waiter.set_exception(self._failed[sender])

    def failure(self, peer: int) -> PeerError | None:
        return self._failed.get(peer)

    def close_session(self, session: bytes) -> None:
        self._closed.add(session)
        for arrived in [k for k in self._arrived if k[1] == session]:
            del self._arrived[arrived]
        for seen in [k for k in self._seen if k[1] == session]:
            del self._seen[seen]


class Channels(ABC):
    """One party's channels to the two others."""

    def __init__(self, party: int) -> None:
        self.party = party
        self.mailbox = Mailbox()
        #: Bytes sent to each peer (frame headers included).
        self.bytes_sent: dict[int, int] = {}

    @abstractmethod
    async def send(self, to: int, session: bytes, step: int, payload: Payload) -> None:
        """Send one frame; raises PeerError if the peer is gone."""

    async def recv(self, frm: int, session: bytes, step: int, timeout_s: float) -> Payload:
        return await self.mailbox.receive(frm, session, step, timeout_s)

    def _count(self, to: int, nbytes: int) -> None:
        self.bytes_sent[to] = self.bytes_sent.get(to, 0) + FRAME.size + nbytes

    def close_session(self, session: bytes) -> None:
        self.mailbox.close_session(session)

    @abstractmethod
    async def close(self) -> None:
        """Close all connections."""


def _nbytes(payload: Payload) -> int:
    return payload.nbytes if isinstance(payload, np.ndarray) else len(payload)


class LoopbackChannels(Channels):
    """A party of a :class:`LoopbackNetwork`."""

    def __init__(self, party: int, network: LoopbackNetwork) -> None:
        super().__init__(party)
        self._network = network

    async def send(self, to: int, session: bytes, step: int, payload: Payload) -> None:
        if self.party in self._network.dead:
            raise PeerError("this party was disconnected", self.party)
        failure = self.mailbox.failure(to)
        if failure is not None:
            raise failure
        copy: Payload = payload.copy() if isinstance(payload, np.ndarray) else bytes(payload)
        self._count(to, _nbytes(payload))
        if self._network.transcript is not None:
            kept = copy.copy() if isinstance(copy, np.ndarray) else copy
            self._network.transcript.append(Delivery(self.party, to, session, step, kept))
        self._network.parties[to].mailbox.deliver(self.party, session, step, copy)
        await asyncio.sleep(0)

    async def close(self) -> None:
        self._network.kill(self.party)


@dataclass(frozen=True)
class Delivery:
    """One message of a :class:`LoopbackNetwork` as its receiver got it."""

    sender: int
    receiver: int
    session: bytes
    step: int
    payload: Payload


class LoopbackNetwork:
    """Three parties in one process, for unit tests of protocols."""

    def __init__(self) -> None:
        self.dead: set[int] = set()
        self.parties = [LoopbackChannels(i, self) for i in range(3)]
        #: Every delivery since :meth:`record`, in sending order (None: not recording).
        self.transcript: list[Delivery] | None = None

    def record(self) -> list[Delivery]:
        """Keep a copy of every message delivered from now on (a party's received messages
        are its view of a protocol: the input of view tests); returns the transcript."""
        self.transcript = []
        return self.transcript

    def kill(self, party: int) -> None:
        """Simulate ``party`` crashing: the others see a lost connection."""
        self.dead.add(party)
        for other in self.parties:
            if other.party != party:
                other.mailbox.fail(party, PeerError("connection lost", party))


@dataclass(frozen=True)
class PeerAddress:
    """Where a party listens and the name its certificate must carry."""

    host: str
    port: int
    name: str


class SessionListener:
    """Party ``party``'s listener for every session: routes each connection by the session
    id in its hello to the :class:`TlsChannels` that :meth:`expect` registered for it.

    Parties 0 and 1 listen (party 2 only dials). Start it with :meth:`start`, end it with
    :meth:`close`; a session is expected from :meth:`expect` until both its peers are
    connected or :meth:`release` (connections for it afterwards are refused).
    """

    def __init__(self, party: int, peers: Sequence[PeerAddress], tls: NodeTls,
                 handshake_timeout_s: float = 30.0) -> None:
        if len(peers) != 3 or not 0 <= party < 2:
            raise ValueError("three peer addresses and a listening party (0 or 1) are required")
        self.party = party
        self.peers = list(peers)
        self._tls = tls
        self._handshake_timeout_s = handshake_timeout_s
        self._expected: dict[bytes, TlsChannels] = {}
        self._server: asyncio.Server | None = None
        #: connections closed without an acknowledgement (unknown session, bad hello, ...)
        self.refused = 0

    @property
    def sessions(self) -> int:
        """How many sessions are waiting for a peer's connection now."""
        return len(self._expected)

    async def start(self) -> None:
        """Bind ``peers[party]`` and accept (an OSError if the port is taken)."""
        me = self.peers[self.party]
        self._server = await asyncio.start_server(
            self._accept, me.host, me.port, ssl=self._tls.server_context(),
            limit=READ_BUFFER_BYTES, ssl_handshake_timeout=self._handshake_timeout_s)

    def close(self) -> None:
        """Stop accepting (connections already handed to a session stay theirs)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._expected.clear()

    def expect(self, session: bytes, channels: TlsChannels) -> None:
        """Hand connections for ``session`` to ``channels`` from now on."""
        if len(session) != 16:
            raise ValueError("a session id is 16 bytes")
        if session in self._expected:
            raise PeerError(f"session {session.hex()[:8]} is already expecting its peers")
        self._expected[session] = channels

    def release(self, session: bytes) -> None:
        """Refuse connections for ``session`` from now on."""
        self._expected.pop(session, None)

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        self.refused += 1
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            header = await asyncio.wait_for(reader.readexactly(FRAME.size), HELLO_TIMEOUT_S)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError,
                ssl.SSLError):
            self._refuse(writer)
            return
        magic, version, kind, sender, session, _, _ = FRAME.unpack(header)
        names = peer_names(writer.get_extra_info("peercert"))
        channels = self._expected.get(session)
        if (magic != MAGIC or version != VERSION or kind != KIND_HELLO or channels is None
                or not channels.accepts(sender, names)):
            self._refuse(writer)
            return
        channels.register(sender, writer)
        if channels.connected:
            self.release(session)
        writer.write(FRAME.pack(MAGIC, VERSION, KIND_HELLO, self.party, session, 0, 0))
        # a failed write shows as a lost connection in the session's read loop


class _PeerProtocol(asyncio.BufferedProtocol):
    """One peer connection after the hello: frames read by the TLS layer straight into
    their final buffers (a ring payload into the numpy array it is delivered as), where a
    stream reader copied every payload three times (TLS records joined, appended to the
    reader's buffer, sliced out of it): a quarter of a 10^6-element multiplication's CPU.

    Installed on the connection's transport with ``set_protocol`` once the hello is read
    (listener) or sent (dialler, which then reads the acknowledgement through it)."""

    def __init__(self, channels: TlsChannels, peer: int, writer: asyncio.StreamWriter,
                 acknowledgement: asyncio.Future[bool] | None = None) -> None:
        self._channels = channels
        self._peer = peer
        # kept: a stream writer closes its transport when it is garbage-collected
        self._writer = writer
        self.transport = writer.transport
        self._header = bytearray(FRAME.size)
        self._view: memoryview = memoryview(self._header)
        self._reading_body = False
        self._filled = 0
        self._body: RingArray | bytearray | None = None
        self._frame: tuple[int, bytes, int] = (0, b"", 0)
        self._acknowledgement = acknowledgement
        #: set once this connection is one of the session's (errors then fail the peer)
        self.registered = False
        self.closing = False
        self.lost = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        if self._filled < len(self._view):
            return
        try:
            if self._reading_body:
                self._deliver()
            else:
                self._parse_header()
        except PeerError as exc:
            self._fail(exc)
            self.transport.close()

    def _parse_header(self) -> None:
        magic, version, kind, sender, session, step, nbytes = FRAME.unpack(self._header)
        self._filled = 0
        if magic != MAGIC or version != VERSION or sender != self._peer:
            raise PeerError("malformed frame header", self._peer)
        ack = self._acknowledgement
        if ack is not None and not ack.done():  # the listener's answer to our hello
            if kind != KIND_HELLO or session != self._channels.session:
                raise PeerError("malformed hello acknowledgement", self._peer)
            ack.set_result(True)
            return
        if nbytes > MAX_FRAME_BYTES or (kind == KIND_RING and nbytes % 8):
            raise PeerError(f"frame of {nbytes} bytes refused", self._peer)
        self._frame = (kind, session, step)
        if kind == KIND_RING:
            self._body = np.empty(nbytes // 8, dtype=np.uint64)
            self._view = self._body.data.cast("B")
        else:
            self._body = bytearray(nbytes)
            self._view = memoryview(self._body)
        self._reading_body = True
        if nbytes == 0:
            self._deliver()

    def _deliver(self) -> None:
        _, session, step = self._frame
        body = self._body
        payload: Payload = body if isinstance(body, np.ndarray) else bytes(body or b"")
        self._body, self._view, self._filled, self._reading_body = None, memoryview(
            self._header), 0, False
        self._channels.mailbox.deliver(self._peer, session, step, payload)

    def _fail(self, error: PeerError) -> None:
        ack = self._acknowledgement
        if ack is not None and not ack.done():
            ack.set_exception(error)
        if self.registered:
            self._channels.mailbox.fail(self._peer, error)

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        ack = self._acknowledgement
        if ack is not None and not ack.done():
            ack.set_result(False)
        self._fail(PeerError("channel closed" if self.closing else "connection lost",
                             self._peer))
        self.lost.set()
        self.writable.set()  # a sender waiting for the buffer to drain finds the loss

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class TlsChannels(Channels):
    """One session's mutual-TLS connections to the two peers."""

    def __init__(self, party: int, peers: Sequence[PeerAddress],
                 session: bytes = bytes(16)) -> None:
        super().__init__(party)
        self.peers = list(peers)
        self.session = session
        self._protocols: dict[int, _PeerProtocol] = {}
        self._all_connected = asyncio.Event()
        self._certificates: dict[int, bytes] = {}

    @classmethod
    async def connect(cls, party: int, peers: Sequence[PeerAddress], tls: NodeTls,
                      timeout_s: float = 30.0, session: bytes = bytes(16),
                      listener: SessionListener | None = None) -> TlsChannels:
        """Connect ``session``'s channels: dial the lower-indexed peers and, on party 0 or 1,
        take the higher-indexed peers' connections from ``listener`` (the node's long-lived
        one), or from a listener of its own on ``peers[party]`` for this call alone; wait
        until both peers are up."""
        if len(peers) != 3 or not 0 <= party < 3:
            raise ValueError("three peer addresses and a party index in 0..2 are required")
        self = cls(party, peers, session)
        own: SessionListener | None = None
        if party < 2:
            if listener is None:
                own = listener = SessionListener(party, peers, tls, timeout_s)
            listener.expect(session, self)
        try:
            if own is not None:
                await own.start()
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(self._dial(j, tls.client_context())
                                       for j in range(party)))
                await self._all_connected.wait()
        except TimeoutError:
            missing = sorted({0, 1, 2} - {party} - set(self._protocols))
            await self.close()
            raise PeerError(f"peers {missing} not connected within {timeout_s:g} s") from None
        except BaseException:
            await self.close()
            raise
        finally:
            if listener is not None:
                listener.release(session)
            if own is not None:
                own.close()
        return self

    @property
    def connected(self) -> bool:
        """Whether both peers are connected."""
        return self._all_connected.is_set()

    def accepts(self, sender: int, names: set[str]) -> bool:
        """Whether a listener may hand this session a connection from ``sender`` whose
        verified certificate carries ``names``."""
        return (self.party < sender < 3 and sender not in self._protocols
                and self.peers[sender].name in names)

    async def _dial(self, peer: int, ctx: ssl.SSLContext) -> None:
        addr = self.peers[peer]
        delay = DIAL_FIRST_BACKOFF_S
        while True:
            try:
                _, writer = await asyncio.open_connection(
                    addr.host, addr.port, ssl=ctx, server_hostname=addr.name,
                    limit=READ_BUFFER_BYTES)
            except ssl.SSLCertVerificationError as exc:
                raise PeerError(f"certificate of {addr.name} rejected: {exc.verify_message}",
                                peer) from exc
            except (ConnectionError, OSError):
                pass  # the peer is not listening yet
            else:
                protocol = await self._hello(peer, writer)
                if protocol is not None:
                    break
            # the first try was at once; back off now
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, DIAL_MAX_BACKOFF_S)
        self._register(peer, protocol)

    async def _hello(self, peer: int, writer: asyncio.StreamWriter) -> _PeerProtocol | None:
        """Announce this party and session; the connection's protocol once the listener
        acknowledged (else None and the connection is closed: the session is not expected
        there, or not yet). The protocol is installed before the answer can arrive, so no
        frame the listener sends right after it is left behind in a stream reader."""
        transport = writer.transport
        acknowledged: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        protocol = _PeerProtocol(self, peer, writer, acknowledged)
        transport.set_protocol(protocol)
        transport.write(FRAME.pack(MAGIC, VERSION, KIND_HELLO, self.party, self.session, 0, 0))
        try:
            if await asyncio.wait_for(acknowledged, HELLO_TIMEOUT_S):
                return protocol
        except TimeoutError:
            pass
        except PeerError:
            transport.close()
            raise
        transport.close()
        return None

    def peer_certificate(self, peer: int) -> bytes:
        """The DER certificate peer ``peer`` authenticated with (verified by the handshake
        against the deployment CA and the peer's name)."""
        der = self._certificates.get(peer)
        if der is None:
            raise PeerError(f"no verified certificate from party {peer}", peer)
        return der

    def register(self, peer: int, writer: asyncio.StreamWriter) -> None:
        """Take ``peer``'s authenticated connection for this session (its hello read)."""
        self._register(peer, _PeerProtocol(self, peer, writer))

    def _register(self, peer: int, protocol: _PeerProtocol) -> None:
        transport = protocol.transport
        tls = transport.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        if der:
            self._certificates[peer] = der
        transport.set_protocol(protocol)
        protocol.registered = True
        self._protocols[peer] = protocol
        if len(self._protocols) == 2:
            self._all_connected.set()

    async def send(self, to: int, session: bytes, step: int, payload: Payload) -> None:
        failure = self.mailbox.failure(to)
        if failure is not None:
            raise failure
        protocol = self._protocols[to]
        transport = protocol.transport
        assert isinstance(transport, asyncio.WriteTransport)
        if isinstance(payload, np.ndarray):
            array = np.ascontiguousarray(payload, dtype=np.uint64)
            body: memoryview | bytes = array.data.cast("B")
            kind = KIND_RING
        else:
            body, kind = payload, KIND_BYTES
        transport.write(FRAME.pack(MAGIC, VERSION, kind, self.party, session, step, len(body)))
        if len(body):
            transport.write(body)
        self._count(to, len(body))
        await protocol.writable.wait()
        if protocol.lost.is_set():
            error = PeerError("connection lost while sending", to)
            self.mailbox.fail(to, error)
            raise error

    async def close(self) -> None:
        for protocol in self._protocols.values():
            protocol.closing = True
            protocol.transport.close()
        for protocol in self._protocols.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(protocol.lost.wait(), 2.0)
