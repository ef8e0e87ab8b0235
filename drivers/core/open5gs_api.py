"""The management surfaces of an Open5GS core, served over a :class:`CoreState`: the WebUI's
REST API (subscribers) on one port, and the NFs' metrics HTTP server (Prometheus ``/metrics``
and the MME's ``/ue-info`` JSON) on another. The emulated core process serves these so that
the Open5GS driver talks to it exactly as to a real Open5GS; ``python -m
drivers.core.open5gs_api --port-file F`` serves them over an empty core on its own (for the
driver's tests and for a lab's CI).

What is reproduced, and from where (spec section 6.1 [src], checked against the Open5GS
sources ``webui/server/index.js``, ``webui/server/routes/{auth,db}.js``,
``src/mme/metrics.c``, ``src/mme/ue-info.c``, ``lib/metrics/prometheus/{context,json_pager}.c``):

* WebUI auth: ``GET /api/auth/csrf`` -> ``{"csrfToken"}`` (lusca, bound to the session, which
  express-session creates on first sight with a ``connect.sid`` cookie);
  ``POST /api/auth/login`` (passport-local: form or JSON ``username``/``password``) answers
  ``302`` to ``/`` and marks the session logged in, or ``401``;
  ``GET /api/auth/session`` -> ``{"clientMaxAge", "csrfToken", "user", "authToken"}``, the
  ``authToken`` a JWT (HS256 here) the REST calls carry as ``Authorization: Bearer``.
  lusca checks every POST/PUT/PATCH/DELETE (login included) before any route: the session's
  token in ``X-CSRF-TOKEN`` (or a ``_csrf`` body field), else ``403``; then ``/api/db``
  checks the bearer token, else ``401``.
* ``/api/db/Subscriber`` (express-restify-mongoose, ``idProperty: 'imsi'``): ``GET`` list,
  ``POST`` create (``201``; a duplicate IMSI is Mongo's E11000 as ``400``, a document the
  schema refuses a ``ValidationError`` as ``400``), ``/<imsi>`` ``GET`` / ``PUT`` (replace) /
  ``PATCH`` (top-level fields merged) / ``DELETE`` (``204``); unknown IMSI ``404``. Documents
  are the Open5GS schema (:meth:`Subscriber.to_open5gs`) plus ``_id`` and ``__v``, as
  Mongoose returns them; what the schema holds beyond a :class:`Subscriber` is not kept.
* Metrics port: GET only (else ``400 Invalid HTTP Method``); ``/`` health ``OK``; ``/metrics``
  text format 0.0.4; ``/ue-info?page=&page_size=`` (0-based, page size capped at 100,
  ``page=-1`` no paging, ``pager{page,page_size,count[,prev][,next]}`` where ``count`` is the
  number of items on this page); anything else, ``/metrics/`` included, ``404`` (recent
  Open5GS answers unmatched paths ``400 Bad Request``; either way not the metrics).

The metrics are only those the state really knows, under their Open5GS names (spec 6.1
[src]; type and help text as in ``src/<nf>/metrics.c``):

=============================== ======= =====================================================
name                            type    from the state
=============================== ======= =====================================================
``enb_ue`` (MME)                gauge   UEs attached
``mme_session`` (MME)           gauge   UEs attached (one PDN session each)
``enb{connected=}`` (MME)       gauge   ``total`` = RAN nodes the core knows; 1 per node
``ues_active`` (SMF)            gauge   UEs attached
``bearers_active`` (SMF)        gauge   bearers active
``gtp2_sessions_active`` (SMF)  gauge   UEs attached
``s5c_rx_createsession`` (SMF)  counter attach accepts
``s5c_rx_deletesession`` (SMF)  counter detaches
``fivegs_upffunction_upf_sessionnbr`` (UPF) gauge  UEs attached
``s6a_rx_air`` (HSS)            counter attach requests (each asks for vectors)
``s6a_rx_ulr`` (HSS)            counter attach accepts (each updates the location)
``hss_imsi`` (HSS)              gauge   subscribers
=============================== ======= =====================================================

``/ue-info`` items follow ``src/mme/ue-info.c``: ``supi``, ``domain``, ``rat``,
``cm_state`` (always ``connected``: the emulated core keeps no idle mode), ``enb``
(``enb_id`` numbered 1.. per RAN node in order of first sight, ``cell_id`` = ``enb_id`` << 8
| 1 as a 28-bit E-UTRAN cell identity), ``location{tai{plmn,tac_hex,tac},timestamp}`` (TAC
1; timestamp = attach time in µs), ``ambr`` (bit/s, from the subscriber document), ``pdn``
(one: ``apn``, ``qos_flows[{ebi}]``, ``qci``, ``ebi``, ``bearer_count``, ``pdu_state``),
``pdn_count``. What Open5GS does not report but the emulated core knows is under
``x_emulated`` (``ran``, ``address``, ``roaming``, and per bearer ``ebi``, ``qci``, ``arp``,
``gbr_kbps``, ``default``), so a reader can tell the two apart.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import math
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from drivers.core.state import CoreState, UeContext
from drivers.core.subscriber import Subscriber
from drivers.files import write_json_atomic

__all__ = ["UE_INFO_PAGE_SIZE_MAX", "Open5gsApi", "main", "metric_families", "render_metrics"]

UE_INFO_PAGE_SIZE_MAX = 100
"""``MME_UE_INFO_PAGE_SIZE_DEFAULT`` in ``src/mme/ue-info.c`` [src]: default and maximum."""
NO_PAGING = 2**64 - 1
"""``page=-1`` read by ``strtoull`` (``SIZE_MAX``): no paging [src: ue-info.c, context.c]."""
COOKIE = "connect.sid"
"""express-session's default cookie name [src: webui/server/index.js]."""
CLIENT_MAX_AGE_MS = 60000
TOKEN_LIFETIME_S = 3600
BODY_MAX = 1 << 20
DB_PREFIX = "/api/db/"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""What Open5GS's metrics server declares [src: lib/metrics/prometheus/context.c]."""

# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One metric family as the exposition format writes it."""

    name: str
    type: str
    help: str
    samples: tuple[tuple[Mapping[str, str], float], ...]


def metric_families(state: CoreState) -> list[Family]:
    """The families of the table in the module docstring, from the state now."""
    c = state.counters()
    ues = c.get("ues_attached", 0)

    def one(name: str, kind: str, text: str, value: float) -> Family:
        return Family(name, kind, text, (({}, float(value)),))

    cells = sorted(state.cells())
    enb_samples: list[tuple[Mapping[str, str], float]] = [
        ({"connected": "total"}, float(len(cells)))
    ]
    enb_samples += [({"connected": ran}, 1.0) for ran in cells]
    return [
        # MME [src: src/mme/metrics.c]
        one("enb_ue", "gauge", "Number of UEs connected to eNodeBs", ues),
        one("mme_session", "gauge", "MME Sessions", ues),
        Family(
            "enb",
            "gauge",
            "Status and IP address of eNBs that have connected to this MME",
            tuple(enb_samples),
        ),
        # SMF [src: spec 6.1]
        one("ues_active", "gauge", "Active User Equipments", ues),
        one("bearers_active", "gauge", "Active Bearers", c.get("bearers_active", 0)),
        one("gtp2_sessions_active", "gauge", "Active GTPv2 Sessions (S5C)", ues),
        one(
            "s5c_rx_createsession",
            "counter",
            "Received GTPv2C CreateSessionRequest",
            c.get("attach_accepts", 0),
        ),
        one(
            "s5c_rx_deletesession",
            "counter",
            "Received GTPv2C DeleteSessionRequest",
            c.get("detaches", 0),
        ),
        # UPF [src: spec 6.1]
        one("fivegs_upffunction_upf_sessionnbr", "gauge", "Active Sessions", ues),
        # HSS [src: spec 6.1]
        one(
            "s6a_rx_air",
            "counter",
            "Received S6a Authentication Information Request",
            c.get("attach_requests", 0),
        ),
        one(
            "s6a_rx_ulr",
            "counter",
            "Received S6a Update Location Request",
            c.get("attach_accepts", 0),
        ),
        one("hss_imsi", "gauge", "Number of IMSIs attached to HSS", c.get("subscribers", 0)),
    ]


