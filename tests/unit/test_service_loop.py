"""The monitor loop on a deterministic in-memory broker (tests/unit/servicekit.py): time
the monitor could not hear — a rebalance, or records waiting in Kafka because it was slow —
is never counted as a site's silence, while a real silence and evidence in the records
still stop the robot; and the monitor withholds its dead-man heartbeat while it is behind."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from monitor.engine.clock import MS
from monitor.kafka.api import Record
from tests.unit.servicekit import Rig


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    r.start_procedure()
    r.run(300)
    yield r
    r.close()


def heartbeat_gaps(r: Rig, since_ms: float) -> float:
    """The longest gap between this procedure's monitor_heartbeats after `since_ms`."""
    times = [t for t, d in r.commands("monitor_heartbeat") if d["procedure_id"] == r.pid]
    times = [t for t in times if t >= since_ms]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def now_ms(r: Rig) -> float:
    return r.clock.now().mono_ns / MS


def test_healthy_procedure_is_supervised_at_50_hz(rig: Rig) -> None:
    t0 = now_ms(rig)
    rig.run(2000)
    assert rig.commands("safe_stop") == []
    beats = [t for t, d in rig.commands("monitor_heartbeat") if t >= t0]
    assert len(beats) >= 95  # 50 Hz for 2 s
    assert heartbeat_gaps(rig, t0) <= 25


def last_beat_ms(r: Rig, site: str) -> float:
    topic = "telemetry.robot" if site == "robot" else "telemetry.console"
    logs = [log for tp, log in r.broker.logs.items() if tp.topic.endswith(topic)]
    return (
        max(rec.timestamp_ms for log in logs for rec in log)
        - (r.clock.now().utc_ns - r.clock.now().mono_ns) / MS
    )


@pytest.mark.hazard("H-01")
def test_a_real_silence_stops_within_its_limit(rig: Rig) -> None:
    rig.run(500)
    t_last = last_beat_ms(rig, "robot")
    asked = rig.consumer.fresh_marks_wanted
    rig.run(600, beat=("console",))
    (t_stop, stop), *_ = rig.commands("safe_stop")
    assert stop["policy"]["rule"] == "heartbeat_silence"
    assert 300 <= t_stop - t_last <= 300 + 25
    # the deadline came due before the client's mark vouched for it: fresh marks were
    # asked for (the end-offset probe), not waited for on its cadence
    assert rig.consumer.fresh_marks_wanted > asked


@pytest.mark.hazard("H-01")
def test_a_timer_due_but_not_heard_past_waits_in_poll_for_fresh_marks(rig: Rig) -> None:
    """The consumer says how long its fresh marks take (librdkafka: the probe's round
    trip): the loop waits that long in poll, where the GIL is free for the probe, instead of
    polling again at once (which starved the probe and tripled the detection delay)."""
    rig.consumer.fresh_marks_wait_s = 0.001
    timeouts: list[tuple[float, int]] = []
    poll = rig.consumer.poll

    def recording_poll(timeout_s: float, max_records: int) -> list[Record]:
        timeouts.append((timeout_s, rig.consumer.fresh_marks_wanted))
        return poll(timeout_s, max_records)

    rig.consumer.poll = recording_poll  # type: ignore[method-assign]
    rig.run(500)
    t_last = last_beat_ms(rig, "robot")
    rig.run(600, beat=("console",))
    (t_stop, stop), *_ = rig.commands("safe_stop")
    assert stop["policy"]["rule"] == "heartbeat_silence"
    assert 300 <= t_stop - t_last <= 300 + 25
    # every poll right after asking for fresh marks waited for them (about 1 ms), none spun
    after_asking = [t for (_, n), (t, m) in itertools.pairwise(timeouts) if m > n]
    assert after_asking, "no timer came due before it was heard past"
    assert all(0.0005 <= t <= 0.001 for t in after_asking), after_asking


@pytest.mark.hazard("H-04")
def test_a_rebalance_is_deafness_not_silence(rig: Rig) -> None:
    """Issue: a survivor's partitions are revoked at the start of a regroup; 3 s later
    they come back. The sites kept sending: no stop, and no monitor heartbeat vouched for
    the procedure while the monitor could not hear it."""
    rig.run(500)
    t_revoke = now_ms(rig)
    rig.consumer.rebalance(assign=False)
    rig.run(3000)  # the regroup; heartbeats pile up at the broker
    rig.consumer.rebalance(revoke=False)
    rig.run(1000)
    assert rig.commands("safe_stop") == []
    during = [
        t for t, d in rig.commands("monitor_heartbeat") if t_revoke + 300 < t < t_revoke + 3000
    ]
    assert during == []  # withheld while deaf for longer than the stop limit
    after = [t for t, _ in rig.commands("monitor_heartbeat") if t > t_revoke + 3100]
    assert len(after) >= 40  # resumed once caught up


