"""Procedure state names come from one place (monitor.snapshot.State): the metrics use
them, every colour map covers them, docs/procedure-states.md describes them, and the
engine reaches no other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from monitor import metrics
from monitor.dashboards import definitions
from monitor.report import charts
from monitor.service import statusview
from monitor.snapshot import PROCEDURE_STATES, State
from tests.unit.enginekit import Driver, events, safe_stops

DOC = Path(__file__).resolve().parents[2] / "docs" / "procedure-states.md"


def test_the_metrics_use_the_state_names_of_the_snapshot() -> None:
    assert get_args(State) == PROCEDURE_STATES
    assert metrics.PROCEDURE_STATES == PROCEDURE_STATES


@pytest.mark.parametrize(
    "colours",
    [charts.STATE_COLOURS, definitions.STATE_COLOURS, statusview._STATE_STYLE],
    ids=["report chart", "Grafana dashboard", "telesafe status"],
)
def test_every_colour_map_covers_every_state(colours: dict[str, str]) -> None:
    assert set(colours) == set(PROCEDURE_STATES)


def test_docs_describe_every_state() -> None:
    """The first table of docs/procedure-states.md has one row per state."""
    text = DOC.read_text().split("## Transitions")[0]
    rows = re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.M)
    assert rows == list(PROCEDURE_STATES)


def test_the_engine_reaches_every_state_and_no_other() -> None:
    d = Driver()
    d.armed()
    d.kinematics("psm1", [{"t": 1, "p": [0, 0, -100], "f": 11.0}])  # warning
    d.kinematics("psm1", [{"t": 2, "p": [0, 0, -100], "f": 99.0}])  # latched
    d.ack(safe_stops(d.decisions)[-1].command_id)  # safe_stopped
    d.healthy(2100)
    d.rearm()
    d.end()  # ended, then closed
    seen = {"pending"} | {e.data["after"] for e in events(d.decisions, "state_changed")}
    assert seen == set(PROCEDURE_STATES)
