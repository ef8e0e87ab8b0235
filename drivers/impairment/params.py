"""What the impairment relay does to one direction of a link, as a validated, immutable value that
travels as JSON over the relay's control socket. The semantics follow netem where netem has an
answer (loss before duplication, a duplicate impaired like any other packet, reordered packets
skipping the delay, ``limit`` bounding everything held, Gilbert-Elliott with p, r, 1-h, 1-k) so
that profiles written for netem labs mean the same here; where the relay differs, the field's
docstring says so. Default values are a pass-through: nothing is delayed, dropped or limited.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

__all__ = [
    "ARP_CLASS",
    "DEFAULT_CLASS",
    "DSCP_CLASS",
    "MAX_DELAY_MS",
    "MAX_QUEUE_LIMIT",
    "PRIORITY_CLASSES",
    "ImpairmentParams",
    "Scheduler",
]

MAX_DELAY_MS = 60_000.0
"""Longest delay or jitter accepted: beyond a minute it is a typo, not a link."""

MAX_QUEUE_LIMIT = 1_000_000
"""Most packets one direction may hold (~1.5 GB of full-size frames)."""

JitterDistribution = Literal["uniform", "normal"]
LossModel = Literal["random", "gilbert_elliott"]
Scheduler = Literal["fifo", "priority"]

# --------------------------------------------------------------------------------------------
# Priority classes of the ``priority`` scheduler
# --------------------------------------------------------------------------------------------

PRIORITY_CLASSES = ("signalling", "voice", "data", "default")
"""Strict-priority classes, highest first; a class is its index here. They follow the QCI
scheduling priorities of TS 23.203 Table 6.1.7 (docs: shared spec mission-critical.md 5.1):
0 = MC signalling, QCI 69 (priority 0.5); 1 = MCPTT voice, QCI 65 (0.7); 2 = MC data, QCI 70
(5.5); 3 = default bearer, QCI 9 (9)."""

DEFAULT_CLASS = 3
"""Class of DF, of DSCPs the policy does not name and of non-IP frames other than ARP."""

ARP_CLASS = 0
"""ARP goes with signalling: a few tiny frames, and a link whose ARP a data flood starved would
lose every class once the neighbour entries expired. IPv6 neighbour discovery (ICMPv6 types
133-137 right after the fixed header) is classed the same way."""

_DSCP_POLICY: dict[int, tuple[int, str]] = {
    # DSCP: (class, name). No 3GPP-mandated mapping exists: this is OPERATOR POLICY [mem],
    # after RFC 4594 and the expired draft-henry-tsvwg-diffserv-to-qci, as in the shared spec
    # mission-critical.md 5.3 (DSCP table); check it against the lab's own policy.
    56: (0, "CS7 network control"),
    48: (0, "CS6 network control"),
    40: (0, "CS5 MC signalling / IMS SIP, QCI 69 and 5"),
    46: (1, "EF MCPTT voice, QCI 65 (and 1, 66)"),
    44: (1, "VOICE-ADMIT (RFC 5865) voice"),
    # Class 2, MC data: AF21 is MCData (QCI 70); the other AF classes and CS2-CS4 are marked
    # traffic that is not best effort either. MCVideo (AF41, QCI 67, priority 1.5) ranks above
    # QCI 70 in 5.1, but four strict classes have no slot between voice and data: in the voice
    # class a video burst would delay MCPTT voice, so it shares the data class instead.
    10: (2, "AF11 bulk"),
    12: (2, "AF12"),
    14: (2, "AF13"),
    18: (2, "AF21 MCData, QCI 70"),
    20: (2, "AF22"),
    22: (2, "AF23"),
    26: (2, "AF31 buffered streaming"),
    28: (2, "AF32"),
    30: (2, "AF33"),
    34: (2, "AF41 MCVideo, QCI 67"),
    36: (2, "AF42"),
    38: (2, "AF43"),
    16: (2, "CS2 OAM"),
    24: (2, "CS3"),
    32: (2, "CS4 real-time interactive"),
    # Everything else is class 3: DF (0, QCI 9), CS1 (8, low-priority data, RFC 4594), LE
    # (1, RFC 8622) and unassigned code points.
}

DSCP_CLASS: tuple[int, ...] = tuple(
    _DSCP_POLICY[dscp][0] if dscp in _DSCP_POLICY else DEFAULT_CLASS for dscp in range(64)
)
"""Priority class of each DSCP (index 0-63): the one place the DSCP -> class policy lives."""

_PERCENT_FIELDS = (
    "loss_pct",
    "ge_p_pct",
    "ge_r_pct",
    "ge_bad_loss_pct",
    "ge_good_loss_pct",
    "duplicate_pct",
    "reorder_pct",
)


def _number(name: str, value: object) -> float:
    # bool is an int subclass; JSON true must not become a 1 % loss.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


@dataclass(frozen=True)
class ImpairmentParams:
    """Impairments of one direction; every field is validated on construction."""

    delay_ms: float = 0.0
    """Added one-way delay."""
    jitter_ms: float = 0.0
    """Spread of the delay: ``uniform`` draws delay + U(-jitter, +jitter), ``normal`` draws
    N(delay, jitter); both are clamped at 0. Jittered packets may overtake each other."""
    jitter_distribution: JitterDistribution = "uniform"
    loss_pct: float = 0.0
    """Independent (Bernoulli) loss; only with ``loss_model="random"``."""
    loss_model: LossModel = "random"
    ge_p_pct: float = 0.0
    """Gilbert-Elliott: probability per packet of going from the good to the bad state."""
    ge_r_pct: float = 100.0
    """Gilbert-Elliott: probability per packet of going from the bad to the good state."""
    ge_bad_loss_pct: float = 100.0
    """Gilbert-Elliott: loss probability in the bad state (netem's 1-h)."""
    ge_good_loss_pct: float = 0.0
    """Gilbert-Elliott: loss probability in the good state (netem's 1-k)."""
    duplicate_pct: float = 0.0
    """Share of packets sent twice; the copy gets its own delay, rate slot and queue check."""
    reorder_pct: float = 0.0
    """Share of packets sent without the delay, so they overtake delayed ones (netem's
    ``reorder``); like tc, this needs a delay or jitter to reorder against."""
    rate_kbps: float | None = None
    """Bottleneck rate (1 kbps = 1000 bit/s of Ethernet frame bytes, no preamble or FCS): a
    serialiser in front of the delay, so each frame waits for those ahead of it (which frames
    are ahead: ``scheduler``)."""
    scheduler: Scheduler = "fifo"
    """Queueing discipline of the rate-limited serialiser. ``fifo``: one tail-drop queue in
    arrival order. ``priority``: strict priority between the classes of
    :data:`PRIORITY_CLASSES`, chosen by the IPv4 DSCP or IPv6 traffic class through
    :data:`DSCP_CLASS` (ARP: :data:`ARP_CLASS`; other non-IP frames: default). Each class has a
    FIFO queue of its own; whenever the serialiser is free it takes the oldest frame of the
    highest class that has one, so a flood in a lower class never delays a higher class by
    more than the one frame being serialised (non-preemptive: a started frame finishes).
    ``queue_limit_packets`` still bounds all the direction holds; when it is reached, a frame
    pushes out the newest waiting frame of the lowest class below its own, and is tail-dropped
    only when no lower class has a frame waiting, so a lower class filling the limit never
    drops a higher one (frames already serialised and in the delay line are never pushed
    out). Needs ``rate_kbps``; the delay, jitter and reorder apply after the serialiser, as
    with ``fifo``. The order between classes is decided on the frames' kernel RX times, to
    within the relay's read latency (tens of µs)."""
    queue_limit_packets: int = 1000
    """Limit of the rate queue and of everything the direction holds (netem's ``limit``), so
    overload drops packets instead of growing the delay without bound: tail drop with
    ``scheduler="fifo"``, push-out of the lowest class with ``"priority"``."""
    outage: bool = False
    """Drop everything (a cut cable, a radio out of coverage)."""

    _DISTRIBUTIONS: ClassVar[tuple[str, ...]] = ("uniform", "normal")
    _LOSS_MODELS: ClassVar[tuple[str, ...]] = ("random", "gilbert_elliott")
    _SCHEDULERS: ClassVar[tuple[str, ...]] = ("fifo", "priority")

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms"):
            value = _number(name, getattr(self, name))
            if not 0.0 <= value <= MAX_DELAY_MS:
                raise ValueError(f"{name} must be 0..{MAX_DELAY_MS:g} ms, got {value:g}")
            object.__setattr__(self, name, value)
        for name in _PERCENT_FIELDS:
            value = _number(name, getattr(self, name))
            if not 0.0 <= value <= 100.0:
                raise ValueError(f"{name} must be 0..100 %, got {value:g}")
            object.__setattr__(self, name, value)
        if self.jitter_distribution not in self._DISTRIBUTIONS:
            raise ValueError(
                f"jitter_distribution must be one of {self._DISTRIBUTIONS}, "
                f"got {self.jitter_distribution!r}"
            )
        if self.loss_model not in self._LOSS_MODELS:
            raise ValueError(
                f"loss_model must be one of {self._LOSS_MODELS}, got {self.loss_model!r}"
            )
        if self.loss_model == "gilbert_elliott" and self.loss_pct != 0.0:
            raise ValueError(
                "loss_pct is the random model's loss; with loss_model='gilbert_elliott' set "
                "it to 0 and use ge_p_pct, ge_r_pct, ge_bad_loss_pct and ge_good_loss_pct"
            )
        if self.reorder_pct > 0.0 and self.delay_ms == 0.0 and self.jitter_ms == 0.0:
            raise ValueError("reorder_pct needs a delay_ms or jitter_ms to reorder against")
        if self.rate_kbps is not None:
            rate = _number("rate_kbps", self.rate_kbps)
            if rate <= 0.0:
                raise ValueError(f"rate_kbps must be positive (or null for no limit), got {rate:g}")
            object.__setattr__(self, "rate_kbps", rate)
        if self.scheduler not in self._SCHEDULERS:
            raise ValueError(f"scheduler must be one of {self._SCHEDULERS}, got {self.scheduler!r}")
        if self.scheduler == "priority" and self.rate_kbps is None:
            raise ValueError(
                "scheduler='priority' orders frames in the rate-limited serialiser: it needs "
                "rate_kbps (without a bottleneck nothing waits and there is nothing to order)"
            )
        raw: object = self.queue_limit_packets
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)  # JSON writers may say 20.0
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"queue_limit_packets must be an integer, got {raw!r}")
        limit = raw
        if not 1 <= limit <= MAX_QUEUE_LIMIT:
            raise ValueError(f"queue_limit_packets must be 1..{MAX_QUEUE_LIMIT}, got {limit}")
        object.__setattr__(self, "queue_limit_packets", limit)
        if not isinstance(self.outage, bool):
            raise ValueError(f"outage must be true or false, got {self.outage!r}")

    @property
    def keeps_order(self) -> bool:
        """Whether packets of this direction must leave in arrival order (no jitter, no
        reorder), so a lowered delay cannot make new packets overtake queued ones."""
        return self.jitter_ms == 0.0 and self.reorder_pct == 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, every field included."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImpairmentParams:
        """Build from JSON values; missing fields take their defaults, unknown ones are an
        error (a misspelt ``dealy_ms`` must not silently become a pass-through)."""
        if not isinstance(data, dict):
            raise ValueError(f"impairment parameters must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ValueError(
                f"unknown impairment parameter(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**data)
