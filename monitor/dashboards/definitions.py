"""The three telesafe dashboards: Live procedure, Fleet, Audit & compliance.

Thresholds drawn on the panels are the ICD §7 default policy pack (the same numbers the
alert rules in alerts/telesafe-rules.yml use). Queries use only series from
monitor/metrics.py; tests/observability checks each one against a real Prometheus.
"""

from __future__ import annotations

from .model import (
    JSON,
    Dashboard,
    Panel,
    Row,
    Target,
    Threshold,
    Variable,
    steps,
    upper_bands,
)

P = 'procedure_id="$procedure_id"'

# Value mappings shared by "is it on" panels.
ON_OFF = [
    {
        "type": "value",
        "options": {
            "0": {"text": "no", "color": "green", "index": 0},
            "1": {"text": "YES", "color": "red", "index": 1},
        },
    }
]
STATE_ROW = [
    {
        "type": "value",
        "options": {
            "0": {"text": " ", "color": "transparent", "index": 0},
            "1": {"text": "in state", "color": "blue", "index": 1},
        },
    }
]
STATE_COLOURS = {
    "pending": "#8e8e8e",
    "armed": "green",
    "warning": "yellow",
    "safe_stop_latched": "red",
    "safe_stopped": "dark-red",
    "ended": "blue",
}
STATE_OVERRIDES: list[JSON] = [
    {
        "matcher": {"id": "byName", "options": state},
        "properties": [
            {
                "id": "mappings",
                "value": [
                    {
                        "type": "value",
                        "options": {
                            "0": {"text": " ", "color": "transparent", "index": 0},
                            "1": {"text": state, "color": colour, "index": 1},
                        },
                    }
                ],
            }
        ],
    }
    for state, colour in STATE_COLOURS.items()
]


def _timeseries(
    title: str,
    *targets: Target,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    thresholds: tuple[Threshold, ...] = (),
    show_thresholds: bool = False,
    description: str = "",
) -> Panel:
    return Panel(
        title=title,
        kind="timeseries",
        targets=list(targets),
        unit=unit,
        width=width,
        height=height,
        thresholds=thresholds,
        show_thresholds=show_thresholds,
        description=description,
    )


