"""Kafka driver of the simulator: one scheduler thread for every site of every
procedure, plus one consumer thread listening to the safety commands.

Why this shape: one thread with a monotonic clock keeps per-site send order
trivially correct (seq is assigned and sent in the same thread) and costs no
context switches per record; the consumer needs its own thread only because
kafka-python's poll() blocks. It hands commands over through a queue and wakes
the scheduler, so a safe_stop is handled within a millisecond of arrival.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from monitor.errors import SimulatorLayerError
from monitor.icd.models import (
    PROCEDURE_ID_PATTERN,
    Command,
    MonitorHeartbeat,
    Rearm,
    SafeStop,
)
from monitor.icd.topics import Topics
from monitor.kafka import (
    OFFSET_END,
    Consumer,
    KafkaSettings,
    Producer,
    TopicPartition,
    TransportError,
    open_consumer,
    open_producer,
)
from monitor.sim.faults import Fault
from monitor.sim.sites import Outgoing, ProcedureOptions, ProcedureSim

Signer = Callable[[bytes], "list[tuple[str, bytes]] | None"]
"""ICD §8 hook: value bytes -> Kafka headers (e.g. telesafe-sig, telesafe-key), or None."""

EventCallback = Callable[[dict[str, Any]], None]

_commands = TypeAdapter[SafeStop | MonitorHeartbeat | Rearm](Command)
_MAX_IDLE_S = 0.005  # longest scheduler sleep; commands wake it earlier anyway


class SimulationError(SimulatorLayerError):
    """An expected failure (no broker, missing topic...): shown without traceback."""


@dataclass
class SimConfig:
    duration: float | None = 15.0  # None: until stop()
    procedures: int = 1
    procedure_prefix: str = "LDN-GIB"
    faults: list[Fault] = field(default_factory=list)
    policy: str | None = None
    surgeon_id: str = "surgeon-ldn-01"
    ack_delay_ms: float = 20.0
    ack: bool = True
    send_end: bool = True
    deadman_hold: bool = False
    deadman_timeout_ms: float = 500.0
    seed: int | None = None
    kinematics: bool = True
    # Producer batching window. 0 wakes the sender for nearly every record: ~2x the CPU
    # at 10 procedures. 5 ms is far below any ICD threshold (heartbeat warn 100 ms) and
    # adds at most 5 ms to an ack.
    linger_ms: int = 5

    def procedure_ids(self) -> list[str]:
        return [f"{self.procedure_prefix}-{i + 1:04d}" for i in range(self.procedures)]

    def validate(self) -> None:
        import re

        if self.procedures < 1:
            raise ValueError("--procedures must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("--duration must be positive")
        if self.linger_ms < 0:
            raise ValueError("--linger-ms must not be negative")
        if self.ack_delay_ms < 0:
            raise ValueError("--ack-delay-ms must not be negative")
        for pid in self.procedure_ids():
            if not re.match(PROCEDURE_ID_PATTERN, pid):
                raise ValueError(
                    f"procedure id {pid!r} is not valid (ICD §3: {PROCEDURE_ID_PATTERN})"
                )
        ids = self.procedure_ids()
        for f in self.faults:
            if isinstance(f.procedure, int) and f.procedure >= self.procedures:
                raise ValueError(
                    f"fault {f.describe()!r}: procedure={f.procedure} but only "
                    f"{self.procedures} procedure(s) (indexes from 0)"
                )
            if isinstance(f.procedure, str) and f.procedure not in ids:
                raise ValueError(
                    f"fault {f.describe()!r}: procedure {f.procedure!r} is not one of "
                    f"{', '.join(ids)}"
                )


class Simulation:
    """Plays `config.procedures` procedures against Kafka.

    `start()` returns once the command consumer is positioned at the end of the
    commands topic, so any command published after it is seen.
    """

    def __init__(
        self,
        config: SimConfig,
        settings: KafkaSettings | None = None,
        *,
        sign: Signer | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.settings = settings or KafkaSettings()
        self.topics = Topics(self.settings.topic_prefix)
        self.sign = sign
        self.on_event = on_event
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._inbox: queue.SimpleQueue[tuple[float, SafeStop | MonitorHeartbeat | Rearm]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._consumer_thread: threading.Thread | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._t0 = 0.0
        self._wall_start = 0.0
        self._cpu_start = 0.0
        self._cpu_used = 0.0
        self._elapsed = 0.0
        self._send_errors = 0
        self._commands_ignored = 0
        self._commands_invalid = 0
        self._loop_lag_max = 0.0
        # How late each procedure's step ran vs its earliest due item, in whole ms:
        # the "is it keeping up" measure for many procedures on one core.
        self._lag_hist: Counter[int] = Counter()
        opts = ProcedureOptions(
            policy=config.policy,
            surgeon_id=config.surgeon_id,
            ack_delay_s=config.ack_delay_ms / 1000.0,
            ack=config.ack,
            deadman_hold=config.deadman_hold,
            deadman_timeout_s=config.deadman_timeout_ms / 1000.0,
            send_end=config.send_end,
            kinematics=config.kinematics,
        )
        self.procs: dict[str, ProcedureSim] = {
            pid: ProcedureSim(
                pid,
                index=i,
                faults=config.faults,
                options=opts,
                seed=None if config.seed is None else config.seed + i,
                on_event=self._record_event,
            )
            for i, pid in enumerate(config.procedure_ids())
        }

    # ------------------------------------------------------------------ events

    @property
    def events(self) -> list[dict[str, Any]]:
        """A snapshot of the events so far (thread-safe copy)."""
        with self._lock:
            return list(self._events)

    def _record_event(self, ev: dict[str, Any]) -> None:
        ev = {"sim_t": round(time.monotonic() - self._t0, 4), "wall_ns": time.time_ns()} | ev
        with self._lock:
            self._events.append(ev)
        if self.on_event is not None:
            # A broken display must not stop the robot simulation.
            with contextlib.suppress(Exception):
                self.on_event(ev)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("simulation already started")
        try:
            self._producer = open_producer(
                self.settings, "site", "telesafe-sim", linger_ms=self.config.linger_ms
            )
            # A robot reads commands in a group its ACL allows (docs/security.md), never
            # committing: librdkafka needs a group id even for assign().
            self._consumer = open_consumer(
                self.settings,
                "reader",
                "telesafe-sim-robot",
                group_id=f"{self.settings.topic_prefix}telesafe-site-robot-sim",
            )
            for topic in (
                self.topics.telemetry_console,
                self.topics.telemetry_robot,
                self.topics.commands,
            ):
                if not self._consumer.partitions_for(topic, 10.0):
                    raise SimulationError(
                        f"topic {topic!r} does not exist on {self.settings.bootstrap_servers} "
                        "(create the ICD topics first: telesafe broker start / broker topics)"
                    )
            # No consumer group: every partition from its end, so we listen at once and
            # never replay old commands.
            parts = self._consumer.partitions_for(self.topics.commands, 10.0) or []
            self._consumer.assign(
                {TopicPartition(self.topics.commands, p): OFFSET_END for p in parts}
            )
        except TransportError as exc:
            self._close_clients()
            raise SimulationError(
                f"cannot reach Kafka at {self.settings.bootstrap_servers}: {exc}"
            ) from None
        except SimulationError:
            self._close_clients()
            raise
        self._t0 = time.monotonic()
        self._wall_start = time.time()
        self._cpu_start = time.process_time()
        self._consumer_thread = threading.Thread(
            target=self._consume, name="telesafe-sim-commands", daemon=True
        )
        self._consumer_thread.start()
        self._thread = threading.Thread(target=self._loop, name="telesafe-sim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the run to end now (procedure_end is still sent unless disabled)."""
        self._stop.set()
        self._wake.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to finish; True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def run(self, duration: float | None = None) -> dict[str, Any]:
        """Start, play for `duration` seconds (default: the configured one), return the summary."""
        if duration is not None:
            self.config.duration = duration
        self.start()
        try:
            while not self.wait(0.2):
                pass
        except KeyboardInterrupt:
            self.stop()
            self.wait()
        return self.summary()

    # ------------------------------------------------------------------ threads

    def _consume(self) -> None:
        ids = set(self.procs)
        while not self._stop.is_set():
            assert self._consumer is not None
            try:
                records = self._consumer.poll(0.05, 1000)
            except Exception as exc:  # keep listening; Kafka errors are usually transient
                self._record_event(
                    {"event": "error", "where": "commands consumer", "error": repr(exc)}
                )
                time.sleep(0.2)
                continue
            got = False
            for rec in records:
                arrived = time.monotonic()
                try:
                    cmd = _commands.validate_json(rec.value or b"")
                except (ValidationError, ValueError, TypeError):
                    self._commands_invalid += 1
                    continue
                if cmd.procedure_id not in ids:
                    self._commands_ignored += 1
                    continue
                self._inbox.put((arrived, cmd))
                got = True
            if got:
                self._wake.set()

    def _loop(self) -> None:
        procs = list(self.procs.values())
        duration = self.config.duration
        try:
            while True:
                now = time.monotonic() - self._t0
                if self._stop.is_set() or (duration is not None and now >= duration):
                    break
                while True:
                    try:
                        arrived, cmd = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    self.procs[cmd.procedure_id].on_command(cmd, arrived - self._t0)
                due = float("inf")
                live = [p for p in procs if not p.ended]
                if not live:  # every procedure ended early (end@ faults)
                    break
                for p in live:
                    late = now - p.next_due()
                    if late > 0:
                        self._lag_hist[min(int(late * 1000), 1000)] += 1
                        if late > self._loop_lag_max:
                            self._loop_lag_max = late
                    self._send(p.step(now))
                    if not p.ended:
                        due = min(due, p.next_due())
                if duration is not None:
                    due = min(due, duration)
                wait = min(due - (time.monotonic() - self._t0), _MAX_IDLE_S)
                if wait > 0:
                    self._wake.wait(wait)
                    self._wake.clear()
        except Exception as exc:
            self._record_event({"event": "error", "where": "scheduler", "error": repr(exc)})
        finally:
            end_t = time.monotonic() - self._t0
            for p in procs:
                out: list[Outgoing] = []
                p.finish(end_t, out)
                with contextlib.suppress(Exception):
                    self._send(out)
            self._elapsed = end_t
            with contextlib.suppress(Exception):
                if self._producer is not None:
                    self._producer.flush(5.0)
            self._cpu_used = time.process_time() - self._cpu_start
            self._stop.set()
            if self._consumer_thread is not None:
                self._consumer_thread.join(2.0)
            self._close_clients()

    def _send(self, out: list[Outgoing]) -> None:
        producer = self._producer
        assert producer is not None, "start() first"
        for o in out:
            topic = (
                self.topics.telemetry_robot if o.site == "robot" else self.topics.telemetry_console
            )
            headers = (self.sign(o.value) or ()) if self.sign is not None else ()
            try:
                producer.send(topic, o.key.encode(), o.value, headers, on_error=self._on_send_error)
            except TransportError as exc:
                self._on_send_error(str(exc))
        producer.service()

    def _on_send_error(self, reason: str) -> None:
        self._send_errors += 1
        if self._send_errors <= 3:  # enough to diagnose; avoid a flood
            self._record_event({"event": "error", "where": "producer", "error": reason})

    def _close_clients(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close(2.0)

    # ------------------------------------------------------------------ summary

    def summary(self) -> dict[str, Any]:
        """Counts per site and type, commands, acks, and fault-to-stop latency."""
        per_site: dict[str, Counter[str]] = {"robot": Counter(), "console": Counter()}
        procs: dict[str, Any] = {}
        for pid, p in self.procs.items():
            for site, counts in p.counts().items():
                per_site[site].update(counts)
            lat = None
            if p.first_stop_t is not None and p.first_fault_t is not None:
                lat = round((p.first_stop_t - p.first_fault_t) * 1000, 1)
            procs[pid] = {
                "state": p.state,
                "seq": {"robot": p.robot.seq, "console": p.console.seq},
                "lost": {"robot": p.robot.lost, "console": p.console.lost},
                "safe_stops": len(p.stops),
                "commands_received": p.commands_received,
                "acks_sent": p.acks_sent,
                "rearms": p.rearms,
                "first_fault_t": p.first_fault_t,
                "first_stop_t": p.first_stop_t,
                "fault_to_stop_ms": lat,
                "max_lag_ms": round(p.max_lag_s * 1000, 2),
            }
        elapsed = self._elapsed or (time.monotonic() - self._t0 if self._t0 else 0.0)
        cpu = self._cpu_used or (time.process_time() - self._cpu_start if self._cpu_start else 0.0)
        return {
            "duration_s": round(elapsed, 3),
            "cpu_s": round(cpu, 3),
            "cpu_percent": round(100.0 * cpu / elapsed, 1) if elapsed else None,
            "records": {s: dict(c) for s, c in per_site.items()},
            "records_total": sum(sum(c.values()) for c in per_site.values()),
            "send_errors": self._send_errors,
            "commands_invalid": self._commands_invalid,
            "commands_other_procedures": self._commands_ignored,
            "scheduler_max_lag_ms": round(self._loop_lag_max * 1000, 2),
            "scheduler_lag_ms": _percentiles(self._lag_hist),
            "procedures": procs,
        }


def _percentiles(hist: Counter[int]) -> dict[str, int]:
    """p50/p99/p999 of a whole-ms histogram (0 when never late)."""
    total = sum(hist.values())
    out = {"p50": 0, "p99": 0, "p999": 0}
    if not total:
        return out
    for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
        need, acc = q * total, 0
        for ms in sorted(hist):
            acc += hist[ms]
            if acc >= need:
                out[name] = ms
                break
    return out


def events_to_jsonl(events: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(e, default=str) + "\n" for e in events)
