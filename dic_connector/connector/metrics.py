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
