"""The disclosure rules the three nodes agree on: the strictest of their settings. A node
configured with a larger ``min_subset_size`` than the coordinator's makes the plan carry it,
the result and the audit entry say so, and a site that contributes fewer rows is refused."""

from __future__ import annotations

import dataclasses
import json

from .conftest import Cluster, cohort


async def test_the_strictest_min_subset_size_of_the_three_nodes_applies(
        cluster: Cluster) -> None:
    await cluster.stop_node(2)
    cluster.configs[2] = dataclasses.replace(cluster.configs[2], min_subset_size=20)
    await cluster.start_node(2)
    await cluster.upload("tm", cohort(30, seed=4))
    await cluster.upload("tr", cohort(12, seed=5))  # >= k = 5, but < 20

    both = await cluster.submit(0, "mean", {"column": "age"})
    for site in ("tm", "tr"):
        await cluster.approve(0, both, site)
    results = await cluster.completed_everywhere(both)
    assert results[0] == results[1] == results[2]
    assert results[0]["suppressed"] is True
    assert "'tr'" in results[0]["reason"] and "min_subset_size" in results[0]["reason"]
    assert results[0]["disclosure"]["min_subset_size"] == 20

    alone = await cluster.submit(1, "mean", {"column": "age"}, sites=("tm",))
    await cluster.approve(1, alone, "tm")
    results = await cluster.completed_everywhere(alone)
    assert "sum" in results[0] and results[0]["disclosure"]["min_subset_size"] == 20
    for store in cluster.stores:
        async with store.unit_of_work() as uow:
            [opened] = [e for e in await uow.audit.entries(obj=f"request:{alone}")
                        if e.action == "result.open"]
        details = json.loads(opened.details)
        assert (details["min_cell_count"], details["min_subset_size"]) == (5, 20)
