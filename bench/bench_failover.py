"""Failover without collateral, repeated: 3 monitors, 12 procedures at ICD rates (half
latched by a workspace breach), SIGKILL of the busiest, a breach after the takeover
(tests/faults/failoverkit.py). Prints the pass count and the distributions of the takeover
gap (kill -> first monitor_heartbeat from the new owner) and the survivors' dead-man gaps.
A run with false stops also gets, per stopped procedure, the largest gap in broker append
time between its heartbeats (>= 300 ms: the channel's delay, not the monitor's).

    .venv/bin/python bench/bench_failover.py [--runs 20]

Writes bench/results/failover.json. Needs the local broker (`telesafe broker start`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.broker.topics import admin_client, ensure_topics  # noqa: E402
from monitor.icd.topics import Topics  # noqa: E402
from tests.faults.failoverkit import failover_run  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_backends import broker_gaps  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def pct(xs: list[float], q: float) -> float | None:
    s = sorted(xs)
    return None if not s else s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--logs", help="keep each run's monitor logs in DIR/run-N")
    ap.add_argument("--out", default=str(RESULTS / "failover.json"), help="results file")
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        prefix = f"fo{uuid.uuid4().hex[:6]}."
        ensure_topics(args.bootstrap, prefix=prefix)
        try:
            with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
                work = Path(args.logs) / f"run-{i + 1}" if args.logs else Path(tmp)
                work.mkdir(parents=True, exist_ok=True)
                r = failover_run(args.bootstrap, prefix, work)
            s = r.summary()
            s["survivor_gaps_ms"] = sorted(round(v, 1) for v in r.survivor_gaps_ms.values())
            s["survivor_floor_gaps_ms"] = sorted(
                round(v, 1) for v in r.survivor_floor_gaps_ms.values()
            )
            s["survivor_regroup_gaps_ms"] = sorted(
                round(v, 1) for v in r.survivor_regroup_gaps_ms.values()
            )
            s["survivor_worst_at_s"] = sorted(r.survivor_worst_at_s.values())
            s["survivor_gaps_beyond_channel_ms"] = sorted(
                round(g - r.survivor_channel_pause_ms.get(p, 0.0), 1)
                for p, g in r.survivor_gaps_ms.items()
            )
            s["takeover_gaps_s"] = sorted(round(v, 3) for v in r.takeover_gaps_s.values())
            if r.false_stops or r.channel_stops:  # ours, or heartbeats reached the broker late?
                pids = sorted({v["procedure_id"] for v in r.false_stops + r.channel_stops})
                s["false_stop_broker_gap_ms"] = broker_gaps(args.bootstrap, prefix, pids)
                s["false_stop_reasons"] = sorted(
                    {v.get("reason", "") for v in r.false_stops + r.channel_stops}
                )
            s["passed"] = (
                not r.false_stops
                and not r.moved_survivors
                and r.latch_ids_kept
                and r.late_breach_stopped
            )
        except Exception as exc:  # a run that could not even be set up counts as failed
            s = {"passed": False, "error": str(exc)[:500]}
        finally:
            a = admin_client(args.bootstrap)
            try:
                a.delete_topics(Topics(prefix).all(), 10)
            finally:
                a.close()
        runs.append(s)
        print(f"run {i + 1}/{args.runs}: {json.dumps(s)[:400]}", flush=True)
    surv = [g for s in runs for g in s.get("survivor_gaps_ms", [])]
    floor = [g for s in runs for g in s.get("survivor_floor_gaps_ms", [])]
    regroup = [g for s in runs for g in s.get("survivor_regroup_gaps_ms", [])]
    beyond = [g for s in runs for g in s.get("survivor_gaps_beyond_channel_ms", [])]
    take = [s["takeover_gap_max_s"] for s in runs if "takeover_gap_max_s" in s]
    out = {
        "runs": len(runs),
        "passed": sum(1 for s in runs if s["passed"]),
        "false_stops": sum(s.get("false_stops", 0) for s in runs),
        # Silence stops the broker's record justifies (the simulator did not send on time):
        # not counted as false, reported so that the host's starvation shows.
        "channel_stops": sum(s.get("channel_stops", 0) for s in runs),
        "survivor_moves": sum(s.get("moved_survivors", 0) for s in runs),
        "survivor_gap_ms": {
            "p50": pct(surv, 0.5),
            "p99": pct(surv, 0.99),
            "max": max(surv, default=None),
        },
        # Each longest gap less the channel's own pause inside it (no fresh site heartbeat
        # appended at all: the broker or host stalled, and the monitor could not read on).
        "survivor_gap_beyond_channel_ms": {
            "p50": pct(beyond, 0.5),
            "p99": pct(beyond, 0.99),
            "max": max(beyond, default=None),
        },
        # Side by side: the same survivors, 4 s before the kill (the floor: this host, this
        # traffic, no failover) and the 4 s after it (regroup, takeover, catch-up).
        "survivor_gap_before_kill_4s_ms": {
            "p50": pct(floor, 0.5),
            "p99": pct(floor, 0.99),
            "max": max(floor, default=None),
        },
        "survivor_gap_after_kill_4s_ms": {
            "p50": pct(regroup, 0.5),
            "p99": pct(regroup, 0.99),
            "max": max(regroup, default=None),
        },
        "takeover_gap_s": {
            "p50": pct(take, 0.5),
            "p99": pct(take, 0.99),
            "max": max(take, default=None),
        },
        "per_run": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "per_run"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
