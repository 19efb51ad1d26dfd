"""Consumer offsets are committed only once the audit entries derived from the records
before them are durable (exactly-once audit of inputs, with `AuditPositions` below).

The loop tells `AuditedOffsets` after each batch how many audit entries it had submitted
so far and the next offset of every topic-partition it processed; the audit sink says how
many entries are durable. Whatever is covered may be committed. A crash therefore re-reads
at most the records whose entries were not yet durable, and those are audited again only if
the ledger lacks them (`AuditPositions`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from monitor.kafka.api import TopicPartition


class AuditedOffsets:
    def __init__(self) -> None:
        self._pending: deque[tuple[int, dict[TopicPartition, int]]] = deque()
        self._ready: dict[TopicPartition, int] = {}

    def processed(self, submitted: int, offsets: Mapping[TopicPartition, int]) -> None:
        """After a batch: `submitted` audit entries so far; `offsets` next offset per tp."""
        if offsets:
            self._pending.append((submitted, dict(offsets)))

    def committable(self, durable: int) -> dict[TopicPartition, int]:
        """Offsets whose audit entries are all durable (and not handed out before)."""
        pending, ready = self._pending, self._ready
        while pending and pending[0][0] <= durable:
            _, offsets = pending.popleft()
            for tp, off in offsets.items():
                if off > ready.get(tp, -1):
                    ready[tp] = off
        out, self._ready = ready, {}
        return out

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions that moved away: their offsets are no longer ours to commit."""
        gone = set(partitions)
        for _, offsets in self._pending:
            for tp in gone:
                offsets.pop(tp, None)
        for tp in gone:
            self._ready.pop(tp, None)


class AuditPositions:
    """Which input-derived audit entries the ledger already holds, from its newest entries.

    Every entry derived from an input record carries `source` ("topic:partition:offset")
    and `source_n` (its place among that record's entries). After a restart, a re-read
    record's entries that are already in the ledger are not audited again (the rules engine
    still sees the record). Only the ledger's tail can hold them: offsets are committed
    within a fraction of a second of their entries becoming durable.
    """

    def __init__(self, entries: Iterable[Mapping[str, object]] = ()) -> None:
        self._seen: set[tuple[str, int]] = set()
        self._high: dict[str, int] = {}  # "topic:partition" -> highest audited offset
        for e in entries:
            src, n = e.get("source"), e.get("source_n")
            if isinstance(src, str) and isinstance(n, int):
                self._seen.add((src, n))
                tp, _, off = src.rpartition(":")
                if off.isdigit() and int(off) > self._high.get(tp, -1):
                    self._high[tp] = int(off)

    def __len__(self) -> int:
        return len(self._seen)

    def already_audited(self, topic: str, partition: int, offset: int, n: int) -> bool:
        high = self._high.get(f"{topic}:{partition}")
        if high is None or offset > high:
            return False  # the common case: newer than anything in the ledger
        return (f"{topic}:{partition}:{offset}", n) in self._seen
