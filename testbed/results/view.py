"""The run view: everything the run page plots, as one JSON-ready dict built from the record.

The dashboard's run page and the self-contained ``report.html`` draw the same view, so a
mailed report shows what the server shows. It is built from the run record's files alone
(manifest, summary, plan, event log, delay series), so a running, crashed or imported run
has a view too; what a record lacks is left empty, never invented. Times are wall-clock
epoch seconds, the clock the captures, receivers and timeline share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from drivers.files import read_json_lines
from testbed.analysis.failover import gap_threshold_ms
from testbed.errors import StoreError
from testbed.results.record import EVENTS, MANIFEST, SUMMARY, read_json
from testbed.results.series import downsample, histogram, owd_ms, read_series, series_files

VOICE_FRAME_S = 0.020
"""MCPTT talk bursts are drawn as packets x 20 ms: the AMR-WB frame our voice streams send
(the floor analysis records a burst's first packet and count, not its last)."""

ARTIFACT_KINDS = {
    "report.html": "report",
    "junit.xml": "junit",
    SUMMARY: "summary",
    EVENTS: "events",
    MANIFEST: "manifest",
}
ARTIFACT_FOLDERS = {
    "captures": "capture",
    "transcripts": "transcript",
    "series": "series",
    "impairment": "log",
    "traffic": "log",
}
_MARKED_DEVICE_EVENTS = {"impairment.applied": "impairment", "impairment.changed": "impairment"}


def run_view(run_dir: Path, max_points: int = 2000) -> dict[str, Any]:
    manifest = _json_or_empty(run_dir / MANIFEST)
    summary = _json_or_empty(run_dir / SUMMARY)
    plan = _json_or_empty(run_dir / "plan.json")
    events = read_json_lines(run_dir / EVENTS)
    series, histograms = _series(run_dir, max_points)
    view = {
        "run": run_header(run_dir.name, manifest, summary, plan),
        "kpis": summary.get("kpis", []),
        "streams": summary.get("streams", []),
        "series": series,
        "histograms": histograms,
        "markers": _markers(events),
        "interruptions": _interruptions(summary, plan),
        "floor": _floor(summary.get("mcptt")),
        "failover": summary.get("failover"),
        "errors": summary.get("errors", manifest.get("errors", [])),
        "artifacts": artifacts(run_dir),
    }
    safe: dict[str, Any] = json_safe(view)
    return safe


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities as ``None``: strict JSON, which browsers and the API's
    encoder demand, has no such numbers (Python's ``json`` writes and reads them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def run_header(
    run_id: str, manifest: Mapping[str, Any], summary: Mapping[str, Any], plan: Mapping[str, Any]
) -> dict[str, Any]:
    started = manifest.get("started_at")
    ended = manifest.get("ended_at")
    return {
        "run_id": run_id,
        "profile": manifest.get("profile") or summary.get("profile"),
        "lab": manifest.get("lab") or summary.get("lab"),
        "verdict": summary.get("verdict") or manifest.get("verdict") or "RUNNING",
        "status": manifest.get("status"),
        "started_at": started,
        "ended_at": ended,
        "duration_s": summary.get("duration_s"),
        "host": manifest.get("host"),
        "repetitions": plan.get("repetitions"),
        "planned_duration_s": plan.get("duration_s"),
    }


def artifacts(run_dir: Path) -> list[dict[str, Any]]:
    """Every regular file of the record (no symbolic links, no hidden files)."""
    out = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_symlink() or not path.is_file() or any(p.startswith(".") for p in rel.parts):
            continue
        kind = ARTIFACT_KINDS.get(rel.as_posix()) or ARTIFACT_FOLDERS.get(rel.parts[0], "other")
        out.append({"path": rel.as_posix(), "bytes": path.stat().st_size, "kind": kind})
    return out


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except StoreError:
        return {}
    return data if isinstance(data, dict) else {}


def _series(run_dir: Path, max_points: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    keys = series_files(run_dir)
    series = []
    pooled: dict[str, list[np.ndarray[Any, Any]]] = {}
    per_plot = max(max_points // max(len(keys), 1), 50)
    for key in keys:
        try:
            rows = read_series(key.path)
        except (OSError, ValueError):
            continue
        delay = owd_ms(rows)
        pooled.setdefault(key.stream, []).append(delay)
        series.append(
            {
                "stream": key.stream,
                "repetition": key.repetition,
                "point": key.point,
                "packets": len(rows),
                **downsample(rows["tx_ns"], delay, per_plot),
            }
        )
    histograms = [
        {"stream": stream, **histogram(np.concatenate(parts))} for stream, parts in pooled.items()
    ]
    return series, histograms


def _markers(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    markers = []
    for e in events:
        kind, label, wall = _marker(e)
        if kind is not None:
            markers.append(
                {
                    "wall": wall,
                    "kind": kind,
                    "label": label,
                    "repetition": e.get("repetition"),
                    "device": e.get("device"),
                }
            )
    return markers


def _marker(e: Mapping[str, Any]) -> tuple[str | None, str, float | None]:
    kind = e.get("type")
    wall = e.get("wall")
    if kind == "action.executed":
        label = f"{e.get('device')}.{e.get('action')}"
        if not e.get("ok", True):
            label += f" failed: {e.get('error')}"
        return ("fault" if e.get("fault") else "action"), label, e.get("started_wall") or wall
    if kind == "device.fault":
        return "device_fault", f"{e.get('device')}: {e.get('message')}", wall
    if kind == "phase.started" and e.get("phase") == "measure":
        return "phase", f"repetition {e.get('repetition')}", wall
    if kind == "device.event":
        name = str(e.get("name"))
        fields = e.get("fields") or {}
        if name in _MARKED_DEVICE_EVENTS:
            params = ", ".join(f"{k} {v}" for k, v in fields.items() if k not in ("link",))
            return _MARKED_DEVICE_EVENTS[name], f"{fields.get('link')}: {params}", wall
        if name == "radio.registration":
            return (
                "radio",
                f"{e.get('device')}: {fields.get('stat_name', fields.get('stat'))}",
                wall,
            )
    return None, "", None


def _interruptions(summary: Mapping[str, Any], plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Windows without service: each fault's stream gaps and radio outages (the failover
    analysis), else each stream's longest gap when it exceeds the interruption threshold."""
    out: list[dict[str, Any]] = []
    for fault in (summary.get("failover") or {}).get("faults", []):
        event = f"{fault.get('device')}.{fault.get('action')}"
        for name, r in (fault.get("streams") or {}).items():
            if r.get("last_before_wall") is not None and r.get("interruption_ms"):
                out.append(
                    _window(
                        name,
                        "stream",
                        event,
                        fault,
                        r,
                        "last_before_wall",
                        "first_after_wall",
                        "interruption_ms",
                    )
                )
        for name, r in (fault.get("radios") or {}).items():
            if r.get("lost_wall") is not None:
                out.append(
                    _window(
                        name,
                        "radio",
                        event,
                        fault,
                        r,
                        "lost_wall",
                        "registered_wall",
                        "reattach_ms",
                    )
                )
    if out:
        return out
    rates = {s.get("id"): s.get("rate_pps") for s in plan.get("streams", [])}
    for s in summary.get("streams", []):
        gap, start, rate = s.get("max_gap_ms"), s.get("gap_start_s"), rates.get(s.get("id"))
        if not (gap and start and rate) or gap <= gap_threshold_ms(1000.0 / rate):
            continue
        out.append(
            {
                "subject": s.get("id"),
                "kind": "stream",
                "event": "longest gap",
                "repetition": s.get("repetition"),
                "start": start,
                "end": start + gap / 1000.0,
                "duration_ms": gap,
            }
        )
    return out


def _window(
    subject: str,
    kind: str,
    event: str,
    fault: Mapping[str, Any],
    result: Mapping[str, Any],
    start_key: str,
    end_key: str,
    duration_key: str,
) -> dict[str, Any]:
    return {
        "subject": subject,
        "kind": kind,
        "event": event,
        "repetition": fault.get("repetition"),
        "start": result.get(start_key),
        "end": result.get(end_key),
        "duration_ms": result.get(duration_key),
    }


def _floor(mcptt: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Talk bursts (one per burst, however many listeners heard it), floor requests and
    pre-emptions; ``None`` when the run has no floor control."""
    if not mcptt or not (mcptt.get("requests") or mcptt.get("bursts")):
        return None
    bursts: dict[tuple[Any, ...], dict[str, Any]] = {}
    for b in mcptt.get("bursts", []):
        key = (b.get("talker_user"), b.get("ssrc"), b.get("seq"))
        burst = bursts.setdefault(
            key,
            {
                "user": _user(b.get("talker_user") or b.get("talker")),
                "start": b.get("time"),
                "end": (b.get("time") or 0.0) + (b.get("packets") or 0) * VOICE_FRAME_S,
                "listeners": 0,
            },
        )
        burst["listeners"] += 1
    requests = [
        {
            "time": r.get("time"),
            "user": _user(r.get("user_id") or r.get("participant")),
            "outcome": r.get("outcome"),
            "access_time_ms": r.get("access_time_ms"),
            "priority": r.get("priority"),
        }
        for r in mcptt.get("requests", [])
    ]
    preemptions = [
        {
            "time": p.get("time"),
            "talker": _user((p.get("talker") or {}).get("user_id")),
            "by": _user((p.get("preempting") or {}).get("user_id")),
            "revoke_time_ms": p.get("revoke_time_ms"),
        }
        for p in mcptt.get("preemptions", [])
    ]
    users = sorted({b["user"] for b in bursts.values()} | {r["user"] for r in requests})
    return {
        "users": users,
        "bursts": sorted(bursts.values(), key=lambda b: b["start"] or 0.0),
        "requests": requests,
        "preemptions": preemptions,
    }


def _user(uri: Any) -> str:
    """``sip:ue_a1@euccs.lab`` -> ``ue_a1``: the lab's name for the UE."""
    text = str(uri or "?")
    return text.removeprefix("sip:").split("@", 1)[0]
