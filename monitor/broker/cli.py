"""``telesafe broker {start,stop,status,topics,reset}``.

``register(sub)`` adds the ``broker`` command to the main CLI's subparsers; each leaf
parser sets ``func`` (``Callable[[argparse.Namespace], int]``) returning the exit code.
``main(argv)`` runs this command group standalone (``python -m monitor.broker.cli``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from monitor.argtypes import port, positive_int, seconds
from monitor.broker import runtime, secure, server
from monitor.broker.runtime import BrokerError
from monitor.broker.topics import DEFAULT_PARTITIONS, TopicReport, ensure_topics
from monitor.errors import UsageError


def _say(msg: str) -> None:
    print(msg, flush=True)


def _report_topics(report: TopicReport) -> None:
    if report.created:
        _say(f"created {len(report.created)} topic(s) with {report.partitions} partitions:")
        for name in report.created:
            _say(f"  {name}")
    if report.existing:
        _say(f"{len(report.existing)} topic(s) already present ({report.partitions} partitions)")
    for name in report.altered:
        _say(f"  {name}: now stamped with broker append time (message.timestamp.type)")


def _secure_material(args: argparse.Namespace) -> secure.SecureBroker | None:
    """The secured broker's material when ``--secure`` was given (created on first use)."""
    if not getattr(args, "secure", False):
        return None
    ddir = args.data_dir or server.default_data_dir()
    if getattr(args, "ca_dir", None) is None and secure.load(ddir) is None:
        _say(f"creating a test CA and SCRAM users in {secure.secure_dir(ddir)}")
    return secure.prepare(ddir, ca_dir=getattr(args, "ca_dir", None))


def _cmd_start(args: argparse.Namespace) -> int:
    security = _secure_material(args)
    res = server.start(
        args.data_dir,
        port=args.port,
        controller_port=args.controller_port,
        partitions=args.partitions,
        prefix=args.prefix,
        create_topics=not args.no_topics,
        timeout_s=args.timeout,
        progress=_say,
        security=security,
    )
    if res.topics is not None:
        _report_topics(res.topics)
    state = "was already running" if res.already_running else "started"
    pid = f" (pid {res.pid})" if res.pid else ""
    _say(f"broker {state} on {res.bootstrap}{pid}; ready after {res.elapsed_s:.1f} s")
    if security is not None:
        admin = security.client_settings(res.bootstrap, secure.ADMIN_USER)
        grants = secure.telesafe_grants(args.prefix, monitor_group=args.monitor_group)
        secure.create_acls(admin, grants)
        ddir = args.data_dir or server.default_data_dir()
        _say(f"SASL_SSL + SCRAM-SHA-512; {len(grants)} ACLs for prefix {args.prefix or '-'!r}")
        _say(f"  CA (--ssl-cafile): {security.ca.ca_cert}")
        _say(f"  users {', '.join(security.users)}; passwords in "
             f"{secure.secure_dir(ddir) / secure.CREDENTIALS_FILE}")  # fmt: skip
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    ddir = args.data_dir or server.default_data_dir()
    _say(f"stopping the broker started from {ddir}…")
    pid = server.stop(args.data_dir, timeout_s=args.timeout)
    if pid is None:
        st = server.status(args.data_dir, args.port)
        if st.answers:
            raise BrokerError(
                f"no broker pid file in {ddir}, but a broker answers on {st.bootstrap}: "
                "it was started elsewhere (another data dir?); not stopping it"
            )
        _say("no broker was running")
        return 0
    _say(f"stopped broker pid {pid}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    security = None
    if args.secure:
        security = secure.load(args.data_dir or server.default_data_dir())
        if security is None:
            raise UsageError(
                "no secured-broker material in the data dir (start it with --secure first)"
            )
    st = server.status(args.data_dir, args.port, security=security)
    if args.json:
        print(
            json.dumps(
                {
                    "running": st.running,
                    "answers": st.answers,
                    "pid": st.pid,
                    "bootstrap": st.bootstrap,
                    "data_dir": str(st.data_dir),
                    "log_file": str(st.log_file) if st.log_file else None,
                    "topics": st.topics,
                },
                indent=2,
            )
        )
    else:
        _say(f"data dir : {st.data_dir}")
        _say(f"process  : {'running, pid ' + str(st.pid) if st.running else 'not running'}")
        _say(f"bootstrap: {st.bootstrap} ({'answers' if st.answers else 'no answer'})")
        if st.answers:
            user = [t for t in st.topics if not t.startswith("__")]
            _say(f"topics   : {len(user)}")
        if st.log_file:
            _say(f"log      : {st.log_file}")
    # Exit 0 only when clients can use the broker (handy in scripts: `status && ...`).
    return 0 if st.answers else 3


def _cmd_topics(args: argparse.Namespace) -> int:
    report = ensure_topics(args.bootstrap, prefix=args.prefix, partitions=args.partitions)
    _report_topics(report)
    return 0


def _cmd_reset(args: argparse.Namespace) -> int:
    if not args.yes:
        raise UsageError("reset deletes all topics and records; pass --yes to confirm")
    ddir = server.reset(args.data_dir)
    _say(f"deleted {ddir}")
    return 0


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="broker data folder (default: $TELESAFE_KAFKA_DIR or ./.telesafe/kafka)",
    )


