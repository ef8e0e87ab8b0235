"""A hardware network emulator driven over SCPI through a command map from the lab file.

Boxes differ in their command language but not in what they do, so the lab says how each
impairment parameter is spoken to its box: ``settings.commands`` maps a parameter name to
a command template (``{ch}`` the channel, ``{value}`` the value, ``{value_s}`` and the
like the value converted from the parameter's unit), and ``settings.links`` gives the
channel of each link direction. Without ``commands`` the built-in :data:`DEFAULT_COMMANDS`
speak the ``network_emulator`` model of :mod:`drivers.scpi.emulator`, which the driver
starts itself with ``settings.emulate: true`` (that is how the emulated lab uses it). A
parameter that has no command but a non-default value is refused rather than ignored, so
a profile never runs under conditions the box did not apply. Every setting is checked
against the instrument's error queue, and the whole exchange is saved with the run.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.base import DeviceContext, Impairment
from drivers.emulators import EmulatorProcess, start_emulator, state_path
from drivers.errors import DriverError
from drivers.impairment.params import ImpairmentParams
from drivers.scpi.client import DEFAULT_TIMEOUT_S, ScpiIOError, ScpiSession

DEFAULT_COMMANDS: dict[str, Any] = {
    "delay_ms": "CHAN{ch}:DEL {value_s}",
    "jitter_ms": "CHAN{ch}:JITT {value_s}",
    "loss_pct": "CHAN{ch}:LOSS {value}",
    "duplicate_pct": "CHAN{ch}:DUPL {value}",
    "reorder_pct": "CHAN{ch}:REOR {value}",
    "rate_kbps": {"command": "CHAN{ch}:RATE {value_bps:.0f}", "unset": 0},
    "outage": "CHAN{ch}:OUT {value}",
    "enable": "CHAN{ch}:STAT ON",
    "clear": ["CHAN{ch}:OUT OFF", "CHAN{ch}:STAT OFF"],
}
"""The command map of :data:`drivers.scpi.emulator.NETWORK_EMULATOR`.

