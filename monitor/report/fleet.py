"""One report of a procedure from the ledgers of several monitor instances.

When an instance dies (or a rebalance moves a partition), another takes its procedures
over and records them from then on in its own ledger. `build_fleet_report` reads every
verified ledger given (or every copy in the governance archive), and:

* merges the procedure's entries in time order (each ledger's own order is kept);
* shows once what two instances recorded for the same input record (same `source`,
  `source_n` and event: the new owner re-reads what the old one had not committed);
* attributes every row to the instance that recorded it;
* marks each hand-over: who stopped recording, who took over and how (`procedure_opened`
  `by`), whether the old owner released it, the longest gap in supervision the record
  allows, and whether the latch in force was carried across (`latch_restored`);
* lists every ledger's covering checkpoint, and proves each safe-stop and its
  acknowledgement in the ledger that recorded it (RFC 9162 inclusion proofs, checked);
* refuses a procedure whose history has a hole it cannot explain (`HistoryHole`): a
  takeover with a latch from a monitor whose record of the procedure is in no ledger given,
  or a latch restored that no given ledger shows being issued.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from monitor.audit.checkpoint import CheckpointError, verify_checkpoint
from monitor.audit.merkle import ProofError, leaf_hash, verify_inclusion
from monitor.audit.proof import LedgerProofs, ProofUnavailable
from monitor.audit.verified import Entry, VerifiedLedger
from monitor.report.build import assemble, covering_checkpoint, list_procedures, pick_run
from monitor.report.model import (
    Handover,
    InstanceInfo,
    ProcedureListing,
    ProcedureReport,
    ProofInfo,
    ReportError,
    StopEpisode,
    TimelineItem,
    UnknownProcedure,
    fmt_utc,
    opt_str,
)
from monitor.report.timeline import build_timeline

# A takeover slower than this (the documented bound, docs/architecture.md) is flagged.
TAKEOVER_BOUND_S = 12.0
OPENING = "procedure_opened"
CLOSING = "procedure_closed"


class HistoryHole(ReportError):
    """The procedure's history has a hole the given ledgers cannot explain."""

    def __init__(self, procedure_id: str, holes: list[str]) -> None:
        self.holes = holes
        lines = "\n".join(f"  - {h}" for h in holes)
        super().__init__(
            f"the history of procedure {procedure_id!r} has a hole the given ledgers cannot "
            f"explain:\n{lines}\n(give the missing ledgers, or the archive; --allow-holes "
            f"writes the report anyway, with the holes marked)"
        )


@dataclass
class _Ledger:
    vl: VerifiedLedger
    label: str
    mine: list[Entry] = field(default_factory=list)  # this procedure's entries, in order
    _proofs: LedgerProofs | None = None

    def proofs(self) -> LedgerProofs:
        if self._proofs is None:
            self._proofs = LedgerProofs(self.vl.path)
        return self._proofs


@dataclass(frozen=True)
class _Rec:
    """An entry of the merged history and the ledger (position in the input) it is from."""

    e: Entry
    k: int


