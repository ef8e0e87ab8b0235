"""The Amarisoft remote API (WebSocket, JSON text frames) served over a :class:`CoreState`, so
that the ``core/amarisoft`` driver is tested against the wire protocol of the product and the
emulated core can be driven exactly like a lab's Amarisoft callbox.

One :class:`AmarisoftApi` serves one component: ``mme`` (ltemme, port 9000 on a callbox) or
``enb`` (lteenb, port 9001), as the product does (spec notes 6.2). What is served follows the
product documentation shipped with release 2024-12-23 ("LTE and NR Core Network" and "LTE
Software eNodeB" manuals, chapter "Remote API"; public copy in the code index as
``nulsec/amarisoft-lte: 2024-12-23/doc/{ltemme,lteenb}-2024-12-23/*.html``), cross-checked
against public clients: ``navytux/xlte: amari/__init__.py`` (the ready message, request ids),
``navytux/xlte: amari/drb.py`` (``ue_get[stats]`` fields), ``openaicellular/flexric:
src/proxy-agent/README_ch_stats.md`` (``stats``, ``erab_get``, ``config_get`` field lists).
Fields marked ``[mem]`` below were not found in those sources.

* Connection: the server refuses a WebSocket handshake without an ``Origin`` header (the
  manual: "Origin header is mandatory", a nopoll library behaviour; any value is accepted),
  then sends ``{"message": "ready", "type": "MME"|"ENB", "name", "version", "product"}``.
  ``com_auth`` (the ``authenticate`` challenge) is not emulated.
* Requests are objects ``{"message", "message_id"?, ...}`` or arrays of them; each response
  repeats ``message`` and ``message_id`` and carries ``time`` (seconds since the process
  started) and ``utc``. A failing request gets an ``error`` string (manual 6.3); the texts of
  those errors are the emulator's own [mem].
* MME messages: ``config_get`` (type, name, logs), ``config_set`` (logs), ``ue_get`` (``imsi``
  filter; ``ue_list`` items ``rat_type``, ``imsi``, ``m_tmsi``, ``tac``, ``tac_plmn``,
  ``registered``, ``enb_ue_id``, ``mme_ue_id``, ``enb_plmn``, ``bearers[{erab_id, ip, apn,
  ul_total_bytes, dl_total_bytes, dedicated[{erab_id, ...}]}]``; IMEISV is unknown to the
  emulator and left out), ``stats`` (``cpu``, ``instance_id``, ``counters{messages, errors}``,
  ``emm_registered_ue_count``, ``s1_connections``), ``help``.
* eNB messages: ``config_get`` (adds ``cells`` keyed by cell id with ``n_id_cell``,
  ``dl_earfcn``, ``gain``, ``label``, ``inactivity_timer``, ``tac``, and ``global_enb_id``),
  ``config_set`` (``logs``; ``cells{id: {inactivity_timer}}``), ``ue_get`` (``stats`` adds the
  per-cell radio counters; items ``enb_ue_id``, ``mme_ue_id``, ``rnti``, ``cells[{cell_id}]``,
  ``erabs[{erab_id, qci, dl_total_bytes, ul_total_bytes}]`` -- releases before 2023 named the
  list ``erab_list``, as xlte reads it), ``erab_get`` (``timestamp``, ``erab_list[{enb_ue_id,
  erab_id, qci, dl_mbr, dl_gbr, ul_mbr, ul_gbr, dl_total_bytes, ul_total_bytes}]``, GBR fields
  only for GBR bearers, in bit/s [mem: the unit]), ``stats`` (``cpu``, ``instance_id``,
  ``duration``, ``cells{id: {dl_bitrate, ul_bitrate, ue_count_min/avg/max,
  erab_count_min/avg/max, dl_gbr_use_min/avg/max, ul_gbr_use_*, ...}}``), ``cell_gain``
  (``cell_id``, ``gain`` in dB, -200..0 included), ``help``.

Emulator extensions, absent from the product: each ``erab_get`` entry also carries ``arp``
(``priority_level``, ``pre_emption_capability``, ``pre_emption_vulnerability``: the names of
Amarisoft's ``erabs`` configuration and ``ue_modify_bearer`` message) so that a test can see
the ARP the emulated core admitted; the real eNB does not report it and the driver treats it as
optional. ``stats`` reports the present counts as min = avg = max (the emulator does not sample
between calls); bit rates are 0 (the user plane is not counted here).

Cells are numbered by the lab: ``cells={1: "cellA", 2: "cellB"}`` maps cell ids to the RAN
names the state knows UEs by; the eNB only lists UEs served by one of its cells. A cell gain
(``cell_gain``) is stored and reported by ``config_get``, and ``on_cell_gain(cell_id, gain_db)``
is called so that the emulated core can couple it to the radio (what a -200 dB cell does to its
UEs is the caller's business).

``python -m drivers.core.amarisoft_api --port-file F [--component mme|enb] [--demo]`` serves
one component over a fresh state (``--demo`` attaches two UEs with bearers) and writes
``{"pid", "url", "component"}`` to F once it listens: a stand-alone fixture for tests and for
a lab's CI.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import math
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from drivers.core.milenage import milenage_res
from drivers.core.state import Bearer, CoreState, UeContext
from drivers.core.subscriber import Arp, Subscriber
from drivers.files import write_json_atomic

__all__ = [
    "COMPONENT_TYPES",
    "GAIN_MAX_DB",
    "GAIN_MIN_DB",
    "VERSION",
    "AmarisoftApi",
    "build_demo_state",
]

COMPONENT_TYPES = {"mme": "MME", "enb": "ENB"}
"""The ``type`` of each component's ready message (manual 6.2; xlte's log shows ``ENB``)."""
DEFAULT_PORTS = {"mme": 9000, "enb": 9001}
"""``com_addr`` ports as observed on a callbox (spec notes 6.2)."""
VERSION = "2024-12-23"
"""The release whose manual this surface follows, reported as ``version``."""
PRODUCT = "euccs-testbed emulated core"
GAIN_MIN_DB = -200.0
GAIN_MAX_DB = 0.0
"""``cell_gain``: "Gain in dB. Must be between -200 and 0 (included)" (lteenb manual)."""
DEFAULT_INACTIVITY_TIMER_MS = 10000
"""Cell ``inactivity_timer`` until ``config_set`` changes it [mem: the product's default]."""
DEFAULT_DL_EARFCN = 3350  # [mem] band 7, the callbox sample configurations' usual choice
ENB_ID = 0x1A2D0  # [mem] the sample configurations' enb_id
TAC = 1  # [mem] the sample configurations' tac
MAX_FRAME_BYTES = 16 * 1024 * 1024
ERROR_COUNTERS = frozenset({"attach_rejects", "auth_failures", "bearers_rejected"})
"""State counters reported under ``stats.counters.errors``; the others under ``messages``."""

_LOG_LAYERS = {
    "mme": ("NAS", "S1AP", "GTPU", "IP"),
    "enb": ("PHY", "MAC", "RLC", "PDCP", "RRC", "S1AP", "GTPU"),
}


class _RequestError(Exception):
    """A request the server answers with an ``error`` string."""


class _UeIds:
    """The S1AP ids the eNB and MME give a UE context, shared by every API over one state so
    that an MME ``ue_get`` and an eNB ``erab_get`` agree; a re-attach is a new context."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, float], int] = {}
        self._next = itertools.count(1)

    def of(self, ue: UeContext) -> int:
        key = (ue.imsi, ue.attached_wall)
        with self._lock:
            if key not in self._ids:
                self._ids[key] = next(self._next)
            return self._ids[key]


_IDS: dict[int, _UeIds] = {}
_IDS_LOCK = threading.Lock()


def _ids_for(state: CoreState) -> _UeIds:
    """Keyed by identity (the state need not be hashable); forgotten with the state."""
    with _IDS_LOCK:
        ids = _IDS.get(id(state))
        if ids is None:
            ids = _IDS[id(state)] = _UeIds()
            with contextlib.suppress(TypeError):  # not weak-referenceable: kept
                weakref.finalize(state, _IDS.pop, id(state), None)
        return ids


class AmarisoftApi:
    """One component's remote API over ``state``; :meth:`start` serves it from a thread."""

    def __init__(
        self,
        state: CoreState,
        host: str = "127.0.0.1",
        port: int = 0,
        component: str = "mme",
        *,
        cells: Mapping[int, str] | None = None,
        name: str | None = None,
        on_cell_gain: Callable[[int, float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if component not in COMPONENT_TYPES:
            raise ValueError(f"component must be one of {sorted(COMPONENT_TYPES)}: {component!r}")
        self.state = state
        self.host = host
        self.component = component
        self.type = COMPONENT_TYPES[component]
        self.name = name or f"{state.name}-{component}"
        self.on_cell_gain = on_cell_gain
        self._clock = clock
        self._started_wall = clock()
        self._started = time.monotonic()
        self._instance_id = int(self._started_wall * 1000) & 0x7FFFFFFF
        self._lock = threading.Lock()
        self._ids = _ids_for(state)
        self._cells: dict[int, dict[str, Any]] = {}
        for cell_id, ran in sorted((cells or {}).items()):
            if isinstance(cell_id, bool) or not isinstance(cell_id, int) or cell_id < 0:
                raise ValueError(f"cells: {cell_id!r} is not a cell id")
            self._cells[cell_id] = {
                "n_id_cell": cell_id, "dl_earfcn": DEFAULT_DL_EARFCN, "gain": 0.0,
                "label": str(ran), "inactivity_timer": DEFAULT_INACTIVITY_TIMER_MS, "tac": TAC,
            }  # fmt: skip
        self._logs: dict[str, Any] = {
            "layers": {layer: {"level": "warn", "max_size": 1, "payload": False}
                       for layer in _LOG_LAYERS[component]},
            "count": 8192, "bcch": False, "mib": False,
        }  # fmt: skip
        self.requests: dict[str, int] = {}
        """Requests received per message name (this server's own ``stats.counters``)."""
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    # ---------------------------------------------------------------- serving

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> None:
        """Listen (``port=0``: any free port, then :attr:`port` says which) and serve."""
        self._server = serve(
            self._serve, self.host, self.port, process_request=self._check_origin,
            max_size=MAX_FRAME_BYTES, compression=None,
        )  # fmt: skip
        self.port = int(self._server.socket.getsockname()[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"amarisoft-{self.component}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop listening and drop every connection (clients see the close)."""
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @staticmethod
    def _check_origin(connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Origin") is None:
            return connection.respond(HTTPStatus.FORBIDDEN, "Origin header is mandatory\n")
        return None

    def _serve(self, connection: ServerConnection) -> None:
        session: dict[str, float] = {"last_stats": time.monotonic()}
        try:
            connection.send(json.dumps(self.ready_message()))
            for frame in connection:
                for response in self.handle_frame(frame, session):
                    connection.send(json.dumps(response))
        except ConnectionClosed:
            pass

    def ready_message(self) -> dict[str, Any]:
        """The first message of every connection (manual 6.2)."""
        return {"message": "ready", "type": self.type, "name": self.name, "version": VERSION,
                "product": PRODUCT}  # fmt: skip

    def handle_frame(self, frame: str | bytes, session: dict[str, float]) -> list[dict[str, Any]]:
        """The responses to one text frame: one object, or an array of them (manual 6.1)."""
        try:
            data = json.loads(frame)
        except ValueError as exc:
            return [self._stamp({"message": None, "error": f"Invalid JSON: {exc}"})]
        messages = data if isinstance(data, list) else [data]
        return [self.handle(message, session) for message in messages]

    def handle(self, request: Any, session: dict[str, float]) -> dict[str, Any]:
        """One request's response: same ``message`` and ``message_id``, or an ``error``."""
        if not isinstance(request, dict) or not isinstance(request.get("message"), str):
            return self._stamp({"message": None, "error": "Message must be an object with a "
                                "string 'message' member"})  # fmt: skip
        name = request["message"]
        response: dict[str, Any] = {"message": name}
        if "message_id" in request:
            response["message_id"] = request["message_id"]
        with self._lock:
            self.requests[name] = self.requests.get(name, 0) + 1
        handler = self._handlers().get(name)
        try:
            if handler is None:
                raise _RequestError(f"Unknown message: {name}")
            response.update(handler(request, session))
        except _RequestError as exc:
            response["error"] = str(exc)
        return self._stamp(response)

    def _stamp(self, response: dict[str, Any]) -> dict[str, Any]:
        response["time"] = round(time.monotonic() - self._started, 3)
        response["utc"] = round(self._clock(), 3)
        return response

    def _handlers(self) -> dict[str, Callable[[dict[str, Any], dict[str, float]], dict[str, Any]]]:
        common = {"config_get": self._config_get, "config_set": self._config_set,
                  "stats": self._stats, "help": self._help}  # fmt: skip
        if self.component == "mme":
            return {**common, "ue_get": self._mme_ue_get}
        return {**common, "ue_get": self._enb_ue_get, "erab_get": self._erab_get,
                "cell_gain": self._cell_gain}  # fmt: skip

    # ---------------------------------------------------------------- messages

    def _help(self, request: dict[str, Any], session: dict[str, float]) -> dict[str, Any]:
        return {"messages": sorted(self._handlers()), "events": []}

    def _config_get(self, request: dict[str, Any], session: dict[str, float]) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {"type": self.type, "name": self.name,
                                   "logs": json.loads(json.dumps(self._logs))}  # fmt: skip
            if self.component == "enb":
                out["cells"] = {str(cid): dict(cell) for cid, cell in self._cells.items()}
                out["global_enb_id"] = {"plmn": self.state.plmn, "enb_id_type": "macro",
                                        "enb_id": ENB_ID}  # fmt: skip
        return out

    def _config_set(self, request: dict[str, Any], session: dict[str, float]) -> dict[str, Any]:
        params = {k: v for k, v in request.items() if k not in ("message", "message_id")}
        known = {"logs", "cells"} if self.component == "enb" else {"logs"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise _RequestError(f"config_set: {', '.join(unknown)} not supported by this server")
        logs = params.get("logs")
        if logs is not None and not isinstance(logs, dict):
            raise _RequestError("config_set: logs must be an object")
        cells = params.get("cells")
        changes: list[tuple[dict[str, Any], int]] = []
        if cells is not None:
            if not isinstance(cells, dict):
                raise _RequestError("config_set: cells must be an object keyed by cell id")
            for key, values in cells.items():
                cell = self._cell(key)
                if not isinstance(values, dict) or set(values) - {"inactivity_timer"}:
                    raise _RequestError(f"config_set: cell {key}: only inactivity_timer can be set")
                timer = values.get("inactivity_timer")
                if timer is not None:
                    if isinstance(timer, bool) or not isinstance(timer, int) or timer < 0:
                        raise _RequestError(f"config_set: cell {key}: inactivity_timer must be "
                                            "a count of ms")  # fmt: skip
                    changes.append((cell, timer))
        with self._lock:  # validated first: all of it or nothing
            for cell, timer in changes:
                cell["inactivity_timer"] = timer
            for layer, conf in (logs or {}).get("layers", {}).items():
                targets = self._logs["layers"] if layer == "all" else {layer: None}
                for target in targets:
                    self._logs["layers"].setdefault(target, {}).update(conf)
            for key, value in (logs or {}).items():
                if key != "layers":
                    self._logs[key] = value
        return {}

    def _cell(self, key: Any) -> dict[str, Any]:
        try:
            cell_id = int(key)
        except (TypeError, ValueError):
            raise _RequestError(f"Invalid cell_id: {key!r}") from None
        if isinstance(key, bool) or cell_id not in self._cells:
            raise _RequestError(f"Unknown cell_id: {key}")
        return self._cells[cell_id]

    def _cell_gain(self, request: dict[str, Any], session: dict[str, float]) -> dict[str, Any]:
        cell_id, gain = request.get("cell_id"), request.get("gain")
        if isinstance(cell_id, bool) or not isinstance(cell_id, int):
            raise _RequestError("cell_gain: cell_id must be an integer")
        cell = self._cell(cell_id)
        if isinstance(gain, bool) or not isinstance(gain, int | float) or not math.isfinite(gain):
            raise _RequestError("cell_gain: gain must be a number")
        if not GAIN_MIN_DB <= gain <= GAIN_MAX_DB:
            raise _RequestError(f"cell_gain: gain must be between {GAIN_MIN_DB:g} and "
                                f"{GAIN_MAX_DB:g} dB")  # fmt: skip
        with self._lock:
            cell["gain"] = float(gain)
        if self.on_cell_gain is not None:
            self.on_cell_gain(cell_id, float(gain))
        return {}

    def _ran_cells(self) -> dict[str, int]:
        return {str(cell["label"]): cid for cid, cell in self._cells.items()}

    def _mme_ue_get(self, request: dict[str, Any], session: dict[str, float]) -> dict[str, Any]:
        imsi = request.get("imsi")
        if imsi is not None and not isinstance(imsi, str):
            raise _RequestError("ue_get: imsi must be a string")
        ue_list = []
        for ue in self.state.ues():
            if imsi is not None and ue.imsi != imsi:
                continue
            sub = self.state.subscriber(ue.imsi)
            apn = sub.apn if sub is not None else "internet"
            ue_id = self._ids.of(ue)
            default = [b for b in ue.bearers if b.default]
            dedicated = [b for b in ue.bearers if not b.default]
            bearers = [{
                "erab_id": b.ebi, "ip": ue.address, "apn": apn, "ul_total_bytes": 0,
                "dl_total_bytes": 0,
                "dedicated": [{"erab_id": d.ebi, "ul_total_bytes": 0, "dl_total_bytes": 0}
                              for d in dedicated],
            } for b in default]  # fmt: skip
            ue_list.append({
                "rat_type": "LTE", "imsi": ue.imsi, "m_tmsi": _m_tmsi(ue), "tac": TAC,
                "tac_plmn": ue.plmn, "registered": True, "enb_plmn": ue.plmn, "enb_id": ENB_ID,
                "enb_ue_id": ue_id, "mme_ue_id": 1000 + ue_id, "bearers": bearers,
            })  # fmt: skip
        return {"ue_list": ue_list}

    def _enb_ues(self) -> list[tuple[UeContext, int]]:
        ran_cells = self._ran_cells()
        return [(ue, ran_cells[ue.ran]) for ue in self.state.ues() if ue.ran in ran_cells]

    def _enb_ue_get(self, request: dict[str, Any], session: dict[str, float]) -> dict[str, Any]:
        stats = bool(request.get("stats", False))
        ue_list = []
        for ue, cell_id in self._enb_ues():
            ue_id = self._ids.of(ue)
            cell: dict[str, Any] = {"cell_id": cell_id}
            if stats:
                cell |= {"cqi": 15, "ri": 1, "dl_bitrate": 0, "ul_bitrate": 0, "dl_tx": 0,
                         "ul_tx": 0, "dl_err": 0, "ul_err": 0, "dl_retx": 0, "ul_retx": 0,
                         "dl_mcs": 28, "ul_mcs": 28}  # fmt: skip
            ue_list.append({
                "time": round(time.monotonic() - self._started, 3), "enb_ue_id": ue_id,
                "mme_ue_id": 1000 + ue_id, "rnti": 0x46 + ue_id, "cells": [cell],
                "erabs": [{"erab_id": b.ebi, "qci": b.qci, "dl_total_bytes": 0,
                           "ul_total_bytes": 0} for b in ue.bearers],
            })  # fmt: skip
        return {"ue_list": ue_list}

    def _erab_get(self, request: dict[str, Any], session: dict[str, float]) -> dict[str, Any]:
        erab_list = []
        for ue, _ in self._enb_ues():
            ue_id = self._ids.of(ue)
            for bearer in ue.bearers:
                erab_list.append({"enb_ue_id": ue_id, **_erab(bearer)})
        return {"timestamp": int(self._clock() * 1000), "erab_list": erab_list}

    def _stats(self, request: dict[str, Any], session: dict[str, float]) -> dict[str, Any]:
        now = time.monotonic()
        duration, session["last_stats"] = now - session["last_stats"], now
        out: dict[str, Any] = {"cpu": {"global": 0.0}, "instance_id": self._instance_id}
        if self.component == "mme":
            counters = self.state.counters()
            ues = self.state.ues()
            per_ran: dict[str, int] = {}
            for ue in ues:
                per_ran[ue.ran] = per_ran.get(ue.ran, 0) + 1
            out["counters"] = {
                "messages": {k: v for k, v in counters.items() if k not in ERROR_COUNTERS},
                "errors": {k: v for k, v in counters.items() if k in ERROR_COUNTERS},
            }
            out["emm_registered_ue_count"] = len(ues)
            out["s1_connections"] = [{
                "plmn": self.state.plmn, "enb_id_type": "macro", "enb_id": ENB_ID,
                "ip_addr": "127.0.0.1:36412", "ta_list": [{"plmn": self.state.plmn, "tac": TAC}],
                "emm_connected_ue_count": count, "label": ran,
            } for ran, count in sorted(per_ran.items())]  # fmt: skip
            return out
        out["duration"] = round(duration, 3)
        cells_state = self.state.cells()
        by_cell: dict[int, list[UeContext]] = {cid: [] for cid in self._cells}
        for ue, cell_id in self._enb_ues():
            by_cell[cell_id].append(ue)
        cells: dict[str, Any] = {}
        for cell_id, cell in self._cells.items():
            ues_here = by_cell[cell_id]
            erabs = sum(len(ue.bearers) for ue in ues_here)
            ran_state = cells_state.get(str(cell["label"]), {})
            capacity = int(ran_state.get("gbr_capacity", -1))
            gbr = int(ran_state.get("gbr_bearers", 0))
            use = round(gbr / capacity, 4) if capacity > 0 else 0.0
            entry: dict[str, Any] = {"dl_bitrate": 0, "ul_bitrate": 0, "dl_tx": 0, "ul_tx": 0,
                                     "dl_retx": 0, "ul_retx": 0}  # fmt: skip
            for what, value in (("ue_count", len(ues_here)), ("erab_count", erabs),
                                ("dl_gbr_use", use), ("ul_gbr_use", use)):  # fmt: skip
                for suffix in ("min", "avg", "max"):
                    entry[f"{what}_{suffix}"] = value
            cells[str(cell_id)] = entry
        out["cells"] = cells
        return out


def _erab(bearer: Bearer) -> dict[str, Any]:
    entry: dict[str, Any] = {"erab_id": bearer.ebi, "qci": bearer.qci}
    if bearer.gbr_kbps > 0:
        bps = bearer.gbr_kbps * 1000
        entry |= {"dl_mbr": bps, "dl_gbr": bps, "ul_mbr": bps, "ul_gbr": bps}
    entry |= {"dl_total_bytes": 0, "ul_total_bytes": 0, "arp": {
        "priority_level": bearer.arp.priority_level,
        "pre_emption_capability": bearer.arp.pre_emption_capability,
        "pre_emption_vulnerability": bearer.arp.pre_emption_vulnerability,
    }}  # fmt: skip
    return entry


def _m_tmsi(ue: UeContext) -> str:
    """A stable M-TMSI per context, as 8 hex digits [mem: the product's formatting]."""
    return hashlib.sha256(f"{ue.imsi}/{ue.attached_wall}".encode()).hexdigest()[:8]


# ------------------------------------------------------------------------------ stand-alone

DEMO_PLMN = "00101"
DEMO_CELLS = {1: "cell1", 2: "cell2"}
DEMO_SUBSCRIBERS: tuple[dict[str, Any], ...] = (
    {"imsi": "001010000000011", "k": "465B5CE8B199B49FAA5F0A2EE238A6BC",
     "opc": "E8ED289DEBA952E4283B54E88E6183CA", "apn": "internet", "qci": 9,
     "ipv4": "10.201.0.2",
     "arp": {"priority_level": 8, "pre_emption_capability": False,
             "pre_emption_vulnerability": True},
     "pcc_rules": [{"qci": 65, "gbr_kbps": 64,
                    "arp": {"priority_level": 10, "pre_emption_vulnerability": True}}]},
    {"imsi": "001010000000012", "k": "000102030405060708090A0B0C0D0E0F",
     "opc": "BA48E5BA1A7C4B5F6A43CE9AE0F2A5B2", "apn": "mc", "qci": 69,
     "ipv4": "10.201.0.3",
     "arp": {"priority_level": 2, "pre_emption_capability": True,
             "pre_emption_vulnerability": False}},
)  # fmt: skip
"""``--demo``: the first UE attaches through cell1 (default bearer QCI 9, a GBR QCI 65 bearer
from its PCC rule), the second through cell2 (QCI 69) and then gets a GBR QCI 67 bearer."""


def build_demo_state(name: str = "amari-demo") -> CoreState:
    """A state with :data:`DEMO_SUBSCRIBERS` provisioned and attached (real authentication:
    each attach answers the core's MILENAGE challenge)."""
    state = CoreState(name, DEMO_PLMN, cell_gbr_capacity={"cell1": 4, "cell2": 4})
    for data, ran in zip(DEMO_SUBSCRIBERS, ("cell1", "cell2"), strict=True):
        sub = Subscriber.from_mapping(data)
        state.put_subscriber(sub)
        rand = state.challenge(sub.imsi)
        state.attach(sub.imsi, plmn=DEMO_PLMN, ran=ran,
                     res=milenage_res(sub.k, sub.opc, rand))  # fmt: skip
    state.create_bearer(
        "001010000000012",
        qci=67,
        gbr_kbps=512,
        arp=Arp(priority_level=3, pre_emption_capability=True, pre_emption_vulnerability=False),
    )
    return state


def _cells_arg(text: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for item in text.split(","):
        cell_id, _, ran = item.partition("=")
        out[int(cell_id)] = ran or f"cell{cell_id}"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port-file", "--ready-file", dest="port_file", required=True)
    parser.add_argument("--component", choices=sorted(COMPONENT_TYPES), default="mme")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cells", type=_cells_arg, default=None,
                        help="cell ids and RAN names: 1=cell1,2=cell2")  # fmt: skip
    parser.add_argument("--demo", action="store_true", help="attach two UEs with bearers")
    args = parser.parse_args(argv)
    state = build_demo_state() if args.demo else CoreState("amari", DEMO_PLMN)
    api = AmarisoftApi(state, args.host, args.port, args.component,
                       cells=args.cells if args.cells is not None else DEMO_CELLS)  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    api.start()
    write_json_atomic(args.port_file, {"pid": os.getpid(), "url": api.url,
                                       "component": args.component})  # fmt: skip
    stop.wait()
    api.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
