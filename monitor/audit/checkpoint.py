"""Ed25519-signed checkpoints in the C2SP signed-note / tlog-checkpoint format.

A checkpoint note is::

    <origin>\\n<tree size>\\n<base64 root hash>\\n
    \\n
    — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>\\n

The signature covers the body (the first three lines, including the final newline).
Key id = SHA-256(key name || 0x0A || 0x01 || raw public key)[:4] (0x01 = Ed25519), so a
signature by any other key, or by the same key under another name, is recognisable.
The key name is the origin, as in most deployed logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from monitor.audit.merkle import HASH_SIZE
from monitor.errors import AuditLayerError

SIG_TYPE_ED25519 = 0x01
EM_DASH = "\u2014"
MAX_SIGNATURES = 16


class CheckpointError(AuditLayerError, ValueError):
    """A checkpoint note is malformed or its signature does not verify."""


class UnknownSigner(CheckpointError):
    """The note carries no signature by the trusted key (only other keys' lines)."""


class KeyFileError(AuditLayerError, ValueError):
    """A key file cannot be read or is not an Ed25519 key."""


def raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, pub: Ed25519PublicKey | bytes) -> bytes:
    raw = pub if isinstance(pub, bytes) else raw_public(pub)
    return hashlib.sha256(name.encode() + b"\n" + bytes([SIG_TYPE_ED25519]) + raw).digest()[:4]


def vkey(name: str, pub: Ed25519PublicKey) -> str:
    """Verifier key string `<name>+<hex key id>+<base64(type || key)>` (signed-note)."""
    raw = raw_public(pub)
    enc = base64.b64encode(bytes([SIG_TYPE_ED25519]) + raw).decode()
    return f"{name}+{key_id(name, raw).hex()}+{enc}"


def parse_vkey(text: str) -> tuple[str, Ed25519PublicKey]:
    """(name, public key) of a verifier key `<name>+<hex key id>+<base64(type || key)>`.
    Raises ValueError if it is malformed, not Ed25519, or its key id does not match."""
    parts = text.strip().split("+", 2)  # the name has no "+", base64 may
    if len(parts) != 3 or not parts[0]:
        raise ValueError("malformed verifier key (want name+keyid+base64)")
    name, kid_hex, enc = parts
    try:
        raw = base64.b64decode(enc, validate=True)
    except binascii.Error as exc:
        raise ValueError("malformed verifier key (key is not base64)") from exc
    if len(raw) != 33 or raw[0] != SIG_TYPE_ED25519:
        raise ValueError("verifier key is not Ed25519")
    if key_id(name, raw[1:]).hex() != kid_hex.lower():
        raise ValueError(f"verifier key id {kid_hex} does not match its key")
    return name, Ed25519PublicKey.from_public_bytes(raw[1:])


def _check_origin(origin: str) -> None:
    if not origin or any(c.isspace() for c in origin) or "+" in origin:
        raise ValueError(f"origin {origin!r} must be non-empty, without spaces or '+'")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


@dataclass(frozen=True)
class SignedCheckpoint:
    origin: str
    size: int
    root: bytes
    key_id: bytes
    note: str
    timestamp: float = 0.0  # unix time the ledger signed it; not signed, informational

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.origin, self.size, self.root)


def sign_checkpoint(
    cp: Checkpoint, sk: Ed25519PrivateKey, timestamp: float = 0.0
) -> SignedCheckpoint:
    _check_origin(cp.origin)
    if len(cp.root) != HASH_SIZE:
        raise ValueError("root hash must be 32 bytes")
    body = cp.body()
    kid = key_id(cp.origin, sk.public_key())
    sig = sk.sign(body.encode())
    line = f"{EM_DASH} {cp.origin} {base64.b64encode(kid + sig).decode()}\n"
    return SignedCheckpoint(cp.origin, cp.size, cp.root, kid, body + "\n" + line, timestamp)


def parse_body(body: str) -> Checkpoint:
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise CheckpointError("checkpoint body must have origin, size and root lines")
    origin, size_s, root_s = lines[0], lines[1], lines[2]
    if not origin:
        raise CheckpointError("checkpoint origin is empty")
    if not size_s.isdigit() or (len(size_s) > 1 and size_s[0] == "0"):
        raise CheckpointError(f"checkpoint size {size_s!r} is not a decimal without leading zeros")
    try:
        root = base64.b64decode(root_s, validate=True)
    except binascii.Error as exc:
        raise CheckpointError(f"checkpoint root is not base64: {exc}") from exc
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"checkpoint root is {len(root)} bytes, expected {HASH_SIZE}")
    return Checkpoint(origin, int(size_s), root)


