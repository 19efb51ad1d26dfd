"""Planning and merging for scripts/fuzz-nightly.sh (stdlib only; not a test module).

    python -m tests.fuzz.nightly plan  --dir D --total N --workers W
        one line per job to run next: `<test node id> <max_examples>`; nothing once every
        test has reached its share of N.
    python -m tests.fuzz.nightly merge --dir D [--out FILE] [--final]
        merges the jobs' reports (D/job-*.json, written by tests/fuzz/conftest.py) into one
        summary; with --final prints it and exits 1 if a job failed or the target was missed.

Each job is one pytest process on one fuzz test with its own --hypothesis-seed; the inputs
per example measured so far size the next jobs, so the run lands just above the target.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ENGINE = "tests/fuzz/test_engine_fuzz.py::test_engine_survives_adversarial_sequences"
DECODE = "tests/fuzz/test_decode_fuzz.py::"
# Half of the inputs for decoding, half for the engine.
SPLIT = {
    DECODE + "test_arbitrary_bytes_never_raise": 0.2,
    DECODE + "test_mutated_telemetry": 0.2,
    DECODE + "test_mutated_operator_requests": 0.1,
    ENGINE: 0.5,
}
# Decoding tests count one input per example; the engine's sequences are sized in the
# first round (a few calibration jobs per worker) before the bulk is planned.
CALIBRATION_EXAMPLES = 1000
# Upper bound on one job's max_examples: bounds its memory (hypothesis keeps a tree of what
# it tried) and the time lost if it is interrupted.
MAX_JOB_EXAMPLES = {ENGINE: 20_000}
MAX_JOB_EXAMPLES_DEFAULT = 50_000


def targets(total: int) -> dict[str, int]:
    return {t: math.ceil(total * share) for t, share in SPLIT.items()}


def load_jobs(work: Path) -> list[dict[str, Any]]:
    """Every job of the run: its spec (job-N.job), report (job-N.json) and exit code."""
    jobs = []
    for spec in sorted(work.glob("job-*.job")):
        test, examples, seed = spec.read_text().split()
        rc_file, rep_file = spec.with_suffix(".rc"), spec.with_suffix(".json")
        job: dict[str, Any] = {
            "job": spec.stem,
            "test": test,
            "max_examples": int(examples),
            "seed": int(seed),
            "rc": int(rc_file.read_text()) if rc_file.exists() else None,
            "report": json.loads(rep_file.read_text()) if rep_file.exists() else None,
            "log": str(spec.with_suffix(".log")),
        }
        jobs.append(job)
    return jobs


def _merge_decoders(into: dict[str, Any], more: dict[str, Any]) -> None:
    for dec, c in more.items():
        m = into.setdefault(dec, {"accepted": 0, "rejected": 0, "rejected_by_code": Counter()})
        m["accepted"] += c["accepted"]
        m["rejected"] += c["rejected"]
        m["rejected_by_code"].update(c["rejected_by_code"])


def merge(work: Path, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = meta or {}
    total = int(meta.get("target_inputs", 0))
    want = targets(total) if total else {}
    tests: dict[str, dict[str, Any]] = {
        t: {"target": want.get(t, 0), "inputs": 0, "examples": 0, "jobs": []} for t in SPLIT
    }
    failures: list[dict[str, Any]] = []
    loads: list[float] = []
    versions: set[tuple[str, str]] = set()
    cpu = 0.0
    for job in load_jobs(work):
        t = tests.setdefault(job["test"], {"target": 0, "inputs": 0, "examples": 0, "jobs": []})
        rep = job["report"]
        res = rep["tests"].get(job["test"]) if rep else None
        entry = {"seed": job["seed"], "max_examples": job["max_examples"]}
        if res is not None:
            entry |= {"examples": res["examples"], "inputs": res["inputs"]}
            t["inputs"] += res["inputs"]
            t["examples"] += res["examples"]
            t["duration_s"] = round(t.get("duration_s", 0.0) + res["duration_s"], 3)
            if "decoders" in res:
                _merge_decoders(t.setdefault("decoders", {}), res["decoders"])
            if "actions" in res:
                t.setdefault("actions", Counter()).update(res["actions"])
        if rep:
            cpu += rep["elapsed_s"]
            loads += [rep["machine"]["loadavg_start"][0], rep["machine"]["loadavg_end"][0]]
            versions.add((rep["python"], rep["hypothesis"]))
        t["jobs"].append(entry)
        if job["rc"] is None:
            continue  # still running
        if job["rc"] != 0 or res is None or res["outcome"] != "passed":
            failures.append(
                {
                    "test": job["test"],
                    "rc": job["rc"],
                    "outcome": res["outcome"] if res else "no report",
                    "rerun": f"TELESAFE_FUZZ_EXAMPLES={job['max_examples']} pytest "
                    f"{job['test']} -p no:cacheprovider --hypothesis-seed={job['seed']}",
                    "log": job["log"],
                }
            )
    for t in tests.values():
        if t["examples"]:
            t["inputs_per_example"] = round(t["inputs"] / t["examples"], 3)
        for c in t.get("decoders", {}).values():
            c["rejected_by_code"] = dict(sorted(c["rejected_by_code"].items()))
        if "actions" in t:
            t["actions"] = dict(sorted(t["actions"].items()))
    inputs = sum(t["inputs"] for t in tests.values())
    decode = sum(t["inputs"] for n, t in tests.items() if n.startswith(DECODE))
    return {
        **meta,
        "inputs": inputs,
        "inputs_decode": decode,
        "inputs_engine": inputs - decode,
        "examples": sum(t["examples"] for t in tests.values()),
        "reached": bool(total) and inputs >= total,
        "jobs": sum(len(t["jobs"]) for t in tests.values()),
        "job_seconds": round(cpu, 1),
        "versions": [{"python": p, "hypothesis": h} for p, h in sorted(versions)],
        "loadavg_1min": (
            {
                "min": min(loads),
                "median": round(statistics.median(loads), 2),
                "max": max(loads),
            }
            if loads
            else None
        ),
        "failures": failures,
        "split": SPLIT,
        "tests": tests,
    }


def plan(work: Path, total: int, workers: int) -> list[tuple[str, int]]:
    state = merge(work, {"target_inputs": total})["tests"]
    jobs: list[tuple[str, int]] = []
    for test, want in targets(total).items():
        t = state[test]
        remaining = want - t["inputs"]
        if remaining <= 0:
            continue
        if t["examples"]:
            per_example = t["inputs"] / t["examples"]
        elif test.startswith(DECODE):
            per_example = 1.0
        else:  # not measured yet: calibrate first
            n = max(1, min(CALIBRATION_EXAMPLES, remaining // (10 * workers)))
            jobs += [(test, n)] * workers
            continue
        needed = max(1, math.ceil(remaining / per_example))
        cap = MAX_JOB_EXAMPLES.get(test, MAX_JOB_EXAMPLES_DEFAULT)
        count = max(math.ceil(needed / cap), min(workers, needed))
        base, extra = divmod(needed, count)
        jobs += [(test, base + (i < extra)) for i in range(count)]
    # Longest first (the engine's jobs), so that the workers finish together.
    cost = {ENGINE: 5.0}
    jobs.sort(key=lambda j: -j[1] * cost.get(j[0], 1.0))
    return jobs


def text(summary: dict[str, Any]) -> str:
    lines = [
        f"fuzz nightly: {summary['inputs']:,} inputs of {summary.get('target_inputs', 0):,} "
        f"(decode {summary['inputs_decode']:,}, engine {summary['inputs_engine']:,}), "
        f"{summary['examples']:,} examples, {summary['jobs']} jobs, "
        f"{len(summary['failures'])} failed"
    ]
    for name, t in summary["tests"].items():
        lines.append(
            f"  {name.rsplit('::', 1)[-1]}: {t['inputs']:,} / {t['target']:,} inputs, "
            f"{t['examples']:,} examples, {len(t['jobs'])} jobs"
        )
    for f in summary["failures"]:
        lines.append(f"  FAILED {f['test']} ({f['outcome']}): {f['rerun']}  [{f['log']}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz.nightly")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    m = sub.add_parser("merge")
    m.add_argument("--dir", type=Path, required=True)
    m.add_argument("--out", type=Path)
    m.add_argument("--final", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "plan":
        for test, n in plan(args.dir, args.total, args.workers):
            print(test, n)
        return 0
    meta_file = args.dir / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    summary = merge(args.dir, meta)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(text(summary))
    if args.final and (summary["failures"] or not summary["reached"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
