"""A SCPI instrument emulator served over a raw TCP socket, one line per message.

An instrument *model* is a small declarative table of :class:`Setting` rows (a header such
as ``CHANnel#:DELay`` whose ``#`` is a numeric suffix, a type, a range, a unit, a default),
so a new kind of box (attenuator, power supply) is one more table in :data:`MODELS`. The
parser does the SCPI basics the way real instruments do: short and long forms in any case,
optional ``[nodes]``, numeric suffixes (omitted = 1), ``;``-separated message units with
compound-header paths, ``MIN``/``MAX``/``DEF`` and unit suffixes on numbers, IEEE 488.2
common commands and a FIFO error queue read by ``SYST:ERR?``. A setting may have a
resolution (a step attenuator keeps the nearest step), and a model may have read-only
*readings* computed from its settings (a power supply's measured output). Queries of one
line are answered on one line (several answers joined by ``;``). Every client shares one
instrument (and so one error queue), like a real box on the LAN. Run it as its own process
with ``python -m drivers.scpi.emulator --port P --model network_emulator``; ``--port 0``
picks a free port, which ``--ready-file`` reports, and ``--state-out`` keeps a JSON image of
the settings (rewritten atomically on every change) for tests and the emulated lab.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import signal
import socket
import socketserver
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from drivers.files import write_json_atomic

Value = float | int | bool | str
"""A setting's value: ``float``/``int`` for numbers, ``bool`` for ON/OFF, ``str`` for choices."""

ERRORS: dict[int, str] = {
    0: "No error",
    -100: "Command error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -131: "Invalid suffix",
    -222: "Data out of range",
    -224: "Illegal parameter value",
    -350: "Queue overflow",
}
"""The standard SCPI error numbers this emulator reports, with their standard text."""

ERROR_QUEUE_LENGTH = 20
MAX_LINE_BYTES = 65536


