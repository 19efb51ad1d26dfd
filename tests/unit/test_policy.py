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
    check_dir,
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


# (field, bad value, JSON path of the problem, words the sentence must contain)
BAD = [
    ("heartbeat.stop_silence_ms", -5, "$.heartbeat.stop_silence_ms", "greater than 0; it is -5"),
    (
        "heartbeat.stop_silence_ms",
        "300",
        "$.heartbeat.stop_silence_ms",
        'a number; it is the text "300"',
    ),
    ("heartbeat.stop_silence_ms", 50, "$.heartbeat.warn_silence_ms", "below stop_silence_ms (50)"),
    ("latency.quantile", 1.5, "$.latency.quantile", "at most 1; it is 1.5"),
    ("latency.control.warn_ms", 0, "$.latency.control.warn_ms", "greater than 0; it is 0"),
    ("link.loss.stop_ratio", 2, "$.link.loss.stop_ratio", "at most 1 (or null for none); it is 2"),
    (
        "workspace.speed_mm_s",
        {"warn": 300, "stop": 200},
        "$.workspace.speed_mm_s.warn",
        "below stop (200)",
    ),
    (
        "workspace.default_box.min",
        [0, 0],
        "$.workspace.default_box.min",
        "exactly 3 items; it has 2",
    ),
    (
        "workspace.default_box",
        {"min": [0, 0, 0], "max": [0, 1, 1]},
        "$.workspace.default_box.min[0]",
        "lower x (0) must be below the upper x (0)",
    ),
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
        "exactly one of sphere or box; it has both",
    ),
    (
        "workspace.forbidden_zones",
        [{"name": "z"}],
        "$.workspace.forbidden_zones[0]",
        "it has neither",
    ),
    ("alarms.escalate_after_resends", 0, "$.alarms.escalate_after_resends", "at least 1; it is 0"),
    ("alarms.surprise", 1, "$.alarms.surprise", "not a known field here (known: clear_after_ms"),
    ("name", "Has Spaces", "$.name", "lower-case letters, digits"),
    ("schema_version", 2, "$.schema_version", "must be 1; it is 2"),
    ("stale_after_ms", float("nan"), "$.stale_after_ms", "must be a finite number; it is nan"),
    ("heartbeat", 5, "$.heartbeat", "must be a mapping of fields; it is 5"),
    ("link.jitter.warn_ms", None, None, None),  # null switches a warning off: valid
]
# What a pack author must never have to read: library wording instead of a sentence.
LIBRARY_WORDING = ("Value error", "NoneType", "pydantic", "Input should", "is not of type",
                   "is not valid under any", "is a required property", "Additional properties",
                   "is too short", "validation error")  # fmt: skip


def problems_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as ei:
        parse_pack(data, "bad.yaml")
    assert all(pr.source == "bad.yaml" for pr in ei.value.problems)
    for pr in ei.value.problems:
        assert not any(w in pr.message for w in LIBRARY_WORDING), pr
        assert "\n" not in pr.message
    return [(pr.path, pr.message) for pr in ei.value.problems]


@pytest.mark.hazard("H-09")
@pytest.mark.parametrize(("path", "value", "where", "words"), BAD)
def test_bad_pack_refused_with_json_path(
    path: str, value: Any, where: str | None, words: str | None
) -> None:
    data = _set(base(), path, value)
    if where is None:
        parse_pack(data, "ok.yaml")
        return
    found = problems_of(data)
    assert len(found) == 1, found
    assert found[0][0] == where
    assert words is not None and words in found[0][1], found
    with pytest.raises(PolicyError) as ei:
        parse_pack(data, "bad.yaml")
    assert str(ei.value) == f"bad.yaml: {where}: {found[0][1]}"


def test_missing_required_field_named() -> None:
    d = base()
    del d["version"]
    with pytest.raises(PolicyError, match=r"^x: \$\.version: is required but missing$"):
        parse_pack(d, "x")


def _warn_stop_pairs() -> list[tuple[str, str, str]]:
    """(section, warn field, stop field) for every pair in the model, found by walking a
    complete pack (every field present): a new pair is covered without editing this list."""
    full = PolicyPack(name="x", version="1").model_dump(mode="json")
    pairs: list[tuple[str, str, str]] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        warns = [k for k in node if k.startswith("warn")]
        stops = [k for k in node if k.startswith("stop") or k.startswith("max_sample")]
        pairs.extend((path, w, st) for w in warns for st in stops)
        for k, v in node.items():
            walk(v, f"{path}.{k}" if path else k)

    walk(full, "")
    return pairs


