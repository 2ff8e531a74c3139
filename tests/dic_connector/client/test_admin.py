"""An admin reads every node's audit chain check; the comparison of a request no node
computed is the node's 404, not an empty report; a standalone node witnesses no peers
(the flagged peers of three nodes: ``node/coordination/test_exchange.py``)."""

from __future__ import annotations

import io

import pytest

from dic_connector.client import Admin, commands
from dic_connector.errors import ApiError

from .conftest import Node


async def test_audit_chains_and_comparison(node: Node) -> None:
    alice = node.researcher()
    request_id = await alice.submit(await alice.create_study("x"), "count", [node.dataset_id])
    admin = Admin("admin", [node.client("admin")])
    [verified] = await admin.verify_audit()
    assert verified.ok and verified.node == "node-0" and verified.broken_seq is None
    assert verified.head.seq == verified.entries >= 2  # study.create, request.submit
    with pytest.raises(ApiError) as caught:
        await admin.compare_audit(request_id)
    assert caught.value.status == 404 and "was not computed on node-0" in str(caught.value)


async def test_a_standalone_node_witnesses_no_peers_and_only_admins_ask(node: Node) -> None:
    [report] = await Admin("admin", [node.client("admin")]).audit_peers()
    assert (report.node, report.peers, report.flagged) == ("node-0", {}, [])
    out = io.StringIO()
    assert await commands.audit_peers(Admin("admin", [node.client("admin")]), out)
    assert out.getvalue() == "node-0: no peers (standalone)\n"
    with pytest.raises(ApiError) as caught:
        await Admin("alice", [node.client("alice")]).audit_peers()
    assert caught.value.status == 403
