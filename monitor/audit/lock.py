"""One writer per ledger: an exclusive `flock` on `<ledger>.lock`.

The lock belongs to the open file description, so it is released when the holder closes
it or dies, SIGKILL included: a crashed monitor never leaves a stale lock behind, and
the file's content (pid and holder) only serves to name the holder in the refusal.
Readers (`audit verify`, `report`, `show`, `export`) never take it: SQLite's WAL lets
them read a consistent snapshot while the writer appends.

`flock` locks are per open file description, not per process, so a second open in the
same process is refused too (fcntl/POSIX record locks would let it through). On Linux
NFS, `flock` is emulated with byte-range locks and still excludes other clients.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from monitor.audit.store import LedgerError
from monitor.errors import EXIT_FAILED


class LedgerLocked(LedgerError):
    """Another writer holds the ledger."""

    exit_code = EXIT_FAILED

    def __init__(self, ledger: Path, holder: str) -> None:
        super().__init__(f"ledger {ledger} is in use by {holder}; one writer per ledger")
        self.ledger = ledger
        self.holder = holder


def lock_path(ledger: str | Path) -> Path:
    return Path(str(ledger) + ".lock")


def read_holder(ledger: str | Path) -> str:
    """'pid N (who)' as written by the holder, or a neutral phrase if unreadable."""
    try:
        text = lock_path(ledger).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    pid, _, who = text.partition(" ")
    if not pid.isdigit():
        return "another process (pid unknown)"
    return f"pid {pid} ({who})" if who else f"pid {pid}"


class LedgerLock:
    """An acquired lock; `release()` (or process exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, ledger: str | Path, holder: str) -> LedgerLock:
        """Take the lock or raise `LedgerLocked` at once (never waits).

        Precondition: the ledger's directory exists. `holder` names this writer in
        the message another writer gets (e.g. "monitor telesafe-1")."""
        ledger = Path(ledger)
        path = lock_path(ledger)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise LedgerError(
                    f"ledger {ledger}: cannot open its lock file {path}: {exc.strerror}"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LedgerLocked(ledger, read_holder(ledger)) from None
                raise LedgerError(f"ledger {ledger}: cannot lock {path}: {exc.strerror}") from exc
            # The file may have been unlinked (a failed creation cleans up) between our
            # open and our flock: then we locked an orphan inode; start again.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {holder}\n".encode(), 0)
        return cls(path, fd)

    def release(self, *, unlink: bool = False) -> None:
        """Free the lock; `unlink` also removes the file (only for a ledger that was
        never created, so that a failed start leaves nothing behind)."""
        if self._fd is None:
            return
        if unlink:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self._fd)
        self._fd = None
