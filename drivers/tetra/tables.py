"""Code tables of the TETRA PEI (ETSI EN 300 392-5) shared by the terminal emulator, the
emulated SwMI and the PEI driver, each with the clause it comes from and how sure we are.

Tags follow the project's spec notes (``/work/shared/specs/mission-critical.md`` section 4):
[src] read in the reference source (SvxLink TetraLogic ``TetraLib.h``, which quotes the
clauses of EN 300 392-5 V2.2.0), [2nd] taken from a secondary text, [mem] not verified
against a primary text. Anything a test or a KPI relies on lives here, not in the code.
"""

from __future__ import annotations

from typing import Final

# --------------------------------------------------------------------------------------------
# Transmission control (EN 300 392-2 information elements, quoted in EN 300 392-5)
# --------------------------------------------------------------------------------------------

TX_GRANT: Final[dict[int, str]] = {
    0: "granted",
    1: "not granted",
    2: "queued",
    3: "granted to another",
}
"""TxGrant of ``+CTXG`` (EN 300 392-2 clause 8.5.221) [src]."""

TX_GRANTED, TX_NOT_GRANTED, TX_QUEUED, TX_GRANTED_TO_ANOTHER = 0, 1, 2, 3

TX_DEMAND_PRIORITY: Final[dict[int, str]] = {
    0: "low",
    1: "high",
    2: "preemptive",
    3: "emergency",
}
"""TxDemandPriority of ``AT+CTXD`` (EN 300 392-2 clause 8.5.227) [src]. Pre-emptive and
emergency demands pre-empt a lower-priority talker in the emulated SwMI."""

TX_DEMAND_BY_NAME: Final[dict[str, int]] = {name: code for code, name in TX_DEMAND_PRIORITY.items()}

TX_DEMAND_PREEMPTIVE = 2
"""Demands of this priority or above may pre-empt a talker of lower priority."""

TX_RQ_PERMISSION: Final[dict[int, str]] = {
    0: "allowed to request transmission",
    1: "not allowed to request transmission",
}
"""TxRqPrmsn of ``+CTXG``/``+CDTXC`` (EN 300 392-5 clause 6.17.x) [mem]."""

TPI_TYPE_EXTENDED_TSI = 3
"""TPI type sent with an extended (17-digit) TSI in ``+CTXG``. Taken from the spec notes'
example ``+CTXG: 1,3,0,0,3,09011638300023404`` [2nd]; the meaning of the other values of the
TPI type parameter is not verified."""

# --------------------------------------------------------------------------------------------
# Circuit-mode calls
# --------------------------------------------------------------------------------------------

CALL_STATUS: Final[dict[int, str]] = {
    0: "call progressing",
    1: "call queued",
    2: "called party paged",
    3: "call continue",
    4: "hang time expired",
}
"""Call status of ``+CTICN`` (EN 300 392-5 clause 6.17.8) [src]."""

DISCONNECT_CAUSES: Final[dict[int, str]] = {
    0: "not defined or unknown",
    1: "user request",
    2: "called party busy",
    3: "called party not reachable",
    4: "called party does not support encryption",
    5: "network congestion",
    6: "not allowed traffic",
    7: "incompatible traffic",
    8: "service not available",
    9: "pre-emption",
    10: "invalid call identifier",
    11: "called party rejection",
    12: "no idle CC entity",
    13: "timer expiry",
    14: "SwMI disconnect",
    15: "no acknowledgement",
    16: "unknown TETRA identity",
    17: "supplementary service dependent",
    18: "unknown external subscriber number",
    19: "call restoration failed",
    20: "called party requires encryption",
    21: "concurrent set-up not supported",
    22: "called party is under the same DM-GATE as the calling party",
    **{n: "reserved" for n in range(23, 31)},
    31: "called party offered unacceptable service",
    32: "pre-emption by late entering gateway",
    33: "link to DM-REP not established or failed",
    34: "link to gateway failed",
    35: "call rejected by gateway",
    36: "V+D call set-up failure",
    37: "V+D resource lost or call timer expired",
    38: "transmit authorization lost",
    39: "channel has become occupied by other users",
    40: "security parameter mismatch",
}
"""Disconnect cause of ``+CTCR`` (EN 300 392-5 clause 6.17.18) [src]."""

