"""The emulated MCPTT server: floor control, call control and media distribution for one group
call, as its own process on the application-server node of the emulated lab.

``python -m drivers.mcptt.server --config FILE.json --events FILE.jsonl [--stats FILE.json]``
binds a UDP floor port (``MCPT`` floor control and ``MCPC`` call control, TS 24.380 clauses 8.2
and 8.3) and a UDP media port (RTP), prints one ``ready`` line on standard output, and serves
until SIGTERM or SIGINT, then writes its counters and exits 0. The procedures are those of
``docs/mcptt.md`` (the contract with :mod:`drivers.mcptt.client` and the capture analysis):

* MCPC Connect -> MCPC Acknowledgement (reason 0, or 2 for another group or no user identity)
  and membership; a member that joins while the floor is taken gets Floor Taken (late entry) and,
  from then on, the talker's media. MCPC Disconnect -> Acknowledgement, membership ends (a
  leaving talker frees the floor).
* Floor control messages go to :class:`~drivers.mcptt.arbitration.FloorArbitrator`, which
  decides everything (grants, queue, pre-emption, timers); this module only moves its answers.
* RTP from the current talker is forwarded byte for byte to every other member at (the address
  its floor messages come from, the client media port); other media is dropped and counted.
  Media is the talker's when it comes from the talker's IP address and, only when several
  members share that address (clients on one host), carries the talker's SSRC.

Why one thread and ``selectors``: the arbitration is not thread-safe and need not be; one loop
over two sockets with the arbitration's next timer deadline as the select timeout has no hand-over
between threads. The server's share of a floor request's delay is then mostly the codec (scapy:
about 0.2 ms to decode, 0.3 ms to encode a message not sent before; repeated messages are
encoded once): well under 1 ms on the lab machine, next to tens of ms of radio under test.

Every received and sent floor or call control message is one JSON line of the events file,
written and flushed after the answers to each datagram went out (so logging delays no answer,
and the run record has the server's view even after a crash)::

    {"time_ns": ..., "event": "received", "direction": "rx", "peer": "10.0.1.2:9006",
     "app": "MCPT", "message": "floor_request", "user": "sip:ue_a1@euccs.lab",
     "ssrc": 123, "priority": 1, "indicator": 33792, ...}

``time_ns`` is CLOCK_REALTIME just after ``recvfrom`` (received) or just before ``sendto`` (sent);
the other keys are the message's fields that are present (names of
:mod:`drivers.mcptt.messages`). Other lines: ``start`` (configuration), ``malformed`` (a
datagram that was not an MCPTT message), ``media_first`` (the first forwarded RTP packet of a
grant), ``send_error``, ``internal_error`` and, last, ``counters`` (also in ``--stats``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ipaddress
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from drivers.files import write_json_atomic
from drivers.mcptt import codec
from drivers.mcptt.arbitration import FloorArbitrator, FloorConfig, Send
from drivers.mcptt.messages import (
    APP_CALL_CONTROL,
    APP_FLOOR,
    CallControlMessage,
    CallControlType,
    FloorMessage,
    FloorType,
    ReasonCode,
    RevokeCause,
    SessionType,
)

__all__ = ["Counters", "McpttServer", "ServerConfig", "main", "run"]

Address = tuple[str, int]
Message = FloorMessage | CallControlMessage

_RTP_HEADER = struct.Struct("!BBHII")
_MAX_DATAGRAM = 65535
_DRAIN_BATCH = 256  # datagrams taken from one socket before the other gets a turn
_FLOOR_KEYS = {f.name for f in fields(FloorConfig)}

_encode = functools.lru_cache(maxsize=1024)(codec.encode)
"""The codec (scapy) takes about 0.3 ms per message; the same Floor Granted, Revoke, Deny or
Acknowledgement recurs, so they are encoded once (messages are frozen, hence hashable)."""


@dataclass(frozen=True)
class ServerConfig:
    """The ``--config`` file: addresses and ports, the group, and the floor settings (the keys of
    :class:`~drivers.mcptt.arbitration.FloorConfig`, flat: ``queueing``, ``t1_s``...)."""

    bind_address: str = "0.0.0.0"
    floor_port: int = 9000
    media_port: int = 9002
    client_media_port: int = 9004
    group_id: str | None = None
    """The group's URI; a Connect naming another session or group is not accepted. None: any."""
    floor_dscp: int = 40  # CS5, like the clients' floor control (MC signalling)
    media_dscp: int = 46  # EF, like the clients' voice
    floor: FloorConfig = field(default_factory=FloorConfig)

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.bind_address)  # raises ValueError
        for name in ("floor_port", "media_port", "client_media_port"):
            port = getattr(self, name)
            if not 1 <= port <= 0xFFFF:
                raise ValueError(f"{name} must be 1..65535: {port}")
        if self.floor_port == self.media_port:
            raise ValueError("floor_port and media_port must differ")
        for name in ("floor_dscp", "media_dscp"):
            if not 0 <= getattr(self, name) <= 63:
                raise ValueError(f"{name} must be 0..63: {getattr(self, name)}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ServerConfig:
        """Build from the JSON object; unknown keys and wrong types are errors (ValueError)."""
        own = {f.name for f in fields(cls)} - {"floor"}
        unknown = sorted(set(data) - own - _FLOOR_KEYS)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for key in ("bind_address", "group_id"):
            if key in data and data[key] is not None:
                kwargs[key] = _typed(key, data[key], str)
        for key in ("floor_port", "media_port", "client_media_port", "floor_dscp", "media_dscp"):
            if key in data:
                kwargs[key] = _integer(key, data[key])
        floor: dict[str, Any] = {}
        for key in ("queueing", "ack_granted", "deny_only_participant"):
            if key in data:
                floor[key] = _typed(key, data[key], bool)
        for key in ("t1_s", "t2_s", "t3_s", "t20_s"):
            if key in data:
                floor[key] = float(_typed(key, data[key], (int, float)))
        for key in ("c20", "server_ssrc"):
            if key in data:
                floor[key] = _integer(key, data[key])
        if data.get("queue_limit") is not None:
            floor["queue_limit"] = _integer("queue_limit", data["queue_limit"])
        return cls(**kwargs, floor=FloorConfig(**floor))

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "floor"}
        return {**out, **asdict(self.floor)}


