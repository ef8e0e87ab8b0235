"""Tests of the emulated MCPTT server process (drivers.mcptt.server). The server always runs as a
real subprocess bound to 127.0.0.1 and is spoken to over real UDP with the project's codec by
fake clients, each on its own loopback address (127.0.0.2, .3, ...: like UEs with one address
each, so they can share the client media port). Waits are generous (seconds): the lab machine is
a noisy 2-core box, and nothing here asserts sub-10 ms timing. Every server process is killed
in the fixture's finalizer."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # in case the package is not installed into the venv
    sys.path.insert(0, str(REPO))

from drivers.mcptt import codec  # noqa: E402
from drivers.mcptt.messages import (  # noqa: E402
    CallControlMessage,
    CallControlType,
    CallType,
    FloorMessage,
    FloorType,
    ReasonCode,
    RevokeCause,
    SessionType,
    indicator_for,
)

GROUP = "sip:group-1@mcptt.test"
WAIT_S = 5.0  # how long an expected message may take
QUIET_S = 0.5  # how long to listen to conclude that nothing comes
CLIENT_IPS = [f"127.0.0.{i}" for i in range(2, 8)]
Message = FloorMessage | CallControlMessage

# --------------------------------------------------------------------------------------------
# Helpers: the server process, fake clients
# --------------------------------------------------------------------------------------------


def _free_udp_port(hosts: list[str]) -> int:
    """A UDP port free on every one of ``hosts`` (the client media port is shared)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        held = []
        try:
            for host in hosts:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no free UDP port")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    floor: tuple[str, int]
    media: tuple[str, int]
    client_media_port: int
    events_path: Path
    stats_path: Path

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.events_path.read_text().splitlines()]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


