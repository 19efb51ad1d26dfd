"""Operator requests that clear a latch (ICD 1.1 §5.1 re-arm, §5.3 latch-close): why one
must be refused. A request must name the latch it clears, be fresh by the monitor's UTC
clock, be used once, come from an authorised operator, and fit the procedure (a re-arm
needs a running procedure with healthy signals; a latch-close an ended one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from monitor.engine.clock import MS, Instant
from monitor.icd.models import LatchClose, RearmRequest
from monitor.policy.model import OperatorPolicy

if TYPE_CHECKING:
    from monitor.engine.latch import Latched

LatchRequest = RearmRequest | LatchClose


def request_problems(
    latched: Latched | None,
    policy: OperatorPolicy,
    req: LatchRequest,
    authorised: bool,
    seen: bool,
    ended: bool,
    health: Callable[[Instant], list[str]],
    now: Instant,
) -> list[str]:
    """Why this re-arm or latch-close request must be refused (empty: accept it).

    `seen`: its request_id was seen before (by this engine or a previous latch owner);
    `health`: why the procedure's signals do not allow a re-arm now (asked only for a
    re-arm of a latched, running procedure)."""
    problems: list[str] = []
    closing = isinstance(req, LatchClose)
    if latched is None:
        problems.append(
            "procedure has ended and has no latch to clear"
            if ended
            else "procedure is not latched in safe-stop"
        )
    elif req.command_id != latched.command.command_id:
        problems.append(
            f"request names latch {req.command_id}, but the procedure is latched by "
            f"{latched.command.command_id} (a stale or replayed request)"
        )
    if not authorised:
        what = "close a latch" if closing else "re-arm"
        problems.append(f"operator {req.operator_id!r} is not authorised to {what}")
    problems.extend(_freshness(policy, req, seen, now))
    if latched is not None and closing and not ended:
        problems.append(
            "procedure has not ended: latch_close only retires the latch of an ended "
            "procedure; use a re-arm (telesafe rearm)"
        )
    if latched is not None and not closing:
        if ended:
            problems.append(
                "procedure has ended: retire its latch with latch_close "
                "(telesafe latch close), there is no robot to re-arm"
            )
        else:
            problems.extend(health(now))
    return problems


def _freshness(pol: OperatorPolicy, req: LatchRequest, seen: bool, now: Instant) -> list[str]:
    age_ms = (now.utc_ns - req.requested_at) / MS
    problems = []
    if age_ms > pol.request_max_age_ms:
        problems.append(
            f"request is {age_ms / 1000:.1f} s old (limit {pol.request_max_age_ms / 1000:g} s "
            "by the monitor's UTC clock)"
        )
    elif -age_ms > pol.request_max_future_ms:
        problems.append(
            f"request is dated {-age_ms / 1000:.1f} s in the future (limit "
            f"{pol.request_max_future_ms / 1000:g} s by the monitor's UTC clock)"
        )
    if seen:
        problems.append(f"request_id {req.request_id} was already used (a replayed request)")
    return problems


def request_fields(req: LatchRequest) -> dict[str, Any]:
    return {
        "operator_id": req.operator_id,
        "reason": req.reason,
        "request_id": req.request_id,
        "requested_command_id": req.command_id,
        "requested_at": req.requested_at,
    }
