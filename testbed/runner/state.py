"""The per-run state file: what a run has made, so that a killed run can be cleaned up.

It names the controller's pid, the run-scoped name prefix of the namespaces, the processes
started and the run directory. It is rewritten atomically on every change and removed
when the run has torn down; one left behind means the run died, and ``testbed cleanup``
reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.results.record import write_json

PREFIX_RE = r"^tb[0-9a-f]{6}-"
"""Every namespace of ours starts with ``tb`` + 6 hex digits of the run id + ``-``."""


def process_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot (field 22 of /proc/PID/stat): tells pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_alive(pid: int, start_time: int | None) -> bool:
    current = process_start_time(pid)
    if current is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and (start_time is None or current == start_time)


@dataclass
class TrackedProcess:
    pid: int
    start_time: int | None
    role: str
    argv: list[str]


@dataclass
class RunState:
    run_id: str
    prefix: str
    run_dir: str
    pid: int = field(default_factory=os.getpid)
    pid_start_time: int | None = None
    processes: list[TrackedProcess] = field(default_factory=list)
    lease_run_id: str = ""

    def __post_init__(self) -> None:
        if self.pid_start_time is None:
            self.pid_start_time = process_start_time(self.pid)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        if not isinstance(data, dict):
            raise TypeError("a state file holds a JSON object")
        procs = [TrackedProcess(**p) for p in data.get("processes", [])]
        return cls(
            run_id=data["run_id"],
            prefix=data["prefix"],
            run_dir=data["run_dir"],
            pid=int(data["pid"]),
            pid_start_time=data.get("pid_start_time"),
            processes=procs,
            lease_run_id=data.get("lease_run_id", ""),
        )

    def controller_alive(self) -> bool:
        return process_alive(self.pid, self.pid_start_time)


class StateFile:
    """The state file of this run; also the process tracker handed to drivers."""

    def __init__(self, state_dir: Path, state: RunState) -> None:
        self.path = state_dir / f"{state.run_id}.json"
        self.state = state
        self._lock = threading.Lock()
        state_dir.mkdir(parents=True, exist_ok=True)
        self.save()

    def save(self) -> None:
        with self._lock:
            write_json(self.path, self.state.to_dict())

    def track(self, proc: subprocess.Popen[bytes], role: str) -> None:
        argv = proc.args if isinstance(proc.args, list) else [str(proc.args)]
        with self._lock:
            self.state.processes.append(
                TrackedProcess(proc.pid, process_start_time(proc.pid), role, [str(a) for a in argv])
            )
        self.save()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def read_states(state_dir: Path) -> list[tuple[Path, RunState | None]]:
    """Every state file; an unreadable one comes back with ``None``."""
    out: list[tuple[Path, RunState | None]] = []
    if not state_dir.is_dir():
        return out
    for path in sorted(state_dir.glob("*.json")):
        try:
            out.append((path, RunState.from_dict(json.loads(path.read_text()))))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            out.append((path, None))
    return out