CAUSE_USER_REQUEST = 1
CAUSE_NOT_REACHABLE = 3
CAUSE_SERVICE_NOT_AVAILABLE = 8
CAUSE_PREEMPTION = 9
"""The emulated SwMI releases a group call with this cause when a call of higher, pre-emptive
priority is set up in the same group."""
CAUSE_TIMER_EXPIRY = 13
"""The emulated SwMI releases a group call with this cause when its hang time expires with
nobody transmitting (call status 4 "hang time expired" only exists for ``+CTICN``, and 37
"V+D resource lost or call timer expired" belongs to DMO gateways)."""
CAUSE_SWMI_DISCONNECT = 14
"""The terminal emulator reports its calls released with this cause when it loses the SwMI."""

CALL_PRIORITY_MAX = 15
CALL_PRIORITY_PREEMPTIVE_MIN = 12
CALL_PRIORITY_EMERGENCY = 15
"""Call priority of ``AT+CTSDC`` and ``+CTICN`` ranges 0-15. Which values are pre-emptive is an
OPEN QUESTION (spec notes section 8, question 5) [mem]: EN 300 392-2 is remembered as 0 = not
defined, 1-11 = priority levels, 12-14 = pre-emptive levels, 15 = emergency pre-emptive. The
emulated SwMI uses exactly these two constants: a call set up with priority >=
``CALL_PRIORITY_PREEMPTIVE_MIN`` pre-empts (cause 9) a lower-priority call of the same group.
Verify against EN 300 392-2 before a real SwMI's behaviour is judged by them."""

CALL_PRIORITY_BY_NAME: Final[dict[str, int]] = {
    "normal": 0,
    "preemptive": CALL_PRIORITY_PREEMPTIVE_MIN,
    "emergency": CALL_PRIORITY_EMERGENCY,
}
"""Names a timeline may give instead of a number (same [mem] caveat)."""


def demand_priority_for_call(call_priority: int) -> int:
    """The TxDemandPriority a set-up with "request to transmit" implies for its first grant
    (same [mem] caveat as :data:`CALL_PRIORITY_PREEMPTIVE_MIN`)."""
    if call_priority >= CALL_PRIORITY_EMERGENCY:
        return 3
    if call_priority >= CALL_PRIORITY_PREEMPTIVE_MIN:
        return 2
    return 1


AI_SERVICE: Final[dict[int, str]] = {
    0: "TETRA speech",
    1: "7.2 kbit/s unprotected data",
    2: "4.8 kbit/s low protection, interleaving depth 1",
    3: "4.8 kbit/s low protection, interleaving depth 4",
    4: "4.8 kbit/s low protection, interleaving depth 8",
    5: "2.4 kbit/s high protection, interleaving depth 1",
    6: "2.4 kbit/s high protection, interleaving depth 4",
    7: "2.4 kbit/s high protection, interleaving depth 8",
    8: "packet data",
    9: "SDS type 1 (16 bits)",
    10: "SDS type 2 (32 bits)",
    11: "SDS type 3 (64 bits)",
    12: "SDS type 4 (0-2047 bits)",
    13: "status (16 bits)",
}
"""AI service (EN 300 392-5 clause 6.17.3) [src]."""

AI_SERVICE_SPEECH = 0
AI_SERVICE_SDS_TYPE4 = 12

CALLED_PARTY_ID_TYPE: Final[dict[int, str]] = {
    0: "SSI",
    1: "TSI",
    2: "SNA",
    3: "PABX external subscriber number",
    4: "PSTN external subscriber number",
    5: "extended TSI",
}
"""Called/calling party identity type (EN 300 392-5 clause 6.17.11) [src]."""

ID_TYPE_SSI, ID_TYPE_TSI, ID_TYPE_EXTENDED_TSI = 0, 1, 5

