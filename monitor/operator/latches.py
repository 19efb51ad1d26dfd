"""Finding a procedure's current latch and the monitor's decision on a request.

The operator tools ask the monitor's `/status` first (it knows the latch it enforces) and
fall back to the compacted `telesafe.state` topic (the latch every instance restores from).
Decisions are read from the audit mirror (`telesafe.audit`), where the monitor records
every accepted and rejected request with its `request_id`.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from monitor.engine.latch_state import LatchState, LatchStateError
from monitor.icd.topics import Topics
from monitor.kafka import (
    OFFSET_END,
    KafkaSettings,
    TopicPartition,
    TransportError,
    open_consumer,
)
from monitor.kafka.partitioner import partition_for
from monitor.kafka.reading import read_to_end


@dataclass(frozen=True)
class LatchInfo:
    procedure_id: str
    command_id: str
    rule: str
    issued_at_ns: int | None
    acknowledged: str | None
    ended: bool
    source: str  # where it was found

    def describe(self) -> str:
        since = (
            time.strftime("%H:%M:%S", time.localtime(self.issued_at_ns / 1e9))
            if self.issued_at_ns
            else "?"
        )
        ack = self.acknowledged or "not acknowledged"
        ended = ", procedure ended" if self.ended else ""
        return (
            f"latch {self.command_id} (rule {self.rule}, since {since}, {ack}{ended}; "
            f"from {self.source})"
        )


def from_status(url: str, procedure_id: str, timeout_s: float = 2.0) -> LatchInfo | None:
    """The latch a running monitor reports for the procedure (None: unknown there)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=timeout_s) as resp:
            snap = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    p = (snap.get("procedures") or {}).get(procedure_id)
    latch = p.get("latch") if isinstance(p, dict) else None
    if not isinstance(latch, dict) or not latch.get("command_id"):
        return None
    return LatchInfo(
        procedure_id,
        str(latch["command_id"]),
        str(latch.get("rule")),
        latch.get("issued_at"),
        latch.get("ack"),
        bool(latch.get("ended")),
        f"monitor {snap.get('monitor_id', url)}",
    )


def from_state_topic(
    settings: KafkaSettings, procedure_id: str, timeout_s: float = 5.0
) -> LatchInfo | None:
    """The newest latch state of the procedure on `telesafe.state` (None: not latched)."""
    topic = Topics(settings.topic_prefix).state
    consumer = open_consumer(settings, "reader", "telesafe-operator-lookup")
    try:
        parts = consumer.partitions_for(topic, timeout_s)
    finally:
        consumer.close(2.0)
    if not parts:
        raise TransportError(
            f"topic {topic} does not exist, or this principal may not read it (docs/security.md)"
        )
    key = procedure_id.encode()
    number = partition_for(key, len(parts))
    value: bytes | None = None
    for r in read_to_end(
        settings, topic, [number], "telesafe-operator-lookup", timeout_s=timeout_s
    ):
        if r.key == key:
            value = r.value
    if not value:
        return None
    try:
        st = LatchState.from_bytes(value)
    except LatchStateError:
        return None
    return LatchInfo(
        procedure_id,
        st.command.command_id,
        st.rule,
        st.command.issued_at,
        st.ack_result,
        st.ended,
        "telesafe.state",
    )


class DecisionWatch:
    """Reads the audit mirror from its end (taken before the request is sent) for the
    entry that answers `request_id`."""

    def __init__(self, settings: KafkaSettings, procedure_id: str) -> None:
        topic = Topics(settings.topic_prefix).audit
        self.consumer = open_consumer(settings, "reader", "telesafe-operator-decision")
        parts = self.consumer.partitions_for(topic, 5.0)
        if not parts:
            self.consumer.close(2.0)
            raise TransportError(
                f"topic {topic} does not exist, or this principal may not read it "
                "(docs/security.md)"
            )
        tp = TopicPartition(topic, partition_for(procedure_id.encode(), len(parts)))
        marks = self.consumer.watermarks(tp, 5.0)
        self.consumer.assign({tp: marks[1] if marks else OFFSET_END})

    def entries(self, timeout_s: float) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            for r in self.consumer.poll(min(0.2, left), 1000):
                try:
                    entry = json.loads(r.value or b"")
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    yield entry

    def wait(
        self, request_id: str, kinds: tuple[str, ...], timeout_s: float
    ) -> dict[str, Any] | None:
        for entry in self.entries(timeout_s):
            data = entry.get("data") or {}
            if entry.get("event") in kinds and data.get("request_id") == request_id:
                return entry
        return None

    def close(self) -> None:
        self.consumer.close(2.0)
