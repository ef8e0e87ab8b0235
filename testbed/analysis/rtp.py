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
Wireshark. Candidates are reduced chunk by chunk to a compact table and grouped with one sort.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from testbed.analysis.pcap import PacketArray
from testbed.analysis.streams import stream_metrics
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

_CANDIDATE_DTYPE = np.dtype(
    [
        ("ts_ns", "<i8"),
        ("frame", "<u8"),
        ("src", "<u4"),
        ("dst", "<u4"),
        ("ssrc", "<u4"),
        ("rtp_ts", "<u4"),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("seq", "<u2"),
        ("b1", "u1"),  # marker bit and payload type
    ]
)
_DECODE_AS = re.compile(
    r"^\s*udp\.port\s*==\s*(\d+)(?:\s*-\s*(\d+))?\s*,\s*rtp\s*$", flags=re.IGNORECASE
)
_NS_PER_MS = 1_000_000.0
_NS_PER_S = 1_000_000_000.0
_MS_DECIMALS = 4
_JITTER_BLOCK = 128

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]


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
      reproduced exactly (see :func:`_wireshark_stats`): unlike ``max_gap_ms`` they skip packets
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
    """Collects RTP candidates from packet-table chunks (:meth:`add`), then finds and measures
    the streams (:meth:`streams`). Memory: 44 bytes per candidate packet, nothing per packet
    that is not UDP with an RTP-looking header."""

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
        self._parts: list[npt.NDArray[np.void]] = []

    def add(self, packets: PacketArray) -> None:
        """Keep the UDP packets whose payload looks like an RTP header (version 2, not RTCP)."""
        head = packets["head"]
        b0 = head[:, 0]
        pt = head[:, 1] & 0x7F
        plen = packets["payload_len"].astype(np.int64)
        ok = (
            (packets["proto"] == 17)
            & (packets["head_len"] >= 12)
            & ((b0 >> 6) == 2)
            & ((pt < 72) | (pt > 76))
            & (plen >= 12 + 4 * (b0 & 0x0F).astype(np.int64))  # room for the CSRC list
        )
        idx = np.flatnonzero(ok)
        if not idx.size:
            return
        h = head[idx]
        cand = np.empty(idx.size, dtype=_CANDIDATE_DTYPE)
        for name in ("ts_ns", "frame", "src", "dst", "sport", "dport"):
            cand[name] = packets[name][idx]
        cand["b1"] = h[:, 1]
        cand["seq"] = h[:, 2:4].copy().view(">u2")[:, 0]
        cand["rtp_ts"] = h[:, 4:8].copy().view(">u4")[:, 0]
        cand["ssrc"] = h[:, 8:12].copy().view(">u4")[:, 0]
        self._parts.append(cand)

    def streams(self) -> list[RtpStream]:
        """The accepted streams, in order of their first packet."""
        if not self._parts:
            return []
        cand = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        self._parts = [cand]  # the chunks themselves are no longer needed: halve the peak
        # Group by flow key with one stable sort: capture order is kept inside each group.
        k1 = (cand["src"].astype(np.uint64) << np.uint64(32)) | cand["dst"].astype(np.uint64)
        k2 = (
            (cand["sport"].astype(np.uint64) << np.uint64(48))
            | (cand["dport"].astype(np.uint64) << np.uint64(32))
            | cand["ssrc"].astype(np.uint64)
        )
        order = np.lexsort((k2, k1))
        cand = cand[order]
        k1, k2 = k1[order], k2[order]
        del order
        new = np.ones(cand.size, dtype=np.bool_)
        new[1:] = (k1[1:] != k1[:-1]) | (k2[1:] != k2[:-1])
        del k1, k2
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], cand.size)
        counts = ends - starts

        forced = np.zeros(starts.size, dtype=np.bool_)
        if self.forced_ports:
            ports = np.array(sorted(self.forced_ports), dtype=np.uint16)
            forced = np.isin(cand["sport"][starts], ports) | np.isin(cand["dport"][starts], ports)
        accepted = forced | self._heuristic(cand, new, starts, counts)

        streams = []
        for g in np.flatnonzero(accepted).tolist():
            sub = cand[starts[g] : ends[g]]
            streams.append(self._measure(sub, bool(forced[g])))
        streams.sort(key=lambda s: (s.start_s, s.first_frame))
        return streams

    def _heuristic(
        self,
        cand: npt.NDArray[np.void],
        new: npt.NDArray[np.bool_],
        starts: _I64,
        counts: _I64,
    ) -> npt.NDArray[np.bool_]:
        """Per group, over consecutive packet pairs whose sequence number changed (duplicates
        aside): enough of them, most steps small (RFC 3550 A.1's MAX_DROPOUT/MAX_MISORDER),
        many exactly +1, and the timestamp moving the same way as the sequence number or not
        at all (reordering flips both; DTMF and video frames repeat a timestamp)."""
        group = np.cumsum(new) - 1
        pair = ~new[1:]  # consecutive candidates of the same group
        pg = group[1:][pair]
        seq = cand["seq"].astype(np.int64)
        step = (((seq[1:] - seq[:-1]) + 0x8000) & 0xFFFF) - 0x8000
        ts = cand["rtp_ts"].astype(np.int64)
        ts_step = ((ts[1:] - ts[:-1] + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        step, ts_step = step[pair], ts_step[pair]
        moved = step != 0
        near = moved & (step >= -_MAX_MISORDER) & (step <= _MAX_DROPOUT)
        same_way = moved & ((ts_step == 0) | (np.sign(ts_step) == np.sign(step)))
        ng = starts.size
        n_moved = np.bincount(pg, weights=moved, minlength=ng)
        n_one = np.bincount(pg, weights=step == 1, minlength=ng)
        n_near = np.bincount(pg, weights=near, minlength=ng)
        n_same = np.bincount(pg, weights=same_way, minlength=ng)
        ok: npt.NDArray[np.bool_] = (
            (counts >= self.min_packets)
            & (n_moved >= (self.min_packets - 1) / 2)
            & (n_one >= _STEP_ONE_MIN * n_moved)
            & (n_near >= _NEAR_MIN * n_moved)
            & (n_same >= _SAME_WAY_MIN * n_moved)
        )
        return ok

    def _measure(self, sub: npt.NDArray[np.void], forced: bool) -> RtpStream:
        rx = sub["ts_ns"].astype(np.int64)
        pt = (sub["b1"] & 0x7F).astype(np.int64)
        marker = (sub["b1"] >> 7).astype(np.bool_)
        ext_seq = _unwrap(sub["seq"].astype(np.int64), 16)
        ext_ts = _unwrap(sub["rtp_ts"].astype(np.int64), 32)
        n = int(rx.size)
        expected = int(ext_seq.max() - ext_seq[0] + 1)
        lost = expected - n
        first_pt = int(pt[0])
        clock = self.clock_rates.get(first_pt)
        ssrc = int(sub["ssrc"][0])
        src = f"{_ip(int(sub['src'][0]))}:{int(sub['sport'][0])}"
        dst = f"{_ip(int(sub['dst'][0]))}:{int(sub['dport'][0])}"

        # RFC metrics through the shared definitions: RTP timestamps become sender times in ns.
        if clock:
            rel = (ext_ts - ext_ts[0]).astype(np.float64) * (_NS_PER_S / clock)
            tx = np.rint(rel).astype(np.int64) + rx[0]
        else:
            tx = rx  # no clock: jitter is not defined, the other metrics do not use tx
        metrics = stream_metrics(
            f"rtp {src}->{dst} 0x{ssrc:08X}", "rtp", ext_seq - ext_seq.min(), tx, rx, sent=-1
        )
        clocks = np.array([self.clock_rates.get(p, 0) for p in range(128)], dtype=np.int64)[pt]
        max_delta, mean_jitter, max_jitter = _wireshark_stats(
            rx, sub["rtp_ts"].astype(np.int64), pt, marker, clocks
        )
        return RtpStream(
            ssrc=ssrc,
            src=src,
            dst=dst,
            payload_type=first_pt,
            payload_types=tuple(int(p) for p in np.unique(pt)),
            clock_rate=clock,
            packets=n,
            expected=expected,
            lost=lost,
            loss_pct=100.0 * lost / expected,
            duplicates=metrics.duplicates,
            reordered=metrics.reordered,
            jitter_ms=metrics.jitter_ms if clock else None,
            mean_jitter_ms=mean_jitter if clock else None,
            max_jitter_ms=max_jitter if clock else None,
            max_delta_ms=max_delta,
            max_gap_ms=metrics.max_gap_ms,
            gap_start_s=metrics.gap_start_s,
            start_s=float(rx[0]) / _NS_PER_S,
            end_s=float(rx[-1]) / _NS_PER_S,
            first_frame=int(sub["frame"][0]),
            forced=forced,
        )


def _unwrap(values: _I64, bits: int) -> _I64:
    """Extended (unwrapped) values: each step is taken as the shortest way round modulo
    ``2**bits``, which is how RFC 3550 A.1 counts sequence cycles as long as packets are not
    displaced by half the number space."""
    if values.size < 2:
        return values.copy()
    half = 1 << (bits - 1)
    step = ((np.diff(values) + half) & ((1 << bits) - 1)) - half
    out = np.empty_like(values)
    out[0] = values[0]
    np.cumsum(step, out=out[1:])
    out[1:] += values[0]
    return out


def _first_order_scan(a: _F64, b: _F64) -> _F64:
    """All values of ``y[i] = a[i] * y[i-1] + b[i]`` with ``y[-1] = 0``, vectorised.

    Within blocks of 128 the closed form ``y = P * (y_in + cumsum(b / P))`` (``P`` the running
    product of ``a``) loses nothing to cancellation, since every term is non-negative and ``P``
    stays above (15/16)**128; only the carries between blocks are a Python loop (n/128 steps).
    """
    n = a.size
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    size = -(-n // _JITTER_BLOCK) * _JITTER_BLOCK
    flat_a = np.ones(size, dtype=np.float64)
    flat_b = np.zeros(size, dtype=np.float64)
    flat_a[:n] = a
    flat_b[:n] = b
    aa = flat_a.reshape(-1, _JITTER_BLOCK)
    bb = flat_b.reshape(-1, _JITTER_BLOCK)
    prod = np.cumprod(aa, axis=1)
    acc = np.cumsum(bb / prod, axis=1)
    carry_in = np.empty(aa.shape[0], dtype=np.float64)
    carry = 0.0
    for r, (p_end, s_end) in enumerate(zip(prod[:, -1].tolist(), acc[:, -1].tolist(), strict=True)):
        carry_in[r] = carry
        carry = p_end * (carry + s_end)
    y: _F64 = (prod * (carry_in[:, None] + acc)).ravel()[:n]
    return y


def _wireshark_stats(
    rx_ns: _I64, rtp_ts: _I64, pt: _I64, marker: npt.NDArray[np.bool_], clocks: _I64
) -> tuple[float, float, float]:
    """Max delta, mean jitter and max jitter (ms) exactly as Wireshark 4.0 computes them
    (``rtppacket_analyse`` in ``ui/tap-rtp-analysis.c``), vectorised; checked against
    ``tshark -z rtp,streams`` by the tests.

    Its rules, which differ from RFC 3550 in ways that matter with disorder: a packet is "in
    time sequence" when its 32-bit timestamp is at most 2**31 ticks after the stream's *first*
    timestamp; only such packets update the state. Its nominal time is ``(ts - ts_first) mod
    2**32 / (clock // 1000)`` ms (note the integer division: 44.1 kHz counts as 44 ticks/ms),
    ``D = |(t - t_prev) - (nominal - nominal_prev)|`` against the previous in-sequence packet
    (the previous one with a known clock for the nominal part) and ``J = (15 J + D) / 16``
    when the payload type has a known clock; ``delta = t - t_prev``. Max delta, max jitter and
    the mean count only "regular" packets (not the first, no marker bit, not comfort noise or
    right after it, in time sequence), and the mean divides by the number of packets before the
    current one, so a skipped packet counts as the running mean.
    """
    n = rx_ns.size
    if n < 2:
        return 0.0, 0.0, 0.0
    idx = np.arange(n)
    t_ms = (rx_ns - rx_ns[0]).astype(np.float64) / _NS_PER_MS
    first = int(rtp_ts[0])
    since_first = (rtp_ts - first) & 0xFFFFFFFF
    in_seq = np.where(rtp_ts >= first, since_first < (1 << 31), since_first <= (1 << 31))
    in_seq[0] = True
    ticks_per_ms = clocks // 1000
    timed = ticks_per_ms > 0
    nominal = since_first.astype(np.float64) / np.where(timed, ticks_per_ms, 1)
    nominal[0] = 0.0
    timed_state = in_seq & timed
    timed_state[0] = True  # the first packet sets lastnominaltime = 0 whatever its clock
    prev_time = np.maximum.accumulate(np.where(in_seq, idx, 0))[:-1]
    prev_nominal = np.maximum.accumulate(np.where(timed_state, idx, 0))[:-1]

    i = idx[1:]
    delta = t_ms[i] - t_ms[prev_time]
    upd_j = in_seq[i] & timed[i]
    diff = np.abs(delta - (nominal[i] - nominal[prev_nominal]))
    jitter = _first_order_scan(np.where(upd_j, 15.0 / 16.0, 1.0), np.where(upd_j, diff / 16, 0.0))

    is_cn = np.isin(pt, _PT_CN)
    regular = ~marker[i] & ~is_cn[i] & ~is_cn[i - 1] & in_seq[i]
    max_delta = float(delta[regular].max(initial=0.0))
    upd = regular & timed[i]
    max_jitter = float(jitter[upd].max(initial=0.0))
    # mean_k = (mean * (k - 1) + J_k) / k on updates, k = packets before this one (= i): the
    # closed form sum_k J_k / k * prod_{j > k updated} (j - 1) / j; the products stay >= 1/n.
    k = i.astype(np.float64)
    factor = np.where(upd & (i > 1), (k - 1) / k, 1.0)
    cum = np.cumprod(factor)
    mean_jitter = float(cum[-1] * np.sum(np.where(upd, jitter / (k * cum), 0.0)))
    return max_delta, mean_jitter, max_jitter


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
