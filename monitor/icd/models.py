"""pydantic v2 models of every ICD v1 record, command and operator request.

Strict on purpose: ICD §3 says a missing or ill-typed field makes a record
invalid, so "5" is not a seq and 5.0 is not a timestamp. Unknown fields are
ignored for forward compatibility.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

PROCEDURE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ICD_VERSION = 1


def _exact_int(value: Any) -> Any:
    # JSON true or 1.0 would otherwise pass as the integer 1.
    if type(value) is not int:
        kind = "a boolean" if isinstance(value, bool) else f"a {type(value).__name__}"
        raise ValueError(f"must be the integer 1, not {kind}")
    return value


Version = Annotated[Literal[1], BeforeValidator(_exact_int)]
ProcedureId = Annotated[str, StringConstraints(pattern=PROCEDURE_ID_PATTERN)]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
RequestId = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
Vec3 = Annotated[list[float], Field(min_length=3, max_length=3)]
Site = Literal["console", "robot"]
SITES: tuple[Site, ...] = ("console", "robot")


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore", frozen=True)


class _Telemetry(_Wire):
    """Common fields of every §3 record."""

    v: Version
    procedure_id: ProcedureId
    site: Site
    seq: NonNegInt
    sent_at: int = Field(description="site clock, ns since the Unix epoch (UTC)")


class RobotInfo(_Wire):
    model: str
    serial: str


class ProcedureStart(_Telemetry):
    type: Literal["procedure_start"]
    surgeon_id: str
    robot: RobotInfo
    arms: list[str]
    policy: str | None = None


class ClockState(_Wire):
    source: Literal["ptp", "ntp", "none"]
    offset_ns: int = Field(description="estimated offset of the site clock from UTC")
    max_error_ns: int


SiteState = Literal["idle", "operating", "hold", "safe_stopped", "fault"]


class Heartbeat(_Telemetry):
    type: Literal["heartbeat"]
    state: SiteState
    clock: ClockState


class Latency(_Telemetry):
    type: Literal["latency"]
    channel: Literal["control", "video"]
    samples_ms: Annotated[list[NonNegFloat], Field(min_length=1)]


class Link(_Telemetry):
    type: Literal["link"]
    rtt_ms: NonNegFloat
    jitter_ms: NonNegFloat
    loss_ratio: Annotated[float, Field(ge=0, le=1)]
    window_ms: Annotated[float, Field(gt=0)]


class KinematicSample(_Wire):
    t: int = Field(description="site clock, ns")
    p: Vec3 = Field(description="tool-tip position, mm, in the arm's RCM frame")
    v: Vec3 | None = Field(default=None, description="velocity, mm/s")
    f: float | None = Field(default=None, description="grip force, N")


class Kinematics(_Telemetry):
    type: Literal["kinematics"]
    arm: NonEmptyStr
    samples: Annotated[list[KinematicSample], Field(min_length=1)]


class SafeStopAck(_Telemetry):
    type: Literal["safe_stop_ack"]
    command_id: NonEmptyStr
    result: Literal["safe_stopped", "rejected", "failed"]
    at: int


class ProcedureEnd(_Telemetry):
    type: Literal["procedure_end"]
    reason: Literal["completed", "converted_to_local", "aborted"]


TelemetryRecord = Annotated[
    ProcedureStart | Heartbeat | Latency | Link | Kinematics | SafeStopAck | ProcedureEnd,
    Field(discriminator="type"),
]
TELEMETRY_TYPES: tuple[type[_Telemetry], ...] = (
    ProcedureStart,
    Heartbeat,
    Latency,
    Link,
    Kinematics,
    SafeStopAck,
    ProcedureEnd,
)


# §4 commands (monitor -> robot)


class PolicyRef(_Wire):
    pack: str
    version: str
    rule: str
    hash: str | None = Field(default=None, description="sha256 of the pack (telesafe extension)")


Observed = float | dict[str, Any]


class SafeStop(_Wire):
    v: Version = 1
    type: Literal["safe_stop"] = "safe_stop"
    command_id: NonEmptyStr
    procedure_id: ProcedureId
    issued_at: int
    monitor_id: NonEmptyStr
    policy: PolicyRef
    observed: Observed
    threshold: Observed
    reason: NonEmptyStr


MonitorStatus = Literal["armed", "warning", "safe_stop_latched"]


class MonitorHeartbeat(_Wire):
    v: Version = 1
    type: Literal["monitor_heartbeat"] = "monitor_heartbeat"
    procedure_id: ProcedureId
    seq: NonNegInt
    issued_at: int
    monitor_id: NonEmptyStr
    status: MonitorStatus


class Rearm(_Wire):
    v: Version = 1
    type: Literal["rearm"] = "rearm"
    command_id: NonEmptyStr
    procedure_id: ProcedureId
    issued_at: int
    operator_id: NonEmptyStr
    reason: NonEmptyStr


Command = Annotated[SafeStop | MonitorHeartbeat | Rearm, Field(discriminator="type")]


# §5 operator requests (operator tools -> monitor)


class _LatchRequest(_Wire):
    """ICD 1.1 §5.1/§5.3: a request that acts on one latch, once, while it is fresh."""

    v: Version
    procedure_id: ProcedureId
    operator_id: NonEmptyStr
    reason: NonEmptyStr
    requested_at: int = Field(description="ns, the operator tool's UTC clock")
    command_id: NonEmptyStr = Field(description="the safe_stop command id of the latch")
    request_id: RequestId = Field(description="UUID, unique per request")


class RearmRequest(_LatchRequest):
    type: Literal["rearm_request"]


class LatchClose(_LatchRequest):
    """Retire the unacknowledged latch of a procedure that has ended (ICD 1.1 §5.3)."""

    type: Literal["latch_close"]


class Note(_Wire):
    v: Version
    type: Literal["note"]
    procedure_id: ProcedureId
    operator_id: NonEmptyStr
    text: NonEmptyStr


OperatorRequest = Annotated[RearmRequest | LatchClose | Note, Field(discriminator="type")]

AnyTelemetry = ProcedureStart | Heartbeat | Latency | Link | Kinematics | SafeStopAck | ProcedureEnd
AnyOperator = RearmRequest | LatchClose | Note
