"""Active probe streams for measuring one-way delay, loss, jitter, reordering and gaps: a paced UDP
sender and a kernel-timestamping receiver that the controller runs as separate processes inside
network namespaces (``ip netns exec NS python -m drivers.traffic.probe send|recv ...``), plus the
functions it uses to build those commands and read their results. Wire format: each UDP payload
starts with a 20-byte header in network byte order -- magic ``b"TBPR"`` (4 bytes), version u8 = 1,
flags u8 = 0, stream id u16, sequence u32 (0 for the first packet of a stream, +1 per packet,
wrapping at 2**32), transmit time u64 in ns since the Unix epoch (CLOCK_REALTIME, stamped
immediately before the send call) -- followed by zero padding up to the configured payload size
(at least 20 bytes). Every scheduled packet consumes a sequence number even when the send call
fails, so a gap in sequence numbers at the receiver is a lost packet. The receiver takes the
arrival time from the kernel (SO_TIMESTAMPNS), never from user space after ``recvmsg``, because
user-space wake-up adds 35-90 µs median and ms-scale tails on the 2-core lab machine, and it
appends one packed 22-byte little-endian :data:`RECORD` per probe packet to its output file.

The same sender also sends RTP voice streams (:mod:`drivers.traffic.rtp`: ``--rtp-stream``), which
carry no transmit time: it logs one :data:`~drivers.traffic.rtp.TX_RECORD` per RTP packet to
``--tx-log`` instead, and the receiver records RTP packets of the SSRCs it is given (``--rtp``)
with the extended RTP sequence number and ``tx_ns = 0``; the controller joins the two. Bulk
background load is an ordinary probe stream at a high rate.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import heapq
import ipaddress
import json
import math
import os
import signal
import socket
import struct
import sys
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from drivers.errors import DriverError
from drivers.files import write_json_atomic, write_text_atomic
from drivers.traffic.rtp import (
    FLAG_SEND_ERROR,
    FLAG_SID,
    FLAG_SID_UPDATE,
    FRAME_NS,
    RTP_HEADER,
    SID_STI,
    TS_PER_FRAME,
    TX_RECORD_STRUCT,
    RtpBinding,
    RtpStreamSpec,
    build_templates,
)

__all__ = [
    "HEADER",
    "MAGIC",
    "RECORD",
    "VERSION",
    "ProbeHeader",
    "ReceiverStats",
    "SenderStats",
    "StreamSpec",
    "StreamStats",
    "decode_header",
    "encode_header",
    "main",
    "read_records",
    "read_sender_stats",
    "receiver_command",
    "records_for",
    "run_receiver",
    "run_sender",
    "sender_command",
]

MAGIC = b"TBPR"
VERSION = 1
HEADER = struct.Struct("!4sBBHIQ")
MAX_PAYLOAD = 65507  # largest UDP payload over IPv4

RECORD = np.dtype(
    [("stream", "<u2"), ("seq", "<u4"), ("tx_ns", "<i8"), ("rx_ns", "<i8")], align=False
)
_RECORD_STRUCT = struct.Struct("<HIqq")  # byte-identical to RECORD, for the receive hot loop
assert _RECORD_STRUCT.size == RECORD.itemsize == 22

# Errors a send may hit while a link is down or filtered (an outage under test); the packet is
# counted as a send error and its sequence number stays consumed.
_TOLERATED_SEND_ERRNOS = frozenset(
    {
        errno.ENOBUFS,
        errno.ECONNREFUSED,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EPERM,
        errno.EAGAIN,
    }
)

_SO_TIMESTAMPNS: int = getattr(socket, "SO_TIMESTAMPNS", 35)
_SCM_TIMESTAMPNS: int = getattr(socket, "SCM_TIMESTAMPNS", _SO_TIMESTAMPNS)
_SO_RCVBUFFORCE: int = getattr(socket, "SO_RCVBUFFORCE", 33)
_TIMESPEC = struct.Struct("@ll")
_PR_SET_TIMERSLACK = 29
_MAX_SLEEP_NS = 50_000_000  # longest uninterrupted sleep, so a stop request is seen quickly
_FLUSH_INTERVAL_NS = 100_000_000
_FLUSH_BYTES = 1 << 20
_FLUSH_SLACK_NS = 150_000  # a transmit-log write waits for a gap this long before the next send
_FLUSH_FORCE_NS = 1_000_000_000
_BULK_GUARD_NS = 30_000  # a bulk send must end before a paced packet is due; 1200 B take ~10 µs
_RECV_BUFSIZE = 64  # only the header matters; longer datagrams are truncated on purpose
_RECV_RCVBUF = 8 << 20
_DRAIN_LIMIT = 1_000_000

EndedBy = Literal["duration", "signal", "error"]


# --------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeHeader:
    """The decoded fixed header of one probe packet."""

    stream_id: int
    seq: int
    tx_ns: int
    flags: int = 0
    version: int = VERSION


def encode_header(stream_id: int, seq: int, tx_ns: int, flags: int = 0) -> bytes:
    """Pack a probe header; raises ValueError when a field does not fit its wire width."""
    try:
        return HEADER.pack(MAGIC, VERSION, flags, stream_id, seq, tx_ns)
    except struct.error as exc:
        raise ValueError(f"probe header field out of range: {exc}") from exc


def decode_header(data: bytes | bytearray | memoryview) -> ProbeHeader | None:
    """Decode the header at the start of a datagram, or None when it is not one of our probes."""
    if len(data) < HEADER.size:
        return None
    magic, version, flags, stream_id, seq, tx_ns = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        return None
    return ProbeHeader(stream_id, seq, tx_ns, flags, version)


# --------------------------------------------------------------------------------------------
# Stream specifications and command lines
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One paced probe stream: NAME keys the stats, WIRE_ID is the u16 carried in every packet."""

    name: str
    wire_id: int
    dst_ip: str
    dst_port: int
    rate_pps: float
    payload_bytes: int
    dscp: int = 0

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"stream name must be non-empty without ':' or spaces: {self.name!r}")
        if not 0 <= self.wire_id <= 0xFFFF:
            raise ValueError(f"wire id must fit in u16: {self.wire_id}")
        ipaddress.ip_address(self.dst_ip)  # raises ValueError
        if not 1 <= self.dst_port <= 0xFFFF:
            raise ValueError(f"destination port out of range: {self.dst_port}")
        if not (math.isfinite(self.rate_pps) and self.rate_pps > 0):
            raise ValueError(f"rate must be a positive number of packets/s: {self.rate_pps}")
        if not HEADER.size <= self.payload_bytes <= MAX_PAYLOAD:
            raise ValueError(
                f"payload must be {HEADER.size}..{MAX_PAYLOAD} bytes: {self.payload_bytes}"
            )
        if not 0 <= self.dscp <= 63:
            raise ValueError(f"DSCP must be 0..63: {self.dscp}")

    @classmethod
    def parse(cls, text: str) -> StreamSpec:
        """Parse ``NAME:WIRE_ID:DST_IP:DST_PORT:RATE_PPS:PAYLOAD_BYTES:DSCP`` (IPv6 allowed)."""
        head = text.split(":", 2)
        tail = head[2].rsplit(":", 4) if len(head) == 3 else []
        if len(tail) != 5:
            raise ValueError(
                f"stream spec must be NAME:WIRE_ID:DST_IP:DST_PORT:RATE_PPS:PAYLOAD_BYTES:DSCP,"
                f" got {text!r}"
            )
        name, wire_id = head[0], head[1]
        dst_ip, port, rate, payload, dscp = tail
        return cls(
            name=name,
            wire_id=int(wire_id),
            dst_ip=dst_ip.strip("[]"),
            dst_port=int(port),
            rate_pps=float(rate),
            payload_bytes=int(payload),
            dscp=int(dscp),
        )

    def format(self) -> str:
        """The inverse of :meth:`parse`, for building sender command lines."""
        return (
            f"{self.name}:{self.wire_id}:{self.dst_ip}:{self.dst_port}:{float(self.rate_pps)!r}:"
            f"{self.payload_bytes}:{self.dscp}"
        )


