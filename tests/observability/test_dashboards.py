"""Generated dashboards: committed JSON is current, structure is sound, queries are ours."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.dashboards import (
    DEFAULT_OUT_DIR,
    all_dashboards,
    all_queries,
    file_name,
    render_json,
    render_query,
)
from monitor.metrics import MonitorMetrics

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


@pytest.mark.parametrize("dashboard", all_dashboards(), ids=lambda d: d.uid)
def test_structure(dashboard: object) -> None:
    from monitor.dashboards.model import Dashboard

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
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"]
    names = {v["name"] for v in j["templating"]["list"]}
    assert "datasource" in names


def test_required_panels() -> None:
    by_uid = {d.uid: d.to_json() for d in all_dashboards()}
    live = by_uid["telesafe-live-procedure"]
    assert [v["name"] for v in live["templating"]["list"]] == ["datasource", "procedure_id"]
    panels = {p["title"]: p for p in live["panels"]}
    hb = panels["Heartbeat age by site"]
    steps = hb["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 0.1, 0.3]
    assert panels["Procedure state"]["type"] == "state-timeline"
    for title, warn, crit in (
        ("Control latency (1 s window) p50 / p95 / p99", 0.1, 0.3),
        ("Video latency (1 s window) p50 / p95 / p99", 0.15, 0.4),
    ):
        steps = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps] == [None, warn, crit]
    for needle in ("jitter", "loss", "Workspace margin", "Tool-tip speed", "Safe-stop"):
        assert any(needle in t for t in panels), needle
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
