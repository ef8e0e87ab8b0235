"""Lifecycle of a core's components, which is how a lab injects core faults.

A core device's timeline may ``stop``, ``kill``, ``restart``, ``isolate`` or ``restore`` a
component (an MME, an SMF, a UPF...). :class:`ComponentControl` is the one interface the core
drivers use for that; two implementations exist: :class:`HostControl` here, for a real host
where the components are systemd units or plain processes, and the emulated core's (in
:mod:`drivers.core.emulator`), where the component is the emulator process itself.

Lab settings of :class:`HostControl` (``components:`` of a core device)::

    components:
      mme: {systemd: open5gs-mmed}
      upf:
        process: open5gs-upfd                  # the process name as pgrep -x matches it
        command: [open5gs-upfd, -c, /etc/open5gs/upf.yaml]   # how restart starts it again
        isolate: [{proto: udp, port: 2152}, {proto: udp, port: 8805}]
      hss: {systemd: open5gs-hssd, via: [ssh, root@10.0.0.5]}

What each action runs (``via`` is prepended to every argv: the commands then run on the core
host, e.g. over ssh; without it they run where the controller runs):

======== ============================================ ==========================================
action   ``systemd: UNIT``                            ``process: NAME``
======== ============================================ ==========================================
stop     ``systemctl stop UNIT``                      ``pgrep -x NAME``, ``kill -s TERM PIDS``,
                                                      ``kill -s KILL`` what is left after
                                                      ``stop_timeout_s``
kill     ``systemctl kill -s KILL UNIT``              ``pgrep -x NAME``, ``kill -s KILL PIDS``
restart  ``systemctl restart UNIT``                   stop as above, then start ``command``
                                                      (detached, output to ``log_dir``)
isolate  ``iptables -I INPUT|OUTPUT ... -j DROP``     the same
restore  ``iptables -D`` of the rules isolate added   the same
======== ============================================ ==========================================

Isolation drops the component's traffic (its ``isolate:`` list of ``{proto, port}``: inbound
to the port, outbound from it) with rules inserted at the top of the INPUT and OUTPUT chains,
each tagged ``-m comment --comment "testbed <device> <component>"`` so that an operator (and
``iptables -S``) can see who put them there; ``restore`` deletes exactly the rules this
control inserted, and the core driver's safe state restores every component still isolated.
The process stays up while isolated: peers see it vanish from the network, as with a cut link.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from drivers.errors import DriverError

__all__ = ["ACTIONS", "ComponentControl", "HostControl", "parse_components"]

ACTIONS = ("stop", "kill", "restart", "isolate", "restore")
COMPONENT_SETTINGS = frozenset({"systemd", "process", "command", "isolate", "via"})
PROTOCOLS = frozenset({"tcp", "udp", "sctp"})
COMMAND_TIMEOUT_S = 30.0
"""A systemctl restart of a core NF waits for its start-up; generous on purpose."""
STOP_TIMEOUT_S = 10.0
"""How long a stopped process may take to exit after SIGTERM before it gets SIGKILL."""


class ComponentControl(Protocol):
    """What a core driver needs to act on its components (real host or emulated core)."""

    def components(self) -> list[str]:
        """The names a timeline may give as ``component``."""
        ...

    def act(self, action: str, component: str | None) -> dict[str, Any]:
        """action: stop | kill | restart | isolate | restore; component None = all.
        Returns details for the event log incl. "wall" (time.time() when it acted).
        Raises DriverError with a clear message."""
        ...

    def close(self) -> None:
        """Release what the control holds. Never raises."""
        ...


@dataclass(frozen=True)
class Port:
    proto: str
    port: int


@dataclass(frozen=True)
class Component:
    """One component of the lab's core, as its settings describe it."""

    name: str
    systemd: str | None = None
    process: str | None = None
    command: tuple[str, ...] = ()
    isolate: tuple[Port, ...] = ()
    via: tuple[str, ...] = ()


