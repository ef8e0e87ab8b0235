"""The emulated core's user plane: every UE packet crossing the core node passes through a TUN
device owned by the core process, which forwards only packets of attached UEs.

Why a TUN: a real core's user plane (the Open5GS UPF's ``ogstun``) is a process; when it dies,
the traffic through it stops. Kernel forwarding alone would survive a killed emulator. So in
the core node's namespace, policy routing sends whatever arrives on the node's links (``iif``
rules) to table :data:`TABLE`, whose default route is the TUN device; the process reads each
packet, checks that its source (uplink) or destination (downlink) is an attached UE, and writes
it back into the TUN, from where the kernel routes it on with the main table. The table also
holds a blackhole default with a worse metric: when the process dies, its TUN device vanishes
with it and the blackhole drops everything, as a dead UPF would. Packets for the node itself
never reach table :data:`TABLE` (the ``local`` rule comes first).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from drivers.netns.topology import NetnsError, write_sysctls

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
TABLE = 4242
"""Routing table of the core node holding the TUN route and the blackhole."""
RULE_PRIORITY = 4242
READ_BYTES = 65_536


@dataclass
class PlaneCounters:
    """What the gate did, per direction (like a UPF's N3/N6 packet counters)."""

    uplink: int = 0
    downlink: int = 0
    dropped: int = 0
    per_ue: dict[str, list[int]] = field(default_factory=dict)  # address -> [up, down]


def _ip(namespace: str, args: Sequence[str]) -> None:
    done = subprocess.run(
        ["ip", "-n", namespace, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise OSError(f"ip -n {namespace} {' '.join(args)}: {done.stderr.strip()}")


class UserPlane:
    """A TUN gate in ``namespace`` in front of the node's ports ``ifnames``.

    ``allowed(address)`` says whether an address belongs to an attached UE; it is called for
    every packet, from the gate's thread."""

    def __init__(
        self,
        namespace: str,
        ifnames: Sequence[str],
        tun_name: str,
        allowed: Callable[[str], bool],
    ) -> None:
        self.namespace = namespace
        self.ifnames = list(ifnames)
        self.tun_name = tun_name
        self.allowed = allowed
        self.counters = PlaneCounters()
        self._lock = threading.Lock()
        self._fd = -1
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._paused = False

    def start(self) -> None:
        """Create the TUN in this (root) namespace, move it into the core node and route
        through it. The fd keeps the device alive wherever it lives."""
        self._fd = os.open("/dev/net/tun", os.O_RDWR)
        request = struct.pack("16sH", self.tun_name.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(self._fd, TUNSETIFF, request)
        subprocess.run(["ip", "link", "set", self.tun_name, "netns", self.namespace], check=True)
        _ip(self.namespace, ["link", "set", self.tun_name, "up"])
        with contextlib.suppress(NetnsError):
            write_sysctls(self.namespace, {f"net.ipv4.conf.{self.tun_name}.rp_filter": "0",
                                           "net.ipv4.conf.all.rp_filter": "0"})  # fmt: skip
        _ip(self.namespace, ["route", "replace", "blackhole", "default", "metric", "4000",
                             "table", str(TABLE)])  # fmt: skip
        _ip(self.namespace, ["route", "replace", "default", "dev", self.tun_name, "metric", "10",
                             "table", str(TABLE)])  # fmt: skip
        for ifname in self.ifnames:
            with contextlib.suppress(OSError):  # a rule left by an earlier process of ours
                _ip(self.namespace, ["rule", "del", "iif", ifname, "lookup", str(TABLE)])
            _ip(self.namespace, ["rule", "add", "iif", ifname, "lookup", str(TABLE),
                                 "priority", str(RULE_PRIORITY)])  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="user-plane", daemon=True)
        self._thread.start()

    def pause(self, paused: bool) -> None:
        """Isolation: drop everything while paused (the process lives on)."""
        self._paused = paused

    def _run(self) -> None:
        fd = self._fd
        while True:
            readable, _, _ = select.select([fd, self._stop_r], [], [])
            if self._stop_r in readable:
                return
            try:
                packet = os.read(fd, READ_BYTES)
            except OSError:
                return
            if len(packet) < 20 or packet[0] >> 4 != 4:
                continue  # IPv4 only (the emulated lab's UEs have IPv4 PDN addresses)
            src = ".".join(str(b) for b in packet[12:16])
            dst = ".".join(str(b) for b in packet[16:20])
            up = self.allowed(src)
            down = not up and self.allowed(dst)
            with self._lock:
                if self._paused or not (up or down):
                    self.counters.dropped += 1
                    continue
                ue = src if up else dst
                slot = self.counters.per_ue.setdefault(ue, [0, 0])
                if up:
                    self.counters.uplink += 1
                    slot[0] += 1
                else:
                    self.counters.downlink += 1
                    slot[1] += 1
            with contextlib.suppress(OSError):
                os.write(fd, packet)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "uplink_packets": self.counters.uplink,
                "downlink_packets": self.counters.downlink,
                "dropped_packets": self.counters.dropped,
                "per_ue": {k: list(v) for k, v in self.counters.per_ue.items()},
            }

    def close(self) -> None:
        """Stop forwarding. The rules stay: the blackhole then drops the node's traffic, as a
        stopped core would; the namespace goes with the run."""
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
