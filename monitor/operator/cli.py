"""`telesafe rearm` and `telesafe note`: the operator tools (ICD §5)."""

from __future__ import annotations

import argparse
import sys
import time

from kafka import KafkaProducer
from pydantic import ValidationError

from monitor.icd.decode import describe
from monitor.icd.models import Note, RearmRequest
from monitor.icd.topics import Topics
from monitor.kafka.settings import add_kafka_arguments, settings_from_args


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "rearm",
        help="ask the monitor to clear a latched safe-stop (ICD §5.1)",
        description="Publish a rearm_request. The monitor accepts it only if the "
        "procedure is latched, the operator is authorised and both sites are "
        "healthy; either way the outcome is audited.",
    )
    add_kafka_arguments(r)
    r.add_argument("--procedure", required=True, help="procedure id")
    r.add_argument("--operator", required=True, help="your operator id")
    r.add_argument("--reason", required=True, help="why it is safe to resume (audited)")
    r.set_defaults(func=rearm)
    n = sub.add_parser("note", help="add a free-text note to a procedure's audit trail (ICD §5.2)")
    add_kafka_arguments(n)
    n.add_argument("--procedure", required=True, help="procedure id")
    n.add_argument("--operator", required=True, help="your operator id")
    n.add_argument("--text", required=True, help="the note")
    n.set_defaults(func=note)


def _publish(args: argparse.Namespace, req: RearmRequest | Note) -> int:
    settings = settings_from_args(args)
    try:
        producer = KafkaProducer(**settings.producer_config(client_id="telesafe-operator"))
    except Exception as exc:
        print(
            f"telesafe {req.type}: cannot reach Kafka at {settings.bootstrap_servers}: {exc}",
            file=sys.stderr,
        )
        return 1
    try:
        fut = producer.send(
            Topics(settings.topic_prefix).operator,
            key=req.procedure_id.encode(),
            value=req.model_dump_json().encode(),
        )
        md = fut.get(timeout=10)
    except Exception as exc:
        print(f"telesafe {req.type}: not delivered: {exc}", file=sys.stderr)
        return 1
    finally:
        producer.close(timeout=5)
    print(
        f"{req.type} for {req.procedure_id} delivered ({md.topic}:{md.partition}:{md.offset}); "
        "the monitor's decision appears in its log and the audit trail"
    )
    return 0


def rearm(args: argparse.Namespace) -> int:
    try:
        req = RearmRequest(
            v=1,
            type="rearm_request",
            procedure_id=args.procedure,
            operator_id=args.operator,
            reason=args.reason,
            requested_at=time.time_ns(),
        )
    except ValidationError as err:
        print(f"telesafe rearm: {describe(err)}", file=sys.stderr)
        return 2
    return _publish(args, req)


def note(args: argparse.Namespace) -> int:
    try:
        req = Note(
            v=1, type="note", procedure_id=args.procedure, operator_id=args.operator, text=args.text
        )
    except ValidationError as err:
        print(f"telesafe note: {describe(err)}", file=sys.stderr)
        return 2
    return _publish(args, req)
