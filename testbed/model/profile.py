"""The test profile: what to do (streams, impairments, a timeline) and what to judge (KPIs).

Profiles refer to nodes, links, devices and capture points of a lab by name or by role, so
one profile runs unchanged on the emulated lab and on real labs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from testbed.model.common import Name, StrictModel

StreamKind = Literal["probe"]

METRICS = (
    "loss_pct",
    "received",
    "sent",
    "jitter_ms",
    "reordered",
    "duplicates",
    "max_gap_ms",
    "owd_ms.min",
    "owd_ms.p50",
    "owd_ms.p95",
    "owd_ms.p99",
    "owd_ms.max",
    "owd_ms.mean",
)
"""Stream metrics a KPI may judge: keys of a ``streams`` entry of summary.json."""

Metric = Literal[
    "loss_pct",
    "received",
    "sent",
    "jitter_ms",
    "reordered",
    "duplicates",
    "max_gap_ms",
    "owd_ms.min",
    "owd_ms.p50",
    "owd_ms.p95",
    "owd_ms.p99",
    "owd_ms.max",
    "owd_ms.mean",
]


class Stream(StrictModel):
    """A traffic stream from one node to another.

    ``probe`` streams are constant-rate UDP packets that carry stream id, sequence number
    and transmit time, so that loss, delay, jitter, reordering and gaps are exact.
    """

    id: Name
    kind: StreamKind = "probe"
    from_node: Name = Field(alias="from")
    to_node: Name = Field(alias="to")
    rate_pps: float = Field(gt=0, le=100_000)
    payload_bytes: int = Field(default=64, ge=20, le=1472)
    dscp: int = Field(default=0, ge=0, le=63)
    port: int | None = Field(
        default=None, ge=1024, le=65535, description="UDP port; auto if unset."
    )
    start_s: float = Field(default=0.0, ge=0)
    stop_s: float | None = Field(default=None, gt=0, description="Default: the profile duration.")

    model_config = StrictModel.model_config | {"populate_by_name": True}


class Impairment(StrictModel):
    """Network conditions applied to a link by the device that impairs it.

    ``forward`` is from the link's first endpoint to its second, ``reverse`` the other
    way. Semantics follow netem where netem has the same knob: jitter is added to the
    delay per packet (so it may reorder), ``reorder_pct`` sends that share of packets
    without the delay, ``rate_kbps`` serialises packets through a queue of
    ``queue_limit_packets`` (tail drop beyond it).
    """

    link: Name
    direction: Literal["both", "forward", "reverse"] = "both"
    delay_ms: float = Field(default=0.0, ge=0, le=10_000)
    jitter_ms: float = Field(default=0.0, ge=0, le=10_000)
    jitter_distribution: Literal["uniform", "normal"] = "uniform"
    loss_pct: float = Field(default=0.0, ge=0, le=100)
    loss_model: Literal["random", "gilbert_elliott"] = "random"
    ge_p_pct: float = Field(default=0.0, ge=0, le=100, description="Good->bad per packet.")
    ge_r_pct: float = Field(default=100.0, ge=0, le=100, description="Bad->good per packet.")
    ge_bad_loss_pct: float = Field(default=100.0, ge=0, le=100, description="Loss in bad (1-h).")
    ge_good_loss_pct: float = Field(default=0.0, ge=0, le=100, description="Loss in good (1-k).")
    duplicate_pct: float = Field(default=0.0, ge=0, le=100)
    reorder_pct: float = Field(default=0.0, ge=0, le=100)
    rate_kbps: float | None = Field(default=None, gt=0)
    queue_limit_packets: int = Field(default=1000, ge=1, le=1_000_000)
    outage: bool = False

    def engine_params(self) -> dict[str, Any]:
        """The parameters an impairment driver applies (everything but where)."""
        return self.model_dump(exclude={"link", "direction"})


class TimelineEvent(StrictModel):
    """One action on a device at a time relative to the start of the measurement."""

    at_s: float = Field(ge=0)
    device: Name
    action: Name
    args: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=3600, description="Deadline of the action.")


class Kpi(StrictModel):
    """A limit on a stream metric. ``max`` and/or ``min`` bound the value (inclusive)."""

    name: str = Field(min_length=1, max_length=120)
    stream: Name
    metric: Metric
    max: float | None = None
    min: float | None = None
    reference: str = Field(default="", description="Where the definition and limit come from.")

    @model_validator(mode="after")
    def _has_limit(self) -> Kpi:
        if self.max is None and self.min is None:
            raise ValueError("a KPI needs a limit: max, min or both")
        return self


SweepParameter = Literal[
    "delay_ms",
    "jitter_ms",
    "loss_pct",
    "duplicate_pct",
    "reorder_pct",
    "rate_kbps",
    "ge_p_pct",
    "ge_r_pct",
]


class SweepAxis(StrictModel):
    """One swept impairment parameter; a sweep runs every combination of its axes."""

    impairment: int = Field(ge=0, description="Index into the profile's impairments.")
    parameter: SweepParameter
    values: tuple[float, ...] = Field(min_length=1, max_length=1000)


class Profile(StrictModel):
    """A test profile (``profiles/*.yaml``)."""

    schema_version: Literal[1] = 1
    name: Name
    description: str = ""
    duration_s: float = Field(gt=0, le=86_400)
    repetitions: int = Field(default=1, ge=1, le=10_000)
    streams: tuple[Stream, ...] = ()
    impairments: tuple[Impairment, ...] = ()
    timeline: tuple[TimelineEvent, ...] = ()
    captures: tuple[Name, ...] = Field(default=(), description="Capture point names of the lab.")
    kpis: tuple[Kpi, ...] = ()
    sweep: tuple[SweepAxis, ...] = Field(
        default=(), description="Run every combination of these impairment values."
    )
