"""`telesafe record` and `telesafe replay` (ICD §9)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from monitor.argtypes import non_negative_ms, seconds
from monitor.engine.engine import EngineConfig
from monitor.errors import ReplayLayerError
from monitor.icd.topics import Topics
from monitor.kafka import OFFSET_END, Record, TopicPartition, TransportError, open_consumer
from monitor.kafka.settings import add_kafka_arguments, settings_from_args
from monitor.policy.loader import LoadedPack, PackRegistry, load_pack_file
from monitor.replay.recording import (
    RecordingError,
    encode_line,
    read_recording,
    recorded_monitor_id,
)
from monitor.replay.replayer import ReplayStats, dumps, replay

FALLBACK_MONITOR_ID = "replay"  # for recordings that name no monitor


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "record",
        help="record telemetry and operator topics to a JSONL file",
        description="Write every record of the telemetry and operator topics to FILE in "
        "the ICD §9 format, until --duration elapses or Ctrl-C. Each line also names the "
        "monitor owning its procedure, learnt from the commands topic, so `telesafe "
        "replay` issues the live command ids (docs/record-replay.md).",
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
        description="Replay an ICD §9 recording through the pure rules engine and print "
        "every decision as JSON Lines. Same recording + same pack + same monitor id = "
        "byte-identical output. The monitor id comes from the recording; a warning says "
        "when a recorded acknowledgement matches no replayed command.",
    )
    p.add_argument("file", metavar="FILE", help="recording (.jsonl)")
    p.add_argument(
        "--policy",
        metavar="PACK",
        default=None,
        help="policy pack file to use as the default pack (default: shipped packs)",
    )
    p.add_argument("--rules", default=None, help="directory of packs (default: shipped rules/)")
    p.add_argument(
        "--monitor-id",
        default=None,
        help="monitor id stamped on commands; command ids derive from it (default: the "
        f"monitor the recording names, else {FALLBACK_MONITOR_ID!r})",
    )
    p.add_argument(
        "--operators", default=None, help="comma-separated authorised operators (default: any)"
    )
    p.add_argument(
        "--tail",
        type=non_negative_ms,
        default=3000,
        metavar="MS",
        help="keep running timers this long after the last record (default %(default)s)",
    )
    p.add_argument("--out", default="-", help="output file (default: stdout)")
    p.set_defaults(func=replay_cmd)


def _warn(message: str) -> None:
    print(f"telesafe replay: warning: {message}", file=sys.stderr)


def replay_cmd(args: argparse.Namespace) -> int:
    registry = PackRegistry.from_dir(args.rules)
    if args.policy:
        chosen: LoadedPack = load_pack_file(args.policy)
        others = [p for p in registry.all() if p.name != chosen.name]
        registry = PackRegistry([chosen, *others], default=chosen.name)
    ops = frozenset(x.strip() for x in args.operators.split(",")) if args.operators else None
    try:
        monitor_id = args.monitor_id or recorded_monitor_id(args.file)
    except FileNotFoundError:
        raise RecordingError(f"{args.file}: no such recording") from None
    if monitor_id is None:
        monitor_id = FALLBACK_MONITOR_ID
        _warn(
            f"the recording names no monitor (recorded before telesafe wrote monitor_id): "
            f"replaying as {monitor_id!r}, so command ids differ from the live run's; give "
            "--monitor-id to match them"
        )
    cfg = EngineConfig(monitor_id=monitor_id, operators=ops)
    stats = ReplayStats()
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    try:
        for line in replay(read_recording(args.file), registry, cfg, args.tail, stats):
            out.write(dumps(line) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    _report(stats, monitor_id, chosen_by_user=args.monitor_id is not None)
    return 0


def _report(stats: ReplayStats, monitor_id: str, chosen_by_user: bool) -> None:
    """Warnings about what the replay may not reproduce (stderr; the decisions stay pure)."""
    others = ", ".join(sorted(m for m in stats.monitor_ids if m != monitor_id))
    if others and chosen_by_user:
        _warn(
            f"the recording was made by monitor(s) {others}; replayed as {monitor_id!r} "
            "(--monitor-id), so command ids differ from the live run's"
        )
    elif others:
        _warn(
            f"the recording holds records of monitor(s) {others} as well; replayed as "
            f"{monitor_id!r}, their procedures' command ids differ from the live ones "
            "(replay each with --monitor-id)"
        )
    if stats.unmatched_acks:
        pid, cid = stats.unmatched_acks[0]
        n = len(stats.unmatched_acks)
        why = (
            "--monitor-id differs from the live monitor's"
            if chosen_by_user
            else "the live run used another policy pack or monitor id (--policy, --monitor-id)"
        )
        _warn(
            f"{n} recorded safe_stop_ack(s) match no replayed command (first: {cid} of "
            f"{pid}); the replay re-sends and escalates where the live robot had "
            f"acknowledged. Likely cause: {why}"
        )


def record(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    topics = Topics(settings.topic_prefix)
    names = [topics.telemetry_console, topics.telemetry_robot, topics.operator, topics.commands]
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
    if not any(tp.topic != topics.commands for tp in starts):
        raise ReplayLayerError(
            f"the ICD topics do not exist on {settings.bootstrap_servers} (create them with "
            f"`telesafe broker topics --topic-prefix {settings.topic_prefix!r}`)"
        )
    consumer.assign(starts)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = time.monotonic() + args.duration if args.duration else None
    owners = Owners()
    heard = HeardAt()
    n = 0
    with open(args.file, "a", encoding="utf-8") as f:
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                batch = consumer.poll(0.1, 10_000)
                now = time.time_ns()
                lines = []
                for r in batch:
                    if r.topic == topics.commands:
                        owners.learn(r.value)
                        continue
                    lines.append((heard.at(r, now), r, owners.of(r.key)))
                for at, r, mid in sorted(lines, key=lambda x: x[0]):  # stable: partition order
                    f.write(encode_line(at, r.topic, r.key, r.value, mid) + "\n")
                    n += 1
        except KeyboardInterrupt:
            pass
    consumer.close()
    print(f"recorded {n} records to {args.file}", file=sys.stderr)
    return 0


class HeardAt:
    """When the monitor counts a record as heard, as `telesafe run` stamps it
    (service/timekeeping.py `stamp`): its broker append time (the input topics use
    LogAppendTime), never later than its receipt nor earlier than the one before it on its
    partition. The procedure's opening time is part of every command id, so a separate
    recorder must see the clock the monitor saw."""

    def __init__(self) -> None:
        self._floor: dict[tuple[str, int], int] = {}

    def at(self, r: Record, received_ns: int) -> int:
        if not r.log_append_time:
            return received_ns
        tp = (r.topic, r.partition)
        t = max(min(r.timestamp_ms * 1_000_000, received_ns), self._floor.get(tp, 0))
        self._floor[tp] = t
        return t


class Owners:
    """Which monitor owns each procedure, from the commands it publishes (every command
    names its procedure and monitor; a monitor heartbeat goes out several times a second)."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, str] = {}

    def learn(self, value: bytes | None) -> None:
        try:
            cmd = json.loads(value or b"")
        except ValueError:
            return
        if isinstance(cmd, dict):
            pid, mid = cmd.get("procedure_id"), cmd.get("monitor_id")
            if isinstance(pid, str) and isinstance(mid, str) and mid:
                self._by_key[pid.encode()] = mid

    def of(self, key: bytes | None) -> str | None:
        return None if key is None else self._by_key.get(key)
