"""The monitor's own heartbeat (ICD §4.2): a burst every `interval` for each procedure of
each shard heard recently enough, with a per-procedure sequence number.

A shard not heard for longer than a site may be silent (`withhold_ns`, the default pack's
stop limit) gets none: the monitor does not vouch for procedures it cannot hear, and the
robot's own dead-man timer holds or stops."""

from __future__ import annotations

from collections.abc import Iterable

from monitor.engine.clock import Instant
from monitor.service.ownership import Shard
from monitor.service.publisher import Publisher
from monitor.service.timekeeping import next_beat


class Heartbeats:
    def __init__(self, interval_ns: int, withhold_ns: int, first_due_ns: int) -> None:
        self.interval_ns = interval_ns
        self.withhold_ns = withhold_ns
        self.due_ns = first_due_ns
        self._seq: dict[str, int] = {}

    def beat(
        self, shards: Iterable[Shard], now: Instant, publisher: Publisher, monitor_id: str
    ) -> None:
        """Send the burst if it is due (at most one, however late the loop is)."""
        if now.mono_ns < self.due_ns:
            return
        self.due_ns = next_beat(self.due_ns, now.mono_ns, self.interval_ns)
        beats = []
        seqs = self._seq
        for shard in shards:
            if now.mono_ns - shard.time.horizon(now.mono_ns) > self.withhold_ns:
                continue
            for pid, status in shard.engine.statuses():
                seq = seqs.get(pid, -1) + 1
                seqs[pid] = seq
                beats.append((pid, seq, status))
        if beats:
            publisher.monitor_heartbeats(beats, now.utc_ns, monitor_id)

    def forget(self, procedures: Iterable[str]) -> None:
        for pid in procedures:
            self._seq.pop(pid, None)
