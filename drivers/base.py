"""The small interfaces every driver implements, and what the controller hands them.

A driver is a class named in the lab file by ``kind`` and ``driver``. It receives its
settings (plain data from the lab file) and a :class:`DeviceContext` through which it
reaches the run: the run directory, the emulated network, event emission and process
tracking (so that ``testbed cleanup`` can find what a killed run left behind).
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from drivers.errors import DriverError

EmitFn = Callable[[str, Mapping[str, Any]], None]
"""``emit(event_type, fields)``: records a typed event in the run's event log."""

FaultFn = Callable[[str], None]
"""``fault(message)``: the device failed on its own (a connection lost between actions). The
run ends with an ERROR verdict naming the device; may be called from any thread."""


def _unreported(message: str) -> None:
    """Outside a run (tests, tools) nobody collects faults; the driver's own events still say."""


class NodeAccess(Protocol):
    """How drivers reach the nodes of the lab (namespaces in the emulated lab)."""

    def node_command(self, node: str, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` on ``node``."""
        ...

    def node_address(self, node: str) -> str:
        """The node's primary IPv4 address, reachable from every other node."""
        ...

    def link_command(self, link: str, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` in the wire of an impaired link (ports a and b)."""
        ...


class ProcessTracker(Protocol):
    def track(self, proc: subprocess.Popen[bytes], role: str) -> None:
        """Record a started process in the run's state file (for ``testbed cleanup``)."""
        ...


@dataclass
class DeviceContext:
    run_dir: Path
    name_prefix: str
    emit: EmitFn
    processes: ProcessTracker
    nodes: NodeAccess | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    fault: FaultFn = _unreported


class Device(ABC):
    """Base of all drivers.

    ``actions`` names what a profile's timeline may ask of the device; the planner checks
    timeline events against it before anything is touched.
    """

    kind: ClassVar[str] = ""
    actions: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        self.name = name
        self.settings = dict(settings)
        self.context = context

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect to the device. Raise :class:`DriverError` if it cannot be reached."""

    def perform(self, action: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """Carry out a timeline action; returns details for the event log."""
        raise DriverError(self.name, f"action {action!r} is not supported by this driver")

    def counters(self) -> Mapping[str, Any]:
        """Device counters stored in the run record at the end of the run."""
        return {}

    @abstractmethod
    def safe_state(self) -> None:
        """Put the device in its safe state. Must never raise; runs on every exit path."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection. Must never raise."""


class Network(Device, NodeAccess):
    """The lab's network: built by the controller (emulated) or already there (real)."""

    kind = "network"

    @abstractmethod
    def build(self, topology: Mapping[str, Any]) -> None:
        """Bring the network up from the planned topology (nodes, segments, routes)."""


DIRECTIONS = ("forward", "reverse", "both")
"""Impairment directions: ``forward`` runs from a link's first endpoint to its second."""


class Impairment(Device):
    """Something in the path of links that delays, drops, duplicates or limits packets."""

    kind = "impairment"
    actions = frozenset({"set", "clear", "outage_start", "outage_end"})

    @abstractmethod
    def attach(self, links: Sequence[str]) -> None:
        """Take charge of these links (the lab says which links this device impairs)."""

    @abstractmethod
    def apply(self, link: str, direction: str, params: Mapping[str, Any]) -> None:
        """Set the conditions of one direction (or both) of a link."""

    @abstractmethod
    def clear(self, link: str | None = None) -> None:
        """Back to no impairment, on one link or all of them."""

    def perform(self, action: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """Timeline actions: ``set`` (link, direction, parameters), ``clear`` (link),
        ``outage_start``/``outage_end`` (link, direction)."""
        values = dict(args)
        link = values.pop("link", None)
        direction = str(values.pop("direction", "both"))
        if direction not in DIRECTIONS:
            raise DriverError(self.name, f"{action}: direction must be one of {DIRECTIONS}")
        if action == "clear":
            self.clear(None if link is None else str(link))
            return {"link": link}
        if not isinstance(link, str):
            raise DriverError(self.name, f"{action}: give the link")
        if action == "set":
            self.apply(link, direction, values)
        elif action in ("outage_start", "outage_end"):
            self.set_outage(link, direction, action == "outage_start")
        else:
            return super().perform(action, args)
        return {"link": link, "direction": direction, **values}

    @abstractmethod
    def set_outage(self, link: str, direction: str, on: bool) -> None:
        """Drop everything (on) or return to the configured conditions (off)."""


@dataclass(frozen=True)
class StreamSpec:
    """A traffic stream resolved by the planner: endpoints, addresses and rates.

    ``kind`` is ``probe``, ``rtp_voice`` or ``bulk``. ``rate_pps`` and ``payload_bytes`` are
    what goes on the wire (derived by the planner for rtp_voice and bulk); the fields after
    ``stop_s`` only matter to some kinds and default to "not used": ``rate_kbps`` (bulk: UDP
    payload bit rate), ``codec_mode``, ``payload_type``, ``talk_on_s``/``talk_off_s`` (None =
    continuous speech) and ``seed`` (None = derived from ``id``) for rtp_voice.
    """

    id: str
    wire_id: int
    kind: str
    from_node: str
    to_node: str
    dst_address: str
    port: int
    rate_pps: float
    payload_bytes: int
    dscp: int
    start_s: float
    stop_s: float
    rate_kbps: float | None = None
    codec_mode: int = 8
    payload_type: int = 96
    talk_on_s: float | None = None
    talk_off_s: float | None = None
    seed: int | None = None


@dataclass
class StreamResult:
    """What arrived of a stream, in arrival order, plus the sender's own count."""

    id: str
    sent: int
    seq: Any  # numpy uint32 array
    tx_ns: Any  # numpy int64 array
    rx_ns: Any  # numpy int64 array
    send_errors: int = 0
    notes: list[str] = field(default_factory=list)
    sent_window_ns: tuple[int, int] | None = None
    """The sender's first and last transmit times, so that gaps at the ends count too."""


class TrafficSource(Device):
    kind = "traffic"

    @abstractmethod
    def start(self, streams: Sequence[StreamSpec], start_at_ns: int, label: str) -> None:
        """Start every stream; sending begins at ``start_at_ns`` (CLOCK_REALTIME)."""

    @abstractmethod
    def stop(self) -> list[StreamResult]:
        """Stop the streams started by :meth:`start` and return what was received."""


@dataclass(frozen=True)
class CaptureSpec:
    name: str
    node: str
    ifname: str


@dataclass
class CaptureResult:
    name: str
    path: Path
    packets: int | None
    dropped: int | None
    notes: list[str] = field(default_factory=list)


class Capture(Device):
    kind = "capture"

    @abstractmethod
    def start(self, points: Sequence[CaptureSpec], out_dir: Path) -> None:
        """Start capturing at every point into ``out_dir``."""

    @abstractmethod
    def stop(self) -> list[CaptureResult]:
        """Stop capturing; report per point what was written and what was dropped."""


class Radio(Device):
    """A radio terminal driven over its control port: an LTE/5G modem (3GPP TS 27.007 AT
    commands) or a TETRA terminal (ETSI EN 300 392-5 PEI). Safe state: transmit released, and
    left registered or switched off as the lab file says."""

    kind = "radio"


class Attenuator(Device):
    """A programmable RF attenuator; channels are numbered as the instrument numbers them."""

    kind = "attenuator"
    actions = frozenset({"set", "ramp"})

    @abstractmethod
    def set_attenuation(self, channel: int, atten_db: float) -> None:
        """Set one channel; raises :class:`DriverError` if the instrument refused it."""

    @abstractmethod
    def attenuation(self, channel: int) -> float:
        """What the instrument reports for one channel, in dB."""


class PowerSupply(Device):
    """A programmable DC power supply that powers a radio under test."""

    kind = "power_supply"
    actions = frozenset({"output", "set"})

    @abstractmethod
    def set_output(self, channel: int, on: bool) -> None:
        """Switch one output on or off."""

    @abstractmethod
    def measure(self, channel: int) -> Mapping[str, float]:
        """Read back ``voltage_v`` and ``current_a`` of one output."""


class Core(Device):
    """An LTE/5G core (or a TETRA switching function): subscribers, attached UEs and their
    bearers, and the lifecycle of its components, which is how faults are injected.

    Timeline arguments: ``provision {subscriber}``, ``remove_subscriber {imsi}``,
    ``bearer_create {imsi, qci, gbr_kbps, arp}``, ``bearer_delete {imsi, ebi}`` and
    ``stop | kill | restart | isolate | restore {component}`` (no component: all of them).
    Each returns details for the event log, with ``wall``: when it acted."""

    kind = "core"
    actions = frozenset(
        {"provision", "remove_subscriber", "bearer_create", "bearer_delete", "stop", "kill",
         "restart", "isolate", "restore"}
    )  # fmt: skip

    def subscribers(self) -> list[Mapping[str, Any]]:
        """The subscriber records the core holds, in the lab-file form."""
        raise DriverError(self.name, "this core does not list its subscribers")

    def ues(self) -> list[Mapping[str, Any]]:
        """The UEs attached now, with their bearers, as the core reports them."""
        raise DriverError(self.name, "this core does not list its UEs")
