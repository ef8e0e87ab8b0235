"""The emulated MCPTT driver with its real server and client processes, on loopback.

Each "node" is a loopback address of its own (127.0.0.x), so the processes bind as they do in
the lab's namespaces without needing any: the driver, the client and the server are the
shipped code, only the node access is a stand-in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from drivers.base import DeviceContext
from drivers.errors import DriverError
from drivers.mcptt.emulated import EmulatedMcptt

NODES = {"as": "127.0.0.20", "ue1": "127.0.0.21", "ue2": "127.0.0.22", "ue3": "127.0.0.23"}


class LoopbackNodes:
    def node_command(self, node: str, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def node_address(self, node: str) -> str:
        return NODES[node]

    def link_command(self, link: str, argv: Sequence[str]) -> list[str]:
        raise NotImplementedError


class Tracker:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def track(self, proc: subprocess.Popen[bytes], role: str) -> None:
        self.procs.append(proc)


@pytest.fixture
def mcptt(tmp_path: Path) -> Iterator[tuple[EmulatedMcptt, Tracker, list[tuple[str, Any]]]]:
    events: list[tuple[str, Any]] = []
    tracker = Tracker()
    context = DeviceContext(
        run_dir=tmp_path,
        name_prefix="tbtest00",
        emit=lambda name, fields: events.append((name, fields)),
        processes=tracker,
        nodes=LoopbackNodes(),
    )
    settings = {
        "server_node": "as",
        "clients": ["ue1", "ue2", "ue3"],
        "group": "sip:g1@test.lab",
        "floor_port": 19000,
        "media_port": 19002,
        "client_media_port": 19004,
        "resend_s": 0.3,
    }
    device = EmulatedMcptt("mcptt", settings, context)
    try:
        device.open()
        yield device, tracker, events
    finally:
        device.safe_state()
        device.close()
        for proc in tracker.procs:
            if proc.poll() is None:
                proc.kill()


def _events(run_dir: Path, role: str) -> list[dict[str, Any]]:
    path = run_dir / "mcptt" / f"{role}.events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _wait_for(run_dir: Path, role: str, message: str, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = [e for e in _events(run_dir, role) if e.get("message") == message]
        if len(got) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{role} never got {count} x {message}")


def test_press_talk_and_preemption_through_the_real_processes(
    mcptt: tuple[EmulatedMcptt, Tracker, list[tuple[str, Any]]], tmp_path: Path
) -> None:
    device, _, events = mcptt
    assert events[0][0] == "mcptt.started"
    for user in ("ue1", "ue2", "ue3"):
        device.perform("join", {"user": user})
    for user in ("ue1", "ue2", "ue3"):
        _wait_for(tmp_path, f"client-{user}", "call_ack")
    details = device.perform("ptt_press", {"user": "ue1", "priority": 3})
    assert details["user"] == "sip:ue1@euccs.lab"
    assert details["call_type"] == "normal" and details["priority"] == 3
    _wait_for(tmp_path, "client-ue1", "floor_granted")
    _wait_for(tmp_path, "client-ue2", "floor_taken")
    time.sleep(0.3)  # some voice frames flow to the listeners
    device.perform("emergency_call", {"user": "ue3"})
    _wait_for(tmp_path, "client-ue1", "floor_revoke")
    _wait_for(tmp_path, "client-ue3", "floor_granted")
    revoke = next(e for e in _events(tmp_path, "client-ue1") if e.get("message") == "floor_revoke")
    assert revoke["reject_cause"] == 4  # media burst pre-empted
    device.perform("ptt_release", {"user": "ue3"})
    _wait_for(tmp_path, "client-ue2", "floor_idle")
    device.safe_state()
    counters = device.counters()
    assert counters["client-ue2"]["media_received"] > 0
    assert counters["client-ue1"]["media_sent"] > 0
    assert counters["server"]  # the server wrote its counters when it stopped


def test_bad_actions_are_refused_with_the_reason(
    mcptt: tuple[EmulatedMcptt, Tracker, list[tuple[str, Any]]],
) -> None:
    device, _, _ = mcptt
    with pytest.raises(DriverError, match="user must be one of the clients"):
        device.perform("join", {"user": "nobody"})
    with pytest.raises(DriverError, match="call_type must be one of"):
        device.perform("ptt_press", {"user": "ue1", "call_type": "urgent"})
    with pytest.raises(DriverError, match="priority must be an integer"):
        device.perform("ptt_press", {"user": "ue1", "priority": "high"})
    with pytest.raises(DriverError, match=r"priority must be 0\.\.255"):
        device.perform("ptt_press", {"user": "ue1", "priority": 256})
    device.perform("ptt_press", {"user": "ue1"})
    with pytest.raises(DriverError, match="already pressed"):
        device.perform("ptt_press", {"user": "ue1"})


def test_a_killed_client_is_a_driver_error_and_teardown_still_stops_everything(
    mcptt: tuple[EmulatedMcptt, Tracker, list[tuple[str, Any]]],
) -> None:
    device, tracker, _ = mcptt
    client = tracker.procs[1]  # the server is started first
    os.kill(client.pid, signal.SIGKILL)
    client.wait(timeout=5)
    with pytest.raises(DriverError, match="is not running"):
        device.perform("join", {"user": "ue1"})
    device.safe_state()
    assert all(proc.poll() is not None for proc in tracker.procs)
