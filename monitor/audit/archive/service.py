"""`telesafe audit archive`: the archive process. It reads `telesafe.audit` without a
consumer group (its positions live in its own state, written with what they produced),
hands each batch to `Archive.ingest`, and serves /metrics, /healthz, /readyz and /status.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.audit.archive.core import Archive, Incoming, IngestResult
from monitor.audit.archive.state import Refusal
from monitor.icd.topics import Topics
from monitor.kafka import (
    Consumer,
    KafkaSettings,
    Record,
    TopicPartition,
    TransportError,
    open_consumer,
)

log = logging.getLogger("telesafe.archive")

POLL_S = 0.5
MAX_RECORDS = 2000
STATUS_EVERY_S = 5.0
PARTITIONS_EVERY_S = 60.0
UNTRUSTED = "untrusted"  # the origin label of every origin not in the trusted keys


class ArchiveMetrics:
    """The archive's series (its own registry; the catalogue is in docs/audit-ledger.md)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.start_time = Gauge(
            "telesafe_archive_start_time_seconds", "Unix time the archive started.", registry=r
        )
        self.records = Counter(
            "telesafe_archive_records_total",
            "Records read from the audit topic or imported, by kind (entry, checkpoint, "
            "duplicate, other).",
            ["kind"],
            registry=r,
        )
        self.refused = Counter(
            "telesafe_archive_refused_total",
            "Records or archived copies that did not verify, by origin and reason.",
            ["origin", "reason"],
            registry=r,
        )
        self.entries = Gauge(
            "telesafe_archive_entries",
            "Entries in the verified copy of an origin.",
            ["origin"],
            registry=r,
        )
        self.checkpoints = Gauge(
            "telesafe_archive_checkpoints",
            "Signed checkpoints in the verified copy of an origin.",
            ["origin"],
            registry=r,
        )
        self.staged = Gauge(
            "telesafe_archive_staged_entries",
            "Entries received but not yet covered by a verified checkpoint.",
            ["origin"],
            registry=r,
        )
        self.pending = Gauge(
            "telesafe_archive_pending_checkpoints",
            "Signed checkpoints waiting for the entries they cover.",
            ["origin"],
            registry=r,
        )
        self.stalled = Gauge(
            "telesafe_archive_stalled",
            "1 while an origin's copy cannot advance: a checkpoint has waited for its "
            "entries longer than the stall limit, or the copy failed verification.",
            ["origin"],
            registry=r,
        )
        self.last_append = Gauge(
            "telesafe_archive_last_append_timestamp_seconds",
            "Unix time a verified range was last appended to an origin's copy.",
            ["origin"],
            registry=r,
        )
        self.untrusted = Gauge(
            "telesafe_archive_untrusted_origins",
            "Origins whose records are held because the trusted keys do not name them.",
            registry=r,
        )
        self.lag = Gauge(
            "telesafe_archive_lag_records",
            "Records of the audit topic not read yet (sum over partitions).",
            registry=r,
        )

    def refusal(self, r: Refusal, trusted: bool) -> None:
        origin = r.origin if (trusted and r.origin) else UNTRUSTED
        self.refused.labels(origin, r.reason).inc()

    def batch(self, res: IngestResult) -> None:
        for kind, n in (
            ("entry", res.entries),
            ("checkpoint", res.checkpoints),
            ("duplicate", res.duplicates),
            ("other", res.other),
        ):
            if n:
                self.records.labels(kind).inc(n)

    def status(self, archive: Archive) -> list[dict[str, Any]]:
        out = []
        untrusted = 0
        for st in archive.status():
            out.append(st.as_dict())
            if not st.trusted:
                untrusted += 1
                continue
            o = st.origin
            self.entries.labels(o).set(st.entries)
            self.checkpoints.labels(o).set(st.checkpoints)
            self.staged.labels(o).set(st.staged)
            self.pending.labels(o).set(st.pending)
            self.stalled.labels(o).set(1 if st.stalled else 0)
            if st.last_append_unix:
                self.last_append.labels(o).set(st.last_append_unix)
        self.untrusted.set(untrusted)
        return out


@dataclass
class LoopState:
    assigned: bool = False
    last_loop: float = 0.0
    caught_up: bool = False
    error: str | None = None


