"""Reading run records for the API: run folders by id, their files, and the index.

Every path the API serves is resolved here and must stay inside one run's folder: names are
checked against a strict grammar first, and the resolved file (symbolic links followed) must
still lie inside the run folder, so neither ``..`` nor a link leads out of it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from testbed.errors import StoreError
from testbed.results.index import Index
from testbed.results.record import EVENTS, MANIFEST, RUN_ID, SUMMARY, read_json
from testbed.results.series import SERIES_DIR
from testbed.results.view import json_safe, run_header

T = TypeVar("T")
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}$")


class RunStore:
    def __init__(self, results_dir: Path, index: Index) -> None:
        self.results_dir = results_dir
        self.index = index

    def run_dir(self, run_id: str) -> Path:
        """The folder of a known run, or 404."""
        if not RUN_ID.match(run_id) or ".." in run_id:
            raise HTTPException(404, f"no run {run_id!r}")
        path = self.results_dir / run_id
        if not (path / MANIFEST).is_file():
            raise HTTPException(404, f"no run {run_id!r}")
        return path

    def file_in(self, run_id: str, name: str) -> Path:
        """A regular file inside the run's folder, named by its relative path, or 404."""
        base = self.run_dir(run_id)
        parts = PurePosixPath(name).parts
        if not parts or not all(_PART.match(p) for p in parts):
            raise HTTPException(404, f"no artifact {name!r}")
        path = base.joinpath(*parts)
        try:
            inside = path.resolve(strict=True).is_relative_to(base.resolve(strict=True))
        except OSError:
            inside = False
        if not inside or not path.is_file():
            raise HTTPException(404, f"no artifact {name!r} in run {run_id}")
        return path

    def manifest(self, run_id: str) -> dict[str, Any]:
        return _json(self.run_dir(run_id) / MANIFEST) or {}

    def summary(self, run_id: str) -> dict[str, Any] | None:
        """summary.json, or ``None`` while the run has none (running or crashed)."""
        path = self.run_dir(run_id) / SUMMARY
        return json_safe(_json(path)) if path.exists() else None

    def header(self, run_id: str) -> dict[str, Any]:
        plan = self.run_dir(run_id) / "plan.json"  # a crashed or imported run may lack it
        planned = _json(plan) if plan.is_file() else None
        return run_header(run_id, self.manifest(run_id), self.summary(run_id) or {}, planned or {})

    def stamp(self, run_id: str) -> tuple[tuple[int, int], ...]:
        """Sizes and modification times of what a run's answers are made from: a running
        run's change as it goes, a finished run's never."""
        path = self.run_dir(run_id)
        stamps = []
        for name in (MANIFEST, SUMMARY, EVENTS, "plan.json", SERIES_DIR):
            try:
                st = (path / name).stat()
            except OSError:
                stamps.append((0, -1))
            else:
                stamps.append((st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def events_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / EVENTS

    def delete(self, run_id: str) -> None:
        path = self.run_dir(run_id)
        self.index.delete_run(run_id)
        shutil.rmtree(path)


async def query_index(index: Index, query: Callable[[], T]) -> T:
    """Run an index query from an async route. SQLite answers in well under a millisecond, and
    in the event loop that beats a hop to a worker thread: with 20 clients, the hop's GIL
    contention cost four times the CPU of the query (bench/api.py). A database server's
    round trips go to a worker thread."""
    if index.local:
        return query()
    return await run_in_threadpool(query)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = read_json(path)
    except StoreError as exc:
        raise HTTPException(500, str(exc)) from exc
    return data if isinstance(data, dict) else None


def kpis_by_name(summary: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {str(k.get("name")): k for k in (summary or {}).get("kpis", [])}
