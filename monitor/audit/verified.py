"""Ledger trust for readers: the entries of a ledger exactly as its signature covers them.

`load_verified` runs the full ledger verification (`monitor.audit.verify.verify`) and
refuses a ledger that fails it. It then reads the entries covered by the latest verified
checkpoint and recomputes their Merkle root, so the bytes a reader (the post-operative
report, for one) is built from are exactly the bytes the signature covers: an append or an
edit after verification cannot slip in. Entries after the latest checkpoint are not signed
yet and are left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from monitor.audit.checkpoint import key_id
from monitor.audit.merkle import leaf_hash, root_of
from monitor.audit.store import LedgerError
from monitor.audit.verify import VerifyResult, open_source, verify
from monitor.errors import EXIT_FAILED


class LedgerRefused(LedgerError):
    """The ledger failed verification (or holds nothing signed): nothing may be read from
    it as evidence."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit entry (see `monitor.service.audit_sink.EntryFactory`)."""

    index: int
    event: str
    procedure_id: str | None
    actor: str
    monitor_id: str
    boot_id: str
    t_utc_ns: int
    data: dict[str, Any]
    # The input record it was derived from ("topic:partition:offset") and its place among
    # that record's entries: the same input audited by two instances (a takeover re-reads
    # what the previous owner had not committed) is one event (issue 12, exactly-once).
    source: str | None = None
    source_n: int | None = None

    @classmethod
    def from_body(cls, obj: dict[str, Any]) -> Entry:
        data = obj.get("data")
        pid = obj.get("procedure_id")
        t = obj.get("t_utc_ns")
        src, n = obj.get("source"), obj.get("source_n")
        return cls(
            index=int(obj["index"]),
            event=str(obj.get("event") or obj.get("type") or "?"),
            procedure_id=pid if isinstance(pid, str) else None,
            actor=str(obj.get("actor") or ""),
            monitor_id=str(obj.get("monitor_id") or ""),
            boot_id=str(obj.get("boot_id") or ""),
            t_utc_ns=t if isinstance(t, int) and not isinstance(t, bool) else 0,
            data=data if isinstance(data, dict) else {},
            source=src if isinstance(src, str) else None,
            source_n=n if isinstance(n, int) and not isinstance(n, bool) else None,
        )


@dataclass
class VerifiedLedger:
    path: Path
    origin: str
    key_id_hex: str
    public_key: Ed25519PublicKey
    result: VerifyResult
    checkpoints: list[tuple[int, str]]
    entries: list[Entry]  # exactly the entries [0, size) of the latest verified checkpoint
    total_entries: int

    @property
    def covered(self) -> int:
        return len(self.entries)

    @property
    def uncovered(self) -> int:
        return self.total_entries - self.covered


def load_verified(path: str | Path, public_key: Ed25519PublicKey) -> VerifiedLedger:
    """Verify the ledger (or export bundle) at `path` with the trusted `public_key` and
    return its signed entries.

    Raises `LedgerRefused` if verification fails (naming the first bad entry), if nothing
    is signed yet, or if the entries changed between verification and reading; raises
    `LedgerError` if `path` is missing or unreadable."""
    p = Path(path)
    if not p.exists():
        raise LedgerError(f"{p}: no such ledger file or bundle directory")
    res = verify(p, public_key)
    if not res.ok:
        first = res.first_problem
        more = len(res.problems) - 1
        also = f" (and {more} more problem(s); run `telesafe audit verify`)" if more else ""
        raise LedgerRefused(f"ledger verification FAILED: {first}{also}")
    latest = res.latest
    if latest is None:  # an empty ledger verifies, but there is nothing signed to report on
        raise LedgerRefused(f"{p} holds no signed checkpoint")
    origin = res.origin or latest.origin
    src = open_source(p)  # LedgerError if unreadable
    bodies: list[bytes] = []
    total = 0
    try:
        cps = list(src.checkpoints)
        for idx, _stored, body in src.entries:
            total = idx + 1
            if idx < latest.size:
                bodies.append(body)
    finally:
        src.close()
    # The bytes used below must be the bytes the verified signature covers.
    if len(bodies) != latest.size or root_of([leaf_hash(b) for b in bodies]) != latest.root:
        raise LedgerRefused(
            f"entries [0, {latest.size}) changed after verification "
            f"(their root no longer matches the signed checkpoint at size {latest.size})"
        )
    entries = [Entry.from_body(json.loads(b)) for b in bodies]
    return VerifiedLedger(
        path=p,
        origin=origin,
        key_id_hex=key_id(origin, public_key).hex(),
        public_key=public_key,
        result=res,
        checkpoints=cps,
        entries=entries,
        total_entries=max(total, res.entries),
    )
