"""Time as the engine sees it: an `Instant` carries both monitor clocks.

`mono_ns` drives every deadline (liveness must not jump with NTP); `utc_ns` is only used
to judge staleness of site timestamps and to stamp decisions for people.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Instant:
    mono_ns: int
    utc_ns: int

    def plus(self, ns: int) -> Instant:
        return Instant(self.mono_ns + ns, self.utc_ns + ns)

    def at_mono(self, mono_ns: int) -> Instant:
        """The instant at another monotonic time, assuming both clocks run at the same rate."""
        return Instant(mono_ns, self.utc_ns + (mono_ns - self.mono_ns))


class Clock(Protocol):
    def now(self) -> Instant: ...


class SystemClock:
    def now(self) -> Instant:
        return Instant(time.monotonic_ns(), time.time_ns())


class FakeClock:
    """A clock tests move by hand."""

    def __init__(
        self, mono_ns: int = 1_000_000_000, utc_ns: int = 1_770_000_000_000_000_000
    ) -> None:
        self._i = Instant(mono_ns, utc_ns)

    def now(self) -> Instant:
        return self._i

    def advance_ms(self, ms: float) -> Instant:
        self._i = self._i.plus(int(ms * 1_000_000))
        return self._i

    def set_mono(self, mono_ns: int) -> Instant:
        self._i = self._i.at_mono(mono_ns)
        return self._i


MS = 1_000_000
