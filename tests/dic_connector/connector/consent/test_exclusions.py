"""exclusions() against a real sekmet-fhir server: Patients, MII Consents, an opt-out List
and Group, opt-out files; failures never widen the cohort."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dic_connector.connector.consent.exclusions import Exclusions, exclusions, read_consents
from dic_connector.connector.consent.policy import MDAT_SCIENTIFIC_USE, ConsentMode, ConsentPolicy
from dic_connector.errors import ConfigError, PipelineError, SourceError
from dic_connector.sources.auth import BearerAuth
from dic_connector.sources.http import HttpClient, HttpConfig, RetryPolicy
from tests.dic_connector.connector.consent.mii import broad, consent, withdrawal

if TYPE_CHECKING:
    from dic_connector.dev.sekmet import SekmetServer

pytestmark = pytest.mark.fhir_server
AT = datetime(2026, 6, 1, tzinfo=UTC)
FAST = HttpConfig(retry=RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02),
                  read_timeout_s=10)
PATIENTS = [f"p{i}" for i in range(1, 11)]


@pytest.fixture(scope="module")
def server(consent_server: SekmetServer) -> SekmetServer:
    """p1 permitted; p2 withdrew (later deny); p3 consent inactive; p4 expired; p5 no
    consent; p6 draft only; p7 partial deny; p8 malformed; p9 on the List; p10 in the Group
    (also permitted); plus 30 filler consents of p1 so the search pages."""
    bad = broad("c8", "p8")
    bad["dateTime"] = "2024-13-01"
    consent_server.put([
        *({"resourceType": "Patient", "id": p} for p in PATIENTS),
        broad("c1", "p1"), broad("c2a", "p2", given="2022-01-01"),
        withdrawal("c2b", "p2", "2025-03-01"),
        broad("c3", "p3", status="inactive"), broad("c4", "p4", given="2015-01-01",
                                                    end="2020-12-31"),
        broad("c6", "p6", status="draft"),
        consent("c7", "p7", "2024-01-01", [("deny", [MDAT_SCIENTIFIC_USE], "2024-01-01", None)]),
        bad, broad("c9", "p9"), broad("c10", "p10"),
        *(broad(f"f{i}", "p1", given=f"2023-01-{i + 1:02d}") for i in range(30)),
        {"resourceType": "List", "id": "objections", "status": "current", "mode": "working",
         "entry": [{"item": {"reference": "Patient/p9"}},
                   {"item": {"reference": "Patient/p1"}, "deleted": True},
                   {"item": {"reference": "Group/other"}}]},
        {"resourceType": "Group", "id": "optout", "type": "person", "actual": True,
         "member": [{"entity": {"reference": "Patient/p10"}},
                    {"entity": {"reference": "Patient/p1"}, "inactive": True}]},
    ])
    return consent_server


async def run(server: SekmetServer, policy: ConsentPolicy, **kw: object) -> Exclusions:
    async with HttpClient(server.base_url, BearerAuth(server.static_token), FAST) as client:
        return await exclusions(policy, client=client, at=AT, **kw)  # type: ignore[arg-type]


async def test_opt_out_excludes_denied_withdrawn_and_malformed(server: SekmetServer) -> None:
    result = await run(server, ConsentPolicy(ConsentMode.OPT_OUT))
    assert result.keys == {"p2", "p3", "p7", "p8"}
    assert result.counts == {"consent_denied": 2, "consent_withdrawn": 1,
                             "consent_malformed": 1}
    assert result.problems == {}


async def test_opt_in_keeps_only_permitted_patients(server: SekmetServer) -> None:
    result = await run(server, ConsentPolicy(ConsentMode.OPT_IN), patient_keys=PATIENTS)
    assert PATIENTS and set(PATIENTS) - result.keys == {"p1", "p9", "p10"}
    assert result.counts == {"consent_denied": 2, "consent_withdrawn": 1,
                             "consent_malformed": 1, "consent_expired": 1,
                             "consent_missing": 2}


async def test_lists_groups_and_files_combine(server: SekmetServer, tmp_path: Path) -> None:
    optout = tmp_path / "optout.txt"
    optout.write_text("# by letter\np2\np1\nsql-key-77\n")
    policy = ConsentPolicy(ConsentMode.OPT_OUT, opt_out_files=(optout,),
                           opt_out_lists=("List/objections", "Group/optout"))
    result = await run(server, policy)
    assert result.keys == {"p1", "p2", "p3", "p7", "p8", "p9", "p10", "sql-key-77"}
    # a key is counted once, under its first reason (the file before the consent)
    assert result.counts == {"opt_out_file": 3, "opt_out_list": 2, "consent_denied": 1,
                             "consent_withdrawn": 1, "consent_malformed": 1}
    assert result.problems == {"list_entry_not_patient": 1}
    # with the cohort's keys, only the cohort's keys are excluded and counted
    cohort = await run(server, policy, patient_keys=["p1", "p5", "p9"])
    assert cohort.keys == {"p1", "p9"}
    assert cohort.counts == {"opt_out_file": 1, "opt_out_list": 1}


async def test_mode_none_reads_only_files(tmp_path: Path) -> None:
    optout = tmp_path / "optout.txt"
    optout.write_text("k1\nk2\n")
    result = await exclusions(ConsentPolicy(opt_out_files=(optout,)), client=None, at=AT)
    assert result == Exclusions(frozenset({"k1", "k2"}), {"opt_out_file": 2})
    assert await exclusions(ConsentPolicy(), client=None, at=AT) == Exclusions(frozenset(), {})


async def test_failures_never_widen_the_cohort(server: SekmetServer, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="List/missing"):
        await run(server, ConsentPolicy(opt_out_lists=("List/missing",)))
    with pytest.raises(SourceError, match="HTTP 404"):
        await run(server, ConsentPolicy(opt_out_lists=("Group/objections",)))
    gone = tmp_path / "gone.txt"
    with pytest.raises(SourceError, match=f"Opt-out file {gone} cannot be read"):
        await run(server, ConsentPolicy(ConsentMode.OPT_OUT, opt_out_files=(gone,)))
    unreachable = HttpClient("http://127.0.0.1:9/fhir", config=FAST)
    async with unreachable:
        with pytest.raises(SourceError, match="gave up after 2 attempts"):
            await exclusions(ConsentPolicy(ConsentMode.OPT_OUT), client=unreachable, at=AT)


async def test_a_policy_needing_the_server_without_one_is_a_config_error() -> None:
    for policy in (ConsentPolicy(ConsentMode.OPT_OUT), ConsentPolicy(opt_out_lists=("List/a",))):
        with pytest.raises(ConfigError, match="FHIR server"):
            await exclusions(policy, client=None, at=AT)


async def test_opt_in_needs_the_cohort_keys(server: SekmetServer) -> None:
    with pytest.raises(PipelineError, match="patient keys"):
        await run(server, ConsentPolicy(ConsentMode.OPT_IN))


async def test_the_consent_search_pages_and_skips_what_is_not_in_force(server: SekmetServer
                                                                       ) -> None:
    async with HttpClient(server.base_url, BearerAuth(server.static_token), FAST) as client:
        found = await read_consents(client, page_size=7)
    ids = [c["id"] for c in found]
    assert len(ids) == len(set(ids)) == 39  # 40 consents put, the draft one not searched
    assert "c6" not in ids
