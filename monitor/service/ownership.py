"""Which procedures this instance owns: one engine per partition number (a *shard*).

The ICD topics are co-partitioned, so partition N of the console, robot, operator and state
topics holds the same procedures: a shard owns partition N of each, runs one `Engine` for
those procedures, and keeps its own time (`timekeeping.PartitionTime`). The consumer's
rebalance listener (`Ownership`) creates shards as partitions arrive (restoring their
latches from `telesafe.state` before any of their records is processed), freezes a shard's
time the moment a partition stops being heard, and releases shards that moved away.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

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
from monitor.service.timekeeping import NS_PER_MS, PartitionTime

log = logging.getLogger("telesafe.ownership")

# A taken-over partition's backlog pauses while this instance's own partitions are behind
# by more than this, and resumes once they are within the second (`balance_backlog`).
OWN_BEHIND_NS = 40 * NS_PER_MS
OWN_CAUGHT_UP_NS = 15 * NS_PER_MS

Handle = Callable[[list[Decision], Instant], None]


@dataclass
class Shard:
    number: int
    engine: Engine
    time: PartitionTime
    # Until its latches are restored, a new shard's partitions are paused and any record
    # that still arrives waits here: no record may be judged before its procedure's latch
    # is back (else a breach would latch it again under a new command id).
    restoring: bool = False
    waiting: list[tuple[Instant, Record]] = field(default_factory=list)
    # Restored, its waiting records being worked off a small batch per turn (`drain`);
    # its partitions stay paused until none is left.
    draining: bool = False
    # Taken over and not yet caught up: its backlog yields to the shards this instance
    # already had (their procedures must not wait behind another instance's leftovers).
    catching_up: bool = False
    paused: bool = False


@dataclass
class Restored:
    """The outcome of a background restore: the newest latch states (by partition number),
    or the error that stops the monitor (a broken topic layout)."""

    numbers: list[int]
    states: list[tuple[int, LatchState]] = field(default_factory=list)
    error: BaseException | None = None


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
        self.assigned_before = False
        self.rebalances = 0
        self._pending_release: set[int] = set()
        self.restored: queue.SimpleQueue[Restored] = queue.SimpleQueue()
        self.to_pause: list[TopicPartition] = []  # the loop pauses these after the poll

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
        """Only the start offsets are worked out here, on the loop thread (a round trip or
        two); the layout check and the latch restore run on a helper thread while the new
        partitions stay paused, so the procedures this instance already owns are never
        held up by a takeover (issue: failover without collateral)."""
        self.rebalances += 1
        now = self.clock.now()
        numbers = {tp.partition for tp in partitions}
        if not self.incremental:
            gone = self._pending_release - numbers
            self._pending_release = set()
            self._release_numbers(gone, now)
        new_numbers = sorted(n for n in numbers if n not in self.shards)
        for n in new_numbers:
            self.shards[n] = Shard(n, self.make_engine(), PartitionTime(n), restoring=True)
        starts = self._start_offsets([tp for tp in partitions if tp.topic in self.inputs])
        for tp in partitions:
            if tp.topic in self.inputs:
                self.shards[tp.partition].time.assign(tp, now.mono_ns, starts.get(tp))
        self.assigned_before = self.assigned_once  # not this instance's first assignment
        self.assigned_once = True
        if new_numbers:
            self.to_pause += [tp for tp in partitions if tp.partition in new_numbers]
            threading.Thread(
                target=self._restore_in_background,
                args=(new_numbers,),
                name="telesafe-restore",
                daemon=True,
            ).start()
        if partitions:
            log.info(
                "assigned %s; %d new shard(s), restoring their latches",
                _describe(partitions),
                len(new_numbers),
            )
        return starts

    def _restore_in_background(self, numbers: list[int]) -> None:
        try:
            self.check_layout()  # co-partitioning and append time, on every assignment
            self.restored.put(Restored(numbers, self._read_latches(numbers)))
        except BaseException as exc:  # handed to the loop thread, which stops the monitor
            self.restored.put(Restored(numbers, error=exc))

    def finish_restores(self, now: Instant) -> None:
        """Called by the loop every turn: apply restores that are done; their shards then
        drain what waited for them (`drain`)."""
        while True:
            try:
                r = self.restored.get_nowait()
            except queue.Empty:
                return
            if r.error is not None:
                raise r.error
            for number, state in r.states:
                shard = self.shards.get(number)
                if shard is not None and shard.restoring:
                    self.handle(shard.engine.restore(state, now), now)
            for n in r.numbers:
                shard = self.shards.get(n)
                if shard is not None and shard.restoring:
                    shard.restoring = False
                    shard.draining = True
                    shard.catching_up = self.assigned_before
            log.info(
                "latches of partition(s) %s restored: %d latched procedure(s)",
                r.numbers,
                len(r.states),
            )

    def drain(self, budget: int) -> tuple[list[tuple[Instant, list[Record]]], list[TopicPartition]]:
        """What waited for restored shards, at most `budget` records, oldest first and
        grouped by the poll that received them; and the partitions of shards now drained,
        to resume (unless the backlog balance holds them paused). Bounded, so the records
        that arrived with a takeover never hold the procedures this instance already
        supervised behind one long turn (issue: failover without collateral)."""
        batches: list[tuple[Instant, list[Record]]] = []
        resume: list[TopicPartition] = []
        for shard in self.shards.values():
            if not shard.draining:
                continue
            if budget > 0 and shard.waiting:
                take = shard.waiting[:budget]
                del shard.waiting[:budget]
                budget -= len(take)
                for at, group in itertools.groupby(take, key=lambda w: w[0]):
                    batches.append((at, [r for _, r in group]))
            if not shard.waiting:
                shard.draining = False
                if not shard.paused:
                    resume += shard.time.heard
        return batches, resume

    def timer_wakes(self) -> list[int | None]:
        """When each shard's timers want the loop next (a shard behind: by its records). A
        timer due but not heard past asks for fresh marks and waits as the consumer says."""
        h = self.heard_mono
        heard = [s for s in self.shards.values() if not s.time.behind]
        dues = [(s.engine.next_deadline(), s.time) for s in heard]
        if self.consumer is None or not any(d and t.horizon(h) < d <= h for d, t in dues):
            return [d for d, _ in dues]
        retry = h + int(self.consumer.want_fresh_marks() * 1e9)
        return [d if d is None or d > h else max(d, retry) for d, _ in dues]

    def busy(self) -> bool:
        """A shard is restoring, draining or catching up on a taken-over backlog."""
        return any(s.restoring or s.draining or s.catching_up for s in self.shards.values())

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

    def _read_latches(self, numbers: list[int]) -> list[tuple[int, LatchState]]:
        """The newest latch state of every latched procedure on these partition numbers,
        from `telesafe.state` (runs on the restore thread; the engines are not touched)."""
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
        out: list[tuple[int, LatchState]] = []
        for pid, (number, value) in latest.items():
            if not value:
                continue  # a tombstone: closed or re-armed, nothing to restore
            try:
                out.append((number, LatchState.from_bytes(value)))
            except LatchStateError as exc:
                log.error("latch state of %s not restored: %s", pid, exc)
        return out

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

    def settle(
        self,
        received_mono: int,
        high_watermark: Callable[[TopicPartition], tuple[int, int] | None],
    ) -> None:
        """After each poll: which topic-partitions are caught up, from each one's high
        watermark and the instant it holds as of (`Consumer.high_watermark`). A record the
        broker holds that was not processed means the monitor has not heard past it."""
        for shard in self.shards.values():
            t = shard.time
            for tp in list(t.heard):
                mark = high_watermark(tp)
                if mark is None:
                    t.settle(tp, None, received_mono)
                else:
                    t.settle(tp, mark[0], received_mono, mark[1])

    def stalled(self, heard_mono: int) -> None:
        """The loop could not hear from `heard_mono` (`PartitionTime.stall`); ask for marks."""
        for shard in self.shards.values():
            shard.time.stall(heard_mono)
        if self.consumer is not None:
            self.consumer.want_fresh_marks()

    def held(self) -> int:
        """Topic-partitions held (an instance holding none supervises nothing)."""
        return sum(len(s.time.heard) for s in self.shards.values())

    def balance_backlog(self, now_mono: int) -> tuple[list[TopicPartition], list[TopicPartition]]:
        """Partitions taken over come with a backlog (everything since the dead owner's
        last commit). librdkafka hands records over in one queue, so that backlog would
        delay the records of the procedures this instance already supervised: while any of
        those is behind by over OWN_BEHIND_NS, the taken-over partitions are paused (they
        are late already, and withheld from monitor_heartbeat until caught up), and they
        resume once it is within OWN_CAUGHT_UP_NS. Returns (pause, resume) for the loop."""
        shards = self.shards.values()
        pause: list[TopicPartition] = []
        resume: list[TopicPartition] = []
        if not any(s.catching_up for s in shards):
            return pause, resume
        own_lag = max(
            (
                now_mono - s.time.backlog_horizon(now_mono)
                for s in shards
                if not s.catching_up and not s.restoring
            ),
            default=0,
        )
        for s in shards:
            if not s.catching_up or s.draining:
                continue  # a draining shard's partitions are resumed by `drain`
            if s.paused and own_lag <= OWN_CAUGHT_UP_NS:
                resume += s.time.heard
                s.paused = False
            elif not s.paused and own_lag > OWN_BEHIND_NS:
                pause += s.time.heard
                s.paused = True
            if not s.paused and not s.time.behind:
                s.catching_up = False  # caught up: an ordinary shard from now on
        return pause, resume

    def shard_of(self, partition: int) -> Shard | None:
        return self.shards.get(partition)


def _describe(partitions: list[TopicPartition]) -> str:
    by_number: dict[int, int] = {}
    for tp in partitions:
        by_number[tp.partition] = by_number.get(tp.partition, 0) + 1
    return (
        f"{len(partitions)} partition(s) of numbers {sorted(by_number)}" if partitions else "none"
    )
