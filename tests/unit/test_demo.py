"""The demo's own names and summary figures: other traffic on the broker changes nothing."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from monitor.audit.verified import Entry
from monitor.demo import Run, Wire, figures, run_demo
from monitor.errors import UsageError

PID, MON = "LDN-GIB-20261204-101500-0001", "telesafe-demo-20261204-101500"
FAULT_S = 1_000.0  # wall clock of the fault injection


def _stop(cid: str, pid: str = PID, mon: str = MON) -> dict[str, Any]:
    return {"type": "safe_stop", "command_id": cid, "procedure_id": pid, "monitor_id": mon}


def _entry(i: int, event: str, pid: str, mon: str, **data: Any) -> Entry:
    return Entry(i, event, pid, f"monitor:{mon}", mon, "boot", 0, data)


def test_each_run_owns_its_names() -> None:
    run = Run.new(None)
    assert run.prefix == f"demo-{run.stamp}-"
    assert run.stamp in run.procedure_prefix and run.stamp in run.monitor_id
    assert Run.new("shared-").prefix == "shared-"


def test_the_wire_keeps_only_this_procedure_from_this_monitor() -> None:
    wire = Wire(PID, MON)
    assert wire.mine(_stop("a"))
    assert not wire.mine(_stop("b", pid="LDN-GIB-0001"))  # another run's procedure
    assert not wire.mine(_stop("c", mon="telesafe-1"))  # another monitor, same procedure id
    assert not wire.mine({"type": "monitor_heartbeat", "monitor_id": MON})


def test_figures_count_one_command_and_ignore_other_traffic() -> None:
    wire = Wire(PID, MON)
    # What the watcher kept: the first send 0.31 s after the fault, then one re-send.
    wire.seen = [(FAULT_S + 0.31, _stop("cmd-1")), (FAULT_S + 0.41, _stop("cmd-1"))]
    sim_events = [
        {"event": "fault", "kind": "garbage", "wall_ns": int((FAULT_S - 2) * 1e9)},
        {"event": "fault", "kind": "heartbeat-stop", "wall_ns": int(FAULT_S * 1e9)},
    ]
    entries = [
        # A foreign monitor's acknowledgement and re-arm of the same procedure id come first.
        _entry(0, "safe_stop_acknowledged", PID, "telesafe-1", delay_ms=4297.0),
        _entry(1, "rearm_accepted", "LDN-GIB-0001", MON),
        _entry(2, "safe_stop_acknowledged", PID, MON, delay_ms=20.4),
    ]
    f = figures(sim_events, wire, entries)
    assert f.stop_after_fault_ms == pytest.approx(310.0, abs=0.01)
    assert (f.command_id, f.sends) == ("cmd-1", 2)
    assert f.ack_delay_ms == 20.4
    assert not f.rearmed  # the accepted re-arm was another procedure's
    f = figures(sim_events, wire, [*entries, _entry(3, "rearm_accepted", PID, MON)])
    assert f.rearmed


def test_nothing_seen_is_said_so() -> None:
    f = figures([], Wire(PID, MON), [])
    assert (f.stop_after_fault_ms, f.command_id, f.sends, f.ack_delay_ms) == (None, None, 0, None)


def test_a_duration_too_short_for_the_rearm_is_refused_before_anything_starts() -> None:
    args = argparse.Namespace(duration=6.0, fault_at=4.0, outage=1.5, prefix=None)
    with pytest.raises(UsageError, match="--duration 6 is too short"):
        run_demo(args)
