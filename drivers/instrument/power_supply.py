"""A programmable DC power supply over SCPI that powers radios under test: switch an
output, set its voltage and current limit, read back what it delivers.

The lab file says how its box is spoken to (``settings.commands``, laid over
:data:`DEFAULT_COMMANDS`, which speak the ``power_supply`` model of
:mod:`drivers.scpi.emulator`), which outputs a profile may touch and, to protect the
radios, the highest voltage and current limit a profile may ask for (``max_voltage_v``,
``max_current_a``: refused before anything is sent). Every setting is checked against the
instrument's error queue and read back. The current limit is set before the voltage, so a
raised voltage never meets a stale, higher limit. ``initial`` (applied when the device
opens: an emulated supply, like a real one at power-up, starts with its outputs off) and
``safe`` (the safe state) have the same form: ``output`` (on/off/unchanged),
``voltage_v`` and ``current_a``, each one value or ``{output number: value}``. Neither does
anything by default: switching radios off at the end of every run costs a boot and an
attach before the next one, and some labs power more than the radio under test from the
same box, so the lab decides.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drivers.base import DeviceContext, PowerSupply
from drivers.errors import DriverError
from drivers.instrument import common
from drivers.instrument.common import Command, Connection
from drivers.scpi.client import ScpiIOError

DEFAULT_COMMANDS: dict[str, Any] = {
    "set_voltage": "SOUR{ch}:VOLT {value}",
    "get_voltage": "SOUR{ch}:VOLT?",
    "set_current": "SOUR{ch}:CURR {value}",
    "get_current": "SOUR{ch}:CURR?",
    "set_output": "OUTP{ch} {value}",
    "get_output": "OUTP{ch}?",
    "measure_voltage": "MEAS{ch}:VOLT?",
    "measure_current": "MEAS{ch}:CURR?",
}
"""The command map of :data:`drivers.scpi.emulator.POWER_SUPPLY`: ``{ch}`` is the output,
``{value}`` volts, amperes or the switch (ON/OFF unless ``values`` translate it). Only
``set_voltage`` and ``set_output`` are required; without a ``get_*`` the value is not read
back, without ``measure_*`` there is no measurement. ``init`` is sent once after opening."""

_SETTERS = ("set_voltage", "set_current", "set_output")
COMMAND_FIELDS: dict[str, frozenset[str]] = {
    **{name: frozenset({"ch", "value"}) for name in _SETTERS},
    **{name: frozenset({"ch"}) for name in DEFAULT_COMMANDS if name not in _SETTERS},
    common.INIT: frozenset(),
}
DEFAULT_CHANNELS = (1, 2)
SETTINGS = common.BASE_SETTINGS | {"channels", "initial", "safe", "max_voltage_v",
                                   "max_current_a"}  # fmt: skip
STATE_SETTINGS = frozenset({"output", "voltage_v", "current_a"})
EMULATOR_MODEL = "power_supply"


@dataclass(frozen=True)
class OutputState:
    """What ``initial`` or ``safe`` asks of one output (None: leave it as it is)."""

    output: bool | None = None
    voltage_v: float | None = None
    current_a: float | None = None


class ScpiPowerSupply(PowerSupply):
    """Actions ``output`` (channel, on), ``set`` (channel, voltage_v and/or current_a) and
    ``measure`` (channel); each emits ``power.output``/``power.set``/``power.measure``."""

    actions = PowerSupply.actions | {"measure"}

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        self.conn = Connection(name, self.settings, context, EMULATOR_MODEL)
        self.commands: dict[str, Command] = {}
        self.channels: tuple[int, ...] = DEFAULT_CHANNELS
        self.max_voltage_v: dict[int, float] = {}
        self.max_current_a: dict[int, float] = {}
        self.initial: dict[int, OutputState] = {}
        self.safe: dict[int, OutputState] = {}
        self.known: dict[int, dict[str, Any]] = {}
        """The last values read back per output (the counters' final values)."""
        self._op_lock = threading.RLock()

    # ---------------------------------------------------------------- life cycle

    def open(self) -> None:
        """Check the settings (all of them before anything is touched), then connect."""
        s = self.settings
        common.check_known(self.name, "settings", s, SETTINGS)
        self.commands = common.parse_commands(
            self.name, s.get("commands"), DEFAULT_COMMANDS, fields=COMMAND_FIELDS,
            required=("set_voltage", "set_output"),
        )  # fmt: skip
        self.channels = common.channel_list(self.name, s.get("channels"), DEFAULT_CHANNELS)
        self.max_voltage_v = self._per_channel("settings.max_voltage_v", s.get("max_voltage_v"))
        self.max_current_a = self._per_channel("settings.max_current_a", s.get("max_current_a"))
        self.initial = self._states("initial", s.get("initial"))
        self.safe = self._states("safe", s.get("safe"))
        self.conn.open()
        self.conn.init(self.commands)
        for ch, state in self.initial.items():
            self._apply(ch, state, {"initial": True})

    def _states(self, key: str, raw: Any) -> dict[int, OutputState]:
        """``initial`` or ``safe``: per output, what to do; outputs left alone are absent."""
        where = f"settings.{key}"
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise DriverError(self.name, f"{where} must be a mapping such as "
                              "{output: off, voltage_v: 0}")  # fmt: skip
        common.check_known(self.name, where, raw, STATE_SETTINGS)
        switch = common.per_channel(self.name, f"{where}.output", raw.get("output"),
                                    self.channels, self._switch_setting)  # fmt: skip
        volts = self._per_channel(f"{where}.voltage_v", raw.get("voltage_v"))
        amps = self._per_channel(f"{where}.current_a", raw.get("current_a"))
        if amps and "set_current" not in self.commands:
            raise DriverError(self.name, f"{where}.current_a needs a set_current command")
        out: dict[int, OutputState] = {}
        for ch in self.channels:
            state = OutputState(switch.get(ch), volts.get(ch), amps.get(ch))
            if state != OutputState():
                # it must pass the same limits as the profile's settings
                self._check_limits(ch, state.voltage_v, state.current_a, f"{where}: ")
                out[ch] = state
        return out

    def _per_channel(self, where: str, raw: Any) -> dict[int, float]:
        return common.per_channel(
            self.name, where, raw, self.channels,
            lambda w, v: common.number(self.name, w, v, minimum=0),
        )  # fmt: skip

    def _switch_setting(self, where: str, value: Any) -> bool | None:
        if isinstance(value, str) and value.strip().lower() == "unchanged":
            return None
        return common.flag(self.name, where, value)

    def close(self) -> None:
        self.conn.close()

    # ---------------------------------------------------------------- operations

    def set_output(self, channel: int, on: bool) -> None:
        self._switch(channel, on)

    def measure(self, channel: int) -> Mapping[str, float]:
        """``voltage_v`` and ``current_a`` as the box measures them (emits power.measure)."""
        missing = [n for n in ("measure_voltage", "measure_current") if n not in self.commands]
        if missing:
            raise DriverError(self.name, f"cannot measure: no {' nor '.join(missing)} in "
                              "settings.commands")  # fmt: skip
        with self._op_lock:
            wall = time.time()
            volts = self._ask("measure_voltage", channel)
            amps = self._ask("measure_current", channel)
        assert volts is not None and amps is not None
        self.context.emit("power.measure", {"channel": channel, "voltage_v": volts,
                                            "current_a": amps, "wall": wall})  # fmt: skip
        return {"voltage_v": volts, "current_a": amps}

    def _ask(self, name: str, channel: int) -> float | None:
        """A numeric query of the map, or None when the map has no such command."""
        command = self.commands.get(name)
        if command is None:
            return None
        return command.number(self.name, self.conn.query(command.render(self.name, ch=channel)[0]))

    def _switch(
        self, channel: int, on: bool, extra: Mapping[str, Any] | None = None
    ) -> bool | None:
        """Switch, check, read back, emit ``power.output``; the state read back (None when
        the map cannot read it)."""
        with self._op_lock:
            wall = time.time()
            common.send(self.conn, self.commands["set_output"], ch=channel, value=on)
            actual: bool | None = None
            get = self.commands.get("get_output")
            if get is not None:
                actual = get.flag(self.name, self.conn.query(get.render(self.name, ch=channel)[0]))
            self.known.setdefault(channel, {})["output"] = on if actual is None else actual
        self.context.emit("power.output", {"channel": channel, "on": on, "actual_on": actual,
                                           "wall": wall, **(extra or {})})  # fmt: skip
        if actual is not None and actual != on:
            raise DriverError(self.name, f"output {channel} reads back "
                              f"{'on' if actual else 'off'} after switching it "
                              f"{'on' if on else 'off'}")  # fmt: skip
        return actual

    def _check_limits(
        self, channel: int, voltage_v: float | None, current_a: float | None, where: str = ""
    ) -> None:
        """The lab's limits (``max_voltage_v``, ``max_current_a``) protect the radios."""
        for value, limits, what, unit in (
            (voltage_v, self.max_voltage_v, "max_voltage_v", "V"),
            (current_a, self.max_current_a, "max_current_a", "A"),
        ):
            limit = limits.get(channel)
            if value is not None and limit is not None and value > limit + 1e-9:
                raise DriverError(
                    self.name,
                    f"{where}output {channel}: {value:g} {unit} is above settings.{what} "
                    f"({limit:g} {unit}); nothing was sent",
                )

    def set_levels(
        self,
        channel: int,
        voltage_v: float | None = None,
        current_a: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Current limit first, then voltage; each read back; emits ``power.set``."""
        self._check_limits(channel, voltage_v, current_a)
        if current_a is not None and "set_current" not in self.commands:
            raise DriverError(self.name, "no set_current command in settings.commands")
        with self._op_lock:
            wall = time.time()
            if current_a is not None:
                common.send(self.conn, self.commands["set_current"], ch=channel, value=current_a)
            if voltage_v is not None:
                common.send(self.conn, self.commands["set_voltage"], ch=channel, value=voltage_v)
            out: dict[str, Any] = {"channel": channel, "voltage_v": voltage_v,
                                   "current_a": current_a}  # fmt: skip
            if voltage_v is not None:
                out["actual_voltage_v"] = self._ask("get_voltage", channel)
            if current_a is not None:
                out["actual_current_a"] = self._ask("get_current", channel)
            known = self.known.setdefault(channel, {})
            for key in ("voltage_v", "current_a"):
                if out.get(key) is not None:
                    actual = out.get(f"actual_{key}")
                    known[key] = out[key] if actual is None else actual
        self.context.emit("power.set", {**out, "wall": wall, **(extra or {})})
        return out

    # ---------------------------------------------------------------- actions

    def perform(self, action: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        if action == "output":
            common.check_args(self.name, action, args, ("on",), ("channel",))
            channel = common.channel_arg(self.name, action, args.get("channel"), self.channels)
            on = common.flag(self.name, "output: on", args["on"])
            actual = self._switch(channel, on)
            details: dict[str, Any] = {"channel": channel, "on": on, "actual_on": actual}
            if "measure_voltage" in self.commands and "measure_current" in self.commands:
                details |= self.measure(channel)  # what the radio draws right after
            return details
        if action == "set":
            common.check_args(self.name, action, args, (), ("channel", "voltage_v", "current_a"))
            channel = common.channel_arg(self.name, action, args.get("channel"), self.channels)
            voltage_v, current_a = args.get("voltage_v"), args.get("current_a")
            if voltage_v is None and current_a is None:
                raise DriverError(self.name, "set: give voltage_v and/or current_a")
            return self.set_levels(
                channel,
                None if voltage_v is None else common.number(self.name, "set: voltage_v",
                                                             voltage_v, minimum=0),
                None if current_a is None else common.number(self.name, "set: current_a",
                                                             current_a, minimum=0),
            )  # fmt: skip
        if action == "measure":
            common.check_args(self.name, action, args, (), ("channel",))
            channel = common.channel_arg(self.name, action, args.get("channel"), self.channels)
            return {"channel": channel, **self.measure(channel)}
        return super().perform(action, args)

    # ---------------------------------------------------------------- end of run

    def counters(self) -> Mapping[str, Any]:
        return {**self.conn.counters(), "final": dict(sorted(self.known.items()))}

    def safe_state(self) -> None:
        """Apply ``settings.safe`` to its outputs (see :meth:`_apply`) and record a
        ``power.safe_state`` event. A dead connection ends the attempt; a refused command
        does not. Never raises."""
        try:
            applied: dict[int, dict[str, Any]] = {}
            errors: list[str] = []
            if self.safe and not self.conn.is_open:
                errors.append("not connected")
            else:
                for ch, state in self.safe.items():
                    try:
                        applied[ch] = self._apply(ch, state, {"safe_state": True})
                    except ScpiIOError as exc:
                        errors.append(str(exc))
                        break
                    except Exception as exc:
                        errors.append(str(exc))
            common.report(self.context, "power.safe_state", {
                "applied": applied, "errors": errors,
                "unchanged": [ch for ch in self.channels if ch not in self.safe],
            })  # fmt: skip
        except Exception as exc:  # the contract: never raise
            common.report(self.context, "power.safe_state", {"errors": [repr(exc)]})

    def _apply(self, ch: int, state: OutputState, extra: Mapping[str, Any]) -> dict[str, Any]:
        """When the output goes off: off first, then the levels; when it goes on: the levels
        first, then on (a radio never sees the previous voltage switched on)."""
        out: dict[str, Any] = {}
        if state.output is False:
            out["output"] = self._switch(ch, False, extra)
        if state.voltage_v is not None or state.current_a is not None:
            levels = self.set_levels(ch, state.voltage_v, state.current_a, extra)
            out |= {k: v for k, v in levels.items() if k.startswith("actual_") and v is not None}
        if state.output is True:
            out["output"] = self._switch(ch, True, extra)
        return out
