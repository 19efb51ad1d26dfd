"""Console and robot site models of one procedure: seq counters, the robot's
state machine, fault effects, and the records each site sends.

Pure and clock-free: `ProcedureSim.step(t)` takes the procedure time (seconds,
from the runner's monotonic clock) and returns the records that became due;
commands are fed with `on_command(cmd, t)`. The wall clock used for `sent_at`
is injectable so tests are deterministic.
"""

from __future__ import annotations

import json
import math
import random
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from monitor.icd.models import (
    ClockState,
    Heartbeat,
    Latency,
    Link,
    MonitorHeartbeat,
    ProcedureEnd,
    ProcedureStart,
    Rearm,
    RobotInfo,
    SafeStop,
    SafeStopAck,
    Site,
    SiteState,
)
from monitor.sim import signals
from monitor.sim.faults import Fault
from monitor.sim.signals import ArmState, MotionTarget

HEARTBEAT_PERIOD_S = 0.020  # ICD §3.2: nominally every 20 ms (50 Hz)
LATENCY_PERIOD_S = 0.050
LINK_PERIOD_S = 1.0
KIN_PERIOD_S = signals.SAMPLE_PERIOD_S * signals.BATCH  # 10 ms
CONTROL_SAMPLES = 10  # one control-latency sample per 5 ms
VIDEO_SAMPLES = 3  # ~60 fps video: three frames per 50 ms
CONTROL_MEAN_MS, CONTROL_SD_MS = 48.0, 2.0
VIDEO_MEAN_MS, VIDEO_SD_MS = 90.0, 5.0
DEADMAN_TIMEOUT_S = 0.5
ARMS = ["psm1", "psm2", "psm3", "ecm"]
MOVING_ARMS = ["psm1", "psm2", "psm3"]  # the endoscope arm (ecm) reports no kinematics
GARBAGE_KINDS = ("not-json", "nan", "wrong-site", "missing-field", "wrong-key")
MOTION_KINDS = ("out-of-box", "speed", "zone", "grip")

