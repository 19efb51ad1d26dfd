"""Self-contained export bundle: plain files an auditor can verify years later with
nothing but this CLI (or any RFC 9162 + Ed25519 implementation)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from monitor.audit.checkpoint import (
    CheckpointError,
    key_id,
    parse_checkpoint_unverified,
    parse_vkey,
    public_pem,
    split_note,
    vkey,
)
from monitor.audit.keychain import META_ROTATION, META_SIGNING_KEY
from monitor.audit.store import LedgerError, Store
from monitor.audit.verify import BUNDLE_FORMAT

README = """# telesafe audit ledger export

Format `{fmt}`. Origin `{origin}`. {size} entries, {ncp} signed checkpoints.
Signing key id `{kid}`; verifier key `{vkey}`.

## Files

- `entries.jsonl`: line *i* (0-based) holds the exact bytes of entry *i*: canonical JSON
  (UTF-8, keys sorted, no whitespace), including its `"index": i`. Newlines separate
  entries and are not part of them.
- `checkpoints/<size>.note`: C2SP signed-note checkpoints: `<origin>\\n<size>\\n<base64
  root>\\n`, a blank line, then `— <origin> <base64(4-byte key id || Ed25519 signature)>`.
  The signature covers the first three lines including the final newline.
- `pubkey.pem`: the Ed25519 public key (SubjectPublicKeyInfo PEM) that signed the first
  checkpoints. If the key was rotated, each later key is announced by a
  `signing_key_rotated` entry (old and new verifier key) that a checkpoint signed by the
  key then in force covers; checkpoints after it are signed by the new key.
- `manifest.json`: origin, size, SHA-256 of `entries.jsonl`, checkpoint sizes, key id,
  key rotations (informational: verification follows the entries).

## Hashing (RFC 9162 / RFC 6962)

leaf hash = SHA-256(0x00 || entry bytes); node = SHA-256(0x01 || left || right); the tree
over entries [0, n) splits at the largest power of two below n (no duplication). The
empty tree hashes to SHA-256("").

## Verify

    telesafe audit verify {dirname} --pubkey {dirname}/pubkey.pem

Do not trust `pubkey.pem` because it sits in this bundle: compare its key id `{kid}`
with the key id recorded independently (device records, a previous export, a
witness). `--checkpoint FILE` adds checkpoints you obtained earlier and proves this
bundle extends them (this is what detects a rollback). Without the CLI: recompute the
leaf hashes, the root at each checkpoint size, and check each signature with any Ed25519
library over the note body.
"""


@dataclass
class ExportResult:
    out: Path
    entries: int
    checkpoints: int
    key_id: str


def _choose_key(store: Store, origin: str, notes: list[tuple[int, str]]) -> Ed25519PublicKey:
    """The key verification starts from: the key the ledger is bound to (keychain.py),
    for an older unbound ledger the key of its newest checkpoint."""
    bound = store.meta_get(META_SIGNING_KEY)
    if bound is not None:
        return parse_vkey(bound)[1]
    keys: dict[str, Ed25519PublicKey] = {}
    for k, v in store.meta_items().items():
        if k.startswith("key:"):
            pub = serialization.load_pem_public_key(v.encode())
            if isinstance(pub, Ed25519PublicKey):
                keys[key_id(origin, pub).hex()] = pub
    for _, note in reversed(notes):
        try:
            _, sigs = split_note(note)
        except CheckpointError:
            continue
        for name, kid, _sig in sigs:
            if name == origin and kid.hex() in keys:
                return keys[kid.hex()]
    if len(keys) == 1:
        return next(iter(keys.values()))
    raise LedgerError("cannot tell which public key signed this ledger; pass --pubkey")


def export_bundle(
    ledger: str | Path, out: str | Path, public_key: Ed25519PublicKey | None = None
) -> ExportResult:
    src = Path(ledger)
    dst = Path(out)
    if not src.is_file():
        raise LedgerError(f"{src}: no such ledger file")
    if dst.exists() and any(dst.iterdir()):
        raise LedgerError(f"{dst}: exists and is not empty")
    store = Store(src, readonly=True)
    try:
        store.integrity_check()
        origin = store.meta_get("origin")
        if origin is None:
            raise LedgerError(f"{src}: ledger has no origin (not a telesafe ledger?)")
        (dst / "checkpoints").mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        # One read transaction = one WAL snapshot, so a live writer cannot tear the export.
        store.conn.execute("BEGIN")
        try:
            n = 0
            with open(dst / "entries.jsonl", "wb") as f:
                for idx, _lh, body in store.iter_entries():
                    if idx != n:
                        raise LedgerError(f"entry {n}: missing in the ledger; export refused")
                    line = bytes(body) + b"\n"
                    digest.update(line)
                    f.write(line)
                    n += 1
            notes = [(s, note) for s, note in store.checkpoints() if s <= n]
        finally:
            store.conn.execute("COMMIT")
        for size, note in notes:
            if parse_checkpoint_unverified(note).size != size:
                raise LedgerError(f"checkpoint stored as size {size} is malformed")
            (dst / "checkpoints" / f"{size:012d}.note").write_text(note, encoding="utf-8")
        pub = public_key or _choose_key(store, origin, notes)
        rotations = [
            {"index": int(k[len(META_ROTATION) :]), "new_key": v}
            for k, v in sorted(store.meta_items().items())
            if k.startswith(META_ROTATION)
        ]
    finally:
        store.close()
    kid = key_id(origin, pub).hex()
    (dst / "pubkey.pem").write_bytes(public_pem(pub))
    manifest = {
        "format": BUNDLE_FORMAT,
        "origin": origin,
        "size": n,
        "entries_sha256": digest.hexdigest(),
        "checkpoints": [s for s, _ in notes],
        "key_id": kid,
        "vkey": vkey(origin, pub),
        "key_rotations": rotations,
        "exported_unix": int(time.time()),
    }
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (dst / "README.md").write_text(
        README.format(
            fmt=BUNDLE_FORMAT,
            origin=origin,
            size=n,
            ncp=len(notes),
            kid=kid,
            vkey=manifest["vkey"],
            dirname=dst.name,
        ),
        encoding="utf-8",
    )
    return ExportResult(dst, n, len(notes), kid)
