"""The contract every rule family implements (`Rule`); see `monitor/engine/rules/__init__.py`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from monitor.engine.clock import Instant
from monitor.engine.decisions import Decision

if TYPE_CHECKING:
    from monitor.policy.model import PolicyPack

R_contra = TypeVar("R_contra", contravariant=True)


class Rule(Protocol[R_contra]):
    """One rule family of one procedure.

    Every method takes the monitor-clock `Instant` it is about (never reads a clock) and
    appends what it decided to `out`. Preconditions, for every method: `now` does not go
    backwards between calls on one procedure, and the procedure has not ended (an ended
    procedure's rules are no longer run).
    """

    records: ClassVar[tuple[type[Any], ...]]
    """The ICD §3 record types this family judges; the procedure routes them here."""

    def configure(self, pack: PolicyPack) -> None:
        """Apply a policy pack (at opening, and when a procedure_start names another)."""

    def on_record(self, rec: R_contra, stale: bool, now: Instant, out: list[Decision]) -> None:
        """Judge a record received at `now`. `stale`: its `sent_at` (on the site's clock,
        corrected by the site's reported offset) is older than the pack's `stale_after_ms`,
        so it is no evidence of liveness (ICD §7). Precondition: `rec` is one of `records`,
        not a duplicate (its seq is above the site's last)."""

    def tick(self, now: Instant, out: list[Decision]) -> None:
        """Fire what is due at `now` (e.g. a silence limit). Called at `deadline()` or later;
        a call with nothing due does nothing."""

    def deadline(self) -> int | None:
        """The monitor-clock ns at which `tick` next has something to do (None: nothing
        pending until another record arrives)."""

    def health(self, now: Instant) -> list[str]:
        """Why a re-arm must wait at `now` (empty: this family's signals are healthy)."""

    def rearmed(self) -> None:
        """The latch was cleared by a re-arm: forget the breach in progress, so a breach
        that lasts is judged afresh (and trips again) rather than remembered as tripped."""
