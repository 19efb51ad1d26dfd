"""Audit into the Merkle ledger (monitor.audit), mirrored to the audit topic once durable."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.audit.checkpoint import generate_key_files, load_private_key
from monitor.audit.ledger import Ledger
from monitor.audit.writer import AuditWriter
from monitor.metrics import MonitorMetrics
from monitor.service.audit_sink import encode_entry

log = logging.getLogger("telesafe.audit")

Publish = Callable[[list[dict[str, Any]], Callable[[dict[str, Any]], bytes]], None]


class LedgerSink:
    """Entries go to the ledger, then (durable) to the audit topic. If the ledger fails, they
    go straight to the audit topic marked `"ledgered": false`, so nothing stays only in memory.
    """

    def __init__(self, writer: AuditWriter, ledger: Ledger, publish: Publish) -> None:
        self.writer = writer
        self.ledger = ledger
        self._publish = publish
        self._failed = False
        self._submitted = 0
        self._bypassed = 0  # after a ledger failure: straight to the audit topic
        self._recent = _tail(ledger)

    def submit(self, entry: dict[str, Any], checkpoint: bool = False) -> None:
        self._submitted += 1
        if self._failed:
            self._publish([{**entry, "ledgered": False}], encode_entry)
            self._bypassed += 1
            return
        self.writer.submit(entry, checkpoint=checkpoint)

    def submitted(self) -> int:
        return self._submitted

    def durable(self) -> int:
        if self._failed:  # held entries were mirrored too: nothing more will become durable
            return self._submitted
        return int(self.writer.stats()["appended"]) + self._bypassed

    def recent_entries(self) -> list[dict[str, Any]]:
        return self._recent

    def ledger_failed(self) -> None:
        """Called once from the writer thread: mirror what it holds, then bypass it."""
        self._failed = True  # first, so later entries cannot slip between snapshot and flag
        held = self.writer.unwritten()
        if held:
            self._publish([{**e, "ledgered": False} for e in held], encode_entry)
            log.error(
                "%d audit entries not in the ledger were mirrored to the audit topic", len(held)
            )

    def stop(self) -> None:
        self.writer.stop()

    def stats(self) -> dict[str, float]:
        return self.writer.stats()


RECENT_ENTRIES = 50_000  # more than the audit of the seconds between two offset commits


def _tail(ledger: Ledger, n: int = RECENT_ENTRIES) -> list[dict[str, Any]]:
    """The newest entries that came from input records (their `source` and `source_n`)."""
    import json

    size = ledger.size()
    out = []
    for idx in range(max(0, size - n), size):
        entry = json.loads(ledger.entry_bytes(idx))
        if "source" in entry:
            out.append({"source": entry["source"], "source_n": entry.get("source_n")})
    return out


def open_ledger_sink(
    path: str, key_path: str | None, monitor_id: str, publish: Publish, metrics: MonitorMetrics
) -> LedgerSink:
    if key_path is None:
        key_file = Path(path).with_suffix(".key")
        if not key_file.exists():
            generate_key_files(key_file)
            log.warning(
                "no --signing-key: generated %s (public key %s.pub); use a managed key "
                "outside development",
                key_file,
                key_file,
            )
        key_path = str(key_file)
    key = load_private_key(key_path)
    ledger = Ledger.open(path, key, origin=f"telesafe/{monitor_id}")
    metrics.ledger_size.set(ledger.size())

    def appended(entries: list[dict[str, Any]]) -> None:
        metrics.ledger_appends.inc(len(entries))
        metrics.ledger_size.set(ledger.size())
        publish(entries, encode_entry)

    sink: LedgerSink | None = None

    def failed(exc: Exception) -> None:
        metrics.ledger_failures.inc()
        log.error(
            "AUDIT LEDGER WRITE FAILED: %s; audit entries now go to the audit topic only", exc
        )
        if sink is not None:
            sink.ledger_failed()

    writer = AuditWriter(ledger, on_appended=appended, on_failure=failed)
    sink = LedgerSink(writer, ledger, publish)
    writer.start()
    return sink
