"""Terminal view of a simulation: one line per notable event, a summary table at the end."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

_STYLE = {
    "start": "green",
    "end": "green",
    "fault": "yellow",
    "fault-effective": "yellow",
    "fault-end": "yellow",
    "fault-cleared": "yellow",
    "command": "bold red",
    "command-resend": "red",
    "ack": "cyan",
    "state": "cyan",
    "rearm": "bold green",
    "deadman-lost": "magenta",
    "deadman-resumed": "magenta",
    "error": "bold red",
}


def format_event(ev: dict[str, Any]) -> str:
    """One plain-text line for an event dict (no markup)."""
    name = str(ev.get("event"))
    t = float(ev.get("t", ev.get("sim_t", 0.0)))
    head = f"{ev.get('procedure', '-'):<14} t={t:7.3f}s  "
    if name == "start":
        pol = ev.get("policy")
        return head + "procedure_start sent" + (f" (policy {pol})" if pol else "")
    if name == "end":
        return head + f"procedure_end sent ({ev.get('reason')})"
    if name == "fault":
        extra = ""
        if "eta_s" in ev:
            extra = f", tip arrives in ~{ev['eta_s']}s"
        if "garbage" in ev:
            extra = f": {', '.join(ev['garbage'])}"
        return head + f"FAULT injected {ev.get('fault')}{extra}"
    if name == "fault-effective":
        return head + f"fault takes effect: {ev.get('detail')} at {ev.get('p_mm')} mm"
    if name == "fault-end":
        return head + f"fault over: {ev.get('fault')}"
    if name == "fault-cleared":
        return head + f"fault cleared by re-arm: {ev.get('fault')}"
    if name == "command":
        return (
            head + f"SAFE_STOP received {str(ev.get('command_id'))[:8]}… rule {ev.get('rule')}: "
            f"{ev.get('reason')}"
        )
    if name == "command-resend":
        return head + f"safe_stop re-send {str(ev.get('command_id'))[:8]}… (same command)"
    if name == "ack":
        lost = " (lost: site silenced)" if ev.get("lost") else ""
        return head + f"safe_stop_ack #{ev.get('n')} for {str(ev.get('command_id'))[:8]}…{lost}"
    if name == "state":
        return head + f"robot state {ev.get('old')} -> {ev.get('new')}"
    if name == "rearm":
        return head + f"REARM by {ev.get('operator')}: {ev.get('reason')}"
    if name == "deadman-lost":
        why = "never heard" if ev.get("never_heard") else f"silent {ev.get('silent_ms')} ms"
        return head + f"monitor dead-man signal LOST ({why})"
    if name == "deadman-resumed":
        return head + f"monitor dead-man signal resumed (status {ev.get('status')})"
    if name == "error":
        return head + f"ERROR in {ev.get('where')}: {ev.get('error')}"
    return head + name


class LiveView:
    """Prints events as they happen (called from the simulator's threads)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)

    def __call__(self, ev: dict[str, Any]) -> None:
        style = _STYLE.get(str(ev.get("event")), "")
        self.console.print(format_event(ev), style=style, markup=False, soft_wrap=True)


def summary_tables(summary: dict[str, Any]) -> list[Table]:
    records = summary["records"]
    types = sorted({k for site in records.values() for k in site})
    t1 = Table(title="records sent")
    t1.add_column("type")
    for site in ("console", "robot"):
        t1.add_column(site, justify="right")
    for ty in types:
        t1.add_row(ty, *(str(records.get(s, {}).get(ty, 0)) for s in ("console", "robot")))
    t2 = Table(title="procedures")
    for col in ("procedure", "state", "stops", "commands rx", "acks", "rearms", "fault→stop"):
        t2.add_column(col)
    for pid, p in summary["procedures"].items():
        lat = p["fault_to_stop_ms"]
        t2.add_row(
            pid,
            p["state"],
            str(p["safe_stops"]),
            str(p["commands_received"]),
            str(p["acks_sent"]),
            str(p["rearms"]),
            "-" if lat is None else f"{lat:.0f} ms",
        )
    return [t1, t2]


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    c = console or Console(highlight=False)
    for t in summary_tables(summary):
        c.print(t)
    lag = summary["scheduler_lag_ms"]
    c.print(
        f"{summary['records_total']} records in {summary['duration_s']:.1f} s; "
        f"CPU {summary['cpu_s']:.2f} s ({summary['cpu_percent']}% of one core); "
        f"scheduler lateness p50/p99/max {lag['p50']}/{lag['p99']}/"
        f"{summary['scheduler_max_lag_ms']:.0f} ms; send errors {summary['send_errors']}",
        markup=False,
        soft_wrap=True,
    )
