"""What happened, told to metrics and the log (faust's "sensor" pattern).

The loop calls one method per happening (a decision event, a command handed to the
producer, a batch of records, a rejected record); this module decides what is counted and
what is logged. Nothing here touches Kafka, the engine or the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from monitor import events
from monitor.engine.decisions import Event, SendCommand
from monitor.icd.models import Rearm, SafeStop
from monitor.metrics import MonitorMetrics
from monitor.snapshot import SiteSnapshot

log = logging.getLogger("telesafe.monitor")

# Logged at INFO: what an operator following the log must see (monitor.events: loud).
LOUD = events.LOUD
_TIMER_RULES = ("heartbeat_silence", "first_heartbeat")
_OPERATOR_OUTCOMES = events.REQUEST_OUTCOMES


class Sensor:
    def __init__(self, metrics: MonitorMetrics) -> None:
        self.m = metrics
        self._site_counts: dict[tuple[str, str, str], int] = {}

    # -- decisions -------------------------------------------------------------------------

    def command_sent(self, d: SendCommand, handed_mono: int) -> None:
        cmd = d.command
        if isinstance(cmd, Rearm):
            log.info("REARM sent for %s (command %s)", cmd.procedure_id, cmd.command_id)
            return
        assert isinstance(cmd, SafeStop)
        if d.resend:
            self.m.safe_stop_resends.inc()
            return
        kind = "deadline" if cmd.policy.rule in _TIMER_RULES else "record"
        self.m.detection_latency.labels(kind).observe(max(0, handed_mono - d.breach_mono_ns) / 1e9)
        self.m.safe_stops.labels(cmd.policy.rule).inc()
        log.warning(
            "SAFE-STOP %s for %s: %s [%s %s, rule %s]",
            cmd.command_id,
            cmd.procedure_id,
            cmd.reason,
            cmd.policy.pack,
            cmd.policy.version,
            cmd.policy.rule,
        )

    def event(self, ev: Event) -> None:
        k, pid, data = ev.kind, ev.procedure_id, ev.data
        m = self.m
        if k == "procedure_ended" and pid is not None:  # final counts, before it is forgotten
            self.site_counts(pid, data.get("sites", {}))
        if k == "warning_raised":
            m.warnings.labels(data["rule"]).inc()
        elif k == "safe_stop_acknowledged":
            m.ack_delay.observe(data["delay_ms"] / 1e3)
        elif k in _OPERATOR_OUTCOMES:
            m.operator_requests.labels(*_OPERATOR_OUTCOMES[k]).inc()
        if k in LOUD:
            if k.endswith("_rejected"):
                detail = "; ".join(data.get("rejected_because", []))
            elif k == "operator_note":
                detail = f"{data.get('operator_id')}: {data.get('text')}"
            else:
                detail = data.get("reason") or data.get("rule") or data.get("after") or ""
            log.info("%s %s %s", k.upper(), pid or "", detail)

    # -- input -----------------------------------------------------------------------------

    def records(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Valid telemetry per (site, type) of one batch (a labels().inc() per record costs
        ~4 µs; once per batch it is noise)."""
        for (site, rtype), n in counts.items():
            self.m.records.labels(site, rtype).inc(n)

    def latency_samples(self, channel: str, samples: list[float]) -> None:
        h = self.m.latency.labels(channel)
        for s in samples:
            h.observe(s / 1e3)

    def rejected(self, source_kind: str, code: str, source: str, reason: str) -> None:
        self.m.rejected.labels(source_kind, code).inc()
        log.warning("rejected record %s: %s", source, reason)

    def security_rejection(self, reason_class: str, source: str, data: Mapping[str, Any]) -> None:
        self.m.security_rejections.labels(reason_class).inc()
        claimed = data.get("claimed", {})
        log.error(
            "SECURITY: operator request refused at %s (%s): claims operator %r, %s for %s, key %r",
            source,
            data.get("reason"),
            claimed.get("operator_id"),
            claimed.get("type", "?"),
            claimed.get("procedure_id", "?"),
            data.get("key_id_presented"),
        )

    def site_counts(
        self, pid: str, sites: Mapping[str, SiteSnapshot] | Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Carry the engine's per-procedure duplicate/lost/stale counts into the counters
        (from a snapshot, or the final counts of a `procedure_ended` event)."""
        m = self.m
        for site, s in sites.items():
            for kind, counter in (
                ("duplicates", m.duplicates),
                ("lost", m.lost),
                ("stale", m.stale),
            ):
                n = s.get(kind) if isinstance(s, Mapping) else getattr(s, kind)
                now_count = int(n or 0)
                key = (pid, site, kind)
                delta = now_count - self._site_counts.get(key, 0)
                if delta > 0:
                    counter.labels(site).inc(delta)
                    self._site_counts[key] = now_count

    def loop_state(
        self,
        busy_ratio: float,
        lag_s: Mapping[str, float],
        behind: Mapping[str, int],
        assigned: int,
        audit_stats: Mapping[str, Any],
    ) -> None:
        """The loop's own gauges, every housekeeping turn."""
        m = self.m
        m.busy_ratio.set(busy_ratio)
        for number, lag in lag_s.items():
            m.consumer_lag_seconds.labels(number).set(lag)
        for topic, n in behind.items():
            m.consumer_lag.labels(topic).set(n)
        m.assigned_partitions.set(assigned)
        if audit_stats.get("last_checkpoint_unix"):
            m.ledger_checkpoint_time.set(audit_stats["last_checkpoint_unix"])
        m.ledger_pending.set(audit_stats.get("queue_depth", 0))

    def forget(self, gone: set[str]) -> None:
        if gone:
            self._site_counts = {k: v for k, v in self._site_counts.items() if k[0] not in gone}
