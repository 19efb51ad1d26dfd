"""The audit ledger's disk fills up while the monitor runs (a 2 MiB tmpfs, then filled).

Documented behaviour (docs/safety/README.md, "Audit ledger failure"): supervision goes on
(safe-stops are still published), the failure raises the alarm
(`telesafe_ledger_append_failures_total` > 0, a CRITICAL log line, the LedgerAppendFailure
alert), appending stops for good (no retry after a write error) and later entries are held
in memory (`telesafe_ledger_pending_entries`); what was appended before still verifies.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.icd.topics import Topics
from tests.faults.faultkit import (
    SAFE_STOP_DEADLINE_S,
    armed,
    ledger_args,
    ledger_files,
    metric,
    safe_stops,
    verify_ledger,
    wait_assigned,
)
from tests.integration.monitorkit import MonitorProcess, http_json, run_monitor
from tests.integration.sitekit import Observer, SiteDriver


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "ledgerfs"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path) -> None:
    with contextlib.suppress(OSError), open(mnt / "filler", "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())


@dataclass
class DiskFull:
    mon: MonitorProcess
    obs: Observer
    stop: dict[str, Any]


@contextlib.contextmanager
def _disk_full(bootstrap: str, prefix: str, tmp: Path, mnt: Path) -> Iterator[DiskFull]:
    """A monitor whose ledger disk filled up, after a heartbeat loss it had to stop."""
    _, key = ledger_files(tmp)
    ledger = mnt / "ledger.sqlite"
    topics = Topics(prefix)
    obs = Observer(bootstrap, [topics.commands, topics.audit])
    site = SiteDriver(bootstrap, prefix, "DISK-1")
    try:
        with run_monitor(bootstrap, prefix, tmp, *ledger_args(ledger, key)) as mon:
            wait_assigned(mon)
            armed(site, obs)
            time.sleep(0.5)
            _fill(mnt)
            # Enough audit traffic to need new pages: operator notes of 4 KiB each.
            for i in range(200):
                site.producer.send(
                    topics.operator,
                    key=b"DISK-1",
                    value=(
                        b'{"v":1,"type":"note","procedure_id":"DISK-1","operator_id":"op",'
                        b'"text":"' + f"note {i} ".encode() + b"x" * 4096 + b'"}'
                    ),
                )
            site.flush()
            assert obs.wait_for(
                lambda: metric(mon.url, "telesafe_ledger_append_failures_total") > 0, 30
            ), mon.log()[-3000:]
            # Supervision goes on: a heartbeat loss still gives a safe-stop.
            site.pause("robot")
            assert obs.wait_for(lambda: safe_stops(obs, "DISK-1"), SAFE_STOP_DEADLINE_S), mon.log()[
                -3000:
            ]
            time.sleep(1.0)
            yield DiskFull(mon, obs, safe_stops(obs, "DISK-1")[0])
        assert mon.proc.returncode == 0, mon.log()[-3000:]
    finally:
        site.close()
        obs.close()
    (mnt / "filler").unlink()
    res = verify_ledger(ledger, key)  # what was appended before the failure still verifies
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.hazard("H-08")
def test_disk_full_ledger_keeps_supervising_and_raises_the_alarm(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, small_fs: Path
) -> None:
    with _disk_full(kafka_bootstrap, topic_prefix, tmp_path, small_fs) as run:
        assert run.stop["policy"]["rule"] == "heartbeat_silence"
        assert "AUDIT LEDGER WRITE FAILED" in run.mon.log()
        assert http_json(run.mon.url + "/healthz")[0] == 200
        # Not silently dropped while running: the entries are held, counted as pending.
        assert metric(run.mon.url, "telesafe_ledger_pending_entries") > 0


@pytest.mark.hazard("H-08")
def test_disk_full_ledger_audit_entries_still_leave_the_process(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, small_fs: Path
) -> None:
    with _disk_full(kafka_bootstrap, topic_prefix, tmp_path, small_fs) as run:
        cid = run.stop["command_id"]
        assert run.obs.wait_for(
            lambda: run.obs.audit("DISK-1", "safe_stop_issued", command_id=cid), 10
        ), "safe_stop_issued after the ledger failure never reached telesafe.audit"