def sender_command(
    streams: Sequence[StreamSpec],
    duration_s: float,
    stats_out: str | os.PathLike[str],
    *,
    rtp_streams: Sequence[RtpStreamSpec] = (),
    bulk_streams: Sequence[StreamSpec] = (),
    tx_log: str | os.PathLike[str] | None = None,
    start_at_ns: int | None = None,
    spin_us: int | None = None,
    python: str = sys.executable,
) -> list[str]:
    """Argv of a sender process; the controller prefixes it with ``ip netns exec NS``.
    ``tx_log`` is required with RTP streams."""
    argv = [python, "-m", "drivers.traffic.probe", "send"]
    for spec in streams:
        argv += ["--stream", spec.format()]
    for rspec in rtp_streams:
        argv += ["--rtp-stream", rspec.format()]
    for spec in bulk_streams:
        argv += ["--bulk-stream", spec.format()]
    if tx_log is not None:
        argv += ["--tx-log", os.fspath(tx_log)]
    argv += ["--duration-s", repr(float(duration_s)), "--stats-out", os.fspath(stats_out)]
    if start_at_ns is not None:
        argv += ["--start-at-ns", str(int(start_at_ns))]
    if spin_us is not None:
        argv += ["--spin-us", str(int(spin_us))]
    return argv


def receiver_command(
    bind: str,
    port: int,
    out: str | os.PathLike[str],
    *,
    ready_file: str | os.PathLike[str] | None = None,
    stats_out: str | os.PathLike[str] | None = None,
    rtp: Sequence[RtpBinding] = (),
    python: str = sys.executable,
) -> list[str]:
    """Argv of a receiver process; the controller prefixes it with ``ip netns exec NS``."""
    argv = [python, "-m", "drivers.traffic.probe", "recv", "--bind", bind, "--port", str(port)]
    argv += ["--out", os.fspath(out)]
    for binding in rtp:
        argv += ["--rtp", binding.format()]
    if ready_file is not None:
        argv += ["--ready-file", os.fspath(ready_file)]
    if stats_out is not None:
        argv += ["--stats-out", os.fspath(stats_out)]
    return argv


