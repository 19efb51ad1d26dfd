"""SlidingQuantiles against a brute-force model: in-window samples, nearest-rank by definition."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.engine.window import SlidingQuantiles
from tests.unit.enginekit import EXAMPLES

WINDOW = 1000


def nearest_rank(values: list[float], q: float) -> float | None:
    """The smallest sample x with #(samples <= x) >= q * n (exact arithmetic)."""
    if not values:
        return None
    need = Fraction(str(q)) * len(values)  # q as the decimal the policy author wrote
    for x in sorted(set(values)):
        if sum(1 for v in values if v <= x) >= need:
            return x
    raise AssertionError("unreachable")


values = st.floats(min_value=0, max_value=1e4, allow_nan=False).map(lambda v: round(v, 2))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 400), values),
        st.tuples(st.just("many"), st.integers(0, 400), st.lists(values, min_size=1, max_size=12)),
        st.tuples(st.just("expire"), st.integers(0, 1500), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(ops=ops, q=st.sampled_from([0.01, 0.5, 0.9, 0.95, 0.99, 1.0]))
def test_matches_brute_force(ops: list[tuple[str, int, object]], q: float) -> None:
    w = SlidingQuantiles(WINDOW)
    model: list[tuple[int, float]] = []
    t = 0
    for op, dt, arg in ops:
        t += dt  # the engine only ever moves time forward
        if op == "add":
            assert isinstance(arg, float)
            w.add(t, arg)
            model.append((t, arg))
        elif op == "many":
            assert isinstance(arg, list)
            w.add_many(t, arg)
            model.extend((t, v) for v in arg)
        else:
            w.expire(t)
            model = [(ts, v) for ts, v in model if ts > t - WINDOW]
        vals = [v for _, v in model]
        assert len(w) == len(vals)
        assert w.quantile(q) == nearest_rank(vals, q)
        assert w.max() == (max(vals) if vals else None)
        assert w.oldest_ns() == (model[0][0] if model else None)


def test_sample_exactly_window_old_is_dropped() -> None:
    w = SlidingQuantiles(WINDOW)
    w.add(0, 5.0)
    w.add(1, 7.0)
    w.expire(WINDOW - 1)
    assert len(w) == 2
    w.expire(WINDOW)
    assert len(w) == 1 and w.quantile(0.5) == 7.0
    w.expire(WINDOW + 1)
    assert len(w) == 0 and w.quantile(0.95) is None and w.max() is None


@pytest.mark.parametrize(
    ("n_low", "n_high", "expected"),
    [(19, 1, 10.0), (18, 2, 99.0), (95, 5, 10.0), (94, 6, 99.0), (1, 0, 10.0)],
)
def test_p95_nearest_rank_examples(n_low: int, n_high: int, expected: float) -> None:
    w = SlidingQuantiles(WINDOW)
    w.add_many(0, [10.0] * n_low + [99.0] * n_high)
    assert w.quantile(0.95) == expected


def test_duplicate_values_expire_one_at_a_time() -> None:
    w = SlidingQuantiles(WINDOW)
    w.add(0, 3.0)
    w.add(500, 3.0)
    w.add(600, 1.0)
    w.expire(1000)
    assert len(w) == 2 and w.max() == 3.0
    w.expire(1500)
    assert len(w) == 1 and w.max() == 1.0
