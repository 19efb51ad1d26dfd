"""Minimal typed builders for Grafana dashboard JSON (classic model, schemaVersion 39).

Plain dataclasses rather than grafanalib/grafana-foundation-sdk: the dashboards use a
handful of panel types, the JSON stays readable in review, and nothing here depends on a
library pinned to one Grafana minor. Every builder returns plain ``dict`` JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

SCHEMA_VERSION = 39
GRID_WIDTH = 24
DATASOURCE: JSON = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel."""

    expr: str
    legend: str = "__auto"
    instant: bool = False

    def to_json(self, ref_id: str) -> JSON:
        return {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": self.expr,
            "instant": self.instant,
            "legendFormat": self.legend,
            "range": not self.instant,
            "refId": ref_id,
        }


@dataclass(frozen=True)
class Threshold:
    """A threshold step: from ``value`` upwards the colour is ``color`` (None = base)."""

    value: float | None
    color: str


GREEN_YELLOW_RED = "green-yellow-red"


def steps(*pairs: tuple[float | None, str]) -> tuple[Threshold, ...]:
    return tuple(Threshold(v, c) for v, c in pairs)


def upper_bands(warn: float, crit: float) -> tuple[Threshold, ...]:
    """Green below ``warn``, yellow from ``warn``, red from ``crit``."""
    return steps((None, "green"), (warn, "yellow"), (crit, "red"))


@dataclass
class Panel:
    """A panel; ``kind`` is the Grafana panel type."""

    title: str
    kind: str
    targets: list[Target]
    width: int = 12
    height: int = 8
    unit: str = "short"
    description: str = ""
    thresholds: tuple[Threshold, ...] = ()
    show_thresholds: bool = False
    mappings: list[JSON] = field(default_factory=list)
    options: JSON = field(default_factory=dict)
    custom: JSON = field(default_factory=dict)
    min: float | None = None
    max: float | None = None
    decimals: int | None = None

    def to_json(self, panel_id: int, x: int, y: int) -> JSON:
        defaults: JSON = {"unit": self.unit, "mappings": self.mappings}
        if self.thresholds:
            defaults["thresholds"] = {
                "mode": "absolute",
                "steps": [{"color": t.color, "value": t.value} for t in self.thresholds],
            }
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        custom = dict(self.custom)
        if self.show_thresholds and self.kind == "timeseries":
            custom["thresholdsStyle"] = {"mode": "line+area"}
        if custom:
            defaults["custom"] = custom
        return {
            "datasource": DATASOURCE,
            "description": self.description,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "id": panel_id,
            "options": self.options,
            "targets": [t.to_json(chr(ord("A") + i)) for i, t in enumerate(self.targets)],
            "title": self.title,
            "type": self.kind,
        }


@dataclass
class Row:
    """A collapsible-free row header followed by its panels (laid out left to right)."""

    title: str
    panels: list[Panel]


@dataclass
class Variable:
    """A query template variable over Prometheus label values."""

    name: str
    label: str
    query: str  # e.g. label_values(telesafe_procedure_state, procedure_id)

    def to_json(self) -> JSON:
        return {
            "current": {},
            "datasource": DATASOURCE,
            "definition": self.query,
            "hide": 0,
            "includeAll": False,
            "label": self.label,
            "multi": False,
            "name": self.name,
            "options": [],
            "query": {"query": self.query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2,
            "regex": "",
            "skipUrlSync": False,
            "sort": 1,
            "type": "query",
        }


DATASOURCE_VARIABLE: JSON = {
    "current": {},
    "hide": 0,
    "includeAll": False,
    "label": "Prometheus",
    "multi": False,
    "name": "datasource",
    "options": [],
    "query": "prometheus",
    "refresh": 1,
    "regex": "",
    "skipUrlSync": False,
    "type": "datasource",
}


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[Row]
    variables: list[Variable] = field(default_factory=list)
    tags: tuple[str, ...] = ("telesafe",)
    refresh: str = "5s"
    time_from: str = "now-30m"

    def panels(self) -> list[Panel]:
        return [p for row in self.rows for p in row.panels]

    def to_json(self) -> JSON:
        out: list[JSON] = []
        next_id = 1
        y = 0
        for row in self.rows:
            out.append(
                {
                    "collapsed": False,
                    "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                    "id": next_id,
                    "panels": [],
                    "title": row.title,
                    "type": "row",
                }
            )
            next_id += 1
            y += 1
            x = 0
            line_height = 0
            for panel in row.panels:
                if x + panel.width > GRID_WIDTH:
                    x = 0
                    y += line_height
                    line_height = 0
                out.append(panel.to_json(next_id, x, y))
                next_id += 1
                x += panel.width
                line_height = max(line_height, panel.height)
            y += line_height
        return {
            "annotations": {"list": []},
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [],
            "panels": out,
            "refresh": self.refresh,
            "schemaVersion": SCHEMA_VERSION,
            "tags": list(self.tags),
            "templating": {"list": [DATASOURCE_VARIABLE, *(v.to_json() for v in self.variables)]},
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "timezone": "utc",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }
