"""Workspace geometry: box margins, forbidden-zone distances, speeds (vs brute force)."""

from __future__ import annotations

import math
from typing import Any

import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from monitor.engine.geometry import (
    box_margin,
    box_signed_distance,
    derived_speed,
    speed,
    zone_distance,
)
from monitor.policy.loader import PackRegistry, parse_pack, rules_dir
from monitor.policy.model import Box, ForbiddenZone, Sphere
from tests.unit.enginekit import EXAMPLES, Driver, shipped_packs

coord = st.floats(min_value=-300, max_value=300, allow_nan=False).map(lambda v: round(v, 3))
point = st.lists(coord, min_size=3, max_size=3)


@st.composite
def boxes(draw: st.DrawFn) -> Box:
    lo, hi = [], []
    for _ in range(3):
        a = draw(st.integers(-200, 180))
        b = draw(st.integers(a + 1, a + 200))
        lo.append(float(a))
        hi.append(float(b))
    return Box(min=lo, max=hi)


def inside(p: list[float], b: Box) -> bool:
    return all(b.min[i] <= p[i] <= b.max[i] for i in range(3))


def surface_point(b: Box, face: int, u: float, v: float) -> list[float]:
    """A point on one of the 6 faces; u, v in [0, 1] span the face."""
    axis, side = divmod(face, 2)
    others = [i for i in range(3) if i != axis]
    p = [0.0, 0.0, 0.0]
    p[axis] = b.max[axis] if side else b.min[axis]
    p[others[0]] = b.min[others[0]] + u * (b.max[others[0]] - b.min[others[0]])
    p[others[1]] = b.min[others[1]] + v * (b.max[others[1]] - b.min[others[1]])
    return p


def face_plane_distances(p: list[float], b: Box) -> list[float]:
    return [abs(p[i] - b.min[i]) for i in range(3)] + [abs(p[i] - b.max[i]) for i in range(3)]


SET = settings(max_examples=EXAMPLES * 3, deadline=None)
unit = st.floats(0, 1)


@SET
@given(p=point, b=boxes())
def test_box_margin_sign_is_containment(p: list[float], b: Box) -> None:
    m = box_margin(p, b)
    assert (m >= 0) == inside(p, b)
    if inside(p, b):
        assert m == min(face_plane_distances(p, b))


@SET
@given(
    p=point,
    b=boxes(),
    samples=st.lists(st.tuples(st.integers(0, 5), unit, unit), min_size=1, max_size=20),
)
def test_box_signed_distance_vs_surface_samples(
    p: list[float], b: Box, samples: list[tuple[int, float, float]]
) -> None:
    d = box_signed_distance(p, b)
    assert (d <= 0) == inside(p, b)
    # No surface point is closer than |d| (up to float rounding) ...
    for face, u, v in samples:
        s = surface_point(b, face, u, v)
        assert math.dist(p, s) >= abs(d) - 1e-9
    # ... and the distance is attained by a surface point.
    if d > 0:
        nearest = [min(max(p[i], b.min[i]), b.max[i]) for i in range(3)]
        assert math.isclose(math.dist(p, nearest), d, rel_tol=1e-12, abs_tol=1e-9)
    else:
        assert math.isclose(-d, min(face_plane_distances(p, b)), abs_tol=1e-9)


@SET
@given(p=point, q=point, b=boxes())
def test_box_signed_distance_is_1_lipschitz(p: list[float], q: list[float], b: Box) -> None:
    assert abs(box_signed_distance(p, b) - box_signed_distance(q, b)) <= math.dist(p, q) + 1e-9


@SET
@given(
    p=point,
    c=point,
    r=st.floats(0.5, 100),
    dirs=st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)), max_size=10),
)
def test_sphere_zone_distance_vs_brute_force(
    p: list[float], c: list[float], r: float, dirs: list[tuple[float, float, float]]
) -> None:
    z = ForbiddenZone(name="z", sphere=Sphere(center=c, radius=r))
    d = zone_distance(p, z)
    inside_sphere = sum((p[i] - c[i]) ** 2 for i in range(3)) <= r * r
    if abs(math.dist(p, c) - r) > 1e-9:
        assert (d <= 0) == inside_sphere
    for dx, dy, dz in dirs:  # points on the surface are never closer than |d|
        n = math.sqrt(dx * dx + dy * dy + dz * dz)
        assume(n > 1e-3)
        s = [c[0] + r * dx / n, c[1] + r * dy / n, c[2] + r * dz / n]
        assert math.dist(p, s) >= abs(d) - 1e-9


