"""Remembered label children never outlive their series: a removed or forgotten series
comes back, exported, when it is set again."""

from __future__ import annotations

from monitor.metrics import MonitorMetrics


def value(m: MonitorMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_child_is_remembered_and_exported() -> None:
    m = MonitorMetrics(with_process=False)
    c = m.child(m.heartbeat_age, "P1", "robot")
    assert m.child(m.heartbeat_age, "P1", "robot") is c
    c.set(0.02)
    assert value(m, "telesafe_heartbeat_age_seconds", procedure_id="P1", site="robot") == 0.02


def test_removed_series_comes_back_when_set_again() -> None:
    m = MonitorMetrics(with_process=False)
    m.child(m.safe_stop_latched, "P1", "heartbeat_silence").set(1)
    m.remove(m.safe_stop_latched, "P1", "heartbeat_silence")
    assert value(m, "telesafe_safe_stop_latched", procedure_id="P1",
                 rule="heartbeat_silence") is None
    m.child(m.safe_stop_latched, "P1", "heartbeat_silence").set(1)
    assert value(m, "telesafe_safe_stop_latched", procedure_id="P1",
                 rule="heartbeat_silence") == 1


def test_forgotten_procedure_comes_back_when_set_again() -> None:
    m = MonitorMetrics(with_process=False)
    for state in ("armed", "warning"):
        m.child(m.procedure_state, "P1", state).set(1 if state == "armed" else 0)
    m.child(m.procedure_state, "P2", "armed").set(1)
    m.forget_procedure("P1")
    assert value(m, "telesafe_procedure_state", procedure_id="P1", state="armed") is None
    assert value(m, "telesafe_procedure_state", procedure_id="P2", state="armed") == 1
    m.child(m.procedure_state, "P1", "armed").set(1)
    assert value(m, "telesafe_procedure_state", procedure_id="P1", state="armed") == 1
