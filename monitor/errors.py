"""The errors telesafe reports to a person, and every command's exit codes.

Every expected failure is a `TelesafeError`: one readable line that names what is wrong
and, where there is one, the fix. Each layer has one subclass below; the layer's own
exceptions (e.g. `monitor.audit.store.LedgerError`) derive from it, keeping their names
and any built-in base they had (a `PolicyError` is still a `ValueError`). `monitor.cli.main`
catches the root once, prints ``telesafe <command>: <message>`` on stderr and exits with
the error's `exit_code`, so no command keeps its own list of exceptions to catch.

Anything else escaping a command is a bug, and shows its traceback.
"""

from __future__ import annotations

from typing import ClassVar

# Exit codes of every `telesafe` command.
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and the answer is no: verification failed, re-arm rejected...
EXIT_USAGE = 2  # bad arguments, or input that cannot be read or used (file, key, pack)
EXIT_UNAVAILABLE = 3  # something it needs did not answer in time: Kafka, the monitor, Grafana
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


class TelesafeError(Exception):
    """An expected failure, told to the user in one line; `exit_code` is the command's."""

    exit_code: ClassVar[int] = EXIT_FAILED


class UsageError(TelesafeError):
    """Arguments that parse but cannot be used together or as given (any command)."""

    exit_code = EXIT_USAGE


class PolicyLayerError(TelesafeError):
    """Policy packs (`monitor.policy`): a pack file or directory that cannot be used."""

    exit_code = EXIT_USAGE


class AuditLayerError(TelesafeError):
    """The audit ledger, its keys, checkpoints and proofs (`monitor.audit`)."""

    exit_code = EXIT_USAGE


class KafkaLayerError(TelesafeError):
    """The local broker (`monitor.broker`) and the Kafka transport (`monitor.kafka`)."""


class EngineLayerError(TelesafeError):
    """The rules engine (`monitor.engine`)."""


class ServiceLayerError(TelesafeError):
    """The monitor service (`monitor.service`): it cannot start or serve as configured."""


class OperatorLayerError(TelesafeError):
    """The operator tools (`monitor.operator`: rearm, latch close, note)."""


class SimulatorLayerError(TelesafeError):
    """The site simulator (`monitor.sim`)."""


class ReplayLayerError(TelesafeError):
    """Recording and replay (`monitor.replay`): a recording that cannot be read."""

    exit_code = EXIT_USAGE


class ReportLayerError(TelesafeError):
    """The post-operative report (`monitor.report`)."""

    exit_code = EXIT_USAGE


class DashboardsLayerError(TelesafeError):
    """Grafana dashboards (`monitor.dashboards`): generation and upload."""


class SafetyLayerError(TelesafeError):
    """The safety case tools (`monitor.safety`): the hazard log."""

    exit_code = EXIT_USAGE


def one_line(message: str) -> str:
    """`message` on one line: its lines joined with "; " (after a line ending in ":", a
    space), so a wrapped or listing message keeps the one-line rule."""
    out = ""
    for part in (p.strip() for p in message.splitlines()):
        if part:
            out += ("" if not out else " " if out.endswith(":") else "; ") + part
    return out