def _argv(device: str, where: str, raw: Any) -> tuple[str, ...]:
    """An argv: a list of strings, or one string split as a shell would."""
    if isinstance(raw, str):
        parts = shlex.split(raw)
    elif isinstance(raw, list | tuple) and all(isinstance(p, str) for p in raw):
        parts = list(raw)
    else:
        raise DriverError(device, f"{where} must be a command (a list of strings), got {raw!r}")
    if not parts or not all(parts):
        raise DriverError(device, f"{where} must not be empty")
    return tuple(parts)


def _name(device: str, where: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip() or any(c.isspace() for c in raw.strip()):
        raise DriverError(device, f"{where} must be a name without spaces, got {raw!r}")
    return raw.strip()


def _ports(device: str, where: str, raw: Any) -> tuple[Port, ...]:
    if not isinstance(raw, list | tuple) or not raw:
        raise DriverError(device, f"{where} must be a list such as [{{proto: udp, port: 2152}}]")
    out: list[Port] = []
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(entry, Mapping) or set(entry) - {"proto", "port"}:
            raise DriverError(device, f"{at} must be {{proto: tcp|udp|sctp, port: N}}")
        proto, port = entry.get("proto"), entry.get("port")
        if proto not in PROTOCOLS:
            raise DriverError(device, f"{at}.proto must be one of {sorted(PROTOCOLS)}, "
                              f"got {proto!r}")  # fmt: skip
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise DriverError(device, f"{at}.port must be a port number, got {port!r}")
        out.append(Port(str(proto), port))
    return tuple(out)


def parse_components(device: str, raw: Any) -> dict[str, Component]:
    """``settings.components``: checked entirely, so that a typo fails before the run."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise DriverError(device, "settings.components must map component names to "
                          "{systemd: UNIT} or {process: NAME, command: [...]}")  # fmt: skip
    out: dict[str, Component] = {}
    for name, entry in raw.items():
        where = f"settings.components.{name}"
        _name(device, "settings.components: a component name", name)
        if not isinstance(entry, Mapping):
            raise DriverError(device, f"{where} must be a mapping such as {{systemd: UNIT}}")
        unknown = sorted(set(entry) - COMPONENT_SETTINGS)
        if unknown:
            raise DriverError(device, f"{where}: unknown {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(COMPONENT_SETTINGS))})")  # fmt: skip
        if ("systemd" in entry) == ("process" in entry):
            raise DriverError(device, f"{where}: give exactly one of systemd (a unit) or "
                              "process (a process name)")  # fmt: skip
        if "command" in entry and "process" not in entry:
            raise DriverError(device, f"{where}.command only applies to process components "
                              "(systemd starts its units itself)")  # fmt: skip
        out[str(name)] = Component(
            name=str(name),
            systemd=_name(device, f"{where}.systemd", entry["systemd"])
            if "systemd" in entry else None,
            process=_name(device, f"{where}.process", entry["process"])
            if "process" in entry else None,
            command=_argv(device, f"{where}.command", entry["command"])
            if "command" in entry else (),
            isolate=_ports(device, f"{where}.isolate", entry["isolate"])
            if "isolate" in entry else (),
            via=_argv(device, f"{where}.via", entry["via"]) if "via" in entry else (),
        )  # fmt: skip
    return out


@dataclass
class _Isolation:
    """The iptables rules one component's isolation inserted (to delete exactly those)."""

    rules: list[tuple[str, ...]] = field(default_factory=list)


class HostControl:
    """:class:`ComponentControl` for a real host: systemd units and processes from settings.

    ``components`` is the raw ``settings.components`` mapping (checked here). Every command
    runs with a timeout (``command_timeout_s``); a failing one raises :class:`DriverError` with
    its argv and output. ``log_dir`` receives the output of processes restarted from
    ``command`` (``<device>.<component>.log``); those are left running at the end of the run,
    detached from the controller, as the core would be.
    """

    def __init__(
        self,
        device: str,
        components: Mapping[str, Any],
        *,
        log_dir: Path | None = None,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.device = device
        self.parsed = parse_components(device, components)
        self.log_dir = log_dir
        self.command_timeout_s = command_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.commands_run: list[list[str]] = []
        """Every argv run, in order (the driver's counters report how many)."""
        self._isolated: dict[str, _Isolation] = {}
        self._started: list[subprocess.Popen[bytes]] = []
        """Processes restart started: reaped when they end (else they linger as zombies,
        which ``pgrep`` still lists)."""
        self._lock = threading.Lock()

    def components(self) -> list[str]:
        return sorted(self.parsed)

    def isolated(self) -> list[str]:
        with self._lock:
            return sorted(self._isolated)

    # ---------------------------------------------------------------- actions

    def act(self, action: str, component: str | None) -> dict[str, Any]:
        if action not in ACTIONS:
            raise DriverError(self.device, f"unknown component action {action!r} "
                              f"(known: {', '.join(ACTIONS)})")  # fmt: skip
        if component is None:
            if not self.parsed:
                raise DriverError(self.device, f"{action}: no components configured "
                                  "(settings.components)")  # fmt: skip
            for name in self.components():  # refuse before touching anything
                self._precheck(action, self.parsed[name])
            wall = time.time()
            done = {name: self._act(action, self.parsed[name]) for name in self.components()}
            return {"action": action, "component": None, "components": done, "wall": wall}
        target = self.parsed.get(component)
        if target is None:
            raise DriverError(self.device, f"{action}: unknown component {component!r} "
                              f"(known: {', '.join(self.components()) or 'none'})")  # fmt: skip
        return self._act(action, target)

    def _precheck(self, action: str, comp: Component) -> None:
        if action == "isolate" and not comp.isolate:
            raise DriverError(self.device, f"isolate {comp.name}: give settings.components."
                              f"{comp.name}.isolate (the ports to cut, e.g. "
                              "[{proto: sctp, port: 36412}])")  # fmt: skip
        if action == "restart" and comp.process is not None and not comp.command:
            raise DriverError(self.device, f"restart {comp.name}: give settings.components."
                              f"{comp.name}.command (how to start the process again)")  # fmt: skip

    def _act(self, action: str, comp: Component) -> dict[str, Any]:
        self._precheck(action, comp)
        if action == "isolate":
            return self._isolate(comp)
        if action == "restore":
            return self._restore(comp)
        if comp.systemd is not None:
            verb = {"stop": ["stop"], "kill": ["kill", "-s", "KILL"], "restart": ["restart"]}
            argv = ["systemctl", *verb[action], comp.systemd]
            wall = time.time()
            self._run(comp, argv)
            return {"action": action, "component": comp.name, "unit": comp.systemd,
                    "argv": [*comp.via, *argv], "wall": wall}  # fmt: skip
        wall = time.time()
        pids = self._pids(comp)
        details: dict[str, Any] = {"action": action, "component": comp.name,
                                   "process": comp.process, "pids": pids, "wall": wall}  # fmt: skip
        if action == "kill":
            if pids:
                self._signal(comp, "KILL", pids)
            return details
        details["forced"] = self._stop_process(comp, pids)
        if action == "restart":
            details["started"] = self._start_process(comp)
        return details

    def _isolate(self, comp: Component) -> dict[str, Any]:
        with self._lock:
            if comp.name in self._isolated:
                return {"action": "isolate", "component": comp.name, "already": True,
                        "wall": time.time()}  # fmt: skip
            isolation = self._isolated.setdefault(comp.name, _Isolation())
        tag = f"testbed {self.device} {comp.name}"
        wall = time.time()
        for port in comp.isolate:
            for chain, direction in (("INPUT", "--dport"), ("OUTPUT", "--sport")):
                rule = (chain, "-p", port.proto, direction, str(port.port),
                        "-m", "comment", "--comment", tag, "-j", "DROP")  # fmt: skip
                self._run(comp, ["iptables", "-I", *rule])
                isolation.rules.append(rule)
        return {"action": "isolate", "component": comp.name, "rules": len(isolation.rules),
                "ports": [f"{p.proto}/{p.port}" for p in comp.isolate], "wall": wall}  # fmt: skip

    def _restore(self, comp: Component) -> dict[str, Any]:
        with self._lock:
            isolation = self._isolated.get(comp.name)
        wall = time.time()
        if isolation is None:
            return {"action": "restore", "component": comp.name, "rules": 0, "wall": wall}
        removed = 0
        while isolation.rules:
            rule = isolation.rules[-1]
            self._run(comp, ["iptables", "-D", *rule])
            isolation.rules.pop()
            removed += 1
        with self._lock:
            self._isolated.pop(comp.name, None)
        return {"action": "restore", "component": comp.name, "rules": removed, "wall": wall}

    # ---------------------------------------------------------------- processes

    def _pids(self, comp: Component) -> list[int]:
        """The component's processes (``pgrep -x``: exit status 1 means none)."""
        assert comp.process is not None
        self._reap()
        result = self._run(comp, ["pgrep", "-x", comp.process], ok=(0, 1))
        return sorted(int(tok) for tok in result.stdout.split() if tok.isdigit())

    def _signal(self, comp: Component, signal_name: str, pids: Sequence[int]) -> None:
        # a process that exits between pgrep and kill makes kill fail: status 1 is tolerated
        self._run(comp, ["kill", "-s", signal_name, *map(str, pids)], ok=(0, 1))

    def _stop_process(self, comp: Component, pids: list[int]) -> bool:
        """SIGTERM, wait up to ``stop_timeout_s``, then SIGKILL; True if it had to force."""
        if not pids:
            return False
        self._signal(comp, "TERM", pids)
        deadline = time.monotonic() + self.stop_timeout_s
        while time.monotonic() < deadline:
            if not set(self._pids(comp)) & set(pids):
                return False
            time.sleep(0.05)
        left = sorted(set(self._pids(comp)) & set(pids))
        if left:
            self._signal(comp, "KILL", left)
        return bool(left)

    def _start_process(self, comp: Component) -> dict[str, Any]:
        """Start ``command`` detached (its own session, so the run's end does not take it)."""
        argv = [*comp.via, *comp.command]
        log_path: Path | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{self.device}.{comp.name}.log"
        self.commands_run.append(argv)
        try:
            with open(log_path or os.devnull, "ab") as log:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        except OSError as exc:
            raise DriverError(self.device, f"restart {comp.name}: cannot run "
                              f"{shlex.join(argv)}: {exc}") from exc  # fmt: skip
        self._started.append(proc)
        return {"pid": proc.pid, "argv": argv, "log": str(log_path) if log_path else None}

    def _reap(self) -> None:
        self._started = [proc for proc in self._started if proc.poll() is None]

    # ---------------------------------------------------------------- commands

    def _run(
        self, comp: Component, argv: Sequence[str], ok: Sequence[int] = (0,)
    ) -> subprocess.CompletedProcess[str]:
        full = [*comp.via, *argv]
        self.commands_run.append(full)
        try:
            result = subprocess.run(
                full, capture_output=True, text=True, timeout=self.command_timeout_s,
                stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise DriverError(self.device, f"{comp.name}: {full[0]} not found "
                              f"(needed for {shlex.join(full)})") from exc  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise DriverError(self.device, f"{comp.name}: {shlex.join(full)} did not finish "
                              f"within {self.command_timeout_s:g} s") from exc  # fmt: skip
        except OSError as exc:
            raise DriverError(self.device, f"{comp.name}: cannot run {shlex.join(full)}: "
                              f"{exc}") from exc  # fmt: skip
        if result.returncode not in ok:
            output = (result.stderr.strip() or result.stdout.strip())[-300:] or "no output"
            raise DriverError(self.device, f"{comp.name}: {shlex.join(full)} failed with "
                              f"status {result.returncode}: {output}")  # fmt: skip
        return result

    def close(self) -> None:
        """Nothing to release: isolation rules are the driver's safe state's to remove."""
