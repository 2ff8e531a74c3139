"""FHIR REST paging through the fault-injecting proxy: every fault survived or reported.

Every successful pull is compared with the server's resource set (count and ids), so a lost or
duplicated page fails the test. Waits are recorded by an injected ``sleep``, never timed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization

from dic_connector.errors import SourceError, SourceTimeoutError
from dic_connector.sources.auth import AuthConfig, BearerAuth, SmartBackendAuth
from dic_connector.sources.fhir_rest import FhirRestConfig, FhirRestSource, SearchSpec
from dic_connector.sources.http import HttpClient, HttpConfig, RetryPolicy

if TYPE_CHECKING:
    from conftest import FaultProxy, SekmetServer

pytestmark = pytest.mark.fhir_server
Recorder = tuple[list[float], Callable[[float], Awaitable[None]]]
PAGE = 150  # Observations: 1,350 -> 9 pages


def config(attempts: int = 5, read_timeout_s: float = 5.0) -> HttpConfig:
    return HttpConfig(read_timeout_s=read_timeout_s, retry=RetryPolicy(
        max_attempts=attempts, backoff_base_s=0.2, backoff_max_s=1.0))


async def pull(proxy: FaultProxy, sleep_recorder: Recorder, *, http: HttpConfig | None = None,
               auth: AuthConfig | None = None, rtype: str = "Observation"
               ) -> tuple[list[dict[str, Any]], HttpClient]:
    client = HttpClient(proxy.base_url, auth or BearerAuth("static-test-token"),
                        http or config(), sleep=sleep_recorder[1], seed=1)
    source = FhirRestSource(FhirRestConfig(proxy.base_url, (SearchSpec(rtype),), page_size=PAGE),
                            client=client)
    try:
        return [r async for r in source.stream()], client
    finally:
        await client.close()


def assert_complete(resources: list[dict[str, Any]], sekmet: SekmetServer,
                    rtype: str = "Observation") -> None:
    ids = [r["id"] for r in resources]
    assert len(ids) == len(set(ids)) == len(sekmet.resources[rtype])
    assert set(ids) == sekmet.resources[rtype]


async def test_429_with_retry_after_is_honoured(sekmet: SekmetServer, fault_proxy: FaultProxy,
                                                sleep_recorder: Recorder) -> None:
    fault_proxy.status(429, retry_after="7", match="_offset=300", nth=(0, 1))
    resources, client = await pull(fault_proxy, sleep_recorder)
    assert_complete(resources, sekmet)
    assert sleep_recorder[0] == [7.0, 7.0] and client.retries == 2


async def test_503_burst_uses_exponential_backoff(sekmet: SekmetServer, fault_proxy: FaultProxy,
                                                  sleep_recorder: Recorder) -> None:
    fault_proxy.status(503, match="_offset=450", nth=(0, 1, 2))
    resources, _ = await pull(fault_proxy, sleep_recorder)
    assert_complete(resources, sekmet)
    delays = sleep_recorder[0]
    assert len(delays) == 3
    for attempt, delay in enumerate(delays, start=1):  # equal jitter within [cap/2, cap]
        cap = min(1.0, 0.2 * 2 ** (attempt - 1))
        assert cap / 2 <= delay <= cap


async def test_endless_503_is_reported(fault_proxy: FaultProxy, sleep_recorder: Recorder
                                       ) -> None:
    fault_proxy.status(503, match="_offset=150", nth=None)
    with pytest.raises(SourceError) as info:
        await pull(fault_proxy, sleep_recorder, http=config(attempts=3))
    message = str(info.value)
    assert "GET /fhir/Observation: gave up after 3 attempts: HTTP 503" in message
    assert "error/transient: injected 503" in message  # the server's diagnostics


async def test_truncated_page_is_fetched_again(sekmet: SekmetServer, fault_proxy: FaultProxy,
                                               sleep_recorder: Recorder) -> None:
    fault_proxy.truncated(match="_offset=600")
    resources, client = await pull(fault_proxy, sleep_recorder)
    assert_complete(resources, sekmet)
    assert client.retries == 1


async def test_connection_cut_mid_page_is_fetched_again(
        sekmet: SekmetServer, fault_proxy: FaultProxy, sleep_recorder: Recorder) -> None:
    fault_proxy.cut_connection(match="_offset=750", nth=(0, 1))
    resources, client = await pull(fault_proxy, sleep_recorder)
    assert_complete(resources, sekmet)
    assert client.retries == 2


async def test_page_with_missing_entries_is_reported(fault_proxy: FaultProxy,
                                                     sleep_recorder: Recorder) -> None:
    fault_proxy.drop_entries(match="_offset=300")
    with pytest.raises(SourceError, match=r"announced 1350 matches but paging delivered 1275"):
        await pull(fault_proxy, sleep_recorder)


async def test_slow_page_times_out_and_is_retried(sekmet: SekmetServer, fault_proxy: FaultProxy,
                                                  sleep_recorder: Recorder) -> None:
    fault_proxy.slow(5.0, match="_offset=900")
    resources, client = await pull(fault_proxy, sleep_recorder,
                                   http=config(read_timeout_s=1.0))
    assert_complete(resources, sekmet)
    assert client.retries >= 1


async def test_always_slow_page_gives_timeout_error(fault_proxy: FaultProxy,
                                                    sleep_recorder: Recorder) -> None:
    fault_proxy.slow(5.0, match="_offset=150", nth=None)
    with pytest.raises(SourceTimeoutError, match="gave up after 2 attempts: timed out"):
        await pull(fault_proxy, sleep_recorder, http=config(attempts=2, read_timeout_s=0.2))


async def test_expired_token_is_renewed_once(sekmet: SekmetServer, fault_proxy: FaultProxy,
                                             sleep_recorder: Recorder) -> None:
    pem = sekmet.rs_key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    fault_proxy.expired_token(match="_offset=300")
    auth = SmartBackendAuth(sekmet.rs_client, pem, alg="RS384")
    resources, client = await pull(fault_proxy, sleep_recorder, auth=auth, rtype="Patient")
    assert_complete(resources, sekmet, "Patient")
    assert client.authenticator.tokens_issued == 2  # type: ignore[attr-defined]
    assert client.retries == 0


async def test_static_token_refused_is_auth_error(fault_proxy: FaultProxy,
                                                  sleep_recorder: Recorder) -> None:
    fault_proxy.expired_token(match="_offset=150")
    with pytest.raises(SourceError, match="HTTP 401: error/expired: Access token expired"):
        await pull(fault_proxy, sleep_recorder)