COMMS_TYPE: Final[dict[int, str]] = {
    0: "point-to-point",
    1: "point-to-multipoint",
    2: "point-to-multipoint acknowledged",
    3: "broadcast",
}
"""Communication type of ``AT+CTSDC`` (EN 300 392-5 clause 6.17.x): 1 = group call [2nd: spec
notes 4.2]; the other values [mem]."""

GROUP_CALL_SERVICE: Final[tuple[int, ...]] = (0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0)
"""``AT+CTSDC`` of a group speech call as SvxLink sends it: speech, SSI, area 0, hook 1,
simplex, no E2EE, comms type 1 (group), slots/codec 1, RqTx 0, priority 0, CLIR 0 [src]."""

CTSDC_FIELDS: Final[tuple[str, ...]] = (
    "ai_service",
    "called_id_type",
    "area",
    "hook",
    "simplex",
    "e2ee",
    "comms_type",
    "slots_codec",
    "rqtx",
    "priority",
    "clir",
)
"""The parameters of ``AT+CTSDC``, in order (EN 300 392-5 clause 6.14.x, spec notes 4.2)."""

# --------------------------------------------------------------------------------------------
# Mode, identity, registration, groups
# --------------------------------------------------------------------------------------------

AI_MODE: Final[dict[int, str]] = {
    0: "V+D (trunked mode operation)",
    1: "DMO",
    2: "V+D with dual watch of DMO",
    3: "DMO with dual watch of V+D",
    4: "V+D and DMO",
    5: "gateway",
    6: "DMO repeater",
}
"""AI mode of ``AT+CTOM`` (EN 300 392-5 clause 6.17.4) [src]."""

DM_COMMUNICATION_TYPE: Final[dict[int, str]] = {
    0: "any, MT decides",
    1: "direct MS-MS",
    2: "via DM-REP",
    3: "via DM-GATE",
    4: "via DM-REP/GATE",
    6: "direct MS-MS, keep gateway registration",
}
"""DM communication type (EN 300 392-5 clause 6.17.20) [src]."""

REG_STAT: Final[dict[int, str]] = {
    0: "searching",
    1: "registered, home network",
    2: "not registered, no network",
    3: "system reject",
    4: "unknown",
    5: "registered, visited network",
}
"""Registration status of ``+CREG`` in TETRA (EN 300 392-5 clause 6.17.46) [src]."""

REG_SEARCHING, REG_HOME, REG_NO_NETWORK, REG_REJECTED, REG_UNKNOWN, REG_VISITED = range(6)

NUM_TYPE: Final[dict[int, str]] = {
    0: "individual (ISSI or ITSI)",
    1: "group (GSSI or GTSI)",
    2: "PSTN gateway",
    3: "PABX gateway",
    4: "service centre (ISSI or ITSI)",
    5: "service centre (E.164)",
    6: "individual (extended TSI)",
    7: "group (extended TSI)",
}
"""Num type of ``+CNUMF`` (EN 300 392-5 clause 6.17.38) [src]."""

NUM_TYPE_INDIVIDUAL_EXTENDED = 6

GROUP_TYPE: Final[dict[int, str]] = {
    0: "none",
    1: "select",
    **{n: f"scan priority {n - 1}" for n in range(2, 8)},
}
"""Group type of ``AT+CTGS`` (EN 300 392-5 clause 6.17.25) [src]; 0 detaches every group."""

GROUP_SELECT = 1

SERVICE_PROFILE_MAX = 2
"""``AT+CTSP`` service profile 0 MT, 1 TE, 2 MT and TE [mem]."""

SVXLINK_CTSP_INIT: Final[tuple[str, ...]] = (
    "AT+CTSP=1,3,131",
    "AT+CTSP=1,3,130",
    "AT+CTSP=1,3,138",
    "AT+CTSP=1,2,20",
    "AT+CTSP=2,0,0",
    "AT+CTSP=1,3,24",
    "AT+CTSP=1,3,25",
    "AT+CTSP=1,3,3",
    "AT+CTSP=1,3,10",
    "AT+CTSP=1,1,11",
)
"""The service routing SvxLink's TetraLogic sets at start (spec notes 4.1) [src]."""