class ScpiError(Exception):
    """An error the instrument puts in its queue (a command error stops the rest of the line)."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(self.entry())

    def entry(self) -> str:
        """The ``SYST:ERR?`` answer: number, then quoted text with the device-dependent detail."""
        text = ERRORS.get(self.code, "Error")
        if self.detail:
            text += ";" + self.detail.replace('"', "'")
        return f'{self.code},"{text}"'


@dataclass(frozen=True)
class Setting:
    """One row of a model table: a settable and queryable value of the instrument.

    ``header`` uses SCPI notation: the upper-case part of a mnemonic is its short form,
    ``#`` a numeric suffix (every one ranging over ``suffixes``), ``[...]`` an optional
    node. ``units`` lists the unit suffixes a number may carry, with their factor to
    ``unit``; ``choices`` are the mnemonics of a ``choice`` setting.
    """

    header: str
    kind: Literal["float", "int", "bool", "choice"]
    default: Value
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""
    suffixes: range = range(1, 2)
    units: Mapping[str, float] = field(default_factory=dict)
    choices: tuple[str, ...] = ()
    description: str = ""
    resolution: float | None = None
    """Step of a numeric setting: a value is kept as the nearest step from ``minimum`` (ties
    to even), as a step attenuator does, so a query reads back what the box really holds."""


Compute = Callable[[Mapping[str, Value], tuple[int, ...]], Value]
"""How a reading follows from the settings: ``(values by canonical key, suffixes) -> value``."""


@dataclass(frozen=True)
class Reading:
    """A read-only value of the instrument (``MEASure#:VOLTage?``) computed from its settings:
    the emulator's stand-in for what a real box would measure. Query only; ``#`` suffixes
    range over ``suffixes`` as for a :class:`Setting`."""

    header: str
    compute: Compute
    unit: str = ""
    suffixes: range = range(1, 2)
    description: str = ""


@dataclass(frozen=True)
class InstrumentModel:
    """What ``*IDN?`` says and the table of settings of one kind of instrument."""

    name: str
    manufacturer: str
    model: str
    firmware: str
    settings: tuple[Setting, ...]
    description: str = ""
    readings: tuple[Reading, ...] = ()


_CHANNELS = range(1, 5)
_SECONDS = {"S": 1.0, "MS": 1e-3, "US": 1e-6, "NS": 1e-9}
_PERCENT = {"PCT": 1.0}
_BITRATE = {"BPS": 1.0, "KBPS": 1e3, "MBPS": 1e6, "GBPS": 1e9}

NETWORK_EMULATOR = InstrumentModel(
    name="network_emulator",
    manufacturer="EUCCS Testbed",
    model="NE-4 Network Emulator (emulated)",
    firmware="1.0",
    description="Four one-way impairment channels; a link direction is one channel.",
    settings=(
        Setting("CHANnel#:DELay", "float", 0.0, 0.0, 10.0, "s", _CHANNELS, _SECONDS,
                description="Fixed delay added to every packet."),
        Setting("CHANnel#:JITTer", "float", 0.0, 0.0, 10.0, "s", _CHANNELS, _SECONDS,
                description="Random delay added per packet on top of DELay."),
        Setting("CHANnel#:LOSS", "float", 0.0, 0.0, 100.0, "%", _CHANNELS, _PERCENT,
                description="Share of packets dropped at random."),
        Setting("CHANnel#:DUPLicate", "float", 0.0, 0.0, 100.0, "%", _CHANNELS, _PERCENT,
                description="Share of packets sent twice."),
        Setting("CHANnel#:REORder", "float", 0.0, 0.0, 100.0, "%", _CHANNELS, _PERCENT,
                description="Share of packets sent without the delay."),
        Setting("CHANnel#:RATE", "int", 0, 0.0, 100e9, "bit/s", _CHANNELS, _BITRATE,
                description="Rate limit; 0 is unlimited."),
        Setting("CHANnel#:STATe", "bool", False, suffixes=_CHANNELS,
                description="The channel's impairments are active."),
        Setting("CHANnel#:OUTage", "bool", False, suffixes=_CHANNELS,
                description="Drop every packet of the channel."),
    ),
)  # fmt: skip

_DECIBELS = {"DB": 1.0}

ATTENUATOR = InstrumentModel(
    name="attenuator",
    manufacturer="EUCCS Testbed",
    model="RA-4 Programmable Attenuator (emulated)",
    firmware="1.0",
    description="Four step attenuators of 0..95.5 dB in 0.25 dB steps, one per RF path.",
    settings=(
        Setting("CHANnel#:ATTenuation", "float", 0.0, 0.0, 95.5, "dB", _CHANNELS, _DECIBELS,
                description="Attenuation of the path; the nearest 0.25 dB step is kept.",
                resolution=0.25),
    ),
)  # fmt: skip

_OUTPUTS = range(1, 3)
_VOLTS = {"V": 1.0, "MV": 1e-3}
_AMPS = {"A": 1.0, "MA": 1e-3}
_OHMS = {"OHM": 1.0, "KOHM": 1e3}


def _psu_output(values: Mapping[str, Value], n: int) -> tuple[float, float]:
    """Volts and amperes at output ``n`` into its emulated resistive load: the set voltage
    while the load draws less than the current limit (constant voltage), else the limit
    and the voltage it drives through the load (constant current); nothing when off."""
    if not values[f"OUTP{n}"]:
        return 0.0, 0.0
    volts, limit = float(values[f"SOUR{n}:VOLT"]), float(values[f"SOUR{n}:CURR"])
    load = float(values[f"SYST:LOAD{n}"])
    amps = volts / load
    if amps <= limit:
        return volts, amps
    return limit * load, limit


def _measured_volts(values: Mapping[str, Value], suffixes: tuple[int, ...]) -> Value:
    return _psu_output(values, suffixes[0])[0]


def _measured_amps(values: Mapping[str, Value], suffixes: tuple[int, ...]) -> Value:
    return _psu_output(values, suffixes[0])[1]


POWER_SUPPLY = InstrumentModel(
    name="power_supply",
    manufacturer="EUCCS Testbed",
    model="PS-2 DC Power Supply (emulated)",
    firmware="1.0",
    description="Two outputs of 0..30 V, 0..5 A, each into an emulated resistive load.",
    settings=(
        Setting("SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]", "float", 0.0, 0.0, 30.0, "V",
                _OUTPUTS, _VOLTS, description="Set voltage (constant-voltage level)."),
        Setting("SOURce#:CURRent[:LEVel][:IMMediate][:AMPLitude]", "float", 1.0, 0.0, 5.0, "A",
                _OUTPUTS, _AMPS, description="Current limit (constant-current level)."),
        Setting("OUTPut#[:STATe]", "bool", False, suffixes=_OUTPUTS,
                description="The output is switched on."),
        Setting("SYSTem:LOAD#", "float", 10.0, 0.01, 1e6, "ohm", _OUTPUTS, _OHMS,
                description="Emulator only: resistance of the load on the output."),
    ),
    readings=(
        Reading("MEASure#:VOLTage[:DC]", _measured_volts, "V", _OUTPUTS,
                "Output voltage: the set voltage, lower in constant-current mode, 0 when off."),
        Reading("MEASure#:CURRent[:DC]", _measured_amps, "A", _OUTPUTS,
                "Output current: voltage / load, at most the limit, 0 when off."),
    ),
)  # fmt: skip

MODELS: dict[str, InstrumentModel] = {
    m.name: m for m in (NETWORK_EMULATOR, ATTENUATOR, POWER_SUPPLY)
}
"""The models ``--model`` may name; a new instrument is one more table here."""


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    short: str
    long: str
    numbered: bool
    optional: bool

    def accepts(self, name: str) -> bool:
        return name in (self.short, self.long)


def _spec_nodes(header: str) -> tuple[_Node, ...]:
    """``SYSTem:ERRor[:NEXT]`` -> nodes; the upper-case prefix of a mnemonic is its short form."""
    nodes = []
    for token in header.replace("[:", ":[").lstrip(":").split(":"):
        optional = token.startswith("[") and token.endswith("]")
        token = token.strip("[]")
        numbered = token.endswith("#")
        token = token.rstrip("#")
        short = re.match(r"[A-Z0-9]*", token)
        if not token or short is None or not short.group():
            raise ValueError(f"bad header spec {header!r}")
        nodes.append(_Node(short.group(), token.upper(), numbered, optional))
    return tuple(nodes)


_GIVEN_NODE = re.compile(r"([A-Z][A-Z0-9_]*?)(\d*)")


def _given_nodes(path: str) -> tuple[tuple[str, int | None], ...]:
    """``CHAN1:DEL`` -> ``(("CHAN", 1), ("DEL", None))``; anything malformed is -113."""
    out = []
    for token in path.upper().split(":"):
        match = _GIVEN_NODE.fullmatch(token)
        if match is None:
            raise ScpiError(-113, path)
        out.append((match.group(1), int(match.group(2)) if match.group(2) else None))
    return tuple(out)


def _match(
    spec: Sequence[_Node], given: Sequence[tuple[str, int | None]]
) -> tuple[int, ...] | None:
    """The suffix of every numbered node if ``given`` matches ``spec``, else None."""
    if not spec:
        return () if not given else None
    node, rest = spec[0], spec[1:]
    if given:
        name, suffix = given[0]
        if node.accepts(name) and (suffix is None or node.numbered):
            tail = _match(rest, given[1:])
            if tail is not None:
                return ((1 if suffix is None else suffix,) if node.numbered else ()) + tail
    if node.optional:
        tail = _match(rest, given)
        if tail is not None:
            return ((1,) if node.numbered else ()) + tail
    return None


def _key(nodes: Sequence[_Node], suffixes: Sequence[int]) -> str:
    """The canonical name of one instance of a setting: short forms, suffixes, no options."""
    values = iter(suffixes)
    parts = []
    for node in nodes:
        suffix = str(next(values)) if node.numbered else ""
        if not node.optional:
            parts.append(node.short + suffix)
    return ":".join(parts)


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:E[+-]?\d+)?)\s*([A-Z%/]*)")


def format_value(value: Value, setting: Setting | None = None) -> str:
    """How a query answers: NR1 for integers, shortest exact form for reals, 1/0 for booleans."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = format(value, ".12g")
        return "0" if text == "-0" else text
    if setting is not None:
        for choice in setting.choices:
            if choice.upper() == value.upper():
                return _spec_nodes(choice)[0].short
    return value


def _parse_value(setting: Setting, text: str) -> Value:
    word = text.strip().upper()
    if setting.kind == "bool":
        if word in ("ON", "OFF"):
            return word == "ON"
        number = _NUMBER.fullmatch(word)
        if number is None or number.group(2):
            raise ScpiError(-224, text.strip())
        return round(float(number.group(1))) != 0
    if setting.kind == "choice":
        for choice in setting.choices:
            if _spec_nodes(choice)[0].accepts(word):
                return choice.upper()
        raise ScpiError(-224, text.strip())
    keyword = _limit_keyword(setting, word)
    if keyword is not None:
        return keyword
    number = _NUMBER.fullmatch(word)
    if number is None:
        raise ScpiError(-224, text.strip())
    value = float(number.group(1))
    if number.group(2):
        factor = {k.upper(): v for k, v in setting.units.items()}.get(number.group(2))
        if factor is None:
            raise ScpiError(-131, number.group(2))
        value = float(format(value * factor, ".15g"))  # 3300MV is 3.3, not 3.3000000000000003
    low = -float("inf") if setting.minimum is None else setting.minimum
    high = float("inf") if setting.maximum is None else setting.maximum
    if not low <= value <= high:
        raise ScpiError(-222, f"{text.strip()} not in {format_value(low)}..{format_value(high)}")
    return round(value) if setting.kind == "int" else value


def _quantised(setting: Setting, value: Value) -> Value:
    """The nearest step of a setting with a resolution (within its range), else ``value``."""
    if setting.resolution is None or isinstance(value, bool | str):
        return value
    base = setting.minimum if setting.minimum is not None else 0.0  # steps count from here
    stepped = base + round((float(value) - base) / setting.resolution) * setting.resolution
    if setting.minimum is not None:
        stepped = max(stepped, setting.minimum)
    if setting.maximum is not None:
        stepped = min(stepped, setting.maximum)
    return float(format(stepped, ".12g"))  # no float noise in the state image


def _limit_keyword(setting: Setting, word: str) -> Value | None:
    """``MIN``, ``MAX`` and ``DEF`` (short or long form) of a numeric setting."""
    if word in ("MIN", "MINIMUM") and setting.minimum is not None:
        return round(setting.minimum) if setting.kind == "int" else setting.minimum
    if word in ("MAX", "MAXIMUM") and setting.maximum is not None:
        return round(setting.maximum) if setting.kind == "int" else setting.maximum
    if word in ("DEF", "DEFAULT"):
        return setting.default
    return None


def _typed(setting: Setting, value: Value) -> Value:
    """A value of the setting's own type, so that the state image stays uniform."""
    if setting.kind == "float":
        return float(value)
    if setting.kind == "int":
        return round(float(value))
    if setting.kind == "bool":
        return bool(value)
    return str(value)


def _split(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside quoted strings (SCPI strings may hold ``;`` and ``,``)."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == sep:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


# --------------------------------------------------------------------------------------------
# The instrument
# --------------------------------------------------------------------------------------------

Handler = Callable[["ScpiInstrument", bool, list[str]], str | None]
"""A built-in header: ``(instrument, is_query, parameters) -> answer``."""


@dataclass(frozen=True)
class _Entry:
    nodes: tuple[_Node, ...]
    setting: Setting | None = None
    handler: Handler | None = None
    reading: Reading | None = None

    @property
    def suffixes(self) -> range:
        if self.setting is not None:
            return self.setting.suffixes
        return self.reading.suffixes if self.reading is not None else range(1, 2)


def _syst_err(inst: ScpiInstrument, query: bool, params: list[str]) -> str | None:
    _query_only(query, params)
    return inst.next_error()


def _syst_err_count(inst: ScpiInstrument, query: bool, params: list[str]) -> str | None:
    _query_only(query, params)
    return str(len(inst.errors))


def _syst_version(inst: ScpiInstrument, query: bool, params: list[str]) -> str | None:
    _query_only(query, params)
    return "1999.0"


def _query_only(query: bool, params: list[str]) -> None:
    if not query:
        raise ScpiError(-113, "query only")
    if params:
        raise ScpiError(-108)


_SYSTEM: tuple[_Entry, ...] = (
    _Entry(_spec_nodes("SYSTem:ERRor[:NEXT]"), handler=_syst_err),
    _Entry(_spec_nodes("SYSTem:ERRor:COUNt"), handler=_syst_err_count),
    _Entry(_spec_nodes("SYSTem:VERSion"), handler=_syst_version),
)

# IEEE 488.2 standard event status register bits set by errors and *OPC.
_ESR_OPC, _ESR_QYE, _ESR_DDE, _ESR_EXE, _ESR_CME = 0x01, 0x04, 0x08, 0x10, 0x20


class ScpiInstrument:
    """The instrument's state and parser, independent of any transport (thread-safe)."""

    def __init__(
        self,
        model: InstrumentModel,
        serial: str = "000001",
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.model = model
        self.serial = serial
        self.on_change = on_change
        self.errors: deque[str] = deque()
        self.esr = 0
        self.ese = 0
        self.revision = 0
        self._lock = threading.RLock()
        self._entries: list[_Entry] = [_Entry(_spec_nodes(s.header), s) for s in model.settings]
        self._entries += [_Entry(_spec_nodes(r.header), reading=r) for r in model.readings]
        self._entries += _SYSTEM
        self.defaults: dict[str, Value] = {}
        for entry in self._entries:
            if entry.setting is not None:
                count = sum(node.numbered for node in entry.nodes)
                default = _typed(entry.setting, entry.setting.default)
                for suffixes in itertools.product(entry.setting.suffixes, repeat=count):
                    self.defaults[_key(entry.nodes, suffixes)] = default
        self.values: dict[str, Value] = dict(self.defaults)

    @property
    def idn(self) -> str:
        m = self.model
        return f"{m.manufacturer},{m.model},{self.serial},{m.firmware}"

    def snapshot(self) -> dict[str, Any]:
        """What the box was told: every setting by canonical short name (``CHAN1:DEL``)."""
        with self._lock:
            return {
                "model": self.model.name,
                "idn": self.idn,
                "revision": self.revision,
                "settings": dict(self.values),
            }

    # ---------------------------------------------------------------- error queue

    def push_error(self, error: ScpiError) -> None:
        """Queue an error (FIFO); when full, the newest entry becomes -350 Queue overflow."""
        with self._lock:
            if len(self.errors) >= ERROR_QUEUE_LENGTH:
                self.errors[-1] = ScpiError(-350).entry()
            else:
                self.errors.append(error.entry())
            if -199 <= error.code <= -100:
                self.esr |= _ESR_CME
            elif -299 <= error.code <= -200:
                self.esr |= _ESR_EXE
            elif -399 <= error.code <= -300:
                self.esr |= _ESR_DDE
            elif -499 <= error.code <= -400:
                self.esr |= _ESR_QYE

    def next_error(self) -> str:
        with self._lock:
            return self.errors.popleft() if self.errors else ScpiError(0).entry()

    # ---------------------------------------------------------------- parsing

    def execute(self, line: str) -> str | None:
        """Run one program message; returns the response line (None when nothing was asked).

        A command error (-1xx) abandons the rest of the line, as the parser has lost its
        place; execution errors (-2xx) only fail their own message unit.
        """
        answers: list[str] = []
        with self._lock:
            before = self.revision
            path: list[tuple[str, int | None]] = []  # of the last header, for relative ones
            for unit in _split(line.strip(), ";"):
                unit = unit.strip()
                if not unit:
                    continue
                try:
                    answer = self._unit(unit, path)
                except ScpiError as err:
                    self.push_error(err)
                    if -199 <= err.code <= -100:
                        break
                    continue
                if answer is not None:
                    answers.append(answer)
            if self.revision != before and self.on_change is not None:
                self.on_change(self.snapshot())
        return ";".join(answers) if answers else None

    def _unit(self, unit: str, path: list[tuple[str, int | None]]) -> str | None:
        """One message unit. A resolved header sets ``path`` for the next relative header,
        even when its parameters then fail (-2xx), as the parser found its place."""
        header, _, rest = unit.replace("\t", " ").partition(" ")
        rest = rest.strip()
        params = [p.strip() for p in _split(rest, ",")] if rest else []
        if header.startswith("*"):
            return self._common(header.upper(), params)
        query = header.endswith("?")
        header = header.removesuffix("?")
        absolute = header.startswith(":")
        nodes = _given_nodes(header.removeprefix(":"))
        candidates = [nodes] if absolute or not path else [(*path, *nodes), nodes]
        for candidate in candidates:
            found = self._lookup(candidate)
            if found is not None:
                entry, suffixes = found
                path[:] = candidate[:-1]
                return self._run(entry, suffixes, query, params)
        raise ScpiError(-113, unit.partition(" ")[0])

    def _lookup(
        self, given: Sequence[tuple[str, int | None]]
    ) -> tuple[_Entry, tuple[int, ...]] | None:
        for entry in self._entries:
            suffixes = _match(entry.nodes, given)
            if suffixes is not None:
                if any(s not in entry.suffixes for s in suffixes):
                    raise ScpiError(
                        -114, ":".join(f"{n}{'' if s is None else s}" for n, s in given)
                    )
                return entry, suffixes
        return None

    def _run(
        self, entry: _Entry, suffixes: tuple[int, ...], query: bool, params: list[str]
    ) -> str | None:
        if entry.handler is not None:
            return entry.handler(self, query, params)
        if entry.reading is not None:
            _query_only(query, params)
            return format_value(entry.reading.compute(self.values, suffixes))
        setting = entry.setting
        assert setting is not None
        key = _key(entry.nodes, suffixes)
        if query:
            if not params:
                return format_value(self.values[key], setting)
            if len(params) == 1 and setting.kind in ("float", "int"):
                value = _limit_keyword(setting, params[0].upper())
                if value is not None:
                    return format_value(value, setting)
            raise ScpiError(-108, ",".join(params))
        if not params:
            raise ScpiError(-109, key)
        if len(params) > 1:
            raise ScpiError(-108, ",".join(params[1:]))
        value = _typed(setting, _quantised(setting, _parse_value(setting, params[0])))
        if self.values[key] != value:
            self.values[key] = value
            self.revision += 1
        return None

    def _common(self, header: str, params: list[str]) -> str | None:
        """IEEE 488.2 common commands."""
        takes_value = header in ("*ESE", "*SRE")
        if params and not takes_value:
            raise ScpiError(-108, ",".join(params))
        if header == "*IDN?":
            return self.idn
        if header == "*RST":
            if self.values != self.defaults:
                self.values = dict(self.defaults)
                self.revision += 1
            return None
        if header == "*CLS":
            self.errors.clear()
            self.esr = 0
            return None
        if header == "*OPC":
            self.esr |= _ESR_OPC
            return None
        if header == "*OPC?":
            return "1"
        if header == "*WAI":
            return None
        if header == "*TST?":
            return "0"
        if header == "*ESR?":
            value, self.esr = self.esr, 0
            return str(value)
        if header == "*ESE?":
            return str(self.ese)
        if header == "*STB?":
            eav = 0x04 if self.errors else 0
            esb = 0x20 if self.esr & self.ese else 0
            return str(eav | esb)
        if header == "*ESE":
            if len(params) != 1:
                raise ScpiError(-109 if not params else -108)
            number = _NUMBER.fullmatch(params[0].upper())
            if number is None or number.group(2):
                raise ScpiError(-224, params[0])
            value = round(float(number.group(1)))
            if not 0 <= value <= 255:
                raise ScpiError(-222, params[0])
            self.ese = value
            return None
        raise ScpiError(-113, header)


# --------------------------------------------------------------------------------------------
# TCP server
# --------------------------------------------------------------------------------------------


class _Handler(socketserver.StreamRequestHandler):
    server: ScpiServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        try:
            for raw in self._lines():
                answer = self.server.instrument.execute(raw.decode("latin-1"))
                if answer is not None:
                    self.wfile.write(answer.encode("latin-1", errors="replace") + b"\n")
        except OSError:
            pass  # the client went away: nothing to answer

    def _lines(self) -> Iterator[bytes]:
        while True:
            raw = self.rfile.readline(MAX_LINE_BYTES)
            if not raw:
                return
            yield raw.rstrip(b"\r\n")


class ScpiServer(socketserver.ThreadingTCPServer):
    """One thread per client; the instrument serialises their messages."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], instrument: ScpiInstrument) -> None:
        self.instrument = instrument
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drivers.scpi.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    parser.add_argument("--model", default=NETWORK_EMULATOR.name, choices=sorted(MODELS))
    parser.add_argument("--serial", default="000001", help="serial number in *IDN?")
    parser.add_argument("--ready-file", type=Path, help="written (JSON: host, port, pid) once up")
    parser.add_argument("--state-out", type=Path, help="JSON image of the settings, kept current")
    args = parser.parse_args(argv)

    state_out: Path | None = args.state_out
    for path in (state_out, args.ready_file):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def on_change(snapshot: dict[str, Any]) -> None:
        if state_out is not None:
            write_json_atomic(state_out, snapshot, durable=False)

    instrument = ScpiInstrument(MODELS[args.model], args.serial, on_change)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with ScpiServer((args.host, args.port), instrument) as server:
        on_change(instrument.snapshot())
        if args.ready_file is not None:
            ready = {"host": args.host, "port": server.port, "pid": os.getpid()}
            write_json_atomic(args.ready_file, ready)
        print(f"{args.model} ({instrument.idn}) on {args.host}:{server.port}", flush=True)
        with contextlib.suppress(SystemExit):  # SIGTERM, SIGINT
            server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
