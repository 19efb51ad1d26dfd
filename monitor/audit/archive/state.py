"""The archive's working state, `<dir>/archive.sqlite` (WAL, synchronous=FULL).

* `staged`: ledger entries received but not yet covered by a verified checkpoint, per
  origin and index; every distinct body received for an index is kept (a forged entry
  sent first cannot shut out the genuine one), in arrival order.
* `pending`: signed checkpoints that cannot be applied yet (an entry they cover has not
  arrived, or their origin is not trusted yet).
* `refused`: every record that did not verify, with the reason and the record itself.
* `positions`: the next offset to read per partition of the audit topic, written in the
  same transaction as what was read, so a restart resumes exactly there (re-reading is
  harmless anyway: the archive is idempotent).
* `counts`: records that are not ledger records (e.g. `"ledgered": false` entries).

Nothing in it is evidence on its own: the copies are. It only ever loses rows that a
verified copy now holds, or that are kept in `refused`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from monitor.audit.store import LedgerError

SCHEMA = """
CREATE TABLE IF NOT EXISTS staged(
    origin TEXT NOT NULL, idx INTEGER NOT NULL, leaf_hash BLOB NOT NULL, body BLOB NOT NULL,
    seen TEXT NOT NULL, PRIMARY KEY(origin, idx, leaf_hash));
CREATE TABLE IF NOT EXISTS pending(
    origin TEXT NOT NULL, size INTEGER NOT NULL, note TEXT NOT NULL, seen TEXT NOT NULL,
    since_unix REAL NOT NULL, PRIMARY KEY(origin, size, note));
CREATE TABLE IF NOT EXISTS refused(
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_unix REAL NOT NULL, origin TEXT,
    reason TEXT NOT NULL, detail TEXT NOT NULL, seen TEXT NOT NULL, record BLOB);
CREATE TABLE IF NOT EXISTS positions(
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY(topic, partition));
CREATE TABLE IF NOT EXISTS counts(kind TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Refusal:
    origin: str | None
    reason: str
    detail: str
    seen: str
    at_unix: float


class ArchiveState:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout=5000")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise LedgerError(f"archive state {path}: cannot open: {exc}") from exc

    # --- transactions -----------------------------------------------------------------

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # --- staged entries ---------------------------------------------------------------

    def stage(self, origin: str, idx: int, lh: bytes, body: bytes, seen: str) -> tuple[bool, int]:
        """(new, distinct bodies now staged for this index)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO staged(origin, idx, leaf_hash, body, seen) VALUES (?,?,?,?,?)",
            (origin, idx, lh, body, seen),
        )
        n = self.conn.execute(
            "SELECT count(*) FROM staged WHERE origin=? AND idx=?", (origin, idx)
        ).fetchone()[0]
        return cur.rowcount == 1, int(n)

    def staged_range(self, origin: str, lo: int, hi: int) -> dict[int, list[tuple[bytes, bytes]]]:
        """index -> [(leaf hash, body), ...] in arrival order, for lo <= index < hi."""
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        for idx, lh, body in self.conn.execute(
            "SELECT idx, leaf_hash, body FROM staged WHERE origin=? AND idx>=? AND idx<? "
            "ORDER BY idx, rowid",
            (origin, lo, hi),
        ):
            out.setdefault(int(idx), []).append((bytes(lh), bytes(body)))
        return out

    def drop_staged(
        self, origin: str, below: int, keep: Iterable[tuple[int, bytes]] = ()
    ) -> list[tuple[int, bytes, str]]:
        """Remove staged entries of `origin` below `below` (now in its copy); returns the
        ones that are not in `keep` ((index, leaf hash) applied), for the refusal log."""
        applied = set(keep)
        losers = [
            (int(i), bytes(b), str(s))
            for i, lh, b, s in self.conn.execute(
                "SELECT idx, leaf_hash, body, seen FROM staged WHERE origin=? AND idx<?",
                (origin, below),
            )
            if (int(i), bytes(lh)) not in applied
        ]
        self.conn.execute("DELETE FROM staged WHERE origin=? AND idx<?", (origin, below))
        return losers

    def staged_counts(self) -> dict[str, int]:
        return {
            str(o): int(n)
            for o, n in self.conn.execute("SELECT origin, count(*) FROM staged GROUP BY origin")
        }

    # --- pending checkpoints ----------------------------------------------------------

    def add_pending(self, origin: str, size: int, note: str, seen: str) -> bool:
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO pending(origin, size, note, seen, since_unix) "
            "VALUES (?,?,?,?,?)",
            (origin, size, note, seen, time.time()),
        )
        return cur.rowcount == 1

    def pending(self, origin: str) -> list[tuple[int, str, str, float]]:
        """(size, note, seen, since) of `origin`, smallest size first."""
        return [
            (int(s), str(n), str(w), float(t))
            for s, n, w, t in self.conn.execute(
                "SELECT size, note, seen, since_unix FROM pending WHERE origin=? "
                "ORDER BY size, rowid",
                (origin,),
            )
        ]

    def drop_pending(self, origin: str, size: int, note: str) -> None:
        self.conn.execute(
            "DELETE FROM pending WHERE origin=? AND size=? AND note=?", (origin, size, note)
        )

    def pending_summary(self) -> dict[str, tuple[int, float]]:
        """origin -> (pending checkpoints, oldest since)."""
        return {
            str(o): (int(n), float(t))
            for o, n, t in self.conn.execute(
                "SELECT origin, count(*), min(since_unix) FROM pending GROUP BY origin"
            )
        }

    def origins(self) -> set[str]:
        rows = self.conn.execute("SELECT origin FROM staged UNION SELECT origin FROM pending")
        return {str(o) for (o,) in rows}

    # --- refusals, counts, positions --------------------------------------------------

    def refuse(
        self, origin: str | None, reason: str, detail: str, seen: str, record: bytes | None
    ) -> Refusal:
        now = time.time()
        self.conn.execute(
            "INSERT INTO refused(at_unix, origin, reason, detail, seen, record) "
            "VALUES (?,?,?,?,?,?)",
            (now, origin, reason, detail, seen, record),
        )
        return Refusal(origin, reason, detail, seen, now)

    def refusals(self, limit: int = 100) -> list[Refusal]:
        return [
            Refusal(o, str(r), str(d), str(s), float(t))
            for o, r, d, s, t in self.conn.execute(
                "SELECT origin, reason, detail, seen, at_unix FROM refused ORDER BY id DESC "
                "LIMIT ?",
                (limit,),
            )
        ]

    def refusal_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM refused").fetchone()[0])

    def count(self, kind: str, n: int = 1) -> None:
        self.conn.execute(
            "INSERT INTO counts(kind, n) VALUES (?, ?) ON CONFLICT(kind) DO UPDATE SET n=n+?",
            (kind, n, n),
        )

    def counts(self) -> dict[str, int]:
        return {str(k): int(n) for k, n in self.conn.execute("SELECT kind, n FROM counts")}

    def positions(self, topic: str) -> dict[int, int]:
        return {
            int(p): int(o)
            for p, o in self.conn.execute(
                "SELECT partition, next_offset FROM positions WHERE topic=?", (topic,)
            )
        }

    def set_position(self, topic: str, partition: int, next_offset: int) -> None:
        self.conn.execute(
            "INSERT INTO positions(topic, partition, next_offset) VALUES (?,?,?) "
            "ON CONFLICT(topic, partition) DO UPDATE SET next_offset=excluded.next_offset",
            (topic, partition, next_offset),
        )

    def close(self) -> None:
        self.conn.close()
