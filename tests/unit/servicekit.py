"""A deterministic stand-in for Kafka under the monitor service, for unit tests of the loop.

Not a mock of a Kafka client: an in-memory broker log per topic-partition with broker
append times from a FakeClock, and a consumer that implements the transport interface
(`monitor.kafka.api.Consumer`) over it, with scripted delivery delays and rebalances.
Integration tests use the real broker; these test the loop's timing rules exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.engine.clock import MS, FakeClock
from monitor.icd.topics import Topics
from monitor.kafka.api import (
    OFFSET_END,
    ErrorCallback,
    RebalanceListener,
    Record,
    TopicPartition,
    TopicSpec,
)
from monitor.kafka.settings import KafkaSettings
from monitor.metrics import MonitorMetrics
from monitor.policy.loader import PackRegistry
from monitor.service.options import MonitorOptions, Transport
from monitor.service.runner import MonitorService

PREFIX = "kit."
TOPICS = Topics(PREFIX)
INPUTS = (TOPICS.telemetry_console, TOPICS.telemetry_robot, TOPICS.operator)


@dataclass
class FakeBroker:
    clock: FakeClock
    partitions: int = 1
    logs: dict[TopicPartition, list[Record]] = field(default_factory=dict)

    def append(self, topic: str, key: bytes, value: bytes, partition: int = 0) -> Record:
        tp = TopicPartition(topic, partition)
        log = self.logs.setdefault(tp, [])
        rec = Record(
            topic, partition, len(log), key, value, (), self.clock.now().utc_ns // MS, True
        )
        log.append(rec)
        return rec


class FakeConsumer:
    """Delivers what the broker holds, `delay_ms` after it was appended (a slow monitor or
    a slow network), except while `held` (a rebalance in progress)."""

    incremental = False

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.clock = broker.clock
        self.listener: RebalanceListener | None = None
        self.assigned: dict[TopicPartition, int] = {}  # next offset to deliver
        self.delay_ms = 0.0
        self.held = False
        self.scripted: list[Callable[[], None]] = []
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.wake_mono = 0  # the rig's next scheduled event: a poll never waits past it
        self.cached_hw: dict[TopicPartition, int] = {}
        self._next_hw: dict[TopicPartition, int] = {}
        self.cached_at = 0  # the mono instant cached_hw holds as of
        self.fresh_marks_wanted = 0  # want_fresh_marks() calls (a timer due, not heard past)
        self.fresh_marks_wait_s = 0.0  # what want_fresh_marks() answers
        self._next_at = 0

    # -- scripting -------------------------------------------------------------------

    def rebalance(self, revoke: bool = True, assign: bool = True) -> None:
        """At the next poll, the listener hears a revoke of everything and/or an assignment
        of every input partition (as the eager range assignor does)."""
        tps = [TopicPartition(t, p) for t in INPUTS for p in range(self.broker.partitions)]

        def run() -> None:
            assert self.listener is not None
            if revoke:
                self.listener.revoked(sorted(self.assigned))
                self.assigned = {}
                self.held = True
            if assign:
                starts = self.listener.assigned(tps)
                for tp in tps:
                    off = starts.get(tp, self.committed_offsets.get(tp, OFFSET_END))
                    self.assigned[tp] = (
                        len(self.broker.logs.get(tp, [])) if off == OFFSET_END else off
                    )
                self.held = False

        self.scripted.append(run)

    # -- the transport interface --------------------------------------------------------

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self.listener = listener
        self.rebalance(revoke=False)

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        """What is due; if nothing, waits (moves the clock) up to `timeout_s`, or until the
        rig's next scheduled site record (`wake_mono`), whichever comes first."""
        while self.scripted:
            self.scripted.pop(0)()
        # Like librdkafka's cached watermarks: as of the previous fetch, not of now.
        self.cached_hw, self._next_hw = (
            self._next_hw,
            {tp: len(log) for tp, log in self.broker.logs.items()},
        )
        self.cached_at, self._next_at = self._next_at, self.clock.now().mono_ns
        out = self._due(max_records)
        if not out and timeout_s > 0:
            until = self.clock.now().mono_ns + round(timeout_s * 1e9)
            self.clock.set_mono(max(self.clock.now().mono_ns, min(until, self.wake_mono)))
            out = self._due(max_records)
        return out

    def _due(self, max_records: int) -> list[Record]:
        if self.held:
            return []
        now_ms = self.clock.now().utc_ns / MS
        out: list[Record] = []
        for tp, nxt in sorted(self.assigned.items()):
            log = self.broker.logs.get(tp, [])
            while nxt < len(log) and len(out) < max_records:
                if log[nxt].timestamp_ms + self.delay_ms > now_ms:
                    break
                out.append(log[nxt])
                nxt += 1
            self.assigned[tp] = nxt
        return out

    def assign(self, offsets: Mapping[TopicPartition, int]) -> None:
        raise NotImplementedError("the monitor subscribes")

    def assignment(self) -> list[TopicPartition]:
        return sorted(self.assigned)

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self.held = True

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self.held = False

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.committed_offsets.update(offsets)

    def committed(
        self, partitions: Sequence[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, int | None]:
        return {tp: self.committed_offsets.get(tp) for tp in partitions}

    def offsets_for_times(
        self, partitions: Sequence[TopicPartition], ts_ms: int, timeout_s: float
    ) -> dict[TopicPartition, int]:
        out = {}
        for tp in partitions:
            log = self.broker.logs.get(tp, [])
            out[tp] = next((r.offset for r in log if r.timestamp_ms >= ts_ms), OFFSET_END)
        return out

    def watermarks(
        self, partition: TopicPartition, timeout_s: float, cached: bool = False
    ) -> tuple[int, int] | None:
        if cached:
            return 0, self.cached_hw.get(partition, 0)
        return 0, len(self.broker.logs.get(partition, []))

    def high_watermark(self, partition: TopicPartition) -> tuple[int, int] | None:
        return self.cached_hw.get(partition, 0), self.cached_at

    def want_fresh_marks(self) -> float:
        self.fresh_marks_wanted += 1
        return self.fresh_marks_wait_s

    def position(self, partition: TopicPartition) -> int | None:
        return self.assigned.get(partition)

    def partitions_for(self, topic: str, timeout_s: float) -> list[int] | None:
        return list(range(self.broker.partitions))

    def close(self, timeout_s: float = 5.0) -> None:
        pass


class FakeProducer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.sent: list[tuple[float, str, bytes | None, bytes | None]] = []

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        on_error: ErrorCallback | None = None,
    ) -> None:
        self.sent.append((self.broker.clock.now().mono_ns / MS, topic, key, value))

    def deliver(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        timeout_s: float = 10.0,
    ) -> tuple[str, int, int]:
        self.send(topic, key, value, headers)
        return topic, 0, len(self.sent) - 1

    def service(self) -> None:
        pass

    def flush(self, timeout_s: float) -> int:
        return 0

    def close(self, timeout_s: float = 5.0) -> None:
        pass


