"""The channel's side of a heartbeat-silence stop: was the site really silent at the
broker? Read back the broker append times of the sites' *fresh* heartbeats and tell a stop
the channel justified (the site, or the producer on a loaded host, went quiet) from one the
monitor caused. Used by the fault tests that run sites beside a busy monitor and by
`bench/`. Not a test module itself.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections import defaultdict
from typing import Any

from monitor.icd.topics import Topics

STALE_MS = 500  # ICD §7: an older heartbeat is no evidence of liveness
# A record's LogAppendTime is taken when the broker validates its batch, before the
# append makes it visible to consumers and to ListOffsets: on this loaded host up to tens of
# ms earlier (seen: a heartbeat stamped 19 ms before a stop the monitor rightly decided, as
# nothing had been visible for 300 ms). So a site's gap at the broker may look this much
# shorter than the silence any consumer could see.
VISIBILITY_SLACK_MS = 50


def heartbeat_append_times(
    bootstrap: str, prefix: str, pids: set[str]
) -> dict[tuple[str, str], list[int]]:
    """Broker append times (ms) of the *fresh* heartbeats of these procedures (at most
    STALE_MS between the site's `sent_at` and the append: ICD §7's evidence of liveness;
    less VISIBILITY_SLACK_MS, as the monitor may only see the record that much later),
    by (procedure, site), read back from the telemetry topics. A heartbeat the site's
    producer held back longer is no evidence, for the monitor or here."""
    import confluent_kafka as ck

    t = Topics(prefix)
    sites = {t.telemetry_console: "console", t.telemetry_robot: "robot"}
    c = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{prefix}readback",
            "enable.auto.commit": False,
        }
    )
    out: dict[tuple[str, str], list[int]] = defaultdict(list)
    try:
        tps = []
        for topic in sites:
            md = c.list_topics(topic, timeout=10).topics[topic]
            tps += [ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in md.partitions]
        c.assign(tps)
        ends = {(tp.topic, tp.partition): c.get_watermark_offsets(tp, 10)[1] for tp in tps}
        done = {k for k, hi in ends.items() if hi <= 0}
        deadline = time.monotonic() + 60
        want = {p.encode() for p in pids}
        while len(done) < len(tps) and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.5):
                if m.error():
                    continue
                k = (m.topic(), m.partition())
                if m.offset() + 1 >= ends[k]:
                    done.add(k)
                if m.key() in want and b'"heartbeat"' in (m.value() or b""):
                    appended = m.timestamp()[1]
                    with contextlib.suppress(ValueError, TypeError, KeyError):
                        sent_ms = json.loads(m.value() or b"")["sent_at"] / 1e6
                        if appended - sent_ms <= STALE_MS - VISIBILITY_SLACK_MS:
                            out[m.key().decode(), sites[m.topic()]].append(appended)
    finally:
        c.close()
    for ts in out.values():
        ts.sort()
    return out


def channel_silent(stop: dict[str, Any], appended: dict[tuple[str, str], list[int]]) -> bool:
    """A heartbeat-silence stop whose site really was silent at the broker: before the
    stop (by the stop limit, 10 ms of slack) the site's heartbeats were once further apart
    in append time than the limit (less VISIBILITY_SLACK_MS). The monitor had to stop then,
    however late it decided (one command per episode: this is that stop). A stop the
    monitor's own lag caused shows gaps of tens of ms here, far below."""
    if stop.get("policy", {}).get("rule") != "heartbeat_silence":
        return False
    site = str(stop.get("reason", "")).split(" ", 1)[0]
    limit = float(stop.get("threshold", 300))
    ts = appended.get((stop["procedure_id"], site), [])
    latest_start = stop["issued_at"] / 1e6 - limit + 10
    return any(
        b - a > limit - VISIBILITY_SLACK_MS and a <= latest_start
        for a, b in itertools.pairwise(ts)
    )


def explain(stop: dict[str, Any], appended: dict[tuple[str, str], list[int]]) -> str:
    """For a failure message: what the broker saw of the stopped site before the stop."""
    site = str(stop.get("reason", "")).split(" ", 1)[0]
    issued = stop["issued_at"] / 1e6
    ts = [t for t in appended.get((stop["procedure_id"], site), []) if t <= issued]
    if len(ts) < 2:
        return f"{stop['procedure_id']} {site}: {len(ts)} fresh heartbeats before the stop"
    gap, at = max((b - a, a) for a, b in itertools.pairwise(ts))
    return (
        f"{stop['procedure_id']} {site}: {len(ts)} fresh heartbeats before the stop, the "
        f"longest gap {gap} ms from {issued - at:.0f} ms before it, the last "
        f"{issued - ts[-1]:.0f} ms before it"
    )
