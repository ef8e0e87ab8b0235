"""TS 24.380 floor control and pre-established session call control on the wire.

The MCPTT server, the clients and the capture analysis exchange :mod:`drivers.mcptt.messages`
values; this module turns them into RTCP APP packets (PT 204, names ``MCPT`` and ``MCPC``) and
back. Layout (``../shared/specs/mission-critical.md`` section 2.2, Wireshark ``packet-rtcp.c``):
a 12-octet header (V=2, P, 5-bit subtype, PT, length in 32-bit words minus one, SSRC, name), then
fields as TLVs: an 8-bit field ID, an 8-bit length (16-bit when the ID is 192 or more), the value,
and zero padding to a 32-bit boundary. Two scapy layers describe this, :class:`MCApp` for the
packet and :class:`MCField` (:class:`MCPTField`, :class:`MCPCField`) for one TLV; nothing is bound
to a UDP port, since floor control runs on whatever port SDP negotiated.

Public functions: :func:`encode`, :func:`decode` (the first RTCP packet of a datagram),
:func:`decode_all` (every ``MCPT``/``MCPC`` packet of a datagram; TS 24.380 clause 8.1.1 allows
several in one IP packet) and :func:`looks_like_mc` (a cheap test without scapy).

Decisions:

* Field order on encode: the order of the message's own table in TS 24.380 clause 8.2 / 8.3, as
  Doubango/MCOP ``tmcptt_mcptt_packet_*.c`` serialise them (Floor Granted: Duration, SSRC, Floor
  Priority, ...; the worked example of spec section 2.4 is in this order); fields a table does
  not list follow in ascending ID order, then ``unknown`` in the order given. Decoding accepts
  any order.
* Decoding maps the first occurrence of a field to its attribute; a repeated field (Floor
  Granted may list several queued users), a field without an attribute here (IDs 15-21) and an
  unassigned ID go to ``unknown`` as ``(field id, raw value)`` in received order and are
  re-encoded unchanged, so ``encode(decode(x)) == x`` whenever ``x`` had its fields in the order
  above. The v13.0.x IDs 102-116 of floor control are accepted and mapped to their current names
  (and re-encoded with the current IDs); ``MCPC`` has no old IDs.
* Track Info (field 11): queueing capability, participant-type length, the participant type
  padded with zeros to a 32-bit boundary (none when its length is a multiple of 4, as Doubango
  and psc-ns3 do), then 32-bit Floor Participant References; the TLV length counts that padding.
  Wireshark 4.0 pads by 4 octets when the length is a multiple of 4 and then misreads the first
  reference.
* The top bit of the subtype (0x10) is ``ack_required`` for both names. A subtype that names no
  message raises :class:`UnknownMessageError` (a :class:`CodecError`): the message classes have
  no place for it.
* :class:`CodecError` is raised for a datagram that is not RTCP, not APP or not ``MCPT``/
  ``MCPC``, is truncated, has a length field that disagrees with the data, a field overrunning
  the packet, a value of the wrong size, text that is not UTF-8, or a bad RTCP padding count
  (the P bit is accepted although clause 8.1.2 says P = 0). Non-zero TLV padding is accepted:
  it carries nothing, and Wireshark only flags it. :func:`encode` raises :class:`CodecError` for
  a value that does not fit its field.
* SRTCP-protected packets (clause 13) are not supported.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

from scapy.error import Scapy_Exception
from scapy.fields import (
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    FieldLenField,
    PacketListField,
    ShortField,
    StrFixedLenField,
    StrLenField,
    XIntField,
)
from scapy.packet import Packet

from drivers.mcptt.messages import (
    ACK_BIT,
    APP_CALL_CONTROL,
    APP_FLOOR,
    CallControlMessage,
    CallControlType,
    FloorMessage,
    FloorType,
    TrackInfo,
)

__all__ = [
    "MCPC_FIELD_NAMES",
    "MCPT_FIELD_NAMES",
    "OLD_FIELD_IDS",
    "RTCP_APP",
    "CodecError",
    "MCApp",
    "MCField",
    "MCPCField",
    "MCPTField",
    "UnknownMessageError",
    "decode",
    "decode_all",
    "encode",
    "looks_like_mc",
]

RTCP_APP: Final = 204
"""RTCP packet type APP (RFC 3550)."""
_HEADER = 12
_NAMES: Final = (APP_FLOOR.encode(), APP_CALL_CONTROL.encode())
_MAX_PACKET = 0x10000 * 4  # the 16-bit length field counts 32-bit words minus one

MCPT_FIELD_NAMES: Final[dict[int, str]] = {
    0: "Floor Priority",
    1: "Duration",
    2: "Reject Cause",
    3: "Queue Info",
    4: "Granted Party's Identity",
    5: "Permission to Request the Floor",
    6: "User ID",
    7: "Queue Size",
    8: "Message Sequence Number",
    9: "Queued User ID",
    10: "Source",
    11: "Track Info",
    12: "Message Type",
    13: "Floor Indicator",
    14: "SSRC",
    15: "List of Granted Users",
    16: "List of SSRCs",
    17: "Functional Alias",
    18: "List of Functional Aliases",
    19: "Location",
    20: "List of Locations",
    21: "Queued Floor Requests Purpose",
}
"""Floor control field IDs (TS 24.380 table 8.2.3.1-2; 21 as Wireshark 4.0 names it)."""
OLD_FIELD_IDS: Final[dict[int, int]] = {
    102: 0,
    103: 1,
    104: 2,
    105: 3,
    106: 4,
    108: 5,
    109: 6,
    110: 7,
    111: 8,
    112: 9,
    113: 10,
    114: 11,
    115: 12,
    116: 13,
}
"""Floor control field IDs of TS 24.380 v13.0.x and their current IDs (decode only)."""
MCPC_FIELD_NAMES: Final[dict[int, str]] = {
    0: "Media Streams",
    1: "MCPTT Session Identity",
    2: "Warning Text",
    3: "MCPTT Group Identity",
    4: "Answer State",
    5: "Inviting MCPTT User Identity",
    6: "Reason Code",
}
"""Pre-established session call control field IDs (TS 24.380 table 8.3.3.1-2)."""

# Encode order per message: the message's table in TS 24.380 clause 8.2 / 8.3 (as Doubango/MCOP
# serialise them); IDs a table does not list follow in ascending order.
_FLOOR_ORDER: Final[dict[FloorType, tuple[int, ...]]] = {
    FloorType.REQUEST: (0, 6, 11, 13),
    FloorType.GRANTED: (1, 14, 0, 6, 7, 9, 3, 11, 13),
    FloorType.TAKEN: (4, 5, 6, 8, 11, 13, 14),
    FloorType.DENY: (2, 6, 11, 13),
    FloorType.RELEASE: (6, 11, 13),
    FloorType.IDLE: (8, 11, 13),
    FloorType.REVOKE: (2, 11, 13),
    FloorType.QUEUE_POSITION_REQUEST: (6, 11),
    FloorType.QUEUE_POSITION_INFO: (6, 14, 9, 3, 11, 13),
    FloorType.ACK: (10, 12, 11),
}
_CALL_ORDER: Final[dict[CallControlType, tuple[int, ...]]] = {
    CallControlType.CONNECT: (1, 3, 0, 2, 4, 5),
    CallControlType.DISCONNECT: (1,),
    CallControlType.ACK: (6,),
}


class CodecError(ValueError):
    """The bytes are not a well-formed MC RTCP APP packet, or a value does not fit its field."""


class UnknownMessageError(CodecError):
    """A well-formed ``MCPT``/``MCPC`` packet whose subtype names no message known here."""

    def __init__(self, app_name: str, subtype: int, ssrc: int) -> None:
        super().__init__(f"{app_name} subtype {subtype} is not a known message (SSRC {ssrc:#x})")
        self.app_name = app_name
        self.subtype = subtype
        self.ssrc = ssrc


# --------------------------------------------------------------------------------------------
# scapy layers
# --------------------------------------------------------------------------------------------


def _length_size(field_id: int) -> int:
    """Octets of a TLV's length: 1, or 2 when the field ID is 192 or more."""
    return 2 if field_id >= 192 else 1


