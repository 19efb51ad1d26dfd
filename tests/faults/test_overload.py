"""Overload on the real broker, shortened (issue: overload; the full step is
bench/bench_backends.py --only overload): a backlog the monitor needs seconds to work
through lands in Kafka while live procedures keep sending at 50 Hz. The monitor must stop
none of them for its own lag, withhold their dead-man heartbeat while it is behind, resume
it once caught up, and still latch, late and with the delay audited, a breach that was in
the records."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest

from monitor.icd.topics import Topics
from tests.faults.channelkit import channel_silent, explain, heartbeat_append_times
from tests.integration.monitorkit import TopicWatcher, run_monitor

HB = (
    '{"v":1,"type":"heartbeat","procedure_id":"%s","site":"%s","seq":%d,"sent_at":%d,'
    '"state":"operating","clock":{"source":"ptp","offset_ns":0,"max_error_ns":100000}}'
)
START = (
    '{"v":1,"type":"procedure_start","procedure_id":"%s","site":"robot","seq":%d,'
    '"sent_at":%d,"surgeon_id":"t","robot":{"model":"Toumai","serial":"TM-T"},'
    '"arms":["psm1","psm2","psm3","ecm"]}'
)
END = (
    '{"v":1,"type":"procedure_end","procedure_id":"%s","site":"robot","seq":%d,'
    '"sent_at":%d,"reason":"completed"}'
)
OUT_OF_BOX = (
    '{"v":1,"type":"kinematics","procedure_id":"%s","site":"robot","seq":%d,"sent_at":%d,'
    '"arm":"psm1","samples":[{"t":%d,"p":[0.0,0.0,-300.0],"v":[0.0,0.0,0.0]}]}'
)
LIVE = [f"OVL-LIVE-{i}" for i in range(4)]
PROBE = "OVL-PROBE"
BOX_STOP = (PROBE, "workspace_box")
FILLERS, BEATS_PER_FILLER = 50, 3000  # 150,000 records: seconds of work for the monitor


class Sites(threading.Thread):
    """Both sites of the live procedures (and the probe): a heartbeat every 20 ms each."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        super().__init__(daemon=True)
        self.p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 0,
                              "partitioner": "murmur2_random"})
        self.t = topics
        self.seq: dict[tuple[str, str], int] = {}
        self.stop_flag = threading.Event()
        for pid in [*LIVE, PROBE]:
            self.send(self.t.telemetry_robot, pid, "robot", START)

    def send(self, topic: str, pid: str, site: str, fmt: str, *more: int) -> None:
        n = self.seq.get((pid, site), 0)
        self.seq[pid, site] = n + 1
        self.p.produce(topic, (fmt % (pid, n, time.time_ns(), *more)).encode()
                       if fmt != HB else (HB % (pid, site, n, time.time_ns())).encode(),
                       pid.encode())

    def run(self) -> None:
        nxt = time.monotonic()
        while not self.stop_flag.is_set():
            for pid in [*LIVE, PROBE]:
                self.send(self.t.telemetry_console, pid, "console", HB)
                self.send(self.t.telemetry_robot, pid, "robot", HB)
            self.p.poll(0)
            nxt += 0.020
            time.sleep(max(0.0, nxt - time.monotonic()))
        for pid in [*LIVE, PROBE]:
            self.send(self.t.telemetry_robot, pid, "robot", END)
        self.p.flush(10)


