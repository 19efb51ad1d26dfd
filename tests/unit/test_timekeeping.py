"""The loop's timing rules (monitor/service/timekeeping.py), with a fake clock: what a
record counts as heard, how far a partition's timers may run, when heartbeats are due."""

from __future__ import annotations

from monitor.engine.clock import MS, FakeClock
from monitor.kafka.api import TopicPartition, poll_ms
from monitor.kafka.freshness import MarkCover
from monitor.service.commits import AuditedOffsets, AuditPositions
from monitor.service.timekeeping import (
    PartitionTime,
    next_beat,
    poll_timeout_s,
    stamp,
    wake_at,
)

ROBOT = TopicPartition("telesafe.telemetry.robot", 3)
CONSOLE = TopicPartition("telesafe.telemetry.console", 3)
OPERATOR = TopicPartition("telesafe.operator", 3)


def broker_ms(clock: FakeClock, ago_ms: float) -> int:
    return (clock.now().utc_ns - round(ago_ms * MS)) // MS


def test_a_record_counts_as_heard_when_the_broker_appended_it() -> None:
    """It waited 400 ms in Kafka for a slow monitor: that is not the site's delay."""
    c = FakeClock()
    received = c.now()
    at = stamp(broker_ms(c, 400), received, floor_mono=0)
    assert received.mono_ns - at.mono_ns == 400 * MS
    assert received.utc_ns - at.utc_ns == 400 * MS  # staleness is judged at the broker


def test_stamp_never_goes_before_what_was_heard_nor_after_receipt() -> None:
    c = FakeClock()
    received = c.now()
    floor = received.mono_ns - 100 * MS
    assert stamp(broker_ms(c, 400), received, floor).mono_ns == floor
    assert stamp(broker_ms(c, -50), received, 0) == received  # broker clock ahead
    assert stamp(None, received, 0) == received  # no broker time: receipt


def test_a_partition_is_heard_up_to_its_slowest_topic_partition() -> None:
    c = FakeClock()
    t = PartitionTime(3)
    start = c.now().mono_ns
    for tp in (ROBOT, CONSOLE, OPERATOR):
        t.assign(tp, start, None)
    # Just assigned: heard only up to the assignment until a fetch has answered.
    c.advance_ms(50)
    assert t.horizon(c.now().mono_ns) == start
    for tp in (ROBOT, CONSOLE, OPERATOR):
        t.settle(tp, 0, c.now().mono_ns)
    assert t.horizon(c.now().mono_ns) == c.now().mono_ns
    # The console partition falls behind: 3 records processed, 10 at the broker.
    c.advance_ms(100)
    for off in range(3):
        t.processed(CONSOLE, off, c.now().mono_ns - 80 * MS)
    t.settle(CONSOLE, 10, c.now().mono_ns)
    t.settle(ROBOT, 0, c.now().mono_ns)
    assert t.horizon(c.now().mono_ns) == c.now().mono_ns - 80 * MS
    # Caught up again: heard up to the poll.
    for off in range(3, 10):
        t.processed(CONSOLE, off, c.now().mono_ns - 5 * MS)
    t.settle(CONSOLE, 10, c.now().mono_ns)
    assert t.horizon(c.now().mono_ns) == c.now().mono_ns


def test_a_revoke_freezes_time_where_the_monitor_last_heard() -> None:
    """Issue: deafness must hold from the first moment the monitor stops hearing a
    partition (the revoke), not from when a later poll returns."""
    c = FakeClock()
    t = PartitionTime(3)
    t.assign(ROBOT, c.now().mono_ns, None)
    t.settle(ROBOT, 0, c.now().mono_ns)
    last_poll = c.now().mono_ns
    c.advance_ms(250)  # the rebalance callback runs 250 ms into a poll
    t.freeze(ROBOT, last_poll)
    c.advance_ms(3000)  # the regroup takes seconds
    assert t.horizon(c.now().mono_ns) == last_poll
    # Assigned back (eager protocol): still frozen until the monitor has caught up.
    t.assign(ROBOT, c.now().mono_ns, 120)
    assert t.horizon(c.now().mono_ns) == last_poll
    t.settle(ROBOT, 125, c.now().mono_ns)
    assert t.horizon(c.now().mono_ns) == last_poll
    for off in range(120, 125):
        t.processed(ROBOT, off, last_poll + off * MS)
    t.settle(ROBOT, 125, c.now().mono_ns)
    assert t.horizon(c.now().mono_ns) == c.now().mono_ns


def test_unknown_watermark_keeps_a_partition_where_it_was() -> None:
    t = PartitionTime(0)
    t.assign(ROBOT, 1_000, None)
    t.settle(ROBOT, None, 9_000)
    assert t.horizon(9_000) == 1_000


def test_wake_and_poll_timeout() -> None:
    assert wake_at([None, 500, 300], 400, 900) == 300
    assert wake_at([], 400, 900) == 400
    assert poll_timeout_s(1_300 * MS, 1_000 * MS, 0.1) == 0.1
    assert poll_timeout_s(1_020 * MS, 1_000 * MS, 0.1) == 0.02
    assert poll_timeout_s(900 * MS, 1_000 * MS, 0.1) == 0.0


