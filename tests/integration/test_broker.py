"""Against the real local broker: lifecycle status, ICD topics, a produce/consume round trip."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from monitor.broker import server
from monitor.broker.topics import (
    DEADLETTER_MAX_MESSAGE_BYTES,
    DEFAULT_PARTITIONS,
    TopicLayoutError,
    admin_client,
    ensure_topics,
    partition_counts,
)
from monitor.icd.topics import Topics


def test_status_reports_running(kafka_bootstrap: str, kafka_data_dir: Path) -> None:
    st = server.status(kafka_data_dir, port=int(kafka_bootstrap.rsplit(":", 1)[1]))
    assert st.answers
    assert st.bootstrap == kafka_bootstrap
    if (kafka_data_dir / server.PID_FILE).exists():
        assert st.running and st.pid is not None
    else:  # started from another data dir / by hand: it answers but is not "ours"
        assert not st.running


def test_topics_exist_with_equal_telemetry_partitions(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    admin = admin_client(kafka_bootstrap)
    try:
        assert set(topics.all()) <= set(admin.list_topics())
        counts = partition_counts(admin, topics.all())
    finally:
        admin.close()
    assert counts[topics.telemetry_console] == counts[topics.telemetry_robot]
    assert set(counts.values()) == {DEFAULT_PARTITIONS}


def test_deadletter_accepts_large_records(kafka_bootstrap: str, topic_prefix: str) -> None:
    name = Topics(topic_prefix).deadletter
    admin = admin_client(kafka_bootstrap)
    try:
        res: Any = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, ["max.message.bytes"])]
        )
    finally:
        admin.close()
    value = res["topic"][name]["max.message.bytes"]["value"]
    assert value == str(DEADLETTER_MAX_MESSAGE_BYTES)


def test_record_round_trip_and_co_partitioning(kafka_bootstrap: str, topic_prefix: str) -> None:
    topics = Topics(topic_prefix)
    key = f"proc-{uuid.uuid4().hex[:6]}".encode()
    value = {"v": 1, "type": "heartbeat", "procedure_id": key.decode(), "site": "robot"}
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        robot_md = producer.send(
            topics.telemetry_robot, key=key, value=json.dumps(value).encode()
        ).get(timeout=30)
        console_md = producer.send(topics.telemetry_console, key=key, value=b"{}").get(timeout=30)
    finally:
        producer.close()
    # Same key, same partition count -> same partition number on both telemetry topics.
    assert robot_md.partition == console_md.partition

    consumer = KafkaConsumer(
        topics.telemetry_robot,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic_prefix}test",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    got: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(records)
    finally:
        consumer.close()
    assert len(got) == 1
    assert got[0].key == key
    assert json.loads(got[0].value) == value
    assert got[0].partition == robot_md.partition


def test_ensure_topics_is_idempotent(kafka_bootstrap: str, topic_prefix: str) -> None:
    everything = Topics(topic_prefix).all()
    first = ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    second = ensure_topics(kafka_bootstrap, prefix=topic_prefix, partitions=3)
    assert first.created == [] and second.created == []
    assert first.existing == everything and second.existing == everything
    # An existing deployment's count wins over the requested one.
    assert second.partitions == DEFAULT_PARTITIONS


def test_missing_topics_follow_existing_partition_count(kafka_bootstrap: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix)
    admin = admin_client(kafka_bootstrap)
    try:
        admin.create_topics(
            {topics.telemetry_robot: {"num_partitions": 4, "replication_factor": 1}},
            wait_for_metadata=True,
        )
        report = ensure_topics(kafka_bootstrap, prefix=prefix, partitions=6)
        counts = partition_counts(admin, topics.all())
    finally:
        admin.delete_topics(topics.all(), raise_errors=False)
        admin.close()
    assert report.partitions == 4
    assert set(counts.values()) == {4}
    assert topics.telemetry_robot not in report.created


def test_mismatched_telemetry_partitions_raise(kafka_bootstrap: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix)
    admin = admin_client(kafka_bootstrap)
    try:
        admin.create_topics(
            {
                topics.telemetry_console: {"num_partitions": 2, "replication_factor": 1},
                topics.telemetry_robot: {"num_partitions": 3, "replication_factor": 1},
            },
            wait_for_metadata=True,
        )
        with pytest.raises(TopicLayoutError, match="partition count"):
            ensure_topics(kafka_bootstrap, prefix=prefix)
    finally:
        admin.delete_topics(topics.all(), raise_errors=False)
        admin.close()


def test_start_is_idempotent_when_running(kafka_bootstrap: str, kafka_data_dir: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    t0 = time.monotonic()
    res = server.start(kafka_data_dir, prefix=prefix)
    try:
        assert res.already_running
        assert res.topics is not None and len(res.topics.created) == len(Topics(prefix).all())
        assert time.monotonic() - t0 < 15
    finally:
        admin = admin_client(kafka_bootstrap)
        try:
            admin.delete_topics(Topics(prefix).all(), raise_errors=False)
        finally:
            admin.close()
