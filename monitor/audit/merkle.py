"""RFC 9162 (CT v2, same hashing as RFC 6962) Merkle tree hashing and proofs.

Leaf hash = SHA-256(0x00 || data), node hash = SHA-256(0x01 || left || right); the
tree is right-unbalanced (split at the largest power of two smaller than n) and a lone
last node is carried up, never duplicated. The proof verifiers follow the pseudocode
of RFC 9162 §2.1.3.2 and §2.1.4.2 literally so they can be reviewed against it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from monitor.errors import AuditLayerError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


class ProofError(AuditLayerError, ValueError):
    """A Merkle proof failed to verify (the message says why)."""


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """Root of a whole tree, level by level (carrying an odd last node up equals the
    recursive RFC definition for right-unbalanced trees)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class CompactRange:
    """The right edge of the tree [0, size): one hash per set bit of size, largest
    subtree first. Appending is amortised O(1) hashes and the root is O(log n), so the
    ledger never recomputes the tree from scratch."""

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self._size = size
        self._hashes = list(hashes)
        if len(self._hashes) != bin(size).count("1"):
            raise ValueError("compact range: number of hashes does not match size")

    @property
    def size(self) -> int:
        return self._size

    def hashes(self) -> list[bytes]:
        return list(self._hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._hashes)

    def append(self, lh: bytes) -> None:
        hashes = self._hashes
        size = self._size
        # Each trailing 1-bit of the old size is a complete subtree the new leaf completes.
        while size & 1:
            lh = node_hash(hashes.pop(), lh)
            size >>= 1
        hashes.append(lh)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for lh in leaf_hashes:
            self.append(lh)

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        it = reversed(self._hashes)
        acc = next(it)
        for h in it:
            acc = node_hash(h, acc)
        return acc


class Tree:
    """All complete-subtree hashes of a tree, kept as levels so any root, inclusion
    proof or consistency proof for sizes <= len(leaves) costs O(log n) hash lookups.
    levels[k][i] is the hash of leaves [i*2^k, (i+1)*2^k)."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for lh in leaf_hashes:
            self.append(lh)

    @classmethod
    def build(cls, leaf_hashes: list[bytes]) -> Tree:
        """Bulk construction: one comprehension per level, much faster than append."""
        t = cls()
        level = list(leaf_hashes)
        t.levels = [level]
        h, one = _sha256, b"\x01"
        while len(level) > 1:
            level = [h(one + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
            t.levels.append(level)
        return t

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, lh: bytes) -> None:
        levels = self.levels
        levels[0].append(lh)
        k = 0
        while len(levels[k]) % 2 == 0:
            if len(levels) == k + 1:
                levels.append([])
            row = levels[k]
            levels[k + 1].append(node_hash(row[-2], row[-1]))
            k += 1

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for the ranges that proofs use (lo aligned to a power of two
        at least as large as the range)."""
        n = hi - lo
        if n <= 0 or hi > self.size:
            raise ValueError(f"bad subtree range [{lo}, {hi}) for size {self.size}")
        if n & (n - 1) == 0 and lo % n == 0:
            return self.levels[n.bit_length() - 1][lo // n]
        k = _split(n)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if size == 0:
            return EMPTY_ROOT
        return self.subtree(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        if not 0 <= index < size <= self.size:
            raise ValueError(f"inclusion proof: need 0 <= {index} < {size} <= {self.size}")
        return inclusion_path(index, size, self.subtree)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        if not 0 <= size1 <= size2 <= self.size:
            raise ValueError(f"consistency proof: need 0 <= {size1} <= {size2} <= {self.size}")
        if size1 == 0 or size1 == size2:
            return []
        return consistency_path(size1, size2, self.subtree)


SubtreeFn = Callable[[int, int], bytes]


def inclusion_path(index: int, size: int, subtree: SubtreeFn) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1, hashes ordered leaf to root."""
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_path(size1: int, size2: int, subtree: SubtreeFn) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 §2.1.4.1 (0 < m < n)."""
    out: list[bytes] = []
    m, lo, hi, complete = size1, 0, size2, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            out.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            out.append(subtree(lo, lo + k))
            m -= k
            lo += k
            complete = False
    if not complete:
        out.append(subtree(lo, hi))
    out.reverse()
    return out


def _check_hash(name: str, h: bytes) -> None:
    if len(h) != HASH_SIZE:
        raise ProofError(f"{name} is {len(h)} bytes, expected {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, lh: bytes, path: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root implied by (index, size, leaf hash, path)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    _check_hash("leaf hash", lh)
    fn, sn, r = index, size - 1, lh
    for i, p in enumerate(path):
        _check_hash(f"proof[{i}]", p)
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(index: int, size: int, lh: bytes, path: Sequence[bytes], root: bytes) -> None:
    _check_hash("root", root)
    if root_from_inclusion_proof(index, size, lh, path) != root:
        raise ProofError("inclusion proof does not lead to the expected root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, path: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2. Size 0 is consistent with anything given an empty proof (as
    C2SP witnesses treat it); equal sizes need an empty proof and equal roots."""
    _check_hash("first root", root1)
    _check_hash("second root", root2)
    if not 0 <= size1 <= size2:
        raise ProofError(f"sizes {size1} -> {size2} go backwards")
    if size1 == 0 or size1 == size2:
        if path:
            raise ProofError("proof must be empty for an empty first tree or equal sizes")
        if size1 == size2 and root1 != root2:
            raise ProofError("same size but different roots")
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise ProofError("empty tree with a non-empty root")
        return
    if not path:
        raise ProofError("empty consistency proof")
    for i, p in enumerate(path):
        _check_hash(f"proof[{i}]", p)
    proof = list(path)
    if size1 & (size1 - 1) == 0:
        proof.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError("consistency proof does not reproduce the first root")
    if sr != root2:
        raise ProofError("consistency proof does not reproduce the second root")


def root_from_range(start: CompactRange, leaf_hashes: Iterable[bytes]) -> bytes:
    """Root after extending a trusted compact range (e.g. saved at checkpoint A) with
    the entries [A, B): proves completeness of a range, not just inclusion."""
    cr = start.copy()
    cr.extend(leaf_hashes)
    return cr.root()
