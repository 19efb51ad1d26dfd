"""Publishing to Kafka: commands, dead letters and audit mirror entries.

`send()` of kafka-python only appends to the producer's buffer and returns; the
producer's own IO thread delivers. So publishing a safe-stop never waits on the network,
and a delivery failure is counted by a callback instead of blocking the engine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaProducer

from monitor.icd.models import MonitorHeartbeat, Rearm, SafeStop
from monitor.icd.topics import Topics
from monitor.kafka.partitioner import MemoPartitioner
from monitor.kafka.settings import KafkaSettings
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
        client_id: str,
        signer: Signer | None = None,
    ) -> None:
        self.topics = Topics(settings.topic_prefix)
        self.metrics = metrics
        self.signer = signer
        self.producer = KafkaProducer(
            **settings.producer_config(client_id=client_id, partitioner=MemoPartitioner())
        )

    def command(self, cmd: SafeStop | Rearm | MonitorHeartbeat) -> None:
        self._send_command(cmd.type, cmd.procedure_id, cmd.model_dump_json().encode())

    def monitor_heartbeats(
        self, beats: Sequence[tuple[str, int, str]], issued_at: int, monitor_id: str
    ) -> None:
        """ICD §4.2, 50 times a second per procedure: (procedure_id, seq, status) each,
        encoded without building a model (tests/unit/test_publisher.py keeps the bytes equal
        to MonitorHeartbeat's), counted once per burst."""
        sent = 0
        for procedure_id, seq, status in beats:
            value = heartbeat_json(procedure_id, seq, issued_at, monitor_id, status)
            if self._hand_over("monitor_heartbeat", procedure_id, value):
                sent += 1
        if sent:
            self.metrics.commands_sent.labels("monitor_heartbeat").inc(sent)

    def _send_command(self, ctype: str, procedure_id: str, value: bytes) -> None:
        if self._hand_over(ctype, procedure_id, value):
            self.metrics.commands_sent.labels(ctype).inc()

    def _hand_over(self, ctype: str, procedure_id: str, value: bytes) -> bool:
        headers = self.signer(value) if self.signer else []
        try:
            fut = self.producer.send(
                self.topics.commands, key=procedure_id.encode(), value=value, headers=headers
            )
        except Exception as exc:  # buffer full or no metadata: count it, never stall the engine
            self.metrics.command_send_failures.labels(ctype).inc()
            log.error("could not hand %s for %s to the producer: %s", ctype, procedure_id, exc)
            return False
        fut.add_errback(self._failed, ctype, procedure_id)
        return True

    def _failed(self, exc: BaseException, ctype: str, pid: str) -> None:
        self.metrics.command_send_failures.labels(ctype).inc()
        log.error("delivery of %s for %s failed: %s", ctype, pid, exc)

    def deadletter(
        self,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        source: str,
        extra_headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        headers = [("telesafe-error", reason.encode()), ("telesafe-source", source.encode())]
        headers += extra_headers or []
        try:
            self.producer.send(self.topics.deadletter, key=key, value=value, headers=headers)
        except Exception as exc:
            log.error("could not dead-letter a record from %s: %s", source, exc)

    def latch_state(self, procedure_id: str, value: bytes | None) -> None:
        """Compacted latch state for failover; None is a tombstone (no longer latched)."""
        try:
            self.producer.send(self.topics.state, key=procedure_id.encode(), value=value)
        except Exception as exc:
            log.error("could not publish latch state of %s: %s", procedure_id, exc)

    def audit(
        self, entries: list[dict[str, Any]], encode: Callable[[dict[str, Any]], bytes]
    ) -> None:
        for e in entries:
            pid = e.get("procedure_id")
            try:
                self.producer.send(
                    self.topics.audit, key=pid.encode() if pid else None, value=encode(e)
                )
            except Exception as exc:
                log.error("could not mirror audit entry to Kafka: %s", exc)

    def close(self, timeout_s: float = 5.0) -> None:
        try:
            self.producer.flush(timeout=timeout_s)
        finally:
            self.producer.close(timeout=timeout_s)
