"""Starting an emulator process for a driver, and where emulators keep their state.

Emulators (AT modem, TETRA terminal and switching function, SCPI instruments) run as
processes of their own, so that the real driver talks to them over the real wire and a
killed emulator is a real fault. They all start the same way: ``python -m <module> ...``
with the ``drivers`` package importable, output to a log in the run directory, tracked in
the run's state file (for ``testbed cleanup``), and a *ready file* (JSON) the emulator
writes once it serves. Emulators that stand for physics of the lab (an attenuator's setting,
a power supply's output) publish their state as a JSON file at
:func:`state_path`, which coupled emulators poll.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.base import DeviceContext
from drivers.errors import DriverError

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
EMULATOR_DIR = "emulators"
"""Subdirectory of the run directory with every emulator's log, ready and state files."""


def state_path(run_dir: Path, device: str) -> Path:
    """Where the emulator of lab device ``device`` publishes its state (JSON, replaced
    atomically on every change)."""
    return run_dir / EMULATOR_DIR / f"{device}.state.json"


@dataclass
class EmulatorProcess:
    """A started emulator: its process, what its ready file said and its log."""

    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`. Never raises."""
        if self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        except OSError:
            pass


def start_emulator(
    context: DeviceContext,
    device: str,
    module: str,
    args: Sequence[str],
    *,
    role: str,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> EmulatorProcess:
    """Run ``python -m module args... --ready-file F`` and wait until it wrote F.

    ``role`` names the process in the run's state file (``<role>:<device>``). Raises
    :class:`DriverError` with the tail of the emulator's log if it exits or stays silent.
    """
    out_dir = context.run_dir / EMULATOR_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    ready_file = out_dir / f"{device}.{role}.ready.json"
    ready_file.unlink(missing_ok=True)
    log = out_dir / f"{device}.{role}.log"
    argv = [sys.executable, "-m", module, *args, "--ready-file", str(ready_file)]
    # the child imports the same ``drivers`` as this process, installed or not
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with log.open("ab") as log_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    context.processes.track(proc, f"{role}:{device}")
    started = EmulatorProcess(proc, {}, log)
    deadline = time.monotonic() + ready_timeout_s
    while not ready_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            started.stop()
            tail = log.read_text(errors="replace")[-600:].strip() or "no output"
            raise DriverError(device, f"{role} emulator did not start: {tail}")
        time.sleep(0.01)
    try:
        started.ready = json.loads(ready_file.read_text())
    except (OSError, ValueError) as exc:
        started.stop()
        raise DriverError(device, f"{role} emulator wrote an unreadable ready file: {exc}") from exc
    return started
