"""`telesafe demo`: the two-site story end to end on a real broker.

London console and Gibraltar robot run a procedure; the robot's heartbeats stop; the
monitor latches a safe-stop, the robot acknowledges, an operator re-arms with
`telesafe rearm`, the procedure ends; the audit ledger is verified and the post-operative
report written.

Each run is isolated from whatever else the broker carries: its own topic prefix
(`demo-<time>-`, deleted at the end), procedure id, monitor id and consumer group, so a
broker with history (other runs, other monitors, a simulator on the default topics)
neither feeds it latches nor changes what it shows and sums. Everything shown is filtered
by this run's procedure and monitor all the same, so `--prefix` may name shared topics
(those are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from monitor.argtypes import port, port_or_any, seconds
from monitor.errors import TelesafeError, UsageError
from monitor.icd.topics import Topics
from monitor.kafka.settings import KafkaSettings

console = Console(highlight=False)

_MONITOR_MARKS = (
    "SAFE-STOP",
    "SAFE_STOP_",
    "REARM",
    "WARNING_RAISED",
    "WARNING_CLEARED",
    "PROCEDURE_",
    "rejected record",
    "started:",
    "OPERATOR_NOTE",
    "ERROR",
)
_PROCEDURE_MARKS = ("PROCEDURE_", "SAFE", "REARM", "WARNING_", "OPERATOR_NOTE")
OPERATOR = "dr-demo"
REARM_AFTER_OUTAGE_S = 2.5  # the sites' health settles, then the operator re-arms


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the two-site demo end to end (broker, monitor, both sites, faults)",
        description="Start (or reuse) the local Kafka broker, the monitor and both simulated "
        "sites on topics of their own; inject a robot heartbeat loss; show the safe-stop, its "
        "acknowledgement and the re-arm live; then verify the audit ledger, write the report "
        "and print a summary. Other traffic on the broker does not affect it.",
    )
    p.add_argument(
        "--duration",
        type=seconds,
        default=12.0,
        metavar="SECONDS",
        help="length of the procedure (default %(default)s)",
    )
    p.add_argument(
        "--fault-at",
        type=seconds,
        default=4.0,
        metavar="SECONDS",
        help="seconds into the procedure when the robot's heartbeats stop (default %(default)s)",
    )
    p.add_argument(
        "--outage",
        type=seconds,
        default=1.5,
        metavar="SECONDS",
        help="seconds the robot's heartbeats stay away (default %(default)s)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        default=None,
        help="use this running Kafka broker instead of starting the local one",
    )
    where.add_argument(
        "--port",
        type=port,
        default=9092,
        help="client port of the local broker the demo starts, or reuses if one answers "
        "there (default %(default)s)",
    )
    p.add_argument(
        "--prefix",
        "--topic-prefix",
        dest="prefix",
        default=None,
        help="topic prefix of this run, created if missing and kept (default: a fresh "
        "demo-<time>- per run, deleted at the end)",
    )
    p.add_argument(
        "--workdir",
        default=".telesafe/demo",
        metavar="DIR",
        help="ledger, keys, monitor log and report (default %(default)s)",
    )
    p.add_argument(
        "--http-port",
        type=port_or_any,
        default=0,
        metavar="PORT",
        help="the monitor's /metrics, /status port (default 0: any free port)",
    )
    p.set_defaults(func=run_demo)


@dataclass(frozen=True)
class Run:
    """The names one demo run owns."""

    stamp: str  # e.g. 20261204-203112
    prefix: str
    procedure_prefix: str
    monitor_id: str
    group: str

    @classmethod
    def new(cls, prefix: str | None) -> Run:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return cls(
            stamp,
            f"demo-{stamp}-" if prefix is None else prefix,
            f"LDN-GIB-{stamp}",
            f"telesafe-demo-{stamp}",
            f"telesafe-demo-{stamp}",
        )


@dataclass
class Wire:
    """Commands of this run's procedure from this run's monitor, as seen on the wire."""

    pid: str
    monitor_id: str
    seen: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def mine(self, v: dict[str, Any]) -> bool:
        return v.get("procedure_id") == self.pid and v.get("monitor_id") == self.monitor_id

    def of(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, c) for t, c in self.seen if c.get("type") == kind]


def _stream(pipe: IO[bytes], log: IO[bytes], pid: str) -> None:
    for raw in iter(pipe.readline, b""):
        log.write(raw)
        log.flush()
        line = raw.decode(errors="replace").rstrip()
        if not any(m in line for m in _MONITOR_MARKS):
            continue
        if any(m in line for m in _PROCEDURE_MARKS) and pid not in line:
            continue  # another procedure's, on shared topics
        msg = line.split(": ", 1)[-1]
        style = "bold red" if "SAFE-STOP" in line else "magenta"
        console.print(f"[{style}]monitor │ {escape(msg)}")


def _sim_event(ev: dict[str, Any]) -> None:
    name = ev.get("event")
    t = ev.get("t", 0.0)
    if name == "fault":
        console.print(f"[yellow]faults  │ t={t:5.2f}s inject {ev.get('fault')}")
    elif name == "fault-end":
        console.print(f"[yellow]faults  │ t={t:5.2f}s end of {ev.get('fault')}")
    elif name == "ack":
        console.print(
            f"[cyan]robot   │ t={t:5.2f}s safe_stop_ack sent for {str(ev.get('command_id'))[:8]}…"
        )
    elif name == "state":
        console.print(f"[cyan]robot   │ t={t:5.2f}s state {ev.get('old')} → {ev.get('new')}")
    elif name in ("start", "end"):
        console.print(f"[green]sites   │ t={t:5.2f}s procedure {name} ({ev.get('procedure')})")
    elif name and name.startswith("deadman"):
        console.print(f"[cyan]robot   │ t={t:5.2f}s {name}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _broker(args: argparse.Namespace, prefix: str) -> tuple[str, str]:
    """The broker's address, its topics ensured, and what to say about it at the end."""
    from monitor.broker import server
    from monitor.broker.topics import ensure_topics

    if args.bootstrap:
        ensure_topics(args.bootstrap, prefix=prefix)  # BrokerError if nothing answers
        return args.bootstrap, f"the broker at {args.bootstrap} was left as it was"
    res = server.start(
        port=args.port, prefix=prefix, progress=lambda m: console.print(f"[dim]broker  │ {m}")
    )
    if res.already_running:
        return (
            res.bootstrap,
            f"the Kafka broker on {res.bootstrap} ran before the demo: left running",
        )
    stop = "telesafe broker stop" + (f" --port {args.port}" if args.port != 9092 else "")
    return res.bootstrap, (
        f"the Kafka broker on {res.bootstrap} was started by this demo and is still running; "
        f"stop it with `{stop}`"
    )


