"""The monitor's incremental self-verification of its own ledger.

Each pass checks the range between the last verified checkpoint A and the newest stored
checkpoint B, reading the file (not the writer's memory):

* every entry in [A, B): contiguous index, stored leaf hash == SHA-256(0x00 || body),
  body a JSON object carrying its index; key rotations it announces;
* every checkpoint in (A, B]: its signature by the key in force (following rotations as
  `verify` does) and its root, recomputed by extending the compact range verified at A
  with the leaf hashes of the range. Extending A's compact range is itself the proof
  that tree A is a prefix of tree B (what an RFC 9162 consistency proof shows);
* that the checkpoint at A is still stored unchanged.

The cost is O(entries and checkpoints added since the last pass), never O(ledger). The
first pass starts at the second-newest checkpoint found when the ledger was opened
(`Ledger.verify_baseline`, from the stored leaf hashes; its signature is checked too),
so it covers the newest checkpointed range. What lies below that start is checked by
`Ledger.open` (stored leaf hashes against every checkpoint root) and, completely, by
`telesafe audit verify`.

A pass is split into steps of at most `chunk` entries so the writer thread that runs it
goes back to committing batches between steps. A failed pass is sticky: later passes
re-check the same range (and fail again) instead of moving on, so the alarm holds until
someone looks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from monitor.audit.checkpoint import CheckpointError, key_id, verify_checkpoint
from monitor.audit.keychain import KeyWalk, parse_rotation
from monitor.audit.ledger import Ledger
from monitor.audit.merkle import CompactRange, leaf_hash

DEFAULT_CHUNK = 2048  # entries per step: ~15 ms, so batches wait little


@dataclass(frozen=True)
class SelfCheckResult:
    ok: bool
    problem: str | None  # "entry N: reason" for the first problem found
    verified_from: int  # the range [verified_from, verified_to) of entries checked
    verified_to: int
    checkpoints: int  # checkpoints whose signature and root were checked
    elapsed_s: float  # time spent in steps (not the pauses between them)


@dataclass
class _Pass:
    start: int
    cps: list[tuple[int, str]]
    cr: CompactRange
    walk: KeyWalk
    next_idx: int
    next_cp: int = 0
    elapsed_s: float = 0.0
    problem: str | None = None
    started: bool = False


class SelfCheck:
    """Incremental verifier bound to an open Ledger. Not thread-safe: one caller (the
    audit writer thread) calls `step` repeatedly. Precondition: the ledger is bound to
    a signing key (`Ledger.key_for_size` is not None)."""

    def __init__(self, ledger: Ledger, chunk: int = DEFAULT_CHUNK) -> None:
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        self._ledger = ledger
        self._chunk = chunk
        self._origin = ledger.origin
        self._size, self._cr = ledger.verify_baseline()
        key = ledger.key_for_size(self._size)
        if key is None:
            raise ValueError("the ledger is not bound to a signing key")
        self._key = key
        self._note: str | None = None  # the verified checkpoint note at self._size
        self._base_checked = self._size == 0
        self._stuck_at: int | None = None  # newest size of a failed range (sticky)
        self._pass: _Pass | None = None

    @property
    def verified_size(self) -> int:
        return self._size

    @property
    def in_progress(self) -> bool:
        return self._pass is not None

    def run(self) -> SelfCheckResult:
        """A whole pass at once (tests, tools)."""
        while True:
            res = self.step()
            if res is not None:
                return res

    def step(self) -> SelfCheckResult | None:
        """Do at most `chunk` entries of work; the result when a pass completes."""
        t0 = time.perf_counter()
        if self._pass is None:
            self._pass = self._new_pass()
        p = self._pass
        try:
            if not p.started:
                self._begin(p)
            self._advance(p)
        except Exception as exc:  # an unreadable file is a failed verification too
            p.problem = p.problem or f"entry {p.next_idx}: cannot read the ledger: {exc}"
        p.elapsed_s += time.perf_counter() - t0
        done = p.problem is not None or p.next_cp >= len(p.cps)
        if not done:
            return None
        self._pass = None
        if p.problem is not None:
            self._stuck_at = p.cps[-1][0] if p.cps else self._size
            return SelfCheckResult(False, p.problem, p.start, p.next_idx, p.next_cp, p.elapsed_s)
        if p.cps:
            self._size, self._note = p.cps[-1]
            self._cr = p.cr
            self._key = p.walk.key
        self._stuck_at = None
        return SelfCheckResult(True, None, p.start, p.next_idx, p.next_cp, p.elapsed_s)

    # --- one pass --------------------------------------------------------------------

    def _new_pass(self) -> _Pass:
        return _Pass(
            start=self._size,
            cps=[],
            cr=self._cr.copy(),
            walk=KeyWalk(self._origin, self._key),
            next_idx=self._size,
        )

    def _begin(self, p: _Pass) -> None:
        """Check the verified checkpoint at A; list the checkpoints of this pass."""
        led = self._ledger
        p.started = True
        if self._size > 0:
            note = led.stored_checkpoint(self._size)
            if note is None:
                p.problem = f"entry {self._size}: the checkpoint at size {self._size} is gone"
                return
            if not self._base_checked:
                p.problem = self._check_checkpoint(p, 0, self._size, note, apply=False)
                if p.problem is not None:
                    return
                self._base_checked = True
                self._note = note
            elif note != self._note:
                p.problem = (
                    f"entry {self._size}: the verified checkpoint at size {self._size} was changed"
                )
                return
        cps = led.stored_checkpoints_after(self._size)
        if self._stuck_at is not None:
            cps = [c for c in cps if c[0] <= self._stuck_at]
        p.cps = cps

    def _advance(self, p: _Pass) -> None:
        if p.problem is not None or p.next_cp >= len(p.cps):
            return
        target = p.cps[-1][0]
        hi = min(p.next_idx + self._chunk, target)
        rows = self._ledger.read_entries(p.next_idx, hi)
        raw_decode = json.JSONDecoder().raw_decode
        for idx, stored, body in rows:
            if idx != p.next_idx:
                p.problem = f"entry {p.next_idx}: missing (the next stored entry is {idx})"
                return
            lh = leaf_hash(body)
            if lh != stored:
                p.problem = f"entry {idx}: body does not match its stored leaf hash"
                return
            try:
                text = body.decode("utf-8")
                obj, end = raw_decode(text)
            except ValueError:
                obj, end, text = None, 0, ""
            if not isinstance(obj, dict) or end != len(text) or obj.get("index") != idx:
                p.problem = f"entry {idx}: body is not the JSON object of entry {idx}"
                return
            try:
                rot = parse_rotation(obj, self._origin, idx)
            except ValueError as exc:
                p.problem = f"entry {idx}: {exc}"
                return
            if rot is not None:
                p.walk.announce(rot)
            p.cr.append(lh)
            p.next_idx += 1
            while p.next_cp < len(p.cps) and p.cps[p.next_cp][0] == p.cr.size:
                size, note = p.cps[p.next_cp]
                lo = p.cps[p.next_cp - 1][0] if p.next_cp else p.start
                p.problem = self._check_checkpoint(p, lo, size, note, apply=True)
                if p.problem is not None:
                    return
                p.next_cp += 1
        if p.next_idx < hi:  # the file ends below a stored checkpoint
            p.problem = f"entry {p.next_idx}: missing, but a checkpoint at size {target} is stored"

    def _check_checkpoint(
        self, p: _Pass, lo: int, size: int, note: str, *, apply: bool
    ) -> str | None:
        """Signature by the key in force and root of [0, size); `lo` starts the range
        the checkpoint is the first to cover (blamed on failure)."""
        key = p.walk.key
        try:
            scp = verify_checkpoint(note, key, self._origin)
        except CheckpointError as exc:
            kid = key_id(self._origin, key).hex()
            return f"entry {lo}: checkpoint at size {size}: {exc} (key in force {kid})"
        if scp.size != size or scp.root != p.cr.root():
            return (
                f"entry {lo}: the signed checkpoint at size {size} does not match the "
                f"stored entries (an entry in [{lo}, {size}) was altered, removed, "
                f"inserted or reordered)"
            )
        if apply:
            for idx, message in p.walk.covered(size):
                return f"entry {idx}: {message}"
        return None
