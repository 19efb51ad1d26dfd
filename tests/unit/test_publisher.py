"""The hand-encoded monitor heartbeat is byte-identical to the ICD model's encoding."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from monitor.icd.models import PROCEDURE_ID_PATTERN, MonitorHeartbeat
from monitor.service.publisher import heartbeat_json


@given(
    pid=st.from_regex(PROCEDURE_ID_PATTERN, fullmatch=True),
    seq=st.integers(min_value=0, max_value=2**62),
    issued_at=st.integers(min_value=0, max_value=2**63),
    monitor_id=st.text(min_size=1, max_size=40),
    status=st.sampled_from(["armed", "warning", "safe_stop_latched"]),
)
def test_heartbeat_bytes_equal_the_model(
    pid: str, seq: int, issued_at: int, monitor_id: str, status: str
) -> None:
    model = MonitorHeartbeat(
        procedure_id=pid, seq=seq, issued_at=issued_at, monitor_id=monitor_id, status=status
    )  # type: ignore[arg-type]
    ours = heartbeat_json(pid, seq, issued_at, monitor_id, status)
    assert MonitorHeartbeat.model_validate_json(ours) == model
    if (
        monitor_id.isascii()
        and monitor_id.isprintable()
        and '"' not in monitor_id
        and "\\" not in monitor_id
    ):
        assert ours == model.model_dump_json().encode()
