"""Helpers shared by the fault tests: ledgers, metrics, waiting for monitor statuses.

Not a test module itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from monitor.audit.checkpoint import generate_key_files
from monitor.audit.ledger import Ledger
from tests.integration.monitorkit import http_text
from tests.integration.sitekit import Observer, SiteDriver

# Generous bounds: the CI machine is a loaded 2-core VM. These are safety deadlines for
# "did it happen at all", never latency measurements.
SAFE_STOP_DEADLINE_S = 5.0
ARMED_DEADLINE_S = 15.0


def ledger_files(tmp: Path) -> tuple[Path, Path]:
    """A fresh signing key and the ledger path beside it."""
    key = tmp / "ledger.key"
    generate_key_files(key)
    return tmp / "ledger.sqlite", key


def ledger_args(ledger: Path, key: Path) -> tuple[str, ...]:
    return ("--ledger", str(ledger), "--signing-key", str(key))


def verify_ledger(ledger: Path, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "audit", "verify", str(ledger), "--pubkey", f"{key}.pub"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def ledger_entries(ledger: Path, monitor_id: str) -> list[dict[str, Any]]:
    led = Ledger.open(ledger, None, origin=f"telesafe/{monitor_id}")
    try:
        return [json.loads(led.entry_bytes(i)) for i in range(led.size())]
    finally:
        led.close()


def metric(url: str, name: str) -> float:
    """Sum of every sample of a metric family on /metrics (0 when absent)."""
    total = 0.0
    for line in http_text(url + "/metrics").splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def statuses(obs: Observer, pid: str, since: float = 0.0) -> list[str]:
    """monitor_heartbeat statuses for a procedure, observed after `since` (time.time())."""
    return [
        h["status"] for h in obs.commands(pid, "monitor_heartbeat") if h["_received_at"] >= since
    ]


def wait_status(obs: Observer, pid: str, status: str, timeout: float, since: float = 0.0) -> bool:
    return bool(obs.wait_for(lambda: status in statuses(obs, pid, since), timeout))


def safe_stops(obs: Observer, pid: str) -> list[dict[str, Any]]:
    return obs.commands(pid, "safe_stop")


def armed(site: SiteDriver, obs: Observer, timeout: float = ARMED_DEADLINE_S) -> None:
    """Start the procedure with both sites heartbeating; wait until the monitor says armed."""
    site.procedure_start()
    site.start()
    site.flush()
    assert wait_status(obs, site.procedure_id, "armed", timeout), (
        f"{site.procedure_id} never armed: {statuses(obs, site.procedure_id)[-5:]}"
    )


def ack(site: SiteDriver, command_id: str) -> None:
    site.send(
        "robot", "safe_stop_ack", command_id=command_id, result="safe_stopped", at=time.time_ns()
    )
    site.flush()


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Every JSON object on a topic, from the beginning to the end offsets at call time."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], fetch_max_wait_ms=50)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for recs in consumer.poll(timeout_ms=200).values():
                for r in recs:
                    try:
                        obj = json.loads(r.value)
                    except (TypeError, ValueError):
                        continue
                    if isinstance(obj, dict):
                        out.append(obj)
        return out
    finally:
        consumer.close()


class Starved(Exception):
    """The test's own site sender starved (> STARVED_S between heartbeats it did not plan):
    a real silence on a loaded machine, so a stop is correct; the attempt proves nothing."""


STARVED_S = 0.25


def check_no_false_stop(obs: Observer, site: SiteDriver) -> None:
    stops = safe_stops(obs, site.procedure_id)
    if stops and max(site.unplanned_gap_s.values()) > STARVED_S:
        raise Starved(f"{site.procedure_id}: sender gaps {site.unplanned_gap_s}")
    assert not stops, (stops, site.unplanned_gap_s)


def with_retries(attempt: Any, tries: int = 3) -> None:
    """Run `attempt()`; again (up to `tries`) only when it proved the environment starved."""
    for n in range(tries):
        try:
            attempt()
            return
        except Starved:
            if n == tries - 1:
                raise


def wait_assigned(mon: Any, timeout: float = 30.0) -> None:
    """/readyz answers 200 once the group assigned *something*, possibly 0 partitions
    (topics created a moment before, not yet in the consumer's metadata): wait for > 0."""
    from tests.integration.monitorkit import http_json

    deadline = time.monotonic() + timeout
    while True:
        _, body = http_json(mon.url + "/readyz")
        if body.get("partitions_assigned", 0) > 0:
            return
        assert time.monotonic() < deadline, (
            f"monitor ready with 0 partitions for {timeout} s:\n{mon.log()[-2000:]}"
        )
        time.sleep(0.1)