class ArchiveReader:
    """Reads every partition of the audit topic from the archive's stored positions."""

    def __init__(self, settings: KafkaSettings, archive: Archive, metrics: ArchiveMetrics):
        self.topic = Topics(settings.topic_prefix).audit
        self.archive = archive
        self.metrics = metrics
        self.settings = settings
        self.consumer: Consumer = open_consumer(settings, "reader", "telesafe-archive")
        self.positions: dict[TopicPartition, int] = {}
        self.state = LoopState()

    def assign(self, timeout_s: float = 10.0) -> None:
        """(Re)assign every partition at the stored position (or the oldest retained
        record). Raises TransportError if the topic does not exist."""
        parts = self.consumer.partitions_for(self.topic, timeout_s)
        if not parts:
            raise TransportError(f"topic {self.topic} does not exist")
        stored = self.archive.state.positions(self.topic)
        starts: dict[TopicPartition, int] = {}
        for p in parts:
            tp = TopicPartition(self.topic, p)
            marks = self.consumer.watermarks(tp, timeout_s)
            lo = marks[0] if marks else 0
            pos = stored.get(p, lo)
            if pos < lo:
                log.error(
                    "AUDIT ARCHIVE: %s partition %d: offsets [%d, %d) were deleted by the "
                    "topic's retention before the archive read them; import the ledgers of "
                    "the instances concerned (`telesafe audit archive --import`)",
                    self.topic,
                    p,
                    pos,
                    lo,
                )
                pos = lo
            starts[tp] = pos
        self.consumer.assign(starts)
        self.positions = dict(starts)
        self.state.assigned = True

    def step(self, timeout_s: float = POLL_S) -> int:
        """One poll and its ingest; the number of records read."""
        batch: list[Record] = self.consumer.poll(timeout_s, MAX_RECORDS)
        self.state.last_loop = time.monotonic()
        if not batch:
            return 0
        res = self.archive.ingest(_incoming(r) for r in batch)
        for r in batch:
            self.positions[TopicPartition(r.topic, r.partition)] = r.offset + 1
        self.metrics.batch(res)
        if res.appended_checkpoints:
            log.info(
                "archived %d entries and %d checkpoints",
                res.appended_entries,
                res.appended_checkpoints,
            )
        return len(batch)

    def ends(self, timeout_s: float) -> dict[TopicPartition, int]:
        out = {}
        for tp in self.positions:
            marks = self.consumer.watermarks(tp, timeout_s)
            if marks is not None:
                out[tp] = marks[1]
        return out

    def lag(self) -> int:
        total = 0
        for tp, pos in self.positions.items():
            marks = self.consumer.watermarks(tp, 1.0, cached=True)
            if marks is not None:
                total += max(0, marks[1] - pos)
        return total

    def catch_up(self, timeout_s: float) -> bool:
        """Read up to the end offsets of now; False if not reached within `timeout_s`."""
        ends = self.ends(min(10.0, timeout_s))
        deadline = time.monotonic() + timeout_s
        while any(self.positions.get(tp, 0) < end for tp, end in ends.items()):
            if time.monotonic() >= deadline:
                return False
            if not self.step():
                for tp, end in ends.items():  # compaction/transactions: trust the position
                    pos = self.consumer.position(tp)
                    if pos is not None and pos >= end:
                        self.positions[tp] = max(self.positions.get(tp, 0), pos)
        self.state.caught_up = True
        return True

    def new_partitions(self) -> None:
        try:
            parts = self.consumer.partitions_for(self.topic, 5.0) or []
        except TransportError:
            return
        if any(TopicPartition(self.topic, p) not in self.positions for p in parts):
            log.info("audit topic %s has new partitions: reassigning", self.topic)
            self.archive.state.begin()
            for tp, pos in self.positions.items():
                self.archive.state.set_position(tp.topic, tp.partition, pos)
            self.archive.state.commit()
            self.assign()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close(2.0)


def _incoming(r: Record) -> Incoming:
    return Incoming(
        f"{r.topic}:{r.partition}:{r.offset}", r.value, (r.topic, r.partition, r.offset + 1)
    )


