"""Every ICD §7 rule of the shipped packs, breached on its own, at and just beyond its limit.

Comparisons are strict (a value AT a limit is in band); "within 5 mm" is inclusive. Time is
a FakeClock moved by `enginekit.Driver`, which ticks the engine at every deadline, so a
deadline that fires with no further record is visible.
"""

from __future__ import annotations

import pytest

from monitor.engine.clock import MS
from monitor.engine.engine import EngineConfig
from monitor.icd.models import Rearm, SafeStop
from monitor.policy.loader import PackRegistry, parse_pack
from tests.unit.enginekit import (
    Driver,
    commands,
    events,
    kinds,
    safe_stops,
    shipped_packs,
    trips,
    warnings_raised,
)

NS = 1


def armed(policy: str | None = None, **kw: object) -> Driver:
    d = Driver(**kw)  # type: ignore[arg-type]
    d.armed(policy=policy)
    d.decisions.clear()
    return d


def only_rule_tripped(d: Driver, rule: str) -> SafeStop:
    issued = trips(d.decisions)
    assert [e.data["rule"] for e in issued] == [rule], kinds(d.decisions)
    cmds = safe_stops(d.decisions)
    assert len({c.command_id for c in cmds}) == 1
    assert cmds[0].policy.rule == rule
    return cmds[0]


# -- heartbeats ----------------------------------------------------------------------------


@pytest.mark.hazard("H-01")
def test_heartbeat_silence_deadlines_fire_without_records() -> None:
    d = armed()
    out = d.advance(100)  # both sites silent exactly 100 ms: in band
    assert warnings_raised(out) == []
    out = d.advance_ns(1)
    assert sorted(e.data["subject"] for e in warnings_raised(out, "heartbeat_silence")) == [
        "console",
        "robot",
    ]
    assert d.state() == "warning"
    out = d.advance(200 - 1e-6)  # exactly 300 ms of silence: still no safe-stop
    assert trips(out) == [] and commands(out) == []
    out = d.advance_ns(1)
    assert [e.data["rule"] for e in trips(out)] == ["heartbeat_silence"]
    (cmd,) = safe_stops(out)
    assert cmd.threshold == 300
    assert d.state() == "safe_stop_latched"
    assert d.status() == "safe_stop_latched"


@pytest.mark.hazard("H-01")
def test_heartbeat_silence_is_per_site() -> None:
    d = armed()
    silent_from = d.mono
    # The console keeps beating; the robot goes quiet.
    for _ in range(5):
        d.advance(20)
        d.heartbeat("console")
    assert d.mono - silent_from == 100 * MS
    assert warnings_raised(d.decisions) == []
    d.advance_ns(1)
    (w,) = warnings_raised(d.decisions)
    assert (w.data["rule"], w.data["subject"]) == ("heartbeat_silence", "robot")
    for _ in range(9):
        d.advance(20)
        d.heartbeat("console")
    d.advance_ns(20 * MS - 1)
    d.heartbeat("console")
    assert d.mono - silent_from == 300 * MS
    assert trips(d.decisions) == []
    d.advance_ns(1)
    (t,) = trips(d.decisions)
    assert (t.data["rule"], t.data["subject"]) == ("heartbeat_silence", "robot")
    assert t.mono_ns == silent_from + 300 * MS + 1


def test_heartbeat_silence_warning_clears_2s_after_beats_resume() -> None:
    d = armed()
    d.advance(150)  # warn (both sites), no stop
    assert len(warnings_raised(d.decisions)) == 2
    back = d.mono
    d.heartbeats()
    d.healthy(1980)
    assert events(d.decisions, "warning_cleared") == []
    d.healthy(20)
    cleared = events(d.decisions, "warning_cleared")
    assert len(cleared) == 2
    assert all(e.mono_ns == back + 2000 * MS for e in cleared)
    assert d.state() == "armed"


