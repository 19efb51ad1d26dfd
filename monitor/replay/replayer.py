"""Replay a recording through the pure engine with a clock driven by `received_at`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from monitor.engine.clock import MS, Instant
from monitor.engine.decisions import Decision, PublishLatch, SendCommand
from monitor.engine.engine import Engine, EngineConfig
from monitor.icd.decode import Rejection, decode_operator, decode_telemetry
from monitor.icd.models import Site
from monitor.policy.loader import PackRegistry
from monitor.replay.recording import RecordedRecord

_SUFFIXES: dict[str, Site | None] = {
    "telesafe.telemetry.console": "console",
    "telesafe.telemetry.robot": "robot",
    "telesafe.operator": None,
}


def _topic_kind(topic: str) -> tuple[bool, Site | None]:
    for suffix, site in _SUFFIXES.items():
        if topic.endswith(suffix):
            return True, site
    return False, None


def _lines(decisions: list[Decision]) -> Iterator[dict[str, Any]]:
    for d in decisions:
        if isinstance(d, SendCommand):
            yield {
                "t_ns": d.detected_mono_ns,
                "decision": "command",
                "resend": d.resend,
                "command": d.command.model_dump(mode="json"),
            }
        elif isinstance(d, PublishLatch):
            yield {
                "t_ns": d.mono_ns,
                "decision": "latch_state",
                "procedure_id": d.procedure_id,
                "state": None if d.state is None else d.state.model_dump(mode="json"),
            }
        else:
            yield {
                "t_ns": d.mono_ns,
                "decision": "event",
                "kind": d.kind,
                "procedure_id": d.procedure_id,
                "data": d.data,
            }


@dataclass
class ReplayStats:
    """What a replay noticed about its recording, for warnings beside the decisions."""

    monitor_ids: Counter[str] = field(default_factory=Counter)  # records per recording monitor
    unmatched_acks: list[tuple[str | None, str]] = field(default_factory=list)  # (pid, cid)

    def note(self, line: dict[str, Any]) -> None:
        if line.get("decision") == "event" and line.get("kind") == "ack_unmatched":
            self.unmatched_acks.append((line.get("procedure_id"), str(line["data"]["command_id"])))


def replay(
    records: Iterable[RecordedRecord],
    packs: PackRegistry,
    config: EngineConfig,
    tail_ms: float = 3000.0,
    stats: ReplayStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Every decision in order, as JSON-ready dicts. Deterministic for a given input.
    `stats`, if given, is filled as the replay goes (complete once it is exhausted)."""
    lines = _replay(records, packs, config, tail_ms, stats)
    if stats is None:
        yield from lines
        return
    for line in lines:
        stats.note(line)
        yield line


def _replay(
    records: Iterable[RecordedRecord],
    packs: PackRegistry,
    config: EngineConfig,
    tail_ms: float,
    stats: ReplayStats | None,
) -> Iterator[dict[str, Any]]:
    eng = Engine(packs, config)
    last: int | None = None
    for r in records:
        if stats is not None and r.monitor_id is not None:
            stats.monitor_ids[r.monitor_id] += 1
        t = r.received_at
        nd = eng.next_deadline()
        while nd is not None and nd <= t:
            yield from _lines(eng.tick(Instant(nd, nd)))
            nd = eng.next_deadline()
        now = Instant(t, t)
        last = t
        known, site = _topic_kind(r.topic)
        if not known:
            continue
        rec = (
            decode_telemetry(r.value, r.key, site)
            if site is not None
            else decode_operator(r.value, r.key)
        )
        if isinstance(rec, Rejection):
            yield {"t_ns": t, "decision": "rejected", "topic": r.topic, "reason": rec.reason}
            continue
        if site is None:
            yield from _lines(eng.on_operator(rec, now))  # type: ignore[arg-type]
        else:
            yield from _lines(eng.on_telemetry(rec, now))  # type: ignore[arg-type]
    if last is None:
        return
    end = last + int(tail_ms * MS)
    nd = eng.next_deadline()
    while nd is not None and nd <= end:
        yield from _lines(eng.tick(Instant(nd, nd)))
        nd = eng.next_deadline()


def dumps(line: dict[str, Any]) -> str:
    return json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
