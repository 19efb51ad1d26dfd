"""ICD §6: every kind of invalid input is a Rejection with a specific reason; valid records
of every type decode."""

from __future__ import annotations

import json
from typing import Any

import pytest

from monitor.icd.decode import MAX_RECORD_BYTES, Rejection, decode_operator, decode_telemetry
from monitor.icd.models import (
    Heartbeat,
    Kinematics,
    LatchClose,
    Latency,
    Link,
    Note,
    ProcedureEnd,
    ProcedureStart,
    RearmRequest,
    SafeStopAck,
)

KEY = b"P-1"


def common(type_: str, site: str = "robot", **fields: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "type": type_,
        "procedure_id": "P-1",
        "site": site,
        "seq": 7,
        "sent_at": 1_770_000_000_000_000_000,
        **fields,
    }


VALID: dict[str, tuple[dict[str, Any], type]] = {
    "procedure_start": (
        common(
            "procedure_start",
            "console",
            surgeon_id="s1",
            robot={"model": "m", "serial": "x"},
            arms=["psm1", "ecm"],
            policy="demo-forbidden-zone",
        ),
        ProcedureStart,
    ),
    "heartbeat": (
        common(
            "heartbeat",
            state="operating",
            clock={"source": "ptp", "offset_ns": -12, "max_error_ns": 100},
        ),
        Heartbeat,
    ),
    "latency": (common("latency", channel="control", samples_ms=[48, 49.5, 0]), Latency),
    "link": (
        common("link", rtt_ms=48, jitter_ms=1.5, loss_ratio=0, window_ms=1000),
        Link,
    ),
    "kinematics": (
        common(
            "kinematics",
            arm="psm1",
            samples=[
                {"t": 1, "p": [0, 0, -100], "v": [1, 2, 3], "f": 2.5},
                {"t": 2, "p": [0.1, 0, -100]},
            ],
        ),
        Kinematics,
    ),
    "safe_stop_ack": (
        common("safe_stop_ack", command_id="c-1", result="safe_stopped", at=5),
        SafeStopAck,
    ),
    "procedure_end": (
        common("procedure_end", "console", reason="converted_to_local"),
        ProcedureEnd,
    ),
}


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_records_of_every_type_decode(name: str) -> None:
    obj, cls = VALID[name]
    rec = decode_telemetry(enc(obj), KEY, obj["site"])
    assert isinstance(rec, cls), rec
    assert rec.seq == 7 and rec.procedure_id == "P-1"


def test_unknown_extra_fields_are_ignored() -> None:
    obj = {**VALID["heartbeat"][0], "future": {"x": [1, 2]}, "note": "hi"}
    assert isinstance(decode_telemetry(enc(obj), KEY, "robot"), Heartbeat)


def test_kinematics_v_and_f_are_optional() -> None:
    rec = decode_telemetry(enc(VALID["kinematics"][0]), KEY, "robot")
    assert isinstance(rec, Kinematics)
    assert rec.samples[1].v is None and rec.samples[1].f is None


def test_exactly_1_mib_is_accepted() -> None:
    obj = VALID["heartbeat"][0]
    body = enc(obj)
    pad = MAX_RECORD_BYTES - len(body)
    value = body[:-1] + b" " * pad + b"}"
    assert len(value) == MAX_RECORD_BYTES
    assert isinstance(decode_telemetry(value, KEY, "robot"), Heartbeat)


def rejected(value: bytes | None, key: bytes | None = KEY, site: str = "robot") -> Rejection:
    r = decode_telemetry(value, key, site)  # type: ignore[arg-type]
    assert isinstance(r, Rejection), r
    assert r.reason.strip() and "\n" not in r.reason  # one sentence, fit for a header
    return r


HB = VALID["heartbeat"][0]


@pytest.mark.parametrize("value", [b"{not json", b"hello", b'{"v": 1', b'{"v": nan}'])
def test_not_json(value: bytes) -> None:
    r = rejected(value)
    assert r.code == "not_json" and r.reason.startswith("record is not valid JSON: ")
    assert "NaN" not in r.reason and "Infinity" not in r.reason  # only said when it applies


def test_no_value() -> None:
    assert rejected(None).code == "not_json"


def test_not_utf8() -> None:
    r = rejected(b'{"v": 1, "type": "heartbeat", "x": "\xff\xfe"}')
    assert r.code == "not_utf8" and "UTF-8" in r.reason


def test_utf16_json_is_rejected() -> None:
    assert isinstance(decode_telemetry(json.dumps(HB).encode("utf-16"), KEY, "robot"), Rejection)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_infinity_rejected_even_in_ignored_extra_fields(token: str) -> None:
    value = enc(HB)[:-1] + f', "extra": {{"deep": [{token}]}}}}'.encode()
    r = rejected(value)
    assert r.code == "not_json"
    assert r.reason.startswith("record holds NaN or Infinity, which JSON does not allow")


def test_nan_in_a_real_field_rejected() -> None:
    value = enc(common("latency", channel="video", samples_ms=[1.0]))
    value = value.replace(b"[1.0]", b"[NaN]")
    assert rejected(value, site="robot").code == "not_json"


def test_larger_than_1_mib() -> None:
    body = enc(HB)
    value = body[:-1] + b" " * (MAX_RECORD_BYTES - len(body) + 1) + b"}"
    assert len(value) == MAX_RECORD_BYTES + 1
    r = rejected(value)
    assert r.code == "too_large" and "1 MiB" in r.reason


@pytest.mark.parametrize("value", [b"[1, 2]", b'"heartbeat"', b"3", b"null"])
def test_not_an_object(value: bytes) -> None:
    assert rejected(value).code == "not_object"


