"""Small helpers over grafana-foundation-sdk, Grafana's own typed dashboard builders.

The SDK builds the classic dashboard JSON model of the Grafana version it targets (see
``pyproject.toml``); these helpers only fix telesafe's conventions: every panel and query
uses the ``${datasource}`` Prometheus variable, queries get refIds A, B, ... in order,
thresholds are absolute steps, and panel ids are numbered top to bottom after layout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import prometheus as prometheus_models
from grafana_foundation_sdk.models.dashboard import (
    Dashboard,
    DashboardCursorSync,
    DataSourceRef,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
    VariableSort,
)

JSON = dict[str, Any]

__all__ = [
    "DATASOURCE",
    "JSON",
    "Dashboard",
    "Query",
    "bands",
    "bar_gauge",
    "build",
    "on_off",
    "query_variable",
    "stat_panel",
    "state_colour_overrides",
    "state_timeline",
    "time_series",
    "title_of",
    "to_json",
    "uid_of",
    "value_colours",
]

GRID_WIDTH = 24
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

Panel = TypeVar("Panel", timeseries.Panel, stat.Panel, statetimeline.Panel, bargauge.Panel)


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel (``instant`` for bar gauges of a current value)."""

    expr: str
    legend: str = "__auto"
    instant: bool = False


def bands(*steps: tuple[float | None, str]) -> list[Threshold]:
    """Absolute threshold steps: from each value upwards the colour (``None`` = the base).

    Steps whose value is ``None`` after the first are left out, so an optional pack limit
    that is not set (e.g. a jitter safe-stop) draws no line.
    """
    out = [Threshold(value=steps[0][0], color=steps[0][1])] if steps else []
    out += [Threshold(value=v, color=c) for v, c in steps[1:] if v is not None]
    return out


def value_colours(mapping: dict[int, tuple[str, str]]) -> ValueMap:
    """A value mapping ``{value: (text, colour)}``."""
    return ValueMap(
        options={
            str(value): ValueMappingResult(text=text, color=colour, index=i)
            for i, (value, (text, colour)) in enumerate(sorted(mapping.items()))
        }
    )


def on_off(off: str = "no", on: str = "YES") -> ValueMap:
    """0 green, 1 red: for "is it on" series (latched, escalated, warning active)."""
    return value_colours({0: (off, "green"), 1: (on, "red")})


def _common(
    panel: Panel,
    title: str,
    description: str,
    queries: Sequence[Query],
    width: int,
    height: int,
    unit: str,
) -> Panel:
    # A description is the panel's contract with the person on call: never leave it out.
    if not description.strip():
        raise ValueError(f"panel {title!r} needs a description")
    panel.title(title).description(description).datasource(DATASOURCE)
    panel.span(width).height(height).unit(unit)
    for i, q in enumerate(queries):
        target = (
            prometheus_builders.Dataquery()
            .datasource(DATASOURCE)
            .expr(q.expr)
            .legend_format(q.legend)
            .ref_id(chr(ord("A") + i))
            .editor_mode(prometheus_models.QueryEditorMode.CODE)
        )
        panel.with_target(target.instant() if q.instant else target.range())
    return panel


def _thresholds(steps: list[Threshold]) -> dashboard_builders.ThresholdsConfig:
    return dashboard_builders.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def _hidden_legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .show_legend(False)
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
    )


def time_series(
    title: str,
    *queries: Query,
    description: str,
    unit: str = "short",
    thresholds: list[Threshold] | None = None,
    width: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    """A time series; ``thresholds`` are drawn on the graph as lines with shaded areas."""
    panel = _common(timeseries.Panel(), title, description, queries, width, height, unit)
    if thresholds:
        panel.thresholds(_thresholds(thresholds)).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.LINE_AND_AREA
            )
        )
    return panel


