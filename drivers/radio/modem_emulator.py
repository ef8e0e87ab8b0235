"""The emulated LTE modem as a process of its own: the :class:`~drivers.radio.modem_state.Modem`
state machine served over a pseudo-terminal or a TCP socket, coupled to the lab's physics, so
that the AT modem driver (and any other AT client) talks to it over a real wire.

Command line::

    python -m drivers.radio.modem_emulator --config CONFIG.json
        (--pty-link PATH | --tcp-port N) --ready-file F [--state-out S]
        [--garble-every N] [--interleave-urcs] [--urc-hold-s T] [--seed N]

``--pty-link`` opens a pty (both ends raw) and points the symlink PATH at its ``/dev/pts/N``;
``--tcp-port`` listens on 127.0.0.1 (0 picks a port; one client at a time, a new one replaces
the old). The ready file (JSON) says ``{"pid", "url"}``: the symlink or
``socket://127.0.0.1:PORT``, both pyserial URLs. ``--state-out`` keeps a JSON image of the
modem (functionality, registration, PLMN, RSRP, attenuation, power, PDN, link blocks, and with
cores: ``core`` (the attach session: plmn, attempt, accepted, address, down and rejecting
networks), ``bearers`` (dedicated bearers as secondary contexts: cid, p_cid, ebi, qci, gbr_kbps,
mbr_kbps, arp) and ``cores`` (per network its state up/down, RAN and each core's
alive/dead/unknown; ``in_use``: plmn, core socket, phase; ``losses``: every declared core loss
with its first-sign and declaration wall times)), replaced atomically on each change.

The configuration (JSON; every key optional) is read by
:meth:`~drivers.radio.modem_state.ModemConfig.from_mapping`: ``identity`` {manufacturer,
model, revision, imei}, ``imsi``, ``pin`` (null = no SIM PIN), ``puk``, ``home_plmn``,
``networks`` [{plmn, long, short, tac, ci, pci, earfcn, band, rsrp_dbm (at 0 dB), rsrq_db,
sinr_db, link (relay control socket carrying this network's traffic), forbidden, bandwidth
(Quectel code 0-5), duplex, cores (attach socket paths of the network's emulated cores, primary
first, then standbys), ran (the RAN node name sent in the attach)}], ``apn``, ``pdn_address``,
``qci``, ``attach_s`` (search and attach time once service is possible), ``boot_s``,
``min_rsrp_dbm`` (below: no service), ``hysteresis_db`` (needed above it to regain service),
``smsc``, ``attenuator`` {state_file, key} and ``power`` {state_file, output_key, voltage_key,
min_voltage_v}, ``block_reason``; for networks with cores: ``k`` and ``opc`` (the USIM's
MILENAGE keys, 32 hex digits), ``node`` (the UE node name sent in the attach),
``core_detection_s`` (a core's loss is declared this long after its first sign; default 1.0)
and ``echo_interval_s`` (keepalive period; default 0.05).

Cores (:mod:`drivers.radio.core_link`): an attach to a network with cores completes only once
its core accepted it (asked for at the start of the attach window, so ``attach_s`` and the
core's answer overlap) and the PDN address is the one the core allocated; a rejected attach
makes the network unusable for automatic selection (``+CEREG`` stat 3 with the core's EMM cause
under manual selection) until a manual selection of it, radio on again or a reboot; a lost core
drops the registration (``+CEREG: 2``, ``+CGEV: NW PDN DEACT``, ``+CGEV: NW DETACH``) and the
modem attaches again through a standby core, or, with none left alive, treats the network as
out of coverage. Dedicated bearers from the core show as secondary contexts (``+CGEV: NW ACT
<p_cid>,<cid>,0`` / ``NW DEACT``, ``+CGEQOSRDP``, ``+CGSCONTRDP``, ``+CGPADDR``).

Physics: every 50 ms the attenuator and power supply state files are read (the ``settings`` of
a SCPI emulator's ``--state-out``; a missing file or key = 0 dB and powered). RSRP is the
network's ``rsrp_dbm`` minus the attenuation. Powered off, the modem is dead: it reads and
drops input and sends nothing; powered again, it boots (``boot_s``), says ``RDY``, ``+CFUN: 1``,
``+CPIN: ...`` like a Quectel module, with its settings back to defaults. Link coupling: the
relay of every network's ``link`` is blocked with ``block_reason`` whenever that network does
not carry the modem's data (not registered, RF off, powered off, PDN inactive), from a thread
of its own so that a slow or missing relay never stalls the modem (failures are logged and
retried every second).

Fault injection: ``--garble-every N`` writes a line of random non-ASCII bytes after every N
responses; ``--interleave-urcs`` holds each URC (up to ``--urc-hold-s``) and writes it inside
the next response, between its information lines and its final result code, as real modems do
now and then, so that a driver's demultiplexer is exercised deterministically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from drivers.errors import DriverError
from drivers.files import write_json_atomic
from drivers.impairment.relay import RelayControl
from drivers.ptyport import PtyEndpoint
from drivers.radio.core_link import CoreLink
from drivers.radio.modem_state import Modem, ModemConfig, Output

__all__ = ["main"]

POLL_S = 0.05
"""How often the physics state files are read."""
RELAY_TIMEOUT_S = 2.0
RELAY_RETRY_S = 1.0
SEND_TIMEOUT_S = 2.0
"""A TCP client that does not read for this long is dropped (a modem does not wait)."""


def log(message: str) -> None:
    """The emulator's own log: one line on stdout (the driver sends it to a file)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Transports