def test_a_cached_mark_vouches_only_as_of_the_broker_answer_it_covers() -> None:
    cover = MarkCover()
    assert cover.vouch(ROBOT, 10) is None  # no answer yet: not as of any instant
    cover.answered(ROBOT, 10, 1_000)
    assert cover.vouch(ROBOT, None) == (10, 1_000)  # nothing cached: the answer itself
    assert cover.vouch(ROBOT, 10) == (10, 1_000)
    cover.answered(ROBOT, 14, 2_000)  # appended since: the cache has not fetched them
    assert cover.vouch(ROBOT, 10) == (10, 1_000)  # still only as of the covered answer
    assert cover.vouch(ROBOT, 14) == (14, 2_000)
    cover.answered(ROBOT, 20, 3_000)
    assert cover.vouch(ROBOT, 14) == (14, 2_000)  # a fetcher stuck at 14 vouches no further
    assert cover.vouch(CONSOLE, 5) is None
    # answers asked again and again under steady traffic run a little ahead of the last
    # fetch: the newest one the cache has reached still vouches (not only the latest)
    chased = MarkCover()
    for i in range(10):
        chased.answered(ROBOT, 100 + i, 1_000 + i)
    assert chased.vouch(ROBOT, 105) == (105, 1_005)


def test_heartbeat_cadence_never_bursts_after_a_stall() -> None:
    assert next_beat(1_000, 1_005, 20) == 1_020
    assert next_beat(1_000, 5_000, 20) == 5_010  # not 200 catch-up bursts


def test_offsets_commit_only_once_their_audit_is_durable() -> None:
    o = AuditedOffsets()
    o.processed(10, {ROBOT: 5})
    o.processed(14, {ROBOT: 9, CONSOLE: 2})
    assert o.committable(9) == {}
    assert o.committable(12) == {ROBOT: 5}
    assert o.committable(12) == {}  # handed out once
    o.forget([CONSOLE])
    assert o.committable(20) == {ROBOT: 9}


def test_audit_positions_find_entries_already_in_the_ledger() -> None:
    p = AuditPositions(
        [
            {"source": "telesafe.operator:2:41", "source_n": 0},
            {"source": "telesafe.operator:2:41", "source_n": 1},
            {"source": "telesafe.operator:2:42", "source_n": 0},
            {"event": "monitor_started"},
        ]
    )
    assert len(p) == 3
    assert p.already_audited("telesafe.operator", 2, 41, 1)
    assert not p.already_audited("telesafe.operator", 2, 42, 1)  # its 2nd entry was lost
    assert not p.already_audited("telesafe.operator", 2, 43, 0)
    assert not p.already_audited("telesafe.operator", 1, 41, 0)


def test_a_stale_watermark_vouches_only_for_when_it_was_read() -> None:
    """kafka-python's cached mark is as old as the fetch response it parsed last: reaching
    it means "heard up to then", not "heard up to now" (a monitor 300 ms behind looked
    caught up, and stopped healthy procedures)."""
    t = PartitionTime(0)
    t.assign(ROBOT, 1_000, 0)
    for off in range(10):
        t.processed(ROBOT, off, 1_000 + off)
    t.settle(ROBOT, 10, 500_000_000, as_of_mono=100_000_000)
    assert t.horizon(500_000_000) == 100_000_000
    # A fresher answer moves it on; an older one never moves it back.
    t.settle(ROBOT, 10, 600_000_000, as_of_mono=590_000_000)
    assert t.horizon(600_000_000) == 590_000_000
    t.settle(ROBOT, 10, 700_000_000, as_of_mono=200_000_000)
    assert t.horizon(700_000_000) == 590_000_000


def test_a_stall_freezes_a_stale_partition_where_its_mark_held() -> None:
    """A stall freezes every partition at the last poll; one that was caught up only as of
    an older mark stays at that mark (it was never heard past it)."""
    t = PartitionTime(0)
    t.assign(ROBOT, 1_000, 0)
    t.processed(ROBOT, 0, 2_000)
    t.settle(ROBOT, 1, 500_000_000, as_of_mono=300_000_000)
    t.stall(heard_mono=500_000_000)
    assert t.horizon(800_000_000) == 300_000_000


def test_a_stall_ends_with_the_first_covered_answer_asked_after_it() -> None:
    """No fixed distrust after a stall: an answer asked before it vouches for nothing new,
    the first one asked after it (and covered by the cache) ends the deafness at once."""
    t = PartitionTime(0)
    t.assign(ROBOT, 1_000, 0)
    t.processed(ROBOT, 0, 2_000)
    t.settle(ROBOT, 1, 400_000_000, as_of_mono=390_000_000)
    t.stall(heard_mono=400_000_000)  # the loop did not poll from 400 to 650 ms
    t.settle(ROBOT, 1, 650_000_000, as_of_mono=380_000_000)  # asked before the stall
    assert t.horizon(650_000_000) == 390_000_000
    t.settle(ROBOT, 1, 652_000_000, as_of_mono=651_000_000)  # asked after it
    assert t.horizon(652_000_000) == 651_000_000


def test_a_poll_never_waits_less_than_asked_and_a_sub_millisecond_wait_is_not_a_spin() -> None:
    assert poll_ms(0.0) == 0  # asked not to wait: does not
    assert poll_ms(-0.5) == 0
    assert poll_ms(0.0004) == 1  # was int(0.4) = 0: a poll that returned at once, a spin
    assert poll_ms(0.001) == 1
    assert poll_ms(0.029) == 29  # 0.029 * 1000 is 28.999999999999996 in binary
    assert poll_ms(0.0291) == 30
    assert poll_ms(0.25) == 250
