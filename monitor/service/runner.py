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
4. every 20 ms a `monitor_heartbeat` for each procedure of each shard heard recently
   enough, then serve the producers' delivery reports;
5. every 250 ms: commit offsets whose audit is durable, publish the procedure view.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from monitor import __version__
from monitor.broker.topics import check_layout
from monitor.engine.clock import MS, Clock, Instant, SystemClock
from monitor.engine.decisions import Decision, Event, PublishLatch, SendCommand
from monitor.engine.engine import Engine, EngineConfig
from monitor.errors import EXIT_USAGE, ServiceLayerError
from monitor.events import EventKind
from monitor.icd.models import Latency
from monitor.icd.topics import Topics
from monitor.kafka import (
    Admin,
    Consumer,
    KafkaSettings,
    Producer,
    Record,
    TopicPartition,
    TransportError,
    open_admin,
    open_consumer,
    open_producer,
)
from monitor.kafka.profiles import GROUP_CONFIG
from monitor.metrics import MonitorMetrics, ProcedureView
from monitor.policy.loader import PackRegistry
from monitor.security.signing import Keyring
from monitor.service.audit_sink import CHECKPOINT_EVENTS, AuditSink, EntryFactory
from monitor.service.commits import AuditedOffsets, AuditPositions
from monitor.service.http import MonitorHTTP
from monitor.service.intake import Intake, Refused
from monitor.service.ownership import Ownership, Shard
from monitor.service.publisher import Publisher, Signer
from monitor.service.sensor import Sensor
from monitor.service.timekeeping import next_beat, poll_timeout_s, stamp, wake_at
from monitor.snapshot import ProcedureSnapshot

log = logging.getLogger("telesafe.monitor")

MAX_BATCH = 500  # records per poll: bounds how long timers wait behind one batch (~10 ms)
POLL_CAP_S = 0.1  # never block longer: the stop flag and health are checked this often
HOUSEKEEPING_NS = 250 * MS
STALL_S = 1.0  # /healthz fails when the loop has not turned for this long
# A loop that did not poll for this long (beyond what it asked to wait) was deaf: it then
# trusts the client's cached watermarks only once its fetchers have answered again.
STALL_NS = 100 * MS
TRUST_AFTER_STALL_NS = 100 * MS
# /readyz says "saturated" (503, with the reason) when the loop is this busy and behind.
SATURATED_BUSY = 0.9
SATURATED_LAG_S = 0.1
# A taken-over partition's backlog pauses while this instance's own partitions are behind
# by more than this, and resumes once they are within the second.
OWN_BEHIND_NS = 40 * MS
OWN_CAUGHT_UP_NS = 15 * MS

Recorder = Any  # Callable[[Instant, str, bytes | None, bytes | None], None]


class StartupError(ServiceLayerError):
    """The monitor cannot start as configured (one line, with the fix)."""

    exit_code = EXIT_USAGE


