"""Against the real local broker: lifecycle status, ICD topics, a produce/consume round trip."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from monitor.broker import server
from monitor.broker.topics import (
    DEADLETTER_MAX_MESSAGE_BYTES,
    DEFAULT_PARTITIONS,
    TopicLayoutError,
    admin_client,
    check_layout,
    ensure_topics,
)
from monitor.icd.topics import Topics
from monitor.kafka import KafkaSettings, TopicSpec, open_producer
from monitor.kafka.partitioner import partition_for


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
        assert set(topics.all()) <= set(admin.list_topics(10))
        counts = admin.partition_counts(topics.all(), 10)
        configs = admin.topic_configs(topics.all(), 10)
    finally:
        admin.close()
    for name in (topics.telemetry_console, topics.telemetry_robot, topics.operator):
        assert configs[name]["message.timestamp.type"] == "LogAppendTime", name
    assert counts[topics.telemetry_console] == counts[topics.telemetry_robot]
    assert set(counts.values()) == {DEFAULT_PARTITIONS}


def test_deadletter_accepts_large_records(kafka_bootstrap: str, topic_prefix: str) -> None:
    name = Topics(topic_prefix).deadletter
    admin = admin_client(kafka_bootstrap)
    try:
        value = admin.topic_configs([name], 10)[name]["max.message.bytes"]
    finally:
        admin.close()
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
        admin.create_topics([TopicSpec(topics.telemetry_robot, 4)], 10)
        report = ensure_topics(kafka_bootstrap, prefix=prefix, partitions=6)
        counts = admin.partition_counts(topics.all(), 10)
    finally:
        admin.delete_topics(topics.all(), 10)
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
            [TopicSpec(topics.telemetry_console, 2), TopicSpec(topics.telemetry_robot, 3)], 10
        )
        with pytest.raises(TopicLayoutError, match=r"share\s+one count"):
            ensure_topics(kafka_bootstrap, prefix=prefix)
    finally:
        admin.delete_topics(topics.all(), 10)
        admin.close()


def test_state_topic_with_another_partition_count_is_refused(kafka_bootstrap: str) -> None:
    """Latch restore reads telesafe.state by the telemetry partition numbers it owns: a
    state topic with another count would restore the wrong latches (or none)."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix)
    admin = admin_client(kafka_bootstrap)
    try:
        admin.create_topics(
            [
                TopicSpec(topics.telemetry_console, 6),
                TopicSpec(topics.telemetry_robot, 6),
                TopicSpec(topics.state, 3),
            ],
            10,
        )
        with pytest.raises(TopicLayoutError) as err:
            ensure_topics(kafka_bootstrap, prefix=prefix, partitions=6)
        msg = str(err.value)
        assert topics.state in msg and "3 partitions" in msg and "recreate" in msg, msg
    finally:
        admin.delete_topics(topics.all(), 10)
        admin.close()


def test_existing_input_topics_get_broker_append_time(kafka_bootstrap: str) -> None:
    """Topics created before (CreateTime) are refused by the monitor's check with the fix,
    and `telesafe broker topics` (ensure_topics) switches them to LogAppendTime."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix)
    admin = admin_client(kafka_bootstrap)
    try:
        admin.create_topics([TopicSpec(n, 6) for n in topics.all()], 10)
        with pytest.raises(TopicLayoutError, match="LogAppendTime"):
            check_layout(admin, topics)
        report = ensure_topics(kafka_bootstrap, prefix=prefix)
        assert set(report.altered) == {
            topics.telemetry_console,
            topics.telemetry_robot,
            topics.operator,
        }
        check_layout(admin, topics)
    finally:
        admin.delete_topics(topics.all(), 10)
        admin.close()


def test_missing_topics_are_named_with_the_command_that_creates_them(
    kafka_bootstrap: str,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    admin = admin_client(kafka_bootstrap)
    try:
        with pytest.raises(TopicLayoutError) as err:
            check_layout(admin, Topics(prefix))
    finally:
        admin.close()
    assert f"telesafe broker topics --topic-prefix {prefix}" in str(err.value)


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_producers_partition_keys_like_the_java_client(
    kafka_bootstrap: str, topic_prefix: str, client: str
) -> None:
    """ICD 1.1 §2: whatever client wrote a key, it lands on murmur2(key) % partitions,
    so co-partitioning holds across parties (librdkafka's default would not)."""
    topic = Topics(topic_prefix).deadletter
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, client=client)  # type: ignore[arg-type]
    producer = open_producer(settings, "tool", "partitioner-test")
    keys = [f"LDN-GIB-{i:04d}-{uuid.uuid4().hex[:6]}".encode() for i in range(2000)]
    got: list[tuple[bytes, int]] = []
    try:
        for i, key in enumerate(keys):
            if i % 500 == 0:  # a few acknowledged round trips, the rest queued
                _, part, _ = producer.deliver(topic, key, b"x")
                got.append((key, part))
            else:
                producer.send(topic, key, b"x")
        producer.flush(30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"{topic_prefix}partition-check",
        enable_auto_commit=False,
    )
    try:
        deadline = time.monotonic() + 30
        while len(got) < len(keys) + 4 and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                got.extend((r.key, r.partition) for r in recs)
    finally:
        consumer.close()
    assert len(got) >= len(keys)
    wrong = [(k, p) for k, p in got if p != partition_for(k, DEFAULT_PARTITIONS)]
    assert wrong == []


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
            admin.delete_topics(Topics(prefix).all(), 10)
        finally:
            admin.close()
