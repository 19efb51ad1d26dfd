"""Workspace geometry in an arm's RCM frame (mm). Pure functions, no state."""

from __future__ import annotations

import math
from collections.abc import Sequence

from monitor.policy.model import Box, ForbiddenZone

Vec = Sequence[float]


def box_margin(p: Vec, box: Box) -> float:
    """Distance from p to the nearest face of an allowed box: >= 0 inside, < 0 outside."""
    lo, hi = box.min, box.max
    return min(p[0] - lo[0], hi[0] - p[0], p[1] - lo[1], hi[1] - p[1], p[2] - lo[2], hi[2] - p[2])


def box_signed_distance(p: Vec, box: Box) -> float:
    """Signed distance to a solid box: > 0 outside (Euclidean), <= 0 inside (-depth)."""
    dx = max(box.min[0] - p[0], 0.0, p[0] - box.max[0])
    dy = max(box.min[1] - p[1], 0.0, p[1] - box.max[1])
    dz = max(box.min[2] - p[2], 0.0, p[2] - box.max[2])
    if dx or dy or dz:
        return math.sqrt(dx * dx + dy * dy + dz * dz)
    return -box_margin(p, box)


def zone_distance(p: Vec, zone: ForbiddenZone) -> float:
    """Signed distance from p to a forbidden zone's surface: <= 0 means inside."""
    if zone.sphere is not None:
        c = zone.sphere.center
        return math.dist(p, c) - zone.sphere.radius
    assert zone.box is not None
    return box_signed_distance(p, zone.box)


def speed(v: Vec) -> float:
    return math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


def derived_speed(p0: Vec, t0_ns: int, p1: Vec, t1_ns: int) -> float | None:
    """mm/s between two samples; None when time does not advance (cannot be derived)."""
    dt = t1_ns - t0_ns
    if dt <= 0:
        return None
    return math.dist(p0, p1) * 1e9 / dt
