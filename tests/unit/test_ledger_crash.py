"""Crash safety: SIGKILL a writer process at random moments; every index it reported
as appended (printed only after append returned) must survive, and the ledger must
reopen and verify."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from monitor.audit.ledger import Ledger
from monitor.audit.verify import verify

ORIGIN = "telesafe.test/crash"
ROUNDS = int(os.environ.get("TELESAFE_CRASH_ROUNDS", "30"))
REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import random, sys
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from monitor.audit.ledger import Ledger
    from monitor.audit.writer import AuditWriter

    path, seed, mode, origin = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3], sys.argv[4]
    led = Ledger.open(path, Ed25519PrivateKey.from_private_bytes(seed), origin)
    out = sys.stdout
    print("ready", flush=True)
    rnd = random.Random()
    if mode == "direct":
        while True:
            batch = [{"type": "T", "r": rnd.random()} for _ in range(rnd.randint(1, 20))]
            for i in led.append_many(batch):
                out.write(f"{i}\\n")
            out.flush()
            if rnd.random() < 0.1:
                led.checkpoint()
    else:
        def acked(entries):
            out.write("".join(f"{e['index']}\\n" for e in entries))
            out.flush()
        w = AuditWriter(led, on_appended=acked, checkpoint_interval_s=0.05, max_wait_s=0.001)
        w.start()
        n = 0
        while True:
            n += 1
            w.submit({"type": "T", "n": n}, checkpoint=(n % 50 == 0))
            if n % 100 == 0:
                w.flush()
""")


def run_round(path: Path, seed: bytes, mode: str, kill_after: float) -> list[int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), seed.hex(), mode, ORIGIN],
        stdout=subprocess.PIPE, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    started: float | None = None
    while True:
        if started is not None and time.monotonic() - started >= kill_after:
            break
        r, _, _ = select.select([fd], [], [], 0.01)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"child died early: rc={proc.wait()}")
            buf += chunk
            if started is None and b"ready\n" in buf:
                started = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    buf += proc.stdout.read()  # everything printed before the kill
    proc.stdout.close()
    lines = buf.decode().split("\n")
    assert lines[0] == "ready"
    return [int(x) for x in lines[1:-1]]  # last piece may be a torn line


@pytest.mark.hazard("H-08")
@pytest.mark.slow
def test_sigkill_never_loses_acknowledged_entries(tmp_path: Path) -> None:
    sk = Ed25519PrivateKey.generate()
    seed = sk.private_bytes_raw()
    path = tmp_path / "crash.db"
    rnd = random.Random(1234)
    acked_total: set[int] = set()
    for rnd_no in range(ROUNDS):
        mode = "direct" if rnd_no % 2 == 0 else "writer"
        acked = run_round(path, seed, mode, rnd.uniform(0.02, 0.4))
        acked_total.update(acked)
        # Reopens (integrity_check, contiguous indices, root == last checkpoint) ...
        led = Ledger.open(path, sk, ORIGIN)
        size = led.size()
        led.close()
        # ... contains every acknowledged index ...
        assert not acked_total or max(acked_total) < size, (rnd_no, mode, size)
        # ... and verifies end to end (including the sidecar checkpoint).
        res = verify(path, sk.public_key())
        assert res.ok, (rnd_no, [str(p) for p in res.problems])
        assert res.entries == size
    assert len(acked_total) > ROUNDS  # the child really was appending
