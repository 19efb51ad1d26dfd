"""`telesafe simulate`: play both surgical sites of one or more procedures against Kafka."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from monitor.errors import UsageError
from monitor.kafka.settings import add_kafka_arguments, settings_from_args
from monitor.sim import faults as faultmod
from monitor.sim.faults import FaultSpecError
from monitor.sim.runner import SimConfig, Simulation
from monitor.sim.view import LiveView, print_summary

DESCRIPTION = """\
Simulate the London console and the Gibraltar robot of one or more procedures:
heartbeats (50 Hz), latency (every 50 ms), link (1 Hz) and kinematics (1 kHz in
batches of 10) on the ICD telemetry topics. The robot obeys safe_stop / rearm on
the commands topic and watches the monitor's dead-man heartbeat.
"""

FAULT_HELP = """\
fault specs (--fault, repeatable; or a --scenario YAML file):
  KIND[:TARGET[=VALUE]][@TIME[,OPTION=VALUE]...]
  TIME is seconds since the procedure started (5, 5s, 2.5s, 500ms).

  heartbeat-stop:SITE@5s          the site's heartbeats stop (for=2s to resume)
  silence:SITE@5s                 the site sends nothing at all (records lost: seq gaps)
  latency:control=350@5s          robot control latency samples ~350 ms
  latency:video=450@4s            console video latency samples ~450 ms
  latency-spike:control=600@5s    one control sample of 600 ms
  loss:robot=0.05@3s              link loss_ratio 0.05 (drop=yes also drops 5% of records)
  jitter:console=15@3s            link jitter 15 ms (and latency sd 15 ms)
  out-of-box:psm1@5s              drive psm1's tip out of the box (axis=z|x, by=10, speed=90)
  speed:psm2=250@5s               psm2 tip moves at 250 mm/s (inside the box)
  grip:psm1=16@5s                 psm1 grip force 16 N
  zone:psm1=30,0,-100@5s          move psm1's tip to (30,0,-100) mm (speed=90)
  garbage:robot@3s,count=8        invalid records: not-json, nan, wrong-site,
                                  missing-field, wrong-key (cycled)
  end@10s                         procedure_end now (reason=completed|aborted|...)

  common options: for=DURATION (fault ends), procedure=ID|INDEX (default 0: the first)
  SITE console|robot   ARM psm1|psm2|psm3
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to play (default 15, or the scenario's duration)",
    )
    p.add_argument(
        "--procedures",
        type=int,
        default=None,
        metavar="N",
        help="number of concurrent procedures (default 1, or the scenario's)",
    )
    p.add_argument(
        "--procedure-id",
        default="LDN-GIB",
        metavar="PREFIX",
        help="procedure id prefix; ids are PREFIX-0001, PREFIX-0002... (default %(default)s)",
    )
    p.add_argument(
        "--policy", default=None, metavar="NAME", help="policy pack named in procedure_start"
    )
    p.add_argument("--surgeon-id", default="surgeon-ldn-01", help="default %(default)s")
    p.add_argument(
        "--fault", action="append", default=[], metavar="SPEC", help="inject a fault (see below)"
    )
    p.add_argument("--scenario", metavar="FILE.yaml", help="faults (and settings) from a YAML file")
    p.add_argument(
        "--ack-delay-ms",
        type=float,
        default=20.0,
        metavar="MS",
        help="robot: time from safe_stop to safe_stop_ack (default %(default)s)",
    )
    p.add_argument(
        "--no-ack", action="store_true", help="robot never acknowledges (escalation test)"
    )
    p.add_argument(
        "--no-end", action="store_true", help="leave the procedures open (no procedure_end)"
    )
    p.add_argument(
        "--deadman-hold",
        action="store_true",
        help="robot goes to 'hold' while the monitor's heartbeat is absent (default: report only)",
    )
    p.add_argument(
        "--deadman-timeout-ms",
        type=float,
        default=500.0,
        metavar="MS",
        help="monitor heartbeat silence that counts as lost (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (reproducible signals)")
    p.add_argument(
        "--linger-ms",
        type=int,
        default=5,
        metavar="MS",
        help="producer batching window (default %(default)s; 0 costs ~2x CPU)",
    )
    p.add_argument("--quiet", action="store_true", help="no live output and no summary")
    p.add_argument("--json-events", metavar="FILE", help="write every event as a JSON line to FILE")
    p.add_argument("--json-summary", metavar="FILE", help="write the end summary as JSON to FILE")
    add_kafka_arguments(p)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "simulate",
        help="simulate the console and robot sites of one or more procedures",
        description=DESCRIPTION,
        epilog=FAULT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run, _sim_parser=p)


