"""Dashboards-as-code for telesafe: Grafana JSON built with grafana-foundation-sdk.

``python -m monitor.dashboards generate`` (or ``telesafe dashboards generate``) writes the
committed ``dashboards/*.json``; ``telesafe dashboards push`` uploads them with
grafana-client. :func:`all_queries` lists every panel's PromQL for end-to-end checks.
Thresholds come from the default policy pack (``rules/default.yaml``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .definitions import all_dashboards, audit, default_pack, fleet, live_procedure
from .kit import JSON, Dashboard, to_json, uid_of

__all__ = [
    "DEFAULT_OUT_DIR",
    "JSON",
    "Dashboard",
    "PanelQuery",
    "all_dashboards",
    "all_queries",
    "audit",
    "dashboard_json",
    "default_pack",
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
    return f"{uid_of(dashboard)}.json"


def dashboard_json(dashboard: Dashboard) -> JSON:
    """The dashboard as plain JSON data, as Grafana stores it."""
    return to_json(dashboard)


def render_json(dashboard: Dashboard) -> str:
    """Deterministic JSON text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(to_json(dashboard), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


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
        for panel in to_json(d)["panels"]:
            for target in panel.get("targets", []):
                out.append(PanelQuery(uid_of(d), panel["title"], target["refId"], target["expr"]))
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
