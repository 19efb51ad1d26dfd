"""The governance archive: a verified copy of every instance's ledger, rebuilt from the
audit mirror (`telesafe.audit`) or imported from a ledger file or export bundle.

Records go through `ingest` (one state transaction per batch, with the topic positions),
then `apply` moves into each origin's copy every range of entries that a signed checkpoint
covers, once that checkpoint's signature (by the key in force, following rotations) and
Merkle root (recomputed from the received bytes, extending the copy's compact range, which
proves the copy is a prefix of the signed tree) both verify. Anything that does not verify
is refused: kept in the state's `refused` table, logged as `AUDIT ARCHIVE REFUSED ...`,
and counted (`on_refusal`). Nothing already in a copy is ever changed, and the same
records read again change nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.audit.archive.copies import (
    COPY_SUFFIX,
    ArchivedLedger,
    CopyRefused,
    copy_path,
    origin_of_copy,
)
from monitor.audit.archive.state import ArchiveState, Refusal
from monitor.audit.archive.trusted import TrustedKeys
from monitor.audit.checkpoint import (
    CheckpointError,
    UnknownSigner,
    parse_checkpoint_unverified,
    verify_checkpoint,
)
from monitor.audit.keychain import ROTATION_EVENT, Rotation, parse_rotation
from monitor.audit.lock import LedgerLock, LedgerLocked
from monitor.audit.merkle import leaf_hash
from monitor.audit.mirror import (
    CheckpointRecord,
    EntryRecord,
    MirrorError,
    checkpoint_value,
    entry_value,
    parse_record,
)
from monitor.audit.store import LedgerError
from monitor.audit.verify import open_source

log = logging.getLogger("telesafe.archive")

STATE_FILE = "archive.sqlite"
LEDGERS_DIR = "ledgers"
# Export bundles dropped here (`kubectl cp`) are imported by the running service, then
# moved to import/done/ (or import/failed/).
INBOX_DIR = "import"
# An origin is stalled when a signed checkpoint has waited this long for its entries (a
# record lost on the way, entries that do not match it, or a signer not yet in force).
STALL_AFTER_S = 300.0
# Alternatives tried when several different bodies arrived for the same indices.
MAX_COMBINATIONS = 64

# Refusal reasons (the `reason` label of telesafe_archive_refused_total).
MALFORMED = "malformed"
BAD_SIGNATURE = "bad_signature"
ROOT_MISMATCH = "root_mismatch"
CONFLICT = "conflict"
FORK = "fork"
AMBIGUOUS = "ambiguous"
UNKNOWN_ORIGIN = "unknown_origin"
BAD_ROTATION = "bad_rotation"
REASONS = (
    MALFORMED,
    BAD_SIGNATURE,
    ROOT_MISMATCH,
    CONFLICT,
    FORK,
    AMBIGUOUS,
    UNKNOWN_ORIGIN,
    BAD_ROTATION,
)


class ArchiveError(LedgerError):
    """The archive cannot start or import (one line, naming what to fix)."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One record to ingest: where it was seen ("topic:partition:offset" or "import:..."),
    its value, and the position to store with it (topic, partition, next offset)."""

    seen: str
    value: bytes | None
    position: tuple[str, int, int] | None = None


@dataclass
class OriginStatus:
    origin: str
    trusted: bool
    entries: int = 0
    checkpoints: int = 0
    staged: int = 0
    pending: int = 0
    oldest_pending_s: float = 0.0
    stalled: bool = False
    refused_copy: str | None = None
    last_append_unix: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "trusted": self.trusted,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "staged": self.staged,
            "pending_checkpoints": self.pending,
            "oldest_pending_s": round(self.oldest_pending_s, 1),
            "stalled": self.stalled,
            "refused_copy": self.refused_copy,
            "last_append_unix": self.last_append_unix,
        }


@dataclass
class IngestResult:
    records: int = 0
    entries: int = 0
    checkpoints: int = 0
    duplicates: int = 0
    other: int = 0
    refused: int = 0
    appended_entries: int = 0
    appended_checkpoints: int = 0
    touched: set[str] = field(default_factory=set)


RefusalHook = Callable[[Refusal], None]


class Archive:
    """The archive directory, opened by its one writer (`<dir>/archive.sqlite.lock`).

    Not thread-safe: one thread ingests and applies (the service loop)."""

    def __init__(
        self,
        directory: str | Path,
        trusted: TrustedKeys,
        *,
        on_refusal: RefusalHook | None = None,
        stall_after_s: float = STALL_AFTER_S,
    ) -> None:
        """Open (creating it if needed) the archive in `directory`. Every existing copy is
        verified in full with its trusted key; one that fails is left untouched and its
        origin is never appended to (`status()` shows why). Raises ArchiveError if the
        directory is unusable or another archive process holds it."""
        self.dir = Path(directory)
        if not self.dir.is_dir():
            what = "is not a directory" if self.dir.exists() else "does not exist"
            raise ArchiveError(f"archive directory {self.dir} {what}")
        self.ledgers = self.dir / LEDGERS_DIR
        self.ledgers.mkdir(exist_ok=True)
        state_path = self.dir / STATE_FILE
        try:
            self._lock = LedgerLock.acquire(state_path, "telesafe audit archive")
        except LedgerLocked as exc:
            raise ArchiveError(
                f"archive {self.dir} is in use by {exc.holder}; one archive process per directory"
            ) from None
        self.trusted = trusted
        self._on_refusal = on_refusal
        self._stall_after = stall_after_s
        self.copies: dict[str, ArchivedLedger] = {}
        self.refused_copies: dict[str, str] = {}
        self._announced_unknown: set[str] = set()
        self._mismatch_seen: dict[str, tuple[int, int]] = {}
        self.state = ArchiveState(state_path)
        try:
            for path in sorted(self.ledgers.glob("*" + COPY_SUFFIX)):
                self._open_existing(path)
        except BaseException:
            self.close()
            raise

    def _open_existing(self, path: Path) -> None:
        origin = origin_of_copy(path)
        key = self.trusted.key_for(origin)
        if key is None:
            self.refused_copies[origin] = (
                f"{path}: origin {origin} is not in the trusted keys ({self.trusted.source})"
            )
            log.error("AUDIT ARCHIVE: %s; its copy is left as it is", self.refused_copies[origin])
            return
        try:
            self.copies[origin] = ArchivedLedger.open(path, origin, key)
        except CopyRefused as exc:
            self.refused_copies[origin] = str(exc)
            log.error(
                "AUDIT ARCHIVE COPY REFUSED: %s; nothing more is appended to it (runbook: "
                "ArchiveStalled)",
                exc,
            )
        except LedgerLocked as exc:
            raise ArchiveError(str(exc)) from None

    # --- ingesting ------------------------------------------------------------------

    def ingest(self, records: Iterable[Incoming]) -> IngestResult:
        """Stage a batch of records (one transaction, with their positions), then apply
        what they complete."""
        res = IngestResult()
        refusals: list[Refusal] = []
        self.state.begin()
        try:
            for rec in records:
                res.records += 1
                self._ingest_one(rec, res, refusals)
                if rec.position is not None:
                    self.state.set_position(*rec.position)
            self.state.commit()
        except BaseException:
            self.state.rollback()
            raise
        for r in refusals:
            self._report(r)
        self.apply(res.touched, res)
        return res

    def _ingest_one(self, rec: Incoming, res: IngestResult, refusals: list[Refusal]) -> None:
        try:
            parsed = parse_record(rec.value)
        except MirrorError as exc:
            refusals.append(self.state.refuse(None, MALFORMED, str(exc), rec.seen, rec.value))
            res.refused += 1
            return
        if parsed is None:
            res.other += 1
            self.state.count(_other_kind(rec.value))
            return
        origin = parsed.origin
        trusted = self.trusted.key_for(origin) is not None
        if not trusted:
            self._unknown(origin, rec.seen, refusals)
        if isinstance(parsed, EntryRecord):
            res.entries += 1
            self._ingest_entry(parsed, rec, res, refusals)
        else:
            res.checkpoints += 1
            self._ingest_checkpoint(parsed, rec, res, refusals)
        if trusted:
            res.touched.add(origin)

    def _unknown(self, origin: str, seen: str, refusals: list[Refusal]) -> None:
        if origin in self._announced_unknown:
            return
        self._announced_unknown.add(origin)
        refusals.append(
            self.state.refuse(
                origin,
                UNKNOWN_ORIGIN,
                f"origin {origin} is not in the trusted keys ({self.trusted.source}); its "
                f"records are held, and verified once it is added and the archive restarted",
                seen,
                None,
            )
        )

    def _ingest_entry(
        self, e: EntryRecord, rec: Incoming, res: IngestResult, refusals: list[Refusal]
    ) -> None:
        lh = leaf_hash(e.body)
        copy = self.copies.get(e.origin)
        if copy is not None and e.index < copy.size:
            if copy.leaf_hash(e.index) == lh:
                res.duplicates += 1
                return
            res.refused += 1
            refusals.append(
                self.state.refuse(
                    e.origin,
                    CONFLICT,
                    f"entry {e.index}: differs from the archived (verified) entry {e.index}",
                    rec.seen,
                    rec.value,
                )
            )
            return
        new, n = self.state.stage(e.origin, e.index, lh, e.body, rec.seen)
        if not new:
            res.duplicates += 1
        elif n > 1:
            refusals.append(
                self.state.refuse(
                    e.origin,
                    AMBIGUOUS,
                    f"entry {e.index}: {n} different bodies received for this index; all are "
                    f"kept until a signed checkpoint decides",
                    rec.seen,
                    rec.value,
                )
            )

    def _ingest_checkpoint(
        self, c: CheckpointRecord, rec: Incoming, res: IngestResult, refusals: list[Refusal]
    ) -> None:
        try:
            cp = parse_checkpoint_unverified(c.note)
            if cp.origin != c.origin:
                raise CheckpointError(f"note of origin {cp.origin!r} in a record of {c.origin!r}")
            if cp.size == 0:
                raise CheckpointError("a checkpoint of the empty tree covers nothing")
        except CheckpointError as exc:
            res.refused += 1
            refusals.append(
                self.state.refuse(c.origin, MALFORMED, f"checkpoint: {exc}", rec.seen, rec.value)
            )
            return
        copy = self.copies.get(c.origin)
        if (
            copy is not None
            and copy.has_checkpoint(cp.size)
            and copy.checkpoint_note(cp.size) == c.note
        ):
            res.duplicates += 1
            return
        key = copy.walk.key if copy is not None else self.trusted.key_for(c.origin)
        if key is not None:
            # A line by the key in force that fails is refused at once; a note by another
            # key may be by a key announced in entries not archived yet, so it waits.
            try:
                verify_checkpoint(c.note, key, c.origin)
            except UnknownSigner:
                pass
            except CheckpointError as exc:
                res.refused += 1
                refusals.append(
                    self.state.refuse(
                        c.origin,
                        BAD_SIGNATURE,
                        f"checkpoint at size {cp.size}: {exc}",
                        rec.seen,
                        rec.value,
                    )
                )
                return
        if not self.state.add_pending(c.origin, cp.size, c.note, rec.seen):
            res.duplicates += 1

    # --- applying -------------------------------------------------------------------

    def apply(self, origins: Iterable[str], res: IngestResult | None = None) -> IngestResult:
        """Move into the copies whatever the pending checkpoints of `origins` now cover."""
        res = res if res is not None else IngestResult()
        for origin in sorted(set(origins)):
            key = self.trusted.key_for(origin)
            if key is None or origin in self.refused_copies:
                continue
            copy = self.copies.get(origin)
            if copy is None:
                if not self.state.pending(origin):
                    continue
                copy = self.copies[origin] = ArchivedLedger.open(
                    copy_path(self.ledgers, origin), origin, key
                )
            self._apply_origin(copy, res)
        return res

    def _apply_origin(self, copy: ArchivedLedger, res: IngestResult) -> None:
        origin = copy.origin
        progressed = True
        while progressed:
            progressed = False
            pending = self.state.pending(origin)
            for size, note, seen, _ in pending:
                if size <= copy.size:
                    self._late(copy, size, note, seen, res)
            # Smallest size first; a size none of whose notes applies (a note waiting for a
            # key, or entries that do not match it) does not hold back a larger one.
            for size in sorted({p[0] for p in pending if p[0] > copy.size}):
                staged = self.state.staged_range(origin, copy.size, size)
                if len(staged) < size - copy.size:
                    return  # an entry it covers has not arrived yet (nor for larger sizes)
                notes = [(n, w) for s, n, w, _ in pending if s == size]
                if any(self._try_apply(copy, size, n, w, staged, res) for n, w in notes):
                    progressed = True
                    break

    def _try_apply(
        self,
        copy: ArchivedLedger,
        size: int,
        note: str,
        seen: str,
        staged: dict[int, list[tuple[bytes, bytes]]],
        res: IngestResult,
    ) -> bool:
        origin = copy.origin
        try:
            scp = verify_checkpoint(note, copy.walk.key, origin)
        except UnknownSigner as exc:
            # Maybe a key announced in a range whose checkpoint has not arrived: it waits.
            log.debug("archive: checkpoint %s@%d waits: %s", origin, size, exc)
            return False
        except CheckpointError as exc:
            self._refuse_pending(
                copy, size, note, seen, BAD_SIGNATURE, f"checkpoint at size {size}: {exc}"
            )
            res.refused += 1
            return False
        lo = copy.size
        rows = _matching_rows(copy, lo, size, staged, scp.root)
        if rows is None:
            n = sum(len(v) for v in staged.values())
            if self._mismatch_seen.get(origin) != (size, n):
                self._mismatch_seen[origin] = (size, n)
                r = self.state.refuse(
                    origin,
                    ROOT_MISMATCH,
                    f"entries [{lo}, {size}) as received do not reproduce the root of the "
                    f"checkpoint at size {size} (validly signed): an entry was altered or "
                    f"forged on the way; the checkpoint waits for the genuine entries",
                    seen,
                    None,
                )
                res.refused += 1
                self._report(r)
            return False
        rotations, problems = _rotations(origin, rows)
        for rot in rotations:
            copy.walk.announce(rot)
        copy.append(rows, size, note, rotations)
        problems += [f"entry {i}: {m}" for i, m in copy.walk.covered(size)]
        res.appended_entries += len(rows)
        res.appended_checkpoints += 1
        self._mismatch_seen.pop(origin, None)
        self.state.begin()
        try:
            self.state.drop_pending(origin, size, note)
            losers = self.state.drop_staged(origin, size, [(i, lh) for i, lh, _ in rows])
            refusals = [
                self.state.refuse(
                    origin,
                    CONFLICT,
                    f"entry {i}: not the entry the signed checkpoint at size {size} covers",
                    s,
                    b,
                )
                for i, b, s in losers
            ]
            refusals += [self.state.refuse(origin, BAD_ROTATION, p, seen, None) for p in problems]
            self.state.commit()
        except BaseException:
            self.state.rollback()
            raise
        for r in refusals:
            self._report(r)
        return True

    def _late(
        self, copy: ArchivedLedger, size: int, note: str, seen: str, res: IngestResult
    ) -> None:
        """A checkpoint of a size the copy already holds: a duplicate, a checkpoint that
        arrived after a later one, or a fork."""
        existing = copy.checkpoint_note(size)
        if existing == note:
            self.state.drop_pending(copy.origin, size, note)
            return
        try:
            scp = verify_checkpoint(note, copy.walk.key_for(size), copy.origin)
        except CheckpointError as exc:
            self._refuse_pending(
                copy, size, note, seen, BAD_SIGNATURE, f"checkpoint at size {size}: {exc}"
            )
            res.refused += 1
            return
        root = copy.root_at(size)
        if scp.root != root:
            self._refuse_pending(
                copy,
                size,
                note,
                seen,
                FORK,
                f"checkpoint at size {size} is validly signed but its root {scp.root.hex()} "
                f"differs from the archived tree's {root.hex()}: the origin signed two "
                f"different histories (a ledger re-created or rolled back?)",
            )
            res.refused += 1
            return
        if existing is None:
            copy.add_checkpoint(size, note)
            res.appended_checkpoints += 1
        self.state.drop_pending(copy.origin, size, note)

    def _refuse_pending(
        self, copy: ArchivedLedger, size: int, note: str, seen: str, reason: str, detail: str
    ) -> None:
        self.state.begin()
        try:
            r = self.state.refuse(copy.origin, reason, detail, seen, note.encode())
            self.state.drop_pending(copy.origin, size, note)
            self.state.commit()
        except BaseException:
            self.state.rollback()
            raise
        self._report(r)

    def _report(self, r: Refusal) -> None:
        log.error(
            "AUDIT ARCHIVE REFUSED (%s) origin %s, %s: %s (runbook: ArchiveRefusedRecords)",
            r.reason,
            r.origin or "?",
            r.seen,
            r.detail,
        )
        if self._on_refusal is not None:
            try:
                self._on_refusal(r)
            except Exception:
                log.exception("archive: refusal hook failed")

    # --- importing ------------------------------------------------------------------

    def import_source(self, path: str | Path) -> IngestResult:
        """Feed a ledger file or export bundle through the same checks as the topic (for
        a range the mirror never delivered: an archive started after the topic's retention,
        an instance that died with records in its producer's queue)."""
        p = Path(path)
        try:
            src = open_source(p)
        except LedgerError as exc:
            raise ArchiveError(f"cannot import {p}: {exc}") from None
        origin = src.origin
        try:
            if origin is None:
                raise ArchiveError(f"cannot import {p}: it names no origin")
            if self.trusted.key_for(origin) is None:
                raise ArchiveError(
                    f"cannot import {p}: origin {origin} is not in the trusted keys "
                    f"({self.trusted.source})"
                )
            copy = self.copies.get(origin)
            start = copy.size if copy is not None else 0
            seen = f"import:{p}"
            records = [
                Incoming(f"{seen}#{idx}", _entry_value(origin, body))
                for idx, _lh, body in src.entries
                if idx >= start
            ]
            records += [
                Incoming(f"{seen}@{size}", checkpoint_value(origin, note))
                for size, note in src.checkpoints
            ]
        finally:
            src.close()
        return self.ingest(records)

    def import_inbox(self) -> list[tuple[str, IngestResult | str]]:
        """Import every complete export bundle in `<dir>/import/` (its entries.jsonl hashes
        to its manifest's `entries_sha256`: a bundle still being copied is left for the next
        call), then move it to import/done/ (import/failed/ if it cannot be imported).
        Returns (bundle name, result or the reason it failed)."""
        inbox = self.dir / INBOX_DIR
        if not inbox.is_dir():
            return []
        out: list[tuple[str, IngestResult | str]] = []
        for bundle in sorted(p for p in inbox.iterdir() if p.is_dir()):
            if bundle.name in ("done", "failed") or not _bundle_complete(bundle):
                continue
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            res: IngestResult | str
            try:
                done = self.import_source(bundle)
            except (ArchiveError, LedgerError) as exc:
                res, where = str(exc), "failed"
                log.error("AUDIT ARCHIVE: bundle %s not imported: %s", bundle.name, exc)
            else:
                res, where = done, "done"
                log.info(
                    "imported bundle %s: %d entries and %d checkpoints added",
                    bundle.name,
                    done.appended_entries,
                    done.appended_checkpoints,
                )
            (inbox / where).mkdir(exist_ok=True)
            bundle.rename(inbox / where / f"{bundle.name}.{stamp}")
            out.append((bundle.name, res))
        return out

    # --- status ---------------------------------------------------------------------

    def status(self) -> list[OriginStatus]:
        now = time.time()
        staged = self.state.staged_counts()
        pending = self.state.pending_summary()
        names = set(self.copies) | set(self.refused_copies) | set(staged) | set(pending)
        out = []
        for origin in sorted(names):
            st = OriginStatus(origin, self.trusted.key_for(origin) is not None)
            copy = self.copies.get(origin)
            if copy is not None:
                st.entries, st.checkpoints = copy.size, copy.checkpoint_count
                st.last_append_unix = copy.last_append_unix
            st.staged = staged.get(origin, 0)
            n, since = pending.get(origin, (0, now))
            st.pending, st.oldest_pending_s = n, (now - since) if n else 0.0
            st.refused_copy = self.refused_copies.get(origin)
            st.stalled = st.refused_copy is not None or (
                st.trusted and n > 0 and st.oldest_pending_s >= self._stall_after
            )
            out.append(st)
        return out

    def close(self) -> None:
        for copy in self.copies.values():
            with contextlib.suppress(Exception):
                copy.close()
        self.copies.clear()
        if hasattr(self, "state"):
            self.state.close()
        self._lock.release()


def _bundle_complete(bundle: Path) -> bool:
    """An export bundle whose entries match its manifest (fully copied)."""
    import hashlib

    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        digest = hashlib.sha256((bundle / "entries.jsonl").read_bytes()).hexdigest()
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("entries_sha256") == digest


def _other_kind(value: bytes | None) -> str:
    try:
        obj = json.loads(value or b"")
    except ValueError:
        return "other"
    if isinstance(obj, dict) and obj.get("ledgered") is False:
        return "unledgered"
    return "other"


def _matching_rows(
    copy: ArchivedLedger,
    lo: int,
    hi: int,
    staged: dict[int, list[tuple[bytes, bytes]]],
    root: bytes,
) -> list[tuple[int, bytes, bytes]] | None:
    """The received entries [lo, hi) that, appended to the copy, give `root`; of several
    bodies received for an index, each combination is tried (first arrivals first, at most
    MAX_COMBINATIONS). None if none does."""
    choices = [staged[i] for i in range(lo, hi)]
    combos = math.prod(len(c) for c in choices)
    product: Iterable[tuple[tuple[bytes, bytes], ...]] = (
        itertools.product(*choices)
        if combos <= MAX_COMBINATIONS
        else [tuple(c[0] for c in choices)]
    )
    for combo in product:
        cr = copy.compact()
        cr.extend(lh for lh, _ in combo)
        if cr.root() == root:
            return [(lo + k, lh, body) for k, (lh, body) in enumerate(combo)]
    return None


def _rotations(
    origin: str, rows: list[tuple[int, bytes, bytes]]
) -> tuple[list[Rotation], list[str]]:
    rotations: list[Rotation] = []
    problems: list[str] = []
    needle = ROTATION_EVENT.encode()
    for idx, _, body in rows:
        if needle not in body:
            continue
        obj = json.loads(body)
        if obj.get("event") != ROTATION_EVENT:
            continue
        try:
            rot = parse_rotation(obj, origin, idx)
        except ValueError as exc:
            problems.append(f"entry {idx}: {exc}")
            continue
        if rot is not None:
            rotations.append(rot)
    return rotations, problems


def _entry_value(origin: str, body: bytes) -> bytes:
    """An imported body as a mirror record; one that is not a JSON object is passed on
    as it is (`ingest` counts it as another kind of record, and the checkpoint covering
    it then waits: the import cannot complete that range)."""
    try:
        return entry_value(origin, body)
    except ValueError:
        return body
