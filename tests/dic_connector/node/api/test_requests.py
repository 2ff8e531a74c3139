"""Study -> request -> signed approval / policy / denial -> status; cancellation; deletion;
every step audited."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from dic_connector.node.store.models import ShareBlob

from .conftest import Node


async def _study(node: Node, who: str = "alice") -> str:
    response = await node.client.post("/v1/studies", json={"title": "Adrenal SBRT"},
                                      headers=node.auth(who))
    assert response.status == 201
    return str((await response.json())["id"])


async def _submit(node: Node, study: str, datasets: list[uuid.UUID] | None = None,
                  analysis: str = "median", column: str = "age") -> dict[str, Any]:
    response = await node.client.post(
        f"/v1/studies/{study}/requests", headers=node.auth("alice"),
        json=node.request_body(study, datasets, analysis, {"column": column}))
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def test_signed_approval_moves_a_request_to_approved(node: Node) -> None:
    request = await _submit(node, await _study(node))
    assert request["status"] == "awaiting_approval"
    assert request["sites"] == ["tm"]
    approval = node.signed({"type": "approval", "request_id": request["id"], "site": "tm",
                            "decision": "approve"})
    response = await node.client.post(f"/v1/requests/{request['id']}/approvals", json=approval,
                                      headers=node.auth("owner_tm"))
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["status"] == "approved"
    assert body["approvals"][0]["site"] == "tm"
    verify = await (await node.client.get("/v1/audit/verify", headers=node.auth("admin"))).json()
    assert verify["ok"] and verify["entries"] >= 5


async def test_pooled_request_needs_every_site(node: Node) -> None:
    request = await _submit(node, await _study(node), [node.dataset_id, node.other_dataset_id])
    assert request["sites"] == ["tm", "tr"]
    payload = {"type": "approval", "request_id": request["id"], "decision": "approve"}
    first = await node.client.post(f"/v1/requests/{request['id']}/approvals",
                                   json=node.signed({**payload, "site": "tm"}),
                                   headers=node.auth("owner_tm"))
    assert (await first.json())["status"] == "awaiting_approval"
    assert "tr" in (await first.json())["status_reason"]
    second = await node.client.post(
        f"/v1/requests/{request['id']}/approvals",
        json=node.signed({**payload, "site": "tr"}, node.other_owner_key),
        headers=node.auth("owner_tr"))
    assert (await second.json())["status"] == "approved"


async def test_forged_or_misdirected_signatures_are_refused(node: Node) -> None:
    request = await _submit(node, await _study(node))
    payload = {"type": "approval", "request_id": request["id"], "site": "tm",
               "decision": "approve"}
    url = f"/v1/requests/{request['id']}/approvals"
    forged = node.signed(payload, node.other_owner_key)  # the other site's key
    response = await node.client.post(url, json=forged, headers=node.auth("owner_tm"))
    assert response.status == 403
    tampered = node.signed(payload)
    tampered["payload"] = tampered["payload"].replace("approve", "approve ")
    assert (await node.client.post(url, json=tampered, headers=node.auth("owner_tm"))).status == 403
    # an owner of a site with no data in the request cannot see it
    other = node.signed({**payload, "site": "tr"}, node.other_owner_key)
    assert (await node.client.post(url, json=other, headers=node.auth("owner_tr"))).status == 404
    status = await (await node.client.get(f"/v1/requests/{request['id']}",
                                          headers=node.auth("alice"))).json()
    assert status["status"] == "awaiting_approval" and status["approvals"] == []


async def test_denial_rejects_and_standing_policy_approves(node: Node) -> None:
    denied = await _submit(node, await _study(node))
    response = await node.client.post(
        f"/v1/requests/{denied['id']}/approvals", headers=node.auth("owner_tm"),
        json=node.signed({"type": "approval", "request_id": denied["id"], "site": "tm",
                          "decision": "deny"}))
    assert (await response.json())["status"] == "rejected"
    policy = await node.client.post("/v1/policies", json=node.signed(node.policy()),
                                    headers=node.auth("owner_tm"))
    assert policy.status == 201, await policy.text()
    covered = await _submit(node, await _study(node))
    assert covered["status"] == "approved"
    not_covered = await _submit(node, await _study(node), None, "frequency", column="gender")
    assert not_covered["status"] == "awaiting_approval"
    policy_id = (await policy.json())["id"]
    revoked = await node.client.post(f"/v1/policies/{policy_id}/revoke",
                                     headers=node.auth("owner_tm"))
    assert revoked.status == 200
    after = await _submit(node, await _study(node))
    assert after["status"] == "awaiting_approval"


async def test_researchers_see_only_their_own_requests(node: Node) -> None:
    request = await _submit(node, await _study(node))
    url = f"/v1/requests/{request['id']}"
    assert (await node.client.get(url, headers=node.auth("mallory"))).status == 404
    assert (await node.client.get(url, headers=node.auth("owner_tr"))).status == 404
    assert (await node.client.get(url, headers=node.auth("owner_tm"))).status == 200
    listing = await (await node.client.get("/v1/requests", headers=node.auth("mallory"))).json()
    assert listing == []
    other_study = await _study(node, "mallory")
    response = await node.client.post(
        f"/v1/studies/{other_study}/requests", headers=node.auth("alice"),
        json=node.request_body(other_study))
    assert response.status == 404


async def test_cancel_and_result_states(node: Node) -> None:
    request = await _submit(node, await _study(node))
    url = f"/v1/requests/{request['id']}"
    result = await node.client.get(f"{url}/result", headers=node.auth("alice"))
    assert result.status == 404 and "no result" in (await result.json())["detail"]
    cancelled = await node.client.post(f"{url}/cancel", headers=node.auth("alice"))
    assert (await cancelled.json())["status"] == "cancelled"
    again = await node.client.post(f"{url}/cancel", headers=node.auth("alice"))
    assert again.status == 200  # idempotent: already cancelled
    late = await node.client.post(
        f"{url}/approvals", headers=node.auth("owner_tm"),
        json=node.signed({"type": "approval", "request_id": request["id"], "site": "tm",
                          "decision": "approve"}))
    assert (await late.json())["status"] == "cancelled"


async def test_bad_bodies_get_clear_errors(node: Node) -> None:
    study = await _study(node)
    url = f"/v1/studies/{study}/requests"
    cases: list[tuple[Any, int, str]] = [
        ({"payload": "{}"}, 400, "'signature' is a required property"),
        ({"analysis": "median", "datasets": [str(node.dataset_id)]}, 400,
         "'payload' is a required property"),
        (node.request_body(study, analysis="Median!"), 422, "payload at analysis"),
        (node.request_body(study, parameters={"rows": [1, 2]}), 422,
         "unknown parameter(s) 'rows'"),
        (node.request_body(study, analysis="quantiles", parameters={
            "column": "age", "probabilities": ["0.25", "half"]}), 422, "probabilities/1"),
        (node.request_body(study, analysis="count", parameters={
            "filter": {"op": ">=", "column": "age", "value": "sixty"}}), 422, "filter"),
        (node.request_body(study, analysis="mean", parameters={"column": "gender"}), 422,
         "gender"),
        (node.request_body(study, analysis="nosuch"), 422, "nosuch"),
        (node.request_body(study, researcher="mallory"), 403, "another researcher"),
        (node.request_body(study, key=node.owner_key), 403, "does not verify"),
    ]
    for body, status, expected in cases:
        response = await node.client.post(url, json=body, headers=node.auth("alice"))
        assert response.status == status, (body, await response.text())
        assert expected in (await response.json())["detail"], body
    raw = await node.client.post("/v1/studies", data=b"{not json", headers=node.auth("alice"))
    assert raw.status == 400


async def test_filters_and_decimal_parameters_go_through_the_signed_api(node: Node) -> None:
    """Each analysis's own parameters (a filter tree, decimal strings: signed requests carry
    no floats) reach the catalogue's checks; the API's schema does not stand in between."""
    study = await _study(node)
    url = f"/v1/studies/{study}/requests"
    adults = {"op": ">=", "column": "age", "value": "17.5"}
    for analysis, parameters in [
            ("count", {"filter": adults}),
            ("quantiles", {"column": "age", "probabilities": ["0.25", "0.5", "0.75"],
                           "filter": {"op": "!", "arg": adults}}),
            ("t_test", {"column": "age", "by": "gender", "alternative": "less",
                        "filter": adults})]:
        response = await node.client.post(url, headers=node.auth("alice"),
                                          json=node.request_body(study, analysis=analysis,
                                                                 parameters=parameters))
        assert response.status == 201, await response.text()
        assert (await response.json())["parameters"] == parameters
    same = node.request_body(study, analysis="correlation",
                             parameters={"columns": ["age", "age"], "method": "spearman"})
    response = await node.client.post(url, headers=node.auth("alice"), json=same)
    assert response.status == 422 and "two different columns" in (await response.json())[
        "detail"]


async def test_resubmitting_the_same_signed_request_is_idempotent(node: Node) -> None:
    study = await _study(node)
    body = node.request_body(study)
    url = f"/v1/studies/{study}/requests"
    first = await node.client.post(url, json=body, headers=node.auth("alice"))
    again = await node.client.post(url, json=body, headers=node.auth("alice"))
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["id"] == (await again.json())["id"]
    listing = await (await node.client.get("/v1/requests", headers=node.auth("alice"))).json()
    assert len(listing) == 1


async def test_owner_deletes_dataset_and_blobs_are_erased(node: Node) -> None:
    listing = await (await node.client.get("/v1/datasets", headers=node.auth("alice"))).json()
    assert {d["site"] for d in listing} == {"tm", "tr"}
    assert listing[0]["latest_version"]["columns"] == ["age", "gender", "gender=female",
                                                        "gender=male"]
    url = f"/v1/datasets/{node.dataset_id}"
    assert (await node.client.delete(url, headers=node.auth("owner_tr"))).status == 404
    response = await node.client.delete(url, headers=node.auth("owner_tm"))
    assert response.status == 200 and (await response.json())["versions_erased"] == 1
    async with node.store.unit_of_work() as uow:
        remaining = await uow.session.scalar(
            select(func.count()).select_from(ShareBlob).where(
                ShareBlob.version_id == node.version_id))
    assert remaining == 0
    listing = await (await node.client.get("/v1/datasets", headers=node.auth("alice"))).json()
    assert [d["site"] for d in listing] == ["tr"]
    head = await (await node.client.get("/v1/audit/head", headers=node.auth("node1"))).json()
    assert head["seq"] >= 1
