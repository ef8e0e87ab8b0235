"""A small SCPI session over pyvisa that checks every setting and keeps a transcript.

Instruments accept a bad setting silently and only record it in their error queue, so
:meth:`ScpiSession.write` asks ``SYST:ERR?`` after each one and raises with the
instrument's own error text. Every exchange is recorded (wall time, direction, text) so a
driver can save what was said to the box next to the run's results, and errors carry the
last exchanges. pyvisa's exceptions (and the ``OSError`` that pyvisa-py lets through when
the peer is gone) are translated here, at the boundary, into :class:`DriverError`.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pyvisa
from pyvisa.constants import VI_TRUE, ResourceAttribute, StatusCode
from pyvisa.resources import MessageBasedResource

from drivers.errors import DriverError

DEFAULT_TIMEOUT_S = 2.0
ERROR_QUERY = "SYST:ERR?"
MAX_ERRORS_DRAINED = 64
"""More queued errors than any instrument keeps: a guard against an answer that never says 0."""

_ERROR_ENTRY = re.compile(r'\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*')


class ScpiIOError(DriverError):
    """The instrument did not answer or the connection is gone (the session may be unusable)."""


class ScpiCommandError(DriverError):
    """The instrument rejected a command: ``errors`` are its ``SYST:ERR?`` entries."""

    def __init__(
        self, device: str, message: str, errors: Sequence[str], exchanges: Sequence[str] = ()
    ) -> None:
        self.errors = tuple(errors)
        super().__init__(device, message, exchanges)


@dataclass(frozen=True)
class Exchange:
    """One line on the wire: ``>`` sent, ``<`` received, ``!`` a failure noted by the session."""

    wall: float
    direction: Literal[">", "<", "!"]
    text: str

    def __str__(self) -> str:
        return f"{self.direction} {self.text}"

    def line(self) -> str:
        stamp = datetime.fromtimestamp(self.wall, UTC).isoformat(timespec="milliseconds")
        return f"{stamp} {self.direction} {self.text}"


class ScpiSession:
    """A line-oriented SCPI session to one instrument (thread-safe: one exchange at a time).

    ``resource`` is a VISA resource string such as ``TCPIP::10.0.0.5::5025::SOCKET``;
    ``backend`` is pyvisa's (``@py`` is pyvisa-py, pure Python, no vendor VISA needed).
    ``error_query`` is None for instruments without an error queue.
    """

    def __init__(
        self,
        resource: str,
        *,
        device: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        backend: str = "@py",
        error_query: str | None = ERROR_QUERY,
    ) -> None:
        self.resource = resource
        self.device = device
        self.timeout_s = timeout_s
        self.backend = backend
        self.error_query = error_query
        self.instrument_errors = 0
        self._transcript: list[Exchange] = []
        self._rm: pyvisa.ResourceManager | None = None
        self._res: MessageBasedResource | None = None
        self._lock = threading.RLock()
        self._resync = False

    # ---------------------------------------------------------------- life cycle

    def open(self) -> None:
        """Connect. pyvisa-py only finds a refused connection at the first exchange."""
        with self._lock:
            if self._res is not None:
                return
            self._note(f"open {self.resource} (timeout {self.timeout_s:g} s)")
            try:
                self._rm = pyvisa.ResourceManager(self.backend)
                res = self._rm.open_resource(
                    self.resource,
                    read_termination="\n",
                    write_termination="\n",
                    timeout=round(self.timeout_s * 1000),
                    open_timeout=round(self.timeout_s * 1000),
                )
            except Exception as exc:  # pyvisa-py raises bare Exception for some failures
                self.close()
                raise self._io_error(f"cannot open {self.resource}: {exc}") from exc
            if not isinstance(res, MessageBasedResource):
                res.close()
                self.close()
                raise DriverError(self.device, f"{self.resource} is not a message-based resource")
            _no_delay(res)
            self._res = res

    @property
    def is_open(self) -> bool:
        return self._res is not None

    def close(self) -> None:
        """Release the connection and pyvisa's resource manager. Never raises."""
        with self._lock:
            res, rm = self._res, self._rm
            self._res = self._rm = None
            for closable in (res, rm):
                if closable is None:
                    continue
                with contextlib.suppress(Exception):  # a dead session must not fail teardown
                    closable.close()
            if res is not None:
                self._note("closed")

    def __enter__(self) -> ScpiSession:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- exchanges

    def write(self, command: str, *, check: bool = True) -> None:
        """Send a command; with ``check``, raise :class:`ScpiCommandError` if it was refused."""
        with self._lock:
            self._send(command)
            if check and self.error_query is not None:
                errors = self._drain_errors()
                if errors:
                    raise ScpiCommandError(
                        self.device,
                        f"{command!r} refused: {'; '.join(errors)}",
                        errors,
                        self.last_exchanges(),
                    )

    def query(self, command: str) -> str:
        """Send a query and return its one-line answer (without the terminator).

        When no answer comes, the error queue tells whether the instrument rejected the
        query (an error naming it) or is not there (an I/O error).
        """
        with self._lock:
            self._send(command)
            try:
                return self._receive(command)
            except ScpiIOError as exc:
                if self.error_query is None or command == self.error_query:
                    raise
                try:
                    errors = self._drain_errors()
                except DriverError:
                    raise exc from exc.__cause__
                if not errors:
                    raise
                raise ScpiCommandError(
                    self.device,
                    f"{command!r} not answered: {'; '.join(errors)}",
                    errors,
                    self.last_exchanges(),
                ) from exc

    def errors(self) -> list[str]:
        """Empty the instrument's error queue; its entries, oldest first."""
        with self._lock:
            return self._drain_errors()

    # ---------------------------------------------------------------- transcript

    @property
    def transcript(self) -> tuple[Exchange, ...]:
        return tuple(self._transcript)

    def last_exchanges(self, count: int = 8) -> list[str]:
        """The tail of the transcript, for error messages."""
        return [str(x) for x in self._transcript[-count:]]

    def save_transcript(self, path: Path) -> Path:
        """Write the transcript, one exchange per line (UTC time, direction, text)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            lines = [x.line() + "\n" for x in self._transcript]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(f"# {self.device} {self.resource}\n" + "".join(lines))
        tmp.replace(path)
        return path

    # ---------------------------------------------------------------- internals

    def _resource(self) -> MessageBasedResource:
        if self._res is None:
            raise ScpiIOError(self.device, "session is not open", self.last_exchanges())
        return self._res

    def _record(self, direction: Literal[">", "<", "!"], text: str) -> None:
        self._transcript.append(Exchange(time.time(), direction, text))

    def _note(self, text: str) -> None:
        self._record("!", text)

    def _io_error(self, message: str) -> ScpiIOError:
        self._note(message)
        return ScpiIOError(self.device, message, self.last_exchanges())

    def _send(self, command: str) -> None:
        res = self._resource()
        if self._resync:
            self._flush_input(res)
        self._record(">", command)
        try:
            res.write(command)
        except (pyvisa.errors.Error, OSError, ValueError) as exc:
            raise self._io_error(f"sending {command!r} failed: {_describe(exc)}") from exc

    def _receive(self, command: str) -> str:
        res = self._resource()
        try:
            answer = res.read()
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == StatusCode.error_timeout:
                self._resync = True  # a late answer must not pass for the next query's
                raise self._io_error(
                    f"no answer to {command!r} within {self.timeout_s:g} s"
                ) from exc
            raise self._io_error(f"reading the answer to {command!r} failed: {exc}") from exc
        except (pyvisa.errors.Error, OSError, UnicodeDecodeError) as exc:
            raise self._io_error(
                f"reading the answer to {command!r} failed: {_describe(exc)}"
            ) from exc
        answer = answer.rstrip("\r\n")
        self._record("<", answer)
        return answer

    def _drain_errors(self) -> list[str]:
        assert self.error_query is not None
        errors: list[str] = []
        for _ in range(MAX_ERRORS_DRAINED):
            self._send(self.error_query)
            entry = self._receive(self.error_query)
            match = _ERROR_ENTRY.fullmatch(entry)
            if match is None:
                raise self._io_error(f"unexpected answer to {self.error_query}: {entry!r}")
            if int(match.group(1)) == 0:
                break
            errors.append(entry.strip())
        self.instrument_errors += len(errors)
        return errors

    def _flush_input(self, res: MessageBasedResource) -> None:
        """Drop whatever a timed-out query left in the input (pyvisa-py waits 0.1 s for it)."""
        self._resync = False
        try:
            res.clear()
        except (pyvisa.errors.Error, OSError) as exc:
            raise self._io_error(f"clearing the input failed: {_describe(exc)}") from exc


def _no_delay(res: MessageBasedResource) -> None:
    """Turn Nagle off: a checked write is two small sends, and the second would otherwise wait
    for the instrument's delayed ACK (~40 ms per setting). pyvisa-py 0.8 refuses the VISA
    attribute, so its session's socket is set directly when the attribute fails."""
    try:
        res.set_visa_attribute(ResourceAttribute.tcpip_nodelay, VI_TRUE)
        return
    except Exception:  # UnknownAttribute, unsupported by this backend or resource kind
        pass
    sessions = getattr(res.visalib, "sessions", None)
    interface = getattr(sessions.get(res.session) if isinstance(sessions, dict) else None,
                        "interface", None)  # fmt: skip
    if isinstance(interface, socket.socket):
        with contextlib.suppress(OSError):
            interface.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"connection lost ({text})" if isinstance(exc, ConnectionError) else text