def _typed(key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"config key {key}: wrong type {type(value).__name__}")
    return value


def _integer(key: str, value: Any) -> int:
    """An integer; a float with an integral value is accepted (JSON writers emit 3.0)."""
    _typed(key, value, (int, float))
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"config key {key}: must be an integer, got {value}")
    return int(value)


@dataclass
class Counters:
    """What the server did; written as the events file's last line (``event: counters``)."""

    received: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    """Floor-port datagrams that were not MCPTT messages (ignored)."""
    media_received: int = 0
    media_forwarded: int = 0
    """RTP packets from the talker that were forwarded (each to every other member)."""
    media_copies_sent: int = 0
    media_dropped: int = 0
    """RTP packets not from the current talker (or not RTP), not forwarded."""
    preemptions: int = 0
    """Floor Revoke cause 4 sent."""
    denies: int = 0
    revokes: int = 0
    send_errors: int = 0
    internal_errors: int = 0

    def count(self, table: dict[str, int], name: str) -> None:
        table[name] = table.get(name, 0) + 1


class McpttServer:
    """The sockets, the membership (who is at which address) and one :class:`FloorArbitrator`.
    ``clock`` is the arbitration's monotonic clock; the event times are CLOCK_REALTIME."""

    def __init__(
        self,
        config: ServerConfig,
        events: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.events = events
        self.clock = clock
        self.arbitrator = FloorArbitrator(config.floor)
        self.counters = Counters()
        self.routes: dict[str, Address] = {}  # member -> the address of its floor socket
        self.users_at: dict[Address, str] = {}
        self._media_first_of: int | None = None  # arrival id of the grant whose media was logged
        self._pending_log: list[dict[str, Any]] = []
        self.floor_sock = _udp_socket(config.bind_address, config.floor_port, config.floor_dscp)
        try:
            self.media_sock = _udp_socket(config.bind_address, config.media_port, config.media_dscp)
        except OSError:
            self.floor_sock.close()
            raise

    # ----------------------------------------------------------------------------------------
    # Floor port
    # ----------------------------------------------------------------------------------------

    def on_floor_datagram(self, data: bytes, peer: Address, rx_ns: int) -> None:
        try:
            messages = self._decode(data)
        except Exception as exc:  # the codec raises CodecError; anything else is still junk
            self.counters.malformed += 1
            self._log(
                "malformed",
                time_ns=rx_ns,
                peer=_peer(peer),
                size=len(data),
                error=f"{type(exc).__name__}: {exc}",
            )
            self._flush_log()
            return
        for message in messages:
            try:
                self._on_message(message, peer, rx_ns)
            except Exception as exc:  # a server bug must not end the lab run; it is logged
                self.counters.internal_errors += 1
                self._log("internal_error", peer=_peer(peer), error=f"{type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)
        self._flush_log()

    def _decode(self, data: bytes) -> list[Message]:
        if not codec.looks_like_mc(data):
            raise codec.CodecError("not an MCPTT floor or call control packet")
        messages = codec.decode_all(data)
        if not messages:
            raise codec.CodecError("no MCPTT message in the packet")
        return messages

    def _on_message(self, message: Message, peer: Address, rx_ns: int) -> None:
        now = self.clock()
        if isinstance(message, CallControlMessage):
            user = self._call_control_user(message, peer)
            self._log_message("received", message, peer, user, rx_ns)
            if message.type is CallControlType.CONNECT:
                self._on_connect(message, user, peer, now)
            elif message.type is CallControlType.DISCONNECT:
                self._on_disconnect(message, user, peer, now)
            return
        user = self.users_at.get(peer) or message.user_id or f"ssrc:{message.ssrc:08x}"
        self._log_message("received", message, peer, user, rx_ns)
        self._dispatch(self.arbitrator.handle(user, message, now), sender=(user, peer))

    def _call_control_user(self, message: CallControlMessage, peer: Address) -> str | None:
        if message.type is CallControlType.CONNECT:
            return message.inviting_user or self.users_at.get(peer)
        return self.users_at.get(peer) or message.inviting_user

    def _on_connect(
        self, message: CallControlMessage, user: str | None, peer: Address, now: float
    ) -> None:
        group = self.config.group_id
        named = {message.session_id, message.group_id} - {None}
        if user is None:
            self._acknowledge(message, peer, user, ReasonCode.NOT_ACCEPTED, "no MCPTT user id")
            return
        if group is not None and named and named != {group}:
            self._acknowledge(message, peer, user, ReasonCode.NOT_ACCEPTED, "unknown group")
            return
        previous = self.users_at.get(peer)
        if previous is not None and previous != user:  # one floor address is one participant
            self._dispatch(self.arbitrator.leave(previous, now))
            self.routes.pop(previous, None)
        old = self.routes.get(user)
        if old is not None and old != peer and self.users_at.get(old) == user:
            del self.users_at[old]
        self.routes[user] = peer
        self.users_at[peer] = user
        self._acknowledge(message, peer, user, ReasonCode.ACCEPTED)
        self._dispatch(self.arbitrator.join(user, message.ssrc, now))

    def _on_disconnect(
        self, message: CallControlMessage, user: str | None, peer: Address, now: float
    ) -> None:
        self._acknowledge(message, peer, user, ReasonCode.ACCEPTED)
        if user is None:
            return
        self._dispatch(self.arbitrator.leave(user, now))
        address = self.routes.pop(user, None)
        if address is not None and self.users_at.get(address) == user:
            del self.users_at[address]

    def _acknowledge(
        self,
        message: CallControlMessage,
        peer: Address,
        user: str | None,
        reason: ReasonCode,
        warning: str | None = None,
    ) -> None:
        ack = CallControlMessage(
            CallControlType.ACK,
            self.config.floor.server_ssrc,
            session_type=message.session_type
            if message.session_type is not None
            else int(SessionType.PREARRANGED),
            session_id=message.session_id or self.config.group_id,
            warning=warning,
            reason_code=int(reason),
        )
        self._send_floor(ack, peer, user)

    # ----------------------------------------------------------------------------------------
    # Media port
    # ----------------------------------------------------------------------------------------

    def on_media_datagram(self, data: bytes, peer: Address) -> None:
        self.counters.media_received += 1
        talker = self.arbitrator.talker_entry
        rtp = len(data) >= _RTP_HEADER.size and data[0] >> 6 == 2
        if talker is None or not rtp or not self._is_talker_media(data, peer):
            self.counters.media_dropped += 1
            return
        forward, out = self.arbitrator.media(talker.user, self.clock())
        self._dispatch(out)
        if forward:
            self.counters.media_forwarded += 1
            port = self.config.client_media_port
            for member, address in self.routes.items():  # the routes are the members
                if member == talker.user:
                    continue
                try:
                    self.media_sock.sendto(data, (address[0], port))
                    self.counters.media_copies_sent += 1
                except OSError as exc:
                    self._send_error("rtp", (address[0], port), member, exc)
            if self._media_first_of != talker.arrival:
                self._media_first_of = talker.arrival
                _, _, seq, _, ssrc = _RTP_HEADER.unpack_from(data)
                self._log("media_first", peer=_peer(peer), user=talker.user, ssrc=ssrc, seq=seq)
        else:
            self.counters.media_dropped += 1
        self._flush_log()

    def _is_talker_media(self, data: bytes, peer: Address) -> bool:
        talker = self.arbitrator.talker_entry
        assert talker is not None
        address = self.routes.get(talker.user)
        if address is None or address[0] != peer[0]:
            return False
        sharing = sum(1 for a in self.routes.values() if a[0] == peer[0])
        if sharing == 1:
            return True
        ssrc: int = _RTP_HEADER.unpack_from(data)[4]
        return ssrc == talker.ssrc

    # ----------------------------------------------------------------------------------------
    # Timers and sending
    # ----------------------------------------------------------------------------------------

    def next_timeout(self) -> float | None:
        """Seconds until the arbitration's next timer (0 when one is due), None when none runs."""
        deadline = self.arbitrator.next_deadline()
        return None if deadline is None else max(0.0, deadline - self.clock())

    def run_timers(self) -> None:
        self._dispatch(self.arbitrator.tick(self.clock()))
        self._flush_log()

    def _dispatch(self, sends: Iterable[Send], sender: tuple[str, Address] | None = None) -> None:
        """Send the arbitration's messages; an answer to the sender goes where its message came
        from, anything else to the member's registered floor address."""
        encoded: dict[int, bytes] = {}  # a fan-out shares one message object: encode it once
        for send in sends:
            message = send.message
            if sender is not None and send.to == sender[0]:
                address: Address | None = sender[1]
            else:
                address = self.routes.get(send.to)
            if address is None:
                self._send_error("floor", None, send.to, OSError("no address for this member"))
                continue
            data = encoded.get(id(message))
            if data is None:
                try:
                    data = encoded[id(message)] = _encode(message)
                except codec.CodecError as exc:  # e.g. a client's over-long MCPTT ID
                    self.counters.internal_errors += 1
                    self._log("internal_error", user=send.to, error=f"cannot encode: {exc}")
                    continue
            self._send_floor(message, address, send.to, data)
            if message.type is FloorType.DENY:
                self.counters.denies += 1
            elif message.type is FloorType.REVOKE:
                self.counters.revokes += 1
                if message.reject_cause == RevokeCause.PREEMPTED:
                    self.counters.preemptions += 1

    def _send_floor(
        self, message: Message, address: Address, user: str | None, data: bytes | None = None
    ) -> None:
        if data is None:
            data = _encode(message)
        tx_ns = time.time_ns()
        try:
            self.floor_sock.sendto(data, address)
        except OSError as exc:
            self._send_error(_name(message), address, user, exc)
            return
        self._log_message("sent", message, address, user, tx_ns)

    def _send_error(
        self, what: str, address: Address | None, user: str | None, exc: Exception
    ) -> None:
        self.counters.send_errors += 1
        peer = _peer(address) if address is not None else None
        self._log("send_error", peer=peer, user=user, message=what, error=str(exc))

    # ----------------------------------------------------------------------------------------
    # Events file
    # ----------------------------------------------------------------------------------------

    def _log_message(
        self, event: str, message: Message, peer: Address, user: str | None, time_ns: int
    ) -> None:
        table = self.counters.received if event == "received" else self.counters.sent
        name = _name(message)
        self.counters.count(table, name)
        self._log(
            event,
            time_ns=time_ns,
            direction="rx" if event == "received" else "tx",
            peer=_peer(peer),
            app=APP_FLOOR if isinstance(message, FloorMessage) else APP_CALL_CONTROL,
            message=name,
            user=user,
            **_fields(message),
        )

    def _log(self, event: str, *, time_ns: int | None = None, **values: Any) -> None:
        line = {"time_ns": time_ns if time_ns is not None else time.time_ns(), "event": event}
        self._pending_log.append({**line, **values})

    def _flush_log(self) -> None:
        """Write the lines of one input after its answers went out (logging adds no delay)."""
        if not self._pending_log:
            return
        self.events.write("".join(json.dumps(line) + "\n" for line in self._pending_log))
        self.events.flush()
        self._pending_log.clear()

    def log_start(self) -> None:
        self._log("start", pid=os.getpid(), config=self.config.to_json())
        self._flush_log()

    def close(self) -> dict[str, Any]:
        """Write the counters line and close the sockets; returns the counters."""
        counters = asdict(self.counters)
        self._flush_log()
        self._log("counters", **counters)
        self._flush_log()
        self.floor_sock.close()
        self.media_sock.close()
        return counters

    # ----------------------------------------------------------------------------------------
    # Receive loops
    # ----------------------------------------------------------------------------------------

    def drain_floor(self) -> None:
        for _ in range(_DRAIN_BATCH):
            try:
                data, peer = self.floor_sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. an ICMP error reported on the socket: nothing to read
                continue
            self.on_floor_datagram(data, peer[:2], time.time_ns())

    def drain_media(self) -> None:
        for _ in range(_DRAIN_BATCH):
            try:
                data, peer = self.media_sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self.on_media_datagram(data, peer[:2])


def _udp_socket(address: str, port: int, dscp: int) -> socket.socket:
    ipv6 = ipaddress.ip_address(address).version == 6
    sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if ipv6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _name(message: Message) -> str:
    """``floor_request``, ``call_connect``...: the names the client's events file uses too."""
    prefix = "floor" if isinstance(message, FloorMessage) else "call"
    return f"{prefix}_{message.type.name.lower()}"


def _peer(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _fields(message: Message) -> dict[str, Any]:
    """The message's present fields as JSON values (``type`` is in ``message``)."""
    out: dict[str, Any] = {}
    for f in fields(message):
        value = getattr(message, f.name)
        if f.name == "type" or value is None or (f.name == "ack_required" and not value):
            continue
        if f.name == "unknown":
            if value:
                out["unknown_fields"] = [field_id for field_id, _ in value]
            continue
        out[f.name] = _json_value(value)
    return out


def _json_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _json_value(v) for k, v in asdict(value).items()}
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Process
# --------------------------------------------------------------------------------------------


def run(config: ServerConfig, events_path: Path, stats_path: Path | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status (0)."""
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    try:
        with events_path.open("a", encoding="utf-8") as events:
            server = McpttServer(config, events)
            counters: dict[str, Any] = {}
            selector = selectors.DefaultSelector()
            try:
                selector.register(server.floor_sock, selectors.EVENT_READ, server.drain_floor)
                selector.register(server.media_sock, selectors.EVENT_READ, server.drain_media)
                selector.register(wake_r, selectors.EVENT_READ, None)
                server.log_start()
                sys.stdout.write("ready\n")
                sys.stdout.flush()
                while not stopping:
                    for key, _ in selector.select(server.next_timeout()):
                        if key.data is None:
                            with contextlib.suppress(OSError):
                                wake_r.recv(4096)
                        else:
                            key.data()
                    server.run_timers()
            finally:
                selector.close()
                counters = server.close()
            if stats_path is not None:
                write_json_atomic(stats_path, counters)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        wake_r.close()
        wake_w.close()
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m drivers.mcptt.server",
        description="The emulated MCPTT server (floor control, call control, media fan-out).",
    )
    parser.add_argument("--config", type=Path, required=True, help="JSON object: ServerConfig")
    parser.add_argument("--events", type=Path, required=True, help="JSON lines, appended")
    parser.add_argument("--stats", type=Path, help="also write the counters here on exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: 0 after a signal, 1 when the sockets cannot be bound, 2 for a bad config."""
    args = _build_parser().parse_args(argv)
    try:
        data = json.loads(args.config.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the config file must hold a JSON object")
        config = ServerConfig.from_mapping(data)
    except (OSError, ValueError, TypeError) as exc:
        print(f"mcptt server: bad config {args.config}: {exc}", file=sys.stderr)
        return 2
    try:
        return run(config, args.events, args.stats)
    except OSError as exc:
        print(f"mcptt server: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