def build_fleet_report(
    ledgers: Sequence[VerifiedLedger],
    procedure_id: str,
    *,
    run: int | None = None,
    rules_dirs: Sequence[str | Path] = (),
    source: str = "",
    allow_holes: bool = False,
) -> ProcedureReport:
    """The report of run `run` (1-based, default the latest) of `procedure_id` across the
    verified `ledgers` (one per instance). `source` says where they came from (shown as the
    report's ledger). Raises UnknownProcedure if no ledger holds the id, HistoryHole if its
    history has an unexplained hole (unless `allow_holes`: then the holes are in the
    report), ReportError for a bad `run` or the same origin given twice."""
    if not ledgers:
        raise ReportError("no ledger given")
    led = _inputs(ledgers, procedure_id)
    if not any(x.mine for x in led):
        raise UnknownProcedure(procedure_id, _listing(ledgers))
    merged = list(
        heapq.merge(*(_recs(x.mine, k) for k, x in enumerate(led)), key=lambda r: r.e.t_utc_ns)
    )
    kept, dups, divergent = _dedupe(merged)
    orphans, runs = _runs(kept)
    run = pick_run(procedure_id, len(runs), run, "the ledgers given")
    recs = runs[run - 1]
    es = [r.e for r in recs]
    notes: list[str] = []
    if len(runs) > 1:
        notes.append(
            f"This procedure id was opened and closed {len(runs)} times in the ledgers given; "
            f"this report covers run {run}. Use --run to pick another."
        )
    if orphans and run == 1:
        kinds = ", ".join(sorted({r.e.event for r in orphans}))
        notes.append(
            f"{len(orphans)} entr{'y' if len(orphans) == 1 else 'ies'} for this id "
            f"precede its first opening ({kinds}): recorded before this run began, not "
            f"part of this report."
        )
    handovers, holes, flags = _handovers(recs, led)
    in_run = {id(r.e) for r in recs}
    run_dups = [(r, orig) for r, orig in dups if id(orig.e) in in_run]
    if run_dups:
        by = Counter(led[r.k].label for r, _ in run_dups)
        notes.append(
            f"{len(run_dups)} entr{'y was' if len(run_dups) == 1 else 'ies were'} recorded "
            f"twice for the same input record (an instance re-read what another had not "
            f"committed when it took over) and {'is' if len(run_dups) == 1 else 'are'} shown "
            f"once, under the first record: "
            + ", ".join(f"{n} of {label}" for label, n in sorted(by.items()))
            + "."
        )
    if divergent:
        notes.append(
            f"{divergent} input record(s) led two instances to different decisions; both are shown."
        )
    notes += flags
    for x in led:
        if x.vl.uncovered:
            notes.append(
                f"The ledger of {x.label} holds {x.vl.uncovered} entr"
                f"{'y' if x.vl.uncovered == 1 else 'ies'} after its latest signed checkpoint "
                f"(size {x.vl.covered}); they are not signed yet and are not used."
            )
    if holes and not allow_holes:
        raise HistoryHole(procedure_id, holes)

    timeline = _timeline(recs, led, handovers)
    instances = _instances(led, recs, run_dups)
    last = led[recs[-1].k]
    report = assemble(
        procedure_id,
        es,
        timeline,
        rules_dirs=rules_dirs,
        notes=notes,
        restarts=_restart_note(recs, led),
        run=run,
        runs=len(runs),
        ledger_path=source or f"{len(led)} ledgers",
        origin=", ".join(x.vl.origin for x in led if x.mine) or led[0].vl.origin,
        checkpoint=covering_checkpoint(last.vl, recs[-1].e.index),
        verified_entries=sum(x.vl.result.entries for x in led),
        verified_checkpoints=sum(x.vl.result.checkpoints for x in led),
        latest_checkpoint_size=last.vl.covered,
        uncovered_entries=sum(x.vl.uncovered for x in led),
        verify_warnings=[f"{x.label}: {w}" for x in led for w in x.vl.result.warnings],
        instances=instances,
        handovers=handovers,
        holes=holes,
        duplicates=len(run_dups),
    )
    _attribute(report.stops, recs, led)
    report.monitor_ids = list(dict.fromkeys(led[r.k].label for r in recs))
    return report


# --- inputs -------------------------------------------------------------------------------


def _inputs(ledgers: Sequence[VerifiedLedger], procedure_id: str) -> list[_Ledger]:
    origins = Counter(vl.origin for vl in ledgers)
    twice = sorted(o for o, n in origins.items() if n > 1)
    if twice:
        raise ReportError(f"origin {twice[0]} is given twice; give each instance's ledger once")
    # In origin order, so that the report does not depend on the order they were given in
    # (equal timestamps of two instances merge in this order).
    ledgers = sorted(ledgers, key=lambda vl: vl.origin)
    labels = [_label(vl) for vl in ledgers]
    clash = {lab for lab, n in Counter(labels).items() if n > 1}
    out = []
    for vl, lab in zip(ledgers, labels, strict=True):
        x = _Ledger(vl, vl.origin if lab in clash else lab)
        x.mine = [e for e in vl.entries if e.procedure_id == procedure_id]
        out.append(x)
    return out


def _label(vl: VerifiedLedger) -> str:
    """The monitor id that wrote the ledger (the one its entries carry most)."""
    ids = Counter(e.monitor_id for e in vl.entries if e.monitor_id)
    if ids:
        return ids.most_common(1)[0][0]
    return vl.origin.rsplit("/", 1)[-1]


def _listing(ledgers: Sequence[VerifiedLedger]) -> list[ProcedureListing]:
    seen: dict[str, ProcedureListing] = {}
    for vl in ledgers:
        for p in list_procedures(vl):
            q = seen.get(p.procedure_id)
            seen[p.procedure_id] = (
                p
                if q is None
                else ProcedureListing(
                    p.procedure_id,
                    max(p.runs, q.runs),
                    p.entries + q.entries,
                    min(p.first_utc_ns, q.first_utc_ns),
                    max(p.last_utc_ns, q.last_utc_ns),
                )
            )
    return sorted(seen.values(), key=lambda p: (p.first_utc_ns, p.procedure_id))


