"""A takeover's leftovers are worked off in bounded turns (issue: failover without
collateral): the records that arrived while a taken-over shard's latches were restored
are handed to the loop at most `budget` at a time, oldest first, grouped by the poll that
received them, and the shard's partitions are resumed only once none is left."""

from __future__ import annotations

from monitor.engine.clock import FakeClock, Instant
from monitor.engine.engine import Engine, EngineConfig
from monitor.kafka.api import Record, TopicPartition
from monitor.kafka.settings import KafkaSettings
from monitor.policy.loader import PackRegistry
from monitor.service.ownership import Ownership
from tests.unit.servicekit import INPUTS, PREFIX


def ownership() -> Ownership:
    packs = PackRegistry.from_dir()
    return Ownership(
        KafkaSettings(topic_prefix=PREFIX),
        lambda: Engine(packs, EngineConfig(monitor_id="t")),
        lambda decisions, now: None,
        FakeClock(),
        5.0,
        incremental=True,
        on_revoke=lambda tps: None,
        check_layout=lambda: None,
        read_state=lambda numbers: [],
    )


def rec(partition: int, offset: int) -> Record:
    return Record(INPUTS[1], partition, offset, b"k", b"{}", (), 0, True)


def restored(own: Ownership, number: int, waiting: list[tuple[Instant, Record]]) -> None:
    own.assigned([TopicPartition(t, number) for t in INPUTS])
    assert own.shards[number].restoring
    own.shards[number].waiting = list(waiting)
    while own.shards[number].restoring:  # the restore thread reports back
        own.finish_restores(own.clock.now())
    assert own.shards[number].draining


def test_waiting_records_are_drained_in_bounded_turns_in_order() -> None:
    own = ownership()
    first, second = Instant(1_000, 5_000), Instant(2_000, 6_000)
    waiting = [(first, rec(3, i)) for i in range(250)] + [
        (second, rec(3, i)) for i in range(250, 400)
    ]
    restored(own, 3, waiting)
    assert own.busy()
    seen: list[tuple[Instant, int]] = []
    turns = 0
    while True:
        batches, resume = own.drain(150)
        turns += 1
        assert sum(len(rs) for _, rs in batches) <= 150
        seen += [(at, r.offset) for at, rs in batches for r in rs]
        if resume:
            break
        assert own.shards[3].draining  # still paused: nothing newer may overtake
    assert turns == 3
    assert [o for _, o in seen] == list(range(400))  # oldest first, none lost or repeated
    assert {at for at, o in seen if o < 250} == {first} and {at for at, o in seen if o >= 250} == {
        second
    }
    assert sorted(resume) == sorted(TopicPartition(t, 3) for t in INPUTS)
    assert not own.shards[3].draining


def test_a_shard_held_by_the_backlog_balance_is_not_resumed_by_the_drain() -> None:
    own = ownership()
    restored(own, 2, [(Instant(1, 1), rec(2, 0))])
    own.shards[2].paused = True  # own partitions behind: the backlog waits
    batches, resume = own.drain(150)
    assert [r.offset for _, rs in batches for r in rs] == [0]
    assert resume == []
    assert not own.shards[2].draining


def test_an_empty_restore_resumes_at_once() -> None:
    own = ownership()
    restored(own, 1, [])
    batches, resume = own.drain(150)
    assert batches == [] and len(resume) == len(INPUTS)
