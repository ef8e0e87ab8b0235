"""The test profile: what to do (streams, impairments, a timeline) and what to judge (KPIs).

Profiles refer to nodes, links, devices and capture points of a lab by name or by role, so
one profile runs unchanged on the emulated lab and on real labs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from drivers.traffic.amrwb import udp_payload_bytes
from testbed.model.common import Name, StrictModel

StreamKind = Literal["probe", "rtp_voice", "bulk"]
BULK_PAYLOAD_BYTES = 1200
"""UDP payload of a bulk stream that does not set ``payload_bytes``."""

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
    ``rtp_voice`` streams are RTP (RFC 3550) with AMR-WB frames (RFC 4867, octet-aligned):
    one packet per 20 ms frame in talk spurts, SID frames every 160 ms in silences (DTX), RTP
    clock 16 kHz; the sender logs transmit times, so the same metrics hold. ``bulk`` streams are
    best-effort background load: probe packets at a constant bit rate.
    """

    id: Name
    kind: StreamKind = "probe"
    from_node: Name = Field(alias="from")
    to_node: Name = Field(alias="to")
    rate_pps: float | None = Field(
        default=None, gt=0, le=100_000, description="probe: packets/s (required); others: unset."
    )
    payload_bytes: int = Field(
        default=64,
        ge=20,
        le=1472,
        description="UDP payload; bulk: 1200 when unset; rtp_voice: set by codec_mode.",
    )
    dscp: int = Field(default=0, ge=0, le=63)
    port: int | None = Field(
        default=None, ge=1024, le=65535, description="UDP port; auto if unset."
    )
    start_s: float = Field(default=0.0, ge=0)
    stop_s: float | None = Field(default=None, gt=0, description="Default: the profile duration.")
    rate_kbps: float | None = Field(
        default=None,
        gt=0,
        le=10_000_000,
        description="bulk: UDP payload bit rate in kbit/s (required); others: unset.",
    )
    codec_mode: int = Field(
        default=8, ge=0, le=8, description="rtp_voice: AMR-WB mode, 0 = 6.60 ... 8 = 23.85 kbit/s."
    )
    payload_type: int = Field(
        default=96, ge=96, le=127, description="rtp_voice: dynamic RTP payload type."
    )
    talk_on_s: float | None = Field(
        default=1.004,
        gt=0,
        le=3600,
        description="rtp_voice: mean talk spurt (exponential; ITU-T P.59); null = continuous.",
    )
    talk_off_s: float | None = Field(
        default=1.587,
        gt=0,
        le=3600,
        description="rtp_voice: mean silence (exponential; ITU-T P.59); null = continuous.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="rtp_voice: seed of SSRC, sequence/timestamp start and talk spurts; "
        "default: derived from the id (reruns are identical).",
    )

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @property
    def udp_payload_bytes(self) -> int:
        """UDP payload of one packet (rtp_voice: a speech packet; SID packets are smaller)."""
        if self.kind == "rtp_voice":
            return udp_payload_bytes(self.codec_mode)
        if self.kind == "bulk" and "payload_bytes" not in self.model_fields_set:
            return BULK_PAYLOAD_BYTES
        return self.payload_bytes

    @property
    def packet_rate_pps(self) -> float:
        """Packets per second: given (probe), 50 in talk spurts (rtp_voice), or from the bit
        rate (bulk)."""
        if self.kind == "rtp_voice":
            return 50.0
        if self.kind == "bulk":
            assert self.rate_kbps is not None  # checked by the validator
            return self.rate_kbps * 1000.0 / (8 * self.udp_payload_bytes)
        assert self.rate_pps is not None  # checked by the validator
        return self.rate_pps

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> Stream:
        """One located problem per field that the kind requires or does not use."""
        problems: list[InitErrorDetails] = []
        given = self.model_fields_set
        kind = self.kind

        def missing(field: str) -> None:
            problems.append({"type": "missing", "loc": (field,), "input": None})

        def wrong(field: str, message: str) -> None:
            value = getattr(self, field)
            error = PydanticCustomError("stream_kind", message)
            problems.append({"type": error, "loc": (field,), "input": value})

        if kind == "probe":
            if self.rate_pps is None:
                missing("rate_pps")
        elif "rate_pps" in given:
            wrong(
                "rate_pps",
                "a bulk stream is paced by rate_kbps; remove rate_pps"
                if kind == "bulk"
                else "an rtp_voice stream sends one packet per 20 ms frame; remove rate_pps",
            )
        if kind == "bulk":
            if self.rate_kbps is None:
                missing("rate_kbps")
            elif self.packet_rate_pps > 100_000:
                wrong(
                    "rate_kbps",
                    f"{self.rate_kbps:g} kbit/s in {self.udp_payload_bytes}-byte packets is "
                    f"{self.packet_rate_pps:.0f} packets/s, above the 100000/s a sender paces: "
                    "lower the rate or raise payload_bytes",
                )
        elif "rate_kbps" in given:
            wrong("rate_kbps", f"rate_kbps is for bulk streams, not {kind}; remove it")
        if kind == "rtp_voice":
            if "payload_bytes" in given:
                wrong("payload_bytes", "rtp_voice packet sizes follow codec_mode; remove it")
            on, off = self.talk_on_s, self.talk_off_s
            if on is None and off is not None and "talk_off_s" in given:
                wrong("talk_off_s", "talk_on_s is null (continuous speech): remove talk_off_s")
            if off is None and on is not None and "talk_on_s" in given:
                wrong("talk_on_s", "talk_off_s is null (continuous speech): remove talk_on_s")
        else:
            for field in ("codec_mode", "payload_type", "talk_on_s", "talk_off_s", "seed"):
                if field in given:
                    wrong(field, f"{field} is for rtp_voice streams, not {kind}; remove it")
        if problems:
            raise ValidationError.from_exception_data("Stream", problems)
        return self


