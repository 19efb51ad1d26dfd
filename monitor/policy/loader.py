"""Load policy packs: YAML -> JSON Schema check -> model, every problem with its JSON path.

A pack is refused as a whole if anything is wrong; the monitor never runs half a pack.
`telesafe run --rules DIR` and `telesafe policy check DIR` load a directory the same way
(`check_dir`): every file, the same duplicate-name and default-pack rules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from monitor.policy.model import PolicyPack

# PolicyError and Problem are re-exported: callers import them from here.
from monitor.policy.problems import PolicyError as PolicyError
from monitor.policy.problems import Problem as Problem
from monitor.policy.problems import show, validate

DEFAULT_PACK = "default"


@dataclass(frozen=True)
class LoadedPack:
    pack: PolicyPack
    sha256: str
    source: str

    @property
    def name(self) -> str:
        return self.pack.name

    @property
    def version(self) -> str:
        return self.pack.version


def schema() -> dict[str, Any]:
    out = PolicyPack.model_json_schema()
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = "telesafe policy pack"
    return out


def rules_dir() -> Path:
    """The shipped packs. `monitor/rules` is a symlink to the top-level `rules/` in a checkout
    and a real directory in an installed wheel."""
    return Path(str(resources.files("monitor"))) / "rules"


def _schema() -> dict[str, Any]:
    path = rules_dir() / "schema.json"
    return json.loads(path.read_text()) if path.exists() else schema()


def content_hash(data: dict[str, Any]) -> str:
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def parse_pack(data: Any, source: str) -> LoadedPack:
    """The pack in ``data`` (parsed YAML); PolicyError lists every problem it has."""
    if data is None:
        empty = "the file is empty; a policy pack is a mapping of fields (name, version, ...)"
        raise PolicyError([Problem(source, "$", empty)])
    if not isinstance(data, dict):
        raise PolicyError([Problem(source, "$", f"a policy pack must be a mapping of fields; "
                                   f"it is {show(data)}")])  # fmt: skip
    pack = validate(source, data, _schema())
    return LoadedPack(pack=pack, sha256=content_hash(pack.model_dump(mode="json")), source=source)


def load_pack_file(path: str | Path) -> LoadedPack:
    """The pack in a YAML (or JSON) file; PolicyError lists every problem it has."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PolicyError([Problem(str(p), "", "cannot read: not UTF-8 text")]) from None
    except OSError as exc:
        raise PolicyError([Problem(str(p), "", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError([Problem(str(p), "$", _yaml_sentence(exc))]) from None
    return parse_pack(data, str(p))


def _yaml_sentence(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = str(getattr(exc, "problem", None) or "cannot be parsed")
    problem = problem.replace("'<stream end>'", "the end of the file")
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {problem}"


def _name_clashes(packs: Sequence[LoadedPack]) -> list[Problem]:
    """A pack whose name an earlier pack already uses (the duplicate-name rule)."""
    first: dict[str, LoadedPack] = {}
    out: list[Problem] = []
    for lp in packs:
        if lp.name in first:
            out.append(Problem(lp.source, "$.name", f"pack name {lp.name!r} is also used by "
                               f"{first[lp.name].source}; names must be unique"))  # fmt: skip
        else:
            first[lp.name] = lp
    return out


def _no_default(packs: Sequence[LoadedPack], default: str, source: str) -> list[Problem]:
    if any(lp.name == default for lp in packs):
        return []
    return [Problem(source, "", f"no valid policy pack is named {default!r} (the default "
                    "pack, for procedures that name none)")]  # fmt: skip


class PackRegistry:
    """Packs by name; procedures pick one with `procedure_start.policy`."""

    def __init__(self, packs: list[LoadedPack], default: str = DEFAULT_PACK) -> None:
        problems = _name_clashes(packs) or _no_default(packs, default, "policy packs")
        if problems:
            raise PolicyError(problems)
        self._packs = {lp.name: lp for lp in packs}
        self.default = self._packs[default]

    def get(self, name: str | None) -> LoadedPack | None:
        if name is None:
            return self.default
        return self._packs.get(name)

    def all(self) -> list[LoadedPack]:
        return list(self._packs.values())

    @classmethod
    def from_dir(
        cls, directory: str | Path | None = None, default: str = DEFAULT_PACK
    ) -> PackRegistry:
        """Every `*.yaml` pack of ``directory`` (default: the shipped rules/); PolicyError
        lists every problem of every file, as `telesafe policy check DIR` prints them."""
        return check_dir(directory, default).registry()


@dataclass(frozen=True)
class PackFile:
    """One file of a pack directory: its pack, or why it cannot be used."""

    path: Path
    pack: LoadedPack | None = None
    error: PolicyError | None = None


@dataclass(frozen=True)
class DirCheck:
    """A pack directory checked as `telesafe run --rules DIR` loads it."""

    directory: Path
    default: str
    files: list[PackFile]
    problems: list[Problem]  # of the directory as a whole: no packs, no default pack

    @property
    def ok(self) -> bool:
        return not self.problems and all(f.error is None for f in self.files)

    def all_problems(self) -> list[Problem]:
        return [p for f in self.files if f.error for p in f.error.problems] + self.problems

    def registry(self) -> PackRegistry:
        if not self.ok:
            raise PolicyError(self.all_problems())
        return PackRegistry([f.pack for f in self.files if f.pack], default=self.default)


def check_dir(directory: str | Path | None = None, default: str = DEFAULT_PACK) -> DirCheck:
    """Load every `*.yaml` in ``directory`` and apply the registry's rules (unique names,
    a default pack), recording each file's result instead of stopping at the first."""
    d = Path(directory) if directory else rules_dir()
    if not d.is_dir():
        where = Problem(str(d), "", "not a directory of policy packs")
        return DirCheck(d, default, [], [where])
    files: list[PackFile] = []
    for path in sorted(p for p in d.glob("*.yaml") if p.is_file()):
        try:
            files.append(PackFile(path, pack=load_pack_file(path)))
        except PolicyError as exc:
            files.append(PackFile(path, error=exc))
    clashes = {pr.source: pr for pr in _name_clashes([f.pack for f in files if f.pack])}
    files = [
        PackFile(f.path, error=PolicyError([clashes[str(f.path)]])) if str(f.path) in clashes else f
        for f in files
    ]
    if not files:
        return DirCheck(d, default, [], [Problem(str(d), "", "no policy packs (*.yaml) found")])
    valid = [f.pack for f in files if f.pack]
    return DirCheck(d, default, files, _no_default(valid, default, str(d)))
