"""Procedure views as the monitor publishes them (monitor.metrics.ProcedureView), for tests
that need the per-procedure series without running a monitor."""

from __future__ import annotations

import time
from typing import Any

from monitor.metrics import ProcedureView


def procedure(
    state: str = "armed",
    latch_rule: str | None = None,
    age_s: float = 0.02,
    warnings: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One procedure of an engine snapshot, every signal present."""
    site = {
        "heartbeat_age_s": age_s,
        "jitter_ms": 2.0,
        "loss_ratio": 0.0,
        "duplicates": 0,
        "lost": 0,
        "stale": 0,
        "state": "operating",
    }
    return {
        "state": state,
        "pack": "default",
        "sites": {"console": dict(site), "robot": dict(site)},
        "channels": {c: {"0.5": 48.0, "0.95": 60.0, "0.99": 70.0} for c in ("control", "video")},
        "arms": {"psm1": {"margin_mm": 30.0, "speed_mm_s": 50.0}},
        "warnings": list(warnings),
        "latch": None
        if latch_rule is None
        else {
            "rule": latch_rule,
            "command_id": "c-1",
            "issued_at": 0,
            "ended": False,
            "resends": 0,
            "ack": None,
            "escalated": False,
        },
    }


def view(**procedures: dict[str, Any]) -> ProcedureView:
    """A view of these procedures (keyword = procedure id), taken now."""
    return ProcedureView(
        time.monotonic_ns(), dict(procedures), dict.fromkeys(procedures, 0.3), frozenset()
    )
