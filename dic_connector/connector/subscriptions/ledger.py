"""The event numbers seen of each subscription: duplicates, late arrivals and gaps.

Backport IG, "Handling errors" (http://hl7.org/fhir/uv/subscriptions-backport/errors.html):
the server numbers the events of a subscription 1, 2, 3, ... and every notification states
``events-since-subscription-start``; a client that knows the highest number it received
detects a missed notification when a later one skips numbers, or when a heartbeat (or the
``$status`` operation) reports a count above what it saw.

What this means for the connector, whose runs are full pulls (:mod:`..runs`):

- a **new** number (above the highest seen) asks for a run;
- a number skipped by a jump is **missing**: a gap is recorded (metrics, log) and a run is
  asked for, which is the whole recovery, since a full pull after the missed event contains
  its change. If the missing number arrives later it is **late** (reordered delivery; sekmet,
  for one, delivers from a thread pool): it asks for no run, because the run asked for by
  the higher number started after that number's change, which the server numbered after
  the late one's;
- a count in a heartbeat, handshake or ``$status`` above the highest seen is a gap of that
  many events (their numbers are missing from then on, so a late delivery is not new);
- any other number is a **duplicate** (a retried delivery) and asks for nothing.

The highest number and the missing ones are kept in the state database per subscription
(:meth:`~dic_connector.connector.state.StateStore.save_subscription_events`), so that after a
restart old numbers are duplicates, not news, and a count that moved while the connector was
down is a gap. A subscription the ledger has never seen starts at 0: its first count above
0 is a gap (the safe side: one run too many, never one too few).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dic_connector.connector.subscriptions.notifications import Notification

#: the most missing numbers remembered per subscription (older ones are forgotten: if one
#: of those arrives, very late, it counts as a duplicate, which asks for no run either)
MAX_MISSING = 1024


@dataclass(frozen=True)
class Verdict:
    """What one notification changed in the ledger."""

    new: int = 0
    duplicates: int = 0
    late: int = 0
    #: numbers found missing by this notification (a gap if > 0)
    missed: int = 0

    @property
    def run(self) -> bool:
        """Whether the notification says the source changed since the last run was asked."""
        return self.new > 0 or self.missed > 0


@dataclass
class Seen:
    """One subscription's numbers."""

    highest: int = 0
    missing: set[int] = field(default_factory=set)

    def snapshot(self) -> tuple[int, list[int]]:
        return self.highest, sorted(self.missing)


class Ledger:
    """The numbers seen of every subscription of one dataset."""

    def __init__(self, restored: dict[str, tuple[int, list[int]]] | None = None) -> None:
        self._seen = {sub: Seen(highest, set(missing))
                      for sub, (highest, missing) in (restored or {}).items()}

    def seen(self, subscription: str) -> Seen:
        return self._seen.setdefault(subscription, Seen())

    def highest(self, subscription: str) -> int:
        return self.seen(subscription).highest

    def observe(self, notification: Notification) -> Verdict:
        """Account for ``notification`` (one without a subscription id asks for a run)."""
        if notification.subscription is None:
            return Verdict(new=1)
        seen = self.seen(notification.subscription)
        new = duplicates = late = missed = 0
        for number in sorted(set(notification.events)):
            if number > seen.highest:
                missed += self._skip(seen, range(seen.highest + 1, number))
                seen.highest = number
                new += 1
            elif number in seen.missing:
                seen.missing.discard(number)
                late += 1
            else:
                duplicates += 1
        duplicates += len(notification.events) - len(set(notification.events))
        count = notification.events_since
        if count is not None and count > seen.highest:
            missed += self._skip(seen, range(seen.highest + 1, count + 1))
            seen.highest = count
        return Verdict(new, duplicates, late, missed)

    @staticmethod
    def _skip(seen: Seen, numbers: Iterable[int]) -> int:
        skipped = list(numbers)
        seen.missing.update(skipped[-MAX_MISSING:])
        if len(seen.missing) > MAX_MISSING:
            seen.missing = set(sorted(seen.missing)[-MAX_MISSING:])
        return len(skipped)
