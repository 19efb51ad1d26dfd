"""Restart reconciliation: commands on the wire that the ledger never recorded.

The engine publishes a safe-stop before it is audited (safety first), so a crash in
between leaves a command on `telesafe.safety.commands` with no ledger entry. At start-up
the monitor reads back its own recent commands and records each one the ledger lacks.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from monitor.audit.ledger import Ledger
from monitor.events import EventKind
from monitor.icd.topics import Topics
from monitor.kafka.reading import read_to_end
from monitor.kafka.settings import KafkaSettings

log = logging.getLogger("telesafe.reconcile")

# The events that carry a command the monitor sent (monitor/events.py: `command_id`).
_RECORDED_BY = (EventKind.SAFE_STOP_ISSUED, EventKind.REARM_ACCEPTED, EventKind.COMMAND_RECONCILED)
SCAN_ENTRIES = 50_000


def ledger_command_ids(ledger: Ledger, scan: int = SCAN_ENTRIES) -> set[str]:
    """Command ids the most recent `scan` ledger entries account for."""
    ids: set[str] = set()
    size = ledger.size()
    for idx in range(max(0, size - scan), size):
        entry = json.loads(ledger.entry_bytes(idx))
        if entry.get("event") in _RECORDED_BY:
            cid = entry.get("data", {}).get("command_id")
            if cid:
                ids.add(cid)
    return ids


def unrecorded_commands(
    settings: KafkaSettings,
    monitor_id: str,
    known: set[str],
    lookback_s: float = 600.0,
    timeout_s: float = 10.0,
) -> list[dict[str, Any]]:
    """Safe-stops this monitor id published in the lookback window that `known` lacks."""
    topic = Topics(settings.topic_prefix).commands
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    since = int((time.time() - lookback_s) * 1000)
    for r in read_to_end(
        settings, topic, None, f"telesafe-reconcile-{monitor_id}", since, timeout_s
    ):
        try:
            cmd = json.loads(r.value or b"")
        except ValueError:
            continue
        cid = cmd.get("command_id") if isinstance(cmd, dict) else None
        if (
            cid
            and cmd.get("type") == "safe_stop"
            and cmd.get("monitor_id") == monitor_id
            and cid not in known
            and cid not in seen
        ):
            seen.add(cid)
            found.append(cmd)
    return found
