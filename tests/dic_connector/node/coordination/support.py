"""Store fixtures the coordination tests share."""

from __future__ import annotations

import uuid

from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.canonical import canonical_json
from dic_connector.vocabulary import RequestStatus, Role


async def submitted_request(store: Store, *through: RequestStatus) -> uuid.UUID:
    """A count request of one site's dataset, submitted, then moved through ``through``."""
    async with store.unit_of_work() as uow:
        await uow.sites.add("tm", "LMU")
        researcher = await uow.principals.create("rita", Role.RESEARCHER)
        dataset = await uow.datasets.create("tm", "cohort")
        study = await uow.studies.create("S", researcher.id)
        req = await uow.requests.create(study.id, researcher.id, "count", "1", {},
                                        [dataset.id], canonical_json({"analysis": "count"}))
        for status in through:
            await uow.requests.set_status(req.id, status, status.value)
        return req.id
