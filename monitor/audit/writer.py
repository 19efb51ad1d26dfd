"""Background writer: the monitor's hot paths (including safe-stop) only call `submit`,
which appends to a deque and never blocks on I/O; this thread batches the queue into
one SQLite transaction per batch (group commit), signs checkpoints and, between
batches, re-verifies the newest checkpointed range of the file (selfcheck.py)."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from monitor.audit.canonical import CanonicalError, canonical_json
from monitor.audit.checkpoint import SignedCheckpoint
from monitor.audit.ledger import Ledger
from monitor.audit.selfcheck import SelfCheck, SelfCheckResult

log = logging.getLogger(__name__)


class _FlushMarker:
    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


_Item = tuple[dict[str, Any], bool] | _FlushMarker


def _sanitise(entry: Any, err: Exception) -> dict[str, Any]:
    """Replace an entry that cannot be encoded by a record of the failure: losing the
    event silently is worse than storing its repr."""
    return {
        "type": "AUDIT_ENCODING_ERROR",
        "error": str(err),
        "original_repr": repr(entry)[:8192],
    }


class AuditWriter:
    def __init__(
        self,
        ledger: Ledger,
        on_appended: Callable[[list[dict[str, Any]]], None] | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        checkpoint_interval_s: float = 10.0,
        max_batch: int = 512,
        max_wait_s: float = 0.005,
        verify_interval_s: float = 0.0,
        verify_delay_s: float = 5.0,
        on_verified: Callable[[SelfCheckResult], None] | None = None,
        on_checkpoint: Callable[[SignedCheckpoint], None] | None = None,
    ) -> None:
        """`verify_interval_s` > 0 turns on self-verification: a first pass
        `verify_delay_s` after `start`, then one every `verify_interval_s` after the
        previous one ended; `on_verified` gets each result (in the writer thread).
        It needs a ledger bound to a signing key. `on_checkpoint` gets every checkpoint
        the writer signs, once it is stored (in the writer thread, after the
        `on_appended` call of the entries it covers): the audit mirror publishes it."""
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if verify_interval_s < 0 or verify_delay_s < 0:
            raise ValueError("verify intervals must be >= 0")
        self._ledger = ledger
        self._on_appended = on_appended
        self._on_failure = on_failure
        self._interval = checkpoint_interval_s
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        # deque.append/popleft are atomic in CPython: submit takes no lock of ours.
        self._q: collections.deque[_Item] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._failed: Exception | None = None
        self._unwritten: list[dict[str, Any]] = []
        self._appended = 0
        self._failures = 0
        self._checkpoints = 0
        self._last_cp_unix = 0.0
        self._last_cp_mono = time.monotonic()
        self._dirty = False  # appended since the last checkpoint
        self._verify_interval = verify_interval_s
        self._verify_delay = verify_delay_s
        self._on_verified = on_verified
        self._on_checkpoint = on_checkpoint
        self._check: SelfCheck | None = None
        self._next_verify = 0.0
        self._verifications = 0
        self._verify_failures = 0
        self._last_verify_ok = -1.0  # -1 not yet run, then 1 or 0
        self._last_verify_unix = 0.0

    # --- producer side --------------------------------------------------------------

    def submit(self, entry: dict[str, Any], checkpoint: bool = False) -> None:
        """O(1), never blocks on I/O. checkpoint=True: sign a checkpoint right after
        the batch holding this entry commits (procedure start/end, safe-stop)."""
        self._q.append((entry, checkpoint))
        self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted before this call is durable. False on
        timeout, after a write failure, or if the writer is not running."""
        if self._thread is None or not self._thread.is_alive():
            return not self._q and self._failed is None
        marker = _FlushMarker()
        self._q.append(marker)
        self._wake.set()
        return marker.done.wait(timeout) and marker.ok

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("AuditWriter already started")
        if self._verify_interval > 0:
            self._check = SelfCheck(self._ledger)
            self._next_verify = time.monotonic() + self._verify_delay
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Drain, final checkpoint, close the ledger."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        else:
            self._ledger.close()

    def stats(self) -> dict[str, float]:
        return {
            "appended": float(self._appended),
            "failures": float(self._failures),
            "checkpoints": float(self._checkpoints),
            "last_checkpoint_unix": self._last_cp_unix,
            "queue_depth": float(len(self._q) + len(self._unwritten)),
            "failed": 1.0 if self._failed is not None else 0.0,
            "verifications": float(self._verifications),
            "verify_failures": float(self._verify_failures),
            "last_verify_ok": self._last_verify_ok,
            "last_verify_unix": self._last_verify_unix,
        }

    @property
    def failed(self) -> Exception | None:
        return self._failed

    def unwritten(self) -> list[dict[str, Any]]:
        """Entries not in the ledger after a failure (kept in memory, never dropped)."""
        pending = [it[0] for it in list(self._q) if isinstance(it, tuple)]
        return list(self._unwritten) + pending

    # --- writer thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                timeout = self._wait_s()
                if timeout > 0:
                    self._wake.wait(timeout=timeout)
                self._wake.clear()
                if self._q and self._failed is None and len(self._q) < self._max_batch:
                    # Group-commit window: let a burst accumulate into one transaction.
                    time.sleep(self._max_wait)
                while self._q:
                    self._process(self._take_batch())
                if (
                    self._failed is None
                    and self._dirty
                    and time.monotonic() - self._last_cp_mono >= self._interval
                ):
                    self._checkpoint()
                if self._stopping and not self._q:
                    break
                self._verify_step()
            if self._failed is None and self._dirty:
                self._checkpoint()
        finally:
            try:
                self._ledger.close()
            except Exception:
                log.exception("audit ledger: close failed")

    def _wait_s(self) -> float:
        now = time.monotonic()
        timeout = 1.0
        if self._dirty:
            timeout = max(0.01, min(timeout, self._interval - (now - self._last_cp_mono)))
        check = self._check
        if check is not None:
            # A pass in progress goes on right after the queue is drained.
            timeout = 0.0 if check.in_progress else min(timeout, self._next_verify - now)
        return timeout

    def _verify_step(self) -> None:
        """At most one chunk of self-verification (bounded: the queue waits meanwhile)."""
        check = self._check
        if check is None or (not check.in_progress and time.monotonic() < self._next_verify):
            return
        try:
            res = check.step()
        except Exception:  # a bug in the check must not stop the audit writer
            log.exception("audit ledger: self-verification crashed; next pass as scheduled")
            self._next_verify = time.monotonic() + self._verify_interval
            return
        if res is None:
            return
        self._next_verify = time.monotonic() + self._verify_interval
        self._verifications += 1
        self._last_verify_unix = time.time()
        self._last_verify_ok = 1.0 if res.ok else 0.0
        if not res.ok:
            self._verify_failures += 1
        if self._on_verified is not None:
            try:
                self._on_verified(res)
            except Exception:
                log.exception("audit ledger: on_verified callback failed")

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        n = 0
        q = self._q
        while q and n < self._max_batch:
            item = q.popleft()
            batch.append(item)
            if isinstance(item, tuple):
                n += 1
            else:
                break  # commit everything before a flush marker, then answer it
        return batch

    def _process(self, batch: list[_Item]) -> None:
        entries = [it[0] for it in batch if isinstance(it, tuple)]
        want_cp = any(it[1] for it in batch if isinstance(it, tuple))
        markers = [it for it in batch if isinstance(it, _FlushMarker)]
        if self._failed is not None:
            self._unwritten.extend(entries)
            for m in markers:
                m.done.set()
            return
        if entries:
            try:
                try:
                    committed = self._ledger.append_entries(entries)
                except (CanonicalError, TypeError, ValueError):
                    entries = [self._encodable(e) for e in entries]
                    committed = self._ledger.append_entries(entries)
            except Exception as exc:
                self._fail(exc, entries)
                for m in markers:
                    m.done.set()
                return
            self._appended += len(committed)
            self._dirty = True
            if self._on_appended is not None:
                try:
                    self._on_appended(committed)
                except Exception:
                    log.exception("audit ledger: on_appended callback failed")
            if want_cp:
                self._checkpoint()
        for m in markers:
            m.ok = self._failed is None
            m.done.set()

    def _encodable(self, entry: Any) -> dict[str, Any]:
        try:
            if not isinstance(entry, dict):
                raise TypeError(f"entry is {type(entry).__name__}, not dict")
            if "index" in entry:
                raise ValueError("entry carries its own 'index'")
            canonical_json(entry)
            return entry
        except (CanonicalError, TypeError, ValueError) as exc:
            log.error("audit ledger: entry cannot be encoded, storing a record instead: %s", exc)
            return _sanitise(entry, exc)

    def _checkpoint(self) -> None:
        try:
            cp = self._ledger.checkpoint()
        except Exception as exc:
            self._fail(exc, [])
            return
        self._dirty = False
        self._last_cp_mono = time.monotonic()
        if cp is not None:
            self._checkpoints += 1
            self._last_cp_unix = time.time()
            if self._on_checkpoint is not None:
                try:
                    self._on_checkpoint(cp)
                except Exception:
                    log.exception("audit ledger: on_checkpoint callback failed")

    def _fail(self, exc: Exception, entries: list[dict[str, Any]]) -> None:
        # fsyncgate lesson: after a write error never retry-and-continue; stop, keep the
        # data in memory, and make noise.
        self._failed = exc
        self._failures += 1
        self._unwritten.extend(entries)
        log.critical(
            "AUDIT LEDGER WRITE FAILED: %r; appending stopped, %d entries held in memory",
            exc,
            len(self._unwritten) + len(self._q),
        )
        if self._on_failure is not None:
            try:
                self._on_failure(exc)
            except Exception:
                log.exception("audit ledger: on_failure callback failed")
