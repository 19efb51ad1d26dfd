"""The facts of one procedure, gathered from verified audit-ledger entries only.

`load_verified` runs the full ledger verification (`monitor.audit.verify.verify`) and
refuses a ledger that fails it. It then reads the entries covered by the latest verified
checkpoint and recomputes their Merkle root, so the bytes the report is built from are
exactly the bytes the signature covers (an append or an edit after verification cannot
slip in). Entries after the latest checkpoint are not signed yet and are left out.

`build_report` turns the entries of one procedure into a `ProcedureReport`. A procedure
id can be opened more than once in one ledger (a re-used id, a monitor restart after
`procedure_end`): each `procedure_opened` starts a new *run*; the report covers one run
(the latest by default).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from monitor.audit.checkpoint import CheckpointError, key_id, verify_checkpoint
from monitor.audit.merkle import leaf_hash, root_of
from monitor.audit.store import LedgerError
from monitor.audit.verify import VerifyResult, open_source, verify
from monitor.policy.loader import LoadedPack, PolicyError, load_pack_file, rules_dir

EXIT_REFUSED = 1
EXIT_USAGE = 2

CHANNELS = ("control", "video")
SITES = ("console", "robot")
WORKSPACE_RULES = frozenset({"workspace_box", "forbidden_zone", "tool_speed", "grip_force"})
RATIO_RULES = frozenset({"link_loss"})  # observed and threshold are ratios: shown as %

# Timeline categories (used for colours in the table and lanes in the chart).
_CATEGORY = {
    "procedure_opened": "procedure",
    "procedure_started": "procedure",
    "procedure_ended": "procedure",
    "procedure_closed": "procedure",
    "policy_applied": "policy",
    "policy_unknown": "policy",
    "warning_raised": "warning",
    "warning_cleared": "cleared",
    "safe_stop_issued": "stop",
    "safe_stop_resent": "resend",
    "safe_stop_escalated": "stop",
    "breach_while_latched": "stop",
    "command_reconciled": "stop",
    "safe_stop_acknowledged": "ack",
    "ack_unmatched": "ack",
    "rearm_accepted": "rearm",
    "rearm_rejected": "rearm",
    "operator_note": "note",
    "clock_state": "site",
    "site_state": "site",
}
# Shown in their own sections or charts rather than the timeline table.
_NOT_IN_TIMELINE = frozenset({"latency_summary", "heartbeat_gap", "state_changed"})
# Consecutive re-sends of one command beyond this many are folded into one row.
RESEND_ROWS = 5


class ReportError(Exception):
    """A user-facing failure; `exit_code` is what `telesafe report` returns."""

    exit_code = EXIT_USAGE


class LedgerRefused(ReportError):
    """The ledger failed verification: no report is produced from it."""

    exit_code = EXIT_REFUSED


class UnknownProcedure(ReportError):
    exit_code = EXIT_REFUSED

    def __init__(self, procedure_id: str, known: Sequence[ProcedureListing]) -> None:
        self.procedure_id = procedure_id
        self.known = list(known)
        if known:
            lines = "\n".join(f"  {p}" for p in known)
            msg = (
                f"procedure {procedure_id!r} is not in the verified ledger; "
                f"procedures in it:\n{lines}"
            )
        else:
            msg = f"procedure {procedure_id!r} is not in the verified ledger (it holds none)"
        super().__init__(msg)


# --- verified entries -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit entry (see `monitor.service.audit_sink.EntryFactory`)."""

    index: int
    event: str
    procedure_id: str | None
    actor: str
    monitor_id: str
    boot_id: str
    t_utc_ns: int
    data: dict[str, Any]

    @classmethod
    def from_body(cls, obj: dict[str, Any]) -> Entry:
        data = obj.get("data")
        pid = obj.get("procedure_id")
        t = obj.get("t_utc_ns")
        return cls(
            index=int(obj["index"]),
            event=str(obj.get("event") or obj.get("type") or "?"),
            procedure_id=pid if isinstance(pid, str) else None,
            actor=str(obj.get("actor") or ""),
            monitor_id=str(obj.get("monitor_id") or ""),
            boot_id=str(obj.get("boot_id") or ""),
            t_utc_ns=t if isinstance(t, int) and not isinstance(t, bool) else 0,
            data=data if isinstance(data, dict) else {},
        )


@dataclass
class VerifiedLedger:
    path: Path
    origin: str
    key_id_hex: str
    public_key: Ed25519PublicKey
    result: VerifyResult
    checkpoints: list[tuple[int, str]]
    entries: list[Entry]  # exactly the entries [0, size) of the latest verified checkpoint
    total_entries: int

    @property
    def covered(self) -> int:
        return len(self.entries)

    @property
    def uncovered(self) -> int:
        return self.total_entries - self.covered


