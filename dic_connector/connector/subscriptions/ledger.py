"""The event numbers seen of each subscription: duplicates, late arrivals and gaps.

Backport IG, "Handling errors" (http://hl7.org/fhir/uv/subscriptions-backport/errors.html):
the server numbers the events of a subscription 1, 2, 3, ... and every notification states
``events-since-subscription-start``; a client that knows the highest number it received
detects a missed notification when a later one skips numbers, or when a heartbeat (or the
``$status`` operation) reports a count above what it saw.

What this means for the connector, whose runs are full pulls (:mod:`..runs`):

- a **new** number (above the highest seen) asks for a run;
- numbers skipped by a jump are **suspect**: delivery may be reordered (sekmet, for one,
  delivers from a thread pool), so a jump alone is no proof of a loss. They need no run of
  their own: the run the higher number asked for starts after that number's change, which
  the server numbered after theirs, so the full pull contains them. If one arrives later it
  is **late** and asks for nothing;
- a heartbeat, handshake or ``$status`` (a *check*) confirms the loss of the numbers that
  were already suspect at the check before it (they had a whole heartbeat period to arrive):
  a **gap** is recorded (metrics, log); and a count above the highest number seen names
  events not delivered yet, which asks for a run at once (the recovery from any gap is a
  full pull) and is a gap if they are still missing at the next check (a server may state
  its count while their deliveries are still queued);
- any other number is a **duplicate** (a retried delivery) and asks for nothing.

The highest number and the missing ones (suspect or confirmed) are kept in the state
database per subscription
(:meth:`~dic_connector.connector.state.StateStore.save_subscription_events`), so that after a
restart old numbers are duplicates, not news, a missing one is still late, and a count that
moved while the connector was down asks for a run. A subscription the ledger has never
seen starts at 0: its first count above 0 asks for a run (the safe side: one run too many,
never one too few).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dic_connector.connector.subscriptions.notifications import Notification, NotificationType

#: the most missing numbers remembered per subscription (older ones are forgotten: if one
#: of those arrives, very late, it counts as a duplicate, which asks for no run either)
MAX_MISSING = 1024


@dataclass(frozen=True)
class Verdict:
    """What one notification changed in the ledger."""

    new: int = 0
    duplicates: int = 0
    late: int = 0
    #: numbers skipped by a jump (suspect; confirmed or not by a later check)
    skipped: int = 0
    #: numbers a check counted above the highest seen (not delivered yet: a run; a gap
    #: if still missing at the next check)
    unseen: int = 0
    #: numbers whose loss this notification confirmed: a gap if > 0
    missed: int = 0

    @property
    def run(self) -> bool:
        """Whether the notification says the source changed since the last run was asked."""
        return self.new > 0 or self.unseen > 0


@dataclass
class Seen:
    """One subscription's numbers."""

    highest: int = 0
    #: confirmed missing (a late arrival is still possible)
    missing: set[int] = field(default_factory=set)
    #: skipped since the last check, and skipped before it (confirmed at the next check)
    suspect_new: set[int] = field(default_factory=set)
    suspect_old: set[int] = field(default_factory=set)

    def absent(self) -> set[int]:
        return self.missing | self.suspect_new | self.suspect_old

    def snapshot(self) -> tuple[int, list[int]]:
        return self.highest, sorted(self.absent())

    def discard(self, number: int) -> bool:
        found = number in self.absent()
        for numbers in (self.missing, self.suspect_new, self.suspect_old):
            numbers.discard(number)
        return found


#: the notification types that state the server's count as a check (not as an event)
CHECKS = frozenset({NotificationType.HEARTBEAT, NotificationType.HANDSHAKE,
                    NotificationType.QUERY_STATUS, NotificationType.QUERY_EVENT})


class Ledger:
    """The numbers seen of every subscription of one dataset."""

    def __init__(self, restored: dict[str, tuple[int, list[int]]] | None = None) -> None:
        self._seen = {sub: Seen(highest, set(missing))
                      for sub, (highest, missing) in (restored or {}).items()}

    def seen(self, subscription: str) -> Seen:
        return self._seen.setdefault(subscription, Seen())

    def highest(self, subscription: str) -> int:
        return self.seen(subscription).highest

    def forget_others(self, subscription: str) -> None:
        """Drop every subscription but ``subscription`` (the others are gone from the server)."""
        self._seen = {sub: seen for sub, seen in self._seen.items() if sub == subscription}

    def observe(self, notification: Notification) -> Verdict:
        """Account for ``notification`` (one without a subscription id asks for a run)."""
        if notification.subscription is None:
            return Verdict(new=1)
        seen = self.seen(notification.subscription)
        new = duplicates = late = skipped = unseen = missed = 0
        for number in sorted(set(notification.events)):
            if number > seen.highest:
                gap = range(seen.highest + 1, number)
                seen.suspect_new.update(gap)
                skipped += len(gap)
                seen.highest = number
                new += 1
            elif seen.discard(number):
                late += 1
            else:
                duplicates += 1
        duplicates += len(notification.events) - len(set(notification.events))
        count = notification.events_since
        if notification.type in CHECKS:
            missed += len(seen.suspect_old)
            seen.missing |= seen.suspect_old
            seen.suspect_old, seen.suspect_new = seen.suspect_new, set()
        if count is not None and count > seen.highest:
            # numbered but not (yet) delivered: a run now, and a gap if they have not
            # arrived by the next check (the server may state its count while their
            # deliveries are still queued: sekmet sends heartbeats from another thread)
            unseen = count - seen.highest
            seen.suspect_old.update(range(seen.highest + 1, count + 1))
            seen.highest = count
        _bound(seen)
        return Verdict(new, duplicates, late, skipped, unseen, missed)


def _bound(seen: Seen) -> None:
    """Forget the oldest missing numbers beyond :data:`MAX_MISSING`."""
    absent = seen.absent()
    if len(absent) > MAX_MISSING:
        keep = set(sorted(absent)[-MAX_MISSING:])
        seen.missing &= keep
        seen.suspect_new &= keep
        seen.suspect_old &= keep