def _delete_topics(bootstrap: str, prefix: str) -> None:
    from monitor.broker.topics import admin_client

    try:
        admin = admin_client(bootstrap)
        try:
            admin.delete_topics(Topics(prefix).all(), 10.0)
        finally:
            admin.close()
    except TelesafeError as exc:  # the demo's outcome stands; say what is left behind
        console.print(Text(f"demo    │ could not delete the topics {prefix}*: {exc}", "yellow"))
        return
    console.print(f"[dim]demo    │ deleted this run's topics ({prefix}telesafe.*)")


def run_demo(args: argparse.Namespace) -> int:
    if args.fault_at + args.outage + REARM_AFTER_OUTAGE_S + 1.0 > args.duration:
        raise UsageError(
            f"--duration {args.duration:g} is too short: the re-arm comes "
            f"{REARM_AFTER_OUTAGE_S:g} s after the outage ends (--fault-at + --outage), and "
            "the procedure must still be running then"
        )
    run = Run.new(args.prefix)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ledger = work / "ledger.sqlite"
    # A fresh ledger per demo run, with its checkpoint sidecar (else the monitor refuses
    # to open an empty ledger whose sidecar says it once held entries).
    for old in (ledger, *(Path(f"{ledger}{s}") for s in ("-wal", "-shm", ".checkpoint"))):
        old.unlink(missing_ok=True)
    console.rule("[bold]telesafe demo — London console ↔ Gibraltar robot")
    bootstrap, broker_note = _broker(args, run.prefix)
    console.print(f"[dim]demo    │ topics {run.prefix}telesafe.*, monitor {run.monitor_id}")
    try:
        return _with_monitor(args, run, bootstrap, work)
    finally:
        if args.prefix is None:  # the run's own topics: leave the broker as it was
            _delete_topics(bootstrap, run.prefix)
        console.print(f"[dim]demo    │ {broker_note}")


