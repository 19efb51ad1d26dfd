"""Argument types shared by the `telesafe` commands: a bad value is a usage error naming
the flag (argparse prints ``telesafe <command>: argument --flag: <why>``), never a
traceback later on."""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type[int] | type[float], what: str) -> float:
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return v


def positive_int(text: str) -> int:
    """A whole number >= 1 (partitions, run numbers)."""
    v = int(_number(text, int, "a whole number"))
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v}: need at least 1")
    return v


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (entry indexes, sizes, counts)."""
    v = int(_number(text, int, "a whole number"))
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative")
    return v


def port(text: str) -> int:
    """A TCP port, 1-65535."""
    v = int(_number(text, int, "a port number"))
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{v} is not a port number (1-65535)")
    return v


def port_or_any(text: str) -> int:
    """A TCP port, or 0 for any free port."""
    return 0 if text.strip() == "0" else port(text)


def seconds(text: str) -> float:
    """A finite number of seconds > 0 (timeouts, durations, intervals)."""
    v = _number(text, float, "a number of seconds")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: need a number of seconds above 0")
    return v


def non_negative_seconds(text: str) -> float:
    """A finite number of seconds >= 0 (0 usually means "never" or "none")."""
    v = _number(text, float, "a number of seconds")
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: need a number of seconds >= 0")
    return v


def non_negative_ms(text: str) -> float:
    """A finite number of milliseconds >= 0."""
    v = _number(text, float, "a number of milliseconds")
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: need a number of milliseconds >= 0")
    return v
