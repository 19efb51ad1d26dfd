"""Audit into the Merkle ledger (monitor.audit), mirrored to the audit topic once durable.

The mirror carries what the governance archive needs to rebuild a verified copy of this
ledger (`monitor.audit.mirror`): each entry's exact leaf bytes with its origin, and every
signed checkpoint. At start the ledger's tail is mirrored again (the previous process may
have died before its producer delivered it); the archive is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.audit.checkpoint import SignedCheckpoint, generate_key_files, load_private_key
from monitor.audit.ledger import Ledger, check_ledger_path
from monitor.audit.mirror import checkpoint_value, entry_value
from monitor.audit.selfcheck import SelfCheckResult
from monitor.audit.writer import AuditWriter
from monitor.metrics import MonitorMetrics
from monitor.service.audit_sink import encode_entry

log = logging.getLogger("telesafe.audit")

# Self-verification of the newest checkpointed range (docs/audit-ledger.md): a first pass
# shortly after start, then one a minute. A pass costs 7-10 µs per new entry
# (bench/bench_selfcheck.py), ~50 ms for a minute at 100 entries/s.
VERIFY_INTERVAL_S = 60.0
VERIFY_DELAY_S = 5.0

# Entries mirrored again at start: at least this many, and at least everything since the
# second-newest checkpoint (what a SIGKILL can leave undelivered in the producer's queue is
# a few milliseconds of batches; a broker outage before the crash can leave more, which
# `telesafe audit archive --import` fills from the ledger file).
REPLAY_ENTRIES = 1024

Publish = Callable[[list[dict[str, Any]], Callable[[dict[str, Any]], bytes]], None]
_VALUE = "value"


def _record(procedure_id: Any, value: bytes) -> dict[str, Any]:
    """A mirror record for `publish`: its key is the procedure id (as the audit topic has
    always been keyed, so `telesafe rearm` finds its decision in the procedure's
    partition), its value the bytes built by `monitor.audit.mirror`."""
    return {"procedure_id": procedure_id if isinstance(procedure_id, str) else None, _VALUE: value}


def mirror_value(record: dict[str, Any]) -> bytes:
    """The `encode` callback of `publish` for mirror records."""
    value: bytes = record[_VALUE]
    return value


class LedgerMirror:
    """Builds the audit topic's ledger records (writer thread only): entries re-read from
    the ledger file after their commit, so the mirrored bytes are the hashed bytes."""

    def __init__(self, ledger: Ledger, publish: Publish) -> None:
        self._ledger = ledger
        self._publish = publish
        self._replay_from: int | None = replay_start(ledger)

    def entries(self, committed: list[dict[str, Any]]) -> None:
        if not committed:
            return
        lo, hi = int(committed[0]["index"]), int(committed[-1]["index"]) + 1
        if self._replay_from is not None:
            start, self._replay_from = self._replay_from, None
            self._replay(start, lo)
        rows = self._ledger.read_entries(lo, hi)
        origin = self._ledger.origin
        self._publish(
            [
                _record(e.get("procedure_id"), entry_value(origin, body))
                for e, (_, _, body) in zip(committed, rows, strict=True)
            ],
            mirror_value,
        )

    def checkpoint(self, cp: SignedCheckpoint) -> None:
        self._publish([_record(None, checkpoint_value(cp.origin, cp.note))], mirror_value)

    def _replay(self, lo: int, hi: int) -> None:
        """Entries [lo, hi) and the checkpoints above lo, marked as replayed."""
        import json

        origin = self._ledger.origin
        records = []
        for _, _, body in self._ledger.read_entries(lo, hi):
            pid = json.loads(body).get("procedure_id")
            records.append(_record(pid, entry_value(origin, body, replay=True)))
        for _, note in self._ledger.stored_checkpoints_after(lo):
            records.append(_record(None, checkpoint_value(origin, note, replay=True)))
        if records:
            self._publish(records, mirror_value)
            log.info("mirrored the ledger's tail again: entries [%d, %d)", lo, hi)


def replay_start(ledger: Ledger) -> int:
    """Where the tail mirrored again at start begins (see REPLAY_ENTRIES)."""
    size = ledger.size()
    cps = ledger.checkpoints()
    second = cps[-2][0] if len(cps) >= 2 else 0
    return max(0, min(second, size - REPLAY_ENTRIES))


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
    path: str,
    key_path: str | None,
    monitor_id: str,
    publish: Publish,
    metrics: MonitorMetrics,
    verify_interval_s: float = VERIFY_INTERVAL_S,
) -> LedgerSink:
    """Open the ledger as its one writer and start the audit writer thread.

    Raises LedgerError (one line naming the ledger: its path cannot hold a ledger,
    another writer holds it, the key is not the ledger's, the file is damaged) or
    KeyFileError. Without `key_path` a development key `<ledger>.key` is used, and
    generated if absent; a key generated by a start that then fails is removed again,
    so a failed start leaves no files behind."""
    check_ledger_path(path)
    generated: tuple[Path, Path] | None = None
    if key_path is None:
        key_file = Path(path).with_suffix(".key")
        if not key_file.exists():
            generated = generate_key_files(key_file)
            log.warning(
                "no --signing-key: generated %s (public key %s.pub); use a managed key "
                "outside development",
                key_file,
                key_file,
            )
        key_path = str(key_file)
    try:
        key = load_private_key(key_path)
        ledger = Ledger.open(
            path, key, origin=f"telesafe/{monitor_id}", holder=f"monitor {monitor_id}"
        )
    except BaseException:
        for f in generated or ():
            f.unlink(missing_ok=True)
        raise
    metrics.ledger_size.set(ledger.size())

    mirror = LedgerMirror(ledger, publish)

    def appended(entries: list[dict[str, Any]]) -> None:
        metrics.ledger_appends.inc(len(entries))
        metrics.ledger_size.set(ledger.size())
        mirror.entries(entries)

    sink: LedgerSink | None = None

    def failed(exc: Exception) -> None:
        metrics.ledger_failures.inc()
        log.error(
            "AUDIT LEDGER WRITE FAILED: %s; audit entries now go to the audit topic only", exc
        )
        if sink is not None:
            sink.ledger_failed()

    def verified(res: SelfCheckResult) -> None:
        if res.ok:
            metrics.ledger_last_verify_ok.set(1)
            log.debug(
                "ledger self-verification passed: entries [%d, %d), %d checkpoints, %.3f s",
                res.verified_from,
                res.verified_to,
                res.checkpoints,
                res.elapsed_s,
            )
            return
        metrics.ledger_verify_failures.inc()
        metrics.ledger_last_verify_ok.set(0)
        log.error(
            "AUDIT LEDGER SELF-VERIFICATION FAILED: %s (ledger %s); do not modify it, run "
            "`telesafe audit verify` (runbook: LedgerVerifyFailure)",
            res.problem,
            path,
        )

    writer = AuditWriter(
        ledger,
        on_appended=appended,
        on_failure=failed,
        verify_interval_s=verify_interval_s,
        verify_delay_s=min(VERIFY_DELAY_S, verify_interval_s),
        on_verified=verified,
        on_checkpoint=mirror.checkpoint,
    )
    sink = LedgerSink(writer, ledger, publish)
    writer.start()
    return sink
