"""The metrics catalogue: every series `/metrics` exports (documented in docs/metrics.md).

Names follow Prometheus conventions: base units (seconds, metres, ratios), `_total` for
counters, and bounded label sets. `procedure_id` is the one open-ended label; its series
are removed when the procedure ends, so cardinality follows the procedures in progress.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)

# Bucket edges sit on every default policy threshold (ICD §7) so alert and dashboard
# queries over histograms land exactly on the thresholds.
LATENCY_BUCKETS_S = (
    0.010,
    0.020,
    0.030,
    0.040,
    0.048,
    0.060,
    0.080,
    0.100,
    0.150,
    0.200,
    0.300,
    0.400,
    0.500,
    0.750,
    1.0,
    2.0,
)
DETECTION_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.010,
    0.020,
    0.050,
    0.100,
    0.200,
    0.500,
    1.0,
)
GC_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.010, 0.020, 0.050, 0.100, 0.200)
ACK_BUCKETS_S = (0.005, 0.010, 0.020, 0.050, 0.100, 0.200, 0.300, 0.500, 1.0, 2.0, 5.0)

PROCEDURE_STATES = ("pending", "armed", "warning", "safe_stop_latched", "safe_stopped", "ended")
REJECT_REASONS = (
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "schema",
    "site_mismatch",
    "key_mismatch",
    "signature",
    "other",
)


class MonitorMetrics:
    """All metric objects of one monitor process, on their own registry (tests make many)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, with_process: bool = True
    ) -> None:
        r = self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        if with_process:
            for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                with contextlib.suppress(ValueError):  # already on this registry
                    r.register(c)
        self.info = Info("telesafe_monitor", "Monitor identity and build.", registry=r)
        self.up_since = Gauge(
            "telesafe_monitor_start_time_seconds", "Unix time the monitor started.", registry=r
        )

        # Input
        self.records = Counter(
            "telesafe_records_received_total",
            "Valid telemetry records received, by site and ICD record type.",
            ["site", "type"],
            registry=r,
        )
        self.rejected = Counter(
            "telesafe_records_rejected_total",
            "Records rejected to the dead-letter topic (ICD §6), by source and reason class.",
            ["source", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "telesafe_records_duplicate_total",
            "Records ignored because their seq was at or below the last seen (ICD §7).",
            ["site"],
            registry=r,
        )
        self.lost = Counter(
            "telesafe_records_lost_total",
            "Records missing according to gaps in seq (ICD §7).",
            ["site"],
            registry=r,
        )
        self.stale = Counter(
            "telesafe_records_stale_total",
            "Records older than the staleness limit on arrival (no evidence of liveness).",
            ["site"],
            registry=r,
        )
        self.operator_requests = Counter(
            "telesafe_operator_requests_total",
            "Operator requests by type and outcome.",
            ["type", "outcome"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "telesafe_consumer_lag_records",
            "Records behind the end of each consumed topic (summed over assigned partitions).",
            ["topic"],
            registry=r,
        )
        self.consumer_lag_seconds = Gauge(
            "telesafe_consumer_lag_seconds",
            "Age of the newest record handed to the rules engine, by broker timestamp.",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "telesafe_assigned_partitions", "Partitions this instance consumes.", registry=r
        )

        # Signals per procedure
        self.latency = Histogram(
            "telesafe_link_latency_seconds",
            "Latency samples reported by the sites, by channel (control, video).",
            ["channel"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.latency_quantile = Gauge(
            "telesafe_latency_window_seconds",
            "Quantiles of the sliding 1 s latency window per procedure and channel.",
            ["procedure_id", "channel", "percentile"],  # "quantile" is reserved for summaries
            registry=r,
        )
        self.heartbeat_age = Gauge(
            "telesafe_heartbeat_age_seconds",
            "Time since the last fresh heartbeat of each site, on the monitor's clock.",
            ["procedure_id", "site"],
            registry=r,
        )
        self.heartbeat_stop_limit = Gauge(
            "telesafe_heartbeat_stop_limit_seconds",
            "Heartbeat silence after which the procedure's policy pack safe-stops it "
            "(heartbeat.stop_silence_ms): the SiteHeartbeatLost alert compares the age to it.",
            ["procedure_id"],
            registry=r,
        )
        self.link_jitter = Gauge(
            "telesafe_link_jitter_seconds",
            "Last reported link jitter.",
            ["procedure_id", "site"],
            registry=r,
        )
        self.link_loss = Gauge(
            "telesafe_link_loss_ratio",
            "Last reported link loss ratio.",
            ["procedure_id", "site"],
            registry=r,
        )
        self.workspace_margin = Gauge(
            "telesafe_workspace_margin_meters",
            "Smallest distance of each arm's tool tip to its allowed-box faces or a forbidden "
            "zone over the last batch (negative: outside).",
            ["procedure_id", "arm"],
            registry=r,
        )
        self.tool_speed = Gauge(
            "telesafe_tool_speed_meters_per_second",
            "Highest tool-tip speed in the last batch.",
            ["procedure_id", "arm"],
            registry=r,
        )

        # Decisions
        self.procedure_state = Gauge(
            "telesafe_procedure_state",
            "1 for the state each procedure is in, 0 for the others.",
            ["procedure_id", "state"],
            registry=r,
        )
        self.procedures = Gauge(
            "telesafe_procedures_active", "Procedures monitored by this instance.", registry=r
        )
        self.warnings = Counter(
            "telesafe_warnings_total", "Warnings raised, by rule.", ["rule"], registry=r
        )
        self.warning_active = Gauge(
            "telesafe_warning_active",
            "1 while a warning is active.",
            ["procedure_id", "rule"],
            registry=r,
        )
        self.safe_stops = Counter(
            "telesafe_safe_stops_total",
            "Safe-stop commands issued (one per breach episode).",
            ["rule"],
            registry=r,
        )
        self.safe_stop_latched = Gauge(
            "telesafe_safe_stop_latched",
            "1 while a procedure is latched in safe-stop, labelled with the rule that tripped it.",
            ["procedure_id", "rule"],
            registry=r,
        )
        self.safe_stop_resends = Counter(
            "telesafe_safe_stop_resends_total", "Re-sends of unacknowledged safe-stops.", registry=r
        )
        self.safe_stop_unacked = Gauge(
            "telesafe_safe_stop_unacknowledged",
            "1 while a procedure's safe-stop awaits acknowledgement.",
            ["procedure_id"],
            registry=r,
        )
        self.safe_stop_escalated = Gauge(
            "telesafe_safe_stop_escalated",
            "1 once a safe-stop went unacknowledged past the escalation count (page).",
            ["procedure_id"],
            registry=r,
        )
        self.ack_delay = Histogram(
            "telesafe_safe_stop_ack_delay_seconds",
            "From first issue of a safe-stop to the robot's acknowledgement (monitor clock).",
            buckets=ACK_BUCKETS_S,
            registry=r,
        )
        self.detection_latency = Histogram(
            "telesafe_detection_latency_seconds",
            "From the breach (record receipt, or the deadline of a timer rule) to the "
            "safe-stop handed to the producer.",
            ["kind"],
            buckets=DETECTION_BUCKETS_S,
            registry=r,
        )
        self.commands_sent = Counter(
            "telesafe_commands_sent_total", "Commands published, by type.", ["type"], registry=r
        )
        self.command_send_failures = Counter(
            "telesafe_command_send_failures_total",
            "Commands the producer failed to deliver, by type.",
            ["type"],
            registry=r,
        )
        self.engine_loop_lag = Gauge(
            "telesafe_engine_timer_lag_seconds",
            "How late the engine thread ran its last due timer.",
            registry=r,
        )
        self.gc_pause = Histogram(
            "telesafe_gc_pause_seconds",
            "Pauses of the cyclic garbage collector (it holds the GIL: no thread runs), "
            "by generation.",
            ["generation"],
            buckets=GC_BUCKETS_S,
            registry=r,
        )

        # Audit ledger
        self.ledger_appends = Counter(
            "telesafe_ledger_appends_total", "Entries durably appended to the ledger.", registry=r
        )
        self.ledger_failures = Counter(
            "telesafe_ledger_append_failures_total", "Ledger write failures (alarm).", registry=r
        )
        self.ledger_size = Gauge("telesafe_ledger_entries", "Entries in the ledger.", registry=r)
        self.ledger_checkpoint_time = Gauge(
            "telesafe_ledger_last_checkpoint_timestamp_seconds",
            "Unix time of the newest signed checkpoint.",
            registry=r,
        )
        self.ledger_pending = Gauge(
            "telesafe_ledger_pending_entries", "Entries submitted but not yet durable.", registry=r
        )
        self.ledger_verify_failures = Counter(
            "telesafe_ledger_verify_failures_total",
            "Failed ledger self-verifications.",
            registry=r,
        )
        self.ledger_last_verify_ok = Gauge(
            "telesafe_ledger_last_verify_success",
            "1 if the last ledger self-verification passed, 0 if it failed.",
            registry=r,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: `labels()` costs ~2 µs (a lock and a tuple),
        and the per-procedure gauges are set for every procedure four times a second on the
        engine thread. Remove series through `remove()` so no stale child is kept."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def remove(self, metric: Any, *labels: str) -> None:
        self._children.pop((id(metric), labels), None)
        metric.remove(*labels)

    def forget_procedure(self, procedure_id: str) -> None:
        """Drop a finished procedure's series so label cardinality stays bounded."""
        for metric in (
            self.latency_quantile,
            self.heartbeat_age,
            self.heartbeat_stop_limit,
            self.link_jitter,
            self.link_loss,
            self.workspace_margin,
            self.tool_speed,
            self.procedure_state,
            self.warning_active,
            self.safe_stop_unacked,
            self.safe_stop_escalated,
            self.safe_stop_latched,
        ):
            for labels in list(metric._metrics):
                if labels and labels[0] == procedure_id:
                    self.remove(metric, *labels)
