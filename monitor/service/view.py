"""What the loop knows about its shards every housekeeping turn, in one value: the
procedures (for the scrape-time collector and /status), which are withheld from
`monitor_heartbeat`, how far behind each partition number is, and the offsets processed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from monitor.engine.clock import Instant
from monitor.kafka import TopicPartition
from monitor.service.ownership import Shard
from monitor.snapshot import ProcedureSnapshot

# The client's cached (low, high) watermarks of a topic-partition, or None.
Watermarks = Callable[[TopicPartition], tuple[int, int] | None]


@dataclass(frozen=True)
class LoopView:
    procedures: dict[str, ProcedureSnapshot]
    withheld: frozenset[str]  # procedures of shards heard too long ago for a heartbeat
    lag_s: dict[str, float]  # per partition number: now minus what it has heard up to
    behind: dict[str, int]  # per topic: records at the broker not yet processed
    next_offsets: dict[TopicPartition, int]
    held: int  # topic-partitions held

    def status(self, monitor_id: str) -> dict[str, Any]:
        """The /status answer (docs/procedure-states.md; `telesafe status` renders it)."""
        return {
            "monitor_id": monitor_id,
            "procedures": {pid: p.to_json() for pid, p in self.procedures.items()},
            "assigned_partitions": self.held,
            "lag_seconds": self.lag_s,
            "withheld": sorted(self.withheld),
        }


def loop_view(
    shards: Iterable[Shard], now: Instant, withhold_ns: int, watermarks: Watermarks
) -> LoopView:
    """Read every shard once (the engines' snapshots are taken at `now`). Precondition:
    called on the loop thread, which owns the shards."""
    procedures: dict[str, ProcedureSnapshot] = {}
    withheld: set[str] = set()
    lag_s: dict[str, float] = {}
    behind: dict[str, int] = {}
    offsets: dict[TopicPartition, int] = {}
    held = 0
    for shard in shards:
        t = shard.time
        offsets.update(t.next_offset)
        snap = shard.engine.snapshot(now)
        procedures.update(snap)
        lag_ns = now.mono_ns - t.horizon(now.mono_ns)
        lag_s[str(shard.number)] = lag_ns / 1e9
        if lag_ns > withhold_ns:
            withheld |= set(snap)
        for tp in t.heard:
            held += 1
            marks = watermarks(tp)
            nxt = t.next_offset.get(tp)
            n = 0 if marks is None or nxt is None else max(0, marks[1] - nxt)
            behind[tp.topic] = behind.get(tp.topic, 0) + n
    return LoopView(procedures, frozenset(withheld), lag_s, behind, offsets, held)
