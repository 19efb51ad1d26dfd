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

from kafka import KafkaConsumer, TopicPartition

from monitor.audit.ledger import Ledger
from monitor.icd.topics import Topics
from monitor.kafka.settings import KafkaSettings

log = logging.getLogger("telesafe.reconcile")

_RECORDED_BY = ("safe_stop_issued", "rearm_accepted", "command_reconciled")
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
    consumer = KafkaConsumer(**settings.consumer_config(client_id=f"{monitor_id}-reconcile"))
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        since = int((time.time() - lookback_s) * 1000)
        starts = consumer.offsets_for_times({tp: since for tp in tps})
        ends = consumer.end_offsets(tps)
        todo = {}
        for tp in tps:
            start = starts.get(tp)
            if start is not None and start.offset < ends[tp]:
                consumer.seek(tp, start.offset)
                todo[tp] = ends[tp]
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for tp, recs in consumer.poll(timeout_ms=200).items():
                for r in recs:
                    try:
                        cmd = json.loads(r.value)
                    except (TypeError, ValueError):
                        continue
                    cid = cmd.get("command_id")
                    if (
                        cmd.get("type") == "safe_stop"
                        and cmd.get("monitor_id") == monitor_id
                        and cid
                        and cid not in known
                        and cid not in seen
                    ):
                        seen.add(cid)
                        found.append(cmd)
                if consumer.position(tp) >= todo.get(tp, 0):
                    todo.pop(tp, None)
        if todo:
            log.warning("reconciliation read timed out; %d partition(s) not fully read", len(todo))
        return found
    finally:
        consumer.close()
