"""An emulated TETRA switching and management infrastructure (SwMI): registration, group
attachment, group call control with transmission arbitration (queueing, pre-emption, hang
time) and SDS relay, for terminal emulators that connect to it over TCP.

Run it with ``python -m drivers.tetra.swmi --ready-file F [--state-out S] [--events E]
[--hang-time-s 5] [--no-queueing] [--mcc M --mnc N]``. It listens on 127.0.0.1 (``--port 0``
picks a free port) and writes the ready file (JSON ``{"pid", "host", "port"}``) once it serves.
``--events`` gets one JSON line per procedure, ``{"wall": <time.time()>, "event": <name>,
...}``: the ground truth tests and the driver's counters are checked against. Events:
``register`` (issi, tsi, stat), ``register_rejected``, ``deregister`` (issi, reason),
``attach``/``detach`` (issi, gssi), ``late_entry``, ``call_setup`` (call, gssi, caller,
priority, members), ``call_joined``, ``call_left``, ``call_preempted`` (call, by_call),
``call_released`` (call, gssi, cause, cause_name), ``tx_demand`` (call, issi, priority),
``tx_granted`` (call, issi, priority), ``tx_queued``, ``tx_rejected``, ``tx_preempted``
(call, issi, by), ``tx_dequeued``, ``tx_ceased`` (call, issi, reason), ``sds`` (from, to,
bits, status), ``started``, ``stopped``.

Internal protocol (not a TETRA standard; one JSON object per line, both ways). A terminal
sends requests ``{"op": <op>, "id": <n>, ...}``; every request is answered by
``{"re": <n>, "ok": true, ...}`` or ``{"re": <n>, "ok": false, "error": <text>}`` before any
notification it causes. Requests: ``register`` {issi, mcc, mnc} -> {stat (1 home, 5 visited;
3 with ok false when the ISSI is taken), tsi}; ``attach``/``detach`` {gssi} (detach with
gssi null: all groups); ``setup`` {gssi, priority 0-15, rqtx, tx_priority 0-3} -> {call,
joined, gssi, priority} (or ok false with a disconnect ``cause``); ``demand`` {call,
priority 0-3}; ``cease`` {call}; ``release`` {call}; ``sds`` {to, ai_service, bits, hex} ->
{status 4 delivered / 5 failed}. Notifications ``{"ev": <ev>, ...}``: ``incoming`` {call,
gssi, caller, caller_tsi, priority, late}, ``tx`` {call, grant, tpi, tpi_tsi} (TxGrant,
EN 300 392-2 clause 8.5.221), ``ceased`` {call, by}, ``released`` {call, cause}, ``sds``
{from, from_tsi, to, ai_service, bits, hex}.

Rules. One call per group. A set-up in a group with a call joins that call, unless its
priority is pre-emptive (>= ``tables.CALL_PRIORITY_PREEMPTIVE_MIN``, an open [mem] question)
and higher than the call's: then the running call is released with cause 9 (pre-emption) for
all its members and the new call starts. Members are the caller plus every terminal attached
to the group; a terminal that attaches during a call joins it (late entry). One talker per
call: a demand while another talks is queued (TxGrant 2, highest priority first, then first
come) or, with ``--no-queueing``, not granted (1); a pre-emptive or emergency demand
(TxDemandPriority 2, 3) of higher priority than the talker's pre-empts it: the talker gets
TxGrant 3 with the new talker's identity (its transmission is over, it is not queued), the
new talker TxGrant 0, the others TxGrant 3. When the talker ceases, the others get
``ceased`` and the head of the queue is granted. A call with nobody talking and nobody queued
is released after the hang time with cause 13 (timer expiry). ``release`` by the calling
party ends the call for everybody (cause 1); by another member only takes that member out.
A terminal whose connection drops is deregistered: its transmission ceases and it leaves its
calls (a call left without members ends).
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from drivers.files import write_json_atomic
from drivers.tetra import tables

MAX_LINE_BYTES = 1 << 20
STATE_DEBOUNCE_S = 0.05
DEFAULT_HANG_TIME_S = 5.0
_HEX = re.compile(r"^[0-9A-Fa-f]*$")

Message = dict[str, Any]


class RequestError(Exception):
    """A request the SwMI refuses; ``fields`` go into the answer."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.fields = fields