# --------------------------------------------------------------------------------------------


class PtyTransport(PtyEndpoint):
    """A pseudo-terminal served to one driver (:class:`~drivers.ptyport.PtyEndpoint`)."""

    def fds(self) -> list[int]:
        return [self.master]

    def read(self, fd: int | None = None) -> bytes:
        return super().read()


class TcpTransport:
    """A TCP listener on 127.0.0.1 with one client at a time; a new client replaces the old."""

    def __init__(self, port: int, on_client: Callable[[], None]) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(4)
        self.listener.setblocking(False)
        self.port = int(self.listener.getsockname()[1])
        self.url = f"socket://127.0.0.1:{self.port}"
        self.client: socket.socket | None = None
        self._on_client = on_client

    def fds(self) -> list[int]:
        fds = [self.listener.fileno()]
        if self.client is not None:
            fds.append(self.client.fileno())
        return fds

    def read(self, fd: int) -> bytes:
        if fd == self.listener.fileno():
            try:
                conn, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return b""
            if self.client is not None:
                log("a new client replaces the connected one")
                self._drop()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(SEND_TIMEOUT_S)
            self.client = conn
            log(f"client {peer[0]}:{peer[1]} connected")
            self._on_client()
            return b""
        if self.client is None or fd != self.client.fileno():
            return b""
        try:
            data = self.client.recv(4096)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return b""
        except OSError:
            data = b""
        if not data:
            log("client disconnected")
            self._drop()
        return data

    def write(self, data: bytes) -> None:
        if self.client is None:
            return
        try:
            self.client.sendall(data)
        except OSError:
            self._drop()

    def _drop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(OSError):
                self.client.close()
            self.client = None

    def close(self) -> None:
        self._drop()
        with contextlib.suppress(OSError):
            self.listener.close()


Transport = PtyTransport | TcpTransport

# --------------------------------------------------------------------------------------------
# Physics and link coupling
# --------------------------------------------------------------------------------------------