@dataclass
class Client:
    """A fake MCPTT client: a floor socket, an RTP sending socket and the media receive port."""

    ip: str
    user: str
    ssrc: int
    server: Server
    floor: socket.socket = field(init=False)
    media_out: socket.socket = field(init=False)
    media_in: socket.socket = field(init=False)
    backlog: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.floor = _socket(self.ip, 0)
        self.media_out = _socket(self.ip, 0)
        self.media_in = _socket(self.ip, self.server.client_media_port)

    def close(self) -> None:
        for sock in (self.floor, self.media_out, self.media_in):
            sock.close()

    def send(self, message: Message) -> None:
        self.floor.sendto(codec.encode(message), self.server.floor)

    def call_control(self, kind: CallControlType, group: str = GROUP) -> None:
        self.send(
            CallControlMessage(
                kind,
                self.ssrc,
                session_type=int(SessionType.PREARRANGED),
                session_id=group,
                group_id=group,
                inviting_user=self.user,
            )
        )

    def connect(self) -> CallControlMessage:
        self.call_control(CallControlType.CONNECT)
        ack = self.expect(CallControlType.ACK)
        assert isinstance(ack, CallControlMessage)
        assert ack.reason_code == ReasonCode.ACCEPTED
        return ack

    def request(self, call_type: CallType = CallType.NORMAL, priority: int = 1) -> None:
        self.send(
            FloorMessage(
                FloorType.REQUEST,
                self.ssrc,
                priority=priority,
                indicator=indicator_for(call_type, queueing=True),
                user_id=self.user,
            )
        )

    def release(self) -> None:
        self.send(FloorMessage(FloorType.RELEASE, self.ssrc, user_id=self.user))

    def expect(self, kind: FloorType | CallControlType, timeout: float = WAIT_S) -> Message:
        """The next message of this type (earlier messages of other types stay in the backlog)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self.backlog):
                if message.type is kind:
                    return self.backlog.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.user}: no {kind!r} within {timeout} s: {self.backlog}")
            self.floor.settimeout(left)
            try:
                data = self.floor.recv(65535)
            except TimeoutError:
                continue
            self.backlog.append(codec.decode(data))

    def floor_messages(self, quiet: float = QUIET_S) -> list[Message]:
        """Everything that arrives until ``quiet`` seconds pass without a message."""
        self.floor.settimeout(quiet)
        while True:
            try:
                self.backlog.append(codec.decode(self.floor.recv(65535)))
            except TimeoutError:
                out, self.backlog = self.backlog, []
                return out

    def send_rtp(self, seq: int, payload: bytes = b"") -> bytes:
        packet = struct.pack("!BBHII", 0x80, 96, seq, seq * 320, self.ssrc) + (
            payload or bytes([0xF0, 0x44]) + os.urandom(60)
        )
        self.media_out.sendto(packet, self.server.media)
        return packet

    def media(self, count: int, timeout: float = WAIT_S) -> list[bytes]:
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.media_in.settimeout(left)
            try:
                out.append(self.media_in.recv(65535))
            except TimeoutError:
                break
        return out

    def no_media(self, quiet: float = QUIET_S) -> bool:
        return self.media(1, quiet) == []


def _socket(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, port))
    return sock


def _wait_ready(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError("server did not print ready")
    line = proc.stdout.readline()
    assert line.strip() == b"ready", line


StartServer = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(**overrides: Any) -> Server:
        floor_port = _free_udp_port(["127.0.0.1"])
        media_port = _free_udp_port(["127.0.0.1"])
        while media_port == floor_port:
            media_port = _free_udp_port(["127.0.0.1"])
        client_media_port = _free_udp_port(CLIENT_IPS)
        config = {
            "bind_address": "127.0.0.1",
            "floor_port": floor_port,
            "media_port": media_port,
            "client_media_port": client_media_port,
            "group_id": GROUP,
            "queueing": True,
            **overrides,
        }
        run_dir = tmp_path / f"server{len(procs)}"
        run_dir.mkdir()
        (run_dir / "config.json").write_text(json.dumps(config))
        paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "drivers.mcptt.server",
             "--config", str(run_dir / "config.json"),
             "--events", str(run_dir / "events.jsonl"),
             "--stats", str(run_dir / "stats.json")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, cwd=REPO,
        )  # fmt: skip
        procs.append(proc)
        _wait_ready(proc)
        return Server(
            proc,
            ("127.0.0.1", floor_port),
            ("127.0.0.1", media_port),
            client_media_port,
            run_dir / "events.jsonl",
            run_dir / "stats.json",
        )

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def clients() -> Iterator[Callable[[Server, int], list[Client]]]:
    made: list[Client] = []

    def make(server: Server, count: int) -> list[Client]:
        new = [
            Client(ip, f"sip:ue{i}@mcptt.test", 0x1000 + i, server)
            for i, ip in enumerate(CLIENT_IPS[:count])
        ]
        made.extend(new)
        return new

    yield make
    for client in made:
        client.close()


Clients = Callable[[Server, int], list[Client]]

# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_connect_request_grant_taken_media_release(
    start_server: StartServer, clients: Clients
) -> None:
    server = start_server()
    a, b, c = clients(server, 3)
    for client in (a, b, c):
        ack = client.connect()
        assert ack.session_id == GROUP
    a.request()
    granted = a.expect(FloorType.GRANTED)
    assert isinstance(granted, FloorMessage)
    assert granted.granted_ssrc == a.ssrc and granted.duration_s == 30
    for other in (b, c):
        taken = other.expect(FloorType.TAKEN)
        assert isinstance(taken, FloorMessage)
        assert taken.granted_party == a.user and taken.sequence == 1
        assert taken.permission_to_request is True

    sent = [a.send_rtp(seq) for seq in range(100, 110)]
    for listener in (b, c):
        assert listener.media(len(sent)) == sent  # byte for byte, in order on loopback
    assert a.no_media()  # the talker does not hear itself

    b.send_rtp(7)  # not the talker: dropped
    assert c.no_media()

    a.release()
    for client in (a, b, c):
        idle = client.expect(FloorType.IDLE)
        assert isinstance(idle, FloorMessage) and idle.sequence == 2

    assert server.stop() == 0
    counters = server.events()[-1]
    assert counters["event"] == "counters"
    assert counters["media_forwarded"] == 10
    assert counters["media_copies_sent"] == 20
    assert counters["media_dropped"] == 1
    assert counters["received"]["floor_request"] == 1
    assert counters["sent"]["floor_taken"] == 2
    assert counters["sent"]["floor_idle"] == 3
    assert counters["sent"]["call_ack"] == 3


def test_emergency_preemption(start_server: StartServer, clients: Clients) -> None:
    server = start_server()
    a, b, c = clients(server, 3)
    for client in (a, b, c):
        client.connect()
    a.request(CallType.NORMAL, 200)
    a.expect(FloorType.GRANTED)
    a.send_rtp(1)
    assert len(c.media(1)) == 1

    b.request(CallType.EMERGENCY, 1)
    revoke = a.expect(FloorType.REVOKE)
    assert isinstance(revoke, FloorMessage)
    assert revoke.reject_cause == RevokeCause.PREEMPTED
    position = b.expect(FloorType.QUEUE_POSITION_INFO)
    assert isinstance(position, FloorMessage) and position.queue_position == 1

    a.release()
    granted = b.expect(FloorType.GRANTED)
    assert isinstance(granted, FloorMessage)
    assert granted.indicator is not None and granted.indicator & indicator_for(CallType.EMERGENCY)
    for other in (a, c):
        taken = other.expect(FloorType.TAKEN, timeout=WAIT_S)
        while isinstance(taken, FloorMessage) and taken.granted_party != b.user:
            taken = other.expect(FloorType.TAKEN)  # c saw a's Floor Taken first
        assert isinstance(taken, FloorMessage) and taken.granted_party == b.user

    # The new talker's media reaches the old talker; the old talker's media is dropped.
    packet = b.send_rtp(500)
    assert a.media(1) == [packet]
    a.send_rtp(2)
    assert c.media(2, QUIET_S * 2) == [packet]

    assert server.stop() == 0
    counters = server.events()[-1]
    assert counters["preemptions"] == 1 and counters["revokes"] == 1


def test_late_join_gets_floor_taken_and_media(start_server: StartServer, clients: Clients) -> None:
    server = start_server()
    a, b, late = clients(server, 3)
    a.connect()
    b.connect()
    a.request()
    a.expect(FloorType.GRANTED)
    a.send_rtp(1)
    assert len(b.media(1)) == 1
    assert late.no_media()  # not a member yet

    late.call_control(CallControlType.CONNECT)
    ack = late.expect(CallControlType.ACK)
    assert isinstance(ack, CallControlMessage) and ack.reason_code == ReasonCode.ACCEPTED
    taken = late.expect(FloorType.TAKEN)
    assert isinstance(taken, FloorMessage) and taken.granted_party == a.user
    packet = a.send_rtp(2)
    assert late.media(1) == [packet]

    # The server's view: Ack then Floor Taken to the late joiner, and the first media.
    events = server.events()
    to_late = [e["message"] for e in events if e["event"] == "sent" and e["user"] == late.user]
    assert to_late == ["call_ack", "floor_taken"]
    assert any(e["event"] == "media_first" and e["user"] == a.user for e in events)


def test_talker_disconnect_frees_the_floor(start_server: StartServer, clients: Clients) -> None:
    server = start_server()
    a, b = clients(server, 2)
    a.connect()
    b.connect()
    a.request()
    a.expect(FloorType.GRANTED)
    a.call_control(CallControlType.DISCONNECT)
    ack = a.expect(CallControlType.ACK)
    assert isinstance(ack, CallControlMessage) and ack.reason_code == ReasonCode.ACCEPTED
    b.expect(FloorType.IDLE)
    # b can now talk, and a (gone) hears nothing.
    b.request()
    b.expect(FloorType.GRANTED)
    b.send_rtp(1)
    assert a.no_media()


def test_queueing_off_denies(start_server: StartServer, clients: Clients) -> None:
    server = start_server(queueing=False)
    a, b = clients(server, 2)
    a.connect()
    b.connect()
    a.request()
    a.expect(FloorType.GRANTED)
    b.request()
    deny = b.expect(FloorType.DENY)
    assert isinstance(deny, FloorMessage) and deny.reject_cause == 1


def test_t1_end_of_media_idles_the_floor(start_server: StartServer, clients: Clients) -> None:
    server = start_server(t1_s=0.5)
    a, b = clients(server, 2)
    a.connect()
    b.connect()
    a.request()
    a.expect(FloorType.GRANTED)
    b.expect(FloorType.TAKEN)
    # No media: the server's own timer frees the floor (bound generous: T1 + several seconds).
    b.expect(FloorType.IDLE, timeout=WAIT_S)
    a.expect(FloorType.IDLE, timeout=WAIT_S)


def test_wrong_group_is_not_accepted(start_server: StartServer, clients: Clients) -> None:
    server = start_server()
    (a,) = clients(server, 1)
    a.call_control(CallControlType.CONNECT, group="sip:other@mcptt.test")
    ack = a.expect(CallControlType.ACK)
    assert isinstance(ack, CallControlMessage)
    assert ack.reason_code == ReasonCode.NOT_ACCEPTED and ack.warning
    a.request()  # not a member: denied
    deny = a.expect(FloorType.DENY)
    assert isinstance(deny, FloorMessage) and deny.reject_cause == 255


def test_malformed_datagrams_are_ignored(start_server: StartServer, clients: Clients) -> None:
    server = start_server()
    a, b = clients(server, 2)
    junk = [
        b"",
        b"hello",
        b"\x80\xcc\x00\x03\x00\x00\x00\x01MCPT",  # length says 16 bytes, 12 present
        b"\x80\xcc\x00\x02\x00\x00\x00\x01XXXX",  # another APP name
        b"\x80\xc8\x00\x06" + bytes(24),  # an RTCP sender report
        codec.encode(FloorMessage(FloorType.REQUEST, 1, priority=5))[:-2],  # truncated
        os.urandom(300),
    ]
    for data in junk:
        a.floor.sendto(data, server.floor)
    a.media_out.sendto(b"\x00junk", server.media)  # not RTP on the media port
    a.connect()  # still serving
    b.connect()
    a.request()
    a.expect(FloorType.GRANTED)
    assert server.proc.poll() is None

    assert server.stop() == 0
    events = server.events()
    malformed = [e for e in events if e["event"] == "malformed"]
    assert len(malformed) == len(junk)
    assert all(e["peer"] == f"{a.ip}:{a.floor.getsockname()[1]}" for e in malformed)
    counters = events[-1]
    assert counters["malformed"] == len(junk)
    assert counters["media_dropped"] == 1
    assert counters["internal_errors"] == 0


def test_sigterm_exits_0_and_writes_counters(start_server: StartServer, clients: Clients) -> None:
    server = start_server()
    (a, b) = clients(server, 2)
    a.connect()
    b.connect()
    a.request()
    a.expect(FloorType.GRANTED)
    b.expect(FloorType.TAKEN)
    assert server.stop() == 0

    events = server.events()
    assert events[0]["event"] == "start" and events[0]["config"]["group_id"] == GROUP
    last = events[-1]
    assert last["event"] == "counters"
    assert json.loads(server.stats_path.read_text()) == {
        k: v for k, v in last.items() if k not in ("event", "time_ns")
    }
    assert last["received"] == {"call_connect": 2, "floor_request": 1}
    assert last["sent"] == {"call_ack": 2, "floor_granted": 1, "floor_taken": 1}
    assert last["denies"] == 0 and last["preemptions"] == 0

    # Every message line has the documented keys, and times are wall-clock nanoseconds.
    lines = [e for e in events if e["event"] in ("received", "sent")]
    assert len(lines) == 7
    for e in lines:
        assert {"time_ns", "direction", "peer", "app", "message", "user", "ssrc"} <= set(e)
        assert abs(e["time_ns"] - time.time_ns()) < 600e9
    request = next(e for e in lines if e["message"] == "floor_request")
    assert request == {
        **request,
        "direction": "rx",
        "app": "MCPT",
        "user": a.user,
        "priority": 1,
        "peer": f"{a.ip}:{a.floor.getsockname()[1]}",
    }
    granted = next(e for e in lines if e["message"] == "floor_granted")
    assert granted["direction"] == "tx" and granted["granted_ssrc"] == a.ssrc
    assert granted["time_ns"] >= request["time_ns"]


def test_sigint_also_exits_0(start_server: StartServer) -> None:
    server = start_server()
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=10) == 0
    assert server.events()[-1]["event"] == "counters"


@pytest.mark.parametrize(
    "config",
    [{"floor_port": "x"}, {"no_such_key": 1}, {"t1_s": 0}, {"bind_address": "nowhere"}],
)
def test_bad_config_exits_2(tmp_path: Path, config: dict[str, Any]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "drivers.mcptt.server", "--config", str(path),
         "--events", str(tmp_path / "events.jsonl")],
        capture_output=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"bad config" in result.stderr
