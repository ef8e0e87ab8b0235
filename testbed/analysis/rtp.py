"""RTP stream detection without port hints, and per-stream metrics comparable with Wireshark's.

Lab captures rarely come with the SDP that says which ports carry RTP, so streams are found by
their headers, like Wireshark's ``rtp_udp`` heuristic (version 2, payload type outside the RTCP
range 72-76 of RFC 5761) but stricter, because any UDP flow whose first byte starts with binary
10 would pass that: a flow ``(src, sport, dst, dport, SSRC)`` is RTP only with at least
``min_packets`` packets whose sequence numbers mostly step by a little (mod 2**16), often by
exactly 1, and whose timestamps move with them. ``decode_as`` entries in tshark's syntax
(``"udp.port==5004,rtp"``) force RTP on a port. Metrics come in two families: the RFC
definitions shared with the probe streams (:func:`testbed.analysis.streams.stream_metrics`;
loss per RFC 3550 A.3), and Wireshark's running statistics (max delta, mean and max jitter of
``tshark -q -z rtp,streams``) reproduced packet for packet, so that a figure can be checked in
Wireshark. The capture is streamed: each chunk's candidates are grouped by flow with one sort
and folded into per-flow state, so nothing is kept per packet (see :class:`RtpAnalyzer`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from testbed.analysis.pcap import PacketArray
from testbed.analysis.streams import (
    NO_STREAM,
    Segments,
    StreamAccumulator,
    StreamKeys,
    linear_recurrence,
)
from testbed.errors import AnalysisError

__all__ = [
    "MIN_PACKETS",
    "STATIC_CLOCK_RATES",
    "RtpAnalyzer",
    "RtpStream",
    "find_rtp_streams",
    "parse_decode_as",
]

#: Fewest packets for the heuristic to accept a flow (``decode_as`` flows need just one).
MIN_PACKETS = 8
# Heuristic thresholds, as fractions of the consecutive packet pairs whose sequence number
# changed. A random 16-bit field steps by exactly one with probability 2**-16 and by a small step
# with probability ~5e-2, so noise fails by orders of magnitude, while a stream with 20 % random
# loss, 20 % swapped neighbours and 10 % duplicates still has ~45 % steps of one and ~100 % small
# ones. RFC 3550 A.1's limits define "small".
_STEP_ONE_MIN = 0.25
_NEAR_MIN = 0.8
_SAME_WAY_MIN = 0.9
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100

#: Clock rates (Hz) of the static payload types (RFC 3551 table 4/5, the IANA registry), the
#: same table as Wireshark's ``ui/tap-rtp-analysis.c``. Dynamic types (96-127) have no entry:
#: without SDP Wireshark computes no jitter for them (it prints 0.000), and so do we (``None``)
#: unless a clock rate is given explicitly.
STATIC_CLOCK_RATES: Mapping[int, int] = {
    0: 8000,  # PCMU
    1: 8000,  # 1016
    2: 8000,  # G721
    3: 8000,  # GSM
    4: 8000,  # G723
    5: 8000,  # DVI4/8000
    6: 16000,  # DVI4/16000
    7: 8000,  # LPC
    8: 8000,  # PCMA
    9: 8000,  # G722 (its RTP clock is 8000 by RFC 3551's historical error)
    10: 44100,  # L16 stereo
    11: 44100,  # L16 mono
    12: 8000,  # QCELP
    13: 8000,  # CN
    14: 90000,  # MPA
    15: 8000,  # G728
    16: 11025,  # DVI4/11025
    17: 22050,  # DVI4/22050
    18: 8000,  # G729
    19: 8000,  # CN (old)
    25: 90000,  # CelB
    26: 90000,  # JPEG
    28: 90000,  # nv
    31: 90000,  # H261
    32: 90000,  # MPV
    33: 90000,  # MP2T
    34: 90000,  # H263
}
_PT_CN = (13, 19)

_DECODE_AS = re.compile(
    r"^\s*udp\.port\s*==\s*(\d+)(?:\s*-\s*(\d+))?\s*,\s*rtp\s*$", flags=re.IGNORECASE
)
_NS_PER_MS = 1_000_000.0
_NS_PER_S = 1_000_000_000.0
_MS_DECIMALS = 4

_I64 = npt.NDArray[np.int64]
_U64 = npt.NDArray[np.uint64]


def parse_decode_as(specs: Iterable[str]) -> frozenset[int]:
    """UDP ports forced to RTP by tshark-style ``-d`` entries: ``"udp.port==N,rtp"`` or a range
    ``"udp.port==N-M,rtp"``. Anything else raises :class:`~testbed.errors.AnalysisError`."""
    ports: set[int] = set()
    for spec in specs:
        match = _DECODE_AS.match(spec)
        if not match:
            raise AnalysisError(
                f"decode_as entry {spec!r} not understood: expected tshark syntax "
                "'udp.port==N,rtp' (or 'udp.port==N-M,rtp')"
            )
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not 0 < low <= high <= 0xFFFF:
            raise AnalysisError(f"decode_as entry {spec!r}: ports must be within 1..65535")
        ports.update(range(low, high + 1))
    return frozenset(ports)


def _ip(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 0xFF}.{(value >> 8) & 0xFF}.{value & 0xFF}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, _MS_DECIMALS)


@dataclass(frozen=True)
class RtpStream:
    """Metrics of one RTP stream (one SSRC on one 5-tuple, in capture order).

    * ``packets``: every RTP packet seen, duplicates included (Wireshark's "Pkts").
    * ``expected``: extended highest sequence number - first packet's sequence number + 1
      (RFC 3550 A.3); ``lost = expected - packets``, negative when duplicates outnumber losses,
      as in RTCP and Wireshark; ``loss_pct = 100 * lost / expected``, same sign. Wireshark uses
      the *last* packet's sequence number instead of the highest; they differ only when the last
      packet of the capture arrived out of order.
    * ``jitter_ms``: final RFC 3550 A.8 interarrival jitter, RTP timestamps converted with the
      payload type's clock rate, over first copies in arrival order (``stream_metrics``).
      ``None`` when the clock rate is unknown (dynamic payload type not given a rate). The
      first packet's payload type gives the clock; packets of another type (comfort noise,
      DTMF events) are converted with it too.
    * ``mean_jitter_ms``, ``max_jitter_ms``, ``max_delta_ms``: Wireshark's running statistics,
      reproduced exactly (see :meth:`RtpAnalyzer._update`): unlike ``max_gap_ms`` they skip packets
      with the marker bit, so the silence between talk spurts is not a "delta".
    * ``max_gap_ms``/``gap_start_s``, ``reordered`` (RFC 4737), ``duplicates``: as defined by
      :func:`~testbed.analysis.streams.stream_metrics`.
    * ``forced``: found through ``decode_as`` rather than by the heuristic.
    """

    ssrc: int
    src: str
    dst: str
    payload_type: int
    payload_types: tuple[int, ...]
    clock_rate: int | None
    packets: int
    expected: int
    lost: int
    loss_pct: float
    duplicates: int
    reordered: int
    jitter_ms: float | None
    mean_jitter_ms: float | None
    max_jitter_ms: float | None
    max_delta_ms: float
    max_gap_ms: float | None
    gap_start_s: float | None
    start_s: float
    end_s: float
    first_frame: int
    forced: bool

    @property
    def ssrc_hex(self) -> str:
        """SSRC as Wireshark prints it, e.g. ``0x0000A3F1``."""
        return f"0x{self.ssrc:08X}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form; milliseconds and percentages rounded to 4 decimals (0.1 us)."""
        return {
            "ssrc": self.ssrc_hex,
            "src": self.src,
            "dst": self.dst,
            "payload_type": self.payload_type,
            "payload_types": list(self.payload_types),
            "clock_rate": self.clock_rate,
            "packets": self.packets,
            "expected": self.expected,
            "lost": self.lost,
            "loss_pct": round(self.loss_pct, _MS_DECIMALS),
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "jitter_ms": _round(self.jitter_ms),
            "mean_jitter_ms": _round(self.mean_jitter_ms),
            "max_jitter_ms": _round(self.max_jitter_ms),
            "max_delta_ms": _round(self.max_delta_ms),
            "max_gap_ms": _round(self.max_gap_ms),
            "gap_start_s": None if self.gap_start_s is None else round(self.gap_start_s, 6),
            "start_s": round(self.start_s, 6),
            "end_s": round(self.end_s, 6),
            "first_frame": self.first_frame,
            "forced": self.forced,
        }


