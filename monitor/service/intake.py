"""Turning consumed Kafka records into ICD models, or rejecting them (ICD §6, §8).

Decoding never raises. A rejected record goes to the dead-letter topic unchanged with
`telesafe-error` (why) and `telesafe-source` (topic:partition:offset) headers, is counted,
and is no evidence of liveness.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from monitor.icd.decode import Rejection, decode_operator, decode_telemetry
from monitor.icd.models import PROCEDURE_ID_PATTERN, AnyOperator, AnyTelemetry, Site
from monitor.icd.topics import Topics
from monitor.kafka.api import Record
from monitor.security.signing import KEY_HEADER, SIG_HEADER, Keyring

log = logging.getLogger("telesafe.ingest")

_PID = re.compile(PROCEDURE_ID_PATTERN)
# monitor/security/signing.py Keyring.check reasons -> bounded labels
_SIGNATURE_CLASSES = (
    ("unsigned", "unsigned"),
    ("unknown signing key", "unknown_key"),
    ("bad signature", "bad_signature"),
    ("operator_id", "operator_key_mismatch"),
)


@dataclass(frozen=True, slots=True)
class Refused:
    """A record that failed decoding or authentication."""

    record: Record
    site: Site | None  # None: the operator topic
    rejection: Rejection
    procedure_id: str | None  # from the key, when it is a valid procedure id

    @property
    def source(self) -> str:
        r = self.record
        return f"{r.topic}:{r.partition}:{r.offset}"

    @property
    def reason_class(self) -> str:
        """A bounded label for metrics: the rejection code, and for signatures what failed."""
        if self.rejection.code != "signature":
            return self.rejection.code
        why = self.rejection.reason
        for prefix, label in _SIGNATURE_CLASSES:
            if why.startswith(prefix):
                return label
        return "bad_signature"

    def security_event_data(self) -> dict[str, object]:
        """What can be trusted about a refused operator request, for the audit trail: where
        it was read and why it was refused are facts; what it claims is only a claim."""
        r = self.record
        claims: dict[str, object] = {}
        try:
            obj = json.loads(r.value or b"")
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            for k in ("type", "operator_id", "procedure_id", "command_id", "request_id"):
                v = obj.get(k)
                if isinstance(v, str | int) and not isinstance(v, bool):
                    claims[k] = str(v)[:200]
        key_id = dict(r.headers).get(KEY_HEADER)
        return {
            "source": self.source,
            "reason": self.rejection.reason,
            "reason_class": self.reason_class,
            "claimed": claims,
            "key_id_presented": None if key_id is None else key_id.decode("utf-8", "replace")[:200],
            "signed": SIG_HEADER in dict(r.headers),
            "value_bytes": len(r.value or b""),
        }


class Intake:
    def __init__(self, topics: Topics, keyring: Keyring | None = None) -> None:
        self.topics = topics
        self.keyring = keyring

    def site_of(self, topic: str) -> Site | None:
        return self.topics.site_of(topic)

    def decode(self, rec: Record, site: Site | None) -> AnyTelemetry | AnyOperator | Refused:
        """`site`: the telemetry site of the record's topic, None for the operator topic."""
        result = (
            decode_telemetry(rec.value, rec.key, site)
            if site is not None
            else decode_operator(rec.value, rec.key)
        )
        if self.keyring is not None and not isinstance(result, Rejection):
            problem = self.keyring.check(
                site or "operator",
                rec.value or b"",
                list(rec.headers),
                claimed_operator=getattr(result, "operator_id", None) if site is None else None,
            )
            if problem is not None:  # ICD §8: no liveness, no re-arm from it
                result = Rejection(problem, "signature")
        if isinstance(result, Rejection):
            return Refused(rec, site, result, procedure_id_of(rec.key))
        return result


def procedure_id_of(key: bytes | None) -> str | None:
    if not key:
        return None
    try:
        k = key.decode()
    except UnicodeDecodeError:
        return None
    return k if _PID.match(k) else None
