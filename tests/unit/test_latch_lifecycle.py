"""ICD 1.1 latch lifecycle in the pure engine: a re-arm binds to its latch and is acted on at
most once (§5.1), a latch never outlives its procedure silently (§7) and `latch_close`
retires one of an ended procedure (§5.3); every latch change is published as state."""

from __future__ import annotations

import pytest

from monitor.engine.decisions import Decision, PublishLatch
from monitor.engine.engine import Engine, EngineConfig
from monitor.engine.latch_state import LatchState, LatchStateError
from monitor.icd.models import Rearm
from tests.unit.enginekit import Driver, commands, events, kinds, safe_stops, trips

GRIP = [{"t": 0, "p": [0.0, 0.0, -100.0], "f": 16.0}]  # 16 N > 15 N: a safe-stop


def latched(d: Driver) -> str:
    """Trip the procedure on grip force; the latch's command id."""
    d.kinematics("psm1", GRIP)
    return str(d.snapshot().latch.command_id)


def published(decisions: list[Decision]) -> list[PublishLatch]:
    return [x for x in decisions if isinstance(x, PublishLatch)]


def rejections(out: list[Decision], kind: str = "rearm_rejected") -> list[str]:
    (ev,) = events(out, kind)
    return list(ev.data["rejected_because"])


# -- §5.1: bound to its latch, fresh, once ---------------------------------------------


@pytest.mark.hazard("H-13")
def test_replayed_rearm_cannot_clear_a_newer_latch() -> None:
    """The defect: latch A, re-arm R accepted, latch B, healthy; the same bytes of R again
    cleared B. Now R names A and is refused."""
    d = Driver()
    d.armed()
    a = latched(d)
    d.healthy(100)
    first = d.rearm(request_id="11111111-1111-4111-8111-111111111111")
    assert events(first, "rearm_accepted")
    d.healthy(100)
    b = latched(d)
    assert b != a
    d.healthy(100)
    again = d.rearm(command_id=a, request_id="11111111-1111-4111-8111-111111111111")
    why = rejections(again)
    assert any(f"names latch {a}" in w and b in w for w in why), why
    assert any("already used" in w for w in why), why
    assert not [c for c in commands(again) if isinstance(c.command, Rearm)]
    assert d.snapshot().latch.command_id == b


@pytest.mark.hazard("H-13")
def test_a_rejected_request_replayed_when_healthy_is_refused() -> None:
    """Refused while a site was silent; the same request later (sites healthy, within 60 s)
    must not clear the latch: nobody decided to re-arm at that moment."""
    d = Driver()
    d.armed()
    latched(d)
    d.advance(150)  # both sites silent: unhealthy
    out = d.rearm(request_id="22222222-2222-4222-8222-222222222222")
    assert any("heartbeat" in w for w in rejections(out))
    d.healthy(200)
    out = d.rearm(request_id="22222222-2222-4222-8222-222222222222")
    assert rejections(out) == [
        "request_id 22222222-2222-4222-8222-222222222222 was already used (a replayed request)"
    ]
    assert d.state() == "safe_stop_latched"
    assert events(d.rearm(), "rearm_accepted")  # a new request from the operator is fine


@pytest.mark.parametrize(
    ("age_ms", "expect"),
    [(60_001, "s old (limit 60 s"), (-5_001, "in the future (limit 5 s")],
)
def test_stale_and_future_dated_requests_are_refused(age_ms: float, expect: str) -> None:
    d = Driver()
    d.armed()
    latched(d)
    d.healthy(100)
    why = rejections(d.rearm(age_ms=age_ms))
    assert any(expect in w for w in why), why
    assert events(d.rearm(age_ms=59_000), "rearm_accepted")


def test_a_request_naming_another_latch_is_refused() -> None:
    d = Driver()
    d.armed()
    cid = latched(d)
    d.healthy(100)
    why = rejections(d.rearm(command_id="5385a9e6-e433-5d4c-b70d-7c27669ca37a"))
    assert any(cid in w and "stale or replayed" in w for w in why), why


def test_every_outcome_names_the_request_and_its_latch() -> None:
    d = Driver()
    d.armed()
    cid = latched(d)
    d.healthy(100)
    (acc,) = events(d.rearm(request_id="33333333-3333-4333-8333-333333333333"), "rearm_accepted")
    assert acc.data["request_id"] == "33333333-3333-4333-8333-333333333333"
    assert acc.data["requested_command_id"] == cid == acc.data["cleared_command_id"]


@pytest.mark.hazard("H-13")
def test_seen_request_ids_survive_a_takeover() -> None:
    """The ids travel with the latch state: a new owner refuses a replay too."""
    d = Driver()
    d.armed()
    latched(d)
    d.advance(150)
    d.rearm(request_id="44444444-4444-4444-8444-444444444444")  # refused: unhealthy
    (state,) = [p.state for p in published(d.decisions)][-1:]
    assert state is not None and "44444444-4444-4444-8444-444444444444" in state.seen_request_ids
    # A new owner restores from the bytes on telesafe.state and hears healthy sites.
    restored = LatchState.from_bytes(state.to_bytes())
    e = Driver()
    e.clock = d.clock
    e.seqs = dict(d.seqs)
    e.engine.restore(restored, e.now())
    e.healthy(200)
    why = rejections(e.rearm(request_id="44444444-4444-4444-8444-444444444444"))
    assert any("already used" in w for w in why), why


def test_request_ids_are_remembered_for_unknown_procedures_too() -> None:
    d = Driver()
    out = d.rearm(pid="P-unknown", command_id="x", request_id=d.next_request_id())
    assert "not monitored by this instance" in rejections(out)[0]
    assert d.engine._remember_request(str(events(out)[0].data["request_id"]), 0, d.now())


