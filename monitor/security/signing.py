"""Sign and verify records (ICD §8): header `telesafe-sig` = base64 Ed25519 signature over the
exact value bytes, `telesafe-key` = the key's name.

A keyring may hold several keys per site (rotation: old and new keys are valid together).
Operator requests are held to a stricter rule: the signing key's name must equal the
`operator_id` the request claims, so one operator cannot re-arm in another's name.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from monitor.audit.checkpoint import load_private_key, load_public_key

SIG_HEADER = "telesafe-sig"
KEY_HEADER = "telesafe-key"


@dataclass(frozen=True)
class Signer:
    key_name: str
    private_key: Ed25519PrivateKey

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        sig = base64.b64encode(self.private_key.sign(value))
        return [(SIG_HEADER, sig), (KEY_HEADER, self.key_name.encode())]

    @classmethod
    def from_file(cls, key_name: str, path: str | Path) -> Signer:
        return cls(key_name, load_private_key(path))


def _header(headers: Iterable[tuple[str, bytes]], name: str) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


@dataclass
class Keyring:
    """Public keys by principal ("console", "robot", or "operator"), then by key name."""

    keys: dict[str, dict[str, Ed25519PublicKey]] = field(default_factory=dict)

    def add(self, principal: str, key_name: str, public_key: Ed25519PublicKey) -> None:
        self.keys.setdefault(principal, {})[key_name] = public_key

    def enforced(self, principal: str) -> bool:
        return bool(self.keys.get(principal))

    def check(
        self,
        principal: str,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]],
        claimed_operator: str | None = None,
    ) -> str | None:
        """None if acceptable, else the rejection reason (for `telesafe-error`)."""
        known = self.keys.get(principal)
        if not known:
            return None  # authentication not configured for this principal
        hdrs = list(headers)
        sig_b64, name_b = _header(hdrs, SIG_HEADER), _header(hdrs, KEY_HEADER)
        if sig_b64 is None or name_b is None:
            return f"unsigned record: {principal} records must carry {SIG_HEADER} and {KEY_HEADER}"
        name = name_b.decode("utf-8", "replace")
        pub = known.get(name)
        if pub is None:
            return f"unknown signing key {name!r} for {principal}"
        try:
            sig = base64.b64decode(sig_b64, validate=True)
            pub.verify(sig, value or b"")
        except (InvalidSignature, binascii.Error, ValueError):
            return f"bad signature (key {name!r})"
        if claimed_operator is not None and claimed_operator != name:
            return f"operator_id {claimed_operator!r} does not match signing key {name!r}"
        return None

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> Keyring:
        """Parse `PRINCIPAL:NAME=PATH.pub` specs (PRINCIPAL: console, robot or operator)."""
        ring = cls()
        for spec in specs:
            try:
                principal, rest = spec.split(":", 1)
                name, path = rest.split("=", 1)
            except ValueError:
                raise ValueError(f"key spec {spec!r} must look like robot:NAME=PATH.pub") from None
            if principal not in ("console", "robot", "operator"):
                raise ValueError(f"key spec {spec!r}: principal must be console, robot or operator")
            if not name:
                raise ValueError(f"key spec {spec!r}: empty key name")
            ring.add(principal, name, load_public_key(path))
        return ring