# --------------------------------------------------------------------------------------------
# Send-time lateness histogram
# --------------------------------------------------------------------------------------------

# Bin 0 is [0, 10 ns); then 1000 log-spaced bins up to 100 s (~2.3 % wide); the last is overflow.
_LATE_EDGES_NS = np.concatenate(([0.0], np.geomspace(10.0, 1e11, 1001)))
_LATE_CHUNK = 1024


class _LateHistogram:
    """Bounded-memory lateness distribution: a long 50k pps run cannot keep every sample."""

    __slots__ = ("buf", "counts", "max_ns", "n")

    def __init__(self) -> None:
        self.buf = array("q", bytes(8 * _LATE_CHUNK))
        self.n = 0
        self.counts = np.zeros(len(_LATE_EDGES_NS), dtype=np.int64)
        self.max_ns = 0

    def fold(self) -> None:
        if self.n == 0:
            return
        values = np.frombuffer(self.buf, dtype=np.int64, count=self.n)
        idx = np.searchsorted(_LATE_EDGES_NS, values, side="right") - 1
        self.counts += np.bincount(idx, minlength=len(_LATE_EDGES_NS))
        self.max_ns = max(self.max_ns, int(values.max()))
        self.n = 0

    def percentile_us(self, q: float) -> float | None:
        """Nearest-rank percentile, interpolated inside its bin (resolution ~2 %)."""
        self.fold()
        total = int(self.counts.sum())
        if total == 0:
            return None
        rank = max(1.0, math.ceil(q / 100.0 * total))
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, rank, side="left"))
        before = int(cum[i - 1]) if i > 0 else 0
        lo = float(_LATE_EDGES_NS[i])
        hi = float(_LATE_EDGES_NS[i + 1]) if i + 1 < len(_LATE_EDGES_NS) else lo
        hi = min(hi, float(self.max_ns)) if hi > lo else lo
        value = lo + (hi - lo) * (rank - before) / int(self.counts[i])
        return round(value / 1000.0, 3)


# --------------------------------------------------------------------------------------------
# Sender
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class StreamStats:
    """Per-stream sender counters; ``sent`` counts sequence numbers consumed (attempts). ``rtp``
    holds an RTP stream's identity (ssrc, seq0, ts0, payload_type, codec_mode)."""

    wire_id: int
    sent: int = 0
    send_errors: int = 0
    late_p50_us: float | None = None
    late_p99_us: float | None = None
    late_max_us: float | None = None
    first_tx_ns: int | None = None
    last_tx_ns: int | None = None
    rtp: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "wire_id": self.wire_id,
            "sent": self.sent,
            "send_errors": self.send_errors,
            "late_p50_us": self.late_p50_us,
            "late_p99_us": self.late_p99_us,
            "late_max_us": self.late_max_us,
            "first_tx_ns": self.first_tx_ns,
            "last_tx_ns": self.last_tx_ns,
        }
        if self.rtp is not None:
            obj["rtp"] = dict(self.rtp)
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StreamStats:
        return cls(
            wire_id=int(obj.get("wire_id", -1)),
            sent=int(obj["sent"]),
            send_errors=int(obj["send_errors"]),
            late_p50_us=obj.get("late_p50_us"),
            late_p99_us=obj.get("late_p99_us"),
            late_max_us=obj.get("late_max_us"),
            first_tx_ns=obj.get("first_tx_ns"),
            last_tx_ns=obj.get("last_tx_ns"),
            rtp=obj.get("rtp"),
        )


@dataclass(slots=True)
class SenderStats:
    """What a sender run did; ``ended_by`` is "signal" for SIGTERM/SIGINT or a stop request."""

    streams: dict[str, StreamStats]
    ended_by: EndedBy
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "streams": {name: st.to_json() for name, st in self.streams.items()},
            "ended_by": self.ended_by,
        }
        if self.error is not None:
            obj["error"] = self.error
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SenderStats:
        ended_by = obj["ended_by"]
        if ended_by not in ("duration", "signal", "error"):
            raise ValueError(f"unknown ended_by {ended_by!r}")
        return cls(
            streams={name: StreamStats.from_json(s) for name, s in obj["streams"].items()},
            ended_by=ended_by,
            error=obj.get("error"),
        )


def read_sender_stats(path: str | os.PathLike[str]) -> SenderStats:
    """Load a sender's ``--stats-out`` file."""
    with open(path, encoding="utf-8") as fh:
        return SenderStats.from_json(json.load(fh))


class _RtpTx:
    """Hot-loop state of an RTP stream: its two templates and where its frame schedule is."""

    __slots__ = (
        "flags",
        "frame",
        "frames",
        "pt",
        "seq0",
        "sid",
        "sid_octet",
        "sid_offset",
        "speech",
        "ts0",
    )

    def __init__(self, spec: RtpStreamSpec) -> None:
        templates, frames = build_templates(spec)
        self.speech = templates.speech
        self.sid = templates.sid
        self.sid_offset = templates.sid_sti_offset
        self.sid_octet = templates.sid[templates.sid_sti_offset] & ~SID_STI & 0xFF
        self.pt = spec.payload_type
        self.seq0 = templates.identity.seq0
        self.ts0 = templates.identity.ts0
        self.frames = frames
        self.frame, self.flags = next(frames)