def live_procedure() -> Dashboard:
    heartbeat = _timeseries(
        "Heartbeat age by site",
        Target(f"max by (site) (telesafe_heartbeat_age_seconds{{{P}}})", "{{site}}"),
        unit="s",
        thresholds=upper_bands(0.1, 0.3),
        show_thresholds=True,
        width=12,
        description="Time since the last fresh heartbeat of each site (monitor clock). "
        "Warn > 100 ms, safe-stop > 300 ms.",
    )
    state_timeline = Panel(
        title="Procedure state",
        kind="state-timeline",
        width=12,
        targets=[Target(f"max by (state) (telesafe_procedure_state{{{P}}})", "{{state}}")],
        mappings=STATE_ROW,
        options={
            "showValue": "never",
            "mergeValues": True,
            "rowHeight": 0.8,
            "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
        },
        description="One row per state; the coloured band is the state the procedure was in.",
    )
    control = _timeseries(
        "Control latency (1 s window) p50 / p95 / p99",
        Target(
            f'max by (percentile) (telesafe_latency_window_seconds{{{P}, channel="control"}})',
            "p{{percentile}}",
        ),
        unit="s",
        thresholds=upper_bands(0.1, 0.3),
        show_thresholds=True,
        width=12,
        description="Surgeon hand motion → robot motion. p95 warn > 100 ms, safe-stop > 300 ms "
        "held 1 s (or any sample > 500 ms).",
    )
    video = _timeseries(
        "Video latency (1 s window) p50 / p95 / p99",
        Target(
            f'max by (percentile) (telesafe_latency_window_seconds{{{P}, channel="video"}})',
            "p{{percentile}}",
        ),
        unit="s",
        thresholds=upper_bands(0.15, 0.4),
        show_thresholds=True,
        width=12,
        description="Robot camera → console display. p95 warn > 150 ms, safe-stop > 400 ms "
        "held 1 s.",
    )
    jitter = _timeseries(
        "Link jitter",
        Target(f"max by (site) (telesafe_link_jitter_seconds{{{P}}})", "{{site}}"),
        unit="s",
        thresholds=steps((None, "green"), (0.01, "yellow")),
        show_thresholds=True,
        width=12,
        description="Last reported jitter per site. Warn > 10 ms.",
    )
    loss = _timeseries(
        "Link loss ratio",
        Target(f"max by (site) (telesafe_link_loss_ratio{{{P}}})", "{{site}}"),
        unit="percentunit",
        thresholds=upper_bands(0.001, 0.03),
        show_thresholds=True,
        width=12,
        description="Last reported loss ratio per site. Warn > 0.1 %, safe-stop > 3 %.",
    )
    margin = _timeseries(
        "Workspace margin per arm",
        Target(f"min by (arm) (telesafe_workspace_margin_meters{{{P}}})", "{{arm}}"),
        unit="lengthm",
        thresholds=steps((None, "red"), (0.0, "yellow"), (0.005, "green")),
        show_thresholds=True,
        width=12,
        description="Distance of the tool tip to the nearest allowed-box face or forbidden "
        "zone. Warn within 5 mm, safe-stop below 0 (outside / inside a zone).",
    )
    speed = _timeseries(
        "Tool-tip speed per arm",
        Target(f"max by (arm) (telesafe_tool_speed_meters_per_second{{{P}}})", "{{arm}}"),
        unit="velocityms",
        thresholds=upper_bands(0.1, 0.2),
        show_thresholds=True,
        width=12,
        description="Highest tool-tip speed in the last batch. Warn > 100 mm/s, "
        "safe-stop > 200 mm/s.",
    )
    latched = Panel(
        title="Safe-stop latched (by rule)",
        kind="state-timeline",
        width=8,
        targets=[Target(f"max by (rule) (telesafe_safe_stop_latched{{{P}}})", "{{rule}}")],
        mappings=ON_OFF,
        options={
            "showValue": "auto",
            "mergeValues": True,
            "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
        },
        description="The rule that latched the procedure; clears only on an accepted re-arm.",
    )
    unacked = Panel(
        title="Safe-stop awaiting robot ack / escalated",
        kind="state-timeline",
        width=8,
        targets=[
            Target(f"max(telesafe_safe_stop_unacknowledged{{{P}}})", "unacknowledged"),
            Target(f"max(telesafe_safe_stop_escalated{{{P}}})", "escalated (paged)"),
        ],
        mappings=ON_OFF,
        options={
            "showValue": "auto",
            "mergeValues": True,
            "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
        },
        description="Re-sent every 100 ms until acknowledged; paged after 5 re-sends.",
    )
    acks = _timeseries(
        "Safe-stop ack delay p95 / acks",
        Target(
            "histogram_quantile(0.95, sum by (le) "
            "(rate(telesafe_safe_stop_ack_delay_seconds_bucket[$__rate_interval])))",
            "ack delay p95",
        ),
        Target(
            "sum(increase(telesafe_safe_stop_ack_delay_seconds_count[$__range]))", "acks in range"
        ),
        unit="s",
        width=8,
        description="From the first issue of a safe-stop to the robot's acknowledgement "
        "(all procedures of the monitor: the histogram has no procedure label).",
    )
    warnings = Panel(
        title="Active warnings",
        kind="state-timeline",
        width=24,
        height=6,
        targets=[Target(f"max by (rule) (telesafe_warning_active{{{P}}})", "{{rule}}")],
        mappings=ON_OFF,
        options={
            "showValue": "auto",
            "mergeValues": True,
            "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
        },
        description="1 while a policy warning is active for this procedure.",
    )
    return Dashboard(
        uid="telesafe-live-procedure",
        title="telesafe / Live procedure",
        description="One procedure in real time: liveness, latency, link, kinematics, "
        "decisions. Thresholds are the ICD §7 default policy pack.",
        variables=[
            Variable(
                "procedure_id", "Procedure", "label_values(telesafe_procedure_state, procedure_id)"
            )
        ],
        refresh="1s",
        time_from="now-15m",
        rows=[
            Row("Liveness and state", [heartbeat, state_timeline]),
            Row("Latency", [control, video]),
            Row("Link", [jitter, loss]),
            Row("Kinematics", [margin, speed]),
            Row("Decisions", [latched, unacked, acks, warnings]),
        ],
    )


