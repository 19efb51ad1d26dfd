"""One procedure under supervision: every ICD §7 rule, the warning set and the safe-stop latch.

All times are monitor-clock `Instant`s handed in by the caller. A method returns the
decisions it made; it never publishes anything itself.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from monitor.engine.alarms import WarningSet
from monitor.engine.clock import MS, Instant
from monitor.engine.decisions import Decision, Event, SendCommand
from monitor.engine.latch_state import AckResult, LatchState
from monitor.engine.window import SlidingQuantiles
from monitor.engine.workspace import zone_distance
from monitor.icd.models import (
    SITES,
    AnyTelemetry,
    Heartbeat,
    Kinematics,
    LatchClose,
    Latency,
    Link,
    MonitorStatus,
    PolicyRef,
    ProcedureEnd,
    ProcedureStart,
    Rearm,
    RearmRequest,
    SafeStop,
    SafeStopAck,
    Site,
)
from monitor.policy.loader import LoadedPack
from monitor.policy.model import ChannelPolicy

State = Literal["pending", "armed", "warning", "safe_stop_latched", "safe_stopped", "ended"]
Channel = Literal["control", "video"]
CHANNELS: tuple[Channel, ...] = ("control", "video")
_COMMAND_NS = uuid.UUID("5f0c3f8e-6a53-4b8e-9d0e-2d6c1c7a9e10")


@dataclass(slots=True)
class SiteTrack:
    last_seq: int | None = None
    last_fresh_hb: int | None = None  # monitor mono ns of the last fresh heartbeat
    first_missed: bool = False
    gap_warned: bool = False
    gap_tripped: bool = False
    offset_ns: int = 0
    clock_source: str | None = None
    state: str | None = None
    received: int = 0
    duplicates: int = 0
    lost: int = 0
    stale: int = 0
    rejected: int = 0
    jitter_ms: float | None = None
    loss_ratio: float | None = None
    max_gap_ms: float = 0.0
    gaps: int = 0


@dataclass(slots=True)
class ChannelTrack:
    window: SlidingQuantiles
    breach_since: int | None = None
    samples: int = 0


@dataclass(slots=True)
class ArmTrack:
    last_p: list[float] | None = None
    last_t: int | None = None
    margin_mm: float | None = None  # smallest margin over the last batch
    speed_mm_s: float | None = None  # highest speed over the last batch


@dataclass(slots=True)
class Latch:
    command: SafeStop
    rule: str
    first_mono: int
    last_sent_mono: int
    breach_mono: int
    resends: int = 0
    ack_result: AckResult | None = None
    ack_delay_ms: float | None = None
    escalated: bool = False
    rules_seen: set[str] = field(default_factory=set)


class ProcedureMonitor:
    def __init__(
        self,
        procedure_id: str,
        pack: LoadedPack,
        opened: Instant,
        monitor_id: str,
        summary_interval_ns: int,
    ) -> None:
        self.procedure_id = procedure_id
        self.monitor_id = monitor_id
        self.opened = opened
        self.started = False  # a procedure_start was seen (else adopted from other records)
        self.ended = False
        self.end_reason: str | None = None
        self.episode = 0
        self.latch: Latch | None = None
        self.sites: dict[Site, SiteTrack] = {s: SiteTrack() for s in SITES}
        self.arms: dict[str, ArmTrack] = {}
        self.summary_interval_ns = summary_interval_ns
        self.next_summary = opened.mono_ns + summary_interval_ns
        self.state: State = "pending"
        self.grace_from = opened.mono_ns  # first-heartbeat grace runs from here (audible time)
        # request_id -> requested_at of requests seen for the current latch; published with
        # the latch so a replayed request is refused by a later owner too (ICD 1.1 §5.1).
        self.seen_requests: dict[str, int] = {}
        self.latch_changed = False  # the latch state on telesafe.state must be re-published
        self._set_pack(pack)

    # -- configuration -------------------------------------------------------------------

    def _set_pack(self, pack: LoadedPack) -> None:
        self.loaded = pack
        p = pack.pack
        self.policy = p
        self.stale_ns = int(p.stale_after_ms * MS)
        self.warn_silence_ns = int(p.heartbeat.warn_silence_ms * MS)
        self.stop_silence_ns = int(p.heartbeat.stop_silence_ms * MS)
        self.first_hb_ns = int(p.heartbeat.first_heartbeat_ms * MS)
        self.resend_ns = int(p.alarms.resend_interval_ms * MS)
        window_ns = int(p.latency.window_ms * MS)
        self.channels: dict[Channel, ChannelTrack] = {
            c: ChannelTrack(SlidingQuantiles(window_ns)) for c in CHANNELS
        }
        self.warnings = WarningSet(int(p.alarms.clear_after_ms * MS))

    def _policy_ref(self, rule: str) -> PolicyRef:
        return PolicyRef(
            pack=self.loaded.name, version=self.loaded.version, rule=rule, hash=self.loaded.sha256
        )

    def _command_id(self, kind: str) -> str:
        """UUIDv5 of monitor, procedure lifetime (its opening time: an id may be reopened),
        kind and episode: unique, and the same in a live run and its replay (no issue time,
        which a live timer and a replayed one read a few nanoseconds apart)."""
        name = f"{self.monitor_id}|{self.procedure_id}|{self.opened.utc_ns}|{kind}|{self.episode}"
        return str(uuid.uuid5(_COMMAND_NS, name))

    def _event(self, kind: str, now: Instant, **data: Any) -> Event:
        return Event(kind, self.procedure_id, now.mono_ns, now.utc_ns, data)

    # -- status --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Ended and nothing left to do (no unacknowledged safe-stop to keep re-sending)."""
        return self.ended and not (self.latch and self.latch.ack_result is None)

    def _compute_state(self) -> State:
        if self.latch is not None:
            return (
                "safe_stopped" if self.latch.ack_result == "safe_stopped" else "safe_stop_latched"
            )
        if self.ended:
            return "ended"
        if self.warnings:
            return "warning"
        if any(t.last_fresh_hb is None for t in self.sites.values()):
            return "pending"
        return "armed"

    def status(self) -> MonitorStatus:
        if self.latch is not None:
            return "safe_stop_latched"
        return "warning" if self.warnings else "armed"

    def _update_state(self, now: Instant, out: list[Decision]) -> None:
        new = self._compute_state()
        if new != self.state:
            out.append(self._event("state_changed", now, before=self.state, after=new))
            self.state = new

    # -- rule outcomes -------------------------------------------------------------------

    def _warn(
        self,
        rule: str,
        subject: str,
        now: Instant,
        observed: Any,
        threshold: Any,
        reason: str,
        out: list[Decision],
    ) -> None:
        if self.warnings.bad(rule, subject, now.mono_ns, observed, threshold):
            out.append(
                self._event(
                    "warning_raised",
                    now,
                    rule=rule,
                    subject=subject,
                    observed=observed,
                    threshold=threshold,
                    reason=reason,
                    policy=self._policy_ref(rule).model_dump(),
                )
            )

    def _trip(
        self,
        rule: str,
        subject: str,
        now: Instant,
        observed: Any,
        threshold: Any,
        reason: str,
        out: list[Decision],
        breach_mono: int | None = None,
    ) -> None:
        """Latch a safe-stop: one command per breach episode; later breaches are only noted."""
        if self.latch is not None:
            if rule not in self.latch.rules_seen:
                self.latch.rules_seen.add(rule)
                out.append(
                    self._event(
                        "breach_while_latched",
                        now,
                        rule=rule,
                        subject=subject,
                        observed=observed,
                        threshold=threshold,
                        reason=reason,
                        command_id=self.latch.command.command_id,
                    )
                )
            return
        self.episode += 1
        cid = self._command_id("safe_stop")
        cmd = SafeStop(
            command_id=cid,
            procedure_id=self.procedure_id,
            issued_at=now.utc_ns,
            monitor_id=self.monitor_id,
            policy=self._policy_ref(rule),
            observed=observed,
            threshold=threshold,
            reason=reason,
        )
        bm = breach_mono if breach_mono is not None else now.mono_ns
        self.latch = Latch(cmd, rule, now.mono_ns, now.mono_ns, bm, rules_seen={rule})
        self.seen_requests = {}
        self.latch_changed = True
        out.append(SendCommand(cmd, 0, now.mono_ns, bm))
        out.append(
            self._event(
                "safe_stop_issued",
                now,
                rule=rule,
                subject=subject,
                command_id=cid,
                observed=observed,
                threshold=threshold,
                reason=reason,
                episode=self.episode,
                policy=cmd.policy.model_dump(),
            )
        )

    # -- records ---------------------------------------------------------------------------

    def on_telemetry(self, rec: AnyTelemetry, now: Instant) -> list[Decision]:
        out: list[Decision] = []
        site = self.sites[rec.site]
        if site.last_seq is not None and rec.seq <= site.last_seq:
            site.duplicates += 1
            return out
        if site.last_seq is not None and rec.seq > site.last_seq + 1:
            site.lost += rec.seq - site.last_seq - 1
        site.last_seq = rec.seq
        site.received += 1
        if self.ended:
            if isinstance(rec, SafeStopAck):
                self._on_ack(rec, now, out)
                self._update_state(now, out)
            return out

        offset = rec.clock.offset_ns if isinstance(rec, Heartbeat) else site.offset_ns
        stale = now.utc_ns - (rec.sent_at - offset) > self.stale_ns
        if stale:
            site.stale += 1

        if isinstance(rec, Heartbeat):
            self._on_heartbeat(rec, site, stale, now, out)
        elif isinstance(rec, Kinematics):
            self._on_kinematics(rec, now, out)
        elif isinstance(rec, Latency):
            self._on_latency(rec, now, out)
        elif isinstance(rec, Link):
            self._on_link(rec, now, out)
        elif isinstance(rec, SafeStopAck):
            self._on_ack(rec, now, out)
        elif isinstance(rec, ProcedureStart):
            self._on_start(rec, now, out)
        elif isinstance(rec, ProcedureEnd):
            self._on_end(rec, now, out)
        self._update_state(now, out)
        return out

    def _on_end(self, rec: ProcedureEnd, now: Instant, out: list[Decision]) -> None:
        self.ended = True
        self.end_reason = rec.reason
        latch = self.latch
        extra: dict[str, Any] = {}
        if latch is not None:
            # ICD 1.1 §7: an acknowledged latch closes with the procedure; an unacknowledged
            # one stays, re-sent and escalated, until acknowledged or retired (latch_close).
            self.latch_changed = True
            extra["latch"] = {
                "command_id": latch.command.command_id,
                "rule": latch.rule,
                "acknowledged": latch.ack_result is not None,
                "outcome": "closes with the procedure"
                if latch.ack_result is not None
                else "kept: re-sent until acknowledged or retired by latch_close",
            }
        out.append(
            self._event(
                "procedure_ended", now, site=rec.site, reason=rec.reason, **extra, **self.counters()
            )
        )

    def _on_start(self, rec: ProcedureStart, now: Instant, out: list[Decision]) -> None:
        # Both sites may send one; the first names the procedure's facts.
        if self.started:
            return
        self.started = True
        out.append(
            self._event(
                "procedure_started",
                now,
                site=rec.site,
                surgeon_id=rec.surgeon_id,
                robot=rec.robot.model_dump(),
                arms=list(rec.arms),
                policy_requested=rec.policy,
                policy={
                    "pack": self.loaded.name,
                    "version": self.loaded.version,
                    "hash": self.loaded.sha256,
                },
            )
        )

    def apply_pack(self, pack: LoadedPack, now: Instant, out: list[Decision]) -> None:
        if pack.sha256 != self.loaded.sha256:
            before = {"pack": self.loaded.name, "version": self.loaded.version}
            self._set_pack(pack)
            out.append(
                self._event(
                    "policy_applied",
                    now,
                    before=before,
                    after={"pack": pack.name, "version": pack.version, "hash": pack.sha256},
                )
            )

    def _on_heartbeat(
        self, rec: Heartbeat, site: SiteTrack, stale: bool, now: Instant, out: list[Decision]
    ) -> None:
        if rec.clock.source != site.clock_source:
            out.append(
                self._event(
                    "clock_state",
                    now,
                    site=rec.site,
                    before=site.clock_source,
                    source=rec.clock.source,
                    offset_ns=rec.clock.offset_ns,
                    max_error_ns=rec.clock.max_error_ns,
                )
            )
            site.clock_source = rec.clock.source
        site.offset_ns = rec.clock.offset_ns
        if rec.state != site.state:
            out.append(
                self._event("site_state", now, site=rec.site, before=site.state, after=rec.state)
            )
            site.state = rec.state
        if stale:
            return  # ICD §7: a stale heartbeat is no evidence of liveness
        if site.last_fresh_hb is not None:
            gap_ns = now.mono_ns - site.last_fresh_hb
            if gap_ns > self.warn_silence_ns:
                site.gaps += 1
                site.max_gap_ms = max(site.max_gap_ms, gap_ns / MS)
                out.append(
                    self._event("heartbeat_gap", now, site=rec.site, gap_ms=round(gap_ns / MS, 3))
                )
                # The silence was out of band up to this moment.
                self.warnings.bad(
                    "heartbeat_silence",
                    rec.site,
                    now.mono_ns,
                    round(gap_ns / MS, 3),
                    self.policy.heartbeat.warn_silence_ms,
                )
        site.last_fresh_hb = now.mono_ns
        site.gap_warned = site.gap_tripped = False

    def _on_latency(self, rec: Latency, now: Instant, out: list[Decision]) -> None:
        ch = self.channels[rec.channel]
        pol = self._channel_policy(rec.channel)
        ch.window.expire(now.mono_ns)
        ch.window.add_many(now.mono_ns, rec.samples_ms)
        ch.samples += len(rec.samples_ms)
        if pol.max_sample_ms is not None:
            worst = max(rec.samples_ms)
            if worst > pol.max_sample_ms:
                self._trip(
                    f"{rec.channel}_latency",
                    rec.channel,
                    now,
                    worst,
                    pol.max_sample_ms,
                    f"{rec.channel} latency sample of {worst:g} ms exceeds the "
                    f"{pol.max_sample_ms:g} ms single-sample limit",
                    out,
                )
        self._evaluate_channel(rec.channel, now, out)

    def _channel_policy(self, channel: Channel) -> ChannelPolicy:
        return self.policy.latency.control if channel == "control" else self.policy.latency.video

    def _evaluate_channel(self, channel: Channel, now: Instant, out: list[Decision]) -> None:
        ch = self.channels[channel]
        pol = self._channel_policy(channel)
        q = ch.window.quantile(self.policy.latency.quantile)
        rule = f"{channel}_latency"
        if q is None:
            ch.breach_since = None
            return
        pct = f"p{self.policy.latency.quantile * 100:g}"
        if q > pol.warn_ms:
            self._warn(
                rule,
                channel,
                now,
                q,
                pol.warn_ms,
                f"{channel} latency {pct} {q:g} ms above {pol.warn_ms:g} ms",
                out,
            )
        if pol.stop_ms is not None and q > pol.stop_ms:
            if ch.breach_since is None:
                ch.breach_since = now.mono_ns
            held_ns = now.mono_ns - ch.breach_since
            if held_ns >= int(pol.hold_ms * MS):
                since = ch.breach_since
                ch.breach_since = None
                self._trip(
                    rule,
                    channel,
                    now,
                    q,
                    pol.stop_ms,
                    f"{channel} latency {pct} {q:g} ms above {pol.stop_ms:g} ms "
                    f"for {held_ns / MS:g} ms (limit: held {pol.hold_ms:g} ms)",
                    out,
                    breach_mono=since + int(pol.hold_ms * MS),
                )
        else:
            ch.breach_since = None

    def _on_link(self, rec: Link, now: Instant, out: list[Decision]) -> None:
        site = self.sites[rec.site]
        site.jitter_ms, site.loss_ratio = rec.jitter_ms, rec.loss_ratio
        jp, lp = self.policy.link.jitter, self.policy.link.loss
        if jp.stop_ms is not None and rec.jitter_ms > jp.stop_ms:
            self._trip(
                "link_jitter",
                rec.site,
                now,
                rec.jitter_ms,
                jp.stop_ms,
                f"{rec.site} link jitter {rec.jitter_ms:g} ms above {jp.stop_ms:g} ms",
                out,
            )
        elif jp.warn_ms is not None and rec.jitter_ms > jp.warn_ms:
            self._warn(
                "link_jitter",
                rec.site,
                now,
                rec.jitter_ms,
                jp.warn_ms,
                f"{rec.site} link jitter {rec.jitter_ms:g} ms above {jp.warn_ms:g} ms",
                out,
            )
        if lp.stop_ratio is not None and rec.loss_ratio > lp.stop_ratio:
            self._trip(
                "link_loss",
                rec.site,
                now,
                rec.loss_ratio,
                lp.stop_ratio,
                f"{rec.site} link loss ratio {rec.loss_ratio:g} above {lp.stop_ratio:g}",
                out,
            )
        elif lp.warn_ratio is not None and rec.loss_ratio > lp.warn_ratio:
            self._warn(
                "link_loss",
                rec.site,
                now,
                rec.loss_ratio,
                lp.warn_ratio,
                f"{rec.site} link loss ratio {rec.loss_ratio:g} above {lp.warn_ratio:g}",
                out,
            )

    def _on_kinematics(self, rec: Kinematics, now: Instant, out: list[Decision]) -> None:
        ws = self.policy.workspace
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
        sqrt, dist = math.sqrt, math.dist
        min_margin = math.inf
        max_speed = 0.0
        last_p, last_t = track.last_p, track.last_t
        # This loop runs 1,000 times a second per arm: box_margin, speed and derived_speed
        # (monitor.engine.workspace) are inlined with identical arithmetic.
        for s in rec.samples:
            p = s.p
            x, y, z = p
            m = min(x - lx, hx - x, y - ly, hy - y, z - lz, hz - z)
            if m < min_margin:
                min_margin = m
            if m <= warn_box:
                self._box_outcome(arm, p, m, box.model_dump(), now, out)
            for zone in zones:
                d = zone_distance(p, zone)
                if d < min_margin:
                    min_margin = d
                if d <= warn_zone:
                    self._zone_outcome(arm, p, d, zone.name, now, out)
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
                if v > sp.stop:
                    self._trip(
                        "tool_speed",
                        arm,
                        now,
                        obs,
                        sp.stop,
                        f"{arm} tool-tip speed {v:.1f} mm/s above {sp.stop:g} mm/s",
                        out,
                    )
                else:
                    self._warn(
                        "tool_speed",
                        arm,
                        now,
                        obs,
                        sp.warn,
                        f"{arm} tool-tip speed {v:.1f} mm/s above {sp.warn:g} mm/s",
                        out,
                    )
            f = s.f
            if f is not None and f > gp_warn:
                obs = {"arm": arm, "force_n": f}
                if f > gp.stop:
                    self._trip(
                        "grip_force",
                        arm,
                        now,
                        obs,
                        gp.stop,
                        f"{arm} grip force {f:g} N above {gp.stop:g} N",
                        out,
                    )
                else:
                    self._warn(
                        "grip_force",
                        arm,
                        now,
                        obs,
                        gp.warn,
                        f"{arm} grip force {f:g} N above {gp.warn:g} N",
                        out,
                    )
        track.last_p, track.last_t = last_p, last_t
        track.margin_mm, track.speed_mm_s = min_margin, max_speed

    def _box_outcome(
        self,
        arm: str,
        p: list[float],
        margin: float,
        box: dict[str, Any],
        now: Instant,
        out: list[Decision],
    ) -> None:
        obs = {"arm": arm, "p": list(p), "margin_mm": round(margin, 3)}
        if margin < 0:
            self._trip(
                "workspace_box",
                arm,
                now,
                obs,
                {"box": box},
                f"{arm} tool tip {-margin:.1f} mm outside its allowed box",
                out,
            )
        else:
            self._warn(
                "workspace_box",
                arm,
                now,
                obs,
                {"box": box, "warn_mm": self.policy.workspace.box_warn_mm},
                f"{arm} tool tip within {margin:.1f} mm of its allowed box",
                out,
            )

    def _zone_outcome(
        self, arm: str, p: list[float], d: float, zone: str, now: Instant, out: list[Decision]
    ) -> None:
        obs = {"arm": arm, "p": list(p), "zone": zone, "distance_mm": round(d, 3)}
        if d <= 0:
            self._trip(
                "forbidden_zone",
                f"{arm}:{zone}",
                now,
                obs,
                {"zone": zone},
                f"{arm} tool tip inside forbidden zone {zone!r}",
                out,
            )
        else:
            self._warn(
                "forbidden_zone",
                f"{arm}:{zone}",
                now,
                obs,
                {"zone": zone, "warn_mm": self.policy.workspace.zone_warn_mm},
                f"{arm} tool tip {d:.1f} mm from forbidden zone {zone!r}",
                out,
            )

    def _on_ack(self, rec: SafeStopAck, now: Instant, out: list[Decision]) -> None:
        latch = self.latch
        if latch is None or rec.command_id != latch.command.command_id:
            out.append(
                self._event("ack_unmatched", now, command_id=rec.command_id, result=rec.result)
            )
            return
        if latch.ack_result is not None:
            return  # the robot acknowledged a re-send again; one id is one command
        latch.ack_result = rec.result
        latch.ack_delay_ms = (now.mono_ns - latch.first_mono) / MS
        self.latch_changed = True
        out.append(
            self._event(
                "safe_stop_acknowledged",
                now,
                command_id=rec.command_id,
                result=rec.result,
                delay_ms=round(latch.ack_delay_ms, 3),
                resends=latch.resends,
                robot_at=rec.at,
            )
        )
        if rec.result != "safe_stopped" and not latch.escalated:
            # The robot answered but did not stop: re-sending the same id cannot help.
            latch.escalated = True
            out.append(
                self._event(
                    "safe_stop_escalated",
                    now,
                    command_id=rec.command_id,
                    reason=f"robot answered {rec.result!r}",
                )
            )

    # -- operator ----------------------------------------------------------------------

    def health_problems(self, now: Instant) -> list[str]:
        """Why the sites are not healthy now (empty when a re-arm may be accepted)."""
        problems = []
        for name, site in self.sites.items():
            if site.last_fresh_hb is None:
                problems.append(f"no fresh heartbeat from the {name} site yet")
            elif now.mono_ns - site.last_fresh_hb > self.warn_silence_ns:
                age = (now.mono_ns - site.last_fresh_hb) / MS
                problems.append(f"{name} heartbeat is {age:.0f} ms old")
        for channel in CHANNELS:
            ch = self.channels[channel]
            ch.window.expire(now.mono_ns)
            q = ch.window.quantile(self.policy.latency.quantile)
            warn = self._channel_policy(channel).warn_ms
            if q is not None and q > warn:
                problems.append(f"{channel} latency {q:g} ms above {warn:g} ms")
        return problems

    def request_problems(
        self, req: RearmRequest | LatchClose, authorised: bool, seen: bool, now: Instant
    ) -> list[str]:
        """Why this re-arm or latch-close request must be refused (ICD 1.1 §5.1, §5.3).

        `seen`: its request_id was seen before (by this engine or a previous latch owner).
        """
        problems: list[str] = []
        latch = self.latch
        closing = isinstance(req, LatchClose)
        if latch is None:
            problems.append(
                "procedure has ended and has no latch to clear"
                if self.ended
                else "procedure is not latched in safe-stop"
            )
        elif req.command_id != latch.command.command_id:
            problems.append(
                f"request names latch {req.command_id}, but the procedure is latched by "
                f"{latch.command.command_id} (a stale or replayed request)"
            )
        if not authorised:
            what = "close a latch" if closing else "re-arm"
            problems.append(f"operator {req.operator_id!r} is not authorised to {what}")
        pol = self.policy.operator
        age_ms = (now.utc_ns - req.requested_at) / MS
        if age_ms > pol.request_max_age_ms:
            problems.append(
                f"request is {age_ms / 1000:.1f} s old (limit {pol.request_max_age_ms / 1000:g} s "
                "by the monitor's UTC clock)"
            )
        elif -age_ms > pol.request_max_future_ms:
            problems.append(
                f"request is dated {-age_ms / 1000:.1f} s in the future (limit "
                f"{pol.request_max_future_ms / 1000:g} s by the monitor's UTC clock)"
            )
        if seen:
            problems.append(f"request_id {req.request_id} was already used (a replayed request)")
        if latch is not None and closing and not self.ended:
            problems.append(
                "procedure has not ended: latch_close only retires the latch of an ended "
                "procedure; use a re-arm (telesafe rearm)"
            )
        if latch is not None and not closing:
            if self.ended:
                problems.append(
                    "procedure has ended: retire its latch with latch_close "
                    "(telesafe latch close), there is no robot to re-arm"
                )
            else:
                problems.extend(self.health_problems(now))
        return problems

    def on_latch_request(
        self, req: RearmRequest | LatchClose, authorised: bool, seen: bool, now: Instant
    ) -> list[Decision]:
        """Accept or refuse a re-arm or latch-close request; either outcome is an event."""
        out: list[Decision] = []
        closing = isinstance(req, LatchClose)
        problems = self.request_problems(req, authorised, seen, now)
        latch = self.latch
        if latch is not None:
            self.seen_requests[req.request_id] = req.requested_at
            self.latch_changed = True
        common: dict[str, Any] = {
            "operator_id": req.operator_id,
            "reason": req.reason,
            "request_id": req.request_id,
            "requested_command_id": req.command_id,
            "requested_at": req.requested_at,
        }
        if problems:
            kind = "latch_close_rejected" if closing else "rearm_rejected"
            out.append(self._event(kind, now, **common, rejected_because=problems))
            return out
        assert latch is not None
        cleared = {"cleared_command_id": latch.command.command_id, "cleared_rule": latch.rule}
        if closing:
            out.append(
                self._event(
                    "latch_closed",
                    now,
                    **common,
                    **cleared,
                    end_reason=self.end_reason,
                    resends=latch.resends,
                )
            )
        else:
            cid = self._command_id("rearm")
            cmd = Rearm(
                command_id=cid,
                procedure_id=self.procedure_id,
                issued_at=now.utc_ns,
                operator_id=req.operator_id,
                reason=req.reason,
            )
            out.append(SendCommand(cmd, 0, now.mono_ns, now.mono_ns))
            out.append(self._event("rearm_accepted", now, **common, command_id=cid, **cleared))
            for ch in self.channels.values():
                ch.breach_since = None
            for site in self.sites.values():
                site.gap_tripped = site.gap_warned = False
        self.latch = None
        self.seen_requests = {}
        self.latch_changed = True
        self._update_state(now, out)
        return out

    # -- timers --------------------------------------------------------------------------

    def tick(self, now: Instant) -> list[Decision]:
        out: list[Decision] = []
        t = now.mono_ns
        latch = self.latch
        if (
            latch is not None
            and latch.ack_result is None
            and t - latch.last_sent_mono >= self.resend_ns
        ):
            latch.resends += 1
            latch.last_sent_mono = t
            out.append(SendCommand(latch.command, latch.resends, t, latch.breach_mono))
            out.append(
                self._event(
                    "safe_stop_resent",
                    now,
                    command_id=latch.command.command_id,
                    resend=latch.resends,
                )
            )
            limit = self.policy.alarms.escalate_after_resends
            if latch.resends >= limit and not latch.escalated:
                latch.escalated = True
                self.latch_changed = True
                out.append(
                    self._event(
                        "safe_stop_escalated",
                        now,
                        command_id=latch.command.command_id,
                        reason=f"not acknowledged after {latch.resends} re-sends",
                    )
                )
        if not self.ended:
            self._tick_heartbeats(now, out)
            for channel in CHANNELS:
                self.channels[channel].window.expire(t)
                self._evaluate_channel(channel, now, out)
            for w in self.warnings.clear_due(t):
                out.append(
                    self._event(
                        "warning_cleared",
                        now,
                        rule=w.rule,
                        subject=w.subject,
                        duration_ms=round((t - w.raised_mono) / MS, 3),
                    )
                )
            if t >= self.next_summary:
                self._summaries(now, out)
                self.next_summary = t + self.summary_interval_ns
        self._update_state(now, out)
        return out

    def _tick_heartbeats(self, now: Instant, out: list[Decision]) -> None:
        t = now.mono_ns
        hb = self.policy.heartbeat
        for name, site in self.sites.items():
            if site.last_fresh_hb is None:
                if not site.first_missed and t - self.grace_from > self.first_hb_ns:
                    site.first_missed = True
                    self._trip(
                        "first_heartbeat",
                        name,
                        now,
                        round((t - self.opened.mono_ns) / MS, 3),
                        hb.first_heartbeat_ms,
                        f"no fresh heartbeat from the {name} site within "
                        f"{hb.first_heartbeat_ms:g} ms of the procedure start",
                        out,
                        breach_mono=self.grace_from + self.first_hb_ns,
                    )
                continue
            silence = t - site.last_fresh_hb
            if silence > self.warn_silence_ns:
                ms = round(silence / MS, 3)
                if not site.gap_warned:
                    site.gap_warned = True
                    self._warn(
                        "heartbeat_silence",
                        name,
                        now,
                        ms,
                        hb.warn_silence_ms,
                        f"{name} heartbeat silent for {ms:g} ms",
                        out,
                    )
                else:
                    self.warnings.bad("heartbeat_silence", name, t, ms, hb.warn_silence_ms)
                if silence > self.stop_silence_ns and not site.gap_tripped:
                    site.gap_tripped = True
                    self._trip(
                        "heartbeat_silence",
                        name,
                        now,
                        ms,
                        hb.stop_silence_ms,
                        f"{name} heartbeat silent for {ms:g} ms (limit {hb.stop_silence_ms:g} ms)",
                        out,
                        breach_mono=site.last_fresh_hb + self.stop_silence_ns,
                    )

    def _summaries(self, now: Instant, out: list[Decision]) -> None:
        for channel in CHANNELS:
            w = self.channels[channel].window
            if len(w):
                out.append(
                    self._event(
                        "latency_summary",
                        now,
                        channel=channel,
                        count=len(w),
                        p50=w.quantile(0.5),
                        p95=w.quantile(0.95),
                        p99=w.quantile(0.99),
                        max=w.max(),
                    )
                )

    def next_deadline(self) -> int | None:
        cands: list[int] = []
        latch = self.latch
        if latch is not None and latch.ack_result is None:
            cands.append(latch.last_sent_mono + self.resend_ns)
        if not self.ended:
            for site in self.sites.values():
                if site.last_fresh_hb is None:
                    if not site.first_missed:
                        cands.append(self.grace_from + self.first_hb_ns + 1)
                elif not site.gap_warned:
                    cands.append(site.last_fresh_hb + self.warn_silence_ns + 1)
                elif not site.gap_tripped:
                    cands.append(site.last_fresh_hb + self.stop_silence_ns + 1)
            for channel in CHANNELS:
                ch = self.channels[channel]
                if ch.breach_since is not None:
                    cands.append(ch.breach_since + int(self._channel_policy(channel).hold_ms * MS))
            wd = self.warnings.next_deadline()
            if wd is not None:
                cands.append(wd)
            cands.append(self.next_summary)
        return min(cands) if cands else None

    # -- the monitor's own deafness --------------------------------------------------------

    def exclude_deaf(self, start_ns: int, end_ns: int) -> None:
        """Do not count [start, end) as site silence: the monitor itself could not hear.

        A pause of the monitor (rebalance, stall, SIGSTOP) must neither fire false stops nor
        forget a real silence: time before the pause still counts, time after it counts.
        """
        for site in self.sites.values():
            last = site.last_fresh_hb
            if last is not None and end_ns > last:
                site.last_fresh_hb = last + (end_ns - max(start_ns, last))
        if end_ns > self.grace_from:
            self.grace_from += end_ns - max(start_ns, self.grace_from)

    # -- failover ------------------------------------------------------------------------

    def latch_state(self) -> LatchState | None:
        """What a new owner needs to keep this procedure latched (None: not latched)."""
        latch = self.latch
        if latch is None:
            return None
        return LatchState(
            procedure_id=self.procedure_id,
            command=latch.command,
            rule=latch.rule,
            resends=latch.resends,
            ack_result=latch.ack_result,
            escalated=latch.escalated,
            episode=max(1, self.episode),
            pack=self.loaded.name,
            ended=self.ended,
            end_reason=self.end_reason,
            seen_request_ids=dict(self.seen_requests),
        )

    def restore_latch(self, state: LatchState, now: Instant) -> list[Decision]:
        """Take over a latch from a previous owner: same command id, re-sent if unacked."""
        cmd = state.command
        self.started = True
        self.episode = max(self.episode, state.episode)
        if state.ended:
            self.ended = True
            self.end_reason = state.end_reason
        latch = Latch(
            cmd,
            state.rule,
            now.mono_ns,
            now.mono_ns - self.resend_ns,
            now.mono_ns,
            resends=state.resends,
            ack_result=state.ack_result,
            escalated=state.escalated,
            rules_seen={cmd.policy.rule},
        )
        self.latch = latch
        self.seen_requests = dict(state.seen_request_ids)
        self.latch_changed = True  # re-published by its new owner (and in this version's form)
        out: list[Decision] = [
            self._event(
                "latch_restored",
                now,
                command_id=cmd.command_id,
                rule=latch.rule,
                ack_result=latch.ack_result,
                previous_monitor=cmd.monitor_id,
                ended=state.ended,
            )
        ]
        self._update_state(now, out)
        return out

    # -- reporting -----------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        return {
            "sites": {
                name: {
                    "received": s.received,
                    "duplicates": s.duplicates,
                    "lost": s.lost,
                    "stale": s.stale,
                    "rejected": s.rejected,
                    "heartbeat_gaps": s.gaps,
                    "max_heartbeat_gap_ms": round(s.max_gap_ms, 3),
                }
                for name, s in self.sites.items()
            },
        }
