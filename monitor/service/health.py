"""Is the loop alive, is it ready, how busy is it: pure functions and a small meter.

/healthz fails when the loop has stopped or not turned for `STALL_S` (restart me);
/readyz also fails while no partition is held (nothing supervised here yet) or while the
loop is saturated (busy and behind: add instances), with the reason in the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STALL_S = 1.0  # /healthz fails when the loop has not turned for this long
# /readyz says "saturated" (503, with the reason) when the loop is this busy and behind.
SATURATED_BUSY = 0.9
SATURATED_LAG_S = 0.1


class LoopLoad:
    """The share of wall time the loop spends working (everything but the wait inside
    poll), smoothed over about four samples. Times are monotonic ns."""

    def __init__(self, now_ns: int) -> None:
        self._turn_start = now_ns
        self._busy_ns = 0
        self._since = now_ns
        self.ratio = 0.0

    def turned(self, poll_started_ns: int, poll_returned_ns: int, timeout_s: float) -> None:
        """One poll returned: the turn before it was busy, and so was any time the poll
        took beyond what it was asked to wait."""
        waited = min(poll_returned_ns - poll_started_ns, int(timeout_s * 1e9))
        self._busy_ns += max(0, poll_returned_ns - self._turn_start) - waited
        self._turn_start = poll_returned_ns

    def sample(self, now_ns: int) -> float:
        """Fold the time since the last sample into `ratio` (call every ~250 ms)."""
        span = now_ns - self._since
        if span > 0:
            share = min(1.0, max(0.0, self._busy_ns / span))
            self.ratio += 0.25 * (share - self.ratio)
            self._busy_ns, self._since = 0, now_ns
        return self.ratio


def health(error: BaseException | None, alive: bool, loop_age_s: float) -> dict[str, Any]:
    """The /healthz answer (without `ok`): its problems, and how long since the loop turned."""
    problems = []
    if error is not None or not alive:
        problems.append(f"monitor loop stopped: {error}")
    if loop_age_s > STALL_S:
        problems.append(f"monitor loop stalled for {loop_age_s:.1f} s")
    return {"problems": problems, "loop_age_s": round(loop_age_s, 3)}


def readiness(
    detail: Mapping[str, Any],
    held: int,
    assigned_once: bool,
    busy_ratio: float,
    lags_s: Mapping[str, float],
) -> tuple[bool, dict[str, Any]]:
    """/readyz from the /healthz `detail`: ready = healthy, holding partitions, and not
    saturated (busy over SATURATED_BUSY while a partition number is behind by more than
    SATURATED_LAG_S)."""
    problems = list(detail["problems"])
    if not held:
        problems.append(
            "no partition assigned yet (joining the consumer group)"
            if not assigned_once
            else "no partition assigned (more instances than partitions?)"
        )
    worst = max(lags_s.values(), default=0.0)
    saturated = busy_ratio > SATURATED_BUSY and worst > SATURATED_LAG_S
    if saturated:
        behind = sorted(n for n, lag in lags_s.items() if lag > SATURATED_LAG_S)
        problems.append(
            f"saturated: loop busy {busy_ratio:.0%}, behind by up to "
            f"{worst * 1e3:.0f} ms on partition(s) {', '.join(behind)}; add instances"
        )
    return not problems, {
        **detail,
        "problems": problems,
        "partitions_assigned": held,
        "busy_ratio": round(busy_ratio, 3),
        "lag_seconds": dict(lags_s),
    }