# -- §7 and §5.3: a latch never outlives its procedure silently ---------------------------


@pytest.mark.hazard("H-14")
def test_unacknowledged_latch_outlives_procedure_end_until_latch_close() -> None:
    d = Driver(config=EngineConfig(monitor_id="m", operators=frozenset({"op-1"})))
    d.armed()
    cid = latched(d)
    out = d.end()
    (ended,) = events(out, "procedure_ended")
    assert ended.data["latch"] == {
        "command_id": cid,
        "rule": "grip_force",
        "acknowledged": False,
        "outcome": "kept: re-sent until acknowledged or retired by latch_close",
    }
    state = published(out)[-1].state
    assert state is not None and state.ended
    resent = d.advance(1000)
    assert len(safe_stops(resent)) >= 9 and "safe_stop_escalated" in kinds(d.decisions)
    # A re-arm makes no sense without a robot; the reason says what to do instead.
    why = rejections(d.rearm())
    assert any("latch_close" in w for w in why), why
    # An operator outside the allow-list cannot retire it.
    assert "not authorised to close a latch" in " ".join(
        rejections(d.close_latch("op-x"), "latch_close_rejected")
    )
    out = d.close_latch()
    (closed,) = events(out, "latch_closed")
    assert closed.data["cleared_command_id"] == cid and closed.data["end_reason"] == "completed"
    assert "procedure_closed" in kinds(out)
    assert published(out)[-1].state is None  # tombstone: never restored by anyone
    assert commands(out) == []  # nothing is sent to a robot that is gone
    assert d.state() == "closed"
    assert safe_stops(d.advance(1000)) == []


def test_latch_close_refused_while_the_procedure_runs() -> None:
    d = Driver()
    d.armed()
    latched(d)
    why = rejections(d.close_latch(), "latch_close_rejected")
    assert any("has not ended" in w for w in why), why
    assert d.state() == "safe_stop_latched"


@pytest.mark.hazard("H-14")
def test_acknowledged_latch_closes_with_its_procedure() -> None:
    d = Driver()
    d.armed()
    cid = latched(d)
    d.ack(cid)
    out = d.end()
    (closed,) = events(out, "procedure_closed")
    assert closed.data["closed_latch"] == {"command_id": cid, "ack_result": "safe_stopped"}
    assert published(out)[-1].state is None
    assert d.state() == "closed"


@pytest.mark.hazard("H-14")
def test_an_ended_latch_restored_elsewhere_can_be_retired_there() -> None:
    d = Driver()
    d.armed()
    latched(d)
    d.end()
    state = published(d.decisions)[-1].state
    assert state is not None and state.ended
    e = Driver()
    e.clock = d.clock
    out = e.engine.restore(LatchState.from_bytes(state.to_bytes()), e.now())
    assert "latch_restored" in kinds(out)
    assert len(safe_stops(e.advance(250))) >= 2  # the new owner keeps re-sending
    out = e.close_latch()
    assert "latch_closed" in kinds(out) and published(out)[-1].state is None


def test_ack_after_end_closes_and_tombstones() -> None:
    d = Driver()
    d.armed()
    cid = latched(d)
    d.end()
    out = d.ack(cid)
    assert "procedure_closed" in kinds(out) and published(out)[-1].state is None


def test_every_latch_change_is_published() -> None:
    d = Driver()
    d.armed()
    assert published(d.decisions) == []
    cid = latched(d)
    assert published(d.decisions)[-1].state.command.command_id == cid  # type: ignore[union-attr]
    d.advance(600)  # escalated after 5 re-sends
    assert published(d.decisions)[-1].state.escalated  # type: ignore[union-attr]
    d.ack(cid)
    assert published(d.decisions)[-1].state.ack_result == "safe_stopped"  # type: ignore[union-attr]
    d.healthy(100)
    out = d.rearm()
    assert published(out)[-1].state is None


def test_trip_after_rearm_starts_a_clean_request_history() -> None:
    d = Driver()
    d.armed()
    latched(d)
    d.healthy(100)
    d.rearm()
    d.healthy(100)
    latched(d)
    assert d.proc().latch_state().seen_request_ids == {}
    assert trips(d.decisions, "grip_force")[-1].data["episode"] == 2


# -- the state record itself ----------------------------------------------------------------


def test_latch_state_round_trips_and_refuses_garbage() -> None:
    d = Driver()
    d.armed()
    latched(d)
    state = d.proc().latch_state()
    assert LatchState.from_bytes(state.to_bytes()) == state
    with pytest.raises(LatchStateError, match="episode"):
        LatchState.from_bytes(state.to_bytes().replace(b'"episode":1', b'"episode":"1"'))
    with pytest.raises(LatchStateError):
        LatchState.from_bytes(b"not json")


def test_latch_state_of_the_previous_release_still_reads() -> None:
    """A rolling upgrade: the first release wrote no v, ended or seen_request_ids."""
    d = Driver()
    d.armed()
    latched(d)
    cmd = d.proc().latch_state().command
    old = (
        '{"procedure_id":"P1","command":' + cmd.model_dump_json() + ',"rule":"grip_force",'
        '"resends":2,"ack_result":null,"escalated":false,"episode":1,"pack":"default"}'
    ).encode()
    st = LatchState.from_bytes(old)
    assert st.command == cmd and not st.ended and st.seen_request_ids == {}
    eng = Engine(d.packs, EngineConfig(monitor_id="new"))
    assert "latch_restored" in kinds(eng.restore(st, d.now()))
