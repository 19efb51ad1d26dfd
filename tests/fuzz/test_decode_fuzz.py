"""Decoding never raises: arbitrary bytes and mutated valid records give a model or a
Rejection with a reason (ICD §6), and an accepted record is consistent with its topic."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.icd.decode import Rejection, decode_operator, decode_telemetry
from tests.fuzz.fuzzkit import budget, current

PID = "LDN-GIB-0001"
CLOCK = {"source": "ptp", "offset_ns": -12000, "max_error_ns": 100000}
COMMON = {"v": 1, "procedure_id": PID, "seq": 17, "sent_at": 1773830400340000000}
TELEMETRY: list[dict[str, Any]] = [
    {**COMMON, "type": "procedure_start", "site": "robot", "surgeon_id": "s",
     "robot": {"model": "Toumai", "serial": "TM-0042"}, "arms": ["psm1", "ecm"],
     "policy": "default"},
    {**COMMON, "type": "heartbeat", "site": "console", "state": "operating", "clock": CLOCK},
    {**COMMON, "type": "latency", "site": "robot", "channel": "control",
     "samples_ms": [47.9, 48.3]},
    {**COMMON, "type": "link", "site": "console", "rtt_ms": 96.2, "jitter_ms": 1.8,
     "loss_ratio": 0.0001, "window_ms": 1000},
    {**COMMON, "type": "kinematics", "site": "robot", "arm": "psm1",
     "samples": [{"t": 1773830400351000000, "p": [12.0, -3.5, -96.0], "v": [1.0, 0.0, 0.0],
                  "f": 3.2}, {"t": 1773830400352000000, "p": [12.0, -3.5, -96.0]}]},
    {**COMMON, "type": "safe_stop_ack", "site": "robot",
     "command_id": "5385a9e6-e433-5d4c-b70d-7c27669ca37a", "result": "safe_stopped",
     "at": 1773830404349000000},
    {**COMMON, "type": "procedure_end", "site": "robot", "reason": "completed"},
]
OPERATOR: list[dict[str, Any]] = [
    {"v": 1, "type": "rearm_request", "procedure_id": PID, "operator_id": "dr-demo",
     "reason": "link restored", "requested_at": 1773830407990000000},
    {"v": 1, "type": "note", "procedure_id": PID, "operator_id": "dr-demo", "text": "hello"},
]

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["console", "robot", PID, "heartbeat", "operating", "", "1", "NaN"]))
json_value = st.recursive(
    json_leaf,
    lambda kids: st.one_of(st.lists(kids, max_size=4),
                           st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=12)


def check(result: object) -> None:
    if isinstance(result, Rejection):
        assert isinstance(result.reason, str) and result.reason.strip(), result
        assert result.code
    else:
        assert hasattr(result, "procedure_id"), result


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, bases: list[dict[str, Any]]) -> dict[str, Any]:
    """A valid record with a few fields deleted, replaced by arbitrary JSON, or added."""
    obj = json.loads(json.dumps(draw(st.sampled_from(bases))))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(obj)
        op = draw(st.sampled_from(["replace", "delete", "add", "replace"]))
        if op == "add" or not paths:
            obj[draw(st.text(max_size=8))] = draw(json_value)
            continue
        path = draw(st.sampled_from(paths))
        parent = obj
        for p in path[:-1]:
            parent = parent[p]
        if op == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_value)
    return dict(obj)


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


@pytest.mark.hazard("H-06")
@budget(1500)
@given(value=st.one_of(st.none(), st.binary(max_size=300)),
       key=st.one_of(st.none(), st.binary(max_size=20), st.just(PID.encode())),
       site=st.sampled_from(["console", "robot"]))
def test_arbitrary_bytes_never_raise(value: bytes | None, key: bytes | None,
                                     site: str) -> None:
    t = current()
    t.example()
    t.inputs += 1  # one byte string, handed to both decoders
    res = decode_telemetry(value, key, site)  # type: ignore[arg-type]
    t.decode("decode_telemetry", res)
    check(res)
    res = decode_operator(value, key)
    t.decode("decode_operator", res)
    check(res)


@pytest.mark.hazard("H-06")
@budget(1500)
@given(obj=mutated(TELEMETRY), site=st.sampled_from(["console", "robot"]),
       key=st.sampled_from([PID.encode(), b"other", None]))
def test_mutated_telemetry(obj: dict[str, Any], site: str, key: bytes | None) -> None:
    t = current()
    t.example()
    t.inputs += 1
    res = decode_telemetry(_encode(obj), key, site)  # type: ignore[arg-type]
    t.decode("decode_telemetry", res)
    check(res)
    if not isinstance(res, Rejection):
        # Accepted: consistent with its topic and key, free of NaN/Infinity, and stable.
        assert res.site == site
        assert key == res.procedure_id.encode()
        assert not any(isinstance(x, float) and not math.isfinite(x)
                       for x in _leaves(json.loads(res.model_dump_json())))
        again = decode_telemetry(res.model_dump_json().encode(), key, site)  # type: ignore[arg-type]
        assert again == res


@budget(1000)
@given(obj=mutated(OPERATOR), key=st.sampled_from([PID.encode(), b"other", None]))
def test_mutated_operator_requests(obj: dict[str, Any], key: bytes | None) -> None:
    t = current()
    t.example()
    t.inputs += 1
    res = decode_operator(_encode(obj), key)
    t.decode("decode_operator", res)
    check(res)
    if not isinstance(res, Rejection):
        assert key == res.procedure_id.encode()


@pytest.mark.parametrize("base", TELEMETRY, ids=lambda b: b["type"])
def test_the_bases_are_valid(base: dict[str, Any]) -> None:
    assert not isinstance(decode_telemetry(_encode(base), PID.encode(), base["site"]),
                          Rejection)


def _leaves(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _leaves(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _leaves(v)]
    return [obj]
