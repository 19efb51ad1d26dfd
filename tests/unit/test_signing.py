"""ICD §8 signatures: signing, verification, rotation, and operator identity binding."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from monitor.audit.checkpoint import generate_key_files
from monitor.security.signing import KEY_HEADER, SIG_HEADER, Keyring, Signer

VALUE = b'{"v":1,"type":"heartbeat"}'


def test_signed_record_verifies_and_tampering_is_rejected() -> None:
    sk = Ed25519PrivateKey.generate()
    ring = Keyring()
    ring.add("robot", "gib-robot-1", sk.public_key())
    hdrs = Signer("gib-robot-1", sk).headers(VALUE)
    assert ring.check("robot", VALUE, hdrs) is None
    assert "bad signature" in str(ring.check("robot", VALUE + b" ", hdrs))
    assert "unsigned" in str(ring.check("robot", VALUE, []))
    other = Signer("gib-robot-1", Ed25519PrivateKey.generate()).headers(VALUE)
    assert "bad signature" in str(ring.check("robot", VALUE, other))
    assert "unknown signing key" in str(ring.check("robot", VALUE, Signer("x", sk).headers(VALUE)))
    garbled = [(SIG_HEADER, b"%%%not base64"), (KEY_HEADER, b"gib-robot-1")]
    assert "bad signature" in str(ring.check("robot", VALUE, garbled))


def test_unconfigured_principal_is_not_enforced() -> None:
    ring = Keyring()
    ring.add("robot", "r", Ed25519PrivateKey.generate().public_key())
    assert ring.check("console", VALUE, []) is None
    assert ring.enforced("robot") and not ring.enforced("console")


def test_rotation_accepts_old_and_new_keys() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ring = Keyring()
    ring.add("console", "ldn-2026a", old.public_key())
    ring.add("console", "ldn-2026b", new.public_key())
    assert ring.check("console", VALUE, Signer("ldn-2026a", old).headers(VALUE)) is None
    assert ring.check("console", VALUE, Signer("ldn-2026b", new).headers(VALUE)) is None


def test_operator_cannot_sign_in_another_operators_name() -> None:
    a = Ed25519PrivateKey.generate()
    ring = Keyring()
    ring.add("operator", "dr-a", a.public_key())
    hdrs = Signer("dr-a", a).headers(VALUE)
    assert ring.check("operator", VALUE, hdrs, claimed_operator="dr-a") is None
    assert "does not match" in str(ring.check("operator", VALUE, hdrs, claimed_operator="dr-b"))


def test_keyring_from_specs(tmp_path: Path) -> None:
    generate_key_files(tmp_path / "robot.key")
    ring = Keyring.from_specs([f"robot:r1={tmp_path / 'robot.key.pub'}"])
    signer = Signer.from_file("r1", tmp_path / "robot.key")
    assert ring.check("robot", VALUE, signer.headers(VALUE)) is None
    for bad in ("robot-r1", "robot:r1", "pilot:r1=x.pub", f"robot:={tmp_path / 'robot.key.pub'}"):
        with pytest.raises(ValueError):
            Keyring.from_specs([bad])
