"""The AT line protocol engine: commands and their results apart from unsolicited result codes.

Modems (3GPP TS 27.007) and TETRA terminals (ETSI EN 300 392-5 PEI) speak the same line
protocol: a command ends with CR; its answer is zero or more information lines and one final
result (``OK``, ``ERROR``, ``+CME ERROR: <n>``, ...); unsolicited result codes (URCs such as
``+CEREG: 1`` or ``+CTXG: ...``) may arrive at any time, also between the lines of an answer.
:class:`AtChannel` owns one connection (any pyserial URL: a tty, ``socket://``,
``rfc2217://``, ``spy://``), reads it on a thread of its own, hands each answer to the command
waiting for it and each URC, stamped with the time it was read, to a callback on a dispatcher
thread (so a URC handler may itself send commands). Lines that are neither (noise on the
wire, undecodable bytes) are counted and kept in the transcript but never taken for an answer.
Every line in either direction goes to the transcript file as it happens, so nothing is lost
when the controller dies. A lost connection fails the waiting command and is reported once.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import serial

from drivers.errors import DriverError

DEFAULT_TIMEOUT_S = 5.0
RESYNC_TIMEOUT_S = 1.0
MAX_LINE_BYTES = 4096
TAIL_LINES = 40

FINAL_OK = ("OK", "CONNECT")
FINAL_ERRORS = ("ERROR", "NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE")
_CME = re.compile(r"^\+(CME|CMS) ERROR:\s*(.*)$")
_COMMAND_NAME = re.compile(r"^AT([+$%^#&*][A-Z0-9]+)", re.IGNORECASE)

CME_ERRORS: dict[int, str] = {
    0: "phone failure",
    1: "no connection to phone",
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    15: "SIM wrong",
    16: "incorrect password",
    30: "no network service",
    31: "network timeout",
    32: "network not allowed - emergency calls only",
    100: "unknown",
}
"""3GPP TS 27.007 clause 9.2.1 ``+CME ERROR`` codes [mem, spec notes section 3]; used to name a
numeric code. Terminals with their own table (the TETRA PEI) pass theirs to the channel."""

Direction = Literal[">", "<", "~", "?", "!"]
"""Transcript marks: sent, answer line, URC, unexpected or garbled line, note."""


class AtError(DriverError):
    """Base of the errors an AT exchange raises; carries the device and its last lines."""


class AtTimeout(AtError):
    """No final result within the command's timeout."""


class AtIOError(AtError):
    """The connection could not be opened or is gone."""


class AtCommandError(AtError):
    """The device answered with a final error: ``ERROR``, ``+CME ERROR`` or ``+CMS ERROR``.

    ``code`` is the numeric code (None for plain ``ERROR`` or a verbose text), ``reason`` the
    text: the device's own (verbose mode) or the table's name for the number.
    """

    def __init__(
        self,
        device: str,
        command: str,
        final: str,
        code: int | None,
        reason: str,
        exchanges: Iterable[str] = (),
    ) -> None:
        self.command = command
        self.final = final
        self.code = code
        self.reason = reason
        super().__init__(device, f"{command!r} failed: {final} ({reason})", tuple(exchanges))


@dataclass(frozen=True)
class AtResponse:
    """The answer to one command: its information lines and final result."""

    command: str
    lines: tuple[str, ...]
    final: str
    sent_wall: float
    sent_mono: float
    """When the command went on the wire (after any resynchronisation): the start of an
    access time measured to a URC's :attr:`Urc.mono`."""
    elapsed_s: float

    def values(self, name: str) -> list[str]:
        """The text after ``<name>:`` of every line that starts with it (``+CSQ`` ->
        ``["20,99"]``)."""
        prefix = name + ":"
        return [line[len(prefix) :].strip() for line in self.lines if line.startswith(prefix)]

    def value(self, name: str) -> str:
        """The single ``<name>:`` value; raises ValueError if there is not exactly one."""
        found = self.values(name)
        if len(found) != 1:
            raise ValueError(f"expected one {name} line in the answer to {self.command}: {found}")
        return found[0]


@dataclass(frozen=True)
class Urc:
    """An unsolicited result code as read: ``name`` (``+CEREG``), the text after the colon,
    any lines that belong to it (an SDS payload) and when it was read."""

    name: str
    text: str
    wall: float
    mono: float
    extra: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        return f"{self.name}: {self.text}" if self.text else self.name


