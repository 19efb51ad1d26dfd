"""The ICD §9 recording format: one received record per JSON line.

`received_at` is the monitor's UTC clock in ns at receipt. Replay uses it as both the
monotonic and the UTC clock, so timings relative to `received_at` are reproduced exactly.

Beyond ICD §9, a line may carry `monitor_id`: the id of the monitor that received the
record (`run --record`), or that owned its procedure when `telesafe record` saw it.
Command ids are derived from the monitor id, so replay takes it from the recording to
issue the live run's command ids (and so match the robot's recorded acknowledgements).
An ICD §9 reader ignores the extra field; a line without it reads as before.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from monitor.engine.clock import Instant
from monitor.errors import ReplayLayerError
from monitor.icd.decode import MAX_RECORD_BYTES


@dataclass(frozen=True)
class RecordedRecord:
    received_at: int
    topic: str
    key: bytes | None
    value: bytes | None
    monitor_id: str | None = None  # who received it (absent in older recordings)


def encode_line(
    received_at: int,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    monitor_id: str | None = None,
) -> str:
    line: dict[str, Any] = {
        "received_at": received_at,
        "topic": topic,
        "key": key.decode("utf-8", "replace") if key is not None else None,
    }
    if monitor_id is not None:
        line["monitor_id"] = monitor_id
    try:
        # Keep `value` only when replaying its compact re-encoding is judged exactly as the
        # live bytes were: strict UTF-8 (json.loads(bytes) would also take UTF-16/32 and a
        # BOM), within the size limit (re-encoding drops whitespace) and finite (NaN, or
        # 1e400 read as inf, would come back as NaN/Infinity). Anything else stays raw.
        if value is None or len(value) > MAX_RECORD_BYTES:
            raise ValueError
        obj = json.loads(value.decode("utf-8"))
        if not isinstance(obj, dict):
            raise ValueError
        json.dumps(obj, allow_nan=False)
        line["value"] = obj
    except (ValueError, UnicodeDecodeError, RecursionError):
        line["value_raw"] = base64.b64encode(value or b"").decode()
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


class RecordingWriter:
    """Thread-safe appender used by the monitor's ingest thread (`run --record`); every
    line names `monitor_id`, the recording monitor."""

    def __init__(self, path: str | Path, monitor_id: str | None = None) -> None:
        self._f: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        self.monitor_id = monitor_id

    def write(self, now: Instant, topic: str, key: bytes | None, value: bytes | None) -> None:
        line = encode_line(now.utc_ns, topic, key, value, self.monitor_id)
        with self._lock:
            self._f.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._f.close()


class RecordingError(ReplayLayerError, ValueError):
    """A recording that cannot be read (the message names the file and line)."""


def read_recording(path: str | Path) -> Iterator[RecordedRecord]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                received_at = obj["received_at"]
                topic = obj["topic"]
                if not isinstance(received_at, int) or not isinstance(topic, str):
                    raise KeyError("received_at/topic")
            except (ValueError, KeyError) as exc:
                raise RecordingError(f"{path}:{n}: not a recording line ({exc})") from None
            key = obj.get("key")
            mid = obj.get("monitor_id")
            if "value_raw" in obj:
                value = base64.b64decode(obj["value_raw"])
            else:
                # Re-encode compactly; the engine judges content, not the original spacing.
                value = json.dumps(obj.get("value"), separators=(",", ":")).encode()
            yield RecordedRecord(
                received_at,
                topic,
                key.encode() if key is not None else None,
                value,
                mid if isinstance(mid, str) and mid else None,
            )


def recorded_monitor_id(path: str | Path) -> str | None:
    """The first `monitor_id` a line of the recording names (None: an older recording,
    or no monitor was seen); reads only as far as that line."""
    for r in read_recording(path):
        if r.monitor_id is not None:
            return r.monitor_id
    return None
