"""The ingest thread: poll Kafka, stamp arrival, decode, dead-letter the invalid.

It owns the KafkaConsumer (not thread-safe) and never touches the engine: decoded records
go to the engine thread through a queue, stamped with the monitor clock when poll returned.
`pending_since` tells the engine thread how far it may run timers: while a polled batch
is still being decoded, a deadline after its arrival must wait for it (else a heartbeat
that arrived in time could lose the race against its own silence deadline).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor

from monitor.engine.clock import Clock, Instant
from monitor.icd.decode import Rejection, decode_operator, decode_telemetry
from monitor.icd.models import PROCEDURE_ID_PATTERN
from monitor.icd.topics import Topics
from monitor.kafka.settings import KafkaSettings
from monitor.metrics import MonitorMetrics
from monitor.security.signing import Keyring
from monitor.service.inbound import Batch, Deaf, Item, Rejected, Release, Restore
from monitor.service.publisher import Publisher

log = logging.getLogger("telesafe.ingest")

Recorder = Callable[[Instant, str, bytes | None, bytes | None], None]

_PID = __import__("re").compile(PROCEDURE_ID_PATTERN)
POLL_TIMEOUT_MS = 50
# A poll running longer than this means we are not hearing the sites (its timeout is 50 ms).
DEAF_AFTER_NS = 100_000_000
POLL_TIMEOUT_NS = POLL_TIMEOUT_MS * 1_000_000
HEAL_AFTER_S = 3.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Only notes what changed: kafka-python 3 runs listeners on its IO thread, where a
    blocking consumer call (committed, offsets_for_times) fails. The ingest thread acts on
    the note right after poll() returns."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("partitions revoked: %s", sorted(str(tp) for tp in revoked))
        self.ingest.revoked |= {tp.partition for tp in revoked}

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.ingest.new_assignment = list(assigned)


class Ingest(threading.Thread):
    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        client_id: str,
        out: queue.SimpleQueue[Batch],
        publisher: Publisher,
        metrics: MonitorMetrics,
        clock: Clock,
        startup_lookback_s: float = 10.0,
        keyring: Keyring | None = None,
        recorder: Recorder | None = None,
        group_instance_id: str | None = None,
    ) -> None:
        super().__init__(name="telesafe-ingest", daemon=True)
        self.topics = Topics(settings.topic_prefix)
        self.out = out
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self.lookback_ms = int(startup_lookback_s * 1000)
        self.keyring = keyring
        self.recorder = recorder
        self.settings = settings
        self.owner: dict[str, int] = {}  # procedure -> partition number it arrives on
        self.revoked: set[int] = set()
        self.new_assignment: list[TopicPartition] | None = None  # set by the listener
        self.pending_since: int | None = None
        self.polling_since: int | None = None  # mono ns a poll() began, while it runs
        self.assigned: list[TopicPartition] = []
        self.assigned_event = threading.Event()
        self.last_poll_mono = time.monotonic()
        self.error: BaseException | None = None
        self._stopping = threading.Event()  # not _stop: Thread uses that name
        extra: dict[str, Any] = {}
        if group_instance_id:
            extra["group_instance_id"] = group_instance_id
        self.consumer = KafkaConsumer(
            **settings.consumer_config(
                group_id=group_id,
                client_id=client_id,
                enable_auto_commit=True,
                auto_commit_interval_ms=1000,
                auto_offset_reset="latest",
                # Range assigns the same partition numbers of co-partitioned topics to one
                # member, so a procedure's console, robot and operator records meet here.
                partition_assignment_strategy=[RangePartitionAssignor],
                # The broker's default minimum: a dead instance's partitions move within ~6 s.
                session_timeout_ms=6_000,
                heartbeat_interval_ms=1_000,
                **extra,
            )
        )
        self._subscribe()

    def _subscribe(self) -> None:
        self.subscribed_mono = time.monotonic()
        self.consumer.subscribe(
            [self.topics.telemetry_console, self.topics.telemetry_robot, self.topics.operator],
            listener=_Rebalance(self),
        )

    def _heal_empty_assignment(self) -> None:
        """Rejoin if we hold no partition although the topics have some.

        Seen when the topics were created just before the monitor joined: the first
        assignment is empty (no metadata yet) and kafka-python's follow-up rejoin can stall
        until the coordinator evicts the member, leaving the monitor deaf to everything.
        """
        if self.assigned or time.monotonic() - self.subscribed_mono < HEAL_AFTER_S:
            return
        topic = self.topics.telemetry_robot
        if not self.consumer.partitions_for_topic(topic):
            return  # the topics really do not exist (yet)
        log.warning(
            "no partitions assigned %.0f s after joining although %s has partitions: "
            "rejoining the group",
            HEAL_AFTER_S,
            topic,
        )
        self.consumer.unsubscribe()
        self._subscribe()

    def on_assigned(self, tps: list[TopicPartition]) -> set[TopicPartition]:
        """Start partitions without a committed offset a few seconds back, not at the end.

        A new group would otherwise skip records sent while it was joining (a procedure's
        start among them); the lookback is short so ancient history is not replayed.
        Returns the partitions it moved back (their already-polled records are re-read).
        """
        self.assigned = tps
        self.metrics.assigned_partitions.set(len(tps))
        self._ownership_changed({tp.partition for tp in tps})
        moved: set[TopicPartition] = set()
        fresh = []
        for tp in tps:
            try:
                if self.consumer.committed(tp) is None:
                    fresh.append(tp)
            except Exception as exc:  # no committed offset known: treat as fresh
                log.warning("could not read committed offset of %s: %s", tp, exc)
                fresh.append(tp)
        if fresh:
            since = int(time.time() * 1000) - self.lookback_ms
            try:
                found = self.consumer.offsets_for_times({tp: since for tp in fresh})
                ends = self.consumer.end_offsets(fresh)
                for tp in fresh:
                    ot = found.get(tp)
                    self.consumer.seek(tp, ot.offset if ot is not None else ends[tp])
                    moved.add(tp)
            except Exception as exc:
                log.warning("lookback seek failed, starting at the end: %s", exc)
        log.info(
            "assigned %d partitions (%d started %.0f s back)",
            len(tps),
            len(moved),
            self.lookback_ms / 1000,
        )
        self.assigned_event.set()
        return moved

    def _ownership_changed(self, numbers: set[int]) -> None:
        """Release procedures that moved away; restore latches of those that moved here.

        Topics are co-partitioned, so a partition number names the same procedures on
        every topic, including the latch-state topic.
        """
        now = self.clock.now()
        gone = self.revoked - numbers
        self.revoked = set()
        items: list[Item] = []
        for pid, part in list(self.owner.items()):
            if part in gone:
                items.append(Release(pid))
                del self.owner[pid]
        released = len(items)
        try:
            states = read_latch_states(self.settings, numbers)
        except Exception as exc:
            log.error(
                "could not read latch states (latched procedures may be unlatched "
                "here until their sites' records arrive): %s",
                exc,
            )
            states = []
        items.extend(Restore(s) for s in states)
        if items:
            log.info(
                "ownership change: %d released, %d latched procedure(s) restored",
                released,
                len(states),
            )
            self.out.put(Batch(now, items, 0))

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        last_lag = 0.0
        last_return: int | None = None
        try:
            while not self._stopping.is_set():
                started = self.clock.now().mono_ns
                self.polling_since = started
                polled = self.consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
                if self.new_assignment is not None:
                    tps, self.new_assignment = self.new_assignment, None
                    moved = self.on_assigned(tps)
                    # Records polled before the seek come round again, in order.
                    polled = {tp: r for tp, r in polled.items() if tp not in moved}
                now = self.clock.now()
                self.pending_since = now.mono_ns
                self.polling_since = None
                # Deaf if the poll overran (rebalance, broker stall) or if too long passed
                # since the previous poll returned (our own stall or pause while decoding).
                since = started if last_return is None else min(started, last_return)
                limit = DEAF_AFTER_NS if last_return is None else DEAF_AFTER_NS + POLL_TIMEOUT_NS
                if now.mono_ns - since > limit:
                    # Tell the engine first, so its timers do not run past our deafness.
                    self.out.put(Batch(now, [Deaf(since, now.mono_ns)], 0))
                last_return = now.mono_ns
                self.last_poll_mono = time.monotonic()
                if polled:
                    self._handle(polled, now)
                self.pending_since = None
                if self.last_poll_mono - last_lag >= 1.0:
                    last_lag = self.last_poll_mono
                    self._update_lag()
                    self._heal_empty_assignment()
        except BaseException as exc:  # the engine thread sees this and fails health
            self.error = exc
            log.exception("ingest thread stopped")
        finally:
            self.pending_since = None
            with contextlib.suppress(Exception):
                self.consumer.close(autocommit=True)

    def _handle(self, polled: dict[Any, list[Any]], now: Instant) -> None:
        items: list[Item] = []
        newest = 0
        topics = self.topics
        # Counted per batch: a labelled Counter's labels().inc() costs ~4 µs per record.
        counts: dict[tuple[str, str], int] = {}
        for tp, records in polled.items():
            topic = tp.topic
            site = topics.site_of(topic)
            for r in records:
                if r.timestamp > newest:
                    newest = r.timestamp
                if self.recorder is not None:
                    self.recorder(now, topic, r.key, r.value)
                result: Any = (
                    decode_telemetry(r.value, r.key, site)
                    if site is not None
                    else decode_operator(r.value, r.key)
                )
                if self.keyring is not None and not isinstance(result, Rejection):
                    problem = self.keyring.check(
                        site or "operator",
                        r.value,
                        list(r.headers or []),
                        claimed_operator=None if site is not None else result.operator_id,
                    )
                    if problem is not None:  # ICD §8: no liveness, no re-arm from it
                        result = Rejection(problem, "signature")
                if isinstance(result, Rejection):
                    self._reject(topic, tp.partition, r, result, site)
                    items.append(Rejected(self._pid_of(r.key), site))
                    continue
                if site is not None:
                    k = (site, result.type)
                    counts[k] = counts.get(k, 0) + 1
                self.owner[result.procedure_id] = tp.partition
                items.append(result)
        for (site_, rtype), n in counts.items():
            self.metrics.records.labels(site_, rtype).inc(n)
        if items:
            self.out.put(Batch(now, items, newest))

    def _reject(self, topic: str, partition: int, r: Any, rej: Rejection, site: str | None) -> None:
        source = f"{topic}:{partition}:{r.offset}"
        self.metrics.rejected.labels(site or "operator", rej.code).inc()
        self.publisher.deadletter(r.key, r.value, rej.reason, source)
        log.warning("rejected record %s: %s", source, rej.reason)

    @staticmethod
    def _pid_of(key: bytes | None) -> str | None:
        if not key:
            return None
        try:
            k = key.decode()
        except UnicodeDecodeError:
            return None
        return k if _PID.match(k) else None

    def _update_lag(self) -> None:
        """Records behind the log end per topic, from fetch highwater marks (no network call)."""
        out: dict[str, int] = {}
        for tp in self.assigned:
            hw = self.consumer.highwater(tp)
            if hw is None:
                continue
            try:
                pos = self.consumer.position(tp, timeout_ms=0)
            except Exception:
                continue
            if pos is not None:
                out[tp.topic] = out.get(tp.topic, 0) + max(0, hw - pos)
        for topic, lag in out.items():
            self.metrics.consumer_lag.labels(topic).set(lag)


def read_latch_states(
    settings: KafkaSettings, partitions: set[int], timeout_s: float = 5.0
) -> list[dict[str, Any]]:
    """The newest latch state of every procedure on these partitions of the state topic."""
    import json

    if not partitions:
        return []
    topic = Topics(settings.topic_prefix).state
    consumer = KafkaConsumer(**settings.consumer_config(client_id="telesafe-latch-restore"))
    try:
        existing = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions & existing)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        latest: dict[str, bytes | None] = {}
        todo = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for _tp, recs in consumer.poll(timeout_ms=100).items():
                for r in recs:
                    if r.key is not None:
                        latest[r.key.decode()] = r.value
            todo = {tp for tp in todo if consumer.position(tp) < ends[tp]}
        out = []
        for value in latest.values():
            if value:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(value))
        return out
    finally:
        consumer.close()