class _TxStream:
    """Hot-loop state of one stream; slots keep attribute access cheap."""

    __slots__ = (
        "base_ns",
        "bulk",
        "hist",
        "k",
        "name",
        "payload",
        "period_ns",
        "rtp",
        "send",
        "seq",
        "sock",
        "stats",
        "wire_id",
    )

    def __init__(
        self,
        spec: StreamSpec | RtpStreamSpec,
        sock: socket.socket,
        send: Callable[[bytearray], int],
        bulk: bool = False,
    ) -> None:
        self.bulk = bulk
        self.name = spec.name
        self.wire_id = spec.wire_id
        self.sock = sock
        self.send = send
        self.stats = StreamStats(wire_id=spec.wire_id)
        self.rtp: _RtpTx | None = None
        if isinstance(spec, RtpStreamSpec):
            self.rtp = _RtpTx(spec)
            self.payload = self.rtp.speech
            self.period_ns = float(FRAME_NS)
            self.stats.rtp = {
                "ssrc": int.from_bytes(self.payload[8:12], "big"),
                "seq0": self.rtp.seq0,
                "ts0": self.rtp.ts0,
                "payload_type": spec.payload_type,
                "codec_mode": spec.codec_mode,
            }
        else:
            self.payload = bytearray(spec.payload_bytes)
            HEADER.pack_into(self.payload, 0, MAGIC, VERSION, 0, spec.wire_id, 0, 0)
            self.period_ns = 1e9 / spec.rate_pps
        self.base_ns = 0
        self.k = 0
        self.seq = 0
        self.hist = _LateHistogram()


class _TxLog:
    """The RTP transmit log: buffered records, appended whole, at most ~100 ms behind."""

    __slots__ = ("buf", "fd", "next_flush")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self.buf = bytearray()
        self.next_flush = 0

    def flush(self) -> None:
        if self.buf:
            _write_all(self.fd, self.buf)
            self.buf.clear()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            os.close(self.fd)


