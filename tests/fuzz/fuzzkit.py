"""Budget for the fuzz tests.

CI default: modest (`EXAMPLES` per test, a few thousand in all, well under a minute).
Nightly: `TELESAFE_FUZZ_EXAMPLES=1000000 pytest tests/fuzz -p no:cacheprovider` (see
docs/safety/README.md, "Fuzzing").
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("TELESAFE_FUZZ_EXAMPLES", "0")) or None


def budget(default: int) -> settings:
    """Hypothesis settings: `default` examples unless TELESAFE_FUZZ_EXAMPLES says otherwise."""
    return settings(
        max_examples=EXAMPLES or default,
        deadline=None,
        database=None,  # a nightly run must not leave megabytes behind in the work tree
        suppress_health_check=list(HealthCheck),
    )