def _padding_size(field_id: int, value_length: int) -> int:
    """Zero octets that bring ID + length + value to a multiple of 4."""
    return -(1 + _length_size(field_id) + value_length) % 4


class _TLVLengthField(FieldLenField):
    """The length of a TLV's value: 8 bits, or 16 bits when the field ID is 192 or more."""

    def addfield(self, pkt: Packet, s: bytes, val: int | None) -> bytes:
        return s + self.i2m(pkt, val).to_bytes(_length_size(pkt.id), "big")

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, int]:
        size = _length_size(pkt.id)
        if len(s) < size:
            raise Scapy_Exception("field header truncated")
        return s[size:], int.from_bytes(s[:size], "big")


class _TLVPaddingField(StrLenField):
    """The padding after a TLV's value; built as zeros unless given."""

    def __init__(self, name: str) -> None:
        super().__init__(name, b"", length_from=lambda p: _padding_size(p.id, len(p.value)))

    def i2m(self, pkt: Packet | None, x: bytes | None) -> bytes:
        if not x and pkt is not None:
            return bytes(_padding_size(pkt.id, len(pkt.value)))
        return x or b""


class MCField(Packet):
    """One TLV field of an MC RTCP APP packet; dissects as :class:`MCPTField` or
    :class:`MCPCField` after the APP name of the packet that holds it."""

    name = "MC field"
    fields_desc = [  # noqa: RUF012 (scapy declares it so)
        ByteField("id", 0),
        _TLVLengthField("length", None, length_of="value", fmt="B"),
        StrLenField("value", b"", length_from=lambda p: p.length),
        _TLVPaddingField("pad"),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        parent = kargs.get("_parent")
        if parent is not None and parent.getfieldval("app_name") == _NAMES[1]:
            return MCPCField
        return MCPTField

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    def mysummary(self) -> str:
        return self.sprintf("%id% len=%length%")


_MCPT_ID_NAMES = {
    **MCPT_FIELD_NAMES,
    **{old: f"{MCPT_FIELD_NAMES[new]} (v13.0)" for old, new in OLD_FIELD_IDS.items()},
}


class MCPTField(MCField):
    """A floor control field (TS 24.380 clause 8.2.3)."""

    name = "MCPT field"
    fields_desc = [  # noqa: RUF012 (scapy declares it so)
        ByteEnumField("id", 0, _MCPT_ID_NAMES),
        *MCField.fields_desc[1:],
    ]


class MCPCField(MCField):
    """A pre-established session call control field (TS 24.380 clause 8.3.3)."""

    name = "MCPC field"
    fields_desc = [ByteEnumField("id", 0, MCPC_FIELD_NAMES), *MCField.fields_desc[1:]]  # noqa: RUF012


def _rtcp_padding_size(pkt: Packet) -> int:
    """The RTCP padding count: the last octet of the packet when the P bit is set."""
    if not pkt.padding or pkt.length is None:
        return 0
    end = (pkt.length + 1) * 4
    raw = pkt.original
    return raw[end - 1] if _HEADER <= end <= len(raw) else 0


def _fields_size(pkt: Packet) -> int:
    size: int = (pkt.length + 1) * 4 - _HEADER - _rtcp_padding_size(pkt)
    return max(0, size)


class MCApp(Packet):
    """An RTCP APP packet of the MC family (TS 24.380 clause 8.1.2): the header, then TLVs.

    ``length`` is computed when built. Bytes after the packet (the rest of a datagram holding
    several) are left as padding.
    """

    name = "MC RTCP APP"
    fields_desc = [  # noqa: RUF012 (scapy declares it so)
        BitField("version", 2, 2),
        BitField("padding", 0, 1),
        BitField("subtype", 0, 5),
        ByteField("pt", RTCP_APP),
        ShortField("length", None),
        XIntField("ssrc", 0),
        StrFixedLenField("app_name", _NAMES[0], 4),
        PacketListField("tlvs", [], MCField, length_from=_fields_size, max_count=_MAX_PACKET),
        ConditionalField(
            StrLenField("rtcp_padding", b"", length_from=_rtcp_padding_size),
            lambda p: p.padding == 1,
        ),
    ]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.length is None:
            pkt = pkt[:2] + (len(pkt) // 4 - 1).to_bytes(2, "big") + pkt[4:]
        return pkt + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    def mysummary(self) -> str:
        return self.sprintf("%app_name% subtype=%subtype% ssrc=%ssrc%")


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


class _BadValue(Exception):
    """A field value that cannot be decoded; the caller names the field."""


def _uint(value: object, bits: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise CodecError(f"{what} = {value!r} does not fit an unsigned {bits}-bit field")
    return value


def _u16(value: object, what: str) -> bytes:
    return _uint(value, 16, what).to_bytes(2, "big")


def _text(value: object, what: str, limit: int = 255) -> bytes:
    if not isinstance(value, str):
        raise CodecError(f"{what} = {value!r} is not a str")
    raw = value.encode("utf-8")
    if len(raw) > limit:
        raise CodecError(f"{what} is {len(raw)} octets of UTF-8, the field holds {limit}")
    return raw


def _pair(a: object, b: object, names: str) -> bool:
    """Whether a field built from two attributes is present; both or neither must be set."""
    if (a is None) != (b is None):
        raise CodecError(f"{names} go together in one field: set both or neither")
    return a is not None


def _track_info_value(info: TrackInfo) -> bytes:
    ptype = _text(info.participant_type, "track_info.participant_type")
    refs = b"".join(
        _uint(ref, 32, "track_info.participant_refs").to_bytes(4, "big")
        for ref in info.participant_refs
    )
    value = (
        bytes((_uint(info.queueing_capability, 8, "track_info.queueing_capability"), len(ptype)))
        + ptype
        + bytes(-len(ptype) % 4)
        + refs
    )
    if len(value) > 255:
        raise CodecError(f"track_info needs {len(value)} octets, the field holds 255")
    return value


def _floor_values(m: FloorMessage) -> dict[int, bytes]:
    v: dict[int, bytes] = {}
    if m.priority is not None:
        v[0] = bytes((_uint(m.priority, 8, "priority"), 0))
    if m.duration_s is not None:
        v[1] = _u16(m.duration_s, "duration_s")
    if m.reject_cause is not None:
        phrase = b"" if m.reject_phrase is None else _text(m.reject_phrase, "reject_phrase", 253)
        v[2] = _u16(m.reject_cause, "reject_cause") + phrase
    elif m.reject_phrase is not None:
        raise CodecError("reject_phrase needs a reject_cause (both are Reject Cause, field 2)")
    if _pair(m.queue_position, m.queue_priority, "queue_position and queue_priority"):
        v[3] = bytes(
            (
                _uint(m.queue_position, 8, "queue_position"),
                _uint(m.queue_priority, 8, "queue_priority"),
            )
        )
    if m.granted_party is not None:
        v[4] = _text(m.granted_party, "granted_party")
    if m.permission_to_request is not None:
        v[5] = _u16(int(bool(m.permission_to_request)), "permission_to_request")
    if m.user_id is not None:
        v[6] = _text(m.user_id, "user_id")
    if m.queue_size is not None:
        v[7] = _u16(m.queue_size, "queue_size")
    if m.sequence is not None:
        v[8] = _u16(m.sequence, "sequence")
    if m.queued_user is not None:
        v[9] = _text(m.queued_user, "queued_user")
    if m.source is not None:
        v[10] = _u16(m.source, "source")
    if m.track_info is not None:
        v[11] = _track_info_value(m.track_info)
    if m.acked_type is not None:
        v[12] = bytes((_uint(m.acked_type, 8, "acked_type"), 0))
    if m.indicator is not None:
        v[13] = _u16(m.indicator, "indicator")
    if m.granted_ssrc is not None:
        v[14] = _uint(m.granted_ssrc, 32, "granted_ssrc").to_bytes(4, "big") + bytes(2)
    return v


def _call_values(m: CallControlMessage) -> dict[int, bytes]:
    v: dict[int, bytes] = {}
    if m.media_streams is not None:
        stream, channel = m.media_streams
        v[0] = bytes((_uint(stream, 8, "media_streams[0]"), _uint(channel, 8, "media_streams[1]")))
    if _pair(m.session_type, m.session_id, "session_type and session_id"):
        v[1] = bytes((_uint(m.session_type, 8, "session_type"),)) + _text(
            m.session_id, "session_id", 254
        )
    if m.warning is not None:
        v[2] = _text(m.warning, "warning")
    if m.group_id is not None:
        v[3] = _text(m.group_id, "group_id")
    if m.answer_state is not None:
        v[4] = _u16(m.answer_state, "answer_state")
    if m.inviting_user is not None:
        v[5] = _text(m.inviting_user, "inviting_user")
    if m.reason_code is not None:
        v[6] = _u16(m.reason_code, "reason_code")
    return v


def _exact(value: bytes, size: int) -> bytes:
    if len(value) != size:
        raise _BadValue(f"length {len(value)}, expected {size}")
    return value


def _int16(value: bytes) -> int:
    return int.from_bytes(_exact(value, 2), "big")


def _utf8(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadValue(f"not UTF-8 ({exc.reason} at octet {exc.start})") from None


def _decode_reject(value: bytes) -> dict[str, Any]:
    if len(value) < 2:
        raise _BadValue(f"length {len(value)}, expected 2 or more")
    phrase = _utf8(value[2:]) if len(value) > 2 else None
    return {"reject_cause": int.from_bytes(value[:2], "big"), "reject_phrase": phrase}


def _decode_permission(value: bytes) -> dict[str, Any]:
    flag = _int16(value)
    if flag > 1:
        raise _BadValue(f"value {flag}, expected 0 or 1")
    return {"permission_to_request": bool(flag)}


def _decode_track_info(value: bytes) -> dict[str, Any]:
    if len(value) < 2:
        raise _BadValue(f"length {len(value)}, expected 2 or more")
    ptype_len = value[1]
    refs_at = 2 + ptype_len + (-ptype_len % 4)
    if refs_at > len(value):
        raise _BadValue(
            f"participant type of {ptype_len} octets (padded to {refs_at - 2}) overruns the "
            f"{len(value)}-octet value"
        )
    refs = value[refs_at:]
    if len(refs) % 4:
        raise _BadValue(f"{len(refs)} octets of Floor Participant References, not a multiple of 4")
    info = TrackInfo(
        queueing_capability=value[0],
        participant_type=_utf8(value[2 : 2 + ptype_len]),
        participant_refs=struct.unpack(f"!{len(refs) // 4}I", refs),
    )
    return {"track_info": info}


def _decode_media_streams(value: bytes) -> dict[str, Any]:
    _exact(value, 2)
    return {"media_streams": (value[0], value[1])}


def _decode_session(value: bytes) -> dict[str, Any]:
    if not value:
        raise _BadValue("length 0, expected 1 or more")
    return {"session_type": value[0], "session_id": _utf8(value[1:])}


_Decoder = Callable[[bytes], Mapping[str, Any]]


def _one(attr: str, convert: Callable[[bytes], Any]) -> _Decoder:
    return lambda value: {attr: convert(value)}


_FLOOR_DECODERS: Final[dict[int, _Decoder]] = {
    0: _one("priority", lambda v: _exact(v, 2)[0]),
    1: _one("duration_s", _int16),
    2: _decode_reject,
    3: lambda v: {"queue_position": _exact(v, 2)[0], "queue_priority": v[1]},
    4: _one("granted_party", _utf8),
    5: _decode_permission,
    6: _one("user_id", _utf8),
    7: _one("queue_size", _int16),
    8: _one("sequence", _int16),
    9: _one("queued_user", _utf8),
    10: _one("source", _int16),
    11: _decode_track_info,
    12: _one("acked_type", lambda v: _exact(v, 2)[0]),
    13: _one("indicator", _int16),
    14: _one("granted_ssrc", lambda v: int.from_bytes(_exact(v, 6)[:4], "big")),
}
_CALL_DECODERS: Final[dict[int, _Decoder]] = {
    0: _decode_media_streams,
    1: _decode_session,
    2: _one("warning", _utf8),
    3: _one("group_id", _utf8),
    4: _one("answer_state", _int16),
    5: _one("inviting_user", _utf8),
    6: _one("reason_code", _int16),
}


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def encode(message: FloorMessage | CallControlMessage) -> bytes:
    """The RTCP APP packet of a message.

    Raises :class:`CodecError` when a value does not fit its field (a priority above 255, an
    identity longer than 255 octets of UTF-8, half of a two-part field, ...).
    """
    values: dict[int, bytes]
    order: tuple[int, ...]
    cls: type[MCField]
    kind: FloorType | CallControlType
    try:
        if isinstance(message, FloorMessage):
            name, cls, kind = _NAMES[0], MCPTField, FloorType(message.type)
            values, order = _floor_values(message), _FLOOR_ORDER.get(kind, ())
        elif isinstance(message, CallControlMessage):
            name, cls, kind = _NAMES[1], MCPCField, CallControlType(message.type)
            values, order = _call_values(message), _CALL_ORDER.get(kind, ())
        else:
            raise CodecError(f"not an MCPTT message: {message!r}")
    except ValueError as exc:  # CodecError, or a type that is no message
        raise CodecError(str(exc)) from None
    ids = [i for i in order if i in values] + sorted(i for i in values if i not in order)
    tlvs = [(i, values[i]) for i in ids]
    for field_id, raw in message.unknown:
        _uint(field_id, 8, "unknown field id")
        if not isinstance(raw, bytes) or len(raw) >= 1 << (8 * _length_size(field_id)):
            raise CodecError(f"unknown field {field_id}: value {raw!r:.40} does not fit")
        tlvs.append((field_id, raw))
    size = _HEADER + sum(
        1 + _length_size(i) + len(raw) + _padding_size(i, len(raw)) for i, raw in tlvs
    )
    if size > _MAX_PACKET:
        raise CodecError(f"the packet would be {size} octets, RTCP allows {_MAX_PACKET}")
    subtype = int(kind) | (ACK_BIT if message.ack_required else 0)
    packet = MCApp(
        subtype=subtype,
        ssrc=_uint(message.ssrc, 32, "ssrc"),
        app_name=name,
        tlvs=[cls(id=i, value=raw) for i, raw in tlvs],
    )
    return bytes(packet)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _packet_end(data: bytes, offset: int) -> int:
    """Check the RTCP common header at ``offset``; the offset just after its packet."""
    left = len(data) - offset
    if left < 4:
        raise CodecError(f"truncated: {left} octets at offset {offset}, an RTCP header has 4")
    version = data[offset] >> 6
    if version != 2:
        raise CodecError(f"not RTCP: version {version} at offset {offset}, expected 2")
    size = (int.from_bytes(data[offset + 2 : offset + 4], "big") + 1) * 4
    if size > left:
        raise CodecError(
            f"length field says {size} octets at offset {offset}, the datagram has {left} left"
        )
    return offset + size


def _is_mc_app(packet: bytes) -> bool:
    return packet[1] == RTCP_APP and len(packet) >= _HEADER and packet[8:12] in _NAMES


def decode(data: bytes) -> FloorMessage | CallControlMessage:
    """The message in the first RTCP packet of a datagram (bytes after it are ignored).

    Raises :class:`CodecError` if that packet is not a well-formed ``MCPT`` or ``MCPC`` APP
    packet, :class:`UnknownMessageError` if its subtype names no message.
    """
    data = bytes(data)
    if len(data) >= 1 and data[0] >> 6 != 2:
        raise CodecError(f"not RTCP: version {data[0] >> 6}, expected 2")
    if len(data) >= 2 and data[1] != RTCP_APP:
        raise CodecError(f"not RTCP APP: packet type {data[1]}, expected {RTCP_APP}")
    if len(data) < _HEADER:
        raise CodecError(f"truncated: {len(data)} octets, an RTCP APP header has {_HEADER}")
    end = _packet_end(data, 0)
    if end < _HEADER:
        raise CodecError(f"length field says {end} octets, an RTCP APP packet has {_HEADER}+")
    if data[8:12] not in _NAMES:
        raise CodecError(f"APP name {data[8:12]!r} is not MCPT or MCPC")
    return _decode_packet(data[:end], 0)


def decode_all(data: bytes) -> list[FloorMessage | CallControlMessage]:
    """Every ``MCPT``/``MCPC`` message of a datagram, in order; other RTCP packets (SR, RR,
    SDES, other APP names) are skipped.

    Raises :class:`CodecError` when the datagram is not a sequence of RTCP packets whose
    lengths add up to its size, or when any MC packet in it is malformed or unknown.
    """
    data = bytes(data)
    if not data:
        raise CodecError("empty datagram")
    messages: list[FloorMessage | CallControlMessage] = []
    offset = 0
    while offset < len(data):
        end = _packet_end(data, offset)
        packet = data[offset:end]
        if packet[1] == RTCP_APP and len(packet) < _HEADER:
            raise CodecError(f"APP packet of {len(packet)} octets at offset {offset}, needs 12")
        if _is_mc_app(packet):
            messages.append(_decode_packet(packet, offset))
        offset = end
    return messages


def looks_like_mc(data: bytes) -> bool:
    """Whether a UDP payload is RTCP holding MC floor or call control, without scapy.

    True when the payload is a sequence of RTCP packets (V=2, lengths adding up to its size)
    with at least one APP packet named ``MCPT`` or ``MCPC``.
    """
    found = False
    offset, size = 0, len(data)
    while offset < size:
        if size - offset < 4 or data[offset] >> 6 != 2:
            return False
        end = offset + (int.from_bytes(data[offset + 2 : offset + 4], "big") + 1) * 4
        if end > size:
            return False
        if end - offset >= _HEADER and data[offset + 1] == RTCP_APP:
            found = found or bytes(data[offset + 8 : offset + 12]) in _NAMES
        offset = end
    return found


def _decode_packet(packet: bytes, at: int) -> FloorMessage | CallControlMessage:
    """Decode one whole MC APP packet (header already checked); ``at`` is its datagram offset."""
    app_name = packet[8:12].decode()
    fields_end = len(packet)
    if packet[0] & 0x20:
        count = packet[-1]
        if count == 0 or count > len(packet) - _HEADER:
            raise CodecError(
                f"{app_name} at offset {at}: bad RTCP padding count {count} in a "
                f"{len(packet)}-octet packet"
            )
        fields_end -= count
    try:
        layer = MCApp(packet)
    except Exception as exc:  # scapy should not raise here; keep the promise of CodecError
        raise CodecError(f"{app_name} at offset {at}: cannot dissect: {exc}") from exc
    floor = app_name == APP_FLOOR
    names = MCPT_FIELD_NAMES if floor else MCPC_FIELD_NAMES
    decoders = _FLOOR_DECODERS if floor else _CALL_DECODERS
    attrs: dict[str, Any] = {}
    seen: set[int] = set()
    unknown: list[tuple[int, bytes]] = []
    offset = at + _HEADER
    for element in layer.tlvs:
        where = f"{app_name} at offset {at}: field at offset {offset}"
        if not isinstance(element, MCField):
            raise CodecError(f"{where}: truncated field header")
        field_id, declared, value = element.id, element.length, element.value
        if len(value) < declared:
            raise CodecError(
                f"{where} (ID {field_id}): length {declared} overruns the packet "
                f"({len(value)} octets left)"
            )
        padding = _padding_size(field_id, declared)
        if len(element.pad) < padding:
            raise CodecError(f"{where} (ID {field_id}): padding to 32 bits is truncated")
        offset += 1 + _length_size(field_id) + declared + padding
        known = OLD_FIELD_IDS.get(field_id, field_id) if floor else field_id
        decoder = decoders.get(known)
        if decoder is None or known in seen:
            unknown.append((field_id, value))
            continue
        try:
            attrs.update(decoder(value))
        except _BadValue as exc:
            raise CodecError(f"{where}: {names[known]} (ID {field_id}): {exc}") from None
        seen.add(known)
    if offset - at != fields_end:  # cannot happen after the checks above; kept as a guard
        raise CodecError(
            f"{app_name} at offset {at}: fields end at {offset - at}, not {fields_end}"
        )
    subtype, ssrc = packet[0] & 0x1F, int.from_bytes(packet[4:8], "big")
    ack = bool(subtype & ACK_BIT)
    try:
        if floor:
            return FloorMessage(
                FloorType(subtype & 0x0F), ssrc, ack, **attrs, unknown=tuple(unknown)
            )
        return CallControlMessage(
            CallControlType(subtype & 0x0F),
            ssrc,
            **attrs,
            unknown=tuple(unknown),
            ack_required=ack,
        )
    except ValueError:
        raise UnknownMessageError(app_name, subtype, ssrc) from None
