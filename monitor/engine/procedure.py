"""One procedure under supervision: its records routed to the rule families
(`monitor/engine/rules/`), seq/duplicate/stale bookkeeping, its life (start, end, close),
its derived state and a typed snapshot. Every outcome goes to its `Latch`.

All times are monitor-clock `Instant`s handed in by the caller. A method returns (or
appends to `out`) the decisions it made; it never publishes anything itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from monitor.engine.clock import MS, Instant
from monitor.engine.decisions import Decision
from monitor.engine.latch import Latch
from monitor.engine.latch_state import LatchState
from monitor.engine.requests import LatchRequest, request_problems
from monitor.engine.rules.base import Rule
from monitor.engine.rules.heartbeat import HeartbeatRule
from monitor.engine.rules.latency import LatencyRule
from monitor.engine.rules.link import LinkRule
from monitor.engine.rules.workspace import WorkspaceRule
from monitor.events import EventKind as K
from monitor.icd.models import (
    SITES,
    AnyTelemetry,
    Heartbeat,
    MonitorStatus,
    ProcedureEnd,
    ProcedureStart,
    RearmRequest,
    SafeStopAck,
    Site,
)
from monitor.policy.loader import LoadedPack
from monitor.snapshot import LatchSnapshot, ProcedureSnapshot, SiteSnapshot, State

Handler = Callable[[Any, bool, Instant, list[Decision]], None]


@dataclass(slots=True)
class SiteCounts:
    """One site's record bookkeeping (ICD §7 seq rules, staleness)."""

    last_seq: int | None = None
    offset_ns: int = 0  # the site clock minus UTC, as its last heartbeat reported
    received: int = 0
    duplicates: int = 0
    lost: int = 0
    stale: int = 0
    rejected: int = 0


