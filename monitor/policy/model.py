"""The policy pack model. `rules/schema.json` is generated from it (`telesafe policy schema`).

Field names carry their unit (`_ms`, `_mm`, `_n`, `_ratio`) so a pack reads unambiguously.
Comparisons are strict as in ICD §7: a value exactly at a limit is not a breach.

The JSON Schema checks each field on its own; the validators here check what it cannot
express: every warn limit lies below its safe-stop limit, boxes have positive extent, a
zone has one shape. They report every such problem of a section at once, each naming its
field (`Problems`), so the loader can give the JSON path of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitor.errors import PolicyLayerError

PosMs = Annotated[float, Field(gt=0)]
Point = Annotated[list[float], Field(min_length=3, max_length=3)]

# The field pairs (warn, stop) that must be strictly ordered: a warning has to be able to
# come before the safe-stop. Both fields must be set for the rule to apply.
WARN_BEFORE_STOP = "so the warning comes before the safe-stop"


class Problems(PolicyLayerError, ValueError):
    """Cross-field problems of one section: (path below the section, plain sentence) each."""

    def __init__(self, items: Sequence[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(msg for _, msg in items))
        self.items = list(items)


def _check_order(model: BaseModel, pairs: Sequence[tuple[str, str]]) -> None:
    """Raise Problems for every (low, high) field pair set on ``model`` with low >= high."""
    items: list[tuple[tuple[str | int, ...], str]] = []
    for low, high in pairs:
        lo, hi = getattr(model, low), getattr(model, high)
        if lo is not None and hi is not None and lo >= hi:
            items.append(
                ((low,), f"must be below {high} ({hi:g}) {WARN_BEFORE_STOP}; it is {lo:g}")
            )
    if items:
        raise Problems(items)


class _Pack(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class HeartbeatPolicy(_Pack):
    warn_silence_ms: PosMs = Field(100, description="warn when a site's heartbeat is silent longer")
    stop_silence_ms: PosMs = Field(300, description="safe-stop when silent longer than this")
    first_heartbeat_ms: PosMs = Field(
        2000, description="safe-stop if a site sends no fresh heartbeat this long after start"
    )

    @model_validator(mode="after")
    def _ordered(self) -> HeartbeatPolicy:
        _check_order(self, [("warn_silence_ms", "stop_silence_ms")])
        return self


class ChannelPolicy(_Pack):
    warn_ms: PosMs = Field(description="warn when the window quantile exceeds this")
    stop_ms: PosMs | None = Field(
        None, description="safe-stop when the quantile stays above this for hold_ms"
    )
    hold_ms: Annotated[float, Field(ge=0)] = 1000
    max_sample_ms: PosMs | None = Field(
        None, description="safe-stop at once when any single sample exceeds this"
    )

    @model_validator(mode="after")
    def _ordered(self) -> ChannelPolicy:
        _check_order(self, [("warn_ms", "stop_ms"), ("warn_ms", "max_sample_ms")])
        return self


class LatencyPolicy(_Pack):
    window_ms: PosMs = 1000
    quantile: Annotated[float, Field(gt=0, le=1)] = 0.95
    control: ChannelPolicy = ChannelPolicy(
        warn_ms=100, stop_ms=300, hold_ms=1000, max_sample_ms=500
    )
    video: ChannelPolicy = ChannelPolicy(warn_ms=150, stop_ms=400, hold_ms=1000)


class JitterPolicy(_Pack):
    warn_ms: PosMs | None = 10
    stop_ms: PosMs | None = None

    @model_validator(mode="after")
    def _ordered(self) -> JitterPolicy:
        _check_order(self, [("warn_ms", "stop_ms")])
        return self


class LossPolicy(_Pack):
    warn_ratio: Annotated[float, Field(ge=0, le=1)] | None = 0.001
    stop_ratio: Annotated[float, Field(ge=0, le=1)] | None = 0.03

    @model_validator(mode="after")
    def _ordered(self) -> LossPolicy:
        _check_order(self, [("warn_ratio", "stop_ratio")])
        return self


class LinkPolicy(_Pack):
    jitter: JitterPolicy = JitterPolicy()
    loss: LossPolicy = LossPolicy()


class Box(_Pack):
    min: Point = Field(description="[x, y, z] lower corner, mm")
    max: Point = Field(description="[x, y, z] upper corner, mm")

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        items: list[tuple[tuple[str | int, ...], str]] = [
            (("min", i), f"the lower {axis} ({lo:g}) must be below the upper {axis} ({hi:g})")
            for i, (axis, lo, hi) in enumerate(zip("xyz", self.min, self.max, strict=True))
            if lo >= hi
        ]
        if items:
            raise Problems(items)
        return self


class Sphere(_Pack):
    center: Point
    radius: Annotated[float, Field(gt=0)]


class ForbiddenZone(_Pack):
    name: Annotated[str, Field(min_length=1)]
    arms: list[str] | None = Field(None, description="arms it applies to; all arms if absent")
    sphere: Sphere | None = None
    box: Box | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> ForbiddenZone:
        if (self.sphere is None) == (self.box is None):
            has = "both" if self.sphere is not None else "neither"
            raise Problems([((), f"zone {self.name!r} needs exactly one of sphere or box; "
                                 f"it has {has}")])  # fmt: skip
        return self


class Limits(_Pack):
    warn: PosMs
    stop: PosMs

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        _check_order(self, [("warn", "stop")])
        return self


class WorkspacePolicy(_Pack):
    default_box: Box = Box(min=[-120, -120, -180], max=[120, 120, -20])
    arms: dict[str, Box] = Field(default_factory=dict, description="per-arm allowed boxes")
    box_warn_mm: Annotated[float, Field(ge=0)] = 5
    forbidden_zones: list[ForbiddenZone] = Field(default_factory=list)
    zone_warn_mm: Annotated[float, Field(ge=0)] = 5
    speed_mm_s: Limits = Limits(warn=100, stop=200)
    grip_n: Limits = Limits(warn=10, stop=15)

    def box_for(self, arm: str) -> Box:
        return self.arms.get(arm, self.default_box)


class AlarmPolicy(_Pack):
    clear_after_ms: PosMs = Field(2000, description="a warning clears after this long in band")
    resend_interval_ms: PosMs = Field(100, description="re-send an unacknowledged safe-stop")
    escalate_after_resends: Annotated[int, Field(ge=1)] = 5


class OperatorPolicy(_Pack):
    """ICD 1.1 §5.1: how fresh a re-arm or latch-close request must be (monitor UTC clock)."""

    request_max_age_ms: PosMs = Field(
        60_000, description="reject a request whose requested_at is older than this"
    )
    request_max_future_ms: PosMs = Field(
        5_000, description="reject a request dated further than this into the future"
    )


class PolicyPack(_Pack):
    """One versioned policy pack. Every threshold the engine uses comes from here."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        json_schema_extra={"$id": "https://telesafe.example/rules/schema.json"},
    )

    schema_version: Literal[1] = 1
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    version: Annotated[str, Field(min_length=1)]
    description: str = ""
    stale_after_ms: PosMs = Field(500, description="records older than this are stale (ICD §7)")
    heartbeat: HeartbeatPolicy = HeartbeatPolicy()
    latency: LatencyPolicy = LatencyPolicy()
    link: LinkPolicy = LinkPolicy()
    workspace: WorkspacePolicy = WorkspacePolicy()
    alarms: AlarmPolicy = AlarmPolicy()
    operator: OperatorPolicy = OperatorPolicy()
