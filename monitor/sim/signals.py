"""Pure signal generators: arm motion, grip force, latency, link values.

Nothing here touches Kafka or the real clock: every function takes the
procedure time (seconds) and/or a `random.Random`, so tests can check the
numbers directly (positions stay inside the default box, speed stays legal).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

Vec = tuple[float, float, float]

# ICD §7 default allowed box (mm, RCM frame).
BOX_MIN: Vec = (-120.0, -120.0, -180.0)
BOX_MAX: Vec = (120.0, 120.0, -20.0)
BOX_CENTRE: Vec = (0.0, 0.0, -100.0)

SAMPLE_PERIOD_S = 0.001  # 1 kHz kinematics
BATCH = 10  # samples per kinematics record
RECOVERY_SPEED_MM_S = 90.0  # below the 100 mm/s default warn threshold

# Nominal path centres per arm: spread apart, each >= 40 mm from every box face
# once the path amplitude is added.
ARM_CENTRES: dict[str, Vec] = {
    "psm1": (-50.0, 0.0, -100.0),
    "psm2": (50.0, 0.0, -100.0),
    "psm3": (0.0, 50.0, -100.0),
}
AMPLITUDE: Vec = (30.0, 30.0, 25.0)
# Angular rates (rad/s). Peak speed <= sqrt(sum((A*w)^2)) = ~39 mm/s, well under 60.
OMEGA: Vec = (0.8, 0.6, 0.7)


def _add(a: Vec, b: Vec) -> Vec:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _scale(a: Vec, k: float) -> Vec:
    return (a[0] * k, a[1] * k, a[2] * k)


def norm(a: Vec) -> float:
    return math.sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2])


def box_margin(p: Vec) -> float:
    """Distance from p to the nearest default-box face (negative when outside)."""
    return min(min(p[i] - BOX_MIN[i], BOX_MAX[i] - p[i]) for i in range(3))


def nominal_position(arm: str, t: float, phase: float = 0.0) -> Vec:
    """Smooth Lissajous path of one arm's tool tip at procedure time t (s)."""
    c = ARM_CENTRES.get(arm, BOX_CENTRE)
    return (
        c[0] + AMPLITUDE[0] * math.sin(OMEGA[0] * t + phase),
        c[1] + AMPLITUDE[1] * math.sin(OMEGA[1] * t + 1.3 * phase + 0.5),
        c[2] + AMPLITUDE[2] * math.sin(OMEGA[2] * t + 0.7 * phase + 1.1),
    )


def nominal_grip(t: float, phase: float = 0.0) -> float:
    """Grip force (N) between 2 and 5, well under the 10 N warn threshold."""
    return 3.5 + 1.5 * math.sin(0.9 * t + phase)


@dataclass
class MotionTarget:
    """Where an arm is being driven, and how fast it may get there.

    kind: "nominal" (the surgeon's normal path), "point" (fixed point, e.g.
    out-of-box or forbidden-zone faults) or "circle" (fast circular motion for
    the speed fault).
    """

    kind: str = "nominal"
    point: Vec = (0.0, 0.0, 0.0)
    max_speed: float = RECOVERY_SPEED_MM_S
    # circle parameters
    centre: Vec = (0.0, 0.0, 0.0)
    u: Vec = (1.0, 0.0, 0.0)
    w: Vec = (0.0, 1.0, 0.0)
    radius: float = 0.0
    omega: float = 0.0
    t0: float = 0.0


def circle_through(p: Vec, speed: float, t0: float, radius: float = 30.0) -> MotionTarget:
    """A circle of `radius` through p, bent towards the box centre so it stays inside."""
    to_c = sub(BOX_CENTRE, p)
    n = norm(to_c)
    u = _scale(to_c, 1.0 / n) if n > 1e-6 else (1.0, 0.0, 0.0)
    # w: perpendicular to u, preferably in the x-y plane (the box is widest there).
    cross = (u[1], -u[0], 0.0)  # u x z
    cn = norm(cross)
    w = _scale(cross, 1.0 / cn) if cn > 1e-6 else (0.0, 1.0, 0.0)
    centre = _add(p, _scale(u, radius))
    return MotionTarget(
        kind="circle",
        centre=centre,
        u=u,
        w=w,
        radius=radius,
        omega=speed / radius,
        t0=t0,
        max_speed=speed * 1.5,
    )


def target_position(arm: str, target: MotionTarget, t: float, phase: float) -> Vec:
    if target.kind == "point":
        return target.point
    if target.kind == "circle":
        a = target.omega * (t - target.t0)
        # Starts at p (a=0): centre - r*u.
        return _add(
            target.centre,
            _add(
                _scale(target.u, -target.radius * math.cos(a)),
                _scale(target.w, target.radius * math.sin(a)),
            ),
        )
    return nominal_position(arm, t, phase)


@dataclass
class ArmState:
    """One arm's tool tip, integrated sample by sample.

    The tip tracks its target with a speed limit, so switching between the
    nominal path, a fault target and back never produces a position jump (a
    jump would be an infinite speed to a monitor deriving v from p).
    """

    arm: str
    phase: float
    p: Vec = (0.0, 0.0, 0.0)
    v: Vec = (0.0, 0.0, 0.0)
    target: MotionTarget = field(default_factory=MotionTarget)
    frozen: bool = False
    grip_override: float | None = None

    @classmethod
    def start(cls, arm: str, phase: float) -> ArmState:
        return cls(arm=arm, phase=phase, p=nominal_position(arm, 0.0, phase))

    def step(self, t: float, dt: float = SAMPLE_PERIOD_S) -> tuple[Vec, Vec, float]:
        """Advance to time t (one sample later); return (p, v, grip)."""
        if self.frozen:
            self.v = (0.0, 0.0, 0.0)
        else:
            want = target_position(self.arm, self.target, t, self.phase)
            d = sub(want, self.p)
            dist = norm(d)
            limit = self.target.max_speed * dt
            if dist > limit > 0:
                d = _scale(d, limit / dist)
            self.v = _scale(d, 1.0 / dt)
            self.p = _add(self.p, d)
        grip = self.grip_override if self.grip_override is not None else nominal_grip(t, self.phase)
        return self.p, self.v, grip


def latency_samples(rng: random.Random, n: int, mean_ms: float, sd_ms: float) -> list[float]:
    """n one-way latency samples ~ N(mean, sd), clipped at 0 (ICD: numbers >= 0)."""
    return [round(max(0.0, rng.gauss(mean_ms, sd_ms)), 3) for _ in range(n)]


def link_values(
    rng: random.Random,
    rtt_ms: float = 96.0,
    jitter_ms: float = 2.0,
    loss_ratio: float = 0.0001,
) -> tuple[float, float, float]:
    """(rtt, jitter, loss) with a little noise around the given centres."""
    rtt = max(0.0, rng.gauss(rtt_ms, max(0.5, jitter_ms / 2)))
    jit = max(0.0, rng.gauss(jitter_ms, jitter_ms * 0.1))
    loss = min(1.0, max(0.0, rng.gauss(loss_ratio, loss_ratio * 0.1)))
    return round(rtt, 3), round(jit, 3), round(loss, 6)
