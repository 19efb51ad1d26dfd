"""Every problem of a policy pack, each with its JSON path and a plain sentence.

The JSON Schema (rules/schema.json) and the model's cross-field checks report in library
terms ("2 is not valid under any of the given schemas", "Value error, ..."). A pack author
should read what is wrong, where, and what was found instead:
`$.link.loss.warn_ratio: must be at most 1 (or null for none); it is 2`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import ValidationError

from monitor.errors import PolicyLayerError
from monitor.policy.model import PolicyPack, Problems

Path = tuple[str | int, ...]

_KIND = {
    "number": "a number",
    "integer": "a whole number",
    "string": "text",
    "array": "a list",
    "object": "a mapping of fields",
    "boolean": "true or false",
    "null": "null",
}
_BOUNDS = {
    "minimum": "at least",
    "exclusiveMinimum": "greater than",
    "maximum": "at most",
    "exclusiveMaximum": "less than",
}
# The only pattern in the schema; said in words instead of as a regular expression.
_PATTERNS = {
    "^[a-z0-9][a-z0-9._-]{0,63}$": "1 to 64 lower-case letters, digits, '.', '_' or '-', "
    "starting with a letter or a digit",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pack: where (file, JSON path such as `$.heartbeat.warn_ms`)
    and a plain sentence that says what is wrong and what was found."""

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.where()}"

    def where(self) -> str:
        """The problem without its file name, for a list under the file's name."""
        return f"{self.path}: {self.message}" if self.path else self.message


class PolicyError(PolicyLayerError, ValueError):
    """Packs that cannot be used. ``problems`` lists every problem found (never empty);
    the message is one line: the file, and each problem's JSON path and sentence."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("PolicyError needs at least one problem")
        self.problems = list(problems)
        super().__init__(_one_line(self.problems))


def _one_line(problems: Sequence[Problem]) -> str:
    by_source: dict[str, list[Problem]] = {}
    for pr in problems:
        by_source.setdefault(pr.source, []).append(pr)
    return "; ".join(
        f"{src}: {len(prs)} problems: " + "; ".join(pr.where() for pr in prs)
        if len(prs) > 1
        else str(prs[0])
        for src, prs in by_source.items()
    )


def json_path(parts: Iterable[str | int]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def show(value: Any) -> str:
    """A found value in a sentence: numbers and short JSON as written, containers by kind."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return f"the text {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _kinds(types: Any) -> str:
    names = [types] if isinstance(types, str) else list(types)
    return " or ".join(_KIND.get(t, t) for t in names)


def _sentence(err: jsonschema.ValidationError) -> str:
    """What one schema keyword failure means, in words (the path is given separately)."""
    v, found = err.validator, show(err.instance)
    want: Any = err.validator_value
    schema: Any = err.schema
    if v == "type":
        return f"must be {_kinds(want)}; it is {found}"
    if v in _BOUNDS:
        return f"must be {_BOUNDS[v]} {want}; it is {found}"
    if v == "const":
        return f"must be {json.dumps(want)}; it is {found}"
    if v == "enum":
        return f"must be one of {', '.join(json.dumps(w) for w in want)}; it is {found}"
    if v == "pattern":
        return f"must be {_PATTERNS.get(want, f'text matching {want}')}; it is {found}"
    if v == "minLength":
        return "must not be empty" if want == 1 else f"must be at least {want} characters long"
    if v in ("minItems", "maxItems"):
        lo = schema.get("minItems") if isinstance(schema, dict) else None
        hi = schema.get("maxItems") if isinstance(schema, dict) else None
        n = len(err.instance) if isinstance(err.instance, list) else 0
        if lo is not None and lo == hi:
            return f"must be a list of exactly {lo} items; it has {n}"
        return f"must have {'at least' if v == 'minItems' else 'at most'} {want} items; it has {n}"
    return f"is not valid here ({v} {json.dumps(want)}); it is {found}"


def _schema_errors(err: jsonschema.ValidationError) -> Iterable[tuple[Path, str]]:
    """(path, sentence) for one schema error; an anyOf with a null branch is explained by
    its other branch, plus that null is allowed."""
    path: Path = tuple(err.absolute_path)
    want: Any = err.validator_value
    schema: Any = err.schema
    instance: Any = err.instance
    if err.validator == "required":
        present = instance if isinstance(instance, dict) else {}
        for name in want:
            if name not in present:
                yield (*path, name), "is required but missing"
    elif err.validator == "additionalProperties" and want is False:
        known = sorted(schema.get("properties", {})) if isinstance(schema, dict) else []
        for name in instance:
            if name not in known:
                yield (*path, name), f"is not a known field here (known: {', '.join(known)})"
    elif err.validator == "anyOf":
        branches = want
        nullable = {"type": "null"} in branches
        for sub in err.context or []:
            if branches[sub.relative_schema_path[0]] == {"type": "null"}:
                continue
            for sub_path, sentence in _schema_errors(sub):
                if nullable and sub_path == path:  # null is allowed here, not deeper
                    sentence = sentence.replace("; it", " (or null for none); it", 1)
                yield sub_path, sentence
    else:
        yield path, _sentence(err)


def validate(source: str, data: Any, schema: dict[str, Any]) -> PolicyPack:
    """The pack in ``data``, or PolicyError listing every problem, in document order.

    The schema finds each field's own problems; the model adds its cross-field checks
    (warn below stop, box extents, one zone shape) and anything at a path the schema found
    nothing wrong with (NaN or infinity, which JSON Schema cannot refuse). A problem both
    report is said once, in the schema's words.
    """
    validator = jsonschema.validators.validator_for(schema)(schema)
    found: dict[tuple[Path, str], None] = {}
    for err in validator.iter_errors(data):
        for item in _schema_errors(err):
            found[item] = None
    taken = [path for path, _ in found]
    try:
        pack = PolicyPack.model_validate(data)
    except ValidationError as err:
        for item in _model_errors(err, taken):
            found[item] = None
    else:
        if not found:
            return pack
    ordered = sorted(found, key=lambda item: _order(data, item[0]))
    raise PolicyError([Problem(source, json_path(path), msg) for path, msg in ordered])


def _model_errors(err: ValidationError, taken: Sequence[Path]) -> Iterable[tuple[Path, str]]:
    for e in err.errors(include_url=False):
        loc: Path = tuple(e["loc"])
        ctx_error = (e.get("ctx") or {}).get("error")
        if isinstance(ctx_error, Problems):
            for sub, msg in ctx_error.items:
                yield (*loc, *sub), msg
        elif any(t[: len(loc)] == loc or loc[: len(t)] == t for t in taken):
            continue  # the same problem, already said in the schema's words
        elif e["type"] == "finite_number":
            yield loc, f"must be a finite number; it is {show(e['input'])}"
        else:
            yield loc, str(e["msg"]).replace("Input should be", "must be", 1)


def _order(data: Any, path: Path) -> tuple[int, ...]:
    """Where ``path`` is in the document: the index of each step (a missing field last)."""
    key: list[int] = []
    cur = data
    for part in path:
        if isinstance(cur, dict):
            names = list(cur)
            key.append(names.index(part) if part in cur else len(names))
            cur = cur.get(part)
        elif isinstance(cur, list) and isinstance(part, int):
            key.append(part)
            cur = cur[part] if part < len(cur) else None
        else:
            key.append(0)
            cur = None
    return tuple(key)
