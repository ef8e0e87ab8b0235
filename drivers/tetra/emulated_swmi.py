"""The emulated TETRA core for the emulated lab: starts the SwMI process
(:mod:`drivers.tetra.swmi`) that the emulated terminals of the PEI driver register with, and
publishes its address where those drivers look for it.

Lab settings (``kind: core, driver: tetra_emulated``)::

    hang_time_s: 5       # a group call with nobody talking is released after this (cause 13)
    queueing: true       # false: a demand while another talks is not granted (TxGrant 1)
    mcc: 901             # optional: the network's code; terminals of another are "visited"
    mnc: 16383

``open()`` writes ``state_path(run_dir, <name>)`` = ``{"host", "port", "pid", "events"}``, so
the SwMI must be opened before the radios that name it. The SwMI's procedure log (one JSON
line per procedure with its wall-clock time) is ``run_dir/emulators/<name>.swmi.events.jsonl``;
:meth:`EmulatedSwmi.counters` summarises it. No timeline actions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drivers.base import Device, DeviceContext
from drivers.emulators import EMULATOR_DIR, EmulatorProcess, start_emulator, state_path
from drivers.errors import DriverError
from drivers.files import read_json_lines, write_json_atomic
from drivers.tetra import tables

__all__ = ["EmulatedSwmi", "read_events", "summarise_events"]

SETTINGS = frozenset({"hang_time_s", "queueing", "mcc", "mnc"})


class EmulatedSwmi(Device):
    kind = "core"
    actions = frozenset()

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        unknown = sorted(set(self.settings) - SETTINGS)
        if unknown:
            raise DriverError(name, f"unknown settings {unknown} (known: {sorted(SETTINGS)})")
        hang = self.settings.get("hang_time_s", 5.0)
        if isinstance(hang, bool) or not isinstance(hang, int | float) or hang <= 0:
            raise DriverError(name, f"hang_time_s must be a positive number, not {hang!r}")
        self.hang_time_s = float(hang)
        queueing = self.settings.get("queueing", True)
        if not isinstance(queueing, bool):
            raise DriverError(name, f"queueing must be true or false, not {queueing!r}")
        self.queueing = queueing
        self.mcc = _optional_code(name, self.settings, "mcc", 9999)
        self.mnc = _optional_code(name, self.settings, "mnc", 99999)
        if (self.mcc is None) != (self.mnc is None):
            raise DriverError(name, "give both mcc and mnc, or neither")
        out = context.run_dir / EMULATOR_DIR
        self.events_path = out / f"{name}.swmi.events.jsonl"
        self.swmi_state_path = out / f"{name}.swmi.json"
        self.process: EmulatorProcess | None = None

    def open(self) -> None:
        args = [
            "--events",
            str(self.events_path),
            "--state-out",
            str(self.swmi_state_path),
            "--hang-time-s",
            repr(self.hang_time_s),
        ]
        if not self.queueing:
            args.append("--no-queueing")
        if self.mcc is not None and self.mnc is not None:
            args += ["--mcc", str(self.mcc), "--mnc", str(self.mnc)]
        self.process = start_emulator(
            self.context, self.name, "drivers.tetra.swmi", args, role="swmi"
        )
        ready = self.process.ready
        address = {
            "host": str(ready["host"]),
            "port": int(ready["port"]),
            "pid": int(ready["pid"]),
            "events": str(self.events_path),
        }
        write_json_atomic(state_path(self.context.run_dir, self.name), address)
        self.context.emit(
            "tetra.swmi_started",
            {**address, "hang_time_s": self.hang_time_s, "queueing": self.queueing},
        )

    def counters(self) -> Mapping[str, Any]:
        summary = summarise_events(self.events_path)
        summary["alive"] = self.process is not None and self.process.alive()
        return summary

    def safe_state(self) -> None:
        """Nothing to make safe: the SwMI holds no transmitter. Never raises."""

    def close(self) -> None:
        """Stop the SwMI (its terminals see the network go away). Never raises."""
        process, self.process = self.process, None
        if process is not None:
            process.stop()


def _optional_code(device: str, values: Mapping[str, Any], key: str, high: int) -> int | None:
    value = values.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise DriverError(device, f"{key} must be an integer 0..{high}, not {value!r}")
    return value


def read_events(path: Path) -> list[dict[str, Any]]:
    """The SwMI's procedure log; a torn last line (the SwMI was killed) is skipped."""
    return read_json_lines(path)


def summarise_events(path: Path) -> dict[str, Any]:
    """Counts of the SwMI's procedures: what the run record keeps of the emulated core."""
    events = read_events(path)
    counts = Counter(str(e.get("event")) for e in events)
    released = Counter(
        str(e.get("cause_name") or tables.DISCONNECT_CAUSES.get(int(e.get("cause", 0)), "?"))
        for e in events
        if e.get("event") == "call_released"
    )
    sds = Counter(
        "delivered" if e.get("status") == tables.SDS_SENT else "failed"
        for e in events
        if e.get("event") == "sds"
    )
    return {
        "events_file": str(path),
        "registrations": counts["register"],
        "rejected_registrations": counts["register_rejected"],
        "deregistrations": counts["deregister"],
        "calls_set_up": counts["call_setup"],
        "calls_preempted": counts["call_preempted"],
        "late_entries": counts["late_entry"],
        "calls_released": dict(released),
        "tx_demands": counts["tx_demand"],
        "tx_granted": counts["tx_granted"],
        "tx_queued": counts["tx_queued"],
        "tx_rejected": counts["tx_rejected"],
        "tx_preempted": counts["tx_preempted"],
        "sds": {"delivered": sds["delivered"], "failed": sds["failed"]},
        "events": dict(counts),
    }
