"""`telesafe rearm`, `telesafe latch close` and `telesafe note`: the operator tools (ICD §5).

`rearm` and `latch close` find the procedure's current latch themselves (from the
monitor's /status, else from `telesafe.state`), show it, send a request naming it with a
fresh request id (ICD 1.1 §5.1), then wait for the monitor's decision on the audit mirror
and print it. Exit codes: 0 accepted (or sent, with --no-wait), 1 rejected or nothing to
do, 2 bad arguments, 3 no decision seen in time (or Kafka did not answer).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from monitor.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    OperatorLayerError,
    UsageError,
)
from monitor.icd.decode import describe
from monitor.icd.models import LatchClose, Note, RearmRequest
from monitor.icd.topics import Topics
from monitor.kafka import KafkaSettings, TransportError, open_producer
from monitor.kafka.settings import add_kafka_arguments, env, settings_from_args
from monitor.operator.latches import DecisionWatch, from_state_topic, from_status
from monitor.security.signing import Signer

DEFAULT_MONITOR_URL = "http://127.0.0.1:9108"


class NoDecision(OperatorLayerError):
    """The request was sent but no monitor's decision was seen in time."""

    exit_code = EXIT_UNAVAILABLE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "rearm",
        help="ask the monitor to clear a latched safe-stop (ICD §5.1)",
        description="Clear a procedure's latched safe-stop. Finds the current latch (from "
        "the monitor's /status, else telesafe.state), sends a rearm_request naming it, "
        "then waits for the monitor's decision. The monitor accepts only if the request "
        "names the current latch, is fresh and new, the operator is authorised and both "
        "sites are healthy; either way the outcome is audited. Exit 0 accepted, 1 "
        "rejected, 3 no decision seen.",
    )
    _latch_arguments(r)
    r.set_defaults(func=rearm)

    lt = sub.add_parser(
        "latch",
        help="retire the latch of a procedure that has ended (ICD §5.3)",
        description="Operate on latches of procedures that have ended.",
    )
    lsub = lt.add_subparsers(dest="latch_command", metavar="COMMAND", required=True)
    c = lsub.add_parser(
        "close",
        help="retire the unacknowledged latch of an ended procedure",
        description="Retire the latch of a procedure that has ended while its safe-stop "
        "was never acknowledged (e.g. the robot was powered down). Audited; nothing is sent "
        "to the robot. Same checks as a re-arm except site health; refused for a procedure "
        "that has not ended. Exit 0 accepted, 1 rejected, 3 no decision seen.",
    )
    _latch_arguments(c)
    c.set_defaults(func=latch_close)

    n = sub.add_parser(
        "note",
        help="add a free-text note to a procedure's audit trail (ICD §5.2)",
        description="Publish an operator note; the monitor records it in the audit ledger.",
    )
    add_kafka_arguments(n)
    n.add_argument("--procedure", required=True, help="procedure id")
    n.add_argument("--operator", required=True, help="your operator id")
    n.add_argument("--text", required=True, help="the note")
    _signing_argument(n)
    n.set_defaults(func=note)


def _signing_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--signing-key",
        default=env("TELESAFE_OPERATOR_KEY"),
        metavar="NAME=KEY",
        help="sign the request (ICD §8) with this Ed25519 private key; NAME must be your "
        "operator id (env TELESAFE_OPERATOR_KEY)",
    )


def _latch_arguments(p: argparse.ArgumentParser) -> None:
    add_kafka_arguments(p)
    p.add_argument("--procedure", required=True, help="procedure id")
    p.add_argument("--operator", required=True, help="your operator id")
    p.add_argument("--reason", required=True, help="why it is safe (audited)")
    p.add_argument(
        "--command-id",
        default=None,
        help="the safe_stop command id of the latch to clear (default: look it up)",
    )
    p.add_argument(
        "--monitor",
        default=env("TELESAFE_MONITOR_URL", DEFAULT_MONITOR_URL),
        metavar="URL",
        help="a monitor's HTTP address to ask for the latch (env TELESAFE_MONITOR_URL; "
        "default %(default)s); telesafe.state is read when it does not answer",
    )
    p.add_argument(
        "--no-wait", action="store_true", help="send and exit without waiting for the decision"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the monitor's decision (default %(default)s)",
    )
    _signing_argument(p)


