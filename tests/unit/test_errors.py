"""One error root, one subclass per layer, one place for exit codes (monitor/errors.py)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import monitor
from monitor import errors
from monitor.audit.checkpoint import generate_key_files
from monitor.cli import main
from monitor.errors import EXIT_FAILED, EXIT_USAGE, TelesafeError, one_line

LAYERS = {
    name: cls
    for name, cls in vars(errors).items()
    if inspect.isclass(cls) and cls.__bases__ == (TelesafeError,) and name.endswith("LayerError")
}


def _monitor_exceptions() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(monitor.__path__, "monitor."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                found.append(cls)
    return found


def test_every_exception_of_telesafe_derives_from_one_layer() -> None:
    classes = _monitor_exceptions()
    assert len(classes) >= 19
    for cls in classes:
        if cls is TelesafeError:
            continue
        assert issubclass(cls, TelesafeError), f"{cls.__module__}.{cls.__name__}"
        layers = [layer for layer in LAYERS.values() if issubclass(cls, layer)]
        if cls not in (errors.UsageError, *LAYERS.values()):
            assert len(layers) == 1, f"{cls.__name__}: layers {layers}"


def test_layer_classes_keep_their_builtin_bases() -> None:
    """Code that catches ValueError (pydantic validators, key parsing) still catches them."""
    from monitor.audit.checkpoint import CheckpointError
    from monitor.policy.problems import PolicyError
    from monitor.sim.faults import FaultSpecError

    for cls in (CheckpointError, PolicyError, FaultSpecError):
        assert issubclass(cls, ValueError) and issubclass(cls, TelesafeError)


def test_exit_codes_are_distinct() -> None:
    codes = [v for k, v in vars(errors).items() if k.startswith("EXIT_")]
    assert len(codes) == len(set(codes)) == 5


def test_one_line_joins_a_listing() -> None:
    assert one_line("not in the ledger; procedures in it:\n  A (1)\n  B (2)\n") == (
        "not in the ledger; procedures in it: A (1); B (2)"
    )


def test_main_prints_a_telesafe_error_as_one_line_with_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, pub = generate_key_files(tmp_path / "k")
    not_a_ledger = tmp_path / "notes.txt"
    not_a_ledger.write_text("hello\n")
    assert main(["audit", "verify", str(not_a_ledger), "--pubkey", str(pub)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"telesafe audit verify: {not_a_ledger}: not a telesafe ledger (not an SQLite file)"
    ]


def test_a_failure_keeps_its_own_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "rules"
    empty.mkdir()
    (empty / "p.yaml").write_text("name: p\n")
    rc = main(["policy", "check", str(empty / "p.yaml")])
    assert rc == EXIT_FAILED  # a check that found problems is an answer, not bad usage
    assert "INVALID" in capsys.readouterr().err
