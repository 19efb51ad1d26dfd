"""The librdkafka transport (confluent-kafka), telesafe's default Kafka client.

librdkafka does the network I/O, fetching, batching and group heartbeats in its own C
threads without the GIL; the Python thread only hands records over. Callbacks (delivery
reports, errors, logs, rebalances) run inside `poll`/`flush` on the calling thread.
The settings are chosen in `monitor/kafka/profiles.py`, with the reason for each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType
from confluent_kafka.cimpl import NewTopic

from monitor.kafka.api import (
    OFFSET_END,
    ErrorCallback,
    RebalanceListener,
    Record,
    TopicPartition,
    TopicSpec,
    TransportError,
    TransportFatal,
    poll_ms,
)
from monitor.kafka.freshness import MarkCover
from monitor.kafka.profiles import AclGrant, Role, confluent_config
from monitor.kafka.settings import KafkaSettings

log = logging.getLogger("telesafe.kafka")

# How often the end offsets of the assigned partitions are asked for (monitor/kafka/
# freshness.py), one ListOffsets request for all of them (~65 us of CPU here): at least
# every PROBE_EVERY_NS (the withholding rule needs the marks fresh to well within 300 ms),
# and at once, at most every PROBE_MIN_GAP_NS, when the loop has a timer due that it has not
# heard past (`want_fresh_marks`). Asking every 5 ms instead took the GIL 200 times a second
# and lengthened the survivors' loop stalls in bench_failover on this CPU-starved host.
PROBE_EVERY_NS = 50_000_000
PROBE_MIN_GAP_NS = 1_000_000
PROBE_TIMEOUT_S = 1.0
# How long the loop waits in poll (the GIL released) for a kicked probe's answer: about one
# local round trip. Polling again at once instead spun the loop: "due" to "vouched for" took
# p50 4.5 ms instead of 1.2 ms (measured against the broker), and spinning monitors starved
# a 2-core host, broker included (docs/performance.md).
FRESH_MARKS_WAIT_S = 0.001
_LOG_APPEND = ck.TIMESTAMP_LOG_APPEND_TIME
# Errors that only say "a broker connection went away and will be retried": not news.
_QUIET = {ck.KafkaError._TRANSPORT, ck.KafkaError._ALL_BROKERS_DOWN, ck.KafkaError._RESOLVE}


def version() -> str:
    return f"confluent-kafka {ck.version()[0]} (librdkafka {ck.libversion()[0]})"


def _tp(t: ck.TopicPartition) -> TopicPartition:
    return TopicPartition(t.topic, t.partition)


class _ClientErrors:
    """Latches a fatal client error so the next call raises it (error_cb runs in poll)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.fatal: str | None = None
        self.fatal_code: int | None = None
        self.brokers_down_since: float | None = None
        self._last_logged: dict[int, float] = {}

    def __call__(self, err: ck.KafkaError) -> None:
        code = err.code()
        if err.fatal() or code == ck.KafkaError._FATAL:
            # error_cb reports a fatal error as _FATAL with the real cause only in its text.
            self.fatal = f"{self.what}: fatal Kafka client error: {err.str()}"
            if code == ck.KafkaError._FATAL and "instance ID is still used" in err.str():
                code = ck.KafkaError.UNRELEASED_INSTANCE_ID
            self.fatal_code = code
            if code != ck.KafkaError.UNRELEASED_INSTANCE_ID:  # the consumer retries that one
                log.critical("%s", self.fatal)
            return
        if code == ck.KafkaError._ALL_BROKERS_DOWN and self.brokers_down_since is None:
            self.brokers_down_since = time.monotonic()
        now = time.monotonic()
        if now - self._last_logged.get(code, 0.0) >= 10.0:  # a dead broker says so 10x/s
            self._last_logged[code] = now
            level = logging.INFO if code in _QUIET else logging.WARNING
            log.log(level, "%s: %s", self.what, err.str())

    def check(self) -> None:
        if self.fatal is not None:
            raise TransportFatal(self.fatal)


def _headers(hdrs: Any) -> tuple[tuple[str, bytes], ...]:
    """Consumed headers are a list of (str, bytes | None) pairs, or None."""
    return tuple((str(k), bytes(v or b"")) for k, v in hdrs) if hdrs else ()