def _set_timer_slack_1ns() -> None:
    """Shrink the 50 µs default timer slack; best effort (only the sleep phase benefits)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(1), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _open_tx_socket(
    spec: StreamSpec | RtpStreamSpec, *, blocking: bool = True
) -> tuple[socket.socket, Callable[[bytearray], int]]:
    family = socket.AF_INET6 if ipaddress.ip_address(spec.dst_ip).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # A bulk socket never blocks: a full send buffer (a rate-limited link's queue charged to
        # it) would stall every stream of the sender. Its sends fail with EAGAIN instead.
        sock.setblocking(blocking)
        tos = spec.dscp << 2
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        addr = (spec.dst_ip, spec.dst_port)
        try:
            sock.connect(addr)
        except OSError as exc:
            # No route yet (link down at start): fall back to unconnected sends.
            if exc.errno not in _TOLERATED_SEND_ERRNOS:
                raise
            sendto = sock.sendto

            def send(data: bytearray) -> int:
                return sendto(data, addr)

            return sock, send
        return sock, sock.send
    except BaseException:
        sock.close()
        raise


def _wait_wall_clock(target_ns: int, spin_ns: int, stop: threading.Event) -> bool:
    """Sleep, then spin, until CLOCK_REALTIME reaches target; False if stopped first."""
    while True:
        remaining = target_ns - time.time_ns()
        if remaining <= spin_ns:
            break
        if stop.is_set():
            return False
        time.sleep(min(remaining - spin_ns, _MAX_SLEEP_NS) / 1e9)
    while time.time_ns() < target_ns:
        pass
    return not stop.is_set()


def run_sender(
    streams: Sequence[StreamSpec],
    duration_s: float,
    *,
    rtp_streams: Sequence[RtpStreamSpec] = (),
    bulk_streams: Sequence[StreamSpec] = (),
    tx_log: str | os.PathLike[str] | None = None,
    start_at_ns: int | None = None,
    stop: threading.Event | None = None,
    spin_us: int = 1000,
) -> SenderStats:
    """Send all streams from the calling thread until the duration elapses or ``stop`` is set.

    One scheduler (a heap of absolute monotonic due times, phases staggered evenly) instead of a
    thread per stream: GIL hand-offs would cost more than they save. Each wait sleeps until
    ``spin_us`` before the due time and then busy-spins, which the baselines show is needed for
    sub-µs median send error (sleep alone overshoots 60-200 µs); the spin costs up to a core.
    Packets that fall behind are sent late rather than skipped, so no sequence number is lost.
    RTP streams (``rtp_streams``) need ``tx_log``: their packets carry no transmit time.

    ``bulk_streams`` are probe streams sent as background load, in the same thread but second:
    staggered among themselves, never sent when a paced (probe or RTP) packet is due within
    ``_BULK_GUARD_NS``, and through non-blocking sockets (a full buffer is a send error, not a
    stall). Sharing one heap instead squeezed the paced streams' stagger into microseconds:
    with 100 RTP streams and 100 Mbit/s of bulk, median send error rose from 0.03 to 166 µs.
    """
    if not streams and not rtp_streams and not bulk_streams:
        raise ValueError("at least one stream is required")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration must be positive: {duration_s}")
    specs: list[StreamSpec | RtpStreamSpec] = [*streams, *rtp_streams, *bulk_streams]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate stream names: {names}")
    wire_ids = [s.wire_id for s in specs]
    if len(set(wire_ids)) != len(wire_ids):
        raise ValueError(f"duplicate wire ids: {wire_ids}")
    if spin_us < 0:
        raise ValueError(f"spin window must be >= 0 µs: {spin_us}")
    if rtp_streams and tx_log is None:
        raise ValueError("RTP streams need a transmit log (--tx-log)")
    stop = stop if stop is not None else threading.Event()
    spin_ns = spin_us * 1000
    _set_timer_slack_1ns()

    txs: list[_TxStream] = []
    log: _TxLog | None = None
    try:
        if rtp_streams:
            assert tx_log is not None
            try:
                log = _TxLog(tx_log)
            except OSError as exc:
                raise DriverError("probe sender", f"cannot open {tx_log}: {exc}") from exc
        n_paced = len(streams) + len(rtp_streams)
        for k, spec in enumerate(specs):
            bulk = k >= n_paced
            try:
                sock, send = _open_tx_socket(spec, blocking=not bulk)
            except OSError as exc:
                raise DriverError(
                    f"probe sender {spec.name}", f"cannot open socket: {exc}"
                ) from exc
            try:
                txs.append(_TxStream(spec, sock, send, bulk))
            except BaseException:
                sock.close()
                raise
        ended_by: EndedBy = "signal"
        error: str | None = None
        try:
            if start_at_ns is None or _wait_wall_clock(start_at_ns, spin_ns, stop):
                ended_by = _schedule(txs, int(duration_s * 1e9), spin_ns, stop, log)
        except OSError as exc:  # not an outage errno: report it with the counters so far
            ended_by, error = "error", f"send failed: {exc}"
        return SenderStats(
            streams={tx.name: _finish_stats(tx) for tx in txs},
            ended_by=ended_by,
            error=error,
        )
    finally:
        for tx in txs:
            tx.sock.close()
        if log is not None:
            log.close()


def _finish_stats(tx: _TxStream) -> StreamStats:
    st = tx.stats
    st.late_p50_us = tx.hist.percentile_us(50.0)
    st.late_p99_us = tx.hist.percentile_us(99.0)
    st.late_max_us = round(tx.hist.max_ns / 1000.0, 3) if st.sent else None
    return st


def _schedule(
    txs: list[_TxStream],
    duration_ns: int,
    spin_ns: int,
    stop: threading.Event,
    log: _TxLog | None = None,
) -> EndedBy:
    """The hot loop; local-variable aliases matter at 50k packets/s in CPython.

    Two heaps of (due, index): paced streams and bulk streams. A bulk packet goes only if it can
    be sent ``_BULK_GUARD_NS`` before the next paced packet is due, so bulk load delays paced
    packets by at most one send that started just before they became due.

    The RTP transmit log is flushed when its 100 ms are up *and* the next send is more than
    ``_FLUSH_SLACK_NS`` away, so the write lands in a wait instead of delaying a packet; if no
    such gap comes for a second (or the buffer fills), it is flushed regardless.
    """
    mono = time.monotonic_ns
    wall = time.time_ns
    sleep = time.sleep
    pack_into = HEADER.pack_into
    rtp_pack_into = RTP_HEADER.pack_into
    log_pack = TX_RECORD_STRUCT.pack
    is_stopped = stop.is_set
    heapreplace = heapq.heapreplace
    heappop = heapq.heappop
    guard = _BULK_GUARD_NS
    t0 = mono()
    end = t0 + duration_ns
    never = end + (1 << 62)
    log_buf = log.buf if log is not None else bytearray()
    next_flush = t0 + _FLUSH_INTERVAL_NS if log is not None else never
    paced: list[tuple[int, int]] = []
    bulk: list[tuple[int, int]] = []
    for heap, lane in ((paced, False), (bulk, True)):
        members = [i for i, tx in enumerate(txs) if tx.bulk == lane]
        if not members:
            continue
        # Offsets spread over the shortest period: with equal rates this is the even stagger of
        # the baselines; with harmonic rates (5 ms and 20 ms) it keeps sends from landing on
        # each other. Bulk streams have their own stagger, so a fast one cannot squeeze the
        # paced streams' offsets into a few µs.
        slot_ns = min(txs[i].period_ns for i in members) / len(members)
        for j, i in enumerate(members):
            tx = txs[i]
            tx.base_ns = t0 + int(slot_ns * (j + 0.5 * lane))
            first = tx.base_ns + (tx.rtp.frame * FRAME_NS if tx.rtp is not None else 0)
            if first < end:
                heap.append((first, i))
        heapq.heapify(heap)

    while paced or bulk:
        now = mono()
        if bulk and (not paced or max(now, bulk[0][0]) + guard <= paced[0][0]):
            heap = bulk
        else:
            heap = paced
        due, i = heap[0]
        if now >= next_flush:
            assert log is not None
            if (
                due - now > _FLUSH_SLACK_NS
                or now - next_flush > _FLUSH_FORCE_NS
                or len(log_buf) >= _FLUSH_BYTES
            ):
                log.flush()
                next_flush = now + _FLUSH_INTERVAL_NS
                now = mono()
        while due - now > spin_ns:
            if is_stopped():
                return "signal"
            sleep(min(due - now - spin_ns, _MAX_SLEEP_NS) / 1e9)
            now = mono()
        while now < due:
            now = mono()
        if is_stopped():
            return "signal"
        tx = txs[i]
        seq = tx.seq
        rtp = tx.rtp
        if rtp is None:
            tx_ns = wall()
            pack_into(tx.payload, 0, MAGIC, VERSION, 0, tx.wire_id, seq, tx_ns)
            packet = tx.payload
        else:
            flags = rtp.flags
            ext = (rtp.seq0 + seq) & 0xFFFFFFFF
            ts = (rtp.ts0 + rtp.frame * TS_PER_FRAME) & 0xFFFFFFFF
            if flags & FLAG_SID:
                packet = rtp.sid
                packet[rtp.sid_offset] = rtp.sid_octet | (SID_STI if flags & FLAG_SID_UPDATE else 0)
            else:
                packet = rtp.speech
            rtp_pack_into(packet, 1, ((flags & 1) << 7) | rtp.pt, ext & 0xFFFF, ts)
            tx_ns = wall()
        try:
            tx.send(packet)
        except OSError as exc:
            if exc.errno not in _TOLERATED_SEND_ERRNOS:
                raise
            tx.stats.send_errors += 1
            if rtp is not None:
                flags |= FLAG_SEND_ERROR
        st = tx.stats
        st.sent += 1
        if st.first_tx_ns is None:
            st.first_tx_ns = tx_ns
        st.last_tx_ns = tx_ns
        tx.seq = (seq + 1) & 0xFFFFFFFF
        hist = tx.hist
        hist.buf[hist.n] = now - due
        hist.n += 1
        if hist.n == _LATE_CHUNK:
            hist.fold()
        if rtp is None:
            tx.k += 1
            nxt = tx.base_ns + int(tx.k * tx.period_ns)
        else:
            log_buf += log_pack(tx.wire_id, ext, tx_ns, ts, flags)
            rtp.frame, rtp.flags = next(rtp.frames)
            nxt = tx.base_ns + rtp.frame * FRAME_NS
        if nxt < end:
            heapreplace(heap, (nxt, i))
        else:
            heappop(heap)
    return "duration"


# --------------------------------------------------------------------------------------------
# Receiver
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ReceiverStats:
    """Receiver counters: ``ignored`` = non-probe datagrams, ``no_timestamp`` = probes dropped
    because the kernel gave no RX timestamp (never expected with SO_TIMESTAMPNS set)."""

    records: int = 0
    ignored: int = 0
    no_timestamp: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "ignored": self.ignored, "no_timestamp": self.no_timestamp}


def _open_rx_socket(bind: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        try:  # root may exceed net.core.rmem_max; bursts at 50k pps need the room
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RECV_RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECV_RCVBUF)
        sock.bind((bind, port))
        return sock
    except BaseException:
        sock.close()
        raise


def _write_all(fd: int, data: bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def run_receiver(
    bind: str,
    port: int,
    out: str | os.PathLike[str],
    *,
    ready_file: str | os.PathLike[str] | None = None,
    stop: threading.Event | None = None,
    rtp: Sequence[RtpBinding] = (),
) -> ReceiverStats:
    """Record every probe packet arriving on ``bind:port`` into ``out`` until ``stop`` is set.

    ``out`` is truncated first. Records are buffered and appended as whole records at least
    every 100 ms, so SIGKILL loses at most the last ~100 ms and readers see no torn record
    except, at worst, a partial one at the very end. ``ready_file`` is written (atomically, with
    the bound port, useful when ``port`` is 0) once the socket is bound. RTP packets whose SSRC
    has a binding in ``rtp`` are recorded as (wire id, extended sequence number, 0, rx_ns).
    """
    stop = stop if stop is not None else threading.Event()
    stats = ReceiverStats()
    bindings: dict[int, _RtpRx] = {}
    for b in rtp:
        if b.ssrc in bindings:
            raise ValueError(f"SSRC {b.ssrc:#010x} is bound twice")
        bindings[b.ssrc] = _RtpRx(b)
    try:
        sock = _open_rx_socket(bind, port)
    except OSError as exc:
        raise DriverError(f"probe receiver {bind}:{port}", f"cannot bind: {exc}") from exc
    fd = -1
    try:
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        except OSError as exc:
            raise DriverError(f"probe receiver {bind}:{port}", f"cannot open {out}: {exc}") from exc
        sock.settimeout(0.1)
        bound_port = sock.getsockname()[1]
        if ready_file is not None:
            write_text_atomic(ready_file, f"{bound_port}\n")
        _receive_loop(sock, fd, stop, stats, bindings)
    finally:
        if fd >= 0:
            os.close(fd)
        sock.close()
    return stats


class _RtpRx:
    """Receive state of one RTP stream: its wire id and the highest extended sequence so far
    (``None`` until the first packet when the first sequence number is not known)."""

    __slots__ = ("highest", "wire_id")

    def __init__(self, binding: RtpBinding) -> None:
        self.wire_id = binding.wire_id
        self.highest: int | None = None if binding.seq0 is None else binding.seq0 - 1


_RTP_SEQ_SSRC = struct.Struct("!2xH4xI")


def _receive_loop(
    sock: socket.socket,
    fd: int,
    stop: threading.Event,
    stats: ReceiverStats,
    rtp: dict[int, _RtpRx] | None = None,
) -> None:
    """The hot loop: one recvmsg per datagram, kernel RX time from SCM_TIMESTAMPNS."""
    recvmsg = sock.recvmsg
    ancsize = socket.CMSG_SPACE(_TIMESPEC.size)
    unpack_header = HEADER.unpack_from
    unpack_rtp = _RTP_SEQ_SSRC.unpack_from
    unpack_ts = _TIMESPEC.unpack_from
    tsize = _TIMESPEC.size
    pack_record = _RECORD_STRUCT.pack
    mono = time.monotonic_ns
    is_stopped = stop.is_set
    sol_socket = socket.SOL_SOCKET
    scm_ts = _SCM_TIMESTAMPNS
    magic = MAGIC
    hsize = HEADER.size
    rtp_map = rtp or {}
    get_rtp = rtp_map.get
    buf = bytearray()
    next_flush = mono() + _FLUSH_INTERVAL_NS
    records = ignored = no_ts = 0
    draining = False
    drained = 0

    try:
        while True:
            if not draining and is_stopped():
                # Collect what is already queued in the socket, then leave.
                draining = True
                sock.setblocking(False)
            try:
                data, anc, _flags, _addr = recvmsg(_RECV_BUFSIZE, ancsize)
            except (TimeoutError, BlockingIOError):
                if draining:
                    break
            else:
                if draining:
                    drained += 1
                    if drained > _DRAIN_LIMIT:
                        break
                if len(data) >= hsize and data[:4] == magic:
                    _m, version, _fl, stream_id, seq, tx_ns = unpack_header(data)
                    rx_ns = -1
                    for level, ctype, cdata in anc:
                        if level == sol_socket and ctype == scm_ts and len(cdata) >= tsize:
                            sec, nsec = unpack_ts(cdata)
                            rx_ns = sec * 1_000_000_000 + nsec
                    if version != VERSION:
                        ignored += 1
                    elif rx_ns < 0:
                        no_ts += 1
                    else:
                        buf += pack_record(stream_id, seq, tx_ns, rx_ns)
                        records += 1
                elif rtp_map and len(data) >= 12 and data[0] & 0xC0 == 0x80:
                    seq16, ssrc = unpack_rtp(data)
                    state = get_rtp(ssrc)
                    rx_ns = -1
                    for level, ctype, cdata in anc:
                        if level == sol_socket and ctype == scm_ts and len(cdata) >= tsize:
                            sec, nsec = unpack_ts(cdata)
                            rx_ns = sec * 1_000_000_000 + nsec
                    if state is None:
                        ignored += 1
                    elif rx_ns < 0:
                        no_ts += 1
                    else:
                        # RFC 3550 A.1: the extension nearest the highest so far, so a packet
                        # reordered across a wrap keeps its old cycle.
                        highest = state.highest
                        if highest is None:
                            ext = highest = seq16
                        else:
                            delta = (seq16 - highest) & 0xFFFF
                            ext = highest + (delta - 0x10000 if delta >= 0x8000 else delta)
                        if ext > highest:
                            highest = ext
                        state.highest = highest
                        if 0 <= ext <= 0xFFFFFFFF:
                            buf += pack_record(state.wire_id, ext, 0, rx_ns)
                            records += 1
                        else:
                            ignored += 1
                else:
                    ignored += 1
            now = mono()
            if now >= next_flush or len(buf) >= _FLUSH_BYTES:
                if buf:
                    _write_all(fd, buf)
                    buf.clear()
                next_flush = now + _FLUSH_INTERVAL_NS
    finally:
        if buf:
            _write_all(fd, buf)
        stats.records = records
        stats.ignored = ignored
        stats.no_timestamp = no_ts


# --------------------------------------------------------------------------------------------
# Reading receiver output
# --------------------------------------------------------------------------------------------


def read_records(path: str | os.PathLike[str]) -> npt.NDArray[np.void]:
    """Load a receiver file as a RECORD array; a trailing partial record (torn write) is ignored."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        count = size // RECORD.itemsize
        if count == 0:
            return np.empty(0, dtype=RECORD)
        arr: npt.NDArray[np.void] = np.fromfile(fh, dtype=RECORD, count=count)
        return arr


