"""Where audit entries go. The engine thread only calls `submit`, which never blocks."""

from __future__ import annotations

import json
import uuid
from typing import Any, Protocol

from monitor import events
from monitor.engine.decisions import Event

AUDIT_SCHEMA = "telesafe.audit/1"
# Events that close a chapter of the record get a signed checkpoint right after them.
CHECKPOINT_EVENTS = events.CHECKPOINTED


class AuditSink(Protocol):
    def submit(self, entry: dict[str, Any], checkpoint: bool = False) -> None:
        """Hand an entry over; never blocks (the safety path calls this)."""

    def submitted(self) -> int:
        """Entries submitted so far."""

    def durable(self) -> int:
        """Of those, how many are durable (in submission order)."""

    def recent_entries(self) -> list[dict[str, Any]]:
        """The newest entries already durable at start-up (for `AuditPositions`)."""

    def stats(self) -> dict[str, float]: ...

    def stop(self) -> None: ...


def encode_entry(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class EntryFactory:
    """Turns engine events into audit entries: who, what, when (UTC and monotonic), why."""

    def __init__(self, monitor_id: str, software_version: str) -> None:
        self.monitor_id = monitor_id
        self.boot_id = str(uuid.uuid4())  # tells monotonic timestamps of different runs apart
        self.version = software_version

    def from_event(
        self, ev: Event, source: str | None = None, source_n: int = 0, late_ms: float = 0.0
    ) -> dict[str, Any]:
        """`source`: "topic:partition:offset" of the input record it was derived from, and
        `source_n` its place among that record's entries (exactly-once audit of inputs);
        `late_ms`: how long after the instant it concerns the monitor decided it (it was
        behind), recorded when at least 1 ms."""
        data = ev.data
        if ev.kind in events.OPERATOR_ACTED:
            actor = f"operator:{data.get('operator_id')}"
        elif ev.kind in events.ROBOT_ACTED:
            actor = "site:robot"
        else:
            actor = f"monitor:{self.monitor_id}"
        entry: dict[str, Any] = {
            "schema": AUDIT_SCHEMA,
            "event": ev.kind,
            "procedure_id": ev.procedure_id,
            "actor": actor,
            "monitor_id": self.monitor_id,
            "boot_id": self.boot_id,
            "t_utc_ns": ev.utc_ns,
            "t_mono_ns": ev.mono_ns,
            "data": data,
        }
        if source is not None:
            entry["source"] = source
            entry["source_n"] = source_n
        if late_ms >= 1.0:
            entry["late_ms"] = round(late_ms, 3)
        return entry

    def monitor_event(self, kind: str, utc_ns: int, mono_ns: int, **data: Any) -> dict[str, Any]:
        return self.from_event(
            Event(kind, None, mono_ns, utc_ns, {**data, "software_version": self.version})
        )


class KafkaMirrorSink:
    """Audit without a ledger: entries only mirrored to the audit topic, from its own thread."""

    def __init__(self, publish: Any) -> None:
        import collections
        import threading

        self._publish = publish
        self._submitted = 0
        self._published = 0
        self._q: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="telesafe-audit-mirror", daemon=True)
        self._thread.start()

    def submit(self, entry: dict[str, Any], checkpoint: bool = False) -> None:
        self._submitted += 1
        self._q.append(entry)
        self._wake.set()

    def submitted(self) -> int:
        return self._submitted

    def durable(self) -> int:
        return self._published  # without a ledger, handed to the audit topic's producer

    def recent_entries(self) -> list[dict[str, Any]]:
        return []

    def stats(self) -> dict[str, float]:
        return {"queue_depth": float(len(self._q))}

    def _run(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            batch = []
            while self._q:
                batch.append(self._q.popleft())
            if batch:
                self._publish(batch, encode_entry)
                self._published += len(batch)
            if self._stopped and not self._q:
                return

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=5)
