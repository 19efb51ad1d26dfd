"""Which procedures this instance owns: one engine per partition number (a *shard*).

The ICD topics are co-partitioned, so partition N of the console, robot, operator and state
topics holds the same procedures: a shard owns partition N of each, runs one `Engine` for
those procedures, and keeps its own time (`timekeeping.PartitionTime`). The consumer's
rebalance listener (`Ownership`) creates shards as partitions arrive (restoring their
latches from `telesafe.state` before any of their records is processed), freezes a shard's
time the moment a partition stops being heard, and releases shards that moved away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from monitor.engine.clock import Clock, Instant
from monitor.engine.decisions import Decision
from monitor.engine.engine import Engine
from monitor.engine.latch_state import LatchState, LatchStateError
from monitor.icd.topics import Topics
from monitor.kafka import (
    Consumer,
    KafkaSettings,
    Record,
    TopicPartition,
    TransportError,
)
from monitor.kafka.reading import read_to_end
from monitor.service.timekeeping import PartitionTime

log = logging.getLogger("telesafe.ownership")

Handle = Callable[[list[Decision], Instant], None]


@dataclass
class Shard:
    number: int
    engine: Engine
    time: PartitionTime


class Ownership:
    """The monitor consumer's rebalance listener, and the shards it keeps.

    Runs on the loop thread, inside `Consumer.poll`. Every callback is bounded: latch
    restore reads the state topic for at most `restore_timeout_s`.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        make_engine: Callable[[], Engine],
        handle: Handle,
        clock: Clock,
        lookback_s: float,
        incremental: bool,
        on_revoke: Callable[[list[TopicPartition]], None],
        check_layout: Callable[[], None],
        read_state: Callable[[list[int]], Iterable[Record]] | None = None,
        restore_timeout_s: float = 5.0,
    ) -> None:
        """`read_state(numbers)`: the records of `telesafe.state` on those partitions, oldest
        first (default: read from Kafka, at most `restore_timeout_s`)."""
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.inputs = {
            self.topics.telemetry_console,
            self.topics.telemetry_robot,
            self.topics.operator,
        }
        self.make_engine = make_engine
        self.handle = handle
        self.clock = clock
        self.lookback_ms = int(lookback_s * 1000)
        self.incremental = incremental
        self.on_revoke = on_revoke
        self.check_layout = check_layout
        self.read_state = read_state or self._read_state_topic
        self.restore_timeout_s = restore_timeout_s
        self.shards: dict[int, Shard] = {}
        self.consumer: Consumer | None = None
        self.heard_mono = clock.now().mono_ns  # the loop's last poll return
        self.assigned_once = False
        self.rebalances = 0
        self._pending_release: set[int] = set()

    # -- the listener ------------------------------------------------------------------

    def revoked(self, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        # Deaf from this moment on these partitions: their timers freeze where they were
        # heard (the last poll), not where a later poll happens to return (issue: failover).
        for tp in partitions:
            shard = self.shards.get(tp.partition)
            if shard is not None:
                shard.time.freeze(tp, self.heard_mono)
        self.on_revoke(partitions)
        log.info("partitions revoked: %s", _describe(partitions))
        if self.incremental:
            self._release_tps(partitions)
        else:  # eager: everything is revoked, and much of it comes straight back
            self._pending_release |= {tp.partition for tp in partitions}

    def lost(self, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        log.warning("partitions lost (session expired): %s", _describe(partitions))
        self._release_tps(partitions)

    def assigned(self, partitions: list[TopicPartition]) -> Mapping[TopicPartition, int]:
        self.rebalances += 1
        self.check_layout()  # co-partitioning and append time, on every assignment
        now = self.clock.now()
        numbers = {tp.partition for tp in partitions}
        if not self.incremental:
            gone = self._pending_release - numbers
            self._pending_release = set()
            self._release_numbers(gone, now)
        new_numbers = sorted(n for n in numbers if n not in self.shards)
        for n in new_numbers:
            self.shards[n] = Shard(n, self.make_engine(), PartitionTime(n))
        restored = self._restore(new_numbers, now) if new_numbers else 0
        starts = self._start_offsets([tp for tp in partitions if tp.topic in self.inputs])
        for tp in partitions:
            if tp.topic in self.inputs:
                self.shards[tp.partition].time.assign(tp, now.mono_ns, starts.get(tp))
        self.assigned_once = True
        log.info(
            "assigned %s; %d new shard(s), %d latch(es) restored",
            _describe(partitions),
            len(new_numbers),
            restored,
        )
        return starts

    # -- helpers -------------------------------------------------------------------------

    def _start_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The committed offset; without one, a few seconds back in time (a new group must
        not miss a procedure's start sent while it joined, nor replay ancient history)."""
        c = self.consumer
        if c is None or not tps:
            return {}
        try:
            committed = c.committed(tps, 10.0)
        except TransportError as exc:
            log.warning("could not read committed offsets (%s): starting %d s back", exc, 10)
            committed = dict.fromkeys(tps)
        starts = {tp: off for tp, off in committed.items() if off is not None}
        fresh = [tp for tp in tps if starts.get(tp) is None]
        if fresh:
            since = int(time.time() * 1000) - self.lookback_ms
            try:
                starts.update(c.offsets_for_times(fresh, since, 10.0))
            except TransportError as exc:
                log.warning("lookback seek failed, starting at the end: %s", exc)
        return starts

    def _restore(self, numbers: list[int], now: Instant) -> int:
        """Latches of the procedures on these partition numbers, from `telesafe.state`."""
        latest: dict[str, tuple[int, bytes | None]] = {}
        try:
            for r in self.read_state(numbers):
                if r.key is not None:
                    latest[r.key.decode("utf-8", "replace")] = (r.partition, r.value)
        except TransportError as exc:
            log.error(
                "could not read latch states (latched procedures may be unlatched here until "
                "their sites' records arrive): %s",
                exc,
            )
        restored = 0
        for pid, (number, value) in latest.items():
            if not value:
                continue  # a tombstone: closed or re-armed, nothing to restore
            try:
                state = LatchState.from_bytes(value)
            except LatchStateError as exc:
                log.error("latch state of %s not restored: %s", pid, exc)
                continue
            shard = self.shards.get(number)
            if shard is None:
                continue
            self.handle(shard.engine.restore(state, now), now)
            restored += 1
        return restored

    def _read_state_topic(self, numbers: list[int]) -> Iterable[Record]:
        return read_to_end(
            self.settings,
            self.topics.state,
            numbers,
            "telesafe-latch-restore",
            timeout_s=self.restore_timeout_s,
        )

    def _release_tps(self, partitions: list[TopicPartition]) -> None:
        now = self.clock.now()
        gone: set[int] = set()
        for tp in partitions:
            shard = self.shards.get(tp.partition)
            if shard is None:
                continue
            shard.time.drop(tp)
            if not shard.time.heard:
                gone.add(tp.partition)
        self._release_numbers(gone, now)

    def _release_numbers(self, numbers: set[int], now: Instant) -> None:
        for n in sorted(numbers):
            shard = self.shards.pop(n, None)
            if shard is None:
                continue
            for pid in list(shard.engine.procedures):
                self.handle(shard.engine.release(pid, now), now)

    def shard_of(self, partition: int) -> Shard | None:
        return self.shards.get(partition)


def _describe(partitions: list[TopicPartition]) -> str:
    by_number: dict[int, int] = {}
    for tp in partitions:
        by_number[tp.partition] = by_number.get(tp.partition, 0) + 1
    return (
        f"{len(partitions)} partition(s) of numbers {sorted(by_number)}" if partitions else "none"
    )
