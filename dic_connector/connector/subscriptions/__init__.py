"""FHIR Subscriptions as a trigger of the connector service (issue 13).

Every run is a **full pull** (:mod:`..runs`): the connector keeps no plaintext to merge a
change into, so a notification never carries data into a version. It only says "something
changed, re-pull soon". Not missing a change is then a matter of never missing *that* a
change happened, and not double-counting one is a matter of debouncing: many notifications,
one run after them.

Two kinds of subscription are kept on the dataset's FHIR server:

- the R5 **Subscriptions Backport IG** on R4 (http://hl7.org/fhir/uv/subscriptions-backport/):
  a topic canonical with filter criteria, ``empty`` or ``id-only`` payloads, heartbeats, and
  numbered events (``events-since-subscription-start``), which make a missed notification
  detectable;
- the classic **R4 rest-hook** (http://hl7.org/fhir/R4/subscription.html): a search as
  ``criteria`` and notifications without a payload; no numbers, no heartbeats, so only the
  subscription's ``status`` and the periodic ``reconcile`` pull guard against losses.

Modules, in dependency order:

- ``notifications`` what a notification (or a ``$status`` answer) says: type, subscription
                    id, status, event count and event numbers; malformed bodies refused
- ``ledger``        the event numbers seen per subscription: duplicates, late arrivals,
                    gaps (missed notifications), restored from the state database
- ``debounce``      a burst of notifications gives one run after a quiet window; one more
                    run after a run that a notification arrived during
- ``resources``     the Subscription resources the connector asks for, and how it recognises
                    its own on the server (a ``meta.tag``)
- ``server``        the FHIR server side: find, create, update, re-activate, ``$status``
- ``watcher``       one dataset's subscription: receive notifications, persist the numbers,
                    trigger runs, and the watchdog for silence and subscriptions in error
- ``receiver``      ``POST /fhir-notify/{dataset}``: the shared secret, 2xx at once, 400 for
                    malformed bodies; never a payload in a log or a table
"""
