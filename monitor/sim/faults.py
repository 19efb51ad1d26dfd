"""Fault specs: the grammar of `--fault SPEC` and of YAML scenario files.

Grammar (one spec)::

    KIND[:TARGET[=VALUE]][@TIME[,OPTION=VALUE]...]

    TIME, for=  seconds since the procedure started: 5, 5s, 2.5s, 500ms
    OPTION      for=DURATION      the fault ends after DURATION (default: until the end)
                procedure=ID|N    only that procedure (id, or 0-based index; default 0)
                count=N           garbage: how many invalid records (default 5)
                axis=z|x          out-of-box: which face to cross (default z)
                by=MM             out-of-box: how far beyond the face (default 10)
                speed=MM/S        out-of-box, zone: approach speed (default 90)
                drop=yes|no       loss: also really drop that share of records (default no)
                reason=R          end: completed | converted_to_local | aborted

Kinds and their target/value (see docs/simulator.md for the effect of each):

    heartbeat-stop:SITE          silence:SITE            garbage:SITE
    latency:CHANNEL=MS           latency-spike:CHANNEL=MS
    loss:SITE=RATIO              jitter:SITE=MS
    out-of-box:ARM               speed:ARM=MM/S          grip:ARM=N
    zone:ARM=X,Y,Z               end

SITE is console|robot, CHANNEL control|video, ARM psm1|psm2|psm3.
Options follow the time, so `@TIME` is needed to give options
(`garbage:robot@3s,count=10`); without `@` the fault starts at 0 s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from monitor.errors import EXIT_USAGE, SimulatorLayerError

SITES = ("console", "robot")
CHANNELS = ("control", "video")
ARMS = ("psm1", "psm2", "psm3")
END_REASONS = ("completed", "converted_to_local", "aborted")

# kind -> (target kind, value kind, allowed options)
_COMMON = {"for", "procedure"}
KINDS: dict[str, tuple[str | None, str | None, set[str]]] = {
    "heartbeat-stop": ("site", None, _COMMON),
    "silence": ("site", None, _COMMON),
    "garbage": ("site", None, {"procedure", "count"}),
    "latency": ("channel", "number", _COMMON),
    "latency-spike": ("channel", "number", {"procedure"}),
    "loss": ("site", "ratio", _COMMON | {"drop"}),
    "jitter": ("site", "number", _COMMON),
    "out-of-box": ("arm", None, _COMMON | {"axis", "by", "speed"}),
    "speed": ("arm", "number", _COMMON),
    "grip": ("arm", "number", _COMMON),
    "zone": ("arm", "point", _COMMON | {"speed"}),
    "end": (None, None, {"procedure", "reason"}),
}

_TIME_RE = re.compile(r"^\s*(-?\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")


class FaultSpecError(SimulatorLayerError, ValueError):
    """A fault spec or scenario file that cannot be understood (message is user-facing)."""

    exit_code = EXIT_USAGE


def parse_duration(text: str | float | int, what: str = "time") -> float:
    """'5', '5s', '2.5s', '500ms' -> seconds."""
    if isinstance(text, bool):
        raise FaultSpecError(f"{what}: expected a duration, got {text!r}")
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = _TIME_RE.match(text)
        if not m:
            raise FaultSpecError(f"{what}: {text!r} is not a duration (use 5, 5s, 2.5s or 500ms)")
        value = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    if value < 0:
        raise FaultSpecError(f"{what}: must not be negative, got {text!r}")
    return value


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float = 0.0  # seconds since procedure start
    target: str | None = None  # site, channel or arm
    value: float | None = None
    point: tuple[float, float, float] | None = None
    duration: float | None = None  # None: until the end
    procedure: str | int = 0  # id or index
    options: Mapping[str, str] = field(default_factory=dict)
    spec: str = ""  # the text it came from, for messages

    @property
    def until(self) -> float | None:
        return None if self.duration is None else self.at + self.duration

    def active(self, t: float) -> bool:
        if t < self.at:
            return False
        u = self.until
        return u is None or t < u

    def applies_to(self, index: int, procedure_id: str) -> bool:
        if isinstance(self.procedure, int):
            return self.procedure == index
        return self.procedure == procedure_id

    def option_float(self, name: str, default: float) -> float:
        raw = self.options.get(name)
        return default if raw is None else float(raw)

    def describe(self) -> str:
        return self.spec or self.kind


def _number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise FaultSpecError(f"{what}: {text!r} is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise FaultSpecError(f"{what}: {text!r} is not a finite number")
    return v


def build(
    kind: str,
    *,
    target: str | None = None,
    value: str | None = None,
    at: str | float | int = 0.0,
    options: Mapping[str, str] | None = None,
    spec: str = "",
) -> Fault:
    """Validate the parts of one fault (shared by the string and YAML forms)."""
    where = f"fault {spec!r}" if spec else f"fault {kind!r}"
    if kind not in KINDS:
        raise FaultSpecError(f"{where}: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    target_kind, value_kind, allowed = KINDS[kind]
    opts = dict(options or {})
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise FaultSpecError(
            f"{where}: option(s) {', '.join(unknown)} not allowed for {kind}"
            f" (allowed: {', '.join(sorted(allowed)) or 'none'})"
        )
    choices = {"site": SITES, "channel": CHANNELS, "arm": ARMS}
    if target_kind is None:
        if target:
            raise FaultSpecError(f"{where}: {kind} takes no target, got {target!r}")
    else:
        if not target:
            raise FaultSpecError(
                f"{where}: {kind} needs a {target_kind} ({'|'.join(choices[target_kind])})"
            )
        if target not in choices[target_kind]:
            allowed_targets = "|".join(choices[target_kind])
            raise FaultSpecError(
                f"{where}: {target!r} is not a valid {target_kind} ({allowed_targets})"
            )
    num: float | None = None
    point: tuple[float, float, float] | None = None
    if value_kind is None:
        if value is not None and value != "":
            raise FaultSpecError(f"{where}: {kind} takes no =VALUE, got {value!r}")
    elif value is None or value == "":
        hint = {"number": "=NUMBER", "ratio": "=RATIO (0..1)", "point": "=X,Y,Z (mm)"}[value_kind]
        raise FaultSpecError(f"{where}: {kind} needs a value: {kind}:{target}{hint}")
    elif value_kind == "point":
        parts = [p.strip() for p in value.split(",")]
        if len(parts) != 3:
            raise FaultSpecError(f"{where}: zone point must be X,Y,Z in mm, got {value!r}")
        x, y, z = (_number(p, where) for p in parts)
        point = (x, y, z)
    else:
        num = _number(value, where)
        if num < 0:
            raise FaultSpecError(f"{where}: value must not be negative, got {value!r}")
        if value_kind == "ratio" and num > 1:
            raise FaultSpecError(f"{where}: loss ratio must be within 0..1, got {value!r}")
    start = parse_duration(at, f"{where}: time")
    duration = None
    if "for" in opts:
        duration = parse_duration(opts["for"], f"{where}: for=")
        if duration <= 0:
            raise FaultSpecError(f"{where}: for= must be positive")
    procedure: str | int = 0
    if "procedure" in opts:
        raw = opts["procedure"]
        procedure = int(raw) if raw.isdigit() else raw
    if "count" in opts and (not opts["count"].isdigit() or int(opts["count"]) < 1):
        raise FaultSpecError(f"{where}: count= must be a positive integer")
    if "axis" in opts and opts["axis"] not in ("x", "z"):
        raise FaultSpecError(f"{where}: axis= must be x or z")
    for name in ("by", "speed"):
        if name in opts and _number(opts[name], f"{where}: {name}=") <= 0:
            raise FaultSpecError(f"{where}: {name}= must be positive")
    if "drop" in opts and opts["drop"] not in ("yes", "no", "true", "false"):
        raise FaultSpecError(f"{where}: drop= must be yes or no")
    if "reason" in opts and opts["reason"] not in END_REASONS:
        raise FaultSpecError(f"{where}: reason= must be one of {', '.join(END_REASONS)}")
    return Fault(
        kind=kind,
        at=start,
        target=target or None,
        value=num,
        point=point,
        duration=duration,
        procedure=procedure,
        options=opts,
        spec=spec or render(kind, target, value, at, opts),
    )


def render(
    kind: str, target: str | None, value: str | None, at: Any, opts: Mapping[str, str]
) -> str:
    s = kind
    if target:
        s += f":{target}"
        if value:
            s += f"={value}"
    s += f"@{at}"
    for k, v in opts.items():
        s += f",{k}={v}"
    return s


def parse_spec(text: str) -> Fault:
    """Parse one `--fault` spec string."""
    spec = text.strip()
    if not spec:
        raise FaultSpecError("empty fault spec")
    head, sep, tail = spec.partition("@")
    at: str = "0"
    options: dict[str, str] = {}
    if sep:
        time_part, *opt_parts = tail.split(",")
        at = time_part
        for part in opt_parts:
            k, eq, v = part.partition("=")
            if not eq or not k.strip() or not v.strip():
                raise FaultSpecError(f"fault {spec!r}: option {part!r} must be NAME=VALUE")
            if k.strip() in options:
                raise FaultSpecError(f"fault {spec!r}: option {k.strip()!r} given twice")
            options[k.strip()] = v.strip()
    kind, _, rest = head.partition(":")
    target, _, value = rest.partition("=")
    return build(
        kind.strip(),
        target=target.strip() or None,
        value=value.strip() or None,
        at=at.strip(),
        options=options,
        spec=spec,
    )


_TARGET_ALIASES = ("target", "site", "channel", "arm")


def fault_from_mapping(item: Mapping[str, Any], where: str) -> Fault:
    """One YAML scenario entry: either {spec: "..."} or the fields spelled out."""
    if "spec" in item:
        extra = set(item) - {"spec"}
        if extra:
            raise FaultSpecError(f"{where}: 'spec' cannot be combined with {sorted(extra)}")
        return parse_spec(str(item["spec"]))
    if "kind" not in item:
        raise FaultSpecError(f"{where}: each fault needs 'kind' (or 'spec')")
    targets = [k for k in _TARGET_ALIASES if k in item]
    if len(targets) > 1:
        raise FaultSpecError(f"{where}: give only one of {', '.join(targets)}")
    target = str(item[targets[0]]) if targets else None
    value: str | None = None
    if "value" in item:
        raw = item["value"]
        value = ",".join(str(x) for x in raw) if isinstance(raw, list) else str(raw)
    options: dict[str, str] = {}
    for k, v in item.items():
        if k in ("kind", "value", "at", *_TARGET_ALIASES):
            continue
        if isinstance(v, bool):
            v = "yes" if v else "no"
        options[str(k)] = str(v)
    at = item.get("at", 0)
    if not isinstance(at, str | int | float):
        raise FaultSpecError(f"{where}: 'at' must be a duration like 5s")
    return build(str(item["kind"]), target=target, value=value, at=at, options=options)


@dataclass
class Scenario:
    """A scenario file: faults plus optional run settings the CLI may override."""

    faults: list[Fault] = field(default_factory=list)
    name: str | None = None
    description: str | None = None
    duration: float | None = None
    procedures: int | None = None
    policy: str | None = None


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario YAML: a list of faults, or a mapping with `faults:` and settings."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text("utf-8"))
    except OSError as exc:
        raise FaultSpecError(f"scenario {str(p)!r}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise FaultSpecError(f"scenario {str(p)!r}: not valid YAML: {exc}") from None
    sc = Scenario()
    items: Sequence[Any]
    if doc is None:
        items = []
    elif isinstance(doc, list):
        items = doc
    elif isinstance(doc, dict):
        unknown = set(doc) - {"name", "description", "duration", "procedures", "policy", "faults"}
        if unknown:
            raise FaultSpecError(f"scenario {str(p)!r}: unknown key(s) {sorted(unknown)}")
        items = doc.get("faults") or []
        if not isinstance(items, list):
            raise FaultSpecError(f"scenario {str(p)!r}: 'faults' must be a list")
        sc.name = _opt_str(doc.get("name"))
        sc.description = _opt_str(doc.get("description"))
        sc.policy = _opt_str(doc.get("policy"))
        if doc.get("duration") is not None:
            sc.duration = parse_duration(doc["duration"], f"scenario {str(p)!r}: duration")
        if doc.get("procedures") is not None:
            n = doc["procedures"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise FaultSpecError(f"scenario {str(p)!r}: procedures must be a positive integer")
            sc.procedures = n
    else:
        raise FaultSpecError(f"scenario {str(p)!r}: expected a list of faults or a mapping")
    for i, item in enumerate(items):
        where = f"scenario {str(p)!r}, fault #{i + 1}"
        if isinstance(item, str):
            try:
                sc.faults.append(parse_spec(item))
            except FaultSpecError as exc:
                raise FaultSpecError(f"{where}: {exc}") from None
        elif isinstance(item, dict):
            try:
                sc.faults.append(fault_from_mapping(item, where))
            except FaultSpecError as exc:
                msg = str(exc)
                raise FaultSpecError(msg if msg.startswith(where) else f"{where}: {msg}") from None
        else:
            raise FaultSpecError(f"{where}: expected a spec string or a mapping")
    return sc


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)
