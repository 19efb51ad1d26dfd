"""The typed procedure snapshot (monitor/snapshot.py): `/status` keeps its JSON shape, the
JSON reads back, `telesafe status` renders it, and taking a snapshot changes nothing."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from monitor.engine.clock import MS
from monitor.engine.window import SlidingQuantiles
from monitor.service.statusview import render
from monitor.snapshot import ProcedureSnapshot
from tests.unit.enginekit import EXAMPLES, Driver, events, safe_stops

# The /status shape every reader relies on (`telesafe status`, `telesafe rearm`, tests).
SITE_KEYS = ["heartbeat_age_s", "jitter_ms", "loss_ratio", "duplicates", "lost", "stale", "state"]
LATCH_KEYS = ["rule", "command_id", "issued_at", "ended", "resends", "ack", "escalated"]


def latched() -> Driver:
    d = Driver()
    d.armed()
    d.link(jitter=12.0)
    d.latency("control", [40.0, 60.0])
    d.kinematics("psm1", [{"t": 1, "p": [0, 0, -100], "f": 99.0}])
    return d


def test_status_json_keeps_its_shape() -> None:
    d = latched()
    js = d.snapshot().to_json()
    assert list(js) == [
        "state",
        "pack",
        "sites",
        "channels",
        "arms",
        "warnings",
        "latch",
        "heartbeat_stop_limit_s",
    ]
    assert js["state"] == "safe_stop_latched" and js["pack"] == "default"
    assert {k: list(v) for k, v in js["sites"].items()} == {
        "console": SITE_KEYS,
        "robot": SITE_KEYS,
    }
    assert js["sites"]["robot"]["jitter_ms"] == 12.0
    assert js["channels"]["control"] == {"0.5": 40.0, "0.95": 60.0, "0.99": 60.0}
    assert js["channels"]["video"] == {"0.5": None, "0.95": None, "0.99": None}
    assert js["arms"] == {"psm1": {"margin_mm": 80.0, "speed_mm_s": 0.0}}
    assert js["warnings"] == ["link_jitter:robot"]
    assert list(js["latch"]) == LATCH_KEYS
    cid = safe_stops(d.decisions)[0].command_id
    assert (js["latch"]["command_id"], js["latch"]["rule"], js["latch"]["ack"]) == (
        cid,
        "grip_force",
        None,
    )
    assert js["heartbeat_stop_limit_s"] == 0.3
    json.dumps(js, allow_nan=False)  # plain JSON, as /status serves it


def test_status_json_reads_back() -> None:
    d = latched()
    snap = d.snapshot()
    assert ProcedureSnapshot.from_json(json.loads(json.dumps(snap.to_json()))) == snap


def test_telesafe_status_renders_a_status_answer() -> None:
    d = latched()
    console = Console(width=200, record=True)
    console.print(render({"monitor_id": "m-1", "procedures": {"P1": d.snapshot().to_json()}}))
    text = console.export_text()
    assert "telesafe monitor m-1 — 1 procedure(s)" in text
    assert "safe_stop_latched" in text and "link_jitter:robot" in text
    assert "grip_force · ack pending · re-sends 0" in text


def test_a_snapshot_changes_no_later_decision() -> None:
    """A view taken late (the service's wall clock runs ahead of a record stamped by the
    broker) must not expire samples that record still counts."""
    a, b = Driver(), Driver()
    for d in (a, b):
        d.armed()
        d.latency("control", [350.0] * 10)  # p95 above the warn limit: warning raised
        d.healthy(900)
    b.engine.snapshot(b.now().plus(500_000_000))  # a view from 500 ms ahead
    for d in (a, b):
        d.latency("control", [40.0])  # the 350s still count: still out of band
        d.healthy(3000)
    (raised,) = events(a.decisions, "warning_raised")
    (cleared,) = events(a.decisions, "warning_cleared")
    # The 350 ms samples were judged until they left the window (1 s), then 2 s in band.
    assert cleared.mono_ns > raised.mono_ns + (900 + 2000) * MS
    assert a.decisions == b.decisions
    assert a.snapshot() == b.snapshot()


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    samples=st.lists(
        st.tuples(st.integers(0, 3000), st.floats(0, 500, allow_nan=False)), max_size=40
    ),
    at=st.integers(0, 5000),
)
def test_quantiles_at_is_expire_then_quantile(samples: list[tuple[int, float]], at: int) -> None:
    w, ref = SlidingQuantiles(1000), SlidingQuantiles(1000)
    for t, v in sorted(samples, key=lambda s: s[0]):
        w.add(t, v)
        ref.add(t, v)
    qs = (0.5, 0.95, 0.99)
    now = max([at, *(t for t, _ in samples)])
    got = w.quantiles_at(now, qs)
    ref.expire(now)
    assert got == [ref.quantile(q) for q in qs]
    assert len(w) == len(samples)  # nothing expired