def _recs(es: list[Entry], k: int) -> Iterator[_Rec]:
    return (_Rec(e, k) for e in es)


def _dedupe(merged: list[_Rec]) -> tuple[list[_Rec], list[tuple[_Rec, _Rec]], int]:
    """(kept, (duplicate, the record it repeats), inputs decided differently)."""
    first: dict[tuple[str, int, str], _Rec] = {}
    decided: dict[tuple[str, int], set[str]] = {}
    kept: list[_Rec] = []
    dups: list[tuple[_Rec, _Rec]] = []
    for r in merged:
        e = r.e
        if e.source is None or e.source_n is None:
            kept.append(r)
            continue
        key = (e.source, e.source_n, e.event)
        if key in first:
            dups.append((r, first[key]))
            continue
        first[key] = r
        decided.setdefault((e.source, e.source_n), set()).add(e.event)
        kept.append(r)
    divergent = sum(1 for events in decided.values() if len(events) > 1)
    return kept, dups, divergent


def _runs(kept: list[_Rec]) -> tuple[list[_Rec], list[list[_Rec]]]:
    """(entries before the first opening, runs). Across instances a new run starts at an
    opening after the procedure was closed; an opening by another instance (a takeover)
    or after a restart continues the run. Without any opening, everything is one run."""
    first = next((i for i, r in enumerate(kept) if r.e.event == OPENING), None)
    if first is None:
        return [], [kept]
    runs: list[list[_Rec]] = []
    closed = True
    for r in kept[first:]:
        if r.e.event == OPENING and closed:
            runs.append([])
            closed = False
        runs[-1].append(r)
        if r.e.event == CLOSING:
            closed = True
    return kept[:first], runs


# --- hand-overs and holes -------------------------------------------------------------------


def _handovers(recs: list[_Rec], led: list[_Ledger]) -> tuple[list[Handover], list[str], list[str]]:
    """(hand-overs, unexplained holes, flags) of one run's merged entries."""
    handovers: list[Handover] = []
    holes: list[str] = []
    flags: list[str] = []
    pid = recs[0].e.procedure_id
    owner: int | None = None
    latched: str | None = None
    issued: dict[str, int] = {}  # command id -> ledger that issued it
    seen_monitors: set[str] = set()
    overlap: Counter[tuple[str, str]] = Counter()
    for i, r in enumerate(recs):
        e, k = r.e, r.k
        if e.event == OPENING:
            if owner is None:
                if str(e.data.get("by")) == "latch_state":
                    holes.append(
                        f"{led[k].label} took {pid} over at {fmt_utc(e.t_utc_ns)} with a latch "
                        f"(restored from telesafe.state), but no ledger given holds its history "
                        f"before then"
                    )
            else:
                h = _handover(recs, i, owner, latched, led)
                handovers.append(h)
                if h.gap_s is not None and h.gap_s > TAKEOVER_BOUND_S and not h.restart:
                    flags.append(
                        f"Supervision gap: up to {h.gap_s:,.1f} s passed between the last "
                        f"record of {h.from_instance} and the takeover by {h.to_instance} at "
                        f"{fmt_utc(h.t_utc_ns)} (the documented bound is {TAKEOVER_BOUND_S:g} s)."
                    )
                if h.latch_carried is False:
                    flags.append(
                        f"LATCH NOT CARRIED ACROSS: safe-stop {h.latch_before} was latched when "
                        f"{h.from_instance} stopped recording, but {h.to_instance} did not "
                        f"restore it when it took over at {fmt_utc(h.t_utc_ns)}."
                    )
            owner = k
        elif owner is None:
            owner = k
        elif k != owner:
            overlap[(led[owner].label, led[k].label)] += 1
        if e.monitor_id:
            seen_monitors.add(e.monitor_id)
        cid = opt_str(e.data.get("command_id"))
        if e.event == "safe_stop_issued" and cid:
            issued.setdefault(cid, k)
            latched = cid
        elif e.event in ("rearm_accepted", "latch_closed"):  # cleared, or retired (ICD §5.3)
            latched = None
        elif e.event == "latch_restored" and cid:
            prev = opt_str(e.data.get("previous_monitor"))
            if cid not in issued:
                who = f" (issued by monitor {prev})" if prev else ""
                holes.append(
                    f"{led[k].label} restored the latch of safe-stop {cid}{who} at "
                    f"{fmt_utc(e.t_utc_ns)}, but no ledger given records that safe-stop "
                    f"being issued"
                )
            latched = cid
        elif e.event == CLOSING:
            latched = None
    for (a, b), n in sorted(overlap.items()):
        flags.append(
            f"{a} and {b} both recorded {pid} for a while: {n} entr{'y' if n == 1 else 'ies'} "
            f"of {b} while {a} was supervising it (an instance that had lost its partitions "
            f"but not yet noticed)."
        )
    if not any(r.e.event == CLOSING for r in recs):
        flags.append(
            f"The record ends at {fmt_utc(recs[-1].e.t_utc_ns)} with {led[recs[-1].k].label}, "
            f"without the procedure being closed: it was still running, or the ledger of an "
            f"instance that supervised it later is not among those given."
        )
    return handovers, holes, flags


