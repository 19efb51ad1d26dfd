"""The monitor on the real broker: throughput, detection latency, scaling.

    .venv/bin/python bench/bench_monitor.py [--quick] [--only throughput,detection,scaling]
        [--profile-seconds 8]

Every step starts a fresh `python -m monitor run` (own topic prefix, own group, no ledger,
log level INFO) and a lean load generator in its own process (`--loadgen`, below). Each
load procedure sends what the simulator's sites send minus kinematics:

    heartbeats, both sites, 50 Hz     100 records/s
    latency: control (robot) 10 Hz + video (console) 10 Hz   20 records/s
    link, both sites, 1 Hz             2 records/s
                                     = 122 records/s per procedure (~250 bytes each)

The generator batches (linger_ms=5); sent_at is the send time, so every record is fresh.

- throughput: offered load rises in steps (procedures x 122 records/s); per step the
  monitor's received rate (`telesafe_records_received_total`), its lag (the
  `telesafe_consumer_lag_seconds` gauge, broker timestamp -> engine, sampled at 1 Hz) and
  its CPU (/proc). The knee is the highest step it follows with lag p99 < 100 ms.
- detection: a precise site emulator in this process (heartbeats of both sites at 50 Hz per
  trial procedure, linger_ms=0) runs many short trials on distinct procedure ids, a new one
  every 50 ms: after 0.6 s of heartbeats it either stops the robot's heartbeats (silence)
  or sends one kinematics batch with the tool outside the box (breach). A consumer on the
  commands topic stamps each first `safe_stop`. breach: arrival - send(); silence:
  arrival - last robot heartbeat - 300 ms (the overshoot). Clocks: one perf_counter.
  400 trials by default (200 of each kind). Runs idle (no generator) and loaded: the
  generator at the throughput knee this run found (the load of measure 2), or at
  `--loaded-procedures` when the throughput section did not run.
- scaling: 1, 10, 50, 200 load procedures; throughput, lag, detection trials, peak RSS
  (VmHWM) and CPU of the monitor, its monitor_heartbeat rate; at the last step a py-spy
  profile (if installed) gives the CPU share of `_send_heartbeats`.

Writes bench/results/monitor.json. Benchmarks report; they do not pass or fail.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.icd.topics import Topics  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SILENCE_LIMIT_S = 0.300
RECORDS_PER_PROCEDURE_S = 122

HB = ('{"v":1,"type":"heartbeat","procedure_id":"%s","site":"%s","seq":%d,"sent_at":%d,'
      '"state":"operating","clock":{"source":"ptp","offset_ns":0,"max_error_ns":100000}}')
LAT = ('{"v":1,"type":"latency","procedure_id":"%s","site":"%s","seq":%d,"sent_at":%d,'
       '"channel":"%s","samples_ms":[%.1f,%.1f,%.1f,%.1f,%.1f]}')
LINK = ('{"v":1,"type":"link","procedure_id":"%s","site":"%s","seq":%d,"sent_at":%d,'
        '"rtt_ms":96.0,"jitter_ms":1.0,"loss_ratio":0.0,"window_ms":1000.0}')


def _start(pid: str, seq: int) -> str:
    return json.dumps({"v": 1, "type": "procedure_start", "procedure_id": pid, "site": "robot",
                       "seq": seq, "sent_at": time.time_ns(), "surgeon_id": "bench",
                       "robot": {"model": "Toumai", "serial": "TM-BENCH"},
                       "arms": ["psm1", "psm2", "psm3", "ecm"]})


def _end(pid: str, seq: int) -> str:
    return json.dumps({"v": 1, "type": "procedure_end", "procedure_id": pid, "site": "robot",
                       "seq": seq, "sent_at": time.time_ns(), "reason": "completed"})


# -- the lean load generator (its own process) -----------------------------------------------


def loadgen(bootstrap: str, prefix: str, procedures: int, seconds: float, tag: str) -> int:
    t = Topics(prefix)
    topic = {"console": t.telemetry_console, "robot": t.telemetry_robot}
    p = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=5, acks="all",
                      client_id=f"bench-load-{tag}", retry_backoff_ms=20)
    pids = [f"LOAD-{tag}-{i:04d}" for i in range(procedures)]
    keys = [x.encode() for x in pids]
    seq = {(x, s): 0 for x in pids for s in ("console", "robot")}
    send = p.send
    sent = 0

    def put(pid: str, key: bytes, site: str, value: str) -> None:
        nonlocal sent
        send(topic[site], key=key, value=value.encode())
        seq[(pid, site)] += 1
        sent += 1

    for pid, key in zip(pids, keys, strict=True):
        put(pid, key, "robot", _start(pid, seq[(pid, "robot")]))
    p.flush()
    sent = 0
    period = 0.020
    t0 = time.monotonic()
    nxt = t0
    tick = late = 0
    end = t0 + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if nxt > now:
            time.sleep(nxt - now)
        ns = time.time_ns()
        for i, (pid, key) in enumerate(zip(pids, keys, strict=True)):
            for site in ("console", "robot"):
                put(pid, key, site, HB % (pid, site, seq[(pid, site)], ns))
            if tick % 5 == i % 5:
                put(pid, key, "robot", LAT % (pid, "robot", seq[(pid, "robot")], ns, "control",
                                              40.1, 41.2, 39.8, 40.6, 42.0))
                put(pid, key, "console", LAT % (pid, "console", seq[(pid, "console")], ns,
                                                "video", 60.1, 61.2, 59.8, 60.6, 62.0))
            if tick % 50 == i % 50:
                for site in ("console", "robot"):
                    put(pid, key, site, LINK % (pid, site, seq[(pid, site)], ns))
        tick += 1
        nxt += period
        if time.monotonic() - nxt > 0.1:  # more than 5 ticks behind: drop them, say so
            late += 1
            nxt = time.monotonic()
    dt = time.monotonic() - t0
    for pid, key in zip(pids, keys, strict=True):
        put(pid, key, "robot", _end(pid, seq[(pid, "robot")]))
    p.flush(timeout=10)
    p.close(timeout=5)
    print(json.dumps({"procedures": procedures, "records": sent, "seconds": round(dt, 3),
                      "records_per_s": round(sent / dt, 1), "ticks": tick,
                      "nominal_per_s": procedures * RECORDS_PER_PROCEDURE_S,
                      "fell_behind": late}), flush=True)
    return 0


# -- helpers ------------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float | None:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else None


def dist_ms(xs_s: list[float]) -> dict[str, Any]:
    ms = [x * 1e3 for x in xs_s]

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {"n": len(ms), "p50_ms": r(pct(ms, 0.5)), "p90_ms": r(pct(ms, 0.9)),
            "p99_ms": r(pct(ms, 0.99)), "max_ms": r(max(ms) if ms else None),
            "min_ms": r(min(ms) if ms else None)}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_prefix(bootstrap: str) -> str:
    from monitor.broker.topics import ensure_topics

    prefix = f"bm{uuid.uuid4().hex[:8]}."
    ensure_topics(bootstrap, prefix=prefix)
    return prefix


def drop_prefix(bootstrap: str, prefix: str) -> None:
    from monitor.broker.topics import admin_client

    with contextlib.suppress(Exception):
        admin = admin_client(bootstrap)
        try:
            admin.delete_topics(Topics(prefix).all(), raise_errors=False)
        finally:
            admin.close()


class Monitor:
    """One `python -m monitor run` process on its own prefix and group."""

    def __init__(self, bootstrap: str, prefix: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"monitor-{prefix.rstrip('.')}.log"
        cmd = [sys.executable, "-m", "monitor", "run", "--bootstrap", bootstrap,
               "--topic-prefix", prefix, "--http-port", str(self.port),
               "--monitor-id", f"bench-{self.port}", "--group-id", f"{prefix}monitor",
               "--startup-lookback", "1"]
        with open(self.log_path, "wb") as logf:
            # BENCH_MONITOR_ROOT: run another checkout's `monitor` package (before/after A/B)
            root = os.environ.get("BENCH_MONITOR_ROOT", str(ROOT))
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=root,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"monitor exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("monitor not ready after 60 s")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def metrics(self) -> dict[str, float]:
        """Sums of the series we use, by metric name (+ type for commands)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = Counter()
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r'^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$', line)
            if not m:
                continue
            name, labels, val = m.group(1), m.group(2) or "", float(m.group(3))
            if name == "telesafe_commands_sent_total":
                t = re.search(r'type="([a-z_]+)"', labels)
                name = f"{name}:{t.group(1) if t else ''}"
            out[name] += val
        return out

    def detection_buckets(self) -> dict[str, list[tuple[float, float]]]:
        """telesafe_detection_latency_seconds buckets per kind: [(le, cumulative count)]."""
        return self.buckets("telesafe_detection_latency_seconds", "kind")

    def buckets(self, name: str, label: str) -> dict[str, list[tuple[float, float]]]:
        """A histogram's buckets per value of its one label: [(le, cumulative count)]."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, list[tuple[float, float]]] = {}
        for m in re.finditer(rf'^{name}_bucket\{{{label}="([^"]+)",'
                             r'le="([^"]+)"\} ([0-9.eE+-]+)$', text, re.M):
            le = float("inf") if m.group(2) == "+Inf" else float(m.group(2))
            out.setdefault(m.group(1), []).append((le, float(m.group(3))))
        return out

    def cpu_s(self) -> float:
        f = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def status_kb(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def monitor_on_fresh_topics(bootstrap: str, workdir: Path) -> Iterator[tuple[Monitor, str]]:
    prefix = make_prefix(bootstrap)
    mon = None
    try:
        mon = Monitor(bootstrap, prefix, workdir)
        yield mon, prefix
    finally:
        if mon is not None:
            mon.stop()
        drop_prefix(bootstrap, prefix)


def start_loadgen(bootstrap: str, prefix: str, procedures: int, seconds: float
                  ) -> list[subprocess.Popen[str]]:
    """One generator process per 250 procedures (one Python producer tops out near that)."""
    procs = []
    n_proc = max(1, -(-procedures // 250))
    for k in range(n_proc):
        share = procedures // n_proc + (1 if k < procedures % n_proc else 0)
        if share == 0:
            continue
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--loadgen", "--bootstrap", bootstrap, "--prefix", prefix,
             "--procedures", str(share), "--seconds", str(seconds),
             "--tag", f"{uuid.uuid4().hex[:4]}{k}"],
            stdout=subprocess.PIPE, text=True, cwd=ROOT))
    return procs


def finish_loadgen(procs: list[subprocess.Popen[str]], timeout: float) -> dict[str, Any]:
    reports = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
            reports.append(json.loads(out.strip().splitlines()[-1]))
        except Exception as exc:
            p.kill()
            p.wait()
            reports.append({"error": repr(exc)})
    ok = [r for r in reports if "records" in r]
    return {"processes": reports,
            "records_per_s": round(sum(r["records_per_s"] for r in ok), 1),
            "nominal_per_s": sum(r["nominal_per_s"] for r in ok)}


class Sampler(threading.Thread):
    """Scrapes the monitor once a second while a step runs (as Prometheus would, faster)."""

    def __init__(self, mon: Monitor) -> None:
        super().__init__(daemon=True)
        self.mon = mon
        self.samples: list[tuple[float, dict[str, float], float]] = []
        self._stop_ev = threading.Event()

    def run(self) -> None:
        while not self._stop_ev.is_set():
            with contextlib.suppress(Exception):
                self.samples.append((time.perf_counter(), self.mon.metrics(), self.mon.cpu_s()))
            self._stop_ev.wait(1.0)  # /metrics is large at 200 procedures: scrape gently

    def stop(self) -> None:
        self._stop_ev.set()
        self.join(timeout=5)

    def window(self, t_from: float, t_to: float) -> dict[str, Any]:
        w = [s for s in self.samples if t_from <= s[0] <= t_to]
        if len(w) < 2:
            return {}
        (ta, ma, ca), (tb, mb, cb) = w[0], w[-1]
        dt = tb - ta
        lags = [m["telesafe_consumer_lag_seconds"] for _, m, _ in w]
        lag_rec = [m["telesafe_consumer_lag_records"] for _, m, _ in w]
        key_hb = "telesafe_commands_sent_total:monitor_heartbeat"
        return {
            "seconds": round(dt, 2),
            "received_per_s": round((mb["telesafe_records_received_total"]
                                     - ma["telesafe_records_received_total"]) / dt, 1),
            "lag_s": {"p50": pct(lags, 0.5), "p99": pct(lags, 0.99), "max": max(lags)},
            "lag_records_max": max(lag_rec),
            "monitor_heartbeats_per_s": round((mb[key_hb] - ma[key_hb]) / dt, 1),
            "cpu_cores": round((cb - ca) / dt, 3),
            "procedures_active_max": max(m["telesafe_procedures_active"] for _, m, _ in w),
        }


# -- the precise site emulator for detection trials ------------------------------------------


class Emulator:
    """Both sites of many short trial procedures; heartbeats at 50 Hz from one thread."""

    def __init__(self, bootstrap: str, prefix: str, tag: str) -> None:
        self.topics = Topics(prefix)
        self.tag = tag
        self.producer = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=0, acks="all",
                                      client_id=f"bench-sites-{tag}", retry_backoff_ms=20)
        self.lock = threading.Lock()
        self.seq: dict[tuple[str, str], int] = {}
        self.running: dict[str, set[str]] = {}  # pid -> sites with heartbeats on
        self.last_hb: dict[tuple[str, str], float] = {}
        self.max_gap: dict[str, float] = {}  # pid -> longest unplanned robot hb gap (sender)
        self.stops: dict[str, float] = {}  # pid -> arrival of first safe_stop
        self.stop_rule: dict[str, str] = {}
        self.command_ids: dict[str, str] = {}
        self._stop_ev = threading.Event()
        c = KafkaConsumer(bootstrap_servers=[bootstrap], fetch_max_wait_ms=5,
                          client_id=f"bench-watch-{tag}")
        tps = [TopicPartition(self.topics.commands, p)
               for p in sorted(c.partitions_for_topic(self.topics.commands) or [])]
        c.assign(tps)
        c.seek_to_end(*tps)
        for tp in tps:
            c.position(tp)
        self.consumer = c
        self.threads = [threading.Thread(target=self._hb_loop, daemon=True),
                        threading.Thread(target=self._watch, daemon=True)]
        for th in self.threads:
            th.start()

    def send(self, pid: str, site: str, value: str) -> None:
        topic = self.topics.telemetry_console if site == "console" else \
            self.topics.telemetry_robot
        self.producer.send(topic, key=pid.encode(), value=value.encode())

    def next_seq(self, pid: str, site: str) -> int:
        k = (pid, site)
        s = self.seq.get(k, 0)
        self.seq[k] = s + 1
        return s

    def _hb_loop(self) -> None:
        nxt = time.perf_counter()
        while not self._stop_ev.is_set():
            with self.lock:
                ns = time.time_ns()
                for pid, sites in self.running.items():
                    for site in sites:
                        now = time.perf_counter()
                        last = self.last_hb.get((pid, site))
                        if site == "robot" and last is not None:
                            self.max_gap[pid] = max(self.max_gap.get(pid, 0.0), now - last)
                        self.send(pid, site, HB % (pid, site, self.next_seq(pid, site), ns))
                        self.last_hb[(pid, site)] = now
            nxt += 0.020
            d = nxt - time.perf_counter()
            if d < 0:
                nxt = time.perf_counter()
                d = 0
            self._stop_ev.wait(d)

    def _watch(self) -> None:
        while not self._stop_ev.is_set():
            for recs in self.consumer.poll(timeout_ms=20).values():
                now = time.perf_counter()
                for r in recs:
                    if b'"safe_stop"' not in (r.value or b""):
                        continue
                    pid = r.key.decode() if r.key else ""
                    if pid not in self.stops:
                        v = json.loads(r.value)
                        self.stops[pid] = now
                        self.stop_rule[pid] = v["policy"]["rule"]
                        self.command_ids[pid] = v["command_id"]

    def begin(self, pid: str) -> None:
        with self.lock:
            self.send(pid, "robot", _start(pid, self.next_seq(pid, "robot")))
            self.running[pid] = {"console", "robot"}

    def silence(self, pid: str) -> float:
        with self.lock:
            self.running[pid].discard("robot")
            return self.last_hb[(pid, "robot")]

    def breach(self, pid: str) -> float:
        with self.lock:
            ns = time.time_ns()
            samples = [{"t": ns - (9 - k) * 1_000_000, "p": [0.0, 0.0, -100.0 + 12.0 * k]}
                       for k in range(10)]  # last samples above z = -20 mm: outside the box
            rec = {"v": 1, "type": "kinematics", "procedure_id": pid, "site": "robot",
                   "seq": self.next_seq(pid, "robot"), "sent_at": ns, "arm": "psm1",
                   "samples": samples}
            t = time.perf_counter()
            self.send(pid, "robot", json.dumps(rec))
            return t

    def finish(self, pid: str) -> None:
        with self.lock:
            self.running.pop(pid, None)
            cid = self.command_ids.get(pid)
            if cid:
                self.send(pid, "robot", json.dumps(
                    {"v": 1, "type": "safe_stop_ack", "procedure_id": pid, "site": "robot",
                     "seq": self.next_seq(pid, "robot"), "sent_at": time.time_ns(),
                     "command_id": cid, "result": "safe_stopped", "at": time.time_ns()}))
            self.send(pid, "robot", _end(pid, self.next_seq(pid, "robot")))

    def close(self) -> None:
        self._stop_ev.set()
        for th in self.threads:
            th.join(timeout=3)
        self.producer.close(timeout=5)
        self.consumer.close()


def run_trials(bootstrap: str, prefix: str, n: int, every_s: float = 0.05,
               warm_s: float = 0.6, timeout_s: float = 3.0) -> dict[str, Any]:
    """n trials alternating silence/breach, a new one every `every_s`, overlapping."""
    tag = uuid.uuid4().hex[:6]
    em = Emulator(bootstrap, prefix, tag)
    pending: list[tuple[float, str, str]] = []  # (due, action, pid)
    t0 = time.perf_counter() + 0.2
    for i in range(n):
        pid = f"TRIAL-{tag}-{i:04d}"
        kind = "silence" if i % 2 == 0 else "breach"
        start = t0 + i * every_s
        pending += [(start, "begin", pid), (start + warm_s, kind, pid)]
    pending.sort()
    fault_at: dict[str, tuple[str, float]] = {}
    open_trials: dict[str, float] = {}
    idx = 0
    try:
        while idx < len(pending) or open_trials:
            now = time.perf_counter()
            while idx < len(pending) and pending[idx][0] <= now:
                _, action, pid = pending[idx]
                idx += 1
                if action == "begin":
                    em.begin(pid)
                elif action == "silence":
                    fault_at[pid] = ("silence", em.silence(pid))
                    open_trials[pid] = now
                else:
                    fault_at[pid] = ("breach", em.breach(pid))
                    open_trials[pid] = now
            for pid, since in list(open_trials.items()):
                if pid in em.stops or now - since > timeout_s:
                    em.finish(pid)
                    del open_trials[pid]
            time.sleep(0.002)
        time.sleep(0.3)
    finally:
        em.close()
    out: dict[str, Any] = {}
    for kind in ("silence", "breach"):
        vals, early, missed, wrong = [], 0, 0, Counter()
        for pid, (k, t) in fault_at.items():
            if k != kind:
                continue
            arr = em.stops.get(pid)
            if arr is None:
                missed += 1
                continue
            rule = em.stop_rule[pid]
            if (kind == "silence") != (rule == "heartbeat_silence"):
                wrong[rule] += 1
                continue
            v = arr - t - (SILENCE_LIMIT_S if kind == "silence" else 0.0)
            if arr < t:
                early += 1
            vals.append(v)
        d = dist_ms(vals)
        d.update({"missed": missed, "other_rule": dict(wrong), "stop_before_fault": early})
        out[kind] = d
    gaps = [g for g in em.max_gap.values()]
    out["emulator_max_robot_hb_gap_ms"] = round(max(gaps) * 1e3, 1) if gaps else None
    out["samples_s"] = {k: [round(em.stops[p] - t - (SILENCE_LIMIT_S if kk == "silence" else 0),
                              5) for p, (kk, t) in fault_at.items() if kk == k and p in em.stops]
                        for k in ("silence", "breach")}
    return out


# -- the measurements ---------------------------------------------------------------------


def load_step(bootstrap: str, workdir: Path, procedures: int, seconds: float,
              trials: int = 0, profile_s: float = 0.0) -> dict[str, Any]:
    with monitor_on_fresh_topics(bootstrap, workdir) as (mon, prefix):
        sampler = Sampler(mon)
        sampler.start()
        gens = start_loadgen(bootstrap, prefix, procedures, seconds) if procedures else []
        t_start = time.perf_counter()
        res: dict[str, Any] = {"procedures": procedures,
                               "nominal_records_per_s": procedures * RECORDS_PER_PROCEDURE_S}
        if trials:
            time.sleep(min(3.0, seconds / 4))
            # The transport floor under the same load, right now (partition 0 of the
            # dead-letter topic, which this monitor does not read).
            from bench_transport import one_hop, summary_ms

            res["one_hop_now"] = summary_ms(one_hop(bootstrap, Topics(prefix).deadletter,
                                                    300, 0.002))
            before = mon.detection_buckets()
            res["detection"] = run_trials(bootstrap, prefix, trials)
            res["detection"]["monitor_internal"] = internal_share(before,
                                                                  mon.detection_buckets())
        if profile_s and shutil.which("py-spy", path=str(Path(sys.executable).parent)):
            res["profile"] = pyspy(mon.pid, profile_s, workdir, f"load{procedures}")
        remaining = t_start + seconds - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)
        t_end = time.perf_counter()
        if gens:
            res["offered"] = finish_loadgen(gens, timeout=30)
        sampler.stop()
        # steady state: skip the first 2 s (join, procedures opening) and the tail
        res["monitor"] = sampler.window(t_start + 2.0, t_end)
        res["monitor"]["gc_pauses"] = gc_pauses(mon.buckets("telesafe_gc_pause_seconds",
                                                            "generation"))
        res["monitor"]["vm_hwm_mb"] = round(mon.status_kb("VmHWM") / 1024, 1)
        res["monitor"]["vm_rss_mb"] = round(mon.status_kb("VmRSS") / 1024, 1)
        res["load_average"] = os.getloadavg()
        return res


def internal_share(before: dict[str, list[tuple[float, float]]],
                   after: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    """The monitor's own part of detection, from its histogram over the trials: breach
    (record receipt, or a timer's deadline) to the safe-stop handed to the producer.
    Quantiles are bucket upper bounds (le), so they over-state, never under-state."""
    out: dict[str, Any] = {}
    kinds = {"record": "breach", "deadline": "silence"}
    for kind, label in kinds.items():
        old = dict(before.get(kind, []))
        rows = [(le, n - old.get(le, 0.0)) for le, n in after.get(kind, [])]
        total = rows[-1][1] if rows else 0.0
        if not total:
            continue

        def q(p: float, rows: list[tuple[float, float]] = rows, total: float = total) -> Any:
            le = next(le for le, n in rows if n >= p * total)
            return None if le == float("inf") else round(le * 1e3, 3)

        out[label] = {"n": int(total), "p50_le_ms": q(0.5), "p99_le_ms": q(0.99),
                      "max_le_ms": q(1.0)}
    return out


def gc_pauses(buckets: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    """Collector pauses over the monitor's life, per generation: count and the bucket
    bound (le) holding the longest; the GIL is held throughout each one."""
    out: dict[str, Any] = {}
    for gen, rows in sorted(buckets.items()):
        total = rows[-1][1] if rows else 0.0
        longest = next((le for le, n in rows if n >= total), None) if total else None
        over_10 = total - next((n for le, n in rows if le >= 0.010), total)
        out[gen] = {"n": int(total), "max_le_ms": None if longest in (None, float("inf"))
                    else round(longest * 1e3, 1), "over_10ms": int(over_10)}
    return out


def pyspy(pid: int, seconds: float, workdir: Path, name: str) -> dict[str, Any]:
    """Sample the monitor with py-spy (raw collapsed stacks); shares by function."""
    exe = str(Path(sys.executable).parent / "py-spy")
    raw = workdir / f"pyspy-{name}.txt"
    svg = RESULTS / f"profile-{name}.svg"
    try:
        subprocess.run([exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200",
                        "--nonblocking", "-f", "raw", "-o", str(raw)],
                       capture_output=True, timeout=seconds + 30, check=True)
        subprocess.run([exe, "record", "-p", str(pid), "-d", "3", "-r", "100",
                        "--nonblocking", "-f", "flamegraph", "-o", str(svg)],
                       capture_output=True, timeout=40, check=False)
    except Exception as exc:
        return {"error": repr(exc)}
    total = 0
    by: Counter[str] = Counter()
    marks = {
        "monitor heartbeats (_send_heartbeats)": "_send_heartbeats",
        "decode (ingest _handle)": "_handle (monitor/service/ingest.py",
        "engine on_telemetry": "on_telemetry",
        "engine tick/timers": "tick (monitor/engine/engine.py",
        "consumer poll (kafka-python)": "poll (kafka/consumer/group.py",
        "producer IO thread (kafka-python sender)": "run (kafka/producer/sender.py",
        "metrics gauges (_refresh_gauges)": "_refresh_gauges",
        "http /metrics": "monitor/service/http.py",
        "publisher.command (serialise + send)": "command (monitor/service/publisher.py",
    }
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        c = int(n)
        total += c
        for label, m in marks.items():
            if m in stack:
                by[label] += c
    return {"samples": total, "share": {k: round(v / total, 3) for k, v in by.most_common()}
            if total else {}, "flamegraph": svg.name if svg.exists() else None,
            "note": "share of sampled active-thread time (all threads; GIL waits excluded)"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--quick", action="store_true", help="shorter steps, fewer trials")
    ap.add_argument("--only", default="throughput,detection,scaling")
    ap.add_argument("--throughput-steps", default="25,50,75,100,150,200,300")
    ap.add_argument("--scaling-steps", default="1,10,50,200")
    ap.add_argument("--loaded-procedures", type=int, default=60,
                    help="load for the loaded detection step when this run did not measure "
                         "the throughput knee (otherwise the knee's procedures are used)")
    ap.add_argument("--trials", type=int, default=400,
                    help="detection trials per condition, half silence and half breach")
    ap.add_argument("--profile-seconds", type=float, default=8.0)
    ap.add_argument("--out", default=str(RESULTS / "monitor.json"))
    # the generator process
    ap.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    ap.add_argument("--procedures", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="x", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.loadgen:
        return loadgen(args.bootstrap, args.prefix, args.procedures, args.seconds, args.tag)

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_transport import host_info

    only = set(args.only.split(","))
    step_s = 10.0 if args.quick else 16.0
    trials = 100 if args.quick else args.trials
    workdir = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    out = Path(args.out)
    res: dict[str, Any] = {}
    if out.exists():  # keep the parts this run does not redo
        with contextlib.suppress(ValueError):
            res = json.loads(out.read_text())
    res.update({"benchmark": "monitor", "host": host_info(),
                "load_per_procedure": {"heartbeat_hz_per_site": 50, "latency_hz": 20,
                                       "link_hz_per_site": 1, "kinematics": "none",
                                       "records_per_s": RECORDS_PER_PROCEDURE_S}})
    try:
        if "throughput" in only:
            steps = []
            for n in [int(x) for x in args.throughput_steps.split(",")]:
                st = load_step(args.bootstrap, workdir, n, step_s)
                steps.append(st)
                m = st["monitor"]
                print(f"throughput {n:4d} procs: offered {st['offered']['records_per_s']:>8,.0f}"
                      f"/s received {m.get('received_per_s', 0):>8,.0f}/s lag p99 "
                      f"{m.get('lag_s', {}).get('p99')} s cpu {m.get('cpu_cores')}", flush=True)
            res["throughput"] = {"steps": steps, "knee": knee(steps)}
        if "detection" in only:
            det = {}
            # "Under the load of (2)": the highest load this monitor kept up with, if measured.
            knee_procs = res.get("throughput", {}).get("knee", {}).get("procedures") \
                if "throughput" in only else None
            loaded = knee_procs or args.loaded_procedures
            for cond, n in (("idle", 0), ("loaded", loaded)):
                st = load_step(args.bootstrap, workdir, n, 8.0 + trials * 0.05 + 4,
                               trials=trials)
                det[cond] = st
                d = st["detection"]
                print(f"detection {cond}: one hop now {st['one_hop_now']} breach "
                      f"{d['breach']} silence {d['silence']} monitor's own part "
                      f"{d['monitor_internal']}", flush=True)
            res["detection"] = det
        if "scaling" in only:
            sc = []
            steps = [int(x) for x in args.scaling_steps.split(",")]
            for n in steps:
                st = load_step(args.bootstrap, workdir, n, step_s + 6, trials=trials // 4,
                               profile_s=args.profile_seconds if n == steps[-1] else 0.0)
                sc.append(st)
                m, d = st["monitor"], st["detection"]
                print(f"scaling {n:4d}: recv {m.get('received_per_s')}/s hwm {m['vm_hwm_mb']} MB"
                      f" cpu {m.get('cpu_cores')} hb/s {m.get('monitor_heartbeats_per_s')} "
                      f"gc {m.get('gc_pauses')} "
                      f"breach p99 {d['breach']['p99_ms']} silence p99 {d['silence']['p99_ms']}"
                      f" {st.get('profile', {}).get('share', '')}", flush=True)
            res["scaling"] = sc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    res["host"]["load_average_after"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def knee(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Highest step the monitor follows: received >= 95 % of offered, lag p99 < 100 ms."""
    best = None
    for st in steps:
        m = st["monitor"]
        offered = st.get("offered", {}).get("records_per_s", 0)
        lag = (m.get("lag_s") or {}).get("p99")
        if offered and lag is not None and m.get("received_per_s", 0) >= 0.95 * offered \
                and lag < 0.1:
            best = {"procedures": st["procedures"], "records_per_s": m["received_per_s"],
                    "lag_p99_s": lag}
    return best or {}


if __name__ == "__main__":
    raise SystemExit(main())