def records_for(
    records: npt.NDArray[np.void], wire_id: int
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(seq, tx_ns, rx_ns) of one stream, in arrival order, as aligned contiguous arrays."""
    mask = records["stream"] == wire_id
    sub = records[mask]
    return (
        np.ascontiguousarray(sub["seq"], dtype=np.uint32),
        np.ascontiguousarray(sub["tx_ns"], dtype=np.int64),
        np.ascontiguousarray(sub["rx_ns"], dtype=np.int64),
    )


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _stream_arg(text: str) -> StreamSpec:
    try:
        return StreamSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _rtp_stream_arg(text: str) -> RtpStreamSpec:
    try:
        return RtpStreamSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _rtp_binding_arg(text: str) -> RtpBinding:
    try:
        return RtpBinding.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m drivers.traffic.probe",
        description="Paced UDP probe sender / kernel-timestamping receiver.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    send = sub.add_parser("send", help="send paced probe and RTP voice streams")
    send.add_argument(
        "--stream",
        action="append",
        default=[],
        type=_stream_arg,
        metavar="NAME:WIRE_ID:DST_IP:DST_PORT:RATE_PPS:PAYLOAD_BYTES:DSCP",
    )
    send.add_argument(
        "--rtp-stream",
        action="append",
        default=[],
        type=_rtp_stream_arg,
        metavar="name=N,wire=W,dst=IP,port=P[,dscp=D,pt=PT,mode=M,on=S|none,off=S|none,seed=X]",
    )
    send.add_argument(
        "--bulk-stream",
        action="append",
        default=[],
        type=_stream_arg,
        metavar="NAME:WIRE_ID:DST_IP:DST_PORT:RATE_PPS:PAYLOAD_BYTES:DSCP",
        help="a probe stream sent as background load, after the paced streams",
    )
    send.add_argument("--tx-log", default=None, help="RTP transmit log (needed with RTP streams)")
    send.add_argument("--duration-s", type=float, required=True)
    send.add_argument("--start-at-ns", type=int, default=None, help="CLOCK_REALTIME epoch ns")
    send.add_argument("--stats-out", required=True)
    send.add_argument("--spin-us", type=int, default=1000, help="busy-spin window before sends")

    recv = sub.add_parser("recv", help="record probe packets with kernel RX timestamps")
    recv.add_argument("--bind", required=True)
    recv.add_argument("--port", type=int, required=True, help="0 = ephemeral (see --ready-file)")
    recv.add_argument("--out", required=True)
    recv.add_argument("--ready-file", default=None, help="written with the port once bound")
    recv.add_argument("--stats-out", default=None)
    recv.add_argument(
        "--rtp",
        action="append",
        default=[],
        type=_rtp_binding_arg,
        metavar="SSRC:WIRE_ID[:SEQ0]",
        help="record RTP packets of this SSRC under WIRE_ID",
    )
    return parser


def _install_stop_handlers(stop: threading.Event) -> None:
    # Event.set() is safe here: the loops only poll is_set() and never block on the event.
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _cmd_send(args: argparse.Namespace, stop: threading.Event) -> int:
    streams: list[StreamSpec] = args.stream
    rtp_streams: list[RtpStreamSpec] = args.rtp_stream
    bulk_streams: list[StreamSpec] = args.bulk_stream
    specs: list[StreamSpec | RtpStreamSpec] = [*streams, *rtp_streams, *bulk_streams]
    if not specs:
        print(
            "probe send: give at least one --stream, --rtp-stream or --bulk-stream", file=sys.stderr
        )
        return 2
    try:
        stats = run_sender(
            streams,
            args.duration_s,
            rtp_streams=rtp_streams,
            bulk_streams=bulk_streams,
            tx_log=args.tx_log,
            start_at_ns=args.start_at_ns,
            stop=stop,
            spin_us=args.spin_us,
        )
    except (DriverError, ValueError) as exc:
        # Still leave a stats file, so the controller reads "error" instead of a missing file.
        stats = SenderStats(
            streams={s.name: StreamStats(wire_id=s.wire_id) for s in specs},
            ended_by="error",
            error=str(exc),
        )
    write_json_atomic(args.stats_out, stats.to_json())
    if stats.error is not None:
        print(f"probe send: {stats.error}", file=sys.stderr)
        return 1
    return 0


def _cmd_recv(args: argparse.Namespace, stop: threading.Event) -> int:
    stats = run_receiver(
        args.bind, args.port, args.out, ready_file=args.ready_file, stop=stop, rtp=args.rtp
    )
    if args.stats_out is not None:
        write_json_atomic(args.stats_out, stats.to_json())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit status (0 ok, 1 runtime failure, 2 usage error)."""
    args = _build_parser().parse_args(argv)
    stop = threading.Event()
    _install_stop_handlers(stop)
    try:
        if args.command == "send":
            return _cmd_send(args, stop)
        return _cmd_recv(args, stop)
    except (OSError, ValueError, DriverError) as exc:
        print(f"probe {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