def load_verified(path: str | Path, public_key: Ed25519PublicKey) -> VerifiedLedger:
    """Verify the ledger (or export bundle) and return its signed entries.

    Raises `LedgerRefused` if verification fails, naming the first bad entry."""
    p = Path(path)
    if not p.exists():
        raise ReportError(f"{p}: no such ledger file or bundle directory")
    res = verify(p, public_key)
    if not res.ok:
        first = res.first_problem
        more = len(res.problems) - 1
        also = f" (and {more} more problem(s); run `telesafe audit verify`)" if more else ""
        raise LedgerRefused(f"refusing to report: ledger verification FAILED: {first}{also}")
    latest = res.latest
    if latest is None:  # an empty ledger verifies, but there is nothing signed to report on
        raise LedgerRefused(f"refusing to report: {p} holds no signed checkpoint")
    origin = res.origin or latest.origin
    try:
        src = open_source(p)
    except LedgerError as exc:
        raise ReportError(str(exc)) from exc
    bodies: list[bytes] = []
    total = 0
    try:
        cps = list(src.checkpoints)
        for idx, _stored, body in src.entries:
            total = idx + 1
            if idx < latest.size:
                bodies.append(body)
    finally:
        src.close()
    # The bytes used below must be the bytes the verified signature covers.
    if len(bodies) != latest.size or root_of([leaf_hash(b) for b in bodies]) != latest.root:
        raise LedgerRefused(
            f"refusing to report: entries [0, {latest.size}) changed after verification "
            f"(their root no longer matches the signed checkpoint at size {latest.size})"
        )
    entries = [Entry.from_body(json.loads(b)) for b in bodies]
    return VerifiedLedger(
        path=p,
        origin=origin,
        key_id_hex=key_id(origin, public_key).hex(),
        public_key=public_key,
        result=res,
        checkpoints=cps,
        entries=entries,
        total_entries=max(total, res.entries),
    )


# --- procedure listing ------------------------------------------------------------------


@dataclass(frozen=True)
class ProcedureListing:
    procedure_id: str
    runs: int
    entries: int
    first_utc_ns: int
    last_utc_ns: int

    def __str__(self) -> str:
        runs = f", {self.runs} runs" if self.runs > 1 else ""
        return (
            f"{self.procedure_id}  ({self.entries} entries{runs}, "
            f"{fmt_utc(self.first_utc_ns)} – {fmt_utc(self.last_utc_ns)})"
        )


def list_procedures(vl: VerifiedLedger) -> list[ProcedureListing]:
    acc: dict[str, list[Entry]] = {}
    for e in vl.entries:
        if e.procedure_id is not None:
            acc.setdefault(e.procedure_id, []).append(e)
    out = []
    for pid, es in acc.items():
        runs = sum(1 for e in es if e.event == "procedure_opened") or 1
        out.append(ProcedureListing(pid, runs, len(es), es[0].t_utc_ns, es[-1].t_utc_ns))
    return sorted(out, key=lambda p: (p.first_utc_ns, p.procedure_id))


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


# --- report model -----------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyPoint:
    index: int
    t_utc_ns: int
    count: int
    p50: float
    p95: float
    p99: float
    max: float


@dataclass
class ChannelStats:
    channel: str
    points: list[LatencyPoint]
    warn_ms: float | None = None
    stop_ms: float | None = None

    @property
    def windows(self) -> int:
        return len(self.points)

    @property
    def samples(self) -> int:
        return sum(p.count for p in self.points)

    def typical(self, q: str) -> float | None:
        """Sample-weighted median of the per-window quantile `q` (p50, p95, p99)."""
        return weighted_median([(getattr(p, q), p.count) for p in self.points])

    def worst(self, q: str) -> float | None:
        return max((float(getattr(p, q)) for p in self.points), default=None)

    @property
    def p50(self) -> float | None:
        return self.typical("p50")

    @property
    def p95(self) -> float | None:
        return self.typical("p95")

    @property
    def p99(self) -> float | None:
        return self.typical("p99")

    @property
    def max(self) -> float | None:
        return self.worst("max")

    @property
    def worst_p95(self) -> float | None:
        return self.worst("p95")


@dataclass(frozen=True)
class HeartbeatGap:
    index: int
    t_utc_ns: int
    site: str
    gap_ms: float


