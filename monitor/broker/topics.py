"""Create the ICD §2 topics (idempotent) and check their co-partitioning.

Telemetry (console, robot), operator and latch-state topics must share one partition count:
with the murmur2 partitioner (ICD 1.1 §2) a procedure_id key then maps to the same partition
number on all of them, so one monitor instance owning partition N sees everything of the
procedures hashed to N and restores their latches. commands, audit and deadletter use the
same count for uniformity (nothing relies on it). The input topics use broker append time.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from monitor.broker.runtime import BrokerError
from monitor.icd.topics import Topics
from monitor.kafka import Admin, KafkaSettings, TopicSpec, TransportError, open_admin

DEFAULT_PARTITIONS = 6
REPLICATION_FACTOR = 1
# 8 MiB: a rejected input record (up to the 1 MiB producer default, and some headroom
# for larger ones) is copied to the dead-letter topic byte-for-byte, never truncated.
DEADLETTER_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# The broker stamps every input record with its own append time, so the monitor can tell
# "the site sent it late" from "it waited in Kafka because I was slow" (docs/architecture.md).
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


class TopicLayoutError(BrokerError):
    """Existing topics break the layout the monitor relies on (co-partitioning, append time)."""


@dataclass
class TopicReport:
    partitions: int
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)


def topic_configs(topics: Topics) -> dict[str, dict[str, str]]:
    """Per-topic config overrides."""
    return {
        topics.telemetry_console: dict(APPEND_TIME),
        topics.telemetry_robot: dict(APPEND_TIME),
        topics.operator: dict(APPEND_TIME),
        topics.deadletter: {"max.message.bytes": str(DEADLETTER_MAX_MESSAGE_BYTES)},
        # Latch state by procedure: only the newest value per key matters (failover).
        topics.state: {
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": "0",
            "segment.ms": "600000",
        },
    }


def co_partitioned(topics: Topics) -> list[str]:
    """Topics whose partition N holds the same procedures: the inputs and the latch state
    (latch restore reads the state topic by the telemetry partition numbers it owns)."""
    return [topics.telemetry_console, topics.telemetry_robot, topics.operator, topics.state]


def append_time_topics(topics: Topics) -> list[str]:
    return [topics.telemetry_console, topics.telemetry_robot, topics.operator]


def _settings(target: KafkaSettings | str) -> KafkaSettings:
    return target if isinstance(target, KafkaSettings) else KafkaSettings(bootstrap_servers=target)


def admin_client(target: KafkaSettings | str, timeout_s: float = 10.0) -> Admin:
    """An admin client that gives up after `timeout_s`; BrokerError if nothing answers."""
    settings = _settings(target)
    host, _, port = settings.bootstrap_servers.partition(",")[0].rpartition(":")
    try:
        # Fail fast (not after the bootstrap timeout) when nothing listens at all.
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=2.0).close()
    except (OSError, ValueError) as exc:
        raise BrokerError(
            f"no Kafka broker answers on {settings.bootstrap_servers} ({exc}); "
            "start one with `telesafe broker start`"
        ) from None
    try:
        return open_admin(settings, timeout_s)
    except TransportError as exc:
        raise BrokerError(
            f"no Kafka broker answers on {settings.bootstrap_servers}: {exc}"
        ) from None


def layout_problems(
    topics: Topics, counts: dict[str, int], configs: dict[str, dict[str, str]] | None = None
) -> list[str]:
    """Every way the existing topics break the monitor's premises, one sentence each, with
    the fix. `counts`: partition count per existing topic; `configs`: their settings."""
    problems: list[str] = []
    prefix = f" --topic-prefix {topics.prefix}" if topics.prefix else ""
    present = {n: counts[n] for n in co_partitioned(topics) if n in counts}
    if len(set(present.values())) > 1:
        by_count: dict[int, list[str]] = {}
        for n, c in present.items():
            by_count.setdefault(c, []).append(n)
        majority = max(by_count, key=lambda c: len(by_count[c]))
        for n, c in present.items():
            if c != majority:
                problems.append(
                    f"topic {n} has {c} partitions but {', '.join(by_count[majority])} have "
                    f"{majority}: co-partitioned topics (ICD §2, and the latch state) must share "
                    f"one count; recreate {n} with {majority} partitions (or repartition the "
                    "others to match) before running the monitor"
                )
    for n in append_time_topics(topics):
        if configs is None or n not in configs:
            continue
        got = configs[n].get("message.timestamp.type")
        if got != "LogAppendTime":
            problems.append(
                f"topic {n} has message.timestamp.type={got or 'CreateTime'}; the monitor needs "
                f"LogAppendTime (set it with `telesafe broker topics{prefix}`, or "
                f"`kafka-configs --alter --entity-type topics --entity-name {n} --add-config "
                "message.timestamp.type=LogAppendTime`)"
            )
    return problems


def check_layout(admin: Admin, topics: Topics, timeout_s: float = 10.0) -> None:
    """Raise TopicLayoutError naming every problem (missing topics included)."""
    names = topics.all()
    try:
        counts = admin.partition_counts(names, timeout_s)
        inputs = [n for n in append_time_topics(topics) if n in counts]
        configs = admin.topic_configs(inputs, timeout_s) if inputs else {}
    except TransportError as exc:
        raise BrokerError(f"cannot read the topic layout: {exc}") from None
    missing = [n for n in names if n not in counts]
    problems = []
    if missing:
        prefix = f" --topic-prefix {topics.prefix}" if topics.prefix else ""
        problems.append(
            f"ICD topics missing: {', '.join(missing)}; create them with "
            f"`telesafe broker topics{prefix}`"
        )
    problems += layout_problems(topics, counts, configs)
    if problems:
        raise TopicLayoutError("; ".join(problems))


def ensure_topics(
    target: KafkaSettings | str,
    prefix: str = "",
    partitions: int = DEFAULT_PARTITIONS,
    *,
    timeout_s: float = 30.0,
) -> TopicReport:
    """Create the missing ICD topics under `prefix`, give existing input topics broker
    append time, and verify the layout. Works for any security settings (the secured
    broker calls it with super-user settings).

    If some co-partitioned topic already exists, missing ones are created with ITS
    partition count (not `partitions`) so the set stays aligned. Raises TopicLayoutError
    if existing topics disagree, BrokerError if the broker does not answer.
    """
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    topics = Topics(prefix)
    wanted = topics.all()
    admin = admin_client(target, timeout_s=min(timeout_s, 10.0))
    try:
        counts = admin.partition_counts(wanted, timeout_s)
        problems = layout_problems(topics, counts)
        if problems:
            raise TopicLayoutError("; ".join(problems))
        aligned = [counts[n] for n in co_partitioned(topics) if n in counts]
        n_parts = aligned[0] if aligned else partitions
        configs = topic_configs(topics)
        missing = [n for n in wanted if n not in counts]
        created = admin.create_topics(
            [TopicSpec(n, n_parts, REPLICATION_FACTOR, configs.get(n)) for n in missing],
            timeout_s,
        )
        created.sort(key=wanted.index)
        altered = []
        existing_inputs = [n for n in append_time_topics(topics) if n in counts]
        if existing_inputs:
            for n, cfg in admin.topic_configs(existing_inputs, timeout_s).items():
                if cfg.get("message.timestamp.type") != "LogAppendTime":
                    admin.alter_topic_config(n, APPEND_TIME, timeout_s)
                    altered.append(n)
        deadline = time.monotonic() + timeout_s
        while True:  # an altered config reaches the describe answer a moment later
            try:
                check_layout(admin, topics, timeout_s)
                break
            except TopicLayoutError:
                if not altered or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
        return TopicReport(
            partitions=n_parts,
            created=created,
            existing=[n for n in wanted if n in counts],
            altered=altered,
        )
    except TransportError as exc:
        raise BrokerError(f"creating topics failed: {exc}") from None
    finally:
        admin.close()
