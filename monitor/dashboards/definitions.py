"""The three telesafe dashboards: Live procedure, Fleet, Audit & compliance.

Every threshold drawn on a panel is read from a policy pack (by default the shipped
``rules/default.yaml``, through :mod:`monitor.policy.loader`), so a pack change moves the
dashboard lines when the JSON is regenerated. The two limits that belong to alert rules,
not to a pack, are named constants below. Queries use only series from monitor/metrics.py;
tests/observability runs each one against a real Prometheus scraping a real monitor.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.models import units
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue, Threshold

from monitor.policy.loader import DEFAULT_PACK, load_pack_file, rules_dir
from monitor.policy.model import PolicyPack

from .kit import (
    Dashboard,
    Query,
    bands,
    bar_gauge,
    build,
    on_off,
    query_variable,
    stat_panel,
    state_colour_overrides,
    state_timeline,
    time_series,
    value_colours,
)

P = 'procedure_id="$procedure_id"'
RATE = "[$__rate_interval]"
RANGE = "[$__range]"

# Limits of alert rules (alerts/telesafe-rules.yml), not of a policy pack.
LAG_RECORDS_ALERT = 1000  # MonitoringBlind: telemetry backlog
CHECKPOINT_AGE_ALERT_S = 600  # LedgerCheckpointStale

# Grafana has no mm/s unit; the metric is in m/s (base units), the panel scales it.
MM_PER_S = "suffix: mm/s"

STATE_COLOURS = {
    "pending": "#8e8e8e",
    "armed": "green",
    "warning": "yellow",
    "safe_stop_latched": "red",
    "safe_stopped": "dark-red",
    "ended": "blue",
}


def default_pack() -> PolicyPack:
    """The shipped default policy pack (``rules/default.yaml``)."""
    return load_pack_file(rules_dir() / f"{DEFAULT_PACK}.yaml").pack


def _ms(value: float) -> str:
    return f"{value:g} ms"


def _pct(ratio: float) -> str:
    return f"{ratio * 100:g} %"


def _warn_stop(warn: float | None, stop: float | None) -> str:
    parts = []
    if warn is not None:
        parts.append(f"warn above {_ms(warn)}")
    if stop is not None:
        parts.append(f"safe-stop above {_ms(stop)}")
    return ", ".join(parts) or "no limit in the pack"


def _upper(warn: float | None, stop: float | None, per: float = 1) -> list[Threshold]:
    """Green, yellow from ``warn``, red from ``stop`` (either may be absent), divided by
    ``per`` (1000: a pack's milliseconds on a panel in seconds)."""
    return bands(
        (None, "green"),
        (None if warn is None else warn / per, "yellow"),
        (None if stop is None else stop / per, "red"),
    )


def live_procedure(pack: PolicyPack | None = None) -> Dashboard:
    """One procedure in real time; threshold lines from ``pack`` (default: the default pack)."""
    pk = pack or default_pack()
    hb, lat, link, ws, alarms = pk.heartbeat, pk.latency, pk.link, pk.workspace, pk.alarms
    window = f"{lat.window_ms / 1000:g} s" if lat.window_ms >= 1000 else _ms(lat.window_ms)
    q = f"p{lat.quantile * 100:g}"
    heartbeat = time_series(
        "Heartbeat age by site",
        Query(f"max by (site) (telesafe_heartbeat_age_seconds{{{P}}})", "{{site}}"),
        Query(
            f"max(telesafe_heartbeat_stop_limit_seconds{{{P}}})",
            "safe-stop limit (this procedure's pack)",
        ),
        unit=units.Seconds,
        thresholds=_upper(hb.warn_silence_ms, hb.stop_silence_ms, 1000),
        description="Time since the last fresh heartbeat of each site (monitor clock). "
        f"Bands: the {pk.name} pack ({_warn_stop(hb.warn_silence_ms, hb.stop_silence_ms)}); "
        "the dashed red line is the safe-stop limit of the pack this procedure runs under. "
        "Above it the monitor has safe-stopped the procedure: see the SiteHeartbeatLost "
        "runbook.",
    ).override_by_query(
        "B",
        [
            DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
            DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
        ],
    )
    states = state_colour_overrides(
        state_timeline(
            "Procedure state",
            Query(f"max by (state) (telesafe_procedure_state{{{P}}})", "{{state}}"),
            mappings=[value_colours({0: (" ", "transparent"), 1: ("in state", "blue")})],
            show_value=False,
            description="One row per state; the coloured band is the state the procedure "
            "was in. Red (safe_stop_latched): the robot was commanded to stop; re-arm only "
            "after both sites are healthy (telesafe rearm).",
        ).row_height(0.8),
        STATE_COLOURS,
    )

    def latency(channel: str, title: str, what: str) -> timeseries.Panel:
        ch = getattr(lat, channel)
        extra = (
            f", or any single sample above {_ms(ch.max_sample_ms)}"
            if ch.max_sample_ms is not None
            else ""
        )
        return time_series(
            f"{title} ({window} window) p50 / p95 / p99",
            Query(
                "max by (percentile) "
                f'(telesafe_latency_window_seconds{{{P}, channel="{channel}"}})',
                "p{{percentile}}",
            ),
            unit=units.Seconds,
            thresholds=_upper(ch.warn_ms, ch.stop_ms, 1000),
            description=f"{what}. The {q} of the window is judged ({pk.name} pack): "
            f"{_warn_stop(ch.warn_ms, ch.stop_ms)} held {_ms(ch.hold_ms)}{extra}. "
            "Red: expect a safe-stop (LatencyCritical runbook).",
        )

    control = latency("control", "Control latency", "Surgeon hand motion → robot motion")
    video = latency("video", "Video latency", "Robot camera → console display")
    jitter = time_series(
        "Link jitter",
        Query(f"max by (site) (telesafe_link_jitter_seconds{{{P}}})", "{{site}}"),
        unit=units.Seconds,
        thresholds=_upper(link.jitter.warn_ms, link.jitter.stop_ms, 1000),
        description="Last reported jitter per site "
        f"({pk.name} pack: {_warn_stop(link.jitter.warn_ms, link.jitter.stop_ms)}).",
    )
    loss = time_series(
        "Link loss ratio",
        Query(f"max by (site) (telesafe_link_loss_ratio{{{P}}})", "{{site}}"),
        unit=units.PercentUnit,
        thresholds=_upper(link.loss.warn_ratio, link.loss.stop_ratio),
        description="Last reported loss per site ("
        + ", ".join(
            f"{word} above {_pct(v)}"
            for word, v in (("warn", link.loss.warn_ratio), ("safe-stop", link.loss.stop_ratio))
            if v is not None
        )
        + f", {pk.name} pack).",
    )
    near_mm = max(ws.box_warn_mm, ws.zone_warn_mm)
    margin = time_series(
        "Workspace margin per arm",
        Query(f"1000 * min by (arm) (telesafe_workspace_margin_meters{{{P}}})", "{{arm}}"),
        unit=units.Millimeter,
        thresholds=bands((None, "red"), (0.0, "yellow"), (near_mm, "green")),
        description="Distance of the tool tip to the nearest allowed-box face or forbidden "
        f"zone, in mm. Yellow within {ws.box_warn_mm:g} mm of a box face or "
        f"{ws.zone_warn_mm:g} mm of a zone (warning); red below 0: outside the box or "
        f"inside a zone, a safe-stop ({pk.name} pack).",
    )
    speed = time_series(
        "Tool-tip speed per arm",
        Query(f"1000 * max by (arm) (telesafe_tool_speed_meters_per_second{{{P}}})", "{{arm}}"),
        unit=MM_PER_S,
        thresholds=_upper(ws.speed_mm_s.warn, ws.speed_mm_s.stop),
        description="Highest tool-tip speed in the last batch, in mm/s as in the packs and "
        f"reports ({pk.name} pack: warn above {ws.speed_mm_s.warn:g} mm/s, safe-stop above "
        f"{ws.speed_mm_s.stop:g} mm/s).",
    )
    latched = state_timeline(
        "Safe-stop latched (by rule)",
        Query(f"max by (rule) (telesafe_safe_stop_latched{{{P}}})", "{{rule}}"),
        mappings=[on_off()],
        description="The rule that latched the procedure in safe-stop; it clears only on "
        "an accepted re-arm (SafeStopIssued runbook).",
    )
    unacked = state_timeline(
        "Safe-stop awaiting robot ack / escalated",
        Query(f"max(telesafe_safe_stop_unacknowledged{{{P}}})", "unacknowledged"),
        Query(f"max(telesafe_safe_stop_escalated{{{P}}})", "escalated (paged)"),
        mappings=[on_off()],
        description=f"Re-sent every {_ms(alarms.resend_interval_ms)} until the robot "
        f"acknowledges; paged after {alarms.escalate_after_resends} re-sends ({pk.name} "
        "pack). Red: the robot may not have stopped, act at the robot site "
        "(SafeStopNotAcknowledged runbook).",
    )
    warnings = state_timeline(
        "Active warnings",
        Query(f"max by (rule) (telesafe_warning_active{{{P}}})", "{{rule}}"),
        mappings=[on_off()],
        width=24,
        height=6,
        description="1 while a policy warning is active for this procedure; a warning "
        f"clears after {_ms(alarms.clear_after_ms)} back in band.",
    )
    return build(
        uid="telesafe-live-procedure",
        title="telesafe / Live procedure",
        description="One procedure in real time: liveness, latency, link, kinematics, "
        f"decisions. Threshold bands: policy pack {pk.name} {pk.version}.",
        variables=[
            query_variable(
                "procedure_id", "Procedure", "label_values(telesafe_procedure_state, procedure_id)"
            )
        ],
        refresh="1s",
        time_from="now-15m",
        rows=[
            ("Liveness and state", [heartbeat, states]),
            ("Latency", [control, video]),
            ("Link", [jitter, loss]),
            ("Kinematics", [margin, speed]),
            ("Decisions", [latched, unacked, warnings]),
        ],
    )


def fleet(pack: PolicyPack | None = None) -> Dashboard:
    """All monitors and procedures; the staleness line from ``pack`` (default pack)."""
    pk = pack or default_pack()
    stop_ms = pk.heartbeat.stop_silence_ms
    stop_s = stop_ms / 1e3
    resend_s = pk.alarms.resend_interval_ms / 1e3
    escalate_s = resend_s * pk.alarms.escalate_after_resends
    ack_delay = time_series(
        "Safe-stop ack delay p95 / acks (all procedures)",
        Query(
            "histogram_quantile(0.95, sum by (le) "
            f"(rate(telesafe_safe_stop_ack_delay_seconds_bucket{RATE})))",
            "ack delay p95",
        ),
        Query("sum(increase(telesafe_safe_stop_ack_delay_seconds_count[$__range]))", "acks"),
        unit=units.Seconds,
        thresholds=_upper(resend_s, escalate_s),
        width=8,
        description="From the first issue of a safe-stop to the robot's acknowledgement, "
        "over every procedure of every monitor (the histogram has no procedure label), and "
        f"the number of acks in the range (right axis). Yellow: slower than the "
        f"{_ms(pk.alarms.resend_interval_ms)} re-send interval ({pk.name} pack); red: past "
        "the escalation, the robots ack too slowly: check the robot sites' command "
        "consumers and the link.",
    ).override_by_query(
        "B",
        [
            DynamicConfigValue(id_val="unit", value="none"),
            DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        ],
    )
    return build(
        uid="telesafe-fleet",
        title="telesafe / Fleet",
        description="All monitors and procedures: load, states, input quality, lag, reaction time.",
        rows=[
            (
                "Procedures",
                [
                    stat_panel(
                        "Procedures active",
                        Query("sum(telesafe_procedures_active)"),
                        width=6,
                        description="Procedures supervised, summed over all monitor "
                        "instances. Compare with the procedures scheduled: one missing is "
                        "unsupervised (check the Monitors up panel and the console's "
                        "procedure_start).",
                    ),
                    bar_gauge(
                        "Procedures by state",
                        Query(
                            "sum by (state) (telesafe_procedure_state)", "{{state}}", instant=True
                        ),
                        width=9,
                        height=6,
                        description="How many procedures are in each state now. Any in "
                        "safe_stop_latched or safe_stopped: open the Live procedure "
                        "dashboard for it and follow the SafeStopIssued runbook.",
                    ),
                    stat_panel(
                        "Monitors up",
                        Query('up{job="telesafe"}', "{{instance}}"),
                        width=9,
                        mappings=[value_colours({0: ("DOWN", "red"), 1: ("up", "green")})],
                        description="Whether Prometheus can scrape each monitor instance. "
                        "Red (DOWN): its procedures may be unsupervised; follow the "
                        "MonitorDown runbook (restart it, check that another instance "
                        "took over its partitions).",
                    ),
                    time_series(
                        "Procedures active per instance",
                        Query("sum by (instance) (telesafe_procedures_active)", "{{instance}}"),
                        unit=units.NoUnit,
                        description="Procedures each instance supervises. A drop to 0 on "
                        "one instance with the same rise on another is a partition "
                        "hand-over (failover); a drop without a rise means procedures lost "
                        "their monitor.",
                    ),
                    time_series(
                        "Safe-stops and warnings by rule (rate)",
                        Query(
                            f"sum by (rule) (rate(telesafe_safe_stops_total{RATE}))",
                            "safe-stop {{rule}}",
                        ),
                        Query(
                            f"sum by (rule) (rate(telesafe_warnings_total{RATE}))",
                            "warning {{rule}}",
                        ),
                        unit=units.OpsPerSecond,
                        description="Safe-stops and warnings per second, by policy rule, "
                        "over the fleet. A rule that keeps firing across procedures points "
                        "at the network or a pack too strict for it, not at one robot.",
                    ),
                ],
            ),
            (
                "Throughput per instance",
                [
                    time_series(
                        "Records received per instance and site",
                        Query(
                            "sum by (instance, site) "
                            f"(rate(telesafe_records_received_total{RATE}))",
                            "{{instance}} {{site}}",
                        ),
                        unit=units.ReadsPerSecond,
                        description="Valid telemetry records per second each instance "
                        "receives, by site. A site dropping to 0 while its procedures run "
                        "means its records no longer arrive (heartbeat alerts follow).",
                    ),
                    time_series(
                        "Commands sent per instance and type",
                        Query(
                            f"sum by (instance, type) (rate(telesafe_commands_sent_total{RATE}))",
                            "{{instance}} {{type}}",
                        ),
                        unit=units.OpsPerSecond,
                        description="Safe-stop and re-arm commands published per second. A "
                        "steady safe_stop rate is re-sends to a robot that does not "
                        "acknowledge (SafeStopNotAcknowledged runbook).",
                    ),
                ],
            ),
            (
                "Consumer lag",
                [
                    time_series(
                        "Consumer lag (records) per topic",
                        Query(
                            "sum by (instance, topic) (telesafe_consumer_lag_records)",
                            "{{instance}} {{topic}}",
                        ),
                        unit=units.NoUnit,
                        width=8,
                        thresholds=bands((None, "green"), (LAG_RECORDS_ALERT, "red")),
                        description="Records each instance has yet to read, per topic. "
                        f"Red (above {LAG_RECORDS_ALERT}, the MonitoringBlind alert): the "
                        "instance cannot keep up; add an instance or find what slows it "
                        "(engine timer lag, CPU).",
                    ),
                    time_series(
                        "Monitor lag per instance (seconds)",
                        Query("max by (instance) (telesafe_consumer_lag_seconds)", "{{instance}}"),
                        unit=units.Seconds,
                        width=8,
                        thresholds=bands((None, "green"), (0.1, "orange"), (stop_s, "red")),
                        description="How far behind each instance is on its worst partition "
                        "(records waiting in Kafka, a rebalance, a stall). That time is not "
                        "counted as site silence. Orange (100 ms, TelesafeMonitorSaturated "
                        f"when held): scale out. Red (the {_ms(stop_ms)} silence stop limit): "
                        "the instance withholds monitor_heartbeat for those procedures and "
                        "their robots hold on their own dead-man.",
                    ),
                    time_series(
                        "Monitor loop busy",
                        Query("max by (instance) (telesafe_monitor_busy_ratio)", "{{instance}}"),
                        unit=units.PercentUnit,
                        width=8,
                        thresholds=bands((None, "green"), (0.8, "orange"), (0.95, "red")),
                        description="Share of the time each instance's loop is working rather "
                        "than waiting for records. Near 100 % with a growing lag: the instance "
                        "is saturated; add instances (up to the partition count).",
                    ),
                ],
            ),
            (
                "Input quality",
                [
                    time_series(
                        "Rejected records by reason (dead-letter)",
                        Query(
                            f"sum by (reason) (rate(telesafe_records_rejected_total{RATE}))",
                            "{{reason}}",
                        ),
                        unit=units.ReadsPerSecond,
                        width=8,
                        description="Records rejected to the dead-letter topic per second, "
                        "by reason. A sustained rate (DeadLetterRate alert) means a site "
                        "sends records that do not match the ICD or are badly signed: read "
                        "the dead-letter topic and contact that site's vendor.",
                    ),
                    time_series(
                        "Duplicate records by site",
                        Query(
                            f"sum by (site) (rate(telesafe_records_duplicate_total{RATE}))",
                            "{{site}}",
                        ),
                        unit=units.ReadsPerSecond,
                        width=8,
                        description="Records ignored because their seq was already seen. "
                        "Occasional duplicates are producer retries; a steady rate means a "
                        "site resets or reuses its seq numbers.",
                    ),
                    time_series(
                        "Lost records (seq gaps) by site",
                        Query(
                            f"sum by (site) (rate(telesafe_records_lost_total{RATE}))", "{{site}}"
                        ),
                        unit=units.ReadsPerSecond,
                        width=8,
                        description="Records missing according to gaps in seq. A rising "
                        "rate with link loss warnings is the network; without them, the "
                        "site's producer drops records.",
                    ),
                ],
            ),
            (
                "Reaction time",
                [
                    time_series(
                        "Detection latency p99 by kind",
                        Query(
                            "histogram_quantile(0.99, sum by (le, kind) "
                            f"(rate(telesafe_detection_latency_seconds_bucket{RATE})))",
                            "{{kind}}",
                        ),
                        unit=units.Seconds,
                        width=8,
                        description="Breach → safe-stop handed to the producer (record: on "
                        "the breaching record; deadline: a timer rule's deadline). "
                        "Milliseconds are normal; tens of ms point at a starved instance "
                        "(check engine timer lag and CPU).",
                    ),
                    time_series(
                        "Engine timer lag",
                        Query(
                            "max by (instance) (telesafe_engine_timer_lag_seconds)", "{{instance}}"
                        ),
                        unit=units.Seconds,
                        width=8,
                        description="How late the engine thread ran its last due timer. "
                        "Heartbeat deadlines fire this much late; sustained tens of ms "
                        "mean the instance is overloaded: move procedures or add CPU.",
                    ),
                    ack_delay,
                ],
            ),
        ],
    )


def audit() -> Dashboard:
    """The audit ledger: growth, checkpoints, self-verification, the safety record."""
    return build(
        uid="telesafe-audit",
        title="telesafe / Audit & compliance",
        description="The append-only audit ledger: growth, checkpoints, self-verification.",
        refresh="30s",
        time_from="now-6h",
        rows=[
            (
                "Ledger",
                [
                    time_series(
                        "Ledger entries",
                        Query("max by (instance) (telesafe_ledger_entries)", "{{instance}}"),
                        unit=units.NoUnit,
                        description="Entries in each instance's ledger. It only grows; a "
                        "drop means the ledger file was replaced: verify it "
                        "(telesafe audit verify) and find out why.",
                    ),
                    time_series(
                        "Ledger appends per second",
                        Query(
                            f"sum by (instance) (rate(telesafe_ledger_appends_total{RATE}))",
                            "{{instance}}",
                        ),
                        unit=units.OpsPerSecond,
                        description="Entries durably written per second. Flat at 0 while "
                        "procedures run means nothing is being recorded: check the "
                        "append failures panel.",
                    ),
                    time_series(
                        "Pending (not yet durable) entries",
                        Query(
                            "max by (instance) (telesafe_ledger_pending_entries)", "{{instance}}"
                        ),
                        unit=units.NoUnit,
                        description="Entries submitted but not yet on disk. A queue that "
                        "keeps growing means the disk is too slow or full: check the "
                        "ledger volume.",
                    ),
                    time_series(
                        "Checkpoint age",
                        Query(
                            "time() - max by (instance) "
                            "(telesafe_ledger_last_checkpoint_timestamp_seconds)",
                            "{{instance}}",
                        ),
                        unit=units.Seconds,
                        thresholds=bands((None, "green"), (CHECKPOINT_AGE_ALERT_S, "red")),
                        description="Age of the newest signed checkpoint. Red (the "
                        "LedgerCheckpointStale alert): entries since then are not yet "
                        "covered by a signature; follow that runbook (signing key, disk).",
                    ),
                ],
            ),
            (
                "Integrity",
                [
                    stat_panel(
                        "Last self-verification",
                        Query(
                            "min by (instance) (telesafe_ledger_last_verify_success)",
                            "{{instance}}",
                        ),
                        mappings=[
                            value_colours(
                                {0: ("FAILED / not yet run", "red"), 1: ("verified", "green")}
                            )
                        ],
                        description="Whether the last check of the hash chain and "
                        "signatures passed. Red: the compliance record may be corrupt or "
                        "tampered with; follow the LedgerVerifyFailure runbook and keep "
                        "the ledger file as evidence.",
                    ),
                    stat_panel(
                        "Verify failures in range",
                        Query(
                            "sum by (instance) "
                            f"(increase(telesafe_ledger_verify_failures_total{RANGE}))",
                            "{{instance}}",
                        ),
                        decimals=0,
                        thresholds=bands((None, "green"), (1, "red")),
                        description="Failed self-verifications in the time range. Red: "
                        "see Last self-verification and the LedgerVerifyFailure runbook.",
                    ),
                    stat_panel(
                        "Append failures in range",
                        Query(
                            "sum by (instance) "
                            f"(increase(telesafe_ledger_append_failures_total{RANGE}))",
                            "{{instance}}",
                        ),
                        decimals=0,
                        thresholds=bands((None, "green"), (1, "red")),
                        description="Ledger writes that failed in the time range. Red: "
                        "safety decisions may not be durably recorded; follow the "
                        "LedgerAppendFailure runbook (disk space, permissions).",
                    ),
                ],
            ),
            (
                "Operator actions and safety record",
                [
                    bar_gauge(
                        "Operator requests by type and outcome",
                        Query(
                            "sum by (type, outcome) "
                            f"(increase(telesafe_operator_requests_total{RANGE}))",
                            "{{type}} {{outcome}}",
                            instant=True,
                        ),
                        description="Re-arm requests and notes in the time range, by "
                        "outcome. Rejected re-arms are normal while a site is unhealthy; "
                        "many of them, or re-arms by unexpected operators, deserve a look "
                        "in the ledger (telesafe audit show).",
                    ),
                    bar_gauge(
                        "Safe-stops by rule in range",
                        Query(
                            f"sum by (rule) (increase(telesafe_safe_stops_total{RANGE}))",
                            "{{rule}}",
                            instant=True,
                        ),
                        description="Safe-stops issued in the time range, by the policy "
                        "rule that tripped. Each one has a post-operative report "
                        "(telesafe report); review any rule you do not expect.",
                    ),
                ],
            ),
        ],
    )


def all_dashboards(pack: PolicyPack | None = None) -> list[Dashboard]:
    """Every dashboard, thresholds from ``pack`` (default: the shipped default pack)."""
    pk = pack or default_pack()
    return [live_procedure(pk), fleet(pk), audit()]
