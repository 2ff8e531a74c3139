"""The connector's Prometheus metrics: counts, bytes and durations per dataset, never a value.

One :class:`ConnectorMetrics` per service (its own ``CollectorRegistry``, no global
registry), exposed at ``/metrics`` in the text exposition format
(https://prometheus.io/docs/instrumenting/exposition_formats/). Labels are configuration
names (dataset, node, column, rule, status), so their number is bounded by the config and
no label can carry row-level data: a rejected value is counted under its column, its value
*class* (``out_of_range``, ``unknown_code``, ...) and its rule, as
:func:`~dic_connector.encoding.validate.validate_rows` reports it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: run durations from seconds (a small REST pull) to hours (a national Bulk export)
DURATION_BUCKETS_S = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)


class ConnectorMetrics:
    """Counters and histograms of connector runs."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter("dic_connector_runs", "Connector runs by outcome",
                            ["dataset", "status"], registry=r)
        self.resources_read = Counter("dic_connector_resources_read",
                                      "FHIR resources or SQL rows read from the source",
                                      ["dataset"], registry=r)
        self.patients = Counter("dic_connector_patients", "Patient rows assembled",
                                ["dataset"], registry=r)
        self.excluded = Counter("dic_connector_patients_excluded",
                                "Patient rows excluded before sharing (consent, opt-out)",
                                ["dataset"], registry=r)
        self.rejected = Counter("dic_connector_rows_rejected",
                                "Rows rejected by validation, per column, value class and rule",
                                ["dataset", "column", "value_class", "rule"], registry=r)
        self.shared = Counter("dic_connector_rows_shared", "Rows secret-shared to the nodes",
                              ["dataset"], registry=r)
        self.share_bytes = Counter("dic_connector_share_bytes",
                                   "Share bytes sent to each node", ["dataset", "node"],
                                   registry=r)
        self.duration = Histogram("dic_connector_run_duration_seconds",
                                  "Wall time of a connector run", ["dataset", "status"],
                                  buckets=DURATION_BUCKETS_S, registry=r)
        self.last_success = Gauge("dic_connector_last_success_timestamp_seconds",
                                  "Unix time of the dataset's last successful run",
                                  ["dataset"], registry=r)
        self.pending_erasures = Gauge("dic_connector_pending_erasures",
                                      "Committed versions whose older versions are not yet "
                                      "confirmed erased on every node", registry=r)
        # -- FHIR Subscriptions (:mod:`.subscriptions`) -----------------------------------
        self.notifications = Counter("dic_connector_subscription_notifications",
                                     "Subscription notifications accepted, by type "
                                     "(handshake, heartbeat, event-notification, rest-hook)",
                                     ["dataset", "type"], registry=r)
        self.notifications_rejected = Counter(
            "dic_connector_subscription_notifications_rejected",
            "Notifications refused (unauthorised, malformed, unknown subscription)",
            ["dataset", "reason"], registry=r)
        self.duplicates = Counter("dic_connector_subscription_duplicate_events",
                                  "Notification events seen before (ignored)", ["dataset"],
                                  registry=r)
        self.late = Counter("dic_connector_subscription_late_events",
                            "Events that arrived after a higher number (reordered delivery)",
                            ["dataset"], registry=r)
        self.gaps = Counter("dic_connector_subscription_gaps",
                            "Times a missed notification was detected (event numbers jumped, "
                            "or a heartbeat or $status counted more events than seen)",
                            ["dataset"], registry=r)
        self.events_missed = Counter("dic_connector_subscription_events_missed",
                                     "Event numbers skipped when a gap was detected",
                                     ["dataset"], registry=r)
        self.heartbeats_missed = Counter("dic_connector_subscription_heartbeats_missed",
                                         "Watchdog periods without any notification",
                                         ["dataset"], registry=r)
        self.reactivations = Counter("dic_connector_subscription_reactivations",
                                     "Subscriptions found off, in error or missing and "
                                     "re-requested on the FHIR server", ["dataset"], registry=r)
        self.recoveries = Counter("dic_connector_subscription_recoveries",
                                  "Recoveries from a failed delivery: a run, or the "
                                  "subscription re-requested, asked without a notification of "
                                  "a change (reason: gap, status, heartbeat, error, missing)",
                                  ["dataset", "reason"], registry=r)
        self.incremental_runs = Counter("dic_connector_incremental_runs",
                                        "Runs that pulled only the patients changed since "
                                        "the last version (:mod:`.incremental`)",
                                        ["dataset"], registry=r)
        self.incremental_fallbacks = Counter(
            "dic_connector_incremental_fallbacks",
            "Runs a subscription triggered that pulled everything instead of the changed "
            "patients (reason: base, mapping, consent, source, changes, unlinked, server, "
            "refused)",
            ["dataset", "reason"], registry=r)
        self.subscription_runs = Counter("dic_connector_subscription_runs",
                                         "Runs started because a subscription said the source "
                                         "changed", ["dataset"], registry=r)
