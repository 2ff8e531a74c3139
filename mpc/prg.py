"""A pseudo-random generator from AES-256 in counter mode.

Two parties holding the same key and calling :meth:`Prg.ring` the same number of times
with the same sizes get the same ring elements, with no communication: the basis of all
correlated randomness in replicated secret sharing (Araki et al., CCS 2016, §2.2; ABY3 §3).

Counter-range discipline (a pitfall met while prototyping): the 128-bit CTR block is
``call_index (64 bits) || block_index (64 bits)``, so two calls can never reuse a keystream
block however large each call is (2^64 blocks per call).
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mpc.ring import RingArray

KEY_BYTES = 32
_BLOCK = 16


class Prg:
    """Deterministic AES-256-CTR stream of ring elements under one key."""

    __slots__ = ("_algorithm", "_calls")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"PRG key must be {KEY_BYTES} bytes, got {len(key)}")
        self._algorithm = algorithms.AES(key)
        self._calls = 0

    @classmethod
    def fresh(cls) -> Prg:
        """A PRG under a new key from the operating system's CSPRNG."""
        return cls(os.urandom(KEY_BYTES))

    @property
    def calls(self) -> int:
        """How many draws have been made (both holders of a key must agree on it)."""
        return self._calls

    def random_bytes(self, nbytes: int) -> npt.NDArray[np.uint8]:
        """The next ``nbytes`` of keystream (one call). The plaintext is ``np.zeros``, whose
        pages the allocator maps lazily to the zero page, and the output a numpy buffer:
        several times faster on large draws than Python ``bytes`` and ``bytearray``."""
        nonce = self._calls.to_bytes(8, "big") + bytes(8)
        self._calls += 1
        encryptor = Cipher(self._algorithm, modes.CTR(nonce)).encryptor()
        out = np.empty(nbytes + _BLOCK - 1, dtype=np.uint8)
        written = encryptor.update_into(np.zeros(nbytes, dtype=np.uint8).data,
                                        out.data)
        return out[:written]

    def ring(self, shape: int | tuple[int, ...]) -> RingArray:
        """Uniform elements of Z_2^64 of the given shape (one PRG call)."""
        count = int(np.prod(shape))
        return self.random_bytes(8 * count).view(np.uint64).reshape(shape)

    def permutation(self, n: int) -> np.ndarray:
        """A uniform permutation of range(n) (argsort of n uniform 64-bit keys; ties have
        probability < n^2 / 2^65 and are broken by position, still a permutation)."""
        return np.argsort(self.ring(n), kind="stable")
