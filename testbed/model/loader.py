"""Loading profiles and labs from YAML with errors that point at the file, line and field.

PyYAML's composer keeps the position of every node, so each validation error of pydantic
(a path of keys and indexes) is mapped back to the YAML line it came from. Every problem
in a file is reported at once, one line each, never as a traceback.
"""

from __future__ import annotations

import json
import math
import re
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
    converter = _Converter(path)
    data = converter.convert(root, ())
    if converter.problems:
        raise ConfigError(converter.problems)
    return Source(path, data, converter.lines)


class _Converter:
    """YAML nodes to plain data, recording the line of every value on the way.

    Problems (duplicate keys, unknown tags, recursive aliases, non-finite numbers) are
    collected rather than raised, so one pass reports them all.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[PathKey, int] = {}
        self.problems: list[str] = []
        self._active: set[int] = set()  # nodes being converted: an alias back to one loops

    def _problem(self, node: yaml.Node, loc: PathKey, message: str) -> None:
        where = format_loc(loc) or "(document)"
        self.problems.append(f"{self.path}:{node.start_mark.line + 1}: {where}: {message}")

    def convert(self, node: yaml.Node, loc: PathKey) -> Any:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if id(node) in self._active:
            self._problem(node, loc, "recursive YAML alias")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(item, (*loc, i)) for i, item in enumerate(node.value)]
            return self._scalar(node, loc)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: PathKey) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                # `<<: *base` (or a list of bases): keys of this mapping win over merged ones
                value = self.convert(value_node, loc)
                bases = value if isinstance(value, list) else [value]
                for base in bases:
                    if isinstance(base, dict):
                        merged = {**base, **merged}
                    else:
                        self._problem(value_node, loc, "a merge key (<<) needs a mapping")
                continue
            key = self._scalar(key_node, loc)
            key = key if isinstance(key, str) else str(key)
            if key in out:
                self._problem(key_node, (*loc, key), "duplicate key")
                continue
            self.lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = self.convert(value_node, (*loc, key))
        return {**merged, **out}

    def _scalar(self, node: yaml.Node, loc: PathKey) -> Any:
        try:
            value = yaml.safe_load(yaml.serialize(node))
        except yaml.YAMLError as exc:
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self._problem(node, loc, f"not valid YAML here: {reason}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self._problem(node, loc, "numbers must be finite")
        return value


def validate(source: Source, model: type[M]) -> M:
    """Validate parsed data against a model; every problem becomes one located line."""
    try:
        return model.model_validate_json(json.dumps(source.data, default=str))
    except ValidationError as exc:
        errors = [
            (_data_loc(source.data, err["loc"]), err) for err in exc.errors(include_url=False)
        ]
        problems = []
        for loc, err in errors:
            # A bad item is dropped before a minimum length is checked; the length error
            # that follows would only repeat the item's own problem.
            if err["type"] == "too_short" and any(
                other is not err and tuple(o[: len(loc)]) == tuple(loc) and len(o) > len(loc)
                for o, other in errors
            ):
                continue
            problems.append(source.problem(loc, _message(err)))
        raise ConfigError(problems) from None


def _data_loc(data: Any, loc: Sequence[Any]) -> list[str | int]:
    """The part of a pydantic error location that names something in (or for) the file.

    pydantic inserts validator and union member names (``function-before[...]``) into
    locations; they are dropped. A key that is missing from the data (a required field)
    is kept: it is what the user must write.
    """
    out: list[str | int] = []
    node = data
    for part in loc:
        child = _child(node, part)
        if child is not _ABSENT:
            node = child
        elif isinstance(part, str) and not isinstance(node, list) and not _INTERNAL.match(part):
            node = None  # a field missing from a mapping, or inside a shorthand string
        else:
            continue
        out.append(part)
    return out


_ABSENT = object()


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, dict) and isinstance(part, str) and part in node:
        return node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _ABSENT


_INTERNAL = re.compile(r"^[a-z][a-z-]*\[.*\]$")


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
