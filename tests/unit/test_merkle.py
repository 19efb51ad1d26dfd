"""Merkle tree: published vectors, a brute-force RFC 9162 reference, mutations."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.audit import merkle as m
from monitor.audit.canonical import CanonicalError, canonical_json
from monitor.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    key_id,
    verify_checkpoint,
    verify_note,
)

# transparency-dev/merkle testonly/constants.go (Apache-2.0): the RFC 6962 CT leaves.
LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]


def b64(s: str) -> bytes:
    return base64.b64decode(s)


# --- brute-force reference: RFC 9162 §2.1 definitions, recursive, no shortcuts ---------

def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(i: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n <= 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if i < k:
        return [*ref_path(i, d[:k]), ref_mth(d[k:])]
    return [*ref_path(i - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(mm: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if mm == n:
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if mm <= k:
        return [*ref_subproof(mm, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(mm - k, d[k:], False), ref_mth(d[:k])]


def data(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


# --- published vectors ---------------------------------------------------------------

def test_empty_root() -> None:
    assert m.EMPTY_ROOT.hex().startswith("e3b0c442")
    assert m.root_of([]) == m.EMPTY_ROOT == m.Tree().root() == m.CompactRange().root()


@pytest.mark.parametrize("n", range(9))
def test_ct_roots(n: int) -> None:
    hashes = [m.leaf_hash(x) for x in LEAVES[:n]]
    cr = m.CompactRange()
    cr.extend(hashes)
    assert m.root_of(hashes) == ROOTS[n]
    assert cr.root() == ROOTS[n]
    assert m.Tree.build(hashes).root() == ROOTS[n]
    assert m.Tree(hashes).root() == ROOTS[n]


def test_transparency_dev_inclusion_vector() -> None:
    # testdata/inclusion/4/happy-path.json
    path = [b64("bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="),
            b64("Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4="),
            b64("vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=")]
    root = b64("Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=")
    lh = b64("lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=")
    m.verify_inclusion(1, 5, lh, path, root)
    tree = m.Tree.build([m.leaf_hash(x) for x in LEAVES[:5]])
    assert tree.inclusion_proof(1, 5) == path
    with pytest.raises(m.ProofError):
        m.verify_inclusion(2, 5, lh, path, root)
    with pytest.raises(m.ProofError):
        m.verify_inclusion(1, 5, lh, path[:-1], root)


def test_transparency_dev_consistency_vector() -> None:
    # testdata/consistency/3/happy-path.json
    root1 = b64("+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=")
    root2 = b64("Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=")
    proof = [b64("Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4="),
             b64("vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=")]
    m.verify_consistency(2, 5, root1, root2, proof)
    tree = m.Tree.build([m.leaf_hash(x) for x in LEAVES[:5]])
    assert tree.consistency_proof(2, 5) == proof
    with pytest.raises(m.ProofError):
        m.verify_consistency(2, 5, root2, root1, proof)  # swapped roots
    with pytest.raises(m.ProofError):
        m.verify_consistency(3, 5, root1, root2, proof)


def test_c2sp_signed_note_example() -> None:
    # c2sp.org/signed-note example verifier key and note
    raw = base64.b64decode("AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
    pub = Ed25519PublicKey.from_public_bytes(raw[1:])
    assert key_id("example.com/foo", pub).hex() == "530d903a"
    note = ("This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1"
            "YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")
    assert verify_note(note, "example.com/foo", pub) == "This is an example message.\n"
    with pytest.raises(CheckpointError):
        verify_note(note.replace("example message", "example massage"), "example.com/foo", pub)
    with pytest.raises(CheckpointError, match="not signed by the trusted key"):
        verify_note(note, "example.com/bar", pub)


def test_checkpoint_sign_verify_and_forgery() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from monitor.audit.checkpoint import sign_checkpoint

    sk, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    scp = sign_checkpoint(Checkpoint("t.example/a", 7, ROOTS[7]), sk)
    assert scp.note.startswith("t.example/a\n7\n" + base64.b64encode(ROOTS[7]).decode() + "\n\n")
    got = verify_checkpoint(scp.note, sk.public_key())
    assert (got.size, got.root) == (7, ROOTS[7])
    forged = sign_checkpoint(Checkpoint("t.example/a", 7, ROOTS[7]), other)
    with pytest.raises(CheckpointError, match="not signed by the trusted key"):
        verify_checkpoint(forged.note, sk.public_key())
    tampered = scp.note.replace("\n7\n", "\n8\n")
    with pytest.raises(CheckpointError, match="invalid signature"):
        verify_checkpoint(tampered, sk.public_key())
    with pytest.raises(CheckpointError, match="origin"):
        verify_checkpoint(scp.note, sk.public_key(), origin="t.example/b")


# --- brute force, all small sizes ----------------------------------------------------

def test_all_proofs_small_sizes_exhaustive() -> None:
    for n in range(1, 40):
        d = data(n)
        tree = m.Tree.build([m.leaf_hash(x) for x in d])
        root = ref_mth(d)
        assert tree.root() == root
        for i in range(n):
            p = tree.inclusion_proof(i, n)
            assert p == ref_path(i, d)
            m.verify_inclusion(i, n, m.leaf_hash(d[i]), p, root)
        for k in range(1, n + 1):
            p = tree.consistency_proof(k, n)
            assert p == (ref_subproof(k, d, True) if k < n else [])
            m.verify_consistency(k, n, ref_mth(d[:k]), root, p)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300), st.data())
def test_inclusion_matches_reference(n: int, draw: st.DataObject) -> None:
    d = data(n)
    i = draw.draw(st.integers(0, n - 1))
    tree = m.Tree.build([m.leaf_hash(x) for x in d])
    root = ref_mth(d)
    assert tree.root() == root
    path = tree.inclusion_proof(i, n)
    assert path == ref_path(i, d)
    lh = m.leaf_hash(d[i])
    m.verify_inclusion(i, n, lh, path, root)
    # Every single-bit flip in the proof, and a wrong index or size, must fail.
    for j in range(len(path)):
        bad = list(path)
        bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
        with pytest.raises(m.ProofError):
            m.verify_inclusion(i, n, lh, bad, root)
    # A different leaf at the same position must fail (the size is bound by the
    # signed checkpoint, not by the path, so size mutations are not tested here).
    with pytest.raises(m.ProofError):
        m.verify_inclusion(i, n, m.leaf_hash(d[i] + b"x"), path, root)
    if path:
        with pytest.raises(m.ProofError):
            m.verify_inclusion(i, n, lh, path[:-1], root)
    with pytest.raises(m.ProofError):
        m.verify_inclusion(i, n, lh, [*path, root], root)


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 300), st.data())
def test_consistency_matches_reference(n: int, draw: st.DataObject) -> None:
    d = data(n)
    k = draw.draw(st.integers(1, n - 1))
    tree = m.Tree.build([m.leaf_hash(x) for x in d])
    r1, r2 = ref_mth(d[:k]), ref_mth(d)
    p = tree.consistency_proof(k, n)
    assert p == ref_subproof(k, d, True)
    m.verify_consistency(k, n, r1, r2, p)
    for j in range(len(p)):
        bad = list(p)
        bad[j] = bad[j][:-1] + bytes([bad[j][-1] ^ 0x80])
        with pytest.raises(m.ProofError):
            m.verify_consistency(k, n, r1, r2, bad)
    with pytest.raises(m.ProofError):
        m.verify_consistency(k, n, r2, r1, p)
    with pytest.raises(m.ProofError):
        m.verify_consistency(k, n, r1, r2, p[:-1])
    with pytest.raises(m.ProofError):
        m.verify_consistency(k, n, r1, r2, [*p, r1])
    if k > 1:
        with pytest.raises(m.ProofError):
            m.verify_consistency(k - 1, n, r1, r2, p)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300))
def test_compact_range_and_root_from_range(a: int, extra: int) -> None:
    d = data(a + extra)
    hashes = [m.leaf_hash(x) for x in d]
    start = m.CompactRange()
    start.extend(hashes[:a])
    assert start.root() == ref_mth(d[:a])
    assert m.root_from_range(start, hashes[a:]) == ref_mth(d)
    assert start.size == a  # root_from_range must not mutate the trusted range


def test_proof_edge_cases() -> None:
    r = ref_mth(data(5))
    with pytest.raises(m.ProofError):
        m.verify_inclusion(5, 5, m.leaf_hash(b"x"), [], r)
    with pytest.raises(m.ProofError):
        m.verify_inclusion(0, 1, b"short", [], r)
    m.verify_consistency(0, 5, m.EMPTY_ROOT, r, [])
    m.verify_consistency(5, 5, r, r, [])
    with pytest.raises(m.ProofError):
        m.verify_consistency(5, 5, r, m.EMPTY_ROOT, [])
    with pytest.raises(m.ProofError):
        m.verify_consistency(5, 3, r, r, [])
    with pytest.raises(m.ProofError):
        m.verify_consistency(2, 5, ref_mth(data(2)), r, [])


# --- canonical JSON ------------------------------------------------------------------

def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": [1.5, "é", None, True]}) == (
        '{"a":[1.5,"é",null,true],"b":1}'.encode()
    )
    assert canonical_json({"x": 0.1}) == b'{"x":0.1}'
    for bad in ({"x": float("nan")}, {"x": float("inf")}, {1: "a"}, {"x": object()},
                {"x": "\ud800"}):
        with pytest.raises(CanonicalError):
            canonical_json(bad)


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=20,
))
def test_canonical_json_round_trip(value: object) -> None:
    import json

    enc = canonical_json(value)
    assert canonical_json(json.loads(enc)) == enc