def _signer(args: argparse.Namespace) -> Signer | None:
    spec = getattr(args, "signing_key", None)
    if not spec:
        return None
    name, _, path = spec.partition("=")
    if not name or not path:
        raise UsageError("--signing-key must look like NAME=PATH")
    if name != args.operator:
        raise UsageError(f"--signing-key name {name!r} must equal --operator {args.operator!r}")
    try:
        return Signer.from_file(name, path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--signing-key: {exc}") from None


def _settings(args: argparse.Namespace) -> KafkaSettings:
    try:
        return settings_from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@dataclass(frozen=True)
class LatchRequest:
    """A re-arm (``rearm_request``) or latch close (``latch_close``) of one procedure."""

    kind: Literal["rearm_request", "latch_close"]
    procedure: str
    operator: str
    reason: str
    command_id: str | None = None  # the latch to clear; None: look it up
    monitor_url: str = DEFAULT_MONITOR_URL  # asked first for the latch
    timeout_s: float = 10.0  # wait this long for the decision; 0: do not wait

    @property
    def outcomes(self) -> tuple[str, str]:
        """The audit events of acceptance and rejection."""
        if self.kind == "rearm_request":
            return "rearm_accepted", "rearm_rejected"
        return "latch_closed", "latch_close_rejected"


@dataclass(frozen=True)
class Decision:
    accepted: bool
    monitor_id: str
    command_id: str  # the latch the request named
    reasons: list[str]  # why it was rejected


def request_latch(
    settings: KafkaSettings,
    req: LatchRequest,
    signer: Signer | None = None,
    say: Callable[[str], None] = print,
) -> Decision | None:
    """Find the procedure's current latch (unless named), send the request naming it and
    wait for the monitor's decision on the audit topic (None: `timeout_s` 0, not waited
    for). `say` is told what is found and sent. Raises OperatorLayerError when there is
    no latch, NoDecision when no decision came in time, TransportError from Kafka."""
    command_id = req.command_id
    if command_id is None:
        info = from_status(req.monitor_url, req.procedure) or from_state_topic(
            settings, req.procedure
        )
        if info is None:
            raise OperatorLayerError(
                f"{req.procedure} is not latched (no latch on the monitor's /status nor "
                "on telesafe.state): nothing to clear"
            )
        say(f"{req.procedure}: {info.describe()}")
        command_id = info.command_id
    model = RearmRequest if req.kind == "rearm_request" else LatchClose
    try:
        wire = model(
            v=1,
            type=req.kind,  # type: ignore[arg-type]
            procedure_id=req.procedure,
            operator_id=req.operator,
            reason=req.reason,
            requested_at=time.time_ns(),
            command_id=command_id,
            request_id=str(uuid.uuid4()),
        )
    except ValidationError as err:
        raise UsageError(describe(err)) from None
    watch = DecisionWatch(settings, req.procedure) if req.timeout_s > 0 else None
    try:
        where = _send(settings, wire, signer)
        say(f"{req.kind} {wire.request_id} sent ({where})")
        if watch is None:
            return None
        entry = watch.wait(wire.request_id, req.outcomes, req.timeout_s)
    finally:
        if watch is not None:
            watch.close()
    if entry is None:
        raise NoDecision(
            f"no decision within {req.timeout_s:g} s (is a monitor running for "
            f"{req.procedure}? its log and audit trail will show the outcome)"
        )
    reasons = entry.get("data", {}).get("rejected_because") or ["(no reason given)"]
    accepted = entry["event"] == req.outcomes[0]
    by = str(entry.get("monitor_id", "?"))
    return Decision(accepted, by, command_id, [] if accepted else [str(r) for r in reasons])


def _request(args: argparse.Namespace, kind: Literal["rearm_request", "latch_close"]) -> int:
    settings = _settings(args)
    req = LatchRequest(
        kind,
        args.procedure,
        args.operator,
        args.reason,
        command_id=args.command_id,
        monitor_url=args.monitor,
        timeout_s=0.0 if args.no_wait else args.timeout,
    )
    try:
        decision = request_latch(settings, req, _signer(args))
    except TransportError as exc:
        raise TransportError(f"Kafka at {settings.bootstrap_servers}: {exc}") from None
    if decision is None:
        return EXIT_OK  # --no-wait: sent
    if decision.accepted:
        print(f"ACCEPTED by monitor {decision.monitor_id}: latch {decision.command_id} cleared")
        return EXIT_OK
    print(f"REJECTED by monitor {decision.monitor_id}:")
    for why in decision.reasons:
        print(f"  - {why}")
    return EXIT_FAILED


def _send(
    settings: KafkaSettings, req: RearmRequest | LatchClose | Note, signer: Signer | None
) -> str:
    value = req.model_dump_json().encode()
    producer = open_producer(settings, "tool", "telesafe-operator")
    try:
        topic, partition, offset = producer.deliver(
            Topics(settings.topic_prefix).operator,
            req.procedure_id.encode(),
            value,
            signer.headers(value) if signer else (),
        )
    finally:
        producer.close(5.0)
    return f"{topic}:{partition}:{offset}"


def rearm(args: argparse.Namespace) -> int:
    return _request(args, "rearm_request")


def latch_close(args: argparse.Namespace) -> int:
    return _request(args, "latch_close")


def note(args: argparse.Namespace) -> int:
    settings = _settings(args)
    signer = _signer(args)
    try:
        req = Note(
            v=1, type="note", procedure_id=args.procedure, operator_id=args.operator, text=args.text
        )
    except ValidationError as err:
        raise UsageError(describe(err)) from None
    try:
        where = _send(settings, req, signer)
    except TransportError as exc:
        raise TransportError(
            f"not delivered to Kafka at {settings.bootstrap_servers}: {exc}"
        ) from None
    print(f"note for {req.procedure_id} delivered ({where}); the monitor audits it")
    return EXIT_OK
