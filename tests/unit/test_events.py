"""The event vocabulary (monitor/events.py): docs/events.md lists every kind as the table
says, the engine's events carry exactly the documented fields, latch-changing events
publish the latch, every kind the service writes is in the table, and the table drives
who the actor is and what the report's timeline shows."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from monitor.audit.keychain import ROTATION_EVENT
from monitor.audit.verified import Entry
from monitor.engine.clock import MS
from monitor.engine.decisions import Decision, Event, PublishLatch
from monitor.engine.engine import EngineConfig
from monitor.events import EVENTS, EventKind, kinds_where, spec
from monitor.report.timeline import build_timeline
from monitor.service.audit_sink import EntryFactory
from tests.unit.enginekit import Driver, safe_stops

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "events.md"
YES = {"yes": True, "—": False}


class Batches(Driver):
    """A Driver that keeps each call's decisions together (one engine call, or one advance)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.batches: list[list[Decision]] = []

    def feed(self, rec: Any) -> list[Decision]:
        out = super().feed(rec)
        self.batches.append(out)
        return out

    def operator(self, value: dict[str, Any]) -> list[Decision]:
        out = super().operator(value)
        self.batches.append(out)
        return out

    def advance_ns(self, ns: int) -> list[Decision]:
        out = super().advance_ns(ns)
        self.batches.append(out)
        return out


def every_engine_event() -> list[list[Decision]]:
    """Scenarios that make the engine emit every kind it can (asserted below)."""
    d = Batches(config=EngineConfig(monitor_id="vocab", operators=frozenset({"op-1"})))
    d.start(policy="demo-forbidden-zone")  # opened, started, policy_applied
    d.heartbeats()  # clock_state, site_state
    for _ in range(60):  # warning_raised (latency), then cleared once in band again
        d.advance(20)
        d.heartbeats()
        d.latency("control", [120.0] if d.mono < 1_000_000_000 + 400 * MS else [40.0])
    d.advance(60)
    d.heartbeat("console")
    d.advance(80)
    d.heartbeats()  # heartbeat_gap (robot silent 140 ms)
    d.healthy(2500, each=lambda: d.latency("control", [40.0]))  # latency_summary, cleared
    d.kinematics("psm1", [{"t": 1, "p": [0, 0, -100], "f": 99.0}])  # safe_stop_issued
    d.link(loss=0.5)  # breach_while_latched
    d.healthy(700)  # safe_stop_resent, safe_stop_escalated
    d.ack("not-the-latch")  # ack_unmatched
    d.ack(safe_stops(d.decisions)[-1].command_id)  # safe_stop_acknowledged
    d.healthy(100)
    d.rearm("op-x")  # rearm_rejected
    d.close_latch()  # latch_close_rejected (the procedure has not ended)
    d.rearm()  # rearm_accepted
    d.operator({"type": "note", "operator_id": "op-1", "text": "fine"})  # operator_note
    d.kinematics("psm1", [{"t": 2, "p": [0, 0, -100], "f": 99.0}])
    d.end()  # procedure_ended, latched and unacknowledged
    d.close_latch()  # latch_closed, then procedure_closed

    e = Batches(pid="P2")
    e.start(policy="no-such-pack")  # policy_unknown
    e.heartbeats()
    e.kinematics("psm1", [{"t": 1, "p": [0, 0, -100], "f": 99.0}])
    state = e.proc().latch_state()
    e.batches.append(e.engine.release("P2", e.now()))  # procedure_released
    e.advance(1)
    e.batches.append(e.engine.restore(state, e.now()))  # latch_restored
    return d.batches + e.batches


@pytest.fixture(scope="module")
def batches() -> list[list[Decision]]:
    return every_engine_event()


def _events(batches: list[list[Decision]]) -> list[Event]:
    return [x for b in batches for x in b if isinstance(x, Event)]


def test_the_engine_emits_every_engine_kind(batches: list[list[Decision]]) -> None:
    seen = {e.kind for e in _events(batches)}
    assert seen == kinds_where(source="engine")


def test_engine_events_carry_exactly_the_documented_fields(
    batches: list[list[Decision]],
) -> None:
    for ev in _events(batches):
        s = EVENTS[EventKind(ev.kind)]
        keys = set(ev.data)
        assert set(s.fields) <= keys, (ev.kind, set(s.fields) - keys)
        assert keys <= set(s.fields) | set(s.optional), (ev.kind, keys - set(s.fields))