def test_wrong_site_for_topic() -> None:
    r = rejected(enc(HB), site="console")
    assert r.code == "site_mismatch"
    assert "'robot'" in r.reason and "console" in r.reason


@pytest.mark.parametrize("key", [b"P-2", None, b"", b"\xff"])
def test_key_must_equal_procedure_id(key: bytes | None) -> None:
    r = rejected(enc(HB), key=key)
    assert r.code == "key_mismatch" and "'P-1'" in r.reason


@pytest.mark.parametrize("field", ["v", "type", "procedure_id", "site", "seq", "sent_at"])
def test_missing_common_field(field: str) -> None:
    obj = dict(HB)
    del obj[field]
    r = rejected(enc(obj))
    assert r.code == "schema"
    assert field in r.reason and "missing" in r.reason


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("v", True),
        ("v", 2),
        ("v", "1"),
        ("v", 1.0),
        ("seq", "5"),
        ("seq", 5.0),
        ("seq", -1),
        ("seq", True),
        ("seq", None),
        ("sent_at", 1.5e18),
        ("sent_at", "2026-01-01"),
        ("procedure_id", "bad id!"),
        ("procedure_id", ""),
        ("procedure_id", "-starts-with-dash"),
        ("procedure_id", "x" * 65),
        ("procedure_id", 5),
        ("site", "patient"),
        ("site", None),
    ],
)
def test_ill_typed_common_field(field: str, bad: Any) -> None:
    obj = {**HB, field: bad}
    r = rejected(enc(obj), key=KEY if field != "procedure_id" else None)
    assert r.code == "schema", r
    assert r.reason.startswith("invalid field ")
    assert field in r.reason


def test_v_true_reason_names_boolean() -> None:
    r = rejected(enc({**HB, "v": True}))
    assert "boolean" in r.reason


def test_unknown_type() -> None:
    r = rejected(enc({**HB, "type": "telepathy"}))
    assert r.code == "schema" and "unknown record type 'telepathy'" in r.reason


@pytest.mark.parametrize(
    ("obj", "where"),
    [
        (common("latency", channel="control", samples_ms=[]), "samples_ms"),
        (common("latency", channel="control", samples_ms=[-1]), "samples_ms"),
        (common("latency", channel="audio", samples_ms=[1]), "channel"),
        (common("kinematics", arm="psm1", samples=[]), "samples"),
        (common("kinematics", arm="", samples=[{"t": 1, "p": [0, 0, 0]}]), "arm"),
        (common("kinematics", arm="a", samples=[{"t": 1, "p": [0, 0]}]), "samples.0.p"),
        (common("kinematics", arm="a", samples=[{"t": 1.0, "p": [0, 0, 0]}]), "samples.0.t"),
        (common("kinematics", arm="a", samples=[{"p": [0, 0, 0]}]), "samples.0.t"),
        (common("link", rtt_ms=1, jitter_ms=1, loss_ratio=1.5, window_ms=1), "loss_ratio"),
        (common("link", rtt_ms=1, jitter_ms=1, loss_ratio=0, window_ms=0), "window_ms"),
        (common("heartbeat", state="sleepy", clock=HB["clock"]), "state"),
        (common("heartbeat", state="idle", clock={"source": "gps"}), "clock"),
        (common("safe_stop_ack", command_id="c", result="maybe", at=1), "result"),
        (common("procedure_end", reason="bored"), "reason"),
        (common("procedure_start", surgeon_id="s", robot={"model": "m"}, arms=[]), "robot"),
    ],
)
def test_ill_typed_type_specific_field(obj: dict[str, Any], where: str) -> None:
    r = rejected(enc(obj))
    assert r.code == "schema" and where in r.reason, r.reason


# -- operator requests --------------------------------------------------------------------

REARM = {
    "v": 1,
    "type": "rearm_request",
    "procedure_id": "P-1",
    "operator_id": "op",
    "reason": "link restored",
    "requested_at": 5,
    "command_id": "5385a9e6-e433-5d4c-b70d-7c27669ca37a",
    "request_id": "4f1d2c3b-5a6e-4b7c-8d9e-0f1a2b3c4d5e",
}
CLOSE = {**REARM, "type": "latch_close"}
NOTE = {"v": 1, "type": "note", "procedure_id": "P-1", "operator_id": "op", "text": "hello"}


def test_operator_requests_decode() -> None:
    assert isinstance(decode_operator(enc(REARM), KEY), RearmRequest)
    assert isinstance(decode_operator(enc(CLOSE), KEY), LatchClose)
    assert isinstance(decode_operator(enc(NOTE), KEY), Note)


@pytest.mark.parametrize(
    ("obj", "key", "code"),
    [
        ({**REARM, "reason": ""}, KEY, "schema"),
        ({**REARM, "v": True}, KEY, "schema"),
        ({**REARM, "type": "shutdown"}, KEY, "schema"),
        ({**NOTE, "text": ""}, KEY, "schema"),
        # ICD 1.1 §5.1: a re-arm names the latch it clears and carries a unique request id.
        ({k: v for k, v in REARM.items() if k != "command_id"}, KEY, "schema"),
        ({k: v for k, v in REARM.items() if k != "request_id"}, KEY, "schema"),
        ({**REARM, "request_id": "not-a-uuid"}, KEY, "schema"),
        ({**CLOSE, "reason": ""}, KEY, "schema"),
        (REARM, b"P-2", "key_mismatch"),
    ],
)
def test_invalid_operator_requests(obj: dict[str, Any], key: bytes, code: str) -> None:
    r = decode_operator(enc(obj), key)
    assert isinstance(r, Rejection) and r.code == code


def test_operator_nan_rejected() -> None:
    value = enc(REARM)[:-1] + b', "x": NaN}'
    r = decode_operator(value, KEY)
    assert isinstance(r, Rejection) and r.code == "not_json"
