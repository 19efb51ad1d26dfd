"""Workspace (ICD §7): each arm's tool tip inside its allowed box and out of the forbidden
zones, its speed and its grip force, judged sample by sample over each kinematics batch
(1 kHz per arm). Judged per batch; no timers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from monitor.engine.clock import Instant
from monitor.engine.decisions import Decision
from monitor.engine.geometry import zone_distance
from monitor.engine.latch import Latch, Outcome
from monitor.icd.models import Kinematics
from monitor.policy.model import PolicyPack
from monitor.snapshot import ArmSnapshot

_SPEED = "{subject} tool-tip speed {value:.1f} mm/s above {limit:g} mm/s"
_GRIP = "{subject} grip force {value:g} N above {limit:g} N"


@dataclass(slots=True)
class ArmTrack:
    last_p: list[float] | None = None
    last_t: int | None = None
    margin_mm: float | None = None  # smallest margin over the last batch
    speed_mm_s: float | None = None  # highest speed over the last batch


class WorkspaceRule:
    __slots__ = ("arms", "latch", "ws")

    records: ClassVar[tuple[type[Any], ...]] = (Kinematics,)

    def __init__(self, latch: Latch, opened: Instant, pack: PolicyPack) -> None:
        self.latch = latch
        self.arms: dict[str, ArmTrack] = {}
        self.configure(pack)

    def configure(self, pack: PolicyPack) -> None:
        self.ws = pack.workspace

    def on_record(self, rec: Kinematics, stale: bool, now: Instant, out: list[Decision]) -> None:
        ws = self.ws
        arm = rec.arm
        track = self.arms.get(arm)
        if track is None:
            track = self.arms[arm] = ArmTrack()
        box = ws.box_for(arm)
        zones = [z for z in ws.forbidden_zones if z.arms is None or arm in z.arms]
        warn_box, warn_zone = ws.box_warn_mm, ws.zone_warn_mm
        sp, gp = ws.speed_mm_s, ws.grip_n
        lx, ly, lz = box.min
        hx, hy, hz = box.max
        sp_warn, gp_warn = sp.warn, gp.warn
        band = self.latch.band
        sqrt, dist = math.sqrt, math.dist
        min_margin = math.inf
        max_speed = 0.0
        last_p, last_t = track.last_p, track.last_t
        # This loop runs 1,000 times a second per arm: box_margin, speed and derived_speed
        # (monitor.engine.geometry) are inlined with identical arithmetic (a differential
        # test, tests/unit/test_workspace.py, holds them to it). Outcomes are only called
        # for samples out of band.
        for s in rec.samples:
            p = s.p
            x, y, z = p
            m = min(x - lx, hx - x, y - ly, hy - y, z - lz, hz - z)
            if m < min_margin:
                min_margin = m
            if m <= warn_box:
                self._near(arm, p, m, None, box.model_dump(), now, out)
            for zone in zones:
                d = zone_distance(p, zone)
                if d < min_margin:
                    min_margin = d
                if d <= warn_zone:
                    self._near(arm, p, d, zone.name, None, now, out)
            t = s.t
            sv = s.v
            if sv is not None:
                vx, vy, vz = sv
                v = sqrt(vx * vx + vy * vy + vz * vz)
            elif last_p is not None and last_t is not None and t > last_t:
                v = dist(last_p, p) * 1e9 / (t - last_t)
            else:
                v = 0.0  # first sample, or time did not advance: speed cannot be derived
            last_p, last_t = p, t
            if v > max_speed:
                max_speed = v
            if v > sp_warn:
                obs = {"arm": arm, "speed_mm_s": round(v, 3)}
                band("tool_speed", arm, now, v, sp_warn, sp.stop, _SPEED, out, observed=obs)
            f = s.f
            if f is not None and f > gp_warn:
                obs = {"arm": arm, "force_n": f}
                band("grip_force", arm, now, f, gp_warn, gp.stop, _GRIP, out, observed=obs)
        track.last_p, track.last_t = last_p, last_t
        track.margin_mm, track.speed_mm_s = min_margin, max_speed

    def _near(
        self,
        arm: str,
        p: list[float],
        value: float,
        zone: str | None,
        box: dict[str, Any] | None,
        now: Instant,
        out: list[Decision],
    ) -> None:
        """A tool tip within the warn distance of its box's faces (`zone` None; `value` the
        margin) or of a forbidden zone (`value` the distance), or past it."""
        obs: dict[str, Any] = {"arm": arm, "p": list(p)}
        where: dict[str, Any]
        if zone is None:
            rule, subject, stop, warn_mm = "workspace_box", arm, value < 0, self.ws.box_warn_mm
            obs["margin_mm"], where = round(value, 3), {"box": box}
            why = f"{-value:.1f} mm outside" if stop else f"within {value:.1f} mm of"
            why += " its allowed box"
        else:
            rule, subject, stop = "forbidden_zone", f"{arm}:{zone}", value <= 0
            obs["zone"], obs["distance_mm"], where = zone, round(value, 3), {"zone": zone}
            why = "inside" if stop else f"{value:.1f} mm from"
            why += f" forbidden zone {zone!r}"
            warn_mm = self.ws.zone_warn_mm
        if not stop:
            where["warn_mm"] = warn_mm
        self.latch.judge(
            stop, Outcome(rule, subject, obs, where, f"{arm} tool tip {why}"), now, out
        )

    def tick(self, now: Instant, out: list[Decision]) -> None:
        return None  # judged per batch

    def deadline(self) -> int | None:
        return None

    def health(self, now: Instant) -> list[str]:
        return []  # judged per sample: a re-arm has no window or silence to wait out

    def rearmed(self) -> None:
        return None

    def snapshot(self) -> dict[str, ArmSnapshot]:
        return {a: ArmSnapshot(t.margin_mm, t.speed_mm_s) for a, t in self.arms.items()}
