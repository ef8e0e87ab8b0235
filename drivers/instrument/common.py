"""What the SCPI lab instruments (attenuator, power supply, generic device) share: checking
their settings and action arguments with clear errors, command maps (named operations as
templates the lab can override for its box), and :class:`Connection`, which reaches the box
over pyvisa (a VISA resource, a pyvisa-sim definition, or an instrument emulator process
the driver starts itself with ``emulate: true``), identifies it, counts what it was told
and saves the whole exchange with the run as ``transcripts/<device>.scpi.log``.
"""

from __future__ import annotations

import contextlib
import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from drivers.base import DeviceContext
from drivers.emulators import EmulatorProcess, start_emulator, state_path
from drivers.errors import DriverError
from drivers.scpi.client import DEFAULT_TIMEOUT_S, ScpiSession

BASE_SETTINGS = frozenset(
    {"resource", "backend", "emulate", "timeout_s", "idn_contains", "commands"}
)
"""Settings every instrument driver reads (each driver adds its own)."""

EMULATOR_MODULE = "drivers.scpi.emulator"
EMULATOR_ROLE = "scpi-emulator"
SIM_DIR = Path(__file__).resolve().parent / "sim"
"""The bundled pyvisa-sim definitions: ``backend: "attenuator.yaml@sim"`` finds them by name."""

INIT = "init"
"""Command map entry sent once after the box is identified (e.g. a remote-mode command)."""

T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# Settings and arguments
# --------------------------------------------------------------------------------------------


def check_known(device: str, where: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Refuse names nobody reads: a typo must fail before the run, not be ignored."""
    known = sorted(known)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise DriverError(device, f"{where}: unknown {', '.join(unknown)} "
                          f"(known: {', '.join(known) or 'none'})")  # fmt: skip


def number(
    device: str,
    where: str,
    value: Any,
    *,
    minimum: float | None = None,
    positive: bool = False,
) -> float:
    """A finite real number (bools are not numbers here), optionally bounded below."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DriverError(device, f"{where} must be a number, got {value!r}")
    if positive and value <= 0:
        raise DriverError(device, f"{where} must be positive, got {value!r}")
    if minimum is not None and value < minimum:
        raise DriverError(device, f"{where} must be at least {minimum:g}, got {value!r}")
    return float(value)


_FLAGS = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}


def flag(device: str, where: str, value: Any) -> bool:
    """A switch: YAML's true/false (which ``on``/``off`` become unquoted), 1/0 or the words."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _FLAGS:
        return _FLAGS[value.strip().lower()]
    raise DriverError(device, f"{where} must be on or off (true/false), got {value!r}")


def channel_list(device: str, raw: Any, default: Sequence[int]) -> tuple[int, ...]:
    """``settings.channels``: the channel numbers the lab lets the profile touch."""
    if raw is None:
        return tuple(default)
    if not isinstance(raw, list | tuple) or not raw:
        raise DriverError(device, "settings.channels must be a non-empty list of numbers")
    out: list[int] = []
    for ch in raw:
        if isinstance(ch, bool) or not isinstance(ch, int) or ch < 0:
            raise DriverError(device, f"settings.channels: {ch!r} is not a channel number")
        if ch in out:
            raise DriverError(device, f"settings.channels: {ch} is listed twice")
        out.append(ch)
    return tuple(out)


def channel_arg(device: str, where: str, value: Any, channels: Sequence[int]) -> int:
    """The channel of an action: one of ``channels``; may be left out when there is one."""
    if value is None:
        if len(channels) == 1:
            return channels[0]
        raise DriverError(device, f"{where}: give the channel (one of {_listed(channels)})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise DriverError(device, f"{where}: channel must be a number, got {value!r}")
    if value not in channels:
        raise DriverError(device, f"{where}: channel {value} is not one of mine "
                          f"({_listed(channels)}; see settings.channels)")  # fmt: skip
    return value


def per_channel(
    device: str,
    where: str,
    raw: Any,
    channels: Sequence[int],
    convert: Callable[[str, Any], T],
) -> dict[int, T]:
    """One value for every channel, or a mapping ``{channel: value}`` for some of them."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        value = convert(where, raw)
        return dict.fromkeys(channels, value)
    out: dict[int, T] = {}
    for key, value in raw.items():
        try:
            ch = int(key)  # YAML mapping keys may come as strings
        except (TypeError, ValueError):
            raise DriverError(device, f"{where}: {key!r} is not a channel number") from None
        if ch not in channels:
            raise DriverError(device, f"{where}: channel {ch} is not one of "
                              f"{_listed(channels)}")  # fmt: skip
        if value is not None:
            out[ch] = convert(f"{where}.{ch}", value)
    return out