def _message_error(msg: ck.Message) -> ck.KafkaError | None:
    return msg.error()


class ConfluentConsumer:
    def __init__(self, settings: KafkaSettings, role: Role, **overrides: Any) -> None:
        self._errors = _ClientErrors(f"consumer {overrides.get('client.id', '')}".strip())
        cfg = confluent_config(settings, role, **overrides)
        self.incremental = cfg.get("group.protocol") == "consumer" or "cooperative" in str(
            cfg.get("partition.assignment.strategy", "")
        )
        cfg["error_cb"] = self._errors
        cfg["logger"] = log
        self.kip848 = cfg.get("group.protocol") == "consumer"
        self._cfg = cfg
        self._c = ck.Consumer(cfg)
        self._listener: RebalanceListener | None = None
        self._callback_error: BaseException | None = None
        self._co_topics: list[str] = []
        self._driver: list[str] = []
        self._rejoin_at: float | None = None
        self._settings = settings
        self._paused: set[TopicPartition] = set()  # not fetched: no cached mark is current
        self._assigned: frozenset[TopicPartition] = frozenset()  # what the probe asks about
        self._cover = MarkCover()
        self._probe: _EndOffsetProbe | None = None  # started by the first high_watermark()

    # -- group membership ------------------------------------------------------------

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        """`topics` are co-partitioned: partition N of each goes to the same member.

        KIP-848 (`group.protocol=consumer`): the group assigns the first topic only, with
        the broker's sticky `uniform` assignor, so a member keeps what it has when another
        joins or dies; the others' partitions of the same numbers are added (and removed)
        here. The server-side `range` assignor co-partitions but reshuffles survivors.
        """
        self._listener = listener
        self._driver = list(topics) if not self.kip848 else list(topics)[:1]
        self._co_topics = [] if not self.kip848 else list(topics)[1:]
        self._subscribe()

    def _subscribe(self) -> None:
        self._c.subscribe(
            self._driver,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _with_co(self, parts: list[ck.TopicPartition]) -> list[ck.TopicPartition]:
        return parts + [ck.TopicPartition(t, p.partition) for p in parts for t in self._co_topics]

    def _on_assign(self, consumer: ck.Consumer, parts: list[ck.TopicPartition]) -> None:
        if consumer is not self._c:  # a replaced client closing in its own thread
            return
        try:
            parts = self._with_co(parts)
            tps = [_tp(p) for p in parts]
            starts = self._listener.assigned(tps) if self._listener else {}
            for p in parts:
                off = starts.get(_tp(p))
                if off is not None:
                    p.offset = ck.OFFSET_END if off == OFFSET_END else off
            if self.incremental:
                consumer.incremental_assign(parts)
            else:
                consumer.assign(parts)
            self._paused.difference_update(tps)
            self._assigned = self._assigned | set(tps)
        except BaseException as exc:  # never let an exception die inside librdkafka
            self._callback_error = exc

    def _on_revoke(self, consumer: ck.Consumer, parts: list[ck.TopicPartition]) -> None:
        if consumer is not self._c:
            return
        parts = self._with_co(parts)
        try:
            if self._listener:
                self._listener.revoked([_tp(p) for p in parts])
        except BaseException as exc:
            self._callback_error = exc
        finally:
            self._unassign(consumer, parts)

    def _on_lost(self, consumer: ck.Consumer, parts: list[ck.TopicPartition]) -> None:
        if consumer is not self._c:
            return
        parts = self._with_co(parts)
        try:
            if self._listener:
                self._listener.lost([_tp(p) for p in parts])
        except BaseException as exc:
            self._callback_error = exc
        finally:
            self._unassign(consumer, parts)

    def _unassign(self, consumer: ck.Consumer, parts: list[ck.TopicPartition]) -> None:
        self._assigned = self._assigned - {_tp(p) for p in parts}
        try:
            if self.incremental:
                consumer.incremental_unassign(parts)
            else:
                consumer.unassign()
        except ck.KafkaException as exc:
            log.warning("unassign after revoke failed: %s", exc)

    def assign(self, offsets: Mapping[TopicPartition, int]) -> None:
        parts = [
            ck.TopicPartition(t, p, ck.OFFSET_END if off == OFFSET_END else off)
            for (t, p), off in offsets.items()
        ]
        self._c.assign(parts)
        self._paused.clear()
        self._assigned = frozenset(offsets)

    # -- reading -----------------------------------------------------------------------

    def _unreleased(self) -> bool:
        """A static member restarted within its session timeout (a pod's container after a
        SIGKILL): the broker refuses the instance id until the old member's session ends,
        and librdkafka makes that fatal. Rejoin with a fresh client until it is released;
        a second live process with the same id is refused for ever, and says so."""
        if self._rejoin_at is None:
            if self._errors.fatal_code != ck.KafkaError.UNRELEASED_INSTANCE_ID:
                return False
            log.warning(
                "consumer: group instance id %s is still held by its previous member; "
                "rejoining when its session times out",
                self._cfg.get("group.instance.id"),
            )
            lost = [_tp(p) for p in self._c.assignment()]
            if lost and self._listener is not None:
                self._listener.lost(lost)
            self.close(2.0)
            # A fresh, unsubscribed client at once, so assignment() and friends still work.
            self._errors.fatal = self._errors.fatal_code = None
            self._c = ck.Consumer(self._cfg)
            self._rejoin_at = time.monotonic() + 0.5
        if time.monotonic() < self._rejoin_at:
            return True
        self._rejoin_at = None
        self._subscribe()
        return False

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        if self._unreleased():
            time.sleep(max(0.0, min(timeout_s, 0.05)))
            return []
        self._errors.check()
        # Block only for the first record; then take what is already fetched, without
        # waiting (consume(n, t) would wait for n records or the whole timeout).
        # (ms + 0.5) / 1000: the client truncates seconds * 1000 (0.029 s would be 28 ms)
        first = self._c.poll((poll_ms(timeout_s) + 0.5) / 1000)
        msgs = [] if first is None else [first]
        if first is not None and max_records > 1:
            msgs.extend(self._c.consume(max_records - 1, 0))
        if self._callback_error is not None:
            exc, self._callback_error = self._callback_error, None
            raise exc
        self._errors.check()
        out: list[Record] = []
        for m in msgs:
            err = _message_error(m)
            if err is not None:
                if err.fatal():
                    raise TransportFatal(f"fatal consumer error: {err.str()}")
                self._errors(err)
                continue
            ts_type, ts = m.timestamp()
            hdrs = m.headers()
            out.append(
                Record(
                    m.topic(),  # type: ignore[arg-type]
                    m.partition(),  # type: ignore[arg-type]
                    m.offset(),  # type: ignore[arg-type]
                    m.key(),
                    m.value(),
                    _headers(hdrs),
                    ts,
                    ts_type == _LOG_APPEND,
                )
            )
        return out

    def assignment(self) -> list[TopicPartition]:
        return [_tp(p) for p in self._c.assignment()]

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        if partitions:
            self._c.pause([ck.TopicPartition(t, p) for t, p in partitions])
            self._paused.update(partitions)

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        if partitions:
            self._c.resume([ck.TopicPartition(t, p) for t, p in partitions])
            self._paused.difference_update(partitions)

    # -- offsets -----------------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            self._c.commit(
                offsets=[ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=True,
            )
        except ck.KafkaException as exc:  # e.g. no longer a member: the next owner re-reads
            log.warning("offset commit failed: %s", exc)

    def committed(
        self, partitions: Sequence[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, int | None]:
        try:
            got = self._c.committed([ck.TopicPartition(t, p) for t, p in partitions], timeout_s)
        except ck.KafkaException as exc:
            raise TransportError(f"reading committed offsets failed: {exc}") from None
        return {_tp(p): (p.offset if p.offset >= 0 else None) for p in got}

    def offsets_for_times(
        self, partitions: Sequence[TopicPartition], ts_ms: int, timeout_s: float
    ) -> dict[TopicPartition, int]:
        try:
            got = self._c.offsets_for_times(
                [ck.TopicPartition(t, p, ts_ms) for t, p in partitions], timeout_s
            )
        except ck.KafkaException as exc:
            raise TransportError(f"offsets for times failed: {exc}") from None
        out: dict[TopicPartition, int] = {}
        for p in got:
            if p.error is not None:
                raise TransportError(f"offsets for times of {p.topic}[{p.partition}]: {p.error}")
            out[_tp(p)] = p.offset if p.offset >= 0 else OFFSET_END
        return out

    def want_fresh_marks(self) -> float:
        if self._probe is None:
            return 0.0
        self._probe.kick.set()
        return FRESH_MARKS_WAIT_S

    def high_watermark(self, partition: TopicPartition) -> tuple[int, int] | None:
        # librdkafka refreshes its cached high watermark from every fetch response, but says
        # nothing of its age: seconds old for a partition paused, just (re)assigned or
        # resumed, or whose fetches stalled (monitor/kafka/freshness.py). It vouches only as
        # of the last broker answer it covers; a paused partition's not at all.
        if self._probe is None:
            self._probe = _EndOffsetProbe(self._settings, self._cfg.get("group.id"), self)
        if partition in self._paused:
            return None
        marks = self.watermarks(partition, 0.0, cached=True)
        return self._cover.vouch(partition, None if marks is None else marks[1])

    def watermarks(
        self, partition: TopicPartition, timeout_s: float, cached: bool = False
    ) -> tuple[int, int] | None:
        try:
            got = self._c.get_watermark_offsets(
                ck.TopicPartition(*partition), timeout=timeout_s, cached=cached
            )
        except ck.KafkaException as exc:
            if cached:
                return None
            raise TransportError(f"watermarks of {partition}: {exc}") from None
        if got is None:
            return None
        lo, hi = got
        return None if hi < 0 else (lo, hi)

    def position(self, partition: TopicPartition) -> int | None:
        (p,) = self._c.position([ck.TopicPartition(*partition)])
        return p.offset if p.offset >= 0 else None

    def partitions_for(self, topic: str, timeout_s: float) -> list[int] | None:
        try:
            md = self._c.list_topics(topic, timeout=timeout_s)
        except ck.KafkaException as exc:
            raise TransportError(f"metadata of {topic}: {exc}") from None
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            return None
        return sorted(t.partitions)

    def close(self, timeout_s: float = 5.0) -> None:
        if self._probe is not None:
            self._probe.stop()
        # close() can hang on an unhealthy cluster (confluent-kafka-python#1667): bounded.
        th = threading.Thread(target=self._c.close, name="kafka-consumer-close", daemon=True)
        th.start()
        th.join(timeout_s)


class _EndOffsetProbe:
    """Asks the broker for the end offsets of a consumer's assigned partitions every
    PROBE_EVERY_NS, and soon after a `kick`, on a thread and a client of its own (one
    ListOffsets request for all of them; the loop never waits on it), and reports each
    answer with the instant it was asked to the consumer's `MarkCover`. A broker that does
    not answer leaves the last answers standing: the monitor is then heard only up to them
    (deaf, not silent)."""

    def __init__(self, settings: KafkaSettings, group: str | None, owner: ConfluentConsumer):
        cfg = confluent_config(
            settings,
            "reader",
            **{"client.id": "telesafe-marks", "group.id": group or "telesafe-marks"},
        )
        cfg["logger"] = log
        cfg["error_cb"] = lambda err: log.debug("end-offset probe: %s", err.str())
        self._c = ck.Consumer(cfg)
        self._owner = owner
        self._stop = threading.Event()
        self.kick = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telesafe-marks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cover = self._owner._cover
        nxt = time.monotonic_ns()
        while not self._stop.is_set():
            self.kick.wait(max(0.0, (nxt - time.monotonic_ns()) / 1e9))
            self.kick.clear()
            asked = time.monotonic_ns()
            nxt = asked + PROBE_EVERY_NS
            tps = self._owner._assigned
            if not tps:
                continue
            try:  # a timestamp of -1 asks for the end offset (ListOffsets LATEST)
                got = self._c.offsets_for_times(
                    [ck.TopicPartition(t, p, -1) for t, p in tps], PROBE_TIMEOUT_S
                )
            except ck.KafkaException as exc:
                log.debug("end offsets not refreshed: %s", exc)
                nxt = asked + 10 * PROBE_EVERY_NS
                continue
            for p in got:
                if p.error is None and p.offset >= 0:
                    cover.answered(_tp(p), p.offset, asked)
            # kicks that came while asking wait a little: a loop with a timer due asks
            # again after each FRESH_MARKS_WAIT_S, and must not make each a request
            self._stop.wait(PROBE_MIN_GAP_NS / 1e9)

    def stop(self) -> None:
        self._stop.set()
        self.kick.set()
        self._thread.join(2.0)
        th = threading.Thread(target=self._c.close, name="kafka-marks-close", daemon=True)
        th.start()
        th.join(2.0)


class ConfluentProducer:
    def __init__(self, settings: KafkaSettings, role: Role, **overrides: Any) -> None:
        self._errors = _ClientErrors(f"producer {overrides.get('client.id', '')}".strip())
        cfg = confluent_config(settings, role, **overrides)
        cfg["error_cb"] = self._errors
        cfg["logger"] = log
        self._p = ck.Producer(cfg)

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        on_error: ErrorCallback | None = None,
    ) -> None:
        self._errors.check()
        cb = None if on_error is None else _error_only(on_error)
        try:
            if headers:
                self._p.produce(topic, value, key, on_delivery=cb, headers=list(headers))
            else:
                self._p.produce(topic, value, key, on_delivery=cb)
        except BufferError:
            raise TransportError("producer queue is full") from None
        except ck.KafkaException as exc:
            raise TransportError(str(exc.args[0].str() if exc.args else exc)) from None

    def deliver(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        timeout_s: float = 10.0,
    ) -> tuple[str, int, int]:
        result: list[Any] = []

        def done(err: ck.KafkaError | None, msg: ck.Message) -> None:
            result.append(err if err is not None else (msg.topic(), msg.partition(), msg.offset()))

        try:
            self._p.produce(topic, value, key, on_delivery=done, headers=list(headers) or None)
        except (BufferError, ck.KafkaException) as exc:
            raise TransportError(f"cannot send to {topic}: {exc}") from None
        deadline = time.monotonic() + timeout_s
        while not result and time.monotonic() < deadline:
            self._p.poll(min(0.1, max(0.0, deadline - time.monotonic())))
        if not result:
            raise TransportError(f"no acknowledgement from Kafka within {timeout_s:g} s")
        if isinstance(result[0], ck.KafkaError):
            raise TransportError(f"delivery to {topic} failed: {result[0].str()}")
        t, p, o = result[0]
        return str(t), int(p), int(o)

    def service(self) -> None:
        self._p.poll(0)

    def flush(self, timeout_s: float) -> int:
        return int(self._p.flush(timeout_s))

    def close(self, timeout_s: float = 5.0) -> None:
        left = self._p.flush(timeout_s)
        if left:
            log.warning("producer closed with %d record(s) undelivered", left)


def _error_only(on_error: ErrorCallback) -> Any:
    def cb(err: ck.KafkaError | None, _msg: ck.Message) -> None:
        if err is not None:
            on_error(err.str())

    return cb


_ACL_OPS = {
    "READ": AclOperation.READ,
    "WRITE": AclOperation.WRITE,
    "DESCRIBE": AclOperation.DESCRIBE,
    "DESCRIBE_CONFIGS": AclOperation.DESCRIBE_CONFIGS,
    "ALTER_CONFIGS": AclOperation.ALTER_CONFIGS,
}
_ACL_RES = {"TOPIC": ResourceType.TOPIC, "GROUP": ResourceType.GROUP}


class ConfluentAdmin:
    def __init__(self, settings: KafkaSettings, **overrides: Any) -> None:
        self._errors = _ClientErrors("admin")
        cfg = confluent_config(settings, "admin", **overrides)
        cfg["error_cb"] = self._errors
        cfg["logger"] = log
        self._a = AdminClient(cfg)

    def _wait(self, futures: Mapping[Any, Any], timeout_s: float, what: str) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for k, f in futures.items():
            try:
                out[k] = f.result(timeout=timeout_s)
            except ck.KafkaException as exc:
                out[k] = exc.args[0] if exc.args else exc
            except Exception as exc:  # a timeout of the future itself
                raise TransportError(f"{what}: {exc or type(exc).__name__}") from None
        return out

    def list_topics(self, timeout_s: float) -> list[str]:
        try:
            md = self._a.list_topics(timeout=timeout_s)
        except ck.KafkaException as exc:
            raise TransportError(f"listing topics failed: {exc.args[0].str()}") from None
        return sorted(md.topics)

    def partition_counts(self, names: Sequence[str], timeout_s: float) -> dict[str, int]:
        try:
            md = self._a.list_topics(timeout=timeout_s)
        except ck.KafkaException as exc:
            raise TransportError(f"listing topics failed: {exc.args[0].str()}") from None
        want = set(names)
        return {n: len(t.partitions) for n, t in md.topics.items() if n in want and t.error is None}

    def create_topics(self, specs: Sequence[TopicSpec], timeout_s: float) -> list[str]:
        if not specs:
            return []
        new = [
            NewTopic(s.name, s.partitions, s.replication, config=dict(s.config or {}))
            for s in specs
        ]
        done = self._wait(
            self._a.create_topics(new, request_timeout=timeout_s), timeout_s, "creating topics"
        )
        created = []
        for name, res in done.items():
            if isinstance(res, ck.KafkaError):
                if res.code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TransportError(f"creating topic {name} failed: {res.str()}")
            else:
                created.append(name)
        self._wait_ready([s.name for s in specs], timeout_s)
        return created

    def _wait_ready(self, names: list[str], timeout_s: float) -> None:
        """Until every partition of every topic has a leader in this client's metadata
        (KRaft answers a create before its metadata reaches every listener)."""
        deadline = time.monotonic() + timeout_s
        while True:
            md = self._a.list_topics(timeout=max(0.5, deadline - time.monotonic()))
            ready = all(
                (t := md.topics.get(n)) is not None
                and t.error is None
                and t.partitions
                and all(p.leader >= 0 for p in t.partitions.values())
                for n in names
            )
            if ready:
                return
            if time.monotonic() >= deadline:
                raise TransportError(f"topics not ready within {timeout_s:g} s: {names}")
            time.sleep(0.05)

    def topic_configs(self, names: Sequence[str], timeout_s: float) -> dict[str, dict[str, str]]:
        res = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
        done = self._wait(
            self._a.describe_configs(res, request_timeout=timeout_s), timeout_s, "topic configs"
        )
        out: dict[str, dict[str, str]] = {}
        for r, entries in done.items():
            if isinstance(entries, ck.KafkaError):
                continue
            out[r.name] = {k: str(e.value) for k, e in entries.items() if e.value is not None}
        return out

    def alter_topic_config(self, name: str, config: Mapping[str, str], timeout_s: float) -> None:
        self._alter(ConfigResource.Type.TOPIC, name, config, timeout_s, f"topic {name}")

    def alter_group_config(self, group: str, config: Mapping[str, str], timeout_s: float) -> None:
        self._alter(ConfigResource.Type.GROUP, group, config, timeout_s, f"group {group}")

    def _alter(
        self, kind: Any, name: str, config: Mapping[str, str], timeout_s: float, what: str
    ) -> None:
        """Set `config` on one resource (incremental: other settings stay)."""
        entries = [
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
            for k, v in config.items()
        ]
        res = ConfigResource(kind, name, incremental_configs=entries)
        done = self._wait(
            self._a.incremental_alter_configs([res], request_timeout=timeout_s),
            timeout_s,
            f"configuring {what}",
        )
        for v in done.values():
            if isinstance(v, ck.KafkaError):
                raise TransportError(f"configuring {what} failed: {v.str()}")

    def delete_topics(self, names: Sequence[str], timeout_s: float) -> None:
        if names:
            self._wait(
                self._a.delete_topics(list(names), request_timeout=timeout_s),
                timeout_s,
                "deleting topics",
            )

    def create_acls(self, grants: Sequence[AclGrant], timeout_s: float) -> None:
        bindings = [
            AclBinding(
                _ACL_RES[g.resource_type],
                g.resource_name,
                ResourcePatternType.PREFIXED if g.prefixed else ResourcePatternType.LITERAL,
                g.principal,
                "*",
                _ACL_OPS[g.operation],
                AclPermissionType.ALLOW,
            )
            for g in grants
        ]
        done = self._wait(
            self._a.create_acls(bindings, request_timeout=timeout_s), timeout_s, "creating ACLs"
        )
        failed = [str(v) for v in done.values() if isinstance(v, ck.KafkaError)]
        if failed:
            raise TransportError(f"creating ACLs failed: {'; '.join(failed)}")

    def close(self) -> None:
        return None
