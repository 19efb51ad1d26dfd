"""Policy packs: shipped packs load, bad packs are refused with a JSON path and a sentence,
the committed schema matches the model, and `telesafe policy check` exit codes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.cli import main
from monitor.policy.loader import (
    PackRegistry,
    PolicyError,
    load_pack_file,
    parse_pack,
    rules_dir,
    schema,
)
from monitor.policy.model import PolicyPack

RULES = rules_dir()


def test_shipped_packs_load() -> None:
    reg = PackRegistry.from_dir()
    names = sorted(p.name for p in reg.all())
    assert names == ["default", "demo-forbidden-zone"]
    assert reg.default.name == "default"
    assert reg.get(None) is reg.default
    assert reg.get("nope") is None
    assert len({p.sha256 for p in reg.all()}) == 2


@pytest.mark.hazard("H-09")
def test_default_pack_is_exactly_the_icd_defaults() -> None:
    lp = load_pack_file(RULES / "default.yaml")
    model_defaults = PolicyPack(name="default", version=lp.version, description=lp.pack.description)
    assert lp.pack == model_defaults
    p = lp.pack
    assert (p.heartbeat.warn_silence_ms, p.heartbeat.stop_silence_ms) == (100, 300)
    assert p.heartbeat.first_heartbeat_ms == 2000
    assert p.stale_after_ms == 500
    c, v = p.latency.control, p.latency.video
    assert (c.warn_ms, c.stop_ms, c.hold_ms, c.max_sample_ms) == (100, 300, 1000, 500)
    assert (v.warn_ms, v.stop_ms, v.hold_ms, v.max_sample_ms) == (150, 400, 1000, None)
    assert (p.latency.window_ms, p.latency.quantile) == (1000, 0.95)
    assert (p.link.jitter.warn_ms, p.link.jitter.stop_ms) == (10, None)
    assert (p.link.loss.warn_ratio, p.link.loss.stop_ratio) == (0.001, 0.03)
    ws = p.workspace
    assert (ws.default_box.min, ws.default_box.max) == ([-120, -120, -180], [120, 120, -20])
    assert (ws.box_warn_mm, ws.zone_warn_mm) == (5, 5)
    assert ws.forbidden_zones == []
    assert (ws.speed_mm_s.warn, ws.speed_mm_s.stop, ws.grip_n.warn, ws.grip_n.stop) == (
        100,
        200,
        10,
        15,
    )
    a = p.alarms
    assert (a.clear_after_ms, a.resend_interval_ms, a.escalate_after_resends) == (2000, 100, 5)


def test_hash_is_content_not_formatting(tmp_path: Path) -> None:
    src = yaml.safe_load((RULES / "default.yaml").read_text())
    f = tmp_path / "d.json"
    f.write_text(json.dumps(src, indent=7))  # JSON is YAML; same content
    assert load_pack_file(f).sha256 == load_pack_file(RULES / "default.yaml").sha256
    src["alarms"]["clear_after_ms"] = 2001
    assert parse_pack(src, "x").sha256 != load_pack_file(RULES / "default.yaml").sha256


def base() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((RULES / "default.yaml").read_text()))


def _set(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    keys = path.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur[k]
    cur[keys[-1]] = value
    return d


BAD = [
    ("heartbeat.stop_silence_ms", -5, "$.heartbeat.stop_silence_ms"),
    ("heartbeat.stop_silence_ms", "300", "$.heartbeat.stop_silence_ms"),
    ("heartbeat.stop_silence_ms", 50, "$.heartbeat"),  # below warn: cross-field rule
    ("latency.quantile", 1.5, "$.latency.quantile"),
    ("latency.control.warn_ms", 0, "$.latency.control.warn_ms"),
    ("link.loss.stop_ratio", 2, "$.link.loss.stop_ratio"),
    ("workspace.speed_mm_s", {"warn": 300, "stop": 200}, "$.workspace.speed_mm_s"),
    ("workspace.default_box.min", [0, 0], "$.workspace.default_box.min"),
    ("workspace.default_box", {"min": [0, 0, 0], "max": [0, 1, 1]}, "$.workspace.default_box"),
    (
        "workspace.forbidden_zones",
        [
            {
                "name": "z",
                "sphere": {"center": [0, 0, 0], "radius": 1},
                "box": {"min": [0, 0, 0], "max": [1, 1, 1]},
            }
        ],
        "$.workspace.forbidden_zones[0]",
    ),
    ("workspace.forbidden_zones", [{"name": "z"}], "$.workspace.forbidden_zones[0]"),
    ("alarms.escalate_after_resends", 0, "$.alarms.escalate_after_resends"),
    ("alarms.surprise", 1, "$.alarms"),
    ("name", "Has Spaces", "$.name"),
    ("schema_version", 2, "$.schema_version"),
]


@pytest.mark.hazard("H-09")
@pytest.mark.parametrize(("path", "value", "where"), BAD)
def test_bad_pack_refused_with_json_path(path: str, value: Any, where: str) -> None:
    with pytest.raises(PolicyError) as ei:
        parse_pack(_set(base(), path, value), "bad.yaml")
    msg = str(ei.value)
    assert msg.startswith(f"bad.yaml: {where}"), msg
    sentence = msg.split(": ", 2)[2]
    assert len(sentence) > 5 and "\n" not in sentence


def test_missing_required_field_named() -> None:
    d = base()
    del d["version"]
    with pytest.raises(PolicyError, match=r"^x: \$: 'version' is a required property"):
        parse_pack(d, "x")


def test_not_a_mapping_and_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"\$: a policy pack must be a mapping"):
        parse_pack([1, 2], "x")
    f = tmp_path / "p.yaml"
    f.write_text("a: [unclosed\n")
    with pytest.raises(PolicyError, match=r"not valid YAML"):
        load_pack_file(f)
    with pytest.raises(PolicyError, match="cannot read"):
        load_pack_file(tmp_path / "absent.yaml")


def test_registry_refuses_duplicate_names_and_missing_default(tmp_path: Path) -> None:
    lp = load_pack_file(RULES / "default.yaml")
    with pytest.raises(PolicyError, match="also used by"):
        PackRegistry([lp, lp])
    demo = load_pack_file(RULES / "demo-forbidden-zone.yaml")
    with pytest.raises(PolicyError, match="default pack"):
        PackRegistry([demo])
    with pytest.raises(PolicyError, match="no policy packs"):
        PackRegistry.from_dir(tmp_path)


def test_schema_json_matches_the_model() -> None:
    """Drift test. Regenerate with `telesafe policy schema > rules/schema.json`."""
    committed = json.loads((RULES / "schema.json").read_text())
    assert committed == schema()


def test_policy_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema()


def test_policy_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [str(RULES / "default.yaml"), str(RULES / "demo-forbidden-zone.yaml")]
    assert main(["policy", "check", *good]) == 0
    out = capsys.readouterr()
    assert out.out.count("ok ") == 2 and out.err == ""

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_set(base(), "heartbeat.stop_silence_ms", -1)))
    assert main(["policy", "check", good[0], str(bad)]) == 1
    out = capsys.readouterr()
    assert "$.heartbeat.stop_silence_ms" in out.err and "INVALID" in out.err
    assert out.out.count("ok ") == 1

    assert main(["policy", "check", str(tmp_path / "absent.yaml")]) == 1
    with pytest.raises(SystemExit) as ei:
        main(["policy", "check"])
    assert ei.value.code == 2


def test_policy_explain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", str(RULES / "demo-forbidden-zone.yaml")]) == 0
    out = capsys.readouterr().out
    assert "vessel" in out and "tool_speed" in out
