"""Sliding-window quantiles in O(log n) per sample (sortedcontainers.SortedList + a FIFO)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from itertools import islice

from sortedcontainers import SortedList


class SlidingQuantiles:
    """Samples from the last `window_ns` of time; nearest-rank quantiles over them."""

    __slots__ = ("_fifo", "_sorted", "window_ns")

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self._fifo: deque[tuple[int, float]] = deque()
        self._sorted = SortedList()

    def add(self, t_ns: int, value: float) -> None:
        self._fifo.append((t_ns, value))
        self._sorted.add(value)

    def add_many(self, t_ns: int, values: list[float]) -> None:
        fifo = self._fifo
        for v in values:
            fifo.append((t_ns, v))
        self._sorted.update(values)

    def expire(self, now_ns: int) -> None:
        """Drop samples older than the window (a sample exactly `window_ns` old is dropped)."""
        cutoff = now_ns - self.window_ns
        fifo, srt = self._fifo, self._sorted
        while fifo and fifo[0][0] <= cutoff:
            srt.remove(fifo.popleft()[1])

    def __len__(self) -> int:
        return len(self._sorted)

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile: the smallest sample with at least q of the samples <= it."""
        n = len(self._sorted)
        if n == 0:
            return None
        rank = max(1, math.ceil(q * n))
        return float(self._sorted[rank - 1])

    def quantiles_at(self, now_ns: int, qs: tuple[float, ...]) -> list[float | None]:
        """`quantile(q)` for each q as if `expire(now_ns)` had run, without expiring: for
        views, which must not change the window the rules judge later."""
        cutoff = now_ns - self.window_ns
        expired = 0
        for t, _ in self._fifo:
            if t > cutoff:
                break
            expired += 1
        values: Sequence[float] = self._sorted
        if expired:
            values = sorted(v for _, v in islice(self._fifo, expired, None))
        n = len(values)
        if n == 0:
            return [None for _ in qs]
        return [float(values[max(1, math.ceil(q * n)) - 1]) for q in qs]

    def max(self) -> float | None:
        return float(self._sorted[-1]) if self._sorted else None

    def oldest_ns(self) -> int | None:
        return self._fifo[0][0] if self._fifo else None
