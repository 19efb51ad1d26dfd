"""The post-operative report's model: the facts of one procedure run, as dataclasses.

`monitor.report.build` fills a `ProcedureReport` from verified ledger entries
(`monitor.audit.verified`); `timeline.py` words its timeline rows; `charts.py`, `summary.py`
and `html.py` present it. The small value helpers at the end (ledger JSON coercion, number
formats) are shared by all of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from monitor.errors import EXIT_FAILED, ReportLayerError

CHANNELS = ("control", "video")
SITES = ("console", "robot")
WORKSPACE_RULES = frozenset({"workspace_box", "forbidden_zone", "tool_speed", "grip_force"})
RATIO_RULES = frozenset({"link_loss"})  # observed and threshold are ratios: shown as %


class ReportError(ReportLayerError):
    """A user-facing failure of building a report (bad input: exit 2)."""


class UnknownProcedure(ReportError):
    """The procedure is not in the verified ledger (the message lists those that are)."""

    exit_code = EXIT_FAILED

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
    instance: str | None = None  # reports across instances: the instance that recorded it


@dataclass
class AckInfo:
    index: int
    t_utc_ns: int
    result: str
    delay_ms: float | None
    resends: int | None
    robot_at_ns: int | None
    instance: str | None = None


@dataclass
class RearmInfo:
    index: int
    t_utc_ns: int
    operator_id: str
    reason: str
    command_id: str | None
    instance: str | None = None


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
    instance: str | None = None  # reports across instances: the one that issued it
    proofs: list[ProofInfo] = field(default_factory=list)


@dataclass
class ProofInfo:
    """An inclusion proof (`telesafe-inclusion-proof/v1`) of one entry in the signed
    checkpoint of the ledger that recorded it, checked when the report was built."""

    what: str  # "issued", "acknowledged"
    instance: str
    origin: str
    index: int
    size: int
    verified: bool
    message: str
    proof: dict[str, Any]

    @property
    def json_text(self) -> str:
        import json

        return json.dumps(self.proof, indent=2, ensure_ascii=False) + "\n"


@dataclass
class SecurityEvent:
    """An operator request for this procedure refused before the rules engine
    (`operator_request_refused`): where it was read and why are facts; what it claimed
    (operator, type, key name) is only a claim, and is shown as one."""

    t_utc_ns: int
    index: int
    instance: str
    source: str
    reason_class: str
    reason: str
    claimed_operator: str | None
    claimed_type: str | None
    key_id_presented: str | None
    signed: bool


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
class InstanceInfo:
    """One ledger of a report across instances, and what it holds of the procedure."""

    label: str  # the monitor id that wrote it (its origin if that is ambiguous)
    origin: str
    ledger_path: str
    key_id_hex: str
    key_history: list[str]
    verified_entries: int
    verified_checkpoints: int
    latest_checkpoint_size: int
    uncovered_entries: int
    warnings: list[str]
    entries: int = 0  # of this run, as shown (duplicates of another's entries left out)
    duplicates: int = 0  # its entries of this run shown once, under an earlier record
    first_index: int | None = None
    last_index: int | None = None
    first_utc_ns: int | None = None
    last_utc_ns: int | None = None
    boots: int = 0
    checkpoint: CheckpointInfo | None = None  # covering its last entry of this run


@dataclass
class Handover:
    """The procedure passing from one instance's supervision to another's."""

    t_utc_ns: int  # the new owner's opening
    to_instance: str
    to_index: int
    opened_by: str  # `by` of that opening: latch_state (restored latch), a record type, ...
    from_instance: str | None
    released: bool  # the previous owner recorded `procedure_released` (a clean hand-over)
    last_from_utc_ns: int | None  # the previous owner's last entry for this procedure
    alive_until_utc_ns: int | None  # its last entry of any kind before the takeover
    latch_before: str | None  # the command latched when the previous owner stopped
    latch_restored: str | None  # the command the new owner restored
    restart: bool = False  # the same instance again (a restart), not another one

    @property
    def gap_s(self) -> float | None:
        """Longest time without supervision the record allows: from the last sign of life
        of the previous owner (any entry it recorded) to the new owner's opening."""
        since = max(
            (t for t in (self.last_from_utc_ns, self.alive_until_utc_ns) if t is not None),
            default=None,
        )
        return None if since is None else max(0, self.t_utc_ns - since) / 1e9

    @property
    def latch_carried(self) -> bool | None:
        """None when no latch was in force at the hand-over."""
        if self.latch_before is None:
            return None
        return self.latch_restored == self.latch_before


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
    # Reports across instances (several ledgers, or the archive); empty for one ledger.
    instances: list[InstanceInfo] = field(default_factory=list)
    handovers: list[Handover] = field(default_factory=list)
    holes: list[str] = field(default_factory=list)  # written anyway with --allow-holes
    duplicates: int = 0  # entries recorded by two instances for the same input, shown once
    # Operator requests for this procedure refused before the rules engine (ICD §5.1).
    security_events: list[SecurityEvent] = field(default_factory=list)

    @property
    def multi(self) -> bool:
        return bool(self.instances)

    @property
    def evidence_ok(self) -> bool:
        """Across instances: every ledger holding the procedure covers it with a valid
        checkpoint, and every proof checked."""
        if not self.multi:
            return self.verified
        covering = [i.checkpoint for i in self.instances if i.entries]
        return (
            bool(covering)
            and all(c is not None and c.signature_ok for c in covering)
            and all(p.verified for p in self.proofs)
        )

    @property
    def proofs(self) -> list[ProofInfo]:
        return [p for s in self.stops for p in s.proofs]

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


# --- values -------------------------------------------------------------------------------


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


def as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def opt_str(v: Any) -> str | None:
    return None if v is None else str(v)
