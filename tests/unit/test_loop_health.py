"""The loop's health, readiness, load meter, deafness and backlog rules as pure functions
(monitor/service/health.py, timekeeping.deaf_ns, Ownership.balance_backlog)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from monitor.engine.clock import MS
from monitor.kafka.api import TopicPartition
from monitor.service import health
from monitor.service.ownership import OWN_BEHIND_NS, OWN_CAUGHT_UP_NS, Ownership, Shard
from monitor.service.timekeeping import STALL_NS, PartitionTime, deaf_ns

S = 1_000_000_000


def test_a_loop_that_waits_most_of_the_time_is_not_busy() -> None:
    load = health.LoopLoad(0)
    t = 0
    for turn in range(1, 401):  # 1 ms of work, then a 9 ms wait inside poll; 4 s in all
        start = t + 1 * MS
        t = start + 9 * MS
        load.turned(start, t, 0.009)
        if turn % 25 == 0:  # housekeeping every 250 ms
            load.sample(t)
    assert 0.09 < load.ratio < 0.11


def test_a_poll_that_overruns_its_wait_counts_as_busy() -> None:
    load = health.LoopLoad(0)
    load.turned(0, 100 * MS, 0.0)  # asked not to wait, took 100 ms (callbacks, GC)
    assert load.sample(100 * MS) == 0.25  # one sample: a quarter of the way to 1.0


def test_health_names_each_problem() -> None:
    assert health.health(None, True, 0.01)["problems"] == []
    stalled = health.health(None, True, health.STALL_S + 0.5)["problems"]
    assert stalled == [f"monitor loop stalled for {health.STALL_S + 0.5:.1f} s"]
    stopped = health.health(RuntimeError("boom"), False, 0.0)["problems"]
    assert stopped == ["monitor loop stopped: boom"]


def test_not_ready_until_a_partition_is_held() -> None:
    ok, d = health.readiness({"problems": []}, 0, False, 0.0, {})
    assert not ok and "joining the consumer group" in d["problems"][0]
    ok, d = health.readiness({"problems": []}, 0, True, 0.0, {})
    assert not ok and "more instances than partitions" in d["problems"][0]
    ok, d = health.readiness({"problems": []}, 3, True, 0.2, {"0": 0.002})
    assert ok and d["partitions_assigned"] == 3 and d["problems"] == []


def test_saturated_only_when_busy_and_behind() -> None:
    busy, lag = health.SATURATED_BUSY + 0.05, health.SATURATED_LAG_S + 0.05
    assert health.readiness({"problems": []}, 3, True, busy, {"0": 0.01})[0]  # busy, keeping up
    assert health.readiness({"problems": []}, 3, True, 0.5, {"0": lag})[0]  # behind, idle: a blip
    ok, d = health.readiness({"problems": []}, 3, True, busy, {"0": 0.01, "4": lag})
    assert not ok
    assert d["problems"][0].startswith("saturated: loop busy") and "partition(s) 4;" in d[
        "problems"
    ][0]


def test_deafness_is_the_turn_plus_the_poll_overrun() -> None:
    assert deaf_ns(0, 5 * S, 6 * S, 0.1) == 0  # the first poll
    assert deaf_ns(1 * S, 1 * S + 2 * MS, 1 * S + 12 * MS, 0.01) == 2 * MS  # ordinary
    # SIGSTOP inside poll: asked to wait 10 ms, returned 1.5 s later
    assert deaf_ns(1 * S, 1 * S, 2 * S + 500 * MS, 0.01) == 1_490 * MS
    # a long turn between polls (GC, a blocked callback)
    assert deaf_ns(1 * S, 1 * S + 300 * MS, 1 * S + 300 * MS, 0.0) == 300 * MS > STALL_NS


def _shard(n: int, *, catching_up: bool, heard_at: int, behind: bool) -> Shard:
    t = PartitionTime(n)
    tp = TopicPartition("robot", n)
    t.heard[tp] = heard_at
    if behind:
        t.behind.add(tp)
    return Shard(n, cast(Any, None), t, catching_up=catching_up)


def _ownership(*shards: Shard) -> Ownership:
    own = cast(Ownership, SimpleNamespace(shards={s.number: s for s in shards}))
    return own


def test_a_taken_over_backlog_waits_while_own_procedures_are_behind() -> None:
    now = 10 * S
    own = _shard(0, catching_up=False, heard_at=now - OWN_BEHIND_NS - MS, behind=True)
    taken = _shard(1, catching_up=True, heard_at=now - 3 * S, behind=True)
    o = _ownership(own, taken)
    pause, resume = Ownership.balance_backlog(o, now)
    assert pause == [TopicPartition("robot", 1)] and resume == [] and taken.paused
    # own shard catches up to within OWN_CAUGHT_UP_NS: the backlog resumes
    own.time.heard[TopicPartition("robot", 0)] = now + S - OWN_CAUGHT_UP_NS
    pause, resume = Ownership.balance_backlog(o, now + S)
    assert pause == [] and resume == [TopicPartition("robot", 1)] and not taken.paused
    assert taken.catching_up  # still behind itself
    taken.time.behind.clear()
    Ownership.balance_backlog(o, now + S)
    assert not taken.catching_up  # an ordinary shard from now on


def test_nothing_to_balance_without_a_takeover() -> None:
    o = _ownership(_shard(0, catching_up=False, heard_at=0, behind=True))
    assert Ownership.balance_backlog(o, 10 * S) == ([], [])
