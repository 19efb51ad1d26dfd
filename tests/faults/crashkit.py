"""Kill the monitor again and again while an operator tool writes notes; then count.

Used by the CI fault test (a few kills) and by `bench/crash_audit.py` (100 kills): every
note the broker acknowledged must be in the ledger exactly once (ICD §5.2 notes are
audited; issue: exactly-once audit of inputs). Not a test module itself.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from monitor.audit.checkpoint import generate_key_files
from monitor.audit.store import Store
from monitor.icd.topics import Topics
from monitor.kafka import KafkaSettings, TransportError, open_producer

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CrashResult:
    kills: int
    acked: int
    in_ledger: int
    lost: list[int] = field(default_factory=list)
    duplicated: dict[int, int] = field(default_factory=dict)
    restart_s: list[float] = field(default_factory=list)  # start -> ready, per start
    ledger_ok: bool = False

    def summary(self) -> dict[str, object]:
        rs = sorted(self.restart_s)
        return {
            "kills": self.kills,
            "notes_acknowledged": self.acked,
            "notes_in_ledger": self.in_ledger,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "ledger_verifies": self.ledger_ok,
            "restart_to_ready_s_p50": rs[len(rs) // 2] if rs else None,
            "restart_to_ready_s_max": rs[-1] if rs else None,
        }


class NoteWriter(threading.Thread):
    """An operator tool sending `rate` notes a second, acks=all; remembers which the broker
    acknowledged (only those must reach the ledger)."""

    def __init__(self, settings: KafkaSettings, procedure_id: str, rate: float) -> None:
        super().__init__(name="note-writer", daemon=True)
        self.settings, self.pid, self.period = settings, procedure_id, 1.0 / rate
        self.acked: list[int] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        producer = open_producer(self.settings, "tool", "crash-notes")
        topic = Topics(self.settings.topic_prefix).operator
        i, t = 0, time.monotonic()
        try:
            while not self.stop_flag.is_set():
                note = {
                    "v": 1,
                    "type": "note",
                    "procedure_id": self.pid,
                    "operator_id": "dr-crash",
                    "text": f"note-{i}",
                }
                try:
                    producer.deliver(
                        topic, self.pid.encode(), json.dumps(note).encode(), timeout_s=5.0
                    )
                    self.acked.append(i)
                except TransportError:
                    pass  # not acknowledged: the monitor owes it nothing
                i += 1
                t += self.period
                self.stop_flag.wait(max(0.0, t - time.monotonic()))
        finally:
            producer.close()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _start(args: list[str], port: int, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    t0 = time.monotonic()
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", *args, "--http-port", str(port)],
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + 60
    while not _ready(port):
        if proc.poll() is not None:
            raise AssertionError(
                f"monitor exited with {proc.returncode}: {log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"monitor not ready within 60 s: {log.read_text()[-3000:]}")
        time.sleep(0.05)
    return proc, time.monotonic() - t0


def notes_in_ledger(ledger: Path) -> collections.Counter[int]:
    store = Store(ledger, readonly=True)
    try:
        out: collections.Counter[int] = collections.Counter()
        for _idx, _leaf, body in store.iter_entries():
            e = json.loads(body)
            if e.get("event") == "operator_note":
                text = e["data"].get("text", "")
                if text.startswith("note-"):
                    out[int(text[5:])] += 1
        return out
    finally:
        store.close()


def crash_run(
    bootstrap: str,
    prefix: str,
    work: Path,
    kills: int,
    rate: float = 100.0,
    alive_s: tuple[float, float] = (0.3, 2.5),
    seed: int = 1,
    progress: bool = False,
) -> CrashResult:
    """SIGKILL and restart `telesafe run` `kills` times (each time after a random 0.3-2.5 s
    of work) while notes flow; then let a last instance catch up, stop it, and count."""
    rng = random.Random(seed)
    key = work / "audit.key"
    generate_key_files(key)
    ledger = work / "audit.sqlite"
    port = 19000 + rng.randrange(0, 900)
    args = [
        "--bootstrap",
        bootstrap,
        "--topic-prefix",
        prefix,
        "--group-id",
        f"{prefix}crash",
        "--group-instance-id",
        "crash-0",
        "--monitor-id",
        "crash-0",
        "--ledger",
        str(ledger),
        "--signing-key",
        str(key),
    ]
    log = work / "monitor.log"
    settings = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    writer = NoteWriter(settings, "CRASH-0001", rate)
    result = CrashResult(kills=kills, acked=0, in_ledger=0)
    writer.start()
    try:
        for k in range(kills):
            proc, ready_s = _start(args, port, log)
            result.restart_s.append(round(ready_s, 3))
            time.sleep(rng.uniform(*alive_s))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            if progress:
                print(
                    f"kill {k + 1}/{kills}: ready after {ready_s:.2f} s, "
                    f"{len(writer.acked)} notes acknowledged",
                    flush=True,
                )
        writer.stop_flag.set()
        writer.join(10)
        proc, ready_s = _start(args, port, log)
        result.restart_s.append(round(ready_s, 3))
        acked = set(writer.acked)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(1.0)
            if acked <= set(notes_in_ledger(ledger)):
                break
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
    finally:
        writer.stop_flag.set()
    counts = notes_in_ledger(ledger)
    result.acked = len(acked)
    result.in_ledger = sum(counts.values())
    result.lost = sorted(acked - set(counts))
    result.duplicated = {i: n for i, n in counts.items() if n > 1}
    verify = subprocess.run(
        [sys.executable, "-m", "monitor", "audit", "verify", str(ledger), "--pubkey", f"{key}.pub"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    result.ledger_ok = verify.returncode == 0
    return result
