"""What the driver tests share: a process tracker for device contexts, and the relay's real
control handler behind a Unix socket (to see the link blocks a radio emulator asks for)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.impairment.relay import Relay


@dataclass
class Processes:
    """A ``DeviceContext.processes`` that records what a driver started."""

    tracked: list[tuple[subprocess.Popen[bytes], str]] = field(default_factory=list)

    def track(self, proc: subprocess.Popen[bytes], role: str) -> None:
        self.tracked.append((proc, role))


@dataclass
class RelaySocket:
    """The requests a relay's control socket received."""

    path: Path
    requests: list[dict[str, Any]] = field(default_factory=list)

    def blocks(self) -> list[bool]:
        return [r["on"] for r in self.requests if r.get("cmd") == "block"]


@contextmanager
def relay_socket(path: Path) -> Iterator[RelaySocket]:
    """The real relay's control handler behind a Unix socket at ``path``, recording requests."""
    relay = Relay("a", "b", path)  # never opened: only its control protocol is used
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    server.settimeout(0.2)
    record = RelaySocket(path)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, conn.makefile("rb") as lines:
                for line in lines:
                    record.requests.append(json.loads(line))
                    conn.sendall(json.dumps(relay.handle(line)).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
        relay.close()
        path.unlink(missing_ok=True)
