"""Build one procedure run's `ProcedureReport` from verified ledger entries.

A procedure id can be opened more than once in one ledger (a re-used id, a monitor restart
after `procedure_end`): each `procedure_opened` starts a new *run*; a report covers one run
(the latest by default).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from monitor.audit.checkpoint import CheckpointError, verify_checkpoint
from monitor.audit.verified import Entry, VerifiedLedger
from monitor.policy.loader import LoadedPack, PolicyError, load_pack_file, rules_dir
from monitor.report.model import (
    CHANNELS,
    SITES,
    WORKSPACE_RULES,
    AckInfo,
    ChannelStats,
    CheckpointInfo,
    HeartbeatGap,
    LatencyPoint,
    PolicyInfo,
    ProcedureListing,
    ProcedureReport,
    RearmInfo,
    ReportError,
    SecurityEvent,
    SiteStats,
    StopEpisode,
    TimelineItem,
    UnknownProcedure,
    opt_str,
)
from monitor.report.timeline import build_timeline


def list_procedures(vl: VerifiedLedger) -> list[ProcedureListing]:
    """Every procedure id in the verified entries, oldest first."""
    acc: dict[str, list[Entry]] = {}
    for e in vl.entries:
        if e.procedure_id is not None:
            acc.setdefault(e.procedure_id, []).append(e)
    out = []
    for pid, es in acc.items():
        runs = sum(1 for e in es if e.event == "procedure_opened") or 1
        out.append(ProcedureListing(pid, runs, len(es), es[0].t_utc_ns, es[-1].t_utc_ns))
    return sorted(out, key=lambda p: (p.first_utc_ns, p.procedure_id))


def pick_run(procedure_id: str, n_runs: int, run: int | None, where: str) -> int:
    """The run to report (1-based): `run`, or the latest. Raises `ReportError` if out of
    range."""
    if run is None:
        return n_runs
    if not 1 <= run <= n_runs:
        raise ReportError(
            f"procedure {procedure_id!r} has {n_runs} run(s) in {where}; --run {run} "
            f"is out of range"
        )
    return run


def split_runs(entries: Sequence[Entry]) -> tuple[list[Entry], list[list[Entry]]]:
    """(entries before the first opening, runs): each `procedure_opened` starts a run."""
    orphans: list[Entry] = []
    runs: list[list[Entry]] = []
    for e in entries:
        if e.event == "procedure_opened":
            runs.append([e])
        elif runs:
            runs[-1].append(e)
        else:
            orphans.append(e)
    if not runs and orphans:  # the opening is missing (e.g. a trimmed bundle): one run
        return [], [orphans]
    return orphans, runs


def build_report(
    vl: VerifiedLedger,
    procedure_id: str,
    *,
    run: int | None = None,
    rules_dirs: Sequence[str | Path] = (),
) -> ProcedureReport:
    """The report of run `run` (1-based; default the latest) of `procedure_id` in the
    verified ledger `vl`; pack files are looked for in `rules_dirs`, then the shipped
    `rules/`. Raises `UnknownProcedure` if the id is not in `vl`, `ReportError` if `run` is
    out of range."""
    mine = [e for e in vl.entries if e.procedure_id == procedure_id]
    if not mine:
        raise UnknownProcedure(procedure_id, list_procedures(vl))
    orphans, runs = split_runs(mine)
    run = pick_run(procedure_id, len(runs), run, "the ledger")
    es = runs[run - 1]
    notes: list[str] = []
    if len(runs) > 1:
        notes.append(
            f"This procedure id was opened {len(runs)} times in the ledger; this report covers "
            f"run {run} (entries {es[0].index}–{es[-1].index}). Use --run to pick another."
        )
    if orphans and run == 1:
        kinds = ", ".join(sorted({e.event for e in orphans}))
        one = len(orphans) == 1
        notes.append(
            f"{len(orphans)} {'entry' if one else 'entries'} for this id "
            f"{'precedes' if one else 'precede'} its first opening ({kinds}, entries "
            f"{orphans[0].index}–{orphans[-1].index}): recorded before this run began, "
            f"{'it is' if one else 'they are'} not part of this report."
        )
    if vl.uncovered:
        notes.append(
            f"The ledger holds {vl.uncovered} entr{'y' if vl.uncovered == 1 else 'ies'} after "
            f"its latest signed checkpoint (size {vl.covered}); they are not signed yet and "
            f"are not used. Regenerate the report after the next checkpoint."
        )

    return assemble(
        procedure_id,
        es,
        build_timeline(es),
        rules_dirs=rules_dirs,
        notes=notes,
        run=run,
        runs=len(runs),
        ledger_path=str(vl.path),
        origin=vl.origin,
        checkpoint=covering_checkpoint(vl, es[-1].index),
        verified_entries=vl.result.entries,
        verified_checkpoints=vl.result.checkpoints,
        latest_checkpoint_size=vl.covered,
        uncovered_entries=vl.uncovered,
        verify_warnings=list(vl.result.warnings),
    )


def assemble(
    procedure_id: str,
    es: Sequence[Entry],
    timeline: list[TimelineItem],
    *,
    rules_dirs: Sequence[str | Path],
    notes: list[str],
    restarts: str | None = None,
    **evidence: Any,
) -> ProcedureReport:
    """The report of one run's entries `es` (in the order shown) and its `timeline`; the
    notes about the record's content are appended to `notes`. `restarts` replaces the
    single-ledger note about monitor restarts ("" for none); `evidence` holds the
    remaining `ProcedureReport` fields (ledger, checkpoint, verification, run numbers)."""
    first = es[0]
    opened_by = str(first.data.get("by")) if first.event == "procedure_opened" else None
    started = next((e for e in es if e.event == "procedure_started"), None)
    ended = next((e for e in es if e.event == "procedure_ended"), None)
    closed = next((e for e in es if e.event == "procedure_closed"), None)
    robot = started.data.get("robot") if started else None
    robot = robot if isinstance(robot, dict) else {}

    policy, pack = _policy(es, rules_dirs)
    channels = _channels(es, pack)
    sites = _sites(es, ended)
    stops = _stops(es)
    excursions = [
        t
        for t in timeline
        if t.rule in WORKSPACE_RULES
        and t.event in ("warning_raised", "safe_stop_issued", "breach_while_latched")
    ]
    states = [(e.t_utc_ns, str(e.data.get("after"))) for e in es if e.event == "state_changed"]
    if not states or states[0][0] > first.t_utc_ns:
        states.insert(0, (first.t_utc_ns, "pending"))
    if policy is not None and policy.source is None:
        notes.append(
            f"The content of policy pack {policy.pack} {policy.version} (SHA-256 "
            f"{policy.hash[:12]}…) was not found among the loaded pack files, so latency "
            f"thresholds are taken from the ledger's own warning and safe-stop entries only."
        )
    boots = _unique(e.boot_id for e in es if e.boot_id)
    if restarts is None and len(boots) > 1:
        restarts = (
            f"The monitor restarted during this procedure ({len(boots)} boot ids); "
            f"the procedure was re-adopted from fresh telemetry."
        )
    if restarts:
        notes.append(restarts)
    if ended is None:
        notes.append(
            "No procedure_end was recorded (the procedure was still running, or the "
            "monitor stopped before it ended)."
        )

    return ProcedureReport(
        procedure_id=procedure_id,
        first_index=es[0].index,
        last_index=es[-1].index,
        entry_count=len(es),
        opened_utc_ns=first.t_utc_ns,
        opened_by=opened_by,
        started=started is not None,
        surgeon_id=opt_str(started.data.get("surgeon_id")) if started else None,
        robot_model=opt_str(robot.get("model")),
        robot_serial=opt_str(robot.get("serial")),
        arms=[str(a) for a in (started.data.get("arms") or [])] if started else [],
        ended_utc_ns=ended.t_utc_ns if ended else None,
        end_reason=opt_str(ended.data.get("reason")) if ended else None,
        end_site=opt_str(ended.data.get("site")) if ended else None,
        closed_utc_ns=closed.t_utc_ns if closed else None,
        final_state=opt_str(closed.data.get("final_state")) if closed else None,
        last_utc_ns=max(e.t_utc_ns for e in es),
        monitor_ids=_unique(e.monitor_id for e in es if e.monitor_id),
        boot_ids=boots,
        policy=policy,
        policy_changes=[t for t in timeline if t.category == "policy"],
        channels=channels,
        sites=sites,
        timeline=timeline,
        stops=stops,
        excursions=excursions,
        states=states,
        notes=notes,
        generated_utc_ns=time.time_ns(),
        security_events=security_events(es),
        **evidence,
    )


def security_events(es: Iterable[Entry]) -> list[SecurityEvent]:
    """The refused operator requests among `es` (`operator_request_refused`), in order."""
    out = []
    for e in es:
        if e.event != "operator_request_refused":
            continue
        d = e.data
        raw = d.get("claimed")
        claimed: dict[str, Any] = raw if isinstance(raw, dict) else {}
        out.append(
            SecurityEvent(
                t_utc_ns=e.t_utc_ns,
                index=e.index,
                instance=e.monitor_id,
                source=str(d.get("source") or e.source or "?"),
                reason_class=str(d.get("reason_class") or "?"),
                reason=str(d.get("reason") or ""),
                claimed_operator=opt_str(claimed.get("operator_id")),
                claimed_type=opt_str(claimed.get("type")),
                key_id_presented=opt_str(d.get("key_id_presented")),
                signed=bool(d.get("signed")),
            )
        )
    return out


def covering_checkpoint(vl: VerifiedLedger, last_index: int) -> CheckpointInfo | None:
    """The smallest signed checkpoint whose size exceeds `last_index`, with its signature
    checked again against the trusted key."""
    for size, note in sorted(vl.checkpoints):
        if size <= last_index:
            continue
        try:
            # The key in force at this size (the trusted key, or one it rotated to).
            scp = verify_checkpoint(note, vl.result.key_for(size), vl.origin)
        except CheckpointError as exc:
            return CheckpointInfo(size, vl.origin, "", vl.key_id_hex, False, str(exc), note)
        return CheckpointInfo(
            size=scp.size,
            origin=scp.origin,
            root_hex=scp.root.hex(),
            key_id_hex=scp.key_id.hex(),
            signature_ok=True,
            message=f"Ed25519 signature by {scp.origin}/{scp.key_id.hex()} verified",
            note=note,
        )
    return None


def _policy(
    es: Sequence[Entry], rules_dirs: Sequence[str | Path]
) -> tuple[PolicyInfo | None, LoadedPack | None]:
    pol: dict[str, Any] | None = None
    for e in es:
        if e.event == "procedure_started" and isinstance(e.data.get("policy"), dict):
            pol = e.data["policy"]
        elif e.event == "policy_applied" and isinstance(e.data.get("after"), dict):
            pol = e.data["after"]
        elif (
            pol is None and e.event == "procedure_opened" and isinstance(e.data.get("policy"), dict)
        ):
            pol = e.data["policy"]
    if pol is None:
        return None, None
    info = PolicyInfo(str(pol.get("pack")), str(pol.get("version")), str(pol.get("hash")))
    found = find_pack(info.hash, rules_dirs)
    if found is None:
        return info, None
    pack, directory = found
    # Shown relative to its pack directory: an absolute path names a developer's machine.
    info.source = Path(pack.source).relative_to(directory).as_posix()
    shipped = directory == _shipped_rules()
    info.source_dir = "rules/" if shipped else directory.as_posix().rstrip("/") + "/"
    p = pack.pack
    info.heartbeat_warn_ms = float(p.heartbeat.warn_silence_ms)
    info.heartbeat_stop_ms = float(p.heartbeat.stop_silence_ms)
    info.resend_interval_ms = float(p.alarms.resend_interval_ms)
    info.escalate_after_resends = p.alarms.escalate_after_resends
    return info, pack


def _shipped_rules() -> Path | None:
    with contextlib.suppress(OSError, TypeError):  # packaging edge cases
        return rules_dir()
    return None


def find_pack(sha256: str, rules_dirs: Sequence[str | Path]) -> tuple[LoadedPack, Path] | None:
    """The pack file (any given directory, then the shipped `rules/`) whose content hash is
    `sha256`, and the directory it is in; the hash ties its thresholds to the ledger
    record. None if absent."""
    dirs = [Path(d) for d in rules_dirs]
    shipped = _shipped_rules()
    if shipped is not None:
        dirs.append(shipped)
    for d in dirs:
        for f in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            try:
                lp = load_pack_file(f)
            except PolicyError:
                continue
            if lp.sha256 == sha256:
                return lp, d
    return None


def _channels(es: Sequence[Entry], pack: LoadedPack | None) -> dict[str, ChannelStats]:
    out = {c: ChannelStats(c, []) for c in CHANNELS}
    for e in es:
        if e.event != "latency_summary":
            continue
        d = e.data
        ch = str(d.get("channel"))
        if ch not in out:
            out[ch] = ChannelStats(ch, [])
        try:
            out[ch].points.append(
                LatencyPoint(
                    e.index,
                    e.t_utc_ns,
                    int(d.get("count") or 0),
                    float(d["p50"]),
                    float(d["p95"]),
                    float(d["p99"]),
                    float(d["max"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    if pack is not None:
        lat = pack.pack.latency
        for name, cp in (("control", lat.control), ("video", lat.video)):
            out[name].warn_ms = float(cp.warn_ms)
            out[name].stop_ms = None if cp.stop_ms is None else float(cp.stop_ms)
    # Thresholds the ledger itself recorded (warnings and stops on latency rules).
    for e in es:
        rule = e.data.get("rule")
        if not isinstance(rule, str) or not rule.endswith("_latency"):
            continue
        ch = rule.removesuffix("_latency")
        thr = e.data.get("threshold")
        if ch not in out or not isinstance(thr, int | float) or isinstance(thr, bool):
            continue
        if e.event == "warning_raised" and out[ch].warn_ms is None:
            out[ch].warn_ms = float(thr)
        elif e.event == "safe_stop_issued" and out[ch].stop_ms is None:
            out[ch].stop_ms = float(thr)
    return out


def _sites(es: Sequence[Entry], ended: Entry | None) -> dict[str, SiteStats]:
    out = {s: SiteStats(s) for s in SITES}
    for e in es:
        if e.event == "heartbeat_gap":
            site = str(e.data.get("site"))
            gap = e.data.get("gap_ms")
            if isinstance(gap, int | float):
                out.setdefault(site, SiteStats(site)).gaps.append(
                    HeartbeatGap(e.index, e.t_utc_ns, site, float(gap))
                )
    if ended is not None and isinstance(ended.data.get("sites"), dict):
        for site, counters in ended.data["sites"].items():
            if isinstance(counters, dict):
                out.setdefault(str(site), SiteStats(str(site))).counters = dict(counters)
    return out


def _stops(es: Sequence[Entry]) -> list[StopEpisode]:
    eps: dict[str, StopEpisode] = {}
    current: StopEpisode | None = None
    for e in es:
        d = e.data
        cid = opt_str(d.get("command_id"))
        if e.event == "safe_stop_issued" and cid:
            current = eps[cid] = StopEpisode(
                command_id=cid,
                rule=str(d.get("rule")),
                subject=opt_str(d.get("subject")),
                observed=d.get("observed"),
                threshold=d.get("threshold"),
                reason=str(d.get("reason") or ""),
                index=e.index,
                t_utc_ns=e.t_utc_ns,
                episode=d.get("episode") if isinstance(d.get("episode"), int) else None,
            )
        elif e.event == "safe_stop_resent" and cid in eps:
            eps[cid].resends = max(eps[cid].resends, int(d.get("resend") or 0))
        elif e.event == "safe_stop_escalated" and cid in eps:
            eps[cid].escalations.append(str(d.get("reason")))
        elif e.event == "breach_while_latched" and cid in eps:
            eps[cid].breaches_while_latched.append(str(d.get("reason") or d.get("rule")))
        elif e.event == "safe_stop_acknowledged" and cid in eps and eps[cid].ack is None:
            delay = d.get("delay_ms")
            resends = d.get("resends")
            robot_at = d.get("robot_at")
            eps[cid].ack = AckInfo(
                e.index,
                e.t_utc_ns,
                str(d.get("result")),
                float(delay) if isinstance(delay, int | float) else None,
                resends if isinstance(resends, int) else None,
                robot_at if isinstance(robot_at, int) else None,
            )
        elif e.event == "rearm_accepted":
            cleared = opt_str(d.get("cleared_command_id"))
            target = eps.get(cleared) if cleared else current
            if target is not None and target.rearm is None:
                target.rearm = RearmInfo(
                    e.index,
                    e.t_utc_ns,
                    str(d.get("operator_id")),
                    str(d.get("reason") or ""),
                    cid,
                )
    return list(eps.values())


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return list(seen)