def test_gap_seen_first_by_the_late_heartbeat_raises_its_warning() -> None:
    """No tick ran during the gap (the loop was late, or time was held while the monitor
    was behind): the heartbeat that ends the gap raises the warning, so the record never
    holds a `warning_cleared` without its `warning_raised`."""
    d = armed()
    d.clock.set_mono(d.mono + 180 * MS)  # no tick on the way
    d.heartbeat("console")
    out = d.heartbeat("robot")
    raised = warnings_raised(out, "heartbeat_silence")
    assert [(e.data["subject"], e.data["observed"]) for e in raised] == [("robot", 180.0)]
    assert raised[0].data["threshold"] == 100
    assert "heartbeat_gap" in kinds(out)
    assert trips(d.decisions) == []
    d.healthy(2000)
    cleared = events(d.decisions, "warning_cleared")
    assert {e.data["subject"] for e in cleared} >= {"robot"}
    n_raised = len(warnings_raised(d.decisions, "heartbeat_silence"))
    assert n_raised == len([e for e in cleared if e.data["rule"] == "heartbeat_silence"])


def test_first_heartbeat_within_2s_is_in_time() -> None:
    d = Driver()
    d.start()
    opened = d.mono
    d.heartbeat("console")
    for _ in range(100):
        d.advance(20)
        d.heartbeat("console")
    assert d.mono - opened == 2000 * MS
    d.heartbeat("robot")  # exactly 2 s after the start: within
    d.healthy(500)
    assert trips(d.decisions) == []
    assert d.state() == "armed"


def test_first_heartbeat_missing_trips_just_after_2s() -> None:
    d = Driver()
    d.start()
    opened = d.mono
    d.heartbeat("console")
    for _ in range(100):
        d.advance(20)
        d.heartbeat("console")
    assert trips(d.decisions) == []
    assert d.state() == "pending"
    d.advance_ns(1)
    (t,) = trips(d.decisions)
    assert (t.data["rule"], t.data["subject"]) == ("first_heartbeat", "robot")
    assert t.mono_ns == opened + 2000 * MS + 1
    # A heartbeat arriving now does not unlatch.
    d.heartbeat("robot")
    assert d.state() == "safe_stop_latched"


def _robot_beats_only(d: Driver, ms: float, **hb: object) -> None:
    for _ in range(round(ms / 20)):
        d.advance(20)
        d.heartbeat("console")
        d.heartbeat("robot", **hb)  # type: ignore[arg-type]


def test_heartbeat_exactly_500ms_old_is_fresh() -> None:
    d = armed()
    _robot_beats_only(d, 1000, age_ms=500)
    assert trips(d.decisions) == [] and warnings_raised(d.decisions) == []
    assert d.snapshot().sites["robot"].stale == 0


def test_stale_heartbeat_is_no_liveness_evidence() -> None:
    d = armed()
    last_fresh = d.mono
    _robot_beats_only(d, 400, age_ms=500.000001)
    (t,) = trips(d.decisions)
    assert (t.data["rule"], t.data["subject"]) == ("heartbeat_silence", "robot")
    assert t.mono_ns == last_fresh + 300 * MS + 1
    assert d.snapshot().sites["robot"].stale == 20


def test_offset_correction_sign_site_clock_behind() -> None:
    # Site clock 10 s behind UTC, and it says so: corrected = sent_at - offset = UTC, fresh.
    d = armed()
    _robot_beats_only(d, 1000, offset_ns=-10_000 * MS)
    assert trips(d.decisions) == []
    assert d.snapshot().sites["robot"].stale == 0


def test_offset_correction_sign_site_clock_ahead_but_stamps_utc() -> None:
    # The site reports its clock 10 s ahead, yet the record is stamped with true UTC:
    # corrected = sent_at - 10 s, i.e. 10 s old: stale, so the robot goes silent.
    d = armed()
    for _ in range(20):
        d.advance(20)
        d.heartbeat("console")
        d.offsets[("P1", "robot")] = 0  # stamp with UTC...
        rec = d.record(
            "heartbeat",
            "robot",
            state="operating",
            clock={"source": "ptp", "offset_ns": 10_000 * MS, "max_error_ns": 1},  # ...claim +10 s
        )
        d.feed(rec)
    assert [e.data["rule"] for e in trips(d.decisions)] == ["heartbeat_silence"]
    assert d.snapshot().sites["robot"].stale == 20