@pytest.mark.hazard("H-01")
def test_a_silence_during_a_rebalance_is_still_caught(rig: Rig) -> None:
    rig.run(500)
    rig.consumer.rebalance(assign=False)
    t_quiet = now_ms(rig)
    rig.run(3000, beat=("console",))  # the robot really went quiet meanwhile
    rig.consumer.rebalance(revoke=False)
    rig.run(500, beat=("console",))
    stops = rig.commands("safe_stop")
    assert stops and stops[0][1]["policy"]["rule"] == "heartbeat_silence"
    assert stops[0][0] >= t_quiet + 3000  # decided once heard, late
    (issued,) = rig.events("safe_stop_issued")
    assert issued["late_ms"] >= 2500  # the audit says how late


@pytest.mark.hazard("H-16")
def test_the_monitors_own_lag_never_stops_a_healthy_procedure(rig: Rig) -> None:
    """Records wait 700 ms in Kafka (the monitor is slow): each counts as heard when the
    broker appended it, so no heartbeat is stale and none is silent; the dead-man
    heartbeat is withheld while the monitor is behind by more than the stop limit."""
    rig.run(500)
    t_slow = now_ms(rig)
    rig.consumer.delay_ms = 700
    rig.run(3000)
    assert rig.commands("safe_stop") == []
    assert [e for e in rig.sink.entries if e["event"] == "warning_raised"] == []
    withheld = [
        t
        for t, d in rig.commands("monitor_heartbeat")
        if t_slow + 400 < t < t_slow + 3000 and d["procedure_id"] == rig.pid
    ]
    assert withheld == []
    rig.consumer.delay_ms = 0
    t_fast = now_ms(rig)
    rig.run(1000)
    resumed = [t for t, _ in rig.commands("monitor_heartbeat") if t > t_fast]
    assert resumed and resumed[0] - t_fast < 1000
    assert rig.commands("safe_stop") == []


@pytest.mark.hazard("H-16")
def test_evidence_in_late_records_still_latches_with_the_delay_audited(rig: Rig) -> None:
    rig.consumer.delay_ms = 800
    rig.record(
        "robot",
        "kinematics",
        arm="psm1",
        samples=[{"t": rig.clock.now().utc_ns, "p": [0.0, 0.0, -300.0]}],
    )
    rig.run(1500)
    stops = rig.commands("safe_stop")
    assert stops and stops[0][1]["policy"]["rule"] == "workspace_box"
    (issued,) = rig.events("safe_stop_issued")
    assert issued["late_ms"] >= 700


@pytest.mark.hazard("H-04")
def test_a_stopped_process_does_not_trust_its_stale_watermarks(rig: Rig) -> None:
    """SIGSTOP 1.5 s: the client's cached high watermarks are as old as the stop, so right
    after it the monitor must not take "nothing more at the broker" from them: the sites'
    records of the pause arrive a fetch later and keep both sites alive."""
    rig.run(500)
    rig.stop_process(1500)
    rig.run(1000)
    assert rig.commands("safe_stop") == []
    deaf = rig.events("monitor_deaf")
    assert deaf and deaf[0]["data"]["duration_ms"] >= 1400


@pytest.mark.hazard("H-01")
def test_a_site_that_went_quiet_while_the_monitor_was_stopped_is_stopped_at_once(
    rig: Rig,
) -> None:
    """The broker's timestamps show the robot silent during the pause: the stop comes as
    soon as the monitor hears again, decided late (the audit says by how much)."""
    rig.run(500)
    rig.stop_process(300)
    rig.stop_process(1200, beat=("console",))
    t_resume = now_ms(rig)
    rig.run(500, beat=("console",))
    (t_stop, stop), *_ = rig.commands("safe_stop")
    assert stop["policy"]["rule"] == "heartbeat_silence" and "robot" in stop["reason"]
    assert t_stop - t_resume <= 150
    (issued,) = rig.events("safe_stop_issued")
    assert issued["late_ms"] >= 800
