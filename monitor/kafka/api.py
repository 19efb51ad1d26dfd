"""The transport interface: what telesafe needs from a Kafka client, and nothing else.

Library-free on purpose: `monitor/kafka/confluent.py` (librdkafka, the default) and
`monitor/kafka/kafkapython.py` (pure Python) implement it, and no other module of telesafe
imports a Kafka client. Every call that can block takes a timeout in seconds.

Threading: a Consumer is used from one thread only (its rebalance listener is called on
that thread, inside `poll`). A Producer's `send` may be called from any thread; delivery
errors are reported through `on_error` callbacks run inside `service()`/`flush()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from monitor.errors import EXIT_UNAVAILABLE, KafkaLayerError

if TYPE_CHECKING:
    from monitor.kafka.profiles import AclGrant

Backend = Literal["confluent", "kafka-python"]
BACKENDS: tuple[Backend, ...] = ("confluent", "kafka-python")
DEFAULT_BACKEND: Backend = "confluent"

OFFSET_END = -1  # "the end of the partition" wherever an offset is accepted


def poll_ms(timeout_s: float) -> int:
    """A poll timeout in whole milliseconds, rounded up (never negative). Both clients take
    milliseconds and truncate: a wait of 0.4 ms became a poll that did not wait, and a loop
    waiting for a deadline less than 1 ms away spun until it came (seen: ~400 empty turns a
    second from the heartbeat schedule alone, thousands while waiting for fresh marks)."""
    return max(0, math.ceil(timeout_s * 1000 - 1e-6))


class TransportError(KafkaLayerError):
    """A Kafka operation failed (broker unreachable, timeout, refused). One readable line."""

    exit_code = EXIT_UNAVAILABLE


class TransportFatal(TransportError):
    """The client cannot go on (fenced static member, fatal producer error): exit, and let
    the supervisor restart the process; the robot's dead-man timer covers the gap."""


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record. `timestamp_ms` is the broker's append time when
    `log_append_time` is true (topics created with message.timestamp.type=LogAppendTime),
    else the producer's create time."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int
    log_append_time: bool


class RebalanceListener(Protocol):
    """Told about partition moves, on the consumer's thread, inside `Consumer.poll`.

    Incremental: `assigned` lists only partitions added, `revoked` only those taken away
    (an eager protocol revokes everything and assigns everything, which fits too).
    """

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """These partitions go away (still owned; commit what is done). Keep it short."""

    def lost(self, partitions: list[TopicPartition]) -> None:
        """These partitions were taken without a revoke (session lost): do not commit."""

    def assigned(self, partitions: list[TopicPartition]) -> Mapping[TopicPartition, int]:
        """These partitions arrive. Return start offsets for any that must not start at
        the committed offset (or the reset policy); no record of them is returned before
        this call."""


class Consumer(Protocol):
    incremental: bool
    """True when a rebalance moves only the partitions that change hands (cooperative or
    the KIP-848 consumer protocol); False when it revokes and reassigns everything."""

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        """Join the group for these topics (partitions come through the listener)."""

    def assign(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Read exactly these partitions from these offsets (no group); OFFSET_END allowed."""

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        """Wait up to `timeout_s` for the first record, then return it with whatever else
        is already fetched (never waits for more), at most `max_records`. Rebalance
        callbacks run inside. Raises TransportFatal on a fatal client error."""

    def assignment(self) -> list[TopicPartition]: ...

    def pause(self, partitions: Sequence[TopicPartition]) -> None: ...

    def resume(self, partitions: Sequence[TopicPartition]) -> None: ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit these next-offsets asynchronously; failures are logged, never raised."""

    def committed(
        self, partitions: Sequence[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, int | None]: ...

    def offsets_for_times(
        self, partitions: Sequence[TopicPartition], ts_ms: int, timeout_s: float
    ) -> dict[TopicPartition, int]:
        """First offset at or after `ts_ms` per partition (the end offset if none)."""

    def watermarks(
        self, partition: TopicPartition, timeout_s: float, cached: bool = False
    ) -> tuple[int, int] | None:
        """(low, high) offsets; `cached`: from the last fetch, no network (None if unknown)."""

    def high_watermark(self, partition: TopicPartition) -> tuple[int, int] | None:
        """(high watermark, monotonic ns as of which it holds): every record the broker
        appended to `partition` before that instant has an offset below it. Cheap enough to
        ask after every poll (no blocking network call beyond a short, rate-limited one);
        None if unknown. Precondition: `partition` is assigned to this consumer."""

    def want_fresh_marks(self) -> float:
        """A timer is due but not yet heard past: ask the broker for end offsets soon (the
        next `high_watermark` answers may then vouch for the present). Never blocks.
        Returns how long the loop had best wait in `poll` before asking `high_watermark`
        again (0.0: at once)."""

    def position(self, partition: TopicPartition) -> int | None:
        """The next offset to be returned, if known."""

    def partitions_for(self, topic: str, timeout_s: float) -> list[int] | None:
        """Partition numbers of a topic, or None if it does not exist."""

    def close(self, timeout_s: float = 5.0) -> None: ...


ErrorCallback = Callable[[str], None]


class Producer(Protocol):
    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        on_error: ErrorCallback | None = None,
    ) -> None:
        """Queue a record; never blocks on the network. Raises TransportError when it
        cannot even be queued (queue full, unknown topic); `on_error(reason)` runs from
        `service()`/`flush()` if delivery fails later."""

    def deliver(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        timeout_s: float = 10.0,
    ) -> tuple[str, int, int]:
        """Send and wait for the broker's acknowledgement: (topic, partition, offset)."""

    def service(self) -> None:
        """Serve delivery reports and client errors now (call often; cheap when idle)."""

    def flush(self, timeout_s: float) -> int:
        """Wait until queued records are delivered; the number still queued."""

    def close(self, timeout_s: float = 5.0) -> None: ...


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int = 1
    config: Mapping[str, str] | None = None


class Admin(Protocol):
    def list_topics(self, timeout_s: float) -> list[str]:
        """Names of every topic on the cluster."""

    def partition_counts(self, names: Sequence[str], timeout_s: float) -> dict[str, int]:
        """Partition count of every named topic that exists (missing ones are absent)."""

    def create_topics(self, specs: Sequence[TopicSpec], timeout_s: float) -> list[str]:
        """Create the topics that do not exist; the names created. TransportError on a
        refusal other than 'already exists'."""

    def topic_configs(self, names: Sequence[str], timeout_s: float) -> dict[str, dict[str, str]]:
        """Effective configuration of each existing named topic."""

    def alter_topic_config(self, name: str, config: Mapping[str, str], timeout_s: float) -> None:
        """Set these configuration entries of a topic (incrementally)."""

    def delete_topics(self, names: Sequence[str], timeout_s: float) -> None: ...

    def alter_group_config(self, group: str, config: Mapping[str, str], timeout_s: float) -> None:
        """Set configuration entries of a consumer group (KIP-848 group configs)."""

    def create_acls(self, grants: Sequence[AclGrant], timeout_s: float) -> None:
        """Create ALLOW ACLs (idempotent)."""

    def close(self) -> None: ...
