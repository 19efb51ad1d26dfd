"""ICD §9 on real parts: `telesafe run --record` (and a separate `telesafe record`)
during a simulated run with faults, then `telesafe replay` of those recordings (as
subprocesses).

Replay must be deterministic (byte-identical output), must reach the live run's
decisions (the same first safe-stop rule, the same breach episodes), must show the
garbage the sites sent as `rejected` lines, and, taking the monitor id from the
recording, must issue the live command ids and so honour the robot's acknowledgement.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.broker.topics import admin_client, ensure_topics
from monitor.icd.topics import Topics
from monitor.kafka.settings import KafkaSettings
from monitor.sim.faults import parse_spec
from monitor.sim.runner import SimConfig, Simulation
from tests.integration.monitorkit import run_monitor
from tests.integration.sitekit import Observer

REPO = Path(__file__).resolve().parents[2]
FAULTS = ("garbage:console@1s,count=3", "heartbeat-stop:robot@2s", "out-of-box:psm2@3s")
GARBAGE = 3


@dataclass
class LiveRun:
    pid: str
    topics: Topics
    recording: Path
    recorded_apart: Path  # by `telesafe record`, a separate process
    stops: list[dict[str, Any]]  # safe_stop commands seen on the commands topic
    audit: list[dict[str, Any]]  # audit mirror entries of the procedure
    log: str
    returncode: int | None  # of `telesafe run` after SIGTERM


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    prefix = f"r{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    topics = Topics(prefix)
    workdir = tmp_path_factory.mktemp("replay")
    recording = workdir / "live.jsonl"
    apart = workdir / "apart.jsonl"
    cfg = SimConfig(
        duration=5.0,
        seed=3,
        procedure_prefix=f"REC{uuid.uuid4().hex[:6]}",
        faults=[parse_spec(f) for f in FAULTS],
    )
    pid = cfg.procedure_ids()[0]
    try:
        with run_monitor(kafka_bootstrap, prefix, workdir, "--record", str(recording)) as mon:
            obs = Observer(kafka_bootstrap, [topics.commands, topics.audit])
            # From the beginning of this test's own topics: nothing is missed at its start.
            recorder = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "monitor",
                    "record",
                    str(apart),
                    "--from-beginning",
                    "--bootstrap",
                    kafka_bootstrap,
                    "--topic-prefix",
                    prefix,
                ],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                Simulation(
                    cfg, KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
                ).run()
                obs.wait_for(lambda: obs.audit(pid, "procedure_closed"), 5.0)
                time.sleep(0.3)
                stops = obs.commands(pid, "safe_stop")
                audit = [o for o in obs.items(pid) if "event" in o]
            finally:
                obs.close()
                recorder.terminate()  # SIGTERM: stops and closes the file
                _, err = recorder.communicate(timeout=30)
                assert recorder.returncode == 0, err.decode(errors="replace")
        # run_monitor has stopped the monitor (SIGTERM): the recording is closed.
        yield LiveRun(pid, topics, recording, apart, stops, audit, mon.log(), mon.proc.returncode)
    finally:
        with contextlib.suppress(Exception):
            admin = admin_client(kafka_bootstrap)
            try:
                admin.delete_topics(topics.all(), 10)
            finally:
                admin.close()


def _replay(recording: Path, *extra: str, stderr: list[str] | None = None) -> bytes:
    res = subprocess.run(
        [sys.executable, "-m", "monitor", "replay", str(recording), *extra],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    if stderr is not None:
        stderr.extend(res.stderr.decode().splitlines())
    return res.stdout


@pytest.fixture(scope="module")
def replayed(live: LiveRun) -> tuple[bytes, bytes]:
    return _replay(live.recording), _replay(live.recording)


def _lines(out: bytes) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def _episodes(kinds_and_data: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    return [
        (k, d["rule"])
        for k, d in kinds_and_data
        if k in ("safe_stop_issued", "breach_while_latched", "rearm_accepted")
    ]


def test_live_run_was_recorded_and_stopped(live: LiveRun) -> None:
    assert live.recording.stat().st_size > 0
    assert live.stops, f"the live monitor issued no safe_stop\n{live.log[-3000:]}"
    assert len({s["command_id"] for s in live.stops}) == 1, live.stops
    lines = live.recording.read_text().splitlines()
    first = json.loads(lines[0])
    assert set(first) >= {"received_at", "topic", "key"}, first
    assert sum("value_raw" in json.loads(x) for x in lines) >= 1  # the not-JSON garbage


def test_replay_is_byte_identical(replayed: tuple[bytes, bytes]) -> None:
    a, b = replayed
    assert a, "replay printed nothing"
    assert a == b


def test_replay_reaches_the_live_first_safe_stop(
    live: LiveRun, replayed: tuple[bytes, bytes]
) -> None:
    lines = _lines(replayed[0])
    stops = [
        x["command"]
        for x in lines
        if x["decision"] == "command"
        and x["command"]["type"] == "safe_stop"
        and x["command"]["procedure_id"] == live.pid
    ]
    assert stops, "the replay issued no safe_stop"
    live_first = live.stops[0]
    assert stops[0]["policy"]["rule"] == live_first["policy"]["rule"] == "heartbeat_silence"
    assert stops[0]["policy"]["pack"] == live_first["policy"]["pack"]
    assert stops[0]["reason"].split(" silent")[0] == live_first["reason"].split(" silent")[0]
    # §9: same timings relative to received_at. The live monitor fires its timer a little
    # after the deadline (thread scheduling); replay fires exactly at it.
    skew_s = (live_first["issued_at"] - stops[0]["issued_at"]) / 1e9
    assert -0.05 < skew_s < 0.5, skew_s
    # Same breach episodes, in the same order, as the live monitor audited.
    replay_events = [
        (x["kind"], x["data"])
        for x in lines
        if x["decision"] == "event" and x["procedure_id"] == live.pid
    ]
    live_events = [(e["event"], e["data"]) for e in live.audit]
    assert _episodes(replay_events) == _episodes(live_events), (
        _episodes(replay_events),
        _episodes(live_events),
    )


def test_replay_shows_the_garbage_as_rejected(live: LiveRun, replayed: tuple[bytes, bytes]) -> None:
    rejected = [x for x in _lines(replayed[0]) if x["decision"] == "rejected"]
    assert len(rejected) == GARBAGE, rejected
    assert {x["topic"] for x in rejected} == {live.topics.telemetry_console}
    assert all(x["reason"] for x in rejected)


def test_live_robot_acknowledged_the_stop(live: LiveRun) -> None:
    kinds = [e["event"] for e in live.audit]
    assert "safe_stop_acknowledged" in kinds, kinds
    assert "safe_stop_escalated" not in kinds, kinds


def test_replay_honours_the_recorded_ack_like_the_live_run(live: LiveRun) -> None:
    out = _lines(_replay(live.recording, "--monitor-id", live.stops[0]["monitor_id"]))
    kinds = [x["kind"] for x in out if x["decision"] == "event" and x["procedure_id"] == live.pid]
    assert "ack_unmatched" not in kinds
    assert "safe_stop_acknowledged" in kinds
    assert "safe_stop_escalated" not in kinds
    first = next(
        x["command"]
        for x in out
        if x["decision"] == "command" and x["command"]["type"] == "safe_stop"
    )
    assert first["command_id"] == live.stops[0]["command_id"]


def test_replay_takes_the_monitor_id_from_the_recording(live: LiveRun) -> None:
    """No --monitor-id: the recording names the live monitor, so the replay issues the live
    command id, the recorded acknowledgement matches it, nothing escalates or warns."""
    warnings: list[str] = []
    out = _lines(_replay(live.recording, stderr=warnings))
    assert warnings == []
    kinds = [x["kind"] for x in out if x["decision"] == "event" and x["procedure_id"] == live.pid]
    assert "safe_stop_acknowledged" in kinds
    assert "ack_unmatched" not in kinds and "safe_stop_escalated" not in kinds
    first = next(
        x["command"]
        for x in out
        if x["decision"] == "command"
        and x["command"]["type"] == "safe_stop"
        and x["command"]["procedure_id"] == live.pid
    )
    assert first["command_id"] == live.stops[0]["command_id"]


def test_a_separate_recorder_names_the_monitor_and_replay_says_what_did_not_match(
    live: LiveRun,
) -> None:
    """`telesafe record` learns the owning monitor from the commands topic. It hears records
    at other moments than the monitor did (the procedure's opening time is part of every
    command id), so the replayed ids may differ: then the replay must say so."""
    lines = [json.loads(x) for x in live.recorded_apart.read_text().splitlines()]
    assert {x.get("monitor_id") for x in lines} <= {None, live.stops[0]["monitor_id"]}
    assert any(x.get("monitor_id") for x in lines)
    warnings: list[str] = []
    out = _lines(_replay(live.recorded_apart, stderr=warnings))
    commands = [x["command"] for x in out if x["decision"] == "command"]
    assert commands and {c["monitor_id"] for c in commands} == {live.stops[0]["monitor_id"]}
    unmatched = [x for x in out if x["decision"] == "event" and x["kind"] == "ack_unmatched"]
    said = [w for w in warnings if "match no replayed command" in w]
    assert len(said) == (1 if unmatched else 0), (warnings, unmatched)
    assert all(w.startswith("telesafe replay: warning: ") for w in warnings)


def test_replay_as_another_monitor_says_the_acks_match_nothing(live: LiveRun) -> None:
    warnings: list[str] = []
    _replay(live.recording, "--monitor-id", "someone-else", stderr=warnings)
    assert any("recorded safe_stop_ack(s) match no replayed command" in w for w in warnings)


def test_monitor_stops_cleanly_and_keeps_the_whole_recording(live: LiveRun) -> None:
    """Regression: Ingest once shadowed Thread._stop with an Event, so join() raised on
    SIGTERM, svc.stop() aborted and recorder.close() never ran (the tail was lost)."""
    assert "Traceback" not in live.log, live.log[-2000:]
    assert live.returncode == 0
    ends = [
        json.loads(x) for x in live.recording.read_text().splitlines() if '"procedure_end"' in x
    ]
    assert [e["value"]["procedure_id"] for e in ends] == [live.pid]