class RtpAnalyzer:
    """Finds and measures RTP streams in packet-table chunks, one chunk at a time (:meth:`add`),
    then reports them (:meth:`streams`).

    Nothing is kept per packet: each chunk's RTP-looking packets are grouped by flow ``(src, sport,
    dst, dport, SSRC)`` with one stable sort, and every flow's state is carried from chunk to chunk
    -- the heuristic's counts, extended sequence number and timestamp, Wireshark's running
    statistics and the RFC metrics (:class:`~testbed.analysis.streams.StreamAccumulator`, whose
    duplicate window is 2**16 bits: exact for any packet up to 32768 sequence numbers behind the
    highest, the half of the 16-bit number space within which RFC 3550's extension tells a late
    packet from a new cycle at all). Memory: about 400 bytes per flow, plus 8 KiB per flow of two or
    more packets. A flow is any UDP flow whose payloads start like RTP, so random-payload UDP that
    passes the header test makes one flow per packet (the SSRC bytes differ): the single packet of a
    new flow is therefore held back (about 80 bytes) until its flow sends again, and that is the one
    cost that grows with such traffic -- any such packet could be the first of a stream.

    Arrival order is the capture's record order, as in Wireshark (packets are not re-sorted by
    stamp, as :func:`~testbed.analysis.streams.stream_metrics` does with arrays).
    """

    def __init__(
        self,
        decode_as: Iterable[str] = (),
        *,
        min_packets: int = MIN_PACKETS,
        clock_rates: Mapping[int, int] | None = None,
    ) -> None:
        if min_packets < 2:
            raise AnalysisError(f"min_packets must be >= 2, got {min_packets}")
        self.forced_ports = parse_decode_as(decode_as)
        self.min_packets = min_packets
        self.clock_rates = dict(STATIC_CLOCK_RATES)
        for pt, rate in (clock_rates or {}).items():
            if not 0 <= pt <= 127 or rate <= 0:
                raise AnalysisError(f"clock rate {rate} for payload type {pt} is invalid")
            self.clock_rates[pt] = rate
        self._clocks = np.array([self.clock_rates.get(p, 0) for p in range(128)], dtype=np.int64)
        self._ticks_per_ms = self._clocks // 1000
        self._keys = StreamKeys()
        self._rfc = StreamAccumulator(window_bits=_WINDOW_BITS)
        self._held = np.zeros(0, dtype=_ROW_DTYPE)
        self._held_alive = np.zeros(0, dtype=np.bool_)
        self._held_count = 0
        self._size = 0
        self._state: dict[str, npt.NDArray[Any]] = {
            name: np.zeros(0, dtype=dtype) for name, dtype in _STATE_FIELDS
        }

    @property
    def window_misses(self) -> int:
        """Packets of the accepted streams too far behind their stream's highest sequence number
        for the duplicate window (counted as first copies); 0 for any real RTP stream."""
        accepted, _ = self._accepted()
        return int(self._rfc.window_misses[: accepted.size][accepted].sum())

    def _ensure(self, size: int) -> None:
        if size > self._size:
            for name, _ in _STATE_FIELDS:
                self._state[name] = _grown(self._state[name], size)
            self._size = self._state["first_rx"].size
        self._rfc.reserve(size)

    def add(self, packets: PacketArray) -> None:
        """Take one chunk: the UDP packets whose payload looks like an RTP header (version 2,
        not RTCP, room for the CSRC list) update their flows."""
        head = packets["head"]
        b0 = head[:, 0]
        b1 = head[:, 1]
        pt = b1 & 0x7F
        ok = (
            (packets["proto"] == 17)
            & (packets["head_len"] >= 12)
            & ((b0 >> 6) == 2)
            & ((pt < 72) | (pt > 76))
            & (packets["payload_len"] >= 12 + 4 * (b0 & 0x0F).astype(np.uint16))
        )
        idx = np.flatnonzero(ok)
        if not idx.size:
            return
        h = head[idx]
        rows = np.empty(idx.size, dtype=_ROW_DTYPE)
        rows["ts_ns"] = packets["ts_ns"][idx]
        rows["frame"] = packets["frame"][idx]
        key1 = rows["key1"]
        key1[...] = packets["src"][idx].astype(np.uint64) << np.uint64(32)
        key1 |= packets["dst"][idx].astype(np.uint64)
        key2 = rows["key2"]
        key2[...] = packets["sport"][idx].astype(np.uint64) << np.uint64(48)
        key2 |= packets["dport"][idx].astype(np.uint64) << np.uint64(32)
        key2 |= h[:, 8:12].copy().view(">u4")[:, 0].astype(np.uint64)
        rows["b1"] = h[:, 1]
        rows["seq"] = h[:, 2:4].copy().view(">u2")[:, 0]
        rows["rtp_ts"] = h[:, 4:8].copy().view(">u4")[:, 0]
        self._ingest(rows, hold=True)

    def _ingest(self, rows: npt.NDArray[np.void], hold: bool) -> None:
        """Group candidate rows (capture order) by flow and update the flows. With ``hold``,
        the single packet of a flow not seen before is held back instead of starting a flow:
        random UDP payloads that pass the header test make one such flow per packet (the SSRC
        bytes differ), and a held packet costs about 80 bytes, a flow 400 and then 8 KiB. A
        held packet whose flow sends again becomes the flow's first packet; the heuristic needs
        two packets, so only ``decode_as`` flows can be a single packet (see :meth:`streams`)."""
        keys = self._keys
        order, starts, ends = keys.group(rows["key1"], rows["key2"])
        ids, entries = keys.find(rows["key1"][order[starts]], rows["key2"][order[starts]])
        back = (ids < 0) & (ids != NO_STREAM)
        if back.any():  # held first packets of flows that send again: they come first
            self._held_alive[-1 - ids[back]] = False
            rows = np.concatenate([self._held[-1 - ids[back]], rows])
            order, starts, ends = keys.group(rows["key1"], rows["key2"])
            ids, entries = keys.find(rows["key1"][order[starts]], rows["key2"][order[starts]])
            back = (ids < 0) & (ids != NO_STREAM)
        first_rows = rows[order[starts]]
        new = ids == NO_STREAM
        single = new & (ends - starts == 1) if hold else np.zeros(new.size, dtype=np.bool_)
        if single.any():
            k = np.flatnonzero(single)
            first = self._held_count
            self._held = _grown(self._held, first + k.size)
            self._held_alive = _grown(self._held_alive, first + k.size)
            self._held[first : first + k.size] = first_rows[k]
            self._held_alive[first : first + k.size] = True
            self._held_count += k.size
            marks = -1 - np.arange(first, first + k.size, dtype=np.int64)
            keys.put(first_rows["key1"][k], first_rows["key2"][k], marks)
        fresh = new & ~single
        if fresh.any():
            ids[fresh] = keys.number(first_rows["key1"][fresh], first_rows["key2"][fresh])
            keys.put(first_rows["key1"][fresh], first_rows["key2"][fresh], ids[fresh])
        if back.any():
            ids[back] = keys.number(first_rows["key1"][back], first_rows["key2"][back])
            keys.relabel(entries[back], ids[back])
        keep = ~single
        if not keep.any():
            return
        lengths = (ends - starts)[keep]
        if not keep.all():
            order = order[np.repeat(keep, ends - starts)]
            ends = np.cumsum(lengths)
            starts = ends - lengths
        segs = Segments(
            order=order,
            starts=starts,
            ends=ends,
            run=np.repeat(np.arange(lengths.size), lengths),
            gid=ids[keep],
            new=(fresh | back)[keep],
        )
        self._update(segs, rows[order])

    def _update(self, segs: Segments, rows: npt.NDArray[np.void]) -> None:
        """Update the flows of one chunk's rows (in ``segs`` order).

        Wireshark's statistics follow ``rtppacket_analyse`` in ``ui/tap-rtp-analysis.c`` of
        Wireshark 4.0 (checked against ``tshark -z rtp,streams`` by the tests). Its rules, which
        differ from RFC 3550 in ways that matter with disorder: a packet is "in time sequence"
        when its 32-bit timestamp is at most 2**31 ticks after the stream's *first* timestamp;
        only such packets update the state. Its nominal time is ``(ts - ts_first) mod 2**32 /
        (clock // 1000)`` ms (note the integer division: 44.1 kHz counts as 44 ticks/ms), ``D =
        |(t - t_prev) - (nominal - nominal_prev)|`` against the previous in-sequence packet (the
        previous one with a known clock for the nominal part) and ``J = (15 J + D) / 16`` when
        the payload type has a known clock; ``delta = t - t_prev``. Max delta, max jitter and the
        mean count only "regular" packets (not the first, no marker bit, not comfort noise or
        right after it, in time sequence), and the mean divides by the number of packets before
        the current one, so a skipped packet counts as the running mean. Carried per flow: the
        last in-sequence arrival and nominal time, J, the mean, the maxima, whether the last
        packet was comfort noise; the recurrences run through
        :func:`~testbed.analysis.streams.linear_recurrence`.
        """
        self._ensure(len(self._keys))
        s = self._state
        gid, run, starts, ends, new = segs.gid, segs.run, segs.starts, segs.ends, segs.new
        rx = rows["ts_ns"]
        b1 = rows["b1"].astype(np.int64)
        seq = rows["seq"].astype(np.int64)
        rtp_ts = rows["rtp_ts"].astype(np.int64)
        pt = b1 & 0x7F
        marker = (b1 >> 7).astype(np.bool_)
        # The first packet of a new flow: its values start the flow's state, it pairs with none.
        first_ever = np.zeros(rx.size, dtype=np.bool_)
        first_ever[starts[new]] = True
        g_new = gid[new]
        at = starts[new]
        s["first_rx"][g_new] = rx[at]
        s["first_frame"][g_new] = rows["frame"][at]
        s["first_pt"][g_new] = pt[at]
        s["first_ts"][g_new] = rtp_ts[at]
        s["last_seq"][g_new] = seq[at]
        s["last_ext"][g_new] = seq[at]
        s["last_ts"][g_new] = rtp_ts[at]
        s["last_rel_ts"][g_new] = 0
        s["last_cn"][g_new] = _comfort_noise(pt[at])
        for name in ("t_in_seq", "nominal", "ws_jitter", "ws_mean", "max_delta", "max_jitter"):
            s[name][g_new] = 0.0
        count_before = self._rfc.packets[gid]

        # Sequence numbers and timestamps extended (RFC 3550 A.1: the shortest way round).
        step = ((seq - segs.prev(seq, s["last_seq"][gid]) + 0x8000) & 0xFFFF) - 0x8000
        ext = s["last_ext"][gid][run] + segs.cumsum(step)
        ts_step = rtp_ts - segs.prev(rtp_ts, s["last_ts"][gid])
        ts_step = ((ts_step + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        rel_ts = s["last_rel_ts"][gid][run] + segs.cumsum(ts_step)

        # The heuristic's counts over consecutive pairs whose sequence number changed.
        pair = ~first_ever
        moved = pair & (step != 0)
        counts = {
            "n_moved": moved,
            "n_one": pair & (step == 1),
            "n_near": moved & (step >= -_MAX_MISORDER) & (step <= _MAX_DROPOUT),
            "n_same": moved & ((ts_step == 0) | (np.sign(ts_step) == np.sign(step))),
        }
        for name, mask in counts.items():
            s[name][gid] += np.bincount(run[mask], minlength=gid.size)

        # RFC metrics: RTP timestamps become sender times (ns) with the first payload type's clock.
        clock = self._clocks[s["first_pt"][gid]][run]
        timed_flow = clock > 0
        tx = rx.copy()
        if timed_flow.any():
            k = np.flatnonzero(timed_flow)
            rel = rel_ts[k].astype(np.float64) * (_NS_PER_S / clock[k])
            tx[k] = np.rint(rel).astype(np.int64) + s["first_rx"][gid][run[k]]
        self._rfc.add(segs, ext, tx, rx)

        # Wireshark 4.0's running statistics, carried across chunks (rules in the docstring).
        first_ts = s["first_ts"][gid][run]
        t_ms = (rx - s["first_rx"][gid][run]).astype(np.float64) / _NS_PER_MS
        since = (rtp_ts - first_ts) & 0xFFFFFFFF
        in_seq = np.where(rtp_ts >= first_ts, since < (1 << 31), since <= (1 << 31))
        tpm = self._ticks_per_ms[pt]
        timed = tpm > 0
        nominal = since.astype(np.float64) / np.where(timed, tpm, 1)
        nominal_state = (in_seq & timed) | first_ever
        last, found = segs.fill_index(in_seq)
        t_filled = np.where(found, t_ms[last], s["t_in_seq"][gid][run])
        last_n, found_n = segs.fill_index(nominal_state)
        nominal_filled = np.where(found_n, nominal[last_n], s["nominal"][gid][run])
        delta = t_ms - segs.prev(t_filled, s["t_in_seq"][gid])
        diff = np.abs(delta - (nominal - segs.prev(nominal_filled, s["nominal"][gid])))
        upd_j = in_seq & timed & pair
        a = np.where(upd_j, 15.0 / 16.0, 1.0)
        b = np.where(upd_j, diff / 16.0, 0.0)
        b[starts] += a[starts] * np.where(new, 0.0, s["ws_jitter"][gid])
        a[starts] = 0.0
        jitter = linear_recurrence(a, b)

        cn = _comfort_noise(pt)
        regular = ~marker & ~cn & ~segs.prev(cn, s["last_cn"][gid]) & in_seq & pair
        upd = regular & timed
        s["max_delta"][gid] = np.maximum(
            s["max_delta"][gid], np.maximum.reduceat(np.where(regular, delta, -np.inf), starts)
        )
        s["max_jitter"][gid] = np.maximum(
            s["max_jitter"][gid], np.maximum.reduceat(np.where(upd, jitter, -np.inf), starts)
        )
        # mean_k = (mean * (k - 1) + J_k) / k on updates, k = packets before this one.
        k_before = (count_before[run] + np.arange(rx.size) - starts[run]).astype(np.float64)
        k_safe = np.maximum(k_before, 1.0)
        a = np.where(upd, (k_safe - 1.0) / k_safe, 1.0)
        b = np.where(upd, jitter / k_safe, 0.0)
        b[starts] += a[starts] * np.where(new, 0.0, s["ws_mean"][gid])
        a[starts] = 0.0
        mean = linear_recurrence(a, b)

        last_row = ends - 1
        s["ws_jitter"][gid] = jitter[last_row]
        s["ws_mean"][gid] = mean[last_row]
        s["t_in_seq"][gid] = t_filled[last_row]
        s["nominal"][gid] = nominal_filled[last_row]
        s["last_cn"][gid] = cn[last_row]
        s["last_seq"][gid] = seq[last_row]
        s["last_ext"][gid] = ext[last_row]
        s["last_ts"][gid] = rtp_ts[last_row]
        s["last_rel_ts"][gid] = rel_ts[last_row]
        s["last_rx"][gid] = rx[last_row]
        bit = np.left_shift(np.uint64(1), (pt & 63).astype(np.uint64))
        for name, part in (("pt_low", pt < 64), ("pt_high", pt >= 64)):
            s[name][gid] |= np.bitwise_or.reduceat(np.where(part, bit, np.uint64(0)), starts)

    def streams(self) -> list[RtpStream]:
        """The accepted streams, in order of their first packet."""
        self._release_forced()
        accepted, forced = self._accepted()
        streams = [self._stream(g, bool(forced[g])) for g in np.flatnonzero(accepted).tolist()]
        streams.sort(key=lambda st: (st.start_s, st.first_frame))
        return streams

    def _release_forced(self) -> None:
        """Held-back single packets on ``decode_as`` ports are streams of one packet."""
        if not self.forced_ports or not self._held_count:
            return
        held = self._held[: self._held_count]
        ports = np.array(sorted(self.forced_ports), dtype=np.uint64)
        sport = held["key2"] >> np.uint64(48)
        dport = (held["key2"] >> np.uint64(32)) & np.uint64(0xFFFF)
        forced = self._held_alive[: self._held_count] & (
            np.isin(sport, ports) | np.isin(dport, ports)
        )
        k = np.flatnonzero(forced)
        if not k.size:
            return
        self._held_alive[k] = False
        rows = held[k]
        ids = self._keys.number(rows["key1"], rows["key2"])
        _, entries = self._keys.find(rows["key1"], rows["key2"])
        self._keys.relabel(entries, ids)
        one = np.arange(k.size, dtype=np.int64)
        segs = Segments(
            order=one, starts=one, ends=one + 1, run=one, gid=ids, new=np.ones(k.size, np.bool_)
        )
        self._update(segs, rows)

    def _accepted(self) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Which flows are RTP streams, and which of them were forced by ``decode_as``: per
        flow, over consecutive packet pairs whose sequence number changed (duplicates aside),
        enough of them, most steps small (RFC 3550 A.1's MAX_DROPOUT/MAX_MISORDER), many
        exactly +1, and the timestamp moving the same way as the sequence number or not at all
        (reordering flips both; DTMF and video frames repeat a timestamp)."""
        n = len(self._keys)
        s = {name: values[:n] for name, values in self._state.items()}
        key2 = np.array(self._keys.key2, dtype=np.uint64)
        sport = (key2 >> np.uint64(48)).astype(np.int64)
        dport = ((key2 >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.int64)
        forced = np.zeros(n, dtype=np.bool_)
        if self.forced_ports:
            ports = np.array(sorted(self.forced_ports), dtype=np.int64)
            forced = np.isin(sport, ports) | np.isin(dport, ports)
        n_moved = s["n_moved"]
        accepted = forced | (
            (self._rfc.packets[:n] >= self.min_packets)
            & (n_moved >= (self.min_packets - 1) / 2)
            & (s["n_one"] >= _STEP_ONE_MIN * n_moved)
            & (s["n_near"] >= _NEAR_MIN * n_moved)
            & (s["n_same"] >= _SAME_WAY_MIN * n_moved)
        )
        return accepted, forced

    def _stream(self, g: int, forced: bool) -> RtpStream:
        s = self._state
        key1, key2 = self._keys.key1[g], self._keys.key2[g]
        ssrc = key2 & 0xFFFFFFFF
        src = f"{_ip(key1 >> 32)}:{key2 >> 48}"
        dst = f"{_ip(key1 & 0xFFFFFFFF)}:{(key2 >> 32) & 0xFFFF}"
        n = int(self._rfc.packets[g])
        expected = int(self._rfc.max_seq[g]) - int(self._rfc.first_seq[g]) + 1
        lost = expected - n
        first_pt = int(s["first_pt"][g])
        clock = self.clock_rates.get(first_pt)
        metrics = self._rfc.metrics(g, f"rtp {src}->{dst} 0x{ssrc:08X}", "rtp", sent=-1)
        mask = (int(s["pt_high"][g]) << 64) | int(s["pt_low"][g])
        two = n >= 2
        return RtpStream(
            ssrc=ssrc,
            src=src,
            dst=dst,
            payload_type=first_pt,
            payload_types=tuple(p for p in range(128) if mask >> p & 1),
            clock_rate=clock,
            packets=n,
            expected=expected,
            lost=lost,
            loss_pct=100.0 * lost / expected,
            duplicates=metrics.duplicates,
            reordered=metrics.reordered,
            jitter_ms=metrics.jitter_ms if clock else None,
            mean_jitter_ms=(float(s["ws_mean"][g]) if two else 0.0) if clock else None,
            max_jitter_ms=(float(s["max_jitter"][g]) if two else 0.0) if clock else None,
            max_delta_ms=float(s["max_delta"][g]) if two else 0.0,
            max_gap_ms=metrics.max_gap_ms,
            gap_start_s=metrics.gap_start_s,
            start_s=float(s["first_rx"][g]) / _NS_PER_S,
            end_s=float(s["last_rx"][g]) / _NS_PER_S,
            first_frame=int(s["first_frame"][g]),
            forced=forced,
        )


_WINDOW_BITS = 1 << 16
# A candidate packet, as kept between the steps of a chunk and for held-back first packets.
_ROW_DTYPE = np.dtype(
    [
        ("ts_ns", "<i8"),
        ("frame", "<i8"),
        ("key1", "<u8"),  # src << 32 | dst
        ("key2", "<u8"),  # sport << 48 | dport << 32 | SSRC
        ("rtp_ts", "<u4"),
        ("seq", "<u2"),
        ("b1", "u1"),  # marker bit and payload type
    ]
)
_STATE_FIELDS: tuple[tuple[str, str], ...] = (
    ("first_rx", "<i8"),
    ("last_rx", "<i8"),
    ("first_frame", "<i8"),
    ("first_pt", "<i8"),
    ("first_ts", "<i8"),
    ("last_seq", "<i8"),
    ("last_ext", "<i8"),
    ("last_ts", "<i8"),
    ("last_rel_ts", "<i8"),
    ("last_cn", "?"),
    ("n_moved", "<i8"),
    ("n_one", "<i8"),
    ("n_near", "<i8"),
    ("n_same", "<i8"),
    ("t_in_seq", "<f8"),
    ("nominal", "<f8"),
    ("ws_jitter", "<f8"),
    ("ws_mean", "<f8"),
    ("max_delta", "<f8"),
    ("max_jitter", "<f8"),
    ("pt_low", "<u8"),
    ("pt_high", "<u8"),
)


def _comfort_noise(pt: _I64) -> npt.NDArray[np.bool_]:
    cn: npt.NDArray[np.bool_] = (pt == _PT_CN[0]) | (pt == _PT_CN[1])
    return cn


def _grown(array: npt.NDArray[Any], size: int) -> npt.NDArray[Any]:
    if array.size >= size:
        return array
    out = np.zeros(max(size, 2 * array.size), dtype=array.dtype)
    out[: array.size] = array
    return out


def find_rtp_streams(
    chunks: Iterable[PacketArray],
    decode_as: Sequence[str] = (),
    *,
    min_packets: int = MIN_PACKETS,
    clock_rates: Mapping[int, int] | None = None,
) -> list[RtpStream]:
    """Convenience: run an :class:`RtpAnalyzer` over packet-table chunks."""
    analyzer = RtpAnalyzer(decode_as, min_packets=min_packets, clock_rates=clock_rates)
    for chunk in chunks:
        analyzer.add(chunk)
    return analyzer.streams()
