"""Warning hysteresis: a warning is raised at once and clears after its signal stayed in band.

"In band" is judged by the absence of out-of-band observations: each rule reports every
out-of-band observation with `bad()`; `clear_due()` clears warnings whose last bad
observation is at least `clear_ns` old. Rules whose signal is a duration (heartbeat silence)
re-report while the condition lasts, so a long silence never clears its own warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class ActiveWarning:
    rule: str
    subject: str
    raised_mono: int
    last_bad_mono: int
    observed: Any
    threshold: Any


class WarningSet:
    __slots__ = ("active", "clear_ns")

    def __init__(self, clear_ns: int) -> None:
        self.clear_ns = clear_ns
        self.active: dict[tuple[str, str], ActiveWarning] = {}

    def bad(self, rule: str, subject: str, now_mono: int, observed: Any, threshold: Any) -> bool:
        """Record an out-of-band observation; True if this raises a new warning."""
        w = self.active.get((rule, subject))
        if w is not None:
            w.last_bad_mono = now_mono
            w.observed = observed
            return False
        self.active[(rule, subject)] = ActiveWarning(
            rule, subject, now_mono, now_mono, observed, threshold
        )
        return True

    def clear_due(self, now_mono: int) -> list[ActiveWarning]:
        done = [w for w in self.active.values() if now_mono - w.last_bad_mono >= self.clear_ns]
        for w in done:
            del self.active[(w.rule, w.subject)]
        return done

    def next_deadline(self) -> int | None:
        if not self.active:
            return None
        return min(w.last_bad_mono for w in self.active.values()) + self.clear_ns

    def __bool__(self) -> bool:
        return bool(self.active)
