"""The ``core/amarisoft`` driver: an Amarisoft callbox (ltemme + lteenb) driven over its remote
API, real or emulated, for what a mission-critical lab needs of it: which UEs are attached with
which bearers (QCI, GBR, and ARP where the server reports it), cell and core statistics, cell
attenuation on the timeline (``cell_gain``: a cell fading away drives handover and failover)
and the lifecycle of the core's components (how faults are injected).

Lab settings (``kind: core, driver: amarisoft``)::

    mme: ws://10.0.0.7:9000        # ltemme remote API (com_addr); one of mme/enb at least
    enb: ws://10.0.0.7:9001        # lteenb remote API: needed for cell_gain and erab_get
    timeout_s: 5                   # per request, and for connecting
    origin: http://testbed         # the Origin header (the server requires one; any value)
    components:                    # lifecycle, as drivers.core.control.HostControl reads it
      mme: {systemd: lte, isolate: [{proto: sctp, port: 36412}]}
    emulate: {...}                 # instead of mme/enb: start the emulated core
                                   # (keys: drivers.core.emulator.EMULATE_KEYS)

Wire behaviour follows the product manual (release 2024-12-23, "Remote API" chapters; see
:mod:`drivers.core.amarisoft_api` for the sources) and what its users do
(``navytux/xlte: amari/__init__.py``): one WebSocket per component, kept open for the run;
the first message must be ``ready`` and its ``type`` must be the component's (``MME`` on the
``mme:`` URL, ``ENB`` on ``enb:``; an ``authenticate`` challenge (``com_auth``) is refused with
a clear error, it is not supported); every request carries a ``message_id`` unique in the
driver and the answer must repeat it and the ``message`` name; an ``error`` member in the
answer is a :class:`DriverError` naming the device and the message; no answer within
``timeout_s`` is one too. Frames the server sends on its own (events, no ``message_id``) are
kept in the transcript and otherwise ignored. Everything sent and received is appended to
``run_dir/transcripts/<device>.ws.log``.

A connection lost while the driver did not expect it (the callbox crashed, a cable was pulled)
is reported once through ``context.fault`` with a ``core.lost`` event. Lifecycle actions of the
timeline (stop, kill, restart, isolate) expect the loss: the next request reconnects (once,
within ``timeout_s``) and fails with a :class:`DriverError` if the component is still down.

Timeline actions: ``cell_gain {cell_id, gain_db}`` (-200..0 dB, the lteenb limits; read back
through ``config_get`` and checked), ``stop | kill | restart | isolate | restore {component}``
(through :class:`drivers.core.control.HostControl` for a real host, the emulated core's own
control when emulated). ``provision`` and ``remove_subscriber`` fail with an explanation:
Amarisoft subscribers are the ``ue_db`` of the MME configuration file, which this driver does
not rewrite. Dedicated bearers are not offered (``bearer_create``/``bearer_delete`` are not in
:attr:`AmarisoftCore.actions`): with Amarisoft they come from the ``erabs`` of the ue_db and
from the IMS over Rx.

Safe state: every cell whose gain this run changed gets its gain from before back, and every
component the run isolated is restored. Events: ``core.ready``, ``core.cell_gain``,
``core.lifecycle``, ``core.lost``, ``core.reconnected``, ``core.safe_state``.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from drivers.base import Core, DeviceContext
from drivers.core.control import ComponentControl, HostControl
from drivers.errors import DriverError
from drivers.radio.at import Transcript

__all__ = ["COMPONENTS", "SETTINGS", "AmarisoftCore"]

COMPONENTS = {"mme": "MME", "enb": "ENB"}
"""Settings key of each component and the ``type`` its ready message must carry."""
SETTINGS = frozenset({"mme", "enb", "timeout_s", "origin", "components", "emulate"})
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_ORIGIN = "http://testbed"
GAIN_MIN_DB, GAIN_MAX_DB = -200.0, 0.0
"""``cell_gain``: "Must be between -200 and 0 (included)" (lteenb manual, 2024-12-23)."""
GAIN_TOLERANCE_DB = 1e-6
MAX_FRAME_BYTES = 16 * 1024 * 1024
"""A callbox's full ``config_get`` is large; websockets' default 1 MiB is not enough."""
EXIT_WAIT_S = 0.5
"""After an emulated core's socket dropped: how long to wait for its process to be seen gone."""
LIFECYCLE = ("stop", "kill", "restart", "isolate", "restore")
UNSUPPORTED = {
    "provision": "Amarisoft subscribers are the ue_db of the MME configuration file (ltemme "
    "config, 'ue_db' entries with imsi, K, OPc, sim_algo...), which this driver does not "
    "rewrite; provision them in the lab's callbox configuration",
    "remove_subscriber": "Amarisoft subscribers are the ue_db of the MME configuration "
    "file, which this driver does not rewrite; remove them from the lab's callbox "
    "configuration",
    "bearer_create": "dedicated bearers of an Amarisoft core come from the ue_db 'erabs' "
    "and from the IMS over Rx, not from this driver",
    "bearer_delete": "dedicated bearers of an Amarisoft core come from the ue_db 'erabs' "
    "and from the IMS over Rx, not from this driver",
}


