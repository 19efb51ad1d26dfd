"""Run every benchmark, bounded in time, and write bench/results/*.json; then the plots.

    .venv/bin/python bench/bench_all.py [--quick] [--skip ledger,engine,...]

Order: transport floor, engine, ledger, monitor (throughput, detection, scaling), plots.
Writes transport.json, engine-all.json, ledger-all.json, monitor.json and bench_all.json
(engine.json and ledger.json stay the standalone scripts' own results).
Each benchmark runs in its own process with a time limit, so one that hangs is killed and
the others still run; the whole run stops by itself in well under 15 minutes. Needs the
local broker on 127.0.0.1:9092 (`.venv/bin/telesafe broker start`). Benchmarks report
figures; they never pass or fail on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--quick", action="store_true", help="smaller runs (~5 min)")
    ap.add_argument("--skip", default="", help="comma-separated: transport,engine,ledger,monitor")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    py = sys.executable
    q = args.quick
    jobs: list[tuple[str, list[str], float]] = [
        ("transport", [py, str(HERE / "bench_transport.py"), "--bootstrap", args.bootstrap,
                       "--records", "200000" if q else "500000",
                       "--hops", "1000" if q else "2000", "--repeats", "2" if q else "3"],
         180),
        ("engine", [py, str(HERE / "bench_engine.py"), "--seconds", "5" if q else "10",
                    "--out", str(RESULTS / "engine-all.json")], 150),
        ("ledger", [py, str(HERE / "bench_ledger.py"), "--out", str(RESULTS / "ledger-all.json"),
                    "--entries-1m", "100000" if q else "1000000"], 240 if q else 330),
        ("monitor", [py, str(HERE / "bench_monitor.py"), "--bootstrap", args.bootstrap,
                     *(["--quick"] if q else [])], 600),
    ]
    summary: dict[str, dict[str, object]] = {}
    t_all = time.monotonic()
    for name, cmd, limit in jobs:
        if name in skip:
            continue
        print(f"== {name} (limit {limit:.0f} s): {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        try:
            rc = subprocess.run(cmd, timeout=limit, cwd=HERE.parent).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        summary[name] = {"rc": rc, "seconds": round(time.monotonic() - t0, 1)}
        print(f"== {name}: {summary[name]}", flush=True)
    subprocess.run([py, str(HERE / "plots.py")], timeout=120, cwd=HERE.parent, check=False)
    summary["total"] = {"seconds": round(time.monotonic() - t_all, 1),
                        "load_average_end": os.getloadavg()}
    (RESULTS / "bench_all.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