def test_duplicate_seq_is_ignored_and_counted() -> None:
    d = armed()
    last = d.seqs[("P1", "robot")] - 1
    silent_from = d.mono
    for _ in range(10):
        d.advance(20)
        d.heartbeat("console")
        d.heartbeat("robot", seq=last)  # duplicate: not evidence of liveness
    d.advance(20)
    d.heartbeat("console")
    d.heartbeat("robot", seq=last - 3)  # below the last: duplicate too
    robot = d.snapshot().sites["robot"]
    assert robot.duplicates == 11
    assert robot.lost == 0
    d.advance(100)
    (t,) = trips(d.decisions)
    assert (t.data["rule"], t.data["subject"]) == ("heartbeat_silence", "robot")
    assert t.mono_ns == silent_from + 300 * MS + 1


def test_duplicate_kinematics_is_not_evaluated() -> None:
    d = armed()
    d.kinematics("psm1", [{"t": 1, "p": [0, 0, -100], "f": 1.0}], seq=500)
    d.kinematics("psm1", [{"t": 2, "p": [0, 0, -100], "f": 99.0}], seq=500)
    assert trips(d.decisions) == []
    assert d.snapshot().sites["robot"].duplicates == 1


def test_seq_gap_counts_lost_records() -> None:
    d = armed()
    nxt = d.seqs[("P1", "robot")]
    d.heartbeat("robot", seq=nxt + 4)
    d.heartbeat("robot")  # nxt + 5: no gap
    d.heartbeat("robot", seq=nxt + 7)
    robot = d.snapshot().sites["robot"]
    assert robot.lost == 4 + 1
    assert robot.duplicates == 0
    assert d.snapshot().sites["console"].lost == 0


# -- latency -------------------------------------------------------------------------------


def _latency_every_100ms(d: Driver, channel: str, samples: list[float], ms: float) -> None:
    n = [0]

    def each() -> None:
        n[0] += 1
        if n[0] % 5 == 0:
            d.latency(channel, samples)

    d.healthy(ms, each=each)


@pytest.mark.parametrize(
    ("channel", "warn"),
    [("control", 100.0), ("video", 150.0)],
)
def test_latency_p95_warn_is_strict(channel: str, warn: float) -> None:
    d = armed()
    # 20 samples, 19 in band: nearest-rank p95 is the 19th = in band although one is high.
    d.latency(channel, [warn] * 19 + [warn + 50])
    d.latency(channel, [10.0] * 20)  # now 40 samples, 1 high: p95 = 38th = warn
    assert warnings_raised(d.decisions) == []
    d.latency(channel, [warn + 0.001] * 3)  # 43 samples, 4 > warn: p95 = 41st > warn
    (w,) = warnings_raised(d.decisions)
    assert (w.data["rule"], w.data["subject"]) == (f"{channel}_latency", channel)
    assert w.data["observed"] == warn + 0.001
    assert trips(d.decisions) == []


@pytest.mark.parametrize(("channel", "stop"), [("control", 300.0), ("video", 400.0)])
def test_latency_at_stop_limit_never_trips(channel: str, stop: float) -> None:
    d = armed()
    _latency_every_100ms(d, channel, [stop] * 10, 3000)
    assert trips(d.decisions) == []
    assert warnings_raised(d.decisions, f"{channel}_latency")


@pytest.mark.hazard("H-02")
@pytest.mark.parametrize(("channel", "stop"), [("control", 300.0), ("video", 400.0)])
def test_latency_above_stop_trips_when_held_exactly_1s(channel: str, stop: float) -> None:
    d = armed()
    d.latency(channel, [stop + 0.001] * 10)
    since = d.mono
    d.healthy(500)
    d.latency(channel, [stop + 0.001] * 10)  # keeps the window above the limit
    d.healthy(480)
    d.advance(20 - 1e-6)  # 1 s minus 1 ns: not yet
    assert trips(d.decisions) == []
    assert warnings_raised(d.decisions, f"{channel}_latency")
    d.advance_ns(1)  # the hold deadline fires with no further record
    (t,) = trips(d.decisions)
    assert t.data["rule"] == f"{channel}_latency"
    assert t.mono_ns == since + 1000 * MS
    (cmd,) = safe_stops(d.decisions)
    assert cmd.threshold == stop


