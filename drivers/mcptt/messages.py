"""The MCPTT messages as plain values: what the server, the clients and the analysis work with.

Floor control (TS 24.380 clause 8.2, RTCP APP name ``MCPT``) and pre-established session call
control (clause 8.3, APP name ``MCPC``) are RTCP APP packets (PT 204) whose fields are TLVs.
These dataclasses carry the decoded fields by name; :mod:`drivers.mcptt.codec` turns them into
bytes and back. A field that is ``None`` is absent from the packet. Fields this module does not
name are kept in ``unknown`` as ``(field id, raw value)`` so that nothing received is lost.
Numbers and sources: ``../shared/specs/mission-critical.md`` sections 2.2-2.6 (Wireshark
``packet-rtcp.c``, Nemergent ``mcptt.lua``, Doubango tinyMCPTT, NIST psc-ns3).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

__all__ = [
    "ACK_BIT",
    "APP_CALL_CONTROL",
    "APP_FLOOR",
    "AnswerState",
    "CallControlMessage",
    "CallControlType",
    "CallType",
    "DenyCause",
    "FloorIndicator",
    "FloorMessage",
    "FloorType",
    "ReasonCode",
    "RevokeCause",
    "SessionType",
    "Source",
    "TrackInfo",
    "call_type_of",
    "indicator_for",
]

APP_FLOOR = "MCPT"
"""RTCP APP name of floor control (TS 24.380 clause 8.2)."""
APP_CALL_CONTROL = "MCPC"
"""RTCP APP name of pre-established session call control (TS 24.380 clause 8.3)."""
ACK_BIT = 0x10
"""Top bit of the 5-bit RTCP subtype: the receiver must answer with a Floor Ack."""


class FloorType(IntEnum):
    """Floor control message types: the low 4 bits of the subtype (TS 24.380 table 8.2.2-1)."""

    REQUEST = 0
    GRANTED = 1
    TAKEN = 2
    DENY = 3
    RELEASE = 4
    IDLE = 5
    REVOKE = 6
    QUEUE_POSITION_REQUEST = 8
    QUEUE_POSITION_INFO = 9
    ACK = 10
    RELEASE_MULTI_TALKER = 15


class CallControlType(IntEnum):
    """Pre-established session call control message types (TS 24.380 clause 8.3)."""

    CONNECT = 0
    DISCONNECT = 1
    ACK = 2


class DenyCause(IntEnum):
    """Floor Deny reject causes (TS 24.380 clause 8.2.6.2)."""

    ANOTHER_HAS_PERMISSION = 1
    INTERNAL_ERROR = 2
    ONLY_ONE_PARTICIPANT = 3
    RETRY_AFTER_TIMER = 4
    RECEIVE_ONLY = 5
    NO_RESOURCES = 6
    QUEUE_FULL = 7
    OTHER = 255


class RevokeCause(IntEnum):
    """Floor Revoke causes (TS 24.380 clause 8.2.10.2)."""

    ONLY_ONE_CLIENT = 1
    MEDIA_BURST_TOO_LONG = 2
    NO_PERMISSION = 3
    PREEMPTED = 4
    NO_RESOURCES = 6
    OTHER = 255


class Source(IntEnum):
    """Who sent a Floor Ack or a message relayed through the participating function."""

    PARTICIPANT = 0
    PARTICIPATING_FUNCTION = 1
    CONTROLLING_FUNCTION = 2
    NON_CONTROLLING_FUNCTION = 3


class FloorIndicator(IntFlag):
    """Floor Indicator field flags (TS 24.380 table 8.2.3.1-2, field 13)."""

    NORMAL = 0x8000
    BROADCAST = 0x4000
    SYSTEM = 0x2000
    EMERGENCY = 0x1000
    IMMINENT_PERIL = 0x0800
    QUEUEING_SUPPORTED = 0x0400
    DUAL_FLOOR = 0x0200
    TEMPORARY_GROUP = 0x0100
    MULTI_TALKER = 0x0080


class CallType(IntEnum):
    """Call types of the pre-emption table; a larger value wins regardless of priority."""

    NORMAL = 0
    IMMINENT_PERIL = 1
    EMERGENCY = 2


class SessionType(IntEnum):
    """MCPTT Session Identity session types (TS 24.380 clause 8.3)."""

    NONE = 0
    PRIVATE = 1
    PREARRANGED = 3
    CHAT = 4


class AnswerState(IntEnum):
    UNCONFIRMED = 0
    CONFIRMED = 1


class ReasonCode(IntEnum):
    """Reason Code of a call control Acknowledgement."""

    ACCEPTED = 0
    BUSY = 1
    NOT_ACCEPTED = 2


def call_type_of(indicator: int | None) -> CallType:
    """The call type a Floor Indicator declares (no indicator: a normal call)."""
    flags = indicator or 0
    if flags & FloorIndicator.EMERGENCY:
        return CallType.EMERGENCY
    if flags & FloorIndicator.IMMINENT_PERIL:
        return CallType.IMMINENT_PERIL
    return CallType.NORMAL


def indicator_for(call_type: CallType, *, queueing: bool = False) -> int:
    """The Floor Indicator a participant sends for a call type."""
    flags = {
        CallType.NORMAL: FloorIndicator.NORMAL,
        CallType.IMMINENT_PERIL: FloorIndicator.IMMINENT_PERIL,
        CallType.EMERGENCY: FloorIndicator.EMERGENCY,
    }[call_type]
    if queueing:
        flags |= FloorIndicator.QUEUEING_SUPPORTED
    return int(flags)


@dataclass(frozen=True)
class TrackInfo:
    """Track Info (field 11): how a message travelled through participating functions."""

    queueing_capability: int
    participant_type: str = ""
    participant_refs: tuple[int, ...] = ()


@dataclass(frozen=True)
class FloorMessage:
    """One floor control message (APP name ``MCPT``); the field comments name the field ID."""

    type: FloorType
    ssrc: int
    """SSRC of the sender (the floor participant or the floor control server)."""
    ack_required: bool = False
    priority: int | None = None  # 0 Floor Priority, 0-255, higher is more important
    duration_s: int | None = None  # 1 Duration
    reject_cause: int | None = None  # 2 Reject Cause (DenyCause or RevokeCause)
    reject_phrase: str | None = None  # 2 Reject Cause, the optional phrase after the code
    queue_position: int | None = None  # 3 Queue Info, octet 1 (255: not disclosed)
    queue_priority: int | None = None  # 3 Queue Info, octet 2
    granted_party: str | None = None  # 4 Granted Party's Identity (MCPTT ID)
    permission_to_request: bool | None = None  # 5 Permission to Request the Floor
    user_id: str | None = None  # 6 User ID
    queue_size: int | None = None  # 7 Queue Size
    sequence: int | None = None  # 8 Message Sequence Number, 0-65535
    queued_user: str | None = None  # 9 Queued User ID
    source: int | None = None  # 10 Source (see Source)
    track_info: TrackInfo | None = None  # 11 Track Info
    acked_type: int | None = None  # 12 Message Type: the subtype a Floor Ack acknowledges
    indicator: int | None = None  # 13 Floor Indicator (FloorIndicator flags)
    granted_ssrc: int | None = None  # 14 SSRC of the granted floor participant
    unknown: tuple[tuple[int, bytes], ...] = ()
    """Fields without a name here, as (field id, value), in the order received."""

    @property
    def subtype(self) -> int:
        """The 5-bit RTCP subtype: message type plus the acknowledgement bit."""
        return int(self.type) | (ACK_BIT if self.ack_required else 0)

    @property
    def call_type(self) -> CallType:
        return call_type_of(self.indicator)


@dataclass(frozen=True)
class CallControlMessage:
    """One pre-established session call control message (APP name ``MCPC``)."""

    type: CallControlType
    ssrc: int
    media_streams: tuple[int, int] | None = None  # 0 (media stream, control channel)
    session_type: int | None = None  # 1 MCPTT Session Identity: SessionType
    session_id: str | None = None  # 1 MCPTT Session Identity: the session's URI
    warning: str | None = None  # 2 Warning Text
    group_id: str | None = None  # 3 MCPTT Group Identity
    answer_state: int | None = None  # 4 Answer State
    inviting_user: str | None = None  # 5 Inviting MCPTT User Identity
    reason_code: int | None = None  # 6 Reason Code (ReasonCode)
    unknown: tuple[tuple[int, bytes], ...] = ()
    """Fields without a name here, as (field id, value), in the order received."""
    ack_required: bool = False
    """The acknowledgement bit (0x10) of the subtype, as in floor control."""

    @property
    def subtype(self) -> int:
        """The 5-bit RTCP subtype: message type plus the acknowledgement bit."""
        return int(self.type) | (ACK_BIT if self.ack_required else 0)
