"""Faults on the sites' side: clock jumps and drift, a flood of invalid records.

No missed safe-stop (a stale site is stopped), no false one (a clock ahead of UTC, or
behind it and saying so, stays alive; a flood of garbage does not starve liveness), every
invalid record dead-lettered with a reason.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from monitor.icd.topics import Topics
from tests.faults.faultkit import (
    SAFE_STOP_DEADLINE_S,
    armed,
    check_no_false_stop,
    metric,
    safe_stops,
    statuses,
    wait_assigned,
    with_retries,
)
from tests.integration.monitorkit import TopicWatcher, http_json, run_monitor
from tests.integration.sitekit import Observer, SiteDriver

SECOND = 1_000_000_000


@pytest.mark.hazard("H-07")
def test_clock_jumps_and_drift(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    with_retries(lambda: _clock_attempt(kafka_bootstrap, topic_prefix, tmp_path))


def _clock_attempt(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    topics = Topics(topic_prefix)
    obs = Observer(kafka_bootstrap, [topics.commands])
    past = SiteDriver(kafka_bootstrap, topic_prefix, f"CLK-PAST-{tag}")
    future = SiteDriver(kafka_bootstrap, topic_prefix, f"CLK-FUTURE-{tag}")
    drift = SiteDriver(kafka_bootstrap, topic_prefix, f"CLK-DRIFT-{tag}")
    try:
        with run_monitor(kafka_bootstrap, topic_prefix, tmp_path) as mon:
            wait_assigned(mon)
            for s in (past, future, drift):
                armed(s, obs)
            jumped = time.time()
            # The robot's clock jumps 2 s back: its heartbeats are stale, no liveness.
            past.skew("robot", -2 * SECOND)
            # A clock 2 s ahead of UTC: never stale (negative age).
            future.skew("robot", 2 * SECOND)
            # A clock 2 s behind UTC that reports it (offset_ns): corrected, fresh.
            drift.skew("robot", -2 * SECOND, offset_ns=-2 * SECOND)
            assert obs.wait_for(lambda: safe_stops(obs, past.procedure_id), SAFE_STOP_DEADLINE_S), (
                mon.log()[-3000:]
            )
            stop = safe_stops(obs, past.procedure_id)[0]
            assert stop["policy"]["rule"] == "heartbeat_silence"
            assert "robot" in stop["reason"]
            time.sleep(3.0)
            for s in (future, drift):
                pid = s.procedure_id
                check_no_false_stop(obs, s)
                # (a warning is allowed: a loaded machine may delay a beat > 100 ms)
                assert "safe_stop_latched" not in statuses(obs, pid, since=jumped)
            # The stale heartbeats were counted (per procedure and site, on /status).
            # (telesafe_records_stale_total on /metrics is never incremented: reported.)
            _, status = http_json(mon.url + "/status")
            assert status["procedures"][past.procedure_id]["sites"]["robot"]["stale"] > 0, status
    finally:
        for s in (past, future, drift):
            s.close()
        obs.close()


def _invalid(i: int, topics: Topics, pid: str) -> tuple[str, bytes, bytes]:
    """The i-th invalid record: (topic, key, value); every value carries `flood-<i>`."""
    tag = f"flood-{i}"
    hb = {
        "v": 1,
        "type": "heartbeat",
        "procedure_id": pid,
        "site": "console",
        "seq": 10**9,
        "sent_at": time.time_ns(),
        "state": "operating",
        "clock": {"source": "ptp", "offset_ns": 0, "max_error_ns": 1000},
        "tag": tag,
    }
    kind = i % 8
    con, rob = topics.telemetry_console, topics.telemetry_robot
    if kind == 0:
        return con, pid.encode(), f"not json {tag}".encode()
    if kind == 1:  # wrong site for the topic
        return rob, pid.encode(), json.dumps(hb).encode()
    if kind == 2:  # NaN
        return con, pid.encode(), json.dumps({**hb, "sent_at": math.nan}).encode()
    if kind == 3:  # a missing common field
        return con, pid.encode(), json.dumps({k: v for k, v in hb.items() if k != "seq"}).encode()
    if kind == 4:  # ill-typed
        return con, pid.encode(), json.dumps({**hb, "seq": "5"}).encode()
    if kind == 5:  # key does not equal procedure_id
        return con, b"FLOOD-OTHER", json.dumps(hb).encode()
    if kind == 6:  # not UTF-8
        return rob, pid.encode(), b"\xff\xfe" + tag.encode()
    req = {
        "v": 1,
        "type": "rearm_request",
        "procedure_id": pid,
        "operator_id": "op",
        "reason": "",
        "requested_at": time.time_ns(),
        "tag": tag,
    }
    return topics.operator, pid.encode(), json.dumps(req).encode()


@pytest.mark.hazard("H-06")
@pytest.mark.hazard("H-04")
def test_flood_of_invalid_records(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """1,000 invalid records a second (10x the two sites' 100 heartbeats a second) for
    3 s while valid heartbeats continue."""
    with_retries(lambda: _flood_attempt(kafka_bootstrap, topic_prefix, tmp_path))


def _flood_attempt(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    topics = Topics(topic_prefix)
    obs = Observer(kafka_bootstrap, [topics.commands])
    dlq = TopicWatcher(kafka_bootstrap, [topics.deadletter])
    pid = f"FLOOD-{uuid.uuid4().hex[:6]}"  # a retry must not inherit the latch of the last
    site = SiteDriver(kafka_bootstrap, topic_prefix, pid)
    flood = KafkaProducer(bootstrap_servers=[kafka_bootstrap], linger_ms=5, acks=1)
    n = 3000
    try:
        with run_monitor(kafka_bootstrap, topic_prefix, tmp_path) as mon:
            wait_assigned(mon)
            armed(site, obs)
            health = []
            t0 = time.monotonic()
            for i in range(n):
                topic, key, value = _invalid(i, topics, pid)
                flood.send(topic, key=key, value=value)
                if i % 20 == 19:  # 20 records per 20 ms
                    delay = t0 + (i + 1) / 1000 - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if i % 500 == 499:
                    health.append(http_json(mon.url + "/healthz", timeout=5)[0])
            flood.flush(timeout=30)

            def tags() -> set[str]:
                got = set()
                for r in dlq.snapshot():
                    v = r.value or b""
                    at = v.find(b"flood-")
                    if at >= 0:
                        got.add(v[at:].split(b'"')[0].decode(errors="replace"))
                return got

            assert dlq.wait_for(lambda: len(tags()) >= n, 60), f"{len(tags())} of {n}"
            assert tags() == {f"flood-{i}" for i in range(n)}
            for r in dlq.snapshot():
                assert r.headers.get("telesafe-error"), r
                assert r.headers.get("telesafe-source", b"").startswith(topic_prefix.encode())
            assert metric(mon.url, "telesafe_records_rejected_total") >= n
            time.sleep(1.0)
            check_no_false_stop(obs, site)
            assert "safe_stop_latched" not in statuses(obs, pid)
            health.append(http_json(mon.url + "/healthz", timeout=5)[0])
            assert set(health) == {200}, health
        assert mon.proc.returncode == 0
    finally:
        flood.close()
        site.close()
        dlq.close()
        obs.close()
