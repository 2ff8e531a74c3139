"""Three real node processes for the end-to-end benchmarks (``coordination``, ``analyses``).

What a deployment of three institutions does, on one machine: ``dic node serve`` three
times, SQLite, mutual TLS on 127.0.0.1 with a throwaway CA (all written by
:func:`dic_connector.dev.deployment.write_local_deployment`), two sites whose data owners
sign standing policies before anything is measured (so no person is in the measured loop),
a researcher whose waits follow requests with status reads that wait on the nodes (asking
again after 10 ms where a node answers without waiting), and each site's connector sharing
its table to the three nodes with the two-phase upload. :class:`BenchNodes` also reads the
node processes' peak resident set (``VmHWM`` of ``/proc/<pid>/status``) and resets it
between measurements (writing ``5`` to ``/proc/<pid>/clear_refs``, Linux >= 4.0, see proc(5)), so a peak is the
peak of one table size, not of the whole run, and their CPU time (``/proc/<pid>/stat``),
which on a busy machine says more than the wall time. :func:`timeline` reads when each node
audited each step of a request from the three databases.

Import :mod:`_harness` before this module (it puts this checkout first on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.client import DataOwner, Researcher
from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.dev.deployment import (
    NODE_NAMES,
    LocalNodes,
    register_people,
    write_local_deployment,
)
from dic_connector.vocabulary import Role

SITES = ("tm", "tr")
PEOPLE = {"alice": (Role.RESEARCHER, None), "owner_tm": (Role.DATA_OWNER, "tm"),
          "owner_tr": (Role.DATA_OWNER, "tr"), "admin": (Role.ADMIN, None)}
#: k of the owners' standing policies (the nodes' default min_cell_count)
POLICY_MIN_CELL_COUNT = 5
#: how often the researcher's client polls by default: the latencies measured are a few
#: hundred ms (each poll of the three nodes costs them CPU time too)
POLL_S = 0.01
#: how long one request may take to complete on all three nodes
WAIT_S = 300.0
#: how long one site's upload may take
UPLOAD_TIMEOUT_S = 600.0
MIB = 1 << 20


def ms(t0: float) -> float:
    """Milliseconds since ``t0`` (a :func:`time.perf_counter` reading), to 0.1 ms."""
    return round((time.perf_counter() - t0) * 1000, 1)


@dataclass
class BenchNodes:
    """Three running nodes, the researcher ``alice`` (submitting at node 1) and the sites'
    connector endpoints."""

    nodes: LocalNodes
    alice: Researcher
    endpoints: list[NodeEndpoint]

    @property
    def directory(self) -> Path:
        return self.nodes.deployment.directory

    async def upload(self, name: str, tables: Sequence[npt.NDArray[np.int64]],
                     manifest: dict[str, Any]) -> list[str]:
        """Share ``tables[i]`` as site ``SITES[i]``'s dataset ``name`` (rows x columns of
        ``manifest``; zeroed once shared); the dataset ids in site order."""
        for site, values in zip(SITES, tables, strict=True):
            uploader = Uploader(self.endpoints, self.nodes.deployment.pki[f"connector.{site}"],
                                site, timeout_s=UPLOAD_TIMEOUT_S)
            await uploader.upload(name, values, manifest)
        by_site = {d.site: d.id for d in await self.alice.datasets(at=0) if d.name == name}
        return [by_site[site] for site in SITES]

    async def http_calls(self) -> dict[str, dict[str, float]]:
        """Node name -> ``"METHOD route"`` -> the HTTP calls it has served (its
        ``dic_http_requests_total`` at ``/metrics``, all statuses; ``/metrics`` itself left
        out): differences of two readings say what a request costs in calls, whatever the
        machine's load."""
        calls: dict[str, dict[str, float]] = {}
        for client in self.alice.nodes:
            async with client.session.get(client.base_url + "/metrics", ssl=client.ssl,
                                          server_hostname=client.server_hostname) as answer:
                text = await answer.text()
            served: dict[str, float] = {}
            for line in text.splitlines():
                match = _CALLS.match(line)
                if match and match["route"] != "/metrics":
                    key = f"{match['method']} {match['route']}"
                    served[key] = served.get(key, 0.0) + float(match["n"])
            calls[client.node] = served
        return calls

    def pids(self) -> dict[str, int]:
        """Node name -> the process id of its ``dic node serve``."""
        return {node.name: node.process.pid for node in self.nodes.nodes}

    def reset_peak_rss(self) -> bool:
        """Reset each node process's peak RSS to its current RSS; False where the kernel
        does not allow it (the peaks then cover the processes' whole lives)."""
        done = True
        for pid in self.pids().values():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                done = False
        return done

    def cpu_s(self) -> dict[str, float | None]:
        """Node name -> the CPU time (user + system) its process has used, in seconds
        (``/proc/<pid>/stat``, clock ticks; None where ``/proc`` does not say)."""
        return {name: _cpu_s(pid) for name, pid in self.pids().items()}

    def peak_rss_mib(self) -> dict[str, float | None]:
        """Node name -> its process's peak resident set (``VmHWM``) in MiB since the last
        :meth:`reset_peak_rss` (None where ``/proc`` does not say)."""
        return {name: _status_kib(pid, "VmHWM") for name, pid in self.pids().items()}


