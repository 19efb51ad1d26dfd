"""Signal generators: positions stay in the default box, speeds stay legal."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from monitor.icd.decode import Rejection, decode_telemetry
from monitor.icd.models import Kinematics
from monitor.sim import signals
from monitor.sim.signals import ArmState, MotionTarget, box_margin, circle_through
from monitor.sim.sites import ProcedureSim


def _speeds(ps: list[signals.Vec], dt: float) -> list[float]:
    return [signals.norm(signals.sub(b, a)) / dt for a, b in itertools.pairwise(ps)]


@pytest.mark.parametrize("arm", ["psm1", "psm2", "psm3"])
@pytest.mark.parametrize("phase", [0.0, 1.0, 2.5, 5.0])
def test_nominal_path_inside_box_with_margin_and_slow(arm: str, phase: float) -> None:
    ts = [i * 0.001 for i in range(60_000)]  # a minute at 1 kHz
    ps = [signals.nominal_position(arm, t, phase) for t in ts]
    assert min(box_margin(p) for p in ps) > 10.0
    assert max(_speeds(ps, 0.001)) < 60.0


def test_grip_between_2_and_5_newtons() -> None:
    fs = [signals.nominal_grip(i * 0.01, 0.7) for i in range(10_000)]
    assert min(fs) >= 2.0 and max(fs) <= 5.0


def test_arm_state_reports_its_own_velocity() -> None:
    arm = ArmState.start("psm2", phase=0.3)
    prev = arm.p
    for i in range(1, 2000):
        p, v, _ = arm.step(i * 0.001)
        d = signals.sub(p, prev)
        assert v == pytest.approx((d[0] / 0.001, d[1] / 0.001, d[2] / 0.001), abs=1e-6)
        prev = p


def test_speed_limited_move_towards_target_never_jumps() -> None:
    arm = ArmState.start("psm1", phase=0.0)
    arm.target = MotionTarget(kind="point", point=(0.0, 0.0, -5.0), max_speed=90.0)
    ps = [arm.step(i * 0.001)[0] for i in range(1, 3000)]
    assert max(_speeds(ps, 0.001)) <= 90.0 + 1e-6
    assert box_margin(ps[-1]) < 0  # it did leave the box
    arm.target = MotionTarget()  # back to nominal at a legal speed
    ps = [arm.step(3 + i * 0.001)[0] for i in range(1, 5000)]
    assert max(_speeds(ps, 0.001)) <= 90.0 + 1e-6
    assert box_margin(ps[-1]) > 10


@pytest.mark.parametrize("arm", ["psm1", "psm2", "psm3"])
def test_speed_fault_circle_is_fast_but_inside_box(arm: str) -> None:
    st = ArmState.start(arm, phase=1.0)
    st.target = circle_through(st.p, 250.0, t0=0.0)
    ps = [st.step(i * 0.001)[0] for i in range(1, 3000)]
    sp = _speeds(ps, 0.001)
    assert 240 < sorted(sp)[len(sp) // 2] < 260
    assert min(box_margin(p) for p in ps) > 0


def test_frozen_arm_does_not_move() -> None:
    st = ArmState.start("psm1", 0.0)
    st.frozen = True
    p0 = st.p
    for i in range(100):
        p, v, _ = st.step(i * 0.001)
        assert p == p0 and v == (0.0, 0.0, 0.0)


def test_latency_samples_nonnegative() -> None:
    rng = random.Random(1)
    xs = signals.latency_samples(rng, 10_000, 48.0, 2.0)
    assert min(xs) >= 0
    assert sum(xs) / len(xs) == pytest.approx(48.0, abs=0.2)
    assert min(signals.latency_samples(rng, 1000, 1.0, 5.0)) == 0.0  # clipped


def test_link_values_in_range() -> None:
    rng = random.Random(2)
    for _ in range(1000):
        rtt, jit, loss = signals.link_values(rng)
        assert rtt >= 0 and jit >= 0 and 0 <= loss <= 1
        assert 80 < rtt < 112


def test_wire_kinematics_are_1khz_legal_and_valid() -> None:
    sim = ProcedureSim("LDN-GIB-0001", seed=4)
    out = []
    for i in range(0, 5001):
        out += sim.step(i * 0.001)
    by_arm: dict[str, list[tuple[int, list[float]]]] = {}
    for o in out:
        rec = decode_telemetry(o.value, o.key.encode(), o.site)
        assert not isinstance(rec, Rejection), rec
        if isinstance(rec, Kinematics):
            assert len(rec.samples) == 10
            by_arm.setdefault(rec.arm, []).extend((s.t, s.p) for s in rec.samples)
            for s in rec.samples:
                assert s.f is not None and 2.0 <= s.f <= 5.0
                assert s.v is not None and math.hypot(*s.v) < 60
    assert sorted(by_arm) == ["psm1", "psm2", "psm3"]
    for samples in by_arm.values():
        assert len(samples) >= 4990
        ts = [t for t, _ in samples]
        assert all(b - a == 1_000_000 for a, b in itertools.pairwise(ts))
        ps = [(p[0], p[1], p[2]) for _, p in samples]
        assert min(box_margin(p) for p in ps) > 10
        assert max(_speeds(ps, 0.001)) < 100


def test_hand_formatted_kinematics_is_plain_json() -> None:
    sim = ProcedureSim("LDN-GIB-0001", seed=4)
    out = sim.step(0.0) + sim.step(0.02)
    kin = [o for o in out if o.type == "kinematics"]
    assert kin
    doc = json.loads(kin[0].value)
    assert doc["type"] == "kinematics" and doc["v"] == 1 and len(doc["samples"]) == 10
