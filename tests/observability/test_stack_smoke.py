"""Prometheus → rules → Alertmanager → webhook wiring, without the monitor.

A tiny prometheus_client HTTP server exposes the monitor's real metric objects
(monitor.metrics.MonitorMetrics) as job "telesafe"; Prometheus (real, Debian) scrapes it
every second with the shipped rules; Alertmanager (real, with the shipped routing) delivers
to a local webhook receiver standing in for the pager gateway, PagerDuty and Opsgenie.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import start_http_server

from monitor.dashboards import all_queries, render_query
from monitor.metrics import MonitorMetrics

from .promstack import Delivery, PromStack, free_port, wait_until, webhook_alerts
from .views import procedure, view

pytestmark = [pytest.mark.usefixtures("prom_binaries"), pytest.mark.slow]

PID = "proc-smoke-1"


@pytest.fixture
def exporter() -> Iterator[tuple[MonitorMetrics, str]]:
    m = MonitorMetrics(with_process=False)
    m.info.info({"monitor_id": "smoke", "version": "0.1.0"})
    m.per_procedure.publish(view(**{PID: procedure()}))
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=m.registry)
    try:
        yield m, f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _has_alert(name: str, status: str, **labels: str) -> object:
    def pred(d: Delivery) -> bool:
        return any(
            a["labels"].get("alertname") == name
            and a["status"] == status
            and all(a["labels"].get(k) == v for k, v in labels.items())
            for a in webhook_alerts(d)
        )

    return pred


def test_page_reaches_webhook_pagerduty_opsgenie_and_resolves(
    exporter: tuple[MonitorMetrics, str],
) -> None:
    m, target = exporter
    with PromStack(targets=[target]) as stack:
        try:
            wait_until(stack.targets_up, 30, what="scrape target up")

            # The dead-man's switch heartbeat arrives at its own receiver.
            wd = stack.receiver.wait_for(lambda d: d.path == "/webhook/deadman-heartbeat", 30)
            assert any(a["labels"]["alertname"] == "Watchdog" for a in webhook_alerts(wd))

            # Latch a safe-stop, as the monitor does (ICD §7) -> SafeStopIssued page.
            m.per_procedure.publish(
                view(**{PID: procedure("safe_stop_latched", latch_rule="heartbeat_silence")})
            )
            page = stack.receiver.wait_for(
                _has_alert(  # type: ignore[arg-type]
                    "SafeStopIssued",
                    "firing",
                    procedure_id=PID,
                    rule="heartbeat_silence",
                    severity="page",
                ),
                30,
            )
            assert page.path == "/webhook/telesafe-webhook"
            alert = next(
                a for a in webhook_alerts(page) if a["labels"]["alertname"] == "SafeStopIssued"
            )
            assert alert["annotations"]["runbook_url"] == "docs/runbook.md#safestopissued"
            assert PID in alert["annotations"]["summary"]
            # The same page also went to the PagerDuty- and Opsgenie-style receivers.
            pd = stack.receiver.wait_for(lambda d: d.path.startswith("/pagerduty/"), 15)
            assert pd.body["event_action"] == "trigger"
            assert pd.body["routing_key"] == "test-routing-key-0123456789abcdef"
            assert pd.body["payload"]["custom_details"]["procedure_id"] == PID
            og = stack.receiver.wait_for(lambda d: d.path.startswith("/opsgenie/"), 15)
            assert og.path == "/opsgenie/v2/alerts"
            assert og.body["priority"] == "P1"

            # Re-arm: the latch clears -> the webhook receives the resolution.
            m.per_procedure.publish(view(**{PID: procedure()}))
            stack.receiver.wait_for(
                _has_alert(  # type: ignore[arg-type]
                    "SafeStopIssued", "resolved", procedure_id=PID
                ),
                30,
            )
        except BaseException:
            print(stack.logs())
            raise


def test_every_dashboard_query_is_valid_promql(exporter: tuple[MonitorMetrics, str]) -> None:
    """Prometheus accepts every panel query (data is checked end-to-end with the monitor)."""
    _, target = exporter
    with PromStack(targets=[target]) as stack:
        wait_until(stack.targets_up, 30, what="scrape target up")
        bad = []
        for q in all_queries():
            expr = render_query(q.expr, {"procedure_id": PID})
            try:
                stack.query(expr)
            except Exception as exc:
                bad.append((q.dashboard_uid, q.panel_title, expr, str(exc)))
        assert not bad, bad
