"""Site models: seq counters, the robot's safe-stop state machine, fault effects."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from monitor.icd.decode import Rejection, decode_telemetry
from monitor.icd.models import (
    AnyTelemetry,
    Heartbeat,
    Latency,
    Link,
    MonitorHeartbeat,
    PolicyRef,
    ProcedureEnd,
    ProcedureStart,
    Rearm,
    SafeStop,
    SafeStopAck,
)
from monitor.sim import signals
from monitor.sim.faults import parse_spec
from monitor.sim.sites import Outgoing, ProcedureOptions, ProcedureSim

PID = "LDN-GIB-0001"


def _wall() -> Any:
    counter = itertools.count(1_700_000_000_000_000_000, 1_000_000)
    return lambda: next(counter)


def make(*faults: str, **opts: Any) -> tuple[ProcedureSim, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    sim = ProcedureSim(
        PID,
        faults=[parse_spec(f) for f in faults],
        options=ProcedureOptions(**opts),
        seed=7,
        wall=_wall(),
        on_event=events.append,
    )
    return sim, events


def run(sim: ProcedureSim, t0: float, t1: float, dt: float = 0.001) -> list[Outgoing]:
    out: list[Outgoing] = []
    n = round((t1 - t0) / dt)
    for i in range(n + 1):
        out += sim.step(t0 + i * dt)
    return out


def decoded(out: list[Outgoing]) -> list[AnyTelemetry]:
    recs = []
    for o in out:
        r = decode_telemetry(o.value, o.key.encode(), o.site)
        assert not isinstance(r, Rejection), (r, o.value[:200])
        recs.append(r)
    return recs


def safe_stop(cid: str = "c0ffee00-0000-4000-8000-000000000001") -> SafeStop:
    return SafeStop(
        command_id=cid,
        procedure_id=PID,
        issued_at=1,
        monitor_id="mon-1",
        policy=PolicyRef(pack="default", version="1", rule="heartbeat_silence"),
        observed=350.0,
        threshold=300.0,
        reason="robot heartbeat silent for 350 ms",
    )


def rearm() -> Rearm:
    return Rearm(
        command_id="r-1", procedure_id=PID, issued_at=2, operator_id="dr-x", reason="link ok"
    )


def test_start_first_then_contiguous_seq_per_site_and_rates() -> None:
    sim, events = make(policy="pack-a")
    recs = decoded(run(sim, 0.0, 2.0))
    first = recs[0]
    assert isinstance(first, ProcedureStart) and first.site == "robot" and first.seq == 0
    assert first.robot.model == "Toumai" and first.arms == ["psm1", "psm2", "psm3", "ecm"]
    assert first.policy == "pack-a"
    for site in ("robot", "console"):
        seqs = [r.seq for r in recs if r.site == site]
        assert seqs == list(range(len(seqs)))
        hb = [r for r in recs if r.site == site and isinstance(r, Heartbeat)]
        assert 98 <= len(hb) <= 102  # 50 Hz for 2 s
        assert all(h.state == "operating" and h.clock.source == "ptp" for h in hb)
        assert all(abs(h.clock.offset_ns) <= 20_000 for h in hb)
        links = [r for r in recs if r.site == site and isinstance(r, Link)]
        assert len(links) == 2 and all(lk.window_ms == 1000 for lk in links)
    control = [r for r in recs if isinstance(r, Latency) and r.channel == "control"]
    video = [r for r in recs if isinstance(r, Latency) and r.channel == "video"]
    assert all(r.site == "robot" for r in control) and all(r.site == "console" for r in video)
    assert 39 <= len(control) <= 41 and len(control[0].samples_ms) == 10
    assert 40 < sum(control[0].samples_ms) / 10 < 56
    assert events[0]["event"] == "start"


def test_safe_stop_ack_same_id_and_idempotent_resend() -> None:
    sim, events = make(ack_delay_s=0.020)
    run(sim, 0.0, 0.5)
    cmd = safe_stop()
    sim.on_command(cmd, 0.5005)
    assert sim.state == "safe_stopped"
    recs = decoded(run(sim, 0.501, 0.560))
    acks = [r for r in recs if isinstance(r, SafeStopAck)]
    assert len(acks) == 1
    ack = acks[0]
    assert ack.command_id == cmd.command_id and ack.result == "safe_stopped"
    hbs = [r for r in recs if isinstance(r, Heartbeat) and r.site == "robot"]
    assert hbs and all(h.state == "safe_stopped" for h in hbs)
    # The ack is sent after the delay, not before.
    ack_out = next(e for e in events if e["event"] == "ack")
    assert ack_out["t"] >= 0.5205
    # Re-send with the same id: acknowledged again, same `at`, not a new stop.
    sim.on_command(cmd, 0.6)
    recs2 = decoded(run(sim, 0.6, 0.65))
    acks2 = [r for r in recs2 if isinstance(r, SafeStopAck)]
    assert len(acks2) == 1 and acks2[0].command_id == cmd.command_id and acks2[0].at == ack.at
    assert len(sim.stops) == 1 and sim.commands_received == 2 and sim.acks_sent == 2
    names = [e["event"] for e in events]
    assert names.count("command") == 1 and names.count("command-resend") == 1


def test_kinematics_stop_moving_when_safe_stopped_and_resume_after_rearm() -> None:
    sim, events = make()
    run(sim, 0.0, 0.3)
    sim.on_command(safe_stop(), 0.3)
    recs = decoded(run(sim, 0.301, 0.6))
    kin = [s for r in recs if r.type == "kinematics" for s in r.samples]
    assert kin and all(s.v == [0.0, 0.0, 0.0] for s in kin[40:])
    sim.on_command(rearm(), 0.6)
    assert sim.state == "operating"
    recs = decoded(run(sim, 0.601, 0.8))
    hbs = [r for r in recs if isinstance(r, Heartbeat) and r.site == "robot"]
    assert hbs and all(h.state == "operating" for h in hbs)
    kin = [s for r in recs if r.type == "kinematics" for s in r.samples]
    assert any(s.v != [0.0, 0.0, 0.0] for s in kin)
    assert [e["event"] for e in events if e["event"] in ("state", "rearm")] == [
        "state",
        "rearm",
        "state",
    ]


def test_no_ack_option() -> None:
    sim, _ = make(ack=False)
    run(sim, 0.0, 0.1)
    sim.on_command(safe_stop(), 0.1)
    recs = decoded(run(sim, 0.101, 0.5))
    assert not [r for r in recs if isinstance(r, SafeStopAck)]
    assert sim.state == "safe_stopped"


def test_deadman_lost_and_resumed_and_hold() -> None:
    sim, events = make(deadman_hold=True)
    mhb = MonitorHeartbeat(procedure_id=PID, seq=0, issued_at=1, monitor_id="m", status="armed")
    sim.on_command(mhb, 0.0)
    run(sim, 0.0, 0.4)
    assert not sim.deadman_lost
    run(sim, 0.401, 0.6)
    assert sim.deadman_lost and sim.state == "hold"
    sim.on_command(mhb, 0.61)
    assert not sim.deadman_lost and sim.state == "operating"
    names = [e["event"] for e in events]
    assert "deadman-lost" in names and "deadman-resumed" in names


def test_deadman_reports_only_by_default() -> None:
    sim, events = make()
    run(sim, 0.0, 0.7)
    lost = [e for e in events if e["event"] == "deadman-lost"]
    assert lost and lost[0]["never_heard"] is True and sim.state == "operating"


def test_heartbeat_stop_fault_with_for() -> None:
    sim, events = make("heartbeat-stop:robot@0.5s,for=0.2s")

    def robot_hbs(recs: list[AnyTelemetry]) -> int:
        return sum(1 for r in recs if isinstance(r, Heartbeat) and r.site == "robot")

    before = decoded(run(sim, 0.0, 0.499))
    during = decoded(run(sim, 0.5, 0.699))
    after = decoded(run(sim, 0.7, 1.0))
    assert robot_hbs(before) >= 24 and robot_hbs(during) == 0 and robot_hbs(after) >= 14
    assert any(isinstance(r, Heartbeat) and r.site == "console" for r in during)
    recs = before + during + after
    robot = [r.seq for r in recs if r.site == "robot"]
    assert robot == list(range(len(robot)))  # no heartbeat -> no seq used
    assert [e["event"] for e in events if e["event"].startswith("fault")] == [
        "fault",
        "fault-end",
    ]


def test_silence_fault_leaves_seq_gap() -> None:
    sim, _ = make("silence:console@0.2s,for=0.2s")
    recs = decoded(run(sim, 0.0, 0.6))
    seqs = [r.seq for r in recs if r.site == "console"]
    gaps = [b - a for a, b in itertools.pairwise(seqs)]
    assert max(gaps) > 10 and sim.console.lost > 10


def test_latency_faults() -> None:
    sim, _ = make("latency:control=350@0.2s", "latency-spike:control=600@0.5s")
    recs = decoded(run(sim, 0.0, 0.8))
    ctrl = [r for r in recs if isinstance(r, Latency) and r.channel == "control"]
    before = [x for r in ctrl[:3] for x in r.samples_ms]
    after = [x for r in ctrl[-2:] for x in r.samples_ms]
    assert max(before) < 100 and min(after) > 250
    assert 600.0 in [x for r in ctrl for x in r.samples_ms]


def test_out_of_box_fault_leaves_box_and_reports_effect() -> None:
    sim, events = make("out-of-box:psm1@0.1s")
    recs = decoded(run(sim, 0.0, 2.5))
    ps = [s.p for r in recs if r.type == "kinematics" and r.arm == "psm1" for s in r.samples]
    assert min(signals.box_margin((p[0], p[1], p[2])) for p in ps) < 0
    eff = [e for e in events if e["event"] == "fault-effective"]
    assert len(eff) == 1 and sim.first_fault_t == pytest.approx(eff[0]["t"])


def test_speed_and_grip_faults() -> None:
    sim, _ = make("speed:psm2=250@0.1s", "grip:psm1=16@0.1s")
    recs = decoded(run(sim, 0.0, 0.5))
    late = [r for r in recs if r.type == "kinematics"][-9:]
    for r in late:
        for s in r.samples:
            if r.arm == "psm2":
                assert s.v is not None and 240 < sum(c * c for c in s.v) ** 0.5 < 260
            if r.arm == "psm1":
                assert s.f == 16.0


def test_zone_fault_reaches_point() -> None:
    sim, events = make("zone:psm3=0,40,-90@0.1s")
    decoded(run(sim, 0.0, 1.5))
    assert any(e["event"] == "fault-effective" for e in events)
    assert signals.norm(signals.sub(sim.arms["psm3"].p, (0.0, 40.0, -90.0))) < 0.5


def test_link_faults() -> None:
    sim, _ = make("loss:robot=0.05@0s", "jitter:console=15@0s")
    recs = decoded(run(sim, 0.0, 0.1))
    links = {r.site: r for r in recs if isinstance(r, Link)}
    assert links["robot"].loss_ratio == pytest.approx(0.05, rel=0.5)
    assert links["console"].jitter_ms == pytest.approx(15, rel=0.5)


def test_garbage_is_invalid_and_uses_no_seq() -> None:
    sim, events = make("garbage:robot@0.1s,count=5")
    out = run(sim, 0.0, 0.3)
    bad = [o for o in out if o.garbage]
    assert len(bad) == 5
    reasons = [decode_telemetry(o.value, o.key.encode(), o.site) for o in bad]
    assert all(isinstance(r, Rejection) for r in reasons)
    good = decoded([o for o in out if not o.garbage])
    seqs = [r.seq for r in good if r.site == "robot"]
    assert seqs == list(range(len(seqs)))
    assert next(e for e in events if e["event"] == "fault")["garbage"] == [
        "not-json",
        "nan",
        "wrong-site",
        "missing-field",
        "wrong-key",
    ]
    assert json.loads(bad[2].value)["site"] == "console"


def test_end_fault_and_finish() -> None:
    sim, _ = make("end@0.2s,reason=aborted")
    recs = decoded(run(sim, 0.0, 0.5))
    assert isinstance(recs[-1], ProcedureEnd) and recs[-1].reason == "aborted"
    assert sim.ended and sim.step(0.6) == []
    sim2, _ = make(send_end=False)
    run(sim2, 0.0, 0.1)
    out: list[Outgoing] = []
    sim2.finish(0.1, out)
    assert out == [] and sim2.ended


def test_rearm_clears_motion_faults() -> None:
    sim, events = make("grip:psm1=16@0.1s")
    run(sim, 0.0, 0.2)
    sim.on_command(safe_stop(), 0.2)
    run(sim, 0.201, 0.3)
    sim.on_command(rearm(), 0.3)
    assert sim.arms["psm1"].grip_override is None
    assert any(e["event"] == "fault-cleared" for e in events)
