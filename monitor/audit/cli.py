"""`telesafe audit ...`: keygen, verify, prove, verify-proof, export, show, rotate-key, archive.

Exit codes: 0 ok, 1 verification failed, 2 bad arguments or unreadable input.
`register` hooks the commands into the top-level CLI; each subparser sets `func`,
a callable taking the parsed namespace and returning the exit code.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import getpass
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitor.argtypes import non_negative_int, port_or_any
from monitor.audit.canonical import canonical_json
from monitor.audit.checkpoint import (
    CheckpointError,
    SignedCheckpoint,
    UnknownSigner,
    generate_key_files,
    key_id,
    load_private_key,
    load_public_key,
    parse_checkpoint_unverified,
    verify_checkpoint,
)
from monitor.audit.export import export_bundle
from monitor.audit.ledger import Ledger, LedgerKeyMismatch, LedgerLocked
from monitor.audit.merkle import ProofError, Tree, leaf_hash, verify_consistency, verify_inclusion
from monitor.audit.proof import INCLUSION_FORMAT, ProofUnavailable, inclusion_proof
from monitor.audit.store import Store
from monitor.audit.verify import format_result, open_source, verify
from monitor.errors import EXIT_FAILED, EXIT_OK, AuditLayerError

CONSISTENCY_FORMAT = "telesafe-consistency-proof/v1"


class CliError(AuditLayerError):
    """Arguments that do not fit the ledger or proof at hand (exit 2)."""


# --- keygen --------------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    try:
        sk_path, pub_path = generate_key_files(args.out)
    except FileExistsError:
        raise CliError(f"{args.out} already exists; refusing to overwrite a key") from None
    print(f"private key: {sk_path} (mode 0600)\npublic key:  {pub_path}")
    return EXIT_OK


# --- verify --------------------------------------------------------------------------


_SQLITE_MAGIC = b"SQLite format 3\x00"


def require_ledger(path: Path) -> None:
    """Input that is no ledger at all is unreadable input (exit 2), not a ledger that
    failed verification (exit 1); a damaged ledger is left to `verify` to diagnose."""
    if not path.exists():
        raise CliError(f"{path}: no such ledger file or bundle directory")
    if path.is_dir():
        if not (path / "manifest.json").is_file() or not (path / "entries.jsonl").is_file():
            raise CliError(f"{path}: not an audit bundle (manifest.json / entries.jsonl missing)")
        return
    with path.open("rb") as f:
        if f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
            raise CliError(f"{path}: not a telesafe ledger (not an SQLite file)")
    store = Store(path, readonly=True)
    try:
        tables = store.has_table("entries") or store.has_table("checkpoints")
    except sqlite3.DatabaseError:
        return
    finally:
        store.close()
    if not tables:
        raise CliError(f"{path}: not a telesafe ledger (an SQLite file without its tables)")


def _verify(args: argparse.Namespace) -> int:
    require_ledger(Path(args.ledger))
    pub = load_public_key(args.pubkey)
    trusted = [(str(p), Path(p).read_text(encoding="utf-8")) for p in args.checkpoint or []]
    res = verify(
        args.ledger,
        pub,
        trusted_notes=trusted,
        origin=args.origin,
        use_sidecar=not args.no_sidecar,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "ok": res.ok,
                    "entries": res.entries,
                    "checkpoints": res.checkpoints,
                    "origin": res.origin,
                    "elapsed_s": round(res.elapsed_s, 3),
                    "first_bad_index": res.first_problem.index if res.first_problem else None,
                    "problems": [str(p) for p in sorted(res.problems, key=lambda p: p.index)],
                    "warnings": res.warnings,
                    "keys": [
                        {"above_size": size, "key_id": key_id(res.origin or "", k).hex()}
                        for size, k in res.key_spans
                    ],
                },
                indent=2,
            )
        )
    else:
        print(format_result(res), file=sys.stdout if res.ok else sys.stderr)
    return EXIT_OK if res.ok else EXIT_FAILED


# --- prove / verify-proof ------------------------------------------------------------


def _load_tree(ledger: str) -> tuple[Tree, list[bytes], list[tuple[int, str]], str | None]:
    src = open_source(ledger)
    try:
        bodies: list[bytes] = []
        for idx, _lh, body in src.entries:
            if idx != len(bodies):
                raise CliError(f"entry {len(bodies)}: missing; run `audit verify`")
            bodies.append(body)
        cps, origin = src.checkpoints, src.origin
    finally:
        src.close()
    return Tree.build([leaf_hash(b) for b in bodies]), bodies, cps, origin


def _pick_checkpoint(cps: list[tuple[int, str]], size: int | None, need_above: int) -> str:
    if size is not None:
        for s, note in cps:
            if s == size:
                return note
        raise CliError(f"no checkpoint at size {size} (have: {[s for s, _ in cps][-10:]})")
    if not cps or cps[-1][0] <= need_above:
        raise CliError(f"entry {need_above} is not yet covered by a signed checkpoint")
    return cps[-1][1]


def _consistency_target(cps: list[tuple[int, str]], size: int | None, m: int, n: int) -> str:
    """The newer checkpoint of a consistency proof from size m; says what is wrong."""
    if size is not None:
        return _pick_checkpoint(cps, size, m)
    if m > n:
        raise CliError(f"the ledger holds {n} entries; there is no tree of size {m}")
    if not cps:
        raise CliError("the ledger has no signed checkpoint yet; nothing to prove against")
    latest = cps[-1][0]
    if m == latest:
        raise CliError(
            f"size {m} is the latest signed checkpoint: a consistency proof needs a newer "
            f"one to compare with; the next checkpoint the writer signs will do, or give a "
            f"smaller --consistency-from"
        )
    if m > latest:
        raise CliError(
            f"the tree of size {m} is newer than the latest signed checkpoint (size "
            f"{latest}); prove from a size <= {latest}, or wait for the next checkpoint"
        )
    return cps[-1][1]


def _prove(args: argparse.Namespace) -> int:
    tree, bodies, cps, origin = _load_tree(args.ledger)
    out: dict[str, Any]
    if args.entry is not None:
        n = args.entry
        if n >= tree.size:
            raise CliError(f"entry {n} does not exist (ledger has {tree.size} entries)")
        note = _pick_checkpoint(cps, args.checkpoint, n)
        try:
            out = inclusion_proof(tree, bodies, note, n)
        except ProofUnavailable as exc:
            raise CliError(f"{exc}; run verify" if "match" in str(exc) else str(exc)) from None
    else:
        m = args.consistency_from
        note2 = _consistency_target(cps, args.checkpoint, m, tree.size)
        cp2 = parse_checkpoint_unverified(note2)
        if not 0 < m <= cp2.size <= tree.size:
            raise CliError(f"need 0 < {m} <= checkpoint size {cp2.size} <= {tree.size}")
        if tree.root(cp2.size) != cp2.root:
            raise CliError(f"ledger does not match its checkpoint at size {cp2.size}; run verify")
        note1 = next((nt for s, nt in cps if s == m), None)
        out = {
            "format": CONSISTENCY_FORMAT,
            "origin": cp2.origin,
            "size1": m,
            "size2": cp2.size,
            "root1": tree.root(m).hex(),
            "path": [h.hex() for h in tree.consistency_proof(m, cp2.size)],
            "checkpoint1": note1,
            "checkpoint2": note2,
        }
    del origin
    text = json.dumps(out, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _hexlist(v: Any, what: str) -> list[bytes]:
    if not isinstance(v, list):
        raise CliError(f"{what} must be a list of hex strings")
    try:
        return [bytes.fromhex(h) for h in v]
    except (TypeError, ValueError) as exc:
        raise CliError(f"{what}: {exc}") from None


def _entry_bytes(path: str) -> bytes:
    raw = Path(path).read_bytes().rstrip(b"\n")
    try:
        # Accept a pretty-printed copy of the entry too: hash its canonical form.
        return canonical_json(json.loads(raw))
    except ValueError as exc:
        raise CliError(f"{path}: not a JSON entry: {exc}") from None


class _Keys:
    """The keys `verify-proof` trusts (more than one after a key rotation)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.pubs = [load_public_key(p) for p in paths]

    def verify(self, note: str, origin: str | None = None) -> SignedCheckpoint:
        """The note verified: at least one of the keys signed it, and every signature
        line claiming any of them verifies (C2SP signed-note)."""
        good: SignedCheckpoint | None = None
        unknown: list[str] = []
        for pub in self.pubs:
            try:
                scp = verify_checkpoint(note, pub, origin)
            except UnknownSigner as exc:
                unknown.append(str(exc))
                continue
            good = good or scp
        if good is not None:
            return good
        hint = (
            "; if the ledger's key was rotated, give each key with --pubkey "
            "(`audit verify` lists them)"
            if len(self.pubs) == 1
            else ""
        )
        raise CheckpointError("; ".join(unknown) + hint)


