"""Publishing to Kafka: commands, monitor heartbeats, and bookkeeping (audit mirror,
dead letters, latch state), each on its own producer.

Three producers, so that a `safe_stop` never queues behind the 50-per-second-per-procedure
dead-man heartbeats or behind audit traffic: each has its own connection, queue and
settings (`monitor/kafka/profiles.py`). `send` only queues (librdkafka delivers from its
own threads); a delivery failure is counted from `service()`, never waited for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from monitor.icd.models import MonitorHeartbeat, Rearm, SafeStop
from monitor.icd.topics import Topics
from monitor.kafka import KafkaSettings, Producer, TransportError, open_producer
from monitor.metrics import MonitorMetrics

log = logging.getLogger("telesafe.publisher")

Signer = Callable[[bytes], list[tuple[str, bytes]]]


def heartbeat_json(
    procedure_id: str, seq: int, issued_at: int, monitor_id: str, status: str
) -> bytes:
    """The bytes `MonitorHeartbeat(...).model_dump_json()` would give (ids are ICD-safe)."""
    return (
        f'{{"v":1,"type":"monitor_heartbeat","procedure_id":{json.dumps(procedure_id)},'
        f'"seq":{seq},"issued_at":{issued_at},"monitor_id":{json.dumps(monitor_id)},'
        f'"status":"{status}"}}'
    ).encode()


class Publisher:
    def __init__(
        self,
        settings: KafkaSettings,
        metrics: MonitorMetrics,
        signer: Signer | None = None,
        producers: tuple[Producer, Producer, Producer] | None = None,
        client_id: str = "telesafe",
    ) -> None:
        """`producers`: commands, heartbeats, bookkeeping (default: opened for their roles)."""
        self.topics = Topics(settings.topic_prefix)
        self.metrics = metrics
        self.signer = signer
        self.commands, self.heartbeats, self.bookkeeping = producers or (
            open_producer(settings, "commands", f"{client_id}-commands"),
            open_producer(settings, "heartbeats", f"{client_id}-heartbeats"),
            open_producer(settings, "bookkeeping", f"{client_id}-bookkeeping"),
        )
        self._failed: dict[str, Callable[[str], None]] = {}

    # -- commands ------------------------------------------------------------------------

    def command(self, cmd: SafeStop | Rearm | MonitorHeartbeat) -> bool:
        """Queue a command at once; False (counted, logged) if it could not be queued."""
        return self._send(self.commands, cmd.type, cmd.procedure_id, cmd.model_dump_json().encode())

    def monitor_heartbeats(
        self, beats: Sequence[tuple[str, int, str]], issued_at: int, monitor_id: str
    ) -> int:
        """ICD §4.2, 50 times a second per procedure: (procedure_id, seq, status) each,
        encoded without building a model (tests/unit/test_publisher.py keeps the bytes equal
        to MonitorHeartbeat's), counted once per burst. Returns how many were queued."""
        sent = 0
        for procedure_id, seq, status in beats:
            value = heartbeat_json(procedure_id, seq, issued_at, monitor_id, status)
            if self._hand_over(self.heartbeats, "monitor_heartbeat", procedure_id, value):
                sent += 1
        if sent:
            self.metrics.commands_sent.labels("monitor_heartbeat").inc(sent)
        return sent

    def _send(self, producer: Producer, ctype: str, procedure_id: str, value: bytes) -> bool:
        if self._hand_over(producer, ctype, procedure_id, value):
            self.metrics.commands_sent.labels(ctype).inc()
            return True
        return False

    def _hand_over(self, producer: Producer, ctype: str, procedure_id: str, value: bytes) -> bool:
        headers = self.signer(value) if self.signer else []
        try:
            producer.send(
                self.topics.commands,
                procedure_id.encode(),
                value,
                headers,
                on_error=self._on_failure(ctype),
            )
        except TransportError as exc:  # queue full, no metadata: count it, never stall
            self.metrics.command_send_failures.labels(ctype).inc()
            log.error("could not hand %s for %s to the producer: %s", ctype, procedure_id, exc)
            return False
        return True

    def _on_failure(self, ctype: str) -> Callable[[str], None]:
        cb = self._failed.get(ctype)
        if cb is None:

            def cb(reason: str) -> None:
                self.metrics.command_send_failures.labels(ctype).inc()
                log.error("delivery of a %s failed: %s", ctype, reason)

            self._failed[ctype] = cb
        return cb

    # -- bookkeeping ---------------------------------------------------------------------

    def deadletter(
        self,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        source: str,
        extra_headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        headers = [("telesafe-error", reason.encode()), ("telesafe-source", source.encode())]
        headers += list(extra_headers)
        try:
            self.bookkeeping.send(
                self.topics.deadletter,
                key,
                value,
                headers,
                on_error=lambda why: log.error("dead letter from %s lost: %s", source, why),
            )
        except TransportError as exc:
            log.error("could not dead-letter a record from %s: %s", source, exc)

    def latch_state(self, procedure_id: str, value: bytes | None) -> None:
        """Compacted latch state for failover; None is a tombstone (no longer latched)."""
        try:
            self.bookkeeping.send(
                self.topics.state,
                procedure_id.encode(),
                value,
                on_error=lambda why: log.error(
                    "latch state of %s not published: %s", procedure_id, why
                ),
            )
        except TransportError as exc:
            log.error("could not publish latch state of %s: %s", procedure_id, exc)

    def audit(
        self, entries: list[dict[str, Any]], encode: Callable[[dict[str, Any]], bytes]
    ) -> None:
        for e in entries:
            pid = e.get("procedure_id")
            try:
                self.bookkeeping.send(self.topics.audit, pid.encode() if pid else None, encode(e))
            except TransportError as exc:
                log.error("could not mirror audit entry to Kafka: %s", exc)

    # -- lifecycle -----------------------------------------------------------------------

    def service(self) -> None:
        """Serve delivery reports of all three producers (call every loop iteration)."""
        self.commands.service()
        self.heartbeats.service()
        self.bookkeeping.service()

    def close(self, timeout_s: float = 5.0) -> None:
        for p in (self.commands, self.heartbeats, self.bookkeeping):
            try:
                p.close(timeout_s)
            except Exception as exc:  # closing must not hide the other producers' flush
                log.warning("closing a producer: %s", exc)