def _handover(
    recs: list[_Rec], i: int, owner: int, latched: str | None, led: list[_Ledger]
) -> Handover:
    r = recs[i]
    new, old = led[r.k], led[owner]
    t = r.e.t_utc_ns
    before = [x.e for x in recs[:i] if x.k == owner]
    released = bool(before) and before[-1].event == "procedure_released"
    # The previous owner's last sign of life: any entry it recorded before the takeover
    # (for a restart, in its previous boot).
    alive = [e.t_utc_ns for e in old.vl.entries if e.t_utc_ns <= t and e.boot_id != r.e.boot_id]
    restored: str | None = None
    for x in recs[i + 1 :]:
        if x.e.event == OPENING:
            break
        if x.k == r.k and x.e.event == "latch_restored":
            restored = opt_str(x.e.data.get("command_id"))
            break
    return Handover(
        t_utc_ns=t,
        to_instance=new.label,
        to_index=r.e.index,
        opened_by=str(r.e.data.get("by")),
        from_instance=old.label,
        released=released,
        last_from_utc_ns=before[-1].t_utc_ns if before else None,
        alive_until_utc_ns=max(alive) if alive else None,
        latch_before=latched,
        latch_restored=restored,
        restart=r.k == owner,
    )


def _restart_note(recs: list[_Rec], led: list[_Ledger]) -> str:
    boots: dict[int, set[str]] = {}
    for r in recs:
        if r.e.boot_id:
            boots.setdefault(r.k, set()).add(r.e.boot_id)
    again = [f"{led[k].label} ({len(b)} boot ids)" for k, b in sorted(boots.items()) if len(b) > 1]
    if not again:
        return ""
    return (
        "A monitor restarted while it supervised this procedure and re-adopted it from fresh "
        "telemetry: " + ", ".join(again) + "."
    )


# --- timeline, instances, proofs ----------------------------------------------------------


def _timeline(
    recs: list[_Rec], led: list[_Ledger], handovers: list[Handover]
) -> list[TimelineItem]:
    """Each instance's rows as for one ledger (re-send folding included), merged by time,
    with a hand-over row before each takeover's opening."""
    per: list[list[TimelineItem]] = []
    for k, x in enumerate(led):
        items = build_timeline([r.e for r in recs if r.k == k])
        for it in items:
            it.instance = x.label
        per.append(items)
    merged = list(heapq.merge(*per, key=lambda it: it.t_utc_ns))
    rules = {t.command_id: t.rule for t in merged if t.event == "safe_stop_issued"}
    for t in merged:
        if t.rule is None and t.command_id in rules:
            t.rule = rules[t.command_id]
    out: list[TimelineItem] = []
    todo = {(h.to_instance, h.to_index): h for h in handovers}
    for t in merged:
        h = todo.pop((t.instance or "", t.index), None) if t.event == OPENING else None
        if h is not None:
            out.append(_handover_row(h))
        out.append(t)
    return out


def _handover_row(h: Handover) -> TimelineItem:
    if h.restart:
        what = f"{h.to_instance} restarted and re-adopted it"
    else:
        how = "released it" if h.released else "stopped recording (no release: it died)"
        what = f"{h.from_instance} {how}; {h.to_instance} took over"
    gap = f"; supervision gap up to {h.gap_s:,.1f} s" if h.gap_s is not None else ""
    if h.latch_carried is None:
        latch = "; no latch in force"
    elif h.latch_carried:
        latch = f"; latch {h.latch_before} carried across"
    else:
        latch = f"; LATCH {h.latch_before} NOT CARRIED ACROSS"
    return TimelineItem(
        index=h.to_index,
        t_utc_ns=h.t_utc_ns,
        event="handover",
        category="handover",
        actor=f"monitor:{h.to_instance}",
        subject=h.from_instance,
        command_id=h.latch_restored or h.latch_before,
        detail=f"{what} (opened by {h.opened_by}){gap}{latch}",
        instance=h.to_instance,
    )