def test_latency_breach_that_subsides_before_1s_does_not_trip() -> None:
    d = armed()
    d.latency("control", [350.0] * 10)
    d.healthy(900)
    d.latency("control", [20.0] * 400)  # p95 back under 300 at 900 ms
    d.healthy(2000)
    assert trips(d.decisions) == []


@pytest.mark.hazard("H-02")
def test_control_single_sample_limit() -> None:
    d = armed()
    d.latency("control", [500.0])  # at the limit: no immediate stop
    assert trips(d.decisions) == []
    d.latency("control", [10.0, 500.001, 10.0])
    (t,) = trips(d.decisions)
    assert t.data["rule"] == "control_latency"
    assert t.data["observed"] == 500.001 and t.data["threshold"] == 500


def test_video_has_no_single_sample_limit() -> None:
    d = armed()
    d.latency("video", [10_000.0])
    assert trips(d.decisions) == []
    assert warnings_raised(d.decisions, "video_latency")


# -- link ----------------------------------------------------------------------------------


def test_link_jitter_warns_only() -> None:
    d = armed()
    d.link("robot", jitter=10.0)
    assert warnings_raised(d.decisions) == []
    d.link("console", jitter=10.001)
    (w,) = warnings_raised(d.decisions)
    assert (w.data["rule"], w.data["subject"]) == ("link_jitter", "console")
    d.link("robot", jitter=5000.0)
    assert trips(d.decisions) == []


@pytest.mark.hazard("H-02")
def test_link_loss_warn_and_stop() -> None:
    d = armed()
    d.link("robot", loss=0.001)
    assert warnings_raised(d.decisions) == []
    d.link("robot", loss=0.0011)
    assert [w.data["rule"] for w in warnings_raised(d.decisions)] == ["link_loss"]
    d.link("robot", loss=0.03)
    assert trips(d.decisions) == []
    d.link("robot", loss=0.0301)
    cmd = only_rule_tripped(d, "link_loss")
    assert cmd.observed == 0.0301 and cmd.threshold == 0.03


# -- workspace -----------------------------------------------------------------------------


def kin(d: Driver, arm: str, *points: list[float], **extra: object) -> None:
    t0 = d.now().utc_ns
    d.kinematics(arm, [{"t": t0 + i * MS, "p": p, **extra} for i, p in enumerate(points)])


@pytest.mark.parametrize(
    "p",
    [[114.999, 0, -100], [0, -114.999, -100], [0, 0, -174.999], [0, 0, -25.001]],
)
def test_box_more_than_5mm_inside_is_in_band(p: list[float]) -> None:
    d = armed()
    kin(d, "psm1", p)
    assert warnings_raised(d.decisions) == [] and trips(d.decisions) == []


@pytest.mark.parametrize(
    "p",
    [
        [115, 0, -100],  # exactly 5 mm from +x
        [0, -115, -100],
        [0, 0, -175],
        [0, 0, -25],
        [120, 0, -100],  # on the face: not outside
        [-120, 120, -20],  # a corner
    ],
)
def test_box_within_5mm_warns(p: list[float]) -> None:
    d = armed()
    kin(d, "psm2", p)
    (w,) = warnings_raised(d.decisions)
    assert (w.data["rule"], w.data["subject"]) == ("workspace_box", "psm2")
    assert trips(d.decisions) == []


@pytest.mark.parametrize(
    "p", [[120.001, 0, -100], [0, -120.001, -100], [0, 0, -180.001], [0, 0, -19.999]]
)
@pytest.mark.hazard("H-03")
def test_box_outside_trips(p: list[float]) -> None:
    d = armed()
    kin(d, "psm3", [0, 0, -100], p)
    cmd = only_rule_tripped(d, "workspace_box")
    assert cmd.observed["arm"] == "psm3"  # type: ignore[index]
    assert cmd.observed["p"] == p  # type: ignore[index]


ZONE = "demo-forbidden-zone"  # sphere centre (60, 0, -100), radius 15, arms psm1 and psm2


