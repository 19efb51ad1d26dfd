"""Canonical JSON bytes for ledger leaves.

Sorted keys, UTF-8 (no \\u escapes for non-ASCII), no insignificant whitespace. Floats
are allowed and written with Python's shortest round-trip repr, which is deterministic;
NaN and infinities are rejected because JSON cannot represent them. Non-string keys are
rejected rather than silently stringified ({1: x} and {"1": x} must not collide).
"""

from __future__ import annotations

import json
import math
from typing import Any

from monitor.errors import AuditLayerError

_encoder = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


class CanonicalError(AuditLayerError, ValueError):
    """The value cannot be encoded canonically."""


def _check(value: Any, path: str, depth: int) -> None:
    if depth > 64:
        raise CanonicalError(f"{path}: nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalError(f"{path}: NaN/Infinity cannot be encoded")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CanonicalError(f"{path}: key {k!r} is not a string")
            _check(v, f"{path}.{k}", depth + 1)
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check(v, f"{path}[{i}]", depth + 1)
        return
    raise CanonicalError(f"{path}: type {type(value).__name__} is not JSON")


def canonical_json(value: Any) -> bytes:
    """Deterministic bytes for a JSON-compatible value."""
    _check(value, "$", 0)
    try:
        return _encoder.encode(value).encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise CanonicalError(f"string is not valid Unicode: {exc}") from exc
