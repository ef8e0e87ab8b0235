"""Typed events of a run: what the runner and the drivers did, when, and how it went.

Each event is written as one line of ``events.jsonl`` and handed to listeners (the CLI's
progress display). ``t_s`` is seconds since the run started (monotonic clock); ``wall``
is the wall-clock time, to line events up with capture timestamps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    type: ClassVar[str] = "event"
    t_s: float
    wall: float

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    type: ClassVar[str] = "run.started"
    run_id: str
    profile: str
    lab: str
    run_dir: str


@dataclass(frozen=True)
class PhaseStarted(Event):
    """setup, measure (per repetition), teardown."""

    type: ClassVar[str] = "phase.started"
    phase: str
    repetition: int | None = None
    point: int | None = None
    settings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LeaseWaiting(Event):
    type: ClassVar[str] = "lease.waiting"
    device: str
    holder_run: str
    holder: str


@dataclass(frozen=True)
class DeviceFault(Event):
    """A device failed on its own, between actions (a lost connection, a dead emulator)."""

    type: ClassVar[str] = "device.fault"
    device: str
    message: str
    during_teardown: bool = False


@dataclass(frozen=True)
class DeviceOpened(Event):
    type: ClassVar[str] = "device.opened"
    device: str
    kind: str
    driver: str


@dataclass(frozen=True)
class DeviceEvent(Event):
    """Something a driver reported (a state change, a counter, a URC)."""

    type: ClassVar[str] = "device.event"
    device: str
    name: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionExecuted(Event):
    """``wall`` is when the event was logged (after the action); ``started_wall`` is when the
    action really took effect: the driver's ``details["wall"]`` when it reports one, else the
    wall time just before ``perform`` was called. Faults are measured from ``started_wall``."""

    type: ClassVar[str] = "action.executed"
    device: str
    action: str
    planned_at_s: float
    repetition: int
    ok: bool
    duration_ms: float
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    started_wall: float | None = None
    fault: bool = False


@dataclass(frozen=True)
class TeardownStep(Event):
    type: ClassVar[str] = "teardown.step"
    device: str
    step: str
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class RunFinished(Event):
    type: ClassVar[str] = "run.finished"
    verdict: str
    errors: list[str] = field(default_factory=list)
