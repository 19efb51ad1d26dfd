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


# --- every declared series is written by production code -------------------------------

# Declared series no production code writes yet (none; the test below fails as soon as a
# listed one is written, so the set cannot go stale).
PENDING_LEAD: set[str] = set()

# Calls that write a metric: `<x>.<attr>.inc(...)`, `.set`, `.observe`, `.labels(...)...`.
_WRITE_METHODS = frozenset(
    {"inc", "dec", "set", "observe", "info", "labels", "set_function", "time", "state"}
)
# Helpers a metric is handed to, which write it: `child(m.x, ...)`, `observe_pauses(m.x)`.
_WRITING_HELPERS = frozenset({"child", "observe_pauses"})
# Names the monitor gives its MonitorMetrics: any `<name>.<attr>` on them counts as a use
# (e.g. `for kind, counter in (("lost", m.lost), ...): counter.labels(site).inc()`).
_METRICS_NAMES = frozenset({"m", "metrics", "_metrics"})


def _declared_metrics() -> dict[str, str]:
    """attribute -> series name, for `self.<attr> = Counter|Gauge|Histogram|Info(...)`."""
    import ast
    from pathlib import Path

    import monitor.metrics

    tree = ast.parse(Path(monitor.metrics.__file__).read_text())
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id in {"Counter", "Gauge", "Histogram", "Info"}
        ):
            for target in node.targets:
                if isinstance(target, ast.Attribute):
                    arg = node.value.args[0]
                    assert isinstance(arg, ast.Constant)
                    out[target.attr] = str(arg.value)
    return out


def _written_attributes() -> dict[str, list[str]]:
    """attribute -> 'file:line' of each write or use on the metrics object, in monitor/
    outside metrics.py."""
    import ast
    from pathlib import Path

    import monitor

    root = Path(monitor.__file__).parent
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        if path.name == "metrics.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute):
                owner = node.value
                owner_name = (
                    owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                )
                if owner_name in _METRICS_NAMES:
                    found.setdefault(node.attr, []).append(
                        f"{path.relative_to(root.parent)}:{node.lineno}"
                    )
            if not isinstance(node, ast.Call):
                continue
            attrs: list[str] = []
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr in _WRITE_METHODS
                and isinstance(func.value, ast.Attribute)
            ):
                attrs.append(func.value.attr)
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _WRITING_HELPERS and node.args and isinstance(node.args[0], ast.Attribute):
                attrs.append(node.args[0].attr)
            for a in attrs:
                found.setdefault(a, []).append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return found


def test_every_declared_metric_is_written_by_production_code() -> None:
    """A series that is declared, documented and alerted on but never written is a silent
    hole (LedgerVerifyFailure could never fire). Static: monitor/ sources, not tests."""
    declared = _declared_metrics()
    assert len(declared) > 25 and "ledger_verify_failures" in declared
    written = _written_attributes()
    never = {a: s for a, s in declared.items() if a not in written and a not in PENDING_LEAD}
    assert not never, f"declared in monitor/metrics.py but never written: {never}"
    done = {a: written[a] for a in PENDING_LEAD if a in written}
    assert not done, f"now written, remove from PENDING_LEAD: {done}"
