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
from monitor.icd.topics import Topics

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = DOCS / "icd.md"
NORMATIVE = DOCS / "ICD-1.1.md"
# `<!-- schema: NAME -->`, or `<!-- schema: NAME; pending: WHAT -->` for an example the ICD
# specifies before the model exists (it is skipped, naming WHAT, until the model lands).
BLOCK = re.compile(r"<!-- schema: (\w+)(?:; pending: ([^>]*?))? -->\s*```json\n(.*?)```", re.S)
OPERATOR_REQUESTS = ("rearm_request", "note", "latch_close")


def examples() -> list[tuple[str, str, dict[str, object]]]:
    """(schema name, pending reason or "", example) for every example in docs/icd.md."""
    found = [(n, pending, json.loads(body)) for n, pending, body in BLOCK.findall(DOC.read_text())]
    assert len(found) >= len(schemas.EXPORTED), "docs/icd.md lost examples"
    return found


@pytest.mark.parametrize("name", sorted(schemas.EXPORTED))
def test_committed_schema_matches_model(name: str) -> None:
    committed = (schemas.SCHEMA_DIR / f"{name}.json").read_text()
    assert committed == schemas.render(name), (
        f"docs/schemas/{name}.json drifted from the model: run python -m monitor.icd.schemas"
    )


def test_every_model_has_an_example() -> None:
    names = [n for n, _, _ in examples()]
    assert len(names) == len(set(names)), "one example per record type"
    pending = {n for n, why, _ in examples() if why and n not in schemas.EXPORTED}
    assert set(names) - pending == set(schemas.EXPORTED)


@pytest.mark.parametrize(
    ("name", "pending", "example"),
    examples(),
    ids=[n for n, _, _ in examples()],
)
def test_doc_example_is_valid(name: str, pending: str, example: dict[str, object]) -> None:
    if pending:
        assert name not in schemas.EXPORTED, (
            f"the {name} model has landed: remove '; pending: {pending}' from docs/icd.md"
        )
        pytest.skip(f"waits for {pending}")
    schema = json.loads((schemas.SCHEMA_DIR / f"{name}.json").read_text())
    jsonschema.validate(example, schema, cls=jsonschema.Draft202012Validator)
    raw = json.dumps(example).encode()
    pid = str(example["procedure_id"]).encode()
    if "site" in example:
        rec = decode_telemetry(raw, pid, example["site"])  # type: ignore[arg-type]
        assert not isinstance(rec, Rejection), rec
    elif name in OPERATOR_REQUESTS:
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


def test_the_repository_carries_the_normative_icd() -> None:
    """docs/ICD-1.1.md is the ICD 1.1 text; it names every record, command, request and
    ICD topic the monitor implements, and docs/icd.md points to it."""
    text = NORMATIVE.read_text()
    assert "Interface Control Document (ICD), version 1.1" in text
    for name in [*schemas.EXPORTED, "latch_close"]:
        assert f"`{name}`" in text, name
    for topic in Topics("").all():
        if topic != Topics("").state:  # the monitor's own topic, not part of the ICD
            assert f"`{topic}`" in text, topic
    assert "(ICD-1.1.md)" in DOC.read_text()
    assert "shared/ICD.md" not in DOC.read_text()
