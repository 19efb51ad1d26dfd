"""The walking skeleton on real parts: simulator -> Kafka -> `telesafe run` -> safe-stop.

Timing assertions here are generous safety deadlines, not performance goals (see bench/).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from monitor.icd.topics import Topics
from monitor.kafka.settings import KafkaSettings
from monitor.sim.faults import parse_spec
from monitor.sim.runner import SimConfig, Simulation
from tests.integration.monitorkit import TopicWatcher, http_json, http_text, run_monitor

PID = "LDN-GIB-0001"
# ICD §7 safe-stop after > 300 ms of silence; the margin covers Kafka hops on a busy CI box.
SILENCE_STOP_S = 0.300
MARGIN_S = 0.700


def _sim(bootstrap: str, prefix: str, duration: float, *faults: str, **kw: object) -> Simulation:
    cfg = SimConfig(duration=duration, faults=[parse_spec(f) for f in faults], seed=7, **kw)  # type: ignore[arg-type]
    return Simulation(cfg, KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix))


def _fault_wall_s(sim: Simulation, kind: str) -> float:
    for ev in sim.events:
        if ev.get("event") == "fault" and ev.get("kind") == kind:
            return float(ev["wall_ns"]) / 1e9
    raise AssertionError(f"no {kind} fault event in {sim.events[:20]}")


def test_nominal_procedure_gives_no_safe_stop(kafka_bootstrap: str, topic_prefix: str,
                                              tmp_path: Path) -> None:
    topics = Topics(topic_prefix)
    with run_monitor(kafka_bootstrap, topic_prefix, tmp_path) as mon:
        watch = TopicWatcher(kafka_bootstrap, [topics.commands])
        try:
            summary = _sim(kafka_bootstrap, topic_prefix, 6.0).run()
            time.sleep(0.5)
            assert watch.of_type("safe_stop") == [], mon.log()
            hbs = watch.of_type("monitor_heartbeat", PID)
            # 50 Hz dead-man signal for ~6 s; generous lower bound for a loaded machine.
            assert len(hbs) > 150, len(hbs)
            assert {h["status"] for h in hbs} <= {"armed", "warning"}
            seqs = [h["seq"] for h in hbs]
            assert seqs == sorted(seqs)
            assert summary  # the simulator really ran
            metrics = http_text(mon.url + "/metrics")
            assert 'telesafe_records_received_total{site="robot",type="kinematics"}' in metrics
            assert mon.healthy()
        finally:
            watch.close()


@pytest.mark.hazard("H-01")
def test_robot_heartbeat_loss_yields_one_latched_safe_stop(kafka_bootstrap: str,
                                                           topic_prefix: str,
                                                           tmp_path: Path) -> None:
    topics = Topics(topic_prefix)
    with run_monitor(kafka_bootstrap, topic_prefix, tmp_path) as mon:
        watch = TopicWatcher(kafka_bootstrap, [topics.commands])
        try:
            # The robot acknowledges late (450 ms), so re-sends happen and then must stop.
            sim = _sim(kafka_bootstrap, topic_prefix, 5.0, "heartbeat-stop:robot@2s",
                       ack_delay_ms=450.0)
            sim.run()
            time.sleep(0.5)
            stops = watch.of_type("safe_stop", PID)
            assert stops, mon.log()
            ids = {s["command_id"] for s in stops}
            assert len(ids) == 1, f"one breach episode must be one command id, got {ids}"
            first = stops[0]
            assert first["policy"]["rule"] == "heartbeat_silence"
            assert first["policy"]["pack"] == "default"
            assert first["threshold"] == 300
            fault_at = _fault_wall_s(sim, "heartbeat-stop")
            detect = stops[0]["_received_at"] - fault_at
            assert SILENCE_STOP_S - 0.05 < detect < SILENCE_STOP_S + MARGIN_S, detect
            # Re-sent every 100 ms until the 450 ms-late ack: 3-5 re-sends, then silence.
            assert 2 <= len(stops) - 1 <= 7, len(stops)
            last_stop = stops[-1]["_received_at"]
            assert stops[0]["_received_at"] + 0.9 > last_stop, "re-sends did not stop after ack"
            status = [h["status"] for h in watch.of_type("monitor_heartbeat", PID)]
            assert "safe_stop_latched" in status
            # Latched: after the stop, the dead-man signal never says armed again.
            after = status[status.index("safe_stop_latched"):]
            assert set(after) == {"safe_stop_latched"}, set(after)
        finally:
            watch.close()


@pytest.mark.hazard("H-11")
def test_unacknowledged_safe_stop_is_resent_with_same_id(kafka_bootstrap: str,
                                                        topic_prefix: str,
                                                        tmp_path: Path) -> None:
    topics = Topics(topic_prefix)
    with run_monitor(kafka_bootstrap, topic_prefix, tmp_path) as mon:
        watch = TopicWatcher(kafka_bootstrap, [topics.commands])
        try:
            _sim(kafka_bootstrap, topic_prefix, 3.5, "heartbeat-stop:robot@1.5s",
                 ack=False, send_end=False).run()
            time.sleep(0.3)
            stops = watch.of_type("safe_stop", PID)
            assert len({s["command_id"] for s in stops}) == 1
            assert len(stops) >= 6, f"expected >= 5 re-sends, got {len(stops) - 1}"
            gaps = [b["_received_at"] - a["_received_at"] for a, b in itertools.pairwise(stops)]
            assert 0.05 < sorted(gaps)[len(gaps) // 2] < 0.2, gaps
            metrics = http_text(mon.url + "/metrics")
            assert f'telesafe_safe_stop_escalated{{procedure_id="{PID}"}} 1.0' in metrics
        finally:
            watch.close()


@pytest.mark.hazard("H-06")
def test_garbage_goes_to_deadletter_and_monitor_keeps_serving(kafka_bootstrap: str,
                                                              topic_prefix: str,
                                                              tmp_path: Path) -> None:
    topics = Topics(topic_prefix)
    with run_monitor(kafka_bootstrap, topic_prefix, tmp_path) as mon:
        watch = TopicWatcher(kafka_bootstrap, [topics.commands, topics.deadletter])
        try:
            _sim(kafka_bootstrap, topic_prefix, 4.0, "garbage:robot@1s,count=8").run()
            assert watch.wait_for(lambda: len([r for r in watch.snapshot()
                                               if r.topic == topics.deadletter]) >= 8, 5.0)
            dead = [r for r in watch.snapshot() if r.topic == topics.deadletter]
            for r in dead:
                assert r.headers.get("telesafe-error"), r
                src = r.headers["telesafe-source"].decode()
                topic, partition, offset = src.rsplit(":", 2)
                assert topic == topics.telemetry_robot and int(offset) >= 0 and int(partition) >= 0
            reasons = {r.headers["telesafe-error"].decode() for r in dead}
            assert any("JSON" in x for x in reasons), reasons
            assert any("site" in x for x in reasons), reasons
            assert watch.of_type("safe_stop") == [], "garbage must not trip a nominal procedure"
            code, health = http_json(mon.url + "/healthz")
            assert code == 200, health
            assert "telesafe_records_rejected_total" in http_text(mon.url + "/metrics")
        finally:
            watch.close()
