"""`telesafe run --workers N`: N monitor processes share the partitions through the group,
each with its own id, HTTP port and ledger; SIGTERM to the parent stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.monitorkit import free_port, http_json

REPO = Path(__file__).resolve().parents[2]


def test_two_workers_share_the_partitions_and_stop_together(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    while free_port() == port + 1:  # the second worker takes the next port
        port = free_port()
    log = tmp_path / "workers.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor",
                "run",
                "--workers",
                "2",
                "--bootstrap",
                kafka_bootstrap,
                "--topic-prefix",
                topic_prefix,
                "--group-id",
                f"{topic_prefix}workers",
                "--monitor-id",
                "wk",
                "--http-port",
                str(port),
                "--ledger",
                str(tmp_path / "audit.sqlite"),
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        held: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and held != {0: 9, 1: 9}:
            time.sleep(0.5)
            for i in (0, 1):
                try:
                    code, body = http_json(f"http://127.0.0.1:{port + i}/readyz")
                except OSError:
                    continue
                held[i] = int(body.get("partitions_assigned", 0)) if code == 200 else 0
        # 6 partition numbers x 3 input topics, split between the two workers.
        assert held == {0: 9, 1: 9}, (held, log.read_text()[-3000:])
        assert (tmp_path / "audit-0.sqlite").exists() and (tmp_path / "audit-1.sqlite").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(40)
    assert rc == 0, log.read_text()[-3000:]
    left = subprocess.run(
        ["pgrep", "-f", f"--monitor-id wk-.*{topic_prefix}|{topic_prefix}.*--monitor-id wk-"],
        capture_output=True,
        text=True,
    )
    assert left.stdout.strip() == "", left.stdout
