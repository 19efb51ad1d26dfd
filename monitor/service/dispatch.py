"""Where the engine's decisions go: commands to their producer first, then the audit
entries and the metrics and log lines, and latch states to `telesafe.state`.

Safety before bookkeeping (docs/architecture.md): a safe-stop is handed to its producer
before anything is recorded about it, and nothing here waits on disk (the audit writer
is a queue)."""

from __future__ import annotations

from monitor.engine.clock import MS, Clock, Instant
from monitor.engine.decisions import Decision, Event, PublishLatch, SendCommand
from monitor.events import EventKind
from monitor.kafka import Record
from monitor.service.audit_sink import CHECKPOINT_EVENTS, AuditSink, EntryFactory
from monitor.service.commits import AuditPositions
from monitor.service.intake import Refused
from monitor.service.publisher import Publisher
from monitor.service.sensor import Sensor


class Dispatcher:
    def __init__(
        self,
        publisher: Publisher,
        sensor: Sensor,
        audit: AuditSink,
        entries: EntryFactory,
        positions: AuditPositions,
        clock: Clock,
    ) -> None:
        self.publisher = publisher
        self.sensor = sensor
        self.audit = audit
        self.entries = entries
        self.positions = positions
        self.clock = clock

    def handle(
        self,
        decisions: list[Decision],
        at: Instant,
        source: str | None = None,
        received: Instant | None = None,
        r: Record | None = None,
    ) -> None:
        """Carry out `decisions` made at `at`. With the record `r` that caused them (its
        `source` "topic:partition:offset"), each event is audited once across restarts:
        the n-th event of a record already in the ledger is skipped."""
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
                state = None if d.state is None else d.state.to_bytes()
                self.publisher.latch_state(d.procedure_id, state)

    def refused_request(self, refused: Refused, at: Instant, received: Instant) -> None:
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
        late_ms = (received.mono_ns - at.mono_ns) / MS
        self.audit.submit(self.entries.from_event(ev, refused.source, 0, late_ms), checkpoint=True)
