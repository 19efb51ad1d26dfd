"""A small driver for the pure engine: a FakeClock, ICD records with correct seq per site,
and `engine.tick` run at every deadline while time advances (as the replay driver does).

Not a test module itself; test files import it (`from tests.unit.enginekit import Driver`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import TypeAdapter

from monitor.engine.clock import MS, FakeClock, Instant
from monitor.engine.decisions import Decision, Event, SendCommand
from monitor.engine.engine import Engine, EngineConfig
from monitor.icd.models import (
    AnyOperator,
    AnyTelemetry,
    OperatorRequest,
    SafeStop,
    TelemetryRecord,
)
from monitor.policy.loader import PackRegistry
from monitor.snapshot import ProcedureSnapshot

_TELEMETRY = TypeAdapter[AnyTelemetry](TelemetryRecord)
_OPERATOR = TypeAdapter[AnyOperator](OperatorRequest)

_PACKS: PackRegistry | None = None

# Hypothesis budget for this project's engine tests: modest by default (CI), more on demand.
EXAMPLES = int(os.environ.get("TELESAFE_HYPOTHESIS_EXAMPLES", "60"))


def shipped_packs() -> PackRegistry:
    """The shipped rules/ packs, loaded once per test session."""
    global _PACKS
    if _PACKS is None:
        _PACKS = PackRegistry.from_dir()
    return _PACKS


class Driver:
    """Feeds one engine, keeps every decision, and never lets a deadline go unticked."""

    def __init__(
        self,
        packs: PackRegistry | None = None,
        config: EngineConfig | None = None,
        pid: str = "P1",
    ) -> None:
        self.packs = packs or shipped_packs()
        self.engine = Engine(self.packs, config or EngineConfig(monitor_id="test-monitor"))
        self.clock = FakeClock()
        self.pid = pid
        self.seqs: dict[tuple[str, str], int] = {}
        self.offsets: dict[tuple[str, str], int] = {}  # site clock minus UTC, ns
        self.decisions: list[Decision] = []
        self._requests = 0

    # -- time ----------------------------------------------------------------------------

    def now(self) -> Instant:
        return self.clock.now()

    @property
    def mono(self) -> int:
        return self.clock.now().mono_ns

    def advance_ns(self, ns: int) -> list[Decision]:
        """Move the clock forward, ticking the engine at every deadline on the way."""
        target = self.mono + ns
        out: list[Decision] = []
        nd = self.engine.next_deadline()
        while nd is not None and nd <= target:
            if nd > self.mono:
                self.clock.set_mono(nd)
            out.extend(self.engine.tick(self.clock.now()))
            nd = self.engine.next_deadline()
        self.clock.set_mono(target)
        self.decisions.extend(out)
        return out

    def advance(self, ms: float) -> list[Decision]:
        return self.advance_ns(round(ms * MS))

    def until(self, mono_ns: int) -> list[Decision]:
        return self.advance_ns(mono_ns - self.mono)

    # -- records ---------------------------------------------------------------------------

    def record(
        self,
        type_: str,
        site: str,
        pid: str | None = None,
        seq: int | None = None,
        sent_at: int | None = None,
        age_ms: float = 0.0,
        **fields: Any,
    ) -> AnyTelemetry:
        """Build an ICD §3 record. seq: next for (pid, site) unless given (the counter then
        continues from it). sent_at: the site's clock now (UTC + its offset) minus age_ms."""
        pid = pid or self.pid
        k = (pid, site)
        if seq is None:
            seq = self.seqs.get(k, 0)
        self.seqs[k] = max(self.seqs.get(k, 0), seq + 1)
        if sent_at is None:
            sent_at = self.now().utc_ns + self.offsets.get(k, 0) - round(age_ms * MS)
        value = {
            "v": 1,
            "type": type_,
            "procedure_id": pid,
            "site": site,
            "seq": seq,
            "sent_at": sent_at,
            **fields,
        }
        return _TELEMETRY.validate_python(value)

    def feed(self, rec: AnyTelemetry) -> list[Decision]:
        out = self.engine.on_telemetry(rec, self.now())
        self.decisions.extend(out)
        return out

    def send(self, type_: str, site: str, **kw: Any) -> list[Decision]:
        return self.feed(self.record(type_, site, **kw))

    def start(self, site: str = "console", policy: str | None = None, **kw: Any) -> list[Decision]:
        extra = {} if policy is None else {"policy": policy}
        return self.send(
            "procedure_start",
            site,
            surgeon_id="dr-who",
            robot={"model": "r1", "serial": "s-1"},
            arms=["psm1", "psm2", "psm3", "ecm"],
            **extra,
            **kw,
        )

    def heartbeat(
        self, site: str, offset_ns: int | None = None, state: str = "operating", **kw: Any
    ) -> list[Decision]:
        pid = kw.get("pid") or self.pid
        if offset_ns is not None:
            self.offsets[(pid, site)] = offset_ns
        off = self.offsets.get((pid, site), 0)
        return self.send(
            "heartbeat",
            site,
            state=state,
            clock={"source": "ptp", "offset_ns": off, "max_error_ns": 1000},
            **kw,
        )

    def heartbeats(self, **kw: Any) -> list[Decision]:
        return self.heartbeat("console", **kw) + self.heartbeat("robot", **kw)

    def latency(self, channel: str, samples: list[float], **kw: Any) -> list[Decision]:
        site = "robot" if channel == "control" else "console"
        return self.send("latency", site, channel=channel, samples_ms=samples, **kw)

    def link(
        self, site: str = "robot", jitter: float = 1.0, loss: float = 0.0, **kw: Any
    ) -> list[Decision]:
        return self.send(
            "link", site, rtt_ms=48.0, jitter_ms=jitter, loss_ratio=loss, window_ms=1000, **kw
        )

    def kinematics(self, arm: str, samples: list[dict[str, Any]], **kw: Any) -> list[Decision]:
        return self.send("kinematics", "robot", arm=arm, samples=samples, **kw)

    def ack(self, command_id: str, result: str = "safe_stopped", **kw: Any) -> list[Decision]:
        return self.send(
            "safe_stop_ack",
            "robot",
            command_id=command_id,
            result=result,
            at=self.now().utc_ns,
            **kw,
        )

    def end(self, site: str = "console", reason: str = "completed", **kw: Any) -> list[Decision]:
        return self.send("procedure_end", site, reason=reason, **kw)

    def operator(self, value: dict[str, Any]) -> list[Decision]:
        req = _OPERATOR.validate_python({"v": 1, "procedure_id": self.pid, **value})
        out = self.engine.on_operator(req, self.now())
        self.decisions.extend(out)
        return out

    def rearm(
        self,
        operator_id: str = "op-1",
        pid: str | None = None,
        command_id: str | None = None,
        request_id: str | None = None,
        age_ms: float = 0.0,
        type_: str = "rearm_request",
    ) -> list[Decision]:
        """An ICD 1.1 §5.1 request (or §5.3 with type_="latch_close"). By default it names
        the procedure's current latch and a fresh request id, as `telesafe rearm` does."""
        pid = pid or self.pid
        if command_id is None:
            proc = self.engine.procedures.get(pid)
            latch = None if proc is None else proc.latch.current
            command_id = "no-latch" if latch is None else latch.command.command_id
        return self.operator(
            {
                "type": type_,
                "procedure_id": pid,
                "operator_id": operator_id,
                "reason": "checked the link",
                "requested_at": self.now().utc_ns - round(age_ms * MS),
                "command_id": command_id,
                "request_id": request_id or self.next_request_id(),
            }
        )

    def next_request_id(self) -> str:
        """A fresh request id, the same sequence in every run (replays stay comparable)."""
        self._requests += 1
        return str(uuid.UUID(int=self._requests))

    def close_latch(self, operator_id: str = "op-1", **kw: Any) -> list[Decision]:
        return self.rearm(operator_id, type_="latch_close", **kw)

    # -- scenarios -----------------------------------------------------------------------

    def healthy(
        self, ms: float, step_ms: float = 20.0, each: Callable[[], object] | None = None
    ) -> list[Decision]:
        """Both sites heartbeat every step_ms for ms; `each` runs after every beat."""
        out: list[Decision] = []
        n = round(ms / step_ms)
        for _ in range(n):
            out += self.advance(step_ms)
            out += self.heartbeats()
            if each is not None:
                each()
        return out

    def armed(self, policy: str | None = None) -> None:
        """A started procedure with both sites heartbeating: state 'armed', no warnings."""
        self.start(policy=policy)
        self.heartbeats()
        self.healthy(100)
        assert self.state() == "armed", self.state()

    # -- queries ---------------------------------------------------------------------------

    def state(self, pid: str | None = None) -> str:
        proc = self.engine.procedures.get(pid or self.pid)
        return "closed" if proc is None else proc.state

    def proc(self, pid: str | None = None) -> Any:
        return self.engine.procedures[pid or self.pid]

    def snapshot(self, pid: str | None = None) -> ProcedureSnapshot:
        """The procedure as `/status` shows it now."""
        return self.engine.snapshot(self.now())[pid or self.pid]

    def status(self, pid: str | None = None) -> str:
        """The status its monitor_heartbeat carries now (ICD §4.2)."""
        return dict(self.engine.statuses())[pid or self.pid]


def events(decisions: Iterable[Decision], kind: str | None = None) -> list[Event]:
    return [d for d in decisions if isinstance(d, Event) and (kind is None or d.kind == kind)]


def commands(decisions: Iterable[Decision]) -> list[SendCommand]:
    return [d for d in decisions if isinstance(d, SendCommand)]


def safe_stops(decisions: Iterable[Decision]) -> list[SafeStop]:
    return [c.command for c in commands(decisions) if isinstance(c.command, SafeStop)]


def kinds(decisions: Iterable[Decision]) -> list[str]:
    return [d.kind for d in events(decisions)]


def warnings_raised(decisions: Iterable[Decision], rule: str | None = None) -> list[Event]:
    evs = events(decisions, "warning_raised")
    return [e for e in evs if rule is None or e.data["rule"] == rule]


def trips(decisions: Iterable[Decision], rule: str | None = None) -> list[Event]:
    evs = events(decisions, "safe_stop_issued")
    return [e for e in evs if rule is None or e.data["rule"] == rule]
