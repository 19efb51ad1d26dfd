"""Link quality (ICD §7): each site's reported jitter and loss ratio against the pack's
warn and stop limits. Judged per report; no timers."""

from __future__ import annotations

from typing import Any, ClassVar

from monitor.engine.clock import Instant
from monitor.engine.decisions import Decision
from monitor.engine.latch import Latch
from monitor.icd.models import SITES, Link, Site
from monitor.policy.model import PolicyPack

_JITTER = "{subject} link jitter {value:g} ms above {limit:g} ms"
_LOSS = "{subject} link loss ratio {value:g} above {limit:g}"


class LinkRule:
    __slots__ = ("jitter", "last", "latch", "loss")

    records: ClassVar[tuple[type[Any], ...]] = (Link,)

    def __init__(self, latch: Latch, opened: Instant, pack: PolicyPack) -> None:
        self.latch = latch
        # The last report of each site: (jitter ms, loss ratio), None before the first.
        self.last: dict[Site, tuple[float, float] | None] = dict.fromkeys(SITES)
        self.configure(pack)

    def configure(self, pack: PolicyPack) -> None:
        self.jitter, self.loss = pack.link.jitter, pack.link.loss

    def on_record(self, rec: Link, stale: bool, now: Instant, out: list[Decision]) -> None:
        self.last[rec.site] = (rec.jitter_ms, rec.loss_ratio)
        j, lo, latch = self.jitter, self.loss, self.latch
        latch.band("link_jitter", rec.site, now, rec.jitter_ms, j.warn_ms, j.stop_ms, _JITTER, out)
        latch.band(
            "link_loss", rec.site, now, rec.loss_ratio, lo.warn_ratio, lo.stop_ratio, _LOSS, out
        )

    def tick(self, now: Instant, out: list[Decision]) -> None:
        return None  # judged per report

    def deadline(self) -> int | None:
        return None

    def health(self, now: Instant) -> list[str]:
        return []  # a re-arm does not wait for the next link report

    def rearmed(self) -> None:
        return None