EventSink = Callable[[dict[str, Any]], None]
WallClock = Callable[[], int]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record ready for Kafka: sent to the telemetry topic of `site`."""

    site: Site
    key: str
    value: bytes
    type: str  # ICD record type, or "garbage"
    garbage: bool = False


class SiteModel:
    """Common part of a site: identity, clock, seq counter, send accounting."""

    def __init__(
        self, procedure_id: str, site: Site, offset_ns: int, wall: WallClock, rng: random.Random
    ) -> None:
        self.procedure_id = procedure_id
        self.site: Site = site
        self.offset_ns = offset_ns  # site clock minus UTC, as reported in heartbeats
        self.wall = wall
        self.rng = rng
        self.seq = 0
        self.sent: Counter[str] = Counter()
        self.lost = 0  # records swallowed by silence/drop faults (their seq is a gap)
        self.silenced = False
        self.drop_ratio = 0.0

    def now_ns(self) -> int:
        return self.wall() + self.offset_ns

    def common(self) -> dict[str, Any]:
        return {
            "v": 1,
            "procedure_id": self.procedure_id,
            "site": self.site,
            "seq": self.seq,
            "sent_at": self.now_ns(),
        }

    def emit_json(self, rtype: str, tail: str, out: list[Outgoing]) -> bool:
        """Like emit(), for a hot-path record given as JSON members after the common fields."""
        self.seq += 1
        if self.silenced or (self.drop_ratio > 0 and self.rng.random() < self.drop_ratio):
            self.lost += 1
            return False
        # procedure_id matches ^[A-Za-z0-9._-]+$, so it needs no JSON escaping.
        value = (
            f'{{"v":1,"procedure_id":"{self.procedure_id}","site":"{self.site}",'
            f'"seq":{self.seq - 1},"sent_at":{self.now_ns()},{tail}}}'
        ).encode()
        out.append(Outgoing(self.site, self.procedure_id, value, rtype))
        self.sent[rtype] += 1
        return True

    def emit(self, model: BaseModel, out: list[Outgoing]) -> bool:
        """Send a record (or lose it to a fault). seq advances either way: a
        record lost on the network still used its number, so the monitor sees a gap."""
        self.seq += 1
        rtype = str(getattr(model, "type", "?"))
        if self.silenced or (self.drop_ratio > 0 and self.rng.random() < self.drop_ratio):
            self.lost += 1
            return False
        out.append(
            Outgoing(
                self.site,
                self.procedure_id,
                model.model_dump_json(exclude_none=True).encode(),
                rtype,
            )
        )
        self.sent[rtype] += 1
        return True

    def garbage(self, kind: str) -> Outgoing:
        """One invalid record of the given kind; it never consumes a seq number."""
        base = self.common() | {
            "type": "heartbeat",
            "state": "operating",
            "clock": {"source": "ptp", "offset_ns": self.offset_ns, "max_error_ns": 100_000},
        }
        key = self.procedure_id
        if kind == "not-json":
            value = b"{this is not json"
        elif kind == "nan":
            value = json.dumps(
                self.common() | {"type": "latency", "channel": "control", "samples_ms": [math.nan]}
            ).encode()
        elif kind == "wrong-site":
            other = "console" if self.site == "robot" else "robot"
            value = json.dumps(base | {"site": other}).encode()
        elif kind == "missing-field":
            del base["seq"]
            value = json.dumps(base).encode()
        else:  # wrong-key
            key = self.procedure_id + "-WRONGKEY"
            value = json.dumps(base).encode()
        self.sent["garbage"] += 1
        return Outgoing(self.site, key, value, "garbage", garbage=True)


@dataclass
class StopCommand:
    command_id: str
    rule: str
    received_t: float
    ack_at_ns: int | None = None  # the `at` of the first ack; re-sends repeat it
    acks: int = 0


@dataclass
class ProcedureOptions:
    policy: str | None = None
    surgeon_id: str = "surgeon-ldn-01"
    ack_delay_s: float = 0.020
    ack: bool = True
    deadman_hold: bool = False
    deadman_timeout_s: float = DEADMAN_TIMEOUT_S
    send_end: bool = True
    kinematics: bool = True  # off: heartbeats, latency and link only (light load, e.g. failover)


@dataclass
class _Streams:
    hb: float
    lat: float
    link: float
    kin: float = 0.0


@dataclass
class _FaultState:
    fault: Fault
    started: bool = False
    ended: bool = False


class ProcedureSim:
    """Both sites of one procedure, driven by procedure time t (seconds)."""

    def __init__(
        self,
        procedure_id: str,
        index: int = 0,
        faults: list[Fault] | None = None,
        options: ProcedureOptions | None = None,
        *,
        seed: int | None = None,
        wall: WallClock = time.time_ns,
        on_event: EventSink | None = None,
    ) -> None:
        self.procedure_id = procedure_id
        self.index = index
        self.opts = options or ProcedureOptions()
        self.rng = random.Random(seed if seed is not None else zlib.crc32(procedure_id.encode()))
        self.on_event = on_event
        self.robot = SiteModel(
            procedure_id, "robot", self.rng.randint(-20_000, 20_000), wall, self.rng
        )
        self.console = SiteModel(
            procedure_id, "console", self.rng.randint(-20_000, 20_000), wall, self.rng
        )
        self.faults = [_FaultState(f) for f in (faults or []) if f.applies_to(index, procedure_id)]
        self.arms = {
            a: ArmState.start(a, phase=self.rng.uniform(0, 2 * math.pi)) for a in MOVING_ARMS
        }
        # Spread procedures over the 10 ms kinematics period so their sends interleave.
        off = (index * 0.0013) % KIN_PERIOD_S
        self.r_next = _Streams(hb=off, lat=off + 0.002, link=off + 0.004, kin=off + KIN_PERIOD_S)
        self.c_next = _Streams(hb=off + 0.005, lat=off + 0.007, link=off + 0.009)
        self.kin_off = off  # procedure time of sample 0 (s)
        self.kin_k = 0  # index of the next kinematics sample
        self.wall_anchor_ns = wall()
        self.state: SiteState = "operating"
        self.started = False
        self.ended = False
        self.stops: dict[str, StopCommand] = {}
        self.pending_acks: list[tuple[float, str]] = []
        self.rearms = 0
        self.acks_sent = 0
        self.commands_received = 0  # safe_stop records incl. re-sends
        self.mhb_last_t: float | None = None
        self.deadman_lost = False
        self.pending_spike: dict[str, float] = {}
        self.max_lag_s = 0.0
        self.first_fault_t: float | None = None  # when the first fault took effect
        self.first_stop_t: float | None = None
        # Arms driven towards a fault target: the fault takes effect when the tip
        # actually leaves the box / reaches the point, which is what a monitor can see.
        self._watch: dict[str, tuple[str, Fault]] = {}

    # ------------------------------------------------------------------ events

    def event(self, name: str, t: float, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(
                {"event": name, "procedure": self.procedure_id, "t": round(t, 4)} | fields
            )

    # ------------------------------------------------------------------ faults

    def _active(self, kind: str, target: str | None = None) -> Fault | None:
        found: Fault | None = None
        for fs in self.faults:
            f = fs.fault
            if (
                fs.started
                and not fs.ended
                and f.kind == kind
                and (target is None or f.target == target)
            ):
                found = f  # the latest-started one wins
        return found

    def _update_faults(self, t: float, out: list[Outgoing]) -> None:
        for fs in self.faults:
            f = fs.fault
            if not fs.started and t >= f.at:
                fs.started = True
                self._start_fault(f, t, out)
                if f.duration is None and f.kind in ("latency-spike", "garbage", "end"):
                    fs.ended = True
            if fs.started and not fs.ended and f.until is not None and t >= f.until:
                fs.ended = True
                self._end_fault(f, t)
        self.robot.silenced = self._active("silence", "robot") is not None
        self.console.silenced = self._active("silence", "console") is not None
        for site in (self.robot, self.console):
            lf = self._active("loss", site.site)
            drop = lf is not None and lf.options.get("drop") in ("yes", "true")
            site.drop_ratio = (lf.value or 0.0) if (lf is not None and drop) else 0.0

    def _start_fault(self, f: Fault, t: float, out: list[Outgoing]) -> None:
        info: dict[str, Any] = {}
        if f.kind == "end":
            self.event("fault", t, fault=f.describe(), kind=f.kind)
            self.finish(t, out, reason=f.options.get("reason", "completed"))
            return
        if f.kind == "garbage":
            site = self.robot if f.target == "robot" else self.console
            n = int(f.options.get("count", "5"))
            kinds = [GARBAGE_KINDS[i % len(GARBAGE_KINDS)] for i in range(n)]
            out.extend(site.garbage(k) for k in kinds)
            info["garbage"] = kinds
        elif f.kind == "latency-spike":
            self.pending_spike[f.target or "control"] = f.value or 0.0
        elif f.kind in MOTION_KINDS:
            arm = self.arms[f.target or "psm1"]
            if f.kind == "grip":
                arm.grip_override = f.value
            elif f.kind == "speed":
                arm.target = signals.circle_through(arm.p, f.value or 0.0, t)
            elif f.kind == "out-of-box":
                by = f.option_float("by", 10.0)
                speed = f.option_float("speed", signals.RECOVERY_SPEED_MM_S)
                p = arm.p
                if f.options.get("axis", "z") == "x":
                    x = signals.BOX_MAX[0] + by if p[0] >= 0 else signals.BOX_MIN[0] - by
                    point = (x, p[1], p[2])
                else:
                    point = (p[0], p[1], signals.BOX_MAX[2] + by)
                arm.target = MotionTarget(kind="point", point=point, max_speed=speed)
                info["target_mm"] = [round(c, 1) for c in point]
                info["eta_s"] = round(signals.norm(signals.sub(point, p)) / speed, 3)
                self._watch[arm.arm] = ("box", f)
            elif f.kind == "zone" and f.point is not None:
                speed = f.option_float("speed", signals.RECOVERY_SPEED_MM_S)
                arm.target = MotionTarget(kind="point", point=f.point, max_speed=speed)
                info["eta_s"] = round(signals.norm(signals.sub(f.point, arm.p)) / speed, 3)
                self._watch[arm.arm] = ("point", f)
        if self.first_fault_t is None and f.kind not in ("out-of-box", "zone"):
            self.first_fault_t = t
        self.event("fault", t, fault=f.describe(), kind=f.kind, **info)

    def _end_fault(self, f: Fault, t: float) -> None:
        if f.kind in MOTION_KINDS:
            self._clear_arm_fault(f)
        self.event("fault-end", t, fault=f.describe(), kind=f.kind)

    def _clear_arm_fault(self, f: Fault) -> None:
        arm = self.arms[f.target or "psm1"]
        self._watch.pop(arm.arm, None)
        if f.kind == "grip":
            arm.grip_override = None
        else:
            arm.target = MotionTarget()  # back to the nominal path at a legal speed

    # ------------------------------------------------------------------ commands

    def on_command(self, cmd: SafeStop | Rearm | MonitorHeartbeat, t: float) -> None:
        if self.ended:
            return
        if isinstance(cmd, MonitorHeartbeat):
            self.mhb_last_t = t
            if self.deadman_lost:
                self.deadman_lost = False
                self.event("deadman-resumed", t, site="robot", status=cmd.status)
                if self.opts.deadman_hold and self.state == "hold":
                    self._set_state("operating", t)
            return
        if isinstance(cmd, SafeStop):
            self.commands_received += 1
            known = self.stops.get(cmd.command_id)
            if known is not None:
                self.event(
                    "command-resend",
                    t,
                    site="robot",
                    type="safe_stop",
                    command_id=cmd.command_id,
                    rule=cmd.policy.rule,
                )
            else:
                self.stops[cmd.command_id] = StopCommand(cmd.command_id, cmd.policy.rule, t)
                if self.first_stop_t is None:
                    self.first_stop_t = t
                self.event(
                    "command",
                    t,
                    site="robot",
                    type="safe_stop",
                    command_id=cmd.command_id,
                    rule=cmd.policy.rule,
                    reason=cmd.reason,
                    observed=cmd.observed,
                    threshold=cmd.threshold,
                )
                self._set_state("safe_stopped", t)
            if self.opts.ack:
                self.pending_acks.append((t + self.opts.ack_delay_s, cmd.command_id))
            return
        # Rearm
        self.rearms += 1
        self.event(
            "rearm",
            t,
            site="robot",
            command_id=cmd.command_id,
            operator=cmd.operator_id,
            reason=cmd.reason,
        )
        # The surgeon's offending move (out-of-box, speed...) was interrupted by the
        # stop; after re-arming the arms go back to the normal path at a legal speed.
        for fs in self.faults:
            if fs.started and not fs.ended and fs.fault.kind in MOTION_KINDS:
                fs.ended = True
                self._clear_arm_fault(fs.fault)
                self.event("fault-cleared", t, fault=fs.fault.describe(), kind=fs.fault.kind)
        self._set_state("operating", t)

    def _set_state(self, state: SiteState, t: float) -> None:
        if state == self.state:
            return
        old, self.state = self.state, state
        moving = state == "operating"
        for arm in self.arms.values():
            arm.frozen = not moving
        self.event("state", t, site="robot", old=old, new=state)

    def _send_acks(self, t: float, out: list[Outgoing]) -> None:
        due = [a for a in self.pending_acks if a[0] <= t]
        if not due:
            return
        self.pending_acks = [a for a in self.pending_acks if a[0] > t]
        for _, cid in due:
            stop = self.stops[cid]
            if stop.ack_at_ns is None:
                stop.ack_at_ns = self.robot.now_ns()
            rec = SafeStopAck(
                **self.robot.common(),
                type="safe_stop_ack",
                command_id=cid,
                result="safe_stopped",
                at=stop.ack_at_ns,
            )
            sent = self.robot.emit(rec, out)
            stop.acks += 1
            if sent:
                self.acks_sent += 1
            self.event("ack", t, site="robot", command_id=cid, n=stop.acks, lost=not sent)

    def _deadman(self, t: float) -> None:
        last = self.mhb_last_t if self.mhb_last_t is not None else 0.0
        if not self.deadman_lost and t - last > self.opts.deadman_timeout_s:
            self.deadman_lost = True
            self.event(
                "deadman-lost",
                t,
                site="robot",
                never_heard=self.mhb_last_t is None,
                silent_ms=round((t - last) * 1000),
            )
            if self.opts.deadman_hold and self.state == "operating":
                self._set_state("hold", t)

    # ------------------------------------------------------------------ records

    def start(self, t: float, out: list[Outgoing]) -> None:
        self.started = True
        rec = ProcedureStart(
            **self.robot.common(),
            type="procedure_start",
            surgeon_id=self.opts.surgeon_id,
            robot=RobotInfo(
                model="Toumai", serial=f"TMI-{zlib.crc32(self.procedure_id.encode()) % 100000:05d}"
            ),
            arms=list(ARMS),
            policy=self.opts.policy,
        )
        self.robot.emit(rec, out)
        self.event("start", t, site="robot", policy=self.opts.policy)

    def finish(self, t: float, out: list[Outgoing], reason: str = "completed") -> None:
        if self.ended:
            return
        self.ended = True
        if self.opts.send_end:
            rec = ProcedureEnd(**self.robot.common(), type="procedure_end", reason=reason)  # type: ignore[arg-type]
            self.robot.emit(rec, out)
            self.event("end", t, site="robot", reason=reason)

    def _heartbeat(self, site: SiteModel, state: SiteState, out: list[Outgoing]) -> None:
        rec = Heartbeat(
            **site.common(),
            type="heartbeat",
            state=state,
            clock=ClockState(source="ptp", offset_ns=site.offset_ns, max_error_ns=100_000),
        )
        site.emit(rec, out)

    def _latency(self, site: SiteModel, out: list[Outgoing]) -> None:
        channel = "control" if site.site == "robot" else "video"
        mean, sd, n = (
            (CONTROL_MEAN_MS, CONTROL_SD_MS, CONTROL_SAMPLES)
            if channel == "control"
            else (VIDEO_MEAN_MS, VIDEO_SD_MS, VIDEO_SAMPLES)
        )
        lf = self._active("latency", channel)
        if lf is not None and lf.value is not None:
            mean, sd = lf.value, max(sd, lf.value * 0.03)
        jf = self._active("jitter", site.site)
        if jf is not None and jf.value is not None:
            sd = max(sd, jf.value)
        samples = signals.latency_samples(self.rng, n, mean, sd)
        spike = self.pending_spike.pop(channel, None)
        if spike is not None:
            samples[len(samples) // 2] = spike
        rec = Latency(**site.common(), type="latency", channel=channel, samples_ms=samples)  # type: ignore[arg-type]
        site.emit(rec, out)

    def _link(self, site: SiteModel, out: list[Outgoing]) -> None:
        lf = self._active("latency", "control")
        rtt = 2 * (lf.value if lf is not None and lf.value is not None else CONTROL_MEAN_MS)
        jf = self._active("jitter", site.site)
        loss = self._active("loss", site.site)
        r, j, lo = signals.link_values(
            self.rng,
            rtt_ms=rtt,
            jitter_ms=jf.value if jf is not None and jf.value is not None else 2.0,
            loss_ratio=loss.value if loss is not None and loss.value is not None else 0.0001,
        )
        rec = Link(
            **site.common(), type="link", rtt_ms=r, jitter_ms=j, loss_ratio=lo, window_ms=1000.0
        )
        site.emit(rec, out)

    def _kinematics(self, out: list[Outgoing]) -> None:
        # Integer sample index -> exactly 1 ms apart on the wire (no float drift).
        k0 = self.kin_k
        self.kin_k += signals.BATCH
        base_ns = self.wall_anchor_ns + self.robot.offset_ns + int(self.kin_off * 1e9)
        for name, arm in self.arms.items():
            parts = []
            for k in range(k0, k0 + signals.BATCH):
                ts = self.kin_off + k * signals.SAMPLE_PERIOD_S
                p, v, g = arm.step(ts)
                if name in self._watch:
                    self._check_effective(name, p, ts)
                # Formatted by hand: 3,000 samples/s per procedure through pydantic or
                # json.dumps would dominate the CPU. Values are always finite here;
                # the unit tests validate the output against the ICD models.
                parts.append(
                    f'{{"t":{base_ns + k * 1_000_000},'
                    f'"p":[{p[0]:.4f},{p[1]:.4f},{p[2]:.4f}],'
                    f'"v":[{v[0]:.3f},{v[1]:.3f},{v[2]:.3f}],"f":{g:.3f}}}'
                )
            tail = f'"type":"kinematics","arm":"{name}","samples":[{",".join(parts)}]'
            self.robot.emit_json("kinematics", tail, out)

    def _check_effective(self, arm: str, p: signals.Vec, ts: float) -> None:
        how, f = self._watch[arm]
        if how == "box":
            hit = signals.box_margin(p) < 0
        else:
            hit = f.point is not None and signals.norm(signals.sub(f.point, p)) < 0.5
        if hit:
            del self._watch[arm]
            if self.first_fault_t is None:
                self.first_fault_t = ts
            what = "left the allowed box" if how == "box" else "reached the zone point"
            self.event(
                "fault-effective",
                ts,
                fault=f.describe(),
                kind=f.kind,
                arm=arm,
                detail=f"{arm} tool tip {what}",
                p_mm=[round(c, 1) for c in p],
            )

    def step(self, t: float) -> list[Outgoing]:
        """All records due at procedure time t (s), in send order."""
        out: list[Outgoing] = []
        if self.ended:
            return out
        if not self.started:
            self.start(t, out)
        self._update_faults(t, out)
        if self.ended:
            return out
        self._deadman(t)
        self._send_acks(t, out)
        r, c = self.r_next, self.c_next
        if self._active("heartbeat-stop", "robot") is None and r.hb <= t:
            self.max_lag_s = max(self.max_lag_s, t - r.hb)
            self._heartbeat(self.robot, self.state, out)
        r.hb = _advance(r.hb, HEARTBEAT_PERIOD_S, t)
        if self._active("heartbeat-stop", "console") is None and c.hb <= t:
            self._heartbeat(self.console, "operating", out)
        c.hb = _advance(c.hb, HEARTBEAT_PERIOD_S, t)
        if r.lat <= t:
            self._latency(self.robot, out)
            r.lat = _advance(r.lat, LATENCY_PERIOD_S, t)
        if c.lat <= t:
            self._latency(self.console, out)
            c.lat = _advance(c.lat, LATENCY_PERIOD_S, t)
        if r.link <= t:
            self._link(self.robot, out)
            r.link = _advance(r.link, LINK_PERIOD_S, t)
        if c.link <= t:
            self._link(self.console, out)
            c.link = _advance(c.link, LINK_PERIOD_S, t)
        # Kinematics catch up sample by sample (no skipped samples): the monitor
        # derives speed from consecutive samples, so their timestamps must be regular.
        while r.kin <= t:
            if self.opts.kinematics:
                self._kinematics(out)
            r.kin += KIN_PERIOD_S
        return out

    def next_due(self) -> float:
        """The earliest procedure time at which step() has something to do."""
        r, c = self.r_next, self.c_next
        due = min(r.hb, r.lat, r.link, r.kin, c.hb, c.lat, c.link)
        if self.pending_acks:
            due = min(due, min(a[0] for a in self.pending_acks))
        for fs in self.faults:
            if not fs.started:
                due = min(due, fs.fault.at)
            elif not fs.ended and fs.fault.until is not None:
                due = min(due, fs.fault.until)
        return due

    def counts(self) -> dict[str, dict[str, int]]:
        return {"robot": dict(self.robot.sent), "console": dict(self.console.sent)}


def _advance(due: float, period: float, t: float) -> float:
    """Next due time for a periodic stream; when late by a whole period, resync
    instead of bursting (a real site would not send a flurry of old heartbeats)."""
    if due > t:
        return due
    nxt = due + period
    return nxt if nxt > t else t + period