def _add_port(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--port",
        type=port,
        default=server.DEFAULT_PORT,
        help=f"client (PLAINTEXT) port on 127.0.0.1 (default {server.DEFAULT_PORT})",
    )


def _add_secure_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--secure",
        action="store_true",
        help="SASL_SSL client listener (SCRAM-SHA-512, test CA) with ACLs; see docs/security.md",
    )


def _add_topic_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prefix",
        "--topic-prefix",
        dest="prefix",
        default=os.environ.get("TELESAFE_TOPIC_PREFIX", ""),
        help="prefix prepended to every ICD topic name, as the other commands' --topic-prefix "
        "(env TELESAFE_TOPIC_PREFIX; default: none)",
    )
    p.add_argument(
        "--partitions",
        type=positive_int,
        default=DEFAULT_PARTITIONS,
        help=f"partitions per new topic, equal for all (default {DEFAULT_PARTITIONS})",
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``broker`` and its subcommands to the main CLI's subparsers."""
    broker = sub.add_parser(
        "broker",
        help="run a local Apache Kafka broker (single-node KRaft) for development",
        description=(
            f"Local Apache Kafka {runtime.KAFKA_VERSION} broker from Maven Central jars "
            "(needs java 17+, and mvn on first start). Binds 127.0.0.1 only."
        ),
    )
    bsub = broker.add_subparsers(dest="broker_command", metavar="{start,stop,status,topics,reset}")
    broker.set_defaults(func=lambda _a: _usage(broker))

    p = bsub.add_parser(
        "start",
        help="start the broker (or reuse a running one) and create the ICD topics",
        description=(
            "Start the broker detached; the first run downloads the jars with Maven. "
            "Idempotent: if a broker already answers, only the topics are ensured."
        ),
    )
    _add_data_dir(p)
    _add_port(p)
    p.add_argument(
        "--controller-port",
        type=port,
        default=server.DEFAULT_CONTROLLER_PORT,
        help=f"KRaft controller port on 127.0.0.1 (default {server.DEFAULT_CONTROLLER_PORT})",
    )
    _add_topic_opts(p)
    p.add_argument("--no-topics", action="store_true", help="do not create the ICD topics")
    _add_secure_flag(p)
    p.add_argument(
        "--ca-dir",
        type=Path,
        default=None,
        help="with --secure: a test CA made by monitor.broker.secure.make_test_ca "
        "(default: one generated in <data dir>/secure/ca)",
    )
    p.add_argument(
        "--monitor-group",
        default=secure.DEFAULT_MONITOR_GROUP,
        help="with --secure: consumer group the monitor principal may use (default %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=server.START_TIMEOUT_S,
        help="seconds to wait for the broker to answer (default %(default)s)",
    )
    p.set_defaults(func=_cmd_start)

    p = bsub.add_parser(
        "stop",
        help="stop the broker started from the data dir",
        description="SIGTERM (controlled shutdown), then SIGKILL after --timeout seconds.",
    )
    _add_data_dir(p)
    _add_port(p)
    p.add_argument(
        "--timeout",
        type=seconds,
        default=server.STOP_TIMEOUT_S,
        help="seconds before SIGKILL (default %(default)s)",
    )
    p.set_defaults(func=_cmd_stop)

    p = bsub.add_parser(
        "status",
        help="show whether the broker runs and answers (exit 0 if it answers, else 3)",
        description="Report pid, port, whether a broker answers, and the topic count.",
    )
    _add_data_dir(p)
    _add_port(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    _add_secure_flag(p)
    p.set_defaults(func=_cmd_status)

    p = bsub.add_parser(
        "topics",
        help="create the ICD topics if missing (idempotent) and check co-partitioning",
        description=(
            "Create telesafe.telemetry.{console,robot}, telesafe.operator, "
            "telesafe.safety.commands, telesafe.audit, telesafe.deadletter and "
            "telesafe.state with one partition count; fail if existing telemetry, operator "
            "or state topics disagree."
        ),
    )
    p.add_argument(
        "--bootstrap",
        default=server.bootstrap_address(),
        help="broker address (default %(default)s)",
    )
    _add_topic_opts(p)
    p.set_defaults(func=_cmd_topics)

    p = bsub.add_parser(
        "reset",
        help="delete the data dir (all topics and records); the broker must be stopped",
        description="Delete the broker data dir. The next start formats fresh storage.",
    )
    _add_data_dir(p)
    p.add_argument("--yes", action="store_true", help="confirm the deletion")
    p.set_defaults(func=_cmd_reset)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m monitor.broker.cli broker start``."""
    from monitor.cli import main as telesafe

    return telesafe(argv)


if __name__ == "__main__":
    sys.exit(main())
