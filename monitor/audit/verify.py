"""Offline verification of a ledger file or an exported bundle.

Checks, in order: SQLite integrity (for a ledger file); every checkpoint signature
against the given public key and the ledger's origin; every entry (contiguous
indices, stored leaf hash == SHA-256(0x00 || body), body is a JSON object whose
`index` is its position); the recomputed root at every checkpoint size; an RFC 9162
consistency proof between successive checkpoints; and any trusted checkpoints the
auditor holds (or the ledger's sidecar), which is what exposes a rollback.
Problems are reported as "entry N: reason" with N the first entry the problem makes
untrustworthy; the first problem by N is the headline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from monitor.audit.checkpoint import (
    CheckpointError,
    SignedCheckpoint,
    key_id,
    parse_checkpoint_unverified,
    signers,
    verify_checkpoint,
)
from monitor.audit.keychain import ROTATION_EVENT, KeyWalk, key_in_force, parse_rotation
from monitor.audit.ledger import sidecar_path
from monitor.audit.merkle import ProofError, Tree, leaf_hash, verify_consistency
from monitor.audit.store import LedgerCorrupt, LedgerError, Store, as_bytes

BUNDLE_FORMAT = "telesafe-audit-bundle/v1"


@dataclass
class Problem:
    index: int
    message: str

    def __str__(self) -> str:
        return f"entry {self.index}: {self.message}"


@dataclass
class VerifyResult:
    entries: int = 0
    checkpoints: int = 0
    origin: str | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    latest: SignedCheckpoint | None = None
    # (size, key): the key that signs checkpoints above `size`, until the next span; more
    # than one span when the ledger's key was rotated (keychain.py).
    key_spans: list[tuple[int, Ed25519PublicKey]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> Problem | None:
        return min(self.problems, key=lambda p: p.index) if self.problems else None

    def add(self, index: int, message: str) -> None:
        self.problems.append(Problem(index, message))

    def key_for(self, size: int) -> Ed25519PublicKey:
        """The key that signed the checkpoint of `size`, following verified rotations.
        Precondition: verification ran (the trusted key is the first span)."""
        return key_in_force(self.key_spans, size)

    def key_history(self, origin: str) -> list[str]:
        """'<key id> above size N' for each key after the first (empty: never rotated)."""
        return [f"{key_id(origin, k).hex()} above size {s}" for s, k in self.key_spans[1:]]


@dataclass
class Source:
    """What verification needs, from a ledger file or a bundle directory."""

    kind: str
    origin: str | None
    checkpoints: list[tuple[int, str]]
    trusted: list[tuple[str, str]]  # (where it came from, note)
    entries: Iterator[tuple[int, bytes | None, bytes]]
    store: Store | None = None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _bundle_entries(path: Path) -> Iterator[tuple[int, bytes | None, bytes]]:
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            yield i, None, line[:-1] if line.endswith(b"\n") else line


def open_source(path: str | Path) -> Source:
    """A ledger SQLite file or an export directory (see export.py)."""
    p = Path(path)
    if p.is_dir():
        manifest_path = p / "manifest.json"
        if not manifest_path.exists() or not (p / "entries.jsonl").exists():
            raise LedgerError(f"{p}: not an audit bundle (manifest.json / entries.jsonl missing)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LedgerError(f"{p}: unreadable manifest.json: {exc}") from exc
        if manifest.get("format") != BUNDLE_FORMAT:
            raise LedgerError(f"{p}: unknown bundle format {manifest.get('format')!r}")
        cps: list[tuple[int, str]] = []
        for f in sorted((p / "checkpoints").glob("*.note")):
            cps.append((int(f.stem), f.read_text(encoding="utf-8")))
        entries = _bundle_entries(p / "entries.jsonl")
        return Source("bundle", manifest.get("origin"), cps, [], entries)
    if not p.exists():
        raise LedgerError(f"{p}: no such ledger file or bundle directory")
    store = Store(p, readonly=True)
    try:
        store.integrity_check()
        if not store.has_table("entries") or not store.has_table("checkpoints"):
            raise LedgerCorrupt(f"{p}: not an audit ledger (tables missing)")
        trusted: list[tuple[str, str]] = []
        side = sidecar_path(p)
        if side.exists():
            trusted.append((str(side), side.read_text(encoding="utf-8")))
        origin = store.meta_get("origin") if store.has_table("meta") else None
        entries = ((i, as_bytes(lh), as_bytes(b)) for i, lh, b in store.iter_entries())
        return Source("sqlite", origin, store.checkpoints(), trusted, entries, store)
    except BaseException:
        store.close()
        raise


def verify(
    path: str | Path,
    public_key: Ed25519PublicKey,
    *,
    trusted_notes: Sequence[tuple[str, str]] = (),
    origin: str | None = None,
    use_sidecar: bool = True,
) -> VerifyResult:
    t0 = time.perf_counter()
    res = VerifyResult()
    try:
        src = open_source(path)
    except LedgerError as exc:
        res.add(0, str(exc))
        return res
    try:
        _verify_source(src, public_key, trusted_notes, origin, use_sidecar, res)
    finally:
        src.close()
    res.elapsed_s = time.perf_counter() - t0
    return res


def _verify_source(
    src: Source,
    pub: Ed25519PublicKey,
    trusted_notes: Sequence[tuple[str, str]],
    origin: str | None,
    use_sidecar: bool,
    res: VerifyResult,
) -> None:
    if origin is not None and src.origin is not None and origin != src.origin:
        res.add(0, f"ledger origin is {src.origin!r}, expected {origin!r}")
    want_origin = origin or src.origin
    res.origin = want_origin
    if src.store is not None and (missing := src.store.missing_triggers()):
        res.warnings.append(f"append-only triggers missing: {', '.join(missing)}")
    key_origin = want_origin or _note_origin(src.checkpoints)
    walk = KeyWalk(key_origin or "", pub)
    announced: dict[bytes, int] = {}

    # 1. Entries: recompute each leaf hash from the stored bytes; collect key rotations.
    hashes: list[bytes] = []
    append = hashes.append
    # raw_decode on str skips json.loads' encoding sniffing (~30% of the verify time).
    raw_decode = json.JSONDecoder().raw_decode
    expect = 0
    for idx, stored, body in src.entries:
        if idx != expect:
            res.add(expect, f"missing: the ledger jumps from entry {expect - 1} to {idx}")
            expect = idx
        lh = leaf_hash(body)
        if stored is not None and stored != lh:
            res.add(idx, "body does not match its stored leaf hash (entry altered)")
        try:
            text = body.decode("utf-8")
            obj, end = raw_decode(text)
            if end != len(text):
                raise ValueError("trailing data")
        except ValueError:
            res.add(idx, "body is not valid JSON")
        else:
            if not isinstance(obj, dict):
                res.add(idx, "body is not a JSON object")
            elif obj.get("index") != idx:
                res.add(idx, f"body carries index {obj.get('index')!r} (entries moved or swapped)")
            elif obj.get("event") == ROTATION_EVENT:
                try:
                    rot = parse_rotation(obj, key_origin or "", idx)
                except ValueError as exc:
                    res.add(idx, str(exc))
                else:
                    if rot is not None:
                        walk.announce(rot)
                        announced.setdefault(rot.new_key_id, idx)
        append(lh)
        expect += 1
    tree = Tree.build(hashes)
    n = tree.size
    res.entries = n
    res.checkpoints = len(src.checkpoints)
    entry_bad = sorted(p.index for p in res.problems)

    def blame(lo: int, hi: int) -> int:
        """A root mismatch over [lo, hi) is best explained by the first entry already
        found bad in that range; otherwise all we know is that it starts at lo."""
        return next((i for i in entry_bad if lo <= i < hi), lo)

    matched = [0]  # sizes whose root matched a signed checkpoint

    # 2. Checkpoints in size order: the signature by the key in force (the trusted key,
    #    then each key a verified checkpoint announced), the root recomputed from the
    #    bodies, RFC 9162 consistency with the previous one. A checkpoint whose
    #    signature fails is blamed on the first entry it was supposed to cover.
    prev: SignedCheckpoint | None = None
    signed_to = 0  # size of the last checkpoint whose signature verified
    any_signed = False
    for size, note in src.checkpoints:
        try:
            scp = verify_checkpoint(note, walk.key, want_origin)
        except CheckpointError as exc:
            why = _unannounced(note, key_origin, walk, announced)
            res.add(signed_to, f"checkpoint at size {size}: {exc}{why}")
            continue
        any_signed = True
        lo = prev.size if prev else 0
        signed_to = max(signed_to, scp.size)
        if scp.size != size:
            res.add(lo, f"checkpoint stored as size {size} says size {scp.size}")
            continue
        if scp.size > n:
            res.add(
                n,
                f"ledger truncated: checkpoint at size {scp.size} is signed but only {n} "
                f"entries are present",
            )
            continue
        if tree.root(scp.size) != scp.root:
            res.add(
                blame(lo, scp.size),
                f"root of entries [0, {scp.size}) does not match the signed checkpoint at "
                f"size {scp.size}: an entry in [{lo}, {scp.size}) was altered, removed, "
                f"inserted or reordered",
            )
            continue
        if prev is not None:
            try:
                verify_consistency(
                    prev.size,
                    scp.size,
                    prev.root,
                    scp.root,
                    tree.consistency_proof(prev.size, scp.size),
                )
            except ProofError as exc:
                res.add(lo, f"checkpoint {scp.size} is inconsistent with {prev.size}: {exc}")
                continue
        prev = scp
        matched.append(scp.size)
        for idx, message in walk.covered(scp.size):
            res.add(idx, message)
    res.latest = prev
    res.key_spans = list(walk.spans)
    if n and not any_signed:
        res.add(0, "no valid signed checkpoint covers any entry")
    elif prev is not None and prev.size < n:
        res.warnings.append(
            f"entries [{prev.size}, {n}) are not yet covered by a signed checkpoint"
        )
    for rot in walk.pending:
        res.warnings.append(
            f"entry {rot.index} announces key {rot.new_key_id.hex()}, but no signed "
            f"checkpoint covers the announcement yet (not in force)"
        )

    # 3. Checkpoints held outside the ledger (auditor's copies, the sidecar): the ledger
    #    must still contain them. This is what catches a rollback.
    extra = list(trusted_notes) + (src.trusted if use_sidecar else [])
    for label, note in extra:
        try:
            claimed = parse_checkpoint_unverified(note).size
            scp = verify_checkpoint(note, walk.key_for(claimed), want_origin)
        except CheckpointError as exc:
            res.add(n, f"trusted checkpoint {label}: {exc}")
            continue
        if scp.size > n:
            res.add(
                n,
                f"ledger rolled back or truncated: trusted checkpoint {label} has size "
                f"{scp.size} but the ledger holds only {n} entries",
            )
        elif tree.root(scp.size) != scp.root:
            lo = max(s for s in matched if s <= scp.size)
            res.add(
                blame(lo, scp.size),
                f"fork: trusted checkpoint {label} at size {scp.size} has a different root "
                f"from this ledger",
            )
        elif prev is not None and scp.size <= prev.size:
            # The auditor's path: old checkpoint + proof -> latest checkpoint.
            try:
                verify_consistency(
                    scp.size,
                    prev.size,
                    scp.root,
                    prev.root,
                    tree.consistency_proof(scp.size, prev.size),
                )
            except ProofError as exc:
                res.add(scp.size, f"trusted checkpoint {label} inconsistent: {exc}")


def _note_origin(checkpoints: list[tuple[int, str]]) -> str | None:
    for _, note in checkpoints:
        try:
            return parse_checkpoint_unverified(note).origin
        except CheckpointError:
            continue
    return None


def _unannounced(note: str, origin: str | None, walk: KeyWalk, announced: dict[bytes, int]) -> str:
    """Why a checkpoint's signer is not the key in force, when the ledger says more."""
    cur = key_id(origin or "", walk.key)
    others = [kid for name, kid in signers(note) if name == origin and kid != cur]
    if not others:
        return ""
    kid = others[0]
    if kid in announced:
        return (
            f"; key {kid.hex()} is announced at entry {announced[kid]}, but no checkpoint "
            f"signed by the key in force ({cur.hex()}) covers that announcement"
        )
    return f"; no key rotation in the ledger announces key {kid.hex()}"


def format_result(res: VerifyResult) -> str:
    lines = []
    if res.ok:
        lines.append(
            f"OK: {res.entries} entries, {res.checkpoints} checkpoints, origin {res.origin}, "
            f"{res.elapsed_s:.2f} s"
        )
        if res.latest is not None:
            lines.append(
                f"latest verified checkpoint: size {res.latest.size}, root {res.latest.root.hex()}"
            )
        if res.origin and len(res.key_spans) > 1:
            trusted = key_id(res.origin, res.key_spans[0][1]).hex()
            chain = ", then ".join(res.key_history(res.origin))
            lines.append(f"signing keys: {trusted} (the trusted key), then {chain}")
    else:
        first = res.first_problem
        assert first is not None
        lines.append(f"FAILED: {first}")
        for p in sorted(res.problems, key=lambda p: p.index)[1:20]:
            lines.append(f"  also: {p}")
        if len(res.problems) > 20:
            lines.append(f"  ... {len(res.problems) - 20} more")
    lines.extend(f"warning: {w}" for w in res.warnings)
    return "\n".join(lines)
