"""Render a `ProcedureReport` as one self-contained HTML page (and optionally a PDF).

The template (`report.html`, Jinja2 with autoescaping) carries its CSS inline; the charts
are inline SVG. Nothing is loaded from outside the file, so the page can be archived,
mailed or opened offline years later exactly as it was written.
"""

from __future__ import annotations

import importlib
import importlib.resources
import json
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from monitor import __version__
from monitor.errors import ReportLayerError
from monitor.report.charts import all_charts
from monitor.report.model import RATIO_RULES, ProcedureReport, fmt_utc, is_number, percent
from monitor.report.summary import glossary, link_line, summary

TEMPLATE = "report.html"
GAP_LIST_MAX = 120  # heartbeat gaps listed per site; the chart shows all of them


class PdfUnavailable(ReportLayerError, RuntimeError):
    """WeasyPrint (the optional `pdf` extra) is not installed or cannot load."""


def _ms(v: Any, digits: int = 1) -> str:
    if v is None:
        return "—"
    try:
        return f"{float(v):,.{digits}f}"
    except (TypeError, ValueError):
        return str(v)


def _rel(report: ProcedureReport, t_ns: int | None) -> str:
    if t_ns is None:
        return "—"
    return f"T+{(t_ns - report.opened_utc_ns) / 1e9:,.3f} s"


def _clock(t_ns: int | None) -> str:
    """HH:MM:SS.mmm UTC (the date is in the header)."""
    if t_ns is None:
        return "—"
    return fmt_utc(t_ns).split(" ", 1)[1].removesuffix(" UTC")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s"


def _value(v: Any, rule: str | None = None) -> str:
    """Observed values and thresholds: numbers, or small objects such as
    {"arm": "psm1", "margin_mm": -2.1} and {"box": {"min": [...], "max": [...]}}. Values of
    a ratio rule (link loss) read as percentages."""
    if v is None:
        return "—"
    if rule in RATIO_RULES and is_number(v):
        return percent(v)
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int | float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        if set(v) == {"min", "max"}:
            return f"{_value(v['min'])} – {_value(v['max'])}"
        return ", ".join(_field(k, x) for k, x in v.items())
    return str(v)


# Unit suffixes of ledger field names: {"speed_mm_s": 142} reads "speed 142 mm/s".
_UNITS = (("_mm_s", "mm/s"), ("_mm", "mm"), ("_ms", "ms"), ("_n", "N"))


def _field(key: str, v: Any) -> str:
    for suffix, unit in _UNITS:
        if key.endswith(suffix) and is_number(v):
            return f"{key.removesuffix(suffix).replace('_', ' ')} {_value(v)} {unit}"
    return f"{key.replace('_', ' ')} {_value(v)}"


def _short(cid: str | None) -> str:
    return "—" if not cid else cid[:8] + "…"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ms=_ms,
        utc=fmt_utc,
        clock=_clock,
        value=_value,
        short=_short,
        duration=_duration,
        json=lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True),
    )
    return env


def render_html(report: ProcedureReport, charts: dict[str, str | None] | None = None) -> str:
    if charts is None:
        charts = all_charts(report)
    src = importlib.resources.files("monitor.report").joinpath(TEMPLATE).read_text("utf-8")
    tpl = environment().from_string(src)
    acks = [s.ack.delay_ms for s in report.stops if s.ack and s.ack.delay_ms is not None]
    return tpl.render(
        r=report,
        charts={k: Markup(v) if v else None for k, v in charts.items()},
        rel=lambda t: _rel(report, t),
        version=__version__,
        worst_ack_ms=max(acks) if acks else None,
        unacked=[s for s in report.stops if s.ack is None],
        gap_list_max=GAP_LIST_MAX,
        gap_total=sum(s.gap_count for s in report.sites.values()),
        summary=summary(report),
        glossary=glossary(report),
        link=link_line(report),
    )


def _weasyprint() -> Any:
    return importlib.import_module("weasyprint")


def pdf_available() -> bool:
    try:
        _weasyprint()
    except Exception:  # ImportError, or OSError when its native libraries are missing
        return False
    return True


def write_pdf(html: str, out: Path) -> None:
    try:
        weasyprint = _weasyprint()
    except Exception as exc:
        raise PdfUnavailable(
            "PDF output needs WeasyPrint, which is not installed or cannot load "
            f"({exc.__class__.__name__}: {exc}). Install the optional extra: "
            "pip install 'telesafe[pdf]' (or print the HTML report to PDF from a browser)."
        ) from exc
    weasyprint.HTML(string=html).write_pdf(str(out))
