"""`telesafe record` and `telesafe replay` (ICD §9)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from monitor.argtypes import non_negative_ms, seconds
from monitor.engine.engine import EngineConfig
from monitor.errors import ReplayLayerError
from monitor.icd.topics import Topics
from monitor.kafka import OFFSET_END, TopicPartition, TransportError, open_consumer
from monitor.kafka.settings import add_kafka_arguments, settings_from_args
from monitor.policy.loader import LoadedPack, PackRegistry, load_pack_file
from monitor.replay.recording import RecordingError, encode_line, read_recording
from monitor.replay.replayer import dumps, replay


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "record",
        help="record telemetry and operator topics to a JSONL file",
        description="Write every record of the telemetry and operator topics to "
        "FILE in the ICD §9 format, until --duration elapses or Ctrl-C.",
    )
    add_kafka_arguments(r)
    r.add_argument("file", metavar="FILE", help="output .jsonl (appended)")
    r.add_argument(
        "--duration",
        type=seconds,
        default=None,
        help="seconds to record (default: until interrupted)",
    )
    r.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest retained record instead of now",
    )
    r.set_defaults(func=record)

    p = sub.add_parser(
        "replay",
        help="replay a recording through the rules engine",
        description="Replay an ICD §9 recording through the pure rules engine and "
        "print every decision as JSON Lines. Same recording + same pack = "
        "byte-identical output.",
    )
    p.add_argument("file", metavar="FILE", help="recording (.jsonl)")
    p.add_argument(
        "--policy",
        metavar="PACK",
        default=None,
        help="policy pack file to use as the default pack (default: shipped packs)",
    )
    p.add_argument("--rules", default=None, help="directory of packs (default: shipped rules/)")
    p.add_argument("--monitor-id", default="replay", help="monitor id stamped on commands")
    p.add_argument(
        "--operators", default=None, help="comma-separated authorised operators (default: any)"
    )
    p.add_argument(
        "--tail",
        type=non_negative_ms,
        default=3000,
        metavar="MS",
        help="keep running timers this long after the last record (default 3000)",
    )
    p.add_argument("--out", default="-", help="output file (default stdout)")
    p.set_defaults(func=replay_cmd)


def replay_cmd(args: argparse.Namespace) -> int:
    registry = PackRegistry.from_dir(args.rules)
    if args.policy:
        chosen: LoadedPack = load_pack_file(args.policy)
        others = [p for p in registry.all() if p.name != chosen.name]
        registry = PackRegistry([chosen, *others], default=chosen.name)
    ops = frozenset(x.strip() for x in args.operators.split(",")) if args.operators else None
    cfg = EngineConfig(monitor_id=args.monitor_id, operators=ops)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    try:
        for line in replay(read_recording(args.file), registry, cfg, tail_ms=args.tail):
            out.write(dumps(line) + "\n")
    except FileNotFoundError:
        raise RecordingError(f"{args.file}: no such recording") from None
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def record(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    topics = Topics(settings.topic_prefix)
    names = [topics.telemetry_console, topics.telemetry_robot, topics.operator]
    try:
        consumer = open_consumer(settings, "reader", "telesafe-recorder")
        starts: dict[TopicPartition, int] = {}
        for t in names:
            for p in consumer.partitions_for(t, 10.0) or []:
                tp = TopicPartition(t, p)
                marks = consumer.watermarks(tp, 10.0) if args.from_beginning else None
                starts[tp] = marks[0] if marks else OFFSET_END
    except TransportError as exc:
        raise TransportError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from None
    if not starts:
        raise ReplayLayerError(
            f"the ICD topics do not exist on {settings.bootstrap_servers} (create them with "
            f"`telesafe broker topics --topic-prefix {settings.topic_prefix!r}`)"
        )
    consumer.assign(starts)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = time.monotonic() + args.duration if args.duration else None
    n = 0
    with open(args.file, "a", encoding="utf-8") as f:
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                batch = consumer.poll(0.1, 10_000)
                now = time.time_ns()
                for r in batch:
                    f.write(encode_line(now, r.topic, r.key, r.value) + "\n")
                    n += 1
        except KeyboardInterrupt:
            pass
    consumer.close()
    print(f"recorded {n} records to {args.file}", file=sys.stderr)
    return 0