def _with_monitor(args: argparse.Namespace, run: Run, bootstrap: str, work: Path) -> int:
    """Start `telesafe run` for this demo, play the procedure, stop it; the exit code."""
    ledger, key = work / "ledger.sqlite", work / "ledger.key"
    settings = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=run.prefix)
    if not key.exists():
        from monitor.audit.checkpoint import generate_key_files

        generate_key_files(key)
    http_port = args.http_port or _free_port()
    log_path = work / "monitor.log"
    cmd = [
        sys.executable,
        "-m",
        "monitor",
        "run",
        "--bootstrap",
        bootstrap,
        "--topic-prefix",
        run.prefix,
        "--group-id",
        run.group,
        "--monitor-id",
        run.monitor_id,
        "--http-port",
        str(http_port),
        "--ledger",
        str(ledger),
        "--signing-key",
        str(key),
        "--operators",
        OPERATOR,
    ]
    console.print(f"[dim]monitor │ telesafe {' '.join(cmd[3:])}")
    mon = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert mon.stdout is not None
    pid = f"{run.procedure_prefix}-0001"
    with open(log_path, "wb") as log:
        threading.Thread(target=_stream, args=(mon.stdout, log, pid), daemon=True).start()
        try:
            return _play(args, settings, run, mon, http_port, ledger, key, work)
        finally:
            if mon.poll() is None:
                mon.terminate()
                mon.wait(timeout=20)


