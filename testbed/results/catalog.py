"""Bring the run index in line with the run records in a results folder.

Records are the truth, the index a fast view of them: records copied in from another
testbed, made before the index knew KPI values, or whose run crashed before it could update
the index, are (re)indexed from their manifest and summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testbed.errors import StoreError
from testbed.results.index import Index
from testbed.results.record import MANIFEST, SUMMARY, read_json


def sync_index(index: Index, results_dir: Path) -> int:
    """Index every record that the index lacks or holds as still running; returns how many."""
    if not results_dir.is_dir():
        return 0
    known = index.run_statuses()
    changed = 0
    for path in sorted(results_dir.iterdir()):
        status = known.get(path.name)
        if status is not None and status != "running":
            continue
        entry = _entry(path)
        if entry is None or (status is not None and entry[0]["status"] == "running"):
            continue
        run, kpis = entry
        index.put_run(**run)
        index.put_kpis(run, kpis)
        changed += 1
    return changed


def _entry(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    if not (path / MANIFEST).is_file():
        return None
    try:
        manifest = read_json(path / MANIFEST)
        summary = read_json(path / SUMMARY) if (path / SUMMARY).is_file() else {}
    except StoreError:
        return None
    if not isinstance(manifest, dict) or not isinstance(summary, dict):
        return None
    started = manifest.get("started_at")
    if not isinstance(started, int | float) or not manifest.get("profile"):
        return None
    run = {
        "run_id": path.name,
        "profile": str(manifest["profile"]),
        "lab": str(manifest.get("lab", "?")),
        "verdict": str(summary.get("verdict") or manifest.get("verdict") or "RUNNING"),
        "status": str(manifest.get("status", "running")),
        "started_at": float(started),
        "ended_at": manifest.get("ended_at"),
        "path": str(path.resolve()),
    }
    return run, list(summary.get("kpis", []))
