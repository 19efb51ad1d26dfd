"""`telesafe demo`: the two-site story end to end on a real local broker.

London console and Gibraltar robot run a procedure; the robot's heartbeats stop; the
monitor latches a safe-stop, the robot acknowledges, an operator re-arms, the procedure
ends; the audit ledger is verified and the post-operative report written.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the two-site demo end to end (broker, monitor, both sites, faults)",
        description="Start the local Kafka broker, the monitor and both simulated sites; inject "
        "a robot heartbeat loss; show the safe-stop, its acknowledgement and the re-arm live; "
        "then verify the audit ledger, write the report and print a summary.",
    )
    p.add_argument("--duration", type=float, default=12.0, help="seconds of surgery (default 12)")
    p.add_argument(
        "--fault-at",
        type=float,
        default=4.0,
        help="seconds into the procedure when the robot's heartbeats stop (default 4)",
    )
    p.add_argument(
        "--outage",
        type=float,
        default=1.5,
        help="how long the robot's heartbeats stay away (default 1.5 s)",
    )
    p.add_argument("--workdir", default=".telesafe/demo", help="ledger, keys, logs, report")
    p.add_argument("--http-port", type=int, default=9108, help="monitor /metrics port")
    p.set_defaults(func=run_demo)


def _stream(pipe: IO[bytes], log: IO[bytes]) -> None:
    for raw in iter(pipe.readline, b""):
        log.write(raw)
        log.flush()
        line = raw.decode(errors="replace").rstrip()
        if any(m in line for m in _MONITOR_MARKS):
            msg = line.split(": ", 1)[-1]
            style = "bold red" if "SAFE-STOP" in line else "magenta"
            console.print(f"[{style}]monitor │ {msg}")


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


def run_demo(args: argparse.Namespace) -> int:
    from monitor.broker import server
    from monitor.broker.runtime import BrokerError

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ledger = work / "ledger.sqlite"
    key = work / "ledger.key"
    # A fresh ledger per demo run, with its checkpoint sidecar (else the monitor refuses
    # to open an empty ledger whose sidecar says it once held entries).
    for old in (ledger, *(Path(f"{ledger}{s}") for s in ("-wal", "-shm", ".checkpoint"))):
        old.unlink(missing_ok=True)
    console.rule("[bold]telesafe demo — London console ↔ Gibraltar robot")
    try:
        res = server.start(progress=lambda m: console.print(f"[dim]broker  │ {m}"))
    except BrokerError as exc:
        console.print(f"[red]broker could not start: {exc}")
        return 1
    bootstrap = res.bootstrap
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    if not key.exists():
        from monitor.audit.checkpoint import generate_key_files

        generate_key_files(key)
    group = f"telesafe-demo-{int(time.time())}"
    log_path = work / "monitor.log"
    cmd = [
        sys.executable,
        "-m",
        "monitor",
        "run",
        "--bootstrap",
        bootstrap,
        "--group-id",
        group,
        "--monitor-id",
        "telesafe-demo",
        "--http-port",
        str(args.http_port),
        "--ledger",
        str(ledger),
        "--signing-key",
        str(key),
        "--operators",
        "dr-demo",
    ]
    console.print(f"[dim]monitor │ {' '.join(cmd[2:])}")
    mon = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert mon.stdout is not None
    with open(log_path, "wb") as log:
        threading.Thread(target=_stream, args=(mon.stdout, log), daemon=True).start()
        try:
            return _play(args, settings, mon, ledger, key, work)
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


def _play(
    args: argparse.Namespace,
    settings: KafkaSettings,
    mon: subprocess.Popen[bytes],
    ledger: Path,
    key: Path,
    work: Path,
) -> int:
    from monitor.icd.models import RearmRequest
    from monitor.kafka import OFFSET_END, TopicPartition, open_consumer, open_producer
    from monitor.sim.faults import parse_spec
    from monitor.sim.runner import SimConfig, Simulation

    if not _wait_ready(args.http_port, mon):
        console.print(f"[red]the monitor did not become ready; see {work / 'monitor.log'}")
        return 1
    topics = Topics(settings.topic_prefix)
    commands: list[tuple[float, dict[str, Any]]] = []
    stop = threading.Event()

    def watch() -> None:
        import json

        c = open_consumer(settings, "reader", "telesafe-demo-watch")
        parts = c.partitions_for(topics.commands, 10.0) or []
        c.assign({TopicPartition(topics.commands, p): OFFSET_END for p in parts})
        ready.set()
        while not stop.is_set():
            for r in c.poll(0.05, 1000):
                v = json.loads(r.value or b"{}")
                commands.append((time.time(), v))
                if v["type"] == "safe_stop":
                    console.print(
                        f"[bold red]wire    │ safe_stop {v['command_id'][:8]}… "
                        f"rule={v['policy']['rule']} observed={v['observed']}"
                    )
                elif v["type"] == "rearm":
                    console.print(
                        f"[green]wire    │ rearm {v['command_id'][:8]}… by {v['operator_id']}"
                    )
        c.close()

    ready = threading.Event()
    threading.Thread(target=watch, daemon=True).start()
    ready.wait(10)
    faults = [
        parse_spec("garbage:console@2s,count=3"),
        parse_spec(f"heartbeat-stop:robot@{args.fault_at}s,for={args.outage}s"),
    ]
    sim = Simulation(
        SimConfig(duration=args.duration, faults=faults, seed=1), settings, on_event=_sim_event
    )
    console.rule("procedure running")
    sim.start()
    pid = sim.config.procedure_ids()[0]
    rearm_at = args.fault_at + args.outage + 2.5
    time.sleep(rearm_at)
    console.print(f"[green]operator│ t={rearm_at:5.2f}s dr-demo requests re-arm of {pid}")
    prod = open_producer(settings, "tool", "telesafe-demo-operator")
    latched = [c for _, c in commands if c["type"] == "safe_stop" and c["procedure_id"] == pid]
    req = RearmRequest(
        v=1,
        type="rearm_request",
        procedure_id=pid,
        operator_id="dr-demo",
        reason="robot link restored; surgeon confirmed view and instruments",
        requested_at=time.time_ns(),
        command_id=latched[-1]["command_id"] if latched else "none",
        request_id=str(uuid.uuid4()),
    )
    prod.deliver(topics.operator, pid.encode(), req.model_dump_json().encode())
    prod.close()
    sim.wait()
    time.sleep(1.0)
    stop.set()
    console.rule("procedure over — stopping the monitor (final signed checkpoint)")
    mon.terminate()
    mon.wait(timeout=20)
    return _summary(sim, commands, ledger, key, work, pid)


def _summary(
    sim: Any,
    commands: list[tuple[float, dict[str, Any]]],
    ledger: Path,
    key: Path,
    work: Path,
    pid: str,
) -> int:
    from monitor.cli import main as cli

    fault_wall = next(
        (
            e["wall_ns"] / 1e9
            for e in sim.events
            if e.get("event") == "fault" and e.get("kind") == "heartbeat-stop"
        ),
        None,
    )
    acks = [e for e in sim.events if e.get("event") == "ack"]
    stops = [(t, c) for t, c in commands if c["type"] == "safe_stop"]
    rearms = [(t, c) for t, c in commands if c["type"] == "rearm"]
    t = Table(title=f"telesafe demo summary — {pid}")
    t.add_column("what")
    t.add_column("result")
    if stops and fault_wall:
        t.add_row(
            "safe-stop arrival after the fault was injected",
            f"{(stops[0][0] - fault_wall) * 1e3:.0f} ms (policy: > 300 ms since the robot's last "
            "heartbeat, which left up to 20 ms before the fault)",
        )
        t.add_row("safe-stop command id / sends", f"{stops[0][1]['command_id']} / {len(stops)}")
    else:
        t.add_row("safe-stop", "[red]none seen")
    if acks:
        t.add_row(
            "robot acknowledgement",
            f"{acks[0]['wall_ns'] / 1e9 - stops[0][0]:.3f} s after the command arrived"
            if stops
            else "ack without command?",
        )
    t.add_row("re-arm", "accepted" if rearms else "[red]not accepted")
    verify_rc = cli(["audit", "verify", str(ledger), "--pubkey", f"{key}.pub"])
    t.add_row("audit ledger", f"{ledger} — verify {'OK' if verify_rc == 0 else 'FAILED'}")
    report = work / f"report-{pid}.html"
    try:
        rc = cli(
            [
                "report",
                "--ledger",
                str(ledger),
                "--pubkey",
                f"{key}.pub",
                "--procedure",
                pid,
                "--out",
                str(report),
            ]
        )
        t.add_row("post-operative report", str(report) if rc == 0 else "[red]failed")
    except SystemExit:
        t.add_row("post-operative report", "(report command not available)")
    t.add_row("monitor log", str(work / "monitor.log"))
    console.print(t)
    ok = bool(stops) and bool(rearms) and verify_rc == 0
    return 0 if ok else 1
