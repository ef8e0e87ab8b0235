"""Atomic file writes for driver processes (counters, statistics, ready files): a temporary
file, fsync, then rename, so a reader never sees half a file and a killed process leaves the
previous version or nothing. Live state that other processes poll and that is rewritten on
every change (an emulator's state file) passes ``durable=False``: the rename alone keeps it
whole for readers, and an fsync per change would slow the device's answers. Standard library
only: the relay and the MCPTT server import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["read_json_lines", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> None:
    target = Path(path)
    # per process and thread: writers in several threads never share a temporary file
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, durable: bool = True) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n", durable=durable)


def read_json_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """An emulator's procedure log, one JSON object per line; a torn last line (the process
    was killed while writing) and anything that is not an object are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
