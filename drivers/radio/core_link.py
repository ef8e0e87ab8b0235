"""The emulated modem's connection to the cores of its networks: the eNB and NAS side of the
lab's attach protocol (JSON lines over each core's Unix ``attach_socket``, one connection per
NAS session; the core side is :mod:`drivers.core.emulator`).

Per network with ``cores`` (attach socket paths, primary first, then standbys) a session
connects to the first core not known dead, asks for a ``challenge``, answers it with the USIM's
MILENAGE RES (:func:`drivers.core.milenage.milenage_res`) in an ``attach`` that names the IMSI,
the selected PLMN, the network's RAN node and the UE node, then sends an ``echo`` every
``echo_interval_s``. A core is lost at its first sign of trouble: the end of its connection, or
the send time of the first request (echo, challenge or attach) it has not answered; the loss is
*declared* ``core_detection_s`` after that first sign, not a poll later: that is the detection
time a run is judged against, so the thread sleeps to the exact deadline and then wakes the
modem's select loop through a pipe (:attr:`CoreLink.wake_fd`). The lost core counts as dead; the
next attach uses the next live core of the network (a standby); with none alive the network is
*down* and the modem treats it as out of coverage. Dead cores are tried again (a connect) at most
every :data:`RETRY_S`, and only for networks the modem would use.

Everything here runs on the link's own thread; the modem calls :meth:`attach`, :meth:`release`
and :meth:`needed` (they only queue) and collects :meth:`take_events`, so a slow or silent core
never holds up the modem's AT handling.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.core.milenage import milenage_res
from drivers.radio.core_gate import CoreBearer, CoreEvent, EventKind
from drivers.radio.modem_state import ModemConfig

__all__ = ["RETRY_S", "CoreLink"]

RETRY_S = 1.0
"""A dead core is connected to again at most this often (when its network is needed)."""
CONNECT_TIMEOUT_S = 0.5
SEND_TIMEOUT_S = 0.5
DETACH_WAIT_S = 1.0
"""How long a detached session waits for the core's answer before it is simply closed."""
_CHALLENGE, _ATTACH = -1, -2
"""Keys of the two NAS requests among the outstanding echoes (numbered from 0)."""


@dataclass
class _Session:
    """One NAS session on one core."""

    plmn: str
    attempt: int
    core: str
    sock: socket.socket
    phase: str = "challenge"  # challenge -> attach -> attached
    buffer: bytes = b""
    sent: dict[int, float] = field(default_factory=dict)  # unanswered request -> send time
    eof_at: float | None = None
    next_echo: float = 0.0
    echo_n: int = 0

    def first_sign(self) -> float | None:
        signs = list(self.sent.values())
        if self.eof_at is not None:
            signs.append(self.eof_at)
        return min(signs) if signs else None


@dataclass
class _Network:
    plmn: str
    ran: str
    cores: tuple[str, ...]
    dead_at: dict[str, float] = field(default_factory=dict)
    alive: set[str] = field(default_factory=set)
    down: bool = False
    next_probe: float = 0.0