class FakeAdmin:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    def list_topics(self, timeout_s: float) -> list[str]:
        return TOPICS.all()

    def partition_counts(self, names: Sequence[str], timeout_s: float) -> dict[str, int]:
        return {n: self.broker.partitions for n in names if n in TOPICS.all()}

    def create_topics(self, specs: Sequence[TopicSpec], timeout_s: float) -> list[str]:
        return []

    def topic_configs(self, names: Sequence[str], timeout_s: float) -> dict[str, dict[str, str]]:
        return {n: {"message.timestamp.type": "LogAppendTime"} for n in names}

    def alter_topic_config(self, name: str, config: Mapping[str, str], timeout_s: float) -> None:
        pass

    def delete_topics(self, names: Sequence[str], timeout_s: float) -> None:
        pass

    def alter_group_config(self, group: str, config: Mapping[str, str], timeout_s: float) -> None:
        pass

    def create_acls(self, grants: Sequence[Any], timeout_s: float) -> None:
        pass

    def close(self) -> None:
        pass


class ListSink:
    """Audit entries kept in a list; everything is durable at once."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def submit(self, entry: dict[str, Any], checkpoint: bool = False) -> None:
        self.entries.append(entry)

    def submitted(self) -> int:
        return len(self.entries)

    def durable(self) -> int:
        return len(self.entries)

    def recent_entries(self) -> list[dict[str, Any]]:
        return []

    def stats(self) -> dict[str, float]:
        return {}

    def stop(self) -> None:
        pass


class Rig:
    """A MonitorService on a FakeBroker, two sites that can heartbeat, and the decisions."""

    def __init__(self, pid: str = "P-1", state: list[Record] | None = None) -> None:
        self.clock = FakeClock()
        self.broker = FakeBroker(self.clock)
        self.consumer = FakeConsumer(self.broker)
        self.producers = (
            FakeProducer(self.broker),
            FakeProducer(self.broker),
            FakeProducer(self.broker),
        )
        self.sink = ListSink()
        self.pid = pid
        self.seq = {"console": 0, "robot": 0}
        self.svc = MonitorService(
            KafkaSettings(topic_prefix=PREFIX),
            PackRegistry.from_dir(),
            MonitorOptions(monitor_id="kit", http_port=0, group_id="kit"),
            self.sink,
            clock=self.clock,
            metrics=MonitorMetrics(with_process=False),
            transport=Transport(
                self.consumer,
                FakeAdmin(self.broker),
                self.producers,
                read_state=lambda numbers: list(state or []),
            ),
        )
        self.svc.start(loop_thread=False)

    def close(self) -> None:
        self.svc.http.stop()

    # -- the sites --------------------------------------------------------------------

    def record(self, site: str, type_: str, **fields: Any) -> None:
        seq = self.seq[site]
        self.seq[site] += 1
        topic = TOPICS.telemetry_console if site == "console" else TOPICS.telemetry_robot
        value = {
            "v": 1,
            "type": type_,
            "procedure_id": self.pid,
            "site": site,
            "seq": seq,
            "sent_at": self.clock.now().utc_ns,
            **fields,
        }
        self.broker.append(topic, self.pid.encode(), json.dumps(value).encode())

    def heartbeat(self, site: str) -> None:
        self.record(
            site,
            "heartbeat",
            state="operating",
            clock={"source": "ptp", "offset_ns": 0, "max_error_ns": 1000},
        )

    def start_procedure(self) -> None:
        self.record(
            "robot",
            "procedure_start",
            surgeon_id="dr",
            robot={"model": "m", "serial": "s"},
            arms=["psm1"],
        )

    def run(
        self, ms: float, beat: tuple[str, ...] = ("console", "robot"), every_ms: float = 20
    ) -> None:
        """Advance `ms`, the sites in `beat` heartbeating every `every_ms`, the loop turning."""
        end = self.clock.now().mono_ns + round(ms * MS)
        next_beat = self.clock.now().mono_ns
        while self.clock.now().mono_ns < end:
            if self.clock.now().mono_ns >= next_beat:
                for s in beat:
                    self.heartbeat(s)
                next_beat += round(every_ms * MS)
            self.consumer.wake_mono = min(next_beat, end)
            self.svc.step()

    def stop_process(self, ms: float, beat: tuple[str, ...] = ("console", "robot")) -> None:
        """SIGSTOP for `ms`: the sites go on (those in `beat`), the monitor turns not once."""
        end = self.clock.now().mono_ns + round(ms * MS)
        while self.clock.now().mono_ns < end:
            for s in beat:
                self.heartbeat(s)
            self.clock.advance_ms(20)

    # -- what came out ------------------------------------------------------------------

    def commands(self, ctype: str) -> list[tuple[float, dict[str, Any]]]:
        out = []
        for t, topic, _k, v in self.producers[0].sent + self.producers[1].sent:
            d = json.loads(v or b"{}")
            if topic == TOPICS.commands and d.get("type") == ctype:
                out.append((t, d))
        return sorted(out, key=lambda x: x[0])

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.sink.entries if e["event"] == kind]
