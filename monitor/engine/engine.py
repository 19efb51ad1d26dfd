"""The rules engine: routes records to procedures and runs their timers.

Pure by construction: every method takes the current `Instant` and returns decisions
(`SendCommand`, `Event`, `PublishLatch`, in the order they must be acted on). Drivers (the
Kafka service, `telesafe replay`, tests) own the clock and call `tick()` at
`next_deadline()`, so a deadline fires even when no further record arrives.

The driver's contract, for every method that takes `now`:
- `now.mono_ns` never goes backwards between calls (the engine keeps one timeline);
- before handing over a record at `now`, the driver has called `tick` at every
  `next_deadline()` at or before `now`: a timer then fires before a record heard after
  it, exactly as in a replay;
- the same inputs at the same instants give the same decisions, byte for byte (command
  ids included), so a replay reproduces a live run.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from monitor.engine.clock import MS, Instant
from monitor.engine.decisions import Decision, Event, PublishLatch
from monitor.engine.latch_state import LatchState
from monitor.engine.procedure import ProcedureMonitor
from monitor.engine.requests import request_fields
from monitor.events import EventKind as K
from monitor.icd.models import AnyOperator, AnyTelemetry, MonitorStatus, Note, ProcedureStart
from monitor.policy.loader import PackRegistry
from monitor.snapshot import ProcedureSnapshot


@dataclass(frozen=True)
class EngineConfig:
    """Settings of one engine (one per partition number in the service)."""

    monitor_id: str = "telesafe-1"  # stamped on commands; part of every command id
    # None: any operator id may re-arm (development default, announced at start-up).
    operators: frozenset[str] | None = None
    summary_interval_ms: float = 1000.0
    ended_memory: int = 10_000  # ended procedure ids remembered to ignore late records
    request_memory: int = 100_000  # request ids remembered (also pruned by age)


class Engine:
    """Every procedure of one partition number (one shard), and their timers.

    `procedures` maps the procedures in progress to their monitors; read it to list them,
    never to change them (`release` and the engine itself do)."""

    def __init__(self, packs: PackRegistry, config: EngineConfig | None = None) -> None:
        self.packs = packs
        self.config = config or EngineConfig()
        self.procedures: dict[str, ProcedureMonitor] = {}
        # Ended procedure ids -> each site's last seq, to ignore late records (ICD §7 duplicates).
        self._ended: OrderedDict[str, dict[str, int | None]] = OrderedDict()
        self._timers: list[tuple[int, int, str]] = []
        self._registered: dict[str, int] = {}
        self._timer_seq = 0
        self.late_records = 0
        self._summary_ns = int(self.config.summary_interval_ms * MS)
        # ICD 1.1 §5.1: request ids ever seen -> requested_at, pruned once too old to pass.
        self._seen_requests: OrderedDict[str, int] = OrderedDict()
        self._request_cap = self.config.request_memory

    # -- input -----------------------------------------------------------------------------

    def on_telemetry(self, rec: AnyTelemetry, now: Instant) -> list[Decision]:
        """Judge a telemetry record (ICD §3) heard at `now`; returns what to publish and
        record, commands first.

        `rec` has passed ICD §6 validation (decode and signature); `now` is when the monitor
        heard it (the broker's append time in the service, `received_at` in a replay) and
        satisfies the module's driver contract. A record of an unknown procedure opens it:
        a procedure_start always, any other record only when fresh (within the default
        pack's `stale_after_ms`), and never a straggler of a procedure that has ended.
        A duplicate (seq at or below the site's last) is counted and otherwise ignored."""
        pid = rec.procedure_id
        proc = self.procedures.get(pid)
        out: list[Decision] = []
        if proc is None:
            proc = self._open(rec, now, out)
            if proc is None:
                return out
        elif isinstance(rec, ProcedureStart) and not proc.started:
            self._choose_pack(proc, rec, now, out)
        out.extend(proc.on_telemetry(rec, now))
        self._after(proc, out, now)
        return out

    def _open(
        self, rec: AnyTelemetry, now: Instant, out: list[Decision]
    ) -> ProcedureMonitor | None:
        pid = rec.procedure_id
        if pid in self._ended:
            last = self._ended[pid].get(rec.site)
            if not isinstance(rec, ProcedureStart) or (last is not None and rec.seq <= last):
                self.late_records += 1  # a straggler after procedure_end must not reopen it
                return None
        if not isinstance(rec, ProcedureStart):
            # Adopt a procedure we never saw start (monitor restart, or the other site's
            # start still in flight on its own topic), but only on fresh evidence.
            age_ns = now.utc_ns - rec.sent_at
            if age_ns > int(self.packs.default.pack.stale_after_ms * MS):
                self.late_records += 1
                return None
        self._ended.pop(pid, None)
        proc = ProcedureMonitor(
            pid, self.packs.default, now, self.config.monitor_id, self._summary_ns
        )
        self.procedures[pid] = proc
        out.append(_opened(proc, rec.type, rec.site, now))
        if isinstance(rec, ProcedureStart):
            self._choose_pack(proc, rec, now, out)
        return proc

    def _choose_pack(
        self, proc: ProcedureMonitor, rec: ProcedureStart, now: Instant, out: list[Decision]
    ) -> None:
        pack = self.packs.get(rec.policy)
        if pack is None:
            out.append(
                Event(
                    K.POLICY_UNKNOWN,
                    proc.procedure_id,
                    now.mono_ns,
                    now.utc_ns,
                    {
                        "requested": rec.policy,
                        "applied": self.packs.default.name,
                        "reason": f"policy pack {rec.policy!r} is not loaded; "
                        "the default pack applies",
                    },
                )
            )
            pack = self.packs.default
        proc.apply_pack(pack, now, out)

    def on_operator(self, req: AnyOperator, now: Instant) -> list[Decision]:
        """Act on an operator request (ICD §5) heard at `now`; every outcome is an event.

        `req` has passed ICD §6 validation; `now` satisfies the module's driver contract.
        A re-arm or latch-close is acted on at most once: its request_id is remembered
        whatever the outcome, and must name the latch it clears (ICD 1.1 §5.1, §5.3). It
        is accepted only from an operator in `EngineConfig.operators` (when set), while
        fresh by the monitor's UTC clock, and, for a re-arm, when every rule family's
        `health` is clear; an accepted re-arm returns a `rearm` command."""
        proc = self.procedures.get(req.procedure_id)
        if isinstance(req, Note):
            return [
                Event(
                    K.OPERATOR_NOTE,
                    req.procedure_id,
                    now.mono_ns,
                    now.utc_ns,
                    {
                        "operator_id": req.operator_id,
                        "text": req.text,
                        "known_procedure": proc is not None,
                    },
                )
            ]
        seen = self._remember_request(req.request_id, req.requested_at, now)
        if proc is not None and req.request_id in proc.latch.seen_requests:
            seen = True
        if proc is None:
            kind = K.LATCH_CLOSE_REJECTED if req.type == "latch_close" else K.REARM_REJECTED
            if req.procedure_id in self._ended:
                why = "procedure has ended and its latch (if any) was closed: nothing to clear"
            else:
                why = "procedure is not monitored by this instance (no record of it arrived here)"
            return [
                Event(
                    kind,
                    req.procedure_id,
                    now.mono_ns,
                    now.utc_ns,
                    {**request_fields(req), "rejected_because": [why]},
                )
            ]
        ops = self.config.operators
        out = proc.on_latch_request(req, ops is None or req.operator_id in ops, seen, now)
        self._after(proc, out, now)
        return out

    def _remember_request(self, request_id: str, requested_at: int, now: Instant) -> bool:
        """Remember a request id; True if it was seen before. Ids too old to be accepted
        any more are forgotten (they are refused as stale anyway)."""
        seen = self._seen_requests
        pol = self.packs.default.pack.operator
        horizon = now.utc_ns - int((pol.request_max_age_ms + pol.request_max_future_ms) * MS)
        while seen and (next(iter(seen.values())) < horizon or len(seen) > self._request_cap):
            seen.popitem(last=False)
        if request_id in seen:
            return True
        seen[request_id] = requested_at
        return False

    def on_rejected(self, procedure_id: str | None, site: str | None) -> None:
        """Count a dead-lettered record against its procedure (no decision, no liveness).
        Unknown procedures and sites (the record could not say) are ignored."""
        proc = self.procedures.get(procedure_id) if procedure_id else None
        if proc is not None and site in ("console", "robot"):
            proc.on_rejected("console" if site == "console" else "robot")

    # -- ownership (scale-out) -------------------------------------------------------------

    def restore(self, state: LatchState, now: Instant) -> list[Decision]:
        """Adopt a latched procedure from the latch-state topic after a partition moved here.

        The procedure stays latched with the same command id, re-sent at once (and every
        resend interval) while unacknowledged; its seen request ids stay refused. A
        procedure already latched here keeps its own latch. Precondition: `state` is the
        newest value of its procedure on `telesafe.state` (a tombstone means there is
        nothing to restore, so it never reaches here), and `now` satisfies the module's
        driver contract.
        """
        pid = state.procedure_id
        out: list[Decision] = []
        for request_id, requested_at in state.seen_request_ids.items():
            self._remember_request(request_id, requested_at, now)
        proc = self.procedures.get(pid)
        if proc is None:
            self._ended.pop(pid, None)
            pack = self.packs.get(state.pack) or self.packs.default
            proc = ProcedureMonitor(pid, pack, now, self.config.monitor_id, self._summary_ns)
            self.procedures[pid] = proc
            out.append(_opened(proc, "latch_state", None, now))
        if proc.latch.current is None:
            out.extend(proc.restore_latch(state, now))
        self._after(proc, out, now)
        return out

    def release(self, procedure_id: str, now: Instant) -> list[Decision]:
        """Forget a procedure whose partition moved to another instance (it carries on
        there); returns its `procedure_released` event (nothing for an unknown id). Its
        latch is not tombstoned: the new owner restores it from `telesafe.state`."""
        proc = self.procedures.pop(procedure_id, None)
        self._registered.pop(procedure_id, None)
        if proc is None:
            return []
        return [
            Event(
                K.PROCEDURE_RELEASED,
                procedure_id,
                now.mono_ns,
                now.utc_ns,
                {"state": proc.state, "latched": proc.latch.current is not None},
            )
        ]

    # -- timers ----------------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        """The monitor-clock ns of the earliest timer of any procedure (None: none is
        pending; the next record may add one). Call `tick` when the clock reaches it, and
        ask again after every call: records, requests and ticks move it."""
        timers = self._timers
        while timers:
            when, _, pid = timers[0]
            if self._registered.get(pid) == when:
                return when
            heapq.heappop(timers)  # superseded entry
        return None

    def tick(self, now: Instant) -> list[Decision]:
        """Run every timer due at or before `now`, in deadline order, each evaluated at its
        own deadline (not at `now`): a late tick decides what a punctual one would have,
        with the same command ids. A tick with nothing due returns nothing.

        Precondition: no record or request heard after the earliest due deadline has been
        handed over yet (the driver contract)."""
        out: list[Decision] = []
        timers = self._timers
        while timers and timers[0][0] <= now.mono_ns:
            when, _, pid = heapq.heappop(timers)
            if self._registered.get(pid) != when:
                continue
            del self._registered[pid]
            proc = self.procedures.get(pid)
            if proc is None:
                continue
            # Evaluate at the deadline itself, not whenever the driver got round to it: a live
            # monitor then decides exactly what a replay decides (same ids, same values).
            at = now.at_mono(when)
            out.extend(proc.tick(at))
            self._after(proc, out, at)
        return out

    def _after(self, proc: ProcedureMonitor, out: list[Decision], now: Instant) -> None:
        pid = proc.procedure_id
        latch = proc.latch
        if latch.changed and not proc.closed:
            latch.changed = False
            out.append(PublishLatch(pid, proc.latch_state(), now.mono_ns))
        if proc.closed:
            del self.procedures[pid]
            self._registered.pop(pid, None)
            self._ended[pid] = proc.last_seqs()
            if len(self._ended) > self.config.ended_memory:
                self._ended.popitem(last=False)
            data: dict[str, Any] = {"final_state": proc.state}
            if latch.current is not None:  # acknowledged: it closes with its procedure (§7)
                data["closed_latch"] = {
                    "command_id": latch.current.command.command_id,
                    "ack_result": latch.current.ack_result,
                }
            out.append(Event(K.PROCEDURE_CLOSED, pid, now.mono_ns, now.utc_ns, data))
            # A tombstone: no instance may ever restore a latch of a closed procedure.
            out.append(PublishLatch(pid, None, now.mono_ns))
            return
        nd = proc.next_deadline()
        if nd is None:
            return
        reg = self._registered.get(pid)
        # Keep only the earliest deadline in the heap; a later one is found when it fires.
        if reg is None or nd < reg:
            self._registered[pid] = nd
            self._timer_seq += 1
            heapq.heappush(self._timers, (nd, self._timer_seq, pid))

    # -- views -----------------------------------------------------------------------------

    def statuses(self) -> list[tuple[str, MonitorStatus]]:
        """Procedures owed a monitor_heartbeat (ICD §4.2) and the status to send: every
        procedure in progress, including an ended one whose safe-stop is unacknowledged."""
        return [(pid, p.status()) for pid, p in self.procedures.items()]

    def snapshot(self, now: Instant) -> dict[str, ProcedureSnapshot]:
        """Each procedure's state and signals at `now`, for gauges and `/status`. Changes
        nothing: a view taken at any time leaves every later decision as it was."""
        return {pid: p.snapshot(now) for pid, p in self.procedures.items()}


def _opened(proc: ProcedureMonitor, by: str, site: str | None, now: Instant) -> Event:
    lp = proc.loaded
    return Event(
        K.PROCEDURE_OPENED,
        proc.procedure_id,
        now.mono_ns,
        now.utc_ns,
        {
            "by": by,
            "site": site,
            "policy": {"pack": lp.name, "version": lp.version, "hash": lp.sha256},
        },
    )