@dataclass
class Transport:
    """The Kafka clients of one monitor: its group consumer, an admin client and the
    commands, heartbeats and bookkeeping producers (in that order)."""

    consumer: Consumer
    admin: Admin
    producers: tuple[Producer, Producer, Producer]
    read_state: Callable[[list[int]], Iterable[Record]] | None = None

    @classmethod
    def open(cls, settings: KafkaSettings, options: MonitorOptions) -> Transport:
        cid = options.monitor_id
        return cls(
            open_consumer(
                settings,
                "monitor",
                f"{cid}-consumer",
                group_id=options.group_id,
                group_instance_id=options.group_instance_id,
            ),
            open_admin(settings),
            (
                open_producer(settings, "commands", f"{cid}-commands"),
                open_producer(settings, "heartbeats", f"{cid}-heartbeats"),
                open_producer(settings, "bookkeeping", f"{cid}-bookkeeping"),
            ),
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
        self.intake = Intake(self.topics, keyring)
        self.recorder = recorder
        self.consumer = t.consumer
        self.admin = t.admin
        self.ownership = Ownership(
            settings,
            lambda: Engine(packs, self.engine_config),
            self._handle,
            self.clock,
            options.startup_lookback_s,
            incremental=self.consumer.incremental,
            on_revoke=self._revoked,
            check_layout=self._check_layout,
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
        self._hb_seq: dict[str, int] = {}
        self._hb_ns = int(options.heartbeat_interval_ms * MS)
        self._next_hb = self.clock.now().mono_ns + self._hb_ns
        self._next_house = self.clock.now().mono_ns
        self._last_received = 0
        self._turn_start = self.clock.now().mono_ns
        self._busy_ns = 0
        self._busy_since = self._turn_start
        self.busy_ratio = 0.0
        self._withhold_ns = int(packs.default.pack.heartbeat.stop_silence_ms * MS)
        self._sites = {t: self.topics.site_of(t) for t in self.topics.all()}
        self._status_cache: dict[str, Any] = {}
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
        self._check_layout()
        now = self.clock.now()
        self.metrics.up_since.set(time.time())
        ledger = getattr(self.audit, "ledger", None)
        if ledger is not None:
            self._reconcile(ledger)
        self.audit.submit(
            self.entries.monitor_event(
                EventKind.MONITOR_STARTED,
                now.utc_ns,
                now.mono_ns,
                operators="any (no allow-list configured)"
                if self.options.operators is None
                else sorted(self.options.operators),
                kafka_client=self.settings.client,
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
        self._configure_group()
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

    def _configure_group(self) -> None:
        """Ask for a short group session, so a dead instance's partitions move within
        seconds (docs/architecture.md). Never fatal: the broker may forbid it (its minimum),
        the principal may lack ALTER_CONFIGS on the group, or the client runs classic groups."""
        if not self.consumer.incremental:
            return
        try:
            self.admin.alter_group_config(self.options.group_id, GROUP_CONFIG, 10.0)
        except TransportError as exc:
            log.warning(
                "could not set group %s to a %s ms session (%s): a dead instance's "
                "partitions move after the broker's default session timeout instead; see "
                "docs/deploy-kubernetes.md",
                self.options.group_id,
                GROUP_CONFIG["consumer.session.timeout.ms"],
                exc,
            )

    def _check_layout(self) -> None:
        from monitor.broker.runtime import BrokerError

        try:
            check_layout(self.admin, self.topics)
        except BrokerError as exc:
            raise StartupError(str(exc)) from None

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
                        EventKind.COMMAND_RECONCILED,
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
        self._thread.join(timeout=5)
        self._commit(final=True)
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

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ownership.shards:
                return True
            time.sleep(0.05)
        return False

    # -- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.error = exc
            log.critical("monitor loop stopped: %s; no longer supervising", exc, exc_info=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.step()

    def step(self) -> None:
        """One turn of the loop (tests drive it directly with a fake clock and transport)."""
        shards = self.ownership.shards
        wake = wake_at(
            (s.engine.next_deadline() for s in shards.values() if not s.time.behind),
            self._next_hb,
            self._next_house,
        )
        started = self.clock.now()
        timeout_s = poll_timeout_s(wake, started.mono_ns, POLL_CAP_S)
        records = self.consumer.poll(timeout_s, MAX_BATCH)
        received = self.clock.now()
        # Busy = everything but the wait inside poll (bounded by what it was asked to wait).
        self._busy_ns += max(0, received.mono_ns - self._turn_start) - min(
            received.mono_ns - started.mono_ns, int(timeout_s * 1e9)
        )
        self._turn_start = received.mono_ns
        self._check_stall(started, timeout_s, received)
        own = self.ownership
        if own.to_pause:  # partitions just taken over wait for their latches
            self.consumer.pause(own.to_pause)
            own.to_pause = []
        for shard in own.finish_restores(received):
            self.consumer.resume(list(shard.time.heard))
            waiting, shard.waiting = shard.waiting, []
            for at, r in waiting:
                self._ingest([r], at)
        if records:
            self._ingest(records, received)
        self._settle(received)
        self._yield_to_own(received)
        self.ownership.heard_mono = received.mono_ns
        self._run_timers(received)
        now = self.clock.now()
        if now.mono_ns >= self._next_hb:
            self._heartbeats(now)
            self._next_hb = next_beat(self._next_hb, now.mono_ns, self._hb_ns)
        self.publisher.service()
        if now.mono_ns >= self._next_house or self.metrics.per_procedure.wanted:
            self._housekeeping(now)
            self._next_house = now.mono_ns + HOUSEKEEPING_NS
        self.last_loop_mono = time.monotonic()

    def _ingest(self, records: list[Record], received: Instant) -> None:
        shards = self.ownership.shards
        stamped: list[tuple[int, int, Record, Shard]] = []
        for i, r in enumerate(records):
            shard = shards.get(r.partition)
            if shard is None:
                continue  # a partition released inside this very poll
            if shard.restoring:
                shard.waiting.append((received, r))
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
                    self._handle(eng.tick(t), t, received=received)
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
                self._security_event(item, at, received)
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
            self._handle(decisions, at, source=source, received=received, r=r)

    def _check_stall(self, started: Instant, timeout_s: float, received: Instant) -> None:
        """The loop could not hear for longer than a poll may take (the process was stopped,
        swapped out, or a callback blocked): from the previous poll on, every partition is
        heard only as far as its records say, until the client's fetchers answered again."""
        previous = self._last_received
        self._last_received = received.mono_ns
        overrun = received.mono_ns - started.mono_ns - int(timeout_s * 1e9)
        gap = started.mono_ns - previous
        deaf_ns = max(overrun, 0) + max(gap, 0)
        if deaf_ns <= STALL_NS or previous == 0:
            return
        until = received.mono_ns + TRUST_AFTER_STALL_NS
        for shard in self.ownership.shards.values():
            shard.time.stall(previous, until)
        log.warning(
            "monitor could not hear for %.0f ms; that time is not counted as site silence",
            deaf_ns / 1e6,
        )
        ev = Event(
            EventKind.MONITOR_DEAF,
            None,
            received.mono_ns,
            received.utc_ns,
            {"duration_ms": round(deaf_ns / 1e6, 3), "shards": len(self.ownership.shards)},
        )
        self.audit.submit(self.entries.from_event(ev))

    def _yield_to_own(self, received: Instant) -> None:
        """Partitions taken over come with a backlog (everything since the dead owner's
        last commit). librdkafka hands records over in one queue, so that backlog would
        delay the records of the procedures this instance already supervised: while any of
        those is behind, the taken-over partitions are paused (they are late already, and
        withheld from monitor_heartbeat until caught up)."""
        shards = self.ownership.shards.values()
        if not any(s.catching_up for s in shards):
            return
        now = received.mono_ns
        own_lag = max(
            (now - s.time.horizon(now) for s in shards if not s.catching_up and not s.restoring),
            default=0,
        )
        for s in shards:
            if not s.catching_up:
                continue
            if s.paused and own_lag <= OWN_CAUGHT_UP_NS:
                self.consumer.resume(list(s.time.heard))
                s.paused = False
            elif not s.paused and own_lag > OWN_BEHIND_NS:
                self.consumer.pause(list(s.time.heard))
                s.paused = True
            if not s.paused and not s.time.behind:
                s.catching_up = False  # caught up: an ordinary shard from now on

    def _security_event(self, refused: Refused, at: Instant, received: Instant) -> None:
        """ICD §5.1 "either outcome is audited": an operator request refused before it
        reaches the engine (unsigned, forged, malformed) is a security event on the audit
        trail, with what can be trusted about it, counted and paged (ForgedOperatorRequest).
        Refused telemetry goes to the dead-letter topic only: a flood must not flood the
        ledger (it is counted per site and reason instead)."""
        r = refused.record
        if self.positions.already_audited(r.topic, r.partition, r.offset, 0):
            return
        data = refused.security_event_data()
        self.sensor.security_rejection(str(data["reason_class"]), refused.source, data)
        ev = Event(
            EventKind.OPERATOR_REQUEST_REFUSED, refused.procedure_id, at.mono_ns, at.utc_ns, data
        )
        entry = self.entries.from_event(ev, refused.source, 0, (received.mono_ns - at.mono_ns) / MS)
        self.audit.submit(entry, checkpoint=True)

    def _settle(self, received: Instant) -> None:
        """Which topic-partitions are caught up, from the high watermarks of the client's
        last fetches (no network call; ~1 µs each): a record the broker holds that was
        not processed means the monitor has not heard past it."""
        watermarks = self.consumer.watermarks
        for shard in self.ownership.shards.values():
            t = shard.time
            for tp in list(t.heard):
                marks = watermarks(tp, 0.0, cached=True)
                t.settle(tp, None if marks is None else marks[1], received.mono_ns)

    def _run_timers(self, received: Instant) -> None:
        for shard in list(self.ownership.shards.values()):
            due = shard.engine.next_deadline()
            if due is None:
                continue
            limit = shard.time.horizon(received.mono_ns)
            if due <= limit:
                t = received.at_mono(limit)
                self.metrics.engine_loop_lag.set(max(0, received.mono_ns - due) / 1e9)
                self._handle(shard.engine.tick(t), t, received=received)

    def _heartbeats(self, now: Instant) -> None:
        """ICD §4.2 for each procedure of each shard heard recently enough. A shard not
        heard for longer than a site may be silent gets none: the monitor does not vouch
        for procedures it cannot hear (the robot's own dead-man timer holds or stops)."""
        beats = []
        seqs = self._hb_seq
        for shard in self.ownership.shards.values():
            if now.mono_ns - shard.time.horizon(now.mono_ns) > self._withhold_ns:
                continue
            for pid, status in shard.engine.statuses():
                seq = seqs.get(pid, -1) + 1
                seqs[pid] = seq
                beats.append((pid, seq, status))
        if beats:
            self.publisher.monitor_heartbeats(beats, now.utc_ns, self.options.monitor_id)

    # -- decisions -----------------------------------------------------------------------

    def _handle(
        self,
        decisions: list[Decision],
        at: Instant,
        source: str | None = None,
        received: Instant | None = None,
        r: Record | None = None,
    ) -> None:
        # Commands first: a safe-stop is on its way before anything is recorded about it.
        for d in decisions:
            if isinstance(d, SendCommand):
                self.publisher.command(d.command)
                self.sensor.command_sent(d, self.clock.now().mono_ns)
        n = 0
        for d in decisions:
            if isinstance(d, Event):
                self.sensor.event(d)
                late = 0.0 if received is None else (received.mono_ns - d.mono_ns) / MS
                if source is not None and r is not None:
                    if self.positions.already_audited(r.topic, r.partition, r.offset, n):
                        n += 1
                        continue  # in the ledger before a restart: not audited twice
                    entry = self.entries.from_event(d, source, n, late)
                    n += 1
                else:
                    entry = self.entries.from_event(d, late_ms=late)
                self.audit.submit(entry, checkpoint=d.kind in CHECKPOINT_EVENTS)
            elif isinstance(d, PublishLatch):
                self.publisher.latch_state(
                    d.procedure_id, None if d.state is None else d.state.to_bytes()
                )

    # -- offsets, views, health --------------------------------------------------------------

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._commit()
        self.offsets.forget(partitions)

    def _commit(self, final: bool = False) -> None:
        ready = self.offsets.committable(self.audit.durable())
        if ready:
            self.consumer.commit(ready)

    def _housekeeping(self, now: Instant) -> None:
        offsets: dict[TopicPartition, int] = {}
        procedures: dict[str, ProcedureSnapshot] = {}
        withheld: set[str] = set()
        lag_by_number: dict[str, float] = {}
        for shard in self.ownership.shards.values():
            offsets.update(shard.time.next_offset)
            snap = shard.engine.snapshot(now)
            procedures.update(snap)
            lag = (now.mono_ns - shard.time.horizon(now.mono_ns)) / 1e9
            lag_by_number[str(shard.number)] = lag
            if lag * 1e9 > self._withhold_ns:
                withheld |= set(snap)
        self.offsets.processed(self.audit.submitted(), offsets)
        self._commit()
        gone = self._known - procedures.keys()
        for pid in gone:
            self._hb_seq.pop(pid, None)
        self.sensor.forget(gone)
        self._known = set(procedures)
        for pid, p in procedures.items():
            self.sensor.site_counts(pid, p.sites)
        self.metrics.per_procedure.publish(
            ProcedureView(time.monotonic_ns(), procedures, frozenset(withheld))
        )
        span = now.mono_ns - self._busy_since
        if span > 0:  # smoothed over ~1 s (four housekeeping periods)
            sample = min(1.0, max(0.0, self._busy_ns / span))
            self.busy_ratio += 0.25 * (sample - self.busy_ratio)
            self._busy_ns, self._busy_since = 0, now.mono_ns
        m = self.metrics
        m.busy_ratio.set(self.busy_ratio)
        for number, lag in lag_by_number.items():
            m.consumer_lag_seconds.labels(number).set(lag)
        for topic, behind in self._records_behind().items():
            m.consumer_lag.labels(topic).set(behind)
        m.assigned_partitions.set(len(self.consumer.assignment()))
        stats = self.audit.stats()
        if stats.get("last_checkpoint_unix"):
            m.ledger_checkpoint_time.set(stats["last_checkpoint_unix"])
        m.ledger_pending.set(stats.get("queue_depth", 0))
        self._status_cache = {
            "monitor_id": self.options.monitor_id,
            "procedures": {pid: p.to_json() for pid, p in procedures.items()},
            "assigned_partitions": sum(len(s.time.heard) for s in self.ownership.shards.values()),
            "lag_seconds": lag_by_number,
            "withheld": sorted(withheld),
        }

    def _records_behind(self) -> dict[str, int]:
        """Records the broker holds that the monitor has not processed, per topic (from the
        client's cached high watermarks: no network call)."""
        out: dict[str, int] = {}
        for shard in self.ownership.shards.values():
            for tp in shard.time.heard:
                marks = self.consumer.watermarks(tp, 0.0, cached=True)
                nxt = shard.time.next_offset.get(tp)
                behind = 0 if marks is None or nxt is None else max(0, marks[1] - nxt)
                out[tp.topic] = out.get(tp.topic, 0) + behind
        return out

    def _health(self) -> tuple[bool, dict[str, Any]]:
        loop_age = time.monotonic() - self.last_loop_mono
        problems = []
        if self.error is not None or not self._thread.is_alive():
            problems.append(f"monitor loop stopped: {self.error}")
        if loop_age > STALL_S:
            problems.append(f"monitor loop stalled for {loop_age:.1f} s")
        return not problems, {"problems": problems, "loop_age_s": round(loop_age, 3)}

    def _ready(self) -> tuple[bool, dict[str, Any]]:
        # Ready = hearing something: an instance holding no partition supervises nothing.
        ok, detail = self._health()
        held = sum(len(s.time.heard) for s in self.ownership.shards.values())
        if not held:
            detail["problems"].append(
                "no partition assigned yet (joining the consumer group)"
                if not self.ownership.assigned_once
                else "no partition assigned (more instances than partitions?)"
            )
        lags = dict(self._status_cache.get("lag_seconds", {}))
        worst = max(lags.values(), default=0.0)
        saturated = self.busy_ratio > SATURATED_BUSY and worst > SATURATED_LAG_S
        if saturated:
            behind = sorted(n for n, lag in lags.items() if lag > SATURATED_LAG_S)
            detail["problems"].append(
                f"saturated: loop busy {self.busy_ratio:.0%}, behind by up to "
                f"{worst * 1e3:.0f} ms on partition(s) {', '.join(behind)}; add instances"
            )
        return ok and held > 0 and not saturated, {
            **detail,
            "partitions_assigned": held,
            "busy_ratio": round(self.busy_ratio, 3),
            "lag_seconds": lags,
        }

    def _status(self) -> dict[str, Any]:
        return self._status_cache


__all__ = ["MonitorOptions", "MonitorService", "StartupError", "TransportError"]