def check_args(
    device: str,
    action: str,
    args: Mapping[str, Any],
    required: Iterable[str],
    optional: Iterable[str],
) -> None:
    """An action's arguments: the required ones given, nothing unknown."""
    required = list(required)
    missing = [name for name in required if args.get(name) is None]
    if missing:
        raise DriverError(device, f"{action}: give {', '.join(missing)}")
    check_known(device, f"{action} arguments", args, [*required, *optional])


def _listed(channels: Sequence[int]) -> str:
    return ", ".join(str(ch) for ch in channels) or "none"


# --------------------------------------------------------------------------------------------
# Command maps
# --------------------------------------------------------------------------------------------


class Num(float):
    """A number that prints without float noise (``0.3`` for ``0.1 + 0.2``, not
    ``0.30000000000000004``) unless the template gives a format spec of its own; ``:d``
    takes whole numbers only."""

    def __format__(self, spec: str) -> str:
        if spec.endswith("d"):
            if not self.is_integer():
                raise ValueError(f"{float(self):g} is not a whole number (format {spec!r})")
            return format(int(self), spec)
        return format(float(self), spec or ".12g")

    def __str__(self) -> str:
        return format(self, "")


_NUMBER_ANSWER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)")
_FLAG_ANSWERS = {"1": True, "0": False, "ON": True, "OFF": False}


@dataclass(frozen=True)
class Command:
    """One named operation of a command map: the templates it sends, with its options.

    ``scale`` multiplies ``{value}`` before it is sent and divides a numeric answer (a box
    that speaks mV); ``values`` translates rendered values (``{true: "1", false: "0"}``) and
    answers back; ``defaults`` fill fields an action leaves out.
    """

    name: str
    templates: tuple[str, ...]
    scale: float = 1.0
    values: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_query(self) -> bool:
        """A query is one template with a header that ends with ``?`` (``;`` chains count)."""
        return len(self.templates) == 1 and _asks(self.templates[0])

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(
            name
            for template in self.templates
            for _, name, _, _ in string.Formatter().parse(template)
            if name is not None
        )

    def render(self, device: str, **values: Any) -> list[str]:
        """The command lines; a missing field or a value the template cannot take is a
        :class:`DriverError` naming this command."""
        given = {**self.defaults, **{k: v for k, v in values.items() if v is not None}}
        missing = sorted(self.fields - set(given))
        if missing:
            raise DriverError(device, f"command {self.name!r} needs {', '.join(missing)}")
        context = {k: self._field(k, v) for k, v in given.items()}
        try:
            return [template.format(**context) for template in self.templates]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise DriverError(device, f"command {self.name!r}: cannot render "
                              f"{self.templates!r} with {given}: {exc}") from exc  # fmt: skip

    def _field(self, name: str, value: Any) -> Any:
        translated = self.values.get(_value_key(value))
        if translated is not None:
            return translated
        if isinstance(value, bool):
            return "ON" if value else "OFF"
        if isinstance(value, int | float):
            return Num(value * self.scale if name == "value" else value)
        return value

    def number(self, device: str, answer: str) -> float:
        """A numeric answer (``+1.05000E+01``, ``10.5 dB``) in the driver's unit."""
        match = _NUMBER_ANSWER.match(self._untranslated(answer))
        if match is None:
            raise DriverError(device, f"{self.name}: expected a number, got {answer!r}")
        return float(match.group(1)) / self.scale

    def flag(self, device: str, answer: str) -> bool:
        word = self._untranslated(answer).strip().upper()
        if word not in _FLAG_ANSWERS:
            raise DriverError(device, f"{self.name}: expected on/off (1/0), got {answer!r}")
        return _FLAG_ANSWERS[word]

    def _untranslated(self, answer: str) -> str:
        for key, spoken in self.values.items():
            if answer.strip().upper() == spoken.upper():
                return {"true": "1", "false": "0"}.get(key, key)
        return answer


def _asks(template: str) -> bool:
    """Whether a template has a query in it, so that its answer must be read."""
    units = (unit.strip() for unit in template.split(";"))
    return any(unit.split(maxsplit=1)[0].endswith("?") for unit in units if unit)


