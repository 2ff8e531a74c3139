"""The people's commands over profile files, against three real node apps (mutual TLS,
in-process) that compute: a researcher submits, the data owner reads what the analysis
opens and approves, the researcher reads the result all three nodes agree on (checked
against numpy), as a table, JSON and CSV; a policy lets ``analyze`` wait for its result;
roles are enforced; profiles that cannot work are refused naming the key; and the real
``dic`` command line runs the same over a subprocess."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from dic_connector.client import commands
from dic_connector.client.profile import Profile, connect, load_profile
from dic_connector.errors import ConfigError
from dic_connector.trust.signing import write_private_key
from dic_connector.vocabulary import Decision
from tests.commands import dic
from tests.dic_connector.node.coordination.conftest import (
    Cluster,
    cohort,
)


def write_profile(cluster: Cluster, tmp: Path, who: str, role: str,
                  site: str | None = None, **changes: Any) -> Path:
    key = tmp / f"{who}.pem"
    if not key.exists():
        write_private_key(key, cluster.keys[who])
    data: dict[str, Any] = {
        "name": who, "role": role, "key": key.name,
        "ca_cert": str(cluster.deployment.pki["node-0"].ca_cert),
        "nodes": [{"url": cluster.deployment.api_url(i), "name": f"node-{i}",
                   "token": cluster.tokens[i][who]} for i in range(3)],
        **({"site": site} if site else {}), **changes}
    path = tmp / f"{who}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def profile(cluster: Cluster, tmp: Path, who: str, role: str, site: str | None = None
            ) -> Profile:
    return load_profile(write_profile(cluster, tmp, who, role, site), env={})


async def test_submit_approve_and_read_the_result(cluster: Cluster, tmp_path: Path) -> None:
    table = cohort(30, seed=8)
    await cluster.upload("tm", table)
    alice = profile(cluster, tmp_path, "alice", "researcher")
    owner = profile(cluster, tmp_path, "owner_tm", "data_owner", "tm")
    async with connect(alice) as researcher, connect(owner) as data_owner:
        out = io.StringIO()
        await commands.list_datasets(researcher, out)
        assert "tm    pilot" in out.getvalue() and "30" in out.getvalue()

        out = io.StringIO()
        assert await commands.analyze(researcher, "mean", ["tm"], {"column": "age"},
                                      "Adrenal SBRT", out, wait=False) is None
        request_id = out.getvalue().split()[1]

        asked: list[str] = []
        out = io.StringIO()
        answers = await commands.decide(data_owner, [request_id], Decision.APPROVE, out,
                                        lambda q: (asked.append(q), True)[1])
        assert [a.id for a in answers] == [request_id] and asked
        assert "opens: " in out.getvalue() and '{"column": "age"}' in out.getvalue()

        await researcher.wait(request_id, "completed", timeout_s=30)
        views = {}
        for fmt in commands.FORMATS:
            out = io.StringIO()
            await commands.show_result(researcher, request_id, out, fmt)
            views[fmt] = out.getvalue()
        result = json.loads(views["json"])
        assert int(result["sum"]) == int(table[:, 0].sum()) and result["n"] == 30
        assert abs(float(result["mean"]) - float(table[:, 0].mean())) < 1e-9
        assert dict(csv.reader(io.StringIO(views["csv"])))["n"] == "30"
        assert "disclosure control: min_cell_count=5" in views["table"]

        out = io.StringIO()
        await commands.show_request(researcher, request_id, out)
        assert out.getvalue().count("completed") == 3 and "tm: approve" in out.getvalue()

        # a standing policy: analyze waits for its own result
        out = io.StringIO()
        await commands.create_policy(data_owner, ["frequency"], ["ecog"], 5, 30, out,
                                     min_subset_size=6, max_levels=3, ledger=True)
        assert "policy " in out.getvalue()
        assert ("cells >= 5, each site >= 6 rows, at most 3 levels, release ledger checked"
                in out.getvalue())
        out = io.StringIO()
        await commands.list_policies(data_owner, out)
        header, *rows = [line.split() for line in out.getvalue().splitlines()
                         if line.strip() and not set(line.strip()) <= {"-", " "}]
        assert header[3:8] == ["min_cell_count", "min_subset_size", "max_levels", "ledger",
                               "perturbation"]
        assert [r[3:8] for r in rows] == [["5", "6", "3", "on", "-"]]
        out = io.StringIO()
        levels = await commands.analyze(researcher, "frequency", ["tm/pilot"],
                                        {"column": "ecog"}, "Adrenal SBRT", out, fmt="json")
        assert levels is not None
        expected = {str(v): int((table[:, 1] == v).sum()) for v in range(3)}
        opened = {k: v for k, v in levels["levels"].items() if isinstance(v, int)}
        assert opened and all(expected[k] == v >= 5 for k, v in opened.items())

        # what each role may do
        with pytest.raises(ConfigError, match="data owner"):
            await commands.decide(researcher, [request_id], Decision.APPROVE, io.StringIO(),
                                  lambda q: True)
        with pytest.raises(ConfigError, match="researcher"):
            await commands.analyze(data_owner, "count", ["tm"], {}, "x", io.StringIO())
        with pytest.raises(ConfigError, match="names 0 datasets"):
            await commands.analyze(researcher, "count", ["nowhere"], {}, "x", io.StringIO())


async def test_an_owner_who_declines_to_sign_leaves_it_undecided(
        cluster: Cluster, tmp_path: Path) -> None:
    await cluster.upload("tm", cohort(30, seed=9))
    async with connect(profile(cluster, tmp_path, "alice", "researcher")) as researcher, \
            connect(profile(cluster, tmp_path, "owner_tm", "data_owner", "tm")) as owner:
        out = io.StringIO()
        await commands.analyze(researcher, "count", ["tm"], {}, "s", out, wait=False)
        request_id = out.getvalue().split()[1]
        out = io.StringIO()
        assert await commands.decide(owner, [request_id], Decision.APPROVE, out,
                                     lambda q: False) == []
        assert "left undecided" in out.getvalue()
        state = await researcher.status(request_id)
        assert state is not None and state.status.value == "awaiting_approval"


@pytest.mark.parametrize("change, message", [
    ({"key": None}, "Config 'key' is required"),
    ({"nodes": []}, "must list the three nodes"),
    ({"role": "king"}, "Config 'role' has value 'king'"),
    ({"colour": "blue"}, "Config 'colour' is not a known setting"),
])
def test_profiles_that_cannot_work_name_the_key(
        tmp_path: Path, change: dict[str, Any], message: str) -> None:
    data = {"name": "alice", "role": "researcher", "key": "alice.pem",
            "nodes": [{"url": f"https://n{i}:8443", "token": "t"} for i in range(3)]}
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_profile(path, env={})


def test_plain_http_and_missing_tokens_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "name": "alice", "role": "admin",
        "nodes": [{"url": "http://n0:8443", "token": "t"}] * 3}))
    with pytest.raises(ConfigError, match=r"nodes\[0\].url.*https://"):
        load_profile(path, env={})
    path.write_text(yaml.safe_dump({
        "name": "alice", "role": "admin",
        "nodes": [{"url": "https://n0:8443", "token_env": "NOPE"}] * 3}))
    with pytest.raises(ConfigError, match="NOPE, which is not set"):
        load_profile(path, env={})


async def test_the_command_line(cluster: Cluster, tmp_path: Path) -> None:
    table = cohort(30, seed=10)
    await cluster.upload("tm", table)
    alice = str(write_profile(cluster, tmp_path, "alice", "researcher"))
    owner = str(write_profile(cluster, tmp_path, "owner_tm", "data_owner", "tm"))
    code, out, err = await dic("whoami", "--profile", alice)
    assert code == 0, err
    assert '"role": "researcher"' in out and "dic_" not in out  # no token shown
    assert out.count(": ok") == 3
    code, out, err = await dic("policy", "create", "--profile", owner, "--analyses", "mean",
                               "--columns", "age", "--days", "7")
    assert code == 0, err
    code, out, err = await dic("analyze", "mean", "--column", "age", "--datasets", "tm",
                               "--study", "Adrenal SBRT", "--json", "--profile", alice)
    assert code == 0, err
    assert int(json.loads(out)["sum"]) == int(table[:, 0].sum())
    # --param takes JSON; a decimal (60.0) is sent as the string "40.0" (signed requests
    # carry no floats), which the filter reads as the number
    code, out, err = await dic("analyze", "mean", "--column", "age", "--datasets", "tm",
                               "--param", 'filter={"op": ">=", "column": "age", "value": 60.0}',
                               "--study", "Adrenal SBRT", "--json", "--profile", alice)
    assert code == 0, err
    ages = table[:, 0]
    filtered = json.loads(out)
    assert int(filtered.get("sum", -1)) == int(ages[ages >= 60].sum()), out
    code, out, err = await dic("approve", "--profile", owner, "some-request")
    assert code == 2 and "pass --yes" in err  # off a terminal: never signed without --yes
    code, out, err = await dic("analyses", "--profile", alice)
    assert code == 0 and "median v1" in out and "opens:" in out
    # an admin's view of what each node witnessed of its peers' audit logs, over the API
    admin = str(write_profile(cluster, tmp_path, "admin", "admin", key=None))
    code, out, err = await dic("audit-peers", "--profile", admin)
    assert code == 0, err
    assert sorted(line.split(":")[0] for line in out.splitlines()) == [
        f"node-{i} sees node-{j}" for i in range(3) for j in range(3) if i != j]
    assert out.count("; ok") == 6
    code, out, err = await dic("audit-peers", "--profile", alice)
    assert code == 2 and "admin" in err
