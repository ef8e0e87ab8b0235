"""RTP detection and metrics, and passive probe analysis, on captures generated here.

Every figure is checked three ways: against plain-Python loops over the RFC 3550/4737 text,
against a literal per-packet port of Wireshark 4.0's ``rtppacket_analyse``, and against
``tshark -q -z rtp,streams`` itself on the same file.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_pcap_reader import T0_NS, Frame, Iface, pcap_bytes, pcapng_section, sll, udp_frame, write

from testbed.analysis import passive as passive_module
from testbed.analysis import rtp as rtp_module
from testbed.analysis.passive import analyze_captures
from testbed.analysis.pcap import read_packets
from testbed.analysis.rtp import (
    STATIC_CLOCK_RATES,
    RtpAnalyzer,
    RtpStream,
    find_rtp_streams,
    parse_decode_as,
)
from testbed.analysis.streams import stream_metrics
from testbed.errors import AnalysisError

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(
    TSHARK is None, reason="tshark not installed (apt install tshark)"
)
MS = 1_000_000

# --------------------------------------------------------------------------------------------
# Synthetic RTP streams
# --------------------------------------------------------------------------------------------


@dataclass
class RtpPacket:
    rx_ns: int
    seq: int
    ts: int
    pt: int
    marker: bool
    ssrc: int
    src: str = "10.0.0.1"
    dst: str = "10.0.0.2"
    sport: int = 40000
    dport: int = 50000

    def frame(self) -> bytes:
        header = struct.pack(
            "!BBHII",
            0x80,
            (0x80 if self.marker else 0) | self.pt,
            self.seq & 0xFFFF,
            self.ts & 0xFFFFFFFF,
            self.ssrc,
        )
        return udp_frame(self.src, self.dst, self.sport, self.dport, header + b"\xd5" * 160)


@dataclass
class StreamSpec:
    """A 50 packet/s stream and what goes wrong with it; indexes are send order."""

    ssrc: int
    pt: int = 0
    n: int = 600
    seq0: int = 65_300  # wraps after 236 packets
    ts0: int = 2**32 - 40_000  # wraps too
    ts_step: int = 160
    sport: int = 40000
    dport: int = 50000
    lost: set[int] = field(default_factory=set)
    duplicated: dict[int, int] = field(default_factory=dict)  # index -> extra delay (ns)
    swapped: set[int] = field(default_factory=set)  # i arrives after i + 1
    markers: set[int] = field(default_factory=set)
    pts: dict[int, int] = field(default_factory=dict)  # index -> other payload type
    gap: tuple[int, int] | None = None  # (index, ns): packets from index on delayed
    jitter_ns: Callable[[int], int] = lambda i: (i * 7919 % 13) * 250_000


def build(spec: StreamSpec, t0: int = T0_NS) -> list[RtpPacket]:
    """The stream's packets in arrival order."""
    out = []
    first_copy: dict[int, RtpPacket] = {}
    for i in range(spec.n):
        if i in spec.lost:
            continue
        rx = t0 + i * 20 * MS + spec.jitter_ns(i)
        if spec.gap and i >= spec.gap[0]:
            rx += spec.gap[1]
        pkt = RtpPacket(
            rx,
            spec.seq0 + i,
            spec.ts0 + i * spec.ts_step,
            spec.pts.get(i, spec.pt),
            i in spec.markers,
            spec.ssrc,
            sport=spec.sport,
            dport=spec.dport,
        )
        out.append(pkt)
        first_copy[i] = pkt
        if i in spec.duplicated:
            out.append(RtpPacket(**{**pkt.__dict__, "rx_ns": rx + spec.duplicated[i]}))
    for i in sorted(spec.swapped):
        if i in first_copy and i + 1 in first_copy:
            a, b = first_copy[i], first_copy[i + 1]
            a.rx_ns, b.rx_ns = b.rx_ns + 1000, a.rx_ns
    out.sort(key=lambda p: p.rx_ns)
    return out


