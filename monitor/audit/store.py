"""SQLite storage for the ledger: WAL, synchronous=FULL, append-only by trigger.

Triggers are a guard against accidents and casual edits, not against an attacker with
file access (who can drop them); the Merkle tree and signed checkpoints are what make
tampering detectable.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from monitor.errors import AuditLayerError

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries(
    idx INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints(
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta(
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'audit ledger: entries are append-only (UPDATE refused)'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'audit ledger: entries are append-only (DELETE refused)'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'audit ledger: checkpoints are append-only (UPDATE refused)'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'audit ledger: checkpoints are append-only (DELETE refused)'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_update BEFORE UPDATE ON meta
BEGIN SELECT RAISE(ABORT, 'audit ledger: meta is append-only (UPDATE refused)'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_delete BEFORE DELETE ON meta
BEGIN SELECT RAISE(ABORT, 'audit ledger: meta is append-only (DELETE refused)'); END;
"""

TRIGGERS = (
    "entries_no_update",
    "entries_no_delete",
    "checkpoints_no_update",
    "checkpoints_no_delete",
)


def as_bytes(v: object) -> bytes:
    """A stored BLOB as bytes. An edited row may come back as TEXT (e.g. after SQL
    replace()); verification hashes what is there instead of failing to read it."""
    if isinstance(v, bytes):
        return v
    return str(v).encode("utf-8", "surrogatepass")


class LedgerError(AuditLayerError):
    """The ledger cannot be opened or written."""


class LedgerCorrupt(LedgerError):
    """The ledger file failed an integrity check."""


class Store:
    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise LedgerError(f"{self.path}: no such ledger")
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so one batch is
            # exactly one transaction. check_same_thread=False: opened by the caller,
            # then used by the writer thread only (the Ledger serialises access).
            self.conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            self.conn.execute("PRAGMA busy_timeout=5000")
            if not readonly:
                mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise LedgerError(f"{self.path}: cannot enable WAL (got {mode})")
                # FULL: every commit is fsynced, so an acknowledged append survives power loss.
                self.conn.execute("PRAGMA synchronous=FULL")
            else:
                self.conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: cannot open: {exc}") from exc

    def init_schema(self) -> None:
        self.conn.executescript(SCHEMA)

    def integrity_check(self) -> None:
        try:
            rows = self.conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise LedgerCorrupt(f"{self.path}: not a readable SQLite ledger: {exc}") from exc
        if [r[0] for r in rows] != ["ok"]:
            raise LedgerCorrupt(f"{self.path}: integrity_check failed: {rows[:5]}")

    def has_table(self, name: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)
        ).fetchone()
        return row is not None

    def missing_triggers(self) -> list[str]:
        have = {
            r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
        }
        return [t for t in TRIGGERS if t not in have]

    def meta_get(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta_items(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def meta_put(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def append(self, rows: list[tuple[int, bytes, bytes]]) -> None:
        """Insert rows in one transaction; returns only after the commit (fsync)."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT INTO entries(idx, leaf_hash, body) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def append_with_checkpoint(
        self, rows: list[tuple[int, bytes, bytes]], size: int, note: str, meta: dict[str, str]
    ) -> None:
        """Entries, the checkpoint covering them and meta rows in ONE transaction (key
        rotation: a crash must not leave an announcement without its signed checkpoint)."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT INTO entries(idx, leaf_hash, body) VALUES (?, ?, ?)", rows)
            conn.execute("INSERT INTO checkpoints(size, note) VALUES (?, ?)", (size, note))
            conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", list(meta.items()))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def add_checkpoint(self, size: int, note: str) -> None:
        self.conn.execute("INSERT INTO checkpoints(size, note) VALUES (?, ?)", (size, note))

    def checkpoints_after(self, size: int) -> list[tuple[int, str]]:
        return [
            (int(s), str(n))
            for s, n in self.conn.execute(
                "SELECT size, note FROM checkpoints WHERE size > ? ORDER BY size", (size,)
            )
        ]

    def checkpoint_at(self, size: int) -> str | None:
        row = self.conn.execute("SELECT note FROM checkpoints WHERE size=?", (size,)).fetchone()
        return None if row is None else str(row[0])

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    def iter_entries(
        self, lo: int = 0, hi: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes]]:
        if hi is None:
            cur = self.conn.execute(
                "SELECT idx, leaf_hash, body FROM entries WHERE idx >= ? ORDER BY idx", (lo,)
            )
        else:
            cur = self.conn.execute(
                "SELECT idx, leaf_hash, body FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (lo, hi),
            )
        cur.arraysize = 4096
        while True:
            rows = cur.fetchmany()
            if not rows:
                return
            yield from rows

    def iter_leaf_hashes(self) -> Iterator[tuple[int, bytes]]:
        cur = self.conn.execute("SELECT idx, leaf_hash FROM entries ORDER BY idx")
        cur.arraysize = 8192
        while True:
            rows = cur.fetchmany()
            if not rows:
                return
            yield from rows

    def entry(self, idx: int) -> tuple[bytes, bytes] | None:
        row = self.conn.execute(
            "SELECT leaf_hash, body FROM entries WHERE idx=?", (idx,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def checkpoints(self) -> list[tuple[int, str]]:
        return [
            (int(s), str(n))
            for s, n in self.conn.execute("SELECT size, note FROM checkpoints ORDER BY size")
        ]

    def close(self) -> None:
        self.conn.close()