def _value_key(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_commands(
    device: str,
    raw: Any,
    defaults: Mapping[str, Any],
    *,
    fields: Mapping[str, frozenset[str]] | None,
    required: Iterable[str] = (),
) -> dict[str, Command]:
    """Check a command map once, when the device opens, so that a typo fails before a run.

    The lab's ``settings.commands`` is laid over ``defaults`` entry by entry (``null``
    removes one the box does not have). With ``fields`` (name -> the fields its templates
    may use), only those names exist; without, any name does (the generic device) and its
    templates may use any named field. An entry is a template, a list of templates, or a
    mapping with ``command`` (one or a list) and ``scale``, ``values``, ``defaults``.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise DriverError(device, "settings.commands must map operation names to templates")
    if fields is not None:
        check_known(device, "settings.commands", raw, fields)
    merged = {**defaults, **raw}
    out: dict[str, Command] = {}
    for name, entry in merged.items():
        if entry is None:
            continue
        where = f"settings.commands.{name}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise DriverError(device, f"{where}: a name is letters, digits and _")
        command = _command(device, where, name, entry)
        allowed = None if fields is None else fields[name]
        _check_template(device, where, command, allowed)
        out[name] = command
    missing = sorted(set(required) - set(out))
    if missing:
        raise DriverError(device, f"settings.commands: {', '.join(missing)} required")
    return out


def _command(device: str, where: str, name: str, entry: Any) -> Command:
    options: Mapping[str, Any] = entry if isinstance(entry, Mapping) else {"command": entry}
    check_known(device, where, options, ("command", "scale", "values", "defaults"))
    commands = options.get("command")
    templates = (commands,) if isinstance(commands, str) else tuple(commands or ())
    if not templates or not all(isinstance(t, str) and t.strip() for t in templates):
        raise DriverError(device, f"{where}: give a command template or a list of them")
    scale = number(device, f"{where}.scale", options.get("scale", 1.0), positive=True)
    values = options.get("values", {})
    defaults = options.get("defaults", {})
    if not isinstance(values, Mapping) or not isinstance(defaults, Mapping):
        raise DriverError(device, f"{where}: values and defaults must be mappings")
    return Command(
        name, tuple(templates), scale,
        {_value_key(k): str(v) for k, v in values.items()}, dict(defaults),
    )  # fmt: skip


def _check_template(
    device: str, where: str, command: Command, allowed: frozenset[str] | None
) -> None:
    """Known, named fields only, and a trial rendering with sample values."""
    for template in command.templates:
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise DriverError(device, f"{where}: bad template {template!r}: {exc}") from exc
        for _, name, _, _ in parsed:
            if name is None:
                continue
            if not _NAME.fullmatch(name):
                raise DriverError(device, f"{where}: use named fields ({{value}}, not "
                                  f"{{{name}}}) in {template!r}")  # fmt: skip
            if allowed is not None and name not in allowed:
                raise DriverError(device, f"{where}: unknown field {{{name}}} in {template!r} "
                                  f"(known: {', '.join(sorted(allowed)) or 'none'})")  # fmt: skip
    if len(command.templates) > 1 and any(_asks(t) for t in command.templates):
        raise DriverError(device, f"{where}: a query must be a single template (its one "
                          "answer line is the answer)")  # fmt: skip
    samples = dict.fromkeys(command.fields, 1)
    command.render(device, **{**samples, **command.defaults})


def send(conn: Connection, command: Command, **values: Any) -> list[str]:
    """Render and send a setting command (every line checked); the lines sent."""
    lines = command.render(conn.device, **values)
    for line in lines:
        conn.write(line)
    return lines


# --------------------------------------------------------------------------------------------
# The connection
# --------------------------------------------------------------------------------------------


class Connection:
    """The session to one instrument, and the emulator process when the driver started it.

    Reads the common settings: ``resource`` (a VISA resource string) with optionally
    ``backend`` (pyvisa's: ``@py`` by default, ``<file>.yaml@sim`` for pyvisa-sim), or
    ``emulate: true`` (start :mod:`drivers.scpi.emulator` with ``model``, publishing its
    state at :func:`drivers.emulators.state_path`), ``timeout_s`` and ``idn_contains``.
    """

    def __init__(
        self, device: str, settings: Mapping[str, Any], context: DeviceContext, model: str | None
    ) -> None:
        self.device = device
        self.settings = settings
        self.context = context
        self.model = model
        self.session: ScpiSession | None = None
        self.emulator: EmulatorProcess | None = None
        self.idn = ""
        self.settings_applied = 0
        self.transcript_path = context.run_dir / "transcripts" / f"{device}.scpi.log"

    def open(self) -> None:
        """Check the settings, start the emulator if asked, connect and identify the box."""
        settings = self.settings
        timeout_s = number(self.device, "settings.timeout_s",
                           settings.get("timeout_s", DEFAULT_TIMEOUT_S), positive=True)  # fmt: skip
        emulate = flag(self.device, "settings.emulate", settings.get("emulate", False))
        given = settings.get("resource")
        if emulate and (given is not None or settings.get("backend") is not None):
            raise DriverError(self.device, "settings: give resource (and backend) or emulate, "
                              "not both")  # fmt: skip
        backend = self._backend(settings.get("backend"))
        if emulate:
            resource = self._start_emulator()
        elif isinstance(given, str) and given.strip():
            resource = given.strip()
        else:
            raise DriverError(self.device, "settings.resource (a VISA resource string such as "
                              "TCPIP::host::5025::SOCKET) is required unless settings.emulate "
                              "is true")  # fmt: skip
        session = ScpiSession(resource, device=self.device, timeout_s=timeout_s, backend=backend)
        self.session = session
        session.open()
        self.idn = session.query("*IDN?")
        expected = settings.get("idn_contains")
        if len(self.idn.split(",")) < 4 or (expected and str(expected) not in self.idn):
            raise DriverError(
                self.device,
                f"unexpected *IDN? answer {self.idn!r}"
                + (f" (expected it to contain {expected!r})" if expected else ""),
                session.last_exchanges(),
            )
        session.write("*CLS", check=False)  # start from an empty error queue
        session.errors()  # and drain it, for boxes whose *CLS does not (pyvisa-sim)
        self.context.emit("scpi.identified", {"resource": resource, "idn": self.idn})

    def _backend(self, raw: Any) -> str:
        if raw is None:
            return "@py"
        if not isinstance(raw, str) or not raw.strip():
            raise DriverError(self.device, "settings.backend must be a pyvisa backend such as "
                              "@py or <definitions>.yaml@sim")  # fmt: skip
        text: str = raw.strip()
        if not text.endswith("@sim") or text == "@sim":
            return text
        path = Path(text.removesuffix("@sim")).expanduser()
        if not path.exists() and not path.is_absolute() and (SIM_DIR / path).is_file():
            path = SIM_DIR / path
        if not path.is_file():
            raise DriverError(self.device, f"settings.backend: no pyvisa-sim definitions at "
                              f"{path} (bundled: {', '.join(_bundled())})")  # fmt: skip
        return f"{path.resolve()}@sim"

    def _start_emulator(self) -> str:
        if self.model is None:
            raise DriverError(self.device, "settings.emulate needs settings.emulator_model")
        args = [
            "--host", "127.0.0.1", "--port", "0", "--model", self.model, "--serial", self.device,
            "--state-out", str(state_path(self.context.run_dir, self.device)),
        ]  # fmt: skip
        self.emulator = start_emulator(
            self.context, self.device, EMULATOR_MODULE, args, role=EMULATOR_ROLE
        )
        try:
            port = int(self.emulator.ready["port"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DriverError(self.device, f"the emulator's ready file has no port: "
                              f"{self.emulator.ready}") from exc  # fmt: skip
        return f"TCPIP::127.0.0.1::{port}::SOCKET"

    # ---------------------------------------------------------------- exchanges

    def live(self) -> ScpiSession:
        if self.session is None or not self.session.is_open:
            raise DriverError(self.device, "not open")
        return self.session

    @property
    def is_open(self) -> bool:
        return self.session is not None and self.session.is_open

    def write(self, command: str) -> None:
        """A setting, checked against the error queue (raises with the box's error text)."""
        self.live().write(command)
        self.settings_applied += 1

    def query(self, command: str) -> str:
        return self.live().query(command)

    def init(self, commands: Mapping[str, Command]) -> None:
        if INIT in commands:
            send(self, commands[INIT])

    # ---------------------------------------------------------------- end of run

    def counters(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "idn": self.idn,
            "settings_applied": self.settings_applied,
            "transcript": str(self.transcript_path),
        }
        session = self.session
        if session is not None:
            out |= {
                "resource": session.resource,
                "exchanges": len(session.transcript),
                "instrument_errors": session.instrument_errors,
            }
        if self.emulator is not None:
            out["emulator_state"] = str(state_path(self.context.run_dir, self.device))
        return out

    def close(self) -> None:
        """Save the transcript, disconnect, stop the emulator if this driver started it.
        Never raises (a failed transcript is reported as an event)."""
        session, self.session = self.session, None
        if session is not None:
            try:
                session.save_transcript(self.transcript_path)
            except OSError as exc:
                report(self.context, "scpi.transcript_failed", {"error": str(exc)})
            session.close()
        emulator, self.emulator = self.emulator, None
        if emulator is not None:
            emulator.stop()


def report(context: DeviceContext, name: str, fields: Mapping[str, Any]) -> None:
    """Emit from a path that must not raise (safe state, close)."""
    with contextlib.suppress(Exception):  # a failing event log must not stop a safe state
        context.emit(name, fields)


def _bundled() -> list[str]:
    return sorted(p.name for p in SIM_DIR.glob("*.yaml"))
