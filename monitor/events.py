"""The vocabulary of audit events: every kind the monitor records, and one table of what
each kind is for (documented in docs/events.md, which a test checks against the table).

`EventKind` is a `StrEnum`: a member equals its string, so ledgers written before it
existed read the same, and `Event.kind`, `entry["event"]` and the report compare as before.
The sets other modules keep (which events are checkpointed, logged loud, acted by an
operator, shown in which report lane) are derived from `EVENTS` below, never kept by hand.

Ground floor: imports nothing of the monitor, so the engine, the service, the audit and
the report can all use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class EventKind(StrEnum):
    # A procedure's life.
    PROCEDURE_OPENED = "procedure_opened"
    PROCEDURE_STARTED = "procedure_started"
    PROCEDURE_ENDED = "procedure_ended"
    PROCEDURE_CLOSED = "procedure_closed"
    PROCEDURE_RELEASED = "procedure_released"
    STATE_CHANGED = "state_changed"
    POLICY_APPLIED = "policy_applied"
    POLICY_UNKNOWN = "policy_unknown"
    # What the sites report.
    CLOCK_STATE = "clock_state"
    SITE_STATE = "site_state"
    HEARTBEAT_GAP = "heartbeat_gap"
    LATENCY_SUMMARY = "latency_summary"
    # Rule outcomes and the safe-stop latch.
    WARNING_RAISED = "warning_raised"
    WARNING_CLEARED = "warning_cleared"
    SAFE_STOP_ISSUED = "safe_stop_issued"
    SAFE_STOP_RESENT = "safe_stop_resent"
    SAFE_STOP_ESCALATED = "safe_stop_escalated"
    SAFE_STOP_ACKNOWLEDGED = "safe_stop_acknowledged"
    ACK_UNMATCHED = "ack_unmatched"
    BREACH_WHILE_LATCHED = "breach_while_latched"
    LATCH_RESTORED = "latch_restored"
    # Operator requests.
    REARM_ACCEPTED = "rearm_accepted"
    REARM_REJECTED = "rearm_rejected"
    LATCH_CLOSED = "latch_closed"
    LATCH_CLOSE_REJECTED = "latch_close_rejected"
    OPERATOR_NOTE = "operator_note"
    OPERATOR_REQUEST_REFUSED = "operator_request_refused"
    # The monitor itself (procedure_id null).
    MONITOR_STARTED = "monitor_started"
    MONITOR_STOPPED = "monitor_stopped"
    MONITOR_DEAF = "monitor_deaf"
    POLICY_LOADED = "policy_loaded"
    COMMAND_RECONCILED = "command_reconciled"
    SIGNING_KEY_ROTATED = "signing_key_rotated"


Actor = Literal["monitor", "operator", "robot"]
"""Who acted: the monitor decided it, an operator asked for it (the entry's actor is
`operator:<operator_id>`), or the robot site said it (`site:robot`)."""

Lane = Literal[
    "procedure",
    "policy",
    "site",
    "warning",
    "cleared",
    "stop",
    "resend",
    "ack",
    "rearm",
    "note",
    "other",
]
"""The report's timeline category: the colour of its row and the lane of its mark."""

LatchEffect = Literal["always", "if latched", "never"]
"""Whether the event changes the procedure's latch on `telesafe.state` (the engine then
returns a `PublishLatch` with it): always, only while the procedure is latched, or never."""

