"""Passive analysis: capture files in, RTP and probe stream metrics out, in one streaming pass.

This is the analysis that works from a run's stored captures alone (or from any capture of a real
network): each file is read once in bounded chunks (:mod:`testbed.analysis.pcap`), RTP streams
are found by their headers (:mod:`testbed.analysis.rtp`), and our own active probe packets are
recognised by their ``b"TBPR"`` header (the wire format of ``drivers/traffic/probe.py``: magic,
version u8 = 1, flags u8, stream id u16, sequence u32, transmit time u64 ns, network byte order)
and measured with :func:`~testbed.analysis.streams.stream_metrics`, the capture stamp standing in
for the receive time. Only compact per-packet columns of the packets of interest are kept between
chunks (numpy arrays, never per-packet objects). Files are independent capture points: streams
are reported per file, each naming its capture, because the same stream seen at two points must
not be merged (merge a split ring buffer with ``mergecap`` first).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from testbed.analysis.pcap import CaptureReader, PacketArray
from testbed.analysis.rtp import MIN_PACKETS, RtpAnalyzer, parse_decode_as
from testbed.analysis.streams import stream_metrics
from testbed.errors import AnalysisError

__all__ = ["PROBE_MAGIC", "PROBE_VERSION", "ProbeAnalyzer", "analyze_captures"]

# Mirrors drivers/traffic/probe.py (HEADER = "!4sBBHIQ"); analysis must not import drivers.
PROBE_MAGIC = b"TBPR"
PROBE_VERSION = 1
PROBE_HEADER_BYTES = 20
_MAGIC = np.frombuffer(PROBE_MAGIC, dtype=np.uint8)

_PROBE_DTYPE = np.dtype(
    [
        ("rx_ns", "<i8"),
        ("tx_ns", "<i8"),
        ("src", "<u4"),
        ("dst", "<u4"),
        ("seq", "<u4"),
        ("stream", "<u2"),
    ]
)


def _ip(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 0xFF}.{(value >> 8) & 0xFF}.{value & 0xFF}"


class ProbeAnalyzer:
    """Collects probe packets from packet-table chunks and measures each ``(src, dst, stream
    id)`` stream. Memory: 30 bytes per probe packet."""

    def __init__(self) -> None:
        self._parts: list[npt.NDArray[np.void]] = []

    def add(self, packets: PacketArray) -> None:
        """Keep the UDP packets that carry a version-1 probe header."""
        head = packets["head"]
        ok = (
            (packets["proto"] == 17)
            & (packets["head_len"] >= PROBE_HEADER_BYTES)
            & (head[:, :4] == _MAGIC).all(axis=1)
            & (head[:, 4] == PROBE_VERSION)
        )
        idx = np.flatnonzero(ok)
        if not idx.size:
            return
        h = head[idx]
        rec = np.empty(idx.size, dtype=_PROBE_DTYPE)
        rec["rx_ns"] = packets["ts_ns"][idx]
        rec["src"] = packets["src"][idx]
        rec["dst"] = packets["dst"][idx]
        rec["stream"] = h[:, 6:8].copy().view(">u2")[:, 0]
        rec["seq"] = h[:, 8:12].copy().view(">u4")[:, 0]
        rec["tx_ns"] = h[:, 12:20].copy().view(">u8")[:, 0].astype(np.int64)
        self._parts.append(rec)

    def streams(self) -> list[dict[str, Any]]:
        """One dict per stream, ordered by (src, dst, stream id): ``id`` (``"src->dst#N"``),
        ``src``, ``dst``, ``stream`` (the wire id), ``packets`` (arrivals, duplicates
        included) and the fields of :meth:`StreamMetrics.to_dict` (kind ``"probe"``, ``sent``
        taken as highest sequence number + 1 since a capture cannot know the sender's count)."""
        if not self._parts:
            return []
        rec = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        order = np.lexsort((rec["stream"], rec["dst"], rec["src"]))  # stable: capture order
        rec = rec[order]
        key = (
            (rec["src"].astype(np.uint64) << np.uint64(32)) | rec["dst"].astype(np.uint64),
            rec["stream"],
        )
        new = np.ones(rec.size, dtype=np.bool_)
        new[1:] = (key[0][1:] != key[0][:-1]) | (key[1][1:] != key[1][:-1])
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], rec.size)
        out: list[dict[str, Any]] = []
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            sub = rec[a:b]
            src, dst, sid = _ip(int(sub["src"][0])), _ip(int(sub["dst"][0])), int(sub["stream"][0])
            metrics = stream_metrics(
                f"{src}->{dst}#{sid}", "probe", sub["seq"], sub["tx_ns"], sub["rx_ns"], sent=-1
            )
            out.append(
                {"src": src, "dst": dst, "stream": sid, "packets": b - a} | metrics.to_dict()
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
