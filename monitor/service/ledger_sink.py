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
    def __init__(self, writer: AuditWriter, ledger: Ledger) -> None:
        self.writer = writer
        self.ledger = ledger

    def submit(self, entry: dict[str, Any], checkpoint: bool = False) -> None:
        self.writer.submit(entry, checkpoint=checkpoint)

    def stop(self) -> None:
        self.writer.stop()

    def stats(self) -> dict[str, float]:
        return self.writer.stats()


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

    def failed(exc: Exception) -> None:
        metrics.ledger_failures.inc()
        log.error("AUDIT LEDGER WRITE FAILED, entries are held in memory: %s", exc)

    writer = AuditWriter(ledger, on_appended=appended, on_failure=failed)
    writer.start()
    return LedgerSink(writer, ledger)
