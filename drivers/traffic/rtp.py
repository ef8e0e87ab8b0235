"""RTP voice streams: RFC 3550 packets with an AMR-WB payload (RFC 4867, octet-aligned), sent by
the probe sender (:mod:`drivers.traffic.probe`) next to probe streams.

A voice stream is a sequence of 20 ms frames (RTP clock 16 kHz, so the timestamp advances 320 per
frame whether or not the frame is sent). It alternates talk spurts and silences of exponentially
distributed length (means ``talk_on_s`` / ``talk_off_s``, ITU-T P.59 conversational speech:
1.004 s / 1.587 s). In a talk spurt every frame is a speech frame of the configured AMR-WB mode;
the first carries the RTP marker bit (RFC 3551 section 4.1). In a silence the source sends what
AMR-WB DTX sends (3GPP TS 26.193): a SID frame in the first silent frame (SID_FIRST, STI = 0),
then a SID_UPDATE (STI = 1) every 8th frame (160 ms), and nothing in between (NO_DATA frames are
not transmitted, RFC 4867 section 4.3.2), so a silence is never mistaken for a service gap. The
DTX hangover is not modelled. Every random choice -- SSRC, first sequence number, first
timestamp, payload bits, spurt and silence lengths -- comes from ``random.Random(seed)`` in a
fixed order, so the same seed gives the same stream bit for bit.

RTP packets carry no transmit time, so the sender appends one :data:`TX_RECORD` per packet to a
transmit log, and the receiver, told each stream's SSRC (:class:`RtpBinding`), records RTP
packets as ordinary receive records with the extended sequence number (RFC 3550 appendix A.1:
16-bit sequence plus wrap count) and ``tx_ns = 0``. :func:`join_tx_rx` pairs the two by sequence
number to give one-way delay per packet. Only the standard library is imported here; scapy, which
takes 0.1-0.9 s to import, is imported by :func:`build_templates` only when a sender has an RTP
stream, and only to build each stream's two packet templates once.
"""

from __future__ import annotations

import ipaddress
import math
import os
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from drivers.traffic.amrwb import (
    AMR_PAYLOAD_HEADER_BYTES,
    AMRWB_SID_BYTES,
    AMRWB_SID_FT,
    AMRWB_SPEECH_BITS,
    AMRWB_SPEECH_BYTES,
    RTP_HEADER_BYTES,
    udp_payload_bytes,
)

__all__ = [
    "CLOCK_HZ",
    "FLAG_MARKER",
    "FLAG_SEND_ERROR",
    "FLAG_SID",
    "FLAG_SID_UPDATE",
    "FRAME_NS",
    "RTP_HEADER",
    "SID_INTERVAL_FRAMES",
    "SID_STI",
    "TS_PER_FRAME",
    "TX_RECORD",
    "JoinedStream",
    "RtpBinding",
    "RtpIdentity",
    "RtpStreamSpec",
    "Templates",
    "build_templates",
    "decode_rtp",
    "default_seed",
    "extend_seq",
    "join_tx_rx",
    "read_tx_log",
    "rtp_identity",
    "voice_frames",
]

_CMR_NO_REQUEST = 0xF0  # CMR = 15 (no mode request), 4 reserved zero bits
_TOC_Q = 0x04  # ToC: F = 0 (last frame), FT, Q = 1 (frame not damaged), 2 padding bits
SID_STI = 0x10  # STI is bit 35 of the SID frame: octet 4, fourth bit from the top

CLOCK_HZ = 16_000
FRAME_NS = 20_000_000
TS_PER_FRAME = CLOCK_HZ * FRAME_NS // 1_000_000_000  # 320
SID_INTERVAL_FRAMES = 8
RTP_HEADER = struct.Struct("!BHI")  # octet 1 (M | PT), sequence, timestamp: patched per packet
_RTP_HEADER_FULL = struct.Struct("!BBHII")

# Flags of a transmit-log record.
FLAG_MARKER = 1  # first packet of a talk spurt (RTP marker bit set)
FLAG_SID = 2  # SID frame (silence); otherwise a speech frame
FLAG_SID_UPDATE = 4  # SID_UPDATE (STI = 1); a SID without it is SID_FIRST
FLAG_SEND_ERROR = 8  # the send call failed; the sequence number is still consumed

TX_RECORD = np.dtype(
    [
        ("stream", "<u2"),
        ("seq", "<u4"),
        ("tx_ns", "<i8"),
        ("rtp_ts", "<u4"),
        ("flags", "<u1"),
    ],
    align=False,
)
"""One transmitted RTP packet: wire id, extended sequence number (first sequence number + packet
index, modulo 2**32), CLOCK_REALTIME ns just before the send call, RTP timestamp, FLAG_* bits.
19 bytes, packed little-endian, appended by the sender to its ``--tx-log`` file."""
TX_RECORD_STRUCT = struct.Struct("<HIqIB")
assert TX_RECORD_STRUCT.size == TX_RECORD.itemsize == 19


def default_seed(name: str) -> int:
    """The seed of a stream without one: derived from its name, so reruns are identical."""
    return zlib.crc32(name.encode())


# --------------------------------------------------------------------------------------------
# Stream specification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtpStreamSpec:
    """One RTP voice stream of a sender. ``talk_on_s = None`` (or ``talk_off_s = None``) means
    continuous speech."""

    name: str
    wire_id: int
    dst_ip: str
    dst_port: int
    dscp: int = 0
    payload_type: int = 96
    codec_mode: int = 8
    talk_on_s: float | None = None
    talk_off_s: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.name or any(c in ",=:" or c.isspace() for c in self.name):
            raise ValueError(f"stream name must be non-empty without ,=: or spaces: {self.name!r}")
        if not 0 <= self.wire_id <= 0xFFFF:
            raise ValueError(f"wire id must fit in u16: {self.wire_id}")
        ipaddress.ip_address(self.dst_ip)  # raises ValueError
        if not 1 <= self.dst_port <= 0xFFFF:
            raise ValueError(f"destination port out of range: {self.dst_port}")
        if not 0 <= self.dscp <= 63:
            raise ValueError(f"DSCP must be 0..63: {self.dscp}")
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"RTP payload type must be 0..127: {self.payload_type}")
        if not 0 <= self.codec_mode <= 8:
            raise ValueError(f"AMR-WB codec mode must be 0..8: {self.codec_mode}")
        for field, value in (("talk_on_s", self.talk_on_s), ("talk_off_s", self.talk_off_s)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{field} must be a positive number of seconds: {value}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0: {self.seed}")

    @property
    def continuous(self) -> bool:
        return self.talk_on_s is None or self.talk_off_s is None

    @classmethod
    def parse(cls, text: str) -> RtpStreamSpec:
        """Parse ``name=N,wire=W,dst=IP,port=P[,dscp=D][,pt=PT][,mode=M][,on=S][,off=S]
        [,seed=X]``; ``on=none`` means continuous speech. Key=value keeps IPv6 unambiguous."""
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or key in fields:
                raise ValueError(f"rtp stream spec needs unique key=value items: {text!r}")
            fields[key.strip()] = value.strip()
        known = {"name", "wire", "dst", "port", "dscp", "pt", "mode", "on", "off", "seed"}
        if unknown := set(fields) - known:
            raise ValueError(f"unknown keys in rtp stream spec: {sorted(unknown)}")
        if missing := {"name", "wire", "dst", "port"} - set(fields):
            raise ValueError(f"rtp stream spec lacks {sorted(missing)}: {text!r}")

        def seconds(key: str) -> float | None:
            value = fields.get(key, "none")
            return None if value.lower() == "none" else float(value)

        return cls(
            name=fields["name"],
            wire_id=int(fields["wire"]),
            dst_ip=fields["dst"].strip("[]"),
            dst_port=int(fields["port"]),
            dscp=int(fields.get("dscp", "0")),
            payload_type=int(fields.get("pt", "96")),
            codec_mode=int(fields.get("mode", "8")),
            talk_on_s=seconds("on"),
            talk_off_s=seconds("off"),
            seed=int(fields.get("seed", "0")),
        )

    def format(self) -> str:
        """The inverse of :meth:`parse`, for building sender command lines."""
        on = "none" if self.talk_on_s is None else repr(float(self.talk_on_s))
        off = "none" if self.talk_off_s is None else repr(float(self.talk_off_s))
        return (
            f"name={self.name},wire={self.wire_id},dst={self.dst_ip},port={self.dst_port},"
            f"dscp={self.dscp},pt={self.payload_type},mode={self.codec_mode},on={on},off={off},"
            f"seed={self.seed}"
        )


@dataclass(frozen=True, slots=True)
class RtpBinding:
    """What a receiver needs to record an RTP stream: SSRC -> wire id, and the first sequence
    number if known (then extended numbers equal the sender's; else the first arrival sets the
    reference, as in RFC 3550 appendix A.1)."""

    ssrc: int
    wire_id: int
    seq0: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError(f"SSRC must fit in u32: {self.ssrc}")
        if not 0 <= self.wire_id <= 0xFFFF:
            raise ValueError(f"wire id must fit in u16: {self.wire_id}")
        if self.seq0 is not None and not 0 <= self.seq0 <= 0xFFFF:
            raise ValueError(f"first sequence number must fit in u16: {self.seq0}")

    @classmethod
    def parse(cls, text: str) -> RtpBinding:
        """``SSRC:WIRE_ID[:SEQ0]``; SSRC in decimal or 0x hex."""
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"rtp binding must be SSRC:WIRE_ID[:SEQ0], got {text!r}")
        seq0 = int(parts[2], 0) if len(parts) == 3 else None
        return cls(int(parts[0], 0), int(parts[1], 0), seq0)

    def format(self) -> str:
        tail = "" if self.seq0 is None else f":{self.seq0}"
        return f"{self.ssrc:#010x}:{self.wire_id}{tail}"