# --- the command -----------------------------------------------------------------------

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run_archive(args: Any) -> int:
    """`telesafe audit archive` (see `monitor.audit.cli` for the flags)."""
    import signal
    import sys

    from monitor.audit.archive.core import ArchiveError
    from monitor.audit.archive.trusted import TrustedKeys, TrustedKeysError
    from monitor.audit.store import LedgerError
    from monitor.kafka.settings import settings_from_args
    from monitor.service.http import MonitorHTTP

    logging.basicConfig(
        level=args.log_level,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)

    def fail(msg: str, code: int = EXIT_USAGE) -> int:
        print(f"telesafe audit archive: {msg}", file=sys.stderr)
        return code

    try:
        trusted = TrustedKeys.load(args.trusted_keys)
        settings = settings_from_args(args)
    except (TrustedKeysError, ValueError) as exc:
        return fail(str(exc))
    metrics = ArchiveMetrics()
    metrics.start_time.set(time.time())
    refused: list[Refusal] = []

    def on_refusal(r: Refusal) -> None:
        refused.append(r)
        metrics.refusal(r, trusted.key_for(r.origin or "") is not None)

    try:
        archive = Archive(args.dir, trusted, on_refusal=on_refusal, stall_after_s=args.stall_after)
    except (ArchiveError, LedgerError) as exc:
        return fail(str(exc))
    try:
        for st in archive.status():
            if st.refused_copy:
                metrics.refused.labels(st.origin if st.trusted else UNTRUSTED, "copy").inc()
        if args.import_paths:
            for path in args.import_paths:
                res = archive.import_source(path)
                print(
                    f"imported {path}: {res.appended_entries} entries and "
                    f"{res.appended_checkpoints} checkpoints added, {res.refused} refused"
                )
            return _summary(archive, metrics, refused)
        try:
            reader = ArchiveReader(settings, archive, metrics)
        except TransportError as exc:
            return fail(f"cannot reach Kafka: {exc}", EXIT_FAILED)
        try:
            reader.assign()
            if args.once:
                if not reader.catch_up(args.timeout):
                    return fail(
                        f"the end of {reader.topic} was not reached within {args.timeout:g} s",
                        EXIT_FAILED,
                    )
                return _summary(archive, metrics, refused)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            status_cache: dict[str, Any] = {"origins": metrics.status(archive)}

            def health() -> tuple[bool, dict[str, Any]]:
                age = time.monotonic() - reader.state.last_loop
                return age < 30.0, {"loop_age_s": round(age, 1)}

            def ready() -> tuple[bool, dict[str, Any]]:
                ok, detail = health()
                return ok and reader.state.assigned, {**detail, "assigned": reader.state.assigned}

            http = MonitorHTTP(
                args.http_host,
                args.http_port,
                metrics.registry,
                health,
                ready,
                lambda: status_cache,
            )
            http.start()
            log.info(
                "archiving %s into %s (%d origins); /metrics and /status on %s:%d",
                reader.topic,
                archive.dir,
                len(archive.copies),
                args.http_host,
                http.port,
            )
            reader.state.last_loop = time.monotonic()
            try:
                _serve(reader, archive, metrics, stop, status_cache)
            finally:
                http.stop()
            return EXIT_OK
        except TransportError as exc:
            return fail(f"Kafka: {exc}", EXIT_FAILED)
        finally:
            reader.close()
    except (ArchiveError, LedgerError) as exc:
        return fail(str(exc), EXIT_FAILED)
    except Exception as exc:  # disk full, I/O error: stop; the supervisor restarts us
        log.critical("AUDIT ARCHIVE FAILED: %r; exiting (nothing half-written is kept)", exc)
        return fail(f"failed: {exc!r}", EXIT_FAILED)
    finally:
        archive.close()


def _serve(
    reader: ArchiveReader,
    archive: Archive,
    metrics: ArchiveMetrics,
    stop: threading.Event,
    cache: dict[str, Any],
) -> None:
    """The service loop: ingest, and refresh the gauges and the /status view."""
    next_status = 0.0
    next_parts = time.monotonic() + PARTITIONS_EVERY_S
    while not stop.is_set():
        reader.step()
        now = time.monotonic()
        if now >= next_status:
            next_status = now + STATUS_EVERY_S
            for _, res in archive.import_inbox():
                if not isinstance(res, str):
                    metrics.batch(res)
            cache["origins"] = metrics.status(archive)
            cache["refused_total"] = archive.state.refusal_count()
            cache["not_ledger_records"] = archive.state.counts()  # e.g. "unledgered"
            cache["recent_refusals"] = [r.__dict__ for r in archive.state.refusals(20)]
            with contextlib.suppress(TransportError):
                metrics.lag.set(reader.lag())
        if now >= next_parts:
            next_parts = now + PARTITIONS_EVERY_S
            reader.new_partitions()


def _summary(archive: Archive, metrics: ArchiveMetrics, refused: list[Refusal]) -> int:
    """Print each origin's state and this run's refusals; exit 1 if anything was refused
    or an origin is stalled."""
    metrics.status(archive)
    print(f"{'origin':<32} {'entries':>8} {'checkpoints':>11} {'staged':>7} {'pending':>7}  state")
    for st in archive.status():
        if st.refused_copy:
            state = f"REFUSED: {st.refused_copy}"
        elif not st.trusted:
            state = "NOT TRUSTED (records held)"
        elif st.stalled:
            state = "STALLED"
        elif st.pending:
            state = "waiting for entries a checkpoint covers"
        else:
            state = "ok"
        print(
            f"{st.origin:<32} {st.entries:>8} {st.checkpoints:>11} {st.staged:>7} "
            f"{st.pending:>7}  {state}"
        )
    for r in refused:
        print(f"refused ({r.reason}) {r.origin or '?'} {r.seen}: {r.detail}")
    bad = refused or any(st.stalled or st.refused_copy for st in archive.status())
    return EXIT_FAILED if bad else EXIT_OK
