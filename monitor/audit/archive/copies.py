"""One verified copy of one instance's ledger, kept by the governance archive.

A copy is an ordinary ledger file (`monitor.audit.store` schema: the same `entries`,
`checkpoints` and `meta` tables, the append-only triggers, the `<copy>.checkpoint`
sidecar), so `telesafe audit verify COPY --pubkey KEY` and `telesafe report` read it like
the instance's own file. It is never re-signed: it holds the instance's entries and its
signed checkpoints, byte for byte. Entries enter it only together with the signed
checkpoint that covers them, in one transaction, after the archive has checked that
checkpoint's signature (by the key in force, following rotations) and recomputed its root
from those very entries; so a copy only ever holds verified history.
"""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from monitor.audit.checkpoint import key_id, public_pem, vkey
from monitor.audit.keychain import META_ROTATION, META_SIGNING_KEY, KeyWalk, Rotation
from monitor.audit.ledger import _write_atomic, sidecar_path
from monitor.audit.lock import LedgerLock, LedgerLocked
from monitor.audit.merkle import CompactRange
from monitor.audit.store import LedgerError, Store
from monitor.audit.verify import verify

COPY_SUFFIX = ".sqlite"


class CopyRefused(LedgerError):
    """An existing copy does not verify: the archive leaves it untouched and appends no
    more to it (the message names the first bad entry)."""


def copy_path(directory: Path, origin: str) -> Path:
    """`<dir>/<origin, percent-encoded>.sqlite`: one file per origin, names reversible."""
    return directory / (urllib.parse.quote(origin, safe="") + COPY_SUFFIX)


def origin_of_copy(path: Path) -> str:
    return urllib.parse.unquote(path.name.removesuffix(COPY_SUFFIX))


class ArchivedLedger:
    """The archive's copy of one origin's ledger (single writer: the archive process)."""

    def __init__(
        self,
        path: Path,
        origin: str,
        store: Store,
        compact: CompactRange,
        walk: KeyWalk,
        lock: LedgerLock,
        checkpoints: set[int],
    ) -> None:
        self.path = path
        self.origin = origin
        self._store = store
        self._cr = compact
        self.walk = walk
        self._lock = lock
        self._checkpoints = checkpoints
        self.last_append_unix = 0.0

    @classmethod
    def open(cls, path: Path, origin: str, key: Ed25519PublicKey) -> ArchivedLedger:
        """Open (or create) the copy of `origin` at `path`, trusting `key` (its original
        key). An existing copy is verified in full first: `CopyRefused` if it fails (or is
        another origin's), `LedgerLocked` if another archive process holds it."""
        try:
            lock = LedgerLock.acquire(path, f"telesafe audit archive ({origin})")
        except LedgerLocked as exc:
            raise LedgerLocked(path, exc.holder) from None
        try:
            if path.exists():
                return cls._existing(path, origin, key, lock)
            return cls._create(path, origin, key, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _existing(
        cls, path: Path, origin: str, key: Ed25519PublicKey, lock: LedgerLock
    ) -> ArchivedLedger:
        res = verify(path, key, origin=origin)
        if not res.ok:
            raise CopyRefused(f"archived copy {path} does not verify: {res.first_problem}")
        size = res.latest.size if res.latest is not None else 0
        if res.entries != size:
            raise CopyRefused(
                f"archived copy {path} holds {res.entries} entries but its latest checkpoint "
                f"covers {size}: it was written by something other than the archive"
            )
        store = Store(path)
        try:
            cr = CompactRange()
            cr.extend(bytes(lh) for _, lh in store.iter_leaf_hashes())
            cps = {s for s, _ in store.checkpoints()}
        except BaseException:
            store.close()
            raise
        spans = list(res.key_spans)
        walk = KeyWalk(origin, spans[-1][1], spans)
        return cls(path, origin, store, cr, walk, lock, cps)

    @classmethod
    def _create(
        cls, path: Path, origin: str, key: Ed25519PublicKey, lock: LedgerLock
    ) -> ArchivedLedger:
        store = Store(path)
        try:
            store.init_schema()
            store.meta_put("origin", origin)
            store.meta_put("created_unix", str(int(time.time())))
            store.meta_put(META_SIGNING_KEY, vkey(origin, key))
            store.meta_put(f"key:{key_id(origin, key).hex()}", public_pem(key).decode())
        except BaseException:
            store.close()
            for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                f.unlink(missing_ok=True)
            raise
        return cls(path, origin, store, CompactRange(), KeyWalk(origin, key), lock, set())

    # --- reading ----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._cr.size

    def compact(self) -> CompactRange:
        return self._cr.copy()

    def leaf_hash(self, idx: int) -> bytes | None:
        row = self._store.entry(idx)
        return None if row is None else row[0]

    def checkpoint_note(self, size: int) -> str | None:
        return self._store.checkpoint_at(size)

    def has_checkpoint(self, size: int) -> bool:
        return size in self._checkpoints

    @property
    def checkpoint_count(self) -> int:
        return len(self._checkpoints)

    def root_at(self, size: int) -> bytes:
        """Root of the archived tree of `size` (<= self.size), from the stored leaf hashes."""
        cr = CompactRange()
        for idx, lh in self._store.iter_leaf_hashes():
            if idx >= size:
                break
            cr.append(bytes(lh))
        return cr.root()

    # --- writing ----------------------------------------------------------------------

    def append(
        self,
        rows: list[tuple[int, bytes, bytes]],
        size: int,
        note: str,
        rotations: list[Rotation],
    ) -> None:
        """Entries [self.size, size) and the checkpoint covering them, in one transaction.
        Precondition: the caller verified the note's signature and that these rows
        reproduce its root (`monitor.audit.archive.core`)."""
        meta = {f"{META_ROTATION}{r.index:012d}": vkey(self.origin, r.new_key) for r in rotations}
        meta.update(
            {f"key:{r.new_key_id.hex()}": public_pem(r.new_key).decode() for r in rotations}
        )
        self._store.append_with_checkpoint(rows, size, note, meta)
        self._cr.extend(lh for _, lh, _ in rows)
        self._checkpoints.add(size)
        self.last_append_unix = time.time()
        _write_atomic(sidecar_path(self.path), note.encode())

    def add_checkpoint(self, size: int, note: str) -> None:
        """A verified checkpoint of a size the copy already holds (it arrived late)."""
        self._store.add_checkpoint(size, note)
        self._checkpoints.add(size)
        if size == max(self._checkpoints):
            _write_atomic(sidecar_path(self.path), note.encode())

    def close(self) -> None:
        try:
            self._store.close()
        finally:
            self._lock.release()
