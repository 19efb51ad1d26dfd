"""Plain words for governance readers: a short summary of a `ProcedureReport` and a glossary.

The summary restates, in sentences, what the tables below it show; it adds no fact of its
own. Every number in it comes from the report model (and so from verified ledger entries).
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.report.model import ProcedureReport, StopEpisode

# What each policy rule guards, in words a non-engineer can read.
RULE_WORDS = {
    "heartbeat_silence": "a site stopped sending its regular signs of life (heartbeats)",
    "first_heartbeat": "a site did not start sending heartbeats in time",
    "control_latency": "the delay from the surgeon's hands to the robot was too long",
    "video_latency": "the video from the robot reached the surgeon too late",
    "link_jitter": "the network timing between the sites was too irregular",
    "link_loss": "the network lost too much of the data between the sites",
    "workspace_box": "an instrument left its allowed working space",
    "forbidden_zone": "an instrument came too close to a forbidden zone",
    "tool_speed": "an instrument moved too fast",
    "grip_force": "an instrument gripped too hard",
}


@dataclass(frozen=True)
class Term:
    term: str
    meaning: str


def glossary(report: ProcedureReport) -> list[Term]:
    """The terms the report uses, with the policy's own numbers where the pack is known."""
    pol = report.policy
    resend = (
        f"every {pol.resend_interval_ms:g} ms"
        if pol and pol.resend_interval_ms is not None
        else "at a short fixed interval"
    )
    escalate = (
        f"after {pol.escalate_after_resends} re-sends"
        if pol and pol.escalate_after_resends is not None
        else "after a few re-sends"
    )
    return [
        Term(
            "Safe-stop",
            "The command the monitor sends to the robot to stop moving at once, when a "
            "safety rule of the policy is broken.",
        ),
        Term(
            "Latched",
            "A safe-stop stays in force once issued, even if the problem goes away, until an "
            "authorised operator re-arms the procedure after checking both sites. The time "
            "between the two is the latched period.",
        ),
        Term(
            "Re-send",
            f"Until the robot confirms (acknowledges) a safe-stop, the monitor repeats it "
            f"{resend}; {escalate} it also pages the on-call team (escalation).",
        ),
        Term(
            "Re-arm",
            "An operator's request to resume after a safe-stop. The monitor accepts it only "
            "from an authorised operator and only when both sites are healthy again; every "
            "request and its outcome is recorded.",
        ),
        Term(
            "Heartbeat",
            "A short message each site sends many times a second to show it is alive. A gap "
            "in heartbeats is a warning sign; a long one stops the robot.",
        ),
        Term(
            "p95",
            "The 95th percentile: 95 of every 100 measurements were at or below this value. "
            "Latency is judged by the p95 of the last second, so a single slow measurement "
            "does not stop the robot but a sustained slowdown does.",
        ),
        Term(
            "Dead-lettered",
            "A record the monitor could not accept (malformed, from the wrong site, or with "
            "a bad signature) is set aside on a separate dead-letter topic for investigation. "
            "It never counts as a sign that a site is alive.",
        ),
        Term(
            "Checkpoint",
            "A digitally signed fingerprint of the audit ledger up to a given entry. Changing, "
            "removing or inserting any earlier entry would no longer match the signature, so "
            "a valid checkpoint shows the record is exactly as the monitor wrote it.",
        ),
    ]


def _at(report: ProcedureReport, t_ns: int) -> str:
    return f"{(t_ns - report.opened_utc_ns) / 1e9:,.1f} s into the procedure"


def _stop_sentence(report: ProcedureReport, s: StopEpisode) -> str:
    why = RULE_WORDS.get(s.rule, f"the {s.rule} rule was broken")
    out = f"At {_at(report, s.t_utc_ns)} the monitor stopped the robot because {why}"
    out += f" ({s.reason})." if s.reason else "."
    if s.ack is None:
        out += " The robot never confirmed the stop in the verified record."
    else:
        resent = f", after {s.resends} re-sends" if s.resends else ""
        delay = f"{s.ack.delay_ms:,.1f} ms" if s.ack.delay_ms is not None else "a delay"
        out += f" The robot confirmed it ({s.ack.result}) after {delay}{resent}."
        if s.escalations:
            out += " The on-call team was paged because the confirmation was late."
    if s.rearm is not None:
        out += (
            f" {s.rearm.operator_id} re-armed the procedure at {_at(report, s.rearm.t_utc_ns)}"
            f" (“{s.rearm.reason}”)."
        )
    else:
        out += " It was not re-armed during this procedure."
    return out


def summary(report: ProcedureReport) -> list[str]:
    """A few sentences: outcome, each safe-stop, warnings, latency, heartbeats, evidence."""
    r = report
    lines = []
    if r.ended_utc_ns is not None:
        end = f"and ended with reason “{r.end_reason}”" if r.end_reason else "and ended"
    else:
        end = "and no end was recorded"
    lines.append(f"Procedure {r.procedure_id} ran for {r.duration_s:,.1f} s {end}.")
    if not r.stops:
        lines.append("The monitor never had to stop the robot.")
    lines.extend(_stop_sentence(r, s) for s in r.stops[:3])
    if len(r.stops) > 3:
        lines.append(f"{len(r.stops) - 3} further safe-stops are listed in section 4.")
    raised = [t for t in r.timeline if t.event == "warning_raised"]
    if raised:
        kinds = sorted({RULE_WORDS.get(t.rule or "", t.rule or "?") for t in raised})
        lines.append(
            f"{len(raised)} warning(s) alerted the team without stopping the robot: "
            + "; ".join(kinds)
            + "."
        )
    else:
        lines.append("No warning was raised.")
    c = r.channels.get("control")
    if c is not None and c.p95 is not None and c.worst_p95 is not None:
        limit = f" (warning limit {c.warn_ms:g} ms)" if c.warn_ms is not None else ""
        lines.append(
            f"The delay from the surgeon's hands to the robot was typically {c.p95:,.1f} ms "
            f"(p95){limit}; the worst second reached {c.worst_p95:,.1f} ms."
        )
    gaps = [g for s in r.sites.values() for g in s.gaps]
    if gaps:
        worst = max(gaps, key=lambda g: g.gap_ms)
        lines.append(
            f"{len(gaps)} gap(s) in the sites' heartbeats were recorded; the longest, "
            f"{worst.gap_ms:,.1f} ms, was at the {worst.site} site."
        )
    if r.security_events:
        n = len(r.security_events)
        lines.append(
            f"{n} operator request(s) for this procedure failed authentication or checks and "
            f"were refused before reaching the rules engine: a security event, listed in "
            f"section 9."
        )
    notes = sum(1 for t in r.timeline if t.event == "operator_note")
    if notes:
        lines.append(f"Operators added {notes} note(s) to the record (see the timeline).")
    cp = r.checkpoint
    if cp is not None and cp.signature_ok:
        lines.append(
            f"The audit record verified: its entries are covered by a signed checkpoint "
            f"(size {cp.size}), so they are exactly as the monitor wrote them."
        )
    else:
        lines.append("No valid signed checkpoint covers this procedure's entries.")
    return lines


def link_line(report: ProcedureReport) -> str:
    """The header's who-and-where: the procedure's sites and its robot, from the ledger."""
    sites = " ↔ ".join(report.sites)
    robot = " ".join(x for x in (report.robot_model, report.robot_serial) if x)
    return f"{sites} ({robot})" if robot else sites
