"""The monitor process itself fails: SIGKILL + restart, SIGSTOP longer than the stop window.

No missed safe-stop, no lost audit entry, no silent un-latch. The deafness rule these
tests check is written down in docs/safety/deafness.md.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.broker.topics import admin_client, ensure_topics
from monitor.icd.topics import Topics
from tests.faults.faultkit import (
    SAFE_STOP_DEADLINE_S,
    STARVED_S,
    armed,
    ledger_args,
    ledger_entries,
    ledger_files,
    safe_stops,
    statuses,
    verify_ledger,
    wait_assigned,
    wait_status,
)
from tests.integration.monitorkit import free_port, run_monitor
from tests.integration.sitekit import Observer, SiteDriver


@pytest.mark.hazard("H-04")
@pytest.mark.hazard("H-08")
def test_sigkill_and_restart_keeps_the_latch_and_the_ledger(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    ledger, key = ledger_files(tmp_path)
    port = free_port()
    monitor_id = f"itest-{port}"
    topics = Topics(topic_prefix)
    obs = Observer(kafka_bootstrap, [topics.commands])
    site = SiteDriver(kafka_bootstrap, topic_prefix, "KILL-1")
    try:
        with run_monitor(
            kafka_bootstrap, topic_prefix, tmp_path, *ledger_args(ledger, key), port=port
        ) as first:
            wait_assigned(first)
            armed(site, obs)
            site.pause("robot")
            assert obs.wait_for(lambda: safe_stops(obs, "KILL-1"), SAFE_STOP_DEADLINE_S)
            cmd = safe_stops(obs, "KILL-1")[0]
            time.sleep(0.3)  # the latch state reaches the compacted state topic
            first.proc.send_signal(signal.SIGKILL)  # no ack: the stop is still pending
            first.proc.wait(timeout=10)
            killed_at = time.time()
        # The robot's telemetry is healthy again: a monitor that forgot the latch would
        # re-adopt the procedure as armed.
        site.resume("robot")
        with run_monitor(
            kafka_bootstrap, topic_prefix, tmp_path, *ledger_args(ledger, key), port=port
        ) as second:
            wait_assigned(second)
            assert wait_status(obs, "KILL-1", "safe_stop_latched", 30, since=killed_at), (
                f"latch not restored:\n{second.log()[-3000:]}"
            )
            time.sleep(2.0)
            after = statuses(obs, "KILL-1", since=killed_at)
            assert set(after) == {"safe_stop_latched"}, after
            # The restored latch re-sends the SAME command (one episode, one id).
            resent = [c for c in safe_stops(obs, "KILL-1") if c["_received_at"] > killed_at]
            assert resent and {c["command_id"] for c in resent} == {cmd["command_id"]}, resent
        assert second.proc.returncode == 0, second.log()[-3000:]
    finally:
        site.close()
        obs.close()

    res = verify_ledger(ledger, key)
    assert res.returncode == 0, res.stdout + res.stderr
    entries = ledger_entries(ledger, monitor_id)
    events = [e["event"] for e in entries]
    assert events.count("monitor_started") == 2, events
    # The stop sent just before the crash is in the ledger: appended before the kill, or
    # recorded at start-up from the commands topic (command_reconciled). Either way, once.
    recorded = [
        e
        for e in entries
        if e["event"] in ("safe_stop_issued", "command_reconciled")
        and e["data"].get("command_id") == cmd["command_id"]
    ]
    assert len(recorded) == 1, recorded
    assert "latch_restored" in events, events


@dataclass
class Paused:
    """What one SIGSTOP/SIGCONT run of the monitor produced (the run is shared by tests)."""

    obs: Observer
    stopped_at: float
    resumed_at: float
    healthy_after: bool
    returncode: int | None
    log: str
    verify: subprocess.CompletedProcess[str]
    gaps: dict[str, float]


@pytest.fixture(scope="module")
def paused(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paused]:
    """SIGSTOP the monitor for 1.5 s (> the 300 ms stop limit), then SIGCONT.

    Three procedures, all armed first: STOP-ALIVE keeps both sites heartbeating throughout;
    STOP-QUIET's robot goes quiet 0.3 s into the pause; STOP-BEFORE's robot goes quiet
    50 ms before it. Run again (up to 3 times) only if STOP-ALIVE was stopped AND the test's
    own sender starved for > 250 ms (then its silence was real, the stop correct).
    """
    for attempt in range(3):
        with _pause_run(kafka_bootstrap, tmp_path_factory.mktemp("sigstop")) as run:
            starved = max(run.gaps.values()) > STARVED_S
            if safe_stops(run.obs, "STOP-ALIVE") and starved and attempt < 2:
                continue
            yield run
            return


@contextlib.contextmanager
def _pause_run(kafka_bootstrap: str, tmp: Path) -> Iterator[Paused]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    ledger, key = ledger_files(tmp)
    topics = Topics(prefix)
    obs = Observer(kafka_bootstrap, [topics.commands, topics.audit])
    sites = {
        pid: SiteDriver(kafka_bootstrap, prefix, pid)
        for pid in ("STOP-ALIVE", "STOP-QUIET", "STOP-BEFORE")
    }
    try:
        with run_monitor(kafka_bootstrap, prefix, tmp, *ledger_args(ledger, key)) as mon:
            wait_assigned(mon)
            for s in sites.values():
                armed(s, obs)
            time.sleep(0.5)
            sites["STOP-BEFORE"].pause("robot")
            time.sleep(0.05)
            stopped_at = time.time()
            os.kill(mon.proc.pid, signal.SIGSTOP)
            try:
                time.sleep(0.3)
                sites["STOP-QUIET"].pause("robot")
                time.sleep(max(0.0, stopped_at + 1.5 - time.time()))
            finally:
                os.kill(mon.proc.pid, signal.SIGCONT)
            resumed_at = time.time()
            # Plenty of time for the due stops, and for a false stop to show up.
            obs.wait_for(
                lambda: safe_stops(obs, "STOP-QUIET") and safe_stops(obs, "STOP-BEFORE"),
                SAFE_STOP_DEADLINE_S,
            )
            time.sleep(3.0)
            healthy = mon.healthy()
        log = mon.log()
        yield Paused(
            obs,
            stopped_at,
            resumed_at,
            healthy,
            mon.proc.returncode,
            log,
            verify_ledger(ledger, key),
            dict(sites["STOP-ALIVE"].unplanned_gap_s),
        )
    finally:
        for s in sites.values():
            s.close()
        obs.close()
        with contextlib.suppress(Exception):
            admin = admin_client(kafka_bootstrap)
            try:
                admin.delete_topics(topics.all(), 10)
            finally:
                admin.close()


@pytest.mark.hazard("H-04")
@pytest.mark.hazard("H-01")
def test_sigstop_stops_the_dead_man_signal_and_real_silence_is_stopped(paused: Paused) -> None:
    obs = paused.obs
    # While stopped, no monitor heartbeat is issued: the robot's dead-man timer takes over.
    hbs = sorted(h["issued_at"] for h in obs.commands("STOP-ALIVE", "monitor_heartbeat"))
    inside = [
        t for t in hbs if paused.stopped_at * 1e9 + 100e6 < t < paused.resumed_at * 1e9 - 100e6
    ]
    assert not inside, inside
    gaps = [b - a for a, b in itertools.pairwise(hbs)]
    assert max(gaps) >= 1.2e9, max(gaps)
    # A robot that went quiet during (or just before) the pause is stopped after resume.
    for pid in ("STOP-QUIET", "STOP-BEFORE"):
        stops = safe_stops(obs, pid)
        assert stops, f"{pid} not stopped:\n{paused.log[-3000:]}"
        assert stops[0]["policy"]["rule"] == "heartbeat_silence"
        assert stops[0]["_received_at"] <= paused.resumed_at + SAFE_STOP_DEADLINE_S
    # The pause is audited, the monitor is healthy and exits cleanly, the ledger verifies.
    deaf = [e for e in obs.items(None) if e.get("event") == "monitor_deaf"]
    assert any(e["data"]["duration_ms"] >= 1000 for e in deaf), deaf
    assert paused.healthy_after
    assert paused.returncode == 0, paused.log[-3000:]
    assert paused.verify.returncode == 0, paused.verify.stdout + paused.verify.stderr


@pytest.mark.hazard("H-04")
def test_sigstop_gives_no_false_stop_and_counts_only_audible_silence(paused: Paused) -> None:
    obs = paused.obs
    assert not safe_stops(obs, "STOP-ALIVE"), (
        f"false safe-stop after the pause: {safe_stops(obs, 'STOP-ALIVE')}; "
        f"sender gaps {paused.gaps}"
    )
    # STOP-QUIET's robot went quiet 0.3 s into the pause: the broker's timestamps show the
    # monitor that silence once it hears again, so the stop leaves right after the resume
    # (never during the pause), decided late, and the audit entry says by how much.
    stop = safe_stops(obs, "STOP-QUIET")[0]
    assert stop["_received_at"] >= paused.resumed_at, stop
    assert "robot" in stop["reason"], stop["reason"]
    issued = [e for e in obs.items("STOP-QUIET") if e.get("event") == "safe_stop_issued"]
    assert issued and issued[0].get("late_ms", 0) >= 500, issued
    later = [
        h["status"]
        for h in obs.commands("STOP-ALIVE", "monitor_heartbeat")
        if h["_received_at"] > paused.resumed_at + 1.0
    ]
    assert later and "safe_stop_latched" not in later, later[-5:]
