"""Scale-out and failover on the real broker: three monitors share the work through one
consumer group; one is SIGKILLed; its procedures are monitored again within the bound,
latched ones stay latched, and a heartbeat loss right after the kill still stops the robot.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from kafka import KafkaProducer

from monitor.icd.models import RearmRequest
from monitor.icd.topics import Topics
from monitor.kafka.settings import KafkaSettings
from monitor.sim.faults import parse_spec
from monitor.sim.runner import SimConfig, Simulation
from tests.integration.monitorkit import TopicWatcher, run_monitor

N_PROCS = 12
LATCHED = range(0, N_PROCS)  # a short robot outage at 4 s latches all (acknowledged)
LATE_FAULT_S = 28.0  # sim time of the post-takeover heartbeat loss
# Documented takeover bound (docs/architecture.md): session timeout 6 s + rejoin + restore.
TAKEOVER_BOUND_S = 12.0


def _owners(watch: TopicWatcher, since: float) -> dict[str, set[str]]:
    """procedure -> monitor ids that sent it monitor heartbeats since `since`."""
    out: dict[str, set[str]] = defaultdict(set)
    for s in watch.snapshot():
        if s.received_at < since:
            continue
        with contextlib.suppress(ValueError):
            v = json.loads(s.value or b"")
            if v.get("type") == "monitor_heartbeat":
                out[v["procedure_id"]].add(v["monitor_id"])
    return out


@pytest.mark.hazard("H-04")
def test_sigkill_one_of_three_instances(kafka_bootstrap: str, topic_prefix: str,
                                        tmp_path: Path) -> None:
    topics = Topics(topic_prefix)
    with contextlib.ExitStack() as stack:
        mons = [stack.enter_context(run_monitor(kafka_bootstrap, topic_prefix, tmp_path))
                for _ in range(3)]
        watch = TopicWatcher(kafka_bootstrap, [topics.commands])
        stack.callback(watch.close)
        time.sleep(2.0)  # let the group settle after the staggered joins
        ids = [f"LDN-GIB-{i + 1:04d}" for i in range(N_PROCS)]
        faults = [parse_spec(f"heartbeat-stop:robot@4s,for=0.8s,procedure={i}") for i in LATCHED]
        # After the kill (at ~9 s) every unlatched procedure loses its robot heartbeats.
        faults += [parse_spec(f"heartbeat-stop:robot@{LATE_FAULT_S}s,procedure={i}")
                   for i in range(N_PROCS)]
        # Kinematics off: failover is about ownership and liveness, and 12 procedures of
        # 1 kHz kinematics would starve three monitors on a 2-core CI machine.
        sim = Simulation(SimConfig(duration=LATE_FAULT_S + 4, procedures=N_PROCS, faults=faults,
                                   seed=3, kinematics=False),
                         KafkaSettings(bootstrap_servers=kafka_bootstrap,
                                       topic_prefix=topic_prefix))
        sim.start()
        stack.callback(sim.stop)
        time.sleep(8.0)
        before = _owners(watch, time.time() - 2.0)
        assert set(before) == set(ids), f"not every procedure is monitored: {sorted(before)}"
        by_monitor: dict[str, list[str]] = defaultdict(list)
        for pid, owners in before.items():
            assert len(owners) == 1, f"{pid} is monitored by {owners}"
            by_monitor[next(iter(owners))].append(pid)
        # Kill the instance owning the most procedures.
        latched_ids = {ids[i] for i in LATCHED}
        victim_id = max(by_monitor, key=lambda m: len(by_monitor[m]))
        victim = next(m for m in mons if f"itest-{m.port}" == victim_id)
        orphans = by_monitor[victim_id]
        assert orphans, "the victim owned nothing"
        stopped_before = {v["procedure_id"]: v["command_id"] for v in watch.of_type("safe_stop")}
        assert latched_ids <= set(stopped_before), "the 4 s outage did not latch every target"
        victim.proc.send_signal(signal.SIGKILL)
        t_kill = time.time()
        victim.proc.wait(timeout=5)

        # Every orphan is monitored again, by a survivor, within the bound.
        def resumed() -> bool:
            after = _owners(watch, t_kill + 0.5)
            return all(after.get(p, set()) - {victim_id} for p in orphans)

        assert watch.wait_for(resumed, TAKEOVER_BOUND_S + 2), (
            f"orphans {orphans} not monitored again within {TAKEOVER_BOUND_S} s")
        takeover_s = time.time() - t_kill
        # Latched procedures stay latched under their new owner: status never says armed.
        for v in watch.of_type("monitor_heartbeat"):
            if v["procedure_id"] in latched_ids and v["_received_at"] > t_kill:
                assert v["status"] == "safe_stop_latched", v
        restored = [v for v in watch.of_type("safe_stop") if v["_received_at"] > t_kill
                    and v["procedure_id"] in latched_ids]
        for v in restored:  # a re-send after takeover keeps the original command id
            assert v["command_id"] == stopped_before[v["procedure_id"]], v

        # Re-arm everything through the new owners (a loaded CI box can stall the simulator
        # into genuine early stops); whatever is armed just before the late heartbeat loss
        # must then be stopped.
        late = set(ids)
        prod = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
        rearmed: set[str] = set()
        for _ in range(10):  # an operator retries while a stalled site looks unhealthy
            latest = {v["procedure_id"]: v["command_id"] for v in watch.of_type("safe_stop")}
            for pid in late - rearmed:
                if pid not in latest:
                    rearmed.add(pid)  # never latched: nothing to clear
                    continue
                req = RearmRequest(v=1, type="rearm_request", procedure_id=pid,
                                   operator_id="dr-ok", reason="failover test",
                                   requested_at=time.time_ns(), command_id=latest[pid],
                                   request_id=str(uuid.uuid4()))
                prod.send(topics.operator, key=pid.encode(), value=req.model_dump_json().encode())
            prod.flush()
            time.sleep(0.4)
            rearmed |= {v["procedure_id"] for v in watch.of_type("rearm")}
            if late <= rearmed:
                break
        prod.close()
        fault_wall = sim._wall_start + LATE_FAULT_S
        time.sleep(max(0.0, fault_wall - 0.3 - time.time()))
        status: dict[str, str] = {}
        for v in watch.of_type("monitor_heartbeat"):
            status[v["procedure_id"]] = v["status"]
        armed = {p for p in late if status.get(p) in ("armed", "warning")}
        assert armed & set(orphans), f"no orphan re-armed before the late fault: {status}"
        sim.wait(timeout=30)
        time.sleep(1.0)
        stops_after = {v["procedure_id"] for v in watch.of_type("safe_stop")
                       if v["_received_at"] > fault_wall}
        missing = armed - stops_after
        assert not missing, f"heartbeat loss after the kill not stopped for {missing}"
        print(f"takeover after SIGKILL: {takeover_s:.1f} s for {len(orphans)} procedures; "
              f"{len(armed)} re-armed procedures stopped again after the late fault "
              f"({len(armed & set(orphans))} of them taken over from the killed instance)")
