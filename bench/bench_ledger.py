"""Audit ledger benchmark: durable append rate (group commit vs raw SQLite with the
same PRAGMAs), verify rate, and proof size/time at 1,000,000 entries.

    .venv/bin/python bench/bench_ledger.py [--entries-1m 1000000] [--dir /path/on/target/disk]

Prints a table and writes bench/results/ledger.json. Numbers depend on the disk's
flush latency: run it on the target hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from monitor.audit.canonical import canonical_json
from monitor.audit.ledger import Ledger
from monitor.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from monitor.audit.verify import verify
from monitor.audit.writer import AuditWriter

ORIGIN = "telesafe.bench/ledger"


def event(i: int) -> dict[str, Any]:
    # Roughly the size of a real breach record (~250 bytes canonical).
    return {
        "type": "POLICY_BREACH", "procedure_id": "PROC-2026-0042", "rule_id": "max-tip-speed",
        "t_utc_ns": 1_763_900_000_000_000_000 + i * 1_000_000, "seq": i,
        "measured": 0.1234 + i % 7, "limit": 0.1, "arm": "psm1", "severity": "critical",
        "actor": "policy-engine v1.4.2",
    }


def raw_sqlite(path: Path, n: int, batch: int) -> float:
    """Reference: same schema and PRAGMAs, pre-built rows, one transaction per batch."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE entries(idx INTEGER PRIMARY KEY, leaf_hash BLOB, body BLOB)")
    rows = []
    for i in range(n):
        body = canonical_json({**event(i), "index": i})
        rows.append((i, leaf_hash(body), body))
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO entries VALUES (?, ?, ?)", rows[s : s + batch])
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return n / dt


def ledger_direct(path: Path, sk: Ed25519PrivateKey, n: int, batch: int) -> float:
    led = Ledger.open(path, sk, ORIGIN)
    evs = [event(i) for i in range(n)]
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        led.append_many(evs[s : s + batch])
    dt = time.perf_counter() - t0
    led.close()
    return n / dt


def writer_rate(path: Path, sk: Ed25519PrivateKey, n: int) -> tuple[float, float]:
    """Producer submits as fast as it can; time until everything is durable."""
    led = Ledger.open(path, sk, ORIGIN)
    w = AuditWriter(led, checkpoint_interval_s=10.0)
    w.start()
    evs = [event(i) for i in range(n)]
    t0 = time.perf_counter()
    for e in evs:
        w.submit(e)
    t_submit = time.perf_counter() - t0
    assert w.flush(120), "flush timed out"
    dt = time.perf_counter() - t0
    w.stop()
    return n / dt, t_submit / n * 1e6


def paced_latency(path: Path, sk: Ed25519PrivateKey, n: int, rate: float) -> dict[str, float]:
    """Submit-to-durable latency at a realistic event rate (on_appended timestamps)."""
    led = Ledger.open(path, sk, ORIGIN)
    sent: dict[int, float] = {}
    lat: list[float] = []

    def done(entries: list[dict[str, Any]]) -> None:
        now = time.perf_counter()
        lat.extend(now - sent[e["seq"]] for e in entries)

    w = AuditWriter(led, on_appended=done)
    w.start()
    for i in range(n):
        sent[i] = time.perf_counter()
        w.submit(event(i))
        time.sleep(1 / rate)
    w.flush(30)
    w.stop()
    lat.sort()
    return {
        "rate_per_s": rate,
        "p50_ms": statistics.median(lat) * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
        "max_ms": lat[-1] * 1e3,
    }


