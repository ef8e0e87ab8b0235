"""AMR-WB frame sizes for RTP voice streams; standard library only, so the profile model can use
them without importing the traffic machinery.

Speech bits per frame for modes 0-8 (6.60 ... 23.85 kbit/s): 3GPP TS 26.201 table 2, repeated in
RFC 4867 section 3.6; SID (comfort noise, frame type 9): 40 bits = 35 parameter bits, STI and a
4-bit mode indication (TS 26.201 / TS 26.193). RFC 4867 octet-aligned mode pads every frame to
whole octets and puts a 1-octet payload header (CMR) and a 1-octet table-of-contents entry per
frame in front, so a one-frame packet carries 2 + ceil(bits / 8) octets after the RTP header.
"""

from __future__ import annotations

__all__ = [
    "AMRWB_KBPS",
    "AMRWB_SID_BITS",
    "AMRWB_SID_BYTES",
    "AMRWB_SID_FT",
    "AMRWB_SPEECH_BITS",
    "AMRWB_SPEECH_BYTES",
    "AMR_PAYLOAD_HEADER_BYTES",
    "RTP_HEADER_BYTES",
    "udp_payload_bytes",
]

AMRWB_KBPS = (6.60, 8.85, 12.65, 14.25, 15.85, 18.25, 19.85, 23.05, 23.85)
AMRWB_SPEECH_BITS = (132, 177, 253, 285, 317, 365, 397, 461, 477)
AMRWB_SPEECH_BYTES = tuple((bits + 7) // 8 for bits in AMRWB_SPEECH_BITS)
assert AMRWB_SPEECH_BYTES == (17, 23, 32, 36, 40, 46, 50, 58, 60)
AMRWB_SID_FT = 9
AMRWB_SID_BITS = 40
AMRWB_SID_BYTES = 5
AMR_PAYLOAD_HEADER_BYTES = 2  # CMR octet + one ToC octet (one frame per packet)
RTP_HEADER_BYTES = 12  # RFC 3550 fixed header, no CSRC, no extension


def udp_payload_bytes(codec_mode: int) -> int:
    """UDP payload of a speech packet: RTP header, CMR, ToC and the octet-aligned frame."""
    return RTP_HEADER_BYTES + AMR_PAYLOAD_HEADER_BYTES + AMRWB_SPEECH_BYTES[codec_mode]
