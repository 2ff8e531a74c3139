"""The signed payload types: built by clients, read back and re-verified by nodes.

The verifiers take any object with the stored fields; frozen dataclasses stand in for the
node's rows here, so these checks are shown to need nothing of the node.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.errors import AuthorizationError, SignatureError
from dic_connector.trust import payloads
from dic_connector.trust.signing import public_key_bytes, signed
from dic_connector.vocabulary import Decision, Role

KEY = Ed25519PrivateKey.generate()


@dataclass(frozen=True)
class Person:
    name: str
    role: Role
    site_id: str | None
    signing_public_key: bytes | None = public_key_bytes(KEY)
    disabled_at: dt.datetime | None = None


@dataclass(frozen=True)
class StoredApproval:
    request_id: uuid.UUID
    site_id: str
    decision: Decision
    canonical_payload: str
    signature: bytes
    signer_public_key: bytes


@dataclass(frozen=True)
class StoredPolicy:
    site_id: str
    analyses: list[str]
    columns: list[str]
    min_cell_count: int
    expires_at: dt.datetime
    canonical_payload: str
    signature: bytes
    signer_public_key: bytes


def _sign(payload: dict[str, object]) -> tuple[str, bytes]:
    import base64

    body = signed(payload, KEY)
    return body["payload"], base64.b64decode(body["signature"])


def test_a_request_names_its_datasets_in_order_and_keeps_its_id() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    request_id = uuid.uuid4()
    payload = payloads.analysis_request("s", "alice", "count", [b, a], request_id=request_id)
    assert payload["datasets"] == sorted([str(a), str(b)])
    assert payload["id"] == str(request_id) and payload["parameters"] == {}


def test_a_researchers_request_verifies_only_for_that_researcher() -> None:
    text, signature = _sign(payloads.analysis_request("s", "alice", "count", []))
    alice = Person("alice", Role.RESEARCHER, None)
    assert payloads.verify_request_signature(text, signature, alice)["researcher"] == "alice"
    with pytest.raises(SignatureError, match="names another researcher"):
        payloads.verify_request_signature(text, signature, replace(alice, name="bob"))
    with pytest.raises(AuthorizationError, match="only a researcher"):
        payloads.verify_request_signature(text, signature, replace(alice, role=Role.ADMIN))
    with pytest.raises(SignatureError, match="no active signing key"):
        payloads.verify_request_signature(text, signature, replace(
            alice, disabled_at=dt.datetime.now(dt.UTC)))
    with pytest.raises(SignatureError, match="not signed"):
        payloads.verify_request_signature(text, None, alice)
    with pytest.raises(SignatureError, match="analysis request: Ed25519"):
        payloads.verify_request_signature(text.replace("count", "mean!"), signature, alice)


def test_payload_text_must_be_canonical_and_of_its_type() -> None:
    with pytest.raises(SignatureError, match=r"not (a )?canonical"):
        payloads.parse_signed_payload('{"type": "approval"}', "approval")
    with pytest.raises(SignatureError, match=r"not (a )?canonical"):
        payloads.parse_signed_payload('{"type":"approval","x":1.5}', "approval")
    with pytest.raises(SignatureError, match="'type' must be 'policy'"):
        payloads.parse_signed_payload('{"type":"approval"}', "policy")


def test_a_stored_approval_reverifies_and_a_changed_row_does_not() -> None:
    request_id = uuid.uuid4()
    text, signature = _sign(payloads.approval(request_id, "tm"))
    stored = StoredApproval(request_id, "tm", Decision.APPROVE, text, signature,
                            public_key_bytes(KEY))
    payloads.verify_approval(stored)
    assert payloads.approval_decision(payloads.parse_signed_payload(text, "approval"),
                                      request_id, "tm") is Decision.APPROVE
    with pytest.raises(SignatureError, match="stored fields differ"):
        payloads.verify_approval(replace(stored, decision=Decision.DENY))
    with pytest.raises(SignatureError, match="another request or site"):
        payloads.approval_decision(payloads.parse_signed_payload(text, "approval"),
                                   request_id, "tr")
    with pytest.raises(SignatureError, match="not approve/deny"):
        payloads.approval_decision({**payloads.approval(request_id, "tm", "maybe")},
                                   request_id, "tm")


def test_only_an_active_data_owner_signs_for_a_site() -> None:
    owner = Person("owner_tm", Role.DATA_OWNER, "tm")
    assert payloads.owner_key(owner, "policy") == public_key_bytes(KEY)
    with pytest.raises(AuthorizationError, match="only a data owner"):
        payloads.owner_key(replace(owner, role=Role.RESEARCHER), "policy")
    with pytest.raises(SignatureError, match="no active signing key"):
        payloads.owner_key(replace(owner, signing_public_key=None), "policy")


def test_policy_terms_are_typed_and_bound_to_the_stored_row() -> None:
    payload = payloads.policy("tm", ["count"], ["*"], 7, dt.timedelta(days=1))
    terms = payloads.policy_terms(payload)
    assert (terms.site, terms.analyses, terms.columns, terms.min_cell_count) == (
        "tm", ["count"], ["*"], 7)
    assert terms.expires_at.tzinfo is dt.UTC
    text, signature = _sign(payload)
    stored = StoredPolicy("tm", ["count"], ["*"], 7, terms.expires_at, text, signature,
                          public_key_bytes(KEY))
    payloads.verify_policy(stored)
    with pytest.raises(SignatureError, match="stored fields differ"):
        payloads.verify_policy(replace(stored, min_cell_count=5))
    for broken in ({**payload, "min_cell_count": True}, {**payload, "min_cell_count": 0},
                   {**payload, "columns": "age"}, {**payload, "columns": [{"a": 1}]},
                   {**payload, "analyses": [1]}):
        with pytest.raises(SignatureError, match="wrong types"):
            payloads.policy_terms(broken)
    with pytest.raises(SignatureError, match="valid expires_at"):
        payloads.policy_terms({**payload, "expires_at": "tomorrow"})
