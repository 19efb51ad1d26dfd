"""The monitor service: one deadline-driven loop around the pure rules engine.

One Python thread does the safety work: it polls Kafka until the engines' next deadline
(librdkafka fetches and delivers in its own C threads), decodes, runs the engines and
hands commands to the producers. Beside it, and never in its way: the audit writer
(SQLite, fsync, signing) and the HTTP server (metrics are built at scrape time).

Per iteration:
1. poll until the earliest deadline (a rebalance runs `Ownership` callbacks inside);
2. stamp each record with the instant it counts as heard (its broker append time), sort
   the batch by it, and feed each record to its shard's engine after the shard's timers
   due before it;
3. settle which partitions are caught up, then run each shard's timers up to what it
   has heard (`timekeeping`), so the monitor's own lag or deafness never counts as a
   site's silence;
4. every 20 ms a `monitor_heartbeat` for the procedures of shards heard recently (`beats`);
5. every 250 ms: commit offsets whose audit is durable, publish the procedure view.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from monitor import __version__
from monitor.engine.clock import MS, Clock, Instant, SystemClock
from monitor.engine.decisions import Event
from monitor.engine.engine import Engine, EngineConfig
from monitor.events import EventKind
from monitor.icd.models import Latency
from monitor.icd.topics import Topics
from monitor.kafka import KafkaSettings, Record, TopicPartition, TransportError
from monitor.metrics import MonitorMetrics, ProcedureView
from monitor.policy.loader import PackRegistry
from monitor.security.signing import Keyring
from monitor.service import health, startup
from monitor.service.audit_sink import AuditSink, EntryFactory
from monitor.service.beats import Heartbeats
from monitor.service.commits import AuditedOffsets, AuditPositions
from monitor.service.dispatch import Dispatcher
from monitor.service.http import MonitorHTTP
from monitor.service.intake import Intake, Refused
from monitor.service.options import MonitorOptions, StartupError, Transport
from monitor.service.ownership import Ownership, Shard
from monitor.service.publisher import Publisher, Signer
from monitor.service.sensor import Sensor
from monitor.service.timekeeping import (
    STALL_NS,
    deaf_ns,
    poll_timeout_s,
    stamp,
    wake_at,
)
from monitor.service.view import LoopView, loop_view

log = logging.getLogger("telesafe.monitor")

MAX_BATCH = 500  # records per poll: bounds how long timers wait behind one batch (~25 ms)
# While a takeover is restored and caught up on, a turn takes this many records (~8 ms of
# work; 10-25 ms on a loaded 2-core host), so this instance's own procedures keep close to
# their 20 ms dead-man cadence (issue: failover without collateral; bench_failover.py).
CATCH_UP_BATCH = 150
POLL_CAP_S = 0.1  # never block longer: the stop flag and health are checked this often
HOUSEKEEPING_NS = 250 * MS

# Called with each record as heard (`telesafe run --record`, ICD §9).
Recorder = Callable[[Instant, str, bytes | None, bytes | None], None]


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
        transport: Transport | None = None,
    ) -> None:
        """`transport`: the Kafka clients to use (default: opened from `settings`)."""
        self.options = options
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.clock = clock or SystemClock()
        self.metrics = metrics or MonitorMetrics()
        self.sensor = Sensor(self.metrics)
        self.packs = packs
        self.engine_config = EngineConfig(
            monitor_id=options.monitor_id,
            operators=options.operators,
            summary_interval_ms=options.summary_interval_ms,
        )
        self.audit = audit
        self.entries = EntryFactory(options.monitor_id, __version__)
        self.positions = AuditPositions(audit.recent_entries())
        self.offsets = AuditedOffsets()
        t = transport or Transport.open(settings, options)
        self.publisher = Publisher(settings, self.metrics, signer=signer, producers=t.producers)
        self.dispatch = Dispatcher(
            self.publisher, self.sensor, audit, self.entries, self.positions, self.clock
        )
        self.intake = Intake(self.topics, keyring)
        self.recorder = recorder
        self.consumer = t.consumer
        self.admin = t.admin
        self.ownership = Ownership(
            settings,
            lambda: Engine(packs, self.engine_config),
            self.dispatch.handle,
            self.clock,
            options.startup_lookback_s,
            incremental=self.consumer.incremental,
            on_revoke=self._revoked,
            check_layout=lambda: startup.check_topics(self.admin, self.topics),
            read_state=t.read_state,
        )
        self.ownership.consumer = self.consumer
        self.http = MonitorHTTP(
            options.http_host,
            options.http_port,
            self.metrics.registry,
            self._health,
            self._ready,
            self._status,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telesafe-loop", daemon=True)
        hb_ns = int(options.heartbeat_interval_ms * MS)
        self._withhold_ns = int(packs.default.pack.heartbeat.stop_silence_ms * MS)
        self.heartbeats = Heartbeats(hb_ns, self._withhold_ns, self.clock.now().mono_ns + hb_ns)
        self._next_house = self.clock.now().mono_ns
        self._last_received = 0
        self.load = health.LoopLoad(self.clock.now().mono_ns)
        self._sites = {t: self.topics.site_of(t) for t in self.topics.all()}
        self._view: LoopView | None = None
        self._known: set[str] = set()
        self.last_loop_mono = time.monotonic()
        self.error: BaseException | None = None
        self.metrics.info.info(
            {"monitor_id": options.monitor_id, "version": __version__, "kafka": settings.client}
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, loop_thread: bool = True) -> None:
        """Check the topics, record the start, and run. Raises StartupError (one line).
        `loop_thread=False`: the caller turns the loop itself with `step()` (tests)."""
        startup.check_topics(self.admin, self.topics)
        self.metrics.up_since.set(time.time())
        ledger = getattr(self.audit, "ledger", None)
        if ledger is not None:
            startup.reconcile(
                ledger, self.settings, self.options.monitor_id, self.audit, self.entries, self.clock
            )
        startup.record_start(
            self.audit, self.entries, self.clock.now(), self.options, self.settings, self.packs
        )
        startup.configure_group(self.admin, self.options.group_id, self.consumer.incremental)
        self.http.start()
        # Co-partitioned; the first drives the group's assignment (monitor/kafka/confluent.py).
        self.consumer.subscribe(
            [self.topics.telemetry_robot, self.topics.telemetry_console, self.topics.operator],
            self.ownership,
        )
        if loop_thread:
            self._thread.start()
        log.info(
            "monitor %s started: http://%s:%d/metrics, packs %s",
            self.options.monitor_id,
            self.options.http_host,
            self.http.port,
            ", ".join(f"{p.name}@{p.version}" for p in self.packs.all()),
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._commit()
        self.consumer.close(5.0)
        now = self.clock.now()
        self.audit.submit(
            self.entries.monitor_event(EventKind.MONITOR_STOPPED, now.utc_ns, now.mono_ns),
            checkpoint=True,
        )
        self.audit.stop()
        self.publisher.close()
        self.admin.close()
        self.http.stop()

    # -- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.step()
        except BaseException as exc:
            self.error = exc
            log.critical("monitor loop stopped: %s; no longer supervising", exc, exc_info=True)

    def step(self) -> None:
        """One turn of the loop (tests drive it directly with a fake clock and transport)."""
        shards = self.ownership.shards
        wake = wake_at(self.ownership.timer_wakes(), self.heartbeats.due_ns, self._next_house)
        started = self.clock.now()
        timeout_s = poll_timeout_s(wake, started.mono_ns, POLL_CAP_S)
        own = self.ownership
        records = self.consumer.poll(timeout_s, CATCH_UP_BATCH if own.busy() else MAX_BATCH)
        received = self.clock.now()
        self.load.turned(started.mono_ns, received.mono_ns, timeout_s)
        self._check_stall(started, timeout_s, received)
        if own.to_pause:  # partitions just taken over wait for their latches
            self.consumer.pause(own.to_pause)
            own.to_pause = []
        own.finish_restores(received)
        batches, drained = own.drain(max(CATCH_UP_BATCH - len(records), CATCH_UP_BATCH // 4))
        for at, waited in batches:
            self._ingest(waited, at, waited=True)
        self.consumer.resume(drained)
        if records:
            self._ingest(records, received)
        own.settle(received.mono_ns, self.consumer.high_watermark)
        pause, resume = own.balance_backlog(received.mono_ns)
        self.consumer.pause(pause)
        self.consumer.resume(resume)
        self.ownership.heard_mono = received.mono_ns
        self._run_timers(received)
        now = self.clock.now()
        self.heartbeats.beat(shards.values(), now, self.publisher, self.options.monitor_id)
        self.publisher.service()
        if now.mono_ns >= self._next_house or self.metrics.per_procedure.wanted:
            self._housekeeping(now)
            self._next_house = now.mono_ns + HOUSEKEEPING_NS
        self.last_loop_mono = time.monotonic()

    def _ingest(self, records: list[Record], received: Instant, waited: bool = False) -> None:
        """`waited`: records that were kept while their shard was restored (`drain`)."""
        shards = self.ownership.shards
        stamped: list[tuple[int, int, Record, Shard]] = []
        for i, r in enumerate(records):
            shard = shards.get(r.partition)
            if shard is None:
                continue  # a partition released inside this very poll
            if (shard.restoring or shard.draining) and not waited:
                shard.waiting.append((received, r))  # behind those already waiting
                continue
            tp = TopicPartition(r.topic, r.partition)
            at = stamp(
                r.timestamp_ms if r.log_append_time else None, received, shard.time.floor(tp)
            )
            shard.time.processed(tp, r.offset, at.mono_ns)
            stamped.append((at.mono_ns, i, r, shard))
        # In the order they were heard: a deadline never fires before a record heard
        # earlier in the same batch (per topic-partition the order is unchanged).
        stamped.sort(key=lambda x: (x[0], x[1]))
        counts: dict[tuple[str, str], int] = {}
        for at_mono, _, r, shard in stamped:
            at = received.at_mono(at_mono)
            eng = shard.engine
            due = eng.next_deadline()
            if due is not None and due <= at_mono:
                limit = min(at_mono, shard.time.horizon(received.mono_ns))
                if due <= limit:
                    t = received.at_mono(limit)
                    self.dispatch.handle(eng.tick(t), t, received=received)
            self._record(r, shard, at, received, counts)
        self.sensor.records(counts)

    def _record(
        self,
        r: Record,
        shard: Shard,
        at: Instant,
        received: Instant,
        counts: dict[tuple[str, str], int],
    ) -> None:
        site = self._sites.get(r.topic)
        if self.recorder is not None:
            self.recorder(at, r.topic, r.key, r.value)
        item = self.intake.decode(r, site)
        source = f"{r.topic}:{r.partition}:{r.offset}"
        if isinstance(item, Refused):
            rej = item.rejection
            self.publisher.deadletter(r.key, r.value, rej.reason, source)
            self.sensor.rejected(site or "operator", rej.code, source, rej.reason)
            shard.engine.on_rejected(item.procedure_id, site)
            if site is None:
                self.dispatch.refused_request(item, at, received)
            return
        if site is not None:
            k = (site, item.type)
            counts[k] = counts.get(k, 0) + 1
            if isinstance(item, Latency):
                self.sensor.latency_samples(item.channel, item.samples_ms)
            decisions = shard.engine.on_telemetry(item, at)  # type: ignore[arg-type]
        else:
            self.metrics.operator_requests.labels(item.type, "received").inc()
            decisions = shard.engine.on_operator(item, at)  # type: ignore[arg-type]
        if decisions:
            self.dispatch.handle(decisions, at, source=source, received=received, r=r)

    def _check_stall(self, started: Instant, timeout_s: float, received: Instant) -> None:
        """The loop could not hear for longer than a poll may take: from the previous poll
        on, every partition is heard only as far as its records say, until a broker answer
        asked after the stall is covered (docs/safety/deafness.md)."""
        deaf = deaf_ns(self._last_received, started.mono_ns, received.mono_ns, timeout_s)
        previous, self._last_received = self._last_received, received.mono_ns
        if deaf <= STALL_NS:
            return
        self.ownership.stalled(previous)
        log.warning(
            "monitor could not hear for %.0f ms; that time is not counted as site silence",
            deaf / 1e6,
        )
        data = {"duration_ms": round(deaf / 1e6, 3), "shards": len(self.ownership.shards)}
        ev = Event(EventKind.MONITOR_DEAF, None, received.mono_ns, received.utc_ns, data)
        self.audit.submit(self.entries.from_event(ev))

    def _run_timers(self, received: Instant) -> None:
        for shard in list(self.ownership.shards.values()):
            due = shard.engine.next_deadline()
            if due is None:
                continue
            limit = shard.time.horizon(received.mono_ns)
            if due <= limit:
                t = received.at_mono(limit)
                self.metrics.engine_loop_lag.set(max(0, received.mono_ns - due) / 1e9)
                self.dispatch.handle(shard.engine.tick(t), t, received=received)

    # -- offsets, views, health --------------------------------------------------------------

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._commit()
        self.offsets.forget(partitions)

    def _commit(self) -> None:
        ready = self.offsets.committable(self.audit.durable())
        if ready:
            self.consumer.commit(ready)

    def _housekeeping(self, now: Instant) -> None:
        view = loop_view(
            self.ownership.shards.values(),
            now,
            self._withhold_ns,
            lambda tp: self.consumer.watermarks(tp, 0.0, cached=True),
        )
        self.offsets.processed(self.audit.submitted(), view.next_offsets)
        self._commit()
        gone = self._known - view.procedures.keys()
        self.heartbeats.forget(gone)
        self.sensor.forget(gone)
        self._known = set(view.procedures)
        for pid, p in view.procedures.items():
            self.sensor.site_counts(pid, p.sites)
        self.metrics.per_procedure.publish(
            ProcedureView(time.monotonic_ns(), view.procedures, view.withheld)
        )
        self.sensor.loop_state(
            self.load.sample(now.mono_ns),
            view.lag_s,
            view.behind,
            len(self.consumer.assignment()),
            self.audit.stats(),
        )
        self._view = view

    def _health(self) -> tuple[bool, dict[str, Any]]:
        alive = self.error is None and self._thread.is_alive()
        detail = health.health(self.error, alive, time.monotonic() - self.last_loop_mono)
        return not detail["problems"], detail

    def _ready(self) -> tuple[bool, dict[str, Any]]:
        # Ready = hearing something: an instance holding no partition supervises nothing.
        _, detail = self._health()
        view = self._view
        return health.readiness(
            detail,
            self.ownership.held(),
            self.ownership.assigned_once,
            self.load.ratio,
            {} if view is None else view.lag_s,
        )

    def _status(self) -> dict[str, Any]:
        return {} if self._view is None else self._view.status(self.options.monitor_id)


__all__ = ["MonitorOptions", "MonitorService", "StartupError", "TransportError"]
