"""An MCPTT client process: one per UE, run inside the UE's node so its traffic crosses the radio.

``python -m drivers.mcptt.client --config FILE.json --events FILE.jsonl`` binds a floor socket
and a media socket, prints one ``ready`` line, then takes commands as JSON lines on standard
input (``join``, ``leave``, ``press``, ``release``, ``status``, ``quit``) and answers each with
one JSON line on standard output. Commands return at once: what the server answers (Floor
Granted, Deny, Revoke...) arrives later and is logged, with its time, to the events file. The
procedures are those of ``docs/mcptt.md``: MCPC Connect before the first Floor Request, RTP
voice (AMR-WB mode 8, 20 ms frames) while granted, Floor Release on a Floor Revoke. Requests,
releases and connects are resent after T101/T100/the connect timer, at most C times, like a real
floor participant (TS 24.380 annex F; the values come from the lab file).

The process ends on ``quit``, on end of input (the controller is gone) and on SIGTERM/SIGINT,
writing its counters as the last line of the events file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from drivers.mcptt import codec
from drivers.mcptt.messages import (
    CallControlMessage,
    CallControlType,
    CallType,
    FloorMessage,
    FloorType,
    ReasonCode,
    SessionType,
    indicator_for,
)

__all__ = ["ClientConfig", "main"]

FRAME_S = 0.020
TS_PER_FRAME = 320  # 20 ms at the AMR-WB RTP clock of 16 kHz
AMRWB_MODE8_PAYLOAD = bytes([0xF0, 0x44]) + bytes(60)
"""CMR 15 (no request), one ToC entry (FT 8 = 23.85 kbit/s, Q = 1), 477 bits in 60 octets
(RFC 4867 octet-aligned; the frame content is silence-like zeros: the lab measures transport)."""
MEDIA_BURST_GAP_S = 0.5
"""Received media after this long without any counts as the start of a new burst."""


@dataclass(frozen=True)
class ClientConfig:
    user_id: str
    group_id: str
    server_address: str
    server_floor_port: int = 9000
    server_media_port: int = 9002
    bind_address: str = "0.0.0.0"
    floor_port: int = 9006
    media_port: int = 9004
    resend_s: float = 0.5
    """T101 (Floor Request), T100 (Floor Release) and the connect resend timer."""
    resend_count: int = 3
    """C101/C100: how many times a message is sent in all before giving up."""
    floor_dscp: int = 40  # CS5: MC signalling, QCI 69 (spec notes section 5.3, [mem])
    media_dscp: int = 46  # EF: MC voice, QCI 65
    ssrc: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ClientConfig:
        return cls(**dict(data))


@dataclass
class _Pending:
    """A message waiting for its answer, resent on a timer."""

    data: bytes
    what: str
    due: float
    left: int


@dataclass
class Counters:
    sent: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    media_sent: int = 0
    media_received: int = 0
    malformed: int = 0
    gave_up: int = 0


class Client:
    def __init__(self, config: ClientConfig, events: TextIO) -> None:
        self.config = config
        self.events = events
        self.ssrc = config.ssrc if config.ssrc is not None else zlib.crc32(config.user_id.encode())
        self.server_floor = (config.server_address, config.server_floor_port)
        self.server_media = (config.server_address, config.server_media_port)
        address = config.bind_address
        self.floor_sock = _udp_socket(address, config.floor_port, config.floor_dscp)
        self.media_sock = _udp_socket(address, config.media_port, config.media_dscp)
        self.joined = False
        self.floor = "idle"  # idle, pending_request, queued, granted, pending_release
        self.press_after_connect: tuple[int, CallType] | None = None
        self.call_pending: CallControlType | None = None
        self.pending: dict[str, _Pending] = {}
        self.rtp_seq = self.ssrc & 0xFFFF
        self.rtp_ts = self.ssrc >> 8
        self.next_frame: float | None = None
        self.first_of_burst = False
        self.last_media_rx = 0.0
        self.talker: str | None = None
        self.counters = Counters()

    # logging ------------------------------------------------------------------------

    def log(self, event: str, **fields: Any) -> None:
        line = {"time_ns": time.time_ns(), "user": self.config.user_id, "event": event, **fields}
        self.events.write(json.dumps(line) + "\n")
        self.events.flush()

    # sending ------------------------------------------------------------------------

    def _send(self, message: FloorMessage | CallControlMessage, *, resend: str | None) -> None:
        data = codec.encode(message)
        self.floor_sock.sendto(data, self.server_floor)
        name = _name(message)
        self.counters.sent[name] = self.counters.sent.get(name, 0) + 1
        self.log("sent", message=name)
        if resend is not None:
            due = time.monotonic() + self.config.resend_s
            self.pending[resend] = _Pending(data, name, due, self.config.resend_count - 1)

    def _call_control(self, kind: CallControlType) -> None:
        message = CallControlMessage(
            kind,
            self.ssrc,
            session_type=SessionType.PREARRANGED,
            session_id=self.config.group_id,
            group_id=self.config.group_id,
            inviting_user=self.config.user_id,
        )
        self.call_pending = kind
        self._send(message, resend="call")

    def _request(self, priority: int, call_type: CallType) -> None:
        message = FloorMessage(
            FloorType.REQUEST,
            self.ssrc,
            priority=priority,
            indicator=indicator_for(call_type, queueing=True),
            user_id=self.config.user_id,
        )
        self.floor = "pending_request"
        self._send(message, resend="floor")

    def _release(self) -> None:
        self._stop_media()
        self.floor = "pending_release"
        message = FloorMessage(FloorType.RELEASE, self.ssrc, user_id=self.config.user_id)
        self._send(message, resend="floor")

    # commands -----------------------------------------------------------------------

    def command(self, cmd: Mapping[str, Any]) -> dict[str, Any]:
        op = cmd.get("op")
        if op == "join":
            if not self.joined:
                self.log("join")
                self._call_control(CallControlType.CONNECT)
        elif op == "leave":
            self.log("leave")
            if self.floor in ("granted", "pending_request", "queued"):
                self._release()
            self._call_control(CallControlType.DISCONNECT)
            self.joined = False
        elif op == "press":
            priority = int(cmd.get("priority", 1))
            if not 0 <= priority <= 255:
                raise ValueError(f"priority must be 0..255, got {priority}")
            call_type = CallType[str(cmd.get("call_type", "normal")).upper()]
            self.log("press", priority=priority, call_type=call_type.name.lower())
            if self.press_after_connect is not None:
                raise ValueError("the PTT is already pressed (waiting for the call set-up)")
            if self.floor in ("granted", "pending_request", "queued"):
                raise ValueError(f"the PTT is already pressed (floor state {self.floor})")
            if self.joined:
                self._request(priority, call_type)
            else:
                self.press_after_connect = (priority, call_type)
                self._call_control(CallControlType.CONNECT)
        elif op == "release":
            self.log("release")
            self.press_after_connect = None
            if self.floor in ("granted", "pending_request", "queued"):
                self._release()
        elif op not in ("status", "quit"):
            raise ValueError(f"unknown command {op!r}")
        return self.status()

    def status(self) -> dict[str, Any]:
        return {
            "user": self.config.user_id,
            "joined": self.joined,
            "floor": self.floor,
            "talker": self.talker,
            "media_sent": self.counters.media_sent,
            "media_received": self.counters.media_received,
        }

    # receiving ----------------------------------------------------------------------

    def on_floor_datagram(self, data: bytes) -> None:
        try:
            messages = codec.decode_all(data)
        except codec.CodecError as exc:
            self.counters.malformed += 1
            self.log("malformed", error=str(exc))
            return
        for message in messages:
            name = _name(message)
            self.counters.received[name] = self.counters.received.get(name, 0) + 1
            self.log("received", message=name, **_key_fields(message))
            if isinstance(message, CallControlMessage):
                self._on_call_control(message)
            else:
                self._on_floor(message)

    def _on_call_control(self, message: CallControlMessage) -> None:
        if message.type != CallControlType.ACK or self.call_pending is None:
            return
        answered = self.call_pending
        self.call_pending = None
        self.pending.pop("call", None)
        if answered == CallControlType.DISCONNECT:
            return
        self.joined = message.reason_code in (None, ReasonCode.ACCEPTED)
        press, self.press_after_connect = self.press_after_connect, None
        if self.joined and press is not None:
            self._request(*press)

    def _on_floor(self, message: FloorMessage) -> None:
        kind = message.type
        if message.ack_required:
            ack = FloorMessage(
                FloorType.ACK, self.ssrc, source=0, acked_type=int(kind), user_id=None
            )
            self._send(ack, resend=None)
        if kind == FloorType.GRANTED and self.floor in ("pending_request", "queued"):
            self.pending.pop("floor", None)
            self.floor = "granted"
            self.talker = self.config.user_id
            self._start_media()
        elif kind == FloorType.DENY and self.floor in ("pending_request", "queued"):
            self.pending.pop("floor", None)
            self.floor = "idle"
        elif kind == FloorType.QUEUE_POSITION_INFO and self.floor == "pending_request":
            self.pending.pop("floor", None)
            self.floor = "queued"
        elif kind == FloorType.REVOKE and self.floor == "granted":
            self._release()
        elif kind in (FloorType.IDLE, FloorType.TAKEN):
            self.talker = message.granted_party if kind == FloorType.TAKEN else None
            if self.floor == "pending_release":
                self.pending.pop("floor", None)
                self.floor = "idle"

    def on_media_datagram(self, data: bytes) -> None:
        now = time.monotonic()
        self.counters.media_received += 1
        if len(data) >= 12 and now - self.last_media_rx > MEDIA_BURST_GAP_S:
            ssrc, seq = struct.unpack_from("!I", data, 8)[0], struct.unpack_from("!H", data, 2)[0]
            self.log("media_first", ssrc=ssrc, seq=seq)
        self.last_media_rx = now

    # media and timers ---------------------------------------------------------------

    def _start_media(self) -> None:
        self.next_frame = time.monotonic()
        self.first_of_burst = True
        self.log("media_start", ssrc=self.ssrc, seq=(self.rtp_seq + 1) & 0xFFFF)

    def _stop_media(self) -> None:
        if self.next_frame is not None:
            self.next_frame = None
            self.log("media_stop")

    def _send_frame(self) -> None:
        self.rtp_seq = (self.rtp_seq + 1) & 0xFFFF
        self.rtp_ts = (self.rtp_ts + TS_PER_FRAME) & 0xFFFFFFFF
        marker = 0x80 if self.first_of_burst else 0
        self.first_of_burst = False
        header = struct.pack("!BBHII", 0x80, marker | 96, self.rtp_seq, self.rtp_ts, self.ssrc)
        try:
            self.media_sock.sendto(header + AMRWB_MODE8_PAYLOAD, self.server_media)
            self.counters.media_sent += 1
        except OSError:  # radio down: the frame is lost, like on air
            pass

    def next_deadline(self) -> float | None:
        times = [p.due for p in self.pending.values()]
        if self.next_frame is not None:
            times.append(self.next_frame)
        return min(times) if times else None

    def tick(self) -> None:
        now = time.monotonic()
        while self.next_frame is not None and self.next_frame <= now:
            self._send_frame()
            self.next_frame += FRAME_S
        for key, pending in list(self.pending.items()):
            if pending.due > now:
                continue
            if pending.left <= 0:
                del self.pending[key]
                self.counters.gave_up += 1
                self.log("gave_up", message=pending.what)
                if key == "floor":
                    self._stop_media()
                    self.floor = "idle"
                continue
            pending.left -= 1
            pending.due = now + self.config.resend_s
            with contextlib.suppress(OSError):
                self.floor_sock.sendto(pending.data, self.server_floor)
            self.counters.sent[pending.what] = self.counters.sent.get(pending.what, 0) + 1
            self.log("resent", message=pending.what)

    def close(self) -> None:
        self.log("counters", **vars(self.counters))
        self.floor_sock.close()
        self.media_sock.close()


def _udp_socket(address: str, port: int, dscp: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)
    sock.bind((address, port))
    sock.setblocking(False)
    return sock


def _name(message: FloorMessage | CallControlMessage) -> str:
    prefix = "floor" if isinstance(message, FloorMessage) else "call"
    return f"{prefix}_{message.type.name.lower()}"


def _key_fields(message: FloorMessage | CallControlMessage) -> dict[str, Any]:
    names = ("reject_cause", "granted_party", "queue_position", "reason_code", "priority")
    found = {n: getattr(message, n, None) for n in names}
    return {k: v for k, v in found.items() if v is not None}


class _Stop(Exception):
    pass


def run(config: ClientConfig, events_path: Path) -> int:
    def stop(_signum: int, _frame: Any) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with events_path.open("a", encoding="utf-8") as events:
        client = Client(config, events)
        selector = selectors.DefaultSelector()
        selector.register(client.floor_sock, selectors.EVENT_READ, "floor")
        selector.register(client.media_sock, selectors.EVENT_READ, "media")
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        selector.register(stdin, selectors.EVENT_READ, "stdin")
        out = sys.stdout
        out.write("ready\n")
        out.flush()
        buffered = b""
        try:
            while True:
                deadline = client.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                for key, _ in selector.select(timeout):
                    if key.data == "floor":
                        _drain(client.floor_sock, client.on_floor_datagram)
                    elif key.data == "media":
                        _drain(client.media_sock, client.on_media_datagram)
                    else:
                        try:
                            chunk = os.read(stdin, 65536)
                        except BlockingIOError:
                            continue
                        if not chunk:
                            return 0
                        buffered += chunk
                        while b"\n" in buffered:
                            line, buffered = buffered.split(b"\n", 1)
                            if line.strip():
                                reply = _answer(client, line)
                                out.write(json.dumps(reply) + "\n")
                                out.flush()
                                if reply.get("quit"):
                                    return 0
                client.tick()
        except _Stop:
            return 0
        finally:
            client.close()


def _answer(client: Client, line: bytes) -> dict[str, Any]:
    try:
        cmd = json.loads(line)
        if not isinstance(cmd, dict):
            raise ValueError("a command is a JSON object")
        state = client.command(cmd)
    except (ValueError, KeyError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "state": state, "quit": cmd.get("op") == "quit"}


def _drain(sock: socket.socket, handle: Any) -> None:
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:  # e.g. ICMP port unreachable reported on the socket
            return
        handle(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drivers.mcptt.client", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="JSON ClientConfig")
    parser.add_argument("--events", type=Path, required=True, help="JSON lines, appended")
    args = parser.parse_args(argv)
    config = ClientConfig.from_mapping(json.loads(args.config.read_text()))
    return run(config, args.events)


if __name__ == "__main__":
    sys.exit(main())
