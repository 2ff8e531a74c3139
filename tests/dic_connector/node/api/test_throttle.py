"""Failed authentication: token buckets per address and token id, 429 + Retry-After, and the
counters in /metrics; successes are never limited."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.node.api import create_app
from dic_connector.node.api.throttle import (
    BucketTable,
    FailedAuthThrottle,
    TokenBucket,
    client_key,
)
from dic_connector.node.config import parse_config
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.keyring import NodeKeyring
from tests.conftest import migrated_sqlite

from .conftest import seed

Client = TestClient[web.Request, web.Application]


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(burst=3, refill_per_s=0.5, tokens=3.0, updated_s=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(2.0)  # one token takes 2 s at 0.5/s
    assert bucket.take(1.0) == pytest.approx(1.0)  # half a token back after 1 s
    assert bucket.take(2.0) == 0.0
    assert bucket.take(1_000.0) == 0.0  # never more than the burst after a long pause
    assert bucket.tokens == pytest.approx(2.0)


def test_the_table_is_bounded_least_recently_used_first() -> None:
    clock = Clock()
    table = BucketTable(burst=1, refill_per_s=1.0, max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        assert table.take(key) == 0.0
    assert table.take("a") > 0  # "a" is dry, and now the most recently used
    for i in range(10_000):  # an attacker cycling through addresses
        table.take(f"10.0.{i // 256}.{i % 256}")
        assert len(table) <= 3
    assert table.take("a") == 0.0  # evicted: starts full again, never more than a burst


def test_address_and_token_id_are_charged_separately() -> None:
    clock = Clock()
    throttle = FailedAuthThrottle(burst=2, refill_per_s=1.0, clock=clock)
    assert throttle.failed("10.0.0.1", "t1") is None
    assert throttle.failed("10.0.0.2", "t1") is None
    limited = throttle.failed("10.0.0.3", "t1")  # fresh address, but t1 is dry
    assert limited is not None and (limited.bucket, limited.retry_after_s) == ("token", 1)
    assert throttle.failed("10.0.0.3", None) is None  # the address itself had one left
    limited = throttle.failed("10.0.0.3", None)
    assert limited is not None and limited.bucket == "address"
    clock.now += 1.0
    assert throttle.failed("10.0.0.3", "t2") is None  # refilled


def test_ipv6_clients_count_by_their_64_prefix() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:10.0.0.1") == client_key("10.0.0.1") == "10.0.0.1"
    assert (client_key(None), client_key("")) == ("-", "-")
    throttle = FailedAuthThrottle(burst=1, refill_per_s=1.0, clock=Clock())
    assert throttle.failed("2001:db8::1", None) is None
    assert throttle.failed("2001:db8::2", None) is not None  # same /64, same bucket


@pytest.fixture
async def strict_node(tmp_path: Path) -> AsyncIterator[tuple[Client, dict[str, str]]]:
    url = await migrated_sqlite(tmp_path / "node.db")
    store = Store.open(url, NodeKeyring.generate("node-0"))
    tokens, *_ = await seed(
        store,
        Ed25519PrivateKey.generate(),
        Ed25519PrivateKey.generate(),
        {n: Ed25519PrivateKey.generate() for n in ("alice", "mallory")},
    )
    # three failures, then a token every 1000 s: Retry-After is ~1000 whatever the test's pace
    config = parse_config(
        {
            "node_index": 0,
            "database_url": url,
            "auth": {"failure_burst": 3, "failure_refill_per_s": 0.001},
        }
    )
    client = TestClient(TestServer(create_app(config, store=store), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, tokens
    finally:
        await client.close()
        await store.close()


def _metric(text: str, name: str, label: str) -> float:
    match = re.search(rf"^{name}\{{{label}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_bad_tokens_get_429_with_retry_after_and_are_counted(
    strict_node: tuple[Client, dict[str, str]],
) -> None:
    client, tokens = strict_node
    good = {"Authorization": f"Bearer {tokens['alice']}"}
    for _ in range(20):  # successes take nothing from the budget
        assert (await client.get("/v1/studies", headers=good)).status == 200
    guess = tokens["alice"][:-4] + "AAAA"  # alice's token id, a wrong secret
    statuses = []
    for headers in (
        {"Authorization": f"Bearer {guess}"},
        {},
        {"Authorization": "Bearer dic_nonsense"},
        {"Authorization": f"Bearer {guess}"},
    ):
        response = await client.get("/v1/studies", headers=headers)
        statuses.append(response.status)
    assert statuses == [401, 401, 401, 429]
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert 990 <= int(response.headers["Retry-After"]) <= 1000
    body = await response.json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests"
    assert tokens["alice"][4:36] not in str(body) and guess not in str(body)
    # a valid credential is never limited, even from the throttled address
    assert (await client.get("/v1/studies", headers=good)).status == 200
    assert (await client.get("/v1/requests", headers={"Authorization": "Bearer x"})).status == 429

    metrics = await (await client.get("/metrics")).text()
    assert _metric(metrics, "dic_auth_failures_total", 'reason="token"') == 2
    assert _metric(metrics, "dic_auth_failures_total", 'reason="missing"') == 1
    assert _metric(metrics, "dic_auth_failures_total", 'reason="malformed"') == 2
    assert _metric(metrics, "dic_auth_throttled_total", 'bucket="address"') == 2
    assert 'dic_auth_failures_total{reason="certificate"} 0.0' in metrics  # there from the start
    assert tokens["alice"][4:36] not in metrics  # never by token id


async def test_certificate_routes_count_and_limit_too(
    strict_node: tuple[Client, dict[str, str]],
) -> None:
    client, _ = strict_node
    statuses = [
        (await client.put(f"/v1/peer/requests/{'0' * 8}-0000-0000-0000-{'0' * 12}", json={})).status
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    metrics = await (await client.get("/metrics")).text()
    assert _metric(metrics, "dic_auth_failures_total", 'reason="certificate"') == 4
