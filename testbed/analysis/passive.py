"""Passive analysis: capture files in, RTP and probe stream metrics out, in one streaming pass.

This is the analysis that works from a run's stored captures alone (or from any capture of a real
network): each file is read once in bounded chunks (:mod:`testbed.analysis.pcap`), RTP streams
are found by their headers (:mod:`testbed.analysis.rtp`), and our own active probe packets are
recognised by their ``b"TBPR"`` header (the wire format of ``drivers/traffic/probe.py``: magic,
version u8 = 1, flags u8, stream id u16, sequence u32, transmit time u64 ns, network byte order)
and measured by the definitions of :func:`~testbed.analysis.streams.stream_metrics`, the capture
stamp standing in for the receive time. Between chunks only per-stream state is kept (see
:class:`~testbed.analysis.streams.StreamAccumulator`), plus, per probe packet, the one-way delay
that exact percentiles need (4 bytes): memory does not otherwise grow with the capture. Files
are independent capture points: streams are reported per file, each naming its capture,
because the same stream seen at two points must not be merged (merge a split ring buffer with
``mergecap`` first).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from testbed.analysis.pcap import CaptureReader, PacketArray
from testbed.analysis.rtp import MIN_PACKETS, RtpAnalyzer, parse_decode_as
from testbed.analysis.streams import StreamAccumulator, StreamKeys
from testbed.errors import AnalysisError

__all__ = ["PROBE_MAGIC", "PROBE_VERSION", "ProbeAnalyzer", "analyze_captures"]

# Mirrors drivers/traffic/probe.py (HEADER = "!4sBBHIQ"); analysis must not import drivers.
PROBE_MAGIC = b"TBPR"
PROBE_VERSION = 1
PROBE_HEADER_BYTES = 20
_MAGIC = int(np.frombuffer(PROBE_MAGIC, dtype="<u4")[0])
# Duplicate window per probe stream (bits): exact for packets up to 2**19 numbers behind.
_WINDOW_BITS = 1 << 20


def _ip(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 0xFF}.{(value >> 8) & 0xFF}.{value & 0xFF}"


class ProbeAnalyzer:
    """Measures each ``(src, dst, stream id)`` probe stream from packet-table chunks, one chunk
    at a time (:meth:`add`), with :class:`~testbed.analysis.streams.StreamAccumulator`: the
    metrics of :func:`~testbed.analysis.streams.stream_metrics`, carried from chunk to chunk.
    Memory: per stream its state and a 128 KiB window of seen sequence numbers (exact duplicate
    detection for packets up to 2**19 numbers behind the highest: 5 s at 100 000 packets/s); per
    packet only the one-way
    delay of each first copy (4 bytes), which exact delay percentiles need."""

    def __init__(self) -> None:
        self._keys = StreamKeys()
        self._acc = StreamAccumulator(window_bits=_WINDOW_BITS, keep_delays=True)

    @property
    def window_misses(self) -> int:
        """Packets too far behind their stream's highest sequence number for the duplicate
        window (counted as first copies)."""
        return int(self._acc.window_misses.sum())

    def add(self, packets: PacketArray) -> None:
        """Take the UDP packets that carry a version-1 probe header."""
        head = packets["head"]
        ok = (
            (packets["proto"] == 17)
            & (packets["head_len"] >= PROBE_HEADER_BYTES)
            & (head[:, 4] == PROBE_VERSION)
            & (head[:, :4].copy().view("<u4")[:, 0] == _MAGIC)
        )
        idx = np.flatnonzero(ok)
        if not idx.size:
            return
        h = head[idx]
        key1: npt.NDArray[np.uint64] = packets["src"][idx].astype(np.uint64) << np.uint64(32)
        key1 |= packets["dst"][idx].astype(np.uint64)
        key2 = h[:, 6:8].copy().view(">u2")[:, 0].astype(np.uint64)
        segs = self._keys.segments(key1, key2)
        h = h[segs.order]
        self._acc.add(
            segs,
            seq=h[:, 8:12].copy().view(">u4")[:, 0].astype(np.int64),
            tx=h[:, 12:20].copy().view(">u8")[:, 0].astype(np.int64),
            rx=packets["ts_ns"][idx[segs.order]],
        )

    def streams(self) -> list[dict[str, Any]]:
        """One dict per stream, ordered by (src, dst, stream id): ``id`` (``"src->dst#N"``),
        ``src``, ``dst``, ``stream`` (the wire id), ``packets`` (arrivals, duplicates
        included) and the fields of :meth:`StreamMetrics.to_dict` (kind ``"probe"``, ``sent``
        taken as highest sequence number + 1 since a capture cannot know the sender's count)."""
        keys = sorted(zip(self._keys.key1, self._keys.key2, range(len(self._keys)), strict=True))
        out: list[dict[str, Any]] = []
        for key1, sid, g in keys:
            src, dst = _ip(key1 >> 32), _ip(key1 & 0xFFFFFFFF)
            metrics = self._acc.metrics(g, f"{src}->{dst}#{sid}", "probe", sent=-1)
            packets = int(self._acc.packets[g])
            out.append(
                {"src": src, "dst": dst, "stream": sid, "packets": packets} | metrics.to_dict()
            )
        return out


def analyze_captures(
    paths: Iterable[str | os.PathLike[str]],
    decode_as: Sequence[str] = (),
    *,
    chunk_packets: int = 200_000,
    min_rtp_packets: int = MIN_PACKETS,
    clock_rates: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """Analyse capture files; returns ``{"captures": [...], "rtp_streams": [...],
    "probe_streams": [...]}``, JSON-ready.

    ``captures`` holds one :meth:`CaptureInfo.to_dict` per file plus its stream counts;
    ``rtp_streams`` one :meth:`RtpStream.to_dict` per stream and ``probe_streams`` one
    :meth:`ProbeAnalyzer.streams` entry per stream, each with ``capture`` (the file) first.
    ``decode_as`` forces RTP on UDP ports (tshark syntax, ``"udp.port==N,rtp"``);
    ``clock_rates`` maps payload types to RTP clock rates (Hz), e.g. ``{96: 16000}`` for
    AMR-WB, which SDP would say but a capture does not. Every file header and the options are
    checked before any file is read, so a bad input fails fast with
    :class:`~testbed.errors.AnalysisError`.
    """
    parse_decode_as(decode_as)
    readers = [CaptureReader(path, chunk_packets) for path in paths]
    if not readers:
        raise AnalysisError("no capture files given")
    result: dict[str, Any] = {"captures": [], "rtp_streams": [], "probe_streams": []}
    for reader in readers:
        rtp = RtpAnalyzer(decode_as, min_packets=min_rtp_packets, clock_rates=clock_rates)
        probes = ProbeAnalyzer()
        for chunk in reader:
            rtp.add(chunk.packets)
            probes.add(chunk.packets)
        capture = str(reader.path)
        rtp_streams = [{"capture": capture} | s.to_dict() for s in rtp.streams()]
        probe_streams = [{"capture": capture} | s for s in probes.streams()]
        result["captures"].append(
            reader.info.to_dict()
            | {"rtp_streams": len(rtp_streams), "probe_streams": len(probe_streams)}
        )
        result["rtp_streams"].extend(rtp_streams)
        result["probe_streams"].extend(probe_streams)
    return result
