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

__all__ = ["MAX_DELAY_MS", "MAX_QUEUE_LIMIT", "ImpairmentParams"]

MAX_DELAY_MS = 60_000.0
"""Longest delay or jitter accepted: beyond a minute it is a typo, not a link."""

MAX_QUEUE_LIMIT = 1_000_000
"""Most packets one direction may hold (~1.5 GB of full-size frames)."""

JitterDistribution = Literal["uniform", "normal"]
LossModel = Literal["random", "gilbert_elliott"]

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
    FIFO serialiser in front of the delay, so each frame waits for those ahead of it."""
    queue_limit_packets: int = 1000
    """Tail-drop limit of the rate queue and of everything the direction holds (netem's
    ``limit``), so overload drops packets instead of growing the delay without bound."""
    outage: bool = False
    """Drop everything (a cut cable, a radio out of coverage)."""

    _DISTRIBUTIONS: ClassVar[tuple[str, ...]] = ("uniform", "normal")
    _LOSS_MODELS: ClassVar[tuple[str, ...]] = ("random", "gilbert_elliott")

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
