"""The audit mirror's record format: ledger entries and signed checkpoints on `telesafe.audit`.

The monitor mirrors every ledger entry, once durable, and every signed checkpoint to the
audit topic; the governance archive (`monitor.audit.archive`) rebuilds a verified copy of
each instance's ledger from them. Everything it needs is in the record value:

* an **entry record** is the ledger's leaf bytes (the exact canonical JSON the ledger
  hashed, with its `index`) with one member inserted first, naming the ledger::

      {"ledger_origin":"telesafe/m1",  +  <leaf bytes without their opening "{">

  so the value is still the entry as a JSON object (readers of the topic see `event`,
  `data`, `procedure_id` as before), and removing that member by slicing gives back the
  hashed bytes exactly: the archive never re-canonicalises anything.
* a **checkpoint record** is ``{"ledger_origin":"<origin>","ledger_checkpoint":"<note>"}``,
  the signed note verbatim.

An entry or checkpoint the monitor mirrors again after a restart (its ledger's tail, in case
the previous process died before the producer delivered it) carries `"ledger_replay":true`
right after `ledger_origin`; the archive treats it like any other (it is idempotent), and a
reader counting live events can skip it.

Records of other shapes on the topic (an entry mirrored with `"ledgered": false` after a
ledger write failure, or a record from a version before this format) are not ledger records:
`parse_record` returns None for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from monitor.errors import AuditLayerError

ORIGIN_FIELD = "ledger_origin"
CHECKPOINT_FIELD = "ledger_checkpoint"
REPLAY_FIELD = "ledger_replay"

_PREFIX = b'{"' + ORIGIN_FIELD.encode() + b'":'
_REPLAY = b'"' + REPLAY_FIELD.encode() + b'":true,'
_CHECKPOINT = b'"' + CHECKPOINT_FIELD.encode() + b'":'
_decoder = json.JSONDecoder()


class MirrorError(AuditLayerError):
    """A record claims to be a ledger record (it starts with `ledger_origin`) but is
    malformed."""


@dataclass(frozen=True, slots=True)
class EntryRecord:
    origin: str
    index: int
    body: bytes  # the leaf bytes, exactly as the ledger hashed them
    replay: bool = False


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    origin: str
    note: str
    replay: bool = False


MirrorRecord = EntryRecord | CheckpointRecord


def _origin_json(origin: str) -> bytes:
    return json.dumps(origin, ensure_ascii=False).encode("utf-8")


def entry_value(origin: str, body: bytes, *, replay: bool = False) -> bytes:
    """The record value of ledger entry `body` (its leaf bytes) of `origin`.
    Precondition: `body` is a canonical JSON object (it starts with `{"`)."""
    if not body.startswith(b'{"'):
        raise ValueError("a ledger entry body is a JSON object with members")
    return _PREFIX + _origin_json(origin) + b"," + (_REPLAY if replay else b"") + body[1:]


def checkpoint_value(origin: str, note: str, *, replay: bool = False) -> bytes:
    """The record value of a signed checkpoint note of `origin`."""
    return (
        _PREFIX
        + _origin_json(origin)
        + b","
        + (_REPLAY if replay else b"")
        + _CHECKPOINT
        + json.dumps(note, ensure_ascii=False).encode("utf-8")
        + b"}"
    )


def parse_record(value: bytes | None) -> MirrorRecord | None:
    """The ledger record in a record value; None if the value is not one (another shape of
    audit record). Raises MirrorError for a value that starts like one but is malformed."""
    if not value or not value.startswith(_PREFIX):
        return None
    try:
        text = value.decode("utf-8")
        origin, end = _decoder.raw_decode(text, len(_PREFIX))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MirrorError(f"unreadable ledger_origin: {exc}") from None
    if not isinstance(origin, str) or not origin:
        raise MirrorError("ledger_origin is not a non-empty string")
    if text[end : end + 1] != ",":
        raise MirrorError("ledger_origin is not followed by another member")
    rest = value[len(text[: end + 1].encode("utf-8")) :]
    replay = rest.startswith(_REPLAY)
    if replay:
        rest = rest[len(_REPLAY) :]
    if rest.startswith(_CHECKPOINT):
        try:
            obj = json.loads(value)
        except ValueError as exc:
            raise MirrorError(f"checkpoint record is not JSON: {exc}") from None
        note = obj.get(CHECKPOINT_FIELD) if isinstance(obj, dict) else None
        if not isinstance(note, str) or set(obj) - {ORIGIN_FIELD, CHECKPOINT_FIELD, REPLAY_FIELD}:
            raise MirrorError("checkpoint record must hold exactly the origin and a note")
        return CheckpointRecord(origin, note, replay)
    body = b"{" + rest
    try:
        entry = json.loads(body)
    except ValueError as exc:
        raise MirrorError(f"entry record is not JSON: {exc}") from None
    index = entry.get("index") if isinstance(entry, dict) else None
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise MirrorError("entry record carries no valid index")
    return EntryRecord(origin, index, body, replay)
