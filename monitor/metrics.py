"""The metrics catalogue: every series `/metrics` exports (documented in docs/metrics.md).

Names follow Prometheus conventions: base units (seconds, metres, ratios), `_total` for
counters, and bounded label sets. `procedure_id` is the one open-ended label: those series are
built at scrape time from the procedures in progress (monitor/service/collector.py), so
cardinality follows them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor import snapshot
from monitor.snapshot import ProcedureSnapshot

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series on /metrics

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

PROCEDURE_STATES = snapshot.PROCEDURE_STATES
SECURITY_REASONS = (
    "unsigned",
    "unknown_key",
    "bad_signature",
    "operator_key_mismatch",
    "schema",
    "not_json",
    "not_utf8",
    "not_object",
    "too_large",
    "key_mismatch",
)
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
        self.security_rejections = Counter(
            "telesafe_security_rejections_total",
            "Operator requests refused before the rules engine (unsigned, unknown key, bad "
            "signature, operator/key mismatch, malformed): each is an audited security event.",
            ["reason"],
            registry=r,
        )
        # Every reason exists from the start (at 0): a counter that appears at 1 has no
        # increase() in Prometheus, and the first forged request must page.
        for reason in SECURITY_REASONS:
            self.security_rejections.labels(reason)
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
            "How far behind the monitor is on each partition number: the clock minus the "
            "instant up to which it has heard all of that partition's records (0: caught up).",
            ["partition"],
            registry=r,
        )
        self.busy_ratio = Gauge(
            "telesafe_monitor_busy_ratio",
            "Share of the monitor loop's time spent working rather than waiting for records "
            "(smoothed over about a second); near 1 with a growing lag: saturated.",
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
        # Decisions (per-procedure gauges: ProcedureCollector below, built at scrape time)
        self.per_procedure = ProcedureCollector(r)
        self.warnings = Counter(
            "telesafe_warnings_total", "Warnings raised, by rule.", ["rule"], registry=r
        )
        self.safe_stops = Counter(
            "telesafe_safe_stops_total",
            "Safe-stop commands issued (one per breach episode).",
            ["rule"],
            registry=r,
        )
        self.safe_stop_resends = Counter(
            "telesafe_safe_stop_resends_total", "Re-sends of unacknowledged safe-stops.", registry=r
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


# -- per-procedure gauges, built when Prometheus scrapes (client_python's `collect()`) --
# The loop thread publishes an immutable view of its procedures a few times a second; a
# scrape turns the newest view into metric families. Nothing per procedure is set on the
# loop thread, and the series of a procedure that is gone disappear by construction.

# name -> (help, labels). docs/metrics.md lists each (tests/observability/test_metrics_lint).
SERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "telesafe_procedures_active": ("Procedures monitored by this instance.", ()),
    "telesafe_procedure_state": (
        "1 for the state each procedure is in, 0 for the others.",
        ("procedure_id", "state"),
    ),
    "telesafe_heartbeat_age_seconds": (
        "Time since the last fresh heartbeat of each site, on the monitor's clock.",
        ("procedure_id", "site"),
    ),
    "telesafe_heartbeat_stop_limit_seconds": (
        "The heartbeat silence that safe-stops this procedure (its policy pack).",
        ("procedure_id",),
    ),
    "telesafe_link_jitter_seconds": ("Last reported link jitter.", ("procedure_id", "site")),
    "telesafe_link_loss_ratio": ("Last reported link loss ratio.", ("procedure_id", "site")),
    "telesafe_latency_window_seconds": (
        "Quantiles of the sliding 1 s latency window per procedure and channel.",
        ("procedure_id", "channel", "percentile"),  # "quantile" is reserved for summaries
    ),
    "telesafe_workspace_margin_meters": (
        "Smallest distance of each arm's tool tip to its allowed-box faces or a forbidden "
        "zone over the last batch (negative: outside).",
        ("procedure_id", "arm"),
    ),
    "telesafe_tool_speed_meters_per_second": (
        "Highest tool-tip speed in the last batch.",
        ("procedure_id", "arm"),
    ),
    "telesafe_warning_active": ("1 while a warning is active.", ("procedure_id", "rule")),
    "telesafe_safe_stop_latched": (
        "1 while a procedure is latched in safe-stop, labelled with the rule that tripped it.",
        ("procedure_id", "rule"),
    ),
    "telesafe_safe_stop_unacknowledged": (
        "1 while a procedure's safe-stop awaits acknowledgement.",
        ("procedure_id",),
    ),
    "telesafe_safe_stop_escalated": (
        "1 once a safe-stop went unacknowledged past the escalation count (page).",
        ("procedure_id",),
    ),
    "telesafe_monitor_heartbeat_withheld": (
        "1 while the monitor withholds this procedure's monitor_heartbeat because it has not "
        "heard its partition for longer than the silence stop limit (it is behind).",
        ("procedure_id",),
    ),
}


@dataclass(frozen=True)
class ProcedureView:
    """What the loop knew about its procedures at `taken_mono` (time.monotonic_ns)."""

    taken_mono: int = 0
    procedures: Mapping[str, ProcedureSnapshot] = field(default_factory=dict)
    withheld: frozenset[str] = frozenset()


class ProcedureCollector(Collector):
    """A scrape asks the loop thread for a fresh view (it answers within one turn, a few
    ms); if the loop does not answer within `FRESH_WAIT_S`, the scrape uses the newest view
    it has, ages grown by the time since (a stalled loop must not look healthy)."""

    FRESH_WAIT_S = 0.1

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._view = ProcedureView()
        self._wanted = threading.Event()
        self._fresh = threading.Event()
        if registry is not None:
            registry.register(self)

    def publish(self, view: ProcedureView) -> None:
        """Called by the loop thread; a reference swap, so a scrape sees one whole view."""
        self._view = view
        self._wanted.clear()
        self._fresh.set()

    @property
    def wanted(self) -> bool:
        """The loop thread checks this every turn: a scrape is waiting for a view."""
        return self._wanted.is_set()

    @property
    def view(self) -> ProcedureView:
        return self._view

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no collect() at registration time

    def collect(self) -> Iterator[Metric]:
        self._fresh.clear()
        self._wanted.set()
        self._fresh.wait(self.FRESH_WAIT_S)
        v = self._view
        fam = {
            name: GaugeMetricFamily(name, help_, labels=list(labels))
            for name, (help_, labels) in SERIES.items()
        }
        fam["telesafe_procedures_active"].add_metric([], len(v.procedures))
        # Ages grow between views: add the time since the view was taken.
        since_s = max(0.0, (time.monotonic_ns() - v.taken_mono) / 1e9) if v.taken_mono else 0.0
        for pid, p in v.procedures.items():
            for state in PROCEDURE_STATES:
                fam["telesafe_procedure_state"].add_metric(
                    [pid, state], 1.0 if p.state == state else 0.0
                )
            if p.heartbeat_stop_limit_s is not None:
                fam["telesafe_heartbeat_stop_limit_seconds"].add_metric(
                    [pid], p.heartbeat_stop_limit_s
                )
            fam["telesafe_monitor_heartbeat_withheld"].add_metric(
                [pid], 1.0 if pid in v.withheld else 0.0
            )
            for site, s in p.sites.items():
                if s.heartbeat_age_s is not None:
                    fam["telesafe_heartbeat_age_seconds"].add_metric(
                        [pid, site], s.heartbeat_age_s + since_s
                    )
                if s.jitter_ms is not None:
                    fam["telesafe_link_jitter_seconds"].add_metric([pid, site], s.jitter_ms / 1e3)
                if s.loss_ratio is not None:
                    fam["telesafe_link_loss_ratio"].add_metric([pid, site], s.loss_ratio)
            for ch, w in p.channels.items():
                for q, val in w.by_quantile().items():
                    if val is not None:
                        fam["telesafe_latency_window_seconds"].add_metric([pid, ch, q], val / 1e3)
            for arm, a in p.arms.items():
                if a.margin_mm is not None and a.margin_mm != float("inf"):
                    fam["telesafe_workspace_margin_meters"].add_metric(
                        [pid, arm], a.margin_mm / 1e3
                    )
                if a.speed_mm_s is not None:
                    fam["telesafe_tool_speed_meters_per_second"].add_metric(
                        [pid, arm], a.speed_mm_s / 1e3
                    )
            for rule in sorted({w.split(":", 1)[0] for w in p.warnings}):
                fam["telesafe_warning_active"].add_metric([pid, rule], 1.0)
            latch = p.latch
            unacked = escalated = 0.0
            if latch is not None:
                fam["telesafe_safe_stop_latched"].add_metric([pid, latch.rule], 1.0)
                unacked = 1.0 if latch.ack is None else 0.0
                escalated = 1.0 if latch.escalated else 0.0
            fam["telesafe_safe_stop_unacknowledged"].add_metric([pid], unacked)
            fam["telesafe_safe_stop_escalated"].add_metric([pid], escalated)
        yield from fam.values()
