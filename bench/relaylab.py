"""The two-namespace lab the impairment and priority benchmarks share: x -- wire(a|b) -- y,
with the impairment relay in the wire namespace, plus the process and CPU bookkeeping both
need. Scripts in ``bench/`` import it as ``relaylab`` (they run as ``python bench/X.py``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from drivers.netns.offload import disable_offloads
from drivers.netns.topology import (
    NodeSpec,
    PortSpec,
    SegmentSpec,
    TopologySpec,
    build,
    destroy,
    list_namespaces,
    wait_ready,
)

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM while tearing down; they are delivered right after."""
    deferred = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so the teardown in ``finally`` runs."""
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class Lab:
    prefix: str
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)
    serial: int = 0

    @property
    def x(self) -> str:
        return f"{self.prefix}x"

    @property
    def y(self) -> str:
        return f"{self.prefix}y"

    @property
    def wire(self) -> str:
        return f"{self.prefix}wire"

    def path(self, stem: str) -> Path:
        self.serial += 1
        return self.workdir / f"{self.serial:03d}-{stem}"

    def spawn(self, namespace: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *argv],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> str:
        """SIGTERM, then SIGKILL; returns the process's stderr."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        err = b""
        if proc.stderr is not None:
            err = proc.stderr.read()
            proc.stderr.close()
        if proc in self.procs:
            self.procs.remove(proc)
        return err.decode(errors="replace").strip()

    def teardown(self) -> None:
        for proc in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout_s=2.0)
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        destroy(self.prefix)
        shutil.rmtree(self.workdir, ignore_errors=True)


def new_prefix(tag: str) -> str:
    """``tag`` (``tb`` + 2 hex digits) + 4 random hex digits + ``-``: matches
    ``^tb[0-9a-f]{6}-`` (so ``testbed cleanup`` recognises leftovers) and is unused here."""
    while True:
        prefix = f"{tag}{secrets.token_hex(2)}-"
        if not list_namespaces(prefix):
            return prefix


def build_line(lab: Lab, x_ip: str, y_ip: str) -> None:
    """x -- wire(a|b) -- y with static neighbours and offloads off."""
    spec = TopologySpec(
        prefix=lab.prefix,
        nodes=(NodeSpec(lab.x), NodeSpec(lab.y)),
        segments=(
            SegmentSpec(
                name="wire",
                ports=(
                    PortSpec(lab.x, "eth0", f"{x_ip}/24"),
                    PortSpec(lab.y, "eth0", f"{y_ip}/24"),
                ),
                middle_ns=lab.wire,
            ),
        ),
    )
    built = build(spec)
    # As drivers.network.emulated: a relay in the wire re-sends frames as read, so they must
    # be whole frames with full checksums.
    for ns in (lab.x, lab.y):
        disable_offloads(ns, "eth0")
    for port in ("a", "b"):
        disable_offloads(lab.wire, port)
    wait_ready(built.namespaces)


def process_ticks() -> dict[int, int]:
    """utime+stime (clock ticks) of every user-space process, kernel threads left out."""
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry)
        if pid == 2 or fields[1] == "2":  # kthreadd and its children
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def wait_file(
    path: Path, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 10.0
) -> None:
    """Wait until a process signals readiness by creating ``path``; fail with its stderr."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {err.strip()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout_s:g} s")
        time.sleep(0.01)
