"""Exactly-once audit across SIGKILLs: 100 kill-restart cycles of `telesafe run` while an
operator tool writes 100 notes a second (acks=all); every acknowledged note must be in the
ledger exactly once. Prints the figures and writes bench/results/crash_audit.json.

    .venv/bin/python bench/crash_audit.py [--kills 100] [--rate 100]

Needs the local broker (`telesafe broker start`). About 5-10 minutes for 100 kills.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.broker.topics import admin_client, ensure_topics  # noqa: E402
from monitor.icd.topics import Topics  # noqa: E402
from tests.faults.crashkit import crash_run  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=100, help="kill-restart cycles (default 100)")
    ap.add_argument("--rate", type=float, default=100.0, help="notes a second (default 100)")
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.kills < 1 or args.rate <= 0:
        print("crash_audit: --kills >= 1 and --rate > 0", file=sys.stderr)
        return 2
    prefix = f"crash{uuid.uuid4().hex[:6]}."
    ensure_topics(args.bootstrap, prefix=prefix)
    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="crash-audit-") as work:
            r = crash_run(
                args.bootstrap,
                prefix,
                Path(work),
                args.kills,
                args.rate,
                seed=args.seed,
                progress=True,
            )
    finally:
        admin = admin_client(args.bootstrap)
        try:
            admin.delete_topics(Topics(prefix).all(), 10)
        finally:
            admin.close()
    out = {
        **r.summary(),
        "rate_per_s": args.rate,
        "wall_s": round(time.monotonic() - t0, 1),
        "lost_notes": r.lost[:20],
        "duplicated_notes": dict(list(r.duplicated.items())[:20]),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "crash_audit.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0 if not r.lost and not r.duplicated and r.ledger_ok else 1


if __name__ == "__main__":
    sys.exit(main())
