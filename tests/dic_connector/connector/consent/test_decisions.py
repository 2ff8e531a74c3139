"""evaluate_consents over hand-built MII broad consents: periods, nesting, several consents
per patient (newest dateTime wins, deny wins a tie), status, malformed resources."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.connector.consent.decisions import (
    ConsentDecision,
    ConsentOutcome,
    ConsentReason,
    bounds,
    evaluate,
    evaluate_consents,
    patient_key,
)
from dic_connector.connector.consent.policy import (
    MDAT_SCIENTIFIC_USE,
    MDAT_STORE_PROCESS,
    ConsentMode,
    ConsentPolicy,
)
from tests.dic_connector.connector.consent.mii import (
    BIOMAT_COLLECT,
    MDAT_COLLECT,
    broad,
    consent,
    withdrawal,
)

POLICY = ConsentPolicy(ConsentMode.OPT_IN)
AT = datetime(2026, 6, 1, 12, tzinfo=UTC)
Out, Why = ConsentOutcome, ConsentReason


def decide(*consents: dict[str, Any], policy: ConsentPolicy = POLICY, at: datetime = AT
           ) -> dict[str, tuple[Out, Why]]:
    return {k: (d.outcome, d.reason) for k, d in evaluate_consents(consents, policy, at).items()}


def test_a_broad_consent_permits() -> None:
    decisions = evaluate_consents([broad("c1", "p1")], POLICY, AT)
    assert decisions == {"p1": ConsentDecision(Out.PERMITTED, Why.PERMITTED, consents=1)}
    assert decisions["p1"].permits


def test_every_required_code_must_be_permitted() -> None:
    only_use = consent("c1", "p1", "2024-01-01", [("permit", [MDAT_SCIENTIFIC_USE], "2024-01-01",
                                                    None)])
    assert decide(only_use) == {"p1": (Out.NO_CONSENT, Why.NO_PROVISION)}
    one_code = ConsentPolicy(ConsentMode.OPT_IN, required_codes=(MDAT_SCIENTIFIC_USE,))
    assert decide(only_use, policy=one_code) == {"p1": (Out.PERMITTED, Why.PERMITTED)}
    both_in_one = consent("c2", "p2", "2024-01-01", [
        ("permit", [MDAT_STORE_PROCESS, MDAT_SCIENTIFIC_USE, BIOMAT_COLLECT], "2024-01-01", None)])
    assert decide(both_in_one) == {"p2": (Out.PERMITTED, Why.PERMITTED)}


def test_a_nested_deny_of_one_required_code_denies() -> None:
    partial = consent("c1", "p1", "2024-01-01", [
        ("permit", [MDAT_COLLECT, MDAT_STORE_PROCESS], "2024-01-01", None),
        ("deny", [MDAT_SCIENTIFIC_USE], "2024-01-01", None)])
    assert decide(partial) == {"p1": (Out.DENIED, Why.DENIED)}
    other_code_denied = consent("c2", "p2", "2024-01-01", [
        ("permit", [MDAT_STORE_PROCESS, MDAT_SCIENTIFIC_USE], "2024-01-01", None),
        ("deny", [BIOMAT_COLLECT], "2024-01-01", None)])
    assert decide(other_code_denied) == {"p2": (Out.PERMITTED, Why.PERMITTED)}


def test_permit_and_deny_of_one_code_in_one_consent_deny() -> None:
    both = consent("c1", "p1", "2024-01-01", [
        ("permit", [MDAT_STORE_PROCESS, MDAT_SCIENTIFIC_USE], "2024-01-01", None),
        ("deny", [MDAT_SCIENTIFIC_USE], "2025-01-01", None)])
    assert decide(both) == {"p1": (Out.DENIED, Why.DENIED)}
    assert decide(both, at=datetime(2024, 6, 1, tzinfo=UTC)) == {"p1": (Out.PERMITTED,
                                                                           Why.PERMITTED)}


def test_periods_nested_and_root_bound_the_consent() -> None:
    expired = broad("c1", "p1", given="2020-09-01", end="2025-08-31")
    assert decide(expired) == {"p1": (Out.NO_CONSENT, Why.OUTSIDE_PERIOD)}
    # the end date is inclusive: the whole of 2025-08-31 is still covered
    last_day = datetime(2025, 8, 31, 23, 59, tzinfo=UTC)
    assert decide(expired, at=last_day) == {"p1": (Out.PERMITTED, Why.PERMITTED)}
    assert decide(expired, at=datetime(2025, 9, 1, tzinfo=UTC))["p1"][0] is Out.NO_CONSENT
    not_yet = broad("c2", "p2", given="2027-01-01")
    assert decide(not_yet) == {"p2": (Out.NO_CONSENT, Why.OUTSIDE_PERIOD)}
    # nested periods run on, the root period ended: the root bounds every nested provision
    root_ended = consent("c3", "p3", "2020-01-01", [
        ("permit", [MDAT_STORE_PROCESS, MDAT_SCIENTIFIC_USE], "2020-01-01", "2050-12-31")],
        root=("2020-01-01", "2025-12"))
    assert decide(root_ended) == {"p3": (Out.NO_CONSENT, Why.OUTSIDE_PERIOD)}
    assert decide(root_ended, at=datetime(2025, 12, 31, 23, tzinfo=UTC))["p3"][0] is Out.PERMITTED


def test_a_later_withdrawal_wins_and_a_later_reconsent_permits_again() -> None:
    first = broad("c1", "p1", given="2021-03-01T10:00:00+01:00")
    widerruf = withdrawal("c2", "p1", "2025-05-05T09:00:00+02:00")
    assert decide(first, widerruf) == {"p1": (Out.DENIED, Why.DENIED)}
    assert decide(widerruf, first) == {"p1": (Out.DENIED, Why.DENIED)}  # input order is irrelevant
    before = datetime(2025, 1, 1, tzinfo=UTC)
    assert decide(first, widerruf, at=before) == {"p1": (Out.PERMITTED, Why.PERMITTED)}
    again = broad("c3", "p1", given="2026-01-10")
    assert decide(first, widerruf, again) == {"p1": (Out.PERMITTED, Why.PERMITTED)}
    partial = withdrawal("c4", "p1", "2026-02-01", codes=[MDAT_SCIENTIFIC_USE])
    assert decide(first, widerruf, again, partial) == {"p1": (Out.DENIED, Why.DENIED)}


def test_at_equal_date_time_deny_wins() -> None:
    permit = broad("c1", "p1", given="2024-03-01")
    deny = withdrawal("c2", "p1", "2024-03-01")
    assert decide(permit, deny) == decide(deny, permit) == {"p1": (Out.DENIED, Why.DENIED)}


def test_status_inactive_and_rejected_withdraw_draft_and_errors_do_not_count() -> None:
    assert decide(broad("c1", "p1", status="inactive")) == {"p1": (Out.DENIED, Why.WITHDRAWN)}
    assert decide(broad("c1", "p1", status="rejected")) == {"p1": (Out.DENIED, Why.REJECTED)}
    for status in ("draft", "proposed", "entered-in-error"):
        assert decide(broad("c1", "p1", status=status)) == {"p1": (Out.NO_CONSENT,
                                                                   Why.NOT_IN_FORCE)}
        # ... and they do not undo an active consent either
        assert decide(broad("c0", "p1", given="2023-01-01"),
                      withdrawal("c1", "p1", "2024-01-01", status=status)
                      ) == {"p1": (Out.PERMITTED, Why.PERMITTED)}
    # an old consent replaced (inactive) by a newer active one: the newer decides
    assert decide(broad("c1", "p1", given="2021-01-01", status="inactive"),
                  broad("c2", "p1", given="2024-01-01")) == {"p1": (Out.PERMITTED, Why.PERMITTED)}
    # an inactive consent's denies still apply
    assert decide(broad("c1", "p1", given="2021-01-01"),
                  withdrawal("c2", "p1", "2022-01-01", status="inactive")
                  ) == {"p1": (Out.DENIED, Why.DENIED)}


def test_a_blanket_deny_denies_every_code() -> None:
    blanket = {"resourceType": "Consent", "status": "active", "dateTime": "2025-01-01",
               "patient": {"reference": "Patient/p1"},
               "provision": {"type": "deny", "period": {"start": "2025-01-01"}}}
    assert decide(broad("c1", "p1", given="2024-01-01"), blanket) == {"p1": (Out.DENIED,
                                                                             Why.DENIED)}
    # a root deny with nested coded provisions (the MII shape) is not blanket
    assert decide(broad("c1", "p1"))["p1"][0] is Out.PERMITTED


def test_codes_match_by_system_and_code() -> None:
    wrong_system = broad("c1", "p1", system="urn:oid:1.2.3")
    assert decide(wrong_system) == {"p1": (Out.NO_CONSENT, Why.NO_PROVISION)}
    custom = ConsentPolicy(ConsentMode.OPT_IN, system="urn:oid:1.2.3")
    assert decide(wrong_system, policy=custom) == {"p1": (Out.PERMITTED, Why.PERMITTED)}


@pytest.mark.parametrize("breakage", [
    lambda c: c.pop("status"),
    lambda c: c.update(status="revoked"),
    lambda c: c.pop("dateTime"),
    lambda c: c.update(dateTime="01.02.2024"),
    lambda c: c.update(dateTime="2024-02-30"),
    lambda c: c.update(dateTime="2024-02-01T10:00:00"),  # a time needs a zone
    lambda c: c["provision"]["provision"][0]["period"].update(start="yesterday"),
    lambda c: c["provision"]["provision"][0]["period"].update(end="2019-01-01"),
    lambda c: c["provision"]["provision"][0].update(type="maybe"),
    lambda c: c["provision"].update(provision={"type": "permit"}),
    lambda c: c["provision"]["provision"][0].update(code="MDAT"),
    lambda c: c.update(provision=["deny"]),
])
def test_a_malformed_consent_never_permits(breakage: Any) -> None:
    bad = broad("c1", "p1")
    breakage(bad)
    decisions = evaluate_consents([bad, broad("c2", "p2")], POLICY, AT)
    assert decisions["p1"] == ConsentDecision(Out.MALFORMED, Why.MALFORMED, consents=1, malformed=1)
    assert decisions["p2"].permits
    # a valid consent beside it does not make it permit
    assert decide(broad("c0", "p1", given="2025-01-01"), bad) == {"p1": (Out.MALFORMED,
                                                                         Why.MALFORMED)}
    # a valid deny still decides as a deny
    assert decide(bad, withdrawal("c3", "p1", "2025-01-01")) == {"p1": (Out.DENIED, Why.DENIED)}


def test_consents_without_a_patient_are_counted_not_attributed() -> None:
    no_patient = broad("c1", "p1")
    del no_patient["patient"]
    by_identifier = broad("c2", "p2")
    by_identifier["patient"] = {"identifier": {"system": "urn:pseudonym", "value": "x"}}
    evaluation = evaluate([no_patient, by_identifier, "not a resource", broad("c3", "p3")],
                          POLICY, AT)
    assert evaluation.unattributed == 3
    assert set(evaluation.decisions) == {"p3"}


def test_patient_keys_from_references() -> None:
    assert patient_key("Patient/p-1.a") == "p-1.a"
    assert patient_key("https://fhir.example/fhir/Patient/123/_history/4") == "123"
    for reference in ("Group/1", "urn:uuid:5d4c", "Patient/", None, 7, "Patient/a b"):
        assert patient_key(reference) is None


def test_date_bounds_follow_the_precision() -> None:
    assert bounds("2024") == (datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    assert bounds("2024-02") == (datetime(2024, 2, 1, tzinfo=UTC),
                                 datetime(2024, 3, 1, tzinfo=UTC))
    assert bounds("2024-12-31")[1] == datetime(2025, 1, 1, tzinfo=UTC)
    start, end = bounds("2024-02-23T12:00:00+01:00")
    assert start == datetime(2024, 2, 23, 11, tzinfo=UTC) and end > start


def test_a_naive_evaluation_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate_consents([], POLICY, datetime(2026, 1, 1))


# -- the precedence rules against a reference model ------------------------------------------

DAYS = ["2020-01-01", "2022-06-01", "2024-01-01", "2026-01-01"]
STATUSES = ["active", "active", "inactive", "rejected", "draft", "entered-in-error"]
PERIODS = [(None, None), ("2025-01-01", None), ("2027-01-01", None), ("2019-01-01", "2021-12-31")]
CODES = [MDAT_STORE_PROCESS, MDAT_SCIENTIFIC_USE]
provisions = st.lists(st.tuples(st.sampled_from(["permit", "deny"]),
                                st.lists(st.sampled_from(CODES), min_size=1, max_size=2),
                                st.sampled_from(PERIODS)), min_size=1, max_size=3)
consents = st.lists(st.tuples(st.sampled_from(DAYS), st.sampled_from(STATUSES), provisions),
                    min_size=1, max_size=5)


def model(items: list[tuple[str, str, list[Any]]]) -> ConsentOutcome:
    """Apply the consents day by day, oldest first; on one day permits, then denies; an
    inactive/rejected consent's permits are denies; only periods containing AT count."""
    state: dict[str, str] = {}

    def covers(p: tuple[str | None, str | None]) -> bool:
        start, end = p
        return (start is None or bounds(start)[0] <= AT) and (end is None or bounds(end)[1] > AT)

    for day in sorted({d for d, _, _ in items}):
        todays = [(s, ps) for d, s, ps in items if d == day and s in ("active", "inactive",
                                                                         "rejected")]
        for want in ("permit", "deny"):
            for status, provs in todays:
                for kind, codes, p in provs:
                    effective = kind if status == "active" else "deny"
                    if effective == want and covers(p):
                        state.update(dict.fromkeys(codes, want))
    if any(state.get(code) == "deny" for code in CODES):
        return Out.DENIED
    if all(state.get(code) == "permit" for code in CODES):
        return Out.PERMITTED
    return Out.NO_CONSENT


@settings(max_examples=300, deadline=None)
@given(consents, st.randoms(use_true_random=False))
def test_precedence_matches_the_day_by_day_model(items: list[tuple[str, str, list[Any]]],
                                                 rng: random.Random) -> None:
    resources = [consent(f"c{i}", "p1", day, [(k, c, *p) for k, c, p in provs], status=status,
                         root=(None, None))
                 for i, (day, status, provs) in enumerate(items)]
    expected = model(items)
    assert evaluate_consents(resources, POLICY, AT)["p1"].outcome is expected
    shuffled = copy.deepcopy(resources)
    rng.shuffle(shuffled)
    assert evaluate_consents(shuffled, POLICY, AT)["p1"].outcome is expected
    # a newer active withdrawal always denies; a newer broad consent always permits
    assert evaluate_consents([*resources, withdrawal("w", "p1", "2026-03-01")], POLICY,
                             AT)["p1"].outcome is Out.DENIED
    assert evaluate_consents([*resources, broad("b", "p1", given="2026-03-01")], POLICY,
                             AT)["p1"].outcome is Out.PERMITTED
