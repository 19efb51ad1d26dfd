"""ICD §9 replay: a recording with faults replays to byte-identical decisions, via the
library and via `telesafe replay`, and the decisions include the expected safe-stops."""

from __future__ import annotations

import base64
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from monitor.engine.clock import MS
from monitor.engine.engine import EngineConfig
from monitor.icd.decode import MAX_RECORD_BYTES, Rejection, decode_telemetry
from monitor.replay.recording import (
    RecordingError,
    RecordingWriter,
    encode_line,
    read_recording,
)
from monitor.replay.replayer import dumps, replay
from tests.unit.enginekit import shipped_packs

T0 = 1_770_000_000_000_000_000
CONSOLE = "telesafe.telemetry.console"
ROBOT = "telesafe.telemetry.robot"
OPERATOR = "telesafe.operator"


class Rec:
    """Builds ICD §9 lines for a synthetic run: per-(procedure, site) seq, fresh sent_at."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seq: dict[tuple[str, str], int] = {}

    def tel(self, t: int, pid: str, site: str, type_: str, **fields: Any) -> None:
        k = (pid, site)
        seq = self.seq.get(k, 0)
        self.seq[k] = seq + 1
        value = {
            "v": 1,
            "type": type_,
            "procedure_id": pid,
            "site": site,
            "seq": seq,
            "sent_at": t,
            **fields,
        }
        topic = CONSOLE if site == "console" else ROBOT
        self.raw(t, topic, pid, json.dumps(value).encode())

    def raw(self, t: int, topic: str, key: str, value: bytes) -> None:
        self.lines.append(encode_line(t, topic, key.encode(), value))

    def hb(self, t: int, pid: str, site: str) -> None:
        self.tel(
            t,
            pid,
            site,
            "heartbeat",
            state="operating",
            clock={"source": "ptp", "offset_ns": 0, "max_error_ns": 1000},
        )

    def start(self, t: int, pid: str) -> None:
        self.tel(
            t,
            pid,
            "console",
            "procedure_start",
            surgeon_id="s",
            robot={"model": "m", "serial": "1"},
            arms=["psm1"],
        )


def synthetic_recording(path: Path) -> Path:
    r = Rec()
    r.start(T0, "P1")
    r.start(T0 + 5 * MS, "P2")
    robot_last = {"P1": 0, "P2": 0}
    for i in range(100):  # 2 s at 20 ms
        t = T0 + 10 * MS + i * 20 * MS
        for pid in ("P1", "P2"):
            r.hb(t, pid, "console")
            if not (pid == "P1" and i >= 50):  # P1's robot falls silent after 1 s
                r.hb(t + 1000, pid, "robot")
                robot_last[pid] = t + 1000
        if i % 5 == 0:
            r.tel(t + 2000, "P1", "robot", "latency", channel="control", samples_ms=[48.0, 51.5])
            r.tel(
                t + 3000,
                "P2",
                "robot",
                "link",
                rtt_ms=48,
                jitter_ms=2,
                loss_ratio=0,
                window_ms=1000,
            )
        if i == 10:
            r.raw(t + 4000, ROBOT, "P1", b"\xff\xfe garbage")  # not UTF-8 JSON
            r.raw(t + 5000, ROBOT, "P1", b'{"v": 1, "type": "heartbeat", "x": NaN}')
        if i == 20:
            r.tel(
                t + 6000,
                "P2",
                "console",
                "heartbeat",
                state="operating",
                clock={"source": "ptp", "offset_ns": 0, "max_error_ns": 0},
                extra="fine",
            )
            p2_out = t + 7000
            r.tel(
                p2_out,
                "P2",
                "robot",
                "kinematics",
                arm="psm1",
                samples=[{"t": p2_out, "p": [0, 0, -100]}, {"t": p2_out + MS, "p": [0, 0, -15]}],
            )
        if i == 30:
            note = {"v": 1, "type": "note", "procedure_id": "P1", "operator_id": "op", "text": "n"}
            r.raw(t + 8000, OPERATOR, "P1", json.dumps(note).encode())
    r.lines.sort(key=lambda line: json.loads(line)["received_at"])  # receipt order
    f = path / "run.jsonl"
    f.write_text("\n".join(r.lines) + "\n")
    return f


def replay_lines(f: Path) -> list[str]:
    cfg = EngineConfig(monitor_id="replay")
    return [dumps(x) for x in replay(read_recording(f), shipped_packs(), cfg)]


def cli_output(args: list[str]) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(args) == 0
    return buf.getvalue()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_recording(tmp_path_factory.mktemp("rec"))


def test_replay_is_byte_identical(recording: Path) -> None:
    a, b = replay_lines(recording), replay_lines(recording)
    assert a == b
    assert len(a) > 50


def test_cli_replay_is_byte_identical_and_equals_library(recording: Path) -> None:
    one = cli_output(["replay", str(recording)])
    two = cli_output(["replay", str(recording)])
    assert one == two
    assert one == "".join(x + "\n" for x in replay_lines(recording))


def test_replay_decisions_include_the_expected_safe_stops(recording: Path) -> None:
    out = [json.loads(x) for x in replay_lines(recording)]
    issued = [
        (x["command"]["procedure_id"], x["command"]["policy"]["rule"], x["t_ns"])
        for x in out
        if x["decision"] == "command" and x["resend"] == 0 and x["command"]["type"] == "safe_stop"
    ]
    # P1: robot's last fresh heartbeat at i = 49; silence > 300 ms trips 1 ns after that.
    p1_last = T0 + 10 * MS + 49 * 20 * MS + 1000
    p2_out = T0 + 10 * MS + 20 * 20 * MS + 7000
    assert issued == [
        ("P2", "workspace_box", p2_out),
        ("P1", "heartbeat_silence", p1_last + 300 * MS + 1),
    ]
    stops = {x["data"]["command_id"] for x in out if x.get("kind") == "safe_stop_issued"}
    resent = {x["command"]["command_id"] for x in out if x["decision"] == "command"}
    assert resent == stops  # re-sends keep the ids
    rejected = [x for x in out if x["decision"] == "rejected"]
    assert [("UTF-8" in x["reason"], "NaN" in x["reason"]) for x in rejected] == [
        (True, False),
        (False, True),
    ]
    assert any(x.get("kind") == "operator_note" for x in out)
    # Decision times never run backwards.
    ts = [x["t_ns"] for x in out]
    assert ts == sorted(ts)


def test_replay_writes_to_out_file(recording: Path, tmp_path: Path) -> None:
    dst = tmp_path / "decisions.jsonl"
    cli_output(["replay", str(recording), "--out", str(dst)])
    assert dst.read_text() == "".join(x + "\n" for x in replay_lines(recording))


def test_replay_with_another_default_policy_changes_the_stamp(recording: Path) -> None:
    rules = Path(__file__).resolve().parents[2] / "rules"
    out = cli_output(
        ["replay", str(recording), "--policy", str(rules / "demo-forbidden-zone.yaml")]
    )
    packs = {
        json.loads(x)["command"]["policy"]["pack"]
        for x in out.splitlines()
        if '"decision":"command"' in x
    }
    assert packs == {"demo-forbidden-zone"}


def test_replay_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "absent.jsonl")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"received_at": "soon", "topic": "x"}\n')
    assert main(["replay", str(bad)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    with pytest.raises(RecordingError):
        list(read_recording(bad))


def test_recording_writer_round_trip(tmp_path: Path) -> None:
    from monitor.engine.clock import Instant

    f = tmp_path / "w.jsonl"
    w = RecordingWriter(f)
    w.write(Instant(1, 42), ROBOT, b"P1", b'{"a": 1}')
    w.write(Instant(2, 43), ROBOT, None, b"\x00\xff")
    w.close()
    recs = list(read_recording(f))
    assert [(r.received_at, r.key, r.value) for r in recs] == [
        (42, b"P1", b'{"a":1}'),
        (43, None, b"\x00\xff"),
    ]
    line = json.loads(f.read_text().splitlines()[1])
    assert base64.b64decode(line["value_raw"]) == b"\x00\xff"


HB = {
    "v": 1,
    "type": "heartbeat",
    "procedure_id": "P1",
    "site": "robot",
    "seq": 0,
    "sent_at": 0,
    "state": "idle",
    "clock": {"source": "ptp", "offset_ns": 0, "max_error_ns": 0},
}


def _no_constants(token: str) -> None:
    raise ValueError(f"{token} in a recording line")


def _padded(n: int) -> bytes:
    body = json.dumps(HB).encode()
    return body[:-1] + b" " * (n - len(body)) + b"}"


@pytest.mark.parametrize(
    "value",
    [
        json.dumps(HB).encode(),
        json.dumps(HB, indent=3).encode(),
        json.dumps(HB).encode("utf-16"),  # JSON in another encoding: not UTF-8 JSON
        json.dumps(HB).encode("utf-32-le"),
        b"\xef\xbb\xbf" + json.dumps(HB).encode(),  # UTF-8 BOM
        _padded(MAX_RECORD_BYTES),
        _padded(MAX_RECORD_BYTES + 1),  # > 1 MiB only because of whitespace
        json.dumps({**HB, "x": float("nan")}).encode(),
        json.dumps({**HB, "x": 1e400}).replace("Infinity", "1e400").encode(),
        b"[1]",
        b"",
    ],
    ids=lambda v: f"{len(v)}B:{v[:12]!r}",
)
def test_recording_preserves_the_live_verdict(value: bytes, tmp_path: Path) -> None:
    """Replay must judge a recorded record as the live monitor judged it (ICD §9)."""
    live = decode_telemetry(value, b"P1", "robot")
    f = tmp_path / "one.jsonl"
    f.write_text(encode_line(1, ROBOT, b"P1", value) + "\n")
    json.loads(f.read_text(), parse_constant=_no_constants)  # the line is strict JSON
    (rec,) = read_recording(f)
    again = decode_telemetry(rec.value, rec.key, "robot")
    assert isinstance(again, Rejection) == isinstance(live, Rejection), (live, again)
    if isinstance(live, Rejection):
        assert isinstance(again, Rejection) and again.code == live.code
    else:
        assert again == live


# --- the monitor id comes from the recording (docs/record-replay.md) --------------------

LIVE = "telesafe-live-7"


def _silent_robot(r: Rec, until_ms: int = 1500) -> None:
    """P1: both sites beat every 20 ms; the robot falls silent after 500 ms."""
    r.start(T0, "P1")
    for ms in range(10, until_ms, 20):
        t = T0 + ms * MS
        r.hb(t, "P1", "console")
        if ms < 500:
            r.hb(t + 1000, "P1", "robot")


def _write(path: Path, lines: list[str], monitor_id: str | None) -> Path:
    if monitor_id is not None:
        lines = [json.dumps({**json.loads(x), "monitor_id": monitor_id}) for x in lines]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def acked(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    """A run whose robot acknowledged the live monitor's safe-stop 20 ms after it was sent:
    the recording's lines (without monitor_id) and the live command id."""
    r = Rec()
    _silent_robot(r)
    lines = sorted(r.lines, key=lambda x: json.loads(x)["received_at"])
    f = _write(tmp_path_factory.mktemp("live") / "no-ack.jsonl", lines, None)
    live = [
        x
        for x in replay(read_recording(f), shipped_packs(), EngineConfig(monitor_id=LIVE))
        if x["decision"] == "command" and x["command"]["type"] == "safe_stop"
    ]
    cid, sent = live[0]["command"]["command_id"], live[0]["t_ns"]
    ack_at = sent + 20 * MS
    r.tel(ack_at, "P1", "robot", "safe_stop_ack", command_id=cid, result="safe_stopped", at=ack_at)
    return sorted(r.lines, key=lambda x: json.loads(x)["received_at"]), cid


