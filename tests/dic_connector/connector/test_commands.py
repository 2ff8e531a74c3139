"""``dic connector pull|migrate|token``: one run per due dataset against three real node apps,
plain progress lines off a terminal, exit codes naming what failed, and the real command
line in a subprocess."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import yaml

from dic_connector.connector import commands
from dic_connector.connector.commands import EXIT_MAPPING, EXIT_OK, EXIT_SOURCE
from dic_connector.connector.state import RunStatus, StateStore
from dic_connector.dev.synthetic import pilot_resources, write_bulk
from tests.commands import dic

from .conftest import DATASET, MAPPING_FILE, Cluster, connector_config


async def test_pull_runs_what_is_due_and_says_so(cluster: Cluster, tmp_path: Path,
                                                 export: Path) -> None:
    config = connector_config(cluster, tmp_path, export, trigger={"schedule": {"every": "1h"}})
    out = io.StringIO()
    assert await commands.pull(config, out=out) == EXIT_OK
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{DATASET}: pull"
    assert f"{DATASET}: upload" in lines
    assert lines[-1].startswith(f"{DATASET}: succeeded: ") and "as version " in lines[-1]

    out = io.StringIO()
    assert await commands.pull(config, out=out) == EXIT_OK  # ran minutes ago: not due
    assert out.getvalue() == f"{DATASET}: not due (every 3600 s); --now runs it anyway\n"
    out = io.StringIO()
    assert await commands.pull(config, [DATASET], now=True, out=out) == EXIT_OK
    assert "succeeded" in out.getvalue().splitlines()[-1]

    state = StateStore(config.state_database_url)
    try:
        runs = await state.runs(DATASET)
    finally:
        await state.close()
    assert [(r.trigger, r.status) for r in runs] == [("pull", RunStatus.SUCCEEDED)] * 2


async def test_pull_exit_codes_name_the_failing_part(cluster: Cluster, tmp_path: Path,
                                                     export: Path) -> None:
    missing = connector_config(cluster, tmp_path, export,
                               consent={"opt_out_files": [str(tmp_path / "absent.txt")]})
    out = io.StringIO()
    assert await commands.pull(missing, out=out) == EXIT_SOURCE
    assert out.getvalue().splitlines()[-1].startswith(f"{DATASET}: failed: SourceError")

    unborn = [dict(r, birthDate="2990-01-01") if r["resourceType"] == "Patient" else r
              for r in pilot_resources("tm")]
    write_bulk(tmp_path / "unborn", unborn)
    invalid = connector_config(cluster, tmp_path, tmp_path / "unborn")
    assert await commands.pull(invalid, out=io.StringIO()) == EXIT_MAPPING


def test_new_token_is_random_and_hashed() -> None:
    token, digest = commands.new_token()
    assert len(token) >= 40 and hashlib.sha256(token.encode()).hexdigest() == digest
    assert commands.new_token()[0] != token


def write_config(cluster: Cluster, tmp: Path, export: Path, **changes: Any) -> Path:
    tls = cluster.pki["connector.tm"]
    data = {
        "site": "tm",
        "tls": {"ca_cert": str(tls.ca_cert), "cert": str(tls.cert), "key": str(tls.key)},
        "nodes": [{"url": e.url, "name": e.name} for e in cluster.endpoints],
        "datasets": {DATASET: {"mapping": str(MAPPING_FILE),
                               "source": {"kind": "ndjson", "directory": str(export)}}},
        **changes,
    }
    path = tmp / "connector.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_the_command_line(cluster: Cluster, tmp_path: Path, export: Path) -> None:
    code, out, _ = await dic("connector", "token")
    assert code == 0
    token = out.split("operator token (shown once): ")[1].split()[0]
    assert f"operator_token_sha256: {hashlib.sha256(token.encode()).hexdigest()}" in out

    path = write_config(cluster, tmp_path, export)
    code, out, _ = await dic("connector", "migrate", "--config", str(path))
    assert code == 0 and out.startswith("connector tm: state schema at ")
    assert (tmp_path / "connector-state.db").exists()  # the default, beside the config

    code, out, err = await dic("connector", "pull", "--config", str(path), "--no-migrate")
    assert code == 0, err
    assert out.splitlines()[-1].startswith(f"{DATASET}: succeeded: ")

    bad = write_config(cluster, tmp_path, export, max_parallel_runs="many")
    code, out, err = await dic("connector", "pull", "--config", str(bad))
    assert code == 2 and out == ""
    assert err.startswith("dic: Config 'max_parallel_runs'")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_a_terminal_gets_a_progress_bar(cluster: Cluster, tmp_path: Path,
                                              export: Path) -> None:
    out = Terminal()
    assert await commands.pull(connector_config(cluster, tmp_path, export), out=out) == EXIT_OK
    text = out.getvalue()
    assert "\x1b[" in text  # rich drew on the terminal
    assert f"{DATASET}: succeeded: " in text and "items" in text
