"""The archive's trust anchors: which public key each ledger origin is verified with.

A trusted-keys file has one line per origin (blank lines and `#` comments are skipped)::

    telesafe/telesafe-0   keys/monitor.pub        # ORIGIN KEYFILE (PEM, raw 32 bytes, vkey)
    telesafe/telesafe-*   keys/monitor.pub        # a trailing * matches an origin prefix
    telesafe/or-3+5d1e0a39+AU3cX...               # a signed-note verifier key names its origin

A key file path is relative to the trusted-keys file. The key is the key each ledger was
*first* signed with: rotations are followed through the ledger's own `signing_key_rotated`
entries (`monitor.audit.keychain`), exactly as `telesafe audit verify` does. An exact
origin wins over a pattern; of several patterns the longest prefix wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from monitor.audit.checkpoint import KeyFileError, key_id, load_public_key, parse_vkey
from monitor.errors import AuditLayerError


class TrustedKeysError(AuditLayerError):
    """The trusted-keys file cannot be used (the message names the line)."""


@dataclass
class TrustedKeys:
    exact: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    prefixes: list[tuple[str, Ed25519PublicKey]] = field(default_factory=list)
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> TrustedKeys:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise TrustedKeysError(f"cannot read trusted keys {p}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise TrustedKeysError(f"{p}: not a text file") from None
        return cls.parse(text, p.parent, str(p))

    @classmethod
    def parse(cls, text: str, base: Path, source: str = "trusted keys") -> TrustedKeys:
        out = cls(source=source)
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{source}:{n}"
            parts = line.split()
            if len(parts) == 1:
                try:
                    origin, pub = parse_vkey(parts[0])
                except ValueError as exc:
                    raise TrustedKeysError(f"{where}: {exc}") from None
            elif len(parts) == 2:
                origin = parts[0]
                try:
                    pub = load_public_key(base / parts[1])
                except KeyFileError as exc:
                    raise TrustedKeysError(f"{where}: {exc}") from None
            else:
                raise TrustedKeysError(f"{where}: want `ORIGIN KEYFILE` or a verifier key")
            out._add(origin, pub, where)
        if not out.exact and not out.prefixes:
            raise TrustedKeysError(f"{source}: names no origin")
        return out

    def _add(self, origin: str, pub: Ed25519PublicKey, where: str) -> None:
        pattern = origin.endswith("*")
        name = origin[:-1] if pattern else origin
        if not name or any(c.isspace() for c in name) or "+" in name or "*" in name:
            raise TrustedKeysError(f"{where}: {origin!r} is not an origin (or ORIGIN-PREFIX*)")
        if pattern:
            if any(p == name for p, _ in self.prefixes):
                raise TrustedKeysError(f"{where}: pattern {origin} is listed twice")
            self.prefixes.append((name, pub))
            self.prefixes.sort(key=lambda pk: -len(pk[0]))
        else:
            if name in self.exact:
                raise TrustedKeysError(f"{where}: origin {origin} is listed twice")
            self.exact[name] = pub

    def key_for(self, origin: str) -> Ed25519PublicKey | None:
        """The trusted (original) key of `origin`; None if the file does not name it."""
        if origin in self.exact:
            return self.exact[origin]
        for prefix, pub in self.prefixes:
            if origin.startswith(prefix):
                return pub
        return None

    def describe(self, origin: str) -> str:
        pub = self.key_for(origin)
        return "not trusted" if pub is None else f"key id {key_id(origin, pub).hex()}"
