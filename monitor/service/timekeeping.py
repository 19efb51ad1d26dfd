"""How the monitor's loop keeps time, per partition: pure functions and a small tracker.

The rule (docs/architecture.md, "When the monitor itself cannot hear"): the monitor may
only judge a site silent for time it *could* hear. For each topic-partition it tracks the
instant up to which it has heard every record ("heard until"):

- caught up (nothing left at the broker that it has not processed): up to the moment its
  last poll returned;
- behind (records waiting in Kafka because the monitor was slow, or a rebalance or pause
  stopped it): up to the broker append time of the last record it processed.

A record is stamped with its broker append time on the monitor's clock (never earlier than
what was already heard on its topic-partition, never later than its receipt), so time it
spent waiting for the monitor is not counted against the site, and staleness measures the
site's own delay. A partition number's engine runs its timers only up to the earliest
"heard until" of its topic-partitions; while that lags the clock by more than the silence
stop limit, its procedures get no `monitor_heartbeat` (the robot's dead-man takes over).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from monitor.engine.clock import Instant
from monitor.kafka.api import TopicPartition

NS_PER_MS = 1_000_000
# A loop that did not poll for this long (beyond what it asked to wait) was deaf: every
# partition is frozen where it was heard, until a broker answer asked after the stall is
# covered (monitor/kafka/freshness.py; the loop asks for one at once). A fixed 100 ms of
# distrust after each stall, as before the end-offset answers, only lengthened the deafness:
# on a starved host a 150 ms stall became > 300 ms and withheld healthy procedures' heartbeats.
STALL_NS = 100 * NS_PER_MS


def stamp(broker_ms: int | None, received: Instant, floor_mono: int) -> Instant:
    """The instant a record counts as heard: its broker append time on the monitor's clock,
    clamped into [floor_mono, received]. Without a broker time, its receipt."""
    if broker_ms is None:
        return received
    mono = received.mono_ns - (received.utc_ns - broker_ms * NS_PER_MS)
    if mono < floor_mono:
        mono = floor_mono
    if mono >= received.mono_ns:
        return received
    return received.at_mono(mono)


@dataclass(slots=True)
class PartitionTime:
    """What the monitor has heard on the topic-partitions of one partition number.

    A topic-partition is *behind* from its assignment (or revoke, or pause) until a poll
    shows nothing left at the broker that the monitor has not processed; while behind, it
    is heard only up to the last record processed (or the moment it stopped hearing).
    """

    number: int
    heard: dict[TopicPartition, int] = field(default_factory=dict)  # mono ns
    behind: set[TopicPartition] = field(default_factory=set)
    stopped: set[TopicPartition] = field(default_factory=set)  # revoked, not (yet) back
    next_offset: dict[TopicPartition, int] = field(default_factory=dict)
    # caught up, but only as of this instant (the high watermark was older than the poll)
    as_of: dict[TopicPartition, int] = field(default_factory=dict)

    def assign(self, tp: TopicPartition, now_mono: int, start_offset: int | None) -> None:
        """Start consuming `tp` at `start_offset` (None or negative: the end). A
        topic-partition frozen by a revoke stays frozen where it was until the monitor has
        caught up on it."""
        if tp not in self.behind:
            self.heard[tp] = now_mono
            self.behind.add(tp)
            self.as_of.pop(tp, None)
        self.stopped.discard(tp)
        if start_offset is None or start_offset < 0:
            self.next_offset.pop(tp, None)
        else:
            self.next_offset[tp] = start_offset

    def freeze(self, tp: TopicPartition, heard_mono: int) -> None:
        """The monitor stops hearing `tp`; it had heard everything up to `heard_mono`. It
        stays behind until assigned again and caught up."""
        if tp not in self.behind:
            # caught up only as of an older mark: heard up to that, not to `heard_mono`
            self.heard[tp] = min(heard_mono, self.as_of.get(tp, heard_mono))
            self.behind.add(tp)
            self.as_of.pop(tp, None)
        self.stopped.add(tp)

    def stall(self, heard_mono: int) -> None:
        """The whole process could not hear from `heard_mono` (it was stopped, or paused
        longer than a poll may take): every topic-partition is behind from there, until a
        mark covering a broker answer asked after `heard_mono` settles it (`settle`'s
        `as_of_mono`: the client's cache, as old as the stall, vouches for no later)."""
        for tp in self.heard:
            self.freeze(tp, heard_mono)
            self.stopped.discard(tp)

    def drop(self, tp: TopicPartition) -> None:
        self.as_of.pop(tp, None)
        self.heard.pop(tp, None)
        self.behind.discard(tp)
        self.stopped.discard(tp)
        self.next_offset.pop(tp, None)

    def floor(self, tp: TopicPartition) -> int:
        """No record of `tp` may be stamped earlier than this (time already judged)."""
        return self.heard.get(tp, 0)

    def processed(self, tp: TopicPartition, offset: int, heard_mono: int) -> None:
        self.next_offset[tp] = offset + 1
        if heard_mono > self.heard.get(tp, 0):
            self.heard[tp] = heard_mono

    def settle(
        self,
        tp: TopicPartition,
        high_watermark: int | None,
        received_mono: int,
        as_of_mono: int | None = None,
    ) -> None:
        """After a poll that returned at `received_mono`: caught up on `tp` when the broker's
        high watermark (None: not known yet) is not beyond what was processed. The mark
        holds as of `as_of_mono` (default: `received_mono`), so everything appended before
        then is heard, and no later: a stale mark must not vouch for the present."""
        if high_watermark is None or tp in self.stopped:
            return
        nxt = self.next_offset.get(tp)
        if nxt is None or nxt >= high_watermark:
            self.behind.discard(tp)
            if as_of_mono is None or as_of_mono >= received_mono:
                self.heard[tp] = received_mono
                self.as_of.pop(tp, None)
            else:  # heard up to the answer, or to the last record if that is later
                self.heard[tp] = self.as_of[tp] = max(as_of_mono, self.heard.get(tp, 0))
        elif tp not in self.behind:
            self.behind.add(tp)
            self.as_of.pop(tp, None)

    def horizon(self, received_mono: int) -> int:
        """Everything of this number is heard up to here (at most `received_mono`)."""
        h = self.backlog_horizon(received_mono)
        for v in self.as_of.values():
            if v < h:
                h = v
        return h

    def backlog_horizon(self, received_mono: int) -> int:
        """Like `horizon`, counting only records left waiting at the broker, not the age of
        a caught-up partition's high watermark: how far behind the loop's *work* is."""
        h = received_mono
        for tp in self.behind:
            v = self.heard.get(tp, received_mono)
            if v < h:
                h = v
        return h


def wake_at(deadlines: Iterable[int | None], *others: int) -> int:
    """The earliest of the engines' next deadlines (None: none) and the loop's own ones."""
    best = min(others)
    for d in deadlines:
        if d is not None and d < best:
            best = d
    return best


def poll_timeout_s(wake_mono: int, now_mono: int, cap_s: float) -> float:
    """How long the next poll may wait: until the wake-up, at most `cap_s`, never negative."""
    return max(0.0, min(cap_s, (wake_mono - now_mono) / 1e9))


def next_beat(previous_due: int, now_mono: int, interval_ns: int) -> int:
    """The next heartbeat burst: on the cadence, but never a burst of catch-up beats after a
    stall (at least half an interval from now)."""
    return max(previous_due + interval_ns, now_mono + interval_ns // 2)


def deaf_ns(previous_return: int, poll_started: int, poll_returned: int, timeout_s: float) -> int:
    """How long the loop could not hear up to this poll's return: the turn between the
    previous poll's return and this poll, plus whatever the poll took beyond what it was
    asked to wait (the process was stopped, swapped out, or a callback blocked). 0 before
    the first poll (`previous_return` 0). A loop is deaf when this exceeds STALL_NS."""
    if previous_return == 0:
        return 0
    overrun = poll_returned - poll_started - int(timeout_s * 1e9)
    return max(overrun, 0) + max(poll_started - previous_return, 0)