Source = Literal["engine", "service", "audit"]
"""Which layer writes the event: the rules engine (a decision), the service around it, or
the audit ledger itself."""


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What one kind of event means and how each consumer treats it."""

    summary: str
    fields: tuple[str, ...]  # `data` members always present
    optional: tuple[str, ...] = ()  # `data` members present only sometimes
    source: Source = "engine"
    actor: Actor = "monitor"
    lane: Lane = "other"
    in_timeline: bool = True  # a row of the report's timeline table
    checkpoint: bool = False  # a signed checkpoint right after it (closes a chapter)
    loud: bool = False  # logged at INFO by the service
    latch: LatchEffect = "never"
    # The operator request (ICD §5 type) this event answers, and how: accepted or rejected.
    answers: tuple[str, Literal["accepted", "rejected"]] | None = None


_REQUEST = ("operator_id", "reason", "request_id", "requested_command_id", "requested_at")
_CLEARED = ("cleared_command_id", "cleared_rule")
_OUTCOME = ("rule", "subject", "observed", "threshold", "reason")

K = EventKind
EVENTS: dict[EventKind, EventSpec] = {
    K.PROCEDURE_OPENED: EventSpec(
        "the monitor began supervising a procedure (a procedure_start, a fresh record of an "
        "unknown procedure, or a latch restored from telesafe.state)",
        ("by", "site", "policy"),
        lane="procedure",
        loud=True,
    ),
    K.PROCEDURE_STARTED: EventSpec(
        "the first procedure_start of a procedure (ICD §3.6)",
        ("site", "surgeon_id", "robot", "arms", "policy_requested", "policy"),
        lane="procedure",
        checkpoint=True,
        loud=True,
    ),
    K.PROCEDURE_ENDED: EventSpec(
        "a procedure_end arrived (ICD §7); per-site counters of the whole procedure",
        ("site", "reason", "sites"),
        ("latch",),
        lane="procedure",
        checkpoint=True,
        loud=True,
        latch="if latched",
    ),
    K.PROCEDURE_CLOSED: EventSpec(
        "an ended procedure has nothing left to do and is forgotten; its latch-state "
        "tombstone is published",
        ("final_state",),
        ("closed_latch",),
        lane="procedure",
        checkpoint=True,
        latch="always",
    ),
    K.PROCEDURE_RELEASED: EventSpec(
        "the procedure's partition moved to another instance, which carries on",
        ("state", "latched"),
        lane="procedure",
    ),
    K.STATE_CHANGED: EventSpec(
        "the procedure's state changed (docs/procedure-states.md)",
        ("before", "after"),
        lane="procedure",
        in_timeline=False,
    ),
    K.POLICY_APPLIED: EventSpec(
        "the procedure_start named another loaded pack than the one applied so far",
        ("before", "after"),
        lane="policy",
    ),
    K.POLICY_UNKNOWN: EventSpec(
        "the procedure_start named a pack that is not loaded; the default pack applies",
        ("requested", "applied", "reason"),
        lane="policy",
        loud=True,
    ),
    K.CLOCK_STATE: EventSpec(
        "a site's heartbeat reports another clock source than before",
        ("site", "before", "source", "offset_ns", "max_error_ns"),
        lane="site",
    ),
    K.SITE_STATE: EventSpec(
        "a site's heartbeat reports another site state than before",
        ("site", "before", "after"),
        lane="site",
    ),
    K.HEARTBEAT_GAP: EventSpec(
        "a fresh heartbeat ended a silence longer than the warn limit",
        ("site", "gap_ms"),
        lane="site",
        in_timeline=False,
    ),
    K.LATENCY_SUMMARY: EventSpec(
        "the sliding latency window of one channel, once a second",
        ("channel", "count", "p50", "p95", "p99", "max"),
        lane="site",
        in_timeline=False,
    ),
    K.WARNING_RAISED: EventSpec(
        "a signal entered its warn band",
        (*_OUTCOME, "policy"),
        lane="warning",
        loud=True,
    ),
    K.WARNING_CLEARED: EventSpec(
        "a warning's signal stayed in band for the pack's clear_after_ms",
        ("rule", "subject", "duration_ms"),
        lane="cleared",
        loud=True,
    ),
    K.SAFE_STOP_ISSUED: EventSpec(
        "a signal crossed a safe-stop limit: a safe_stop was published and latched",
        (*_OUTCOME, "command_id", "episode", "policy"),
        lane="stop",
        checkpoint=True,
        loud=True,
        latch="always",
    ),
    K.SAFE_STOP_RESENT: EventSpec(
        "the latched safe_stop was re-sent (same command id), not yet acknowledged",
        ("command_id", "resend"),
        lane="resend",
    ),
    K.SAFE_STOP_ESCALATED: EventSpec(
        "the latched safe_stop went unacknowledged too long, or the robot refused it (page)",
        ("command_id", "reason"),
        lane="stop",
        loud=True,
        latch="always",
    ),
    K.SAFE_STOP_ACKNOWLEDGED: EventSpec(
        "the robot acknowledged the latched safe_stop (ICD §3.7)",
        ("command_id", "result", "delay_ms", "resends", "robot_at"),
        actor="robot",
        lane="ack",
        checkpoint=True,
        loud=True,
        latch="always",
    ),
    K.ACK_UNMATCHED: EventSpec(
        "a safe_stop_ack for a command that is not the procedure's latch",
        ("command_id", "result"),
        actor="robot",
        lane="ack",
    ),
    K.BREACH_WHILE_LATCHED: EventSpec(
        "another rule breached while latched (noted once per rule; no new command)",
        (*_OUTCOME, "command_id"),
        lane="stop",
    ),
    K.LATCH_RESTORED: EventSpec(
        "a latch taken over from telesafe.state after a partition moved here",
        ("command_id", "rule", "ack_result", "previous_monitor", "ended"),
        lane="stop",
        loud=True,
        latch="always",
    ),
    K.REARM_ACCEPTED: EventSpec(
        "a rearm_request was accepted: the latch is cleared and a rearm published (ICD §5.1)",
        (*_REQUEST, "command_id", *_CLEARED),
        actor="operator",
        lane="rearm",
        checkpoint=True,
        loud=True,
        latch="always",
        answers=("rearm_request", "accepted"),
    ),
    K.REARM_REJECTED: EventSpec(
        "a rearm_request was refused, with every reason",
        (*_REQUEST, "rejected_because"),
        actor="operator",
        lane="rearm",
        loud=True,
        latch="if latched",
        answers=("rearm_request", "rejected"),
    ),
    K.LATCH_CLOSED: EventSpec(
        "a latch_close retired the unacknowledged latch of an ended procedure (ICD 1.1 §5.3)",
        (*_REQUEST, *_CLEARED, "end_reason", "resends"),
        actor="operator",
        lane="rearm",
        checkpoint=True,
        loud=True,
        latch="always",
        answers=("latch_close", "accepted"),
    ),
    K.LATCH_CLOSE_REJECTED: EventSpec(
        "a latch_close was refused, with every reason",
        (*_REQUEST, "rejected_because"),
        actor="operator",
        lane="rearm",
        loud=True,
        latch="if latched",
        answers=("latch_close", "rejected"),
    ),
    K.OPERATOR_NOTE: EventSpec(
        "an operator's note for the record (ICD §5.2)",
        ("operator_id", "text", "known_procedure"),
        actor="operator",
        lane="note",
        loud=True,
    ),
    K.OPERATOR_REQUEST_REFUSED: EventSpec(
        "an operator request refused before the rules engine (unsigned, unknown key, bad "
        "signature, operator/key mismatch, malformed): a security event",
        (
            "source",
            "reason",
            "reason_class",
            "claimed",
            "key_id_presented",
            "signed",
            "value_bytes",
        ),
        source="service",
        checkpoint=True,
        loud=True,
    ),
    K.MONITOR_STARTED: EventSpec(
        "the monitor started",
        ("operators", "kafka_client", "software_version"),
        source="service",
        in_timeline=False,
        checkpoint=True,
    ),
    K.MONITOR_STOPPED: EventSpec(
        "the monitor stopped cleanly",
        ("software_version",),
        source="service",
        in_timeline=False,
        checkpoint=True,
    ),
    K.MONITOR_DEAF: EventSpec(
        "the monitor could not hear for longer than a poll may take; that time is not "
        "counted as site silence",
        ("duration_ms", "shards"),
        source="service",
        in_timeline=False,
    ),
    K.POLICY_LOADED: EventSpec(
        "a policy pack was loaded at start-up",
        ("pack", "version", "hash", "source", "software_version"),
        source="service",
        in_timeline=False,
    ),
    K.COMMAND_RECONCILED: EventSpec(
        "a safe_stop found on the commands topic at start-up that the ledger lacked",
        ("command_id", "command", "reason"),
        source="service",
        lane="stop",
        checkpoint=True,
    ),
    K.SIGNING_KEY_ROTATED: EventSpec(
        "the ledger's checkpoint signing key changed (docs/audit-ledger.md)",
        ("old_key", "new_key", "old_key_id", "new_key_id"),
        ("reason",),
        source="audit",
        actor="operator",
        in_timeline=False,
        checkpoint=True,
    ),
}
del K


def spec(kind: str) -> EventSpec | None:
    """The table row of a kind; None for a kind this version does not know (an old or a
    newer ledger)."""
    try:
        return EVENTS[EventKind(kind)]
    except ValueError:
        return None


def kinds_where(**properties: object) -> frozenset[EventKind]:
    """Every kind whose spec has all these property values, e.g. `kinds_where(loud=True)`."""
    return frozenset(
        k for k, s in EVENTS.items() if all(getattr(s, p) == v for p, v in properties.items())
    )


CHECKPOINTED = kinds_where(checkpoint=True)
LOUD = kinds_where(loud=True)
OPERATOR_ACTED = kinds_where(actor="operator")
ROBOT_ACTED = kinds_where(actor="robot")
REQUEST_OUTCOMES: dict[str, tuple[str, str]] = {
    k: s.answers for k, s in EVENTS.items() if s.answers is not None
}
"""Event kind -> (operator request type, outcome) of the events that answer a request."""