@pytest.mark.parametrize("x", [80.001, 100.0])
def test_zone_more_than_5mm_away_is_in_band(x: float) -> None:
    d = armed(policy=ZONE)
    kin(d, "psm1", [x, 0, -100])
    assert warnings_raised(d.decisions) == []


@pytest.mark.parametrize("x", [80.0, 75.001])
def test_zone_within_5mm_warns(x: float) -> None:
    d = armed(policy=ZONE)
    kin(d, "psm2", [x, 0, -100])
    (w,) = warnings_raised(d.decisions)
    assert (w.data["rule"], w.data["subject"]) == ("forbidden_zone", "psm2:vessel")
    assert trips(d.decisions) == []


@pytest.mark.hazard("H-03")
@pytest.mark.parametrize("p", [[74.999, 0, -100], [60, 0, -100], [60, 14.9, -100]])
def test_zone_inside_trips(p: list[float]) -> None:
    d = armed(policy=ZONE)
    kin(d, "psm1", p)
    only_rule_tripped(d, "forbidden_zone")


def test_zone_applies_only_to_its_arms() -> None:
    d = armed(policy=ZONE)
    kin(d, "psm3", [60, 0, -100])
    assert trips(d.decisions) == [] and warnings_raised(d.decisions) == []


def test_zone_absent_in_default_pack() -> None:
    d = armed()
    kin(d, "psm1", [60, 0, -100])
    assert trips(d.decisions) == [] and warnings_raised(d.decisions) == []


def test_box_shaped_forbidden_zone() -> None:
    base = shipped_packs().default.pack.model_dump(mode="json")
    base["name"] = "boxzone"
    base["workspace"]["forbidden_zones"] = [
        {"name": "nerve", "box": {"min": [-10, -10, -60], "max": [10, 10, -40]}}
    ]
    packs = PackRegistry([shipped_packs().default, parse_pack(base, "test")])
    d = armed(policy="boxzone", packs=packs)
    kin(d, "ecm", [15.001, 0, -50])
    assert warnings_raised(d.decisions) == []
    kin(d, "ecm", [15, 0, -50])
    assert [w.data["rule"] for w in warnings_raised(d.decisions)] == ["forbidden_zone"]
    kin(d, "ecm", [9.999, 0, -50])
    cmd = only_rule_tripped(d, "forbidden_zone")
    assert cmd.policy.pack == "boxzone"


# -- speed and grip ------------------------------------------------------------------------


@pytest.mark.hazard("H-03")
def test_speed_from_v() -> None:
    d = armed()
    kin(d, "psm1", [0, 0, -100], v=[100.0, 0.0, 0.0])
    kin(d, "psm1", [0, 0, -100], v=[0.0, 60.0, 80.0])  # |v| = 100
    assert warnings_raised(d.decisions) == []
    kin(d, "psm1", [0, 0, -100], v=[100.001, 0.0, 0.0])
    assert [w.data["rule"] for w in warnings_raised(d.decisions)] == ["tool_speed"]
    kin(d, "psm1", [0, 0, -100], v=[0.0, 120.0, 160.0])  # |v| = 200
    assert trips(d.decisions) == []
    kin(d, "psm1", [0, 0, -100], v=[0.0, 0.0, -200.001])
    cmd = only_rule_tripped(d, "tool_speed")
    assert cmd.threshold == 200


def _track(d: Driver, arm: str, step_mm: float, n: int = 5) -> None:
    """n samples 10 ms apart moving step_mm along x (speed = step_mm * 100 mm/s)."""
    t0 = d.now().utc_ns
    d.kinematics(
        arm,
        [{"t": t0 + i * 10 * MS, "p": [i * step_mm - 20, 0.0, -100.0]} for i in range(n)],
    )


def test_speed_derived_without_v_at_limits() -> None:
    d = armed()
    _track(d, "psm1", 1.0)  # exactly 100 mm/s
    assert warnings_raised(d.decisions) == []
    _track(d, "psm2", 1.00001)
    assert [w.data["subject"] for w in warnings_raised(d.decisions, "tool_speed")] == ["psm2"]
    _track(d, "psm3", 2.0)  # exactly 200 mm/s: warn only
    assert trips(d.decisions) == []
    _track(d, "ecm", 2.00001)
    cmd = only_rule_tripped(d, "tool_speed")
    assert cmd.observed["arm"] == "ecm"  # type: ignore[index]