@dataclass
class Terminal:
    """One connection from a terminal emulator; ``issi`` once registered."""

    conn: int
    writer: asyncio.StreamWriter
    issi: int | None = None
    mcc: int = 0
    mnc: int = 0
    groups: set[int] = field(default_factory=set)

    @property
    def tsi(self) -> str:
        return tables.extended_tsi(self.mcc, self.mnc, self.issi or 0)


@dataclass
class Call:
    id: int
    gssi: int
    owner: int
    priority: int
    members: set[int]
    started_wall: float
    talker: int | None = None
    talker_priority: int = 0
    queue: list[tuple[int, int]] = field(default_factory=list)
    """Waiting demands ``(issi, priority)`` in grant order."""
    hang: asyncio.TimerHandle | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "call": self.id,
            "gssi": self.gssi,
            "owner": self.owner,
            "priority": self.priority,
            "members": sorted(self.members),
            "talker": self.talker,
            "talker_priority": self.talker_priority,
            "queue": [list(q) for q in self.queue],
            "started_wall": self.started_wall,
        }


class Swmi:
    """The call control state machine; every method runs on the event loop's thread."""

    def __init__(
        self,
        *,
        hang_time_s: float = DEFAULT_HANG_TIME_S,
        queueing: bool = True,
        mcc: int | None = None,
        mnc: int | None = None,
        events: IO[str] | None = None,
        state_out: Path | None = None,
    ) -> None:
        self.hang_time_s = hang_time_s
        self.queueing = queueing
        self.mcc = mcc
        self.mnc = mnc
        self.events = events
        self.state_out = state_out
        self.terminals: dict[int, Terminal] = {}
        """Registered terminals by ISSI."""
        self.calls: dict[int, Call] = {}
        """Running calls by GSSI (one per group)."""
        self.counts: dict[str, int] = {}
        self._call_ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._outbox: list[tuple[int, Message]] = []
        self._state_due: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ plumbing

    def log(self, event: str, **fields: Any) -> None:
        self.counts[event] = self.counts.get(event, 0) + 1
        if self.events is not None:
            with contextlib.suppress(OSError, ValueError):
                self.events.write(json.dumps({"wall": time.time(), "event": event, **fields}))
                self.events.write("\n")
                self.events.flush()
        self._state_changed()

    def notify(self, issi: int, ev: str, **fields: Any) -> None:
        """Queue a notification; :meth:`flush` sends it after the answer of the request."""
        self._outbox.append((issi, {"ev": ev, **fields}))

    def flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        for issi, message in outbox:
            terminal = self.terminals.get(issi)
            if terminal is not None:
                send(terminal.writer, message)

    def _state_changed(self) -> None:
        if self.state_out is None or self._state_due is not None:
            return
        loop = asyncio.get_running_loop()
        self._state_due = loop.call_later(STATE_DEBOUNCE_S, self._write_state)

    def _write_state(self) -> None:
        self._state_due = None
        if self.state_out is None:
            return
        state = {
            "pid": os.getpid(),
            "hang_time_s": self.hang_time_s,
            "queueing": self.queueing,
            "terminals": {
                str(issi): {"tsi": t.tsi, "groups": sorted(t.groups)}
                for issi, t in self.terminals.items()
            },
            "calls": {str(gssi): call.to_json() for gssi, call in self.calls.items()},
            "counts": dict(self.counts),
        }
        with contextlib.suppress(OSError):
            write_json_atomic(self.state_out, state, durable=False)

    def new_conn_id(self) -> int:
        return next(self._conn_ids)

    # ------------------------------------------------------------------ requests

    def handle(self, terminal: Terminal, message: Message) -> Message:
        """Carry out one request and return its answer (notifications wait in the outbox)."""
        op = message.get("op")
        handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        try:
            if handler is None:
                raise RequestError(f"unknown op {op!r}")
            if op != "register" and terminal.issi is None:
                raise RequestError("not registered", cause=tables.CAUSE_SERVICE_NOT_AVAILABLE)
            result: Message = handler(terminal, message)
            return {"ok": True, **result}
        except RequestError as exc:
            return {"ok": False, "error": str(exc), **exc.fields}
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"bad request: {exc!r}"}

    def op_register(self, terminal: Terminal, message: Message) -> Message:
        issi, mcc, mnc = _int(message, "issi"), _int(message, "mcc"), _int(message, "mnc")
        if not 1 <= issi <= tables.SSI_MAX:
            raise RequestError(f"ISSI {issi} out of range", stat=tables.REG_REJECTED)
        holder = self.terminals.get(issi)
        if holder is not None and holder is not terminal:
            self.log("register_rejected", issi=issi, reason="ISSI already registered")
            raise RequestError(f"ISSI {issi} is already registered", stat=tables.REG_REJECTED)
        if terminal.issi is not None and terminal.issi != issi:
            self.deregister(terminal, "re-registered with another ISSI")
        terminal.issi, terminal.mcc, terminal.mnc = issi, mcc, mnc
        self.terminals[issi] = terminal
        home = self.mcc is None or (self.mcc == mcc and self.mnc in (None, mnc))
        stat = tables.REG_HOME if home else tables.REG_VISITED
        self.log("register", issi=issi, tsi=terminal.tsi, stat=stat)
        return {"stat": stat, "tsi": terminal.tsi}

    def op_attach(self, terminal: Terminal, message: Message) -> Message:
        issi, gssi = _issi(terminal), _int(message, "gssi")
        terminal.groups.add(gssi)
        self.log("attach", issi=issi, gssi=gssi)
        call = self.calls.get(gssi)
        if call is not None and issi not in call.members:
            call.members.add(issi)
            self.log("late_entry", call=call.id, gssi=gssi, issi=issi)
            self._notify_incoming(call, issi, late=True)
        return {"gssi": gssi}

    def op_detach(self, terminal: Terminal, message: Message) -> Message:
        issi = _issi(terminal)
        gssi = message.get("gssi")
        groups = sorted(terminal.groups) if gssi is None else [_int(message, "gssi")]
        for group in groups:
            terminal.groups.discard(group)
            self.log("detach", issi=issi, gssi=group)
            call = self.calls.get(group)
            if call is not None and issi in call.members and issi != call.owner:
                self.leave_call(call, issi, tables.CAUSE_USER_REQUEST)
        return {"groups": groups}

    def op_setup(self, terminal: Terminal, message: Message) -> Message:
        issi, gssi = _issi(terminal), _int(message, "gssi")
        priority = _int(message, "priority", 0)
        tx_priority = _int(message, "tx_priority", 1)
        if not 0 <= priority <= tables.CALL_PRIORITY_MAX or tx_priority not in (0, 1, 2, 3):
            raise RequestError("priority out of range", cause=tables.CAUSE_SERVICE_NOT_AVAILABLE)
        rqtx = bool(message.get("rqtx", False))
        running = self.calls.get(gssi)
        if running is not None:
            if priority >= tables.CALL_PRIORITY_PREEMPTIVE_MIN and priority > running.priority:
                new_id = next(self._call_ids)
                self.log(
                    "call_preempted",
                    call=running.id,
                    gssi=gssi,
                    by_call=new_id,
                    by=issi,
                    priority=priority,
                )
                self.end_call(running, tables.CAUSE_PREEMPTION)
                return self._new_call(new_id, terminal, gssi, priority, rqtx, tx_priority)
            running.members.add(issi)
            self.log("call_joined", call=running.id, gssi=gssi, issi=issi)
            if running.talker is not None and running.talker != issi:
                self._notify_tx(running, issi, tables.TX_GRANTED_TO_ANOTHER)
            if rqtx:
                self.demand(running, issi, tx_priority)
            return {"call": running.id, "joined": True, "gssi": gssi, "priority": running.priority}
        return self._new_call(next(self._call_ids), terminal, gssi, priority, rqtx, tx_priority)

    def _new_call(
        self, call_id: int, terminal: Terminal, gssi: int, priority: int, rqtx: bool, tx_prio: int
    ) -> Message:
        issi = _issi(terminal)
        members = {t.issi for t in self.terminals.values() if gssi in t.groups and t.issi}
        call = Call(call_id, gssi, issi, priority, members | {issi}, time.time())
        self.calls[gssi] = call
        self.log(
            "call_setup",
            call=call.id,
            gssi=gssi,
            caller=issi,
            priority=priority,
            members=sorted(call.members),
        )
        for member in sorted(call.members - {issi}):
            self._notify_incoming(call, member, late=False)
        if rqtx:
            self.demand(call, issi, tx_prio)
        else:
            self._start_hang(call)
        return {"call": call.id, "joined": False, "gssi": gssi, "priority": priority}

    def op_demand(self, terminal: Terminal, message: Message) -> Message:
        call = self._member_call(terminal, message)
        priority = _int(message, "priority", 1)
        if priority not in tables.TX_DEMAND_PRIORITY:
            raise RequestError(f"TxDemandPriority {priority} out of range")
        self.demand(call, _issi(terminal), priority)
        return {"call": call.id}

    def op_cease(self, terminal: Terminal, message: Message) -> Message:
        call = self._member_call(terminal, message)
        self.cease(call, _issi(terminal), "cease")
        return {"call": call.id}

    def op_release(self, terminal: Terminal, message: Message) -> Message:
        call = self._member_call(terminal, message)
        issi = _issi(terminal)
        if issi == call.owner:
            self.end_call(call, tables.CAUSE_USER_REQUEST)
        else:
            self.leave_call(call, issi, tables.CAUSE_USER_REQUEST)
        return {"call": call.id}

    def op_sds(self, terminal: Terminal, message: Message) -> Message:
        issi = _issi(terminal)
        to, bits = _int(message, "to"), _int(message, "bits")
        ai_service = _int(message, "ai_service", tables.AI_SERVICE_SDS_TYPE4)
        payload = str(message.get("hex", ""))
        if not _HEX.match(payload) or not 0 <= bits <= tables.SDS_MAX_BITS:
            raise RequestError("bad SDS user data")
        target = self.terminals.get(to)
        status = tables.SDS_SENT if target is not None else tables.SDS_FAILED
        if target is not None:
            self.notify(
                to,
                "sds",
                **{
                    "from": issi,
                    "from_tsi": terminal.tsi,
                    "to": to,
                    "ai_service": ai_service,
                    "bits": bits,
                    "hex": payload,
                },
            )
        self.log("sds", **{"from": issi, "to": to, "bits": bits, "status": status})
        return {"status": status}

    def _member_call(self, terminal: Terminal, message: Message) -> Call:
        call_id = _int(message, "call")
        for call in self.calls.values():
            if call.id == call_id:
                if _issi(terminal) not in call.members:
                    raise RequestError(f"not a member of call {call_id}")
                return call
        raise RequestError(f"no call {call_id}", cause=tables.CAUSE_SERVICE_NOT_AVAILABLE)

    # ------------------------------------------------------------------ arbitration

    def demand(self, call: Call, issi: int, priority: int) -> None:
        self.log("tx_demand", call=call.id, issi=issi, priority=priority)
        talker = call.talker
        if talker is None:
            self.grant(call, issi, priority)
        elif talker == issi:
            call.talker_priority = max(call.talker_priority, priority)
            self._notify_tx(call, issi, tables.TX_GRANTED)
        elif priority >= tables.TX_DEMAND_PREEMPTIVE and priority > call.talker_priority:
            self.log(
                "tx_preempted",
                call=call.id,
                issi=talker,
                by=issi,
                priority=priority,
                talker_priority=call.talker_priority,
            )
            # the pre-empted talker learns it from the TxGrant 3 every other member gets
            self.grant(call, issi, priority)
        elif self.queueing:
            call.queue = [q for q in call.queue if q[0] != issi]
            position = next(
                (i for i, q in enumerate(call.queue) if q[1] < priority), len(call.queue)
            )
            call.queue.insert(position, (issi, priority))
            self.log("tx_queued", call=call.id, issi=issi, priority=priority, position=position)
            self._notify_tx(call, issi, tables.TX_QUEUED)
        else:
            self.log("tx_rejected", call=call.id, issi=issi, priority=priority)
            self._notify_tx(call, issi, tables.TX_NOT_GRANTED)

    def grant(self, call: Call, issi: int, priority: int) -> None:
        self._cancel_hang(call)
        call.talker, call.talker_priority = issi, priority
        call.queue = [q for q in call.queue if q[0] != issi]
        self.log("tx_granted", call=call.id, issi=issi, priority=priority)
        self._notify_tx(call, issi, tables.TX_GRANTED)
        for member in sorted(call.members - {issi}):
            self._notify_tx(call, member, tables.TX_GRANTED_TO_ANOTHER)

    def cease(self, call: Call, issi: int, reason: str) -> None:
        if any(q[0] == issi for q in call.queue):
            call.queue = [q for q in call.queue if q[0] != issi]
            self.log("tx_dequeued", call=call.id, issi=issi, reason=reason)
        if call.talker != issi:
            return
        call.talker = None
        self.log("tx_ceased", call=call.id, issi=issi, reason=reason)
        for member in sorted(call.members - {issi}):
            self.notify(member, "ceased", call=call.id, by=issi)
        while call.queue:
            head, priority = call.queue.pop(0)
            if head in call.members:
                self.grant(call, head, priority)
                return
        self._start_hang(call)

    def leave_call(self, call: Call, issi: int, cause: int, *, tell: bool = True) -> None:
        self.cease(call, issi, "left")
        call.members.discard(issi)
        if tell:
            self.notify(issi, "released", call=call.id, cause=cause)
        self.log("call_left", call=call.id, gssi=call.gssi, issi=issi, cause=cause)
        if not call.members:
            self.end_call(call, cause)

    def end_call(self, call: Call, cause: int) -> None:
        self._cancel_hang(call)
        if self.calls.get(call.gssi) is call:
            del self.calls[call.gssi]
        for member in sorted(call.members):
            self.notify(member, "released", call=call.id, cause=cause)
        self.log(
            "call_released",
            call=call.id,
            gssi=call.gssi,
            cause=cause,
            cause_name=tables.DISCONNECT_CAUSES.get(cause, "?"),
            duration_s=round(time.time() - call.started_wall, 6),
        )

    def deregister(self, terminal: Terminal, reason: str) -> None:
        issi = terminal.issi
        if issi is None:
            return
        for call in list(self.calls.values()):
            if issi in call.members:
                self.leave_call(call, issi, tables.CAUSE_USER_REQUEST, tell=False)
        if self.terminals.get(issi) is terminal:
            del self.terminals[issi]
        terminal.issi = None
        terminal.groups.clear()
        self.log("deregister", issi=issi, reason=reason)

    def _notify_incoming(self, call: Call, member: int, *, late: bool) -> None:
        caller = self.terminals.get(call.owner)
        self.notify(
            member,
            "incoming",
            call=call.id,
            gssi=call.gssi,
            caller=call.owner,
            caller_tsi=caller.tsi if caller else str(call.owner),
            priority=call.priority,
            late=late,
        )
        if late and call.talker is not None:
            self._notify_tx(call, member, tables.TX_GRANTED_TO_ANOTHER)

    def _notify_tx(self, call: Call, member: int, grant: int) -> None:
        fields: dict[str, Any] = {"call": call.id, "grant": grant}
        if grant == tables.TX_GRANTED_TO_ANOTHER and call.talker is not None:
            talker = self.terminals.get(call.talker)
            fields["tpi"] = call.talker
            fields["tpi_tsi"] = talker.tsi if talker else str(call.talker)
        self.notify(member, "tx", **fields)

    def _start_hang(self, call: Call) -> None:
        self._cancel_hang(call)
        loop = asyncio.get_running_loop()
        call.hang = loop.call_later(self.hang_time_s, self._hang_expired, call)

    def _cancel_hang(self, call: Call) -> None:
        if call.hang is not None:
            call.hang.cancel()
            call.hang = None

    def _hang_expired(self, call: Call) -> None:
        call.hang = None
        if self.calls.get(call.gssi) is call and call.talker is None:
            self.log("hang_time_expired", call=call.id, gssi=call.gssi)
            self.end_call(call, tables.CAUSE_TIMER_EXPIRY)
            self.flush()

    def final_state(self) -> None:
        if self._state_due is not None:
            self._state_due.cancel()
        self._write_state()


