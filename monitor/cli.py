"""`telesafe` command line: one subcommand per job, each in the module that owns the job."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from monitor import __version__

# Each module exposes `register(subparsers)`; its subcommands set `func(args) -> int`.
_COMMAND_MODULES = (
    "monitor.service.cli",  # run, status
    "monitor.sim.cli",  # simulate
    "monitor.operator.cli",  # rearm, note
    "monitor.policy.cli",  # policy check|explain|schema
    "monitor.replay.cli",  # record, replay
    "monitor.broker.cli",  # broker start|stop|status|topics
    "monitor.audit.cli",  # audit ...
    "monitor.report.cli",  # report
    "monitor.dashboards.cli",  # dashboards generate|push
    "monitor.demo",  # demo
    "monitor.safety.cli",  # safety trace
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="telesafe",
        description="Safety and compliance monitor for remote robot-assisted surgery (ICD v1).",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