def _label_value(text: str) -> str:
    """Escapes of the text format: backslash, double quote and line feed."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def render_metrics(families: Sequence[Family]) -> str:
    """The Prometheus text exposition format 0.0.4 (``# HELP``, ``# TYPE``, samples)."""
    lines: list[str] = []
    for fam in families:
        lines.append(f"# HELP {fam.name} {_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        for labels, value in fam.samples:
            text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            lines.append(f"{fam.name}{{{text}}} {_number(value)}" if text
                         else f"{fam.name} {_number(value)}")  # fmt: skip
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# /ue-info
# --------------------------------------------------------------------------------------------


def _query_size(query: Mapping[str, list[str]], key: str, default: int) -> int:
    """``get_query_size_t`` of context.c: strtoull, so ``-1`` is SIZE_MAX; junk = default."""
    raw = (query.get(key) or [""])[0]
    if raw.isdigit():
        return int(raw)
    if raw.startswith("-") and raw[1:].isdigit():
        return (2**64 - int(raw[1:])) % 2**64
    return default


def _bps(rate: Any) -> int:
    """An Open5GS ``{value, unit}`` rate in bit/s (unit 0 bps .. 4 Tbps [src: spec 6.1])."""
    try:
        value, unit = int(rate["value"]), int(rate["unit"])
    except (KeyError, TypeError, ValueError):
        return 0
    return int(value * 1000**unit)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


@dataclass
class _Session:
    sid: str
    csrf: str
    user: str | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 api: Open5gsApi) -> None:  # fmt: skip
        super().__init__(address, handler)
        self.api = api


class Open5gsApi:
    """The WebUI REST API and the metrics server of an Open5GS core over ``state``.

    ``start()`` binds both ports (0 = any free one) and serves them from threads;
    ``webui_url`` and ``metrics_url`` are then the base URLs; ``close()`` stops both."""

    def __init__(
        self,
        state: CoreState,
        host: str = "127.0.0.1",
        webui_port: int = 0,
        metrics_port: int = 0,
        username: str = "admin",
        password: str = "1423",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.host = host
        self.webui_port = webui_port
        self.metrics_port = metrics_port
        self.username = username
        self.password = password
        self.clock = clock
        self._secret = secrets.token_bytes(32)
        self._sessions: dict[str, _Session] = {}
        self._object_ids: dict[str, str] = {}
        self._enb_ids: dict[str, int] = {}
        self._ue_ids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- life cycle

    def start(self) -> None:
        for port, handler in ((self.webui_port, _WebUiHandler),
                              (self.metrics_port, _MetricsHandler)):  # fmt: skip
            server = _Server((self.host, port), handler, self)
            self._servers.append(server)
            thread = threading.Thread(target=server.serve_forever, name=handler.__name__,
                                      kwargs={"poll_interval": 0.2}, daemon=True)  # fmt: skip
            thread.start()
            self._threads.append(thread)

    def _url(self, index: int) -> str:
        if len(self._servers) <= index:
            raise RuntimeError("Open5gsApi: not started")
        port = self._servers[index].server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    @property
    def webui_url(self) -> str:
        return self._url(0)

    @property
    def metrics_url(self) -> str:
        return self._url(1)

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    # ---------------------------------------------------------------- sessions and tokens

    def session(self, sid: str | None) -> tuple[_Session, bool]:
        """The session of a cookie, or a new one (True: set the cookie)."""
        with self._lock:
            if sid is not None and sid in self._sessions:
                return self._sessions[sid], False
            new = _Session(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
            self._sessions[new.sid] = new
            return new, True

    def issue_token(self, user: str) -> str:
        now = int(self.clock())
        header = {"alg": "HS256", "typ": "JWT"}
        payload = {"user": {"username": user, "roles": ["admin"]}, "iat": now,
                   "exp": now + TOKEN_LIFETIME_S}  # fmt: skip
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
        signature = hmac.new(self._secret, signing.encode(), hashlib.sha256).digest()
        return f"{signing}.{_b64(signature)}"

    def token_valid(self, token: str) -> bool:
        parts = token.split(".")
        if len(parts) != 3:
            return False
        expected = hmac.new(self._secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256)
        try:
            if not hmac.compare_digest(_unb64(parts[2]), expected.digest()):
                return False
            payload = json.loads(_unb64(parts[1]))
        except ValueError:
            return False
        return isinstance(payload, dict) and float(payload.get("exp", 0)) > self.clock()

    # ---------------------------------------------------------------- documents

    def document(self, sub: Subscriber) -> dict[str, Any]:
        """What Mongoose returns: the schema's fields plus ``_id`` and ``__v``."""
        with self._lock:
            oid = self._object_ids.setdefault(sub.imsi, secrets.token_hex(12))
        return {"_id": oid, **sub.to_open5gs(), "__v": 0}

    def forget(self, imsi: str) -> None:
        with self._lock:
            self._object_ids.pop(imsi, None)

    # ---------------------------------------------------------------- /ue-info

    def ue_info(self, page: int, page_size: int) -> dict[str, Any]:
        no_paging = page == NO_PAGING
        if no_paging:
            page, page_size = 0, 0
        elif page_size == 0 or page_size > UE_INFO_PAGE_SIZE_MAX:
            page_size = UE_INFO_PAGE_SIZE_MAX
        ues = self.state.ues()
        chosen = ues if no_paging else ues[page * page_size : (page + 1) * page_size]
        items = [self._ue_item(ue) for ue in chosen]
        pager: dict[str, Any] = {"page": page, "page_size": page_size, "count": len(items)}
        if not no_paging:
            if page > 0:
                pager["prev"] = f"/ue-info?page={page - 1}"
            if len(ues) > (page + 1) * page_size:
                pager["next"] = f"/ue-info?page={page + 1}"
        return {"items": items, "pager": pager}

    def _ue_item(self, ue: UeContext) -> dict[str, Any]:
        with self._lock:
            enb_id = self._enb_ids.setdefault(ue.ran, len(self._enb_ids) + 1)
            ue_id = self._ue_ids.setdefault(ue.imsi, len(self._ue_ids) + 1)
        sub = self.state.subscriber(ue.imsi)
        doc = sub.to_open5gs() if sub is not None else {}
        ambr = doc.get("ambr", {})
        default = next((b for b in ue.bearers if b.default), None)
        return {
            "supi": ue.imsi,
            "domain": "EPS",
            "rat": "E-UTRA",
            "cm_state": "connected",
            "enb": {"mme_ue_ngap_id": ue_id, "enb_id": enb_id, "cell_id": (enb_id << 8) | 1},
            "location": {
                "tai": {"plmn": ue.plmn, "tac_hex": "0001", "tac": 1},
                "timestamp": int(ue.attached_wall * 1_000_000),
            },
            "ambr": {"downlink": _bps(ambr.get("downlink")), "uplink": _bps(ambr.get("uplink"))},
            "pdn": [{
                "apn": sub.apn if sub is not None else "",
                "qos_flows": [{"ebi": b.ebi} for b in ue.bearers],
                "qci": default.qci if default is not None else (sub.qci if sub else 0),
                "ebi": min((b.ebi for b in ue.bearers), default=0),
                "bearer_count": len(ue.bearers),
                "pdu_state": "active" if ue.bearers else "unknown",
            }],
            "pdn_count": 1,
            "x_emulated": {
                "ran": ue.ran,
                "address": ue.address,
                "roaming": ue.roaming,
                "bearers": [
                    {"ebi": b.ebi, "qci": b.qci, "arp": b.arp.to_dict(),
                     "gbr_kbps": b.gbr_kbps, "default": b.default}
                    for b in ue.bearers
                ],
            },
        }  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from exc


# --------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "Open5GS-emulated"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the driver keeps the transcript."""

    @property
    def api(self) -> Open5gsApi:
        return self.server.api

    def reply(self, status: int, body: Any = None, *, content_type: str = "application/json",
              headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        if body is None:
            data = b""
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        self.send_response(status)
        if data or status != 204:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def guarded(self, handle: Callable[[], None]) -> None:
        """A failure in a handler is a 500 with the error, as Express answers it, rather
        than a dropped connection; the traceback goes to the process's output."""
        try:
            handle()
        except Exception as exc:
            traceback.print_exc()
            with contextlib.suppress(OSError):
                self.reply(500, f"Internal Server Error: {exc}", content_type="text/plain")

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > BODY_MAX:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""


class _WebUiHandler(_Handler):
    """The WebUI's Express routes under ``/api``."""

    def do_GET(self) -> None:
        self.guarded(self.route)

    def do_POST(self) -> None:
        self.guarded(self.route)

    def do_PUT(self) -> None:
        self.guarded(self.route)

    def do_PATCH(self) -> None:
        self.guarded(self.route)

    def do_DELETE(self) -> None:
        self.guarded(self.route)

    def _cookie_sid(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and value:
                return unquote(value)
        return None

    def route(self) -> None:
        path = urlsplit(self.path).path
        try:
            raw = self.read_body()
        except ValueError:
            self.reply(413, {"message": "request entity too large"})
            return
        body = self._parse(raw)
        session, new = self.api.session(self._cookie_sid())
        cookie = {"Set-Cookie": f"{COOKIE}={session.sid}; Path=/; HttpOnly"} if new else {}
        if self.command != "GET":
            # lusca csrf: every state-changing request, before any route [src: index.js]
            given = self.headers.get("X-CSRF-TOKEN")
            if given is None and isinstance(body, dict):
                given = body.get("_csrf")
            if not isinstance(given, str) or not hmac.compare_digest(given, session.csrf):
                self.reply(403, "CSRF token mismatch" if given else "CSRF token missing",
                           content_type="text/plain", headers=cookie)  # fmt: skip
                return
        if path == "/api/auth/csrf" and self.command == "GET":
            self.reply(200, {"csrfToken": session.csrf}, headers=cookie)
        elif path == "/api/auth/session" and self.command == "GET":
            out: dict[str, Any] = {"clientMaxAge": CLIENT_MAX_AGE_MS, "csrfToken": session.csrf}
            if session.user is not None:
                out["user"] = {"username": session.user, "roles": ["admin"]}
                out["authToken"] = self.api.issue_token(session.user)
            self.reply(200, out, headers=cookie)
        elif path == "/api/auth/login" and self.command == "POST":
            self._login(session, body, cookie)
        elif path == "/api/auth/logout" and self.command == "POST":
            session.user = None
            self.reply(302, None, headers={**cookie, "Location": "/"})
        elif path.startswith(DB_PREFIX):
            self._db(path[len(DB_PREFIX) :], body, cookie)
        else:
            self.reply(404, "Not Found", content_type="text/plain", headers=cookie)

    def _parse(self, raw: bytes) -> Any:
        if not raw:
            return None
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        text = raw.decode("utf-8", errors="replace")
        if kind == "application/x-www-form-urlencoded":
            return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}
        try:
            return json.loads(text)
        except ValueError:
            return text

    def _login(self, session: _Session, body: Any, cookie: Mapping[str, str]) -> None:
        """passport-local: the account's name and password, then a redirect to ``/``."""
        fields = body if isinstance(body, dict) else {}
        user, password = fields.get("username"), fields.get("password")
        if (
            isinstance(user, str)
            and isinstance(password, str)
            and hmac.compare_digest(user.encode(), self.api.username.encode())
            and hmac.compare_digest(password.encode(), self.api.password.encode())
        ):
            session.user = user
            self.reply(302, None, headers={**cookie, "Location": "/"})
        else:
            self.reply(401, "Unauthorized", content_type="text/plain", headers=cookie)

    def _db(self, rest: str, body: Any, cookie: Mapping[str, str]) -> None:
        auth = self.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not self.api.token_valid(token.strip()):
            self.reply(401, "Unauthorized", content_type="text/plain", headers=cookie)
            return
        model, _, ident = rest.partition("/")
        if model != "Subscriber" or "/" in ident:
            self.reply(404, "Not Found", content_type="text/plain", headers=cookie)
            return
        imsi = unquote(ident) if ident else None
        method = self.command
        if imsi is None and method == "GET":
            docs = [self.api.document(s) for s in self.api.state.subscribers()]
            self.reply(200, docs, headers=cookie)
        elif imsi is None and method == "POST":
            self._create(body, cookie)
        elif imsi is None:
            self.reply(405, "Method Not Allowed", content_type="text/plain", headers=cookie)
        else:
            self._one(method, imsi, body, cookie)

    def _validate(self, body: Any, cookie: Mapping[str, str]) -> Subscriber | None:
        """The schema's check (a Mongoose ValidationError as express-restify-mongoose
        reports it: 400 with the error's name and message)."""
        if not isinstance(body, dict):
            self.reply(400, {"name": "ValidationError", "message": "a JSON document is required"},
                       headers=cookie)  # fmt: skip
            return None
        doc = {k: v for k, v in body.items() if k not in ("_id", "__v", "_csrf")}
        try:
            return Subscriber.from_open5gs(doc)
        except ValueError as exc:
            self.reply(400, {"name": "ValidationError", "message": str(exc)}, headers=cookie)
            return None

    def _create(self, body: Any, cookie: Mapping[str, str]) -> None:
        sub = self._validate(body, cookie)
        if sub is None:
            return
        if self.api.state.subscriber(sub.imsi) is not None:
            message = (f"E11000 duplicate key error collection: open5gs.subscribers index: "
                       f'imsi_1 dup key: {{ imsi: "{sub.imsi}" }}')  # fmt: skip
            self.reply(400, {"name": "MongoError", "code": 11000, "message": message},
                       headers=cookie)  # fmt: skip
            return
        self.api.state.put_subscriber(sub)
        self.reply(201, self.api.document(sub), headers=cookie)

    def _one(self, method: str, imsi: str, body: Any, cookie: Mapping[str, str]) -> None:
        current = self.api.state.subscriber(imsi)
        if current is None:
            self.reply(404, "Not Found", content_type="text/plain", headers=cookie)
            return
        if method == "GET":
            self.reply(200, self.api.document(current), headers=cookie)
        elif method == "DELETE":
            self.api.state.delete_subscriber(imsi)
            self.api.forget(imsi)
            self.reply(204, None, headers=cookie)
        elif method in ("PUT", "PATCH"):
            if isinstance(body, dict) and method == "PATCH":
                body = {**current.to_open5gs(), **body}
            if isinstance(body, dict):
                body = {**body, "imsi": body.get("imsi", imsi)}
                if body["imsi"] != imsi:
                    self.reply(400, {"name": "ValidationError", "message":
                                     f"imsi {body['imsi']!r} does not match the URL's {imsi!r}"},
                               headers=cookie)  # fmt: skip
                    return
            sub = self._validate(body, cookie)
            if sub is None:
                return
            self.api.state.put_subscriber(sub)
            self.reply(200, self.api.document(sub), headers=cookie)
        else:
            self.reply(405, "Method Not Allowed", content_type="text/plain", headers=cookie)


class _MetricsHandler(_Handler):
    """The NF's metrics HTTP server (MicroHTTPD in Open5GS): GET only."""

    def do_GET(self) -> None:
        self.guarded(self.get)

    def get(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/":
            self.reply(200, "OK\n", content_type="text/plain")
        elif parts.path == "/metrics":
            text = render_metrics(metric_families(self.api.state))
            self.reply(200, text, content_type=METRICS_CONTENT_TYPE)
        elif parts.path == "/ue-info":
            query = parse_qs(parts.query)
            page = _query_size(query, "page", 0)
            page_size = _query_size(query, "page_size", UE_INFO_PAGE_SIZE_MAX)
            self.reply(200, self.api.ue_info(page, page_size),
                       headers={"Access-Control-Allow-Origin": "*"})  # fmt: skip
        else:
            self.reply(404, "Not Found\n", content_type="text/plain")

    def _invalid(self) -> None:
        self.read_body()
        self.reply(400, "Invalid HTTP Method\n", content_type="text/plain")

    do_POST = do_PUT = do_PATCH = do_DELETE = _invalid


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve both surfaces over an empty core until SIGTERM/SIGINT; write the port file
    (``{"pid", "webui_url", "metrics_url"}``) once serving."""
    parser = argparse.ArgumentParser(prog="python -m drivers.core.open5gs_api",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--port-file", required=True, help="JSON written once serving")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--webui-port", type=int, default=0)
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--name", default="open5gs")
    parser.add_argument("--plmn", default="00101")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="1423")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    api = Open5gsApi(CoreState(args.name, args.plmn), args.host, args.webui_port,
                     args.metrics_port, args.username, args.password)  # fmt: skip
    api.start()
    try:
        write_json_atomic(args.port_file, {"pid": os.getpid(), "webui_url": api.webui_url,
                                           "metrics_url": api.metrics_url})  # fmt: skip
        while not stop.wait(0.5):
            pass
    finally:
        api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
