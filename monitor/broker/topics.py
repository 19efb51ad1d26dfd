"""Create the ICD §2 topics (idempotent) and check their co-partitioning.

Telemetry (console, robot) and operator topics must share one partition count: with
the default partitioner a procedure_id key then maps to the same partition number on
all three, so one monitor instance owning partition N sees everything of the
procedures hashed to N. commands, audit and deadletter use the same count for
uniformity (nothing relies on it).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from monitor.broker.runtime import BrokerError
from monitor.icd.topics import Topics

DEFAULT_PARTITIONS = 6
REPLICATION_FACTOR = 1
# 8 MiB: a rejected input record (up to the 1 MiB producer default, and some headroom
# for larger ones) is copied to the dead-letter topic byte-for-byte, never truncated.
DEADLETTER_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class TopicLayoutError(BrokerError):
    """Existing topics break the co-partitioning the monitor relies on."""


@dataclass
class TopicReport:
    partitions: int
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def topic_configs(topics: Topics) -> dict[str, dict[str, str]]:
    """Per-topic config overrides (only the dead-letter topic has one)."""
    return {
        topics.deadletter: {"max.message.bytes": str(DEADLETTER_MAX_MESSAGE_BYTES)},
        # Latch state by procedure: only the newest value per key matters (failover).
        topics.state: {
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": "0",
            "segment.ms": "600000",
        },
    }


def co_partitioned(topics: Topics) -> list[str]:
    return [topics.telemetry_console, topics.telemetry_robot, topics.operator]


def admin_client(bootstrap: str, timeout_s: float = 10.0) -> KafkaAdminClient:
    """A KafkaAdminClient that gives up after ``timeout_s`` instead of the 30 s default."""
    host, _, port = bootstrap.partition(",")[0].rpartition(":")
    try:
        # Fail fast (not after the bootstrap timeout) when nothing listens at all.
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=2.0).close()
    except (OSError, ValueError) as exc:
        raise BrokerError(
            f"no Kafka broker answers on {bootstrap} ({exc}); "
            "start one with `telesafe broker start`"
        ) from exc
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="telesafe-broker-admin",
            bootstrap_timeout_ms=int(timeout_s * 1000),
            request_timeout_ms=int(max(timeout_s, 5.0) * 1000),
        )
    except KafkaError as exc:
        raise BrokerError(f"no Kafka broker answers on {bootstrap}: {exc!r}") from exc


def partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition count of each existing topic among ``names`` (missing ones omitted)."""
    described: list[dict[str, Any]] = admin.describe_topics(names)
    counts: dict[str, int] = {}
    for t in described:
        if t.get("error_code", 0) == 0 and t.get("name") in names:
            counts[str(t["name"])] = len(t.get("partitions") or [])
    return counts


def ensure_topics(
    bootstrap: str,
    prefix: str = "",
    partitions: int = DEFAULT_PARTITIONS,
    *,
    timeout_s: float = 30.0,
) -> TopicReport:
    """Create the missing ICD topics under ``prefix``; verify co-partitioning.

    If some co-partitioned topic already exists, missing ones are created with ITS
    partition count (not ``partitions``) so the set stays aligned. Raises
    TopicLayoutError if existing telemetry/operator topics disagree, BrokerError if
    the broker does not answer.
    """
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    topics = Topics(prefix)
    wanted = topics.all()
    admin = admin_client(bootstrap, timeout_s=min(timeout_s, 10.0))
    try:
        existing = set(admin.list_topics()) & set(wanted)
        counts = partition_counts(admin, sorted(existing)) if existing else {}
        _check_layout(topics, counts)
        aligned = [counts[n] for n in co_partitioned(topics) if n in counts]
        n_parts = aligned[0] if aligned else partitions
        configs = topic_configs(topics)
        missing = [n for n in wanted if n not in existing]
        created: list[str] = []
        if missing:
            request = {
                name: {
                    "num_partitions": n_parts,
                    "replication_factor": REPLICATION_FACTOR,
                    "configs": configs.get(name, {}),
                }
                for name in missing
            }
            result = admin.create_topics(
                request, timeout_ms=int(timeout_s * 1000), raise_errors=False
            )
            for t in result.get("topics", []):
                code = t.get("error_code", 0)
                if code == 0:
                    created.append(str(t["name"]))
                elif code != TopicAlreadyExistsError.errno:
                    # Already-exists means a concurrent creator won; the layout check
                    # below still catches a partition count that differs from ours.
                    raise BrokerError(
                        f"creating topic {t['name']} failed: error {code} "
                        f"({t.get('error_message')})"
                    )
            created.sort(key=wanted.index)
            _wait_ready(admin, wanted, timeout_s)
            counts = partition_counts(admin, wanted)
            _check_layout(topics, counts)
        return TopicReport(
            partitions=n_parts,
            created=created,
            existing=[n for n in wanted if n in existing],
        )
    except KafkaError as exc:
        raise BrokerError(f"creating topics on {bootstrap} failed: {exc!r}") from exc
    finally:
        admin.close()


def _wait_ready(admin: KafkaAdminClient, names: list[str], timeout_s: float) -> None:
    """Block until every topic has a leader for every partition (KRaft lags a little)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.wait_for_topics(names, timeout_ms=int(max(1.0, timeout_s) * 1000))
            return
        except KafkaError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _check_layout(topics: Topics, counts: dict[str, int]) -> None:
    console, robot = topics.telemetry_console, topics.telemetry_robot
    if console in counts and robot in counts and counts[console] != counts[robot]:
        raise TopicLayoutError(
            f"telemetry topics differ in partition count ({console}: {counts[console]}, "
            f"{robot}: {counts[robot]}); ICD §2 requires them equal. Recreate them with "
            "the same count (or repartition the smaller one) before running the monitor."
        )
    present = {n: counts[n] for n in co_partitioned(topics) if n in counts}
    if len(set(present.values())) > 1:
        detail = ", ".join(f"{n}: {c}" for n, c in present.items())
        raise TopicLayoutError(
            f"telemetry and operator topics must share one partition count ({detail}); "
            "the monitor co-partitions operator requests with telemetry."
        )