@SET
@given(p=point, b=boxes())
def test_box_zone_uses_signed_distance(p: list[float], b: Box) -> None:
    z = ForbiddenZone(name="z", box=b)
    assert zone_distance(p, z) == box_signed_distance(p, b)


def test_default_box_examples() -> None:
    b = Box(min=[-120, -120, -180], max=[120, 120, -20])
    assert box_margin([0, 0, -100], b) == 80
    assert box_margin([115, 0, -100], b) == 5
    assert box_margin([120, 0, -100], b) == 0
    assert box_margin([121, 0, -100], b) == -1
    assert box_margin([0, 0, -10], b) == -10
    assert box_signed_distance([123, 124, -100], b) == 5.0  # 3-4-5 from the edge
    assert box_signed_distance([0, 0, -100], b) == -80


@SET
@given(v=point)
def test_speed_is_euclidean_norm(v: list[float]) -> None:
    assert math.isclose(speed(v), math.hypot(*v), rel_tol=1e-12)


@SET
@given(p0=point, p1=point, t0=st.integers(0, 10**12), dt=st.integers(-(10**6), 10**9))
def test_derived_speed(p0: list[float], p1: list[float], t0: int, dt: int) -> None:
    s = derived_speed(p0, t0, p1, t0 + dt)
    if dt <= 0:
        assert s is None
    else:
        assert s is not None
        assert math.isclose(s * dt / 1e9, math.dist(p0, p1), rel_tol=1e-9, abs_tol=1e-12)


# -- the engine's inlined 1 kHz loop against these functions (a differential test) ---------

_ZONES_PACK = parse_pack(
    {
        **yaml.safe_load((rules_dir() / "default.yaml").read_text()),
        "name": "zones",
        "workspace": {
            "default_box": {"min": [-120, -120, -180], "max": [120, 120, -20]},
            "arms": {"psm2": {"min": [-60, -50, -150], "max": [40, 70, -30]}},
            "forbidden_zones": [
                {
                    "name": "vessel",
                    "arms": ["psm1"],
                    "sphere": {"center": [60, 0, -100], "radius": 15},
                },
                {"name": "nerve", "box": {"min": [-40, -40, -120], "max": [-20, 10, -90]}},
            ],
        },
    },
    "test_workspace.py",
)
_ZONES = PackRegistry([_ZONES_PACK, *shipped_packs().all()], default="zones")

sample = st.fixed_dictionaries(
    {"dt": st.sampled_from([-1_000_000, 0, 1, 1_000_000, 1_000_007])},
    optional={
        "v": st.lists(st.floats(-400, 400), min_size=3, max_size=3),
        "f": st.floats(0, 30),
    },
).flatmap(lambda s: point.map(lambda p: {**s, "p": p}))
batch = st.lists(sample, min_size=1, max_size=6)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    arm=st.sampled_from(["psm1", "psm2", "psm3"]), batches=st.lists(batch, min_size=1, max_size=5)
)
def test_the_engine_loop_computes_what_the_geometry_functions_do(
    arm: str, batches: list[list[dict[str, Any]]]
) -> None:
    """After each batch, the arm's margin (smallest over box faces and its zones) and
    speed (largest, from `v` or derived from the previous sample, across batches) equal
    `box_margin`, `zone_distance`, `speed` and `derived_speed` exactly."""
    d = Driver(packs=_ZONES)
    d.armed()
    ws = _ZONES_PACK.pack.workspace
    zones = [z for z in ws.forbidden_zones if z.arms is None or arm in z.arms]
    t, last = 1_000_000_000, None
    for b in batches:
        samples, margins, speeds = [], [], []
        for s in b:
            t += s["dt"]
            rec: dict[str, Any] = {"t": t, "p": s["p"]}
            rec.update({k: s[k] for k in ("v", "f") if k in s})
            samples.append(rec)
            margins.append(box_margin(s["p"], ws.box_for(arm)))
            margins.extend(zone_distance(s["p"], z) for z in zones)
            if "v" in s:
                speeds.append(speed(s["v"]))
            elif last is not None:
                speeds.append(derived_speed(last[0], last[1], s["p"], t) or 0.0)
            else:
                speeds.append(0.0)
            last = (s["p"], t)
        d.kinematics(arm, samples)
        got = d.snapshot().arms[arm]
        assert got.margin_mm == min(margins)
        assert got.speed_mm_s == max([0.0, *speeds])
