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
