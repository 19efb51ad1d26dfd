"""What a procedure's latch looks like on the compacted `telesafe.state` topic.

The record crosses instances and software versions (a takeover, a rolling upgrade), so it is
a strict model like the ICD's: a new owner either reads exactly what the old one meant or
refuses the record. Unknown extra fields are ignored, so a newer writer can add fields; the
fields added after the first release have defaults, so records of that release still read.
A tombstone (no value) means "not latched": nobody may restore a latch for that procedure.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from monitor.errors import EngineLayerError
from monitor.icd.models import ProcedureId, SafeStop

AckResult = Literal["safe_stopped", "rejected", "failed"]


class LatchStateError(EngineLayerError, ValueError):
    """A `telesafe.state` value that is not a latch state this version understands."""


class LatchState(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore", frozen=True)

    v: Literal[1] = 1
    procedure_id: ProcedureId
    command: SafeStop = Field(description="the latched safe_stop; a new owner re-sends this id")
    rule: str
    resends: Annotated[int, Field(ge=0)] = 0
    ack_result: AckResult | None = None
    escalated: bool = False
    episode: Annotated[int, Field(ge=1)] = 1
    pack: str
    ended: bool = Field(False, description="the procedure has ended (ICD 1.1 §7)")
    end_reason: str | None = None
    seen_request_ids: dict[str, int] = Field(
        default_factory=dict,
        description="request_id -> requested_at of every re-arm/latch-close request seen "
        "for this latch: a replayed request is refused after a takeover too (ICD 1.1 §5.1)",
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, value: bytes) -> LatchState:
        """Decode a state-topic value. Raises LatchStateError with one readable sentence."""
        try:
            return cls.model_validate_json(value)
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "record"
            raise LatchStateError(f"latch state field {where}: {first['msg']}") from None
