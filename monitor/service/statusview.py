"""`telesafe status`: a rich table of a running monitor's procedures, live.

The procedure id and its state are what an operator acts on: they are never truncated.
On a wide terminal every figure has its column; below `WIDE` columns each procedure is
one line (id, state, heartbeat ages, latency p95s) with its pack, warnings and safe-stop
wrapped below it.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.styled import Styled
from rich.table import Table
from rich.text import Text

from monitor.errors import EXIT_UNAVAILABLE, ServiceLayerError

WIDE = 120  # terminal columns from which every figure gets its own column

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


def _stop(latch: dict[str, Any] | None) -> str:
    if not latch:
        return "–"
    return f"{latch['rule']} · ack {latch['ack'] or 'pending'} · re-sends {latch['resends']}"


def ago(seconds: float) -> str:
    """'4 s ago', '3 min ago', '2 h ago'."""
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def render(
    snap: dict[str, Any], width: int = WIDE, unreachable: tuple[str, float] | None = None
) -> RenderableType:
    """The view of `snap` (a monitor's /status) for a terminal `width` columns wide.
    `unreachable`: (why, seconds since `snap` was fetched) when the monitor stopped
    answering; the view is kept, dimmed, under a "last seen" line."""
    procs = snap.get("procedures", {})
    title = f"telesafe monitor {snap.get('monitor_id', '?')} — {len(procs)} procedure(s)"
    rows = [_row(pid, p) for pid, p in sorted(procs.items())]
    view = _wide(title, rows) if width >= WIDE else _narrow(title, rows, width)
    if unreachable is None:
        return view
    why, age = unreachable
    return Group(
        Text(f"monitor unreachable ({why}); last seen {ago(age)}", style="bold red"),
        Styled(view, "dim"),
    )


@dataclass(frozen=True)
class _Row:
    pid: str
    state: str
    pack: str
    hb: tuple[str, str]  # console, robot heartbeat age, ms
    p95: tuple[str, str]  # control, video p95 latency, ms
    warnings: str
    stop: str


def _row(pid: str, p: dict[str, Any]) -> _Row:
    sites, ch = p["sites"], p["channels"]
    return _Row(
        pid,
        p["state"],
        p["pack"],
        (
            _ms(sites["console"]["heartbeat_age_s"], 1e3),
            _ms(sites["robot"]["heartbeat_age_s"], 1e3),
        ),
        (_ms(ch["control"]["0.95"]), _ms(ch["video"]["0.95"])),
        ", ".join(p["warnings"]),
        _stop(p.get("latch")) if p.get("latch") else "",
    )


def _state(st: str) -> Text:
    return Text(st, style=_STATE_STYLE.get(st, ""))


def _wide(title: str, rows: list[_Row]) -> Table:
    t = Table(title=title, box=box.HEAVY_HEAD)
    t.add_column("procedure", no_wrap=True)
    t.add_column("state", no_wrap=True)
    t.add_column("pack")
    for col in ("console\nhb ms", "robot\nhb ms", "control\np95 ms", "video\np95 ms"):
        t.add_column(col, justify="right")
    t.add_column("warnings", ratio=1, overflow="fold")
    t.add_column("safe-stop", ratio=1)
    for r in rows:
        t.add_row(r.pid, _state(r.state), r.pack, *r.hb, *r.p95, r.warnings or "–", r.stop or "–")
    return t


def _narrow(title: str, rows: list[_Row], width: int) -> Group:
    """One line per procedure (id, state, heartbeat ages, p95s), its pack, warnings and
    safe-stop wrapped below it: the id and state keep their full width."""
    hb = [f"{r.hb[0]}/{r.hb[1]}" for r in rows]
    p95 = [f"{r.p95[0]}/{r.p95[1]}" for r in rows]
    w = [
        max([len("procedure"), *(len(r.pid) for r in rows)]),
        max([len("state"), *(len(r.state) for r in rows)]),
        max([len("hb ms"), *map(len, hb)]),
        max([len("p95 ms"), *map(len, p95)]),
    ]
    head = Text(
        f"{'procedure':<{w[0]}}  {'state':<{w[1]}}  {'hb ms':>{w[2]}}  {'p95 ms':>{w[3]}}",
        style="bold",
        no_wrap=True,
        overflow="crop",
    )
    legend = "hb: console/robot heartbeat age · p95: control/video latency"
    lines: list[RenderableType] = [Text(title, style="italic"), Text(legend, style="dim"), head]
    for r, h, q in zip(rows, hb, p95, strict=True):
        line = Text(no_wrap=True, overflow="crop")
        line.append(f"{r.pid:<{w[0]}}  ")
        line.append_text(_state(r.state))
        line.append(f"{'':<{w[1] - len(r.state)}}  {h:>{w[2]}}  {q:>{w[3]}}")
        lines.append(line)
        notes = Text(f"pack {r.pack}")
        if r.warnings:
            notes.append(" · ").append("warn ", style="yellow").append(r.warnings)
        if r.stop:
            notes.append(" · ").append("stop ", style="red").append(r.stop)
        lines.append(Padding(notes, (0, 0, 0, 4)))
    return Group(*lines)


class MonitorUnreachable(ServiceLayerError):
    """No monitor answered at the /status URL."""

    exit_code = EXIT_UNAVAILABLE


def _reason(exc: Exception) -> str:
    """'Connection refused', 'timed out', 'HTTP 404': why a fetch failed, in a few words."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(why, OSError) and why.strerror:
        return why.strerror
    return str(why) or type(why).__name__


def _fetch(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as resp:
        snap = json.loads(resp.read())
    if not isinstance(snap, dict):
        raise ValueError("not a monitor's /status")
    return snap


def status(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/") + "/status"
    try:
        snap = _fetch(url)
    except (OSError, ValueError) as exc:  # URLError is an OSError
        raise MonitorUnreachable(f"cannot reach a monitor at {url}: {_reason(exc)}") from None
    if args.json:
        print(json.dumps(snap, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if args.once:
        console.print(render(snap, console.width))
        return 0
    seen = time.monotonic()  # when `snap` was fetched
    with Live(render(snap, console.width), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(args.interval)
                try:
                    snap, seen = _fetch(url), time.monotonic()
                    live.update(render(snap, console.width))
                except (OSError, ValueError) as exc:  # keep the last view, say how old it is
                    away = (_reason(exc), time.monotonic() - seen)
                    live.update(render(snap, console.width, unreachable=away))
        except KeyboardInterrupt:
            return 0
