"""A precise ICD site driver for integration tests: both sites of ONE procedure, exactly.

`SiteDriver` sends what a test tells it to, with the right per-(procedure, site) `seq`
and `sent_at = time.time_ns()`, keyed by the procedure id, through a KafkaProducer with
`linger_ms=0`. A background thread keeps the heartbeats of both sites going at 50 Hz;
the test can pause, resume, delay or falsify them. Unlike the simulator, nothing here
is random: a latency sample of 300.0 ms is exactly 300.0 on the wire.

Not a test module itself; test files import it (`from tests.integration.sitekit import ...`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from monitor.icd.topics import Topics

log = logging.getLogger("telesafe.tests.sitekit")

SITES = ("console", "robot")
HEARTBEAT_PERIOD_S = 0.020  # ICD §3.2: nominally every 20 ms


def make_producer(bootstrap: str) -> KafkaProducer:
    """A producer like a site's: no batching delay, acks=all."""
    return KafkaProducer(
        bootstrap_servers=[bootstrap],
        linger_ms=0,
        acks="all",
        client_id="itest-sitekit",
        retry_backoff_ms=20,
    )


class SiteDriver:
    """Both sites of one procedure.

    Heartbeats are OFF until `start()` (both sites) or `resume(site)`; so a test can send
    `procedure_start` first, or hold back one site's first heartbeat.
    """

    def __init__(
        self, bootstrap: str, prefix: str, procedure_id: str, producer: KafkaProducer | None = None
    ) -> None:
        self.procedure_id = procedure_id
        self.topics = Topics(prefix)
        self._own_producer = producer is None
        self.producer = producer if producer is not None else make_producer(bootstrap)
        self._lock = threading.RLock()  # one lock: seq assignment and send() stay in order
        self._seq = dict.fromkeys(SITES, 0)
        self._running = dict.fromkeys(SITES, False)
        self._skew_ns = dict.fromkeys(SITES, 0)  # added to sent_at of automatic heartbeats
        self._offset_ns = dict.fromkeys(SITES, 0)  # their clock.offset_ns
        self.last_hb_sent = dict.fromkeys(SITES, 0.0)  # time.time() of the last heartbeat
        self.last_hb: dict[str, dict[str, Any]] = {s: {} for s in SITES}  # last one sent
        self.hb_count = dict.fromkeys(SITES, 0)
        self.started_at = 0.0  # time.time() just before procedure_start was sent
        # Environment evidence: the longest gap between two heartbeats of a site that the
        # test did NOT ask for (the sending thread starved), and the sites the test silenced,
        # delayed or falsified, with the longest gap it asked for.
        self.unplanned_gap_s = dict.fromkeys(SITES, 0.0)
        self.touched: set[str] = set()
        self.planned_gap_s = dict.fromkeys(SITES, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"sitekit-{procedure_id}", daemon=True
        )
        self._thread.start()

    # -- low level -----------------------------------------------------------------------

    def _topic(self, site: str) -> str:
        return self.topics.telemetry_console if site == "console" else self.topics.telemetry_robot

    def send_raw(self, site: str, value: dict[str, Any] | bytes) -> None:
        """Send a value as is (no seq bookkeeping) on `site`'s telemetry topic."""
        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        with self._lock:
            self.producer.send(self._topic(site), key=self.procedure_id.encode(), value=data)

    def send(
        self, site: str, rtype: str, sent_at: int | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Send one §3 record with the site's next seq; returns the record sent."""
        assert site in SITES, site
        with self._lock:
            rec = {
                "v": 1,
                "type": rtype,
                "procedure_id": self.procedure_id,
                "site": site,
                "seq": self._seq[site],
                "sent_at": time.time_ns() if sent_at is None else sent_at,
                **fields,
            }
            self._seq[site] += 1
            self.send_raw(site, rec)
        return rec

    def flush(self, timeout: float = 5.0) -> None:
        self.producer.flush(timeout=timeout)

    def seq(self, site: str) -> int:
        """The seq the site's next record will carry."""
        with self._lock:
            return self._seq[site]

    # -- heartbeats ----------------------------------------------------------------------

    def heartbeat(
        self,
        site: str,
        sent_at: int | None = None,
        offset_ns: int | None = None,
        state: str = "operating",
        planned: bool = False,
    ) -> dict[str, Any]:
        """One heartbeat now (sent_at and offset_ns default to the site's skew settings).

        `planned`: this heartbeat ends a gap the test made on purpose (not a starvation).
        """
        with self._lock:
            now = time.time()
            last = self.last_hb_sent[site]
            if last and not planned and self._running[site]:
                self.unplanned_gap_s[site] = max(self.unplanned_gap_s[site], now - last)
            if sent_at is None:
                sent_at = time.time_ns() + self._skew_ns[site]
            if offset_ns is None:
                offset_ns = self._offset_ns[site]
            rec = self.send(
                site,
                "heartbeat",
                sent_at=sent_at,
                state=state,
                clock={"source": "ptp", "offset_ns": offset_ns, "max_error_ns": 100_000},
            )
            self.last_hb_sent[site] = time.time()
            self.last_hb[site] = rec
            self.hb_count[site] += 1
        return rec

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                for site in SITES:
                    if self._running[site]:
                        self.heartbeat(site)
            next_t += HEARTBEAT_PERIOD_S
            delay = next_t - time.monotonic()
            if delay < 0:  # late (loaded machine): send the next one now, keep the cadence
                next_t = time.monotonic()
                delay = 0.0
            self._stop.wait(delay)

    def start(self, *sites: str) -> None:
        """Start the 50 Hz heartbeats (of both sites by default), the first one right now."""
        for site in sites or SITES:
            self.resume(site)

    def resume(self, site: str) -> float:
        """Resume a site's heartbeats with one sent at once; returns its time.time()."""
        with self._lock:
            self.heartbeat(site, planned=True)
            self._running[site] = True
            return self.last_hb_sent[site]

    def pause(self, site: str) -> float:
        """Stop a site's heartbeats; returns time.time() of the last one sent."""
        with self._lock:
            self._running[site] = False
            self.touched.add(site)
            return self.last_hb_sent[site]

    def gap(self, site: str, seconds: float) -> tuple[float, float]:
        """Exactly `seconds` between two of the site's heartbeats (sender side); blocks.

        Returns (time of the last heartbeat before the gap, time of the first after it).
        """
        with self._lock:
            last = self.pause(site)
            self.planned_gap_s[site] = max(self.planned_gap_s[site], seconds)
            last_mono = time.monotonic() - (time.time() - last)
        delay = last_mono + seconds - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return last, self.resume(site)

    def skew(self, site: str, ns: int, offset_ns: int = 0) -> None:
        """From now on the site's heartbeats carry sent_at = time_ns() + ns and report
        clock.offset_ns = offset_ns (ns=-2e9 alone: 2 s stale; with offset_ns=-2e9: a site
        clock 2 s behind UTC that says so)."""
        with self._lock:
            self.touched.add(site)
            self._skew_ns[site] = ns
            self._offset_ns[site] = offset_ns

    # -- other records -------------------------------------------------------------------

    def procedure_start(
        self,
        site: str = "robot",
        policy: str | None = None,
        arms: Sequence[str] = ("psm1", "psm2", "psm3", "ecm"),
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "surgeon_id": "surgeon-itest",
            "robot": {"model": "Toumai", "serial": "TM-ITEST"},
            "arms": list(arms),
        }
        if policy is not None:
            fields["policy"] = policy
        self.started_at = time.time()
        return self.send(site, "procedure_start", **fields)

    def procedure_end(self, site: str = "robot", reason: str = "completed") -> dict[str, Any]:
        return self.send(site, "procedure_end", reason=reason)

    def latency(self, channel: str, samples_ms: Iterable[float]) -> dict[str, Any]:
        """ICD §3.3: the robot reports `control`, the console reports `video`."""
        site = "robot" if channel == "control" else "console"
        return self.send(
            site, "latency", channel=channel, samples_ms=[float(s) for s in samples_ms]
        )

    def link(
        self,
        site: str,
        *,
        rtt_ms: float = 96.0,
        jitter_ms: float = 1.0,
        loss_ratio: float = 0.0,
        window_ms: float = 1000.0,
    ) -> dict[str, Any]:
        return self.send(
            site,
            "link",
            rtt_ms=float(rtt_ms),
            jitter_ms=float(jitter_ms),
            loss_ratio=float(loss_ratio),
            window_ms=float(window_ms),
        )

    def kinematics(self, arm: str, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Samples as given: {"t": ns, "p": [x, y, z]} plus optional "v" and "f"."""
        return self.send("robot", "kinematics", arm=arm, samples=list(samples))

    def tip(
        self,
        arm: str,
        p: Sequence[float],
        v: Sequence[float] | None = (0.0, 0.0, 0.0),
        f: float | None = None,
        t: int | None = None,
    ) -> dict[str, Any]:
        """One kinematics record of one sample (v=None: leave velocity out)."""
        s: dict[str, Any] = {"t": time.time_ns() if t is None else t, "p": [float(x) for x in p]}
        if v is not None:
            s["v"] = [float(x) for x in v]
        if f is not None:
            s["f"] = float(f)
        return self.kinematics(arm, [s])

    def rearm_request(
        self,
        operator_id: str,
        command_id: str,
        reason: str = "itest: sites checked",
        raw: bytes | None = None,
    ) -> bytes:
        """ICD 1.1 §5.1 on the operator topic (not a site record; keyed the same way),
        naming the latch it clears; `raw`: send exactly these bytes again (a replay).
        Returns the bytes sent."""
        if raw is None:
            req = {
                "v": 1,
                "type": "rearm_request",
                "procedure_id": self.procedure_id,
                "operator_id": operator_id,
                "reason": reason,
                "requested_at": time.time_ns(),
                "command_id": command_id,
                "request_id": str(uuid.uuid4()),
            }
            raw = json.dumps(req).encode()
        with self._lock:
            self.producer.send(self.topics.operator, key=self.procedure_id.encode(), value=raw)
        return raw

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.flush()
        except KafkaTimeoutError:  # e.g. leaders moving after a broker restart: best effort
            log.warning("site driver %s: records still unsent at close", self.procedure_id)
        if self._own_producer:
            self.producer.close(timeout=5)

    def __enter__(self) -> SiteDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Observer:
    """Everything the monitor publishes on some topics (commands, audit), parsed once and
    indexed by procedure id, so a long test module can poll it cheaply.

    Each kept item is the decoded JSON object plus `_received_at` (time.time() when this
    observer's poll returned), `_topic` and `_index` (order of arrival in this observer).
    """

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self._lock = threading.Lock()
        self._by_pid: dict[str | None, list[dict[str, Any]]] = {}
        self._n = 0
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=[bootstrap], fetch_max_wait_ms=5)
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(self._consumer.partitions_for_topic(t) or [])
        ]
        assert tps, f"no partitions for {topics}"
        self._consumer.assign(tps)
        self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve positions now, so nothing published later is missed
            self._consumer.position(tp)
        self._thread = threading.Thread(target=self._run, name="sitekit-observer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            polled = self._consumer.poll(timeout_ms=50)
            now = time.time()
            for tp, recs in polled.items():
                for r in recs:
                    try:
                        obj = json.loads(r.value)
                    except (TypeError, ValueError):
                        continue
                    if not isinstance(obj, dict):
                        continue
                    obj["_received_at"] = now
                    obj["_topic"] = tp.topic
                    with self._lock:
                        obj["_index"] = self._n
                        self._n += 1
                        self._by_pid.setdefault(obj.get("procedure_id"), []).append(obj)
        self._consumer.close()

    def items(self, procedure_id: str | None) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._by_pid.get(procedure_id, ()))

    def commands(self, procedure_id: str, ctype: str) -> list[dict[str, Any]]:
        """§4 commands of one type for a procedure, in arrival order."""
        return [o for o in self.items(procedure_id) if o.get("type") == ctype]

    def audit(self, procedure_id: str, event: str, **data: Any) -> list[dict[str, Any]]:
        """Audit entries of one kind for a procedure whose data match the given values."""
        return [
            o
            for o in self.items(procedure_id)
            if o.get("event") == event
            and all(o.get("data", {}).get(k) == v for k, v in data.items())
        ]

    def wait_for(self, pred: Any, timeout: float) -> Any:
        """Poll `pred` until it returns something truthy (returned) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            got = pred()
            if got or time.monotonic() >= deadline:
                return got
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
