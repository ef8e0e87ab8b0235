"""One run record: a directory written so that a crash at any moment leaves it readable.

JSON files are replaced atomically (write to a temporary file, fsync, rename); the event
log is appended a whole line at a time. The manifest says whether the run completed, so a
crashed run keeps what it captured and is marked as such.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testbed.errors import StoreError

MANIFEST = "manifest.json"
SUMMARY = "summary.json"
EVENTS = "events.jsonl"


RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""What a run id may be (generated ones and those given with --run-id): a plain folder name."""


def new_run_id(profile: str) -> str:
    """Sortable by start time, readable, unique: ``20261122T101500Z-latency-3f9a1c``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{profile}-{uuid.uuid4().hex[:6]}"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable: {exc}") from None


class RunRecord:
    """The directory ``<results>/<run_id>/`` of one run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._events_lock = threading.Lock()

    @property
    def run_id(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, results_dir: Path, run_id: str) -> RunRecord:
        path = results_dir / run_id
        try:
            path.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise StoreError(f"cannot create run record {path}: {exc}") from exc
        return cls(path)

    def write(self, name: str, obj: Any) -> Path:
        target = self.path / name
        write_json(target, obj)
        return target

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        write_atomic(target, text.encode())
        return target

    def copy_in(self, source: Path, name: str) -> Path:
        target = self.path / name
        shutil.copyfile(source, target)
        return target

    def append_event(self, event: Mapping[str, Any]) -> None:
        line = json.dumps(event, default=str) + "\n"
        with self._events_lock, (self.path / EVENTS).open("a", encoding="utf-8") as out:
            out.write(line)
            out.flush()

    def manifest(self) -> dict[str, Any]:
        data = read_json(self.path / MANIFEST)
        if not isinstance(data, dict):
            raise StoreError(f"{self.path / MANIFEST}: not a JSON object")
        return data

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        try:
            data = self.manifest()
        except StoreError:
            data = {}
        data.update(fields)
        self.write(MANIFEST, data)
        return data
