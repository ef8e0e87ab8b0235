"""dumpcap at each capture point, run inside the point's node (its namespace).

dumpcap writes pcapng with kernel timestamps and was measured at 0 drops up to about
210k packets/s here for under a third of a core (baselines document, section 6). Its
final "received/dropped" report is parsed, so a capture that lost packets says so.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.base import Capture, CaptureResult, CaptureSpec, DeviceContext
from drivers.errors import DriverError

_STATS = re.compile(r"Packets received/dropped on interface '[^']*': (\d+)/(\d+)")
_START_TIMEOUT_S = 10.0


@dataclass
class _Running:
    spec: CaptureSpec
    path: Path
    proc: subprocess.Popen[bytes]
    log: Path


class DumpcapCapture(Capture):
    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        self._running: list[_Running] = []

    def open(self) -> None:
        if shutil.which("dumpcap") is None:
            raise DriverError(
                self.name,
                "dumpcap is not installed (Debian package `tshark`; `make demo` installs it)",
            )

    def start(self, points: Sequence[CaptureSpec], out_dir: Path) -> None:
        if self.context.nodes is None:
            raise DriverError(self.name, "no network to capture on")
        out_dir.mkdir(parents=True, exist_ok=True)
        snaplen = int(self.settings.get("snaplen_bytes", 0))
        for spec in points:
            path = out_dir / f"{spec.name}.pcapng"
            log = out_dir / f".{spec.name}.dumpcap.log"
            argv = ["dumpcap", "-i", spec.ifname, "-q", "-w", str(path)]
            if snaplen:
                argv += ["-s", str(snaplen)]
            with log.open("wb") as log_file:
                proc = subprocess.Popen(
                    self.context.nodes.node_command(spec.node, argv),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                    start_new_session=True,  # a Ctrl-C on the terminal is ours to forward
                )
            self.context.processes.track(proc, f"dumpcap:{spec.name}")
            self._running.append(_Running(spec, path, proc, log))
        deadline = time.monotonic() + _START_TIMEOUT_S
        for run in self._running:
            while b"Capturing on" not in _read(run.log):
                if run.proc.poll() is not None or time.monotonic() > deadline:
                    text = _read(run.log).decode(errors="replace").strip()
                    raise DriverError(
                        self.name, f"dumpcap at {run.spec.name} did not start: {text}"
                    )
                time.sleep(0.01)
        self.context.emit("capture.started", {"points": [p.name for p in points]})

    def stop(self) -> list[CaptureResult]:
        results = []
        for run in self._running:
            _interrupt(run.proc)
            text = _read(run.log).decode(errors="replace")
            match = _STATS.search(text)
            received, dropped = (
                (int(match.group(1)), int(match.group(2))) if match else (None, None)
            )
            notes = []
            if match is None:
                notes.append("dumpcap did not report its counters (it was killed?)")
            elif dropped:
                notes.append(
                    f"dumpcap dropped {dropped} packets: metrics from this capture are incomplete"
                )
            results.append(CaptureResult(run.spec.name, run.path, received, dropped, notes))
            run.log.unlink(missing_ok=True)
        self._running = []
        return results

    def safe_state(self) -> None:
        for run in self._running:
            _interrupt(run.proc)

    def close(self) -> None:
        self.safe_state()


def _interrupt(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT lets dumpcap finish the file and print its counters; kill if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
