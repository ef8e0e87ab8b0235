"""Loading profiles and labs from YAML with errors that point at the file, line and field.

PyYAML's composer keeps the position of every node, so each validation error of pydantic
(a path of keys and indexes) is mapped back to the YAML line it came from. Every problem
in a file is reported at once, one line each, never as a traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from testbed.errors import ConfigError
from testbed.model.lab import Lab
from testbed.model.profile import Profile

PathKey = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Source:
    """A parsed YAML document and where each of its values sits in the file."""

    path: Path
    data: Any
    lines: dict[PathKey, int]

    def line_of(self, loc: Sequence[str | int]) -> int:
        """Line of the deepest known node along ``loc`` (1-based; 1 when unknown)."""
        key: PathKey = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)

    def problem(self, loc: Sequence[str | int], message: str) -> str:
        """One line naming the file, the YAML line and the field."""
        field = format_loc(loc) or "(document)"
        return f"{self.path}:{self.line_of(loc)}: {field}: {message}"


def format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_yaml(path: Path) -> Source:
    """Read a YAML file into plain data plus the line of every node."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{path}:{line}: not valid YAML: {reason}"]) from None
    if root is None:
        raise ConfigError([f"{path}:1: the file is empty"])
    lines: dict[PathKey, int] = {}
    problems: list[str] = []
    data = _convert(root, (), lines, problems, path)
    if problems:
        raise ConfigError(problems)
    return Source(path, data, lines)


def _convert(
    node: yaml.Node, loc: PathKey, lines: dict[PathKey, int], problems: list[str], path: Path
) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node)) if key_node.value != "<<" else "<<"
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                line = key_node.start_mark.line + 1
                where = format_loc((*loc, key))
                problems.append(f"{path}:{line}: {where}: duplicate key")
                continue
            out[key] = _convert(value_node, (*loc, key), lines, problems, path)
            lines[(*loc, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(item, (*loc, i), lines, problems, path) for i, item in enumerate(node.value)
        ]
    value = yaml.safe_load(yaml.serialize(node))
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{path}:{lines[loc]}: {format_loc(loc)}: numbers must be finite")
    return value


def validate(source: Source, model: type[M]) -> M:
    """Validate parsed data against a model; every problem becomes one located line."""
    try:
        return model.model_validate_json(json.dumps(source.data, default=str))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = [p for p in err["loc"] if isinstance(p, str | int)]
            # pydantic appends the union member tried (e.g. "function-before[...]"); drop it
            loc = [p for p in loc if not (isinstance(p, str) and "[" in p)]
            problems.append(source.problem(loc, _message(err)))
        raise ConfigError(problems) from None


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see `testbed schema`)"
    if kind == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    if "input" in err and kind not in ("model_type", "dict_type"):
        shown = json.dumps(err["input"], default=str)
        if len(shown) <= 60:
            msg += f" (got {shown})"
    return msg


def load_profile(path: str | Path) -> tuple[Profile, Source]:
    source = parse_yaml(Path(path))
    _require_mapping(source)
    return validate(source, Profile), source


def load_lab(path: str | Path) -> tuple[Lab, Source]:
    from testbed.model.checks import check_lab

    source = parse_yaml(Path(path))
    _require_mapping(source)
    lab = validate(source, Lab)
    problems = [source.problem(loc, msg) for loc, msg in check_lab(lab)]
    if problems:
        raise ConfigError(problems)
    return lab, source


def load_any(path: str | Path) -> Profile | Lab:
    """Load a profile or a lab, telling them apart by their keys (labs have ``nodes``)."""
    source = parse_yaml(Path(path))
    _require_mapping(source)
    if "nodes" in source.data:
        return load_lab(path)[0]
    return load_profile(path)[0]


def _require_mapping(source: Source) -> None:
    if not isinstance(source.data, dict):
        raise ConfigError([source.problem((), "expected a mapping of fields at the top level")])
