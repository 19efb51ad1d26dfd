"""`telesafe rearm` against a real monitor: it finds the latch, sends a request naming it
and prints the monitor's decision, with the exit code the docs promise (0 accepted,
1 rejected or nothing to clear, 3 no decision)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.kafka.settings import KafkaSettings
from monitor.sim.faults import parse_spec
from monitor.sim.runner import SimConfig, Simulation
from tests.integration.monitorkit import MonitorProcess, http_json, run_monitor


@dataclass
class Latched:
    mon: MonitorProcess
    pid: str
    common: list[str]  # Kafka and monitor flags of every operator command


@pytest.fixture()
def latched(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Latched]:
    """A procedure whose robot lost its heartbeats for 1 s: latched, acknowledged, and its
    sites healthy again; the simulation runs on while the test acts."""
    cfg = SimConfig(
        duration=30.0,
        seed=5,
        procedure_prefix=f"OPS{topic_prefix[1:7]}",
        faults=[parse_spec("heartbeat-stop:robot@1s,for=1s")],
    )
    pid = cfg.procedure_ids()[0]
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    with run_monitor(kafka_bootstrap, topic_prefix, tmp_path, "--operators", "dr-smith") as mon:
        sim = Simulation(cfg, settings)
        sim.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # latched and acknowledged, sites back
                _, snap = http_json(mon.url + "/status")
                p = snap.get("procedures", {}).get(pid)
                if p and p.get("latch") and p["latch"]["ack"] and not p["warnings"]:
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"{pid} was not latched and healthy in time:\n{mon.log()[-3000:]}")
            flags = ["--bootstrap", kafka_bootstrap, "--topic-prefix", topic_prefix]
            yield Latched(mon, pid, [*flags, "--monitor", mon.url, "--procedure", pid])
        finally:
            sim.stop()


def test_rearm_by_an_unknown_operator_is_rejected_with_the_reason(
    latched: Latched, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["rearm", *latched.common, "--operator", "mallory", "--reason", "try"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert out[0].startswith(f"{latched.pid}: latch ")  # what it found
    assert out[1].startswith("rearm_request ") and " sent (" in out[1]
    assert out[2].startswith("REJECTED by monitor ")
    assert any("mallory" in line for line in out[3:]), out


def test_rearm_accepted_then_nothing_left_to_clear(
    latched: Latched, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["rearm", *latched.common, "--operator", "dr-smith", "--reason", "link restored"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0, out
    assert out[-1].startswith("ACCEPTED by monitor ") and out[-1].endswith(" cleared")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the monitor's /status drops the latch
        _, snap = http_json(latched.mon.url + "/status")
        if not snap["procedures"][latched.pid].get("latch"):
            break
        time.sleep(0.2)
    rc = main(["rearm", *latched.common, "--operator", "dr-smith", "--reason", "again"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 1
    assert err == [
        f"telesafe rearm: {latched.pid} is not latched (no latch on the monitor's /status "
        "nor on telesafe.state): nothing to clear"
    ]
