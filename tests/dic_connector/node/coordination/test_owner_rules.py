"""Disclosure settings per deployment, tightened (never loosened) per dataset by its owner's
standing policy: a looser policy is refused at creation, naming the setting; the plan the
three nodes agree on carries the strictest of every setting (k, min_subset_size,
max_levels, the release ledger, perturbation), so a policy that forces the ledger on defeats
the pooled-minus-per-site attack that a deployment without the ledger lets through."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dic_connector.errors import ApiError, NotReady, SignatureError
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.config import NodeConfig, parse_config
from dic_connector.node.coordination.verify import (
    Plan,
    check_plan,
    policy_loosens,
    policy_rules,
    propose,
)
from dic_connector.node.store.ledger import LedgerHead
from dic_connector.trust import payloads

from .conftest import close_cluster, cohort, make_cluster

DAY = dt.timedelta(days=1)
#: A filter every row passes: its cells are keyed apart from the unfiltered ones.
ALL_AGES = {"op": ">=", "column": "age", "value": 0}


async def test_a_policy_tightens_the_deployment_and_forces_the_ledger_on(
        tmp_path: Path) -> None:
    cluster = await make_cluster(tmp_path, ledger=False, max_levels=10)
    try:
        tm, tr = cohort(40, 5, (0.45, 0.35, 0.2)), cohort(12, 105, (0.5, 0.3, 0.2))
        assert np.bincount(tr[:, 1], minlength=3).tolist() == [6, 5, 1]  # ECOG 2: one row
        await cluster.upload("tm", tm)
        await cluster.upload("tr", tr)
        owner = cluster.owners["tm"]

        # -- loosening policies are refused where they are created, naming the setting
        for kwargs, named in (({"min_cell_count": 3}, "min_cell_count 3 is below"),
                              ({"max_levels": 20}, "max_levels 20 is above")):
            k = int(kwargs.pop("min_cell_count", 5))
            with pytest.raises(ApiError) as refused:
                await owner.add_policy(["frequency"], ["*"], k, DAY, at=0, **kwargs)
            assert refused.value.status == 403 and named in str(refused.value)
        assert await owner.policies(at=0) == []

        # -- the deployment does not check the ledger: pooled minus per-site gives tr's row
        alone = await cluster.submit(0, "frequency", {"column": "ecog"}, sites=("tm",))
        await cluster.approve(0, alone, "tm")
        by_tm = (await cluster.completed_everywhere(alone))[0]
        pooled = await cluster.submit(0, "frequency", {"column": "ecog"})
        for site in ("tm", "tr"):
            await cluster.approve(0, pooled, site)
        both = (await cluster.completed_everywhere(pooled))[0]
        assert both["disclosure"]["release_ledger"] is False
        assert both["disclosure"]["max_levels"] == 10
        assert both["levels"]["2"] - by_tm["levels"]["2"] == 1  # the attack works

        # -- tm's policy forces the ledger on (and tightens m and max_levels) for its data
        policy = await owner.add_policy(["frequency", "histogram"], ["*"], 5, DAY, at=1,
                                        min_subset_size=8, max_levels=3, ledger=True)
        assert (policy.min_subset_size, policy.max_levels, policy.ledger) == (8, 3, True)
        filtered = {"column": "ecog", "filter": ALL_AGES}
        alone = await cluster.submit(0, "frequency", filtered, sites=("tm",))
        first = await cluster.completed_everywhere(alone)
        assert first[0] == first[1] == first[2]
        assert first[0]["levels"] == by_tm["levels"]
        assert first[0]["disclosure"]["release_ledger"] is True
        pooled = await cluster.submit(2, "frequency", filtered)
        await cluster.approve(2, pooled, "tr")  # tm's side is covered by its policy
        results = await cluster.completed_everywhere(pooled)
        assert results[0] == results[1] == results[2]
        shown = results[0]
        assert not isinstance(shown["levels"]["2"], int)  # tr's single row stays hidden
        assert shown["disclosure"]["release_ledger"] is True
        assert (shown["disclosure"]["min_subset_size"], shown["disclosure"]["max_levels"]) \
            == (8, 3)
        for store in cluster.stores:
            async with store.unit_of_work() as uow:
                [opened] = [e for e in await uow.audit.entries(obj=f"request:{pooled}")
                            if e.action == "result.open"]
            details = json.loads(opened.details)
            assert (details["check_ledger"], details["max_levels"],
                    details["min_subset_size"]) == (True, 3, 8)

        # -- max_levels: a histogram of 4 bins (6 cells with below/above) is refused
        histogram = await cluster.submit(1, "histogram",
                                         {"column": "age", "breaks": [40, 50, 60, 70, 80]},
                                         sites=("tm",))
        refused = (await cluster.completed_everywhere(histogram))[0]
        assert refused["suppressed"] is True
        assert "max_levels" in refused["reason"] and "6 levels" in refused["reason"]
        async with cluster.stores[1].unit_of_work() as uow:
            plan = await propose(uow, cluster.configs[1], uuid.UUID(histogram))
        assert (plan.max_levels, plan.check_ledger, plan.min_subset_size) == (3, True, 8)

        # -- a node refuses a plan looser than the policy it relies on requires
        await cluster.stop_node(0)  # no coordinator: the request stays startable on node 1
        waiting = uuid.UUID(await cluster.submit(1, "frequency", {"column": "ecog"},
                                                 sites=("tm",)))
        store, node = cluster.stores[1], cluster.configs[1]
        async with store.unit_of_work() as uow:
            plan = await propose(uow, node, waiting)
            await check_plan(uow, node, plan)
        for looser, named in ((replace(plan, max_levels=None), "max_levels unlimited is "
                               "above the 3"),
                              (replace(plan, max_levels=4), "max_levels 4 is above the 3"),
                              (replace(plan, check_ledger=False), "does not check the release "
                               "ledger"),
                              (replace(plan, min_subset_size=7), "minimum subset size 7")):
            async with store.unit_of_work() as uow:
                with pytest.raises(NotReady, match=named):
                    await check_plan(uow, node, looser)
    finally:
        await close_cluster(cluster)


def config(**settings: Any) -> NodeConfig:
    return parse_config({"node_index": 0, "database_url": "sqlite:///:memory:", **settings})


def signed_policy(**settings: Any) -> dict[str, Any]:
    return payloads.policy("tm", ["count"], ["*"], int(settings.pop("min_cell_count", 5)),
                           DAY, **settings)


def test_a_policy_may_only_tighten_the_deployment() -> None:
    strict = config(min_cell_count=5, min_subset_size=8, max_levels=20,
                    perturbation={"max_noise": 3, "variance": 2.0})
    assert policy_loosens(strict, signed_policy(
        min_cell_count=6, min_subset_size=10, max_levels=5, ledger=True,
        perturbation={"max_noise": 4, "variance": 3.0})) == []
    assert policy_loosens(strict, signed_policy(perturbation={"max_noise": 3,
                                                              "variance": 2.0})) == []
    cases: list[tuple[dict[str, Any], str]] = [({"min_cell_count": 4}, "min_cell_count 4 is below the deployment's 5"),
             ({"min_subset_size": 6}, "min_subset_size 6 is below the deployment's 8"),
             ({"max_levels": 21}, "max_levels 21 is above the deployment's 20"),
             ({"ledger": False}, "ledger false would turn the release ledger off"),
             ({"perturbation": {"max_noise": 2, "variance": 1.0}}, "is weaker than"),
             ({"perturbation": {"max_noise": 3, "variance": 2.0, "allow_exact": True}},
              "allow_exact true"),
             ({"perturbation": {"max_noise": 2, "variance": 9.0}}, "perturbation.variance")]
    for settings, named in cases:
        [reason] = policy_loosens(strict, signed_policy(**settings))
        assert named in reason, (settings, reason)
    # against a deployment without a limit, without the ledger and without noise, any
    # limit, ledger true or false and any perturbation tighten (or keep) it
    loose = config(ledger=False)
    assert policy_loosens(loose, signed_policy(max_levels=1000, ledger=False,
                                               perturbation={"max_noise": 1,
                                                             "variance": 0.5})) == []


def test_the_policy_payload_carries_its_settings_and_is_type_checked() -> None:
    payload = signed_policy(min_subset_size=9, max_levels=12, ledger=True)
    assert (payload["min_subset_size"], payload["max_levels"], payload["ledger"]) == (9, 12,
                                                                                      True)
    assert "max_levels" not in signed_policy()
    assert payloads.policy_terms(payload).min_cell_count == 5
    assert policy_rules(payload) == Rules.of(5, 9, None, 12, True)
    for key, bad in (("min_subset_size", 0), ("max_levels", 1), ("max_levels", "3"),
                     ("ledger", 1), ("min_subset_size", True)):
        with pytest.raises(SignatureError, match="wrong types"):
            payloads.policy_terms({**payload, key: bad})


def test_the_plan_carries_max_levels_and_the_ledger_check() -> None:
    head = LedgerHead(3, "0" * 64)
    request_id, dataset, version = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    plan = Plan(request_id, {dataset: version}, 5, head, 8, None, 12, False)
    again = Plan.from_json(request_id, json.loads(json.dumps(plan.as_json())))
    assert again == plan and again.rules == Rules.of(5, 8, None, 12, False)
    old = {k: v for k, v in plan.as_json().items() if k not in ("max_levels", "check_ledger")}
    assert Plan.from_json(request_id, old).rules == Rules.of(5, 8)  # defaults: no limit, ledger
    for key, bad in (("check_ledger", "yes"), ("max_levels", 1)):
        with pytest.raises(NotReady, match="malformed plan"):
            Plan.from_json(request_id, {**plan.as_json(), key: bad})