# --------------------------------------------------------------------------------------------
# SDS
# --------------------------------------------------------------------------------------------

SDS_STATUS: Final[dict[int, str]] = {
    0: "incoming message stored and unread",
    1: "incoming message stored and read",
    2: "outgoing message stored and unsent",
    3: "outgoing message stored and sent",
    4: "outgoing message successfully sent",
    5: "outgoing message transmission failed",
}
"""SDS status of ``+CMGS`` (EN 300 392-5 clause 6.17.51) [src]."""

SDS_SENT, SDS_FAILED = 4, 5

SDS_MAX_BITS = 2047
"""SDS type 4 user data is at most 2047 bits (AI service 12) [src]."""

SDS_TL_TEXT_PID = 0x82
SDS_TL_TRANSFER = 0x04
SDS_TL_TEXT_LATIN1 = 0x01
"""A text SDS as SvxLink builds it: PID 0x82 (text messaging over SDS-TL), 0x04 (SDS-TRANSFER
header byte), 1-byte message reference, text coding scheme 0x01 (ISO 8859-1), the text
[src: ``TetraLib.h`` createSDS]."""

# --------------------------------------------------------------------------------------------
# +CME ERROR codes of the PEI
# --------------------------------------------------------------------------------------------

PEI_ERRORS: Final[dict[int, str]] = {
    0: "could not send the data over the air",
    1: "no reliable communication with the TE",
    2: "PEI link already in use",
    3: "not allowed in the current state",
    4: "not supported",
    5: "SIM PIN required before any command",
    10: "SIM not inserted",
    11: "SIM PIN1 required",
    12: "SIM PIN1 unblocking required",
    13: "SIM failure",
    14: "SIM not ready",
    15: "SIM not recognised",
    16: "incorrect SIM PIN",
    17: "SIM PIN2 required",
    18: "SIM PIN2 unblocking required",
    20: "message stack full",
    21: "message index does not exist",
    22: "message index holds no message",
    23: "message stack access failed",
    24: "status text too long",
    25: "status text has invalid characters",
    26: "dial string longer than 25 digits",
    27: "dial string has invalid characters",
    30: "MS out of service",
    31: "no layer 2 acknowledgement from the SwMI",
    32: "user data decoding failed",
    33: "parameter of the wrong type",
    34: "parameter out of range",
    35: "syntax error",
    36: "user data without AT+CMGS",
    37: "timeout waiting for the user data of AT+CMGS",
    38: "protocol identifier already registered",
    39: "SDS-TL registration table full",
    40: "not supported in DMO",
    41: "MT in transmit inhibit mode",
    42: "MT busy with a signalling activity",
    43: "not supported in V+D",
    44: "unknown parameters handled",
}
"""``+CME ERROR: <n>`` of the PEI (EN 300 392-5 error table; 6-9, 19, 28, 29, 45 reserved)
[src: ``TetraLib.h`` getPeiError]."""

E_NOT_ALLOWED = 3
E_NOT_SUPPORTED = 4
E_DIAL_TOO_LONG = 26
E_DIAL_INVALID = 27
E_OUT_OF_SERVICE = 30
E_DATA_DECODING = 32
E_WRONG_TYPE = 33
E_OUT_OF_RANGE = 34
E_SYNTAX = 35
E_DATA_WITHOUT_CMGS = 36
E_DATA_TIMEOUT = 37


def extended_tsi(mcc: int, mnc: int, ssi: int) -> str:
    """The 17-digit extended TSI: MCC (4 digits), MNC (5 digits), SSI (8 digits) [src]."""
    return f"{mcc:04d}{mnc:05d}{ssi:08d}"


def ssi_of(identity: str) -> int:
    """The SSI of an SSI or an extended TSI (its last 8 digits); ValueError if neither."""
    text = identity.strip()
    if not text.isdigit() or len(text) > 17:
        raise ValueError(f"not a TETRA identity: {identity!r}")
    return int(text[-8:]) if len(text) > 8 else int(text)


SSI_MAX = 0xFFFFFF
"""SSIs are 24 bits (EN 300 392-1) [mem]."""