def test_speed_derived_across_batches() -> None:
    d = armed()
    t0 = d.now().utc_ns
    d.kinematics("psm1", [{"t": t0, "p": [0.0, 0.0, -100.0]}])
    d.kinematics("psm1", [{"t": t0 + 10 * MS, "p": [3.0, 0.0, -100.0]}])  # 300 mm/s
    cmd = only_rule_tripped(d, "tool_speed")
    assert cmd.observed["speed_mm_s"] == pytest.approx(300.0)  # type: ignore[index]


def test_grip_force() -> None:
    d = armed()
    kin(d, "psm1", [0, 0, -100], f=10.0)
    assert warnings_raised(d.decisions) == []
    kin(d, "psm1", [0, 0, -100], f=10.001)
    assert [w.data["rule"] for w in warnings_raised(d.decisions)] == ["grip_force"]
    kin(d, "psm1", [0, 0, -100], f=15.0)
    assert trips(d.decisions) == []
    kin(d, "psm1", [0, 0, -100], f=15.001)
    cmd = only_rule_tripped(d, "grip_force")
    assert cmd.threshold == 15


# -- the latch ----------------------------------------------------------------------------


def tripped() -> tuple[Driver, SafeStop, int]:
    d = armed()
    kin(d, "psm1", [0, 0, -100], f=20.0)
    (cmd,) = safe_stops(d.decisions)
    return d, cmd, d.mono


def test_unacknowledged_safe_stop_resent_every_100ms_same_id_escalates_after_5() -> None:
    d, cmd, at = tripped()
    d.healthy(80)
    d.advance(20 - 1e-6)
    assert len(commands(d.decisions)) == 1
    for n in range(1, 8):
        d.until(at + n * 100 * MS)
        sent = commands(d.decisions)
        assert len(sent) == n + 1
        assert sent[-1].resend == n
        assert sent[-1].command == cmd
        esc = events(d.decisions, "safe_stop_escalated")
        assert len(esc) == (1 if n >= 5 else 0)
        d.heartbeats()
    resent = events(d.decisions, "safe_stop_resent")
    assert [e.data["resend"] for e in resent] == list(range(1, 8))
    assert {e.data["command_id"] for e in resent} == {cmd.command_id}
    assert [e.mono_ns - at for e in resent] == [n * 100 * MS for n in range(1, 8)]


def test_ack_stops_resends() -> None:
    d, cmd, _ = tripped()
    d.healthy(240)  # two re-sends
    assert len(commands(d.decisions)) == 3
    d.ack(cmd.command_id)
    (a,) = events(d.decisions, "safe_stop_acknowledged")
    assert a.data["resends"] == 2
    d.healthy(2000)
    assert len(commands(d.decisions)) == 3
    assert events(d.decisions, "safe_stop_escalated") == []
    assert d.state() == "safe_stopped"
    assert d.status() == "safe_stop_latched"


def test_ack_of_another_command_is_unmatched() -> None:
    d, _, _ = tripped()
    d.ack("not-the-id")
    assert events(d.decisions, "ack_unmatched")
    d.healthy(200)
    assert len(commands(d.decisions)) == 3


def test_rejected_ack_escalates_at_once() -> None:
    d, cmd, _ = tripped()
    d.ack(cmd.command_id, result="failed")
    (e,) = events(d.decisions, "safe_stop_escalated")
    assert "failed" in e.data["reason"]


@pytest.mark.hazard("H-10")
def test_latch_holds_whatever_telemetry_does() -> None:
    d, cmd, _ = tripped()
    d.ack(cmd.command_id)
    # Perfect telemetry for 5 s; then another breach of another rule.
    d.healthy(5000, each=lambda: d.latency("control", [20.0]))
    assert d.state() == "safe_stopped"
    assert d.status() == "safe_stop_latched"
    assert d.engine.statuses() == [("P1", "safe_stop_latched")]
    d.link("robot", loss=0.5)
    assert len(safe_stops(d.decisions)) == 1  # one command per episode
    assert events(d.decisions, "breach_while_latched")
    assert events(d.decisions, "rearm_accepted") == []


