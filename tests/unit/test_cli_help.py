"""What `--help` tells a new user: every command described, every flag explained with
its default, both spellings of the topic prefix accepted everywhere."""

from __future__ import annotations

import argparse

import pytest
from prometheus_client import generate_latest

from monitor.cli import build_parser, main, walk
from monitor.metrics import MonitorMetrics

PARSERS = {p.prog: p for p in walk(build_parser())}
# Flags of `monitor/kafka/settings.py add_kafka_arguments` (owned by the transport).
KAFKA_FLAGS_WITHOUT_DEFAULT_HELP = {"--topic-prefix", "--sasl-username"}


def _arguments(p: argparse.ArgumentParser) -> list[argparse.Action]:
    skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    return [a for a in p._actions if not isinstance(a, skip) and a.help != argparse.SUPPRESS]


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_command_is_described(prog: str) -> None:
    assert PARSERS[prog].description, f"{prog} has no description"


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_flag_has_help_naming_its_default(prog: str) -> None:
    for a in _arguments(PARSERS[prog]):
        name = a.option_strings[0] if a.option_strings else a.dest
        if name in KAFKA_FLAGS_WITHOUT_DEFAULT_HELP:
            continue
        assert a.help, f"{prog} {name}: no help"
        if a.default not in (None, False, [], argparse.SUPPRESS):
            assert "default" in a.help, f"{prog} {name}: default {a.default!r} not in its help"


WITH_PREFIX = sorted(
    prog
    for prog, parser in PARSERS.items()
    if {"--topic-prefix", "--prefix"} & set(parser._option_string_actions)
)


@pytest.mark.parametrize("prog", WITH_PREFIX)
def test_both_prefix_spellings_are_accepted(prog: str) -> None:
    assert len(WITH_PREFIX) >= 8
    actions = PARSERS[prog]._option_string_actions
    assert actions["--prefix"].dest == actions["--topic-prefix"].dest


def test_prefix_and_topic_prefix_set_the_same_value() -> None:
    parser = build_parser()
    for flag in ("--prefix", "--topic-prefix"):
        run = parser.parse_args(["run", flag, "t1-"])
        topics = parser.parse_args(["broker", "topics", flag, "t1-"])
        assert run.topic_prefix == "t1-" and topics.prefix == "t1-"


def test_a_typo_names_the_command_typed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--bogus-flag"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "usage: telesafe run [options]",
        "telesafe run: unrecognized arguments: --bogus-flag (see `telesafe run --help`)",
    ]


def test_metrics_have_no_created_series() -> None:
    m = MonitorMetrics(with_process=False)
    m.warnings.labels("heartbeat_silence").inc()
    m.ack_delay.observe(0.02)
    text = generate_latest(m.registry).decode()
    assert "telesafe_warnings_total" in text
    assert "_created" not in text