class StateFile:
    """A JSON state file another emulator replaces atomically; re-read only when it changed."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._signature: tuple[int, int, int] | None = None
        self.settings: dict[str, Any] | None = None

    def poll(self) -> dict[str, Any] | None:
        """Its ``settings`` (or the whole object if it has none); None while it is missing."""
        try:
            st = self.path.stat()
        except OSError:
            self._signature, self.settings = None, None
            return None
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if signature != self._signature:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return self.settings  # keep the last good reading
            self._signature = signature
            inner = data.get("settings", data) if isinstance(data, dict) else None
            self.settings = inner if isinstance(inner, dict) else {}
        return self.settings


def _on(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().upper() not in ("0", "OFF", "FALSE", "")
    return bool(value)


class Physics:
    """Reads the attenuation and whether the modem is powered from the coupled state files."""

    def __init__(self, config: ModemConfig) -> None:
        self.config = config
        att, power = config.attenuator, config.power
        self._att = None if att is None else StateFile(att.state_file)
        self._power = None if power is None else StateFile(power.state_file)

    def read(self) -> tuple[float, bool]:
        attenuation = 0.0
        if self._att is not None and self.config.attenuator is not None:
            settings = self._att.poll()
            value = None if settings is None else settings.get(self.config.attenuator.key)
            with contextlib.suppress(TypeError, ValueError):
                attenuation = float(value) if value is not None else 0.0
        powered = True
        power = self.config.power
        if self._power is not None and power is not None:
            settings = self._power.poll()
            if settings is not None:
                output = settings.get(power.output_key, True)
                voltage = settings.get(power.voltage_key)
                try:
                    volts = float("inf") if voltage is None else float(voltage)
                except (TypeError, ValueError):
                    volts = float("inf")
                powered = _on(output) and volts >= power.min_voltage_v
        return attenuation, powered


class LinkCoupler:
    """Keeps each relay's block in step with the modem's data service, on a thread of its
    own; only the latest wish per link is applied, and a failed one is retried every
    :data:`RELAY_RETRY_S` (the relay may come up after the modem)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self._wanted: dict[str, bool] = {}
        self._applied: dict[str, bool] = {}
        self._errors: dict[str, str] = {}
        self._fresh = False
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="link-coupler", daemon=True)
        self._thread.start()

    def want(self, blocks: Mapping[str, bool]) -> None:
        with self._cond:
            if any(self._wanted.get(k) != v for k, v in blocks.items()):
                self._wanted.update(blocks)
                self._fresh = True
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=RELAY_TIMEOUT_S + 1)

    def _run(self) -> None:
        retry_at: float | None = None
        while True:
            with self._cond:
                while True:
                    if self._stop:
                        return
                    todo = {k: v for k, v in self._wanted.items() if self._applied.get(k) != v}
                    now = time.monotonic()
                    if todo and (self._fresh or retry_at is None or now >= retry_at):
                        break
                    self._cond.wait(None if not todo or retry_at is None else retry_at - now)
                self._fresh = False
            failed = [link for link, on in sorted(todo.items()) if not self._apply(link, on)]
            retry_at = time.monotonic() + RELAY_RETRY_S if failed else None

    def _apply(self, link: str, on: bool) -> bool:
        try:
            with RelayControl(link, timeout_s=RELAY_TIMEOUT_S) as relay:
                left = relay.block(self.reason, on)
        except DriverError as exc:
            message = str(exc)
            if self._errors.get(link) != message:
                log(f"link {link}: cannot {'block' if on else 'unblock'} ({message}); retrying")
            self._errors[link] = message
            return False
        self._applied[link] = on
        self._errors.pop(link, None)
        log(f"link {link}: {'blocked' if on else 'unblocked'} ({', '.join(left) or 'no block'})")
        return True


# --------------------------------------------------------------------------------------------
# The serving loop
# --------------------------------------------------------------------------------------------


def _frame(lines: Sequence[str]) -> bytes:
    return b"".join(b"\r\n" + line.encode("latin-1", "replace") + b"\r\n" for line in lines)


