"""The signed payload types: built by researchers' and owners' clients, read back by nodes.

Three types, each the canonical JSON of an object whose ``type`` names it:

- ``analysis_request``: ``{"type", "id", "study_id", "researcher", "analysis",
  "analysis_version", "parameters", "datasets"}``, signed by the researcher;
- ``approval``: ``{"type", "request_id", "site", "decision"}`` (it may hold more members, e.g.
  the analysis name or a digest of the request), signed by the site's data owner;
- ``policy``: ``{"type", "site", "analyses", "columns", "min_cell_count", "expires_at"}`` with
  ``expires_at`` as ISO 8601 UTC (``...Z``), a data owner's standing approval of a class of
  analyses; optionally the disclosure settings it tightens for the requests it approves
  (:data:`POLICY_SETTINGS`: ``min_subset_size``, ``max_levels``, ``ledger``: true,
  ``perturbation``), never loosens (the nodes refuse a looser policy and apply the
  strictest setting asked for).

Nodes store signed objects *with the exact bytes that were signed* (the canonical text, the
signature and the signer's public key), so any node can re-verify them later
(:func:`verify_approval`, :func:`verify_policy`) independently of the node that received
them, which is what "each node verifies every approval before it computes" needs. The
verifiers take any object with the stored fields (:class:`Signer`, :class:`SignedApproval`,
:class:`SignedPolicy`): the node's rows satisfy them, and nothing here knows the node.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from dic_connector.errors import AuthorizationError, CanonicalJSONError, SignatureError
from dic_connector.trust.canonical import canonical_json, strict_loads
from dic_connector.trust.signing import verify_ed25519
from dic_connector.vocabulary import Decision, Role

#: In a policy's ``analyses`` or ``columns``: every analysis, every column.
WILDCARD = "*"
#: The optional disclosure settings of a policy, beyond its ``min_cell_count``.
POLICY_SETTINGS = ("min_subset_size", "max_levels", "ledger", "perturbation")


# -- building (the client side) ------------------------------------------------------------

def analysis_request(study_id: uuid.UUID | str, researcher: str, analysis: str,
                     datasets: Iterable[uuid.UUID | str],
                     parameters: dict[str, Any] | None = None, analysis_version: str = "1",
                     request_id: uuid.UUID | None = None) -> dict[str, Any]:
    """A request payload; the id is chosen here, so resubmitting it is idempotent."""
    return {"type": "analysis_request", "id": str(request_id or uuid.uuid4()),
            "study_id": str(study_id), "researcher": researcher, "analysis": analysis,
            "analysis_version": analysis_version, "parameters": parameters or {},
            "datasets": sorted(str(d) for d in datasets)}


def approval(request_id: uuid.UUID | str, site: str, decision: str = "approve"
             ) -> dict[str, Any]:
    """An approval (or, with ``decision="deny"``, a denial) of one request for one site."""
    return {"type": "approval", "request_id": str(request_id), "site": site,
            "decision": decision}


def policy(site: str, analyses: list[str], columns: list[str], min_cell_count: int,
           valid_for: dt.timedelta, perturbation: dict[str, Any] | None = None,
           min_subset_size: int | None = None, max_levels: int | None = None,
           ledger: bool | None = None) -> dict[str, Any]:
    """A standing policy of ``site``, expiring ``valid_for`` from now; with
    ``perturbation`` (``{"max_noise": D, "variance": V, "js": 0, "allow_exact": false}``) the
    requests it approves open cell-key perturbed counts (a float V is written as its exact
    decimal text: canonical JSON has no floats); with ``min_subset_size``, ``max_levels``
    or ``ledger=True`` they are held to those settings too (None: the deployment's)."""
    expires = (dt.datetime.now(dt.UTC) + valid_for).strftime("%Y-%m-%dT%H:%M:%SZ")
    out: dict[str, Any] = {"type": "policy", "site": site, "analyses": analyses,
                           "columns": columns, "min_cell_count": min_cell_count,
                           "expires_at": expires}
    for key, value in (("min_subset_size", min_subset_size), ("max_levels", max_levels),
                       ("ledger", ledger)):
        if value is not None:
            out[key] = value
    if perturbation is not None:
        out["perturbation"] = {key: repr(value) if isinstance(value, float) else value
                               for key, value in perturbation.items()}
    return out


# -- reading (the node side) ---------------------------------------------------------------

class Signer(Protocol):
    """A registered principal as far as signatures are concerned."""

    @property
    def name(self) -> str: ...
    @property
    def role(self) -> Role: ...
    @property
    def site_id(self) -> str | None: ...
    @property
    def disabled_at(self) -> dt.datetime | None: ...
    @property
    def signing_public_key(self) -> bytes | None: ...


class Signed(Protocol):
    """A stored signed object: the exact text that was signed, the signature, the key."""

    @property
    def canonical_payload(self) -> str: ...
    @property
    def signature(self) -> bytes: ...
    @property
    def signer_public_key(self) -> bytes: ...


class SignedApproval(Signed, Protocol):
    """A stored approval and the fields read from its payload."""

    @property
    def request_id(self) -> uuid.UUID: ...
    @property
    def site_id(self) -> str: ...
    @property
    def decision(self) -> Decision: ...


class SignedPolicy(Signed, Protocol):
    """A stored standing policy and its terms."""

    @property
    def site_id(self) -> str: ...
    @property
    def analyses(self) -> list[str]: ...
    @property
    def columns(self) -> list[str]: ...
    @property
    def min_cell_count(self) -> int: ...
    @property
    def expires_at(self) -> dt.datetime: ...


@dataclass(frozen=True)
class PolicyTerms:
    """What a signed policy allows, read from its payload."""

    site: str
    analyses: list[str]
    columns: list[str]
    min_cell_count: int
    expires_at: dt.datetime

    def of(self, stored: SignedPolicy) -> bool:
        """True when a stored policy's fields are exactly these terms."""
        return (stored.site_id, stored.analyses, stored.columns, stored.min_cell_count,
                stored.expires_at) == (self.site, self.analyses, self.columns,
                                       self.min_cell_count, self.expires_at)


def parse_signed_payload(canonical_payload: str, kind: str) -> dict[str, Any]:
    """The payload as a dict, refusing text that is not canonical or not of type ``kind``."""
    try:
        payload = strict_loads(canonical_payload)
        if not isinstance(payload, dict) or canonical_json(payload) != canonical_payload:
            raise SignatureError(f"{kind}: payload is not a canonical JSON object")
    except (ValueError, CanonicalJSONError) as exc:
        raise SignatureError(f"{kind}: payload is not canonical JSON") from exc
    if payload.get("type") != kind:
        raise SignatureError(f"{kind}: payload 'type' must be '{kind}'")
    return payload


def verify_signed(public_key: bytes, canonical_payload: str, signature: bytes,
                  kind: str) -> dict[str, Any]:
    """The payload of type ``kind`` after its Ed25519 signature verified."""
    verify_ed25519(public_key, canonical_payload.encode("utf-8"), signature,
                   kind.replace("_", " "))
    return parse_signed_payload(canonical_payload, kind)


def owner_key(signer: Signer, kind: str) -> bytes:
    """The public key of a data owner who may sign ``kind`` (approval, policy)."""
    if signer.role is not Role.DATA_OWNER or signer.site_id is None:
        raise AuthorizationError(f"{kind}: only a data owner may sign")
    if signer.disabled_at is not None or signer.signing_public_key is None:
        raise SignatureError(f"{kind}: the signer has no active signing key")
    return signer.signing_public_key


def approval_decision(payload: dict[str, Any], request_id: uuid.UUID, site: str | None
                      ) -> Decision:
    """The decision of an approval payload that names ``request_id`` and ``site``."""
    if payload.get("request_id") != str(request_id) or payload.get("site") != site:
        raise SignatureError("approval: payload names another request or site")
    try:
        return Decision(str(payload.get("decision")))
    except ValueError as exc:
        raise SignatureError("approval: payload 'decision' is not approve/deny") from exc


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def policy_terms(payload: dict[str, Any]) -> PolicyTerms:
    """The terms of a policy payload, type-checked."""
    try:
        site, analyses, columns = payload["site"], payload["analyses"], payload["columns"]
        min_cell_count = payload["min_cell_count"]
        expires_at = dt.datetime.fromisoformat(payload["expires_at"].replace("Z", "+00:00"))
    except (KeyError, AttributeError, ValueError) as exc:
        raise SignatureError("policy: payload lacks site, analyses, columns, "
                             "min_cell_count or a valid expires_at") from exc
    if not (isinstance(site, str) and _strings(analyses) and _strings(columns)
            and type(min_cell_count) is int and min_cell_count >= 1
            and expires_at.tzinfo is not None
            and isinstance(payload.get("perturbation", {}), dict)
            and type(payload.get("min_subset_size", 1)) is int
            and payload.get("min_subset_size", 1) >= 1
            and type(payload.get("max_levels", 2)) is int and payload.get("max_levels", 2) >= 2
            and type(payload.get("ledger", True)) is bool):
        raise SignatureError("policy: payload fields have the wrong types")
    return PolicyTerms(site, analyses, columns, min_cell_count, expires_at.astimezone(dt.UTC))


def verify_request_signature(canonical_payload: str, signature: bytes | None,
                             researcher: Signer) -> dict[str, Any]:
    """The researcher's signed analysis request, verified against ``researcher``'s key as
    registered on *this* node; :class:`SignatureError` otherwise."""
    if researcher.role is not Role.RESEARCHER:
        raise AuthorizationError("analysis request: only a researcher may sign a request")
    if researcher.disabled_at is not None or researcher.signing_public_key is None:
        raise SignatureError("analysis request: the researcher has no active signing key")
    if signature is None:
        raise SignatureError("analysis request: the request is not signed")
    payload = verify_signed(researcher.signing_public_key, canonical_payload, signature,
                            "analysis_request")
    if payload.get("researcher") != researcher.name:
        raise SignatureError("analysis request: payload names another researcher")
    return payload


def verify_approval(approval: SignedApproval) -> None:
    """Re-verify a stored approval: signature, and that the payload matches the row."""
    payload = verify_signed(approval.signer_public_key, approval.canonical_payload,
                            approval.signature, "approval")
    if (payload.get("request_id"), payload.get("site"), payload.get("decision")) != (
            str(approval.request_id), approval.site_id, approval.decision.value):
        raise SignatureError("approval: stored fields differ from the signed payload")


def verify_policy(policy: SignedPolicy) -> None:
    """Re-verify a stored standing policy (signature and payload/row agreement)."""
    payload = verify_signed(policy.signer_public_key, policy.canonical_payload,
                            policy.signature, "policy")
    if not policy_terms(payload).of(policy):
        raise SignatureError("policy: stored fields differ from the signed payload")
