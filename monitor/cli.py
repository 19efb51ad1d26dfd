"""`telesafe` command line: one subcommand per job, each in the module that owns the job.

Every command fails the same way: an expected failure is a `monitor.errors.TelesafeError`,
caught here once and printed as one line, ``telesafe <command>: <message>``, with the
error's exit code (the table is in `monitor/errors.py`). Bad arguments print the command's
usage and one such line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from monitor import __version__
from monitor.errors import (
    EXIT_INTERRUPTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    TelesafeError,
    one_line,
)

# Each module exposes `register(subparsers)`; its subcommands set `func(args) -> int`.
_COMMAND_MODULES = (
    "monitor.service.cli",  # run, status
    "monitor.sim.cli",  # simulate
    "monitor.operator.cli",  # rearm, latch close, note
    "monitor.policy.cli",  # policy check|explain|schema
    "monitor.replay.cli",  # record, replay
    "monitor.broker.cli",  # broker start|stop|status|topics|reset
    "monitor.audit.cli",  # audit ...
    "monitor.report.cli",  # report
    "monitor.dashboards.cli",  # dashboards generate|push
    "monitor.demo",  # demo
    "monitor.safety.cli",  # safety trace
)

# Where the Kafka client libraries log (monitor/kafka/confluent.py hands librdkafka the
# `telesafe.kafka` logger).
_CLIENT_LIBRARY_LOGGERS = ("telesafe.kafka", "kafka")

# The two spellings of the topic prefix: `broker` says --prefix, the Kafka clients
# --topic-prefix; every command accepts both.
_PREFIX_FLAGS = ("--topic-prefix", "--prefix")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        hint = f"(see `{self.prog} --help`)"
        self.exit(EXIT_USAGE, f"{self.short_usage()}\n{self.prog}: {message} {hint}\n")

    def short_usage(self) -> str:
        """The usage on one line: argparse's if short, else only what must be typed."""
        usage = " ".join(self.format_usage().split())
        if len(usage) <= 100:
            return usage
        fmt = self._get_formatter()
        required = [
            f"{a.option_strings[0]} {fmt._format_args(a, a.dest.upper())}"
            for a in self._actions
            if a.option_strings and a.required
        ]
        positional = [fmt._format_args(a, a.dest) for a in self._actions if not a.option_strings]
        return " ".join([f"usage: {self.prog}", *required, "[options]", *positional])


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every subcommand parser below it, depth first (aliases once)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from walk(child)


def _accept_both_prefix_spellings(parser: argparse.ArgumentParser) -> None:
    have = {flag: parser._option_string_actions.get(flag) for flag in _PREFIX_FLAGS}
    for flag, action in have.items():
        other = have[_PREFIX_FLAGS[1 - _PREFIX_FLAGS.index(flag)]]
        if action is None and other is not None:
            parser.add_argument(
                flag, dest=other.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="telesafe",
        description="Safety and compliance monitor for remote robot-assisted surgery (ICD 1.1).",
    )
    parser.add_argument("--version", action="version", version=f"telesafe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # that part is not in this build
                continue
            raise
        module.register(sub)
    for p in walk(parser):
        # The innermost parser wins: errors name the command that was typed.
        p.set_defaults(_parser=p)
        _accept_both_prefix_spellings(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command: argparse.ArgumentParser = getattr(args, "_parser", parser)
    if extra:  # reported by the command typed, with its usage (not the top level's)
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    if not getattr(args, "own_logging", False):
        _quiet_client_libraries()
    try:
        return int(func(args) or 0)
    except TelesafeError as exc:
        return _fail(command.prog, str(exc), exc.exit_code)
    except OSError as exc:  # a file or socket the command was pointed at
        if exc.filename:
            return _fail(command.prog, f"{exc.filename}: {exc.strerror or exc}", EXIT_USAGE)
        return _fail(command.prog, str(exc.strerror or exc), EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _quiet_client_libraries() -> None:
    """A tool (not the monitor, which sets up its own log) reports Kafka failures itself,
    in one line: the client libraries' own lines (librdkafka's through `telesafe.kafka`, a
    retry line per reconnect attempt; kafka-python's through `kafka`) would bury it.
    TELESAFE_LOG_LEVEL=DEBUG shows them."""
    if os.environ.get("TELESAFE_LOG_LEVEL", "").upper() == "DEBUG":
        logging.basicConfig(level=logging.DEBUG)
        return
    for name in _CLIENT_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: {one_line(message)}", file=sys.stderr, flush=True)
    return code


def run_group(group: str, argv: Sequence[str] | None) -> int:
    """Standalone entry point of one command group (`python -m monitor.<group>...`)."""
    return main([group, *(sys.argv[1:] if argv is None else argv)])
