"""Plots (PNG and SVG) from bench/results/*.json.

    .venv/bin/python bench/plots.py [--results bench/results]

- detection-latency.png: CDF of breach->safe_stop and silence overshoot, idle vs loaded,
  with the one-hop transport p99 for reference;
- throughput.png: received vs offered records/s, and the monitor's lag p99 per step;
- scaling.png: received records/s, detection p99, peak RSS and CPU at 1..200 procedures;
- backends.png (from backends.json): per backend and worker count, consumer lag p99,
  monitor_heartbeat rate and CPU against procedures at full ICD rate;
- overload.png (from backends.json): the monitor's lag and loop busy ratio through the
  overload step (2x the knee, then half of it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def load(d: Path, name: str) -> dict[str, Any] | None:
    p = d / name
    return json.loads(p.read_text()) if p.exists() else None


def save(fig: Any, d: Path, stem: str) -> None:
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(d / f"{stem}.{ext}", dpi=110)
    plt.close(fig)
    print(f"wrote {d / stem}.png/.svg")


def cdf(ax: Any, xs: list[float], label: str, style: str) -> None:
    if not xs:
        return
    s = sorted(x * 1e3 for x in xs)
    ax.plot(s, [(i + 1) / len(s) for i in range(len(s))], style, label=f"{label} (n={len(s)})")


def detection(d: Path, mon: dict[str, Any], tr: dict[str, Any] | None) -> None:
    det = mon.get("detection")
    if not det:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, kind, title in ((axes[0], "breach", "breach → safe_stop arrival"),
                            (axes[1], "silence", "silence overshoot (arrival − last hb − 300 ms)")):
        for cond, style in (("idle", "-"), ("loaded", "--")):
            st = det.get(cond)
            if st:
                lbl = f"{cond} ({st['procedures']} load procs)"
                cdf(ax, st["detection"]["samples_s"][kind], lbl, style)
        if tr and kind == "breach":
            p99 = tr["one_hop"]["p99_ms_median"]
            ax.axvline(3 * p99, color="grey", lw=0.8, ls=":",
                       label=f"aim: 3 × one-hop p99 = {3 * p99:.1f} ms")
        if kind == "silence":
            ax.axvline(10, color="grey", lw=0.8, ls=":", label="aim: p99 ≤ 10 ms")
        ax.axhline(0.99, color="red", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("fraction of trials")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
    save(fig, d, "detection-latency")


def throughput(d: Path, mon: dict[str, Any], tr: dict[str, Any] | None) -> None:
    thr = mon.get("throughput")
    if not thr:
        return
    steps = thr["steps"]
    off = [s.get("offered", {}).get("records_per_s", 0) for s in steps]
    rec = [s["monitor"].get("received_per_s", 0) for s in steps]
    lag = [((s["monitor"].get("lag_s") or {}).get("p99") or 0) * 1e3 for s in steps]
    cpu = [s["monitor"].get("cpu_cores", 0) for s in steps]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    a1.plot(off, rec, "o-", label="monitor received")
    mx = max(off + rec + [1])
    a1.plot([0, mx], [0, mx], ":", color="grey", label="received = offered")
    if tr:
        raw = tr["raw_consumer"]["records_per_s_median"]
        a1.axhline(0.7 * raw, color="orange", lw=0.8, ls="--",
                   label=f"aim: 0.7 × raw consumer ({0.7 * raw:,.0f}/s)")
    a1.set_xlabel("offered records/s (load generator)")
    a1.set_ylabel("records/s")
    a1.set_title("throughput vs offered load")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    a2.plot(off, lag, "o-", color="C3", label="lag p99 (ms)")
    a2.axhline(100, color="grey", ls=":", lw=0.8, label="100 ms")
    a2.set_yscale("log")
    a2.set_xlabel("offered records/s")
    a2.set_ylabel("consumer lag p99, ms (log)")
    b = a2.twinx()
    b.plot(off, cpu, "s--", color="C2", label="monitor CPU (cores)")
    b.set_ylabel("CPU cores")
    a2.set_title("lag and CPU vs offered load")
    a2.legend(fontsize=8, loc="upper left")
    b.legend(fontsize=8, loc="lower right")
    a2.grid(alpha=0.3)
    save(fig, d, "throughput")


def scaling(d: Path, mon: dict[str, Any]) -> None:
    sc = mon.get("scaling")
    if not sc:
        return
    n = [s["procedures"] for s in sc]
    fig, ax = plt.subplots(2, 2, figsize=(11, 7))
    ax[0][0].plot(n, [s["monitor"].get("received_per_s", 0) for s in sc], "o-")
    ax[0][0].set_title("records/s received")
    for kind, style in (("breach", "o-"), ("silence", "s--")):
        ax[0][1].plot(n, [s["detection"][kind]["p99_ms"] or 0 for s in sc], style,
                      label=f"{kind} p99")
        ax[0][1].plot(n, [s["detection"][kind]["p50_ms"] or 0 for s in sc], style,
                      alpha=0.4, label=f"{kind} p50")
    ax[0][1].set_title("detection latency (ms; silence = overshoot)")
    ax[0][1].legend(fontsize=8)
    ax[1][0].plot(n, [s["monitor"]["vm_hwm_mb"] for s in sc], "o-")
    ax[1][0].axhline(250, color="grey", ls=":", lw=0.8, label="aim 250 MB")
    ax[1][0].set_title("peak RSS (VmHWM, MB)")
    ax[1][0].legend(fontsize=8)
    ax[1][1].plot(n, [s["monitor"].get("cpu_cores", 0) for s in sc], "o-", label="CPU cores")
    ax[1][1].plot(n, [s["monitor"].get("monitor_heartbeats_per_s", 0) / 1e4 for s in sc], "s--",
                  label="monitor_heartbeat /s ÷ 10,000")
    ax[1][1].set_title("monitor CPU and commands")
    ax[1][1].legend(fontsize=8)
    for a in ax.flat:
        a.set_xscale("log")
        a.set_xlabel("concurrent procedures (log)")
        a.grid(alpha=0.3)
    save(fig, d, "scaling")


def backends(d: Path, res: dict[str, Any]) -> None:
    series = [
        ("confluent, 1 process", res.get("confluent", {}).get("capacity"), "o-"),
        ("confluent, --workers 2", res.get("confluent", {}).get("workers2"), "s--"),
        ("kafka-python, 1 process", res.get("kafka-python", {}).get("capacity"), "^:"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for label, cap, style in series:
        if not cap:
            continue
        steps = cap["steps"]
        n = [s["procedures"] for s in steps]
        axes[0].plot(n, [max(s["lag_p99_ms"] or 0.0, 0.5) for s in steps], style, label=label)
        axes[1].plot(n, [s["monitor_heartbeat_hz_min"] for s in steps], style, label=label)
        axes[2].plot(n, [s["cpu_cores"] for s in steps], style, label=label)
    axes[0].axhline(50, color="grey", linestyle=":", label="aim: lag p99 < 50 ms")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("consumer lag p99, ms (log)")
    axes[1].axhline(45, color="grey", linestyle=":", label="aim: >= 45 Hz")
    axes[1].set_ylabel("slowest procedure's monitor_heartbeat, Hz")
    axes[2].set_ylabel("monitor CPU, cores (all processes)")
    for ax in axes:
        ax.set_xlabel("procedures at full ICD rate (172 records/s each)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.suptitle("One monitor against load, both Kafka backends (2-core VM, broker and load on it)")
    save(fig, d, "backends")


def overload(d: Path, res: dict[str, Any]) -> None:
    ov = res.get("overload")
    if not ov or not ov.get("lag_timeline"):
        return
    t = [x[0] for x in ov["lag_timeline"]]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(t, [x[1] for x in ov["lag_timeline"]], "o-", label="max consumer lag, s")
    ax.axvspan(0, 60, color="red", alpha=0.08, label="2x the knee offered")
    ax.set_xlabel("seconds from the start of the step")
    ax.set_ylabel("lag, s")
    ax2 = ax.twinx()
    ax2.plot(t, [x[2] for x in ov["lag_timeline"]], "x:", color="grey", label="loop busy")
    ax2.set_ylabel("loop busy ratio")
    ax2.set_ylim(0, 1.05)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(
        f"Overload: {ov['offered_over_per_s']:,} records/s for 60 s, then half the knee; "
        f"healthy latched: {ov['healthy_latched']}"
    )
    ax.grid(alpha=0.3)
    save(fig, d, "overload")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--monitor-json", default="monitor.json")
    args = ap.parse_args()
    d = Path(args.results)
    be = load(d, "backends.json")
    if be is not None:
        backends(d, be)
        overload(d, be)
    mon = load(d, args.monitor_json)
    tr = load(d, "transport.json")
    if mon is None:
        print(f"no {args.monitor_json} in {d}: run bench/bench_monitor.py first")
        return 0
    detection(d, mon, tr)
    throughput(d, mon, tr)
    scaling(d, mon)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