class Emulator:
    """The select loop: input to the modem, physics to the modem, the modem's output to the
    wire (with the fault injection), state image and link blocks out."""

    def __init__(
        self,
        config: ModemConfig,
        transport_factory: Callable[[Callable[[], None]], Transport],
        *,
        state_out: Path | None = None,
        garble_every: int = 0,
        interleave_urcs: bool = False,
        urc_hold_s: float = 2.0,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.physics = Physics(config)
        attenuation, powered = self.physics.read()
        has_cores = any(n.cores for n in config.networks)
        self.core = CoreLink(config, log=log) if has_cores else None
        self.modem = Modem(
            config, time.monotonic(), powered=powered, attenuation_db=attenuation, core=self.core
        )
        self.transport: Transport = transport_factory(self.modem.reset_input)
        self.state_out = state_out
        self.garble_every = garble_every
        self.interleave = interleave_urcs
        self.urc_hold_s = urc_hold_s
        self.rng = random.Random(seed)
        self.responses = 0
        self.garbled = 0
        self._held: list[tuple[float, tuple[str, ...]]] = []
        self._last_state: dict[str, Any] | None = None
        self._was_powered = powered
        self.coupler = LinkCoupler(config.block_reason)
        self._publish()

    def run(self) -> None:
        next_poll = 0.0
        while True:
            now = time.monotonic()
            wake = [next_poll, *(due for due, _ in self._held[:1])]
            deadline = self.modem.next_deadline()
            if deadline is not None:
                wake.append(deadline)
            timeout = max(0.0, min(wake) - now)
            fds = self.transport.fds()
            core_fds = [] if self.core is None else [self.core.wake_fd]
            try:
                readable, _, _ = select.select(fds + core_fds, [], [], timeout)
            except InterruptedError:
                readable = []
            if self.core is not None and self.core.wake_fd in readable:
                for event in self.core.take_events():
                    log(f"core event: {event.kind} {event.plmn} attempt {event.attempt} "
                        f"{event.core or ''} {event.address or ''}{event.name}")  # fmt: skip
                    self.modem.core_event(event, time.monotonic())
            for fd in readable:
                if fd in core_fds:
                    continue
                data = self.transport.read(fd)
                if data:
                    # a dead modem reads nothing: the bytes are lost
                    self.modem.feed(data, time.monotonic())
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + POLL_S
                attenuation, powered = self.physics.read()
                if powered != self._was_powered:
                    log(f"power {'on: booting' if powered else 'off: silent'}")
                    self._was_powered = powered
                self.modem.set_physics(attenuation, powered, now)
            self.modem.tick(now)
            outputs = self.modem.take_output()
            self._publish()  # the state file is never behind what the wire says
            self._write(outputs, now)

    def _write(self, outputs: list[Output], now: float) -> None:
        for out in outputs:
            if out.kind == "echo":
                self.transport.write(out.data)
            elif out.kind == "urc":
                if self.interleave:
                    self._held.append((now + self.urc_hold_s, out.lines))
                else:
                    self.transport.write(_frame(out.lines))
            else:
                data = _frame(out.lines)
                if self._held:
                    data += _frame([line for _, lines in self._held for line in lines])
                    self._held.clear()
                self.transport.write(data + _frame([out.final]))
                self.responses += 1
                if self.garble_every and self.responses % self.garble_every == 0:
                    self._garble()
        while self._held and self._held[0][0] <= now:
            self.transport.write(_frame(self._held.pop(0)[1]))
        if not self.modem.alive:
            self._held.clear()

    def _garble(self) -> None:
        noise = bytes(self.rng.randrange(0x80, 0x100) for _ in range(self.rng.randint(4, 24)))
        self.garbled += 1
        self.transport.write(b"\r\n" + noise + b"\r\n")

    def _publish(self) -> None:
        state = self.modem.snapshot()
        if self.core is not None:
            state["cores"] = self.core.snapshot()
        self.coupler.want(state["blocked"])
        if state != self._last_state:
            if self._last_state is None or state["stat"] != self._last_state["stat"]:
                log(f"registration: {state['stat']} ({state['stat_name']}) {state['plmn'] or ''}")
            self._last_state = state
            if self.state_out is not None:
                write_json_atomic(self.state_out, {**state, "pid": os.getpid()}, durable=False)

    def close(self) -> None:
        if self.core is not None:
            self.core.close()
        self.coupler.stop()
        self.transport.close()


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drivers.radio.modem_emulator",
        description="Emulated 3GPP TS 27.007 LTE modem on a pty or a TCP socket.",
    )
    parser.add_argument("--config", type=Path, required=True, help="configuration (JSON)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty-link", type=Path, help="symlink to create to the pty's slave")
    where.add_argument("--tcp-port", type=int, help="TCP port on 127.0.0.1 (0 picks one)")
    parser.add_argument("--ready-file", type=Path, required=True, help="JSON {pid, url}")
    parser.add_argument("--state-out", type=Path, help="JSON image of the modem, kept current")
    parser.add_argument(
        "--garble-every",
        type=int,
        default=0,
        metavar="N",
        help="a line of random non-ASCII bytes after every N responses",
    )
    parser.add_argument(
        "--interleave-urcs",
        action="store_true",
        help="write URCs inside the next response, before its final result",
    )
    parser.add_argument(
        "--urc-hold-s",
        type=float,
        default=2.0,
        help="longest a URC waits for a response to ride in",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the garbage bytes")
    args = parser.parse_args(argv)  # fmt: skip

    try:
        config = ModemConfig.from_mapping(json.loads(args.config.read_text()))
    except (OSError, ValueError) as exc:
        print(f"bad configuration {args.config}: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    def transport(on_client: Callable[[], None]) -> Transport:
        if args.pty_link is not None:
            return PtyTransport(args.pty_link)
        return TcpTransport(args.tcp_port, on_client)

    emulator: Emulator | None = None
    try:
        emulator = Emulator(
            config,
            transport,
            state_out=args.state_out,
            garble_every=max(0, args.garble_every),
            interleave_urcs=args.interleave_urcs,
            urc_hold_s=args.urc_hold_s,
            seed=args.seed,
        )
        url = emulator.transport.url
        write_json_atomic(args.ready_file, {"pid": os.getpid(), "url": url})
        where_to = getattr(emulator.transport, "device", url)
        log(f"modem {config.manufacturer} {config.model} serving on {url} ({where_to})")
        emulator.run()
    except SystemExit:
        pass
    finally:
        if emulator is not None:
            emulator.close()
            log(f"stopped after {emulator.modem.commands} commands")
    return 0


if __name__ == "__main__":
    sys.exit(main())
