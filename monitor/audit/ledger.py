"""The append API of the audit ledger (single writer, group commit)."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from monitor.audit.canonical import canonical_json
from monitor.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    SignedCheckpoint,
    key_id,
    parse_checkpoint_unverified,
    public_pem,
    raw_public,
    sign_checkpoint,
)
from monitor.audit.merkle import CompactRange, Tree, leaf_hash
from monitor.audit.store import LedgerCorrupt, LedgerError, Store

log = logging.getLogger(__name__)

INDEX_KEY = "index"


def sidecar_path(path: str | Path) -> Path:
    """Latest signed checkpoint, kept outside the database: rolling the SQLite file back
    to an older state then contradicts it (a cheap local witness)."""
    return Path(str(path) + ".checkpoint")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Ledger:
    """Append-only, Merkle-hashed, checkpointed ledger in one SQLite file.

    Not meant for concurrent writers: one process, one Ledger, normally driven by an
    AuditWriter thread. Methods are serialised by an internal lock.
    """

    def __init__(
        self,
        store: Store,
        signing_key: Ed25519PrivateKey | None,
        origin: str,
        compact: CompactRange,
        last_checkpoint: SignedCheckpoint | None,
    ) -> None:
        self._store = store
        self._sk = signing_key
        self.origin = origin
        self._cr = compact
        self._last_cp = last_checkpoint
        self._lock = threading.RLock()
        self._closed = False

    # --- opening --------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, signing_key: Ed25519PrivateKey | None, origin: str) -> Ledger:
        """Open or create a ledger. Refuses a file that fails `PRAGMA integrity_check`,
        has index gaps, belongs to another origin, or whose stored leaf hashes do not
        reproduce its latest checkpoint (we must never sign on top of a damaged tree)."""
        if not origin or any(c.isspace() for c in origin) or "+" in origin:
            raise ValueError(f"origin {origin!r} must be non-empty, without spaces or '+'")
        store = Store(path)
        try:
            store.integrity_check()
            store.init_schema()
            stored_origin = store.meta_get("origin")
            if stored_origin is None:
                store.meta_put("origin", origin)
                store.meta_put("created_unix", str(int(time.time())))
            elif stored_origin != origin:
                raise LedgerError(
                    f"{path}: ledger belongs to origin {stored_origin!r}, not {origin!r}"
                )
            if signing_key is not None:
                pub = signing_key.public_key()
                store.meta_put(f"key:{key_id(origin, pub).hex()}", public_pem(pub).decode())

            checkpoints = store.checkpoints()
            cps = {s: n for s, n in checkpoints}
            side = sidecar_path(path)
            if side.exists():
                note = side.read_text(encoding="utf-8")
                cps.setdefault(parse_checkpoint_unverified(note).size, note)
            cr = CompactRange()
            expect = 0
            for idx, lh in store.iter_leaf_hashes():
                if idx != expect:
                    raise LedgerCorrupt(f"{path}: entry {expect} is missing (next is {idx})")
                if expect in cps:
                    _check_root(path, cps[expect], cr)
                cr.append(bytes(lh))
                expect += 1
            if expect in cps:
                _check_root(path, cps[expect], cr)
            too_big = [s for s in cps if s > cr.size]
            if too_big:
                raise LedgerCorrupt(
                    f"{path}: entry {cr.size}: checkpoint at size {max(too_big)} but the "
                    f"ledger holds only {cr.size} entries (truncated or rolled back)"
                )
            last: SignedCheckpoint | None = None
            if checkpoints:
                note = checkpoints[-1][1]
                cp = parse_checkpoint_unverified(note)
                last = SignedCheckpoint(cp.origin, cp.size, cp.root, b"", note)
        except BaseException:
            store.close()
            raise
        return cls(store, signing_key, origin, cr, last)

    # --- writing --------------------------------------------------------------------

    def append_entries(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append in one transaction; return copies of the entries with `index` set.
        Durable (committed and fsynced) when it returns. All or nothing."""
        with self._lock:
            self._check_open()
            base = self._cr.size
            rows: list[tuple[int, bytes, bytes]] = []
            out: list[dict[str, Any]] = []
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    raise TypeError(f"entry {i} is {type(entry).__name__}, not dict")
                idx = base + i
                if INDEX_KEY in entry and entry[INDEX_KEY] != idx:
                    raise ValueError(
                        f"entry {i} carries index {entry[INDEX_KEY]!r}; the ledger assigns it"
                    )
                d = dict(entry)
                d[INDEX_KEY] = idx
                body = canonical_json(d)
                rows.append((idx, leaf_hash(body), body))
                out.append(d)
            if not rows:
                return out
            self._store.append(rows)
            # Only after the commit: a failed transaction leaves the in-memory tree as is.
            for _, lh, _ in rows:
                self._cr.append(lh)
            return out

    def append_many(self, entries: list[dict[str, Any]]) -> list[int]:
        return [int(e[INDEX_KEY]) for e in self.append_entries(entries)]

    def checkpoint(self) -> SignedCheckpoint | None:
        """Sign and store the current (size, root) if the tree grew since the last
        checkpoint. None without a signing key or when there is nothing new."""
        with self._lock:
            self._check_open()
            if self._sk is None:
                return None
            size = self._cr.size
            if size == 0 or (self._last_cp is not None and self._last_cp.size >= size):
                return None
            cp = Checkpoint(self.origin, size, self._cr.root())
            scp = sign_checkpoint(cp, self._sk, time.time())
            self._store.add_checkpoint(size, scp.note)
            _write_atomic(sidecar_path(self._store.path), scp.note.encode())
            self._last_cp = scp
            return scp

    # --- reading --------------------------------------------------------------------

    def size(self) -> int:
        return self._cr.size

    def root(self) -> bytes:
        with self._lock:
            return self._cr.root()

    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def public_key(self) -> Ed25519PublicKey | None:
        return None if self._sk is None else self._sk.public_key()

    def last_checkpoint(self) -> SignedCheckpoint | None:
        return self._last_cp

    def checkpoints(self) -> list[tuple[int, str]]:
        with self._lock:
            return self._store.checkpoints()

    def entry_bytes(self, idx: int) -> bytes:
        with self._lock:
            row = self._store.entry(idx)
        if row is None:
            raise IndexError(f"no entry {idx} (size {self.size()})")
        return row[1]

    def tree(self) -> Tree:
        """All subtree hashes from the stored leaf hashes, for proofs (O(n) once)."""
        with self._lock:
            return Tree.build([bytes(lh) for _, lh in self._store.iter_leaf_hashes()])

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._store.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("ledger is closed")

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_root(path: str | Path, note: str, cr: CompactRange) -> None:
    try:
        cp = parse_checkpoint_unverified(note)
    except CheckpointError as exc:
        raise LedgerCorrupt(f"{path}: malformed checkpoint at size {cr.size}: {exc}") from exc
    if cp.root != cr.root():
        raise LedgerCorrupt(
            f"{path}: stored leaf hashes do not reproduce the checkpoint root at size {cp.size}"
        )


__all__ = ["Ledger", "LedgerCorrupt", "LedgerError", "raw_public", "sidecar_path"]
