"""Dashboards-as-code for telesafe: Grafana JSON generated from typed Python.

``python -m monitor.dashboards generate`` (or ``telesafe dashboards generate``) writes the
committed ``dashboards/*.json``; ``telesafe dashboards push`` uploads them with
grafana-client. :func:`all_queries` lists every panel's PromQL for end-to-end checks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .definitions import all_dashboards, audit, fleet, live_procedure
from .model import JSON, Dashboard

__all__ = [
    "DEFAULT_OUT_DIR",
    "PanelQuery",
    "all_dashboards",
    "all_queries",
    "audit",
    "dashboard_json",
    "file_name",
    "fleet",
    "generate",
    "live_procedure",
    "render_json",
    "render_query",
]

# The repository's dashboards/ directory (monitor/dashboards/__init__.py -> repo root).
DEFAULT_OUT_DIR = Path(__file__).resolve().parents[2] / "dashboards"


@dataclass(frozen=True)
class PanelQuery:
    dashboard_uid: str
    panel_title: str
    ref_id: str
    expr: str


def file_name(dashboard: Dashboard) -> str:
    return f"{dashboard.uid}.json"


def dashboard_json(dashboard: Dashboard) -> JSON:
    return dashboard.to_json()


def render_json(dashboard: Dashboard) -> str:
    """Deterministic JSON text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(dashboard.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate(out_dir: Path = DEFAULT_OUT_DIR) -> list[Path]:
    """Write every dashboard to ``out_dir``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for d in all_dashboards():
        path = out_dir / file_name(d)
        path.write_text(render_json(d), encoding="utf-8")
        written.append(path)
    return written


def all_queries() -> list[PanelQuery]:
    """Every PromQL expression of every panel of every dashboard, as Grafana stores it."""
    out = []
    for d in all_dashboards():
        for panel in d.to_json()["panels"]:
            for target in panel.get("targets", []):
                out.append(PanelQuery(d.uid, panel["title"], target["refId"], target["expr"]))
    return out


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def render_query(
    expr: str,
    variables: dict[str, str] | None = None,
    rate_interval: str = "1m",
    range_: str = "5m",
    interval: str = "15s",
) -> str:
    """Substitute Grafana's built-in and template variables so Prometheus can run ``expr``."""
    values = {
        "__rate_interval": rate_interval,
        "__range": range_,
        "__interval": interval,
        **(variables or {}),
    }

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for dashboard variable ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(sub, expr)
