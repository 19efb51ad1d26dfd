"""Load policy packs: YAML -> JSON Schema check (with the JSON path of any problem) -> model.

A pack is refused as a whole if anything is wrong; the monitor never runs half a pack.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pydantic import ValidationError

from monitor.policy.model import PolicyPack

DEFAULT_PACK = "default"


class PolicyError(ValueError):
    """A pack that cannot be used; the message names the file, the JSON path and the problem."""


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


def _validator() -> jsonschema.protocols.Validator:
    path = rules_dir() / "schema.json"
    sch = json.loads(path.read_text()) if path.exists() else schema()
    cls = jsonschema.validators.validator_for(sch)
    return cls(sch)


def content_hash(data: dict[str, Any]) -> str:
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def parse_pack(data: Any, source: str) -> LoadedPack:
    if not isinstance(data, dict):
        raise PolicyError(
            f"{source}: $: a policy pack must be a mapping, got {type(data).__name__}"
        )
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise PolicyError(f"{source}: {first.json_path}: {first.message}{more}")
    try:
        pack = PolicyPack.model_validate(data)
    except ValidationError as err:  # cross-field rules the schema cannot express
        e = err.errors(include_url=False)[0]
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
        raise PolicyError(f"{source}: {path}: {e['msg']}") from None
    return LoadedPack(pack=pack, sha256=content_hash(pack.model_dump(mode="json")), source=source)


def load_pack_file(path: str | Path) -> LoadedPack:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{p}: $: not valid YAML: {exc}") from None
    return parse_pack(data, str(p))


class PackRegistry:
    """Packs by name; procedures pick one with `procedure_start.policy`."""

    def __init__(self, packs: list[LoadedPack], default: str = DEFAULT_PACK) -> None:
        self._packs: dict[str, LoadedPack] = {}
        for lp in packs:
            if lp.name in self._packs:
                raise PolicyError(
                    f"{lp.source}: pack name {lp.name!r} is also used by "
                    f"{self._packs[lp.name].source}"
                )
            self._packs[lp.name] = lp
        if default not in self._packs:
            raise PolicyError(f"no policy pack named {default!r} was loaded (the default pack)")
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
        d = Path(directory) if directory else rules_dir()
        files = sorted(p for p in d.glob("*.yaml") if p.is_file())
        if not files:
            raise PolicyError(f"{d}: no policy packs (*.yaml) found")
        return cls([load_pack_file(f) for f in files], default=default)
