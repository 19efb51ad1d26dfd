"""Inclusion proofs of single entries (`telesafe-inclusion-proof/v1`), as `telesafe audit
prove --entry` writes them and `telesafe audit verify-proof` checks them offline.

`LedgerProofs` reads a ledger file or export bundle once and proves any of its entries
against one of its checkpoints; the post-operative report attaches one to each safe-stop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monitor.audit.checkpoint import parse_checkpoint_unverified
from monitor.audit.merkle import Tree, leaf_hash
from monitor.audit.store import LedgerError
from monitor.audit.verify import open_source

INCLUSION_FORMAT = "telesafe-inclusion-proof/v1"


class ProofUnavailable(LedgerError):
    """The proof cannot be made (the message says why)."""


def inclusion_proof(tree: Tree, bodies: list[bytes], note: str, index: int) -> dict[str, Any]:
    """The inclusion proof of entry `index` in the signed checkpoint `note`.

    Preconditions: `tree` holds the leaf hashes of `bodies`. Raises ProofUnavailable if the
    checkpoint cannot cover the entry or the ledger does not match it."""
    cp = parse_checkpoint_unverified(note)
    if not 0 <= index < cp.size <= tree.size:
        raise ProofUnavailable(f"checkpoint size {cp.size} cannot cover entry {index}")
    if tree.root(cp.size) != cp.root:
        raise ProofUnavailable(f"ledger does not match its checkpoint at size {cp.size}")
    return {
        "format": INCLUSION_FORMAT,
        "origin": cp.origin,
        "index": index,
        "size": cp.size,
        "leaf_hash": tree.levels[0][index].hex(),
        "path": [h.hex() for h in tree.inclusion_proof(index, cp.size)],
        "checkpoint": note,
        "entry": bodies[index].decode("utf-8"),
    }


class LedgerProofs:
    """Every entry and checkpoint of one ledger file or bundle, read once."""

    def __init__(self, path: str | Path) -> None:
        src = open_source(path)
        try:
            self.bodies: list[bytes] = []
            for idx, _lh, body in src.entries:
                if idx != len(self.bodies):
                    raise ProofUnavailable(f"{path}: entry {len(self.bodies)} is missing")
                self.bodies.append(body)
            self.checkpoints = dict(src.checkpoints)
        finally:
            src.close()
        self.tree = Tree.build([leaf_hash(b) for b in self.bodies])

    def covering(self, index: int) -> int | None:
        """The size of the smallest checkpoint that covers entry `index`."""
        return min((s for s in self.checkpoints if s > index), default=None)

    def prove(self, index: int, size: int | None = None) -> dict[str, Any]:
        """Entry `index` in the checkpoint of `size` (default: the smallest covering it)."""
        size = self.covering(index) if size is None else size
        if size is None or size not in self.checkpoints:
            raise ProofUnavailable(f"no signed checkpoint covers entry {index}")
        return inclusion_proof(self.tree, self.bodies, self.checkpoints[size], index)
