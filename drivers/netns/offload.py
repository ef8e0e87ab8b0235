"""Turning NIC offloads off on an interface of a namespace, without ethtool or a process.

A user-space relay in the wire reads frames with AF_PACKET and sends them on; with
checksum or segmentation offload on, those frames carry partial checksums or exceed the
MTU and break when re-injected (see the baselines document, section 4a). This uses the
SIOCETHTOOL ioctl from a socket created inside the namespace.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import fnmatch
import socket
import struct
from collections.abc import Callable
from typing import TypeVar

from drivers.errors import DriverError
from drivers.netns.netlink import in_namespace

DEVICE = "emulated-network"

_SIOCETHTOOL = 0x8946
_IFNAMSIZ = 16
_IFREQ = struct.Struct(f"@{_IFNAMSIZ}sP16x")  # ifr_name, ifr_data, rest of the 24-byte union
# feature: (get command, set command), legacy ETHTOOL_[GS]* values from linux/ethtool.h
_OFFLOADS = {
    "tx-checksum": (0x16, 0x17),
    "scatter-gather": (0x18, 0x19),
    "tso": (0x1E, 0x1F),
    "gso": (0x23, 0x24),
    "gro": (0x2B, 0x2C),
}
_ETHTOOL_GSTRINGS = 0x1B
_ETHTOOL_GSSET_INFO = 0x37
_ETHTOOL_SFEATURES = 0x3B
_ETH_SS_FEATURES = 4
_ETH_GSTRING_LEN = 32
_LATE_TSO_FEATURES = "tx-tcp*-segmentation"
"""Newer TSO variants (6.18 has tx-tcp-accecn-segmentation) that the legacy ETHTOOL_STSO
leaves on; ``ethtool -K tso off`` clears them by name, and so does :func:`disable_offloads`."""

T = TypeVar("T")


def _ethtool(sock: socket.socket, ifname: str, data: ctypes.Array[ctypes.c_char]) -> None:
    """One SIOCETHTOOL call; ``data`` starts with the command and stays alive during it."""
    name = ifname.encode()
    if not 0 < len(name) < _IFNAMSIZ:
        raise ValueError(f"bad interface name {ifname!r}")
    fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, _IFREQ.pack(name, ctypes.addressof(data)))


def _ethtool_value(sock: socket.socket, ifname: str, cmd: int, value: int = 0) -> int:
    data = ctypes.create_string_buffer(struct.pack("=II", cmd, value))  # struct ethtool_value
    _ethtool(sock, ifname, data)
    result: int = struct.unpack_from("=I", data, 4)[0]
    return result


def _clear_features_named(sock: socket.socket, ifname: str, pattern: str) -> None:
    """Clear every device feature whose name matches ``pattern`` (ETHTOOL_SFEATURES)."""
    info = ctypes.create_string_buffer(struct.pack("=IIQI", _ETHTOOL_GSSET_INFO, 0, 0, 0))
    struct.pack_into("=Q", info, 8, 1 << _ETH_SS_FEATURES)
    _ethtool(sock, ifname, info)
    count: int = struct.unpack_from("=I", info, 16)[0]
    strings = ctypes.create_string_buffer(12 + count * _ETH_GSTRING_LEN)
    struct.pack_into("=III", strings, 0, _ETHTOOL_GSTRINGS, _ETH_SS_FEATURES, count)
    _ethtool(sock, ifname, strings)
    words = (count + 31) // 32
    request = ctypes.create_string_buffer(8 + 8 * words)
    struct.pack_into("=II", request, 0, _ETHTOOL_SFEATURES, words)
    matched = False
    for i in range(count):
        raw = strings.raw[12 + i * _ETH_GSTRING_LEN : 12 + (i + 1) * _ETH_GSTRING_LEN]
        if fnmatch.fnmatchcase(raw.split(b"\0", 1)[0].decode(errors="replace"), pattern):
            offset = 8 + 8 * (i // 32)  # {u32 valid; u32 requested}: valid bit set, requested 0
            (valid,) = struct.unpack_from("=I", request, offset)
            struct.pack_into("=I", request, offset, valid | 1 << (i % 32))
            matched = True
    if matched:  # the kernel skips (and flags) bits the device cannot change
        _ethtool(sock, ifname, request)


def _with_ethtool_socket(namespace: str, fn: Callable[[socket.socket], T]) -> T:
    # A socket belongs to the namespace it was created in; its ioctls act there.
    try:
        sock = in_namespace(namespace, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    except OSError as exc:
        raise DriverError(DEVICE, f"cannot enter namespace {namespace}: {exc}") from exc
    try:
        return fn(sock)
    finally:
        sock.close()


def disable_offloads(namespace: str, ifname: str) -> list[str]:
    """Turn off TX checksum, scatter-gather, TSO, GSO and GRO on ``ifname`` in ``namespace``
    without the ethtool binary, so that the frames a relay captures are complete and at most
    MTU-sized. Returns the features the driver does not support (left as they are)."""

    def run(sock: socket.socket) -> list[str]:
        unsupported: list[str] = []
        for feature, (_get, set_cmd) in _OFFLOADS.items():
            try:
                _ethtool_value(sock, ifname, set_cmd, 0)
            except OSError as exc:
                if exc.errno == errno.EOPNOTSUPP:
                    unsupported.append(feature)
                    continue
                raise DriverError(
                    DEVICE, f"{namespace}/{ifname}: turning {feature} off failed: {exc}"
                ) from exc
        try:
            _clear_features_named(sock, ifname, _LATE_TSO_FEATURES)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise DriverError(
                    DEVICE, f"{namespace}/{ifname}: turning TSO variants off failed: {exc}"
                ) from exc
        return unsupported

    return _with_ethtool_socket(namespace, run)


def offload_state(namespace: str, ifname: str) -> dict[str, bool | None]:
    """Whether each offload of :func:`disable_offloads` is on (None: not supported)."""

    def run(sock: socket.socket) -> dict[str, bool | None]:
        state: dict[str, bool | None] = {}
        for feature, (get_cmd, _set) in _OFFLOADS.items():
            try:
                state[feature] = bool(_ethtool_value(sock, ifname, get_cmd))
            except OSError as exc:
                if exc.errno != errno.EOPNOTSUPP:
                    raise DriverError(
                        DEVICE, f"{namespace}/{ifname}: reading {feature} failed: {exc}"
                    ) from exc
                state[feature] = None
        return state

    return _with_ethtool_socket(namespace, run)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