def _fail(args: argparse.Namespace, message: str) -> int:
    parser: argparse.ArgumentParser | None = getattr(args, "_sim_parser", None)
    if parser is not None:
        parser.error(message)  # exits 2, with the usage
    raise UsageError(message)


def build_config(args: argparse.Namespace) -> SimConfig:
    """SimConfig from parsed flags; raises FaultSpecError/ValueError with a user message."""
    faults: list[faultmod.Fault] = []
    duration, procedures, policy = args.duration, args.procedures, args.policy
    if args.scenario:
        sc = faultmod.load_scenario(args.scenario)
        faults.extend(sc.faults)
        duration = duration if duration is not None else sc.duration
        procedures = procedures if procedures is not None else sc.procedures
        policy = policy if policy is not None else sc.policy
    faults.extend(faultmod.parse_spec(s) for s in args.fault)
    if args.linger_ms < 0:
        raise ValueError("--linger-ms must not be negative")
    if args.deadman_timeout_ms <= 0:
        raise ValueError("--deadman-timeout-ms must be positive")
    cfg = SimConfig(
        duration=15.0 if duration is None else duration,
        procedures=1 if procedures is None else procedures,
        procedure_prefix=args.procedure_id,
        faults=faults,
        policy=policy,
        surgeon_id=args.surgeon_id,
        ack_delay_ms=args.ack_delay_ms,
        ack=not args.no_ack,
        send_end=not args.no_end,
        deadman_hold=args.deadman_hold,
        deadman_timeout_ms=args.deadman_timeout_ms,
        seed=args.seed,
        linger_ms=args.linger_ms,
    )
    cfg.validate()
    return cfg


def run(args: argparse.Namespace) -> int:
    try:
        cfg = build_config(args)
        settings = settings_from_args(args)
    except (FaultSpecError, ValueError) as exc:
        return _fail(args, str(exc))
    view = None if args.quiet else LiveView()
    sink: IO[str] | None = None
    lock = threading.Lock()
    if args.json_events:
        try:
            sink = Path(args.json_events).open("w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            return _fail(args, f"--json-events {args.json_events}: {exc.strerror}")

    def on_event(ev: dict[str, Any]) -> None:
        if sink is not None:
            with lock:
                sink.write(json.dumps(ev, default=str) + "\n")
                sink.flush()
        if view is not None:
            view(ev)

    try:
        sim = Simulation(cfg, settings, on_event=on_event)
        if view is not None:
            view.console.print(
                f"simulating {cfg.procedures} procedure(s) {', '.join(cfg.procedure_ids())} for "
                f"{cfg.duration:g} s on {settings.bootstrap_servers} "
                f"(prefix {settings.topic_prefix or '-'}), {len(cfg.faults)} fault(s)",
                markup=False,
                soft_wrap=True,
            )
        summary = sim.run()
    finally:
        if sink is not None:
            sink.close()
    if args.json_summary:
        Path(args.json_summary).write_text(json.dumps(summary, indent=2, default=str), "utf-8")
    if view is not None:
        print_summary(summary, view.console)
    return 0 if summary["send_errors"] == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (`python -m monitor.sim.cli ...`) for testing."""
    from monitor.cli import run_group

    return run_group("simulate", argv)


if __name__ == "__main__":
    raise SystemExit(main())