class CoreLink:
    """The modem's NAS sessions to its networks' cores, on a thread of their own."""

    def __init__(
        self,
        config: ModemConfig,
        *,
        log: Callable[[str], None] = lambda message: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.k is None or config.opc is None:
            raise ValueError("a modem with cores needs its USIM's k and opc")
        self.imsi, self.k, self.opc, self.node = config.imsi, config.k, config.opc, config.node
        self.detection_s = config.core_detection_s
        self.echo_interval_s = config.echo_interval_s
        self._log = log
        self._clock = clock
        self._nets = {
            n.plmn: _Network(n.plmn, n.ran or n.plmn, n.cores) for n in config.networks if n.cores
        }
        self._session: _Session | None = None
        self._closing: list[tuple[socket.socket, float]] = []
        self._needed: frozenset[str] = frozenset()
        self._losses: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._commands: list[tuple[str, Any, Any]] = []
        self._events: list[CoreEvent] = []
        self._image: dict[str, Any] = {}
        self._stop = False
        self._cmd_r, self._cmd_w = _pipe()
        self._wake_r, self._wake_w = _pipe()
        self._publish()
        self._thread = threading.Thread(target=self._run, name="core-link", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- the modem's side

    @property
    def wake_fd(self) -> int:
        """Readable when :meth:`take_events` has something: select on it."""
        return self._wake_r

    def attach(self, plmn: str, attempt: int) -> None:
        self._command("attach", plmn, attempt)

    def release(self, detach: bool) -> None:
        self._command("release", detach, None)

    def needed(self, plmns: frozenset[str]) -> None:
        self._command("needed", plmns, None)

    def take_events(self) -> list[CoreEvent]:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        with self._lock:
            events, self._events = self._events, []
        return events

    def snapshot(self) -> dict[str, Any]:
        """For the state image: per network its cores' state, the session, the losses."""
        with self._lock:
            return json.loads(json.dumps(self._image))  # type: ignore[no-any-return]

    def close(self) -> None:
        """Drop every session (like a modem switched off: no detach) and stop the thread."""
        with self._lock:
            self._stop = True
        _poke(self._cmd_w)
        self._thread.join(timeout=2.0)
        for fd in (self._cmd_r, self._cmd_w, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _command(self, what: str, a: Any, b: Any) -> None:
        with self._lock:
            self._commands.append((what, a, b))
        _poke(self._cmd_w)

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._stop:
                        break
                    commands, self._commands = self._commands, []
                for what, a, b in commands:
                    self._do(what, a, b)
                now = self._clock()
                self._check(now)
                self._publish()
                self._wait(self._next_wake(self._clock()))
        except Exception as exc:  # a bug here must show in the emulator's log, not vanish
            self._log(f"core link stopped: {exc!r}")
            raise
        finally:
            self._drop(self._session)
            self._session = None
            for sock, _ in self._closing:
                sock.close()

    def _wait(self, timeout: float) -> None:
        session = self._session
        fds = [self._cmd_r, *(sock.fileno() for sock, _ in self._closing)]
        if session is not None and session.eof_at is None:
            fds.append(session.sock.fileno())
        readable, _, _ = select.select(fds, [], [], max(0.0, timeout))
        if self._cmd_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._cmd_r, 4096)
        if session is not None and session.eof_at is None and session.sock.fileno() in readable:
            self._read(session)
        for sock, deadline in list(self._closing):
            if sock.fileno() in readable:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self._closing.remove((sock, deadline))
                    sock.close()

    def _next_wake(self, now: float) -> float:
        wakes = [now + 1.0]
        session = self._session
        if session is not None:
            sign = session.first_sign()
            if sign is not None:
                wakes.append(sign + self.detection_s)
            if session.phase == "attached" and session.eof_at is None:
                wakes.append(session.next_echo)
        wakes += [deadline for _, deadline in self._closing]
        wakes += [n.next_probe for n in self._nets.values() if n.down and n.plmn in self._needed]
        return min(wakes) - now

    def _do(self, what: str, a: Any, b: Any) -> None:
        if what == "needed":
            self._needed = frozenset(a)
        elif what == "release":
            self._end(graceful=bool(a))
        elif what == "attach":
            self._end(graceful=True)
            self._start(str(a), int(b))

    def _check(self, now: float) -> None:
        session = self._session
        if session is not None:
            self._keep_alive(session, now)
        for sock, deadline in list(self._closing):
            if now >= deadline:
                self._closing.remove((sock, deadline))
                sock.close()
        for net in self._nets.values():
            if net.down and net.plmn in self._needed and now >= net.next_probe:
                self._probe(net, now)

    def _keep_alive(self, session: _Session, now: float) -> None:
        """Declare the loss once its deadline passed, else send the echo that is due."""
        sign = session.first_sign()
        if sign is not None and now >= sign + self.detection_s:
            self._declare_lost(session, sign, now)
            return
        if session.phase == "attached" and session.eof_at is None and now >= session.next_echo:
            session.next_echo = max(session.next_echo + self.echo_interval_s, now)
            self._request(session, session.echo_n, {"op": "echo", "n": session.echo_n})
            session.echo_n += 1

    # ---------------------------------------------------------------- sessions

    def _start(self, plmn: str, attempt: int) -> None:
        net = self._nets.get(plmn)
        if net is None:
            return
        now = self._clock()
        for core in net.cores:
            dead_at = net.dead_at.get(core)
            if dead_at is not None and now - dead_at < RETRY_S:
                continue
            sock = self._connect(net, core, now)
            if sock is None:
                continue
            self._session = _Session(plmn, attempt, core, sock)
            self._log(f"core {core} ({plmn}): connected, attaching")
            self._request(self._session, _CHALLENGE, {"op": "challenge", "imsi": self.imsi})
            return
        self._set_down(net, now)
        self._emit("down", plmn, attempt)

    def _connect(self, net: _Network, core: str, now: float) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(core)
        except OSError as exc:
            sock.close()
            if core not in net.dead_at:
                self._log(f"core {core} ({net.plmn}): cannot connect ({exc}): dead")
            net.dead_at[core] = now
            net.alive.discard(core)
            return None
        sock.settimeout(SEND_TIMEOUT_S)
        net.dead_at.pop(core, None)
        net.alive.add(core)
        if net.down:
            net.down = False
            self._log(f"network {net.plmn}: core {core} is up again")
            self._emit("up", net.plmn, 0, core=core)
        return sock

    def _probe(self, net: _Network, now: float) -> None:
        """A down network the modem would use: is any of its cores back?"""
        net.next_probe = now + RETRY_S
        for core in net.cores:
            dead_at = net.dead_at.get(core)
            if dead_at is not None and now - dead_at < RETRY_S:
                continue
            sock = self._connect(net, core, now)
            if sock is not None:
                sock.close()  # the attach opens its own session
                return

    def _set_down(self, net: _Network, now: float) -> None:
        if not net.down:
            self._log(f"network {net.plmn}: no core alive, the network is down")
        net.down = True
        net.next_probe = min(net.dead_at.values(), default=now) + RETRY_S

    def _end(self, graceful: bool) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        attached = session.phase == "attached" and session.eof_at is None
        if graceful and attached and self._send(session, {"op": "detach"}):
            self._closing.append((session.sock, self._clock() + DETACH_WAIT_S))
            self._log(f"core {session.core} ({session.plmn}): detach")
            return
        self._drop(session)

    def _drop(self, session: _Session | None) -> None:
        if session is not None:
            with contextlib.suppress(OSError):
                session.sock.close()

    def _declare_lost(self, session: _Session, sign: float, now: float) -> None:
        net = self._nets[session.plmn]
        net.dead_at[session.core] = now
        net.alive.discard(session.core)
        self._drop(session)
        self._session = None
        wall = time.time()
        first_wall = wall - (now - sign)
        why = "connection closed" if session.eof_at == sign else "request unanswered"
        self._losses.append({"plmn": session.plmn, "core": session.core, "why": why,
                             "first_sign_wall": first_wall, "declared_wall": wall})  # fmt: skip
        self._log(f"core {session.core} ({session.plmn}) lost: {why} at {first_wall:.3f}, "
                  f"declared {now - sign:.3f} s later")  # fmt: skip
        self._emit("lost", session.plmn, session.attempt, core=session.core, name=why)

    # ---------------------------------------------------------------- wire

    def _send(self, session: _Session, message: dict[str, Any]) -> bool:
        try:
            session.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            if session.eof_at is None:
                session.eof_at = self._clock()
            return False
        return True

    def _request(self, session: _Session, key: int, message: dict[str, Any]) -> None:
        session.sent[key] = self._clock()
        self._send(session, message)

    def _read(self, session: _Session) -> None:
        try:
            data = session.sock.recv(65536)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:
            session.eof_at = self._clock()
            self._log(f"core {session.core} ({session.plmn}): connection closed")
            return
        session.buffer += data
        while b"\n" in session.buffer and self._session is session:
            line, session.buffer = session.buffer.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
                self._handle(session, message)
            except (ValueError, KeyError, TypeError) as exc:
                self._log(f"core {session.core}: bad message {line[:200]!r}: {exc}")

    def _handle(self, session: _Session, message: dict[str, Any]) -> None:
        re, event = message.get("re"), message.get("event")
        if re == "echo":
            n = int(message["n"])
            for key in [k for k in session.sent if 0 <= k <= n]:
                del session.sent[key]
        elif re == "challenge" and session.phase == "challenge":
            session.sent.pop(_CHALLENGE, None)
            res = milenage_res(self.k, self.opc, str(message["rand"]))
            net = self._nets[session.plmn]
            session.phase = "attach"
            self._request(session, _ATTACH, {
                "op": "attach", "imsi": self.imsi, "plmn": session.plmn, "ran": net.ran,
                "ue_node": self.node, "res": res,
            })  # fmt: skip
        elif re == "attach" and session.phase == "attach":
            session.sent.pop(_ATTACH, None)
            self._answered(session, message)
        elif event == "bearer":
            bearer = CoreBearer.from_wire(message)
            what = "activated" if message.get("what") == "activated" else "released"
            self._emit("bearer", session.plmn, session.attempt, bearer=bearer, what=what,
                       name=str(message.get("cause") or ""))  # fmt: skip
        elif event == "detach":
            self._log(f"core {session.core} ({session.plmn}): network detach "
                      f"({message.get('cause')})")  # fmt: skip
            self._drop(session)
            self._session = None
            self._emit("detached", session.plmn, session.attempt, core=session.core,
                       name=str(message.get("cause") or ""))  # fmt: skip

    def _answered(self, session: _Session, message: dict[str, Any]) -> None:
        if message.get("ok") is True:
            bearers = tuple(CoreBearer.from_wire(b) for b in message.get("bearers") or ())
            session.phase = "attached"
            session.next_echo = self._clock() + self.echo_interval_s
            self._log(f"core {session.core} ({session.plmn}): attach accepted, "
                      f"address {message.get('address')}")  # fmt: skip
            address = str(message.get("address") or "") or None
            self._emit("accepted", session.plmn, session.attempt, core=session.core,
                       address=address, bearers=bearers)  # fmt: skip
            return
        cause, name = message.get("cause"), str(message.get("name") or "")
        self._log(f"core {session.core} ({session.plmn}): attach rejected, cause {cause} {name}")
        self._drop(session)
        self._session = None
        self._emit("rejected", session.plmn, session.attempt, core=session.core,
                   cause=int(cause) if isinstance(cause, int) else 0, name=name)  # fmt: skip

    # ---------------------------------------------------------------- out

    def _emit(self, kind: EventKind, plmn: str, attempt: int, **fields: Any) -> None:
        event = CoreEvent(kind, plmn, attempt, time.time(), **fields)
        self._publish()
        with self._lock:
            self._events.append(event)
        _poke(self._wake_w)

    def _publish(self) -> None:
        session = self._session
        image = {
            "in_use": None if session is None else {
                "plmn": session.plmn, "core": session.core, "phase": session.phase,
                "attempt": session.attempt,
            },
            "networks": {
                net.plmn: {
                    "state": "down" if net.down else "up",
                    "ran": net.ran,
                    "cores": {
                        core: "dead" if core in net.dead_at
                        else "alive" if core in net.alive else "unknown"
                        for core in net.cores
                    },
                }
                for net in self._nets.values()
            },
            "losses": list(self._losses),
        }  # fmt: skip
        with self._lock:
            changed, self._image = image != self._image, image
        if changed:
            _poke(self._wake_w)  # the modem's state image follows without an event too


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


def _poke(fd: int) -> None:
    """One byte is enough to wake a select; a full pipe already wakes it."""
    with contextlib.suppress(BlockingIOError, OSError):
        os.write(fd, b"x")
