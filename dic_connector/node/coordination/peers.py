"""The client side of the peer API: this node calling the other two over mutual TLS.

Each node presents its own certificate (subjectAltName ``node-<i>``, issued by the deployment
CA) and checks the peer's against the name configured for it, never against an address;
the peer API authorises by that certificate alone (``api.peer``). A peer that cannot be
reached, times out, fails (5xx) or asks for time (408, 429) is :class:`PeerUnavailable`
(retry later); a peer that answers any other 4xx refused on its own verification and is
:class:`PeerRefused` (do not retry the same message).

Transport seam (the same shape as ``sources.http.HttpClient`` and
``connector.upload.Uploader``): ``PeerClient(config, session=s)`` sends every call through
the caller's ``aiohttp.ClientSession``. The caller owns it: leaving ``async with`` does not
close it, and calls need no ``async with`` at all. Without ``session`` the client opens its
own on ``async with`` entry and closes it on exit, as before. This node's certificate, the
peer's expected certificate name (``server_hostname``) and the timeout are passed per
request, so an injected session (a test's counting or fault-injecting middleware)
authenticates by mutual TLS exactly as our own does.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import aiohttp

from dic_connector.errors import ConfigError, PeerRefused, PeerUnavailable
from dic_connector.node.config import NodeConfig, PeerConfig

#: 4xx answers that say "not now" rather than "no" (RFC 9110 §15.5.9, RFC 6585 §4).
TRANSIENT = frozenset({408, 429})


class PeerClient:
    """Calls to the peer API of the other nodes (``async with PeerClient(config) as c``).

    ``session``, if given, carries every call and stays open (see the module docstring).
    """

    def __init__(self, config: NodeConfig, timeout_s: float = 10.0, *,
                 session: aiohttp.ClientSession | None = None) -> None:
        if not config.coordinated or config.tls is None:
            raise ConfigError("the peer client needs 'peers' and 'tls' in the config")
        self.me = config.node_index
        self.peers: tuple[PeerConfig, ...] = config.peers
        self._ssl = config.tls.client_context()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._injected = session
        self._session: aiohttp.ClientSession | None = session

    @property
    def others(self) -> list[int]:
        return [i for i in range(len(self.peers)) if i != self.me]

    def name(self, peer: int) -> str:
        return self.peers[peer].name

    async def __aenter__(self) -> PeerClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        """Close the session we opened; an injected one stays open for its owner."""
        if self._session is not None and self._session is not self._injected:
            await self._session.close()
        self._session = self._injected

    async def call(self, peer: int, method: str, path: str,
                   body: dict[str, Any] | None = None) -> dict[str, Any]:
        """``method path`` on ``peer``; the JSON answer, or PeerUnavailable / PeerRefused."""
        if self._session is None:
            raise RuntimeError("PeerClient used outside 'async with'")
        target = self.peers[peer]
        try:
            async with self._session.request(
                    method, target.api_url + path, json=body, ssl=self._ssl,
                    server_hostname=target.name, timeout=self._timeout) as response:
                answer = await response.json(content_type=None) if response.content_length \
                    != 0 else None
                detail = answer.get("detail", "") if isinstance(answer, dict) else ""
                title = answer.get("title", "") if isinstance(answer, dict) else ""
                if 400 <= response.status < 500 and response.status not in TRANSIENT:
                    raise PeerRefused(f"{target.name} refused {method} {path}: "
                                      f"{response.status} {detail}", response.status,
                                      str(title)[:200])
                if response.status >= 500 or response.status in TRANSIENT:
                    raise PeerUnavailable(f"{target.name} failed {method} {path}: "
                                          f"{response.status} {detail}", response.status)
                return dict(answer) if isinstance(answer, dict) else {}
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS handshake
            raise PeerUnavailable(f"{target.name} unreachable ({type(exc).__name__})",
                                  connected=False) from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise PeerUnavailable(f"{target.name} unreachable ({type(exc).__name__})") from exc
