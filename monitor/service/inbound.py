"""What the ingest thread hands the engine thread: decoded records stamped on arrival."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitor.engine.clock import Instant
from monitor.icd.models import AnyOperator, AnyTelemetry


@dataclass(frozen=True, slots=True)
class Rejected:
    procedure_id: str | None
    site: str | None


@dataclass(frozen=True, slots=True)
class Restore:
    """A latched procedure whose partition was just assigned here (from the state topic)."""

    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Release:
    """A procedure whose partition moved to another instance."""

    procedure_id: str


@dataclass(frozen=True, slots=True)
class Deaf:
    """The consumer could not hear between these monotonic times (a poll overran)."""

    start_ns: int
    end_ns: int


Item = AnyTelemetry | AnyOperator | Rejected | Restore | Release | Deaf


@dataclass(frozen=True, slots=True)
class Batch:
    received: Instant
    items: list[Item]
    newest_broker_ms: int  # broker timestamp of the newest record, for lag