def backlog(bootstrap: str, prefix: str) -> None:
    """FILLERS x BEATS_PER_FILLER heartbeats of procedures that never started, sent 10 s
    before: the monitor must read and decode each one (seconds of work) before it reaches
    what the live sites send after them, and opens no procedure for them (stale, ICD §7).
    So no liveness in the test depends on how fast this producer or the broker goes. Run
    in a process of its own (`send_backlog`): in the sites' process its tight produce loop
    held the GIL and the sites' heartbeats went out late."""
    topics = Topics(prefix)
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                     "partitioner": "murmur2_random", "queue.buffering.max.messages": 500_000})
    ids = [f"OVL-FILL-{i:03d}" for i in range(FILLERS)]

    def put(topic: str, pid: str, body: str) -> None:
        for _ in range(6000):  # a full local queue drains in ms; a minute means a dead broker
            with contextlib.suppress(BufferError):
                p.produce(topic, body.encode(), pid.encode())
                return
            p.poll(0.01)
        raise AssertionError("the producer's queue stayed full for a minute")

    for n in range(BEATS_PER_FILLER // 2):
        then = time.time_ns() - 10_000_000_000
        for pid in ids:
            put(topics.telemetry_console, pid, HB % (pid, "console", n, then))
            put(topics.telemetry_robot, pid, HB % (pid, "robot", n, then))
        p.poll(0)
    assert p.flush(60) == 0, "backlog not delivered"


def send_backlog(bootstrap: str, prefix: str) -> None:
    """`backlog` from a child process; returns once it is all at the broker."""
    child = multiprocessing.get_context("spawn").Process(target=backlog, args=(bootstrap, prefix))
    child.start()
    child.join(300)
    assert child.exitcode == 0, f"the backlog producer failed (exit {child.exitcode})"


def beats(watch: TopicWatcher, pid: str) -> list[float]:
    return sorted(v["_received_at"] for v in watch.of_type("monitor_heartbeat", pid))


@pytest.mark.hazard("H-16")
def test_a_backlog_the_monitor_cannot_keep_up_with_stops_no_one(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    with contextlib.ExitStack() as stack:
        mon = stack.enter_context(run_monitor(kafka_bootstrap, topic_prefix, tmp_path))
        watch = TopicWatcher(kafka_bootstrap, [topics.commands, topics.audit])
        stack.callback(watch.close)
        sites = Sites(kafka_bootstrap, topics)
        sites.start()
        stack.callback(sites.join, 15)
        stack.callback(sites.stop_flag.set)
        assert watch.wait_for(lambda: all(len(beats(watch, p)) > 50 for p in LIVE), 20), (
            f"live procedures not supervised\n{mon.log()[-3000:]}")

        t_burst = time.time()
        send_backlog(kafka_bootstrap, topic_prefix)
        sites.send(topics.telemetry_robot, PROBE, "robot", OUT_OF_BOX, time.time_ns())
        t_sent = time.time()

        # Caught up: the probe's breach (queued behind the backlog) is decided, late, with
        # the delay in its audit entry. It latches the probe, or, if a silence the channel
        # justified (below) latched it first, is recorded against that latch.
        assert watch.wait_for(lambda: _box_breach(watch), 180), (
            f"the breach behind the backlog was never decided\n{mon.log()[-3000:]}"
        )
        t_caught = time.time()
        breach = _box_breach(watch)[0]
        assert float(breach.get("late_ms", 0)) >= 300, (  # type: ignore[arg-type]
            f"the delay is not in the audit entry: {breach}"
        )
        time.sleep(2.0)
        sites.stop_flag.set()
        sites.join(15)

        # A procedure may be stopped for silence only where its site really went silent at
        # the broker (this 2-core host also runs the broker and the sites: their fresh
        # heartbeats once > 300 ms apart in append time). Never for the monitor's own lag.
        stops = watch.of_type("safe_stop")
        appended = heartbeat_append_times(kafka_bootstrap, topic_prefix, {*LIVE, PROBE})
        first = {s["command_id"]: s for s in reversed(stops)}.values()  # one per latch
        box = [s for s in first if (s["procedure_id"], s["policy"]["rule"]) == BOX_STOP]
        false = [s for s in first if s not in box and not channel_silent(s, appended)]
        assert not false, (
            "the monitor's own lag stopped healthy procedures: "
            f"{[explain(s, appended) for s in false]} "
            f"({len(first) - len(box) - len(false)} other stops justified by the channel)"
        )

        for pid in LIVE:
            got = beats(watch, pid)
            during = [t for t in got if t_burst <= t <= t_caught]
            gaps = [b - a for a, b in zip([t_burst, *during], [*during, t_caught], strict=True)]
            assert max(gaps) >= 0.3, (
                f"{pid}: dead-man heartbeat not withheld while {t_caught - t_sent:.1f} s "
                f"behind (largest gap {max(gaps) * 1e3:.0f} ms)")
            after = [t for t in got if t_caught + 0.5 <= t <= t_caught + 2.0]
            assert len(after) >= 45, f"{pid}: heartbeat not resumed after catching up: {after}"


def _box_breach(watch: TopicWatcher) -> list[dict[str, Any]]:
    """The audit mirror's entries of the probe's workspace breach: the safe-stop it issued,
    or its note against a latch already in force."""
    out = []
    for s in watch.snapshot():
        try:
            v = s.json()
        except (TypeError, ValueError):
            continue
        if (
            isinstance(v, dict)
            and v.get("procedure_id") == PROBE
            and v.get("event") in ("safe_stop_issued", "breach_while_latched")
            and (v.get("data") or {}).get("rule") == "workspace_box"
        ):
            out.append(v)
    return out
