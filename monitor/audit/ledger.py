"""The append API of the audit ledger (single writer, group commit)."""

from __future__ import annotations

import contextlib
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
    vkey,
)
from monitor.audit.keychain import META_ROTATION, META_SIGNING_KEY, KeyChain, rotation_entry
from monitor.audit.lock import LedgerLock, LedgerLocked
from monitor.audit.merkle import CompactRange, Tree, leaf_hash
from monitor.audit.store import LedgerCorrupt, LedgerError, Store, as_bytes

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


class LedgerKeyMismatch(LedgerError):
    """A writer's signing key is not the key the ledger is bound to."""


def check_ledger_path(path: str | Path) -> Path:
    """The ledger path, if a ledger file can live there; LedgerError naming it otherwise.
    Creates nothing."""
    p = Path(path)
    if p.is_dir():
        raise LedgerError(
            f"ledger {p} is a directory; give a file path such as {p / 'audit.sqlite'}"
        )
    parent = p.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise LedgerError(f"ledger {p}: its directory {parent} {what}")
    return p


def _remove_new_files(path: Path) -> None:
    """Undo a ledger creation that failed before it was usable."""
    for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), sidecar_path(path)):
        with contextlib.suppress(OSError):
            f.unlink()


class Ledger:
    """Append-only, Merkle-hashed, checkpointed ledger in one SQLite file.

    One writer per file: `open` takes an exclusive lock (`monitor.audit.lock`) held
    until `close` or process exit. Within the process, methods are serialised by an
    internal lock (the AuditWriter thread appends; other threads may read).
    """

    def __init__(
        self,
        store: Store,
        signing_key: Ed25519PrivateKey | None,
        origin: str,
        compact: CompactRange,
        last_checkpoint: SignedCheckpoint | None,
        lock: LedgerLock,
        chain: KeyChain,
        baseline: tuple[int, CompactRange],
    ) -> None:
        self._store = store
        self._sk = signing_key
        self.origin = origin
        self._cr = compact
        self._last_cp = last_checkpoint
        self._file_lock = lock
        self._chain = chain
        self._baseline = baseline
        self._lock = threading.RLock()
        self._closed = False

    # --- opening --------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        signing_key: Ed25519PrivateKey | None,
        origin: str,
        *,
        holder: str | None = None,
    ) -> Ledger:
        """Open or create a ledger as its one writer.

        Raises `LedgerLocked` if another writer holds it (`holder` names this one in
        the other side's message, e.g. "monitor telesafe-1"); `LedgerKeyMismatch` if
        `signing_key` is not the ledger's key (see `monitor.audit.keychain`; a new or
        older unbound ledger is bound to it). Refuses a file that fails `PRAGMA
        integrity_check`, has index gaps, belongs to another origin, or whose stored
        leaf hashes do not reproduce its checkpoints (we must never sign on top of a
        damaged tree). A ledger file this call created is removed again on failure."""
        if not origin or any(c.isspace() for c in origin) or "+" in origin:
            raise ValueError(f"origin {origin!r} must be non-empty, without spaces or '+'")
        p = check_ledger_path(path)
        lock = LedgerLock.acquire(p, holder or f"ledger writer {origin}")
        fresh = not p.exists()
        try:
            return cls._open_locked(p, signing_key, origin, lock)
        except BaseException:
            if fresh:
                _remove_new_files(p)
            lock.release(unlink=fresh)
            raise

    @classmethod
    def _open_locked(
        cls, path: Path, signing_key: Ed25519PrivateKey | None, origin: str, lock: LedgerLock
    ) -> Ledger:
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
            chain = KeyChain.load(store, origin)
            if signing_key is not None:
                chain = _bind_key(path, store, chain, signing_key)

            checkpoints = store.checkpoints()
            cps = {s: n for s, n in checkpoints}
            side = sidecar_path(path)
            if side.exists():
                note = side.read_text(encoding="utf-8")
                cps.setdefault(parse_checkpoint_unverified(note).size, note)
            # Self-verification starts from the second-newest stored checkpoint, so its
            # first run covers the newest checkpointed range (see selfcheck.py).
            base_size = checkpoints[-2][0] if len(checkpoints) >= 2 else 0
            base = CompactRange()
            cr = CompactRange()
            expect = 0
            for idx, lh in store.iter_leaf_hashes():
                if idx != expect:
                    raise LedgerCorrupt(f"{path}: entry {expect} is missing (next is {idx})")
                if expect in cps:
                    _check_root(path, cps[expect], cr)
                if expect == base_size:
                    base = cr.copy()
                cr.append(bytes(lh))
                expect += 1
            if expect in cps:
                _check_root(path, cps[expect], cr)
            if expect == base_size:
                base = cr.copy()
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
        return cls(store, signing_key, origin, cr, last, lock, chain, (base_size, base))

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

    def rotate_key(
        self, new_key: Ed25519PrivateKey, *, actor: str, reason: str | None = None
    ) -> SignedCheckpoint:
        """Announce `new_key` in an entry and sign a checkpoint covering it with the key
        in force, in one transaction; later checkpoints are signed by `new_key`.

        Preconditions: the ledger was opened with the key in force; `new_key` has
        never signed this ledger."""
        with self._lock:
            self._check_open()
            if self._sk is None:
                raise LedgerError("cannot rotate: the ledger was opened without its signing key")
            old, new = self._sk.public_key(), new_key.public_key()
            new_id = key_id(self.origin, new)
            used = [old, *(k for _, k in self._chain.rotations)]
            if self._chain.original is not None:
                used.append(self._chain.original)
            if any(key_id(self.origin, k) == new_id for k in used):
                raise LedgerError(
                    f"key {new_id.hex()} has signed this ledger before; rotate to a new key"
                )
            idx = self._cr.size
            entry = rotation_entry(
                self.origin, old, new, actor=actor, t_utc_ns=time.time_ns(), reason=reason
            )
            entry[INDEX_KEY] = idx
            body = canonical_json(entry)
            lh = leaf_hash(body)
            cr = self._cr.copy()
            cr.append(lh)
            cp = Checkpoint(self.origin, cr.size, cr.root())
            scp = sign_checkpoint(cp, self._sk, time.time())
            meta = {
                f"{META_ROTATION}{idx:012d}": vkey(self.origin, new),
                f"key:{new_id.hex()}": public_pem(new).decode(),
            }
            self._store.append_with_checkpoint([(idx, lh, body)], cr.size, scp.note, meta)
            self._cr = cr
            self._last_cp = scp
            self._sk = new_key
            self._chain.rotations.append((idx, new))
            _write_atomic(sidecar_path(self._store.path), scp.note.encode())
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

    def key_for_size(self, size: int) -> Ed25519PublicKey | None:
        """The key that signs (signed) this ledger's checkpoint of `size`, from the
        writer's bookkeeping in meta; None for a ledger not bound to a key."""
        return self._chain.key_for(size)

    def verify_baseline(self) -> tuple[int, CompactRange]:
        """(size, compact range) at the second-newest checkpoint found at open, from
        the stored leaf hashes: where self-verification starts."""
        size, cr = self._baseline
        return size, cr.copy()

    def read_entries(self, lo: int, hi: int) -> list[tuple[int, bytes, bytes]]:
        """Stored rows (index, leaf hash, body) with lo <= index < hi, from the file."""
        with self._lock:
            self._check_open()
            rows = self._store.iter_entries(lo, hi)
            return [(int(i), as_bytes(h), as_bytes(b)) for i, h, b in rows]

    def stored_checkpoints_after(self, size: int) -> list[tuple[int, str]]:
        with self._lock:
            self._check_open()
            return self._store.checkpoints_after(size)

    def stored_checkpoint(self, size: int) -> str | None:
        with self._lock:
            self._check_open()
            return self._store.checkpoint_at(size)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self._store.close()
                finally:
                    self._file_lock.release()

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("ledger is closed")

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bind_key(
    path: Path, store: Store, chain: KeyChain, signing_key: Ed25519PrivateKey
) -> KeyChain:
    """Refuse a key other than the ledger's; bind a new (or older, unbound) ledger."""
    origin = chain.origin
    pub = signing_key.public_key()
    kid = key_id(origin, pub)
    want = chain.current_key_id()
    if want is not None and want != kid:
        whose = "is signed by" if chain.original is not None else "has its newest checkpoint by"
        raise LedgerKeyMismatch(
            f"ledger {path} {whose} key id {want.hex()}, but the signing key given has key "
            f"id {kid.hex()}; use the ledger's key, or change it with "
            f"`telesafe audit rotate-key`"
        )
    if chain.original is None:
        store.meta_put(META_SIGNING_KEY, vkey(origin, pub))
        chain = KeyChain(origin, pub, [], chain.newest_signer)
    store.meta_put(f"key:{kid.hex()}", public_pem(pub).decode())
    return chain


def _check_root(path: str | Path, note: str, cr: CompactRange) -> None:
    try:
        cp = parse_checkpoint_unverified(note)
    except CheckpointError as exc:
        raise LedgerCorrupt(f"{path}: malformed checkpoint at size {cr.size}: {exc}") from exc
    if cp.root != cr.root():
        raise LedgerCorrupt(
            f"{path}: stored leaf hashes do not reproduce the checkpoint root at size {cp.size}"
        )


__all__ = [
    "Ledger",
    "LedgerCorrupt",
    "LedgerError",
    "LedgerKeyMismatch",
    "LedgerLocked",
    "check_ledger_path",
    "raw_public",
    "sidecar_path",
]