class RtpIdentity(NamedTuple):
    """The seeded random start values RFC 3550 section 5.1 asks for."""

    ssrc: int
    seq0: int
    ts0: int


def rtp_identity(seed: int) -> RtpIdentity:
    """SSRC, first sequence number and first timestamp of the stream with this seed."""
    rng = random.Random(seed)
    return RtpIdentity(rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32))


def _stream_rng(seed: int) -> random.Random:
    """The generator after the identity draws: payload bits, then spurt lengths."""
    rng = random.Random(seed)
    rng.getrandbits(32)
    rng.getrandbits(16)
    rng.getrandbits(32)
    return rng


# --------------------------------------------------------------------------------------------
# Talk spurts and packet templates
# --------------------------------------------------------------------------------------------


def _frames(mean_s: float, rng: random.Random) -> int:
    return max(1, round(rng.expovariate(1.0 / mean_s) * 1e9 / FRAME_NS))


def voice_frames(
    spec: RtpStreamSpec, rng: random.Random | None = None
) -> Iterator[tuple[int, int]]:
    """Endless ``(frame index, FLAG_* bits)`` of every packet the stream sends.

    Frame ``f`` is due ``f * 20 ms`` after the stream's start and has RTP timestamp
    ``ts0 + 320 f``. The stream starts with a talk spurt. ``rng`` defaults to the stream's own
    generator positioned after the payload draws, exactly as the sender uses it.
    """
    if rng is None:
        rng = _stream_rng(spec.seed)
        _payload_bits(spec.codec_mode, rng)
    if spec.continuous:
        yield 0, FLAG_MARKER
        frame = 1
        while True:
            yield frame, 0
            frame += 1
    assert spec.talk_on_s is not None and spec.talk_off_s is not None
    frame = 0
    while True:
        talk = _frames(spec.talk_on_s, rng)
        yield frame, FLAG_MARKER
        for f in range(frame + 1, frame + talk):
            yield f, 0
        frame += talk
        silence = _frames(spec.talk_off_s, rng)
        yield frame, FLAG_SID
        for j in range(SID_INTERVAL_FRAMES, silence, SID_INTERVAL_FRAMES):
            yield frame + j, FLAG_SID | FLAG_SID_UPDATE
        frame += silence


def _payload_bits(codec_mode: int, rng: random.Random) -> tuple[bytes, bytes]:
    """Seeded stand-in speech and SID bits, octet-aligned with zero padding (RFC 4867 4.4.3)."""
    bits = AMRWB_SPEECH_BITS[codec_mode]
    speech = bytearray(rng.getrandbits(8) for _ in range(AMRWB_SPEECH_BYTES[codec_mode]))
    if bits % 8:
        speech[-1] &= (0xFF << (8 - bits % 8)) & 0xFF
    sid = bytearray(rng.getrandbits(8) for _ in range(AMRWB_SID_BYTES))
    sid[4] = (sid[4] & 0xE0) | codec_mode  # STI = 0 (SID_FIRST), then the 4-bit mode indication
    return bytes(speech), bytes(sid)


@dataclass(slots=True)
class Templates:
    """The two packets of a stream, as built once by scapy; the sender patches them in place."""

    speech: bytearray
    sid: bytearray
    sid_sti_offset: int
    identity: RtpIdentity