def split_params(text: str, *, keep_quotes: bool = False) -> list[str]:
    """Split ``a,"b,c",,d`` into ``["a", "b,c", "", "d"]``: commas inside quotes are text.
    ``keep_quotes`` leaves quoted parameters quoted (``"00A1"`` is a tac, ``1`` a stat)."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    out.append("".join(current).strip())
    if keep_quotes:
        return out
    return [p[1:-1] if len(p) >= 2 and p[0] == p[-1] == '"' else p for p in out]


class Transcript:
    """Every line of one device's conversation, appended to a file as it happens.

    Format: ISO UTC time, a mark (:data:`Direction`), the text. A tail stays in memory for
    error messages. Thread-safe.
    """

    def __init__(self, path: Path | None, header: str = "") -> None:
        self.path = path
        self.lines = 0
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")
            if header:
                self._file.write(f"# {header}\n")
                self._file.flush()

    def add(self, mark: Direction, text: str, wall: float | None = None) -> None:
        stamp = datetime.fromtimestamp(time.time() if wall is None else wall, UTC)
        line = f"{stamp.isoformat(timespec='microseconds')} {mark} {text}"
        with self._lock:
            self.lines += 1
            self._tail.append(f"{mark} {text}")
            if self._file is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._file.write(line + "\n")
                    self._file.flush()

    def tail(self, count: int = 8) -> list[str]:
        with self._lock:
            return list(self._tail)[-count:]

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None


@dataclass
class _Pending:
    command: str
    name: str | None
    lines: list[str] = field(default_factory=list)
    final: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


_SECRET_ARGS = re.compile(r"^(AT\+(?:CPIN|CPWD|CLCK)=)(.*)$", re.IGNORECASE)
"""Commands whose arguments are PINs and passwords: kept out of transcripts and messages."""


def _redacted(command: str) -> str:
    match = _SECRET_ARGS.match(command)
    return f"{match.group(1)}<redacted>" if match else command


def _printable(text: str) -> bool:
    return all(ch == "\t" or " " <= ch <= "~" for ch in text)


class AtChannel:
    """One AT connection: :meth:`command` for exchanges, ``on_urc`` for URCs.

    ``urc_names`` are the URC names of the device (``+CEREG``, ``+CTXG``); while no command
    waits, any line starting with ``+`` is taken as a URC as well. ``urc_extra_lines`` names
    URCs followed by a fixed number of lines that belong to them (``{"+CTSDSR": 1}``).
    ``on_lost`` is called once, from the reader thread, when the connection goes away.
    """

    def __init__(
        self,
        url: str,
        *,
        device: str,
        transcript: Transcript,
        urc_names: Iterable[str] = (),
        urc_extra_lines: Mapping[str, int] | None = None,
        on_urc: Callable[[Urc], None] | None = None,
        on_lost: Callable[[str], None] | None = None,
        baudrate: int = 115_200,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        error_names: Mapping[int, str] = CME_ERRORS,
    ) -> None:
        self.url = url
        self.device = device
        self.transcript = transcript
        self.urc_names = frozenset(urc_names)
        self.urc_extra_lines = dict(urc_extra_lines or {})
        self.on_urc = on_urc
        self.on_lost = on_lost
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self.error_names = dict(error_names)
        self.counts = {
            "commands": 0,
            "urcs": 0,
            "garbled": 0,
            "unexpected": 0,
            "timeouts": 0,
            "resyncs": 0,
        }
        self.lost: str | None = None
        """Why the connection went away, or None while it is up."""
        self._serial: serial.Serial | None = None
        self._command_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._pending: _Pending | None = None
        self._resync = False
        self._closing = threading.Event()
        self._urcs: queue.Queue[Urc | None] = queue.Queue()
        self._urc_collecting: tuple[str, str, float, float, list[str], int] | None = None
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- life cycle

    def open(self) -> None:
        """Open the connection and start reading. Raises :class:`AtIOError`."""
        self.transcript.add("!", f"open {self.url}")
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.1)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise self._io_error(f"cannot open {self.url}: {exc}") from exc
        self._serial = port
        for target, name in ((self._read_loop, "reader"), (self._dispatch_loop, "urcs")):
            thread = threading.Thread(target=target, name=f"at-{name}-{self.device}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop the threads and close the connection. Never raises."""
        self._closing.set()
        with self._state_lock:  # a command still waiting ends now, as a lost connection
            pending = self._pending
            if pending is not None:
                pending.final = "LOST"
                pending.done.set()
        self.lost = self.lost or "closed"
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()
        self._urcs.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        self._threads = []
        self.transcript.add("!", "closed")

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self.lost is None

    # ---------------------------------------------------------------- exchanges

    def command(
        self, command: str, *, timeout_s: float | None = None, data: str | None = None
    ) -> AtResponse:
        """Send ``command`` (CR-terminated) and wait for its final result.

        ``data`` is sent right after the command line and terminated with Ctrl-Z (the user
        data of ``AT+CMGS``). Raises :class:`AtCommandError` for a final error,
        :class:`AtTimeout` and :class:`AtIOError`.
        """
        with self._command_lock:
            if self._resync:
                self._resynchronise()
            return self._exchange(command, self.timeout_s if timeout_s is None else timeout_s, data)

    def sync(self) -> None:
        """Resynchronise now if a timeout left a late answer possible, so that a command timed
        from just before :meth:`command` (an access time) does not include that exchange."""
        with self._command_lock:
            if self._resync:
                self._resynchronise()

    def _exchange(
        self, command: str, timeout_s: float, data: str | None, *, probe: bool = False
    ) -> AtResponse:
        port = self._serial
        if port is None or self.lost is not None:
            raise self._io_error(f"not connected ({self.lost or 'closed'})")
        match = _COMMAND_NAME.match(command)
        pending = _Pending(command, match.group(1).upper() if match else None)
        with self._state_lock:
            self._pending = pending
        wire = command + "\r" + (data + "\x1a" if data is not None else "")
        sent_wall, sent_mono = time.time(), time.monotonic()
        shown = _redacted(command)
        self.transcript.add(">", shown + (f" <data {data}>" if data is not None else ""))
        if not probe:
            self.counts["commands"] += 1
        try:
            port.write(wire.encode("ascii"))
        except (serial.SerialException, OSError, UnicodeEncodeError) as exc:
            self._clear_pending(pending)
            raise self._io_error(f"sending {shown!r} failed: {exc}") from exc
        finished = pending.done.wait(timeout_s)
        self._clear_pending(pending)
        if not finished:
            if self.lost is not None:
                raise self._io_error(f"connection lost waiting for {shown!r}: {self.lost}")
            if not probe:
                self.counts["timeouts"] += 1
                self._resync = True
            self.transcript.add("!", f"no final result to {shown} within {timeout_s:g} s")
            raise AtTimeout(
                self.device,
                f"no answer to {shown!r} within {timeout_s:g} s",
                self.transcript.tail(),
            )
        final = pending.final or ""
        if final == "LOST":
            raise self._io_error(f"connection lost waiting for {shown!r}: {self.lost}")
        elapsed = time.monotonic() - sent_mono
        if final in FINAL_OK:
            return AtResponse(command, tuple(pending.lines), final, sent_wall, sent_mono, elapsed)
        code, reason = self._error_reason(final)
        raise AtCommandError(self.device, shown, final, code, reason, self.transcript.tail())

    def _error_reason(self, final: str) -> tuple[int | None, str]:
        match = _CME.match(final)
        if match is None:
            return None, "the device gave no reason" if final == "ERROR" else final.lower()
        detail = match.group(2).strip()
        if detail.isdigit():
            code = int(detail)
            return code, self.error_names.get(code, "unknown error code")
        return None, detail

    def _resynchronise(self) -> None:
        """After a timeout a late answer may still come: a bare ``AT`` and its ``OK`` mark
        where the next command's answer starts."""
        self._resync = False
        self.counts["resyncs"] += 1
        with contextlib.suppress(AtTimeout, AtCommandError):
            self._exchange("AT", RESYNC_TIMEOUT_S, None, probe=True)

    def _clear_pending(self, pending: _Pending) -> None:
        with self._state_lock:
            if self._pending is pending:
                self._pending = None

    # ---------------------------------------------------------------- reading

    def _read_loop(self) -> None:
        buffer = b""
        while not self._closing.is_set():
            port = self._serial
            if port is None:
                return
            try:
                chunk = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                if not self._closing.is_set():
                    self._connection_lost(str(exc) or type(exc).__name__)
                return
            if not chunk:
                continue
            buffer += chunk
            while True:
                cut = min((i for i in (buffer.find(b"\r"), buffer.find(b"\n")) if i >= 0),
                          default=-1)  # fmt: skip
                if cut < 0:
                    break
                raw, buffer = buffer[:cut], buffer[cut + 1 :]
                if raw.strip():
                    self._line(raw)
            if len(buffer) > MAX_LINE_BYTES:
                self._garbled(buffer)
                buffer = b""

    def _line(self, raw: bytes) -> None:
        wall, mono = time.time(), time.monotonic()
        try:
            text: str | None = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            text = None
        if text is not None and not _printable(text):
            text = None
        if self._urc_collecting is not None and self._collect(text, wall):
            return
        if text is None:
            self._garbled(raw)
            return
        with self._state_lock:
            pending = self._pending
            if pending is not None and self._answers(pending, text):
                return
        name, _, rest = text.partition(":")
        name = name.strip()
        if name in self.urc_names or (text.startswith("+") and not _CME.match(text)):
            self.transcript.add("~", text, wall)
            wanted = self.urc_extra_lines.get(name, 0)
            if wanted:
                self._urc_collecting = (name, rest.strip(), wall, mono, [], wanted)
            else:
                self._deliver(Urc(name, rest.strip(), wall, mono))
            return
        self.counts["unexpected"] += 1
        self.transcript.add("?", text, wall)

    def _collect(self, text: str | None, wall: float) -> bool:
        """A line after a URC that carries more lines (an SDS payload): it belongs to the URC,
        as ``GARBLED`` if it arrived mangled, unless it is a final result, which then ends the
        URC short of its lines (so a mangled payload never swallows a command's ``OK``)."""
        assert self._urc_collecting is not None
        name, rest, u_wall, u_mono, extra, wanted = self._urc_collecting
        final = text is not None and (text in FINAL_OK or text in FINAL_ERRORS or _CME.match(text))
        if not final:
            extra.append("GARBLED" if text is None else text)
            self.transcript.add("~", f"  {text if text is not None else '(garbled)'}", wall)
        if final or len(extra) >= wanted:
            self._urc_collecting = None
            self._deliver(Urc(name, rest, u_wall, u_mono, tuple(extra)))
        return not final

    def _answers(self, pending: _Pending, text: str) -> bool:
        """Whether ``text`` belongs to the waiting command (caller holds the state lock)."""
        if text.upper() == pending.command.upper():
            self.transcript.add("<", f"(echo) {_redacted(text)}")
            return True
        if text in FINAL_OK or text in FINAL_ERRORS or _CME.match(text):
            self.transcript.add("<", text)
            pending.final = text
            pending.done.set()
            return True
        name = text.partition(":")[0].strip()
        is_urc = name in self.urc_names and name != pending.name
        if is_urc or (text.startswith("+") and pending.name is not None and name != pending.name):
            return False
        self.transcript.add("<", text)
        pending.lines.append(text)
        return True

    def _garbled(self, raw: bytes) -> None:
        self.counts["garbled"] += 1
        self.transcript.add("?", f"garbled {raw[:200]!r}")

    def _deliver(self, urc: Urc) -> None:
        self.counts["urcs"] += 1
        self._urcs.put(urc)

    def _dispatch_loop(self) -> None:
        while True:
            urc = self._urcs.get()
            if urc is None:
                return
            if self.on_urc is not None:
                try:
                    self.on_urc(urc)
                except Exception as exc:  # a handler bug must not stop URC delivery
                    self.transcript.add("!", f"URC handler failed on {urc.line}: {exc!r}")

    def _connection_lost(self, why: str) -> None:
        self.lost = why
        self.transcript.add("!", f"connection lost: {why}")
        with self._state_lock:
            pending = self._pending
            if pending is not None:
                pending.final = "LOST"
                pending.done.set()
        if self.on_lost is not None:
            with contextlib.suppress(Exception):
                self.on_lost(why)

    def _io_error(self, message: str) -> AtIOError:
        self.transcript.add("!", message)
        return AtIOError(self.device, message, self.transcript.tail())
