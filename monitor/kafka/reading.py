"""Reading a topic from a point to its current end, without a consumer group.

For short bounded reads: latch restore from the compacted state topic, start-up
reconciliation of recent commands, the operator tools' lookups. Built on the api types, so
it works with either backend.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from monitor.kafka import (
    KafkaSettings,
    Record,
    TopicPartition,
    TransportError,
    open_consumer,
)

BEGINNING = -2  # start marker: the oldest retained offset


def read_to_end(
    settings: KafkaSettings,
    topic: str,
    partitions: Iterable[int] | None,
    client_id: str,
    since_ms: int = BEGINNING,
    timeout_s: float = 5.0,
) -> Iterator[Record]:
    """Every record of `topic` on `partitions` (None: all) from `since_ms` (a timestamp, or
    BEGINNING) up to the end offsets taken when the read starts. Raises TransportError if
    the topic does not exist or the end is not reached within `timeout_s`."""
    consumer = open_consumer(settings, "reader", client_id)
    deadline = time.monotonic() + timeout_s
    try:
        existing = consumer.partitions_for(topic, timeout_s)
        if existing is None:
            raise TransportError(f"topic {topic} does not exist")
        wanted = existing if partitions is None else sorted(set(partitions) & set(existing))
        tps = [TopicPartition(topic, p) for p in wanted]
        if not tps:
            return
        ends: dict[TopicPartition, int] = {}
        starts: dict[TopicPartition, int] = {}
        for tp in tps:
            marks = consumer.watermarks(tp, timeout_s)
            if marks is None:
                continue
            lo, hi = marks
            if hi > lo:
                ends[tp], starts[tp] = hi, lo
        if since_ms != BEGINNING and starts:
            found = consumer.offsets_for_times(list(starts), since_ms, timeout_s)
            starts = {tp: off for tp, off in found.items() if 0 <= off < ends[tp]}
        todo = {tp: ends[tp] for tp in starts}
        if not todo:
            return
        consumer.assign(starts)
        while todo:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportError(
                    f"reading {topic} did not reach its end within {timeout_s:g} s"
                )
            batch = consumer.poll(min(0.2, left), 10_000)
            for r in batch:
                tp = TopicPartition(r.topic, r.partition)
                end = todo.get(tp)
                if end is None or r.offset >= end:
                    continue
                yield r
                if r.offset + 1 >= end:
                    del todo[tp]
            if not batch:  # compaction can leave no record at end - 1: ask the position
                for tp, end in list(todo.items()):
                    pos = consumer.position(tp)
                    if pos is not None and pos >= end:
                        del todo[tp]
    finally:
        consumer.close(2.0)
