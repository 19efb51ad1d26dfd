"""JSON Schemas of every ICD model, exported to docs/schemas/ (a test catches drift).

Regenerate with `python -m monitor.icd.schemas`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from monitor.icd import models

EXPORTED: dict[str, type[BaseModel]] = {
    "procedure_start": models.ProcedureStart,
    "heartbeat": models.Heartbeat,
    "latency": models.Latency,
    "link": models.Link,
    "kinematics": models.Kinematics,
    "safe_stop_ack": models.SafeStopAck,
    "procedure_end": models.ProcedureEnd,
    "safe_stop": models.SafeStop,
    "monitor_heartbeat": models.MonitorHeartbeat,
    "rearm": models.Rearm,
    "rearm_request": models.RearmRequest,
    "latch_close": models.LatchClose,
    "note": models.Note,
}
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def schema_of(name: str) -> dict[str, Any]:
    # Validation mode: the schema describes what the monitor accepts on the wire.
    out = EXPORTED[name].model_json_schema(mode="validation")
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["$id"] = f"https://telesafe.example/icd/v1/{name}.json"
    return out


def render(name: str) -> str:
    return json.dumps(schema_of(name), indent=2, sort_keys=True) + "\n"


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in EXPORTED:
        path = directory / f"{name}.json"
        path.write_text(render(name))
        written.append(path)
    return written


if __name__ == "__main__":
    for p in export():
        print(p)
