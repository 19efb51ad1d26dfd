"""A rich table of a monitor's procedures, for `telesafe status` and the demo."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from monitor.snapshot import ProcedureSnapshot, State

_STATE_STYLE: dict[State, str] = {
    "armed": "green",
    "pending": "cyan",
    "warning": "yellow",
    "safe_stop_latched": "bold red",
    "safe_stopped": "red",
    "ended": "dim",
}


def _ms(v: float | None, scale: float = 1.0) -> str:
    return "–" if v is None else f"{v * scale:.0f}"


def render(snap: dict[str, Any]) -> Table:
    """The table of a `/status` answer (its `procedures` as `ProcedureSnapshot.to_json()`)."""
    t = Table(
        title=f"telesafe monitor {snap.get('monitor_id', '?')} — "
        f"{len(snap.get('procedures', {}))} procedure(s)"
    )
    for col in (
        "procedure",
        "state",
        "pack",
        "console hb ms",
        "robot hb ms",
        "control p95 ms",
        "video p95 ms",
        "warnings",
        "safe-stop",
    ):
        t.add_column(col)
    for pid, raw in sorted(snap.get("procedures", {}).items()):
        p = ProcedureSnapshot.from_json(raw)
        latch = p.latch
        stop = (
            "–"
            if latch is None
            else f"{latch.rule} · ack {latch.ack or 'pending'} · re-sends {latch.resends}"
        )
        t.add_row(
            pid,
            f"[{_STATE_STYLE.get(p.state, '')}]{p.state}",
            p.pack,
            _ms(p.sites["console"].heartbeat_age_s, 1e3),
            _ms(p.sites["robot"].heartbeat_age_s, 1e3),
            _ms(p.channels["control"].p95),
            _ms(p.channels["video"].p95),
            ", ".join(p.warnings) or "–",
            stop,
        )
    return t
