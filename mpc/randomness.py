"""Correlated randomness without communication, from pairwise PRG keys.

Party i shares one AES-CTR PRG key with each neighbour: k_(i,i+1) ("next") and
k_(i-1,i) ("prev"). Both holders of a key draw the same stream, so (Araki et al., CCS 2016,
§2.2; ABY3 §3 "shared random values"):

- a **zero-sharing** alpha_i = F(k_(i,i+1)) - F(k_(i-1,i)) has alpha_0 + alpha_1 + alpha_2 = 0
  and any single alpha_i is uniform to the other parties; it re-randomises products;
- a **random replicated sharing** r_i = F(k_(i-1,i)) gives party i the pair (r_i, r_(i+1))
  of a uniform r that no party knows;
- a **pair value** F(k_(i,j)) is known to exactly the two parties i, j (used by truncation
  and shuffles);
- a **common value** F(k_all) is known to all three parties (public randomness, e.g. the
  mask that input sharing gives to both non-owners).

Keys are agreed per session by an ephemeral X25519 exchange over the already authenticated
peer channels (RFC 7748), expanded with HKDF-SHA256 (RFC 5869) bound to the session id and
the unordered pair of party indices. The common key is the hash of one random contribution
from each party, exchanged in the same round. Fresh keys per session mean a compromised session key
says nothing about any other session.

Both holders must make the same sequence of draws on a key; the engine guarantees this by
running the same deterministic program on all three parties.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mpc.prg import KEY_BYTES, Prg
from mpc.ring import RingArray
from mpc.sharing import AShare, next_party, prev_party

_HKDF_INFO = b"dic-connector mpc pairwise PRG key v1"


class KeyAgreement:
    """One party's ephemeral X25519 key pair for a session."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()

    @property
    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def pair_key(self, peer_public: bytes, session_id: bytes, me: int, peer: int) -> bytes:
        """The PRG key shared with ``peer`` for this session."""
        shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        lo, hi = sorted((me, peer))
        return HKDF(
            algorithm=hashes.SHA256(), length=KEY_BYTES, salt=session_id,
            info=_HKDF_INFO + bytes([lo, hi]),
        ).derive(shared)


@dataclass
class Correlated:
    """Party ``party``'s correlated randomness for one session."""

    party: int
    prev: Prg  #: shared with party - 1
    next: Prg  #: shared with party + 1
    common: Prg  #: shared by all three parties

    @classmethod
    def from_keys(cls, party: int, key_prev: bytes, key_next: bytes,
                  key_common: bytes) -> Correlated:
        return cls(party, Prg(key_prev), Prg(key_next), Prg(key_common))

    def zero_share(self, shape: int | tuple[int, ...]) -> RingArray:
        """alpha_i with alpha_0 + alpha_1 + alpha_2 = 0 (mod 2^64).

        Always an array, 0-d for ``shape == ()`` (numpy would make the difference of two
        0-d arrays a scalar, whose arithmetic warns on wrap-around).
        """
        return np.asarray(self.next.ring(shape) - self.prev.ring(shape), dtype=np.uint64)

    def add_zero_share(self, z: RingArray) -> RingArray:
        """z + alpha_i, in place when ``z`` is a writable C-contiguous array (the draws of
        :meth:`zero_share`, from reused keystream pieces instead of two fresh arrays)."""
        z = _writable(z)
        _fold(z, self.next.keystream(z.size), self.prev.keystream(z.size), xor=False)
        return z

    def xor_zero_share(self, z: RingArray) -> RingArray:
        """z ^ beta_i (in place as :meth:`add_zero_share`), beta an XOR zero-sharing
        (beta_0 ^ beta_1 ^ beta_2 = 0): F(k_(i,i+1)) ^ F(k_(i-1,i))."""
        z = _writable(z)
        _fold(z, self.next.keystream(z.size), self.prev.keystream(z.size), xor=True)
        return z

    def random_share(self, shape: int | tuple[int, ...]) -> AShare:
        """This party's view of a uniformly random shared r that nobody knows."""
        return AShare(self.party, self.prev.ring(shape), self.next.ring(shape))

    def pair_prg(self, peer: int) -> Prg:
        """The PRG shared with neighbour ``peer`` (both of them draw from it in step)."""
        if peer == next_party(self.party):
            return self.next
        if peer == prev_party(self.party):
            return self.prev
        raise ValueError(f"party {self.party} shares no key with party {peer}")


def _writable(z: RingArray) -> RingArray:
    if z.flags.c_contiguous and z.flags.writeable and z.dtype == np.uint64:
        return z
    return np.array(z, dtype=np.uint64, order="C")


def _fold(z: RingArray, plus: Iterator[RingArray], minus: Iterator[RingArray],
          xor: bool) -> None:
    flat = z.reshape(-1)  # a view, for a C-contiguous array
    start = 0
    for p, q in zip(plus, minus, strict=True):
        part = flat[start:start + p.shape[0]]
        if xor:
            part ^= p
            part ^= q
        else:
            part += p
            part -= q
        start += p.shape[0]


def common_key(contributions: list[bytes], session_id: bytes) -> bytes:
    """The three-party key from the parties' contributions, in party order."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=session_id,
                info=_HKDF_INFO + b"common").derive(b"".join(contributions))
