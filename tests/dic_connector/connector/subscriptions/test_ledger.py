"""Event numbers: new ones ask for a run, duplicates and late arrivals do not; numbers
skipped by a jump are suspect until the next check but one confirms them (reordered
delivery is no gap); a count above what was seen is a gap that asks for a run; a restored
ledger does not mistake old numbers for news."""

from __future__ import annotations

from dic_connector.connector.subscriptions.ledger import MAX_MISSING, Ledger, Verdict
from dic_connector.connector.subscriptions.notifications import Notification, NotificationType

EVENT, BEAT = NotificationType.EVENT, NotificationType.HEARTBEAT


def event(*numbers: int, sub: str = "s") -> Notification:
    return Notification(EVENT, sub, "active", max(numbers), numbers)


def beat(count: int, sub: str = "s") -> Notification:
    return Notification(BEAT, sub, "active", count)


def test_new_numbers_run_and_duplicates_do_not() -> None:
    ledger = Ledger()
    assert ledger.observe(Notification(NotificationType.HANDSHAKE, "s", "requested", 0)) \
        == Verdict()
    assert ledger.observe(event(1)) == Verdict(new=1)
    assert ledger.observe(event(2, 3)) == Verdict(new=2)
    again = ledger.observe(event(3))
    assert again == Verdict(duplicates=1) and not again.run
    assert ledger.observe(event(2, 2)).duplicates == 2
    assert ledger.highest("s") == 3


def test_reordered_delivery_is_late_not_a_gap() -> None:
    ledger = Ledger()
    ledger.observe(event(1))
    jumped = ledger.observe(event(4))
    assert jumped == Verdict(new=1, skipped=2) and jumped.run
    assert ledger.seen("s").snapshot() == (4, [2, 3])
    assert ledger.observe(beat(4)) == Verdict()  # one check: 2 and 3 may still be in flight
    late = ledger.observe(event(3))
    assert late == Verdict(late=1) and not late.run
    assert ledger.observe(event(3)) == Verdict(duplicates=1)
    assert ledger.observe(event(2, 3, 1)) == Verdict(late=1, duplicates=2)
    assert ledger.observe(beat(4)) == Verdict() and ledger.seen("s").snapshot() == (4, [])


def test_a_number_still_missing_after_two_checks_is_a_gap_without_a_run() -> None:
    ledger = Ledger()
    ledger.observe(event(1))
    ledger.observe(event(3))
    assert ledger.observe(beat(3)) == Verdict()
    confirmed = ledger.observe(beat(3))
    assert confirmed == Verdict(missed=1) and not confirmed.run  # event 3's run covers 2
    assert ledger.observe(beat(3)) == Verdict()  # counted once
    assert ledger.observe(event(2)) == Verdict(late=1)  # delivered after all


def test_a_count_above_what_was_seen_asks_for_a_run_and_is_a_gap_at_the_next_check() -> None:
    ledger = Ledger()
    ledger.observe(event(1))
    assert ledger.observe(beat(1)) == Verdict()
    counted = ledger.observe(beat(3))
    assert counted == Verdict(unseen=2) and counted.run
    # still missing a heartbeat period later: a gap (no second run: the first covers them)
    confirmed = ledger.observe(beat(3))
    assert confirmed == Verdict(missed=2) and not confirmed.run
    # the missed events, delivered after all, are late, not new
    assert ledger.observe(event(2, 3)) == Verdict(late=2)


def test_a_heartbeat_that_overtakes_queued_events_is_no_gap() -> None:
    """sekmet delivers events from a thread pool and heartbeats from another thread: the
    count may arrive before the events it counts."""
    ledger = Ledger()
    ledger.observe(event(1))
    overtaken = ledger.observe(beat(4))
    assert overtaken == Verdict(unseen=3) and overtaken.run
    assert ledger.observe(event(3, 2)) == Verdict(late=2)
    assert ledger.observe(event(4)) == Verdict(late=1)
    assert ledger.observe(beat(4)) == Verdict() and ledger.seen("s").snapshot() == (4, [])


def test_restored_numbers_are_not_news_and_a_moved_count_asks_for_a_run() -> None:
    ledger = Ledger({"s": (5, [4])})
    assert ledger.observe(event(5)) == Verdict(duplicates=1)
    assert ledger.observe(event(4)) == Verdict(late=1)
    assert ledger.observe(beat(7)).unseen == 2
    # a subscription never seen starts at 0: a count above it is a gap (the safe side)
    assert ledger.observe(beat(2, sub="other")) == Verdict(unseen=2)


def test_subscriptions_are_kept_apart_and_pings_always_run() -> None:
    ledger = Ledger()
    ledger.observe(event(1, sub="a"))
    assert ledger.observe(event(1, sub="b")) == Verdict(new=1)
    assert ledger.observe(Notification(NotificationType.REST_HOOK)).run


def test_missing_numbers_are_bounded() -> None:
    ledger = Ledger()
    assert ledger.observe(event(10 * MAX_MISSING)).skipped == 10 * MAX_MISSING - 1
    assert len(ledger.seen("s").absent()) == MAX_MISSING
    assert ledger.observe(event(1)) == Verdict(duplicates=1)  # forgotten: asks for nothing
