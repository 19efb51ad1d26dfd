"""heap.settle() freezes the start-up heap and makes full collections rarer (run in a child
process: freezing is process-wide and must not leak into the test session)."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc, json
import monitor.service.runner  # the monitor's start-up heap: kafka-python, pydantic, ...
from monitor.service import heap
before = gc.get_threshold()
frozen = heap.settle()
print(json.dumps({"frozen": frozen, "count": gc.get_freeze_count(),
                  "before": before, "after": gc.get_threshold()}))
"""


def test_settle_freezes_start_up_objects_and_raises_the_old_threshold() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=60
    )
    import json

    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["frozen"] == r["count"] > 10_000  # modules, classes, schemas: tens of thousands
    assert r["after"][0] == r["before"][0]  # young pauses stay short
    assert r["after"][2] == 100 > r["before"][2]


def test_pauses_are_observed_by_generation() -> None:
    import gc

    from monitor.metrics import MonitorMetrics
    from monitor.service import heap

    m = MonitorMetrics()
    was_enabled = gc.isenabled()
    gc.disable()  # only the collections below, none triggered by allocations meanwhile
    try:
        undo = heap.observe_pauses(m.gc_pause)
        try:
            gc.collect(0)
            gc.collect(2)
        finally:
            undo()
        gc.collect(2)  # after the undo: not observed
    finally:
        if was_enabled:
            gc.enable()

    def count(gen: str) -> float:
        v = m.registry.get_sample_value("telesafe_gc_pause_seconds_count", {"generation": gen})
        return v or 0.0

    assert count("0") == 1
    assert count("2") == 1
    assert count("1") == 0
    total = m.registry.get_sample_value("telesafe_gc_pause_seconds_sum", {"generation": "2"})
    assert total is not None and total > 0
