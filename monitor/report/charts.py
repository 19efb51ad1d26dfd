"""SVG charts for the report, drawn with matplotlib's object API (no pyplot state).

Each function returns an `<svg>` element as text, ready to inline in the HTML page (no
XML prolog, no fixed width/height: the page's CSS sizes it), or None when there is
nothing to draw. Text stays text (`svg.fonttype: none`), so the charts use the page's
fonts and remain searchable; `svg.hashsalt` is set per chart so element ids are stable
and do not collide between the charts inlined in one page.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from monitor.report.model import ProcedureReport

# Palette shared with the page's CSS.
INK = "#1f2933"
MUTED = "#616e7c"
GRID = "#e4e7eb"
BLUE = "#2563eb"
TEAL = "#0d9488"
AMBER = "#d97706"
RED = "#dc2626"
GREEN = "#16a34a"
VIOLET = "#7c3aed"
SLATE = "#94a3b8"

STATE_COLOURS = {
    "pending": "#cbd5e1",
    "armed": "#86efac",
    "warning": "#fcd34d",
    "safe_stop_latched": "#f87171",
    "safe_stopped": "#fca5a5",
    "ended": "#e2e8f0",
}
SITE_COLOURS = {"console": BLUE, "robot": TEAL}
# The rules each chart is about: a chart shades only the latches of its own rules (a
# tool-speed safe-stop shaded on the video latency chart would read as a latency problem).
CHART_RULES = {
    "control": frozenset({"control_latency"}),
    "video": frozenset({"video_latency"}),
    "heartbeat": frozenset({"heartbeat_silence", "first_heartbeat"}),
}

_RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
    "font.size": 9,
    "axes.edgecolor": SLATE,
    "axes.labelcolor": MUTED,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlecolor": INK,
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
    "legend.fontsize": 8,
}


@contextmanager
def _style(salt: str) -> Iterator[None]:
    rc: Any = {**_RC, "svg.hashsalt": f"telesafe-{salt}"}
    with matplotlib.rc_context(rc):
        yield


def _svg(fig: Figure, title: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    start = text.find("<svg")
    text = text[start:]
    # Let CSS size the chart; keep the viewBox so it scales.
    head_end = text.find(">")
    head = re.sub(r'\s(width|height)="[^"]*"', "", text[:head_end])
    head += f' role="img" aria-label="{_attr(title)}" class="chart"'
    return head + text[head_end:]


def _attr(s: str) -> str:
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def _t(report: ProcedureReport, t_ns: int) -> float:
    return (t_ns - report.opened_utc_ns) / 1e9


def _x_extent(report: ProcedureReport) -> tuple[float, float]:
    return 0.0, max(_t(report, report.end_utc_ns), _t(report, report.last_utc_ns), 1.0)


def latched_spans(
    report: ProcedureReport, rules: frozenset[str] | None = None
) -> list[tuple[float, float]]:
    """Seconds-since-start intervals in which a safe-stop was latched (only those tripped
    by one of ``rules``, if given)."""
    spans = []
    end = _x_extent(report)[1]
    for s in report.stops:
        if rules is not None and s.rule not in rules:
            continue
        t0 = _t(report, s.t_utc_ns)
        t1 = _t(report, s.rearm.t_utc_ns) if s.rearm else end
        spans.append((t0, t1))
    return spans


def _shade_stops(ax: Any, report: ProcedureReport, rules: frozenset[str]) -> None:
    for i, (a, b) in enumerate(latched_spans(report, rules)):
        ax.axvspan(
            a,
            b,
            color=RED,
            alpha=0.07,
            lw=0,
            label="safe-stop latched" if i == 0 else None,
        )
        ax.axvline(a, color=RED, lw=0.8, alpha=0.6)


def latency_chart(report: ProcedureReport) -> str | None:
    """p50/p95 per 1 s window for control and video, with warn/stop thresholds."""
    chans = [
        c for c in ("control", "video") if report.channels.get(c) and report.channels[c].points
    ]
    if not chans:
        return None
    with _style("latency"):
        fig = Figure(figsize=(9.2, 2.5 * len(chans) + 0.4), layout="constrained")
        axes = fig.subplots(len(chans), 1, sharex=True, squeeze=False)[:, 0]
        x0, x1 = _x_extent(report)
        for i, (ax, name) in enumerate(zip(axes, chans, strict=True)):
            cs = report.channels[name]
            xs = [_t(report, p.t_utc_ns) for p in cs.points]
            colour = BLUE if name == "control" else TEAL
            _shade_stops(ax, report, CHART_RULES[name])
            ax.plot(
                xs,
                [p.p50 for p in cs.points],
                color=colour,
                lw=1.2,
                alpha=0.55,
                marker="o",
                ms=2.5,
                label="p50",
            )
            ax.plot(
                xs, [p.p95 for p in cs.points], color=colour, lw=2.0, marker="o", ms=3, label="p95"
            )
            top = max(p.max for p in cs.points)
            if cs.warn_ms is not None:
                ax.axhline(
                    cs.warn_ms, color=AMBER, lw=1.2, ls=(0, (5, 3)), label=f"warn {cs.warn_ms:g} ms"
                )
                top = max(top, cs.warn_ms)
            if cs.stop_ms is not None:
                ax.axhline(
                    cs.stop_ms,
                    color=RED,
                    lw=1.2,
                    ls=(0, (5, 3)),
                    label=f"safe-stop {cs.stop_ms:g} ms",
                )
                top = max(top, cs.stop_ms)
            ax.set_ylim(0, top * 1.12)
            ax.set_xlim(x0, x1)
            ax.set_ylabel("ms")
            ax.set_title(f"{name.capitalize()} latency, per 1 s window")
            ax.grid(axis="y", color=GRID, lw=0.8)
            ax.set_axisbelow(True)
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2)
            if i == len(chans) - 1:
                ax.set_xlabel("seconds since the procedure was opened")
        return _svg(fig, "Latency over time")


def heartbeat_chart(report: ProcedureReport) -> str | None:
    """Every recorded heartbeat gap (longer than the warn limit), per site."""
    gaps = [g for s in report.sites.values() for g in s.gaps]
    if not gaps:
        return None
    with _style("heartbeat"):
        fig = Figure(figsize=(9.2, 2.6), layout="constrained")
        ax = fig.subplots()
        _shade_stops(ax, report, CHART_RULES["heartbeat"])
        for site, st in report.sites.items():
            if not st.gaps:
                continue
            xs = [_t(report, g.t_utc_ns) for g in st.gaps]
            ys = [g.gap_ms for g in st.gaps]
            colour = SITE_COLOURS.get(site, VIOLET)
            ax.vlines(xs, 0, ys, color=colour, lw=1.0, alpha=0.5)
            ax.scatter(xs, ys, s=16, color=colour, zorder=3, label=f"{site} gap")
        pol = report.policy
        top = max(g.gap_ms for g in gaps)
        if pol is not None and pol.heartbeat_warn_ms is not None:
            ax.axhline(
                pol.heartbeat_warn_ms,
                color=AMBER,
                lw=1.2,
                ls=(0, (5, 3)),
                label=f"warn {pol.heartbeat_warn_ms:g} ms",
            )
        if pol is not None and pol.heartbeat_stop_ms is not None:
            ax.axhline(
                pol.heartbeat_stop_ms,
                color=RED,
                lw=1.2,
                ls=(0, (5, 3)),
                label=f"safe-stop {pol.heartbeat_stop_ms:g} ms",
            )
            top = max(top, pol.heartbeat_stop_ms)
        ax.set_ylim(0, top * 1.12)
        ax.set_xlim(*_x_extent(report))
        ax.set_ylabel("gap, ms")
        ax.set_xlabel("seconds since the procedure was opened")
        ax.set_title("Heartbeat gaps")
        ax.grid(axis="y", color=GRID, lw=0.8)
        ax.set_axisbelow(True)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2)
        return _svg(fig, "Heartbeat gaps")


_LANES = ("State", "Warnings", "Safe-stops", "Operator")


def timeline_chart(report: ProcedureReport) -> str | None:
    """Lanes: procedure state, warnings (raised → cleared), safe-stops (issued, re-sends,
    acknowledgement, re-arm) and operator actions."""
    x0, x1 = _x_extent(report)
    with _style("timeline"):
        fig = Figure(figsize=(9.2, 2.7), layout="constrained")
        ax = fig.subplots()
        lane = {name: len(_LANES) - 1 - i for i, name in enumerate(_LANES)}
        h = 0.56

        # State band.
        states = report.states
        seen_states: dict[str, None] = {}
        for i, (t, st) in enumerate(states):
            a = _t(report, t)
            b = _t(report, states[i + 1][0]) if i + 1 < len(states) else x1
            ax.broken_barh(
                [(a, max(b - a, 0.0))],
                (lane["State"] - h / 2, h),
                color=STATE_COLOURS.get(st, SLATE),
                lw=0,
                label=st.replace("_", " ") if st not in seen_states else None,
            )
            seen_states[st] = None

        # Warnings: raised → cleared (or end).
        open_w: dict[tuple[str | None, str | None], float] = {}
        spans: list[tuple[float, float]] = []
        for it in report.timeline:
            key = (it.rule, it.subject)
            if it.event == "warning_raised":
                open_w.setdefault(key, _t(report, it.t_utc_ns))
            elif it.event == "warning_cleared" and key in open_w:
                a = open_w.pop(key)
                spans.append((a, _t(report, it.t_utc_ns) - a))
        spans.extend((a, x1 - a) for a in open_w.values())
        if spans:
            ax.broken_barh(spans, (lane["Warnings"] - h / 2, h), color=AMBER, alpha=0.35, lw=0)
        raised = [_t(report, it.t_utc_ns) for it in report.timeline if it.event == "warning_raised"]
        ax.scatter(
            raised, [lane["Warnings"]] * len(raised), marker="|", s=120, color=AMBER, lw=2, zorder=3
        )

        # Safe-stops.
        y = lane["Safe-stops"]
        for a, b in latched_spans(report):
            ax.broken_barh([(a, b - a)], (y - h / 2, h), color=RED, alpha=0.12, lw=0)
        _points(ax, report, ("safe_stop_resent",), y, marker="|", s=60, color=RED, lw=1, alpha=0.6)
        _points(
            ax,
            report,
            ("safe_stop_issued", "command_reconciled"),
            y,
            marker="v",
            s=70,
            color=RED,
            label="safe-stop issued",
        )
        _points(ax, report, ("breach_while_latched",), y, marker="x", s=40, color=RED)
        _points(
            ax,
            report,
            ("safe_stop_escalated",),
            y,
            marker="*",
            s=110,
            color="#7f1d1d",
            label="escalated",
        )
        _points(
            ax,
            report,
            ("safe_stop_acknowledged",),
            y,
            marker="o",
            s=46,
            color=GREEN,
            edgecolors="white",
            linewidths=0.8,
            label="acknowledged",
        )
        _points(ax, report, ("rearm_accepted",), y, marker="D", s=40, color=BLUE, label="re-armed")

        # Operator lane.
        y = lane["Operator"]
        _points(ax, report, ("rearm_accepted",), y, marker="D", s=40, color=BLUE)
        _points(
            ax,
            report,
            ("rearm_rejected",),
            y,
            marker="D",
            s=40,
            color="white",
            edgecolors=BLUE,
            linewidths=1.2,
            label="re-arm rejected",
        )
        _points(
            ax, report, ("operator_note",), y, marker="s", s=36, color=VIOLET, label="operator note"
        )

        ax.set_yticks([lane[n] for n in _LANES], list(_LANES))
        ax.set_ylim(-0.6, len(_LANES) - 0.4)
        ax.set_xlim(x0, x1)
        ax.set_xlabel("seconds since the procedure was opened")
        ax.set_title("Procedure timeline")
        ax.grid(axis="x", color=GRID, lw=0.8)
        ax.set_axisbelow(True)
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.0, 1.02),
            borderaxespad=0.2,
            handlelength=1.2,
            labelspacing=0.35,
        )
        return _svg(fig, "Procedure timeline")


def _points(ax: Any, report: ProcedureReport, events: tuple[str, ...], y: float, **kw: Any) -> None:
    xs = [_t(report, it.t_utc_ns) for it in report.timeline if it.event in events]
    if not xs:
        kw.pop("label", None)
        return
    ax.scatter(xs, [y] * len(xs), zorder=4, **kw)


def all_charts(report: ProcedureReport) -> dict[str, str | None]:
    return {
        "timeline": timeline_chart(report),
        "latency": latency_chart(report),
        "heartbeat": heartbeat_chart(report),
    }