def build_templates(spec: RtpStreamSpec) -> tuple[Templates, Iterator[tuple[int, int]]]:
    """Build the speech and SID packets with scapy, and the stream's frame schedule.

    scapy is imported here, not at module level: it is slow to import and only senders with RTP
    streams need it. It is never used to send (41 packets/s on the lab machine).
    """
    from scapy.layers.rtp import RTP
    from scapy.packet import Raw

    ident = rtp_identity(spec.seed)
    rng = _stream_rng(spec.seed)
    speech_bits, sid_bits = _payload_bits(spec.codec_mode, rng)

    def packet(frame_type: int, bits: bytes) -> bytearray:
        rtp = RTP(
            version=2,
            padding=0,
            extension=0,
            marker=0,
            payload_type=spec.payload_type,
            sequence=ident.seq0,
            timestamp=ident.ts0,
            sourcesync=ident.ssrc,
        )
        amr = bytes([_CMR_NO_REQUEST, (frame_type << 3) | _TOC_Q]) + bits
        return bytearray(bytes(rtp / Raw(load=amr)))

    speech = packet(spec.codec_mode, speech_bits)
    sid = packet(AMRWB_SID_FT, sid_bits)
    assert len(speech) == udp_payload_bytes(spec.codec_mode)
    sti_offset = RTP_HEADER_BYTES + AMR_PAYLOAD_HEADER_BYTES + 4
    return Templates(speech, sid, sti_offset, ident), voice_frames(spec, rng)


def decode_rtp(data: bytes | bytearray) -> tuple[int, int, int, int, int] | None:
    """``(marker, payload type, sequence, timestamp, SSRC)`` of an RTP v2 packet, else None."""
    if len(data) < RTP_HEADER_BYTES or data[0] & 0xC0 != 0x80:
        return None
    _b0, b1, seq, ts, ssrc = _RTP_HEADER_FULL.unpack_from(data)
    return b1 >> 7, b1 & 0x7F, seq, ts, ssrc


# --------------------------------------------------------------------------------------------
# Sequence numbers and the transmit/receive join
# --------------------------------------------------------------------------------------------


def extend_seq(highest: int, seq16: int) -> int:
    """The extended sequence number nearest to ``highest`` whose low 16 bits are ``seq16``: a
    reordered packet just before a wrap gets the old cycle (RFC 3550 appendix A.1)."""
    delta = (seq16 - highest) & 0xFFFF
    if delta >= 0x8000:
        delta -= 0x10000
    return highest + delta


def read_tx_log(path: str | os.PathLike[str]) -> npt.NDArray[np.void]:
    """Load a sender transmit log; a trailing partial record (torn write) is ignored."""
    with open(path, "rb") as fh:
        data = fh.read()
    count = len(data) // TX_RECORD.itemsize
    return np.frombuffer(data, dtype=TX_RECORD, count=count).copy()


@dataclass(frozen=True, slots=True)
class JoinedStream:
    """Received packets of one RTP stream with their transmit times: ``seq`` is the packet index
    (0 for the first packet sent, like probe sequence numbers); ``unmatched`` counts arrivals
    without a transmit record (left out: e.g. the sender was killed before flushing its log)."""

    seq: npt.NDArray[np.uint32]
    tx_ns: npt.NDArray[np.int64]
    rx_ns: npt.NDArray[np.int64]
    rtp_ts: npt.NDArray[np.uint32]
    unmatched: int


def join_tx_rx(
    tx_log: npt.NDArray[np.void],
    wire_id: int,
    seq0: int,
    rx_seq: npt.NDArray[np.uint32],
    rx_ns: npt.NDArray[np.int64],
) -> JoinedStream:
    """Pair a stream's arrivals (extended sequence numbers, in arrival order) with its transmit
    records by sequence number; arrival order is kept."""
    sent = tx_log[tx_log["stream"] == wire_id]
    tx_seq = sent["seq"].astype(np.int64)
    order = np.argsort(tx_seq, kind="stable")
    tx_seq = tx_seq[order]
    rx_ext = np.asarray(rx_seq, dtype=np.int64)
    pos = np.searchsorted(tx_seq, rx_ext)
    pos_ok = np.minimum(pos, max(len(tx_seq) - 1, 0))
    found = (pos < len(tx_seq)) & (tx_seq[pos_ok] == rx_ext) if len(tx_seq) else pos < 0
    idx = order[pos_ok[found]]
    return JoinedStream(
        seq=((rx_ext[found] - seq0) & 0xFFFFFFFF).astype(np.uint32),
        tx_ns=np.ascontiguousarray(sent["tx_ns"][idx], dtype=np.int64),
        rx_ns=np.ascontiguousarray(np.asarray(rx_ns, dtype=np.int64)[found]),
        rtp_ts=np.ascontiguousarray(sent["rtp_ts"][idx], dtype=np.uint32),
        unmatched=int(np.count_nonzero(~found)),
    )
