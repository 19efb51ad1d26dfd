"""Turn raw Kafka record bytes into validated ICD models, or a rejection with a reason (ICD §6).

Decoding never raises: every failure becomes a `Rejection` whose `reason` is one
plain sentence naming the field at fault, ready for the `telesafe-error` header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pydantic_core
from pydantic import TypeAdapter, ValidationError

from monitor.icd.models import (
    AnyOperator,
    AnyTelemetry,
    OperatorRequest,
    Site,
    TelemetryRecord,
)

MAX_RECORD_BYTES = 1024 * 1024  # ICD §6: larger than 1 MiB is invalid

_telemetry = TypeAdapter[AnyTelemetry](TelemetryRecord)
_operator = TypeAdapter[AnyOperator](OperatorRequest)


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    code: str = "schema"  # bounded class for metrics labels; `reason` carries the detail


def describe(err: ValidationError, limit: int = 3) -> str:
    """One readable sentence from a pydantic error: `field.path: message; ...`."""
    parts: list[str] = []
    for e in err.errors(include_url=False)[:limit]:
        # Drop the discriminator tag pydantic inserts into the location.
        loc = [str(p) for p in e["loc"]]
        if loc and e["type"] not in ("union_tag_invalid", "union_tag_not_found"):
            loc = loc[1:] if len(loc) > 1 else loc
        where = ".".join(loc) if loc else "record"
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "union_tag_invalid":
            where, msg = (
                "type",
                f"unknown record type {e['input'].get('type')!r}"
                if isinstance(e["input"], dict)
                else msg,
            )
        elif e["type"] == "union_tag_not_found":
            where, msg = "type", "required field is missing"
        parts.append(f"{where}: {msg}")
    more = err.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more problem(s)")
    return "invalid field " + "; ".join(parts)


def _parse(value: bytes | None) -> dict[str, Any] | Rejection:
    if value is None:
        return Rejection("empty record (no value)", "not_json")
    if len(value) > MAX_RECORD_BYTES:
        return Rejection(f"record is {len(value)} bytes, larger than the 1 MiB limit", "too_large")
    try:
        obj = pydantic_core.from_json(value, allow_inf_nan=False)
    except ValueError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection("record is not valid UTF-8", "not_utf8")
        if _parses_with_inf_nan(value):
            reason = f"record holds NaN or Infinity, which JSON does not allow: {exc}"
            return Rejection(reason, "not_json")
        return Rejection(f"record is not valid JSON: {exc}", "not_json")
    if not isinstance(obj, dict):
        return Rejection(f"record must be a JSON object, got {type(obj).__name__}", "not_object")
    return obj


def _parses_with_inf_nan(value: bytes) -> bool:
    """The record is JSON but for NaN/Infinity tokens (only asked on the rejection path)."""
    try:
        pydantic_core.from_json(value, allow_inf_nan=True)
    except ValueError:
        return False
    return True


def decode_telemetry(
    value: bytes | None, key: bytes | None, topic_site: Site
) -> AnyTelemetry | Rejection:
    obj = _parse(value)
    if isinstance(obj, Rejection):
        return obj
    try:
        rec = _telemetry.validate_python(obj)
    except ValidationError as err:
        return Rejection(describe(err))
    if rec.site != topic_site:
        return Rejection(
            f"site {rec.site!r} does not match the {topic_site} telemetry topic", "site_mismatch"
        )
    if key is None or key != rec.procedure_id.encode():
        return Rejection(
            f"record key {_show_key(key)} does not equal procedure_id {rec.procedure_id!r}",
            "key_mismatch",
        )
    return rec


def decode_operator(value: bytes | None, key: bytes | None) -> AnyOperator | Rejection:
    obj = _parse(value)
    if isinstance(obj, Rejection):
        return obj
    try:
        req = _operator.validate_python(obj)
    except ValidationError as err:
        return Rejection(describe(err))
    if key is None or key != req.procedure_id.encode():
        return Rejection(
            f"record key {_show_key(key)} does not equal procedure_id {req.procedure_id!r}",
            "key_mismatch",
        )
    return req


def _show_key(key: bytes | None) -> str:
    if key is None:
        return "(none)"
    try:
        return repr(key.decode())
    except UnicodeDecodeError:
        return "(not UTF-8)"
