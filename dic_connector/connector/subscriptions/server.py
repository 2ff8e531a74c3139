"""The FHIR server side of a dataset's subscription: find, create, update, re-activate, ask.

Through the source's own :class:`~dic_connector.sources.HttpClient` (its base URL, auth,
TLS and retries), with the plain R4 interactions (http://hl7.org/fhir/R4/http.html):

- ``GET Subscription?_tag=<system>|<site>.<dataset>`` finds the connector's subscriptions
  (:mod:`.resources`);
- ``POST Subscription`` creates one, ``PUT Subscription/{id}`` rewrites one whose definition
  changed (endpoint, secret, topic, filters, heartbeat) or re-activates one the server set to
  ``error`` or ``off`` (status ``requested`` again), ``DELETE`` removes extra copies;
- ``GET Subscription/{id}`` reads its status, and ``GET Subscription/{id}/$status``
  (Backport IG, OperationDefinition ``backport-subscription-status``) its event count.

The IG's ``$events`` operation (replaying missed events) is not used: a full pull recovers
from any gap, and servers commonly lack it (sekmet does).
"""

from __future__ import annotations

import json
from typing import Any

from dic_connector.connector.config import SubscriptionKind, SubscriptionTrigger
from dic_connector.connector.subscriptions import resources
from dic_connector.connector.subscriptions.notifications import (
    Notification,
    parse_status_bundle,
)
from dic_connector.errors import SourceError
from dic_connector.sources import HttpClient

FHIR_JSON = "application/fhir+json"


class SubscriptionServer:
    """One dataset's subscription on its FHIR server."""

    def __init__(self, client: HttpClient, settings: SubscriptionTrigger, site: str,
                 dataset: str) -> None:
        self.client = client
        self.settings = settings
        self.site = site
        self.dataset = dataset
        self.wanted = resources.desired(settings, site, dataset)

    @property
    def _base(self) -> str:
        return self.client.base_url

    async def _send(self, method: str, path: str, body: Any = None,
                    ok: tuple[int, ...] = (200, 201)) -> tuple[int, Any]:
        response, doc = await self.client.request(
            method, f"{self._base}/{path}", data=None if body is None else json.dumps(body),
            headers={"Content-Type": FHIR_JSON} if body is not None else None, ok=ok,
            want_json=method != "DELETE")
        return response.status, doc

    async def find(self) -> list[dict[str, Any]]:
        """The connector's subscriptions for this dataset on the server."""
        code = resources.tag_code(self.site, self.dataset)
        _, doc = await self.client.request(
            "GET", f"{self._base}/Subscription",
            params={"_tag": f"{resources.TAG_SYSTEM}|{code}", "_count": "50"}, want_json=True)
        entries = (doc.get("entry") or []) if isinstance(doc, dict) else []
        return [e["resource"] for e in entries if isinstance(e, dict)
                and resources.ours(e.get("resource"), self.site, self.dataset)]

    async def ensure(self) -> tuple[str, str]:
        """Make sure the subscription exists, asks for what the config says, and is not in
        ``error`` or ``off``; ``(id, what was done)``: reused, created, updated, reactivated."""
        found = await self.find()
        if not found:
            _, created = await self._send("POST", "Subscription", self.wanted)
            if not isinstance(created, dict) or not isinstance(created.get("id"), str):
                raise SourceError(f"POST {self._base}/Subscription answered without an id")
            return created["id"], "created"
        found.sort(key=lambda s: (not resources.matches(s, self.wanted),
                                  s.get("status") != resources.ACTIVE, str(s.get("id"))))
        keep, extra = found[0], found[1:]
        for duplicate in extra:
            await self._send("DELETE", f"Subscription/{duplicate['id']}", ok=(200, 204, 404, 410))
        if not resources.matches(keep, self.wanted):
            await self.put_requested(keep)
            return keep["id"], "updated"
        if keep.get("status") in (resources.ERROR, resources.OFF):
            await self.put_requested(keep)
            return keep["id"], "reactivated"
        return keep["id"], "reused"

    async def put_requested(self, found: dict[str, Any]) -> None:
        """Rewrite ``found`` as wanted with status ``requested`` (re-activation)."""
        await self._send("PUT", f"Subscription/{found['id']}",
                         resources.requested(found, self.wanted))

    async def read(self, subscription: str) -> dict[str, Any] | None:
        """The Subscription (``None`` if the server no longer has it)."""
        status, doc = await self._send("GET", f"Subscription/{subscription}",
                                       ok=(200, 404, 410))
        return doc if status == 200 and isinstance(doc, dict) else None

    async def status(self, subscription: str) -> Notification | None:
        """What ``$status`` says of the subscription (backport only; ``None`` otherwise)."""
        if self.settings.kind is not SubscriptionKind.BACKPORT:
            return None
        _, doc = await self._send("GET", f"Subscription/{subscription}/$status", ok=(200,))
        return next((n for n in parse_status_bundle(doc) if n.subscription == subscription),
                    None)