def build_big(path: Path, sk: Ed25519PrivateKey, n: int) -> float:
    """Fast path for 1M entries: large batches (10k per transaction)."""
    led = Ledger.open(path, sk, ORIGIN)
    t0 = time.perf_counter()
    step = 10_000
    for s in range(0, n, step):
        led.append_many([event(i) for i in range(s, min(n, s + step))])
        if (s // step) % 10 == 9:
            led.checkpoint()
    led.checkpoint()
    dt = time.perf_counter() - t0
    led.close()
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries-1m", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None, help="where to put the test databases")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ledger.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ledger-bench-", dir=args.dir))
    sk = Ed25519PrivateKey.generate()
    res: dict[str, Any] = {
        "host": {"python": platform.python_version(), "machine": platform.machine(),
                 "cpus": os.cpu_count(), "sqlite": sqlite3.sqlite_version, "dir": str(tmp)},
    }
    t_all = time.perf_counter()
    try:
        raw_sqlite(tmp / "warmup.db", 500, 1)  # first fsyncs on a fresh dir are slow
        appends = []
        for batch in (1, 16, 128, 512):
            n = 2_000 if batch == 1 else 20_000
            appends.append({
                "batch": batch,
                "ledger_appends_per_s": ledger_direct(tmp / f"l{batch}.db", sk, n, batch),
                "raw_sqlite_inserts_per_s": raw_sqlite(tmp / f"r{batch}.db", n, batch),
            })
        res["append"] = appends
        rate, submit_us = writer_rate(tmp / "w.db", sk, 50_000)
        res["writer"] = {"durable_appends_per_s": rate, "submit_cost_us": submit_us,
                         "entries": 50_000}
        res["latency"] = paced_latency(tmp / "p.db", sk, 2_000, 500.0)

        build_s = build_big(tmp / "big.db", sk, args.entries_1m)
        res["build_1m"] = {"entries": args.entries_1m, "seconds": build_s,
                           "appends_per_s": args.entries_1m / build_s}
        v = verify(tmp / "big.db", sk.public_key())
        assert v.ok, v.problems
        res["verify"] = {"entries": v.entries, "seconds": v.elapsed_s,
                         "entries_per_s": v.entries / v.elapsed_s}

        led = Ledger.open(tmp / "big.db", sk, ORIGIN)
        n = led.size()
        root = led.root()
        t0 = time.perf_counter()
        tree = led.tree()
        tree_s = time.perf_counter() - t0
        led.close()
        rnd = random.Random(7)
        idxs = [rnd.randrange(n) for _ in range(1000)]
        t0 = time.perf_counter()
        proofs = [tree.inclusion_proof(i, n) for i in idxs]
        gen_us = (time.perf_counter() - t0) / len(idxs) * 1e6
        t0 = time.perf_counter()
        for i, p in zip(idxs, proofs, strict=True):
            verify_inclusion(i, n, tree.levels[0][i], p, root)
        ver_us = (time.perf_counter() - t0) / len(idxs) * 1e6
        olds = [rnd.randrange(1, n) for _ in range(1000)]
        t0 = time.perf_counter()
        cproofs = [(m, tree.root(m), tree.consistency_proof(m, n)) for m in olds]
        cgen_us = (time.perf_counter() - t0) / len(olds) * 1e6
        t0 = time.perf_counter()
        for m, r1, p in cproofs:
            verify_consistency(m, n, r1, root, p)
        cver_us = (time.perf_counter() - t0) / len(olds) * 1e6
        res["proofs_1m"] = {
            "tree_size": n,
            "load_tree_s": tree_s,
            "inclusion": {"hashes_max": max(len(p) for p in proofs),
                          "bytes_max": 32 * max(len(p) for p in proofs),
                          "generate_us": gen_us, "verify_us": ver_us},
            "consistency": {"hashes_max": max(len(p) for _, _, p in cproofs),
                            "bytes_max": 32 * max(len(p) for _, _, p in cproofs),
                            "generate_us": cgen_us, "verify_us": cver_us},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["total_s"] = time.perf_counter() - t_all

    print(f"{'batch':>6} {'ledger appends/s':>18} {'raw sqlite inserts/s':>22}")
    for a in res["append"]:
        print(f"{a['batch']:>6} {a['ledger_appends_per_s']:>18,.0f} "
              f"{a['raw_sqlite_inserts_per_s']:>22,.0f}")
    w = res["writer"]
    print(f"AuditWriter (group commit, max_batch 512): {w['durable_appends_per_s']:,.0f} "
          f"durable appends/s; submit() {w['submit_cost_us']:.2f} us")
    lt = res["latency"]
    print(f"submit->durable at {lt['rate_per_s']:.0f}/s: p50 {lt['p50_ms']:.1f} ms, "
          f"p99 {lt['p99_ms']:.1f} ms, max {lt['max_ms']:.1f} ms")
    b = res["build_1m"]
    print(f"build {b['entries']:,} entries: {b['seconds']:.1f} s ({b['appends_per_s']:,.0f}/s)")
    vv = res["verify"]
    print(f"verify {vv['entries']:,} entries: {vv['seconds']:.2f} s "
          f"({vv['entries_per_s']:,.0f} entries/s)")
    p = res["proofs_1m"]
    print(f"tree load at {p['tree_size']:,}: {p['load_tree_s']:.2f} s")
    for k in ("inclusion", "consistency"):
        q = p[k]
        print(f"{k:>12} proof: <= {q['hashes_max']} hashes ({q['bytes_max']} B), "
              f"generate {q['generate_us']:.1f} us, verify {q['verify_us']:.1f} us")
    print(f"total {res['total_s']:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
