"""`telesafe run --workers N`: N monitor processes on one node, one consumer group.

The group shards the partitions between them (one Python process per core is what scales:
the GIL serialises one process's engine work). Each worker is an ordinary `telesafe run`
with its own monitor id (`<id>-<i>`), HTTP port (`<port>+i`), ledger (`<ledger stem>-<i>`)
and static-membership id; this process only starts them, restarts one that dies (the
group moves its partitions meanwhile; the robot's dead-man covers the gap) and stops them
all on SIGTERM/SIGINT. The Helm chart runs one process per pod instead.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("telesafe.workers")

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)


def ledger_for(ledger: str, i: int) -> str:
    p = Path(ledger)
    return str(p.with_name(f"{p.stem}-{i}{p.suffix}"))


def worker_argv(
    argv: Sequence[str],
    i: int,
    monitor_id: str,
    http_port: int,
    ledger: str | None,
    instance_id: str | None,
) -> list[str]:
    """The `telesafe run` arguments of worker `i`: the parent's, minus --workers, with the
    per-worker values appended (argparse keeps the last occurrence)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--workers":
            skip = True
            continue
        if a.startswith("--workers="):
            continue
        out.append(a)
    out += [
        "--monitor-id",
        f"{monitor_id}-{i}",
        "--http-port",
        str(http_port + i if http_port else 0),
    ]
    if ledger:
        out += ["--ledger", ledger_for(ledger, i)]
    out += ["--group-instance-id", f"{instance_id or monitor_id}-{i}"]
    return out


class Supervisor:
    def __init__(
        self,
        argv: Sequence[str],
        n: int,
        monitor_id: str,
        http_port: int,
        ledger: str | None,
        instance_id: str | None,
    ) -> None:
        self.cmds = [
            [
                sys.executable,
                "-m",
                "monitor",
                "run",
                *worker_argv(argv, i, monitor_id, http_port, ledger, instance_id),
            ]
            for i in range(n)
        ]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self.restarts = [0] * n
        self.stopping = threading.Event()

    def _start(self, i: int) -> None:
        self.procs[i] = subprocess.Popen(self.cmds[i])
        log.info("worker %d started (pid %d)", i, self.procs[i].pid)  # type: ignore[union-attr]

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        for i in range(len(self.cmds)):
            self._start(i)
        next_try = [0.0] * len(self.cmds)
        while not self.stopping.wait(0.5):
            for i, p in enumerate(self.procs):
                if p is None or p.poll() is None:
                    continue
                if p.returncode == 2:  # a configuration error: restarting cannot help
                    log.error("worker %d refused to start (exit 2); stopping all", i)
                    self.stopping.set()
                    break
                now = time.monotonic()
                if next_try[i] == 0.0:
                    delay = RESTART_BACKOFF_S[min(self.restarts[i], len(RESTART_BACKOFF_S) - 1)]
                    next_try[i] = now + delay
                    log.error(
                        "worker %d exited with %s; restarting in %.0f s", i, p.returncode, delay
                    )
                elif now >= next_try[i]:
                    self.restarts[i] += 1
                    next_try[i] = 0.0
                    self._start(i)
        return self.stop()

    def stop(self) -> int:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        worst = 0
        for p in self.procs:
            if p is None:
                continue
            try:
                rc = p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait(5)
            worst = max(worst, 0 if rc in (0, -signal.SIGTERM) else 1)
        return worst
