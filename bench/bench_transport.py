"""Transport floor: what raw kafka-python on the local broker can do, with no telesafe code.

    .venv/bin/python bench/bench_transport.py [--bootstrap 127.0.0.1:9092] [--hops 2000]
        [--records 500000] [--repeats 3]

1. one-hop latency: a producer (linger_ms=0, acks=all, the monitor's settings) sends one
   ~250-byte ICD-shaped record at a time; a consumer (fetch_max_wait_ms=5, assigned, at the
   end) in another thread stamps its arrival. Both stamps are `time.perf_counter()` of this
   process. p50/p99/max of (arrival - send()).
2. raw consumer throughput: `--records` ICD-sized records are pre-produced (batched) on a
   6-partition topic, then a fresh consumer (the monitor's fetch settings) reads them from
   the beginning, deserialising nothing. records/s per repeat.

Writes bench/results/transport.json. Figures are noisy on a shared machine: each run
reports every repeat; compare ratios measured in the same run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from monitor.kafka.settings import KafkaSettings

RESULTS = Path(__file__).parent / "results"


def icd_record(i: int, pid: str = "BENCH-0001") -> bytes:
    """A heartbeat as a site sends it (~250 bytes with padding to the ICD average)."""
    rec = {
        "v": 1, "type": "heartbeat", "procedure_id": pid, "site": "robot", "seq": i,
        "sent_at": time.time_ns(), "state": "operating",
        "clock": {"source": "ptp", "offset_ns": 0, "max_error_ns": 100000},
        "x_pad": "p" * 60,
    }
    return json.dumps(rec).encode()


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, int(q * len(s)))]


def summary_ms(xs_s: list[float]) -> dict[str, float]:
    ms = [x * 1e3 for x in xs_s]
    return {"n": len(ms), "p50_ms": round(pct(ms, 0.50), 3), "p90_ms": round(pct(ms, 0.90), 3),
            "p99_ms": round(pct(ms, 0.99), 3), "max_ms": round(max(ms), 3) if ms else None,
            "mean_ms": round(statistics.fmean(ms), 3) if ms else None}


def make_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap], client_id="bench-admin")
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    deadline = time.monotonic() + 20
    c = KafkaConsumer(bootstrap_servers=[bootstrap])
    try:
        while time.monotonic() < deadline:
            if len(c.partitions_for_topic(name) or ()) == partitions:
                return
            time.sleep(0.1)
    finally:
        c.close()


def delete_topics(bootstrap: str, names: list[str]) -> None:
    try:
        admin = KafkaAdminClient(bootstrap_servers=[bootstrap], client_id="bench-admin")
        try:
            admin.delete_topics(names)
        finally:
            admin.close()
    except Exception as exc:  # best effort
        print(f"(could not delete {names}: {exc})", file=sys.stderr)


def one_hop(bootstrap: str, topic: str, hops: int, interval_s: float) -> list[float]:
    """(arrival - send) in seconds for `hops` records sent one at a time."""
    s = KafkaSettings(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(**s.consumer_config(client_id="bench-hop-c"))
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_end(tp)
    consumer.position(tp)
    producer = KafkaProducer(**s.producer_config(client_id="bench-hop-p"))
    sent: dict[int, float] = {}
    lat: list[float] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            for recs in consumer.poll(timeout_ms=50).values():
                now = time.perf_counter()
                for r in recs:
                    i = int.from_bytes(r.key, "big")
                    if i in sent:
                        lat.append(now - sent[i])

    th = threading.Thread(target=consume, daemon=True)
    th.start()
    payload = icd_record(0)
    # warm-up: connections and metadata
    for _ in range(20):
        producer.send(topic, key=(1 << 62).to_bytes(8, "big"), value=payload, partition=0)
    producer.flush()
    time.sleep(0.5)
    for i in range(hops):
        sent[i] = time.perf_counter()
        producer.send(topic, key=i.to_bytes(8, "big"), value=payload, partition=0)
        time.sleep(interval_s)
    deadline = time.monotonic() + 5
    while len(lat) < hops and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    th.join(timeout=2)
    producer.close()
    consumer.close()
    return lat


def preproduce(bootstrap: str, topic: str, n: int, partitions: int) -> float:
    """Batched produce of n ICD-sized records; returns records/s of the producer."""
    producer = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=20, batch_size=512 * 1024,
                             acks=1, client_id="bench-fill")
    payloads = [icd_record(i, f"BENCH-{i % 200:04d}") for i in range(1000)]
    t0 = time.perf_counter()
    for i in range(n):
        producer.send(topic, value=payloads[i % 1000], partition=i % partitions)
    producer.flush()
    dt = time.perf_counter() - t0
    producer.close()
    return n / dt


def raw_consume(bootstrap: str, topics: list[str], expected: int, timeout_s: float = 120.0
                ) -> dict[str, float]:
    """A fresh consumer reads `topics` from the beginning; nothing is deserialised."""
    s = KafkaSettings(bootstrap_servers=bootstrap)
    c = KafkaConsumer(**s.consumer_config(client_id=f"bench-raw-{uuid.uuid4().hex[:6]}"))
    tps = [TopicPartition(t, p) for t in topics for p in sorted(c.partitions_for_topic(t) or [])]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got = 0
    t_first = None
    t0 = time.perf_counter()
    deadline = t0 + timeout_s
    while got < expected and time.perf_counter() < deadline:
        polled = c.poll(timeout_ms=200)
        if polled and t_first is None:
            t_first = time.perf_counter()
        for recs in polled.values():
            got += len(recs)
    t1 = time.perf_counter()
    c.close()
    start = t_first or t0
    return {"records": got, "seconds": round(t1 - start, 3),
            "records_per_s": round(got / max(1e-9, t1 - start), 1),
            "incl_first_fetch_s": round(t1 - t0, 3)}


def host_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import kafka
    return {"python": platform.python_version(), "kafka_python": kafka.__version__,
            "cpu_model": model, "cpus": os.cpu_count(), "load_average": os.getloadavg()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--hops", type=int, default=2000)
    ap.add_argument("--hop-interval-ms", type=float, default=2.0)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "transport.json"))
    args = ap.parse_args()

    tag = uuid.uuid4().hex[:8]
    hop_topic, bulk_topic = f"bench{tag}.hop", f"bench{tag}.bulk"
    res: dict[str, Any] = {"benchmark": "transport", "host": host_info(),
                           "settings": {"linger_ms": 0, "acks": "all", "fetch_max_wait_ms": 5,
                                        "record_bytes": len(icd_record(0))}}
    try:
        make_topic(args.bootstrap, hop_topic, 1)
        make_topic(args.bootstrap, bulk_topic, 6)
        hop_runs = []
        for r in range(args.repeats):
            lat = one_hop(args.bootstrap, hop_topic, args.hops, args.hop_interval_ms / 1e3)
            hop_runs.append(summary_ms(lat))
            print(f"one hop run {r + 1}: {hop_runs[-1]}", flush=True)
        res["one_hop"] = {"runs": hop_runs,
                          "p50_ms_median": statistics.median(h["p50_ms"] for h in hop_runs),
                          "p99_ms_median": statistics.median(h["p99_ms"] for h in hop_runs)}
        prate = preproduce(args.bootstrap, bulk_topic, args.records, 6)
        print(f"pre-produced {args.records} records at {prate:,.0f}/s (batched, acks=1)",
              flush=True)
        raws = []
        for r in range(args.repeats):
            raws.append(raw_consume(args.bootstrap, [bulk_topic], args.records))
            print(f"raw consumer run {r + 1}: {raws[-1]}", flush=True)
        rates = [x["records_per_s"] for x in raws]
        res["raw_consumer"] = {"records": args.records, "runs": raws,
                               "records_per_s_median": statistics.median(rates),
                               "records_per_s_min": min(rates),
                               "records_per_s_max": max(rates),
                               "producer_batched_records_per_s": round(prate, 1)}
    finally:
        delete_topics(args.bootstrap, [hop_topic, bulk_topic])
    res["host"]["load_average_after"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"one hop p50 {res['one_hop']['p50_ms_median']} ms, "
          f"p99 {res['one_hop']['p99_ms_median']} ms (median of {args.repeats}); "
          f"raw consumer {res['raw_consumer']['records_per_s_median']:,.0f} records/s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