def state_timeline(
    title: str,
    *queries: Query,
    description: str,
    mappings: list[ValueMap],
    show_value: bool = True,
    width: int = 12,
    height: int = 8,
) -> statetimeline.Panel:
    """A state timeline (one row per series) coloured by value ``mappings``."""
    panel = _common(statetimeline.Panel(), title, description, queries, width, height, "short")
    return (
        panel.mappings(list(mappings))
        .show_value(common.VisibilityMode.AUTO if show_value else common.VisibilityMode.NEVER)
        .merge_values(True)
        .legend(_hidden_legend())
    )


def stat_panel(
    title: str,
    *queries: Query,
    description: str,
    mappings: list[ValueMap] | None = None,
    thresholds: list[Threshold] | None = None,
    decimals: int | None = None,
    width: int = 8,
    height: int = 6,
) -> stat.Panel:
    """A big-number panel coloured by ``thresholds`` or value ``mappings``."""
    panel = _common(stat.Panel(), title, description, queries, width, height, "none")
    if mappings:
        panel.mappings(list(mappings))
    if thresholds:
        panel.thresholds(_thresholds(thresholds))
    if decimals is not None:
        panel.decimals(decimals)
    return panel


def bar_gauge(
    title: str, *queries: Query, description: str, width: int = 12, height: int = 8
) -> bargauge.Panel:
    """Horizontal bars of whole counts (one per series), e.g. increases over the range."""
    panel = _common(bargauge.Panel(), title, description, queries, width, height, "none")
    return (
        panel.decimals(0)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
    )


def _datasource_variable() -> dashboard_builders.DatasourceVariable:
    return (
        dashboard_builders.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
    )


def query_variable(name: str, label: str, query: str) -> dashboard_builders.QueryVariable:
    """A template variable over Prometheus label values, e.g. ``label_values(m, l)``."""
    return (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


PanelBuilder = timeseries.Panel | stat.Panel | statetimeline.Panel | bargauge.Panel


def build(
    uid: str,
    title: str,
    description: str,
    rows: Sequence[tuple[str, Sequence[PanelBuilder]]],
    variables: Sequence[dashboard_builders.QueryVariable] = (),
    refresh: str = "5s",
    time_from: str = "now-30m",
) -> Dashboard:
    """A dashboard of rows laid out by the SDK left to right (each row's panel widths must
    add up to multiples of 24, the grid width); panel ids are numbered in layout order."""
    b = (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["telesafe"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh(refresh)
        .time(time_from, "now")
        .timezone("utc")
        .with_variable(_datasource_variable())
    )
    for v in variables:
        b.with_variable(v)
    for row_title, panels in rows:
        # The SDK wraps to a new line only once a line is full: a row must fill its lines.
        if sum(_width(p) for p in panels) % GRID_WIDTH:
            raise ValueError(f"{uid}: row {row_title!r} does not fill whole grid lines")
        b.with_row(dashboard_builders.Row(row_title))
        for p in panels:
            b.with_panel(p)
    out = b.build()
    for i, panel in enumerate(out.panels or [], start=1):
        panel.id_val = i
    return out


def _width(panel: PanelBuilder) -> int:
    pos = panel.build().grid_pos
    return GRID_WIDTH if pos is None else pos.w


def uid_of(dashboard: Dashboard) -> str:
    """The dashboard's uid (every dashboard :func:`build` makes has one)."""
    assert dashboard.uid is not None
    return dashboard.uid


def title_of(dashboard: Dashboard) -> str:
    """The dashboard's title."""
    assert dashboard.title is not None
    return dashboard.title


def to_json(dashboard: Dashboard) -> JSON:
    """The dashboard as plain JSON data (what Grafana stores and the files hold)."""
    data: JSON = json.loads(json.dumps(dashboard, cls=JSONEncoder))
    return data


def state_colour_overrides(
    panel: statetimeline.Panel, colours: dict[str, str]
) -> statetimeline.Panel:
    """Give each series named like a key of ``colours`` its own colour when 1."""
    for name, colour in colours.items():
        mapping = value_colours({0: (" ", "transparent"), 1: (name, colour)})
        panel.override_by_name(name, [DynamicConfigValue(id_val="mappings", value=[mapping])])
    return panel