@dataclass
class SiteStats:
    site: str
    gaps: list[HeartbeatGap] = field(default_factory=list)
    counters: dict[str, Any] | None = None  # from procedure_ended

    @property
    def gap_count(self) -> int:
        return len(self.gaps)

    @property
    def max_gap_ms(self) -> float | None:
        return max((g.gap_ms for g in self.gaps), default=None)


@dataclass
class TimelineItem:
    index: int
    t_utc_ns: int
    event: str
    category: str
    actor: str
    rule: str | None = None
    subject: str | None = None
    observed: Any = None
    threshold: Any = None
    command_id: str | None = None
    detail: str = ""
    folded: int = 0  # for folded re-send rows: how many re-sends this row stands for


@dataclass
class AckInfo:
    index: int
    t_utc_ns: int
    result: str
    delay_ms: float | None
    resends: int | None
    robot_at_ns: int | None


@dataclass
class RearmInfo:
    index: int
    t_utc_ns: int
    operator_id: str
    reason: str
    command_id: str | None


@dataclass
class StopEpisode:
    command_id: str
    rule: str
    subject: str | None
    observed: Any
    threshold: Any
    reason: str
    index: int
    t_utc_ns: int
    episode: int | None
    resends: int = 0
    escalations: list[str] = field(default_factory=list)
    breaches_while_latched: list[str] = field(default_factory=list)
    ack: AckInfo | None = None
    rearm: RearmInfo | None = None


@dataclass
class PolicyInfo:
    pack: str
    version: str
    hash: str
    # The pack file whose content hash matches, if found: its path relative to the pack
    # directory it was found in, and that directory (`source_dir`, as given, or "rules/"
    # for the shipped packs).
    source: str | None = None
    source_dir: str | None = None
    heartbeat_warn_ms: float | None = None
    heartbeat_stop_ms: float | None = None
    resend_interval_ms: float | None = None
    escalate_after_resends: int | None = None


@dataclass
class CheckpointInfo:
    size: int
    origin: str
    root_hex: str
    key_id_hex: str
    signature_ok: bool
    message: str
    note: str


@dataclass
class ProcedureReport:
    procedure_id: str
    ledger_path: str
    origin: str
    run: int
    runs: int
    first_index: int
    last_index: int
    entry_count: int
    opened_utc_ns: int
    opened_by: str | None
    started: bool
    surgeon_id: str | None
    robot_model: str | None
    robot_serial: str | None
    arms: list[str]
    ended_utc_ns: int | None
    end_reason: str | None
    end_site: str | None
    closed_utc_ns: int | None
    final_state: str | None
    last_utc_ns: int
    monitor_ids: list[str]
    boot_ids: list[str]
    policy: PolicyInfo | None
    policy_changes: list[TimelineItem]
    channels: dict[str, ChannelStats]
    sites: dict[str, SiteStats]
    timeline: list[TimelineItem]
    stops: list[StopEpisode]
    excursions: list[TimelineItem]
    states: list[tuple[int, str]]  # (t_utc_ns, state entered)
    checkpoint: CheckpointInfo | None
    verified_entries: int
    verified_checkpoints: int
    latest_checkpoint_size: int
    uncovered_entries: int
    verify_warnings: list[str]
    notes: list[str]
    generated_utc_ns: int

    @property
    def end_utc_ns(self) -> int:
        return self.ended_utc_ns or self.closed_utc_ns or self.last_utc_ns

    @property
    def duration_s(self) -> float:
        return max(0, self.end_utc_ns - self.opened_utc_ns) / 1e9

    @property
    def warnings_raised(self) -> int:
        return sum(1 for t in self.timeline if t.event == "warning_raised")

    @property
    def verified(self) -> bool:
        return self.checkpoint is not None and self.checkpoint.signature_ok


