"""How far a client's cached high watermark vouches: the instant it holds as of.

The monitor's loop treats a topic-partition as heard up to an instant once it has processed
everything the broker held then (`PartitionTime.settle`). Both clients cache the high
watermark from their fetch responses, and neither says how old the cache is. It can be
seconds old while the loop keeps polling: a paused or just (re)assigned partition, a fetch
that errors and backs off, a broker that restarts, a fetcher librdkafka holds back (seen: 4 s
without a fetch for a freshly created topic on a loaded host, the monitor taking its own
deafness for silence and stopping five healthy procedures). Taken as "now", such a cache
turns the monitor's deafness into site silence.

So each client also asks the broker for the end offsets of its assigned partitions on a
short cadence, and the cached mark vouches only as of the last answer it covers: an answer
asked at T with end offset E means every record appended before T has an offset below E; a
cached mark >= E therefore counts every such record. The price is the cadence (plus one
round trip) added to how late a deadline can be seen to have passed.
"""

from __future__ import annotations

from collections import deque

from monitor.kafka.api import TopicPartition

# Answers kept per partition: the newest one the cache has reached vouches. Keeping only the
# latest would chase a moving target: under steady traffic an answer asked a moment ago is
# often a few records ahead of the last fetch, and asked again and again (on demand) it
# would never be covered, freezing the partition's time while the monitor hears it fine.
ANSWERS_KEPT = 32


class MarkCover:
    """Broker answers (end offset, monotonic ns when asked) and what they let a cached
    high watermark vouch for. Written by whoever asks (any thread: one append per answer),
    read by the loop thread."""

    __slots__ = ("_answers", "_covers")

    def __init__(self) -> None:
        self._answers: dict[TopicPartition, deque[tuple[int, int]]] = {}
        self._covers: dict[TopicPartition, int] = {}

    def answered(self, tp: TopicPartition, end_offset: int, asked_mono: int) -> None:
        """The broker said `end_offset` for `tp` to a request sent at `asked_mono`.
        Precondition: answers of one partition are reported in the order they were asked."""
        kept = self._answers.get(tp)
        if kept is None:
            kept = self._answers[tp] = deque(maxlen=ANSWERS_KEPT)
        kept.append((end_offset, asked_mono))

    def vouch(self, tp: TopicPartition, cached: int | None) -> tuple[int, int] | None:
        """(cached high watermark, the monotonic ns it holds as of), or None while no answer
        is covered yet. Nothing cached yet (no fetch answered): the broker's last answer
        itself, which holds as of when it was asked."""
        kept = self._answers.get(tp)
        if cached is None:
            return kept[-1] if kept else None
        if kept:
            # The newest answer is usually covered, and needs no snapshot; else the newest
            # covered one, from a snapshot (the probe may append meanwhile).
            newest = kept[-1]
            found = (
                newest
                if newest[0] <= cached
                else next((a for a in reversed(tuple(kept)) if a[0] <= cached), None)
            )
            if found is not None and found[1] > self._covers.get(tp, 0):
                self._covers[tp] = found[1]
        covers = self._covers.get(tp)
        return None if covers is None else (cached, covers)
