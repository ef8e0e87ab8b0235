"""A TETRA terminal (MS) emulator that serves the PEI (ETSI EN 300 392-5 AT commands) on a
pty or a TCP port and talks to the emulated SwMI (:mod:`drivers.tetra.swmi`) for everything
that goes over the air, so that the PEI driver meets a real line protocol, real timing and
real faults.

Run: ``python -m drivers.tetra.terminal_emulator --swmi HOST:PORT --issi N --mcc M --mnc N
(--pty-link PATH | --tcp-port N) --ready-file F [--state-out S] [--groups G1,G2]
[--garble-every N] [--interleave-urcs] [--power-state FILE --power-output-key OUTP1
--power-voltage-key SOUR1:VOLT --min-voltage-v 3.3]``. With ``--pty-link`` both ends of a
pty are raw and PATH is a symlink to the slave (removed on exit); with ``--tcp-port`` it
serves 127.0.0.1 (0 = any free port), one client at a time (a second is disconnected). The
ready file says ``{"pid", "url"}`` (the link path, or ``socket://127.0.0.1:PORT``).

The PEI as served: commands end with CR (LF tolerated); each answer line is framed
``\\r\\n<line>\\r\\n``; finals ``OK``, ``ERROR`` or ``+CME ERROR: <n>`` (``AT+CMEE=1``; 2 gives
the table's text; default 0 = plain ``ERROR``) with the PEI error table of
:data:`drivers.tetra.tables.PEI_ERRORS`; unknown commands answer ``ERROR``, lines not starting
with ``AT`` are ignored. Echo is on after boot (``ATE0``/``ATE1``). ``AT+CTOM=0`` is the only
mode served: any DMO mode answers ``+CME ERROR: 4`` (not supported; this MT has no DMO at
all, so 40 "not in DMO" does not apply). ``AT+CTSP`` accepts and stores any syntactically
valid service routing (the SvxLink init set included). ``AT+CNUMF?`` gives ``+CNUMF:
6,<extended TSI>``. ``AT+CTGS=<type>,<gssi>[,...]`` replaces the group set (type 0 detaches
all; the scan levels are stored, not acted on); the first group of ``--groups`` is selected,
the others scanned. ``AT+CREG?`` gives ``+CREG: <n>,<stat>`` with the TETRA stat values;
``AT+CREG=1`` adds the URC ``+CREG: <stat>``. ``AT+CTSDC`` stores the service definition
(defaults: SvxLink's group speech call); only speech group calls (AI service 0, comms type
1-3) can be dialled, anything else answers ``+CME ERROR: 4``. ``ATD<gssi>`` answers OK once the
SwMI took the set-up, then ``+CTCC`` (and ``+CTXG`` if RqTx was set), or ``+CTCR`` with the
SwMI's cause; members get ``+CTICN`` (call status 0, also on late entry). ``ATH`` releases
every call of the terminal (``+CTCR: <cc>,1`` follows). ``AT+CTXD``/``AT+CUTXC`` demand and
cease transmission (grants arrive as ``+CTXG``; others get ``+CTXG: <cc>,3,0,0,3,<TPI>`` and
``+CDTXC: <cc>,0``). ``AT+CMGS=<called>,<bits><CR><hex><Ctrl-Z>`` answers ``+CMGS:
<instance>,<4|5>,<ref>`` and OK once the SwMI delivered (4) or could not (5); the reference is
the SDS-TL message reference of a text SDS, else 0; user data not matching the length answers
32, Ctrl-Z without a command 36, no Ctrl-Z within 5 s 37. Incoming SDS: ``+CTSDSR: <AI
service>,<calling SSI>,0,<called SSI>,0,<bits>`` then the hex line. CC instances count from 1
per boot. A lost SwMI releases every call with cause 14 and the terminal searches again.

Faults: ``--garble-every N`` writes a line of non-ASCII noise before every N-th answer or
URC; ``--interleave-urcs`` writes URCs that fall due while a command is answered between its
information lines and its final result (and waits up to 0.5 s for the URCs its own command
causes), instead of after the final result. Power coupling (``--power-state``, the JSON state
file of the emulated power supply, ``{"settings": {"OUTP1": true, "SOUR1:VOLT": 12.0}}``, polled
every 50 ms; no file = powered): powered off the terminal is silent and leaves the SwMI;
powered on again it reboots (all settings back to their defaults) and re-registers.
``--state-out`` keeps a JSON image of the terminal's state, including ``lines_out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.files import write_json_atomic
from drivers.ptyport import PtyEndpoint
from drivers.tetra import tables

POWER_POLL_S = 0.05
RECONNECT_S = 0.5
DATA_TIMEOUT_S = 5.0
INTERLEAVE_WAIT_S = 0.5
STATE_DEBOUNCE_S = 0.05
MAX_COMMAND_BYTES = 4096
ABSENT = -1
"""An optional numeric parameter that was left out (all PEI numbers are >= 0)."""
NOISE = b"\xff\x9c\xa7\xe3\xfe\x81"
"""A line of noise as a disturbed serial line produces: bytes a 7-bit ASCII reader rejects."""
_PLUS_COMMAND = re.compile(r"^\+([A-Z0-9]+)(=\?|\?|=)?(.*)$", re.IGNORECASE | re.DOTALL)
_HEX = re.compile(r"^[0-9A-Fa-f]*$")

Answer = tuple[list[str], str]


class PeiError(Exception):
    """A command that ends in ``+CME ERROR: <code>``."""

    def __init__(self, code: int) -> None:
        super().__init__(tables.PEI_ERRORS.get(code, str(code)))
        self.code = code


class SwmiDown(Exception):
    """The SwMI is not reachable (or the request was cut by the link going down)."""


@dataclass
class Command:
    line: str
    data: str | None = None
    kind: str = "line"
    """``line``, ``orphan_data`` (Ctrl-Z without AT+CMGS) or ``data_timeout``."""


@dataclass
class CallState:
    cc: int
    gssi: int
    own: bool
    call_id: int | None = None
    transmitting: bool = False


@dataclass
class _Request:
    future: asyncio.Future[dict[str, Any]]
    hook: Callable[[dict[str, Any]], None] | None


@dataclass
class Settings:
    """What AT commands set; back to these defaults at every boot."""

    echo: bool = True
    cmee: int = 0
    creg_urc: int = 0
    service: dict[str, int] = field(
        default_factory=lambda: dict(
            zip(tables.CTSDC_FIELDS, tables.GROUP_CALL_SERVICE, strict=True)
        )
    )
    sds_service: tuple[int, int] = (tables.AI_SERVICE_SDS_TYPE4, tables.ID_TYPE_SSI)
    ctsp: list[tuple[int, ...]] = field(default_factory=list)


class Terminal:
    """One emulated MS: the PEI side, the SwMI link and the power coupling."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        host, _, port = str(args.swmi).rpartition(":")
        self.swmi_host, self.swmi_port = host or "127.0.0.1", int(port)
        self.issi: int = args.issi
        self.mcc: int = args.mcc
        self.mnc: int = args.mnc
        self.tsi = tables.extended_tsi(self.mcc, self.mnc, self.issi)
        self.initial_groups: list[int] = args.groups
        self.garble_every: int = args.garble_every or 0
        self.interleave: bool = args.interleave_urcs
        self.powered = False
        self.settings = Settings()
        self.creg_stat = tables.REG_NO_NETWORK
        self.groups: dict[int, int] = {}
        self.calls: dict[int, CallState] = {}
        self.counts = {
            "boots": 0,
            "commands": 0,
            "lines_out": 0,
            "noise_lines": 0,
            "dropped_bytes": 0,
            "sds_sent": 0,
            "sds_received": 0,
        }
        self._cc = itertools.count(1)
        self._sds_instance = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._requests: dict[int, _Request] = {}
        self._link: asyncio.StreamWriter | None = None
        self._link_task: asyncio.Task[None] | None = None
        self._commands: asyncio.Queue[Command] = asyncio.Queue()
        self._answering = False
        self._held: list[list[str]] = []
        self._held_changed = asyncio.Event()
        self._units = 0
        self._buffer = bytearray()
        self._data_command: str | None = None
        self._data_timer: asyncio.TimerHandle | None = None
        self._state_due: asyncio.TimerHandle | None = None
        self._writer: Callable[[bytes], None] | None = None
        self.url = ""

    # ================================================================== PEI output

    def attach_output(self, writer: Callable[[bytes], None] | None) -> None:
        self._writer = writer

    def _raw(self, data: bytes) -> None:
        if self.powered and self._writer is not None:
            self._writer(data)

    def _write_unit(self, lines: Sequence[str]) -> None:
        """Write lines that belong together (an answer line, a URC and its payload)."""
        if not self.powered:
            return
        self._units += 1
        out = b""
        if self.garble_every and self._units % self.garble_every == 0:
            out += NOISE + b"\r\n"
            self.counts["noise_lines"] += 1
            self.counts["lines_out"] += 1
        for line in lines:
            out += b"\r\n" + line.encode("latin-1", errors="replace") + b"\r\n"
            self.counts["lines_out"] += 1
        self._raw(out)
        self.state_changed()

    def urc(self, *lines: str) -> None:
        """An unsolicited result code (with the lines that belong to it)."""
        if not self.powered:
            return
        if self._answering:
            self._held.append(list(lines))
            self._held_changed.set()
        else:
            self._write_unit(lines)

    def _flush_held(self) -> None:
        held, self._held = self._held, []
        for unit in held:
            self._write_unit(unit)

    async def _settle(self, held_at_least: int) -> None:
        """In interleave mode: give the URCs the command itself causes time to fall due."""
        if not self.interleave:
            return
        deadline = time.monotonic() + INTERLEAVE_WAIT_S
        while len(self._held) < held_at_least and time.monotonic() < deadline:
            self._held_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._held_changed.wait(), deadline - time.monotonic())

    # ================================================================== PEI input

    def feed(self, data: bytes) -> None:
        """Bytes from the TE: split into command lines (and AT+CMGS user data)."""
        if not self.powered:
            return
        for byte in data:
            if self._data_command is not None:
                if byte == 0x1A:
                    command = self._data_command
                    payload = self._buffer.decode("latin-1")
                    self._end_data_mode()
                    self._commands.put_nowait(Command(command, data=payload))
                elif len(self._buffer) < MAX_COMMAND_BYTES:
                    self._buffer.append(byte)
            elif byte in (0x0D, 0x0A):
                line = self._buffer.decode("latin-1").strip()
                self._buffer.clear()
                if line:
                    self._line(line)
            elif byte == 0x1A:
                self._buffer.clear()
                self._commands.put_nowait(Command("", kind="orphan_data"))
            elif len(self._buffer) < MAX_COMMAND_BYTES:
                self._buffer.append(byte)

    def _line(self, line: str) -> None:
        if self.settings.echo:
            self._raw(line.encode("latin-1") + b"\r\n")
            self.counts["lines_out"] += 1
        if line.upper().startswith("AT+CMGS="):
            self._data_command = line
            loop = asyncio.get_running_loop()
            self._data_timer = loop.call_later(DATA_TIMEOUT_S, self._data_timeout)
        else:
            self._commands.put_nowait(Command(line))

    def _end_data_mode(self) -> None:
        self._data_command = None
        self._buffer.clear()
        if self._data_timer is not None:
            self._data_timer.cancel()
            self._data_timer = None

    def _data_timeout(self) -> None:
        command = self._data_command or ""
        self._data_timer = None
        self._end_data_mode()
        self._commands.put_nowait(Command(command, kind="data_timeout"))

    def reset_input(self) -> None:
        self._end_data_mode()
        while not self._commands.empty():
            self._commands.get_nowait()

    async def command_loop(self) -> None:
        while True:
            command = await self._commands.get()
            if not self.powered:
                continue
            self.counts["commands"] += 1
            self._answering = True
            self._held_changed.clear()
            try:
                answer = await self.execute(command)
            except PeiError as exc:
                answer = ([], self._error_final(exc.code))
            except SwmiDown:
                answer = ([], self._error_final(tables.E_OUT_OF_SERVICE))
            except Exception as exc:  # a bug must not kill the terminal: answer and log it
                print(f"command {command.line!r} failed: {exc!r}", flush=True)
                answer = ([], "ERROR")
            finally:
                if not self.powered:
                    self._answering = False
                    self._held = []
            if not self.powered:
                continue
            if answer is not None:
                lines, final = answer
                for line in lines:
                    self._write_unit([line])
                if self.interleave:
                    self._flush_held()
                self._write_unit([final])
            self._answering = False
            self._flush_held()

    def _error_final(self, code: int) -> str:
        if self.settings.cmee == 0:
            return "ERROR"
        if self.settings.cmee == 2:
            return f"+CME ERROR: {tables.PEI_ERRORS.get(code, code)}"
        return f"+CME ERROR: {code}"

    # ================================================================== commands

    async def execute(self, command: Command) -> Answer | None:
        if command.kind == "orphan_data":
            raise PeiError(tables.E_DATA_WITHOUT_CMGS)
        if command.kind == "data_timeout":
            raise PeiError(tables.E_DATA_TIMEOUT)
        line = command.line
        if line[:2].upper() != "AT":
            return None  # as a modem does: not a command
        body = line[2:].strip()
        upper = body.upper()
        if upper == "":
            return [], "OK"
        if upper in ("E", "E0", "E1"):
            self.settings.echo = upper == "E1"
            return [], "OK"
        if upper in ("Z", "&F"):
            self.settings = Settings()
            return [], "OK"
        if upper in ("I", "I0"):
            return ["EUCCS testbed TETRA terminal emulator", f"ITSI {self.tsi}"], "OK"
        if upper in ("H", "H0"):
            return await self.hangup()
        if upper == "A":
            raise PeiError(tables.E_NOT_ALLOWED)  # group calls need no answer; no individual
        if upper.startswith("D"):
            return await self.dial(body[1:].strip().rstrip(";"))
        match = _PLUS_COMMAND.match(body)
        if match is None:
            return [], "ERROR"
        name, form, rest = match.group(1).upper(), match.group(2) or "", match.group(3)
        handler = self._handlers().get(name)
        if handler is None:
            return [], "ERROR"
        return await handler(form, rest.strip(), command.data)

    def _handlers(
        self,
    ) -> dict[str, Callable[[str, str, str | None], Awaitable[Answer]]]:
        return {
            "CMEE": self.cmd_cmee,
            "CTOM": self.cmd_ctom,
            "CTSP": self.cmd_ctsp,
            "CNUMF": self.cmd_cnumf,
            "CTGS": self.cmd_ctgs,
            "CREG": self.cmd_creg,
            "CTSDC": self.cmd_ctsdc,
            "CTSDS": self.cmd_ctsds,
            "CTXD": self.cmd_ctxd,
            "CUTXC": self.cmd_cutxc,
            "CMGS": self.cmd_cmgs,
        }

    async def cmd_cmee(self, form: str, rest: str, data: str | None) -> Answer:
        if form == "?":
            return [f"+CMEE: {self.settings.cmee}"], "OK"
        if form == "=?":
            return ["+CMEE: (0-2)"], "OK"
        (mode,) = _ints(rest, [(0, 2)], required=1) if form == "=" else [0]
        self.settings.cmee = mode
        return [], "OK"

    async def cmd_ctom(self, form: str, rest: str, data: str | None) -> Answer:
        if form == "?":
            return ["+CTOM: 0"], "OK"
        if form == "=?":
            return ["+CTOM: (0)"], "OK"
        if form != "=":
            raise PeiError(tables.E_SYNTAX)
        mode, _dm_type = _ints(rest, [(0, 6), (0, 6)], required=1, defaults=(0, 0))
        if mode != 0:
            raise PeiError(tables.E_NOT_SUPPORTED)
        return [], "OK"

    async def cmd_ctsp(self, form: str, rest: str, data: str | None) -> Answer:
        if form == "?":
            return [f"+CTSP: {','.join(map(str, p))}" for p in self.settings.ctsp], "OK"
        if form == "=?":
            return [f"+CTSP: (0-{tables.SERVICE_PROFILE_MAX}),(0-3),(0-255),(0-6)"], "OK"
        if form != "=":
            raise PeiError(tables.E_SYNTAX)
        values = _ints(
            rest,
            [(0, tables.SERVICE_PROFILE_MAX), (0, 3), (0, 255), (0, 6), (0, 65535)],
            required=2,
        )
        routing = tuple(v for v in values if v != ABSENT)
        if routing not in self.settings.ctsp:
            self.settings.ctsp.append(routing)
        return [], "OK"

    async def cmd_cnumf(self, form: str, rest: str, data: str | None) -> Answer:
        if form in ("?", ""):
            return [f"+CNUMF: {tables.NUM_TYPE_INDIVIDUAL_EXTENDED},{self.tsi}"], "OK"
        raise PeiError(tables.E_NOT_SUPPORTED)

    async def cmd_creg(self, form: str, rest: str, data: str | None) -> Answer:
        if form == "?":
            return [f"+CREG: {self.settings.creg_urc},{self.creg_stat}"], "OK"
        if form == "=?":
            return ["+CREG: (0-1)"], "OK"
        (mode,) = _ints(rest, [(0, 1)], required=1) if form == "=" else [0]
        self.settings.creg_urc = mode
        return [], "OK"

    async def cmd_ctgs(self, form: str, rest: str, data: str | None) -> Answer:
        if form == "?":
            if not self.groups:
                return ["+CTGS: 0"], "OK"
            return [f"+CTGS: {kind},{self._gtsi(gssi)}" for gssi, kind in self.groups.items()], "OK"
        if form == "=?":
            return ["+CTGS: (0-7)"], "OK"
        if form != "=":
            raise PeiError(tables.E_SYNTAX)
        params = rest.split(",")
        wanted: dict[int, int] = {}
        if len(params) == 1 and params[0].strip() == "0":
            params.append("")
        if len(params) % 2:
            raise PeiError(tables.E_SYNTAX)
        for kind_text, identity in zip(params[::2], params[1::2], strict=True):
            kind = _int(kind_text, 0, 7)
            if kind == 0:
                wanted = {}
                break
            wanted[_identity(identity)] = kind
        self._require_service()
        for gssi in [g for g in self.groups if g not in wanted]:
            await self._request_ok("detach", gssi=gssi)
            del self.groups[gssi]
        for gssi, kind in wanted.items():
            if gssi not in self.groups:
                await self._request_ok("attach", gssi=gssi)
            self.groups[gssi] = kind
        self.state_changed()
        return [], "OK"

    async def cmd_ctsdc(self, form: str, rest: str, data: str | None) -> Answer:
        service = self.settings.service
        if form == "?":
            return ["+CTSDC: " + ",".join(str(service[f]) for f in tables.CTSDC_FIELDS)], "OK"
        if form == "=?":
            return [
                "+CTSDC: (0-13),(0-5),(0),(0-1),(0-1),(0-1),(0-3),(1-4),(0-1),(0-15),(0-2)"
            ], "OK"
        if form != "=":
            raise PeiError(tables.E_SYNTAX)
        ranges = [
            (0, 13),
            (0, 5),
            (0, 65535),
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 3),
            (0, 4),
            (0, 1),
            (0, tables.CALL_PRIORITY_MAX),
            (0, 2),
        ]
        defaults = tables.GROUP_CALL_SERVICE
        values = _ints(rest, ranges, required=2, defaults=defaults)
        self.settings.service = dict(zip(tables.CTSDC_FIELDS, values, strict=True))
        return [], "OK"

    async def cmd_ctsds(self, form: str, rest: str, data: str | None) -> Answer:
        if form == "?":
            return [f"+CTSDS: {self.settings.sds_service[0]},{self.settings.sds_service[1]}"], "OK"
        if form == "=?":
            return ["+CTSDS: (9-13),(0-5),(0),(0-3),(0-1)"], "OK"
        if form != "=":
            raise PeiError(tables.E_SYNTAX)
        values = _ints(rest, [(9, 13), (0, 5), (0, 65535), (0, 3), (0, 1)], required=2)
        self.settings.sds_service = (values[0], values[1])
        return [], "OK"

    async def dial(self, number: str) -> Answer:
        if len(number) > 25:
            raise PeiError(tables.E_DIAL_TOO_LONG)
        if not number or not number.isdigit():
            raise PeiError(tables.E_DIAL_INVALID)
        service = self.settings.service
        if service["ai_service"] != tables.AI_SERVICE_SPEECH or service["comms_type"] == 0:
            raise PeiError(tables.E_NOT_SUPPORTED)  # only speech group calls are emulated
        gssi = _identity(number)
        self._require_service()
        cc = self._new_cc()
        call = CallState(cc, gssi, own=True)
        self.calls[cc] = call

        def connected(reply: dict[str, Any]) -> None:
            # runs in the SwMI reader before the notifications that follow the answer
            if not reply.get("ok"):
                self.calls.pop(cc, None)
                self.urc(f"+CTCR: {cc},{int(reply.get('cause', tables.CAUSE_NOT_REACHABLE))}")
                return
            call_id = int(reply["call"])
            known = self._cc_of(call_id)
            target = call
            if known is not None and known != cc:
                self.calls.pop(cc, None)  # joined a call this terminal already knew
                target = self.calls[known]
            target.call_id = call_id
            s = service
            self.urc(
                f"+CTCC: {target.cc},{s['hook']},{s['simplex']},{s['ai_service']},"
                f"{s['e2ee']},{s['comms_type']},{s['slots_codec']}"
            )

        rqtx = bool(service["rqtx"])
        try:
            await self.request(
                "setup",
                connected,
                gssi=gssi,
                priority=service["priority"],
                rqtx=rqtx,
                tx_priority=tables.demand_priority_for_call(service["priority"]),
            )
        except SwmiDown:
            self.calls.pop(cc, None)
            raise
        await self._settle(2 if rqtx else 1)
        return [], "OK"

    async def hangup(self) -> Answer:
        for call in list(self.calls.values()):
            if call.call_id is not None and self._link is not None:
                with contextlib.suppress(SwmiDown):
                    await self.request("release", None, call=call.call_id)
        await self._settle(1 if self.calls else 0)
        return [], "OK"

    async def cmd_ctxd(self, form: str, rest: str, data: str | None) -> Answer:
        if form != "=":
            raise PeiError(tables.E_SYNTAX if form else tables.E_NOT_SUPPORTED)
        cc, priority, _e2ee = _ints(rest, [(0, 65535), (0, 3), (0, 1)], required=2)
        call = self._call(cc)
        self._require_service()
        await self._request_ok("demand", call=call.call_id, priority=priority)
        await self._settle(1)
        return [], "OK"

    async def cmd_cutxc(self, form: str, rest: str, data: str | None) -> Answer:
        if form != "=":
            raise PeiError(tables.E_SYNTAX if form else tables.E_NOT_SUPPORTED)
        (cc,) = _ints(rest, [(0, 65535)], required=1)
        call = self._call(cc)
        self._require_service()
        call.transmitting = False
        await self._request_ok("cease", call=call.call_id)
        return [], "OK"

    async def cmd_cmgs(self, form: str, rest: str, data: str | None) -> Answer:
        if form != "=":
            raise PeiError(tables.E_SYNTAX)
        params = rest.split(",")
        if len(params) != 2:
            raise PeiError(tables.E_SYNTAX)
        called = params[0].strip()
        if len(called) > 25:
            raise PeiError(tables.E_DIAL_TOO_LONG)
        to = _identity(called)
        bits = _int(params[1], 0, tables.SDS_MAX_BITS)
        payload = "".join((data or "").split())
        digits = len(payload)
        if not _HEX.match(payload) or digits not in ((bits + 3) // 4, 2 * ((bits + 7) // 8)):
            raise PeiError(tables.E_DATA_DECODING)
        self._require_service()
        instance = next(self._sds_instance)
        reply = await self.request(
            "sds",
            None,
            to=to,
            ai_service=self.settings.sds_service[0],
            bits=bits,
            hex=payload.upper(),
        )
        status = int(reply.get("status", tables.SDS_FAILED)) if reply.get("ok") else 5
        self.counts["sds_sent"] += 1
        return [f"+CMGS: {instance},{status},{_sds_reference(payload)}"], "OK"

    # ------------------------------------------------------------------ helpers

    def _new_cc(self) -> int:
        return next(self._cc)

    def _cc_of(self, call_id: int) -> int | None:
        return next((c.cc for c in self.calls.values() if c.call_id == call_id), None)

    def _call(self, cc: int) -> CallState:
        call = self.calls.get(cc)
        if call is None or call.call_id is None:
            raise PeiError(tables.E_NOT_ALLOWED)  # no call with that CC instance
        return call

    def _gtsi(self, gssi: int) -> str:
        return tables.extended_tsi(self.mcc, self.mnc, gssi)

    def _require_service(self) -> None:
        if self._link is None or self.creg_stat not in (tables.REG_HOME, tables.REG_VISITED):
            raise PeiError(tables.E_OUT_OF_SERVICE)

    async def _request_ok(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(op, None, **fields)
        if not reply.get("ok"):
            raise PeiError(tables.E_NOT_ALLOWED)
        return reply

    # ================================================================== SwMI link

    async def request(
        self, op: str, hook: Callable[[dict[str, Any]], None] | None, **fields: Any
    ) -> dict[str, Any]:
        writer = self._link
        if writer is None or writer.is_closing():
            raise SwmiDown(op)
        request_id = next(self._request_ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests[request_id] = _Request(future, hook)
        try:
            writer.write(json.dumps({"op": op, "id": request_id, **fields}).encode() + b"\n")
            return await future
        except (ConnectionError, OSError) as exc:
            raise SwmiDown(str(exc)) from exc
        finally:
            self._requests.pop(request_id, None)

    async def link_loop(self) -> None:
        """Connect, register, attach; on loss release the calls and search again."""
        while self.powered:
            self.creg_stat = tables.REG_SEARCHING
            try:
                reader, writer = await asyncio.open_connection(self.swmi_host, self.swmi_port)
            except OSError:
                self._set_creg(tables.REG_NO_NETWORK)
                await asyncio.sleep(RECONNECT_S)
                continue
            self._link = writer
            read_task = asyncio.create_task(self._read_swmi(reader))
            rejected = False
            try:
                reply = await self.request(
                    "register", None, issi=self.issi, mcc=self.mcc, mnc=self.mnc
                )
                if reply.get("ok"):
                    self._set_creg(int(reply.get("stat", tables.REG_HOME)))
                    for gssi in list(self.groups):
                        await self.request("attach", None, gssi=gssi)
                else:
                    rejected = True
                    self._set_creg(tables.REG_REJECTED)
                await read_task
            except SwmiDown:
                pass
            finally:
                read_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await read_task
                self._drop_link()
            if rejected:
                return  # a rejected MS stays off the network until it is switched on again
            if self.powered:
                self._set_creg(tables.REG_NO_NETWORK)
                await asyncio.sleep(RECONNECT_S)

    def _drop_link(self) -> None:
        writer, self._link = self._link, None
        if writer is not None:
            writer.close()
        for request in self._requests.values():
            if not request.future.done():
                request.future.set_exception(SwmiDown("link lost"))
        for call in list(self.calls.values()):
            self.urc(f"+CTCR: {call.cc},{tables.CAUSE_SWMI_DISCONNECT}")
        self.calls.clear()

    def _set_creg(self, stat: int) -> None:
        changed = stat != self.creg_stat
        self.creg_stat = stat
        if changed and self.settings.creg_urc:
            self.urc(f"+CREG: {stat}")
        self.state_changed()

    async def _read_swmi(self, reader: asyncio.StreamReader) -> None:
        while True:
            raw = await reader.readline()
            if not raw:
                return
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if "re" in message:
                request = self._requests.get(message.get("re"))
                if request is not None and not request.future.done():
                    if request.hook is not None:
                        request.hook(message)
                    request.future.set_result(message)
            elif "ev" in message:
                self._swmi_event(message)
            self.state_changed()

    def _swmi_event(self, event: dict[str, Any]) -> None:
        kind = event.get("ev")
        call_id = event.get("call")
        cc = self._cc_of(call_id) if isinstance(call_id, int) else None
        if kind == "incoming" and isinstance(call_id, int):
            if cc is None:
                cc = self._new_cc()
                self.calls[cc] = CallState(cc, int(event["gssi"]), own=False, call_id=call_id)
            s = self.settings.service
            self.urc(
                f"+CTICN: {cc},0,{tables.AI_SERVICE_SPEECH},{tables.ID_TYPE_EXTENDED_TSI},"
                f"{event.get('caller_tsi', '')},{s['hook']},{s['simplex']},0,1,"
                f"{s['slots_codec']},{tables.ID_TYPE_EXTENDED_TSI},"
                f"{self._gtsi(int(event['gssi']))},{int(event.get('priority', 0))}"
            )
        elif kind == "tx" and cc is not None:
            grant = int(event["grant"])
            call = self.calls[cc]
            if grant == tables.TX_GRANTED:
                call.transmitting = True
            elif grant == tables.TX_GRANTED_TO_ANOTHER:
                call.transmitting = False
            line = f"+CTXG: {cc},{grant},0,0"
            if "tpi_tsi" in event:
                line += f",{tables.TPI_TYPE_EXTENDED_TSI},{event['tpi_tsi']}"
            self.urc(line)
        elif kind == "ceased" and cc is not None:
            self.urc(f"+CDTXC: {cc},0")
        elif kind == "released" and cc is not None:
            self.calls.pop(cc, None)
            self.urc(f"+CTCR: {cc},{int(event.get('cause', 0))}")
        elif kind == "sds":
            self.counts["sds_received"] += 1
            self.urc(
                f"+CTSDSR: {int(event.get('ai_service', 12))},{int(event['from'])},"
                f"{tables.ID_TYPE_SSI},{self.issi},{tables.ID_TYPE_SSI},{int(event['bits'])}",
                str(event.get("hex", "")),
            )

    # ================================================================== power

    def power_on(self) -> None:
        """Boot: defaults, groups from the command line, then find the SwMI."""
        self.powered = True
        self.counts["boots"] += 1
        self.settings = Settings()
        self._cc = itertools.count(1)
        self._sds_instance = itertools.count(1)
        self.calls.clear()
        self.groups = {g: (1 if i == 0 else 2) for i, g in enumerate(self.initial_groups)}
        self.creg_stat = tables.REG_SEARCHING
        self.reset_input()
        self._link_task = asyncio.create_task(self.link_loop())
        self.state_changed()

    async def power_off(self) -> None:
        """Silence: no answers, no URCs, off the SwMI (which deregisters it)."""
        self.powered = False
        self.reset_input()
        self._held = []
        task, self._link_task = self._link_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._drop_link()
        self.calls.clear()
        self.creg_stat = tables.REG_NO_NETWORK
        self.state_changed()

    def power_wanted(self) -> bool:
        path: Path | None = self.args.power_state
        if path is None:
            return True
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return True  # no coupling yet: powered
        except (OSError, ValueError):
            return self.powered  # being replaced: keep the last state
        settings = state.get("settings", state) if isinstance(state, dict) else {}
        output = settings.get(self.args.power_output_key, True)
        voltage = settings.get(self.args.power_voltage_key)
        try:
            volts_ok = voltage is None or float(voltage) >= self.args.min_voltage_v
        except (TypeError, ValueError):
            volts_ok = False
        return bool(output) and volts_ok

    async def power_loop(self) -> None:
        while True:
            wanted = self.power_wanted()
            if wanted and not self.powered:
                print(f"power on: booting ({self.tsi})", flush=True)
                self.power_on()
            elif not wanted and self.powered:
                print("power off", flush=True)
                await self.power_off()
            await asyncio.sleep(POWER_POLL_S)

    # ================================================================== state

    def state_changed(self) -> None:
        if self.args.state_out is None or self._state_due is not None:
            return
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            self._state_due = loop.call_later(STATE_DEBOUNCE_S, self.write_state)

    def write_state(self) -> None:
        self._state_due = None
        if self.args.state_out is None:
            return
        state = {
            "pid": os.getpid(),
            "url": self.url,
            "issi": self.issi,
            "tsi": self.tsi,
            "powered": self.powered,
            "creg_stat": self.creg_stat,
            "registered": self.creg_stat in (tables.REG_HOME, tables.REG_VISITED),
            "echo": self.settings.echo,
            "cmee": self.settings.cmee,
            "service": self.settings.service,
            "ctsp": [list(p) for p in self.settings.ctsp],
            "groups": {str(g): k for g, k in self.groups.items()},
            "calls": {
                str(c.cc): {
                    "gssi": c.gssi,
                    "call_id": c.call_id,
                    "own": c.own,
                    "transmitting": c.transmitting,
                }
                for c in self.calls.values()
            },
            "counts": dict(self.counts),
        }
        with contextlib.suppress(OSError):
            write_json_atomic(self.args.state_out, state, durable=False)


# ---------------------------------------------------------------------------- parsing


def _int(text: str, low: int, high: int) -> int:
    text = text.strip()
    if not text:
        raise PeiError(tables.E_SYNTAX)
    if not text.isdigit():
        raise PeiError(tables.E_WRONG_TYPE)
    value = int(text)
    if not low <= value <= high:
        raise PeiError(tables.E_OUT_OF_RANGE)
    return value


def _ints(
    text: str,
    ranges: Sequence[tuple[int, int]],
    *,
    required: int,
    defaults: Sequence[int] | None = None,
) -> list[int]:
    """Comma-separated numbers; empty optional ones take ``defaults`` (or :data:`ABSENT`)."""
    params = [p.strip() for p in text.split(",")] if text.strip() else []
    if len(params) < required or len(params) > len(ranges):
        raise PeiError(tables.E_SYNTAX)
    values: list[int] = []
    for index, (low, high) in enumerate(ranges):
        given = params[index] if index < len(params) else ""
        if given:
            values.append(_int(given, low, high))
        elif index < required:
            raise PeiError(tables.E_SYNTAX)
        else:
            values.append(defaults[index] if defaults is not None else ABSENT)
    return values


def _identity(text: str) -> int:
    text = text.strip().strip('"')
    if not text:
        raise PeiError(tables.E_SYNTAX)
    try:
        ssi = tables.ssi_of(text)
    except ValueError:
        raise PeiError(tables.E_WRONG_TYPE) from None
    if not 1 <= ssi <= tables.SSI_MAX:
        raise PeiError(tables.E_OUT_OF_RANGE)
    return ssi


def _sds_reference(payload: str) -> int:
    """The message reference of an SDS-TL transfer (``82 04 <ref> ...``), else 0."""
    if len(payload) >= 6 and int(payload[:2], 16) == tables.SDS_TL_TEXT_PID:
        return int(payload[4:6], 16)
    return 0


# ---------------------------------------------------------------------------- transports


class PtyPort:
    """The PEI on a pty (:class:`~drivers.ptyport.PtyEndpoint`), read by the event loop."""

    def __init__(self, terminal: Terminal, link: Path) -> None:
        self.terminal = terminal
        self.endpoint = PtyEndpoint(link)
        self.device = self.endpoint.device
        asyncio.get_running_loop().add_reader(self.endpoint.master, self._readable)
        terminal.attach_output(self.write)

    def _readable(self) -> None:
        data = self.endpoint.read()
        if data:
            self.terminal.feed(data)

    def write(self, data: bytes) -> None:
        # nobody reads the port: a serial line would lose the bytes too
        self.terminal.counts["dropped_bytes"] += self.endpoint.write(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.endpoint.master)
        self.endpoint.close()


class TcpPort:
    """The PEI on 127.0.0.1:port, one client at a time."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self.server: asyncio.Server | None = None
        self.client: asyncio.StreamWriter | None = None
        self.port = 0

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", port)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.client is not None:
            writer.close()  # the PEI is one cable: a second TE is not served
            return
        self.client = writer
        self.terminal.attach_output(self.write)
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                self.terminal.feed(data)
        except (ConnectionError, OSError):
            pass
        finally:
            self.client = None
            self.terminal.attach_output(None)
            self.terminal.reset_input()
            writer.close()

    def write(self, data: bytes) -> None:
        if self.client is not None and not self.client.is_closing():
            self.client.write(data)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.close()


# ---------------------------------------------------------------------------- main


async def _main(args: argparse.Namespace) -> int:
    terminal = Terminal(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pty_port: PtyPort | None = None
    tcp_port: TcpPort | None = None
    if args.pty_link is not None:
        pty_port = PtyPort(terminal, args.pty_link)
        terminal.url = str(args.pty_link)
    else:
        tcp_port = TcpPort(terminal)
        await tcp_port.start(args.tcp_port)
        terminal.url = f"socket://127.0.0.1:{tcp_port.port}"
    if terminal.power_wanted():
        terminal.power_on()  # before the ready file: the first command must find it booted
    tasks = [
        asyncio.create_task(terminal.command_loop()),
        asyncio.create_task(terminal.power_loop()),
    ]
    if args.ready_file is not None:
        write_json_atomic(args.ready_file, {"pid": os.getpid(), "url": terminal.url})
    where = f"{terminal.url} ({pty_port.device})" if pty_port else terminal.url
    print(f"TETRA terminal {terminal.tsi} serving the PEI on {where}, SwMI {args.swmi}", flush=True)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await terminal.power_off()
        if pty_port is not None:
            pty_port.close()
        if tcp_port is not None:
            tcp_port.close()
        terminal.write_state()
    return 0


def _groups(text: str) -> list[int]:
    try:
        groups = [int(g) for g in text.split(",") if g.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"groups must be GSSIs: {text!r}") from exc
    if any(not 1 <= g <= tables.SSI_MAX for g in groups):
        raise argparse.ArgumentTypeError(f"GSSIs must be 1..{tables.SSI_MAX}: {text!r}")
    return groups


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drivers.tetra.terminal_emulator",
        description="TETRA terminal emulator (see module docstring).",
    )
    parser.add_argument("--swmi", required=True, help="HOST:PORT of the emulated SwMI")
    parser.add_argument("--issi", type=int, required=True)
    parser.add_argument("--mcc", type=int, required=True)
    parser.add_argument("--mnc", type=int, required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty-link", type=Path, help="symlink to create to the pty slave")
    where.add_argument("--tcp-port", type=int, help="serve the PEI on 127.0.0.1 (0 = any)")
    parser.add_argument("--ready-file", type=Path, help="written (JSON: pid, url) once serving")
    parser.add_argument("--state-out", type=Path, help="JSON image of the terminal's state")
    parser.add_argument("--groups", type=_groups, default=[], help="GSSIs attached at boot")
    parser.add_argument("--garble-every", type=int, default=0, help="noise before every Nth line")
    parser.add_argument("--interleave-urcs", action="store_true")
    parser.add_argument("--power-state", type=Path, help="power supply emulator state file")
    parser.add_argument("--power-output-key", default="OUTP1")
    parser.add_argument("--power-voltage-key", default="SOUR1:VOLT")
    parser.add_argument("--min-voltage-v", type=float, default=3.3)
    args = parser.parse_args(argv)
    if not 1 <= args.issi <= tables.SSI_MAX:
        parser.error(f"--issi must be 1..{tables.SSI_MAX}")
    if not 0 <= args.mcc <= 9999 or not 0 <= args.mnc <= 99999:
        parser.error("--mcc must have at most 4 digits and --mnc at most 5")
    if args.garble_every < 0:
        parser.error("--garble-every must be >= 0")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
