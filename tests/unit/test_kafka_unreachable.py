"""Kafka unreachable: telesafe says so in its own words, once, and the client libraries'
retry lines (librdkafka logs a FAIL line per reconnect attempt) stay out of sight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOWHERE = "127.0.0.1:1"  # nothing listens: connection refused at once


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELESAFE_")}
    return {**env, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}


def test_a_tool_says_kafka_is_unreachable_in_one_line(tmp_path: Path) -> None:
    argv = ["rearm", "--procedure", "P", "--operator", "op", "--reason", "r"]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            *argv,
            "--bootstrap",
            NOWHERE,
            "--monitor",
            "http://127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_env(tmp_path),
    )
    assert res.returncode == 3  # EXIT_UNAVAILABLE
    assert res.stdout == ""
    [line] = res.stderr.splitlines()
    assert line.startswith(f"telesafe rearm: Kafka at {NOWHERE}: "), line


def test_the_monitor_waits_for_kafka_with_one_line(tmp_path: Path) -> None:
    """`telesafe run` before Kafka is up: one 'waiting for Kafka at ...' line (repeated
    every 30 s), nothing from the client library, and it stops cleanly on SIGTERM."""
    argv = ["run", "--bootstrap", NOWHERE, "--operators", "op", "--http-port", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
    )
    time.sleep(6.0)  # two open attempts at least
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    lines = [ln.split(None, 3)[-1] for ln in out.splitlines()]  # without date, time, level
    assert len(lines) == 1, out
    assert lines[0].startswith(f"telesafe.monitor: waiting for Kafka at {NOWHERE} ("), out
    assert err == ""
    assert proc.returncode == 1
