"""The impairment relay: a "bump in the wire" process that bridges ports ``a`` and ``b`` of a link's
middle namespace at layer 2 and impairs each direction (``a_to_b``, ``b_to_a``) independently,
because this kernel has no netem. It follows the ``select_ts_spin`` design of the baselines
document (section 4): one thread; one AF_PACKET socket per port (PACKET_IGNORE_OUTGOING,
SO_TIMESTAMPNS, a 1 MB receive buffer, 16 MB to send); a heap of frames keyed by due time = the
frame's kernel RX timestamp + the sampled delay (+ the rate queue's wait), so the relay's own wake-
up latency is not added; and the last ``--spin-us`` (300 µs) before a due time busy-polled with a
zero-timeout ``select`` that also serves arrivals and control requests (~10-20 µs median, ~50-90 µs
p99 error at 1k-10k pps there; no SCHED_FIFO on top of the spin: RT throttling made it tens of ms
late). A rate limit is a serialiser in front of the delay line: FIFO or, with
``scheduler="priority"``, strict priority between DSCP classes (:func:`classify`; the policy table
is :data:`drivers.impairment.params.DSCP_CLASS`); frames are counted per class either way. Each
direction's heap share and rate queue are bounded, so emulated overload drops and counts packets
instead of growing the delay; the relay's own saturation (beyond ~60-90k pps) still queues in the
kernel's receive buffer, which is kept small to bound that wait (~40 ms measured), and shows as
``late_p99_us`` and ``rx_kernel_drops``. Endpoints need checksum and segmentation offloads off
(:mod:`drivers.netns.offload`), or captured frames carry partial checksums or exceed the MTU. The
controller runs ``ip netns exec NS python -m drivers.impairment.relay --port-a a
--port-b b --control PATH`` and speaks line-delimited JSON to the Unix socket at PATH (a filesystem
path reaches across network namespaces) through :class:`RelayControl`. All times are
CLOCK_REALTIME, the clock of SO_TIMESTAMPNS."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import gc
import heapq
import json
import os
import random
import select
import signal
import socket
import stat
import struct
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from drivers.errors import DriverError
from drivers.files import write_json_atomic
from drivers.impairment.params import (
    ARP_CLASS,
    DEFAULT_CLASS,
    DSCP_CLASS,
    PRIORITY_CLASSES,
    ImpairmentParams,
)

__all__ = [
    "DIRECTIONS",
    "FLUSH",
    "DirectionCounters",
    "DirectionEngine",
    "Relay",
    "RelayControl",
    "classify",
    "main",
    "relay_command",
]

DIRECTIONS = ("a_to_b", "b_to_a")
DEVICE = "impairment"

# Linux ABI values the socket module does not name.
_SOL_PACKET = 263
_PACKET_ADD_MEMBERSHIP = 1
_PACKET_MR_PROMISC = 1
_PACKET_STATISTICS = 6
_PACKET_IGNORE_OUTGOING = 23
_PACKET_OUTGOING = 4
_ETH_P_ALL = 0x0003
_SO_TIMESTAMPNS = 35  # == SCM_TIMESTAMPNS
_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33
_SOCKET_BUFFER_BYTES = 16 * 1024 * 1024
_RECEIVE_BUFFER_BYTES = 1024 * 1024
"""Frames wait here before the relay reads them, out of reach of the queue limit, so this
buffer bounds the delay under overload: 1 MB (2 MB once the kernel doubles it) holds a few
thousand small frames, tens of ms at the relay's ~90k packets/s; 16 MB held 0.4-0.9 s
(bench/impairment.py)."""
_PR_SET_TIMERSLACK = 29
_TIMESPEC = struct.Struct("=qq")
_TPACKET_STATS = struct.Struct("=II")
_PACKET_MREQ = struct.Struct("=iHH8s")

_FRAME_BUFSIZE = 65536 + 64  # a GSO super-frame (offloads left on) must not be truncated silently
_RX_BATCH = 64  # frames read per socket per wake-up, so one busy port cannot starve the sends
_READ_GUARD_NS = 50_000
"""No port is read when a send is due sooner than this: reading one frame costs 15-45 µs here
(the syscall, the impairment decisions, an interrupt now and then), so a read started just
before a due time made that send late by as much. Within the guard the relay spins on the clock
alone, sends, then reads; a batch read stops early for the same reason. Frames left in the
socket lose nothing: their due time comes from their kernel RX timestamp. At 1 000 packets/s
with a delay that is a multiple of the period every arrival coincides with a due time, and
these collisions were most of the relay's late sends above 40 µs."""
_MAX_CLIENTS = 16
_MAX_REQUEST_BYTES = 64 * 1024
_EXCHANGE_TEXT = 300
_CLASS_BITS = 2  # a heap entry's slot is direction << _CLASS_BITS | priority class
_CLASS_MASK = (1 << _CLASS_BITS) - 1

# --------------------------------------------------------------------------------------------
# Send-lateness distribution
# --------------------------------------------------------------------------------------------

_LINEAR_US = 1024  # exact 1 µs buckets below this
_SUB_BUCKETS = 64  # then 64 buckets per power of two (< 1.6 % wide)
_MAX_LATE_US = (1 << 40) - 1


def _bucket(us: int) -> int:
    if us < _LINEAR_US:
        return us
    shift = us.bit_length() - 7  # us >> shift is in [64, 128)
    return _LINEAR_US + (shift - 4) * _SUB_BUCKETS + (us >> shift) - _SUB_BUCKETS