class Impairment(StrictModel):
    """Network conditions applied to a link by the device that impairs it.

    ``forward`` is from the link's first endpoint to its second, ``reverse`` the other
    way. Semantics follow netem where netem has the same knob: jitter is added to the
    delay per packet (so it may reorder), ``reorder_pct`` sends that share of packets
    without the delay, ``rate_kbps`` serialises packets through a queue of
    ``queue_limit_packets`` (tail drop beyond it), in arrival order or, with
    ``scheduler: priority``, by DSCP priority class.
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
    scheduler: Literal["fifo", "priority"] = Field(
        default="fifo",
        description="Order of the rate_kbps queue. fifo: arrival order. priority: strict "
        "priority by DSCP, highest first: signalling (CS5, CS6, CS7; QCI 69), voice (EF; QCI 65), "
        "data (AF classes, CS2-CS4; QCI 70), default (DF and the rest; QCI 9), one queue each; "
        "a full queue_limit_packets pushes out the lowest class first. Needs rate_kbps.",
    )
    queue_limit_packets: int = Field(default=1000, ge=1, le=1_000_000)
    outage: bool = False

    @model_validator(mode="after")
    def _priority_needs_rate(self) -> Impairment:
        if self.scheduler == "priority" and self.rate_kbps is None:
            error = PydanticCustomError(
                "scheduler_rate",
                "scheduler: priority orders the rate_kbps queue; set rate_kbps (or use fifo)",
            )
            details: InitErrorDetails = {"type": error, "loc": ("scheduler",), "input": "priority"}
            raise ValidationError.from_exception_data("Impairment", [details])
        return self

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
    fault: bool = Field(
        default=False,
        description="A fault (a core kill, a link cut, a cell switched off): summary.json "
        "failover measures every stream's interruption and every radio's detection and "
        "re-attach from this event's actual wall-clock time; recoveries stay unmarked.",
    )


FailoverFigure = Literal["interruption_ms", "lost_packets", "detection_ms", "reattach_ms"]
"""Failover figures (summary.json ``failover``): per stream, or per radio device."""
FAILOVER_STREAM_FIGURES = ("interruption_ms", "lost_packets")
Statistic = Literal["max", "p50", "mean", "p95", "min"]

McpttKpi = Literal["kpi1", "kpi2", "kpi3", "kpi4", "preemption_revoke", "preemption_grant"]
"""MCPTT KPIs measured from the captures (docs/mcptt.md): TS 22.179 KPI 1-4 and pre-emption."""
MCPTT_KPIS_WITHOUT_LIMIT = ("preemption_revoke", "preemption_grant")
"""TS 22.179 sets no limit on these: a profile that judges them gives its own."""


class Kpi(StrictModel):
    """A limit on a stream metric (``stream`` and ``metric``), on an MCPTT KPI measured from
    the captures (``mcptt``), on a number a device counted (``device`` and ``counter``, e.g.
    a TETRA terminal's access times or pre-emptions, a modem's outage) or on a failover figure
    over every fault of every repetition (``failover`` with ``stream`` or a radio ``device``,
    reduced by ``statistic``). ``max`` and/or ``min`` bound the value (inclusive); an MCPTT KPI
    of TS 22.179 (kpi1-kpi4) without them is judged against the TS 22.179 limit."""

    name: str = Field(min_length=1, max_length=120)
    stream: Name | None = None
    metric: Metric | None = None
    mcptt: McpttKpi | None = Field(
        default=None, description="An MCPTT KPI (95th percentile) instead of a stream metric."
    )
    device: Name | None = Field(
        default=None,
        description="Or a device's counter (summary.json devices.<device>): with `counter`.",
    )
    counter: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$",
        description="Dotted path of a number in the device's counters, e.g. access_ms_max "
        "(TETRA) or outages.0.duration_s (modem).",
    )
    unit: str = Field(default="", max_length=20, description="Unit of a device counter.")
    failover: FailoverFigure | None = Field(
        default=None,
        description="A failover figure at the timeline's fault events: interruption_ms and "
        "lost_packets of a `stream`, detection_ms and reattach_ms of a radio `device`.",
    )
    statistic: Statistic = Field(
        default="max",
        description="failover: the statistic over all samples (every fault, every repetition).",
    )
    max: float | None = None
    min: float | None = None
    reference: str = Field(default="", description="Where the definition and limit come from.")

    @model_validator(mode="after")
    def _has_subject_and_limit(self) -> Kpi:
        if "statistic" in self.model_fields_set and self.failover is None:
            raise ValueError("statistic is for failover KPIs: remove it")
        if self.failover is not None:
            return self._failover_subject()
        if (self.device is None) != (self.counter is None):
            raise ValueError("a device KPI names both the device and its counter")
        if self.device is not None:
            if self.stream is not None or self.metric is not None or self.mcptt is not None:
                raise ValueError("a device KPI has no stream, metric or mcptt: remove them")
            if self.max is None and self.min is None:
                raise ValueError("a KPI needs a limit: max, min or both")
            return self
        if self.mcptt is not None:
            if self.stream is not None or self.metric is not None:
                raise ValueError("an mcptt KPI has no stream or metric: remove them")
            if self.mcptt in MCPTT_KPIS_WITHOUT_LIMIT and self.max is None and self.min is None:
                raise ValueError(f"{self.mcptt} has no TS 22.179 limit: give max or min")
            return self
        if self.stream is None or self.metric is None:
            raise ValueError("a KPI judges a stream metric (stream and metric) or an mcptt KPI")
        if self.max is None and self.min is None:
            raise ValueError("a KPI needs a limit: max, min or both")
        return self

    def _failover_subject(self) -> Kpi:
        figure = self.failover
        others = [f for f in ("metric", "mcptt", "counter") if getattr(self, f) is not None]
        if others:
            raise ValueError(f"a failover KPI has no {' or '.join(others)}: remove it")
        if figure in FAILOVER_STREAM_FIGURES:
            if self.stream is None or self.device is not None:
                raise ValueError(
                    f"failover {figure} is measured on a stream: give stream, not device"
                )
        elif self.device is None or self.stream is not None:
            raise ValueError(f"failover {figure} is measured on a radio: give device, not stream")
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
    devices: tuple[Name, ...] = Field(
        default=(),
        description="Lab devices (names or roles) the run opens although its timeline does not "
        "drive them: radios whose registration and signal it records, instruments it keeps in "
        "their safe state, emulators other devices depend on.",
    )
    kpis: tuple[Kpi, ...] = ()
    sweep: tuple[SweepAxis, ...] = Field(
        default=(), description="Run every combination of these impairment values."
    )
