"""The kafka-python transport: pure Python, the design's original client, kept as a
supported second backend (`--kafka-client kafka-python`).

Differences from librdkafka the monitor relies on being hidden here:
- kafka-python runs rebalance listeners where a blocking consumer call fails, so the
  listener here only notes the change and `poll` tells our listener right after the
  underlying poll returns (records of partitions moved back are dropped and re-read);
- it has no incremental (cooperative) protocol: every rebalance revokes everything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ConfigResource,
    ConfigResourceType,
    NewTopic,
    ResourcePattern,
    ResourceType,
)
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from monitor.kafka.api import (
    OFFSET_END,
    ErrorCallback,
    RebalanceListener,
    Record,
    TopicPartition,
    TopicSpec,
    TransportError,
    poll_ms,
)
from monitor.kafka.freshness import MarkCover
from monitor.kafka.partitioner import MemoPartitioner
from monitor.kafka.profiles import AclGrant, Role, kafka_python_config
from monitor.kafka.settings import KafkaSettings

log = logging.getLogger("telesafe.kafka")


def version() -> str:
    import kafka

    return f"kafka-python {kafka.__version__}"


def _tp(t: Any) -> TopicPartition:
    return TopicPartition(t.topic, t.partition)


_FRESH_EVERY_NS = 10_000_000
_FRESH_TIMEOUT_MS = 50


class _Notes(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.revoked: set[TopicPartition] = set()
        self.assigned: list[TopicPartition] | None = None

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.revoked |= {_tp(t) for t in revoked}

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned = [_tp(t) for t in assigned]


class KafkaPythonConsumer:
    def __init__(self, settings: KafkaSettings, role: Role, **overrides: Any) -> None:
        cfg = kafka_python_config(settings, role, **overrides)
        if role == "monitor":
            cfg.setdefault("partition_assignment_strategy", [RangePartitionAssignor])
        try:
            self._c = KafkaConsumer(**cfg)
        except KafkaError as exc:
            raise TransportError(
                f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
            ) from None
        self.incremental = False  # kafka-python has no cooperative protocol
        self._listener: RebalanceListener | None = None
        self._notes = _Notes()
        self._held: set[TopicPartition] = set()
        self._topics: list[str] = []
        self._subscribed_mono = time.monotonic()
        self._ends: dict[TopicPartition, tuple[int, float]] = {}
        self._cover = MarkCover()  # broker answers: how far the cached mark vouches
        self._fresh_asked = 0

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._listener = listener
        self._topics = list(topics)
        self._subscribed_mono = time.monotonic()
        self._c.subscribe(self._topics, listener=self._notes)

    def _heal_empty_assignment(self) -> None:
        """Rejoin if no partition is held although the topics have some.

        Seen when the topics were created just before the monitor joined: the first
        assignment is empty (no metadata yet) and kafka-python's follow-up rejoin can stall
        until the coordinator evicts the member, leaving the monitor deaf to everything.
        """
        if not self._topics or self._held or time.monotonic() - self._subscribed_mono < 3.0:
            return
        if not self._c.partitions_for_topic(self._topics[0]):
            return  # the topics really do not exist (yet)
        log.warning("no partitions assigned 3 s after joining: rejoining the group")
        self._c.unsubscribe()
        self._subscribed_mono = time.monotonic()
        self._c.subscribe(self._topics, listener=self._notes)

    def assign(self, offsets: Mapping[TopicPartition, int]) -> None:
        tps = [KTP(t, p) for t, p in offsets]
        self._c.assign(tps)
        ends = None
        for (t, p), off in offsets.items():
            if off == OFFSET_END:
                ends = ends or self._c.end_offsets(tps)
                self._c.seek(KTP(t, p), ends[KTP(t, p)])
            else:
                self._c.seek(KTP(t, p), off)

    def _apply_notes(self) -> set[TopicPartition]:
        """Tell the listener what the last poll changed; the partitions moved back."""
        notes, listener, moved = self._notes, self._listener, set()
        if notes.revoked:
            gone, notes.revoked = notes.revoked, set()
            if listener is not None:
                listener.revoked(sorted(gone & self._held))
            self._held -= gone
        if notes.assigned is not None:
            tps, notes.assigned = notes.assigned, None
            new = [tp for tp in tps if tp not in self._held]
            self._held = set(tps)
            starts = listener.assigned(new) if listener is not None else {}
            for tp, off in starts.items():
                ktp = KTP(*tp)
                if off == OFFSET_END:
                    self._c.seek_to_end(ktp)
                else:
                    self._c.seek(ktp, off)
                moved.add(tp)
        return moved

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        polled = self._c.poll(timeout_ms=poll_ms(timeout_s), max_records=max_records)
        moved = self._apply_notes()
        self._heal_empty_assignment()
        out: list[Record] = []
        for ktp, recs in polled.items():
            if (ktp.topic, ktp.partition) in moved:
                continue  # polled before the seek: they come round again, in order
            for r in recs:
                out.append(
                    Record(
                        ktp.topic,
                        ktp.partition,
                        r.offset,
                        r.key,
                        r.value,
                        tuple((k, v or b"") for k, v in (r.headers or ())),
                        r.timestamp,
                        r.timestamp_type == 1,
                    )
                )
        return out

    def assignment(self) -> list[TopicPartition]:
        return sorted(_tp(t) for t in self._c.assignment())

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        if partitions:
            self._c.pause(*[KTP(*tp) for tp in partitions])

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        if partitions:
            self._c.resume(*[KTP(*tp) for tp in partitions])

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            self._c.commit_async(
                {KTP(*tp): OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
            )
        except Exception as exc:  # kafka-python raises on a rebalance in progress
            log.warning("offset commit failed: %s", exc)

    def committed(
        self, partitions: Sequence[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, int | None]:
        out: dict[TopicPartition, int | None] = {}
        for tp in partitions:
            try:
                out[tp] = self._c.committed(KTP(*tp))
            except KafkaError as exc:
                raise TransportError(f"reading the committed offset of {tp}: {exc}") from None
        return out

    def offsets_for_times(
        self, partitions: Sequence[TopicPartition], ts_ms: int, timeout_s: float
    ) -> dict[TopicPartition, int]:
        ktps = [KTP(*tp) for tp in partitions]
        try:
            found = self._c.offsets_for_times({k: ts_ms for k in ktps})
            ends = self._c.end_offsets(ktps)
        except KafkaError as exc:
            raise TransportError(f"offsets for times failed: {exc}") from None
        return {_tp(k): (found[k].offset if found.get(k) is not None else ends[k]) for k in ktps}

    def watermarks(
        self, partition: TopicPartition, timeout_s: float, cached: bool = False
    ) -> tuple[int, int] | None:
        k = KTP(*partition)
        if cached:
            try:
                hw = self._c.highwater(k)
            except Exception:  # not (or no longer) assigned: nothing known
                return None
            if hw is None:
                # kafka-python learns a partition's high watermark only from a fetch that
                # returned records: an idle partition has none. Ask the broker, at most
                # twice a second per partition (a round trip of ~1 ms).
                now = time.monotonic()
                known = self._ends.get(partition)
                if known is None or now - known[1] > 0.5:
                    try:
                        end = self._c.end_offsets([k])[k]
                    except Exception:
                        return None
                    known = self._ends[partition] = (int(end), now)
                hw = known[0]
            return 0, hw
        try:
            lo = self._c.beginning_offsets([k])[k]
            hi = self._c.end_offsets([k])[k]
        except KafkaError as exc:
            raise TransportError(f"watermarks of {partition}: {exc}") from None
        return lo, hi

    def want_fresh_marks(self) -> float:
        # high_watermark() asks every 10 ms anyway, inline on the loop thread (a blocking
        # call that releases the GIL): nothing to wait for
        return 0.0

    def high_watermark(self, partition: TopicPartition) -> tuple[int, int] | None:
        # kafka-python updates its cached high watermark only when the loop *parses* a fetch
        # response, which may have sat in its buffer for hundreds of ms while the monitor
        # was slow; taken as "now", a monitor 300 ms behind looked caught up and stopped
        # healthy procedures (bench_backends, 100 procedures). So the broker is asked too
        # (one ListOffsets round for every assigned partition, at most every 10 ms, on the
        # loop thread: kafka-python's client is not shared across threads) and the cached
        # mark vouches only as of the last answer it covers (monitor/kafka/freshness.py).
        now = time.monotonic_ns()
        if now - self._fresh_asked >= _FRESH_EVERY_NS:
            self._fresh_asked = now
            ktps = list(self._c.assignment())
            try:
                ends = self._c.end_offsets(ktps, timeout_ms=_FRESH_TIMEOUT_MS) if ktps else {}
            except Exception as exc:  # slow or away: the old answer stays; not heard past it
                log.debug("end offsets not refreshed: %s", exc)
                ends = {}
            for k, end in ends.items():
                if end is not None:
                    self._cover.answered(_tp(k), int(end), now)
        try:
            cached = self._c.highwater(KTP(*partition))
        except Exception:  # not (or no longer) assigned
            cached = None
        return self._cover.vouch(partition, None if cached is None else int(cached))

    def position(self, partition: TopicPartition) -> int | None:
        try:
            pos = self._c.position(KTP(*partition), timeout_ms=0)
        except Exception:
            return None
        return None if pos is None else int(pos)

    def partitions_for(self, topic: str, timeout_s: float) -> list[int] | None:
        deadline = time.monotonic() + timeout_s
        while True:
            parts = self._c.partitions_for_topic(topic)
            if parts or time.monotonic() >= deadline:
                return sorted(parts) if parts else None
            time.sleep(0.05)

    def close(self, timeout_s: float = 5.0) -> None:
        self._c.close(autocommit=False, timeout_ms=int(timeout_s * 1000))


class KafkaPythonProducer:
    def __init__(self, settings: KafkaSettings, role: Role, **overrides: Any) -> None:
        cfg = kafka_python_config(settings, role, **overrides)
        cfg.setdefault("partitioner", MemoPartitioner())
        try:
            self._p = KafkaProducer(**cfg)
        except KafkaError as exc:
            raise TransportError(
                f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
            ) from None

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        on_error: ErrorCallback | None = None,
    ) -> None:
        try:
            fut = self._p.send(topic, key=key, value=value, headers=list(headers))
        except Exception as exc:  # buffer full or no metadata within max_block_ms
            raise TransportError(str(exc) or type(exc).__name__) from None
        if on_error is not None:
            fut.add_errback(lambda exc: on_error(str(exc) or type(exc).__name__))

    def deliver(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        timeout_s: float = 10.0,
    ) -> tuple[str, int, int]:
        try:
            md = self._p.send(topic, key=key, value=value, headers=list(headers)).get(timeout_s)
        except Exception as exc:
            raise TransportError(f"delivery to {topic} failed: {exc}") from None
        return md.topic, md.partition, md.offset

    def service(self) -> None:
        return None  # kafka-python delivers and calls back from its own IO thread

    def flush(self, timeout_s: float) -> int:
        try:
            self._p.flush(timeout=timeout_s)
        except Exception as exc:
            log.warning("producer flush: %s", exc)
            return 1
        return 0

    def close(self, timeout_s: float = 5.0) -> None:
        try:
            self._p.flush(timeout=timeout_s)
        finally:
            self._p.close(timeout=timeout_s)


_KP_OPS = {
    "DESCRIBE_CONFIGS": ACLOperation.DESCRIBE_CONFIGS,
    "ALTER_CONFIGS": ACLOperation.ALTER_CONFIGS,
    "READ": ACLOperation.READ,
    "WRITE": ACLOperation.WRITE,
    "DESCRIBE": ACLOperation.DESCRIBE,
}
_KP_RES = {"TOPIC": ResourceType.TOPIC, "GROUP": ResourceType.GROUP}


class KafkaPythonAdmin:
    def __init__(self, settings: KafkaSettings, timeout_s: float = 10.0) -> None:
        try:
            self._a = KafkaAdminClient(
                **kafka_python_config(settings, "admin"),
                client_id="telesafe-admin",
                bootstrap_timeout_ms=int(timeout_s * 1000),
                request_timeout_ms=int(max(timeout_s, 5.0) * 1000),
            )
        except KafkaError as exc:
            raise TransportError(
                f"no Kafka broker answers on {settings.bootstrap_servers}: {exc}"
            ) from None

    def list_topics(self, timeout_s: float) -> list[str]:
        try:
            return sorted(self._a.list_topics())
        except KafkaError as exc:
            raise TransportError(f"listing topics failed: {exc}") from None

    def partition_counts(self, names: Sequence[str], timeout_s: float) -> dict[str, int]:
        try:
            existing = set(self._a.list_topics()) & set(names)
            if not existing:
                return {}
            return {
                str(t["name"]): len(t.get("partitions") or [])
                for t in self._a.describe_topics(sorted(existing))
            }
        except KafkaError as exc:
            raise TransportError(f"describing topics failed: {exc}") from None

    def create_topics(self, specs: Sequence[TopicSpec], timeout_s: float) -> list[str]:
        if not specs:
            return []
        new = [
            NewTopic(s.name, s.partitions, s.replication, topic_configs=dict(s.config or {}))
            for s in specs
        ]
        try:
            result = self._a.create_topics(
                new, timeout_ms=int(timeout_s * 1000), raise_errors=False
            )
        except KafkaError as exc:
            raise TransportError(f"creating topics failed: {exc}") from None
        created = []
        for t in result.get("topics", []):
            code = t.get("error_code", 0)
            if code == 0:
                created.append(str(t["name"]))
            elif code != TopicAlreadyExistsError.errno:
                raise TransportError(
                    f"creating topic {t['name']} failed: error {code} ({t.get('error_message')})"
                )
        deadline = time.monotonic() + timeout_s
        while True:  # metadata propagates a little after the create answer
            try:
                self._a.wait_for_topics([s.name for s in specs], timeout_ms=1000)
                break
            except KafkaError:
                if time.monotonic() >= deadline:
                    raise TransportError("created topics did not appear in time") from None
        return created

    def topic_configs(self, names: Sequence[str], timeout_s: float) -> dict[str, dict[str, str]]:
        res = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        try:
            got = self._a.describe_configs(res)
        except KafkaError as exc:
            raise TransportError(f"describing topic configs failed: {exc}") from None
        topics = got.get("topic", {}) if isinstance(got, dict) else {}
        return {
            str(name): {
                str(k): str(e["value"]) for k, e in entries.items() if e["value"] is not None
            }
            for name, entries in topics.items()
        }

    def alter_topic_config(self, name: str, config: Mapping[str, str], timeout_s: float) -> None:
        try:
            self._a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, dict(config))])
        except KafkaError as exc:
            raise TransportError(f"altering the configuration of {name} failed: {exc}") from None

    def alter_group_config(self, group: str, config: Mapping[str, str], timeout_s: float) -> None:
        raise TransportError("kafka-python runs classic groups: their timeouts are client-side")

    def delete_topics(self, names: Sequence[str], timeout_s: float) -> None:
        if names:
            try:
                self._a.delete_topics(list(names), raise_errors=False)
            except KafkaError as exc:
                raise TransportError(f"deleting topics failed: {exc}") from None

    def create_acls(self, grants: Sequence[AclGrant], timeout_s: float) -> None:
        acls = [
            ACL(
                principal=g.principal,
                host="*",
                operation=_KP_OPS[g.operation],
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(
                    _KP_RES[g.resource_type],
                    g.resource_name,
                    ACLResourcePatternType.PREFIXED
                    if g.prefixed
                    else ACLResourcePatternType.LITERAL,
                ),
            )
            for g in grants
        ]
        try:
            result = self._a.create_acls(acls)
        except KafkaError as exc:
            raise TransportError(f"creating ACLs failed: {exc}") from None
        failed = result.get("failed") if isinstance(result, dict) else None
        if failed:
            raise TransportError(f"creating ACLs failed: {failed}")

    def close(self) -> None:
        self._a.close()