def build_report(
    vl: VerifiedLedger,
    procedure_id: str,
    *,
    run: int | None = None,
    rules_dirs: Sequence[str | Path] = (),
) -> ProcedureReport:
    mine = [e for e in vl.entries if e.procedure_id == procedure_id]
    if not mine:
        raise UnknownProcedure(procedure_id, list_procedures(vl))
    orphans, runs = split_runs(mine)
    if run is None:
        run = len(runs)
    if not 1 <= run <= len(runs):
        raise ReportError(
            f"procedure {procedure_id!r} has {len(runs)} run(s) in the ledger; --run {run} "
            f"is out of range"
        )
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
    timeline = _timeline(es)
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
    if len(boots) > 1:
        notes.append(
            f"The monitor restarted during this procedure ({len(boots)} boot ids); "
            f"the procedure was re-adopted from fresh telemetry."
        )
    if ended is None:
        notes.append(
            "No procedure_end was recorded (the procedure was still running, or the "
            "monitor stopped before it ended)."
        )

    return ProcedureReport(
        procedure_id=procedure_id,
        ledger_path=str(vl.path),
        origin=vl.origin,
        run=run,
        runs=len(runs),
        first_index=es[0].index,
        last_index=es[-1].index,
        entry_count=len(es),
        opened_utc_ns=first.t_utc_ns,
        opened_by=opened_by,
        started=started is not None,
        surgeon_id=_str(started.data.get("surgeon_id")) if started else None,
        robot_model=_str(robot.get("model")),
        robot_serial=_str(robot.get("serial")),
        arms=[str(a) for a in (started.data.get("arms") or [])] if started else [],
        ended_utc_ns=ended.t_utc_ns if ended else None,
        end_reason=_str(ended.data.get("reason")) if ended else None,
        end_site=_str(ended.data.get("site")) if ended else None,
        closed_utc_ns=closed.t_utc_ns if closed else None,
        final_state=_str(closed.data.get("final_state")) if closed else None,
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
        checkpoint=covering_checkpoint(vl, es[-1].index),
        verified_entries=vl.result.entries,
        verified_checkpoints=vl.result.checkpoints,
        latest_checkpoint_size=vl.covered,
        uncovered_entries=vl.uncovered,
        verify_warnings=list(vl.result.warnings),
        notes=notes,
        generated_utc_ns=time.time_ns(),
    )


def covering_checkpoint(vl: VerifiedLedger, last_index: int) -> CheckpointInfo | None:
    """The smallest signed checkpoint whose size exceeds `last_index`, with its signature
    checked again against the trusted key."""
    for size, note in sorted(vl.checkpoints):
        if size <= last_index:
            continue
        try:
            scp = verify_checkpoint(note, vl.public_key, vl.origin)
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


# --- sections -----------------------------------------------------------------------------


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


def _timeline(es: Sequence[Entry]) -> list[TimelineItem]:
    items: list[TimelineItem] = []
    run_of_resends: list[TimelineItem] = []

    def flush() -> None:
        if len(run_of_resends) > RESEND_ROWS:
            head = run_of_resends[: RESEND_ROWS - 1]
            rest = run_of_resends[RESEND_ROWS - 1 :]
            last = rest[-1]
            items.extend(head)
            items.append(
                TimelineItem(
                    index=rest[0].index,
                    t_utc_ns=rest[0].t_utc_ns,
                    event="safe_stop_resent",
                    category="resend",
                    actor=rest[0].actor,
                    command_id=last.command_id,
                    detail=f"re-sends {rest[0].detail.split()[-1]}–{last.detail.split()[-1]} "
                    f"({len(rest)} re-sends, last at entry {last.index})",
                    folded=len(rest),
                )
            )
        else:
            items.extend(run_of_resends)
        run_of_resends.clear()

    for e in es:
        if e.event in _NOT_IN_TIMELINE:
            continue
        if e.event in ("clock_state", "site_state") and e.data.get("before") is None:
            continue  # first report of a site's clock/state, not a change
        item = _item(e)
        if e.event == "safe_stop_resent":
            run_of_resends.append(item)
            continue
        flush()
        items.append(item)
    flush()
    rules = {t.command_id: t.rule for t in items if t.event == "safe_stop_issued"}
    for t in items:
        if t.rule is None and t.command_id in rules:
            t.rule = rules[t.command_id]
    return items


