"""Event numbers: new ones ask for a run, duplicates and late arrivals do not, jumps and
counts above what was seen are gaps (which ask for a run), and a restored ledger does not
mistake old numbers for news."""

from __future__ import annotations

from dic_connector.connector.subscriptions.ledger import MAX_MISSING, Ledger, Verdict
from dic_connector.connector.subscriptions.notifications import Notification, NotificationType

EVENT, BEAT = NotificationType.EVENT, NotificationType.HEARTBEAT


def event(*numbers: int, sub: str = "s") -> Notification:
    return Notification(EVENT, sub, "active", max(numbers), numbers)


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


def test_a_jump_is_a_gap_and_the_late_number_asks_for_nothing() -> None:
    ledger = Ledger()
    ledger.observe(event(1))
    jumped = ledger.observe(event(4))
    assert jumped == Verdict(new=1, missed=2) and jumped.run
    assert ledger.seen("s").snapshot() == (4, [2, 3])
    late = ledger.observe(event(3))
    assert late == Verdict(late=1) and not late.run
    assert ledger.observe(event(3)) == Verdict(duplicates=1)
    assert ledger.seen("s").snapshot() == (4, [2])


def test_reordered_delivery_within_one_notification_is_no_gap() -> None:
    ledger = Ledger()
    assert ledger.observe(event(3, 1, 2)) == Verdict(new=3)


def test_a_heartbeat_counting_more_than_seen_is_a_gap() -> None:
    ledger = Ledger()
    ledger.observe(event(1))
    assert ledger.observe(Notification(BEAT, "s", "active", 1)) == Verdict()
    beat = ledger.observe(Notification(BEAT, "s", "active", 3))
    assert beat == Verdict(missed=2) and beat.run
    # the missed events, delivered after all, are late, not new
    assert ledger.observe(event(2, 3)) == Verdict(late=2)


def test_restored_numbers_are_not_news_and_a_moved_count_is_a_gap() -> None:
    ledger = Ledger({"s": (5, [4])})
    assert ledger.observe(event(5)) == Verdict(duplicates=1)
    assert ledger.observe(event(4)) == Verdict(late=1)
    assert ledger.observe(Notification(BEAT, "s", "active", 7)).missed == 2
    # a subscription never seen starts at 0: a count above it is a gap (the safe side)
    assert ledger.observe(Notification(BEAT, "other", "active", 2)) == Verdict(missed=2)


def test_subscriptions_are_kept_apart_and_pings_always_run() -> None:
    ledger = Ledger()
    ledger.observe(event(1, sub="a"))
    assert ledger.observe(event(1, sub="b")) == Verdict(new=1)
    assert ledger.observe(Notification(NotificationType.REST_HOOK)).run


def test_missing_numbers_are_bounded() -> None:
    ledger = Ledger()
    assert ledger.observe(event(10 * MAX_MISSING)).missed == 10 * MAX_MISSING - 1
    assert len(ledger.seen("s").missing) == MAX_MISSING
    assert ledger.observe(event(1)) == Verdict(duplicates=1)  # forgotten: asks for nothing
