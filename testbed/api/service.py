"""Starting and aborting runs for the API: the one place the server launches a controller.

A run started here is the same ``testbed run`` a lab engineer types, as a child process in
its own session, so it tears down by itself whatever happens to the server, and stopping the
server does not stop a long run. Only profiles and labs found in the configured folders can
be named; the request carries names, never paths.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException

from testbed.api.config import ApiConfig
from testbed.errors import ConfigError
from testbed.results.record import MANIFEST, new_run_id
from testbed.runner.state import RunState, read_states

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
START_TIMEOUT_S = 20.0
CONSOLE_DIR = ".api"


@dataclass
class _Child:
    run_id: str
    proc: subprocess.Popen[bytes]
    console: Path


class RunService:
    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self._children: dict[str, _Child] = {}
        self._lock = threading.Lock()

    # what may be run -------------------------------------------------------------------

    def profile_path(self, name: str) -> Path:
        return _named_file(self.config.profiles_dir, name, "profile")

    def lab_path(self, name: str) -> Path:
        return _named_file(self.config.labs_dir, name, "lab")

    # start and abort -------------------------------------------------------------------

    def start(self, profile: str, lab: str) -> str:
        """Validate, launch ``testbed run`` and wait until its run record exists."""
        profile_path, lab_path = self.profile_path(profile), self.lab_path(lab)
        _check_plan(profile_path, lab_path)
        with self._lock:
            self._reap()
            if len(self._children) >= self.config.max_concurrent_runs:
                busy = ", ".join(sorted(self._children))
                raise HTTPException(409, f"a run started here is still going: {busy}")
            run_id = new_run_id(profile_path.stem)
            child = self._launch(run_id, profile_path, lab_path)
            self._children[run_id] = child
        manifest = self.config.results_dir / run_id / MANIFEST
        deadline = time.monotonic() + START_TIMEOUT_S
        while not manifest.exists():
            if child.proc.poll() is not None or time.monotonic() > deadline:
                tail = _tail(child.console)
                raise HTTPException(500, f"the controller did not start run {run_id}: {tail}")
            time.sleep(0.05)
        return run_id

    def _launch(self, run_id: str, profile: Path, lab: Path) -> _Child:
        results = self.config.results_dir
        console = results / CONSOLE_DIR / f"{run_id}.console.log"
        console.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TESTBED_DATABASE_URL": self.config.database_url}
        argv = [
            sys.executable,
            "-m",
            "testbed.cli",
            "run",
            str(profile),
            "--lab",
            str(lab),
            "--results",
            str(results),
            "--run-id",
            run_id,
        ]
        with console.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # the server's Ctrl-C is not the run's
            )
        return _Child(run_id, proc, console)

    def abort(self, run_id: str) -> None:
        """SIGINT, as Ctrl-C would: the controller stops measuring and tears down. A run
        started elsewhere on this host is found by its state file, whose pid and start time
        tell a live controller from a recycled pid (as ``testbed cleanup`` does)."""
        with self._lock:
            self._reap()
            child = self._children.get(run_id)
        if child is not None:
            child.proc.send_signal(signal.SIGINT)
            return
        state = _state_of(self.config.state_dir, run_id)
        if state is None or not state.controller_alive():
            raise HTTPException(409, f"run {run_id} is not running on this host")
        os.kill(state.pid, signal.SIGINT)

    def running(self) -> list[str]:
        with self._lock:
            self._reap()
            return sorted(self._children)

    def _reap(self) -> None:
        """Forget finished children; their console log joins their run record."""
        for run_id, child in list(self._children.items()):
            if child.proc.poll() is None:
                continue
            del self._children[run_id]
            target = self.config.results_dir / run_id
            if target.is_dir():
                with contextlib.suppress(OSError):
                    child.console.replace(target / "console.log")


def _named_file(folder: Path, name: str, what: str) -> Path:
    """``<folder>/<name>.yaml`` when ``name`` is a plain name of a file that is there."""
    if not NAME.match(name):
        raise HTTPException(400, f"{what} names are letters, digits, '_', '-', '.': {name!r}")
    candidates = {p.stem: p for p in folder.glob("*.yaml") if p.is_file()}
    if name not in candidates:
        known = ", ".join(sorted(candidates)) or "none"
        raise HTTPException(404, f"no {what} {name!r} in {folder} (known: {known})")
    return candidates[name]


def _check_plan(profile: Path, lab: Path) -> None:
    from testbed.cli import load_bound

    try:
        load_bound(str(profile), str(lab))
    except ConfigError as exc:
        raise HTTPException(
            400, "the profile does not plan on this lab: " + "; ".join(exc.problems)
        ) from exc


def _state_of(state_dir: Path, run_id: str) -> RunState | None:
    for _, state in read_states(state_dir):
        if state is not None and state.run_id == run_id:
            return state
    return None


def _tail(path: Path, size: int = 2000) -> str:
    try:
        text = path.read_bytes()[-size:].decode(errors="replace").strip()
    except OSError:
        return "no output"
    return text or "no output"