def test_rearm_accepted_clears_the_latch() -> None:
    d, cmd, _ = tripped()
    d.ack(cmd.command_id)
    d.healthy(100)
    out = d.rearm()
    (acc,) = events(out, "rearm_accepted")
    assert acc.data["cleared_command_id"] == cmd.command_id
    assert acc.data["cleared_rule"] == "grip_force"
    (rc,) = commands(out)
    assert isinstance(rc.command, Rearm) and rc.command.operator_id == "op-1"
    assert d.snapshot().latch is None
    assert d.status() in ("armed", "warning")
    # A new breach is a new episode with a new command id.
    kin(d, "psm1", [0, 0, -100], f=20.0)
    ids = [c.command_id for c in safe_stops(d.decisions)]
    assert len(set(ids)) == 2


def test_rearm_rejected_when_not_latched() -> None:
    d = armed()
    out = d.rearm()
    (rej,) = events(out, "rearm_rejected")
    assert any("not latched" in r for r in rej.data["rejected_because"])
    assert commands(out) == []


@pytest.mark.hazard("H-10")
def test_rearm_rejected_when_a_site_is_unhealthy() -> None:
    d, cmd, _ = tripped()
    d.ack(cmd.command_id)
    for _ in range(8):  # robot silent 160 ms
        d.advance(20)
        d.heartbeat("console")
    out = d.rearm()
    (rej,) = events(out, "rearm_rejected")
    assert any("robot heartbeat" in r for r in rej.data["rejected_because"])
    assert d.snapshot().latch is not None


def test_rearm_rejected_when_latency_out_of_band() -> None:
    d, cmd, _ = tripped()
    d.ack(cmd.command_id)
    d.latency("video", [200.0] * 5)
    out = d.rearm()
    (rej,) = events(out, "rearm_rejected")
    assert any("video latency" in r for r in rej.data["rejected_because"])
    assert d.snapshot().latch is not None


@pytest.mark.hazard("H-10")
def test_rearm_rejected_for_operator_not_in_allow_list() -> None:
    d = Driver(config=EngineConfig(monitor_id="m", operators=frozenset({"op-ok"})))
    d.armed()
    kin(d, "psm1", [0, 0, -100], f=20.0)
    d.healthy(40)
    out = d.rearm("op-mallory")
    (rej,) = events(out, "rearm_rejected")
    assert any("not authorised" in r for r in rej.data["rejected_because"])
    assert d.snapshot().latch is not None
    assert events(d.rearm("op-ok"), "rearm_accepted")


def test_rearm_for_unknown_procedure_rejected() -> None:
    d = armed()
    (rej,) = events(d.rearm(pid="P-unknown"), "rearm_rejected")
    assert rej.procedure_id == "P-unknown"


# -- warnings --------------------------------------------------------------------------------


def test_warning_clears_after_2s_in_band_not_before() -> None:
    d = armed()
    kin(d, "psm1", [0, 0, -100], f=12.0)
    raised = d.mono
    assert d.state() == "warning"
    d.healthy(1000)
    kin(d, "psm1", [0, 0, -100], f=11.0)  # still out of band: the 2 s restart
    again = d.mono
    d.healthy(1980)
    d.advance(20 - 1e-6)
    assert events(d.decisions, "warning_cleared") == []
    assert d.state() == "warning"
    d.advance_ns(1)
    (c,) = events(d.decisions, "warning_cleared")
    assert c.mono_ns == again + 2000 * MS
    assert c.data["duration_ms"] == pytest.approx((again + 2000 * MS - raised) / MS)
    assert d.state() == "armed"


# -- procedures ------------------------------------------------------------------------------