def _item(e: Entry) -> TimelineItem:
    d = e.data
    it = TimelineItem(
        index=e.index,
        t_utc_ns=e.t_utc_ns,
        event=e.event,
        category=_CATEGORY.get(e.event, "other"),
        actor=e.actor,
        rule=_str(d.get("rule")),
        subject=_str(d.get("subject")),
        observed=d.get("observed"),
        threshold=d.get("threshold"),
        command_id=_str(d.get("command_id")),
    )
    k = e.event
    if k in ("warning_raised", "safe_stop_issued", "breach_while_latched"):
        it.detail = _ratio_reason(d) or str(d.get("reason") or "")
    elif k == "warning_cleared":
        it.detail = f"in band again; warning lasted {_num(d.get('duration_ms'))} ms"
    elif k == "safe_stop_resent":
        it.detail = f"re-send {d.get('resend')}"
    elif k == "safe_stop_escalated":
        it.detail = f"escalated (page): {d.get('reason')}"
    elif k == "safe_stop_acknowledged":
        it.detail = (
            f"robot answered {d.get('result')!s} after {_num(d.get('delay_ms'))} ms "
            f"({d.get('resends')} re-send(s))"
        )
    elif k == "ack_unmatched":
        it.detail = f"acknowledgement ({d.get('result')}) for a command that is not latched"
    elif k == "rearm_accepted":
        it.subject = _str(d.get("operator_id"))
        it.rule = _str(d.get("cleared_rule"))
        it.detail = f"re-arm accepted: {d.get('reason')}"
    elif k == "rearm_rejected":
        it.subject = _str(d.get("operator_id"))
        why = d.get("rejected_because")
        why_s = "; ".join(str(w) for w in why) if isinstance(why, list) else str(why)
        it.detail = f"re-arm rejected ({why_s}); operator's reason: {d.get('reason')}"
    elif k == "operator_note":
        it.subject = _str(d.get("operator_id"))
        it.detail = str(d.get("text") or "")
    elif k == "procedure_opened":
        it.subject = _str(d.get("site"))
        it.detail = f"opened by {d.get('by')} from the {d.get('site')} site"
    elif k == "procedure_started":
        it.subject = _str(d.get("site"))
        it.detail = f"procedure_start from the {d.get('site')} site; surgeon {d.get('surgeon_id')}"
    elif k == "procedure_ended":
        it.subject = _str(d.get("site"))
        it.detail = f"procedure_end ({d.get('reason')}) from the {d.get('site')} site"
    elif k == "procedure_closed":
        it.detail = f"closed in state {d.get('final_state')}"
    elif k == "policy_applied":
        after, before = _dict(d.get("after")), _dict(d.get("before"))
        it.detail = (
            f"policy {before.get('pack')} {before.get('version')} → "
            f"{after.get('pack')} {after.get('version')}"
        )
    elif k == "policy_unknown":
        it.detail = str(d.get("reason") or f"unknown policy {d.get('requested')!r}")
    elif k == "clock_state":
        it.subject = _str(d.get("site"))
        it.detail = f"{d.get('site')} clock source {d.get('before')} → {d.get('source')}"
    elif k == "site_state":
        it.subject = _str(d.get("site"))
        it.detail = f"{d.get('site')} reports state {d.get('before')} → {d.get('after')}"
    elif k == "command_reconciled":
        pol = _dict(_dict(d.get("command")).get("policy"))
        it.rule = _str(pol.get("rule"))
        it.detail = str(d.get("reason") or "command recorded at start-up")
    else:
        it.detail = ", ".join(f"{k2}={v!s}" for k2, v in sorted(d.items()))[:300]
    return it


def _stops(es: Sequence[Entry]) -> list[StopEpisode]:
    eps: dict[str, StopEpisode] = {}
    current: StopEpisode | None = None
    for e in es:
        d = e.data
        cid = _str(d.get("command_id"))
        if e.event == "safe_stop_issued" and cid:
            current = eps[cid] = StopEpisode(
                command_id=cid,
                rule=str(d.get("rule")),
                subject=_str(d.get("subject")),
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
            cleared = _str(d.get("cleared_command_id"))
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


# --- helpers ------------------------------------------------------------------------------


def weighted_median(pairs: Iterable[tuple[float, int]]) -> float | None:
    """The value at which half the total weight is reached (lower median)."""
    vals = sorted((float(v), max(int(w), 0)) for v, w in pairs)
    if not vals:
        return None
    total = sum(w for _, w in vals)
    if total == 0:
        return vals[(len(vals) - 1) // 2][0]
    acc = 0
    for v, w in vals:
        acc += w
        if acc * 2 >= total:
            return v
    return vals[-1][0]  # pragma: no cover


def fmt_utc(ns: int | None, *, ms: bool = True) -> str:
    if ns is None:
        return "—"
    secs, rem = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(secs))
    return f"{base}.{rem // 1_000_000:03d} UTC" if ms else f"{base} UTC"


def is_number(v: Any) -> TypeGuard[int | float]:
    """A JSON number (not a bool, which Python counts as an int)."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def percent(ratio: float) -> str:
    """A ratio as a percentage: 0.012 -> "1.2 %"."""
    return f"{ratio * 100:.4g} %"


def _ratio_reason(d: dict[str, Any]) -> str | None:
    """Loss ratios read as percentages (the ledger's reason gives the raw ratio)."""
    obs, thr = d.get("observed"), d.get("threshold")
    if d.get("rule") not in RATIO_RULES or not is_number(obs) or not is_number(thr):
        return None
    return f"{d.get('subject')} link loss {percent(obs)} above {percent(thr)}"


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return list(seen)
