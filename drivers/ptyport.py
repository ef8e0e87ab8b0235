"""The device end of a pseudo-terminal, as the radio emulators serve their AT/PEI port.

An emulator holds the master side and a slave descriptor of its own (so a driver that closes
and reopens the port finds the same terminal and the master never reads EIO); the driver opens
the slave through a stable symlink, the way it would open ``/dev/ttyUSB0``. Both ends are raw.
Writes never block: when nobody reads and the terminal's buffer is full, the bytes are lost
and counted, as on a real UART without flow control.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tty
from pathlib import Path


class PtyEndpoint:
    """A raw pty whose slave is reachable at ``link``; ``url`` is what a driver opens."""

    def __init__(self, link: Path) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.device = os.ttyname(self.slave)
        self.link = link
        if link.is_symlink() or link.exists():
            if not link.is_symlink():
                self.close()
                raise OSError(errno.EEXIST, f"{link} exists and is not a symlink")
            link.unlink()
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(self.device, link)
        self.url = str(link)
        self.dropped = 0

    def read(self) -> bytes:
        """What the driver wrote, or ``b""`` when nothing is there."""
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:  # EIO: no slave open (cannot happen while we hold one)
            if exc.errno != errno.EIO:
                raise
            return b""

    def write(self, data: bytes) -> int:
        """Write without blocking; returns how many bytes were lost (also added to
        :attr:`dropped`)."""
        view = memoryview(data)
        while view:
            try:
                sent = os.write(self.master, view)
            except (BlockingIOError, InterruptedError):
                self.dropped += len(view)
                return len(view)
            view = view[sent:]
        return 0

    def close(self) -> None:
        """Remove the symlink (if it is still ours) and close both ends. Never raises."""
        with contextlib.suppress(OSError):
            if os.readlink(self.link) == self.device:
                self.link.unlink()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