PAIRS = _warn_stop_pairs()


def test_the_pair_walk_finds_every_known_pair() -> None:
    assert set(PAIRS) == {
        ("heartbeat", "warn_silence_ms", "stop_silence_ms"),
        ("latency.control", "warn_ms", "stop_ms"),
        ("latency.control", "warn_ms", "max_sample_ms"),
        ("latency.video", "warn_ms", "stop_ms"),
        ("latency.video", "warn_ms", "max_sample_ms"),
        ("link.jitter", "warn_ms", "stop_ms"),
        ("link.loss", "warn_ratio", "stop_ratio"),
        ("workspace.speed_mm_s", "warn", "stop"),
        ("workspace.grip_n", "warn", "stop"),
    }


@pytest.mark.hazard("H-09")
@pytest.mark.parametrize(
    ("section", "warn", "stop"), PAIRS, ids=[f"{a}.{b}>{c}" for a, b, c in PAIRS]
)
@pytest.mark.parametrize("above", [False, True], ids=["equal", "above"])
def test_every_warn_limit_must_be_below_its_stop_limit(
    section: str, warn: str, stop: str, above: bool
) -> None:
    """A warning that cannot come before its safe-stop is refused, at the warn field."""
    lo, hi = (0.2, 0.5) if warn.endswith("_ratio") else (100, 150)
    d = base()
    node = d
    for k in section.split("."):
        node = node.setdefault(k, {})
    for other in [k for k in node if k.startswith("stop") or k.startswith("max_sample")]:
        node[other] = hi * 4 if not warn.endswith("_ratio") else 0.9  # out of the way
    node[stop], node[warn] = lo, hi if above else lo
    assert problems_of(d) == [
        (f"$.{section}.{warn}", f"must be below {stop} ({lo:g}) so the warning comes before "
                                f"the safe-stop; it is {(hi if above else lo):g}")
    ]  # fmt: skip
    node[warn] = lo / 2  # in order: accepted
    parse_pack(d, "ok.yaml")


def test_an_unset_stop_limit_leaves_any_warn_limit_valid() -> None:
    d = base()
    d["link"]["jitter"] = {"warn_ms": 500}  # stop_ms absent (null): no safe-stop on jitter
    d["link"]["loss"] = {"warn_ratio": 0.9, "stop_ratio": None}
    d["latency"]["video"] = {"warn_ms": 900}
    assert parse_pack(d, "ok.yaml").pack.link.jitter.stop_ms is None


def test_all_problems_of_a_file_at_once_in_document_order() -> None:
    d = base()
    del d["version"]
    d["heartbeat"]["warn_silence_ms"] = 400  # above stop_silence_ms 300
    d["latency"]["control"]["warn_ms"] = 400  # above stop_ms 300 (below max_sample_ms 500)
    d["latency"]["video"]["warn_ms"] = "fast"
    d["link"]["loss"]["warn_ratio"] = 0.05  # above stop_ratio 0.03
    d["workspace"]["grip_n"] = {"warn": 10}
    d["workspace"]["forbidden_zones"] = [{"name": "z", "sphere": {"center": [0, 0], "radius": 1}}]
    d["alarms"]["surprise"] = True
    d["stale_after_ms"] = float("inf")
    warn_first = "so the warning comes before the safe-stop"
    zone = "$.workspace.forbidden_zones[0].sphere.center"
    assert problems_of(d) == [
        ("$.stale_after_ms", "must be a finite number; it is inf"),
        ("$.heartbeat.warn_silence_ms",
         f"must be below stop_silence_ms (300) {warn_first}; it is 400"),
        ("$.latency.control.warn_ms", f"must be below stop_ms (300) {warn_first}; it is 400"),
        ("$.latency.video.warn_ms", 'must be a number; it is the text "fast"'),
        ("$.link.loss.warn_ratio", f"must be below stop_ratio (0.03) {warn_first}; it is 0.05"),
        (zone, "must be a list of exactly 3 items; it has 2"),
        ("$.workspace.grip_n.stop", "is required but missing"),
        ("$.alarms.surprise", "is not a known field here (known: clear_after_ms, "
                              "escalate_after_resends, resend_interval_ms)"),
        ("$.version", "is required but missing"),
    ]  # fmt: skip


