"""`telesafe run` (the monitor) and the `telesafe status` arguments (the command itself is
in `statusview.py`)."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from monitor.argtypes import non_negative_seconds, positive_int, seconds
from monitor.audit.checkpoint import KeyFileError
from monitor.errors import one_line
from monitor.kafka import KafkaSettings, TransportError, open_admin
from monitor.kafka.settings import add_kafka_arguments, env, settings_from_args
from monitor.metrics import MonitorMetrics
from monitor.policy.loader import PackRegistry, PolicyError
from monitor.security.signing import Keyring, Signer
from monitor.service import heap
from monitor.service.audit_sink import AuditSink, KafkaMirrorSink
from monitor.service.options import MonitorOptions, StartupError
from monitor.service.runner import MonitorService

log = logging.getLogger("telesafe.monitor")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the monitor (consume both sites' telemetry, enforce the policy packs)",
        description="Run the telesafe monitor: consume console and robot telemetry and operator "
        "requests, enforce the policy packs, publish safe-stop and monitor-heartbeat commands, "
        "keep the audit ledger, serve /metrics and /healthz. Flags default to TELESAFE_* "
        "environment variables.",
    )
    add_kafka_arguments(p)
    g = p.add_argument_group("monitor")
    g.add_argument(
        "--monitor-id",
        default=env("TELESAFE_MONITOR_ID", "telesafe-1"),
        help="this instance's id, in every command (env TELESAFE_MONITOR_ID; default %(default)s)",
    )
    g.add_argument(
        "--group-id",
        default=env("TELESAFE_GROUP_ID", "telesafe-monitor"),
        help="Kafka consumer group shared by all instances (default %(default)s)",
    )
    g.add_argument(
        "--group-instance-id",
        default=env("TELESAFE_GROUP_INSTANCE_ID"),
        help="static group membership id (e.g. the pod name)",
    )
    g.add_argument(
        "--rules",
        default=env("TELESAFE_RULES"),
        help="directory of policy packs (*.yaml); default: the shipped rules/",
    )
    g.add_argument(
        "--default-pack",
        default=env("TELESAFE_DEFAULT_PACK", "default"),
        help="pack for procedures that name none (default %(default)s)",
    )
    g.add_argument(
        "--operators",
        default=env("TELESAFE_OPERATORS"),
        help="comma-separated operator ids allowed to re-arm, or @FILE with one per "
        "line; if unset any operator id is accepted (development only; logged)",
    )
    g.add_argument(
        "--http-host",
        default=env("TELESAFE_HTTP_HOST", "127.0.0.1"),
        help="address the HTTP endpoints listen on (env TELESAFE_HTTP_HOST; default "
        "%(default)s; 0.0.0.0 for a scraper on another host)",
    )
    g.add_argument(
        "--http-port",
        type=int,
        default=int(env("TELESAFE_HTTP_PORT", "9108") or 9108),
        help="port for /metrics, /healthz, /readyz, /status (env TELESAFE_HTTP_PORT; "
        "default %(default)s; 0: any free port)",
    )
    g.add_argument(
        "--ledger",
        default=env("TELESAFE_LEDGER"),
        help="audit ledger (SQLite) path; without it audit entries are only mirrored "
        "to the audit topic",
    )
    g.add_argument(
        "--signing-key",
        default=env("TELESAFE_SIGNING_KEY"),
        help="Ed25519 private key for ledger checkpoints (and commands); it must be the "
        "ledger's key (change it with `telesafe audit rotate-key`)",
    )
    g.add_argument(
        "--ledger-verify-interval",
        type=non_negative_seconds,
        default=env("TELESAFE_LEDGER_VERIFY_INTERVAL", "60"),
        metavar="SECONDS",
        help="re-verify the ledger's newest checkpointed range this often, in the audit "
        "writer thread (first pass 5 s after start; 0: never; default %(default)s)",
    )
    sec = p.add_argument_group("ICD §8 authentication")
    sec.add_argument(
        "--trust-key",
        action="append",
        default=[k for k in (env("TELESAFE_TRUST_KEYS") or "").split(",") if k],
        metavar="WHO:NAME=KEY.pub",
        help="accept records signed by this key; WHO is console, robot or operator (for "
        "operators NAME must equal the operator_id). Once a key is set for WHO, its unsigned "
        "or badly signed records are dead-lettered. Repeat for rotation (env "
        "TELESAFE_TRUST_KEYS, comma-separated)",
    )
    sec.add_argument(
        "--command-key",
        default=env("TELESAFE_COMMAND_KEY"),
        metavar="NAME=KEY",
        help="sign every command with this Ed25519 private key (env TELESAFE_COMMAND_KEY)",
    )
    g.add_argument(
        "--record",
        default=None,
        metavar="FILE",
        help="also write every received record to FILE (ICD §9 JSON Lines, each line "
        "naming this monitor; docs/record-replay.md)",
    )
    g.add_argument(
        "--startup-lookback",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on partitions with no committed offset, start this far back in time "
        "(default %(default)s)",
    )
    g.add_argument(
        "--log-level",
        default=env("TELESAFE_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the monitor's log on stdout (env TELESAFE_LOG_LEVEL; default "
        "%(default)s; DEBUG also shows the Kafka client libraries' own lines)",
    )
    g.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="run N monitor processes on this node in one consumer group (worker i gets "
        "monitor id ID-i, HTTP port PORT+i, ledger LEDGER-i); they share the partitions "
        "(default %(default)s)",
    )
    p.set_defaults(func=run, own_logging=True)  # configured in run(), for the monitor's log

    s = sub.add_parser(
        "status",
        help="live view of a running monitor's procedures",
        description="Poll a monitor's /status endpoint and show its procedures; when the "
        "monitor stops answering, the last view stays on screen with its age. Exit 3 if "
        "no monitor answers at the start.",
    )
    s.add_argument(
        "--url",
        default=env("TELESAFE_MONITOR_URL", "http://127.0.0.1:9108"),
        help="the monitor's HTTP address (env TELESAFE_MONITOR_URL; default %(default)s)",
    )
    s.add_argument("--once", action="store_true", help="print the view once and exit")
    s.add_argument(
        "--json", action="store_true", help="print the /status snapshot as JSON and exit"
    )
    s.add_argument(
        "--interval",
        type=seconds,
        default=0.5,
        metavar="SECONDS",
        help="refresh period (default %(default)s)",
    )
    s.set_defaults(func=status)


def _operators(spec: str | None) -> frozenset[str] | None:
    if not spec:
        return None
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"--operators: cannot read {path}: {exc.strerror}") from None
        ids = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    else:
        ids = [x.strip() for x in spec.split(",") if x.strip()]
    if not ids:
        raise ValueError("--operators names no operator")
    return frozenset(ids)


def _audit_sink(args: argparse.Namespace, publish: Any, metrics: MonitorMetrics) -> AuditSink:
    if not args.ledger:
        return KafkaMirrorSink(publish)
    from monitor.service.ledger_sink import open_ledger_sink

    return open_ledger_sink(
        args.ledger,
        args.signing_key,
        args.monitor_id,
        publish,
        metrics,
        verify_interval_s=args.ledger_verify_interval,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if args.workers > 1:
        from monitor.service.workers import Supervisor

        argv = sys.argv[sys.argv.index("run") + 1 :] if "run" in sys.argv else []
        return Supervisor(
            argv,
            args.workers,
            args.monitor_id,
            args.http_port,
            args.ledger,
            args.group_instance_id,
        ).run()
    logging.getLogger("kafka").setLevel(logging.ERROR)  # kafka-python's chatter drowns safety lines
    try:
        settings = settings_from_args(args)
        packs = PackRegistry.from_dir(args.rules, default=args.default_pack)
        operators = _operators(args.operators)
        keyring = Keyring.from_specs(args.trust_key) if args.trust_key else None
        signer = None
        if args.command_key:
            name, _, path = args.command_key.partition("=")
            if not name or not path:
                raise ValueError("--command-key must look like NAME=PATH")
            signer = Signer.from_file(name, path)
    except (ValueError, PolicyError, KeyFileError) as exc:
        print(f"telesafe run: {one_line(str(exc))}", file=sys.stderr)
        return 2
    if operators is None:
        log.warning(
            "no operator allow-list (--operators): ANY operator id may re-arm; "
            "configure one outside development"
        )
    recorder = None
    if args.record:
        from monitor.replay.recording import RecordingWriter

        recorder = RecordingWriter(args.record, args.monitor_id)
    opts = MonitorOptions(
        monitor_id=args.monitor_id,
        group_id=args.group_id,
        group_instance_id=args.group_instance_id,
        http_host=args.http_host,
        http_port=args.http_port,
        operators=operators,
        startup_lookback_s=args.startup_lookback,
    )
    holder: dict[str, MonitorService] = {}

    def publish_audit(entries: list[dict[str, Any]], encode: Any) -> None:
        svc = holder.get("svc")
        if svc is not None:
            svc.publisher.audit(entries, encode)

    # Everything local first (ledger, keys): a bad path fails at once, not after Kafka.
    metrics = MonitorMetrics()
    try:
        sink = _audit_sink(args, publish_audit, metrics)
    except Exception as exc:  # ledger in use, unusable path, wrong key...
        print(f"telesafe run: cannot start: {one_line(str(exc))}", file=sys.stderr)
        return 1
    if not _wait_for_kafka(settings, done_flag := threading.Event()):
        sink.stop()
        return 1
    try:
        svc = MonitorService(
            settings,
            packs,
            opts,
            sink,
            metrics=metrics,
            keyring=keyring,
            signer=signer.headers if signer else None,
            recorder=recorder.write if recorder else None,
        )
    except Exception as exc:  # broker gone again, port in use...
        print(f"telesafe run: cannot start: {_why(exc, args)}", file=sys.stderr)
        sink.stop()
        return 1
    holder["svc"] = svc
    done = done_flag
    log.debug("heap settled: %d start-up objects frozen out of GC scans", heap.settle())
    heap.observe_pauses(metrics.gc_pause)
    try:
        svc.start()
    except StartupError as exc:
        print(f"telesafe run: {exc}", file=sys.stderr)
        sink.stop()
        return 2
    try:
        while not done.wait(1.0):
            if svc.error is not None:
                log.error("monitor loop failed; exiting so the supervisor restarts the monitor")
                break
    finally:
        svc.stop()
        if recorder is not None:
            recorder.close()
    return 1 if svc.error is not None else 0


def _why(exc: Exception, args: argparse.Namespace) -> str:
    """One line for a start-up failure, naming the setting at fault where it is known."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (
            f"HTTP port {args.http_host}:{args.http_port} is already in use (another "
            "monitor?); choose another with --http-port (0: any free port)"
        )
    return one_line(str(exc))


def _wait_for_kafka(settings: KafkaSettings, done: threading.Event) -> bool:
    """Wait until a broker answers (a monitor started before Kafka waits, it does not
    crash-loop); False if interrupted first. SIGTERM/SIGINT set `done`."""
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    said = 0.0
    while not done.is_set():
        try:
            open_admin(settings, timeout_s=3.0).close()
            if said:
                log.info("Kafka at %s answers", settings.bootstrap_servers)
            return True
        except TransportError as exc:
            if time.monotonic() - said >= 30.0:
                log.warning("waiting for Kafka at %s (%s)", settings.bootstrap_servers, exc)
                said = time.monotonic()
        done.wait(1.0)
    return False


def status(args: argparse.Namespace) -> int:
    from monitor.service.statusview import status as show  # rich: only for this command

    return show(args)
