"""The worked examples in docs/icd.md are what telesafe's own code computes.

Robot and console vendors check their implementation against them, so the doc must not
drift from the code: every value is parsed out of the doc and recomputed here, signing and
verifying with `monitor/security/signing.py` (ICD §8), partitioning with the monitor's
partitioner (ICD §2).
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka.partitioner.default import murmur2

from monitor.icd.decode import Rejection, decode_telemetry
from monitor.kafka.partitioner import MemoPartitioner
from monitor.security.signing import KEY_HEADER, SIG_HEADER, Keyring, Signer

DOC = Path(__file__).resolve().parents[2] / "docs" / "icd.md"


def _block(marker: str) -> str:
    found = re.findall(rf"<!-- {marker} -->\s*```text\n(.*?)```", DOC.read_text(), re.S)
    assert len(found) == 1, f"docs/icd.md must hold exactly one <!-- {marker} --> block"
    return str(found[0])


def _example(marker: str) -> dict[str, str]:
    """`label: value` lines; a value runs to the end of its line, byte for byte."""
    out: dict[str, str] = {}
    for line in _block(marker).splitlines():
        label, sep, value = line.partition(":")
        assert sep, f"not a 'label: value' line: {line!r}"
        out[label.strip()] = value.lstrip(" ")
    return out


EX = _example("signing-example")
SEED = bytes.fromhex(EX["private key (32-byte seed, hex)"])
VALUE = EX["value"].encode("utf-8")
KEY_NAME = EX[KEY_HEADER]
SIG = EX[SIG_HEADER].encode("ascii")


def test_the_example_names_the_headers_the_code_uses() -> None:
    assert set(EX) == {
        "private key (32-byte seed, hex)",
        "public key (32 bytes, hex)",
        "value",
        "value SHA-256 (hex)",
        KEY_HEADER,
        SIG_HEADER,
    }
    text = DOC.read_text()
    assert f"| `{SIG_HEADER}` |" in text and f"| `{KEY_HEADER}` |" in text


def test_the_public_key_belongs_to_the_seed() -> None:
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw.hex() == EX["public key (32 bytes, hex)"]
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pem.decode() == _block("signing-example-pem")


def test_the_value_is_the_stated_bytes_and_a_valid_record() -> None:
    assert hashlib.sha256(VALUE).hexdigest() == EX["value SHA-256 (hex)"]
    stated = re.search(r"(\d+) bytes of UTF-8", DOC.read_text())
    assert stated is not None and int(stated.group(1)) == len(VALUE)
    rec = decode_telemetry(VALUE, b"LDN-GIB-0001", "robot")
    assert not isinstance(rec, Rejection), rec


def test_signing_the_value_gives_the_documented_headers() -> None:
    signer = Signer(KEY_NAME, Ed25519PrivateKey.from_private_bytes(SEED))
    assert signer.headers(VALUE) == [(SIG_HEADER, SIG), (KEY_HEADER, KEY_NAME.encode())]
    assert len(SIG) == 88 and len(base64.b64decode(SIG, validate=True)) == 64


def test_the_monitor_accepts_the_example_and_refuses_variations(tmp_path: Path) -> None:
    pub_file = tmp_path / "robot.pub"
    pub_file.write_text(_block("signing-example-pem"))
    ring = Keyring.from_specs([f"robot:{KEY_NAME}={pub_file}"])
    headers = [(SIG_HEADER, SIG), (KEY_HEADER, KEY_NAME.encode())]
    assert ring.check("robot", VALUE, headers) is None

    respaced = VALUE.replace(b'"seq":17', b'"seq": 17')  # same JSON, other bytes
    assert ring.check("robot", respaced, headers) == f"bad signature (key {KEY_NAME!r})"
    urlsafe = base64.urlsafe_b64encode(base64.b64decode(SIG))
    assert urlsafe != SIG  # this signature has a '/': the URL-safe alphabet differs
    assert ring.check("robot", VALUE, [(SIG_HEADER, urlsafe), headers[1]]) is not None
    # telesafe-key carries the key's name, not the key.
    by_key = [(SIG_HEADER, SIG), (KEY_HEADER, EX["public key (32 bytes, hex)"].encode())]
    assert "unknown signing key" in str(ring.check("robot", VALUE, by_key))


def test_another_key_gives_another_signature() -> None:
    """Control: the documented signature belongs to the documented key only."""
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    assert Signer(KEY_NAME, other).headers(VALUE)[0] != (SIG_HEADER, SIG)


class _Cluster:
    """The ClusterMetadata calls the partitioners make: one topic, all partitions up."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    available_partitions_for_topic = partitions_for_topic


def test_partition_example_is_the_monitors_partitioner() -> None:
    ex = _example("partition-example")
    key, n = ex["key"].encode(), int(ex["partitions"])
    assert f"{murmur2(key) & 0xFFFFFFFF:08x}" == ex["murmur2 (32-bit, hex)"]
    want = int(ex["partition (murmur2, required)"])
    assert MemoPartitioner().partition("t", key, key, None, None, _Cluster(n)) == want
    # librdkafka's default `consistent_random` is CRC32 modulo the partition count: the
    # doc's warning names the partition it would pick, which must differ.
    wrong = int(ex["partition (librdkafka default, wrong)"])
    assert zlib.crc32(key) % n == wrong != want
