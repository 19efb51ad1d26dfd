"""`promtool check metrics` on the monitor's exposition (monitor.metrics.MonitorMetrics)."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client import generate_latest

from monitor.metrics import MonitorMetrics

from .views import procedure, view

pytestmark = pytest.mark.usefixtures("prom_binaries")

# promtool findings tolerated here (none: the latency window gauge uses `percentile`, not
# the `quantile` label Prometheus reserves for summaries). Anything promtool reports fails.
KNOWN_FINDINGS: set[str] = set()


def populated_metrics() -> MonitorMetrics:
    """Every metric with at least one child, so the lint sees real label sets."""
    m = MonitorMetrics()
    m.info.info({"monitor_id": "m1", "version": "0.1.0"})
    m.up_since.set(1_700_000_000)
    m.records.labels("robot", "heartbeat").inc()
    m.rejected.labels("telesafe.telemetry.robot", "schema").inc()
    m.duplicates.labels("console").inc()
    m.lost.labels("robot").inc(3)
    m.stale.labels("robot").inc()
    m.operator_requests.labels("rearm_request", "accepted").inc()
    m.consumer_lag.labels("telesafe.telemetry.robot").set(0)
    m.consumer_lag_seconds.labels("0").set(0.01)
    m.assigned_partitions.set(6)
    m.latency.labels("control").observe(0.048)
    m.per_procedure.publish(
        view(p1=procedure(warnings=("control_latency:control",)),
             p2=procedure("safe_stop_latched", latch_rule="heartbeat_silence"))
    )
    m.warnings.labels("control_latency").inc()
    m.safe_stops.labels("heartbeat_silence").inc()
    m.safe_stop_resends.inc()
    m.ack_delay.observe(0.02)
    m.detection_latency.labels("timer").observe(0.001)
    m.commands_sent.labels("safe_stop").inc()
    m.command_send_failures.labels("safe_stop").inc(0)
    m.engine_loop_lag.set(0.0001)
    m.gc_pause.labels("2").observe(0.003)
    m.ledger_appends.inc()
    m.ledger_size.set(1)
    m.ledger_checkpoint_time.set(1_700_000_000)
    m.ledger_last_verify_ok.set(1)
    return m


@pytest.mark.parametrize("populated", [False, True], ids=["fresh", "populated"])
def test_promtool_check_metrics(populated: bool) -> None:
    m = populated_metrics() if populated else MonitorMetrics()
    exposition = generate_latest(m.registry)
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, timeout=60
    )
    findings = {
        line.strip() for line in (proc.stdout + proc.stderr).decode().splitlines() if line.strip()
    }
    assert findings <= KNOWN_FINDINGS, findings - KNOWN_FINDINGS
    if not findings:
        assert proc.returncode == 0


def test_docs_metrics_lists_every_series() -> None:
    """docs/metrics.md catalogues every series of MonitorMetrics (type and labels)."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    m = MonitorMetrics(with_process=False)
    for family in m.registry.collect():
        name = {"counter": family.name + "_total", "info": family.name + "_info"}.get(
            family.type, family.name
        )
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row, f"docs/metrics.md has no row for {name}"
        assert f"| {family.type} |" in row, row
