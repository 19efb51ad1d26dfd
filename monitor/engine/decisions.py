"""What the engine returns. Drivers publish commands and record events; nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from monitor.engine.latch_state import LatchState
from monitor.icd.models import Rearm, SafeStop


@dataclass(frozen=True, slots=True)
class SendCommand:
    """Publish this command on the safety-commands topic now."""

    command: SafeStop | Rearm
    resend: int = 0  # 0 for the first issue, n for the n-th re-send
    detected_mono_ns: int = 0  # when the breach was detected (for detection-latency metrics)
    breach_mono_ns: int = 0  # when the breach happened (record receipt or rule deadline)


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, for the audit ledger, metrics and replay output."""

    kind: str
    procedure_id: str | None
    mono_ns: int
    utc_ns: int
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublishLatch:
    """Publish this procedure's latch state on `telesafe.state` (None: a tombstone, the
    procedure is no longer latched and no instance may restore a latch for it)."""

    procedure_id: str
    state: LatchState | None
    mono_ns: int


Decision = SendCommand | Event | PublishLatch
