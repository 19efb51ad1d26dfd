"""What the monitor does once, before its loop turns: check the topic layout, ask for a
short group session, reconcile the ledger with the commands topic, and record the start."""

from __future__ import annotations

import logging
from typing import Any

from monitor.broker.topics import check_layout
from monitor.engine.clock import Clock, Instant
from monitor.engine.decisions import Event
from monitor.events import EventKind
from monitor.icd.topics import Topics
from monitor.kafka import Admin, KafkaSettings, TransportError
from monitor.kafka.profiles import GROUP_CONFIG
from monitor.policy.loader import PackRegistry
from monitor.service.audit_sink import AuditSink, EntryFactory
from monitor.service.options import MonitorOptions, StartupError

log = logging.getLogger("telesafe.monitor")


def check_topics(admin: Admin, topics: Topics) -> None:
    """Raises StartupError (one line, with the fix) if the topics are not as ICD §3 needs
    (co-partitioned inputs, broker append time, the state topic)."""
    from monitor.broker.runtime import BrokerError

    try:
        check_layout(admin, topics)
    except BrokerError as exc:
        raise StartupError(str(exc)) from None


def configure_group(admin: Admin, group_id: str, incremental: bool) -> None:
    """Ask for a short group session, so a dead instance's partitions move within
    seconds (docs/architecture.md). Never fatal: the broker may forbid it (its minimum),
    the principal may lack ALTER_CONFIGS on the group, or the client runs classic groups."""
    if not incremental:
        return
    try:
        admin.alter_group_config(group_id, GROUP_CONFIG, 10.0)
    except TransportError as exc:
        log.warning(
            "could not set group %s to a %s ms session (%s): a dead instance's "
            "partitions move after the broker's default session timeout instead; see "
            "docs/deploy-kubernetes.md",
            group_id,
            GROUP_CONFIG["consumer.session.timeout.ms"],
            exc,
        )


def reconcile(
    ledger: Any,
    settings: KafkaSettings,
    monitor_id: str,
    audit: AuditSink,
    entries: EntryFactory,
    clock: Clock,
) -> None:
    """Record every safe-stop this monitor sent that its ledger lacks (sent just before a
    crash). Never keeps the monitor from starting."""
    from monitor.service.reconcile import ledger_command_ids, unrecorded_commands

    try:
        missing = unrecorded_commands(settings, monitor_id, ledger_command_ids(ledger))
    except Exception as exc:  # bookkeeping: logged, the monitor starts anyway
        log.error("could not reconcile the ledger with the commands topic: %s", exc)
        return
    for cmd in missing:
        now = clock.now()
        log.warning(
            "ledger lacked safe-stop %s for %s (sent before a crash?): recording it",
            cmd["command_id"],
            cmd.get("procedure_id"),
        )
        data = {
            "command_id": cmd["command_id"],
            "command": cmd,
            "reason": "on the commands topic at start-up, not in the ledger",
        }
        ev = Event(
            EventKind.COMMAND_RECONCILED, cmd.get("procedure_id"), now.mono_ns, now.utc_ns, data
        )
        audit.submit(entries.from_event(ev), checkpoint=True)


def record_start(
    audit: AuditSink,
    entries: EntryFactory,
    now: Instant,
    options: MonitorOptions,
    settings: KafkaSettings,
    packs: PackRegistry,
) -> None:
    """`monitor_started` (who may re-arm, which client) and a `policy_loaded` per pack."""
    operators = (
        "any (no allow-list configured)" if options.operators is None else sorted(options.operators)
    )
    audit.submit(
        entries.monitor_event(
            EventKind.MONITOR_STARTED,
            now.utc_ns,
            now.mono_ns,
            operators=operators,
            kafka_client=settings.client,
        ),
        checkpoint=True,
    )
    for lp in packs.all():
        audit.submit(
            entries.monitor_event(
                EventKind.POLICY_LOADED,
                now.utc_ns,
                now.mono_ns,
                pack=lp.name,
                version=lp.version,
                hash=lp.sha256,
                source=lp.source,
            )
        )
