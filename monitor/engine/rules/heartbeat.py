"""Liveness (ICD §7): a first fresh heartbeat from each site within `first_heartbeat_ms`
of the opening, then never more than `warn_silence_ms` (warning) or `stop_silence_ms`
(safe-stop) of silence. Silence is judged by timers on the monitor's clock, so it fires
when records *stop*, without waiting for another record. A stale heartbeat is no evidence
of liveness. Also reports the sites' clock source and state as they change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from monitor.engine.clock import MS, Instant
from monitor.engine.decisions import Decision
from monitor.engine.latch import Latch, Outcome
from monitor.events import EventKind as K
from monitor.icd.models import SITES, Heartbeat, Site
from monitor.policy.model import PolicyPack


@dataclass(slots=True)
class Liveness:
    """One site's heartbeat track."""

    last_fresh: int | None = None  # monitor mono ns of the last fresh heartbeat
    first_missed: bool = False
    warned: bool = False  # the current silence has raised its warning
    tripped: bool = False  # the current silence has tripped
    clock_source: str | None = None
    state: str | None = None  # the site state its last heartbeat reported
    gaps: int = 0
    max_gap_ms: float = 0.0


class HeartbeatRule:
    __slots__ = (
        "first_ns",
        "latch",
        "opened_mono",
        "pol",
        "sites",
        "stop_ns",
        "unheard",
        "warn_ns",
    )

    records: ClassVar[tuple[type[Any], ...]] = (Heartbeat,)

    def __init__(self, latch: Latch, opened: Instant, pack: PolicyPack) -> None:
        self.latch = latch
        self.opened_mono = opened.mono_ns  # the first-heartbeat grace runs from here
        self.sites: dict[Site, Liveness] = {s: Liveness() for s in SITES}
        self.unheard = len(self.sites)  # sites without a fresh heartbeat yet (kept: hot path)
        self.configure(pack)

    def configure(self, pack: PolicyPack) -> None:
        self.pol = hb = pack.heartbeat
        self.warn_ns = int(hb.warn_silence_ms * MS)
        self.stop_ns = int(hb.stop_silence_ms * MS)
        self.first_ns = int(hb.first_heartbeat_ms * MS)

    def heard_all(self) -> bool:
        """Every site has sent a fresh heartbeat."""
        return self.unheard == 0

    def on_record(self, rec: Heartbeat, stale: bool, now: Instant, out: list[Decision]) -> None:
        site = self.sites[rec.site]
        c = rec.clock
        if c.source != site.clock_source:
            clock = {"source": c.source, "offset_ns": c.offset_ns, "max_error_ns": c.max_error_ns}
            before = site.clock_source
            out.append(self.latch.event(K.CLOCK_STATE, now, site=rec.site, before=before, **clock))
            site.clock_source = c.source
        if rec.state != site.state:
            out.append(
                self.latch.event(
                    K.SITE_STATE, now, site=rec.site, before=site.state, after=rec.state
                )
            )
            site.state = rec.state
        if stale:
            return  # ICD §7: a stale heartbeat is no evidence of liveness
        if site.last_fresh is None:
            self.unheard -= 1
        else:
            gap_ns = now.mono_ns - site.last_fresh
            if gap_ns > self.warn_ns:
                gap_ms = round(gap_ns / MS, 3)
                site.gaps += 1
                site.max_gap_ms = max(site.max_gap_ms, gap_ns / MS)
                out.append(self.latch.event(K.HEARTBEAT_GAP, now, site=rec.site, gap_ms=gap_ms))
                # The silence was out of band up to this moment. Its warning is raised here
                # if no tick saw it first (the tick ran late, or time was held while the
                # monitor was behind): a cleared warning always has its raise in the record.
                why = f"{rec.site} heartbeat silent for {gap_ms:g} ms"
                o = Outcome("heartbeat_silence", rec.site, gap_ms, self.pol.warn_silence_ms, why)
                self.latch.warn(o, now, out)
        site.last_fresh = now.mono_ns
        site.warned = site.tripped = False

    def tick(self, now: Instant, out: list[Decision]) -> None:
        t = now.mono_ns
        hb = self.pol
        latch = self.latch
        for name, site in self.sites.items():
            if site.last_fresh is None:
                if not site.first_missed and t - self.opened_mono > self.first_ns:
                    site.first_missed = True
                    since_ms = round((t - self.opened_mono) / MS, 3)
                    why = (
                        f"no fresh heartbeat from the {name} site within "
                        f"{hb.first_heartbeat_ms:g} ms of the procedure start"
                    )
                    o = Outcome("first_heartbeat", name, since_ms, hb.first_heartbeat_ms, why)
                    latch.trip(o, now, out, breach_mono=self.opened_mono + self.first_ns)
                continue
            silence = t - site.last_fresh
            if silence <= self.warn_ns:
                continue
            ms = round(silence / MS, 3)
            if not site.warned:
                site.warned = True
                why = f"{name} heartbeat silent for {ms:g} ms"
                latch.warn(
                    Outcome("heartbeat_silence", name, ms, hb.warn_silence_ms, why), now, out
                )
            else:  # a silence re-reports while it lasts, so it never clears its own warning
                latch.warnings.bad("heartbeat_silence", name, t, ms, hb.warn_silence_ms)
            if silence > self.stop_ns and not site.tripped:
                site.tripped = True
                why = f"{name} heartbeat silent for {ms:g} ms (limit {hb.stop_silence_ms:g} ms)"
                o = Outcome("heartbeat_silence", name, ms, hb.stop_silence_ms, why)
                latch.trip(o, now, out, breach_mono=site.last_fresh + self.stop_ns)

    def deadline(self) -> int | None:
        # 1 ns after each limit: the limits are "more than N ms of silence".
        due: int | None = None
        for site in self.sites.values():
            if site.last_fresh is None:
                if site.first_missed:
                    continue
                d = self.opened_mono + self.first_ns + 1
            elif not site.warned:
                d = site.last_fresh + self.warn_ns + 1
            elif not site.tripped:
                d = site.last_fresh + self.stop_ns + 1
            else:
                continue
            if due is None or d < due:
                due = d
        return due

    def health(self, now: Instant) -> list[str]:
        problems = []
        for name, site in self.sites.items():
            if site.last_fresh is None:
                problems.append(f"no fresh heartbeat from the {name} site yet")
            elif now.mono_ns - site.last_fresh > self.warn_ns:
                age = (now.mono_ns - site.last_fresh) / MS
                problems.append(f"{name} heartbeat is {age:.0f} ms old")
        return problems

    def rearmed(self) -> None:
        for site in self.sites.values():
            site.warned = site.tripped = False

    def age_s(self, site: Site, now: Instant) -> float | None:
        """Seconds since the site's last fresh heartbeat (None: none yet)."""
        last = self.sites[site].last_fresh
        return None if last is None else (now.mono_ns - last) / 1e9