def _verify_proof(args: argparse.Namespace) -> int:
    pub = _Keys(args.pubkey)
    try:
        proof = json.loads(Path(args.proof).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CliError(f"{args.proof}: not JSON: {exc}") from None
    if not isinstance(proof, dict):
        raise CliError(f"{args.proof}: not a proof object")
    fmt = proof.get("format")
    try:
        if fmt == INCLUSION_FORMAT:
            return _verify_inclusion_proof(proof, pub, args)
        if fmt == CONSISTENCY_FORMAT:
            return _verify_consistency_proof(proof, pub, args)
    except (CheckpointError, ProofError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyError, TypeError, ValueError) as exc:
        raise CliError(f"{args.proof}: malformed proof: {exc!r}") from None
    raise CliError(f"{args.proof}: unknown proof format {fmt!r}")


def _same_origin(proof: dict[str, Any], scp: SignedCheckpoint) -> None:
    if proof.get("origin") is not None and proof["origin"] != scp.origin:
        raise ProofError(
            f"the proof says origin {proof['origin']!r} but its signed checkpoint is of "
            f"{scp.origin!r}"
        )


def _verify_inclusion_proof(proof: dict[str, Any], pub: _Keys, args: argparse.Namespace) -> int:
    scp = pub.verify(str(proof["checkpoint"]))
    _same_origin(proof, scp)
    index, size = int(proof["index"]), int(proof["size"])
    if size != scp.size:
        raise ProofError(f"proof is for size {size} but the checkpoint has size {scp.size}")
    lh = bytes.fromhex(str(proof["leaf_hash"]))
    body: bytes | None = None
    if args.entry_file:
        body = _entry_bytes(args.entry_file)
    elif proof.get("entry") is not None:
        body = str(proof["entry"]).encode("utf-8")
    if body is not None:
        if leaf_hash(body) != lh:
            raise ProofError("the entry does not hash to the proof's leaf hash")
        obj = json.loads(body)
        if not isinstance(obj, dict) or obj.get("index") != index:
            raise ProofError(f"the entry's index is not {index}")
    verify_inclusion(index, size, lh, _hexlist(proof["path"], "path"), scp.root)
    print(
        f"OK: entry {index} is included in the tree of size {size} signed by "
        f"{scp.origin}/{scp.key_id.hex()} (root {scp.root.hex()})"
    )
    if body is None:
        print("note: no entry bytes given; only the leaf hash was proven")
    else:
        print(body.decode("utf-8"))
    return EXIT_OK


def _verify_consistency_proof(proof: dict[str, Any], pub: _Keys, args: argparse.Namespace) -> int:
    scp2 = pub.verify(str(proof["checkpoint2"]))
    _same_origin(proof, scp2)
    size1, size2 = int(proof["size1"]), int(proof["size2"])
    if size2 != scp2.size:
        raise ProofError(f"proof is for size {size2} but the new checkpoint has size {scp2.size}")
    given_root1 = bytes.fromhex(str(proof["root1"])) if proof.get("root1") is not None else None
    olds: list[tuple[str, str]] = []
    if args.old_checkpoint:
        olds.append(("--old-checkpoint", Path(args.old_checkpoint).read_text("utf-8")))
    if proof.get("checkpoint1") is not None:
        olds.append(("checkpoint1", str(proof["checkpoint1"])))
    root1: bytes | None = None
    for label, note in olds:
        scp1 = pub.verify(note, scp2.origin)
        if scp1.size != size1:
            raise ProofError(f"{label} has size {scp1.size}, the proof is from {size1}")
        # Every root the proof states must be the signed one: a proof is one claim.
        if given_root1 is not None and given_root1 != scp1.root:
            raise ProofError(
                f"the proof's root1 {given_root1.hex()} contradicts {label} "
                f"(signed root {scp1.root.hex()} at size {size1})"
            )
        if root1 is not None and root1 != scp1.root:
            raise ProofError(f"{label} and the other old checkpoint disagree at size {size1}")
        root1 = scp1.root
    if root1 is None:
        if given_root1 is None:
            raise ProofError("the proof has neither root1 nor a signed checkpoint1")
        root1 = given_root1
        print("note: no signed old checkpoint; using the unsigned root1 in the proof")
    verify_consistency(size1, size2, root1, scp2.root, _hexlist(proof["path"], "path"))
    print(f"OK: the tree of size {size1} is a prefix of the signed tree of size {size2}")
    return EXIT_OK


# --- export / show -------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    pub = load_public_key(args.pubkey) if args.pubkey else None
    res = export_bundle(args.ledger, args.out, pub)
    print(
        f"exported {res.entries} entries and {res.checkpoints} checkpoints to {res.out} "
        f"(key id {res.key_id})"
    )
    return EXIT_OK


_TIME_KEYS = ("t_utc_ns", "ts_ns", "t_ns", "timestamp", "ts", "time")
_TYPE_KEYS = ("event", "type", "kind")
# Bookkeeping every entry carries; `audit export` keeps it, the listing leaves it out.
_QUIET_KEYS = ("schema", "boot_id", "t_mono_ns", "monitor_id")


def _fmt_time(v: Any) -> str:
    if isinstance(v, int) and v > 10**15:
        v = v / 1e9
    if isinstance(v, int | float):
        return dt.datetime.fromtimestamp(v, dt.UTC).isoformat(timespec="milliseconds")
    return str(v)


def _compact(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _show_row(idx: int, e: dict[str, Any]) -> str:
    """One entry: what happened, when, to which procedure, who did it, then its data."""
    rest = dict(e)
    rest.pop("index", None)
    tkey = next((k for k in _TIME_KEYS if k in rest), None)
    ykey = next((k for k in _TYPE_KEYS if k in rest), None)
    t = _fmt_time(rest.pop(tkey)) if tkey else "-"
    typ = str(rest.pop(ykey)) if ykey else "-"
    proc = str(rest.pop("procedure_id", None) or "-")
    actor = str(rest.pop("actor", None) or "-")
    for k in _QUIET_KEYS:
        rest.pop(k, None)
    data = rest.pop("data", None)
    parts = [_compact(data)] if data not in (None, {}) else []
    parts += [f"{k}={_compact(v)}" for k, v in sorted(rest.items())]
    detail = " ".join(parts)
    if len(detail) > 140:
        detail = detail[:137] + "..."
    return f"{idx:>8}  {t:<29} {typ:<24} {proc:<14} {actor:<22} {detail}"


def _show(args: argparse.Namespace) -> int:
    src = open_source(args.ledger)
    rows: collections.deque[str] = collections.deque(maxlen=args.tail)
    try:
        for idx, _lh, body in src.entries:
            try:
                e = json.loads(body)
            except ValueError:
                rows.append(f"{idx:>8}  <unreadable body>")
                continue
            if not isinstance(e, dict):
                continue
            if args.procedure is not None and str(e.get("procedure_id")) != args.procedure:
                continue
            rows.append(_show_row(idx, e))
    finally:
        src.close()
    print(f"{'index':>8}  {'time (UTC)':<29} {'event':<24} {'procedure':<14} {'actor':<22} details")
    for r in rows:
        print(r)
    return EXIT_OK


# --- rotate-key ----------------------------------------------------------------------


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (container without passwd entry)
        return "unknown"


def _rotate_key(args: argparse.Namespace) -> int:
    path = Path(args.ledger)
    if not path.is_file():
        raise CliError(f"{path}: no such ledger file")
    require_ledger(path)
    old_sk, new_sk = load_private_key(args.key), load_private_key(args.new_key)
    store = Store(path, readonly=True)
    try:
        origin = store.meta_get("origin") if store.has_table("meta") else None
    finally:
        store.close()
    if origin is None:
        raise CliError(f"{path}: not a telesafe ledger (no origin)")
    try:
        led = Ledger.open(path, old_sk, origin, holder="telesafe audit rotate-key")
    except LedgerLocked as exc:
        raise CliError(f"{exc}: stop that writer first, then rotate") from None
    except LedgerKeyMismatch:
        want = key_id(origin, old_sk.public_key()).hex()
        raise CliError(
            f"--key {args.key} (key id {want}) is not the key that signs {path} now; "
            f"rotation must be authorised by the current key"
        ) from None
    try:
        scp = led.rotate_key(new_sk, actor=f"operator:{args.operator}", reason=args.reason)
    finally:
        led.close()
    old_id = key_id(origin, old_sk.public_key()).hex()
    new_id = key_id(origin, new_sk.public_key()).hex()
    print(
        f"rotated: {path} is now signed by key id {new_id} (was {old_id})\n"
        f"announced in entry {scp.size - 1}, covered by the checkpoint at size {scp.size} "
        f"signed by {old_id}\n"
        f"start the monitor with --signing-key {args.new_key}; verifiers keep the original "
        f"public key (`audit verify` follows the rotation)"
    )
    return EXIT_OK


# --- wiring --------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser(
        "audit",
        help="immutable audit ledger: keys, verification, proofs, export",
        description="Tools for the signed, Merkle-tree audit ledger.",
    )
    a = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")

    p = a.add_parser(
        "keygen",
        help="generate an Ed25519 checkpoint signing key",
        description="Write a new private key (0600) to KEY and its public key "
        "to KEY.pub. Never overwrites.",
    )
    p.add_argument("--out", required=True, metavar="KEY", help="private key path")
    p.set_defaults(func=_keygen)

    p = a.add_parser(
        "verify",
        help="verify a ledger file or export bundle",
        description="Recompute every leaf hash and checkpoint root, check every "
        "signature and consistency between checkpoints. Exit 1 with "
        "'entry N: reason' on the first problem.",
    )
    p.add_argument("ledger", metavar="LEDGER", help="ledger .db file or export directory")
    p.add_argument(
        "--pubkey",
        required=True,
        metavar="KEY.pub",
        help="trusted public key (PEM, raw 32 bytes or vkey)",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        metavar="NOTE",
        help="a checkpoint you obtained earlier; the ledger must extend it (repeatable)",
    )
    p.add_argument("--origin", help="expected origin (log identity)")
    p.add_argument(
        "--no-sidecar",
        action="store_true",
        help="ignore LEDGER.checkpoint (the last checkpoint kept beside the file)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_verify)

    p = a.add_parser(
        "prove",
        help="print an inclusion or consistency proof (JSON)",
        description="Inclusion proof of entry N in a signed checkpoint (the "
        "latest by default), or a consistency proof from an older size.",
    )
    p.add_argument("ledger", metavar="LEDGER", help="ledger .sqlite file or export directory")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--entry", type=non_negative_int, metavar="N", help="entry index")
    g.add_argument(
        "--consistency-from",
        type=non_negative_int,
        metavar="SIZE",
        help="prove the tree of this size is a prefix of the checkpoint",
    )
    p.add_argument(
        "--checkpoint",
        type=non_negative_int,
        metavar="SIZE",
        help="use the checkpoint of this size (default: latest)",
    )
    p.add_argument("--out", metavar="FILE", help="write the proof here instead of stdout")
    p.set_defaults(func=_prove)

    p = a.add_parser(
        "verify-proof",
        help="check a proof from `prove` offline",
        description="Check the checkpoint signature and the Merkle proof. For an "
        "inclusion proof, the entry bytes embedded in the proof (or "
        "--entry-file) must hash to the leaf hash.",
    )
    p.add_argument("proof", metavar="PROOF.json", help="a proof written by `audit prove`")
    p.add_argument(
        "--pubkey",
        required=True,
        action="append",
        metavar="KEY.pub",
        help="a trusted public key; repeat for a ledger whose key was rotated",
    )
    p.add_argument("--entry-file", metavar="FILE", help="your own copy of the entry (JSON)")
    p.add_argument(
        "--old-checkpoint", metavar="NOTE", help="consistency proofs: the old checkpoint you hold"
    )
    p.set_defaults(func=_verify_proof)

    p = a.add_parser(
        "export",
        help="write a self-contained, verifiable bundle",
        description="entries.jsonl, checkpoints/, pubkey.pem, manifest.json and "
        "a README explaining how to verify it.",
    )
    p.add_argument("ledger", metavar="LEDGER", help="ledger .sqlite file")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty directory")
    p.add_argument("--pubkey", metavar="KEY.pub", help="key to ship (default: from the ledger)")
    p.set_defaults(func=_export)

    p = a.add_parser(
        "show",
        help="readable listing of entries",
        description="List entries (ledger file or bundle); no verification.",
    )
    p.add_argument("ledger", metavar="LEDGER", help="ledger .sqlite file or export directory")
    p.add_argument("--procedure", metavar="ID", help="only this procedure_id")
    p.add_argument("--tail", type=non_negative_int, metavar="N", help="only the last N matching")
    p.set_defaults(func=_show)

    p = a.add_parser(
        "rotate-key",
        help="change the ledger's signing key (an audited entry)",
        description="Append an entry announcing the new key, and a checkpoint covering "
        "it signed by the current key, in one transaction; later checkpoints are signed "
        "by the new key. Only with no writer on the ledger (stop the monitor first), "
        "then restart the monitor with --signing-key NEW.key. Verifiers keep trusting "
        "the original public key: `audit verify` and `report` follow the announcement.",
    )
    p.add_argument("ledger", metavar="LEDGER", help="ledger .sqlite file")
    p.add_argument(
        "--key", required=True, metavar="OLD.key", help="the ledger's current private key"
    )
    p.add_argument(
        "--new-key",
        required=True,
        metavar="NEW.key",
        help="the new private key (from `audit keygen`); must not have signed it before",
    )
    p.add_argument("--reason", help="why the key changes (recorded in the entry)")
    p.add_argument(
        "--operator",
        default=_login(),
        help="who rotates, recorded as the entry's actor (default: your login name)",
    )
    p.set_defaults(func=_rotate_key)

    _archive_args(a)


def _archive_args(a: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from monitor.kafka.settings import add_kafka_arguments, env

    p = a.add_parser(
        "archive",
        help="keep a verified copy of every instance's ledger, from the audit topic",
        description="Consume the audit mirror (telesafe.audit) and keep, in one directory, "
        "a verified copy of every instance's ledger (one per origin): each checkpoint's "
        "signature (following key rotations) and Merkle root are checked before the entries "
        "it covers are appended. Anything that does not verify is refused, logged and "
        "counted. Restart-safe and idempotent. Reports read the copies with "
        "`telesafe report --archive DIR --trusted-keys FILE`.",
        epilog="exit codes: 0 ok; 1 something was refused or an origin is stalled (--once, "
        "--import), Kafka unreachable; 2 bad arguments or an unusable directory or "
        "trusted-keys file. The service runs until SIGTERM.",
    )
    p.add_argument(
        "--dir",
        default=env("TELESAFE_ARCHIVE_DIR"),
        required=env("TELESAFE_ARCHIVE_DIR") is None,
        metavar="DIR",
        help="archive directory (env TELESAFE_ARCHIVE_DIR): archive.sqlite and ledgers/",
    )
    p.add_argument(
        "--trusted-keys",
        default=env("TELESAFE_TRUSTED_KEYS"),
        required=env("TELESAFE_TRUSTED_KEYS") is None,
        metavar="FILE",
        help="origin -> public key lines: `ORIGIN KEYFILE`, `ORIGIN-PREFIX* KEYFILE` or a "
        "signed-note verifier key (env TELESAFE_TRUSTED_KEYS)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--once",
        action="store_true",
        help="read the topic up to its current end, print the state and exit",
    )
    mode.add_argument(
        "--import",
        dest="import_paths",
        action="append",
        metavar="LEDGER",
        help="import a ledger file or export bundle through the same checks (no Kafka), "
        "then exit; repeatable",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="--once: give up after S seconds (default %(default)s)",
    )
    p.add_argument(
        "--stall-after",
        type=float,
        default=300.0,
        metavar="S",
        help="an origin is stalled when a signed checkpoint has waited S seconds for its "
        "entries (default %(default)s)",
    )
    p.add_argument(
        "--http-host",
        default=env("TELESAFE_HTTP_HOST", "127.0.0.1"),
        help="address the HTTP endpoints listen on (env TELESAFE_HTTP_HOST; default "
        "%(default)s; 0.0.0.0 for a scraper on another host)",
    )
    p.add_argument(
        "--http-port",
        type=port_or_any,
        default=int(env("TELESAFE_HTTP_PORT", "9110") or 9110),
        help="/metrics, /healthz, /readyz, /status (env TELESAFE_HTTP_PORT; default %(default)s)",
    )
    p.add_argument(
        "--log-level",
        default=env("TELESAFE_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (env TELESAFE_LOG_LEVEL; default %(default)s)",
    )
    add_kafka_arguments(p)
    p.set_defaults(func=_run_archive)


def _run_archive(args: argparse.Namespace) -> int:
    from monitor.audit.archive.service import run_archive

    return run_archive(args)


def main(argv: Sequence[str] | None = None) -> int:
    """`telesafe audit ...` standalone: ``main(["audit", "verify", ...])``."""
    from monitor.cli import main as telesafe

    return telesafe(argv)


if __name__ == "__main__":
    raise SystemExit(main())