def test_latch_changing_events_publish_the_latch(batches: list[list[Decision]]) -> None:
    for batch in batches:
        published = {x.procedure_id for x in batch if isinstance(x, PublishLatch)}
        for ev in batch:
            if isinstance(ev, Event) and EVENTS[EventKind(ev.kind)].latch == "always":
                assert ev.procedure_id in published, ev.kind
            if isinstance(ev, Event) and EVENTS[EventKind(ev.kind)].latch == "never":
                # Alone in its batch, a never-changing event publishes nothing.
                others = [x for x in batch if isinstance(x, Event) and x is not ev]
                if not others:
                    assert not published, ev.kind


def _service_kinds() -> set[str]:
    """Kinds the service writes: first arguments (a string or an `EventKind.NAME`) of
    `Event(...)` and `monitor_event(...)` in monitor/service/."""
    out = set()
    for path in (ROOT / "monitor" / "service").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            arg = node.args[0]
            if name not in ("Event", "monitor_event"):
                continue
            if isinstance(arg, ast.Constant):
                out.add(arg.value)
            elif isinstance(arg, ast.Attribute) and getattr(arg.value, "id", "") == "EventKind":
                out.add(EventKind[arg.attr].value)
    return out


def test_every_kind_the_service_and_the_ledger_write_is_in_the_table() -> None:
    kinds = _service_kinds()
    assert {"monitor_started", "monitor_deaf", "command_reconciled"} <= kinds  # the scan works
    for k in kinds:
        s = spec(k)
        assert s is not None and s.source == "service", k
    rotation = spec(ROTATION_EVENT)
    assert rotation is not None and rotation.source == "audit"
    assert {s.source for s in EVENTS.values()} == {"engine", "service", "audit"}


def test_the_actor_follows_the_table() -> None:
    f = EntryFactory("m-1", "0.0")
    for kind, s in EVENTS.items():
        entry = f.from_event(Event(kind, "P1", 1, 2, {"operator_id": "op-7"}))
        expected = {"monitor": "monitor:m-1", "operator": "operator:op-7", "robot": "site:robot"}
        assert entry["actor"] == expected[s.actor], kind
        assert entry["event"] == str(kind)


def test_the_timeline_shows_and_files_events_as_the_table_says() -> None:
    entries = [
        Entry(i, str(k), "P1", "monitor:m", "m", "b", i, {"before": "x"})
        for i, k in enumerate(EVENTS)
    ]
    entries.append(Entry(len(entries), "from_a_newer_monitor", "P1", "monitor:m", "m", "b", 0, {}))
    rows = {t.event: t.category for t in build_timeline(entries)}
    assert rows == {
        **{str(k): s.lane for k, s in EVENTS.items() if s.in_timeline},
        "from_a_newer_monitor": "other",
    }


# -- docs/events.md ---------------------------------------------------------------------


def _doc_rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| `([a-z_]+)` \| (.*) \|$", line)
        if m and "### " not in line:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def _doc_fields() -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        if m := re.match(r"### `([a-z_]+)`$", line):
            current = m.group(1)
            fields[current] = []
        elif current and (m := re.match(r"\| `([a-z0-9_]+)`", line)):
            fields[current].append(m.group(1))
    return fields


def test_docs_events_lists_every_kind_with_its_properties() -> None:
    rows = _doc_rows()
    table = {k: v for k, v in rows.items() if len(v) == 7}
    assert set(table) == {str(k) for k in EVENTS}, set(table) ^ {str(k) for k in EVENTS}
    for k, s in EVENTS.items():
        source, actor, lane, timeline, checkpoint, loud, latch = table[str(k)]
        assert (source, actor, lane, latch) == (s.source, s.actor, s.lane, s.latch), k
        assert (YES[timeline], YES[checkpoint], YES[loud]) == (
            s.in_timeline,
            s.checkpoint,
            s.loud,
        ), k


def test_docs_events_lists_every_field() -> None:
    fields = _doc_fields()
    assert set(fields) == {str(k) for k in EVENTS}
    for k, s in EVENTS.items():
        assert fields[str(k)] == [*s.fields, *s.optional], k
