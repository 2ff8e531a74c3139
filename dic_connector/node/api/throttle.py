"""Token buckets on failed authentication, per client address and per token id.

Each key (a client address, or the public id of a node token) has a bucket of ``burst``
tokens that refills at ``refill_per_s`` (the token bucket of Turner, "New directions in
communications", IEEE Commun. Mag. 24(10), 1986; as in RFC 2697's committed burst). A
failed authentication takes one token from the bucket of its address and, when the
credential names a token id, from that id's; when a bucket is empty the caller is told
``429 Too Many Requests`` with ``Retry-After`` (RFC 6585 §4, RFC 9110 §10.2.3), the seconds
until the bucket holds a token again, instead of 401.

Credentials are verified first and a success takes nothing, so a valid credential is never
limited: not a researcher behind the same hospital NAT as a misconfigured client, nor one
whose token id an attacker has learnt. That is safe because no credential here can be
guessed (node tokens carry 256 random bits, JWTs are signed): the limit makes abuse visible
(``dic_auth_failures_total`` and ``dic_auth_throttled_total`` in ``/metrics``) and tells
clients to back off, it does not stand between an attacker and a secret.

Memory is bounded: each kind keeps at most ``max_keys`` buckets, least recently used
evicted first, so an attacker cycling through addresses or made-up token ids costs a fixed
amount of memory (and an evicted bucket starts full again, which only gives that key the
``burst`` a fresh one would have). The address is the TCP peer's (``request.remote``):
``X-Forwarded-For`` is not trusted, so behind a reverse proxy all callers share the
proxy's bucket. An IPv6 address counts by its /64: every end site is given at least one
(RFC 6177), so one client could otherwise take a fresh bucket per address.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: How many buckets each kind (addresses, token ids) keeps at most.
MAX_TRACKED_KEYS = 10_000


@dataclass
class TokenBucket:
    """``tokens`` of at most ``burst``, refilled at ``refill_per_s`` since ``updated_s``."""

    burst: int
    refill_per_s: float
    tokens: float
    updated_s: float

    def take(self, now_s: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there is."""
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.refill_per_s)
        self.updated_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.refill_per_s


class BucketTable:
    """One bucket per key, created full on first use, at most ``max_keys`` (LRU)."""

    def __init__(
        self,
        burst: int,
        refill_per_s: float,
        max_keys: int = MAX_TRACKED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or refill_per_s <= 0 or max_keys < 1:
            raise ValueError("a bucket needs burst >= 1, refill_per_s > 0 and max_keys >= 1")
        self._burst, self._rate, self._max = burst, refill_per_s, max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Charge one failure to ``key``: 0.0 if allowed, else the seconds to wait."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self._burst, self._rate, float(self._burst), now)
            self._buckets[key] = bucket
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)


def client_key(address: str | None) -> str:
    """The bucket key of a client address: IPv4 as is, IPv6 by its /64."""
    if not address:
        return "-"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # not an IP (a Unix socket): one bucket per name
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else ip)


@dataclass(frozen=True)
class Throttled:
    """A failure over the limit: which bucket ran dry, and the ``Retry-After`` seconds."""

    bucket: str
    retry_after_s: int


class FailedAuthThrottle:
    """The two tables: by client address and by token id."""

    def __init__(
        self,
        burst: int,
        refill_per_s: float,
        max_keys: int = MAX_TRACKED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.addresses = BucketTable(burst, refill_per_s, max_keys, clock)
        self.token_ids = BucketTable(burst, refill_per_s, max_keys, clock)

    def failed(self, address: str | None, token_id: str | None) -> Throttled | None:
        """Charge one failed authentication; None while both buckets had a token."""
        waits = [("address", self.addresses.take(client_key(address)))]
        if token_id is not None:
            waits.append(("token", self.token_ids.take(token_id)))
        bucket, wait = max(waits, key=lambda w: w[1])
        if wait <= 0.0:
            return None
        return Throttled(bucket, max(1, math.ceil(wait)))
