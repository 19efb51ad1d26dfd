"""Fault-spec grammar: the `--fault` strings and YAML scenario files."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.sim.faults import FaultSpecError, load_scenario, parse_duration, parse_spec


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5", 5.0), ("5s", 5.0), ("2.5s", 2.5), ("500ms", 0.5), (".5", 0.5), (3, 3.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5m", "abc", "-1s", "1.2.3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(FaultSpecError):
        parse_duration(text)


def test_heartbeat_stop_with_for() -> None:
    f = parse_spec("heartbeat-stop:robot@5s,for=2s")
    assert (f.kind, f.target, f.at, f.duration) == ("heartbeat-stop", "robot", 5.0, 2.0)
    assert f.until == 7.0
    assert not f.active(4.9) and f.active(5.0) and f.active(6.99) and not f.active(7.0)
    assert f.procedure == 0


def test_values_and_targets() -> None:
    assert parse_spec("latency:control=350@5s").value == 350
    assert parse_spec("latency:video=450@4s").target == "video"
    assert parse_spec("latency-spike:control=600@5s").value == 600
    assert parse_spec("speed:psm2=250@5s").value == 250
    assert parse_spec("grip:psm1=16@5s").value == 16
    assert parse_spec("loss:robot=0.05@3s").value == pytest.approx(0.05)
    assert parse_spec("jitter:console=15@3s").value == 15
    assert parse_spec("zone:psm1=30,0,-100@5s").point == (30.0, 0.0, -100.0)
    oob = parse_spec("out-of-box:psm1@5s,axis=x,by=12,speed=80")
    assert oob.options == {"axis": "x", "by": "12", "speed": "80"}
    assert oob.option_float("by", 10) == 12
    assert parse_spec("silence:console@5s").target == "console"


def test_defaults_and_procedure_selection() -> None:
    f = parse_spec("latency:control=350")  # no @: from the start
    assert f.at == 0.0 and f.duration is None
    g = parse_spec("garbage:robot@3s,count=8,procedure=1")
    assert g.options["count"] == "8" and g.procedure == 1
    assert g.applies_to(1, "X") and not g.applies_to(0, "X")
    h = parse_spec("end@10s,procedure=LDN-GIB-0002,reason=aborted")
    assert h.kind == "end" and h.target is None and h.procedure == "LDN-GIB-0002"
    assert h.applies_to(5, "LDN-GIB-0002")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("bogus:robot@1s", "unknown kind"),
        ("heartbeat-stop@1s", "needs a site"),
        ("heartbeat-stop:arm@1s", "not a valid site"),
        ("latency:control@1s", "needs a value"),
        ("latency:audio=3@1s", "not a valid channel"),
        ("latency:control=abc@1s", "not a number"),
        ("latency:control=nan@1s", "finite"),
        ("heartbeat-stop:robot=3@1s", "takes no =VALUE"),
        ("loss:robot=1.5@1s", "within 0..1"),
        ("speed:psm2=-5@1s", "negative"),
        ("zone:psm1=1,2@1s", "X,Y,Z"),
        ("out-of-box:psm9@1s", "not a valid arm"),
        ("out-of-box:psm1@1s,axis=y", "axis"),
        ("garbage:robot@1s,count=0", "count"),
        ("garbage:robot@1s,for=2s", "not allowed"),
        ("latency:control=300@1s,for=0", "positive"),
        ("heartbeat-stop:robot@soon", "not a duration"),
        ("heartbeat-stop:robot@1s,for", "NAME=VALUE"),
        ("heartbeat-stop:robot@1s,for=1s,for=2s", "twice"),
        ("end:robot@1s", "no target"),
        ("end@1s,reason=tired", "reason"),
        ("loss:robot=0.1@1s,drop=maybe", "drop"),
    ],
)
def test_bad_specs(text: str, needle: str) -> None:
    with pytest.raises(FaultSpecError, match=needle):
        parse_spec(text)


def test_scenario_mapping(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(
        """
name: mixed
duration: 12
procedures: 2
policy: default
faults:
  - kind: heartbeat-stop
    site: robot
    at: 5s
    for: 2s
  - kind: zone
    arm: psm1
    value: [30, 0, -100]
    at: 4
    procedure: 1
  - kind: loss
    site: robot
    value: 0.05
    at: 3s
    drop: true
  - spec: "garbage:console@1s,count=3"
  - "end@10s"
""",
        "utf-8",
    )
    sc = load_scenario(p)
    assert (sc.name, sc.duration, sc.procedures, sc.policy) == ("mixed", 12.0, 2, "default")
    kinds = [f.kind for f in sc.faults]
    assert kinds == ["heartbeat-stop", "zone", "loss", "garbage", "end"]
    assert sc.faults[0].duration == 2.0 and sc.faults[0].target == "robot"
    assert sc.faults[1].point == (30.0, 0.0, -100.0) and sc.faults[1].procedure == 1
    assert sc.faults[2].options["drop"] == "yes"


def test_scenario_plain_list(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("- latency:control=350@5s\n- kind: grip\n  arm: psm1\n  value: 16\n", "utf-8")
    sc = load_scenario(p)
    assert [f.kind for f in sc.faults] == ["latency", "grip"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("faults: 3\n", "must be a list"),
        ("[1, 2]\n", "fault #1"),
        ("- kind: grip\n  arm: psm1\n", "fault #1.*needs a value"),
        ("- kind: grip\n  arm: psm1\n  site: robot\n  value: 3\n", "only one of"),
        ("- spec: 'end@1s'\n  at: 2\n", "cannot be combined"),
        ("- at: 2\n", "needs 'kind'"),
        ("colour: red\n", "unknown key"),
        ("procedures: 0\nfaults: []\n", "positive integer"),
        ("faults: [\n", "not valid YAML"),
    ],
)
def test_bad_scenarios(tmp_path: Path, body: str, needle: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(body, "utf-8")
    with pytest.raises(FaultSpecError, match=needle):
        load_scenario(p)


def test_missing_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(FaultSpecError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")


def test_shipped_scenarios_load_and_validate() -> None:
    from monitor.sim.runner import SimConfig

    files = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml"))
    assert files
    for f in files:
        sc = load_scenario(f)
        assert sc.faults, f
        SimConfig(procedures=sc.procedures or 1, faults=sc.faults).validate()