def _wait_ready(port: int, mon: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and mon.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _watch(
    settings: KafkaSettings, wire: Wire, ready: threading.Event, stop: threading.Event
) -> None:
    from monitor.kafka import OFFSET_END, TopicPartition, open_consumer

    topic = Topics(settings.topic_prefix).commands
    c = open_consumer(settings, "reader", "telesafe-demo-watch")
    parts = c.partitions_for(topic, 10.0) or []
    c.assign({TopicPartition(topic, p): OFFSET_END for p in parts})
    ready.set()
    while not stop.is_set():
        for r in c.poll(0.05, 1000):
            try:
                v = json.loads(r.value or b"{}")
            except ValueError:
                continue
            if not isinstance(v, dict) or not wire.mine(v):
                continue
            wire.seen.append((time.time(), v))
            if v.get("type") == "safe_stop":
                console.print(
                    f"[bold red]wire    │ safe_stop {v['command_id'][:8]}… "
                    f"rule={v['policy']['rule']} observed={v['observed']}"
                )
            elif v.get("type") == "rearm":
                console.print(
                    f"[green]wire    │ rearm {v['command_id'][:8]}… by {v['operator_id']}"
                )
    c.close()


def _play(
    args: argparse.Namespace,
    settings: KafkaSettings,
    run: Run,
    mon: subprocess.Popen[bytes],
    http_port: int,
    ledger: Path,
    key: Path,
    work: Path,
) -> int:
    from monitor.sim.faults import parse_spec
    from monitor.sim.runner import SimConfig, Simulation

    if not _wait_ready(http_port, mon):
        console.print(f"[red]the monitor did not become ready; see {work / 'monitor.log'}")
        return 1
    console.print(f"[dim]monitor │ http://127.0.0.1:{http_port}/metrics, /status")
    faults = [
        parse_spec("garbage:console@2s,count=3"),
        parse_spec(f"heartbeat-stop:robot@{args.fault_at}s,for={args.outage}s"),
    ]
    config = SimConfig(
        duration=args.duration, faults=faults, seed=1, procedure_prefix=run.procedure_prefix
    )
    pid = config.procedure_ids()[0]
    wire = Wire(pid, run.monitor_id)
    ready, stop = threading.Event(), threading.Event()
    threading.Thread(target=_watch, args=(settings, wire, ready, stop), daemon=True).start()
    ready.wait(10)
    sim = Simulation(config, settings, on_event=_sim_event)
    console.rule("procedure running")
    sim.start()
    t0 = time.monotonic()
    time.sleep(args.fault_at + args.outage + REARM_AFTER_OUTAGE_S)
    _rearm(settings, pid, http_port, t0, until=args.duration - 1.0)
    sim.wait()
    time.sleep(1.0)
    stop.set()
    console.rule("procedure over — stopping the monitor (final signed checkpoint)")
    mon.terminate()
    mon.wait(timeout=20)
    return _summary(sim, wire, ledger, key, work, run)


def _rearm(settings: KafkaSettings, pid: str, http_port: int, t0: float, until: float) -> None:
    """`telesafe rearm` as the operator would type it. A rejection is asked again a second
    later while the procedure runs (`until` s after `t0`, monotonic): on a busy machine a
    site's heartbeat can be stale for a moment, the monitor then refuses, and an operator
    would simply ask again."""
    from monitor.operator.cli import LatchRequest, request_latch

    request = LatchRequest(
        "rearm_request",
        pid,
        OPERATOR,
        "robot link restored; surgeon confirmed view and instruments",
        monitor_url=f"http://127.0.0.1:{http_port}",
    )

    def say(msg: str, style: str = "green") -> None:
        console.print(Text(f"operator│ {msg}", style))

    while True:
        say(f"t={time.monotonic() - t0:5.2f}s {OPERATOR}: telesafe rearm --procedure {pid}")
        try:
            decision = request_latch(settings, request, say=say)
        except TelesafeError as exc:  # the summary says "not accepted"; the demo goes on
            say(f"re-arm failed: {exc}", "red")
            return
        assert decision is not None  # we wait for it
        if decision.accepted:
            say(f"ACCEPTED by monitor {decision.monitor_id}")
            return
        say(f"REJECTED by monitor {decision.monitor_id}: {'; '.join(decision.reasons)}", "red")
        if time.monotonic() - t0 + 1.5 > until:
            return
        time.sleep(1.0)


@dataclass(frozen=True)
class Figures:
    """The summary's numbers, from the simulator, the wire and the verified ledger."""

    stop_after_fault_ms: float | None  # fault injected → safe_stop seen on the wire
    command_id: str | None
    sends: int  # of that one command: the first send and its re-sends
    ack_delay_ms: float | None  # first send → acknowledgement, as the monitor measured it
    rearmed: bool


def figures(sim_events: list[dict[str, Any]], wire: Wire, entries: list[Any]) -> Figures:
    """`entries`: the verified ledger's (monitor.audit.verified.Entry)."""
    fault_wall = next(
        (
            e["wall_ns"] / 1e9
            for e in sim_events
            if e.get("event") == "fault" and e.get("kind") == "heartbeat-stop"
        ),
        None,
    )
    stops = wire.of("safe_stop")
    first = stops[0] if stops else None
    cid = first[1]["command_id"] if first else None
    mine = [e for e in entries if e.procedure_id == wire.pid and e.monitor_id == wire.monitor_id]
    ack = next((e for e in mine if e.event == "safe_stop_acknowledged"), None)
    return Figures(
        stop_after_fault_ms=(first[0] - fault_wall) * 1e3 if first and fault_wall else None,
        command_id=cid,
        sends=sum(1 for _, c in stops if c["command_id"] == cid),
        ack_delay_ms=float(ack.data["delay_ms"]) if ack and "delay_ms" in ack.data else None,
        rearmed=any(e.event == "rearm_accepted" for e in mine),
    )


def _summary(sim: Any, wire: Wire, ledger: Path, key: Path, work: Path, run: Run) -> int:
    from monitor.audit.checkpoint import load_public_key
    from monitor.audit.verified import LedgerRefused, load_verified
    from monitor.cli import main as cli

    pid = wire.pid
    pub = f"{key}.pub"
    verify_rc = cli(["audit", "verify", str(ledger), "--pubkey", pub])
    try:
        entries = load_verified(ledger, load_public_key(pub)).entries
    except LedgerRefused:
        entries = []
    f = figures(sim.events, wire, entries)
    t = Table(title=f"telesafe demo summary — {pid}")
    t.add_column("what")
    t.add_column("result")
    if f.command_id is not None and f.stop_after_fault_ms is not None:
        t.add_row(
            "safe-stop on the wire after the fault was injected",
            f"{f.stop_after_fault_ms:.0f} ms (policy: > 300 ms since the robot's last "
            "heartbeat, which left up to 20 ms before the fault)",
        )
        t.add_row("safe-stop command id / sends", f"{f.command_id} / {f.sends}")
    else:
        t.add_row("safe-stop", "[red]none seen")
    t.add_row(
        "robot acknowledgement",
        "[red]none in the ledger"
        if f.ack_delay_ms is None
        else f"{f.ack_delay_ms:.0f} ms after the first send (measured by the monitor)",
    )
    t.add_row("re-arm", "accepted" if f.rearmed else "[red]not accepted")
    t.add_row("audit ledger", f"{ledger} — verify {'OK' if verify_rc == 0 else 'FAILED'}")
    report = work / f"report-{pid}.html"
    rc = cli(
        [
            "report",
            "--ledger",
            str(ledger),
            "--pubkey",
            pub,
            "--procedure",
            pid,
            "--out",
            str(report),
        ]
    )
    t.add_row("post-operative report", str(report) if rc == 0 else "[red]failed")
    t.add_row("monitor log", str(work / "monitor.log"))
    console.print(t)
    ok = f.command_id is not None and f.rearmed and verify_rc == 0
    return 0 if ok else 1