def _replay_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[list[Any], str]:
    assert main(["replay", *args]) == 0
    out, err = capsys.readouterr()
    return [json.loads(x) for x in out.splitlines()], err


def _kinds(out: list[dict[str, Any]]) -> list[str]:
    return [x["kind"] for x in out if x["decision"] == "event"]


def test_replay_takes_the_monitor_id_from_the_recording(
    acked: tuple[list[str], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines, cid = acked
    out, err = _replay_cli([str(_write(tmp_path / "rec.jsonl", lines, LIVE))], capsys)
    assert err == ""
    first = next(x["command"] for x in out if x["decision"] == "command")
    assert first["monitor_id"] == LIVE
    stops = [x for x in out if x["decision"] == "command" and x["command"]["type"] == "safe_stop"]
    assert [s["command"]["command_id"] for s in stops] == [cid]  # acknowledged: no re-send
    kinds = _kinds(out)
    assert "safe_stop_acknowledged" in kinds
    assert "ack_unmatched" not in kinds and "safe_stop_escalated" not in kinds


def test_replay_as_another_monitor_warns_that_the_acks_match_nothing(
    acked: tuple[list[str], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines, cid = acked
    rec = _write(tmp_path / "rec.jsonl", lines, LIVE)
    out, err = _replay_cli([str(rec), "--monitor-id", "replay"], capsys)
    assert "ack_unmatched" in _kinds(out)
    assert err.splitlines() == [
        f"telesafe replay: warning: the recording was made by monitor(s) {LIVE}; replayed as "
        "'replay' (--monitor-id), so command ids differ from the live run's",
        f"telesafe replay: warning: 1 recorded safe_stop_ack(s) match no replayed command "
        f"(first: {cid} of P1); the replay re-sends and escalates where the live robot had "
        "acknowledged. Likely cause: --monitor-id differs from the live monitor's",
    ]


def test_an_older_recording_without_monitor_id_still_replays(
    acked: tuple[list[str], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines, _ = acked
    out, err = _replay_cli([str(_write(tmp_path / "old.jsonl", lines, None))], capsys)
    assert {x["command"]["monitor_id"] for x in out if x["decision"] == "command"} == {"replay"}
    first, second = err.splitlines()
    assert first.startswith("telesafe replay: warning: the recording names no monitor")
    assert "give --monitor-id to match them" in first
    assert second.startswith("telesafe replay: warning: 1 recorded safe_stop_ack(s)")
    # ... and with the live id given, it is the live run again.
    out, err = _replay_cli([str(tmp_path / "old.jsonl"), "--monitor-id", LIVE], capsys)
    assert err == "" and "safe_stop_acknowledged" in _kinds(out)


def test_recording_writer_names_its_monitor_on_every_line(tmp_path: Path) -> None:
    from monitor.engine.clock import Instant
    from monitor.replay.recording import recorded_monitor_id

    f = tmp_path / "w.jsonl"
    w = RecordingWriter(f, "telesafe-3")
    w.write(Instant(1, 42), ROBOT, b"P1", b'{"a": 1}')
    w.write(Instant(2, 43), ROBOT, None, b"\x00\xff")
    w.close()
    assert [json.loads(x)["monitor_id"] for x in f.read_text().splitlines()] == ["telesafe-3"] * 2
    assert [r.monitor_id for r in read_recording(f)] == ["telesafe-3"] * 2
    assert recorded_monitor_id(f) == "telesafe-3"


def test_record_learns_each_procedures_monitor_from_its_commands() -> None:
    from monitor.replay.cli import Owners

    owners = Owners()
    assert owners.of(b"P1") is None
    for value in (
        b"not json",
        b'{"type": "monitor_heartbeat", "procedure_id": "P1"}',
        b'{"type": "monitor_heartbeat", "procedure_id": "P1", "monitor_id": "m-1"}',
        b'{"type": "safe_stop", "procedure_id": "P2", "monitor_id": "m-2"}',
        None,
    ):
        owners.learn(value)
    assert (owners.of(b"P1"), owners.of(b"P2"), owners.of(None)) == ("m-1", "m-2", None)
