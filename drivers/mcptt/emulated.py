"""The emulated MCPTT service: a server process on the application-server node and one client
process per UE node, driven by the profile's timeline.

Lab settings (``kind: mcptt, driver: emulated``)::

    server_node: mcptt_as            # where the MCPTT server runs
    clients: [ue_a1, ue_a2, ...]     # one MCPTT client per UE node
    group: sip:fire-1@euccs.lab      # the group (pre-arranged group call) they all belong to
    queueing: true                   # queue non-pre-emptive requests (false: Floor Deny)
    domain: euccs.lab                # MCPTT IDs are sip:<node>@<domain>
    resend_s: 0.5                    # client T100/T101 (see docs/mcptt.md)
    timers: {t1_s: 4, t2_s: 30, t3_s: 3, t20_s: 1}  # server timers (TS 24.380 annex F)

Timeline actions (``user`` is a client node): ``join``, ``late_join`` (a join while a call
runs: the KPI 4 case), ``leave``, ``ptt_press`` (``priority`` 0-255, ``call_type`` normal,
imminent_peril or emergency), ``emergency_call`` (a press with call type emergency), and
``ptt_release``. Actions return once the client has sent its message; what the server answers
is in the client's and the server's event logs (``mcptt/`` in the run record) and in the
captures, from which the KPIs are computed.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.base import Device, DeviceContext
from drivers.errors import DriverError

__all__ = ["EmulatedMcptt"]

READY_TIMEOUT_S = 15.0
REPLY_TIMEOUT_S = 5.0
CALL_TYPES = ("normal", "imminent_peril", "emergency")
DEFAULT_PRIORITY = {"normal": 1, "imminent_peril": 128, "emergency": 255}
"""Floor priority when an action gives none: the call type decides pre-emption first."""


@dataclass
class _Proc:
    role: str
    proc: subprocess.Popen[bytes]
    log: Path


class EmulatedMcptt(Device):
    kind = "mcptt"
    actions = frozenset(
        {"join", "late_join", "leave", "ptt_press", "emergency_call", "ptt_release"}
    )

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        self.server_node = str(settings.get("server_node", ""))
        clients = settings.get("clients", [])
        if not self.server_node or not isinstance(clients, list) or not clients:
            raise DriverError(name, "settings need server_node and a non-empty list of clients")
        self.client_nodes = [str(c) for c in clients]
        self.domain = str(settings.get("domain", "euccs.lab"))
        self.group = str(settings.get("group", f"sip:group-1@{self.domain}"))
        self.out_dir = context.run_dir / "mcptt"
        self._server: _Proc | None = None
        self._clients: dict[str, _Proc] = {}
        self._last_status: dict[str, Any] = {}

    def user_id(self, node: str) -> str:
        return f"sip:{node}@{self.domain}"

    # lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        nodes = self.context.nodes
        if nodes is None:
            raise DriverError(self.name, "no network: the lab needs a network device")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        server_address = nodes.node_address(self.server_node)
        server_config = {
            "bind_address": server_address,
            "floor_port": int(self.settings.get("floor_port", 9000)),
            "media_port": int(self.settings.get("media_port", 9002)),
            "client_media_port": int(self.settings.get("client_media_port", 9004)),
            "group_id": self.group,
            "queueing": bool(self.settings.get("queueing", True)),
            **{k: float(v) for k, v in dict(self.settings.get("timers", {})).items()},
        }
        self._server = self._spawn(
            self.server_node, "server", "drivers.mcptt.server", server_config, stdin=False
        )
        for node in self.client_nodes:
            config = {
                "bind_address": nodes.node_address(node),
                "user_id": self.user_id(node),
                "group_id": self.group,
                "server_address": server_address,
                "server_floor_port": server_config["floor_port"],
                "server_media_port": server_config["media_port"],
                "media_port": server_config["client_media_port"],
                "resend_s": float(self.settings.get("resend_s", 0.5)),
            }
            self._clients[node] = self._spawn(
                node, f"client-{node}", "drivers.mcptt.client", config
            )
        for proc in [self._server, *self._clients.values()]:
            self._wait_ready(proc)
        self.context.emit(
            "mcptt.started",
            {"server": self.server_node, "clients": self.client_nodes, "group": self.group},
        )

    def _spawn(
        self, node: str, role: str, module: str, config: Mapping[str, Any], stdin: bool = True
    ) -> _Proc:
        assert self.context.nodes is not None
        config_path = self.out_dir / f"{role}.config.json"
        config_path.write_text(json.dumps(config, indent=2))
        argv = [
            sys.executable, "-m", module,
            "--config", str(config_path),
            "--events", str(self.out_dir / f"{role}.events.jsonl"),
        ]  # fmt: skip
        log = self.out_dir / f"{role}.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                self.context.nodes.node_command(node, argv),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,
            )
        self.context.processes.track(proc, f"mcptt:{role}")
        return _Proc(role, proc, log)

    def _wait_ready(self, proc: _Proc) -> None:
        line = self._read_line(proc, READY_TIMEOUT_S)
        if line is None or line.strip() != b"ready":
            raise DriverError(self.name, f"{proc.role} did not start: {_tail(proc.log)}")

    def _read_line(self, proc: _Proc, timeout_s: float) -> bytes | None:
        stdout = proc.proc.stdout
        assert stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                return None
        line = stdout.readline()
        return line or None

    # actions ------------------------------------------------------------------------

    def perform(self, action: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        user = args.get("user")
        if user not in self._clients:
            known = ", ".join(self._clients)
            raise DriverError(self.name, f"{action}: user must be one of the clients ({known})")
        node = str(user)
        if action in ("join", "late_join"):
            command: dict[str, Any] = {"op": "join"}
        elif action == "leave":
            command = {"op": "leave"}
        elif action == "ptt_release":
            command = {"op": "release"}
        elif action in ("ptt_press", "emergency_call"):
            call_type = "emergency" if action == "emergency_call" else args.get("call_type")
            call_type = str(call_type or "normal")
            if call_type not in CALL_TYPES:
                raise DriverError(self.name, f"{action}: call_type must be one of {CALL_TYPES}")
            priority = args.get("priority", DEFAULT_PRIORITY[call_type])
            if isinstance(priority, bool) or not isinstance(priority, int):
                raise DriverError(self.name, f"{action}: priority must be an integer 0..255")
            command = {"op": "press", "priority": priority, "call_type": call_type}
        else:
            return super().perform(action, args)
        state = self._command(node, command)
        return {"user": self.user_id(node), **{k: v for k, v in command.items() if k != "op"},
                "floor": state.get("floor"), "joined": state.get("joined")}  # fmt: skip

    def _command(self, node: str, command: Mapping[str, Any]) -> dict[str, Any]:
        proc = self._clients[node]
        stdin = proc.proc.stdin
        if proc.proc.poll() is not None or stdin is None:
            raise DriverError(self.name, f"client {node} is not running: {_tail(proc.log)}")
        try:
            stdin.write(json.dumps(command).encode() + b"\n")
            stdin.flush()
        except OSError as exc:
            raise DriverError(self.name, f"client {node}: {exc}") from exc
        line = self._read_line(proc, REPLY_TIMEOUT_S)
        if line is None:
            raise DriverError(self.name, f"client {node} did not answer {command['op']!r}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise DriverError(self.name, f"client {node}: {reply.get('error')}")
        state: dict[str, Any] = reply.get("state", {})
        self._last_status[node] = state
        return state

    # end ----------------------------------------------------------------------------

    def counters(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        for role in ["server", *(f"client-{n}" for n in self.client_nodes)]:
            last = _last_counters(self.out_dir / f"{role}.events.jsonl")
            if last is not None:
                out[role] = last
        return out

    def safe_state(self) -> None:
        """Every client releases the floor and stops; then the server stops."""
        for node, proc in self._clients.items():
            if proc.proc.poll() is None:
                # a dead or hung client is stopped below anyway
                with contextlib.suppress(Exception):
                    self._command(node, {"op": "release"})
        for proc in [*self._clients.values(), *([self._server] if self._server else [])]:
            _stop(proc.proc)

    def close(self) -> None:
        self.safe_state()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _last_counters(path: Path) -> dict[str, Any] | None:
    """The counters line a client or the server writes when it stops."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "counters":
            return {k: v for k, v in entry.items() if k not in ("event", "time_ns", "user")}
    return None


def _tail(path: Path, limit: int = 400) -> str:
    time.sleep(0.05)  # let a dying process finish writing
    try:
        return path.read_text(errors="replace")[-limit:].strip() or "(no output)"
    except OSError:
        return "(no log)"
