"""The engine under adversarial sequences: records with arbitrary seq and site clocks,
monitor clock jumps (UTC steps, late ticks), failovers, operator requests for anything.
No exception escapes; invariants hold after every step:

- a latch is only cleared by an accepted re-arm (or the close of an ended, stopped
  procedure);
- one breach episode has one command id (re-sends keep it);
- a procedure is never both armed and latched (a latch means status safe_stop_latched);
- every event that changes a latch (monitor.events: latch "always") comes with a
  `PublishLatch` of its procedure, so `telesafe.state` never lags the ledger.

The record/operator vocabulary and the episode checker are those of
tests/unit/test_engine_properties.py; this adds the adversarial inputs.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.engine.clock import MS, Instant
from monitor.engine.decisions import Decision, Event, PublishLatch
from monitor.engine.engine import EngineConfig
from monitor.events import EVENTS, EventKind
from tests.fuzz.fuzzkit import budget, current
from tests.unit.enginekit import Driver
from tests.unit.test_engine_properties import PIDS, SITES, Checker, action, run

pid = st.sampled_from(PIDS)
site = st.sampled_from(SITES)
adversarial = st.one_of(
    action,
    # The monitor's wall clock steps (NTP), its monotonic clock does not.
    st.tuples(st.just("utc_jump"), st.integers(-3_600_000, 3_600_000)),
    # The driver ticks late (it was busy, or had not heard that far): one tick then runs
    # every deadline passed, each at its own instant.
    st.tuples(st.just("late"), st.integers(0, 5000)),
    # A site clock anywhere: far past, far future, around the stale limit.
    st.tuples(
        st.just("sent_at"),
        pid,
        site,
        st.one_of(st.integers(-(10**12), 10**12), st.sampled_from([-501, -499, 0, 501])),
    ),
    st.tuples(st.just("seq"), pid, site, st.integers(0, 2**63 - 1)),
    st.tuples(st.just("offset"), pid, site, st.integers(-(10**12), 10**12)),
    # Partition moved away and back (failover onto this instance).
    st.tuples(st.just("failover"), pid),
    st.tuples(
        st.just("operator"),
        st.sampled_from([*PIDS, "GHOST"]),
        st.sampled_from(["op-1", "op-x", ""]),
        st.booleans(),
    ),
)


def step(d: Driver, ck: Checker, act: tuple[Any, ...]) -> list[Decision]:
    kind = act[0]
    if kind == "utc_jump":
        i = d.clock.now()
        d.clock._i = Instant(i.mono_ns, i.utc_ns + act[1] * MS)
        return []
    if kind == "late":
        d.clock.set_mono(d.mono + act[1] * MS)  # no ticks on the way
        out = d.engine.tick(d.now())
        d.decisions.extend(out)
        return out
    if kind == "sent_at":
        return d.heartbeat(act[2], pid=act[1], sent_at=d.now().utc_ns + act[3] * MS)
    if kind == "seq":
        return d.heartbeat(act[2], pid=act[1], seq=act[3])
    if kind == "offset":
        return d.heartbeat(act[2], pid=act[1], offset_ns=act[3])
    if kind == "failover":
        proc = d.engine.procedures.get(act[1])
        state = None if proc is None else proc.latch_state()
        out = d.engine.release(act[1], d.now())
        d.decisions.extend(out)
        # A move away and back takes time: command ids derive from the procedure's opening
        # instant, so a re-adoption at the very same nanosecond (only a fake clock can do
        # that) would legitimately repeat the first episode's id.
        out += d.advance(1)
        if state is not None:
            restored = d.engine.restore(state, d.now())
            d.decisions.extend(restored)
            out += restored
        return out
    if kind == "operator":
        if act[3]:
            return d.rearm(act[2] or "nobody", pid=act[1])
        return d.operator(
            {"type": "note", "procedure_id": act[1], "operator_id": "op", "text": act[2] or "-"}
        )
    return run(d, ck, act)


def invariants(d: Driver, out: list[Decision]) -> None:
    statuses = dict(d.engine.statuses())
    for p, snap in d.engine.snapshot(d.now()).items():
        if snap.latch is not None:
            assert statuses[p] == "safe_stop_latched", (p, snap.state, statuses[p])
            assert snap.state in ("safe_stop_latched", "safe_stopped"), (p, snap.state)
        if snap.state in ("armed", "warning", "pending"):
            assert snap.latch is None, (p, snap.state)
    published = {x.procedure_id for x in out if isinstance(x, PublishLatch)}
    for ev in out:
        if isinstance(ev, Event) and EVENTS[EventKind(ev.kind)].latch == "always":
            assert ev.procedure_id in published, (ev.kind, ev.procedure_id)


@pytest.mark.hazard("H-10")
@pytest.mark.hazard("H-11")
@pytest.mark.hazard("H-07")
@budget(300)
@given(actions=st.lists(adversarial, min_size=1, max_size=60))
def test_engine_survives_adversarial_sequences(actions: list[tuple[Any, ...]]) -> None:
    t = current()
    t.example()
    d = Driver(config=EngineConfig(monitor_id="fuzz", operators=frozenset({"op-1"})))
    ck = Checker()
    for p in PIDS:
        d.start(pid=p)
        d.heartbeats(pid=p)
    for act in actions:
        t.action(act[0])
        before = dict(d.engine.statuses())
        out = step(d, ck, act)
        ck.check(before, d, out)
        invariants(d, out)
    before = dict(d.engine.statuses())
    out = d.advance(5000)
    ck.check(before, d, out)
    invariants(d, out)
