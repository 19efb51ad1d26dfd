"""Cost of the monitor's ledger self-verification (monitor.audit.selfcheck) against the
size of the ledger: the same new range is checked on ledgers of different sizes, next to
a full `verify` of each, to show the pass stays bounded by what is new.

    .venv/bin/python bench/bench_selfcheck.py [--sizes 100000 300000] [--new 6000 60000]

Prints a table and writes bench/results/selfcheck.json. `--new` are ranges of new
entries per pass: 6,000 is one minute (the default interval) at 100 audit entries/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_ledger import ORIGIN, event
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from monitor.audit.ledger import Ledger
from monitor.audit.selfcheck import DEFAULT_CHUNK, SelfCheck
from monitor.audit.verify import verify

CHECKPOINT_EVERY = 1_000  # entries between checkpoints (~10 s at 100 entries/s)


def grow(led: Ledger, n: int) -> None:
    base = led.size()
    for s in range(base, base + n, CHECKPOINT_EVERY):
        led.append_many([event(i) for i in range(s, min(base + n, s + CHECKPOINT_EVERY))])
        led.checkpoint()


def measure(path: Path, sk: Ed25519PrivateKey, size: int, news: list[int]) -> dict[str, Any]:
    with Ledger.open(path, sk, ORIGIN) as led:
        grow(led, size)
    t0 = time.perf_counter()
    led = Ledger.open(path, sk, ORIGIN)
    open_s = time.perf_counter() - t0
    out: dict[str, Any] = {"entries": size, "open_s": open_s, "passes": []}
    try:
        check = SelfCheck(led)
        first = check.run()
        assert first.ok, first.problem
        out["first_pass"] = {
            "entries": first.verified_to - first.verified_from,
            "seconds": first.elapsed_s,
        }
        for new in news:
            grow(led, new)
            steps, worst = 0, 0.0
            while True:
                t0 = time.perf_counter()
                res = check.step()
                worst = max(worst, time.perf_counter() - t0)
                steps += 1
                if res is not None:
                    break
            assert res.ok and res.verified_to - res.verified_from == new, res
            out["passes"].append(
                {
                    "new_entries": new,
                    "checkpoints": res.checkpoints,
                    "seconds": res.elapsed_s,
                    "us_per_entry": res.elapsed_s / new * 1e6,
                    "steps": steps,
                    "longest_step_ms": worst * 1e3,
                }
            )
    finally:
        led.close()
    v = verify(path, sk.public_key())
    assert v.ok, v.problems
    out["full_verify_s"] = v.elapsed_s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    ap.add_argument("--new", type=int, nargs="+", default=[6_000, 60_000])
    ap.add_argument("--dir", default=None, help="where to put the test databases")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "selfcheck.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="selfcheck-bench-", dir=args.dir))
    sk = Ed25519PrivateKey.generate()
    res: dict[str, Any] = {
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
            "load_avg_1m": os.getloadavg()[0],
        },
        "chunk": DEFAULT_CHUNK,
        "checkpoint_every": CHECKPOINT_EVERY,
        "ledgers": [],
    }
    for size in args.sizes:
        res["ledgers"].append(measure(tmp / f"l{size}.sqlite", sk, size, args.new))
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(
        f"{'ledger':>9} {'open s':>7} {'full verify s':>13} {'new':>7} {'pass s':>7} "
        f"{'us/entry':>8} {'longest step ms':>15}"
    )
    for led in res["ledgers"]:
        for p in led["passes"]:
            print(
                f"{led['entries']:>9} {led['open_s']:>7.2f} {led['full_verify_s']:>13.2f} "
                f"{p['new_entries']:>7} {p['seconds']:>7.3f} {p['us_per_entry']:>8.1f} "
                f"{p['longest_step_ms']:>15.1f}"
            )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
