"""The garbage collector, set for a monitor that must not pause.

CPython's cyclic collector holds the GIL while it scans, so no thread (the safe-stop path
included) runs during a collection. Measured on a monitor supervising 100 procedures
(docs/performance.md, "Collector pauses"): ~80k of its tracked objects are start-up objects
(modules, classes, kafka-python protocol schemas, pydantic validators) that live for the
whole run, and full collections, every few seconds, cost up to ~100 ms of CPU each and
~7 % of the process's CPU in all. Freezing the start-up heap takes it out of every later
scan; a higher oldest-generation threshold makes full collections rarer. The young
threshold stays at CPython's default: a young collection's pause grows with it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

# Full collections after this many middle-generation collections (CPython's default: 10).
OLD_THRESHOLD = 100


def settle() -> int:
    """Collect start-up garbage, freeze what is left, make full collections rarer. Call once
    per process, before the monitor's threads start. Returns the number of objects frozen."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, OLD_THRESHOLD)
    return gc.get_freeze_count()


def observe_pauses(histogram: Any) -> Callable[[], None]:
    """Time every collection into `histogram` (labelled by generation); returns the undo.

    The callback runs inside the collector, with the GIL, so it only reads a clock and
    observes into a child resolved beforehand.
    """
    children = [histogram.labels(str(g)) for g in range(3)]
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            children[min(info["generation"], 2)].observe(time.perf_counter() - started[0])

    gc.callbacks.append(callback)
    return lambda: gc.callbacks.remove(callback)