def fleet() -> Dashboard:
    rate = "[$__rate_interval]"
    return Dashboard(
        uid="telesafe-fleet",
        title="telesafe / Fleet",
        description="All monitors and procedures: load, states, input quality, lag.",
        rows=[
            Row(
                "Procedures",
                [
                    Panel(
                        "Procedures active",
                        "stat",
                        [Target("sum(telesafe_procedures_active)")],
                        width=6,
                        height=6,
                        unit="none",
                        description="Procedures supervised, over all monitor instances.",
                    ),
                    Panel(
                        "Procedures by state",
                        "bargauge",
                        [
                            Target(
                                "sum by (state) (telesafe_procedure_state)",
                                "{{state}}",
                                instant=True,
                            )
                        ],
                        width=9,
                        height=6,
                        unit="none",
                        options={"orientation": "horizontal", "displayMode": "basic"},
                    ),
                    Panel(
                        "Monitors up",
                        "stat",
                        [Target('up{job="telesafe"}', "{{instance}}")],
                        width=9,
                        height=6,
                        unit="none",
                        mappings=[
                            {
                                "type": "value",
                                "options": {
                                    "0": {"text": "DOWN", "color": "red", "index": 0},
                                    "1": {"text": "up", "color": "green", "index": 1},
                                },
                            }
                        ],
                    ),
                    _timeseries(
                        "Procedures active per instance",
                        Target("sum by (instance) (telesafe_procedures_active)", "{{instance}}"),
                        unit="none",
                    ),
                    _timeseries(
                        "Safe-stops and warnings by rule (rate)",
                        Target(
                            f"sum by (rule) (rate(telesafe_safe_stops_total{rate}))",
                            "safe-stop {{rule}}",
                        ),
                        Target(
                            f"sum by (rule) (rate(telesafe_warnings_total{rate}))",
                            "warning {{rule}}",
                        ),
                        unit="ops",
                    ),
                ],
            ),
            Row(
                "Throughput per instance",
                [
                    _timeseries(
                        "Records received per instance and site",
                        Target(
                            "sum by (instance, site) "
                            f"(rate(telesafe_records_received_total{rate}))",
                            "{{instance}} {{site}}",
                        ),
                        unit="rps",
                    ),
                    _timeseries(
                        "Commands sent per instance and type",
                        Target(
                            f"sum by (instance, type) (rate(telesafe_commands_sent_total{rate}))",
                            "{{instance}} {{type}}",
                        ),
                        unit="ops",
                    ),
                ],
            ),
            Row(
                "Consumer lag",
                [
                    _timeseries(
                        "Consumer lag (records) per topic",
                        Target(
                            "sum by (instance, topic) (telesafe_consumer_lag_records)",
                            "{{instance}} {{topic}}",
                        ),
                        unit="none",
                        thresholds=steps((None, "green"), (1000, "red")),
                        show_thresholds=True,
                    ),
                    _timeseries(
                        "Consumer lag (seconds)",
                        Target("max by (instance) (telesafe_consumer_lag_seconds)", "{{instance}}"),
                        unit="s",
                        thresholds=steps((None, "green"), (0.5, "red")),
                        show_thresholds=True,
                        description="Age of the newest record handed to the engine. "
                        "Above the 500 ms staleness limit the monitor is blind.",
                    ),
                ],
            ),
            Row(
                "Input quality",
                [
                    _timeseries(
                        "Rejected records by reason (dead-letter)",
                        Target(
                            f"sum by (reason) (rate(telesafe_records_rejected_total{rate}))",
                            "{{reason}}",
                        ),
                        unit="rps",
                        width=8,
                    ),
                    _timeseries(
                        "Duplicate records by site",
                        Target(
                            f"sum by (site) (rate(telesafe_records_duplicate_total{rate}))",
                            "{{site}}",
                        ),
                        unit="rps",
                        width=8,
                    ),
                    _timeseries(
                        "Lost records (seq gaps) by site",
                        Target(
                            f"sum by (site) (rate(telesafe_records_lost_total{rate}))", "{{site}}"
                        ),
                        unit="rps",
                        width=8,
                    ),
                ],
            ),
            Row(
                "Reaction time",
                [
                    _timeseries(
                        "Detection latency p99 by kind",
                        Target(
                            "histogram_quantile(0.99, sum by (le, kind) "
                            f"(rate(telesafe_detection_latency_seconds_bucket{rate})))",
                            "{{kind}}",
                        ),
                        unit="s",
                        description="Breach → safe-stop handed to the producer.",
                    ),
                    _timeseries(
                        "Engine timer lag",
                        Target(
                            "max by (instance) (telesafe_engine_timer_lag_seconds)", "{{instance}}"
                        ),
                        unit="s",
                    ),
                ],
            ),
        ],
    )


