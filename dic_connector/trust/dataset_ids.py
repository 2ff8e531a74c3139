"""Dataset ids: the same id for the same dataset on every node and at the connector.

A dataset is named by its site and its name (``tm`` / ``pilot_adrenal``); its id is
``uuid5(DATASET_NAMESPACE, f"{site_id}/{name}")`` (RFC 9562 §5.5), so the three nodes and the
site's connector derive it independently and a request naming a dataset id means the same
dataset everywhere, without any node allocating ids.
"""

from __future__ import annotations

import uuid

#: Namespace of dataset ids (:func:`dataset_uuid`), fixed for the project. Never change it:
#: every node derives every dataset id from it, so a new value would rename every dataset
#: and make the nodes of a deployment disagree. (A random UUID drawn once for this purpose.)
DATASET_NAMESPACE = uuid.UUID("81b88101-ab34-4731-9d17-a35f35aed790")


def dataset_uuid(site_id: str, name: str) -> uuid.UUID:
    """The id of dataset ``name`` of site ``site_id``, identical on every node.

    Site ids are slugs without ``/``, so different (site, name) pairs never give the same text.
    """
    return uuid.uuid5(DATASET_NAMESPACE, f"{site_id}/{name}")
