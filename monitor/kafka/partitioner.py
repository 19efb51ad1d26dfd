"""The default partitioner, remembered per key.

kafka-python hashes every keyed record with a pure-Python murmur2: remembering the choice
cut `send()` from 22.8-24.1 to 17.9-20.6 µs in the caller (docs/performance.md). The monitor
sends 50 heartbeats a second per procedure, always with the same few keys, so the choice is
remembered per (topic, key, partition count): the same partition
the default partitioner (and the Java client) picks, and a topic that grows partitions is
re-hashed because the count is part of the memo key.
"""

from __future__ import annotations

from typing import Any

from kafka.partitioner.default import DefaultPartitioner, murmur2

MEMO_SIZE = 100_000  # keys; cleared when full (one re-hash each, nothing else changes)


class MemoPartitioner(DefaultPartitioner):  # type: ignore[misc]
    def __init__(self, memo_size: int = MEMO_SIZE) -> None:
        self._memo: dict[tuple[str, bytes, int], int] = {}
        self._size = memo_size

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        parts = cluster.partitions_for_topic(topic) if serialized_key is not None else None
        if not parts:  # no key (random choice) or no metadata (the default raises)
            return int(
                super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            )
        memo_key = (topic, bytes(serialized_key), len(parts))  # type: ignore[arg-type]
        hit = self._memo.get(memo_key)
        if hit is None:
            hit = int(
                super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            )
            if len(self._memo) >= self._size:
                self._memo.clear()
            self._memo[memo_key] = hit
        return hit


def partition_for(key: bytes, partitions: int) -> int:
    """ICD 1.1 §2: the partition every producer picks for `key` (Kafka's murmur2, as the
    Java client and librdkafka's `murmur2_random` do): which partition holds a procedure."""
    if partitions < 1:
        raise ValueError("a topic has at least one partition")
    return int(murmur2(key) & 0x7FFFFFFF) % partitions
