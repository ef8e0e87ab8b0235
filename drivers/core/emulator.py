"""The emulated LTE core: one process per core node of the emulated lab.

It holds the subscribers (kept in a store file, so a restarted core still knows them, as
Open5GS keeps them in MongoDB), attaches the emulated modems over the attach socket (the
protocol in docs/cores.md: challenge, MILENAGE-checked attach, keepalive echoes, bearer
notifications), programs each attached UE's data path (:mod:`drivers.core.paths`), forwards the
UEs' packets through its TUN user plane (:mod:`drivers.core.userplane`: kill the process and
the traffic stops), admits dedicated bearers with ARP pre-emption (:mod:`drivers.core.state`)
and writes every procedure, with its wall-clock time, to a JSON-lines record. It serves the
management interfaces of the products it stands for: the Open5GS WebUI REST API and the
metrics server (``/metrics``, ``/ue-info``), and the Amarisoft remote API (WebSocket), so the
real drivers are tested against it.

Command line: ``python -m drivers.core.emulator --config CONFIG.json --ready-file F``.
Signals: SIGTERM/SIGINT stop it; SIGUSR1 isolates it (echoes unanswered, user plane drops
everything: a partition), SIGUSR2 ends the isolation.

The controller side, :func:`start_emulated_core`, builds the configuration from a core
driver's ``emulate:`` settings and gives the driver an :class:`EmulatedCore` handle whose
``control`` runs the lifecycle faults (stop, kill, restart, isolate, restore).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from drivers.base import DeviceContext
from drivers.core.paths import PathError, Topology, apply, path_commands
from drivers.core.state import Bearer, CoreReject, CoreState
from drivers.core.subscriber import Arp, Subscriber
from drivers.core.userplane import UserPlane
from drivers.emulators import EmulatorProcess, start_emulator, state_path
from drivers.errors import DriverError
from drivers.files import read_json_lines, write_json_atomic

__all__ = ["EMULATE_KEYS", "EmulatedCore", "main", "start_emulated_core"]

EMULATE_KEYS = frozenset(
    {"plmn", "node", "cell_gbr_capacity", "allow_roaming", "address_pool", "user_plane", "cells",
     "subscribers"}
)  # fmt: skip
"""What a core driver's ``emulate:`` mapping may hold (docs/cores.md). ``subscribers`` is the
core's own subscriber database at start (an Amarisoft ``ue_db``: its remote API cannot
provision); an Open5GS driver provisions its ``subscribers`` setting over the WebUI instead."""


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def bearer_dict(bearer: Bearer) -> dict[str, Any]:
    """A bearer as the attach protocol carries it."""
    data = bearer.to_dict()
    data.pop("created_wall", None)
    return data


class Record:
    """The procedure record: one JSON line per procedure, flushed as it happens (a killed
    core keeps what it wrote)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def write(self, entry: Mapping[str, Any]) -> None:
        with self._lock:
            self._file.write(json.dumps(dict(entry), sort_keys=True) + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


class Session:
    """One UE's connection on the attach socket (the eNB and NAS of the emulated lab)."""

    def __init__(self, core: CoreProcess, conn: socket.socket) -> None:
        self.core = core
        self.conn = conn
        self.imsi: str | None = None
        self._send_lock = threading.Lock()
        self._rand: str | None = None

    def send(self, message: Mapping[str, Any]) -> None:
        data = (json.dumps(dict(message)) + "\n").encode()
        with self._send_lock, contextlib.suppress(OSError):
            self.conn.sendall(data)

    def serve(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self.conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        self._handle(line)
        except OSError:
            return
        finally:
            self.core.session_closed(self)
            with contextlib.suppress(OSError):
                self.conn.close()

    def _handle(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            op = str(message["op"])
        except (ValueError, KeyError, TypeError):
            self.send({"re": "error", "error": "expected a JSON object with op"})
            return
        if op == "echo":
            if not self.core.isolated:
                self.send({"re": "echo", "n": message.get("n")})
        elif op == "challenge":
            imsi = str(message.get("imsi"))
            self._rand = self.core.state.challenge(imsi)
            self.send({"re": "challenge", "rand": self._rand})
        elif op == "attach":
            self.send(self.core.attach(self, message))
        elif op == "detach":
            if self.imsi is not None:
                self.core.detach(self.imsi, "ue detach")
                self.imsi = None
            self.send({"re": "detach", "ok": True})
        elif op in ("rx_create", "rx_delete"):
            self.send(self.core.policy(op, message))
        else:
            self.send({"re": op, "ok": False, "error": f"unknown op {op!r}"})


class CoreProcess:
    """Everything the emulated core does, wired together."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.name = str(config["name"])
        self.record = Record(Path(config["events"]))
        self.store = Path(config["subscriber_store"])
        self.isolated = False
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.addresses: set[str] = set()
        capacity = {str(k): int(v) for k, v in dict(config.get("cell_gbr_capacity") or {}).items()}
        self.state = CoreState(
            self.name,
            str(config["plmn"]),
            cell_gbr_capacity=capacity,
            address_pool=config.get("address_pool"),
            allow_roaming=list(config.get("allow_roaming") or ()),
            record=self._on_record,
        )
        self._loading = True
        for data in self._initial_subscribers():
            self.state.put_subscriber(Subscriber.from_mapping(data))
        self._loading = False
        self._save_store()
        self.state.add_listener(self._on_bearer)
        topology = config.get("topology")
        self.topology = Topology(topology) if topology else None
        self.core_node = str(config.get("node") or self.name)
        plane = config.get("user_plane")
        self.plane = (
            UserPlane(
                plane["namespace"], plane["ifnames"], plane["tun"], self.addresses.__contains__
            )
            if plane
            else None
        )
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket_path = Path(config["attach_socket"])
        self.socket_path.unlink(missing_ok=True)
        self.listener.bind(str(self.socket_path))
        self.listener.listen(16)
        self.apis: list[Any] = []
        self.urls: dict[str, Any] = {}

    def _initial_subscribers(self) -> list[Mapping[str, Any]]:
        """The store of an earlier life of this core wins over the configuration."""
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.store.read_text())
            if isinstance(data, list):
                return data
        return list(self.config.get("subscribers") or [])

    def _save_store(self) -> None:
        write_json_atomic(self.store, [s.to_mapping() for s in self.state.subscribers()])

    def _on_record(self, entry: dict[str, Any]) -> None:
        self.record.write(entry)
        if not self._loading and entry.get("event") in ("subscriber_put", "subscriber_deleted"):
            threading.Thread(target=self._save_store, daemon=True).start()

    def _on_bearer(self, imsi: str, event: str, bearer: Bearer, cause: str) -> None:
        with self._lock:
            session = self.sessions.get(imsi)
        if session is not None and not bearer.default:
            session.send({"event": "bearer", "what": event, "cause": cause, **bearer_dict(bearer)})

    # ---------------------------------------------------------------- procedures

    def attach(self, session: Session, message: Mapping[str, Any]) -> dict[str, Any]:
        imsi = str(message.get("imsi"))
        if self.isolated:
            return {"re": "attach", "ok": False, "cause": 17, "name": "Network failure"}
        try:
            ue = self.state.attach(
                imsi,
                plmn=str(message.get("plmn")),
                ran=str(message.get("ran")),
                res=None if message.get("res") is None else str(message.get("res")),
            )
        except CoreReject as exc:
            return {"re": "attach", "ok": False, "cause": exc.cause, "name": exc.name}
        started = time.time()
        errors: list[str] = []
        if self.topology is not None and message.get("ue_node"):
            try:
                errors = apply(
                    path_commands(
                        self.topology,
                        ue_node=str(message["ue_node"]),
                        ran=ue.ran,
                        core=self.core_node,
                        address=ue.address,
                    )
                )
            except PathError as exc:
                errors = [str(exc)]
        self.record.write(
            {"wall": time.time(), "core": self.name, "event": "path", "imsi": imsi,
             "address": ue.address, "ran": ue.ran, "ue_node": message.get("ue_node"),
             "ms": round((time.time() - started) * 1000, 2), "errors": errors}
        )  # fmt: skip
        with self._lock:
            old = self.sessions.get(imsi)
            self.sessions[imsi] = session
            self.addresses.add(ue.address)
        if old is not None and old is not session:
            old.imsi = None
        session.imsi = imsi
        return {
            "re": "attach",
            "ok": True,
            "address": ue.address,
            "bearers": [bearer_dict(b) for b in ue.bearers],
        }

    def detach(self, imsi: str, cause: str) -> None:
        ue = self.state.ue(imsi)
        self.state.detach(imsi, cause)
        with self._lock:
            self.sessions.pop(imsi, None)
            if ue is not None:
                self.addresses.discard(ue.address)

    def session_closed(self, session: Session) -> None:
        if session.imsi is not None:
            with self._lock:
                current = self.sessions.get(session.imsi) is session
            if current:
                self.detach(session.imsi, "connection lost")

    def policy(self, op: str, message: Mapping[str, Any]) -> dict[str, Any]:
        """Dedicated bearers on request, as a PCRF does for an MC server's Rx request."""
        imsi = str(message.get("imsi"))
        try:
            if op == "rx_create":
                arp = Arp.from_mapping(message.get("arp") or {})
                bearer = self.state.create_bearer(
                    imsi, qci=int(message["qci"]), arp=arp, gbr_kbps=int(message.get("gbr_kbps", 0))
                )
                return {"re": op, "ok": True, **bearer_dict(bearer)}
            ok = self.state.delete_bearer(imsi, int(message["ebi"]))
            return {"re": op, "ok": ok}
        except CoreReject as exc:
            return {"re": op, "ok": False, "cause": exc.cause, "name": exc.name}
        except (KeyError, TypeError, ValueError) as exc:
            return {"re": op, "ok": False, "error": f"bad request: {exc}"}

    def set_isolated(self, isolated: bool) -> None:
        self.isolated = isolated
        if self.plane is not None:
            self.plane.pause(isolated)
        self.record.write({"wall": time.time(), "core": self.name,
                           "event": "isolated" if isolated else "restored"})  # fmt: skip

    # ---------------------------------------------------------------- serving

    def start(self) -> None:
        if self.plane is not None:
            self.plane.start()
        apis = dict(self.config.get("apis") or {})
        if "open5gs" in apis:
            from drivers.core.open5gs_api import Open5gsApi

            o5 = dict(apis["open5gs"])
            api = Open5gsApi(
                self.state,
                "127.0.0.1",
                username=str(o5.get("username", "admin")),
                password=str(o5.get("password", "1423")),
            )
            api.start()
            self.apis.append(api)
            self.urls["webui_url"] = api.webui_url
            self.urls["metrics_url"] = api.metrics_url
        if "amarisoft" in apis:
            from drivers.core.amarisoft_api import AmarisoftApi

            cells = {int(k): str(v) for k, v in dict(apis["amarisoft"].get("cells") or {}).items()}
            urls = {}
            for component in ("mme", "enb"):
                ws = AmarisoftApi(self.state, "127.0.0.1", component=component, cells=cells)
                ws.start()
                self.apis.append(ws)
                urls[component] = ws.url
            self.urls["amarisoft"] = urls
        threading.Thread(target=self._accept, name="attach-socket", daemon=True).start()
        self.record.write({"wall": time.time(), "core": self.name, "event": "started",
                           "pid": os.getpid()})  # fmt: skip

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            session = Session(self, conn)
            threading.Thread(target=session.serve, name="ue-session", daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.close()
        self.socket_path.unlink(missing_ok=True)
        for api in self.apis:
            with contextlib.suppress(Exception):
                api.close()
        if self.plane is not None:
            self.plane.close()
        self.record.write({"wall": time.time(), "core": self.name, "event": "stopped"})
        self.record.close()


_core: CoreProcess | None = None


def _signal(signum: int, frame: FrameType | None) -> None:
    if signum in (signal.SIGUSR1, signal.SIGUSR2):
        if _core is not None:
            _core.set_isolated(signum == signal.SIGUSR1)
        return
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    global _core
    parser = argparse.ArgumentParser(prog="python -m drivers.core.emulator")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        config = json.loads(args.config.read_text())
        core = CoreProcess(config)
    except (OSError, ValueError, KeyError) as exc:
        print(f"cannot start the emulated core: {exc}", file=sys.stderr)
        return 2
    _core = core
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, _signal)
    try:
        core.start()
        write_json_atomic(
            args.ready_file,
            {"pid": os.getpid(), "attach_socket": str(core.socket_path), **core.urls},
        )
        log(f"core {core.name} (PLMN {core.state.plmn}) serving {json.dumps(core.urls)}")
        while True:
            time.sleep(3600)
    except SystemExit:
        pass
    except OSError as exc:
        print(f"emulated core failed: {exc}", file=sys.stderr)
        return 1
    finally:
        core.close()
        log("stopped")
    return 0


# ------------------------------------------------------------------------------------------
# Controller side
# ------------------------------------------------------------------------------------------


def attach_socket_path(name_prefix: str, device: str) -> Path:
    """In the temp dir (Unix socket paths are short), named for ``testbed cleanup``."""
    return Path(tempfile.gettempdir()) / f"{name_prefix}-{device}-core.sock"


class EmulatedCoreControl:
    """The lifecycle faults of an emulated core (component ``core``): signals to its process,
    and a restart that starts it again from the same configuration and subscriber store."""

    def __init__(self, handle: EmulatedCore) -> None:
        self.handle = handle

    def components(self) -> list[str]:
        return ["core"]

    def act(self, action: str, component: str | None) -> dict[str, Any]:
        if component not in (None, "core"):
            raise DriverError(self.handle.device, f"unknown component {component!r} (known: core)")
        return self.handle.act(action)

    def close(self) -> None:
        self.handle.close()


class EmulatedCore:
    """A running emulated core seen from its driver."""

    def __init__(
        self, device: str, context: DeviceContext, config_path: Path, config: dict[str, Any]
    ) -> None:
        self.device = device
        self.context = context
        self.config_path = config_path
        self.config = config
        self.process: EmulatorProcess | None = None
        self.ready: dict[str, Any] = {}
        self.control = EmulatedCoreControl(self)
        self._expected_exit = False
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        self._expected_exit = False
        self.process = start_emulator(
            self.context,
            self.device,
            "drivers.core.emulator",
            ["--config", str(self.config_path)],
            role="core",
        )
        self.ready = dict(self.process.ready)
        write_json_atomic(
            state_path(self.context.run_dir, self.device),
            {**self.ready, "events": self.config["events"], "plmn": self.config["plmn"]},
        )
        self._watch_stop.clear()
        self._watcher = threading.Thread(
            target=self._watch, name=f"watch-{self.device}", daemon=True
        )
        self._watcher.start()

    def _watch(self) -> None:
        """A core that dies without being told to is a lab fault, not a measured one."""
        process = self.process
        while process is not None and not self._watch_stop.wait(0.2):
            code = process.proc.poll()
            if code is not None:
                if not self._expected_exit:
                    self.context.fault(f"emulated core exited on its own (code {code})")
                return

    def act(self, action: str) -> dict[str, Any]:
        process = self.process
        wall = time.time()
        if action in ("stop", "kill"):
            if process is None or not process.alive():
                raise DriverError(self.device, f"{action}: the core is not running")
            self._expected_exit = True
            wall = time.time()
            if action == "kill":
                process.proc.kill()
                process.proc.wait(timeout=5)
            else:
                process.stop()
            return {"component": "core", "wall": wall, "exit_code": process.proc.returncode}
        if action == "restart":
            if process is not None and process.alive():
                self._expected_exit = True
                process.stop()
            self._watch_stop.set()
            wall = time.time()
            self.start()
            return {"component": "core", "wall": wall, "pid": self.ready.get("pid")}
        if action in ("isolate", "restore"):
            if process is None or not process.alive():
                raise DriverError(self.device, f"{action}: the core is not running")
            process.proc.send_signal(signal.SIGUSR1 if action == "isolate" else signal.SIGUSR2)
            return {"component": "core", "wall": wall}
        raise DriverError(self.device, f"unknown lifecycle action {action!r}")

    def bearer(self, action: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """``bearer_create``/``bearer_delete``: the request an MC server makes of the PCRF
        (Rx), here on the core's attach socket."""
        op = "rx_create" if action == "bearer_create" else "rx_delete"
        request = {"op": op, **dict(args)}
        path = str(self.ready.get("attach_socket"))
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(path)
                sock.sendall((json.dumps(request) + "\n").encode())
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            answer = dict(json.loads(data))
        except (OSError, ValueError) as exc:
            raise DriverError(self.device, f"{action}: the core did not answer: {exc}") from exc
        if not answer.get("ok"):
            reason = answer.get("name") or answer.get("error") or "refused"
            raise DriverError(
                self.device, f"{action} refused: {reason} (cause {answer.get('cause')})"
            )
        return answer

    def procedures(self) -> dict[str, Any]:
        """The procedure record, summarised for the run's counters: counts per procedure and
        every pre-emption and refusal with both sides (the file has the rest)."""
        counts: dict[str, int] = {}
        notable = []
        for entry in read_json_lines(self.config["events"]):
            event = str(entry.get("event"))
            counts[event] = counts.get(event, 0) + 1
            if event in ("bearer_preempted", "bearer_rejected", "attach_reject"):
                notable.append(entry)
        return {"record": self.config["events"], "counts": counts, "notable": notable}

    def close(self) -> None:
        self._expected_exit = True
        self._watch_stop.set()
        process, self.process = self.process, None
        if process is not None:
            process.stop()


def _subscribers(device: str, items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise DriverError(device, "emulate.subscribers must be a list of subscriber mappings")
    try:
        return [Subscriber.from_mapping(item).to_mapping() for item in items]
    except ValueError as exc:
        raise DriverError(device, f"emulate.subscribers: {exc}") from exc


def start_emulated_core(
    device: str, settings: Mapping[str, Any], context: DeviceContext, faces: Sequence[str]
) -> EmulatedCore:
    """Start the emulated core for a driver whose lab entry says ``emulate: {...}``."""
    emulate = settings.get("emulate")
    if not isinstance(emulate, Mapping):
        raise DriverError(device, "emulate must be a mapping (docs/cores.md)")
    unknown = sorted(set(emulate) - EMULATE_KEYS)
    if unknown:
        raise DriverError(device, f"unknown emulate keys {unknown} (known: {sorted(EMULATE_KEYS)})")
    plmn = emulate.get("plmn")
    if not isinstance(plmn, str) or not plmn.isdigit() or len(plmn) not in (5, 6):
        raise DriverError(device, f"emulate.plmn must be MCC+MNC digits as text, not {plmn!r}")
    out = context.run_dir / "emulators"
    out.mkdir(parents=True, exist_ok=True)
    prefix = context.name_prefix
    config: dict[str, Any] = {
        "name": device,
        "plmn": plmn,
        "subscribers": _subscribers(device, emulate.get("subscribers") or []),
        "subscriber_store": str(out / f"{device}.subscribers.json"),
        "events": str(out / f"{device}.core.events.jsonl"),
        "attach_socket": str(attach_socket_path(prefix, device)),
        "cell_gbr_capacity": dict(emulate.get("cell_gbr_capacity") or {}),
        "allow_roaming": list(emulate.get("allow_roaming") or []),
        "address_pool": emulate.get("address_pool"),
        "apis": {},
    }
    if "open5gs" in faces:
        config["apis"]["open5gs"] = {
            "username": str(settings.get("username", "admin")),
            "password": str(settings.get("password", "1423")),
        }
    if "amarisoft" in faces:
        config["apis"]["amarisoft"] = {"cells": dict(emulate.get("cells") or {"1": "ran"})}
    node = emulate.get("node")
    network = context.nodes
    if node is not None:
        if network is None or not hasattr(network, "port_map"):
            raise DriverError(device, "emulate.node needs the emulated network (net)")
        ports = network.port_map()
        if node not in ports["namespaces"]:
            raise DriverError(device, f"emulate.node {node!r} is not a node of the lab")
        config["node"] = node
        config["topology"] = ports
        if emulate.get("user_plane", True):
            ifnames = [
                p["ifname"] for link in ports["links"].values() for p in link if p["node"] == node
            ]
            config["user_plane"] = {
                "namespace": ports["namespaces"][node],
                "ifnames": ifnames,
                "tun": f"{prefix}-upf"[:15],
            }
    config_path = out / f"{device}.core.json"
    write_json_atomic(config_path, config)
    handle = EmulatedCore(device, context, config_path, config)
    handle.start()
    return handle


if __name__ == "__main__":
    sys.exit(main())