class ProcedureMonitor:
    """One procedure, opened at `opened` (its first-heartbeat grace and the identity of
    its command ids run from there). Driven by `Engine`, under the engine's driver
    contract: `now` never goes backwards, and `tick` runs at `next_deadline()` before any
    record heard after it. `state` is derived from the facts after every call."""

    __slots__ = (
        "_deadlines",
        "_route",
        "end_reason",
        "ended",
        "heartbeat",
        "latch",
        "latency",
        "link",
        "loaded",
        "next_summary",
        "opened",
        "policy",
        "procedure_id",
        "rules",
        "sites",
        "stale_ns",
        "started",
        "state",
        "summary_interval_ns",
        "workspace",
    )

    def __init__(
        self,
        procedure_id: str,
        pack: LoadedPack,
        opened: Instant,
        monitor_id: str,
        summary_interval_ns: int,
    ) -> None:
        self.procedure_id = procedure_id
        self.opened = opened
        self.started = False  # a procedure_start was seen (else adopted from other records)
        self.ended = False
        self.end_reason: str | None = None
        self.sites: dict[Site, SiteCounts] = {s: SiteCounts() for s in SITES}
        self.summary_interval_ns = summary_interval_ns
        self.next_summary = opened.mono_ns + summary_interval_ns
        self.state: State = "pending"
        self.latch = Latch(procedure_id, monitor_id, opened, pack)
        p = pack.pack
        self.heartbeat = HeartbeatRule(self.latch, opened, p)
        self.latency = LatencyRule(self.latch, opened, p)
        self.link = LinkRule(self.latch, opened, p)
        self.workspace = WorkspaceRule(self.latch, opened, p)
        # Every rule family: its timers, deadlines, health and re-arm reset run from here.
        self.rules: tuple[Rule[Any], ...] = (
            self.heartbeat,
            self.latency,
            self.link,
            self.workspace,
        )
        self._route: dict[type, Handler] = {
            SafeStopAck: self._on_ack,
            ProcedureStart: self._on_start,
            ProcedureEnd: self._on_end,
        }
        for rule in self.rules:
            for rtype in rule.records:
                self._route[rtype] = rule.on_record
        self._deadlines = tuple([rule.deadline for rule in self.rules])  # bound once: hot path
        self._own_pack(pack)

    def _own_pack(self, pack: LoadedPack) -> None:
        self.loaded = pack
        self.policy = pack.pack
        self.stale_ns = int(pack.pack.stale_after_ms * MS)

    def _configure(self, pack: LoadedPack) -> None:
        """Judge by another pack from now on (the latch and the rules were built with the
        first one)."""
        self._own_pack(pack)
        self.latch.configure(pack)
        for rule in self.rules:
            rule.configure(pack.pack)

    # -- status --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Ended and nothing left to do (no unacknowledged safe-stop to keep re-sending)."""
        latched = self.latch.current
        return self.ended and not (latched and latched.ack_result is None)

    def _compute_state(self) -> State:
        latched = self.latch.current
        if latched is not None:
            return "safe_stopped" if latched.ack_result == "safe_stopped" else "safe_stop_latched"
        if self.ended:
            return "ended"
        if self.latch.warnings:
            return "warning"
        return "armed" if self.heartbeat.unheard == 0 else "pending"

    def status(self) -> MonitorStatus:
        if self.latch.current is not None:
            return "safe_stop_latched"
        return "warning" if self.latch.warnings else "armed"

    def _update_state(self, now: Instant, out: list[Decision]) -> None:
        new = self._compute_state()
        if new != self.state:
            out.append(self.latch.event(K.STATE_CHANGED, now, before=self.state, after=new))
            self.state = new

    # -- records ---------------------------------------------------------------------------

    def on_telemetry(self, rec: AnyTelemetry, now: Instant) -> list[Decision]:
        """Judge one record received at `now` (see `Engine.on_telemetry`): duplicates are
        counted and dropped, the rest routed to the rule family of its type (or the latch,
        or the procedure's life); after the end only acknowledgements count."""
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
                self.latch.on_ack(rec, now, out)
                self._update_state(now, out)
            return out
        if isinstance(rec, Heartbeat):
            site.offset_ns = rec.clock.offset_ns
        stale = now.utc_ns - (rec.sent_at - site.offset_ns) > self.stale_ns
        if stale:
            site.stale += 1
        self._route[type(rec)](rec, stale, now, out)
        self._update_state(now, out)
        return out

    def on_rejected(self, site: Site) -> None:
        """Count a dead-lettered record of this procedure (no decision, no liveness)."""
        self.sites[site].rejected += 1

    def _on_ack(self, rec: SafeStopAck, stale: bool, now: Instant, out: list[Decision]) -> None:
        self.latch.on_ack(rec, now, out)

    def _on_end(self, rec: ProcedureEnd, stale: bool, now: Instant, out: list[Decision]) -> None:
        self.ended = True
        self.end_reason = rec.reason
        latched = self.latch.current
        extra: dict[str, Any] = {}
        if latched is not None:
            # ICD 1.1 §7: an acknowledged latch closes with the procedure; an unacknowledged
            # one stays, re-sent and escalated, until acknowledged or retired (latch_close).
            self.latch.changed = True
            acked = latched.ack_result is not None
            extra["latch"] = {
                "command_id": latched.command.command_id,
                "rule": latched.rule,
                "acknowledged": acked,
                "outcome": "closes with the procedure"
                if acked
                else "kept: re-sent until acknowledged or retired by latch_close",
            }
        out.append(
            self.latch.event(
                K.PROCEDURE_ENDED, now, site=rec.site, reason=rec.reason, **extra, **self.counters()
            )
        )

    def _on_start(
        self, rec: ProcedureStart, stale: bool, now: Instant, out: list[Decision]
    ) -> None:
        # Both sites may send one; the first names the procedure's facts.
        if self.started:
            return
        self.started = True
        out.append(
            self.latch.event(
                K.PROCEDURE_STARTED,
                now,
                site=rec.site,
                surgeon_id=rec.surgeon_id,
                robot=rec.robot.model_dump(),
                arms=list(rec.arms),
                policy_requested=rec.policy,
                policy=_pack_ref(self.loaded),
            )
        )

    def apply_pack(self, pack: LoadedPack, now: Instant, out: list[Decision]) -> None:
        """Judge by `pack` from now on (the pack a procedure_start named)."""
        if pack.sha256 != self.loaded.sha256:
            before = {"pack": self.loaded.name, "version": self.loaded.version}
            self._configure(pack)
            out.append(
                self.latch.event(K.POLICY_APPLIED, now, before=before, after=_pack_ref(pack))
            )

    # -- operator ----------------------------------------------------------------------

    def health(self, now: Instant) -> list[str]:
        """Why the signals do not allow a re-arm now (empty when one may be accepted)."""
        return [problem for rule in self.rules for problem in rule.health(now)]

    def on_latch_request(
        self, req: LatchRequest, authorised: bool, seen: bool, now: Instant
    ) -> list[Decision]:
        """Accept or refuse a re-arm or latch-close request (ICD 1.1 §5.1, §5.3); either
        outcome is an event. `seen`: its request_id was used before."""
        out: list[Decision] = []
        latch = self.latch
        problems = request_problems(
            latch.current, self.policy.operator, req, authorised, seen, self.ended, self.health, now
        )
        if latch.on_request(req, problems, self.end_reason, now, out):
            if isinstance(req, RearmRequest):
                for rule in self.rules:
                    rule.rearmed()
            self._update_state(now, out)
        return out

    # -- timers --------------------------------------------------------------------------

    def tick(self, now: Instant) -> list[Decision]:
        """Run what is due at `now`: re-sends, then (while running) each rule's timers,
        warning clearing and the latency summaries."""
        out: list[Decision] = []
        self.latch.tick(now, out)
        if not self.ended:
            for rule in self.rules:
                rule.tick(now, out)
            self.latch.clear_warnings(now, out)
            if now.mono_ns >= self.next_summary:
                self.latency.summarise(now, out)
                self.next_summary = now.mono_ns + self.summary_interval_ns
        self._update_state(now, out)
        return out

    def next_deadline(self) -> int | None:
        """The earliest of the latch's re-send and, while running, every rule's deadline,
        warning clearing and the next summary."""
        due = self.latch.deadline()
        if self.ended:
            return due
        if due is None or self.next_summary < due:
            due = self.next_summary
        for deadline in self._deadlines:
            d = deadline()
            if d is not None and d < due:
                due = d
        d = self.latch.warnings.next_deadline()
        return d if d is not None and d < due else due

    # -- failover ------------------------------------------------------------------------

    def latch_state(self) -> LatchState | None:
        """What a new owner needs to keep this procedure latched (None: not latched)."""
        return self.latch.state(self.ended, self.end_reason)

    def restore_latch(self, state: LatchState, now: Instant) -> list[Decision]:
        """Take over a latch from a previous owner: same command id, re-sent if unacked."""
        self.started = True
        if state.ended:
            self.ended = True
            self.end_reason = state.end_reason
        out: list[Decision] = [self.latch.restore(state, now)]
        self._update_state(now, out)
        return out

    # -- reporting -----------------------------------------------------------------------

    def last_seqs(self) -> dict[str, int | None]:
        return {name: s.last_seq for name, s in self.sites.items()}

    def counters(self) -> dict[str, Any]:
        beats = self.heartbeat.sites
        return {
            "sites": {
                name: {
                    "received": s.received,
                    "duplicates": s.duplicates,
                    "lost": s.lost,
                    "stale": s.stale,
                    "rejected": s.rejected,
                    "heartbeat_gaps": beats[name].gaps,
                    "max_heartbeat_gap_ms": round(beats[name].max_gap_ms, 3),
                }
                for name, s in self.sites.items()
            },
        }

    def snapshot(self, now: Instant) -> ProcedureSnapshot:
        """Its state and signals at `now`. Changes nothing (a view must not change what
        the rules decide later)."""
        sites: dict[str, SiteSnapshot] = {
            name: SiteSnapshot(
                heartbeat_age_s=self.heartbeat.age_s(name, now),
                jitter_ms=None if link is None else link[0],
                loss_ratio=None if link is None else link[1],
                duplicates=s.duplicates,
                lost=s.lost,
                stale=s.stale,
                state=self.heartbeat.sites[name].state,
            )
            for name, s in self.sites.items()
            for link in (self.link.last[name],)
        }
        latched = self.latch.current
        return ProcedureSnapshot(
            state=self.state,
            pack=self.loaded.name,
            sites=sites,
            channels=self.latency.windows(now),
            arms=self.workspace.snapshot(),
            warnings=tuple(f"{w.rule}:{w.subject}" for w in self.latch.warnings.active.values()),
            latch=None
            if latched is None
            else LatchSnapshot(
                rule=latched.rule,
                command_id=latched.command.command_id,
                issued_at=latched.command.issued_at,
                ended=self.ended,
                resends=latched.resends,
                ack=latched.ack_result,
                escalated=latched.escalated,
            ),
            heartbeat_stop_limit_s=self.policy.heartbeat.stop_silence_ms / 1e3,
        )


def _pack_ref(pack: LoadedPack) -> dict[str, str]:
    return {"pack": pack.name, "version": pack.version, "hash": pack.sha256}