def test_policy_check_prints_every_problem_of_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = base()
    d["latency"]["control"]["warn_ms"] = 400
    d["link"]["loss"]["warn_ratio"] = 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(["policy", "check", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"INVALID {bad}: 2 problems",
        "  $.latency.control.warn_ms: must be below stop_ms (300) so the warning comes before "
        "the safe-stop; it is 400",
        "  $.link.loss.warn_ratio: must be below stop_ratio (0.03) so the warning comes before "
        "the safe-stop; it is 0.5",
    ]


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


def _pack_dir(tmp_path: Path, **packs: dict[str, Any] | str) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    for stem, body in packs.items():
        text = body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False)
        (d / f"{stem}.yaml").write_text(text)
    return d


def test_policy_check_dir_of_the_shipped_packs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(RULES)]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    lines = out.out.splitlines()
    assert [ln.split(":")[0] for ln in lines[:2]] == [
        f"ok {RULES / 'default.yaml'}",
        f"ok {RULES / 'demo-forbidden-zone.yaml'}",
    ]
    assert (
        lines[2]
        == f"{RULES}: 2 pack(s), default 'default': `telesafe run --rules {RULES}` loads them"
    )


def test_policy_check_dir_reports_each_pack_as_run_would_load_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _set(base(), "latency.control.warn_ms", 400)
    bad["name"] = "bad"
    twin = base()  # a second pack named "default"
    d = _pack_dir(tmp_path, a_default=base(), b_bad=bad, c_twin=twin, d_broken="a: [1,\n")
    (d / "notes.yml").write_text("ignored: run --rules reads *.yaml only\n")
    assert main(["policy", "check", str(d)]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        f"ok {d / 'a_default.yaml'}: pack default version 1.0.0 sha256 "
        + load_pack_file(RULES / "default.yaml").sha256
    ]
    assert out.err.splitlines() == [
        f"INVALID {d / 'b_bad.yaml'}: 1 problem",
        "  $.latency.control.warn_ms: must be below stop_ms (300) so the warning comes before "
        "the safe-stop; it is 400",
        f"INVALID {d / 'c_twin.yaml'}: 1 problem",
        f"  $.name: pack name 'default' is also used by {d / 'a_default.yaml'}; "
        "names must be unique",
        f"INVALID {d / 'd_broken.yaml'}: 1 problem",
        "  $: not valid YAML at line 2, column 1: expected the node content, but found the end "
        "of the file",
        f"note {d / 'notes.yml'}: not loaded: `telesafe run --rules` reads *.yaml files only",
        f"{d}: `telesafe run --rules {d}` would refuse these packs",
    ]
    # The same loader: `run --rules` refuses with exactly these problems, on one line.
    with pytest.raises(PolicyError) as ei:
        PackRegistry.from_dir(d)
    assert ei.value.problems == check_dir(d).all_problems()
    assert len(ei.value.problems) == 3 and "\n" not in str(ei.value)


def test_policy_check_dir_needs_the_default_pack_as_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = yaml.safe_load((RULES / "demo-forbidden-zone.yaml").read_text())
    d = _pack_dir(tmp_path, demo=demo)
    assert main(["policy", "check", str(d)]) == 1
    err = capsys.readouterr().err
    assert f"INVALID {d}: 1 problem\n  no valid policy pack is named 'default'" in err
    with pytest.raises(PolicyError, match="no valid policy pack is named 'default'"):
        PackRegistry.from_dir(d)
    # As `run --default-pack` (and TELESAFE_DEFAULT_PACK) choose another default pack.
    assert main(["policy", "check", "--default-pack", "demo-forbidden-zone", str(d)]) == 0
    assert PackRegistry.from_dir(d, default="demo-forbidden-zone").default.name == demo["name"]
    monkeypatch.setenv("TELESAFE_DEFAULT_PACK", "demo-forbidden-zone")
    assert main(["policy", "check", str(d)]) == 0
    capsys.readouterr()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["policy", "check", str(empty), str(RULES / "default.yaml")]) == 1
    out = capsys.readouterr()
    assert "no policy packs (*.yaml) found" in out.err and out.out.startswith("ok ")


def test_empty_file_and_other_documents_are_named_plainly(tmp_path: Path) -> None:
    f = tmp_path / "empty.yaml"
    f.write_text("")
    with pytest.raises(PolicyError) as ei:
        load_pack_file(f)
    assert str(ei.value) == f"{f}: $: the file is empty; a policy pack is a mapping of fields " \
        "(name, version, ...)"  # fmt: skip
    with pytest.raises(PolicyError, match=r"a policy pack must be a mapping of fields; it is "
                       r'the text "hello"'):  # fmt: skip
        parse_pack("hello", "x")


def test_policy_explain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", str(RULES / "demo-forbidden-zone.yaml")]) == 0
    out = capsys.readouterr().out
    assert "vessel" in out and "tool_speed" in out