def _instances(
    led: list[_Ledger], recs: list[_Rec], dups: list[tuple[_Rec, _Rec]]
) -> list[InstanceInfo]:
    out = []
    for k, x in enumerate(led):
        vl = x.vl
        mine = [r.e for r in recs if r.k == k]
        info = InstanceInfo(
            label=x.label,
            origin=vl.origin,
            ledger_path=str(vl.path),
            key_id_hex=vl.key_id_hex,
            key_history=vl.result.key_history(vl.origin),
            verified_entries=vl.result.entries,
            verified_checkpoints=vl.result.checkpoints,
            latest_checkpoint_size=vl.covered,
            uncovered_entries=vl.uncovered,
            warnings=list(vl.result.warnings),
            entries=len(mine),
            duplicates=sum(1 for r, _ in dups if r.k == k),
        )
        if mine:
            info.first_index, info.last_index = mine[0].index, mine[-1].index
            info.first_utc_ns, info.last_utc_ns = mine[0].t_utc_ns, mine[-1].t_utc_ns
            info.boots = len({e.boot_id for e in mine if e.boot_id})
            info.checkpoint = covering_checkpoint(vl, max(e.index for e in mine))
        out.append(info)
    # Those that recorded the procedure first, in the order they did; then the others.
    return sorted(out, key=lambda i: (i.first_utc_ns is None, i.first_utc_ns or 0, i.origin))


def _attribute(stops: list[StopEpisode], recs: list[_Rec], led: list[_Ledger]) -> None:
    """Each stop's instance and its acknowledgement's and re-arm's, and the inclusion proof
    of the issue and the acknowledgement in the ledger that recorded each."""
    first: dict[tuple[str, str], _Rec] = {}
    by_pos: dict[tuple[int, int], _Rec] = {}
    for r in recs:
        cid = opt_str(r.e.data.get("command_id"))
        if cid:
            first.setdefault((r.e.event, cid), r)
        by_pos.setdefault((r.e.index, r.e.t_utc_ns), r)
    for s in stops:
        issued = first.get(("safe_stop_issued", s.command_id))
        if issued is not None:
            s.instance = led[issued.k].label
            s.proofs.append(_proof("issued", led[issued.k], issued.e.index))
        if s.ack is not None:
            acked = by_pos.get((s.ack.index, s.ack.t_utc_ns))
            if acked is not None:
                s.ack.instance = led[acked.k].label
                s.proofs.append(_proof("acknowledged", led[acked.k], acked.e.index))
        if s.rearm is not None:
            rearmed = by_pos.get((s.rearm.index, s.rearm.t_utc_ns))
            if rearmed is not None:
                s.rearm.instance = led[rearmed.k].label


def _proof(what: str, x: _Ledger, index: int) -> ProofInfo:
    """The inclusion proof of entry `index` of ledger `x` in its smallest signed checkpoint
    that covers it, checked here as `telesafe audit verify-proof` checks it."""
    vl = x.vl
    size = next((s for s, _ in sorted(vl.checkpoints) if s > index), 0)
    try:
        proof = x.proofs().prove(index, size or None)
        note = str(proof["checkpoint"])
        scp = verify_checkpoint(note, vl.result.key_for(size), vl.origin)
        body = str(proof["entry"]).encode("utf-8")
        lh = bytes.fromhex(str(proof["leaf_hash"]))
        if leaf_hash(body) != lh:
            raise ProofError("the entry does not hash to the proof's leaf hash")
        verify_inclusion(index, size, lh, [bytes.fromhex(h) for h in proof["path"]], scp.root)
    except (ProofUnavailable, CheckpointError, ProofError, ValueError) as exc:
        return ProofInfo(what, x.label, vl.origin, index, size, False, str(exc), {})
    return ProofInfo(
        what,
        x.label,
        vl.origin,
        index,
        size,
        True,
        f"entry {index} is in the tree of size {size} signed by {scp.origin}/{scp.key_id.hex()}",
        proof,
    )


def stop_proofs(vl: VerifiedLedger, stops: list[StopEpisode]) -> list[ProofInfo]:
    """For a report from one ledger (`--proofs`): the proofs of each stop's issue and
    acknowledgement, attached to the stops (the page itself does not show them)."""
    x = _Ledger(vl, _label(vl))
    for s in stops:
        s.proofs.append(_proof("issued", x, s.index))
        if s.ack is not None:
            s.proofs.append(_proof("acknowledged", x, s.ack.index))
    return [p for s in stops for p in s.proofs]


__all__ = ["HistoryHole", "build_fleet_report", "stop_proofs"]
