"""Version differencing on three real node apps: a researcher releases a mean on one version
of a dataset, the connector shares the next version without one patient, and the same mean
on it is refused by the version lineage rule (it would give the patient's age away); once
enough rows have changed, or for another column, it is released; a version whose connector
declared nothing is refused too; every node's ledger holds the columns each release read."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import numpy.typing as npt

from dic_connector.trust.dataset_ids import dataset_uuid

from .conftest import MANIFEST, Cluster, cohort

DATASET = "pilot"


def declared(*previous: tuple[uuid.UUID, int, int]) -> dict[str, Any]:
    return {**MANIFEST, "lineage": {"previous": [
        {"version_id": str(v), "removed": removed, "added": added}
        for v, removed, added in previous]}}


async def share(cluster: Cluster, table: npt.NDArray[np.int64],
                manifest: dict[str, Any]) -> uuid.UUID:
    uploader = cluster.uploader("tm")
    version = await uploader.upload(DATASET, table.copy(), manifest)
    await uploader.erase_older(version)
    return version


async def released(cluster: Cluster, analysis: str, column: str) -> dict[str, Any]:
    request_id = await cluster.submit(0, analysis, {"column": column}, sites=("tm",))
    await cluster.approve(0, request_id, "tm")
    results = await cluster.completed_everywhere(request_id)
    assert results[0] == results[1] == results[2]
    return results[0]


async def test_the_same_mean_on_a_version_without_one_patient_is_refused(
        cluster: Cluster) -> None:
    table = cohort(30, seed=3)
    v1 = await share(cluster, table, MANIFEST)
    cluster.datasets["tm"] = dataset_uuid("tm", DATASET)
    first = await released(cluster, "mean", "age")
    assert int(first["sum"]) == int(table[:, 0].sum())

    # the connector's next run: patient 0 withdrew consent
    v2 = await share(cluster, table[1:], declared((v1, 1, 0)))
    second = await released(cluster, "mean", "age")
    assert second["suppressed"] is True and "version lineage" in second["reason"]
    assert "'age'" in second["reason"] and "'tm'" in second["reason"]
    assert "sum" not in second and "n" not in second
    # a column never released on v1 may be (its difference to v1 cannot be formed)
    assert "levels" in await released(cluster, "frequency", "ecog")

    # six more patients leave: v3 differs from v1 in 7 rows, from v2 in 6 (>= 5 both)
    v3 = await share(cluster, table[7:], declared((v1, 7, 0), (v2, 6, 0)))
    third = await released(cluster, "mean", "age")
    assert int(third["sum"]) == int(table[7:, 0].sum())

    # a version whose connector declared nothing cannot be told apart from a differencing
    await share(cluster, table[7:], MANIFEST)
    fourth = await released(cluster, "mean", "age")
    assert fourth["suppressed"] is True and "nobody declared" in fourth["reason"]
    assert str(v1) in fourth["reason"]  # the first release it would difference

    for store in cluster.stores:
        async with store.unit_of_work() as uow:
            entries = await uow.ledger.all()
        # mean v1, frequency v2, mean v3; the refused releases are not on the ledger
        assert [(e.columns, e.contributors) for e in entries] == [
            (("age",), (f"{cluster.datasets['tm']}/{v1}",)),
            (("ecog",), (f"{cluster.datasets['tm']}/{v2}",)),
            (("age",), (f"{cluster.datasets['tm']}/{v3}",)),
        ]
