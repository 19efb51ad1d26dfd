"""What a procedure looks like right now: its state, signals, warnings and latch.

The engine builds these (`Engine.snapshot`); the service's gauges
(`metrics.ProcedureCollector`), `/status` and `telesafe status` read them. `/status` serves
`ProcedureSnapshot.to_json()`, and `from_json` reads that back, so the JSON shape is
defined here once.

Ground floor: the procedure state names live here too, so the engine, the metrics and
every colour map take them from one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

State = Literal["pending", "armed", "warning", "safe_stop_latched", "safe_stopped", "ended"]
"""A procedure's state (docs/procedure-states.md), derived by the engine from its facts."""
PROCEDURE_STATES: tuple[State, ...] = get_args(State)

QUANTILES = ("0.5", "0.95", "0.99")
"""The latency-window quantiles a snapshot carries (the `percentile` label of the gauge)."""


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    heartbeat_age_s: float | None  # since the last fresh heartbeat (None: none yet)
    jitter_ms: float | None  # last link report (None: none yet)
    loss_ratio: float | None
    duplicates: int
    lost: int
    stale: int
    state: str | None  # the site state its last heartbeat reported

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SiteSnapshot:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    """Quantiles of one channel's sliding latency window, ms (None: the window is empty)."""

    p50: float | None
    p95: float | None
    p99: float | None

    def by_quantile(self) -> dict[str, float | None]:
        return dict(zip(QUANTILES, (self.p50, self.p95, self.p99), strict=True))


@dataclass(frozen=True, slots=True)
class ArmSnapshot:
    margin_mm: float | None  # smallest margin over the last batch (negative: outside)
    speed_mm_s: float | None  # highest speed over the last batch


@dataclass(frozen=True, slots=True)
class LatchSnapshot:
    rule: str
    command_id: str
    issued_at: int
    ended: bool  # the procedure has ended; the latch waits for its ack or a latch_close
    resends: int
    ack: str | None  # the robot's answer, None while unacknowledged
    escalated: bool


@dataclass(frozen=True, slots=True)
class ProcedureSnapshot:
    state: State
    pack: str
    sites: Mapping[str, SiteSnapshot]
    channels: Mapping[str, WindowSnapshot]
    arms: Mapping[str, ArmSnapshot]
    warnings: tuple[str, ...]  # "rule:subject" of each active warning
    latch: LatchSnapshot | None
    # The pack's heartbeat stop limit (heartbeat.stop_silence_ms), s; None only when read
    # from a monitor that did not report it.
    heartbeat_stop_limit_s: float | None

    def to_json(self) -> dict[str, Any]:
        """The `/status` form (JSON-ready; the key order is the one `/status` always had)."""
        return {
            "state": self.state,
            "pack": self.pack,
            "sites": {name: asdict(s) for name, s in self.sites.items()},
            "channels": {name: w.by_quantile() for name, w in self.channels.items()},
            "arms": {
                a: {"margin_mm": t.margin_mm, "speed_mm_s": t.speed_mm_s}
                for a, t in self.arms.items()
            },
            "warnings": list(self.warnings),
            "latch": None if self.latch is None else asdict(self.latch),
            "heartbeat_stop_limit_s": self.heartbeat_stop_limit_s,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProcedureSnapshot:
        """Read `to_json()` back (e.g. from `/status`). Raises KeyError or TypeError when
        `d` is not one."""
        latch = d["latch"]
        return cls(
            state=d["state"],
            pack=d["pack"],
            sites={n: SiteSnapshot.from_json(s) for n, s in d["sites"].items()},
            channels={
                n: WindowSnapshot(*(q[k] for k in QUANTILES)) for n, q in d["channels"].items()
            },
            arms={n: ArmSnapshot(a["margin_mm"], a["speed_mm_s"]) for n, a in d["arms"].items()},
            warnings=tuple(d["warnings"]),
            latch=None if latch is None else LatchSnapshot(**latch),
            heartbeat_stop_limit_s=d.get("heartbeat_stop_limit_s"),
        )
