"""The committed ICD schemas match the models, and every example in docs/icd.md is valid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from pydantic import TypeAdapter

from monitor.icd import schemas
from monitor.icd.decode import Rejection, decode_operator, decode_telemetry
from monitor.icd.models import Command

DOC = Path(__file__).resolve().parents[2] / "docs" / "icd.md"
BLOCK = re.compile(r"<!-- schema: (\w+) -->\s*```json\n(.*?)```", re.S)


def examples() -> list[tuple[str, dict[str, object]]]:
    found = [(name, json.loads(body)) for name, body in BLOCK.findall(DOC.read_text())]
    assert len(found) >= len(schemas.EXPORTED), "docs/icd.md lost examples"
    return found


@pytest.mark.parametrize("name", sorted(schemas.EXPORTED))
def test_committed_schema_matches_model(name: str) -> None:
    committed = (schemas.SCHEMA_DIR / f"{name}.json").read_text()
    assert committed == schemas.render(name), (
        f"docs/schemas/{name}.json drifted from the model: run python -m monitor.icd.schemas"
    )


def test_every_model_has_an_example() -> None:
    assert {n for n, _ in examples()} == set(schemas.EXPORTED)


@pytest.mark.parametrize(
    ("name", "example"), examples(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_doc_example_is_valid(name: str, example: dict[str, object]) -> None:
    schema = json.loads((schemas.SCHEMA_DIR / f"{name}.json").read_text())
    jsonschema.validate(example, schema, cls=jsonschema.Draft202012Validator)
    raw = json.dumps(example).encode()
    pid = str(example["procedure_id"]).encode()
    if "site" in example:
        rec = decode_telemetry(raw, pid, example["site"])  # type: ignore[arg-type]
        assert not isinstance(rec, Rejection), rec
    elif name in ("rearm_request", "latch_close", "note"):
        req = decode_operator(raw, pid)
        assert not isinstance(req, Rejection), req
    else:
        TypeAdapter(Command).validate_python(example)


def test_schema_rejects_what_the_decoder_rejects() -> None:
    schema = json.loads((schemas.SCHEMA_DIR / "heartbeat.json").read_text())
    bad = {
        "v": 1,
        "type": "heartbeat",
        "procedure_id": "P",
        "site": "robot",
        "seq": "1",
        "sent_at": 1,
        "state": "operating",
        "clock": {"source": "ptp", "offset_ns": 0, "max_error_ns": 1},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    assert isinstance(decode_telemetry(json.dumps(bad).encode(), b"P", "robot"), Rejection)