def test_breach_in_one_procedure_leaves_the_other_armed() -> None:
    d = Driver()
    for pid in ("A", "B"):
        d.start(pid=pid)

    def beats() -> None:
        for pid in ("A", "B"):
            d.heartbeat("console", pid=pid)
            d.heartbeat("robot", pid=pid)

    beats()
    for _ in range(5):
        d.advance(20)
        beats()
    d.send("kinematics", "robot", pid="A", arm="psm1", samples=[{"t": 1, "p": [0, 0, 0]}])
    for _ in range(50):
        d.advance(20)
        beats()
    assert {c.procedure_id for c in safe_stops(d.decisions)} == {"A"}
    assert d.state("A") == "safe_stop_latched"
    assert d.state("B") == "armed"
    assert dict(d.engine.statuses()) == {"A": "safe_stop_latched", "B": "armed"}
    b_alarms = warnings_raised(d.decisions) + trips(d.decisions)
    assert [e for e in b_alarms if e.procedure_id == "B"] == []
    assert [c for c in commands(d.decisions) if c.command.procedure_id == "B"] == []


def test_procedure_end_closes_and_late_records_do_not_reopen() -> None:
    d = armed()
    out = d.end("robot")
    assert [e.data["reason"] for e in events(out, "procedure_ended")] == ["completed"]
    assert events(out, "procedure_closed")
    assert "P1" not in d.engine.procedures
    d.decisions.clear()
    d.heartbeats()
    kin(d, "psm1", [500, 0, 0], f=100.0)  # would trip if evaluated
    d.link("robot", loss=1.0)
    d.advance(5000)
    assert d.decisions == []
    assert "P1" not in d.engine.procedures
    assert d.engine.late_records == 4
    assert d.engine.next_deadline() is None


def test_late_procedure_start_after_end_does_not_reopen() -> None:
    """Both sites send procedure_start; the robot's arrives after procedure_end."""
    d = Driver()
    d.start("console")
    late = d.record(
        "procedure_start",
        "robot",
        surgeon_id="dr-who",
        robot={"model": "r1", "serial": "s-1"},
        arms=["psm1"],
    )
    d.heartbeats()
    d.healthy(200)
    d.end("console")
    assert "P1" not in d.engine.procedures
    d.decisions.clear()
    d.feed(late)
    d.advance(5000)
    assert safe_stops(d.decisions) == []
    assert "P1" not in d.engine.procedures


def test_end_while_unacknowledged_keeps_resending_until_ack() -> None:
    d, cmd, _ = tripped()
    d.end()
    assert "P1" in d.engine.procedures
    d.advance(300)
    assert len(commands(d.decisions)) == 4
    d.ack(cmd.command_id)
    assert events(d.decisions, "procedure_closed")
    d.advance(1000)
    assert len(commands(d.decisions)) == 4


# -- policy selection ----------------------------------------------------------------------


@pytest.mark.hazard("H-09")
def test_named_policy_is_applied_and_stamped_on_the_command() -> None:
    d = armed(policy=ZONE)
    kin(d, "psm1", [60, 0, -100])
    (cmd,) = safe_stops(d.decisions)
    lp = shipped_packs().get(ZONE)
    assert lp is not None
    assert cmd.policy.pack == ZONE
    assert cmd.policy.version == "1.0.0"
    assert cmd.policy.rule == "forbidden_zone"
    assert cmd.policy.hash == lp.sha256
    assert cmd.policy.hash != shipped_packs().default.sha256
    assert cmd.monitor_id == "test-monitor"
    assert cmd.procedure_id == "P1"
    assert cmd.issued_at == d.now().utc_ns
    (ev,) = trips(d.decisions)
    assert ev.data["policy"]["hash"] == lp.sha256


def test_default_pack_stamped_when_no_policy_named() -> None:
    _, cmd, _ = tripped()
    assert (cmd.policy.pack, cmd.policy.version, cmd.policy.hash) == (
        "default",
        "1.0.0",
        shipped_packs().default.sha256,
    )


def test_unknown_policy_falls_back_to_default_with_an_event() -> None:
    d = Driver()
    out = d.start(policy="no-such-pack")
    (e,) = events(out, "policy_unknown")
    assert e.data["requested"] == "no-such-pack"
    assert d.snapshot().pack == "default"


def test_new_procedure_start_after_end_with_higher_seq_reopens() -> None:
    # The engine deliberately lets a fresh start (a later seq) reuse an ended id.
    d = armed()
    d.end("console")
    assert "P1" not in d.engine.procedures
    out = d.start("console")
    assert events(out, "procedure_opened")
    assert d.state() == "pending"
