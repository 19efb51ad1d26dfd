"""What the ingest thread hands the engine thread: decoded records stamped on arrival."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.engine.clock import Instant
from monitor.icd.models import AnyOperator, AnyTelemetry


@dataclass(frozen=True, slots=True)
class Rejected:
    procedure_id: str | None
    site: str | None


Item = AnyTelemetry | AnyOperator | Rejected


@dataclass(frozen=True, slots=True)
class Batch:
    received: Instant
    items: list[Item]
    newest_broker_ms: int  # broker timestamp of the newest record, for lag
