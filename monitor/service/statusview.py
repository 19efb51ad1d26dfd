"""A rich table of a monitor's procedures, for `telesafe status` and the demo."""

from __future__ import annotations

from typing import Any

from rich.table import Table

_STATE_STYLE = {
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
    for pid, p in sorted(snap.get("procedures", {}).items()):
        sites, ch = p["sites"], p["channels"]
        latch = p.get("latch")
        stop = (
            "–"
            if not latch
            else (
                f"{latch['rule']} · ack {latch['ack'] or 'pending'} · re-sends {latch['resends']}"
            )
        )
        st = p["state"]
        t.add_row(
            pid,
            f"[{_STATE_STYLE.get(st, '')}]{st}",
            p["pack"],
            _ms(sites["console"]["heartbeat_age_s"], 1e3),
            _ms(sites["robot"]["heartbeat_age_s"], 1e3),
            _ms(ch["control"]["0.95"]),
            _ms(ch["video"]["0.95"]),
            ", ".join(p["warnings"]) or "–",
            stop,
        )
    return t