_CALLS = re.compile(r'^dic_http_requests_total\{method="(?P<method>[A-Z]+)",'
                    r'route="(?P<route>[^"]*)",status="\d+"\} (?P<n>[0-9.e+]+)$')


def calls_between(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
                  per: int) -> dict[str, Any]:
    """The calls each node served between two :meth:`BenchNodes.http_calls` readings, per
    ``per`` requests, by route, and their total over the three nodes."""
    out: dict[str, Any] = {}
    for node, served in after.items():
        delta = {route: round((n - before.get(node, {}).get(route, 0.0)) / per, 1)
                 for route, n in sorted(served.items())}
        out[node] = {route: n for route, n in delta.items() if n}
    out["total"] = round(sum(sum(v.values()) for k, v in out.items()), 1)
    return out


def _status_kib(pid: int, field: str) -> float | None:
    """A ``kB`` field of ``/proc/<pid>/status`` in MiB."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) * 1024 / MIB, 1)
    return None


def _cpu_s(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def audit_times(directory: Path, request_id: str) -> dict[str, dt.datetime]:
    """When each node first audited each step of ``request_id``: ``"node-0 compute.start"``
    -> its time (read from the three nodes' databases; one machine, one clock)."""
    at: dict[str, dt.datetime] = {}
    for name in NODE_NAMES:
        with contextlib.closing(sqlite3.connect(
                f"file:{directory / f'{name}.db'}?mode=ro", uri=True)) as db:
            for action, created in db.execute(
                    "SELECT action, created_at FROM audit_log WHERE object = ? ORDER BY seq",
                    (f"request:{request_id}",)):
                at.setdefault(f"{name} {action}", _utc(created))
    return at


def timeline(directory: Path, request_id: str,
             observed_ms: float | None = None) -> dict[str, float]:
    """Each node's audited steps of ``request_id`` (:func:`audit_times`) as ms after its
    submission at node 1, and ``observed``: when the client saw it end, if given."""
    at = audit_times(directory, request_id)
    t0 = at["node-1 request.submit"]
    out = {step: round((when - t0).total_seconds() * 1000, 1) for step, when in at.items()}
    if observed_ms is not None:
        out["observed"] = observed_ms
    return out


def _utc(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@contextlib.asynccontextmanager
async def bench_nodes(directory: Path, extra: Mapping[str, Any] | None = None,
                      poll_s: float = POLL_S,
                      profile_dir: Path | None = None) -> AsyncIterator[BenchNodes]:
    """Write a deployment into ``directory``, start its three nodes (config keys ``extra``,
    e.g. ``coordination_interval_s``), have both sites' owners approve every analysis in
    advance by a standing policy, and stop the nodes on leaving; the researcher's waits poll
    every ``poll_s``; with ``profile_dir`` the nodes run under :mod:`cProfile`, one
    ``<node>.prof`` each, written when they stop (read with :mod:`pstats`)."""
    deployment = write_local_deployment(directory, sites=SITES, extra=dict(extra or {}))
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    async with aiohttp.ClientSession() as http:
        nodes = LocalNodes(deployment, http, await register_people(deployment, PEOPLE, keys),
                           profile_dir)
        async with nodes.running(directory / "logs"):
            for site in SITES:
                owner = DataOwner(f"owner_{site}", site, keys[f"owner_{site}"],
                                  nodes.clients(f"owner_{site}"))
                await owner.add_policy(["*"], ["*"], POLICY_MIN_CELL_COUNT,
                                       dt.timedelta(days=1), at=0)
            alice = Researcher("alice", keys["alice"], nodes.clients("alice"), at=1,
                               poll_s=poll_s)
            endpoints = [NodeEndpoint(url, name) for url, name in zip(nodes.urls, NODE_NAMES,
                                                                      strict=True)]
            yield BenchNodes(nodes, alice, endpoints)


def environment() -> dict[str, Any]:
    """What the numbers depend on: cores and the load when the run started."""
    return {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}
