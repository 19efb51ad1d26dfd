"""The report's timeline: which ledger events it shows, and each one in words.

Which events it shows and in which lane come from the event vocabulary
(`monitor.events.EVENTS`); a kind this version does not know is shown under "other".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monitor.audit.verified import Entry
from monitor.events import EVENTS, kinds_where
from monitor.events import EventKind as K
from monitor.report.model import (
    RATIO_RULES,
    TimelineItem,
    as_dict,
    is_number,
    opt_str,
    percent,
)

# Timeline categories (used for colours in the table and lanes in the chart).
_CATEGORY: dict[str, str] = {k: spec.lane for k, spec in EVENTS.items()}
# Shown in their own sections or charts rather than the timeline table.
_NOT_IN_TIMELINE = frozenset(k for k, spec in EVENTS.items() if not spec.in_timeline)
# Events whose SUBJECT is who acted or where, rather than the record's `subject`.
_SUBJECT_FIELD: dict[str, str] = {
    **dict.fromkeys(kinds_where(actor="operator", source="engine"), "operator_id"),
    **dict.fromkeys(
        (K.PROCEDURE_OPENED, K.PROCEDURE_STARTED, K.PROCEDURE_ENDED, K.CLOCK_STATE, K.SITE_STATE),
        "site",
    ),
}
# Consecutive re-sends of one command beyond this many are folded into one row.
RESEND_ROWS = 5


def build_timeline(es: Sequence[Entry]) -> list[TimelineItem]:
    """The timeline rows of one run's entries, in ledger order: events shown in their own
    sections are left out, and long runs of re-sends are folded."""
    items: list[TimelineItem] = []
    run_of_resends: list[TimelineItem] = []

    def flush() -> None:
        if len(run_of_resends) > RESEND_ROWS:
            head = run_of_resends[: RESEND_ROWS - 1]
            rest = run_of_resends[RESEND_ROWS - 1 :]
            last = rest[-1]
            items.extend(head)
            items.append(
                TimelineItem(
                    index=rest[0].index,
                    t_utc_ns=rest[0].t_utc_ns,
                    event="safe_stop_resent",
                    category="resend",
                    actor=rest[0].actor,
                    command_id=last.command_id,
                    detail=f"re-sends {rest[0].detail.split()[-1]}–{last.detail.split()[-1]} "
                    f"({len(rest)} re-sends, last at entry {last.index})",
                    folded=len(rest),
                )
            )
        else:
            items.extend(run_of_resends)
        run_of_resends.clear()

    for e in es:
        if e.event in _NOT_IN_TIMELINE:
            continue
        if e.event in ("clock_state", "site_state") and e.data.get("before") is None:
            continue  # first report of a site's clock/state, not a change
        item = _item(e)
        if e.event == "safe_stop_resent":
            run_of_resends.append(item)
            continue
        flush()
        items.append(item)
    flush()
    rules = {t.command_id: t.rule for t in items if t.event == "safe_stop_issued"}
    for t in items:
        if t.rule is None and t.command_id in rules:
            t.rule = rules[t.command_id]
    return items


def _item(e: Entry) -> TimelineItem:
    d = e.data
    it = TimelineItem(
        index=e.index,
        t_utc_ns=e.t_utc_ns,
        event=e.event,
        category=_CATEGORY.get(e.event, "other"),
        actor=e.actor,
        rule=opt_str(d.get("rule")),
        subject=opt_str(d.get("subject")),
        observed=d.get("observed"),
        threshold=d.get("threshold"),
        command_id=opt_str(d.get("command_id")),
    )
    k = e.event
    if k in _SUBJECT_FIELD:
        it.subject = opt_str(d.get(_SUBJECT_FIELD[k]))
    if k in ("warning_raised", "safe_stop_issued", "breach_while_latched"):
        it.detail = _ratio_reason(d) or str(d.get("reason") or "")
    elif k == "warning_cleared":
        it.detail = f"in band again; warning lasted {_num(d.get('duration_ms'))} ms"
    elif k == "safe_stop_resent":
        it.detail = f"re-send {d.get('resend')}"
    elif k == "safe_stop_escalated":
        it.detail = f"escalated (page): {d.get('reason')}"
    elif k == "safe_stop_acknowledged":
        it.detail = (
            f"robot answered {d.get('result')!s} after {_num(d.get('delay_ms'))} ms "
            f"({d.get('resends')} re-send(s))"
        )
    elif k == "ack_unmatched":
        it.detail = f"acknowledgement ({d.get('result')}) for a command that is not latched"
    elif k == "rearm_accepted":
        it.rule = opt_str(d.get("cleared_rule"))
        it.detail = f"re-arm accepted: {d.get('reason')}"
    elif k == "rearm_rejected":
        why = d.get("rejected_because")
        why_s = "; ".join(str(w) for w in why) if isinstance(why, list) else str(why)
        it.detail = f"re-arm rejected ({why_s}); operator's reason: {d.get('reason')}"
    elif k == "operator_note":
        it.detail = str(d.get("text") or "")
    elif k == "procedure_opened":
        it.detail = f"opened by {d.get('by')} from the {d.get('site')} site"
    elif k == "procedure_started":
        it.detail = f"procedure_start from the {d.get('site')} site; surgeon {d.get('surgeon_id')}"
    elif k == "procedure_ended":
        it.detail = f"procedure_end ({d.get('reason')}) from the {d.get('site')} site"
    elif k == "procedure_closed":
        it.detail = f"closed in state {d.get('final_state')}"
    elif k == "policy_applied":
        after, before = as_dict(d.get("after")), as_dict(d.get("before"))
        it.detail = (
            f"policy {before.get('pack')} {before.get('version')} → "
            f"{after.get('pack')} {after.get('version')}"
        )
    elif k == "policy_unknown":
        it.detail = str(d.get("reason") or f"unknown policy {d.get('requested')!r}")
    elif k == "clock_state":
        it.detail = f"{d.get('site')} clock source {d.get('before')} → {d.get('source')}"
    elif k == "site_state":
        it.detail = f"{d.get('site')} reports state {d.get('before')} → {d.get('after')}"
    elif k == "command_reconciled":
        pol = as_dict(as_dict(d.get("command")).get("policy"))
        it.rule = opt_str(pol.get("rule"))
        it.detail = str(d.get("reason") or "command recorded at start-up")
    else:
        it.detail = ", ".join(f"{k2}={v!s}" for k2, v in sorted(d.items()))[:300]
    return it


def _ratio_reason(d: dict[str, Any]) -> str | None:
    """Loss ratios read as percentages (the ledger's reason gives the raw ratio)."""
    obs, thr = d.get("observed"), d.get("threshold")
    if d.get("rule") not in RATIO_RULES or not is_number(obs) or not is_number(thr):
        return None
    return f"{d.get('subject')} link loss {percent(obs)} above {percent(thr)}"


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)
