"""The simulator against the real broker: wire format, rates, and the robot's
safe-stop handshake (command on telesafe.safety.commands -> ack + safe_stopped)."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from monitor.icd.decode import Rejection, decode_telemetry
from monitor.icd.models import (
    Heartbeat,
    Kinematics,
    PolicyRef,
    ProcedureEnd,
    ProcedureStart,
    SafeStop,
    SafeStopAck,
)
from monitor.icd.topics import Topics
from monitor.kafka.settings import KafkaSettings
from monitor.sim import cli as sim_cli
from monitor.sim.faults import parse_spec
from monitor.sim.runner import SimConfig, Simulation

pytestmark = pytest.mark.integration


def _consume_all(settings: KafkaSettings, topics: list[str], idle_s: float = 1.5) -> list[Any]:
    c = KafkaConsumer(**settings.consumer_config(group_id=None, enable_auto_commit=False))
    try:
        tps = [TopicPartition(t, p) for t in topics for p in c.partitions_for_topic(t) or []]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        out: list[Any] = []
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            for recs in c.poll(timeout_ms=200).values():
                out.extend(recs)
                last = time.monotonic()
        return out
    finally:
        c.close()


def _safe_stop(pid: str, cid: str) -> SafeStop:
    return SafeStop(
        command_id=cid,
        procedure_id=pid,
        issued_at=time.time_ns(),
        monitor_id="it-test",
        policy=PolicyRef(pack="default", version="1", rule="manual_test"),
        observed=1.0,
        threshold=0.0,
        reason="integration test safe-stop",
    )


def test_two_procedures_wire_rates_and_safe_stop(kafka_bootstrap: str, topic_prefix: str) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    topics = Topics(topic_prefix)
    cfg = SimConfig(
        duration=5.0,
        procedures=2,
        procedure_prefix="IT-SIM",
        faults=[parse_spec("garbage:robot@1s,count=5,procedure=1")],
        seed=11,
    )
    sim = Simulation(cfg, settings)
    pid0, pid1 = cfg.procedure_ids()
    sim.start()
    producer = KafkaProducer(**settings.producer_config())
    try:
        time.sleep(3.0)  # 3 s of undisturbed telemetry first
        cid = str(uuid.uuid4())
        cmd = _safe_stop(pid0, cid).model_dump_json().encode()
        sent_wall_ns = time.time_ns()
        producer.send(topics.commands, key=pid0.encode(), value=cmd).get(10)
        time.sleep(0.5)
        producer.send(topics.commands, key=pid0.encode(), value=cmd).get(10)  # a re-send
    finally:
        producer.close()
    assert sim.wait(20), "simulation did not finish"
    events = sim.events
    summary = sim.summary()

    recs = _consume_all(settings, [topics.telemetry_console, topics.telemetry_robot])
    valid: dict[tuple[str, str], list[Any]] = defaultdict(list)
    rejected = 0
    for r in recs:
        site = topics.site_of(r.topic)
        assert site is not None
        d = decode_telemetry(r.value, r.key, site)
        if isinstance(d, Rejection):
            rejected += 1
            continue
        valid[(d.procedure_id, d.site)].append(d)
    assert rejected == 5  # exactly the injected garbage
    assert set(valid) == {(p, s) for p in (pid0, pid1) for s in ("console", "robot")}

    for (pid, site), rs in valid.items():
        rs.sort(key=lambda x: x.seq)
        assert [x.seq for x in rs] == list(range(len(rs))), f"seq gap for {pid}/{site}"
        hbs = [x for x in rs if isinstance(x, Heartbeat)]
        span_s = (hbs[-1].sent_at - hbs[0].sent_at) / 1e9
        rate = (len(hbs) - 1) / span_s
        # Generous: a heavily loaded CI box makes the scheduler resync (skip) beats.
        assert 25 <= rate <= 60, f"{pid}/{site} heartbeat rate {rate:.1f} Hz"
        if site == "robot":
            assert isinstance(rs[0], ProcedureStart)
            assert isinstance(rs[-1], ProcedureEnd) and rs[-1].reason == "completed"
            by_arm: dict[str, list[int]] = defaultdict(list)
            for k in (x for x in rs if isinstance(x, Kinematics)):
                by_arm[k.arm].extend(s.t for s in k.samples)
            assert sorted(by_arm) == ["psm1", "psm2", "psm3"]
            for ts in by_arm.values():
                khz = (len(ts) - 1) / ((ts[-1] - ts[0]) / 1e9) / 1000
                assert 0.99 <= khz <= 1.01
                # 5 s of samples, with slack for a slow CI machine
                assert len(ts) >= 4000

    # The safe-stop handshake on procedure 0.
    robot0 = valid[(pid0, "robot")]
    acks = [x for x in robot0 if isinstance(x, SafeStopAck)]
    assert [a.command_id for a in acks] == [cid, cid]  # one per send of the same command
    assert acks[0].result == "safe_stopped" and acks[0].at == acks[1].at
    ack_seq = acks[0].seq
    after = [x for x in robot0 if isinstance(x, Heartbeat) and x.seq > ack_seq]
    assert after and all(h.state == "safe_stopped" for h in after)
    before = [x for x in robot0 if isinstance(x, Heartbeat) and x.seq < ack_seq]
    assert before[0].state == "operating"
    # Procedure 1 was never stopped.
    robot1 = valid[(pid1, "robot")]
    assert all(h.state == "operating" for h in robot1 if isinstance(h, Heartbeat))
    assert not [x for x in robot1 if isinstance(x, SafeStopAck)]

    cmd_events = [e for e in events if e["event"] == "command"]
    assert len(cmd_events) == 1 and cmd_events[0]["command_id"] == cid
    assert [e["event"] for e in events if e["event"] == "command-resend"] == ["command-resend"]
    ack_events = [e for e in events if e["event"] == "ack"]
    assert len(ack_events) == 2
    # The robot heard the command promptly (it listens from start(), no group join).
    assert cmd_events[0]["wall_ns"] - sent_wall_ns < 2_000_000_000
    p0 = summary["procedures"][pid0]
    assert p0["state"] == "safe_stopped" and p0["safe_stops"] == 1 and p0["acks_sent"] == 2
    assert summary["send_errors"] == 0


def test_cli_quiet_json_events(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    rc = sim_cli.main(
        [
            "--duration",
            "3",
            "--quiet",
            "--json-events",
            str(events),
            "--bootstrap",
            kafka_bootstrap,
            "--topic-prefix",
            topic_prefix,
            "--fault",
            "latency:control=350@0.5s",
            "--fault",
            "end@1.5s",
        ]
    )
    assert rc == 0
    lines = [json.loads(x) for x in events.read_text("utf-8").splitlines()]
    names = [e["event"] for e in lines]
    assert names[0] == "start" and "fault" in names and names[-1] == "end"
    assert all("procedure" in e and "wall_ns" in e for e in lines)
