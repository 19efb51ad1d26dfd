"""Alert rules and Alertmanager config, checked by the real promtool and amtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from .promstack import AM_CONFIG, REPO_ROOT, RULES_FILE

pytestmark = pytest.mark.usefixtures("prom_binaries")

RULE_TESTS = sorted((REPO_ROOT / "alerts" / "tests").glob("*.yml"))
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"
EXPECTED_ALERTS = {
    "SafeStopIssued": "page",
    "SafeStopNotAcknowledged": "page",
    "SiteHeartbeatLost": "page",
    "LatencyWarning": "warning",
    "LatencyCritical": "page",
    "MonitoringBlind": "page",
    "TelesafeMonitorSaturated": "page",
    "ForgedOperatorRequest": "page",
    "BadTelemetrySignatures": "warning",
    "MonitorDown": "page",
    "DeadLetterRate": "warning",
    "LedgerCheckpointStale": "warning",
    "LedgerVerifyFailure": "page",
    "LedgerAppendFailure": "page",
    "ArchiveRefusedRecords": "warning",
    "ArchiveStalled": "warning",
    "Watchdog": "none",
}


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def _alert_rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_rules_promtool() -> None:
    check = _run("promtool", "check", "rules", str(RULES_FILE))
    assert check.returncode == 0, check.stdout + check.stderr
    assert RULE_TESTS, "no promtool unit tests in alerts/tests"
    test = _run("promtool", "test", "rules", *map(str, RULE_TESTS))
    assert test.returncode == 0, test.stdout + test.stderr
    assert "FAILED" not in test.stdout + test.stderr


def test_every_alert_is_defined_labelled_and_documented() -> None:
    rules = {str(r["alert"]): r for r in _alert_rules()}
    assert set(rules) == set(EXPECTED_ALERTS)
    runbook = RUNBOOK.read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", m.group(1).strip().lower()).replace(" ", "-")
        for m in re.finditer(r"^#+\s+(.+)$", runbook, flags=re.M)
    }
    for name, rule in rules.items():
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        assert labels["severity"] == EXPECTED_ALERTS[name], name
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        url = str(annotations["runbook_url"])
        assert url == f"docs/runbook.md#{name.lower()}", url
        assert name.lower() in anchors, f"docs/runbook.md has no section for {name}"
        if labels["severity"] == "page":
            assert re.fullmatch(r"\d+s", str(rule.get("for", "0s"))), f"{name}: for: in seconds"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for f in RULE_TESTS:
        doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        for t in doc["tests"]:
            for a in t.get("alert_rule_test", []):
                (fired if a.get("exp_alerts") else quiet).add(a["alertname"])
    assert set(EXPECTED_ALERTS) <= fired
    assert set(EXPECTED_ALERTS) - {"Watchdog"} <= quiet  # Watchdog never stops, by design


def test_pages_for_procedures_carry_procedure_id_and_rule() -> None:
    """The safety pages name the procedure and the policy rule (checked by promtool tests)."""
    text = "".join(p.read_text(encoding="utf-8") for p in RULE_TESTS)
    for name in (
        "SafeStopIssued",
        "SafeStopNotAcknowledged",
        "SiteHeartbeatLost",
        "LatencyCritical",
    ):
        block = re.search(rf"alertname: {name}\n\s+exp_alerts:\n\s+- exp_labels: (\{{.*\}})", text)
        assert block, name
        labels = yaml.safe_load(block.group(1))
        assert {"procedure_id", "rule", "severity"} <= set(labels), (name, labels)


def test_alertmanager_config(tmp_path: Path) -> None:
    check = _run("amtool", "check-config", str(AM_CONFIG))
    assert check.returncode == 0, check.stdout + check.stderr

    def routes(*labels: str) -> set[str]:
        out = _run("amtool", "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels)
        assert out.returncode == 0, out.stdout + out.stderr
        return set(out.stdout.strip().split(","))

    assert routes("alertname=SafeStopIssued", "severity=page", "procedure_id=p1") == {
        "telesafe-webhook",
        "pagerduty-oncall",
        "opsgenie-oncall",
    }
    assert routes("alertname=Watchdog", "severity=none") == {"deadman-heartbeat"}
    assert routes("alertname=LatencyWarning", "severity=warning") == {"telesafe-webhook"}

    cfg = yaml.safe_load(AM_CONFIG.read_text(encoding="utf-8"))
    inhibit = cfg["inhibit_rules"][0]
    assert 'severity="page"' in inhibit["source_matchers"]
    assert 'severity="warning"' in inhibit["target_matchers"]
    assert inhibit["equal"] == ["procedure_id"]
    # Secrets come from files, never inline.
    text = AM_CONFIG.read_text(encoding="utf-8")
    assert "routing_key_file:" in text and "api_key_file:" in text
    assert not re.search(r"^\s*(routing_key|api_key|service_key):", text, flags=re.M)


def test_alertmanager_test_config_is_valid(tmp_path: Path) -> None:
    from .promstack import alertmanager_test_config

    cfg = alertmanager_test_config("http://127.0.0.1:1", tmp_path / "secrets")
    path = tmp_path / "am.yml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    check = _run("amtool", "check-config", str(path))
    assert check.returncode == 0, check.stdout + check.stderr