def _int(message: Message, key: str, default: int | None = None) -> int:
    value = message.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{key} must be an integer, not {value!r}")
    return value


def _issi(terminal: Terminal) -> int:
    if terminal.issi is None:
        raise RequestError("not registered")
    return terminal.issi


def send(writer: asyncio.StreamWriter, message: Message) -> None:
    if not writer.is_closing():
        writer.write(json.dumps(message).encode() + b"\n")


# ---------------------------------------------------------------------------- server


async def _serve_terminal(
    swmi: Swmi, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    terminal = Terminal(swmi.new_conn_id(), writer)
    reason = "connection closed"
    try:
        while True:
            try:
                raw = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                reason = "line too long"
                break
            if not raw:
                break
            try:
                message = json.loads(raw)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
            except ValueError:
                send(writer, {"re": None, "ok": False, "error": "not a JSON object"})
                continue
            answer = swmi.handle(terminal, message)
            send(writer, {"re": message.get("id"), **answer})
            swmi.flush()
    except (ConnectionError, OSError) as exc:
        reason = f"connection error: {exc}"
    finally:
        swmi.deregister(terminal, reason)
        swmi.flush()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def _main(args: argparse.Namespace) -> int:
    events: IO[str] | None = None
    if args.events is not None:
        args.events.parent.mkdir(parents=True, exist_ok=True)
        events = args.events.open("a", encoding="utf-8")
    swmi = Swmi(
        hang_time_s=args.hang_time_s,
        queueing=args.queueing,
        mcc=args.mcc,
        mnc=args.mnc,
        events=events,
        state_out=args.state_out,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_terminal(swmi, reader, writer)

    server = await asyncio.start_server(on_connect, args.host, args.port, limit=MAX_LINE_BYTES)
    port = int(server.sockets[0].getsockname()[1])
    swmi.log(
        "started", host=args.host, port=port, hang_time_s=args.hang_time_s, queueing=args.queueing
    )
    if args.ready_file is not None:
        write_json_atomic(args.ready_file, {"pid": os.getpid(), "host": args.host, "port": port})
    print(
        f"TETRA SwMI on {args.host}:{port} (hang time {args.hang_time_s:g} s, "
        f"queueing {'on' if args.queueing else 'off'})",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        server.close()
        for terminal in list(swmi.terminals.values()):
            terminal.writer.close()
        swmi.log("stopped")
        swmi.final_state()
        if events is not None:
            events.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drivers.tetra.swmi",
        description="Emulated TETRA SwMI (see module docstring).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--ready-file", type=Path, help="written (JSON: pid, host, port) once up")
    parser.add_argument("--state-out", type=Path, help="JSON image of terminals and calls")
    parser.add_argument("--events", type=Path, help="JSONL file, one line per procedure")
    parser.add_argument("--hang-time-s", type=float, default=DEFAULT_HANG_TIME_S)
    parser.add_argument(
        "--no-queueing",
        dest="queueing",
        action="store_false",
        help="a demand while another talks is not granted instead of queued",
    )
    parser.add_argument("--mcc", type=int, help="the SwMI's network code; others are 'visited'")
    parser.add_argument("--mnc", type=int)
    args = parser.parse_args(argv)
    if args.hang_time_s <= 0:
        parser.error("--hang-time-s must be > 0")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
