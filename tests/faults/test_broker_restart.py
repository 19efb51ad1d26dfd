"""Broker restart mid-procedure, on a broker of our own (the shared one keeps running).

No missed safe-stop, no lost audit entry, no silent un-latch:
- a procedure latched before the restart is still latched after it (its monitor heartbeats
  say `safe_stop_latched` once traffic resumes, never `armed`);
- the monitor process survives the outage and reconnects by itself;
- a heartbeat loss after the restart still yields a safe-stop;
- every safe_stop_issued in the ledger is on the commands topic, the ledger verifies and
  holds the pre-restart safe_stop_issued.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.broker import server
from monitor.broker.runtime import BrokerError, PrerequisiteError
from monitor.icd.topics import Topics
from tests.faults.faultkit import (
    SAFE_STOP_DEADLINE_S,
    ack,
    armed,
    ledger_args,
    ledger_entries,
    ledger_files,
    read_topic,
    safe_stops,
    statuses,
    verify_ledger,
    wait_assigned,
    wait_status,
)
from tests.integration.monitorkit import free_port, run_monitor
from tests.integration.sitekit import Observer, SiteDriver


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[str, Path, int, int]]:
    """A broker of our own on free loopback ports with a tmp data dir; always stopped."""
    data = tmp_path / "kafka"
    port, cport = free_port(), free_port()
    while cport == port:
        cport = free_port()
    try:
        res = server.start(data, port=port, controller_port=cport, timeout_s=120)
    except PrerequisiteError as exc:
        pytest.skip(f"cannot run a local Kafka broker: {exc}")
    try:
        yield res.bootstrap, data, port, cport
    finally:
        with contextlib.suppress(BrokerError):
            server.stop(data)
        # A restart inside the test may have left a second pid file behind: stop again.
        with contextlib.suppress(BrokerError):
            server.stop(data)


@pytest.mark.hazard("H-05")
@pytest.mark.hazard("H-08")
def test_broker_restart_keeps_latches_and_supervision(
    own_broker: tuple[str, Path, int, int], tmp_path: Path
) -> None:
    bootstrap, data, port_b, cport = own_broker
    ledger, key = ledger_files(tmp_path)
    port = free_port()
    monitor_id = f"itest-{port}"
    topics = Topics("")
    with run_monitor(bootstrap, "", tmp_path, *ledger_args(ledger, key), port=port) as mon:
        wait_assigned(mon)
        obs = Observer(bootstrap, [topics.commands])
        latched = SiteDriver(bootstrap, "", "BR-LATCHED")
        try:
            armed(latched, obs)
            latched.pause("robot")
            assert obs.wait_for(lambda: safe_stops(obs, "BR-LATCHED"), SAFE_STOP_DEADLINE_S)
            first = safe_stops(obs, "BR-LATCHED")[0]
            ack(latched, first["command_id"])  # the robot stopped: latched, acknowledged
            latched.resume("robot")  # its telemetry is healthy again, the latch stays
            time.sleep(1.0)
            assert statuses(obs, "BR-LATCHED", time.time() - 0.5)[-1] == "safe_stop_latched"

            # The outage: controlled shutdown, a few seconds down, same data dir back up.
            server.stop(data)
            down_at = time.time()
            assert mon.proc.poll() is None, "monitor died with the broker"
            time.sleep(3.0)
            assert mon.proc.poll() is None, "monitor died while the broker was down"
            server.start(data, port=port_b, controller_port=cport, timeout_s=120)
            up_at = time.time()

            # Traffic resumes: the latched procedure is still latched, never armed.
            assert wait_status(obs, "BR-LATCHED", "safe_stop_latched", 60, since=up_at), (
                f"no monitor heartbeat after the restart:\n{mon.log()[-3000:]}"
            )
            time.sleep(2.0)
            after = statuses(obs, "BR-LATCHED", since=down_at)
            assert after and set(after) == {"safe_stop_latched"}, after
            assert mon.proc.poll() is None

            # Supervision works after the restart: a new procedure, then a heartbeat loss.
            fresh = SiteDriver(bootstrap, "", "BR-AFTER")
            try:
                fresh.procedure_start()
                fresh.start()
                fresh.flush()
                if not wait_status(obs, "BR-AFTER", "armed", 60):
                    sent = [
                        (r["type"], r["seq"])
                        for t in (topics.telemetry_robot, topics.telemetry_console)
                        for r in read_topic(bootstrap, t)
                        if r.get("procedure_id") == "BR-AFTER"
                    ]
                    raise AssertionError(
                        f"BR-AFTER never armed: {statuses(obs, 'BR-AFTER')[-5:]}; at the broker "
                        f"{len(sent)} of its records, the first {sent[:3]}\n{mon.log()[-6000:]}"
                    )
                fresh.pause("robot")
                assert obs.wait_for(lambda: safe_stops(obs, "BR-AFTER"), SAFE_STOP_DEADLINE_S), (
                    f"no safe-stop after the restart:\n{mon.log()[-3000:]}"
                )
                assert safe_stops(obs, "BR-AFTER")[0]["policy"]["rule"] == "heartbeat_silence"
            finally:
                fresh.close()
        finally:
            latched.close()
            obs.close()
        assert mon.proc.poll() is None
    assert mon.proc.returncode == 0, mon.log()[-3000:]

    res = verify_ledger(ledger, key)
    assert res.returncode == 0, res.stdout + res.stderr
    entries = ledger_entries(ledger, monitor_id)
    issued = [e for e in entries if e["event"] == "safe_stop_issued"]
    assert first["command_id"] in {e["data"]["command_id"] for e in issued}
    # No missed safe-stop: every stop the ledger says was issued is on the commands topic
    # (including any issued while the broker was down: buffered, delivered on reconnect).
    on_topic = {
        c["command_id"]
        for c in read_topic(bootstrap, topics.commands)
        if c.get("type") == "safe_stop"
    }
    missing = {e["data"]["command_id"] for e in issued} - on_topic
    assert not missing, f"safe-stops audited but never delivered: {missing}"