An entry is a template, a list of templates, or a mapping with ``command`` (one or a
list) and optionally ``scale`` (``{value}`` is multiplied by it), ``unset`` (the value,
in the parameter's unit, sent for null, e.g. "no rate limit") and ``values`` (a
translation table, e.g. ``{uniform: UNIF, normal: NORM}``). ``enable`` is sent after the
parameters of a channel, ``clear`` puts a channel back to no impairment (required).
"""

UNIT_VIEWS: dict[str, dict[str, float]] = {
    "ms": {"s": 1e-3, "ms": 1.0, "us": 1e3},
    "kbps": {"bps": 1e3, "kbps": 1.0, "mbps": 1e-3},
    "pct": {"ratio": 1e-2, "pct": 1.0},
}
"""Unit conversions offered to templates as ``{value_<unit>}``, by the parameter's suffix:
``delay_ms`` offers ``{value_s}``, ``rate_kbps`` offers ``{value_bps}``, and so on."""

SETTINGS = frozenset(
    {"resource", "emulate", "emulator_model", "links", "commands", "timeout_s", "idn_contains",
     "reset_on_open"}
)  # fmt: skip
_DIRECTIONS = {"forward": ("forward",), "reverse": ("reverse",), "both": ("forward", "reverse")}
_CHANNEL_FIELDS = frozenset({"ch", "link", "direction"})
_PARAMS: dict[str, Any] = ImpairmentParams().to_dict()


class _Num(float):
    """A number that prints without float noise (``0.02``, not ``0.020000000000000004``)
    unless the template gives a format spec of its own."""

    def __format__(self, spec: str) -> str:
        return format(float(self), spec or ".12g")

    def __str__(self) -> str:
        return format(self, "")


@dataclass(frozen=True)
class _Command:
    """The commands that set one parameter (or enable/clear a channel)."""

    key: str
    templates: tuple[str, ...]
    scale: float = 1.0
    unset: Any = None
    values: Mapping[str, str] = field(default_factory=dict)

    @property
    def unit(self) -> str | None:
        suffix = self.key.rpartition("_")[2]
        return suffix if suffix in UNIT_VIEWS else None

    def fields(self, value: Any) -> dict[str, Any]:
        """The template fields that carry the value: ``value`` and its unit views."""
        if value is None:
            value = self.unset
        translated = self.values.get(_value_key(value))
        if translated is not None:
            return {"value": translated}
        if isinstance(value, bool):
            return {"value": "ON" if value else "OFF"}
        if isinstance(value, int | float):
            out: dict[str, Any] = {"value": _Num(value * self.scale)}
            for name, factor in UNIT_VIEWS.get(self.unit or "", {}).items():
                out[f"value_{name}"] = _Num(value * factor)
            return out
        return {"value": value}

    def render(self, ch: Any, link: str, direction: str, value: Any = None) -> list[str]:
        context = {"ch": ch, "link": link, "direction": direction}
        if self.key in _PARAMS:
            context |= self.fields(value)
        return [t.format(**context) for t in self.templates]


def _value_key(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_commands(device: str, raw: Mapping[str, Any]) -> dict[str, _Command]:
    """Check a command map once, when the device opens, so a typo fails before any run."""
    out: dict[str, _Command] = {}
    for key, entry in raw.items():
        where = f"settings.commands.{key}"
        if key not in _PARAMS and key not in ("enable", "clear"):
            known = ", ".join(sorted(_PARAMS))
            raise DriverError(device, f"{where}: not an impairment parameter ({known}) "
                              "nor enable/clear")  # fmt: skip
        options: Mapping[str, Any] = entry if isinstance(entry, Mapping) else {"command": entry}
        unknown = set(options) - {"command", "scale", "unset", "values"}
        if unknown:
            raise DriverError(device, f"{where}: unknown option(s) {', '.join(sorted(unknown))}")
        commands = options.get("command")
        templates = (commands,) if isinstance(commands, str) else tuple(commands or ())
        if not templates or not all(isinstance(t, str) and t.strip() for t in templates):
            raise DriverError(device, f"{where}: give a command template or a list of them")
        scale = options.get("scale", 1.0)
        values = options.get("values", {})
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise DriverError(device, f"{where}.scale must be a number")
        if not isinstance(values, Mapping):
            raise DriverError(device, f"{where}.values must be a mapping")
        command = _Command(
            key, templates, float(scale), options.get("unset"),
            {_value_key(k): str(v) for k, v in values.items()},
        )  # fmt: skip
        if key in _PARAMS and _PARAMS[key] is None and command.unset is None:
            raise DriverError(device, f"{where}: {key} may be null (no limit); say which value "
                              "means that with the mapping form and 'unset'")  # fmt: skip
        _check_templates(device, where, command)
        out[key] = command
    if "clear" not in out:
        raise DriverError(device, "settings.commands: a 'clear' command is required")
    return out


def _check_templates(device: str, where: str, command: _Command) -> None:
    """Only known fields, and a trial rendering with a sample value of the parameter."""
    allowed = set(_CHANNEL_FIELDS)
    sample = _PARAMS.get(command.key)
    if command.key in _PARAMS:
        allowed |= set(command.fields(1.5 if sample is None else sample))
    for template in command.templates:
        for _, name, _, _ in string.Formatter().parse(template):
            if name is not None and name not in allowed:
                raise DriverError(device, f"{where}: unknown field {{{name}}} in {template!r} "
                                  f"(known: {', '.join(sorted(allowed))})")  # fmt: skip
    try:
        command.render(1, "link", "forward", sample)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise DriverError(device, f"{where}: bad template: {exc}") from exc


@dataclass
class _Channel:
    """One direction of a link: its channel, what the profile wants, what the box was told."""

    link: str
    direction: str
    ch: Any
    wanted: dict[str, Any] = field(default_factory=lambda: dict(_PARAMS))
    told: dict[str, Any] | None = None
    """Values the box holds for sure; None when unknown (after open, clear or a failure)."""
    enabled: bool = False


class ScpiImpairment(Impairment):
    """A network emulator instrument: one channel per link direction, set over SCPI."""

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        self.session: ScpiSession | None = None
        self.idn = ""
        self.commands: dict[str, _Command] = {}
        self._links: dict[str, dict[str, Any]] = {}
        self._channels: dict[tuple[str, str], _Channel] = {}
        self._emulator: EmulatorProcess | None = None
        self._emulator_state: Path | None = None
        self.transcript_path = context.run_dir / "transcripts" / f"{name}.scpi.log"

    # ---------------------------------------------------------------- life cycle

    def open(self) -> None:
        """Check the settings, start the emulator if asked, connect and identify the box."""
        unknown = set(self.settings) - SETTINGS
        if unknown:
            raise DriverError(self.name, f"unknown setting(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(SETTINGS))})")  # fmt: skip
        commands = self.settings.get("commands", DEFAULT_COMMANDS)
        if not isinstance(commands, Mapping):
            raise DriverError(self.name, "settings.commands must be a mapping")
        self.commands = parse_commands(self.name, commands)
        self._links = self._parse_links(self.settings.get("links", {}))
        timeout_s = self.settings.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
            raise DriverError(self.name, "settings.timeout_s must be a positive number")
        if self.settings.get("emulate", False):
            resource = self._start_emulator()
        else:
            given = self.settings.get("resource")
            if not isinstance(given, str) or not given:
                raise DriverError(self.name, "settings.resource (a VISA resource string) is "
                                  "required unless settings.emulate is true")  # fmt: skip
            resource = given
        self.session = ScpiSession(resource, device=self.name, timeout_s=float(timeout_s))
        self.session.open()
        self.idn = self.session.query("*IDN?")
        expected = self.settings.get("idn_contains")
        if len(self.idn.split(",")) < 4 or (expected and str(expected) not in self.idn):
            raise DriverError(
                self.name,
                f"unexpected *IDN? answer {self.idn!r}"
                + (f" (expected it to contain {expected!r})" if expected else ""),
                self.session.last_exchanges(),
            )
        self.session.write("*CLS", check=False)  # start from an empty error queue
        if self.settings.get("reset_on_open", False):
            self.session.write("*RST")
        self.context.emit("scpi.identified", {"resource": resource, "idn": self.idn})

    def _parse_links(self, raw: Any) -> dict[str, dict[str, Any]]:
        if not isinstance(raw, Mapping):
            raise DriverError(self.name, "settings.links must map link -> {forward, reverse}")
        out: dict[str, dict[str, Any]] = {}
        seen: dict[str, str] = {}
        for link, channels in raw.items():
            if not isinstance(channels, Mapping) or not channels:
                raise DriverError(self.name, f"settings.links.{link}: give forward and/or "
                                  "reverse channels")  # fmt: skip
            for direction, ch in channels.items():
                if direction not in ("forward", "reverse"):
                    raise DriverError(self.name, f"settings.links.{link}: {direction!r} is not "
                                      "forward or reverse")  # fmt: skip
                if isinstance(ch, bool) or not isinstance(ch, int | str):
                    raise DriverError(self.name, f"settings.links.{link}.{direction}: channel "
                                      f"must be a number or a name, got {ch!r}")  # fmt: skip
                if str(ch) in seen:
                    raise DriverError(self.name, f"channel {ch} is both {seen[str(ch)]} and "
                                      f"{link}/{direction}")  # fmt: skip
                seen[str(ch)] = f"{link}/{direction}"
            out[str(link)] = dict(channels)
        return out

    def _start_emulator(self) -> str:
        """The ``network_emulator`` as a process of this run, on a port the system picks."""
        self._emulator_state = state_path(self.context.run_dir, self.name)
        model = str(self.settings.get("emulator_model", "network_emulator"))
        args = [
            "--host", "127.0.0.1", "--port", "0", "--model", model, "--serial", self.name,
            "--state-out", str(self._emulator_state),
        ]  # fmt: skip
        self._emulator = start_emulator(
            self.context, self.name, "drivers.scpi.emulator", args, role="scpi-emulator"
        )
        try:
            port = int(self._emulator.ready["port"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DriverError(self.name, f"the SCPI emulator's ready file has no port: "
                              f"{self._emulator.ready}") from exc  # fmt: skip
        return f"TCPIP::127.0.0.1::{port}::SOCKET"

    def attach(self, links: Sequence[str]) -> None:
        missing = [link for link in links if link not in self._links]
        if missing:
            raise DriverError(self.name, f"no channels for link(s) {', '.join(missing)} in "
                              "settings.links")  # fmt: skip
        for link in links:
            for direction, ch in self._links[link].items():
                self._channels[(link, direction)] = _Channel(link, direction, ch)
        self.context.emit("impairment.attached", {"links": list(links)})

    # ---------------------------------------------------------------- conditions

    def _session(self) -> ScpiSession:
        if self.session is None:
            raise DriverError(self.name, "not open")
        return self.session

    def _targets(self, link: str, direction: str) -> list[_Channel]:
        if direction not in _DIRECTIONS:
            raise DriverError(self.name, f"direction must be one of {', '.join(_DIRECTIONS)}")
        if not any(key[0] == link for key in self._channels):
            known = ", ".join(sorted({key[0] for key in self._channels})) or "none"
            raise DriverError(self.name, f"link {link!r} is not impaired by me (mine: {known})")
        out = []
        for d in _DIRECTIONS[direction]:
            chan = self._channels.get((link, d))
            if chan is None:
                raise DriverError(self.name, f"link {link}: no channel for {d} in settings.links")
            out.append(chan)
        return out

    def apply(self, link: str, direction: str, params: Mapping[str, Any]) -> None:
        targets = self._targets(link, direction)
        unsupported = [
            f"{k}={v!r}" for k, v in params.items()
            if k not in self.commands and k in _PARAMS and v != _PARAMS[k]
        ]  # fmt: skip
        if unsupported:
            raise DriverError(self.name, "not supported by this instrument's command map: "
                              + ", ".join(unsupported))  # fmt: skip
        for chan in targets:
            try:
                wanted = ImpairmentParams.from_dict({**chan.wanted, **params}).to_dict()
            except ValueError as exc:
                raise DriverError(self.name, f"link {link}: {exc}") from exc
            self._send(chan, wanted)

    def _send(self, chan: _Channel, wanted: dict[str, Any]) -> None:
        """Tell the box what differs from what it holds, then enable the channel."""
        session = self._session()
        told = chan.told
        chan.told = None  # unknown until every command went through
        told = {} if told is None else told
        for key, command in self.commands.items():
            if key in wanted and (key not in told or told[key] != wanted[key]):
                for text in command.render(chan.ch, chan.link, chan.direction, wanted[key]):
                    session.write(text)
                told[key] = wanted[key]
        chan.wanted = wanted
        if not chan.enabled and "enable" in self.commands:
            for text in self.commands["enable"].render(chan.ch, chan.link, chan.direction):
                session.write(text)
        chan.enabled = True
        chan.told = told

    def set_outage(self, link: str, direction: str, on: bool) -> None:
        self.apply(link, direction, {"outage": on})

    def clear(self, link: str | None = None) -> None:
        targets = [c for c in self._channels.values() if link is None or c.link == link]
        if link is not None and not targets:
            known = ", ".join(sorted({c.link for c in self._channels.values()})) or "none"
            raise DriverError(self.name, f"link {link!r} is not impaired by me (mine: {known})")
        for chan in targets:
            self._clear(chan)

    def _clear(self, chan: _Channel) -> None:
        chan.told = None
        chan.enabled = False
        chan.wanted = dict(_PARAMS)
        for text in self.commands["clear"].render(chan.ch, chan.link, chan.direction):
            self._session().write(text)

    # ---------------------------------------------------------------- end of run

    def counters(self) -> Mapping[str, Any]:
        session = self.session
        out: dict[str, Any] = {"idn": self.idn, "transcript": str(self.transcript_path)}
        if session is not None:
            out |= {
                "resource": session.resource,
                "exchanges": len(session.transcript),
                "instrument_errors": session.instrument_errors,
            }
        if self._emulator_state is not None:
            out["emulator_state"] = str(self._emulator_state)
        return out

    def safe_state(self) -> None:
        """Every channel cleared: a link must not stay degraded after its run. A dead
        connection stops the attempt (each further command would only wait for its timeout);
        a refused command does not."""
        if self.session is None or not self.session.is_open:
            return
        for chan in self._channels.values():
            try:
                self._clear(chan)
            except ScpiIOError as exc:
                self._report("impairment.safe_state_failed", exc)
                return
            except Exception as exc:
                self._report("impairment.safe_state_failed", exc)

    def _report(self, name: str, exc: Exception) -> None:
        with contextlib.suppress(Exception):  # reporting must not make safe_state fail
            self.context.emit(name, {"error": str(exc)})

    def close(self) -> None:
        """Save the transcript, disconnect, stop the emulator if this driver started it."""
        session, self.session = self.session, None
        if session is not None:
            try:
                session.save_transcript(self.transcript_path)
            except OSError as exc:
                self._report("scpi.transcript_failed", exc)
            session.close()
        emulator, self._emulator = self._emulator, None
        if emulator is not None:
            emulator.stop()
