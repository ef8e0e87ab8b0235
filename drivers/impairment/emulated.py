"""The emulated impairment appliance: one relay process in the wire of each impaired link.

The emulated network puts a namespace of its own in the middle of every link whose lab
entry names an impairment device, with ports ``a`` (towards the link's first endpoint)
and ``b`` (towards the second). This driver runs :mod:`drivers.impairment.relay` there
and drives it over its control socket, so conditions change at run time; ``forward`` is
``a_to_b``. This kernel has no netem: this is how the emulated lab gets its impairments.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.base import DeviceContext, Impairment
from drivers.errors import DriverError
from drivers.impairment.params import ImpairmentParams
from drivers.impairment.relay import RelayControl, relay_command

READY_TIMEOUT_S = 10.0


def link_control_path(name_prefix: str, link: str) -> Path:
    """The control socket of the relay in ``link``: found by name, so that emulators coupled to
    a link (a modem whose radio goes off takes its link down) reach it without the controller.
    Unix socket paths are limited to 108 bytes: it lives in the temp dir, named with the run
    prefix so that ``testbed cleanup`` finds a killed run's."""
    return Path(tempfile.gettempdir()) / f"{name_prefix}-{link}.sock"


_ENGINE_DIRECTIONS = {"forward": ("a_to_b",), "reverse": ("b_to_a",), "both": ("a_to_b", "b_to_a")}


@dataclass
class _Relay:
    link: str
    proc: subprocess.Popen[bytes]
    control: RelayControl
    counters_file: Path
    params: dict[str, ImpairmentParams]


class EmulatedImpairment(Impairment):
    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        self._relays: dict[str, _Relay] = {}
        self._final: dict[str, Any] = {}

    def attach(self, links: Sequence[str]) -> None:
        if self.context.nodes is None:
            raise DriverError(self.name, "no network: the lab needs a network device")
        out_dir = self.context.run_dir / "impairment"
        out_dir.mkdir(parents=True, exist_ok=True)
        seed = int(self.settings.get("seed", 1))
        for i, link in enumerate(links):
            control = link_control_path(self.context.name_prefix, link)
            ready = out_dir / f".{link}.ready"
            counters_file = out_dir / f"{link}.counters.json"
            argv = relay_command(
                str(control), seed=seed + i, counters_out=str(counters_file), ready_file=str(ready)
            )
            log = out_dir / f"{link}.relay.log"
            with log.open("wb") as log_file:
                proc = subprocess.Popen(
                    self.context.nodes.link_command(link, argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.context.processes.track(proc, f"impairment:{link}")
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text(errors="replace")[-400:].strip()
                    raise DriverError(self.name, f"relay of link {link} did not start: {text}")
                time.sleep(0.005)
            ready.unlink()
            passthrough = ImpairmentParams()
            self._relays[link] = _Relay(
                link, proc, RelayControl(str(control)), counters_file,
                {"a_to_b": passthrough, "b_to_a": passthrough},
            )  # fmt: skip
        self.context.emit("impairment.attached", {"links": list(links)})

    def _relay(self, link: str) -> _Relay:
        try:
            return self._relays[link]
        except KeyError:
            known = ", ".join(sorted(self._relays)) or "none"
            raise DriverError(
                self.name, f"link {link!r} is not impaired by me (mine: {known})"
            ) from None

    def apply(self, link: str, direction: str, params: Mapping[str, Any]) -> None:
        relay = self._relay(link)
        for engine_dir in _ENGINE_DIRECTIONS[direction]:
            merged = {**relay.params[engine_dir].to_dict(), **params}
            try:
                new = ImpairmentParams.from_dict(merged)
            except ValueError as exc:
                raise DriverError(self.name, f"link {link}: {exc}") from exc
            relay.control.set(engine_dir, new)
            relay.params[engine_dir] = new

    def set_outage(self, link: str, direction: str, on: bool) -> None:
        self.apply(link, direction, {"outage": on})

    def clear(self, link: str | None = None) -> None:
        for relay in [self._relay(link)] if link is not None else list(self._relays.values()):
            relay.control.clear()
            relay.params = {d: ImpairmentParams() for d in relay.params}

    def counters(self) -> Mapping[str, Any]:
        out: dict[str, Any] = dict(self._final)
        for link, relay in self._relays.items():
            try:
                out[link] = {"counters": relay.control.counters()}
            except DriverError as exc:
                out[link] = {"error": str(exc)}
        return out

    def safe_state(self) -> None:
        """Impairments off: a link must not stay degraded after its run."""
        for relay in self._relays.values():
            with contextlib.suppress(DriverError):
                relay.control.clear()

    def close(self) -> None:
        for link, relay in self._relays.items():
            relay.control.close()
            if relay.proc.poll() is None:
                relay.proc.send_signal(signal.SIGTERM)
                try:
                    relay.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    relay.proc.kill()
                    relay.proc.wait()
            self._final[link] = {"counters_file": str(relay.counters_file)}
        self._relays = {}