def split_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """Split a signed note at its last blank line; return body and (name, key id, sig)."""
    if not note.endswith("\n"):
        raise CheckpointError("note does not end with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise CheckpointError("note has no blank line before its signatures")
    body, sig_text = note[: cut + 1], note[cut + 2 :]
    sigs: list[tuple[str, bytes, bytes]] = []
    for line in sig_text.split("\n")[:-1]:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH:
            raise CheckpointError(f"malformed signature line {line!r}")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error as exc:
            raise CheckpointError(f"signature is not base64: {exc}") from exc
        if len(blob) < 5:
            raise CheckpointError("signature too short")
        sigs.append((parts[1], blob[:4], blob[4:]))
    if not sigs:
        raise CheckpointError("note has no signatures")
    if len(sigs) > MAX_SIGNATURES:
        raise CheckpointError(f"note has more than {MAX_SIGNATURES} signatures")
    return body, sigs


def verify_note(note: str, name: str, pub: Ed25519PublicKey) -> str:
    """Return the note body if it carries a valid signature by (name, pub).

    Signatures by other keys are ignored (they allow cosigning and rotation). Every line
    that claims to be ours is checked, wherever it stands: one that does not verify
    rejects the note even if another line by the same key does (C2SP signed-note:
    a verifier must not accept a note because one of two claims holds)."""
    body, sigs = split_note(note)
    want = key_id(name, pub)
    seen: list[str] = []
    good = False
    for sig_name, kid, sig in sigs:
        seen.append(f"{sig_name}/{kid.hex()}")
        if sig_name != name or kid != want:
            continue
        try:
            pub.verify(sig, body.encode())
        except InvalidSignature as exc:
            raise CheckpointError(f"invalid signature by trusted key {want.hex()}") from exc
        good = True
    if good:
        return body
    raise UnknownSigner(
        f"not signed by the trusted key {name}/{want.hex()} (signed by {', '.join(seen)})"
    )


def signers(note: str) -> list[tuple[str, bytes]]:
    """(key name, key id) of every signature line, unverified; [] for a malformed note."""
    try:
        _, sigs = split_note(note)
    except CheckpointError:
        return []
    return [(n, kid) for n, kid, _ in sigs]


def verify_checkpoint(
    note: str, pub: Ed25519PublicKey, origin: str | None = None
) -> SignedCheckpoint:
    """Verify a checkpoint note; the key name must equal the origin in its body."""
    body, _ = split_note(note)
    cp = parse_body(body)
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint origin {cp.origin!r} is not {origin!r}")
    verify_note(note, cp.origin, pub)
    return SignedCheckpoint(cp.origin, cp.size, cp.root, key_id(cp.origin, pub), note)


def parse_checkpoint_unverified(note: str) -> Checkpoint:
    body, _ = split_note(note)
    return parse_body(body)


# --- key files -----------------------------------------------------------------------


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """PEM (PKCS#8, unencrypted) or a raw 32-byte seed."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror}") from exc
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is neither a PEM PKCS#8 key nor 32 raw bytes") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """PEM SubjectPublicKeyInfo, a raw 32-byte key, or a signed-note vkey line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from exc
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    text = data.decode("utf-8", "replace").strip()
    if "+" in text and "-----BEGIN" not in text:
        try:
            return parse_vkey(text)[1]
        except ValueError as exc:
            raise KeyFileError(f"{path}: {exc}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM public key, vkey or 32 raw bytes") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key")
    return key


def public_pem(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def generate_key_files(out: str | Path) -> tuple[Path, Path]:
    """Write a new private key (mode 0600, refusing to overwrite) and `<out>.pub`."""
    out = Path(out)
    pub_path = Path(str(out) + ".pub")
    sk = Ed25519PrivateKey.generate()
    pem = sk.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: never clobber an existing signing key; 0600 from creation, no chmod race.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    pub_path.write_bytes(public_pem(sk.public_key()))
    return out, pub_path
