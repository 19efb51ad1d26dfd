"""Procedure views as the monitor publishes them (monitor.metrics.ProcedureView), for tests
that need the per-procedure series without running a monitor."""

from __future__ import annotations

import time

from monitor.metrics import ProcedureView
from monitor.snapshot import (
    ArmSnapshot,
    LatchSnapshot,
    ProcedureSnapshot,
    SiteSnapshot,
    State,
    WindowSnapshot,
)


def procedure(
    state: State = "armed",
    latch_rule: str | None = None,
    age_s: float = 0.02,
    warnings: tuple[str, ...] = (),
) -> ProcedureSnapshot:
    """One procedure of an engine snapshot, every signal present."""
    site = SiteSnapshot(
        heartbeat_age_s=age_s,
        jitter_ms=2.0,
        loss_ratio=0.0,
        duplicates=0,
        lost=0,
        stale=0,
        state="operating",
    )
    return ProcedureSnapshot(
        state=state,
        pack="default",
        sites={"console": site, "robot": site},
        channels={c: WindowSnapshot(48.0, 60.0, 70.0) for c in ("control", "video")},
        arms={"psm1": ArmSnapshot(margin_mm=30.0, speed_mm_s=50.0)},
        warnings=warnings,
        latch=None
        if latch_rule is None
        else LatchSnapshot(
            rule=latch_rule,
            command_id="c-1",
            issued_at=0,
            ended=False,
            resends=0,
            ack=None,
            escalated=False,
        ),
        heartbeat_stop_limit_s=0.3,
    )


def view(**procedures: ProcedureSnapshot) -> ProcedureView:
    """A view of these procedures (keyword = procedure id), taken now."""
    return ProcedureView(time.monotonic_ns(), dict(procedures), frozenset())
