"""Cell-key perturbation on three real nodes: the pair secrets from the TLS keys, the plan's
setting, and a perturbed frequency table against the plaintext reference."""

from __future__ import annotations

import datetime as dt
import uuid
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dic_connector.errors import ConfigError, SignatureError
from dic_connector.node.analyses.disclosure import strictest
from dic_connector.node.analyses.perturbation import MAGNITUDE_KEY, PairSecrets, record_keys
from dic_connector.node.analyses.ptable import KEY_BITS, CellKeyParams, count_ptable
from dic_connector.node.config import parse_config
from dic_connector.node.coordination.cellkeys import pair_secret
from dic_connector.trust import payloads
from mpc.sharing import reconstruct
from mpc.tls import NodeTls, write_dev_pki

from .conftest import Cluster, close_cluster, cohort, make_cluster

NAMES = ("node-0", "node-1", "node-2")
SETTING = {"method": "cellkey", "max_noise": 2, "variance": 1.0, "js": 0}


def der(tls: NodeTls) -> bytes:
    cert = x509.load_pem_x509_certificate(Path(tls.cert).read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def secrets(pki: dict[str, NodeTls]) -> list[PairSecrets]:
    """Each node's pair secrets, as :func:`node_pair_secrets` derives them in a session."""
    def pair(i: int, j: int) -> bytes:
        return pair_secret(Path(pki[NAMES[i]].key).read_bytes(), der(pki[NAMES[j]]),
                           NAMES[i], NAMES[j])
    return [PairSecrets(i, pair(i, (i - 1) % 3), pair(i, (i + 1) % 3)) for i in range(3)]


def test_pair_secrets_are_shared_by_exactly_their_pair(tmp_path: Path) -> None:
    pki = write_dev_pki(tmp_path, NAMES)
    views = secrets(pki)
    for i in range(3):
        j = (i + 1) % 3
        assert views[i].next == views[j].prev  # both ends derive the same secret
    assert len({views[i].next for i in range(3)}) == 3  # one per pair
    other = write_dev_pki(tmp_path / "other", NAMES)  # new keys: new secrets
    assert secrets(other)[0].next != views[0].next


def test_pair_secret_needs_ec_keys(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    pki = write_dev_pki(tmp_path, NAMES)
    key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ConfigError, match="EC node keys"):
        pair_secret(key, der(pki["node-1"]), "node-0", "node-1")


def test_the_setting_is_checked_at_load() -> None:
    base = {"node_index": 0, "database_url": "sqlite+aiosqlite:///x.db"}
    config = parse_config({**base, "perturbation": SETTING})
    assert config.perturbation is not None and config.perturbation.max_noise == 2
    assert not config.perturbation.allow_exact
    assert parse_config(base).perturbation is None  # off by default
    lenient = parse_config({**base, "perturbation": {**SETTING, "allow_exact": True}})
    assert lenient.perturbation is not None and lenient.perturbation.allow_exact
    for bad in ({"max_noise": 2}, {"max_noise": 2, "variance": 3.0},
                {"method": "laplace", "max_noise": 2, "variance": 1.0},
                {"max_noise": 2, "variance": 1.0, "js": 2}, "[1]"):
        with pytest.raises(ConfigError, match="perturbation"):
            parse_config({**base, "perturbation": bad})


def expected_levels(table: np.ndarray, keys: np.ndarray, params: CellKeyParams
                    ) -> dict[str, int]:
    """The reference: each ecog level's count plus the lookup of its rows' cell key."""
    ptable = count_ptable(params)
    out = {}
    for level in range(3):
        member = table[:, 1] == level
        key = int(np.sum(keys[member], dtype=np.uint64)) & ((1 << KEY_BITS) - 1)
        count = int(member.sum())
        out[str(level)] = count + ptable.noise(count, key)
    return out


async def keys_of(cluster: Cluster, dataset: uuid.UUID, rows: int) -> np.ndarray:
    async with cluster.stores[0].unit_of_work() as uow:
        version = await uow.versions.latest_committed(dataset)
    assert version is not None
    return reconstruct(*(record_keys(s, (f"{dataset}/{version.id}",), (rows,))
                         for s in secrets(cluster.deployment.pki)))


async def test_three_nodes_open_the_perturbed_table_of_the_reference(tmp_path: Path) -> None:
    """The noise is exactly the plaintext lookup with keys derived from the deployment's
    TLS files alone (no session state): every later session derives the same keys, so the
    same cells get the same noise in every release."""
    cluster = await make_cluster(tmp_path, perturbation=SETTING)
    try:
        table = cohort(60, seed=11)
        dataset = await cluster.upload("tm", table)
        request_id = await cluster.submit(0, "frequency", {"column": "ecog"}, sites=("tm",))
        await cluster.approve(1, request_id, "tm")
        first = await cluster.completed_everywhere(request_id)
        assert first[0] == first[1] == first[2]
        expected = expected_levels(table, await keys_of(cluster, dataset, 60),
                                   CellKeyParams(2, 1.0))
        shown = first[0]["levels"]
        assert shown == {level: expected[level] if isinstance(value, int) else value
                         for level, value in shown.items()}
        assert any(isinstance(value, int) for value in shown.values())
        assert first[0]["perturbed"] == {"method": "cellkey", "D": 2, "V": 1.0, "js": 0}
    finally:
        await close_cluster(cluster)


async def test_an_owners_policy_turns_perturbation_on_for_its_dataset(tmp_path: Path) -> None:
    """The deployment does not perturb; tm's standing policy asks for it: the requests it
    approves are perturbed with its table (mean's sum by the magnitude method, with the
    keys the nodes derive), and a recipe that would open an exact n is refused (the policy
    does not allow exact statistics)."""
    cluster = await make_cluster(tmp_path)
    try:
        table = cohort(60, seed=12)
        dataset = await cluster.upload("tm", table)
        policy = await cluster.owners["tm"].add_policy(
            ["frequency", "median", "mean"], ["*"], 5, dt.timedelta(days=1), at=2,
            perturbation={"max_noise": 3, "variance": 2.0, "js": 1})
        assert policy.perturbation == {"max_noise": 3, "variance": "2.0", "js": 1}
        frequency = await cluster.submit(0, "frequency", {"column": "ecog"}, sites=("tm",))
        mean = await cluster.submit(1, "median", {"column": "age"}, sites=("tm",))
        average = await cluster.submit(2, "mean", {"column": "age"}, sites=("tm",))
        results = await cluster.completed_everywhere(frequency)
        assert results[0] == results[1] == results[2]
        expected = expected_levels(table, await keys_of(cluster, dataset, 60),
                                   CellKeyParams(3, 2.0, 1))
        shown = results[0]["levels"]
        assert shown == {level: expected[level] if isinstance(value, int) else value
                         for level, value in shown.items()}
        assert results[0]["perturbed"] == {"method": "cellkey", "D": 3, "V": 2.0, "js": 1}
        refused = (await cluster.completed_everywhere(mean))[0]
        assert refused["suppressed"] is True
        assert "perturbation.allow_exact" in refused["reason"]
        means = await cluster.completed_everywhere(average)
        assert means[0] == means[1] == means[2]
        keys = await keys_of(cluster, dataset, 60)
        key = int(np.sum(keys, dtype=np.uint64)) * MAGNITUDE_KEY % (1 << 64)
        params = CellKeyParams(3, 2.0, 1)
        v = count_ptable(params).noise(params.shared_row, key & ((1 << KEY_BITS) - 1))
        ages = table[:, 0]
        shown = Fraction(16 * int(ages.sum()) + int(np.abs(ages).max()) * v, 16)
        assert means[0]["n"] == 60 and Fraction(means[0]["sum"]) == shown  # a public n
    finally:
        await close_cluster(cluster)


def test_the_strictest_perturbation_wins() -> None:
    a, b = CellKeyParams(2, 1.0, 0, allow_exact=True), CellKeyParams(3, 2.0, 1)
    assert strictest([]) is None
    assert strictest([a]) == a
    assert strictest([a, b]) == strictest([b, a]) == b  # larger V; exact only if all allow
    assert strictest([a, CellKeyParams(5, 1.0, 0, allow_exact=True)]) == CellKeyParams(
        5, 1.0, 0, allow_exact=True)  # equal V: larger D


def test_a_policy_payload_carries_its_perturbation_canonically() -> None:
    body = payloads.policy("tm", ["count"], ["*"], 5, dt.timedelta(days=1),
                           {"max_noise": 3, "variance": 2.5})
    assert body["perturbation"] == {"max_noise": 3, "variance": "2.5"}  # no float
    assert CellKeyParams.from_json(body["perturbation"]) == CellKeyParams(3, 2.5)
    assert payloads.policy_terms(body).min_cell_count == 5
    with pytest.raises(SignatureError, match="wrong types"):
        payloads.policy_terms({**body, "perturbation": "D=3"})