def _bucket_value(index: int) -> float:
    if index < _LINEAR_US:
        return float(index)
    k = index - _LINEAR_US
    shift = k // _SUB_BUCKETS + 4
    low = (k % _SUB_BUCKETS + _SUB_BUCKETS) << shift
    return low + (1 << shift) / 2


class _LateHistogram:
    """Bounded-memory (about 3000 buckets at most) distribution of send lateness in µs, because
    a relay that runs for days at 10k pps cannot keep every sample."""

    __slots__ = ("counts", "max_us", "n")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.max_us = 0

    def add(self, late_ns: int) -> None:
        us = min(max(late_ns, 0) // 1000, _MAX_LATE_US)
        index = _bucket(us)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.n += 1
        if us > self.max_us:
            self.max_us = us

    def percentile_us(self, q: float) -> float | None:
        if self.n == 0:
            return None
        rank = max(1, int(q / 100.0 * self.n + 0.5))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(_bucket_value(index), float(self.max_us))
        return float(self.max_us)


# --------------------------------------------------------------------------------------------
# Priority classification (the policy table is params.DSCP_CLASS)
# --------------------------------------------------------------------------------------------

_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86DD
_ETH_P_ARP = 0x0806
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_IPPROTO_ICMPV6 = 58
_ND_TYPES = range(133, 138)  # router/neighbour solicitation and advertisement, redirect
N_CLASSES = len(PRIORITY_CLASSES)
assert N_CLASSES <= 1 << _CLASS_BITS


def classify(frame: bytes | bytearray | memoryview, length: int | None = None) -> int:
    """The priority class (index into :data:`PRIORITY_CLASSES`) of an Ethernet frame, by its
    IPv4 DSCP or IPv6 traffic class through :data:`DSCP_CLASS`, behind up to two VLAN tags;
    ARP and IPv6 neighbour discovery get :data:`ARP_CLASS`, any other or truncated frame the
    default class. ``length`` is the frame's length when ``frame`` is a larger buffer."""
    n = len(frame) if length is None else length
    if n < 14:
        return DEFAULT_CLASS
    ethertype = frame[12] << 8 | frame[13]
    off = 14
    for _ in range(2):
        if ethertype not in _VLAN_TPIDS:
            break
        if n < off + 4:
            return DEFAULT_CLASS
        ethertype = frame[off + 2] << 8 | frame[off + 3]
        off += 4
    if ethertype == _ETH_P_IP:
        if n < off + 2:
            return DEFAULT_CLASS
        return DSCP_CLASS[frame[off + 1] >> 2]
    if ethertype == _ETH_P_IPV6:
        if n < off + 2:
            return DEFAULT_CLASS
        if n > off + 40 and frame[off + 6] == _IPPROTO_ICMPV6 and frame[off + 40] in _ND_TYPES:
            return ARP_CLASS
        # Traffic class = the 4 low bits of byte 0 and the 4 high bits of byte 1; DSCP is its
        # upper six bits.
        return DSCP_CLASS[(frame[off] & 0x0F) << 2 | frame[off + 1] >> 6]
    if ethertype == _ETH_P_ARP:
        return ARP_CLASS
    return DEFAULT_CLASS


# --------------------------------------------------------------------------------------------
# Per-direction impairment engine (no sockets: unit-testable)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class DirectionCounters:
    """Counters of one direction. Conservation: ``received + duplicated == forwarded +
    dropped_loss + dropped_queue + dropped_outage + dropped_blocked + dropped_error + queued``.
    ``dropped_error``, ``rx_kernel_drops`` and a high ``late_p99_us`` are the relay's own
    failures, not emulated conditions: a run that shows them did not get what it asked for."""

    received: int = 0
    forwarded: int = 0
    duplicated: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    """Tail drops, and with ``scheduler="priority"`` also frames pushed out by a higher class."""
    dropped_outage: int = 0
    dropped_blocked: int = 0
    """Frames dropped while the link is down for a reason outside the impairment: a radio
    switched off or out of coverage (see :meth:`Relay.block`)."""
    dropped_error: int = 0
    """Frames read truncated (larger than the relay's buffer) or refused by the send call."""
    reordered_sent: int = 0
    queued: int = 0
    """Frames held right now (a gauge, not a counter): waiting for the serialiser or in the
    delay line."""
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_kernel_drops: int = 0
    """Frames the kernel dropped before the relay read them (PACKET_STATISTICS tp_drops)."""


class _ClassCounters:
    """The same figures split by priority class (whatever the scheduler), one list entry per
    class: ``received + duplicated == forwarded + dropped + queued`` per class, where
    ``dropped`` is every cause (loss, queue, outage, error)."""

    __slots__ = ("dropped", "duplicated", "forwarded", "queued", "received")

    def __init__(self) -> None:
        self.received = [0] * N_CLASSES
        self.duplicated = [0] * N_CLASSES
        self.forwarded = [0] * N_CLASSES
        self.dropped = [0] * N_CLASSES
        self.queued = [0] * N_CLASSES

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {
            name: {
                "received": self.received[k],
                "duplicated": self.duplicated[k],
                "forwarded": self.forwarded[k],
                "dropped": self.dropped[k],
                "queued": self.queued[k],
            }
            for k, name in enumerate(PRIORITY_CLASSES)
        }


Released = tuple[int, int, bytes]
"""A frame leaving the priority queues for the delay line: (due time, class, frame)."""


class DirectionEngine:
    """The impairment decisions of one direction, kept free of sockets and clocks so that loss,
    duplication, ordering, rate and scheduling arithmetic can be tested without root or
    namespaces. With ``scheduler="fifo"`` (or no rate) the relay calls :meth:`admit` for each
    arriving frame and pushes one heap entry per returned due time: a FIFO serialiser knows a
    frame's departure on arrival. With ``"priority"`` a departure depends on frames still to
    come, so the relay hands the frame to :meth:`enqueue`, and :meth:`release` later gives the
    frames whose serialisation has started by a given time (the relay calls it after reading
    its port, and when :meth:`next_start_ns` comes). Either way each entry's fate comes back
    through :meth:`sent` or :meth:`send_failed`."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.params = ImpairmentParams()
        self.priority = False
        """Whether frames go through :meth:`enqueue` (``scheduler="priority"``)."""
        self.counters = DirectionCounters()
        self.classes = _ClassCounters()
        self.late = _LateHistogram()
        self.last_error: str | None = None
        self.blocked: set[str] = set()
        """Why the link is down (e.g. ``radio-off:modem_a1``); empty = up. Not an impairment
        parameter: setting or clearing the conditions leaves it alone."""
        self._ge_bad = False
        self._last_due_ns = 0
        self._tx_free_ns = 0  # when the rate limiter's serialiser is next idle
        self._rate_queue: deque[int] = deque()  # fifo: departure times of frames being serialised
        # priority: (kernel RX time, frame) waiting for the serialiser, one FIFO per class
        self._waiting: list[deque[tuple[int, bytes]]] = [deque() for _ in PRIORITY_CLASSES]
        self.waiting = 0
        """Frames in the priority queues (not yet serialised)."""

    def set_params(self, params: ImpairmentParams) -> None:
        """New parameters for frames admitted from now on; held frames keep their due time.
        Frames waiting in the priority queues stay there until :meth:`release` takes them
        (at the new rate); a relay that leaves ``priority`` flushes them with
        ``release(FLUSH)``."""
        self.params = params
        self.priority = params.scheduler == "priority"
        self._ge_bad = False

    def _lost(self, p: ImpairmentParams) -> bool:
        rnd = self.rng.random
        if p.loss_model == "random":
            return p.loss_pct > 0.0 and rnd() * 100.0 < p.loss_pct
        # Gilbert-Elliott as netem: the loss draw uses the state the packet found, then the
        # chain steps once per packet.
        if self._ge_bad:
            lost = rnd() * 100.0 < p.ge_bad_loss_pct
            if rnd() * 100.0 < p.ge_r_pct:
                self._ge_bad = False
        else:
            lost = rnd() * 100.0 < p.ge_good_loss_pct
            if rnd() * 100.0 < p.ge_p_pct:
                self._ge_bad = True
        return lost

    def _delay_ns(self, p: ImpairmentParams) -> int:
        if p.jitter_ms == 0.0:
            return int(p.delay_ms * 1e6)
        if p.jitter_distribution == "uniform":
            ms = p.delay_ms + self.rng.uniform(-p.jitter_ms, p.jitter_ms)
        else:
            ms = self.rng.gauss(p.delay_ms, p.jitter_ms)
        return int(max(ms, 0.0) * 1e6)

    def _due(self, depart: int, p: ImpairmentParams) -> int:
        """The due time of a copy that leaves the serialiser at ``depart``: delay, jitter and
        reorder come after it."""
        if p.reorder_pct > 0.0 and self.rng.random() * 100.0 < p.reorder_pct:
            due = depart
            self.counters.reordered_sent += 1
        else:
            due = depart + self._delay_ns(p)
            if p.keeps_order and due < self._last_due_ns:
                # A lowered delay must not let new frames overtake held ones.
                due = self._last_due_ns
        if due > self._last_due_ns:
            self._last_due_ns = due
        return due

    def _copies(self, frame_len: int, cls: int, p: ImpairmentParams) -> int:
        """Count an arrival and return how many copies go on: 0 (outage, loss), 1 or 2."""
        c = self.counters
        k = self.classes
        c.received += 1
        c.rx_bytes += frame_len
        k.received[cls] += 1
        if self.blocked:
            c.dropped_blocked += 1
            k.dropped[cls] += 1
            return 0
        if p.outage:
            c.dropped_outage += 1
            k.dropped[cls] += 1
            return 0
        if self._lost(p):
            c.dropped_loss += 1
            k.dropped[cls] += 1
            return 0
        if p.duplicate_pct > 0.0 and self.rng.random() * 100.0 < p.duplicate_pct:
            c.duplicated += 1
            k.duplicated[cls] += 1
            return 2
        return 1

    def admit(self, rx_ns: int, frame_len: int, cls: int = DEFAULT_CLASS) -> list[int]:
        """FIFO serialiser (or none): decide the fate of a frame of class ``cls`` received at
        ``rx_ns``: the due times of the copies to send (none if dropped, two if duplicated)."""
        c = self.counters
        k = self.classes
        p = self.params
        copies = self._copies(frame_len, cls, p)
        dues: list[int] = []
        for _ in range(copies):
            if c.queued >= p.queue_limit_packets:
                c.dropped_queue += 1
                k.dropped[cls] += 1
                continue
            depart = rx_ns
            if p.rate_kbps is not None:
                queue = self._rate_queue
                while queue and queue[0] <= rx_ns:
                    queue.popleft()
                if len(queue) >= p.queue_limit_packets:
                    c.dropped_queue += 1
                    k.dropped[cls] += 1
                    continue
                serialise_ns = int(frame_len * 8 * 1e6 / p.rate_kbps)
                depart = max(rx_ns, self._tx_free_ns) + serialise_ns
                self._tx_free_ns = depart
                queue.append(depart)
            c.queued += 1
            k.queued[cls] += 1
            dues.append(self._due(depart, p))
        return dues

    def enqueue(self, rx_ns: int, frame: bytes, cls: int) -> None:
        """Priority scheduler: outage, loss and duplication as :meth:`admit`, then the copies
        join the queue of class ``cls``; when the direction holds ``queue_limit_packets``, a
        copy pushes out the newest waiting frame of the lowest class below ``cls``, or is
        dropped if there is none. Arrivals must come in RX-time order (one socket's order)."""
        c = self.counters
        k = self.classes
        p = self.params
        for _ in range(self._copies(len(frame), cls, p)):
            if c.queued >= p.queue_limit_packets:
                victim = DEFAULT_CLASS
                while victim > cls and not self._waiting[victim]:
                    victim -= 1
                if victim <= cls:
                    c.dropped_queue += 1
                    k.dropped[cls] += 1
                    continue
                self._waiting[victim].pop()
                self.waiting -= 1
                c.queued -= 1
                c.dropped_queue += 1
                k.queued[victim] -= 1
                k.dropped[victim] += 1
            self._waiting[cls].append((rx_ns, frame))
            self.waiting += 1
            c.queued += 1
            k.queued[cls] += 1

    def next_start_ns(self) -> int | None:
        """When the serialiser starts its next frame, if any waits: the relay must call
        :meth:`release` once it has read every frame received up to then."""
        if not self.waiting:
            return None
        first = min(q[0][0] for q in self._waiting if q)
        return first if first > self._tx_free_ns else self._tx_free_ns

    def release(self, horizon_ns: int) -> list[Released]:
        """Start serialising, in priority order, every frame the serialiser takes up to
        ``horizon_ns``, a time by which every frame received has been handed to
        :meth:`enqueue` (so no frame still unseen could have been chosen instead). At each
        start the candidates are the frames received by then; among them the highest class
        wins, and within a class the oldest. Returns (due, class, frame) per frame started,
        for the delay line; ``FLUSH`` as horizon empties the queues."""
        out: list[Released] = []
        if not self.waiting:
            return out
        p = self.params
        rate = p.rate_kbps
        queues = self._waiting
        while self.waiting:
            first = min(q[0][0] for q in queues if q)
            start = first if first > self._tx_free_ns else self._tx_free_ns
            if start > horizon_ns:
                break
            cls = 0
            while not queues[cls] or queues[cls][0][0] > start:
                cls += 1
            _rx_ns, frame = queues[cls].popleft()
            self.waiting -= 1
            depart = start + (int(len(frame) * 8 * 1e6 / rate) if rate is not None else 0)
            self._tx_free_ns = depart
            out.append((self._due(depart, p), cls, frame))
        return out

    def sent(self, late_ns: int, frame_len: int, cls: int = DEFAULT_CLASS) -> None:
        c = self.counters
        c.queued -= 1
        c.forwarded += 1
        c.tx_bytes += frame_len
        k = self.classes
        k.queued[cls] -= 1
        k.forwarded[cls] += 1
        self.late.add(late_ns)

    def send_failed(self, error: str, cls: int = DEFAULT_CLASS) -> None:
        self.counters.queued -= 1
        self.counters.dropped_error += 1
        self.classes.queued[cls] -= 1
        self.classes.dropped[cls] += 1
        self.last_error = error

    def rx_failed(self, error: str, frame_len: int = 0, cls: int = DEFAULT_CLASS) -> None:
        """A frame that was received but cannot be forwarded (read truncated)."""
        self.counters.received += 1
        self.counters.rx_bytes += frame_len
        self.counters.dropped_error += 1
        self.classes.received[cls] += 1
        self.classes.dropped[cls] += 1
        self.last_error = error

    def snapshot(self) -> dict[str, Any]:
        c = self.counters
        out: dict[str, Any] = {f.name: getattr(c, f.name) for f in fields(c)}
        out["late_p50_us"] = self.late.percentile_us(50.0)
        out["late_p99_us"] = self.late.percentile_us(99.0)
        out["late_max_us"] = float(self.late.max_us) if self.late.n else None
        out["last_error"] = self.last_error
        out["classes"] = self.classes.snapshot()
        return out


FLUSH = 2**63 - 1
"""Horizon for :meth:`DirectionEngine.release` that empties the priority queues."""


# --------------------------------------------------------------------------------------------
# The relay process
# --------------------------------------------------------------------------------------------


def _open_port(ifname: str) -> socket.socket:
    """A non-blocking packet socket that sees every frame arriving on ``ifname`` but not the
    frames the relay itself sends there."""
    try:
        ifindex = socket.if_nametoindex(ifname)
    except OSError:
        raise OSError(errno.ENODEV, f"no interface {ifname!r} in this namespace") from None
    # Protocol 0 until bind: an ETH_P_ALL socket would see every interface's frames meanwhile.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        with contextlib.suppress(OSError):  # Linux < 4.20: _drain filters by packet type
            sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        for force, plain, size in (
            (_SO_RCVBUFFORCE, socket.SO_RCVBUF, _RECEIVE_BUFFER_BYTES),
            (_SO_SNDBUFFORCE, socket.SO_SNDBUF, _SOCKET_BUFFER_BYTES),
        ):
            try:  # root may exceed net.core.[rw]mem_max
                sock.setsockopt(socket.SOL_SOCKET, force, size)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
        # Promiscuous for as long as the socket lives: frames for the far end's MAC must be seen
        # on real NICs and bridges too (a veth delivers them anyway).
        mreq = _PACKET_MREQ.pack(ifindex, _PACKET_MR_PROMISC, 0, b"")
        sock.setsockopt(_SOL_PACKET, _PACKET_ADD_MEMBERSHIP, mreq)
        sock.bind((ifname, _ETH_P_ALL))
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


class _Client:
    __slots__ = ("closing", "inbuf", "outbuf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.closing = False


class Relay:
    """The engine process: two packet sockets, a scheduler heap and a control socket, all served
    by one thread (the baselines measured thread hand-offs as the worst design on both accuracy
    and capacity). :meth:`open`, then :meth:`run` until :meth:`request_stop`, then :meth:`close`.
    """

    def __init__(
        self,
        port_a: str,
        port_b: str,
        control_path: str | os.PathLike[str],
        *,
        seed: int | None = None,
        spin_us: int = 300,
    ) -> None:
        if spin_us < 0:
            raise ValueError(f"spin_us must be >= 0, got {spin_us}")
        self.port_a = port_a
        self.port_b = port_b
        self.control_path = Path(control_path)
        if len(os.fsencode(self.control_path)) >= 108:
            raise ValueError(f"control socket path too long for AF_UNIX: {self.control_path}")
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self.spin_ns = spin_us * 1000
        # One generator per direction: a busy b_to_a must not change a_to_b's loss pattern.
        self.engines = [DirectionEngine(d, random.Random(f"{self.seed}:{d}")) for d in DIRECTIONS]
        self._ports: list[socket.socket] = []  # [a, b]
        self._listener: socket.socket | None = None
        self._listener_ino: int | None = None
        self._clients: dict[int, _Client] = {}
        # (due_ns, seq, direction << _CLASS_BITS | priority class, frame)
        self._heap: list[tuple[int, int, int, bytes]] = []
        self._seq = 0
        self._rx_view = memoryview(bytearray(_FRAME_BUFSIZE))
        self._stop = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._started_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
        self._started_cpu = os.times()

    # -- setup and teardown ------------------------------------------------------------------

    def open(self) -> None:
        """Open both ports and the control socket; raises OSError with the reason."""
        self._ports = [_open_port(self.port_a), _open_port(self.port_b)]
        self._listener = self._listen(self.control_path)
        self._listener_ino = os.stat(self.control_path).st_ino

    @staticmethod
    def _listen(path: Path) -> socket.socket:
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.5)
                try:
                    probe.connect(str(path))
                except OSError:
                    path.unlink()  # stale: its relay is gone
                else:
                    raise OSError(errno.EADDRINUSE, f"another relay is listening on {path}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            sock.listen(8)
            sock.setblocking(False)
            return sock
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        """Close every socket and remove the control socket (if it is still ours)."""
        for client in list(self._clients.values()):
            self._drop(client)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                # Only our own socket file: a successor relay may have replaced it meanwhile.
                if os.stat(self.control_path).st_ino == self._listener_ino:
                    self.control_path.unlink()
        for sock in self._ports:
            sock.close()
        self._ports = []
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    @property
    def wakeup_fd(self) -> int:
        """Write end of the self-pipe, for :func:`signal.set_wakeup_fd`: a signal then ends
        a blocking ``select`` at once instead of when the next frame is due."""
        return self._wake_w

    def request_stop(self) -> None:
        """Async-signal-safe: the loop ends after its current step, sending nothing more."""
        self._stop = True

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Forward and impair until :meth:`request_stop`."""
        if not self._ports or self._listener is None:
            raise RuntimeError("Relay.open() first")
        heap = self._heap
        engines = self.engines
        clock = time.clock_gettime_ns
        realtime = time.CLOCK_REALTIME
        spin_ns = self.spin_ns
        sel = select.select
        port_fds = [s.fileno() for s in self._ports]
        listener_fd = self._listener.fileno()
        while not self._stop:
            timeout: float | None = None
            if engines[0].waiting or engines[1].waiting:
                timeout = self._serve_priority()
            if heap:
                now = clock(realtime)
                due = heap[0][0]
                if now < due <= now + _READ_GUARD_NS:
                    while now < due:  # too close to read anything first: spin on the clock
                        now = clock(realtime)
                if due <= now:
                    self._send_due(now)
                if heap:
                    wait_ns = heap[0][0] - clock(realtime)
                    wait = 0.0 if wait_ns <= spin_ns else (wait_ns - spin_ns) / 1e9
                    if timeout is None or wait < timeout:
                        timeout = wait
            rlist = [*port_fds, listener_fd, self._wake_r, *self._clients]
            wlist = [fd for fd, c in self._clients.items() if c.outbuf]
            readable, writable, _ = sel(rlist, wlist, [], timeout)
            for fd in readable:
                if fd == port_fds[0]:
                    self._drain(0)
                elif fd == port_fds[1]:
                    self._drain(1)
                elif fd == listener_fd:
                    self._accept()
                elif fd == self._wake_r:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 512)
                else:
                    client = self._clients.get(fd)
                    if client is not None:
                        self._read_client(client)
            for fd in writable:
                client = self._clients.get(fd)
                if client is not None:
                    self._flush(client)

    def _serve_priority(self) -> float | None:
        """Start the priority queues' frames whose serialisation is due; returns the seconds
        until the next start, if a frame waits. A start needs no spin: the frame is due only
        after its serialisation time plus the delay, and its start time is computed, not
        measured, so a late wake-up does not move it."""
        clock = time.clock_gettime_ns
        realtime = time.CLOCK_REALTIME
        wake: int | None = None
        for d, engine in enumerate(self.engines):
            start = engine.next_start_ns()
            if start is None:
                continue
            if start <= clock(realtime):
                # Read the port first: a frame received before the start may still be queued
                # in the socket, and it may outrank every waiting one.
                self._drain(d)
                start = engine.next_start_ns()
                if start is None:
                    continue
            if wake is None or start < wake:
                wake = start
        if wake is None:
            return None
        return max(0.0, (wake - clock(realtime)) / 1e9)

    def _release(self, d: int, horizon_ns: int) -> None:
        """Move the frames the serialiser of direction ``d`` has started into the delay line."""
        heap = self._heap
        base = d << _CLASS_BITS
        for due, cls, frame in self.engines[d].release(horizon_ns):
            self._seq += 1
            heapq.heappush(heap, (due, self._seq, base | cls, frame))

    def _send_due(self, now: int) -> None:
        heap = self._heap
        ports = self._ports
        engines = self.engines
        clock = time.clock_gettime_ns
        realtime = time.CLOCK_REALTIME
        while heap and heap[0][0] <= now:
            due, _seq, slot, frame = heapq.heappop(heap)
            d = slot >> _CLASS_BITS
            out = ports[1 - d]  # a_to_b leaves through b
            sent_ns = clock(realtime)
            try:
                out.send(frame)
            except OSError as exc:  # ENETDOWN (peer link down), ENOBUFS, EMSGSIZE ...
                engines[d].send_failed(f"send: {exc.strerror or exc}", slot & _CLASS_MASK)
                continue
            engines[d].sent(sent_ns - due, len(frame), slot & _CLASS_MASK)

    def _drain(self, d: int) -> None:
        """Read up to a batch of frames from port ``d``, classify and admit them; with the
        priority scheduler, then start what the serialiser can take by the newest time up to
        which every frame has been read."""
        sock = self._ports[d]
        engine = self.engines[d]
        view = self._rx_view
        ancsize = socket.CMSG_SPACE(_TIMESPEC.size)
        heap = self._heap
        dscp_class = DSCP_CLASS
        base = d << _CLASS_BITS
        clock = time.clock_gettime_ns
        realtime = time.CLOCK_REALTIME
        now = clock(realtime)  # only if a frame had no timestamp
        horizon = -1
        for i in range(_RX_BATCH):
            if i and heap:
                # Stop early for a send that is about due (not for overdue ones: then the relay
                # is behind and reading in batches is what keeps it going).
                until_due = heap[0][0] - clock(realtime)
                if 0 < until_due <= _READ_GUARD_NS:
                    break
            try:
                n, anc, flags, addr = sock.recvmsg_into([view], ancsize)
            except BlockingIOError:
                # Empty: everything received before ``now`` has been read.
                if now > horizon:
                    horizon = now
                break
            except OSError as exc:  # e.g. ENETDOWN once when the port goes down
                engine.last_error = f"recv: {exc.strerror or exc}"
                if now > horizon:  # nothing more to read now: do not spin on the error
                    horizon = now
                break
            if addr[2] == _PACKET_OUTGOING:  # our own sends, if IGNORE_OUTGOING is missing
                continue
            rx_ns = now
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(data)
                    rx_ns = sec * 1_000_000_000 + nsec
            # IPv4 without VLAN inline (the common case), everything else through classify().
            if n > 15 and view[12] == 0x08 and view[13] == 0x00:
                cls = dscp_class[view[15] >> 2]
            else:
                cls = classify(view, n)
            if flags & socket.MSG_TRUNC:
                engine.rx_failed(f"frame larger than {_FRAME_BUFSIZE} B (offloads on?)", n, cls)
                continue
            if engine.priority:
                engine.enqueue(rx_ns, bytes(view[:n]), cls)
                if rx_ns > horizon:
                    horizon = rx_ns
                continue
            dues = engine.admit(rx_ns, n, cls)
            if dues:
                frame = bytes(view[:n])
                slot = base | cls
                for due in dues:
                    self._seq += 1
                    heapq.heappush(heap, (due, self._seq, slot, frame))
        if engine.waiting and horizon >= 0:
            self._release(d, horizon)

    # -- control socket ----------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            client = _Client(sock)
            if len(self._clients) >= _MAX_CLIENTS:
                client.outbuf += _encode({"ok": False, "error": "too many control clients"})
                client.closing = True
            self._clients[sock.fileno()] = client
            self._flush(client)

    def _drop(self, client: _Client) -> None:
        self._clients.pop(client.sock.fileno(), None)
        client.sock.close()

    def _read_client(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        if not data:  # the client has finished; answer a last unterminated line, then close
            if client.inbuf.strip():
                client.outbuf += _encode(self.handle(bytes(client.inbuf)))
            client.inbuf.clear()
            client.closing = True
            self._flush(client)
            return
        if client.closing:
            return
        client.inbuf += data
        while True:
            nl = client.inbuf.find(b"\n")
            if nl < 0:
                break
            line = bytes(client.inbuf[:nl])
            del client.inbuf[: nl + 1]
            if line.strip():
                client.outbuf += _encode(self.handle(line))
        if len(client.inbuf) > _MAX_REQUEST_BYTES:
            client.inbuf.clear()
            client.outbuf += _encode(
                {"ok": False, "error": f"request longer than {_MAX_REQUEST_BYTES} bytes"}
            )
            client.closing = True
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        while client.outbuf:
            try:
                sent = client.sock.send(client.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(client)
                return
            del client.outbuf[:sent]
        if client.closing:
            self._drop(client)

    def handle(self, line: bytes) -> dict[str, Any]:
        """Answer one request line; never raises, whatever the line holds."""
        try:
            try:
                request = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                return {"ok": False, "error": f"bad JSON: {exc}"}
            if not isinstance(request, dict):
                return {"ok": False, "error": "a request must be a JSON object"}
            return self._dispatch(request)
        except Exception as exc:  # a bug must not take the link down with it
            return {"ok": False, "error": f"internal error: {exc!r}"}

    def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        allowed = {
            "set": {"cmd", "direction", "params"},
            "block": {"cmd", "reason", "on"},
        }.get(str(cmd), {"cmd"})
        extra = sorted(str(k) for k in request if k not in allowed)
        if cmd == "set":
            if extra:
                return {"ok": False, "error": f"unknown field(s) in set: {', '.join(extra)}"}
            direction = request.get("direction")
            targets = DIRECTIONS if direction == "both" else (direction,)
            if direction != "both" and direction not in DIRECTIONS:
                return {
                    "ok": False,
                    "error": f"direction must be a_to_b, b_to_a or both, got {direction!r}",
                }
            raw = request.get("params")
            if not isinstance(raw, dict):
                return {"ok": False, "error": "set needs a params object"}
            try:
                params = ImpairmentParams.from_dict(raw)
            except (ValueError, TypeError) as exc:
                return {"ok": False, "error": f"bad params: {exc}"}
            for d, engine in enumerate(self.engines):
                if engine.name in targets:
                    self._set_params(d, params)
            return {"ok": True}
        if cmd == "block":
            reason, on = request.get("reason"), request.get("on")
            if extra or not isinstance(reason, str) or not reason or not isinstance(on, bool):
                return {"ok": False, "error": "block needs a reason (text) and on (true/false)"}
            for engine in self.engines:
                (engine.blocked.add if on else engine.blocked.discard)(reason)
            return {"ok": True, "blocked": sorted(self.engines[0].blocked)}
        if cmd not in ("get", "counters", "clear", "ping"):
            return {
                "ok": False,
                "error": f"unknown cmd {cmd!r} (set, block, get, counters, clear, ping)",
            }
        if extra:
            return {"ok": False, "error": f"unknown field(s) in {cmd}: {', '.join(extra)}"}
        if cmd == "get":
            return {"ok": True, "params": self.params()}
        if cmd == "counters":
            return {"ok": True, "counters": self.counters(), "process": self.process_info()}
        if cmd == "clear":
            for d in range(len(self.engines)):
                self._set_params(d, ImpairmentParams())
            return {"ok": True}
        blocked = sorted(self.engines[0].blocked)
        return {"ok": True, "pong": True, "blocked": blocked, **self.process_info()}

    def _set_params(self, d: int, params: ImpairmentParams) -> None:
        engine = self.engines[d]
        engine.set_params(params)
        if not engine.priority and engine.waiting:
            # Leaving the priority scheduler: what still waits is served first, in priority
            # order at the new rate, ahead of the frames that now arrive.
            self._release(d, FLUSH)

    # -- reporting ---------------------------------------------------------------------------

    def _read_kernel_drops(self) -> None:
        # PACKET_STATISTICS resets on read, so the relay accumulates.
        for d, sock in enumerate(self._ports):
            with contextlib.suppress(OSError):
                raw = sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, _TPACKET_STATS.size)
                _packets, drops = _TPACKET_STATS.unpack(raw)
                self.engines[d].counters.rx_kernel_drops += drops

    def params(self) -> dict[str, dict[str, Any]]:
        return {e.name: e.params.to_dict() for e in self.engines}

    def counters(self) -> dict[str, dict[str, Any]]:
        self._read_kernel_drops()
        return {e.name: e.snapshot() for e in self.engines}

    def process_info(self) -> dict[str, Any]:
        """Who and how busy: tails come with CPU saturation on the 2-core machine, so every
        result should be read next to the relay's CPU share."""
        now = os.times()
        cpu = (now.user + now.system) - (self._started_cpu.user + self._started_cpu.system)
        uptime = (time.clock_gettime_ns(time.CLOCK_REALTIME) - self._started_ns) / 1e9
        return {
            "pid": os.getpid(),
            "seed": self.seed,
            "spin_us": self.spin_ns // 1000,
            "uptime_s": round(uptime, 3),
            "cpu_s": round(cpu, 3),
        }

    def report(self) -> dict[str, Any]:
        """The final counters file's content."""
        return {
            "counters": self.counters(),
            "params": self.params(),
            "process": self.process_info(),
        }


def _encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


class RelayControl:
    """Client of a relay's control socket. Connects on first use and again after a failure;
    every failure is a :class:`DriverError` that carries the last exchanges."""

    def __init__(self, path: str | os.PathLike[str], timeout_s: float = 5.0) -> None:
        self.path = os.fspath(path)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._exchanges: deque[str] = deque(maxlen=6)

    def __enter__(self) -> RelayControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()

    def _fail(self, message: str) -> DriverError:
        self.close()
        return DriverError(DEVICE, f"relay {self.path}: {message}", list(self._exchanges))

    def request(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its reply; ``{"ok": false}`` raises DriverError."""
        line = json.dumps(obj, separators=(",", ":"))
        self._exchanges.append("> " + line[:_EXCHANGE_TEXT])
        deadline = time.monotonic() + self.timeout_s
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(self.timeout_s)
                    sock.connect(self.path)
                except BaseException:
                    sock.close()
                    raise
                self._sock = sock
            self._sock.sendall(line.encode() + b"\n")
            while b"\n" not in self._buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no reply")
                self._sock.settimeout(remaining)
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the relay closed the connection")
                self._buf += chunk
        except (OSError, TimeoutError) as exc:
            raise self._fail(f"{obj.get('cmd')}: {exc}") from exc
        nl = self._buf.index(b"\n")
        raw = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        text = raw.decode(errors="replace")
        self._exchanges.append("< " + text[:_EXCHANGE_TEXT])
        try:
            reply = json.loads(text)
        except ValueError as exc:
            raise self._fail(f"unreadable reply: {exc}") from exc
        if not isinstance(reply, dict):
            raise self._fail("reply is not a JSON object")
        if reply.get("ok") is not True:
            raise DriverError(
                DEVICE,
                f"relay {self.path}: {obj.get('cmd')} refused: {reply.get('error')}",
                list(self._exchanges),
            )
        return reply

    def set(self, direction: str, params: ImpairmentParams) -> None:
        """Impair ``a_to_b``, ``b_to_a`` or ``both`` from the next frame on."""
        self.request({"cmd": "set", "direction": direction, "params": params.to_dict()})

    def get(self) -> dict[str, ImpairmentParams]:
        reply = self.request({"cmd": "get"})
        try:
            return {d: ImpairmentParams.from_dict(p) for d, p in reply["params"].items()}
        except (KeyError, AttributeError, TypeError, ValueError) as exc:
            raise self._fail(f"malformed get reply: {exc}") from exc

    def counters(self) -> dict[str, dict[str, Any]]:
        """Per direction: the :class:`DirectionCounters` fields plus ``late_p50_us``,
        ``late_p99_us``, ``late_max_us`` (µs from due time to send) and ``last_error``."""
        reply = self.request({"cmd": "counters"})
        counters = reply.get("counters")
        if not isinstance(counters, dict):
            raise self._fail("malformed counters reply")
        return counters

    def clear(self) -> None:
        """Both directions back to pass-through; counters and blocks are kept."""
        self.request({"cmd": "clear"})

    def block(self, reason: str, on: bool) -> list[str]:
        """Take the link down in both directions for ``reason`` (on) or lift that reason (off);
        the link carries frames again once no reason is left. Returns the reasons left."""
        reply = self.request({"cmd": "block", "reason": reason, "on": on})
        return [str(r) for r in reply.get("blocked", [])]

    def ping(self) -> dict[str, Any]:
        """Liveness plus pid, seed, spin window, uptime and CPU seconds."""
        return self.request({"cmd": "ping"})


# --------------------------------------------------------------------------------------------
# Offloads (no ethtool binary needed)
# --------------------------------------------------------------------------------------------


def relay_command(
    control: str | os.PathLike[str],
    *,
    port_a: str = "a",
    port_b: str = "b",
    seed: int | None = None,
    spin_us: int | None = None,
    counters_out: str | os.PathLike[str] | None = None,
    ready_file: str | os.PathLike[str] | None = None,
    python: str = sys.executable,
) -> list[str]:
    """Argv of a relay process; the controller prefixes it with ``ip netns exec NS``."""
    argv = [python, "-m", "drivers.impairment.relay", "--port-a", port_a, "--port-b", port_b]
    argv += ["--control", os.fspath(control)]
    if seed is not None:
        argv += ["--seed", str(int(seed))]
    if spin_us is not None:
        argv += ["--spin-us", str(int(spin_us))]
    if counters_out is not None:
        argv += ["--counters-out", os.fspath(counters_out)]
    if ready_file is not None:
        argv += ["--ready-file", os.fspath(ready_file)]
    return argv


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m drivers.impairment.relay",
        description="Layer-2 impairment relay between two interfaces (run inside the namespace).",
    )
    parser.add_argument("--port-a", required=True, help="interface of side a")
    parser.add_argument("--port-b", required=True, help="interface of side b")
    parser.add_argument("--control", required=True, help="Unix socket path for control requests")
    parser.add_argument("--seed", type=int, default=None, help="random seed (reproducible runs)")
    parser.add_argument("--spin-us", type=int, default=300, help="busy-poll window before a send")
    parser.add_argument("--counters-out", default=None, help="final counters JSON, written on exit")
    parser.add_argument("--ready-file", default=None, help="touched once the relay is ready")
    return parser


def _set_timer_slack_1ns() -> None:
    """The default 50 µs timer slack would eat a sixth of the spin window (baselines, 2d)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)


def _freeze_heap() -> None:
    """Move every object alive after start-up (modules, classes: tens of thousands) out of the
    cyclic collector's reach. Without it the first older-generation collections walked them all
    in the middle of forwarding: 5.6 ms measured for one, several sends late by as much. The
    loop itself creates few tracked objects, so the young collections that remain stay short."""
    gc.collect()
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; 0 after a clean stop (SIGTERM/SIGINT), 1 when the relay cannot start."""
    args = _build_parser().parse_args(argv)
    try:
        relay = Relay(args.port_a, args.port_b, args.control, seed=args.seed, spin_us=args.spin_us)
    except ValueError as exc:
        print(f"impairment relay: {exc}", file=sys.stderr)
        return 1
    _set_timer_slack_1ns()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        relay.request_stop()

    # Handlers before the control socket exists: a stop during start-up still removes it.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.set_wakeup_fd(relay.wakeup_fd, warn_on_full_buffer=False)
    try:
        try:
            relay.open()
        except OSError as exc:
            print(f"impairment relay: {exc}", file=sys.stderr)
            return 1
        if args.ready_file is not None:
            Path(args.ready_file).write_text(f"{os.getpid()}\n")
        _freeze_heap()
        try:
            relay.run()
        finally:  # after a crash too: the counters say what the link went through
            if args.counters_out is not None:
                write_json_atomic(args.counters_out, relay.report())
    finally:
        signal.set_wakeup_fd(-1)
        relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
