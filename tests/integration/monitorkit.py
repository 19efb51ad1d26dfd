"""Helpers for tests that run a real `telesafe run` process against the local broker."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def http_text(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


@dataclass
class MonitorProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthy(self) -> bool:
        try:
            code, _ = http_json(self.url + "/healthz")
        except OSError:
            return False
        return code == 200


@contextlib.contextmanager
def run_monitor(bootstrap: str, prefix: str, workdir: Path, *extra: str,
                ready_timeout: float = 45.0, port: int | None = None) -> Iterator[MonitorProcess]:
    port = port or free_port()
    log_path = workdir / f"monitor-{port}.log"
    cmd = [sys.executable, "-m", "monitor", "run", "--bootstrap", bootstrap,
           "--topic-prefix", prefix, "--http-port", str(port), "--monitor-id", f"itest-{port}",
           "--group-id", f"{prefix}monitor", *extra]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    mp = MonitorProcess(proc, port, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"monitor exited with {proc.returncode}:\n{mp.log()}")
            try:
                code, _ = http_json(mp.url + "/readyz")
                if code == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"monitor not ready after {ready_timeout} s:\n{mp.log()}")
            time.sleep(0.1)
        yield mp
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Seen:
    received_at: float
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.value or b"null"))


@dataclass
class TopicWatcher:
    """Collects every record of some topics from 'now' on, in a background thread."""

    bootstrap: str
    topics: list[str]
    records: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._consumer = KafkaConsumer(bootstrap_servers=[self.bootstrap], fetch_max_wait_ms=5)
        tps = [TopicPartition(t, p) for t in self.topics
               for p in sorted(self._consumer.partitions_for_topic(t) or [])]
        assert tps, f"no partitions for {self.topics}"
        self._consumer.assign(tps)
        self._consumer.seek_to_end(*tps)
        for tp in tps:  # force the position lookup now, so nothing sent later is missed
            self._consumer.position(tp)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for tp, recs in self._consumer.poll(timeout_ms=50).items():
                now = time.time()
                with self._lock:
                    for r in recs:
                        self.records.append(Seen(now, tp.topic, r.key, r.value,
                                                 {k: v for k, v in (r.headers or [])},
                                                 r.timestamp))
        self._consumer.close()

    def snapshot(self) -> list[Seen]:
        with self._lock:
            return list(self.records)

    def of_type(self, ctype: str, procedure_id: str | None = None) -> list[dict[str, Any]]:
        out = []
        for s in self.snapshot():
            try:
                v = s.json()
            except ValueError:
                continue
            if v.get("type") == ctype and (procedure_id is None or v.get("procedure_id") ==
                                           procedure_id):
                v["_received_at"] = s.received_at
                out.append(v)
        return out

    def wait_for(self, pred: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return bool(pred())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
