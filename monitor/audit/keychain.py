"""Which key signs a ledger's checkpoints, and how that key changes (rotation).

A ledger is bound to one signing key. `meta.signing_key` holds the verifier key
(signed-note vkey, `<origin>+<key id>+<base64 key>`) of the key that signed it first; a
ledger created before this binding existed is bound, when a writer first opens it, to
the key of its newest checkpoint's signature. A writer with another key is refused.

Rotation is an ordinary ledger entry (`event` = `signing_key_rotated`) naming the old
and the new verifier key. It is appended together with a checkpoint covering it that is
signed by the OLD key, in one transaction; checkpoints after it are signed by the new
key. A verifier that trusts the original key therefore learns every later key from
entries that a key it already trusts has signed (`KeyWalk`). `meta.key_rotation:<index>`
rows repeat the announcements for the writer's own bookkeeping; verification never
reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from monitor.audit.checkpoint import key_id, parse_vkey, signers, vkey
from monitor.audit.store import LedgerCorrupt, Store
from monitor.events import EventKind

ROTATION_EVENT: str = EventKind.SIGNING_KEY_ROTATED.value
META_SIGNING_KEY = "signing_key"
META_ROTATION = "key_rotation:"  # + 12-digit entry index; value: the new vkey
# Same value as monitor.service.audit_sink.AUDIT_SCHEMA (audit/ must not import service/).
_AUDIT_SCHEMA = "telesafe.audit/1"


def kid_hex(origin: str, pub: Ed25519PublicKey) -> str:
    return key_id(origin, pub).hex()


@dataclass(frozen=True)
class Rotation:
    """A key announcement read from entry `index`."""

    index: int
    old_key_id: bytes
    new_key: Ed25519PublicKey
    new_key_id: bytes


def rotation_entry(
    origin: str,
    old: Ed25519PublicKey,
    new: Ed25519PublicKey,
    *,
    actor: str,
    t_utc_ns: int,
    reason: str | None = None,
) -> dict[str, Any]:
    """The ledger entry announcing `new` as the successor of `old`."""
    data: dict[str, Any] = {
        "old_key": vkey(origin, old),
        "new_key": vkey(origin, new),
        "old_key_id": kid_hex(origin, old),
        "new_key_id": kid_hex(origin, new),
    }
    if reason:
        data["reason"] = reason
    return {
        "schema": _AUDIT_SCHEMA,
        "event": ROTATION_EVENT,
        "procedure_id": None,
        "actor": actor,
        "monitor_id": "",
        "boot_id": "",
        "t_utc_ns": t_utc_ns,
        "data": data,
    }


def parse_rotation(obj: dict[str, Any], origin: str, index: int) -> Rotation | None:
    """The announcement in a decoded entry, None if the entry is not one.
    Raises ValueError (with the reason) for a malformed announcement."""
    if obj.get("event") != ROTATION_EVENT:
        return None
    data = obj.get("data")
    if not isinstance(data, dict):
        raise ValueError("key rotation entry has no data object")
    try:
        old_name, old = parse_vkey(str(data["old_key"]))
        new_name, new = parse_vkey(str(data["new_key"]))
    except KeyError as exc:
        raise ValueError(f"key rotation entry lacks {exc.args[0]}") from None
    except ValueError as exc:
        raise ValueError(f"key rotation entry: {exc}") from None
    if old_name != origin or new_name != origin:
        raise ValueError(
            f"key rotation entry names keys of {old_name!r}/{new_name!r}, not {origin!r}"
        )
    return Rotation(index, key_id(origin, old), new, key_id(origin, new))


@dataclass
class KeyWalk:
    """The key in force while checkpoints are checked in size order.

    `announce` queues a rotation read from an entry; `covered(size)` is called after a
    checkpoint of that size verified with the key in force (signature and root) and
    applies the announcements it covers. `spans` records (size, key): the key signs the
    checkpoints whose size is above `size` (until the next span)."""

    origin: str
    key: Ed25519PublicKey
    spans: list[tuple[int, Ed25519PublicKey]] = field(default_factory=list)
    pending: list[Rotation] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.spans:
            self.spans.append((0, self.key))

    def announce(self, rot: Rotation) -> None:
        self.pending.append(rot)

    def covered(self, size: int) -> list[tuple[int, str]]:
        """Apply the announcements below `size`; return (entry index, problem) pairs."""
        problems: list[tuple[int, str]] = []
        while self.pending and self.pending[0].index < size:
            rot = self.pending.pop(0)
            cur = key_id(self.origin, self.key)
            if rot.old_key_id != cur:
                problems.append(
                    (
                        rot.index,
                        f"key rotation announces {rot.new_key_id.hex()} as successor of "
                        f"{rot.old_key_id.hex()}, but the key in force was {cur.hex()}",
                    )
                )
                continue
            self.key = rot.new_key
            self.spans.append((size, rot.new_key))
        return problems

    def key_for(self, size: int) -> Ed25519PublicKey:
        """The key that signs a checkpoint of `size` (as far as the walk has got)."""
        return key_in_force(self.spans, size)


def key_in_force(spans: list[tuple[int, Ed25519PublicKey]], size: int) -> Ed25519PublicKey:
    """From (size, key) spans: the key of the last span starting below `size`.
    Precondition: spans is non-empty and starts at size 0."""
    for start, key in reversed(spans):
        if start < size:
            return key
    return spans[0][1]


class KeyChain:
    """The writer's view of its ledger's keys, from `meta` (see the module docstring)."""

    def __init__(
        self,
        origin: str,
        original: Ed25519PublicKey | None,
        rotations: list[tuple[int, Ed25519PublicKey]],
        newest_signer: bytes | None,
    ) -> None:
        self.origin = origin
        self.original = original
        self.rotations = rotations
        self.newest_signer = newest_signer  # key id on the newest checkpoint (unverified)

    @classmethod
    def load(cls, store: Store, origin: str) -> KeyChain:
        """Raises LedgerCorrupt if the key rows in meta are unreadable."""
        meta = store.meta_items()
        original = None
        try:
            if META_SIGNING_KEY in meta:
                original = parse_vkey(meta[META_SIGNING_KEY])[1]
            rotations = sorted(
                (int(k[len(META_ROTATION) :]), parse_vkey(v)[1])
                for k, v in meta.items()
                if k.startswith(META_ROTATION)
            )
        except ValueError as exc:
            raise LedgerCorrupt(f"{store.path}: unreadable signing key in meta: {exc}") from exc
        cps = store.checkpoints()
        newest = None
        if cps:
            ours = [kid for name, kid in signers(cps[-1][1]) if name == origin]
            newest = ours[0] if ours else None
        return cls(origin, original, rotations, newest)

    @property
    def current(self) -> Ed25519PublicKey | None:
        return self.rotations[-1][1] if self.rotations else self.original

    def current_key_id(self) -> bytes | None:
        """The key id a writer must sign with: the bound key after its rotations, or
        for an unbound (older) ledger the signer of its newest checkpoint."""
        cur = self.current
        return key_id(self.origin, cur) if cur is not None else self.newest_signer

    def key_for(self, size: int) -> Ed25519PublicKey | None:
        """The key that signs a checkpoint of `size`: a rotation at entry i is covered
        by the old key's checkpoint at i + 1 (same transaction); later ones are new."""
        key = self.original
        for idx, new in self.rotations:
            if size > idx + 1:
                key = new
        return key
