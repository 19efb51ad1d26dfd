"""Exactly-once audit of inputs across crashes (issue: 1,232 of 7,176 notes were recorded
twice after 10 SIGKILL-restarts): offsets are committed only once the notes' audit entries
are durable, and a re-read note already in the ledger is not audited again.

CI kills the monitor 4 times; `bench/crash_audit.py` runs the full 100 (figures in
docs/performance.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.crashkit import crash_run


@pytest.mark.hazard("H-15")
def test_no_acknowledged_note_lost_or_recorded_twice_across_sigkills(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    r = crash_run(kafka_bootstrap, topic_prefix, tmp_path, kills=4, rate=100.0)
    assert r.acked >= 300, r.summary()
    assert r.lost == [], r.summary()
    assert r.duplicated == {}, r.summary()
    assert r.ledger_ok, r.summary()