def capture(
    tmp_path: Path, streams: Sequence[list[RtpPacket]], extra: Sequence[Frame] = ()
) -> Path:
    frames = [Frame(p.rx_ns, p.frame()) for s in streams for p in s] + list(extra)
    frames.sort(key=lambda f: f.ts_ns)
    return write(tmp_path / "rtp.pcap", pcap_bytes(frames))


def troubled(ssrc: int, seed: int, **kw: Any) -> StreamSpec:
    """Loss, a burst loss, duplicates, reordering, markers, jitter and a 1.2 s outage."""
    rng = random.Random(seed)
    n = kw.pop("n", 600)
    inner = range(5, n - 5)  # the ends stay in order (see test_tshark_lost_uses_last_packet)
    lost = set(rng.sample(inner, n // 30)) | set(range(300, 310))
    return StreamSpec(
        ssrc=ssrc,
        n=n,
        lost=lost,
        duplicated={i: rng.randrange(1, 30 * MS) for i in rng.sample(inner, n // 40)},
        swapped={i for i in rng.sample(inner, n // 25) if not {i, i + 1} & lost},
        markers={0, 150, 400},
        gap=(450, 1_200 * MS),
        jitter_ns=lambda i: rng.randrange(0, 12 * MS),
        **kw,
    )


def streams_of(path: Path, **kw: Any) -> list[RtpStream]:
    return find_rtp_streams((c.packets for c in read_packets(path, chunk_packets=333)), **kw)


# --------------------------------------------------------------------------------------------
# References: plain loops over the RFC text, and a literal port of Wireshark 4.0
# --------------------------------------------------------------------------------------------

MAX_DROPOUT = 3000
MAX_MISORDER = 100


@dataclass
class RfcRef:
    packets: int
    expected: int
    lost: int
    duplicates: int
    reordered: int
    jitter_ms: float | None
    max_gap_ms: float


def rfc_reference(pkts: Sequence[RtpPacket], clock: int | None) -> RfcRef:
    # RFC 3550 A.1: extended sequence numbers with cycles; base = first packet's number.
    max_seq = pkts[0].seq & 0xFFFF
    cycles = 0
    ext_seqs = []
    for p in pkts:
        seq = p.seq & 0xFFFF
        udelta = (seq - max_seq) % 65536
        if udelta < MAX_DROPOUT:
            if seq < max_seq:
                cycles += 65536
            max_seq = seq
            ext_seqs.append(cycles + seq)
        elif udelta > 65536 - MAX_MISORDER:  # late: belongs to the current or previous cycle
            ext_seqs.append(cycles + seq - (65536 if seq > max_seq else 0))
        else:
            raise AssertionError("the generated streams never jump that far")
    expected = max(ext_seqs) - ext_seqs[0] + 1
    # First copies in arrival order (the streams.py definition), then A.8 in timestamp units.
    seen: set[int] = set()
    firsts = []
    ts_ext = 0
    prev_ts = None
    for p, ext in zip(pkts, ext_seqs, strict=True):
        step = 0 if prev_ts is None else (p.ts - prev_ts + 2**31) % 2**32 - 2**31
        ts_ext += step
        prev_ts = p.ts
        if ext not in seen:
            seen.add(ext)
            firsts.append((ext, ts_ext, p.rx_ns))
    jitter = None
    if clock:
        j = 0.0
        for (_, s_i, r_i), (_, s_j, r_j) in pairwise(firsts):
            d = (r_j - r_i) * clock / 1e9 - (s_j - s_i)
            j += (abs(d) - j) / 16
        jitter = j / clock * 1000
    reordered = 0
    next_exp = firsts[0][0]
    for s, _, _ in firsts:
        if s >= next_exp:
            next_exp = s + 1
        else:
            reordered += 1
    gap = max(b[2] - a[2] for a, b in pairwise(firsts)) / MS
    return RfcRef(
        len(pkts), expected, expected - len(pkts), len(pkts) - len(seen), reordered, jitter, gap
    )


def wireshark_reference(pkts: Sequence[RtpPacket], clocks: dict[int, int]) -> tuple[float, ...]:
    """Max delta, mean jitter, max jitter: ``rtppacket_analyse`` of Wireshark 4.0, line by line."""
    t0 = pkts[0].rx_ns
    first = pkts[0]
    time_ = 0.0
    lastnominal = 0.0
    delta = jitter = max_delta = max_jitter = mean_jitter = 0.0
    prev_pt = first.pt
    total = 1
    for p in pkts[1:]:
        current_time = (p.rx_ns - t0) / 1e6
        ts, f = p.ts & 0xFFFFFFFF, first.ts & 0xFFFFFFFF
        in_seq = (f <= ts and ts - f < 0x80000000) or (f > ts and (0xFFFFFFFF - f) + ts < 2**31)
        skip = not in_seq or p.marker or p.pt in (13, 19) or prev_pt in (13, 19)
        prev_pt = p.pt
        clock = clocks.get(p.pt, 0) if p.pt < 96 else 0
        current_jitter = 0.0
        if in_seq:
            nominal = float((ts - f) % 2**32)
            if clock:
                nominal /= clock // 1000
                current_diff = abs(current_time - (time_ + nominal - lastnominal))
                current_jitter = (15 * jitter + current_diff) / 16
                delta = current_time - time_
                jitter = current_jitter
                lastnominal = nominal
            else:
                delta = current_time - time_
        if not skip:
            max_delta = max(max_delta, delta)
            if clock:
                max_jitter = max(max_jitter, jitter)
                mean_jitter = (mean_jitter * (total - 1) + current_jitter) / total
        if in_seq:
            time_ = current_time
        total += 1
    return max_delta, mean_jitter, max_jitter


def check_rfc(stream: RtpStream, pkts: Sequence[RtpPacket], clock: int | None) -> None:
    ref = rfc_reference(pkts, clock)
    assert (stream.packets, stream.expected, stream.lost) == (ref.packets, ref.expected, ref.lost)
    assert stream.loss_pct == pytest.approx(100 * ref.lost / ref.expected)
    assert (stream.duplicates, stream.reordered) == (ref.duplicates, ref.reordered)
    assert stream.max_gap_ms == pytest.approx(ref.max_gap_ms, abs=1e-9)
    if ref.jitter_ms is None:
        assert stream.jitter_ms is None
    else:
        assert stream.jitter_ms == pytest.approx(ref.jitter_ms, abs=1e-5)


# --------------------------------------------------------------------------------------------
# Metrics against the references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_metrics_match_rfc_and_wireshark_references(tmp_path: Path, seed: int) -> None:
    specs = [
        troubled(0x1111, seed, pt=0),
        troubled(0x2222, seed + 100, pt=8, sport=40002, pts={i: 13 for i in range(200, 215)}),
        troubled(0x3333, seed + 200, pt=10, ts_step=882, sport=40004),  # 44.1 kHz
        troubled(0x4444, seed + 300, pt=0, sport=40006, pts={i: 101 for i in range(50, 60)}),
        StreamSpec(0x5555, pt=18, sport=40008),  # clean G.729
    ]
    built = [build(s) for s in specs]
    found = {s.ssrc: s for s in streams_of(capture(tmp_path, built))}
    assert sorted(found) == sorted(s.ssrc for s in specs)
    for spec, pkts in zip(specs, built, strict=True):
        stream = found[spec.ssrc]
        assert not stream.forced and stream.payload_type == spec.pt
        check_rfc(stream, pkts, STATIC_CLOCK_RATES[spec.pt])
        want = wireshark_reference(pkts, dict(STATIC_CLOCK_RATES))
        got = (stream.max_delta_ms, stream.mean_jitter_ms, stream.max_jitter_ms)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    clean = found[0x5555]
    assert (clean.lost, clean.duplicates, clean.reordered, clean.loss_pct) == (0, 0, 0, 0.0)
    outage = found[0x1111]
    assert outage.max_gap_ms is not None and outage.max_gap_ms > 1_200
    assert outage.duplicates > 0 and outage.reordered > 0 and outage.lost > 0


def test_dynamic_payload_type_has_no_jitter_unless_given_a_clock(tmp_path: Path) -> None:
    pkts = build(troubled(0xABCD, 7, pt=96, ts_step=320))
    path = capture(tmp_path, [pkts])
    (stream,) = streams_of(path)
    assert stream.clock_rate is None
    assert (stream.jitter_ms, stream.mean_jitter_ms, stream.max_jitter_ms) == (None, None, None)
    assert stream.max_delta_ms > 0 and stream.max_gap_ms
    check_rfc(stream, pkts, None)

    (wideband,) = streams_of(path, clock_rates={96: 16000})  # AMR-WB, as SDP would say
    assert wideband.clock_rate == 16000
    check_rfc(wideband, pkts, 16000)
    assert wideband.to_dict()["ssrc"] == "0x0000ABCD"


def test_duplicates_make_lost_negative_like_rtcp(tmp_path: Path) -> None:
    spec = StreamSpec(0x77, n=100, duplicated={10: MS, 20: MS, 30: MS}, lost={50})
    (stream,) = streams_of(capture(tmp_path, [build(spec)]))
    assert (stream.packets, stream.expected, stream.lost, stream.duplicates) == (102, 100, -2, 3)
    assert stream.loss_pct == pytest.approx(-2.0)


# --------------------------------------------------------------------------------------------
# tshark itself
# --------------------------------------------------------------------------------------------

_ROW = re.compile(
    r"^\s*\S+\s+\S+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+0x([0-9A-Fa-f]+)\s+(.+?)\s+(\d+)\s+"
    r"(-?\d+)\s+\(\S+%\)\s+\S+\s+\S+\s+(\S+)\s+\S+\s+(\S+)\s+(\S+)\s*X?\s*$"
)


def tshark_rtp_streams(path: Path, ports: Sequence[int]) -> dict[int, dict[str, Any]]:
    """``tshark -q -z rtp,streams`` (4.0 layout: start, end, src, port, dst, port, SSRC,
    payload, packets, lost (pct), min/mean/max delta, min/mean/max jitter, problems)."""
    cmd = [TSHARK or "tshark", "-n", "-q", "-r", str(path), "-z", "rtp,streams"]
    for port in ports:
        cmd += ["-d", f"udp.port=={port},rtp"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        m = _ROW.match(line)
        if m:
            rows[int(m[5], 16)] = {
                "src": f"{m[1]}:{m[2]}",
                "dst": f"{m[3]}:{m[4]}",
                "payload": m[6],
                "packets": int(m[7]),
                "lost": int(m[8]),
                "max_delta": float(m[9]),
                "mean_jitter": float(m[10]),
                "max_jitter": float(m[11]),
            }
    assert rows, f"no RTP streams in tshark's output:\n{out}"
    return rows


# tshark prints 3 decimals: this covers its rounding (the requirement is 0.05 ms for jitter).
TSHARK_TOLERANCE_MS = 0.0015


@needs_tshark
@pytest.mark.parametrize("seed", [1, 2])
def test_matches_tshark_rtp_streams(tmp_path: Path, seed: int) -> None:
    specs = [
        troubled(0x1001, seed, pt=0, sport=40000),
        troubled(0x1002, seed + 1, pt=8, sport=40002, pts={i: 13 for i in range(100, 120)}),
        troubled(0x1003, seed + 2, pt=9, sport=40004),  # G.722: 8000 Hz RTP clock
        troubled(0x1004, seed + 3, pt=11, ts_step=882, sport=40006),  # 44100 // 1000 quirk
        troubled(0x1005, seed + 4, pt=0, sport=40008, pts={i: 101 for i in range(70, 80)}),
        troubled(0x1006, seed + 5, pt=96, ts_step=320, sport=40010),  # dynamic, no SDP
        StreamSpec(0x1007, pt=18, sport=40012, n=300),
    ]
    path = capture(tmp_path, [build(s) for s in specs])
    ours = {s.ssrc: s for s in streams_of(path)}
    theirs = tshark_rtp_streams(path, [s.sport for s in specs])
    assert sorted(ours) == sorted(theirs)
    for ssrc, t in theirs.items():
        s = ours[ssrc]
        assert (s.src, s.dst, s.packets, s.lost) == (t["src"], t["dst"], t["packets"], t["lost"])
        assert s.max_delta_ms == pytest.approx(t["max_delta"], abs=TSHARK_TOLERANCE_MS)
        # Without SDP, tshark computes no jitter for a dynamic type and prints 0.000.
        mean = 0.0 if s.mean_jitter_ms is None else s.mean_jitter_ms
        peak = 0.0 if s.max_jitter_ms is None else s.max_jitter_ms
        assert mean == pytest.approx(t["mean_jitter"], abs=TSHARK_TOLERANCE_MS), hex(ssrc)
        assert peak == pytest.approx(t["max_jitter"], abs=TSHARK_TOLERANCE_MS), hex(ssrc)
    assert theirs[0x1006]["payload"] == "RTPType-96" and ours[0x1006].jitter_ms is None
    assert theirs[0x1006]["max_jitter"] == theirs[0x1006]["mean_jitter"] == 0.0


@needs_tshark
def test_tshark_lost_uses_last_packet(tmp_path: Path) -> None:
    """The documented difference: when the capture's last packet of a stream is late, tshark
    counts expected packets up to *its* sequence number, RFC 3550 up to the highest."""
    spec = StreamSpec(0x2001, n=100, swapped={98})  # seq 98 arrives last
    pkts = build(spec)
    path = capture(tmp_path, [pkts])
    (ours,) = streams_of(path)
    theirs = tshark_rtp_streams(path, [spec.dport])[0x2001]
    assert (ours.expected, ours.lost) == (100, 0)
    assert theirs["lost"] == (pkts[-1].seq - pkts[0].seq + 1) - len(pkts) == -1


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def noise_frames(seed: int, n: int) -> list[Frame]:
    """UDP flows that pass Wireshark's loose checks but are not RTP."""
    rng = random.Random(seed)
    frames = []
    for i in range(n):
        ts = T0_NS + i * MS
        # Version bits 10 and a constant "SSRC", everything else random.
        junk = bytes([0x80 | rng.randrange(16), rng.randrange(72)]) + rng.randbytes(6)
        frames.append(Frame(ts, udp_frame("10.9.0.1", "10.9.0.2", 7000, 7001, junk + b"SSRC")))
        # Constant header (a fixed-pattern protocol): sequence never moves.
        frames.append(Frame(ts + 1, udp_frame("10.9.0.3", "10.9.0.4", 7002, 7003, b"\x80" * 40)))
        # RTCP (PT 200-204 = 72-76 with the marker bit), perfectly regular otherwise.
        rtcp = struct.pack("!BBHII", 0x81, 200 + i % 5, i, i * 160, 0x5EC5)
        frames.append(Frame(ts + 2, udp_frame("10.9.0.5", "10.9.0.6", 7004, 7005, rtcp)))
        # Version-2 header whose sequence number walks randomly.
        walk = struct.pack("!BBHII", 0x80, 0, rng.randrange(65536), i * 160, 0x1234)
        frames.append(Frame(ts + 3, udp_frame("10.9.0.7", "10.9.0.8", 7006, 7007, walk)))
        # Too short to hold an RTP header.
        frames.append(Frame(ts + 4, udp_frame("10.9.0.9", "10.9.0.10", 7008, 7009, b"\x80\0\0")))
    return frames


def test_heuristic_rejects_noise_and_accepts_real_streams(tmp_path: Path) -> None:
    rough = StreamSpec(
        0xBEEF,
        sport=41000,
        lost=set(random.Random(3).sample(range(600), 120)),  # 20 % random loss
        duplicated={i: MS for i in random.Random(4).sample(range(600), 60)},
        jitter_ns=lambda i: random.Random(i).randrange(0, 45 * MS),  # heavy reordering
    )
    path = capture(tmp_path, [build(rough)], noise_frames(5, 2_000))
    found = streams_of(path)
    assert [s.ssrc for s in found] == [0xBEEF]
    assert found[0].reordered > 30


def test_short_stream_needs_decode_as(tmp_path: Path) -> None:
    short = build(StreamSpec(0xC0DE, n=5, sport=42000, dport=43000))
    path = capture(tmp_path, [short])
    assert streams_of(path) == []
    assert streams_of(path, min_packets=5)[0].ssrc == 0xC0DE
    (forced,) = streams_of(path, decode_as=["udp.port==43000,rtp"])
    assert forced.forced and forced.packets == 5 and forced.ssrc == 0xC0DE
    (by_source,) = streams_of(path, decode_as=[" UDP.PORT == 41990-42010 , RTP "])
    assert by_source.forced


def test_single_packets_are_held_back_until_their_flow_sends_again(tmp_path: Path) -> None:
    """A flow's first packet waits aside (random payloads make one flow per packet): it joins
    its flow when the flow sends again, in a later chunk too, and a flow of one packet is a
    stream only on a ``decode_as`` port."""
    lone = build(StreamSpec(0xAAAA, n=1, sport=42002, dport=43002))
    late = build(StreamSpec(0xBBBB, n=40, sport=42004, dport=43004, gap=(1, 30_000 * MS)))
    path = capture(tmp_path, [lone, late], noise_frames(8, 200))
    for chunk in (1, 50, 10**6):
        found = find_rtp_streams(
            (c.packets for c in read_packets(path, chunk_packets=chunk)),
            decode_as=["udp.port==43002,rtp"],
        )
        assert [(s.ssrc, s.packets, s.forced) for s in found] == [
            (0xAAAA, 1, True),
            (0xBBBB, 40, False),
        ]
        assert found[1].max_gap_ms == pytest.approx(30_020, abs=20)
        check_rfc(found[1], late, 8000)


def assert_same_streams(got: Sequence[RtpStream], want: Sequence[RtpStream]) -> None:
    assert [s.ssrc for s in got] == [s.ssrc for s in want]
    for a, b in zip(got, want, strict=True):
        for name, value in vars(b).items():
            if isinstance(value, float):
                assert getattr(a, name) == pytest.approx(value, rel=1e-12, abs=1e-12), name
            else:
                assert getattr(a, name) == value, name


@pytest.mark.parametrize("chunk", [1, 7, 333])
def test_streaming_in_chunks_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Flows are measured chunk by chunk, their state carried from one to the next: tiny
    chunks, and a duplicate window of 128 numbers that slides every 64 packets, give the same
    streams as one chunk, and still match the references."""
    specs = [
        troubled(0x1111, 3, pt=0),
        troubled(0x2222, 4, pt=8, sport=40002, pts={i: 13 for i in range(200, 215)}),
        troubled(0x3333, 5, pt=96, ts_step=320, sport=40004),
        StreamSpec(0x4444, pt=18, sport=40006, n=150),
    ]
    built = [build(s) for s in specs]
    path = capture(tmp_path, built, noise_frames(6, 300))
    clocks = {96: 16000}
    whole = find_rtp_streams(
        (c.packets for c in read_packets(path, chunk_packets=10**6)), clock_rates=clocks
    )
    monkeypatch.setattr(rtp_module, "_WINDOW_BITS", 128)
    analyzer = RtpAnalyzer(clock_rates=clocks)
    for c in read_packets(path, chunk_packets=chunk):
        analyzer.add(c.packets)
    parts = analyzer.streams()
    assert_same_streams(parts, whole)
    assert analyzer.window_misses == 0
    rates = dict(STATIC_CLOCK_RATES) | clocks
    for spec, pkts in zip(specs, built, strict=True):
        (stream,) = (s for s in parts if s.ssrc == spec.ssrc)
        check_rfc(stream, pkts, rates[spec.pt])
        if spec.pt < 96:  # the reference port knows no clock for dynamic types (no SDP)
            want = wireshark_reference(pkts, rates)
            got = (stream.max_delta_ms, stream.mean_jitter_ms, stream.max_jitter_ms)
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    "spec", ["tcp.port==5004,rtp", "udp.port==5004,sip", "udp.port==0,rtp", "udp.port==9-3,rtp"]
)
def test_bad_decode_as(spec: str) -> None:
    with pytest.raises(AnalysisError, match="decode_as"):
        parse_decode_as([spec])


def test_decode_as_ports() -> None:
    assert parse_decode_as(["udp.port==5004,rtp", "udp.port==6000-6002,rtp"]) == {
        5004,
        6000,
        6001,
        6002,
    }


# --------------------------------------------------------------------------------------------
# Passive analysis of captures: RTP and probe streams together
# --------------------------------------------------------------------------------------------


def probe_frame(src: str, dst: str, stream: int, seq: int, tx_ns: int) -> bytes:
    header = struct.pack("!4sBBHIQ", b"TBPR", 1, 0, stream, seq, tx_ns)
    return udp_frame(src, dst, 33000, 34000, header + bytes(44))


def probe_arrivals(seed: int, n: int) -> tuple[list[int], list[int], list[int]]:
    """(seq, tx, rx) in arrival order with loss, duplicates and reordering."""
    rng = random.Random(seed)
    seq, tx, rx = [], [], []
    for i in range(n):
        if rng.random() < 0.05:
            continue
        t = T0_NS + i * 10 * MS
        copies = 2 if rng.random() < 0.03 else 1
        for _ in range(copies):
            seq.append(i)
            tx.append(t)
            rx.append(t + 2 * MS + rng.randrange(0, 25 * MS))
    order = sorted(range(len(rx)), key=lambda k: rx[k])
    return [seq[k] for k in order], [tx[k] for k in order], [rx[k] for k in order]


def test_analyze_captures_rtp_and_probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rtp = build(troubled(0x9999, 11, pt=8))
    probes = {
        ("10.0.0.1", "10.0.0.2", 1): probe_arrivals(1, 3_000),
        ("10.0.0.1", "10.0.0.2", 2): probe_arrivals(2, 1_000),
        ("10.0.0.3", "10.0.0.2", 1): probe_arrivals(3, 500),
    }
    extra = [
        Frame(r, probe_frame(src, dst, sid, s, t))
        for (src, dst, sid), arrivals in probes.items()
        for s, t, r in zip(*arrivals, strict=True)
    ]
    path = capture(tmp_path, [rtp], extra)
    result = analyze_captures([path])
    json.dumps(result)  # JSON-ready
    (cap,) = result["captures"]
    assert cap["file"] == str(path) and cap["format"] == "pcap" and not cap["truncated"]
    assert cap["packets"] == len(rtp) + len(extra)
    assert (cap["rtp_streams"], cap["probe_streams"]) == (1, 3)

    (stream,) = result["rtp_streams"]
    assert stream["capture"] == str(path) and stream["ssrc"] == "0x00009999"
    assert (stream["src"], stream["dst"]) == ("10.0.0.1:40000", "10.0.0.2:50000")
    ref = rfc_reference(rtp, 8000)
    assert (stream["packets"], stream["lost"], stream["duplicates"]) == (
        ref.packets,
        ref.lost,
        ref.duplicates,
    )
    assert stream["jitter_ms"] == pytest.approx(ref.jitter_ms, abs=1e-4)

    got = {(p["src"], p["dst"], p["stream"]): p for p in result["probe_streams"]}
    assert sorted(got) == sorted(probes)
    for key, (seq, tx, rx) in probes.items():
        want = stream_metrics(f"{key[0]}->{key[1]}#{key[2]}", "probe", seq, tx, rx, -1).to_dict()
        entry = got[key]
        assert {k: entry[k] for k in want} == want
        assert entry["packets"] == len(seq) and entry["capture"] == str(path)
        assert entry["duplicates"] > 0 and entry["reordered"] > 0 and entry["loss_pct"] > 0

    # Streaming in tiny chunks, with duplicate windows small enough to slide, changes nothing.
    assert analyze_captures([path], chunk_packets=97) == result
    monkeypatch.setattr(rtp_module, "_WINDOW_BITS", 128)
    monkeypatch.setattr(passive_module, "_WINDOW_BITS", 128)
    assert analyze_captures([path], chunk_packets=5) == result


def test_analyze_captures_pcapng_sll_and_per_file_streams(tmp_path: Path) -> None:
    """Two capture points (files): streams are reported per file, never merged."""
    pkts = build(StreamSpec(0x4242, n=200))
    seq, tx, rx = probe_arrivals(9, 200)
    frames = [Frame(p.rx_ns, p.frame()) for p in pkts]
    frames += [
        Frame(r, probe_frame("10.0.0.1", "10.0.0.2", 3, s, t))
        for s, t, r in zip(seq, tx, rx, strict=True)
    ]
    frames.sort(key=lambda f: f.ts_ns)
    # Interface 1 is Linux cooked (SLL): half of the packets go through it.
    frames = [Frame(f.ts_ns, sll(f.data[14:]), 1) if k % 2 else f for k, f in enumerate(frames)]
    ng = write(
        tmp_path / "a.pcapng",
        pcapng_section(frames, [Iface(tsresol=9), Iface(link=113, tsresol=9)]),
    )
    flat = write(tmp_path / "b.pcap", pcap_bytes([Frame(p.rx_ns, p.frame()) for p in pkts]))
    result = analyze_captures([ng, flat])
    assert [c["file"] for c in result["captures"]] == [str(ng), str(flat)]
    assert [c["format"] for c in result["captures"]] == ["pcapng", "pcap"]
    assert result["captures"][0]["link_types"] == [1, 113]
    assert [s["capture"] for s in result["rtp_streams"]] == [str(ng), str(flat)]
    for s in result["rtp_streams"]:
        assert (s["packets"], s["lost"]) == (200, 0)
    (probe,) = result["probe_streams"]
    assert probe["received"] == len(set(seq)) and probe["capture"] == str(ng)


def test_analyze_captures_errors(tmp_path: Path) -> None:
    good = write(tmp_path / "good.pcap", pcap_bytes([]))
    with pytest.raises(AnalysisError, match="is empty"):
        analyze_captures([good, write(tmp_path / "empty.pcap", b"")])
    with pytest.raises(AnalysisError, match="not a pcap or pcapng"):
        analyze_captures([write(tmp_path / "notes.txt", b"not a capture at all\n")])
    with pytest.raises(AnalysisError, match="decode_as"):
        analyze_captures([good], decode_as=["udp.port=5004,rtp"])
    with pytest.raises(AnalysisError, match="no capture files"):
        analyze_captures([])
    empty = analyze_captures([good])
    assert (empty["rtp_streams"], empty["probe_streams"]) == ([], [])


def test_truncated_capture_is_analysed_and_flagged(tmp_path: Path) -> None:
    pkts = build(StreamSpec(0x5151, n=100))
    data = pcap_bytes([Frame(p.rx_ns, p.frame()) for p in pkts])
    path = write(tmp_path / "cut.pcap", data[: len(data) - 30])
    result = analyze_captures([path])
    assert result["captures"][0]["truncated"] and result["captures"][0]["packets"] == 99
    assert result["rtp_streams"][0]["packets"] == 99


def test_large_stream_is_vectorised(tmp_path: Path) -> None:
    """One long stream (50 packets/s for 20 min) through the full path, against references."""
    spec = troubled(0x7777, 21, n=60_000)
    pkts = build(spec)
    (stream,) = streams_of(capture(tmp_path, [pkts]))
    check_rfc(stream, pkts, 8000)
    got = (stream.max_delta_ms, stream.mean_jitter_ms, stream.max_jitter_ms)
    assert got == pytest.approx(wireshark_reference(pkts, dict(STATIC_CLOCK_RATES)), rel=1e-9)
    assert np.isfinite(stream.loss_pct)
