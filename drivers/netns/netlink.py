"""Just enough rtnetlink to read link states of a namespace without starting a process.

``ip -n NS`` copies the mount table on every call (one entry per namespace), so polling
hundreds of namespaces with it grows with the square of their number. A netlink socket
opened by a thread that has entered the namespace stays bound to that namespace, so one
socket per namespace answers every later poll for a few microseconds.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_NETLINK_ROUTE = 0
_RTM_NEWLINK, _RTM_GETLINK = 16, 18
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_DONE, _NLMSG_ERROR = 3, 2
_IFLA_IFNAME = 3
IFF_UP, IFF_LOOPBACK, IFF_LOWER_UP = 0x1, 0x8, 0x10000

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")

T = TypeVar("T")


def in_namespace(namespace: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that has joined the namespace (setns affects one thread)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            fd = os.open(NETNS_DIR / namespace, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({namespace}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    thread = threading.Thread(target=worker, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def route_socket(namespace: str) -> socket.socket:
    """An rtnetlink socket bound to ``namespace``."""
    return in_namespace(
        namespace, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
    )


@dataclass(frozen=True)
class LinkState:
    name: str
    index: int
    flags: int

    @property
    def has_carrier(self) -> bool:
        return bool(self.flags & IFF_UP) and bool(self.flags & IFF_LOWER_UP)


def dump_links(sock: socket.socket, seq: int = 1) -> list[LinkState]:
    """Every interface of the socket's namespace with its flags (RTM_GETLINK dump)."""
    request = _NLMSGHDR.pack(
        _NLMSGHDR.size + _IFINFOMSG.size, _RTM_GETLINK, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0
    ) + _IFINFOMSG.pack(0, 0, 0, 0, 0)
    sock.send(request)
    links: list[LinkState] = []
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size:
                return links
            if kind == _NLMSG_DONE:
                return links
            if kind == _NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)
                raise OSError(-code, f"RTM_GETLINK: {os.strerror(-code)}")
            if kind == _RTM_NEWLINK:
                links.append(_parse_link(data, offset + _NLMSGHDR.size, offset + length))
            offset += (length + 3) & ~3


def _parse_link(data: bytes, start: int, end: int) -> LinkState:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, start)
    pos = start + _IFINFOMSG.size
    name = ""
    while pos + _RTATTR.size <= end:
        rta_len, rta_type = _RTATTR.unpack_from(data, pos)
        if rta_len < _RTATTR.size:
            break
        if rta_type == _IFLA_IFNAME:
            name = data[pos + _RTATTR.size : pos + rta_len].split(b"\0", 1)[0].decode()
        pos += (rta_len + 3) & ~3
    return LinkState(name, index, flags)
