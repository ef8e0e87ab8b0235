"""Any SCPI instrument a profile needs to say a few things to (a signal generator's level,
a switch matrix's route, a spectrum analyser's marker), without a driver of its own.

The lab file names the operations in ``settings.commands`` (name -> template, list of
templates, or mapping with ``command``, ``scale``, ``values``, ``defaults``; fields are
named, e.g. ``"SOUR:POW {level_dbm}"``); a template whose header ends with ``?`` is a
query. The planner knows a driver's actions from its class, so a timeline uses the two
fixed actions: ``send`` with ``{command: <name>, <field>: <value>, ...}`` and ``query``
with ``{command: <name>, ...}`` (its details carry the answer); ``perform`` also takes
an operation's own name. Every setting is checked against the instrument's error queue.
An operation named ``init`` is sent once after opening. The safe state is
``settings.safe``, a list of operation names sent in order (their fields from
``defaults``), nothing by default.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from drivers.base import Device, DeviceContext
from drivers.errors import DriverError
from drivers.instrument import common
from drivers.instrument.common import Command, Connection
from drivers.scpi.client import ScpiIOError

SETTINGS = common.BASE_SETTINGS | {"emulator_model", "safe"}


class GenericScpi(Device):
    """A SCPI box spoken to through the lab's command map: actions ``send`` and ``query``."""

    kind = "scpi"
    actions = frozenset({"send", "query"})

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        self.conn: Connection | None = None
        self.commands: dict[str, Command] = {}
        self.safe: tuple[str, ...] = ()
        self.answers: dict[str, str] = {}
        """The last answer of every query (the counters' final values)."""
        self._op_lock = threading.RLock()

    def open(self) -> None:
        """Check the settings (all of them before anything is touched), then connect."""
        s = self.settings
        common.check_known(self.name, "settings", s, SETTINGS)
        if not s.get("commands"):
            example = '{level: "SOUR:POW {level_dbm}", level_now: "SOUR:POW?"}'
            raise DriverError(self.name, f"settings.commands: name the operations, e.g. {example}")
        self.commands = common.parse_commands(self.name, s["commands"], {}, fields=None)
        safe = s.get("safe") or []
        if not isinstance(safe, list | tuple) or not all(isinstance(n, str) for n in safe):
            raise DriverError(self.name, "settings.safe must be a list of operation names")
        for name in safe:
            command = self._command("settings.safe", name)
            if command.is_query:
                raise DriverError(self.name, f"settings.safe: {name!r} is a query")
            command.render(self.name)  # every field must have a default
        self.safe = tuple(safe)
        model = s.get("emulator_model")
        if model is not None:
            from drivers.scpi.emulator import MODELS  # the emulator's tables, only when asked

            if model not in MODELS:
                raise DriverError(self.name, f"settings.emulator_model: {model!r} is not one "
                                  f"of {', '.join(sorted(MODELS))}")  # fmt: skip
        self.conn = Connection(self.name, s, self.context, None if model is None else str(model))
        self.conn.open()
        self.conn.init(self.commands)

    def _command(self, where: str, name: Any) -> Command:
        command = self.commands.get(name) if isinstance(name, str) else None
        if command is None:
            raise DriverError(self.name, f"{where}: {name!r} is not in settings.commands "
                              f"({', '.join(sorted(self.commands)) or 'none'})")  # fmt: skip
        return command

    def _conn(self) -> Connection:
        if self.conn is None:
            raise DriverError(self.name, "not open")
        return self.conn

    # ---------------------------------------------------------------- actions

    def perform(self, action: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        values = dict(args)
        if action in ("send", "query"):
            name = values.pop("command", None)
            command = self._command(action, name)
            if command.is_query != (action == "query"):
                what, use = ("a query", "query") if command.is_query else ("a setting", "send")
                raise DriverError(self.name, f"{action}: {name!r} is {what}; use {use}")
        elif action in self.commands:
            command = self.commands[action]
        else:
            return super().perform(action, args)
        unknown = sorted(set(values) - command.fields)
        if unknown:
            raise DriverError(self.name, f"{action} {command.name}: {', '.join(unknown)} not "
                              f"used by {list(command.templates)}")  # fmt: skip
        if command.is_query:
            return self.query(command.name, **values)
        return self.send(command.name, **values)

    def send(self, name: str, **values: Any) -> dict[str, Any]:
        """Send a setting operation (every line checked); emits ``scpi.send``."""
        command = self._command("send", name)
        with self._op_lock:
            wall = time.time()
            lines = common.send(self._conn(), command, **values)
        self.context.emit("scpi.send", {"command": name, "sent": lines, "wall": wall})
        return {"command": name, "sent": lines}

    def query(self, name: str, **values: Any) -> dict[str, Any]:
        """Ask a query operation; emits ``scpi.query`` with the answer."""
        command = self._command("query", name)
        line = command.render(self.name, **values)[0]
        with self._op_lock:
            wall = time.time()
            answer = self._conn().query(line)
            self.answers[name] = answer
        self.context.emit("scpi.query", {"command": name, "sent": line, "answer": answer,
                                         "wall": wall})  # fmt: skip
        return {"command": name, "answer": answer}

    # ---------------------------------------------------------------- end of run

    def counters(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {} if self.conn is None else self.conn.counters()
        return {**out, "last_answers": dict(sorted(self.answers.items()))}

    def safe_state(self) -> None:
        """Send ``settings.safe`` in order; records a ``scpi.safe_state`` event. A dead
        connection ends the attempt; a refused command does not. Never raises."""
        try:
            sent: list[str] = []
            errors: list[str] = []
            conn = self.conn
            if self.safe and (conn is None or not conn.is_open):
                errors.append("not connected")
            elif self.safe and conn is not None:
                with self._op_lock:
                    for name in self.safe:
                        try:
                            common.send(conn, self.commands[name])
                            sent.append(name)
                        except ScpiIOError as exc:
                            errors.append(str(exc))
                            break
                        except Exception as exc:
                            errors.append(str(exc))
            common.report(self.context, "scpi.safe_state", {"sent": sent, "errors": errors})
        except Exception as exc:  # the contract: never raise
            common.report(self.context, "scpi.safe_state", {"errors": [repr(exc)]})

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
