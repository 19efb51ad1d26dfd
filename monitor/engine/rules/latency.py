"""Control and video latency (ICD §7): a quantile of each channel's sliding window against
its warn limit, and against its stop limit held for `hold_ms`; optionally any single
sample above `max_sample_ms` trips at once. The window expires on timers too, so a
channel that goes quiet in breach is judged as its old samples leave the window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from monitor.engine.clock import MS, Instant
from monitor.engine.decisions import Decision
from monitor.engine.latch import Latch, Outcome
from monitor.engine.window import SlidingQuantiles
from monitor.events import EventKind as K
from monitor.icd.models import Latency
from monitor.policy.model import ChannelPolicy, PolicyPack
from monitor.snapshot import WindowSnapshot

Channel = Literal["control", "video"]
CHANNELS: tuple[Channel, ...] = ("control", "video")
_QS = (0.5, 0.95, 0.99)  # the quantiles of a snapshot (monitor.snapshot.QUANTILES)


@dataclass(slots=True)
class ChannelTrack:
    window: SlidingQuantiles
    policy: ChannelPolicy
    breach_since: int | None = None  # when the quantile went above the stop limit


class LatencyRule:
    __slots__ = ("channels", "latch", "quantile")

    records: ClassVar[tuple[type[Any], ...]] = (Latency,)

    def __init__(self, latch: Latch, opened: Instant, pack: PolicyPack) -> None:
        self.latch = latch
        self.configure(pack)

    def configure(self, pack: PolicyPack) -> None:
        """A new pack starts with empty windows (its window length may differ)."""
        lat = pack.latency
        self.quantile = lat.quantile
        window_ns = int(lat.window_ms * MS)
        self.channels: dict[Channel, ChannelTrack] = {
            "control": ChannelTrack(SlidingQuantiles(window_ns), lat.control),
            "video": ChannelTrack(SlidingQuantiles(window_ns), lat.video),
        }

    def on_record(self, rec: Latency, stale: bool, now: Instant, out: list[Decision]) -> None:
        ch = self.channels[rec.channel]
        pol = ch.policy
        ch.window.expire(now.mono_ns)
        ch.window.add_many(now.mono_ns, rec.samples_ms)
        if pol.max_sample_ms is not None:
            worst = max(rec.samples_ms)
            if worst > pol.max_sample_ms:
                why = (
                    f"{rec.channel} latency sample of {worst:g} ms exceeds the "
                    f"{pol.max_sample_ms:g} ms single-sample limit"
                )
                rule = f"{rec.channel}_latency"
                self.latch.trip(Outcome(rule, rec.channel, worst, pol.max_sample_ms, why), now, out)
        self._evaluate(rec.channel, now, out)

    def _evaluate(self, channel: Channel, now: Instant, out: list[Decision]) -> None:
        ch = self.channels[channel]
        pol = ch.policy
        q = ch.window.quantile(self.quantile)
        if q is None:
            ch.breach_since = None
            return
        rule = f"{channel}_latency"
        pct = f"p{self.quantile * 100:g}"
        if q > pol.warn_ms:
            why = f"{channel} latency {pct} {q:g} ms above {pol.warn_ms:g} ms"
            self.latch.warn(Outcome(rule, channel, q, pol.warn_ms, why), now, out)
        if pol.stop_ms is None or q <= pol.stop_ms:
            ch.breach_since = None
            return
        if ch.breach_since is None:
            ch.breach_since = now.mono_ns
        held_ns = now.mono_ns - ch.breach_since
        hold_ns = int(pol.hold_ms * MS)
        if held_ns >= hold_ns:
            since = ch.breach_since
            ch.breach_since = None
            why = (
                f"{channel} latency {pct} {q:g} ms above {pol.stop_ms:g} ms "
                f"for {held_ns / MS:g} ms (limit: held {pol.hold_ms:g} ms)"
            )
            o = Outcome(rule, channel, q, pol.stop_ms, why)
            self.latch.trip(o, now, out, breach_mono=since + hold_ns)

    def tick(self, now: Instant, out: list[Decision]) -> None:
        for channel in CHANNELS:
            self.channels[channel].window.expire(now.mono_ns)
            self._evaluate(channel, now, out)

    def deadline(self) -> int | None:
        due: int | None = None
        for ch in self.channels.values():
            if ch.breach_since is not None:
                d = ch.breach_since + int(ch.policy.hold_ms * MS)
                if due is None or d < due:
                    due = d
        return due

    def health(self, now: Instant) -> list[str]:
        problems = []
        for channel in CHANNELS:
            ch = self.channels[channel]
            ch.window.expire(now.mono_ns)
            q = ch.window.quantile(self.quantile)
            warn = ch.policy.warn_ms
            if q is not None and q > warn:
                problems.append(f"{channel} latency {q:g} ms above {warn:g} ms")
        return problems

    def rearmed(self) -> None:
        for ch in self.channels.values():
            ch.breach_since = None

    def summarise(self, now: Instant, out: list[Decision]) -> None:
        """A `latency_summary` of each channel whose window holds samples."""
        for channel in CHANNELS:
            w = self.channels[channel].window
            if len(w):
                out.append(
                    self.latch.event(
                        K.LATENCY_SUMMARY,
                        now,
                        channel=channel,
                        count=len(w),
                        p50=w.quantile(0.5),
                        p95=w.quantile(0.95),
                        p99=w.quantile(0.99),
                        max=w.max(),
                    )
                )

    def windows(self, now: Instant) -> dict[str, WindowSnapshot]:
        """Each channel's window quantiles as of `now`, without expiring anything (a view
        must not change what the rules later decide)."""
        out: dict[str, WindowSnapshot] = {}
        for channel in CHANNELS:
            p50, p95, p99 = self.channels[channel].window.quantiles_at(now.mono_ns, _QS)
            out[channel] = WindowSnapshot(p50, p95, p99)
        return out