class _Link:
    """One component's WebSocket: ready check, request/answer matching by ``message_id``,
    and a reader thread that notices a lost connection."""

    def __init__(
        self,
        device: str,
        component: str,
        url: str,
        *,
        timeout_s: float,
        origin: str,
        transcript: Transcript,
        ids: itertools.count[int],
        on_lost: Callable[[_Link, str], None],
        url_source: Callable[[], str] | None = None,
    ) -> None:
        self.device = device
        self._url_source = url_source
        """Where the component listens now (an emulated core restarts on another port)."""
        self.component = component
        self.url = url
        self.timeout_s = timeout_s
        self.origin = origin
        self.transcript = transcript
        self._ids = ids
        self._on_lost = on_lost
        self.ready: dict[str, Any] = {}
        self.lost: str | None = None
        self.expect_loss = False
        """Set by lifecycle actions: a loss then is the timeline's doing, not a fault."""
        self.counts = {"requests": 0, "answers": 0, "errors": 0, "timeouts": 0, "events": 0,
                       "unmatched": 0, "connects": 0}  # fmt: skip
        self._ws: ClientConnection | None = None
        self._closing = False
        self._cond = threading.Condition()
        self._pending: dict[int, dict[str, Any] | None] = {}
        self._unmatched: list[str] = []
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None

    # ---------------------------------------------------------------- connection

    def connect(self) -> dict[str, Any]:
        """Open the socket and check the first message; the ready message is returned."""
        where = f"{self.component} remote API at {self.url}"
        try:
            ws = connect(
                self.url, origin=Origin(self.origin), open_timeout=self.timeout_s,
                close_timeout=1, proxy=None, max_size=MAX_FRAME_BYTES, compression=None,
                ping_interval=None,
                legacy=True,  # a long-lived connection, not a with-block (websockets 17)
            )  # fmt: skip
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            self.transcript.add("!", f"{self.component} connect {self.url} failed: {exc!r}")
            raise DriverError(self.device, f"cannot connect to the {where}: {exc}") from exc
        self.transcript.add("!", f"{self.component} connected to {self.url}")
        try:
            raw = ws.recv(timeout=self.timeout_s)
        except (TimeoutError, ConnectionClosed) as exc:
            ws.close()
            why = "closed the connection" if isinstance(exc, ConnectionClosed) else \
                f"sent nothing within {self.timeout_s:g} s"  # fmt: skip
            raise DriverError(self.device, f"the {where} {why} instead of its ready message",
                              self.transcript.tail()) from exc  # fmt: skip
        self.transcript.add("<", f"{self.component} {_text(raw)}")
        ready = _json_object(raw)
        problem = self._ready_problem(ready)
        if problem is not None or ready is None:
            ws.close()
            raise DriverError(self.device, f"the {where} {problem}", self.transcript.tail())
        with self._cond:
            self._ws, self.ready, self.lost, self.expect_loss = ws, ready, None, False
            self._pending.clear()
            self._unmatched.clear()
        self.counts["connects"] += 1
        self._reader = threading.Thread(target=self._read, args=(ws,), daemon=True,
                                        name=f"{self.device}-{self.component}-ws")  # fmt: skip
        self._reader.start()
        return ready

    def _ready_problem(self, ready: dict[str, Any] | None) -> str | None:
        expected = COMPONENTS[self.component]
        if ready is None:
            return "did not start with a JSON object (is it an Amarisoft remote API?)"
        if ready.get("message") == "authenticate":
            return ("asks for authentication (com_auth); this driver does not support it: "
                    "remove com_auth from the component's configuration")  # fmt: skip
        if ready.get("message") != "ready":
            return f"started with {ready.get('message')!r} instead of its ready message"
        if ready.get("type") != expected:
            return (f"is a {ready.get('type')!r} server, not the {expected} "
                    f"(check settings.{self.component})")  # fmt: skip
        return None

    def _read(self, ws: ClientConnection) -> None:
        why = "closed"
        try:
            for raw in ws:
                self._deliver(raw)
        except ConnectionClosed as exc:
            why = f"closed ({exc})"
        except Exception as exc:  # a reader must end cleanly whatever happens
            why = f"reader failed: {exc!r}"
        with self._cond:
            if self._ws is not ws:
                return  # an old socket, replaced by a reconnect
            self.lost = why
            self._cond.notify_all()
            closing = self._closing
        self.transcript.add("!", f"{self.component} connection {why}")
        if not closing:
            self._on_lost(self, why)

    def _deliver(self, raw: str | bytes) -> None:
        message = _json_object(raw)
        message_id = message.get("message_id") if message is not None else None
        waiting = False
        with self._cond:
            pending = self._pending
            if isinstance(message_id, int) and message is not None and message_id in pending \
                    and pending[message_id] is None:  # fmt: skip
                pending[message_id] = message
                self._cond.notify_all()
                waiting = True
        if waiting:
            self.transcript.add("<", f"{self.component} {_text(raw)}")
            return
        if message is not None and "message_id" not in message:
            self.counts["events"] += 1
            self.transcript.add("~", f"{self.component} {_text(raw)}")
            return
        self.counts["unmatched"] += 1
        with self._cond:
            self._unmatched.append(f"message_id {message_id!r}" if message is not None
                                   else "a frame that is not a JSON object")  # fmt: skip
        self.transcript.add("?", f"{self.component} {_text(raw)}")

    # ---------------------------------------------------------------- requests

    def request(self, message: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and wait for its answer (same ``message_id`` and ``message``);
        an ``error`` in the answer, no answer or a lost connection is a DriverError."""
        with self._cond:
            ws, lost = self._ws, self.lost
        if ws is None or lost is not None:
            ws = self._reconnect(message, lost)
        message_id = next(self._ids)
        payload = {"message": message, "message_id": message_id, **(params or {})}
        text = json.dumps(payload)
        with self._cond:
            self._pending[message_id] = None
            self._unmatched.clear()
        self.counts["requests"] += 1
        try:
            with self._send_lock:
                self.transcript.add(">", f"{self.component} {text}")
                ws.send(text)
        except ConnectionClosed as exc:
            with self._cond:
                self._pending.pop(message_id, None)
            raise DriverError(
                self.device,
                f"{message} to the {self.component}: connection lost while sending ({exc})",
                self.transcript.tail(),
            ) from exc
        answer = self._wait(message_id, message)
        if answer.get("message") != message:
            raise DriverError(self.device, f"{message} (message_id {message_id}) to the "
                              f"{self.component} was answered as {answer.get('message')!r}",
                              self.transcript.tail())  # fmt: skip
        self.counts["answers"] += 1
        if "error" in answer:
            self.counts["errors"] += 1
            raise DriverError(self.device, f"the {self.component} refused {message}: "
                              f"{answer['error']}", self.transcript.tail())  # fmt: skip
        return answer

    def _wait(self, message_id: int, message: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            try:
                while True:
                    answer = self._pending.get(message_id)
                    if answer is not None:
                        return answer
                    if self.lost is not None:
                        raise DriverError(self.device, f"{message} (message_id {message_id}) "
                                          f"to the {self.component}: connection {self.lost} "
                                          "before the answer", self.transcript.tail())  # fmt: skip
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.counts["timeouts"] += 1
                        seen = f"; received instead: {', '.join(self._unmatched)}" \
                            if self._unmatched else ""  # fmt: skip
                        raise DriverError(self.device, f"no answer to {message} (message_id "
                                          f"{message_id}) from the {self.component} at "
                                          f"{self.url} within {self.timeout_s:g} s{seen}",
                                          self.transcript.tail())  # fmt: skip
                    self._cond.wait(left)
            finally:
                self._pending.pop(message_id, None)

    def _reconnect(self, message: str, lost: str | None) -> ClientConnection:
        why = f"its connection {lost}" if lost else "not connected"
        if not self.expect_loss and lost is not None:
            raise DriverError(self.device, f"{message}: the {self.component} is unreachable "
                              f"({why})", self.transcript.tail())  # fmt: skip
        try:
            if self._url_source is not None:
                self.url = self._url_source()
            self.connect()
        except DriverError as exc:
            raise DriverError(self.device, f"{message}: the {self.component} is down ({why}) "
                              f"and does not answer again: {exc}") from exc  # fmt: skip
        with self._cond:
            assert self._ws is not None
            return self._ws

    def close(self) -> None:
        with self._cond:
            self._closing = True
            ws, self._ws = self._ws, None
            self._cond.notify_all()
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
        if self._reader is not None:
            self._reader.join(timeout=2)


class AmarisoftCore(Core):
    """Driver ``core/amarisoft``: see the module documentation for settings and behaviour."""

    actions = frozenset({"provision", "remove_subscriber", "cell_gain", *LIFECYCLE})

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        self.urls: dict[str, str] = {}
        self.timeout_s = DEFAULT_TIMEOUT_S
        self.origin = DEFAULT_ORIGIN
        self.links: dict[str, _Link] = {}
        self.control: ComponentControl | None = None
        self.transcript_path = context.run_dir / "transcripts" / f"{name}.ws.log"
        self._transcript: Transcript | None = None
        self._emulated: Any = None
        self._ids = itertools.count(1)
        self._lock = threading.RLock()  # one action at a time, safe state included
        self._fault_lock = threading.Lock()
        self._faulted: str | None = None
        self._closing = False
        self.original_gain_db: dict[int, float] = {}
        """Gain of every cell this run changed, as it was before the first change."""
        self.gain_changes = 0
        self._isolated: set[str | None] = set()

    # ---------------------------------------------------------------- settings

    def _check_settings(self) -> dict[str, Any] | None:
        """Everything checked before anything is touched; the ``emulate`` mapping is
        returned (None for a real callbox)."""
        s = self.settings
        unknown = sorted(set(s) - SETTINGS)
        if unknown:
            raise DriverError(self.name, f"settings: unknown {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(SETTINGS))})")  # fmt: skip
        timeout = s.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
                or not math.isfinite(timeout) or timeout <= 0:  # fmt: skip
            raise DriverError(self.name, f"settings.timeout_s must be a positive number of "
                              f"seconds, got {timeout!r}")  # fmt: skip
        self.timeout_s = float(timeout)
        origin = s.get("origin", DEFAULT_ORIGIN)
        if not isinstance(origin, str) or not origin.strip():
            raise DriverError(self.name, f"settings.origin must be a URL text, got {origin!r}")
        self.origin = origin.strip()
        emulate = s.get("emulate")
        if emulate is not None:
            if not isinstance(emulate, Mapping):
                raise DriverError(self.name, "settings.emulate must be a mapping (the emulated "
                                  "core's settings)")  # fmt: skip
            given = sorted(k for k in COMPONENTS if k in s)
            if given:
                raise DriverError(self.name, f"settings: {', '.join(given)} and emulate "
                                  "exclude each other (the emulated core says where its "
                                  "remote API listens)")  # fmt: skip
            if s.get("components") is not None:
                raise DriverError(
                    self.name,
                    "settings.components does not apply to the "
                    "emulated core (its component is the emulator process)",
                )
            return dict(emulate)
        for component in COMPONENTS:
            if component in s:
                self.urls[component] = self._url(component, s[component])
        if not self.urls:
            raise DriverError(self.name, "settings: give mme (ws://host:9000) and/or enb "
                              "(ws://host:9001), or emulate")  # fmt: skip
        if s.get("components") is not None:
            self.control = HostControl(self.name, s["components"],
                                       log_dir=self.context.run_dir / "core")  # fmt: skip
        return None

    def _url(self, component: str, raw: Any) -> str:
        where = f"settings.{component}"
        if not isinstance(raw, str):
            raise DriverError(self.name, f"{where} must be a ws:// URL, got {raw!r}")
        try:
            parts = urlsplit(raw.strip())
            port = parts.port
        except ValueError as exc:
            raise DriverError(self.name, f"{where}: {raw!r} is not a URL: {exc}") from None
        if parts.scheme not in ("ws", "wss") or not parts.hostname or port is None:
            raise DriverError(self.name, f"{where} must be ws://HOST:PORT (e.g. "
                              f"ws://10.0.0.7:{9000 if component == 'mme' else 9001}), "
                              f"got {raw!r}")  # fmt: skip
        return raw.strip()

    # ---------------------------------------------------------------- life cycle

    def open(self) -> None:
        """Check the settings, start the emulated core if asked, connect every component and
        read its ready message; the eNB's cells and gains are read at once."""
        emulate = self._check_settings()
        self._transcript = Transcript(self.transcript_path, f"{self.name} Amarisoft remote API")
        if emulate is not None:
            self._start_emulated(emulate)
        for component, url in self.urls.items():
            link = _Link(self.name, component, url, timeout_s=self.timeout_s,
                         origin=self.origin, transcript=self._transcript, ids=self._ids,
                         on_lost=self._on_lost, url_source=self._url_source(component))  # fmt: skip
            self.links[component] = link
            ready = link.connect()
            self.context.emit("core.ready", {
                "component": component, "url": url, "type": ready.get("type"),
                "name": ready.get("name"), "version": ready.get("version"), "wall": time.time(),
            })  # fmt: skip
        if "enb" in self.links:
            self.cells()

    def _start_emulated(self, emulate: Mapping[str, Any]) -> None:
        try:
            emulator = importlib.import_module("drivers.core.emulator")
        except ImportError as exc:
            raise DriverError(self.name, "settings.emulate needs drivers.core.emulator, "
                              f"which cannot be imported: {exc}") from exc  # fmt: skip
        self._emulated = emulator.start_emulated_core(
            self.name, self.settings, self.context, ("amarisoft",)
        )
        urls = self._emulated.ready.get("amarisoft")
        if not isinstance(urls, Mapping) or not any(k in urls for k in COMPONENTS):
            raise DriverError(self.name, "the emulated core's ready file gives no amarisoft "
                              f"remote API URL: {self._emulated.ready!r}")  # fmt: skip
        self.urls = {k: self._url(k, urls[k]) for k in COMPONENTS if k in urls}
        self.control = self._emulated.control

    def _url_source(self, component: str) -> Callable[[], str] | None:
        emulated = self._emulated
        if emulated is None:
            return None
        return lambda: str(emulated.ready["amarisoft"][component])

    def close(self) -> None:
        self._closing = True
        for link in self.links.values():
            with contextlib.suppress(Exception):
                link.close()
        for closer in (self.control, self._emulated):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer.close()
        if self._transcript is not None:
            self._transcript.close()

    def _on_lost(self, link: _Link, why: str) -> None:
        """From a reader thread: the first unexpected loss is the device's fault (once)."""
        if self._closing or link.expect_loss:
            return
        reason = f"{link.component} remote API connection ({link.url}) {why}"
        process = getattr(self._emulated, "process", None)  # its EmulatorProcess
        with contextlib.suppress(Exception):
            if process is not None:
                process.proc.wait(timeout=EXIT_WAIT_S)
        exited = process is not None and process.proc.poll() is not None
        if exited and process is not None:
            reason += f"; the emulated core exited with code {process.proc.returncode}"
        with self._fault_lock:
            if self._faulted is not None:
                return
            self._faulted = reason
        with contextlib.suppress(Exception):
            self.context.emit("core.lost", {"component": link.component, "reason": reason,
                                            "wall": time.time()})  # fmt: skip
        if not exited:  # an exited emulated core is reported by its own watcher
            self.context.fault(reason)

    # ---------------------------------------------------------------- requests

    def _link(self, component: str, what: str) -> _Link:
        link = self.links.get(component)
        if link is None:
            raise DriverError(self.name, f"{what} needs the {component} remote API "
                              f"(settings.{component})")  # fmt: skip
        return link

    def request(self, component: str, message: str, **params: Any) -> dict[str, Any]:
        """Any remote API message to ``mme`` or ``enb``; the answer (checked)."""
        with self._lock:
            link = self._link(component, message)
            connects = link.counts["connects"]
            try:
                return link.request(message, params)
            finally:
                if link.counts["connects"] != connects:
                    self.urls[component] = link.url
                    self.context.emit("core.reconnected", {
                        "component": component, "url": link.url,
                        "version": link.ready.get("version"), "wall": time.time(),
                    })  # fmt: skip

    def config_get(self, component: str = "enb") -> dict[str, Any]:
        return self.request(component, "config_get")

    def cells(self) -> dict[int, dict[str, Any]]:
        """The eNB's cells by id (``config_get``)."""
        cells = self.config_get("enb").get("cells")
        if not isinstance(cells, Mapping):
            raise DriverError(self.name, "the enb's config_get has no cells object")
        out: dict[int, dict[str, Any]] = {}
        for key, cell in cells.items():
            with contextlib.suppress(TypeError, ValueError):
                if isinstance(cell, Mapping):
                    out[int(key)] = dict(cell)
        return out

    def erabs(self) -> list[dict[str, Any]]:
        """The eNB's radio bearers (``erab_get``): ``enb_ue_id``, ``ebi``, ``qci``,
        ``gbr_kbps`` (0 for non-GBR), ``mbr_kbps`` and ``arp`` (None when the server does not
        report it: the real eNB does not, the emulated one does)."""
        out = []
        for erab in self.request("enb", "erab_get").get("erab_list") or []:
            if not isinstance(erab, Mapping):
                continue
            arp = erab.get("arp")
            out.append({
                "enb_ue_id": erab.get("enb_ue_id"), "ebi": erab.get("erab_id"),
                "qci": erab.get("qci"), "gbr_kbps": _kbps(erab.get("dl_gbr")),
                "mbr_kbps": _kbps(erab.get("dl_mbr")),
                "arp": dict(arp) if isinstance(arp, Mapping) else None,
            })  # fmt: skip
        return out

    def ues(self) -> list[Mapping[str, Any]]:
        """The attached UEs as the MME lists them (``imsi``, ``address`` of the default
        bearer, ``registered``, ids, ``bearers`` with ``ebi``, ``default``, ``apn``), each
        bearer completed from the eNB's ``erab_get`` (``qci``, ``gbr_kbps``, ``arp``) and the
        UE's ``cell_id`` from the eNB's ``ue_get``. Without an MME link, the eNB's view."""
        enb_erabs: dict[tuple[Any, Any], dict[str, Any]] = {}
        cell_of: dict[Any, Any] = {}
        if "enb" in self.links:
            enb_erabs = {(e["enb_ue_id"], e["ebi"]): e for e in self.erabs()}
            for ue in self.request("enb", "ue_get").get("ue_list") or []:
                cells = ue.get("cells") or [{}]
                cell_of[ue.get("enb_ue_id")] = cells[0].get("cell_id")
        if "mme" not in self.links:
            return [{"enb_ue_id": ue_id, "cell_id": cell,
                     "bearers": [_bearer(e, None, None) for k, e in enb_erabs.items()
                                 if k[0] == ue_id]} for ue_id, cell in cell_of.items()]  # fmt: skip
        out: list[Mapping[str, Any]] = []
        for ue in self.request("mme", "ue_get").get("ue_list") or []:
            ue_id = ue.get("enb_ue_id")
            bearers: list[dict[str, Any]] = []
            address = None
            for pdn in ue.get("bearers") or []:
                address = address or pdn.get("ip")
                bearers.append(_bearer(enb_erabs.get((ue_id, pdn.get("erab_id"))), pdn, True))
                for ded in pdn.get("dedicated") or []:
                    erab = enb_erabs.get((ue_id, ded.get("erab_id")))
                    bearers.append(_bearer(erab, {**ded, "apn": pdn.get("apn")}, False))
            out.append({
                "imsi": ue.get("imsi"), "address": address, "registered": ue.get("registered"),
                "plmn": ue.get("tac_plmn"), "tac": ue.get("tac"), "enb_ue_id": ue_id,
                "mme_ue_id": ue.get("mme_ue_id"), "cell_id": cell_of.get(ue_id),
                "bearers": bearers,
            })  # fmt: skip
        return out

    def stats(self) -> dict[str, dict[str, Any]]:
        """``stats`` of every connected component, by component."""
        return {component: self.request(component, "stats") for component in self.links}

    # ---------------------------------------------------------------- actions

    def perform(self, action: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        if action in UNSUPPORTED:
            raise DriverError(self.name, f"{action}: {UNSUPPORTED[action]}")
        if action == "cell_gain":
            _check_args(self.name, action, args, ("cell_id", "gain_db"), ())
            return self.cell_gain(args["cell_id"], args["gain_db"])
        if action in LIFECYCLE:
            _check_args(self.name, action, args, (), ("component",))
            return self.lifecycle(action, args.get("component"))
        return super().perform(action, args)

    def cell_gain(self, cell_id: Any, gain_db: Any) -> dict[str, Any]:
        """Set one cell's DL gain and read it back; the first change of a cell remembers
        the gain the safe state gives back."""
        if isinstance(cell_id, bool) or not isinstance(cell_id, int):
            raise DriverError(self.name, f"cell_gain: cell_id must be an integer, got {cell_id!r}")
        if (
            isinstance(gain_db, bool)
            or not isinstance(gain_db, int | float)
            or not math.isfinite(gain_db)
            or not GAIN_MIN_DB <= gain_db <= GAIN_MAX_DB
        ):
            raise DriverError(self.name, f"cell_gain: gain_db must be a number from "
                              f"{GAIN_MIN_DB:g} to {GAIN_MAX_DB:g} dB (the lteenb limits), "
                              f"got {gain_db!r}")  # fmt: skip
        with self._lock:
            return self._set_gain(cell_id, float(gain_db), remember=True)

    def _set_gain(self, cell_id: int, gain_db: float, *, remember: bool) -> dict[str, Any]:
        if remember and cell_id not in self.original_gain_db:
            before = self.cells().get(cell_id)
            if before is None:
                raise DriverError(self.name, f"cell_gain: the enb has no cell {cell_id} "
                                  f"(cells: {sorted(self.cells())})")  # fmt: skip
            self.original_gain_db[cell_id] = float(before.get("gain", 0.0))
        wall = time.time()
        self.request("enb", "cell_gain", cell_id=cell_id, gain=gain_db)
        self.gain_changes += 1
        actual = self.cells().get(cell_id, {}).get("gain")
        fields = {"cell_id": cell_id, "gain_db": gain_db, "actual_db": actual, "wall": wall}
        if not remember:
            fields["safe_state"] = True
        self.context.emit("core.cell_gain", fields)
        if not isinstance(actual, int | float) or abs(actual - gain_db) > GAIN_TOLERANCE_DB:
            raise DriverError(self.name, f"cell_gain: cell {cell_id} reads back {actual!r} "
                              f"after setting {gain_db:g} dB", self._tail())  # fmt: skip
        return {"cell_id": cell_id, "gain_db": gain_db, "actual_db": float(actual),
                "wall": wall}  # fmt: skip

    def lifecycle(self, action: str, component: Any) -> dict[str, Any]:
        """stop | kill | restart | isolate | restore a component (None: all of them)."""
        if component is not None and not isinstance(component, str):
            raise DriverError(self.name, f"{action}: component must be a name, got {component!r}")
        if self.control is None:
            raise DriverError(
                self.name,
                f"{action}: no component control (settings.components "
                "says how this callbox's components are stopped and started)",
            )
        with self._lock:
            if action != "restore":
                for link in self.links.values():
                    link.expect_loss = True  # a link may drop even for another component
            details = dict(self.control.act(action, component))
            if action == "isolate":
                self._isolated.add(component)
            elif action == "restore":
                self._isolated.discard(component)
                if component is None:
                    self._isolated.clear()
        self.context.emit("core.lifecycle", details)
        return details

    # ---------------------------------------------------------------- end of run

    def counters(self) -> Mapping[str, Any]:
        """Remote API traffic per component, UE counts and the servers' own statistics (as
        far as they still answer: an error is recorded, not raised)."""
        out: dict[str, Any] = {
            "links": {c: dict(link.counts) for c, link in self.links.items()},
            "cell_gain_changes": self.gain_changes, "lost": self._faulted,
            "transcript": str(self.transcript_path),
        }  # fmt: skip
        if self._emulated is not None:
            out["procedures"] = self._emulated.procedures()
        try:
            stats = self.stats()
        except DriverError as exc:
            out["stats_error"] = str(exc)
            return out
        mme, enb = stats.get("mme"), stats.get("enb")
        if mme is not None:
            out["emm_registered_ue_count"] = mme.get("emm_registered_ue_count")
            out["mme_counters"] = mme.get("counters")
        if enb is not None:
            cells = enb.get("cells") or {}
            out["enb_cells"] = {cid: {k: cell.get(k) for k in ("ue_count_avg", "erab_count_avg",
                                                                "dl_gbr_use_avg")}
                                for cid, cell in cells.items()}  # fmt: skip
            out["enb_ue_count"] = sum(int(c.get("ue_count_avg") or 0) for c in cells.values())
        return out

    def safe_state(self) -> None:
        """Give back every cell gain this run changed and restore every isolated component.
        Never raises; what was done is the ``core.safe_state`` event."""
        restored: dict[int, float] = {}
        errors: list[str] = []
        try:
            if not self._lock.acquire(timeout=3 * self.timeout_s + 1):
                errors.append("an action did not finish in time")
                return
            try:
                for cell_id, gain_db in sorted(self.original_gain_db.items()):
                    try:
                        restored[cell_id] = self._set_gain(cell_id, gain_db, remember=False)[
                            "actual_db"
                        ]
                    except Exception as exc:
                        errors.append(str(exc))
                for component in sorted(self._isolated, key=lambda c: c or ""):
                    try:
                        if self.control is not None:
                            self.control.act("restore", component)
                    except Exception as exc:
                        errors.append(str(exc))
                self._isolated.clear()
            finally:
                self._lock.release()
        except Exception as exc:  # the contract: never raise
            errors.append(repr(exc))
        finally:
            with contextlib.suppress(Exception):
                self.context.emit("core.safe_state", {"gains_restored_db": restored,
                                                      "errors": errors})  # fmt: skip

    def _tail(self) -> list[str]:
        return self._transcript.tail() if self._transcript is not None else []


# ------------------------------------------------------------------------------ helpers


def _check_args(device: str, action: str, args: Mapping[str, Any], required: tuple[str, ...],
                optional: tuple[str, ...]) -> None:  # fmt: skip
    missing = [k for k in required if args.get(k) is None]
    if missing:
        raise DriverError(device, f"{action}: give {', '.join(missing)}")
    unknown = sorted(set(args) - set(required) - set(optional))
    if unknown:
        raise DriverError(device, f"{action}: unknown argument(s) {', '.join(unknown)}")


def _json_object(raw: str | bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _text(raw: str | bytes) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "replace")


def _kbps(bps: Any) -> int:
    return int(bps) // 1000 if isinstance(bps, int | float) and not isinstance(bps, bool) else 0


def _bearer(erab: Mapping[str, Any] | None, pdn: Mapping[str, Any] | None,
            default: bool | None) -> dict[str, Any]:  # fmt: skip
    """One bearer of :meth:`AmarisoftCore.ues`: the MME's view completed by the eNB's."""
    out: dict[str, Any] = {
        "ebi": (pdn or {}).get("erab_id", (erab or {}).get("ebi")), "default": default,
        "apn": (pdn or {}).get("apn"),
    }  # fmt: skip
    if erab is not None:
        out |= {"qci": erab["qci"], "gbr_kbps": erab["gbr_kbps"], "arp": erab["arp"]}
    return out
