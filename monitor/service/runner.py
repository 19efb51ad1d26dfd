"""The monitor service: wires Kafka, the engine, metrics, the audit sink and HTTP together.

Threads and what they own:
- ingest (`Ingest`): the KafkaConsumer; decodes and dead-letters; enqueues batches.
- engine (`_engine_loop`, this module): the `Engine`; runs timers at their deadlines, hands
  commands to the producer, emits monitor heartbeats every 20 ms, refreshes gauges.
- the producer's own IO thread (kafka-python) delivers what we send.
- the audit writer (ledger) and the HTTP server run beside, never in the safety path.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from monitor import __version__
from monitor.engine.clock import MS, Clock, Instant, SystemClock
from monitor.engine.decisions import Decision, Event, SendCommand
from monitor.engine.engine import Engine, EngineConfig
from monitor.icd.models import Note, RearmRequest, SafeStop
from monitor.kafka.settings import KafkaSettings
from monitor.metrics import PROCEDURE_STATES, MonitorMetrics
from monitor.policy.loader import PackRegistry
from monitor.security.signing import Keyring
from monitor.service.audit_sink import CHECKPOINT_EVENTS, AuditSink, EntryFactory, encode_entry
from monitor.service.http import MonitorHTTP
from monitor.service.inbound import Batch, Deaf, Rejected, Release, Restore
from monitor.service.ingest import DEAF_AFTER_NS, Ingest, Recorder
from monitor.service.publisher import Publisher, Signer

log = logging.getLogger("telesafe.monitor")

# After these the compacted latch-state topic gets the procedure's newest latch (or a
# tombstone), so whoever owns the procedure next keeps it latched.
_LATCH_EVENTS = frozenset(
    {
        "safe_stop_issued",
        "safe_stop_acknowledged",
        "safe_stop_escalated",
        "rearm_accepted",
        "procedure_closed",
        "latch_restored",
    }
)
_LOUD = frozenset(
    {
        "safe_stop_issued",
        "safe_stop_acknowledged",
        "safe_stop_escalated",
        "rearm_accepted",
        "rearm_rejected",
        "procedure_started",
        "procedure_ended",
        "procedure_opened",
        "warning_raised",
        "warning_cleared",
        "policy_unknown",
        "operator_note",
    }
)


@dataclass
class MonitorOptions:
    monitor_id: str = "telesafe-1"
    group_id: str = "telesafe-monitor"
    group_instance_id: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 9108
    heartbeat_interval_ms: float = 20.0
    operators: frozenset[str] | None = None
    startup_lookback_s: float = 10.0
    summary_interval_ms: float = 1000.0
    gauge_interval_s: float = 0.25
    extra: dict[str, Any] = field(default_factory=dict)


class MonitorService:
    def __init__(
        self,
        settings: KafkaSettings,
        packs: PackRegistry,
        options: MonitorOptions,
        audit: AuditSink,
        clock: Clock | None = None,
        metrics: MonitorMetrics | None = None,
        signer: Signer | None = None,
        keyring: Keyring | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.options = options
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = metrics or MonitorMetrics()
        self.packs = packs
        self.engine = Engine(
            packs,
            EngineConfig(
                monitor_id=options.monitor_id,
                operators=options.operators,
                summary_interval_ms=options.summary_interval_ms,
            ),
        )
        self.audit = audit
        self.entries = EntryFactory(options.monitor_id, __version__)
        self.publisher = Publisher(
            settings, self.metrics, f"{options.monitor_id}-producer", signer=signer
        )
        self.inbox: queue.SimpleQueue[Batch] = queue.SimpleQueue()
        self.ingest = Ingest(
            settings,
            options.group_id,
            f"{options.monitor_id}-consumer",
            self.inbox,
            self.publisher,
            self.metrics,
            self.clock,
            options.startup_lookback_s,
            keyring=keyring,
            recorder=recorder,
            group_instance_id=options.group_instance_id,
        )
        self.http = MonitorHTTP(
            options.http_host,
            options.http_port,
            self.metrics.registry,
            self._health,
            self._ready,
            self._status,
        )
        self._stop = threading.Event()
        self._engine_thread = threading.Thread(
            target=self._engine_loop, name="telesafe-engine", daemon=True
        )
        self._hb_seq: dict[str, int] = {}
        self._site_counts: dict[tuple[str, str, str], int] = {}
        self._deaf_limit_ns = int(packs.default.pack.heartbeat.stop_silence_ms * MS)
        self._known: set[str] = set()
        self._status_cache: dict[str, Any] = {}
        self.last_loop_mono = time.monotonic()
        self.engine_error: BaseException | None = None
        self.metrics.info.info({"monitor_id": options.monitor_id, "version": __version__})

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        now = self.clock.now()
        self.metrics.up_since.set(time.time())
        ledger = getattr(self.audit, "ledger", None)
        if ledger is not None:
            self._reconcile(ledger)
        self.audit.submit(
            self.entries.monitor_event(
                "monitor_started",
                now.utc_ns,
                now.mono_ns,
                operators="any (no allow-list configured)"
                if self.options.operators is None
                else sorted(self.options.operators),
            ),
            checkpoint=True,
        )
        for lp in self.packs.all():
            self.audit.submit(
                self.entries.monitor_event(
                    "policy_loaded",
                    now.utc_ns,
                    now.mono_ns,
                    pack=lp.name,
                    version=lp.version,
                    hash=lp.sha256,
                    source=lp.source,
                )
            )
        self.http.start()
        self.ingest.start()
        self._engine_thread.start()
        log.info(
            "monitor %s started: http://%s:%d/metrics, packs %s",
            self.options.monitor_id,
            self.options.http_host,
            self.http.port,
            ", ".join(f"{p.name}@{p.version}" for p in self.packs.all()),
        )

    def _reconcile(self, ledger: Any) -> None:
        from monitor.service.reconcile import ledger_command_ids, unrecorded_commands

        try:
            missing = unrecorded_commands(
                self.settings, self.options.monitor_id, ledger_command_ids(ledger)
            )
        except Exception as exc:  # never keep the monitor from starting over bookkeeping
            log.error("could not reconcile the ledger with the commands topic: %s", exc)
            return
        for cmd in missing:
            now = self.clock.now()
            log.warning(
                "ledger lacked safe-stop %s for %s (sent before a crash?): recording it",
                cmd["command_id"],
                cmd.get("procedure_id"),
            )
            self.audit.submit(
                self.entries.from_event(
                    Event(
                        "command_reconciled",
                        cmd.get("procedure_id"),
                        now.mono_ns,
                        now.utc_ns,
                        {
                            "command_id": cmd["command_id"],
                            "command": cmd,
                            "reason": "on the commands topic at start-up, not in the ledger",
                        },
                    )
                ),
                checkpoint=True,
            )

    def stop(self) -> None:
        self._stop.set()
        self.ingest.stop()
        self._engine_thread.join(timeout=5)
        self.ingest.join(timeout=5)
        now = self.clock.now()
        self.audit.submit(
            self.entries.monitor_event("monitor_stopped", now.utc_ns, now.mono_ns), checkpoint=True
        )
        self.audit.stop()
        self.publisher.close()
        self.http.stop()

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        return self.ingest.assigned_event.wait(timeout_s)

    # -- the engine thread -----------------------------------------------------------------

    def _engine_loop(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.engine_error = exc
            log.exception("engine thread stopped: the monitor is no longer supervising")

    def _loop(self) -> None:
        eng = self.engine
        hb_ns = int(self.options.heartbeat_interval_ms * MS)
        gauge_ns = int(self.options.gauge_interval_s * 1e9)
        now = self.clock.now()
        next_hb = now.mono_ns + hb_ns
        next_gauges = now.mono_ns
        while not self._stop.is_set():
            nd = eng.next_deadline()
            wake = min(next_hb, next_gauges) if nd is None else min(nd, next_hb, next_gauges)
            timeout = (wake - self.clock.now().mono_ns) / 1e9
            batches: list[Batch] = []
            # A floor on the wait keeps a loop blocked on `pending` from spinning.
            with contextlib.suppress(queue.Empty):
                batches.append(self.inbox.get(timeout=max(0.0002, timeout)))
            now = self.clock.now()
            pending = self.ingest.pending_since
            while True:
                try:
                    batches.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            last_received = 0
            for b in batches:
                # Our own deafness is accounted before any timer runs past it.
                for item in b.items:
                    if isinstance(item, Deaf):
                        self._deaf(item, b.received)
                # Deadlines that passed before this batch arrived fire first, as in replay.
                self._handle(eng.tick(b.received), b.received)
                self._process(b)
                last_received = b.received.mono_ns
            # Never run timers past a batch the ingest thread is still decoding.
            limit = now.mono_ns if pending is None else min(now.mono_ns, pending)
            limit = max(limit, last_received)
            # While the consumer is deaf (a poll overran), freeze the timers where it went
            # deaf: its silence is ours, not the sites'. Deaf items later exclude it.
            polling = self.ingest.polling_since
            deaf_ns = 0 if polling is None else now.mono_ns - polling
            if deaf_ns > DEAF_AFTER_NS:
                limit = min(limit, polling + DEAF_AFTER_NS)  # type: ignore[operator]
            due = eng.next_deadline()
            if due is not None and due <= limit:
                t = now.at_mono(limit)
                self.metrics.engine_loop_lag.set(max(0, limit - due) / 1e9)
                self._handle(eng.tick(t), t)
            now = self.clock.now()
            if now.mono_ns >= next_hb:
                # A monitor deaf for longer than a site may be silent stops vouching for the
                # procedures: the robot's own dead-man timer then holds or stops it.
                if deaf_ns <= self._deaf_limit_ns:
                    self._send_heartbeats(now)
                next_hb = max(next_hb + hb_ns, now.mono_ns + hb_ns // 2)
            if now.mono_ns >= next_gauges:
                self._refresh_gauges(now)
                next_gauges = now.mono_ns + gauge_ns
            self.last_loop_mono = time.monotonic()

    def _process(self, batch: Batch) -> None:
        eng = self.engine
        now = batch.received
        for item in batch.items:
            if isinstance(item, Rejected):
                eng.on_rejected(item.procedure_id, item.site)
            elif isinstance(item, Restore):
                self._handle(eng.restore(item.state, now), now)
            elif isinstance(item, Deaf):
                continue  # applied by _deaf before this batch's timers ran
            elif isinstance(item, Release):
                self._handle(eng.release(item.procedure_id, now), now)
            elif isinstance(item, RearmRequest | Note):
                self.metrics.operator_requests.labels(item.type, "received").inc()
                self._handle(eng.on_operator(item, now), now)
            else:
                self._handle(eng.on_telemetry(item, now), now)
        if batch.newest_broker_ms:
            self.metrics.consumer_lag_seconds.set(
                max(0.0, time.time() - batch.newest_broker_ms / 1e3)
            )

    def _deaf(self, item: Deaf, at: Instant) -> None:
        log.warning(
            "monitor was deaf for %.0f ms; that time is not counted as site silence",
            (item.end_ns - item.start_ns) / 1e6,
        )
        self._handle(self.engine.exclude_deaf(item.start_ns, item.end_ns, at), at)

    def _handle(self, decisions: list[Decision], at: Instant) -> None:
        # Commands first: a safe-stop is on its way before anything is recorded about it.
        for d in decisions:
            if isinstance(d, SendCommand):
                self._send(d)
        for d in decisions:
            if isinstance(d, Event):
                self._on_event(d)

    def _send(self, d: SendCommand) -> None:
        cmd = d.command
        self.publisher.command(cmd)
        if not isinstance(cmd, SafeStop):
            log.info("REARM sent for %s (command %s)", cmd.procedure_id, cmd.command_id)
            return
        if d.resend == 0:
            handed = self.clock.now().mono_ns
            kind = (
                "deadline"
                if cmd.policy.rule in ("heartbeat_silence", "first_heartbeat")
                else "record"
            )
            self.metrics.detection_latency.labels(kind).observe(
                max(0, handed - d.breach_mono_ns) / 1e9
            )
            self.metrics.safe_stops.labels(cmd.policy.rule).inc()
            log.warning(
                "SAFE-STOP %s for %s: %s [%s %s, rule %s]",
                cmd.command_id,
                cmd.procedure_id,
                cmd.reason,
                cmd.policy.pack,
                cmd.policy.version,
                cmd.policy.rule,
            )
        else:
            self.metrics.safe_stop_resends.inc()

    def _on_event(self, ev: Event) -> None:
        m, k, pid, data = self.metrics, ev.kind, ev.procedure_id, ev.data
        if k == "procedure_ended" and pid is not None:  # final counts, before it is forgotten
            self._count_site_records(pid, data.get("sites", {}))
        if k == "warning_raised":
            m.warnings.labels(data["rule"]).inc()
        elif k == "safe_stop_acknowledged":
            m.ack_delay.observe(data["delay_ms"] / 1e3)
        elif k == "rearm_accepted":
            m.operator_requests.labels("rearm_request", "accepted").inc()
        elif k == "rearm_rejected":
            m.operator_requests.labels("rearm_request", "rejected").inc()
        if k in _LATCH_EVENTS and pid is not None:
            proc = self.engine.procedures.get(pid)
            state = proc.latch_state() if proc is not None else None
            self.publisher.latch_state(pid, encode_entry(state) if state else None)
        if k in _LOUD:
            detail = data.get("reason") or data.get("rule") or data.get("after") or ""
            if k == "rearm_rejected":
                detail = "; ".join(data.get("rejected_because", []))
            log.info("%s %s %s", k.upper(), pid or "", detail)
        self.audit.submit(self.entries.from_event(ev), checkpoint=k in CHECKPOINT_EVENTS)

    def _count_site_records(self, pid: str, sites: dict[str, dict[str, Any]]) -> None:
        """Carry the engine's per-procedure duplicate/lost/stale counts into the counters."""
        m = self.metrics
        for site, s in sites.items():
            for kind, counter in (
                ("duplicates", m.duplicates),
                ("lost", m.lost),
                ("stale", m.stale),
            ):
                now_count = int(s.get(kind) or 0)
                key = (pid, site, kind)
                delta = now_count - self._site_counts.get(key, 0)
                if delta > 0:
                    counter.labels(site).inc(delta)
                    self._site_counts[key] = now_count

    def _send_heartbeats(self, now: Instant) -> None:
        beats = []
        seqs = self._hb_seq
        for pid, status in self.engine.statuses():
            seq = seqs.get(pid, -1) + 1
            seqs[pid] = seq
            beats.append((pid, seq, status))
        if beats:
            self.publisher.monitor_heartbeats(beats, now.utc_ns, self.options.monitor_id)

    def _refresh_gauges(self, now: Instant) -> None:
        m = self.metrics
        snap = self.engine.snapshot(now)
        m.procedures.set(len(snap))
        gone = self._known - snap.keys()
        for pid in gone:
            m.forget_procedure(pid)
            self._hb_seq.pop(pid, None)
        if gone:
            self._site_counts = {k: v for k, v in self._site_counts.items() if k[0] not in gone}
        self._known = set(snap)
        # Label children that should exist now; stale ones are removed in one pass below
        # (not one scan per procedure: this runs on the engine thread).
        want_warn: set[tuple[str, str]] = set()
        want_latch: set[tuple[str, str]] = set()
        child = m.child
        for pid, p in snap.items():
            self._count_site_records(pid, p["sites"])
            for state in PROCEDURE_STATES:
                child(m.procedure_state, pid, state).set(1 if p["state"] == state else 0)
            lp = self.packs.get(p["pack"])  # SiteHeartbeatLost follows the procedure's pack
            if lp is not None:
                child(m.heartbeat_stop_limit, pid).set(lp.pack.heartbeat.stop_silence_ms / 1e3)
            for site, s in p["sites"].items():
                if s["heartbeat_age_s"] is not None:
                    child(m.heartbeat_age, pid, site).set(s["heartbeat_age_s"])
                if s["jitter_ms"] is not None:
                    child(m.link_jitter, pid, site).set(s["jitter_ms"] / 1e3)
                if s["loss_ratio"] is not None:
                    child(m.link_loss, pid, site).set(s["loss_ratio"])
            for ch, qs in p["channels"].items():
                for q, v in qs.items():
                    if v is not None:
                        child(m.latency_quantile, pid, ch, q).set(v / 1e3)
            for arm, a in p["arms"].items():
                if a["margin_mm"] is not None and a["margin_mm"] != float("inf"):
                    child(m.workspace_margin, pid, arm).set(a["margin_mm"] / 1e3)
                if a["speed_mm_s"] is not None:
                    child(m.tool_speed, pid, arm).set(a["speed_mm_s"] / 1e3)
            for w in p["warnings"]:
                rule = w.split(":", 1)[0]
                want_warn.add((pid, rule))
                child(m.warning_active, pid, rule).set(1)
            latch = p["latch"]
            if latch is None:
                child(m.safe_stop_unacked, pid).set(0)
                child(m.safe_stop_escalated, pid).set(0)
            else:
                want_latch.add((pid, latch["rule"]))
                child(m.safe_stop_latched, pid, latch["rule"]).set(1)
                child(m.safe_stop_unacked, pid).set(1 if latch["ack"] is None else 0)
                child(m.safe_stop_escalated, pid).set(1 if latch["escalated"] else 0)
        for gauge, want in ((m.warning_active, want_warn), (m.safe_stop_latched, want_latch)):
            for labels in list(gauge._metrics):
                if labels not in want:
                    m.remove(gauge, *labels)
        stats = getattr(self.audit, "stats", None)
        if stats is not None:
            st = stats()
            if st.get("last_checkpoint_unix"):
                m.ledger_checkpoint_time.set(st["last_checkpoint_unix"])
            m.ledger_pending.set(st.get("queue_depth", 0))
        self._status_cache = {
            "monitor_id": self.options.monitor_id,
            "procedures": snap,
            "assigned_partitions": len(self.ingest.assigned),
        }

    # -- HTTP views ------------------------------------------------------------------------

    def _health(self) -> tuple[bool, dict[str, Any]]:
        loop_age = time.monotonic() - self.last_loop_mono
        poll_age = time.monotonic() - self.ingest.last_poll_mono
        problems = []
        if self.engine_error is not None or not self._engine_thread.is_alive():
            problems.append(f"engine thread stopped: {self.engine_error!r}")
        if self.ingest.error is not None or not self.ingest.is_alive():
            problems.append(f"ingest thread stopped: {self.ingest.error!r}")
        if loop_age > 1.0:
            problems.append(f"engine loop stalled for {loop_age:.1f} s")
        if poll_age > 5.0:
            problems.append(f"consumer has not polled for {poll_age:.1f} s")
        return not problems, {
            "problems": problems,
            "engine_loop_age_s": round(loop_age, 3),
            "poll_age_s": round(poll_age, 3),
        }

    def _ready(self) -> tuple[bool, dict[str, Any]]:
        # Ready = hearing something: an instance holding no partition supervises nothing.
        ok, detail = self._health()
        assigned = self.ingest.assigned_event.is_set() and bool(self.ingest.assigned)
        return ok and assigned, {**detail, "partitions_assigned": len(self.ingest.assigned)}

    def _status(self) -> dict[str, Any]:
        return self._status_cache