def audit() -> Dashboard:
    rng = "[$__range]"
    return Dashboard(
        uid="telesafe-audit",
        title="telesafe / Audit & compliance",
        description="The append-only audit ledger: growth, checkpoints, self-verification.",
        refresh="30s",
        time_from="now-6h",
        rows=[
            Row(
                "Ledger",
                [
                    _timeseries(
                        "Ledger entries",
                        Target("max by (instance) (telesafe_ledger_entries)", "{{instance}}"),
                        unit="none",
                    ),
                    _timeseries(
                        "Ledger appends per second",
                        Target(
                            "sum by (instance) "
                            "(rate(telesafe_ledger_appends_total[$__rate_interval]))",
                            "{{instance}}",
                        ),
                        unit="ops",
                    ),
                    _timeseries(
                        "Pending (not yet durable) entries",
                        Target(
                            "max by (instance) (telesafe_ledger_pending_entries)", "{{instance}}"
                        ),
                        unit="none",
                    ),
                    _timeseries(
                        "Checkpoint age",
                        Target(
                            "time() - max by (instance) "
                            "(telesafe_ledger_last_checkpoint_timestamp_seconds)",
                            "{{instance}}",
                        ),
                        unit="s",
                        thresholds=steps((None, "green"), (600, "red")),
                        show_thresholds=True,
                        description="Age of the newest signed checkpoint; alert at 10 min.",
                    ),
                ],
            ),
            Row(
                "Integrity",
                [
                    Panel(
                        "Last self-verification",
                        "stat",
                        [
                            Target(
                                "min by (instance) (telesafe_ledger_last_verify_success)",
                                "{{instance}}",
                            )
                        ],
                        width=8,
                        height=6,
                        unit="none",
                        mappings=[
                            {
                                "type": "value",
                                "options": {
                                    "0": {
                                        "text": "FAILED / not yet run",
                                        "color": "red",
                                        "index": 0,
                                    },
                                    "1": {"text": "verified", "color": "green", "index": 1},
                                },
                            }
                        ],
                    ),
                    Panel(
                        "Verify failures in range",
                        "stat",
                        [
                            Target(
                                "sum by (instance) "
                                f"(increase(telesafe_ledger_verify_failures_total{rng}))",
                                "{{instance}}",
                            )
                        ],
                        width=8,
                        height=6,
                        unit="none",
                        decimals=0,
                        thresholds=steps((None, "green"), (1, "red")),
                    ),
                    Panel(
                        "Append failures in range",
                        "stat",
                        [
                            Target(
                                "sum by (instance) "
                                f"(increase(telesafe_ledger_append_failures_total{rng}))",
                                "{{instance}}",
                            )
                        ],
                        width=8,
                        height=6,
                        unit="none",
                        decimals=0,
                        thresholds=steps((None, "green"), (1, "red")),
                    ),
                ],
            ),
            Row(
                "Operator actions and safety record",
                [
                    Panel(
                        "Operator requests by type and outcome",
                        "bargauge",
                        [
                            Target(
                                "sum by (type, outcome) "
                                f"(increase(telesafe_operator_requests_total{rng}))",
                                "{{type}} {{outcome}}",
                                instant=True,
                            )
                        ],
                        width=12,
                        unit="none",
                        decimals=0,
                        options={"orientation": "horizontal", "displayMode": "basic"},
                    ),
                    Panel(
                        "Safe-stops by rule in range",
                        "bargauge",
                        [
                            Target(
                                f"sum by (rule) (increase(telesafe_safe_stops_total{rng}))",
                                "{{rule}}",
                                instant=True,
                            )
                        ],
                        width=12,
                        unit="none",
                        decimals=0,
                        options={"orientation": "horizontal", "displayMode": "basic"},
                    ),
                ],
            ),
        ],
    )


def all_dashboards() -> list[Dashboard]:
    return [live_procedure(), fleet(), audit()]
