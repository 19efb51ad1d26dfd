"""Where every rule's outcome goes: the warning set and the safe-stop latch of one procedure.

A rule reports an out-of-band observation with `warn`, `trip` or `band` (which of the two
by the value against the rule's limits). A trip latches a safe-stop: one command id per
breach episode, re-sent every `resend_interval_ms` until acknowledged, escalated after
`escalate_after_resends` re-sends or a refusal; further breaches while latched are only
noted. Only an accepted re-arm (or the latch-close of an ended procedure, ICD 1.1 §5.3)
clears it; `latch_state`/`restore` carry it across instances on `telesafe.state`.

Nothing here reads a clock or publishes: every method takes the `Instant` it is about and
appends its decisions to `out`. `changed` is set whenever the latch's published state
changes; the engine then emits a `PublishLatch` and clears it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar

from monitor.engine.alarms import WarningSet
from monitor.engine.clock import MS, Instant
from monitor.engine.decisions import Decision, Event, SendCommand
from monitor.engine.latch_state import AckResult, LatchState
from monitor.engine.requests import LatchRequest, request_fields
from monitor.events import EventKind as K
from monitor.icd.models import LatchClose, PolicyRef, Rearm, SafeStop, SafeStopAck
from monitor.policy.loader import LoadedPack

C = TypeVar("C", SafeStop, Rearm)
_COMMAND_NS = uuid.UUID("5f0c3f8e-6a53-4b8e-9d0e-2d6c1c7a9e10")


# What a latch carries across instances on telesafe.state (fields of both Latched and
# LatchState).
_CARRIED = ("command", "rule", "resends", "ack_result", "escalated")


@dataclass(slots=True)
class Latched:
    """The safe-stop a procedure is latched in."""

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


@dataclass(frozen=True, slots=True)
class Outcome:
    """One out-of-band observation of a rule: what the warning, the safe-stop command and
    the ledger report about it."""

    rule: str
    subject: str  # what was judged: a site, a channel, an arm, "arm:zone"
    observed: Any
    threshold: Any  # the limit crossed
    reason: str  # one sentence for people

    def data(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "subject": self.subject,
            "observed": self.observed,
            "threshold": self.threshold,
            "reason": self.reason,
        }


class Latch:
    """The outcome sink of one procedure: its warnings and its safe-stop latch.

    `current` is the latch in force (None: not latched). Every method appends its
    decisions to `out` in the order a driver must act on them (a command before the event
    that records it). Preconditions, for every method: `now` does not go backwards, and
    rules report each out-of-band observation when they make it (a warning clears
    `clear_after_ms` after its last report)."""

    __slots__ = (
        "changed",
        "current",
        "episode",
        "loaded",
        "monitor_id",
        "opened_utc",
        "policy",
        "procedure_id",
        "resend_ns",
        "seen_requests",
        "warnings",
    )

    def __init__(
        self, procedure_id: str, monitor_id: str, opened: Instant, pack: LoadedPack
    ) -> None:
        self.procedure_id = procedure_id
        self.monitor_id = monitor_id
        self.opened_utc = opened.utc_ns
        self.current: Latched | None = None
        self.episode = 0
        # request_id -> requested_at of requests seen for the current latch; published with
        # the latch so a replayed request is refused by a later owner too (ICD 1.1 §5.1).
        self.seen_requests: dict[str, int] = {}
        self.changed = False  # the state on telesafe.state must be re-published
        self.configure(pack)

    def configure(self, pack: LoadedPack) -> None:
        """Apply a policy pack. Active warnings are dropped (the new pack judges afresh)."""
        self.loaded = pack
        self.policy = pack.pack
        self.resend_ns = int(pack.pack.alarms.resend_interval_ms * MS)
        self.warnings = WarningSet(int(pack.pack.alarms.clear_after_ms * MS))

    def event(self, kind: K, now: Instant, **data: Any) -> Event:
        """An event of this procedure at `now` (its fields: docs/events.md)."""
        return Event(kind, self.procedure_id, now.mono_ns, now.utc_ns, data)

    def _policy_ref(self, rule: str) -> PolicyRef:
        lp = self.loaded
        return PolicyRef(pack=lp.name, version=lp.version, rule=rule, hash=lp.sha256)

    def _command(self, cls: type[C], kind: str, now: Instant, **fields: Any) -> C:
        """A new command of this procedure, issued now. Its id is the UUIDv5 of monitor,
        procedure lifetime (its opening time: an id may be reopened), kind and episode:
        unique, and the same in a live run and its replay (no issue time, which a live
        timer and a replayed one read a few nanoseconds apart)."""
        name = f"{self.monitor_id}|{self.procedure_id}|{self.opened_utc}|{kind}|{self.episode}"
        cid = str(uuid.uuid5(_COMMAND_NS, name))
        return cls(command_id=cid, procedure_id=self.procedure_id, issued_at=now.utc_ns, **fields)

    # -- rule outcomes -------------------------------------------------------------------

    def warn(self, o: Outcome, now: Instant, out: list[Decision]) -> None:
        """An observation in the warn band: raises the warning unless already active."""
        if self.warnings.bad(o.rule, o.subject, now.mono_ns, o.observed, o.threshold):
            ref = self._policy_ref(o.rule).model_dump()
            out.append(self.event(K.WARNING_RAISED, now, **o.data(), policy=ref))

    def trip(
        self, o: Outcome, now: Instant, out: list[Decision], breach_mono: int | None = None
    ) -> None:
        """A breach: latch a safe-stop, or note it once per rule when already latched.
        `breach_mono`: when the breach happened, if before `now` (a timer rule's deadline)."""
        latched = self.current
        if latched is not None:
            if o.rule not in latched.rules_seen:
                latched.rules_seen.add(o.rule)
                cid = latched.command.command_id
                out.append(self.event(K.BREACH_WHILE_LATCHED, now, **o.data(), command_id=cid))
            return
        self.episode += 1
        cmd = self._command(
            SafeStop,
            "safe_stop",
            now,
            monitor_id=self.monitor_id,
            policy=self._policy_ref(o.rule),
            observed=o.observed,
            threshold=o.threshold,
            reason=o.reason,
        )
        cid = cmd.command_id
        bm = breach_mono if breach_mono is not None else now.mono_ns
        self.current = Latched(cmd, o.rule, now.mono_ns, now.mono_ns, bm, rules_seen={o.rule})
        self.seen_requests = {}
        self.changed = True
        out.append(SendCommand(cmd, 0, now.mono_ns, bm))
        data = {**o.data(), "command_id": cid, "episode": self.episode}
        out.append(self.event(K.SAFE_STOP_ISSUED, now, **data, policy=cmd.policy.model_dump()))

    def judge(self, stop: bool, o: Outcome, now: Instant, out: list[Decision]) -> None:
        """An observation out of band: a breach (`stop`) trips, anything else warns."""
        if stop:
            self.trip(o, now, out)
        else:
            self.warn(o, now, out)

    def band(
        self,
        rule: str,
        subject: str,
        now: Instant,
        value: float,
        warn: float | None,
        stop: float | None,
        reason: str,
        out: list[Decision],
        observed: Any = None,
    ) -> None:
        """Judge `value` against a rule's limits: above `stop` trips, else above `warn`
        warns, else nothing (a None limit is not enforced). `reason` is a format string
        over `value`, `limit` (the limit crossed) and `subject`; `observed` is what the
        outcome reports (default: the value itself)."""
        tripped = stop is not None and value > stop
        limit = stop if tripped else warn
        if limit is None or value <= limit:
            return
        text = reason.format(value=value, limit=limit, subject=subject)
        obs = value if observed is None else observed
        self.judge(tripped, Outcome(rule, subject, obs, limit, text), now, out)

    # -- the robot's answer ----------------------------------------------------------------

    def on_ack(self, rec: SafeStopAck, now: Instant, out: list[Decision]) -> None:
        """The robot's answer (ICD §3.7): the first ack of the latched command stops its
        re-sends (a refusal escalates at once); an ack of any other id is only noted."""
        latched = self.current
        if latched is None or rec.command_id != latched.command.command_id:
            out.append(
                self.event(K.ACK_UNMATCHED, now, command_id=rec.command_id, result=rec.result)
            )
            return
        if latched.ack_result is not None:
            return  # the robot acknowledged a re-send again; one id is one command
        latched.ack_result = rec.result
        latched.ack_delay_ms = (now.mono_ns - latched.first_mono) / MS
        self.changed = True
        out.append(
            self.event(
                K.SAFE_STOP_ACKNOWLEDGED,
                now,
                command_id=rec.command_id,
                result=rec.result,
                delay_ms=round(latched.ack_delay_ms, 3),
                resends=latched.resends,
                robot_at=rec.at,
            )
        )
        if rec.result != "safe_stopped" and not latched.escalated:
            # The robot answered but did not stop: re-sending the same id cannot help.
            latched.escalated = True
            why = f"robot answered {rec.result!r}"
            out.append(
                self.event(K.SAFE_STOP_ESCALATED, now, command_id=rec.command_id, reason=why)
            )

    # -- timers ----------------------------------------------------------------------------

    def deadline(self) -> int | None:
        """The next re-send of an unacknowledged safe-stop (None: nothing to re-send)."""
        latched = self.current
        if latched is None or latched.ack_result is not None:
            return None
        return latched.last_sent_mono + self.resend_ns

    def tick(self, now: Instant, out: list[Decision]) -> None:
        """Re-send an unacknowledged safe-stop that is due; escalate after the pack's count."""
        t = now.mono_ns
        latched = self.current
        if latched is None or latched.ack_result is not None:
            return
        if t - latched.last_sent_mono < self.resend_ns:
            return
        latched.resends += 1
        latched.last_sent_mono = t
        cid = latched.command.command_id
        out.append(SendCommand(latched.command, latched.resends, t, latched.breach_mono))
        out.append(self.event(K.SAFE_STOP_RESENT, now, command_id=cid, resend=latched.resends))
        limit = self.policy.alarms.escalate_after_resends
        if latched.resends >= limit and not latched.escalated:
            latched.escalated = True
            self.changed = True
            why = f"not acknowledged after {latched.resends} re-sends"
            out.append(self.event(K.SAFE_STOP_ESCALATED, now, command_id=cid, reason=why))

    def clear_warnings(self, now: Instant, out: list[Decision]) -> None:
        """Clear the warnings whose signal stayed in band long enough."""
        t = now.mono_ns
        for w in self.warnings.clear_due(t):
            ms = round((t - w.raised_mono) / MS, 3)
            out.append(
                self.event(K.WARNING_CLEARED, now, rule=w.rule, subject=w.subject, duration_ms=ms)
            )

    # -- operator requests (ICD 1.1 §5.1, §5.3) -------------------------------------------

    def on_request(
        self,
        req: LatchRequest,
        problems: list[str],
        end_reason: str | None,
        now: Instant,
        out: list[Decision],
    ) -> bool:
        """Accept or refuse a request given its `problems` (`requests.request_problems`);
        either outcome is an event. True if the latch was cleared (a re-arm also publishes
        a `rearm` command). While latched, the request id is remembered either way and
        published with the latch."""
        closing = isinstance(req, LatchClose)
        latched = self.current
        if latched is not None:
            self.seen_requests[req.request_id] = req.requested_at
            self.changed = True
        common = request_fields(req)
        if problems:
            kind = K.LATCH_CLOSE_REJECTED if closing else K.REARM_REJECTED
            out.append(self.event(kind, now, **common, rejected_because=problems))
            return False
        assert latched is not None
        cleared = {"cleared_command_id": latched.command.command_id, "cleared_rule": latched.rule}
        if closing:
            out.append(
                self.event(
                    K.LATCH_CLOSED,
                    now,
                    **common,
                    **cleared,
                    end_reason=end_reason,
                    resends=latched.resends,
                )
            )
        else:
            cmd = self._command(Rearm, "rearm", now, operator_id=req.operator_id, reason=req.reason)
            cid = cmd.command_id
            out.append(SendCommand(cmd, 0, now.mono_ns, now.mono_ns))
            out.append(self.event(K.REARM_ACCEPTED, now, **common, command_id=cid, **cleared))
        self.current = None
        self.seen_requests = {}
        self.changed = True
        return True

    # -- failover --------------------------------------------------------------------------

    def state(self, ended: bool, end_reason: str | None) -> LatchState | None:
        """What a new owner needs to keep this procedure latched (None: not latched)."""
        latched = self.current
        if latched is None:
            return None
        return LatchState(
            procedure_id=self.procedure_id,
            **{f: getattr(latched, f) for f in _CARRIED},
            episode=max(1, self.episode),
            pack=self.loaded.name,
            ended=ended,
            end_reason=end_reason,
            seen_request_ids=dict(self.seen_requests),
        )

    def restore(self, state: LatchState, now: Instant) -> Event:
        """Take over a latch from a previous owner: same command id, re-sent at once if
        unacknowledged (its last send counts as one interval ago)."""
        cmd = state.command
        self.episode = max(self.episode, state.episode)
        t = now.mono_ns
        carried = {f: getattr(state, f) for f in _CARRIED}
        self.current = Latched(
            **carried, first_mono=t, last_sent_mono=t - self.resend_ns, breach_mono=t
        )
        self.current.rules_seen.add(cmd.policy.rule)
        self.seen_requests = dict(state.seen_request_ids)
        self.changed = True  # re-published by its new owner (and in this version's form)
        return self.event(
            K.LATCH_RESTORED,
            now,
            command_id=cmd.command_id,
            rule=state.rule,
            ack_result=state.ack_result,
            previous_monitor=cmd.monitor_id,
            ended=state.ended,
        )
