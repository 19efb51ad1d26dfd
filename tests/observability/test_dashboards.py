"""Generated dashboards: committed JSON is current, structure is sound, queries are ours."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.dashboards import (
    DEFAULT_OUT_DIR,
    Dashboard,
    all_dashboards,
    all_queries,
    dashboard_json,
    file_name,
    fleet,
    live_procedure,
    render_json,
    render_query,
)
from monitor.metrics import MonitorMetrics
from monitor.policy.loader import load_pack_file
from monitor.policy.model import PolicyPack

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_committed_json_matches_generator() -> None:
    """Fails if dashboards/*.json drift from monitor/dashboards (regenerate and commit)."""
    assert DEFAULT_OUT_DIR == REPO_ROOT / "dashboards"
    for d in all_dashboards():
        path = DEFAULT_OUT_DIR / file_name(d)
        assert path.exists(), f"{path} missing: run `python -m monitor.dashboards generate`"
        assert path.read_text(encoding="utf-8") == render_json(d), (
            f"{path} is stale: run `python -m monitor.dashboards generate` and commit"
        )
    expected = {file_name(d) for d in all_dashboards()}
    assert {p.name for p in DEFAULT_OUT_DIR.glob("*.json")} == expected


def test_generate_cli_writes_identical_files(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "monitor.dashboards", "generate", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for d in all_dashboards():
        assert (tmp_path / file_name(d)).read_text() == render_json(d)
    check = subprocess.run(
        [sys.executable, "-m", "monitor.dashboards", "generate", "--check", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    (tmp_path / file_name(all_dashboards()[0])).write_text("{}")
    stale = subprocess.run(
        [sys.executable, "-m", "monitor.dashboards", "generate", "--check", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert stale.returncode == 1


@pytest.mark.parametrize("dashboard", all_dashboards(), ids=file_name)
def test_structure(dashboard: Dashboard) -> None:
    assert isinstance(dashboard, Dashboard)
    j = json.loads(render_json(dashboard))
    assert j["uid"] == dashboard.uid and len(j["uid"]) <= 40
    assert j["schemaVersion"] >= 36 and j["title"].startswith("telesafe / ")
    ids = [p["id"] for p in j["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in j["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"overlap at {p['title']}"
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        # Every panel says what it shows (and, where it can go red, what to do).
        assert len(p.get("description", "")) > 40, p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"]
    names = {v["name"] for v in j["templating"]["list"]}
    assert "datasource" in names


def _pack() -> PolicyPack:
    """The default pack, read here independently of the generator."""
    return load_pack_file(REPO_ROOT / "rules" / "default.yaml").pack


def _panels(dashboard: Dashboard) -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in dashboard_json(dashboard)["panels"] if p["type"] != "row"}


def _steps(panel: dict[str, Any]) -> list[float | None]:
    return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def _by_prefix(panels: dict[str, dict[str, Any]], prefix: str) -> dict[str, Any]:
    (title,) = [t for t in panels if t.startswith(prefix)]
    return panels[title]


def test_live_thresholds_follow_the_default_pack() -> None:
    pk = _pack()
    panels = _panels(live_procedure())
    hb = pk.heartbeat
    heartbeat = panels["Heartbeat age by site"]
    assert _steps(heartbeat) == [None, hb.warn_silence_ms / 1000, hb.stop_silence_ms / 1000]
    for prefix, ch in (
        ("Control latency", pk.latency.control),
        ("Video latency", pk.latency.video),
    ):
        assert _steps(_by_prefix(panels, prefix)) == [None, ch.warn_ms / 1000, ch.stop_ms / 1000]
    loss = panels["Link loss ratio"]
    assert _steps(loss) == [None, pk.link.loss.warn_ratio, pk.link.loss.stop_ratio]
    assert loss["fieldConfig"]["defaults"]["unit"] == "percentunit"
    # Kinematics in the packs' units: mm and mm/s, scaled from the metrics' base units.
    speed = panels["Tool-tip speed per arm"]
    assert _steps(speed) == [None, pk.workspace.speed_mm_s.warn, pk.workspace.speed_mm_s.stop]
    assert speed["fieldConfig"]["defaults"]["unit"] == "suffix: mm/s"
    assert speed["targets"][0]["expr"].startswith("1000 * ")
    margin = panels["Workspace margin per arm"]
    near = max(pk.workspace.box_warn_mm, pk.workspace.zone_warn_mm)
    assert _steps(margin) == [None, 0.0, near]
    assert margin["fieldConfig"]["defaults"]["unit"] == "lengthmm"
    assert panels["Procedure state"]["type"] == "state-timeline"
    for needle in ("jitter", "loss", "Workspace margin", "Tool-tip speed", "Safe-stop"):
        assert any(needle in t for t in panels), needle


def test_a_pack_change_moves_the_lines() -> None:
    pk = _pack()
    stricter = pk.model_copy(
        update={
            "heartbeat": pk.heartbeat.model_copy(
                update={"stop_silence_ms": pk.heartbeat.stop_silence_ms * 2}
            ),
            "link": pk.link.model_copy(
                update={"jitter": pk.link.jitter.model_copy(update={"stop_ms": None})}
            ),
            "stale_after_ms": pk.stale_after_ms + 250,
        }
    )
    live = _panels(live_procedure(stricter))
    assert _steps(live["Heartbeat age by site"])[-1] == pk.heartbeat.stop_silence_ms * 2 / 1000
    assert (
        f"{pk.heartbeat.stop_silence_ms * 2:g} ms" in live["Heartbeat age by site"]["description"]
    )
    # An optional limit the pack leaves out draws no line.
    assert len(_steps(live["Link jitter"])) == 2
    lag = _panels(fleet(stricter))["Monitor lag per instance (seconds)"]
    assert _steps(lag)[-1] == pk.heartbeat.stop_silence_ms * 2 / 1000


def test_live_dashboard_shows_one_procedure_only() -> None:
    """Every query of the live dashboard is filtered to the chosen procedure; the fleet-wide
    ack-delay histogram (no procedure label) lives on the fleet dashboard."""
    live = [q for q in all_queries() if q.dashboard_uid == "telesafe-live-procedure"]
    assert live
    for q in live:
        assert 'procedure_id="$procedure_id"' in q.expr, (q.panel_title, q.expr)
    fleet_exprs = [q.expr for q in all_queries() if q.dashboard_uid == "telesafe-fleet"]
    assert any("telesafe_safe_stop_ack_delay_seconds" in e for e in fleet_exprs)
    # The heartbeat panel also draws this procedure's own pack limit.
    assert any("telesafe_heartbeat_stop_limit_seconds" in q.expr for q in live)


def test_required_panels() -> None:
    by_uid = {d.uid: dashboard_json(d) for d in all_dashboards()}
    live = by_uid["telesafe-live-procedure"]
    assert [v["name"] for v in live["templating"]["list"]] == ["datasource", "procedure_id"]
    fleet_exprs = " ".join(q.expr for q in all_queries() if q.dashboard_uid == "telesafe-fleet")
    for metric in (
        "telesafe_procedures_active",
        "telesafe_procedure_state",
        "telesafe_consumer_lag_records",
        "telesafe_records_rejected_total",
        "telesafe_records_duplicate_total",
        "telesafe_records_lost_total",
    ):
        assert metric in fleet_exprs
    audit_exprs = " ".join(q.expr for q in all_queries() if q.dashboard_uid == "telesafe-audit")
    for metric in (
        "telesafe_ledger_entries",
        "telesafe_ledger_last_checkpoint_timestamp",
        "telesafe_ledger_last_verify_success",
        "telesafe_ledger_append_failures",
    ):
        assert metric in audit_exprs


def _exported_names() -> set[str]:
    names = {"up"}
    for family in MonitorMetrics(with_process=False).registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
        for suffix in ("_bucket", "_count", "_sum", "_total", "_info"):
            names.add(family.name + suffix)
    return names


def test_queries_only_use_exported_series() -> None:
    exported = _exported_names()
    checked = 0
    for q in all_queries():
        rendered = render_query(q.expr, {"procedure_id": "p1"})
        assert "$" not in rendered, rendered
        for name in re.findall(r"\b(telesafe_[a-z0-9_]+|up)\b(?=\s*[{\[)]|\s*$)", rendered):
            assert name in exported, f"{q.dashboard_uid}/{q.panel_title}: unknown series {name}"
            checked += 1
    assert checked >= len(all_queries())
