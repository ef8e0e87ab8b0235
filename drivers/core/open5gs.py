"""The Open5GS core driver (``kind: core, driver: open5gs``): subscribers through the WebUI's
REST API, UEs and counters from the NFs' metrics servers, faults through the lifecycle of the
core's components.

Lab settings::

    webui: http://10.0.0.5:9999          # the WebUI (a real core), or `emulate:` below
    username: admin                      # the WebUI account (Open5GS's default admin/1423)
    password: "1423"
    metrics: {mme: http://10.0.0.5:9090, smf: http://10.0.0.5:9091}  # or one URL (the MME's)
    components:                          # see drivers.core.control.HostControl
      mme: {systemd: open5gs-mmed}
      upf: {process: open5gs-upfd, command: [open5gs-upfd], isolate: [{proto: udp, port: 2152}]}
    subscribers: [ ...lab-file form (drivers.core.subscriber)... ]
    restore_on_exit: true                # safe state restarts what this run stopped or killed
    timeout_s: 5                         # per HTTP exchange
    emulate: {plmn: "00101", ...}        # instead of webui/metrics/components: the emulated
                                         # core (drivers.core.emulator, keys EMULATE_KEYS)

``open()`` logs in (spec section 6.1 [src]: ``GET /api/auth/csrf``, ``POST /api/auth/login``
with the CSRF token, ``GET /api/auth/session`` for the ``authToken`` JWT, then ``Authorization:
Bearer`` and ``X-CSRF-TOKEN`` on every REST call; a WebUI too old to hand out an ``authToken``
is used with its session cookie alone) and upserts every subscriber of the lab (GET by IMSI,
then POST or PUT; one already equal is left alone), emitting ``core.subscriber`` per record and
``core.opened`` with the summary. Subscribers stay provisioned at close (the next run finds
them; remove them with the ``remove_subscriber`` action).

Timeline actions (:class:`drivers.base.Core`): ``provision {subscriber}``,
``remove_subscriber {imsi}``, ``stop | kill | restart | isolate | restore {component}``
(no component: all), ``bearer_create {imsi, qci, gbr_kbps, arp}`` / ``bearer_delete {imsi,
ebi}``. Open5GS has no REST API for dedicated bearers: they come from the subscriber's PCC
rules at attach, or from an MC server's Rx (N5) request to the PCRF (PCF), so on a real core
these two actions fail with that explanation; the emulated core takes them on its own socket.

Every HTTP exchange goes to ``run_dir/transcripts/<device>.http.log`` (time, method, URL,
status, duration, short bodies) with the password, tokens and subscriber keys (K, OP, OPc)
replaced by ``***``.

The safe state always lifts the isolation of components this run isolated (an iptables rule
left behind would break the lab for every later run, silently), and with ``restore_on_exit``
restarts the components this run stopped or killed, since a real lab expects its core back
after a run. Both report in ``core.safe_state``.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import math
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from drivers.base import Core, DeviceContext
from drivers.core.control import ComponentControl, HostControl, parse_components
from drivers.core.subscriber import Subscriber
from drivers.errors import DriverError

__all__ = ["Open5gsCore", "Sample", "aggregate", "parse_metrics_text"]

SETTINGS = frozenset({"webui", "username", "password", "metrics", "components", "subscribers",
                      "emulate", "timeout_s", "restore_on_exit"})  # fmt: skip
DEFAULT_TIMEOUT_S = 5.0
UE_INFO_PAGE_SIZE = 100  # MME_UE_INFO_PAGE_SIZE_DEFAULT, the most one page holds [src: ue-info.c]
UE_INFO_PAGES_MAX = 10_000
BODY_LOG_MAX = 300
REDACTED = "***"
SECRET_KEYS = frozenset({"password", "authToken", "csrfToken", "_csrf", "k", "op", "opc"})
"""Never written to the transcript: credentials, and the subscribers' secret keys."""
COMPONENT_ACTIONS = frozenset({"stop", "kill", "restart", "isolate", "restore"})
BEARER_ACTIONS = frozenset({"bearer_create", "bearer_delete"})

# --------------------------------------------------------------------------------------------
# Prometheus text format
# --------------------------------------------------------------------------------------------


class Sample(NamedTuple):
    """One sample line: ``name{labels} value [timestamp_ms]``."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None = None


_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def parse_metrics_text(text: str) -> list[Sample]:
    """Samples of the Prometheus text exposition format 0.0.4, in order; comments (``# HELP``,
    ``# TYPE``) and blank lines skipped. Label values are unescaped (``\\\\``, ``\\"``,
    ``\\n``); values may be ``NaN``, ``+Inf``, ``-Inf``. Raises ValueError naming the line."""
    out: list[Sample] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            out.append(_sample(stripped))
        except ValueError as exc:
            raise ValueError(f"metrics line {number}: {exc}: {line!r}") from None
    return out


def _sample(line: str) -> Sample:
    match = _METRIC_NAME.match(line)
    if match is None:
        raise ValueError("no metric name")
    name, pos = match.group(), match.end()
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        pos = _labels(line, pos + 1, labels)
    rest = line[pos:].split()
    if not rest or len(rest) > 2 or (pos < len(line) and not line[pos].isspace()):
        raise ValueError("expected a value (and an optional timestamp) after the name")
    value = float(rest[0])  # Python reads NaN, +Inf, -Inf as the format writes them
    timestamp = int(rest[1]) if len(rest) == 2 else None
    return Sample(name, labels, value, timestamp)


def _labels(line: str, pos: int, labels: dict[str, str]) -> int:
    """Parse ``name="value",...}`` from ``pos``; returns the position after ``}``."""
    while True:
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos < len(line) and line[pos] == "}":
            return pos + 1
        match = _LABEL_NAME.match(line, pos)
        if match is None:
            raise ValueError(f"bad label name at column {pos + 1}")
        key, pos = match.group(), match.end()
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if line[pos : pos + 2] != '="':
            raise ValueError(f'expected =" after label {key}')
        pos += 2
        chars: list[str] = []
        while True:
            if pos >= len(line):
                raise ValueError(f"unterminated value of label {key}")
            ch = line[pos]
            if ch == "\\" and pos + 1 < len(line):
                chars.append(_ESCAPES.get(line[pos + 1], "\\" + line[pos + 1]))
                pos += 2
            elif ch == '"':
                pos += 1
                break
            else:
                chars.append(ch)
                pos += 1
        if key in labels:
            raise ValueError(f"label {key} given twice")
        labels[key] = "".join(chars)
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos < len(line) and line[pos] == ",":
            pos += 1
        elif pos < len(line) and line[pos] == "}":
            return pos + 1
        else:
            raise ValueError(f"expected , or }} after label {key}")


def aggregate(samples: Sequence[Sample]) -> dict[str, float]:
    """name -> value summed over its label sets; a name with samples labelled ``total`` (as
    Open5GS's ``enb{connected="total"}`` next to one sample per eNB [src: src/mme/metrics.c])
    counts those only, so the total is not counted twice. NaN samples are left out."""
    by_name: dict[str, list[Sample]] = {}
    for sample in samples:
        if not math.isnan(sample.value):
            by_name.setdefault(sample.name, []).append(sample)
    out: dict[str, float] = {}
    for name, group in by_name.items():
        totals = [s for s in group if "total" in s.labels.values()]
        out[name] = sum(s.value for s in (totals or group))
    return out


# --------------------------------------------------------------------------------------------
# HTTP with a transcript
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self, device: str, what: str) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise DriverError(device, f"{what}: not JSON ({exc}): "
                              f"{self.body[:120]!r}") from None  # fmt: skip


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The login's 302 is its answer: it must be seen, not followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def redact(text: str) -> str:
    """A request or response body for the transcript, secrets replaced (JSON or a form)."""
    try:
        return json.dumps(_redact(json.loads(text)), separators=(",", ":"))
    except ValueError:
        pass
    if "=" in text and " " not in text.strip():
        pairs = parse_qsl(text, keep_blank_values=True)
        if pairs:
            return "&".join(f"{k}={REDACTED if k in SECRET_KEYS else v}" for k, v in pairs)
    return text


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if k in SECRET_KEYS and v is not None else _redact(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


class HttpClient:
    """urllib with a cookie jar (the WebUI's session), no redirects, a timeout, and every
    exchange appended to the transcript file."""

    def __init__(self, device: str, timeout_s: float, transcript: Path) -> None:
        self.device = device
        self.timeout_s = timeout_s
        self.transcript_path = transcript
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )
        self.exchanges = 0
        self.failures = 0
        self.last: list[str] = []
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """One exchange; an HTTP error status is a :class:`Response`, a transport failure a
        :class:`DriverError`."""
        req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        start, wall = time.monotonic(), time.time()
        try:
            with self.opener.open(req, timeout=self.timeout_s) as resp:
                answer = Response(resp.status, resp.read(), dict(resp.headers.items()))
        except urllib.error.HTTPError as exc:
            with contextlib.closing(exc):
                answer = Response(exc.code, exc.read(), dict(exc.headers.items()))
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            self._log(wall, start, method, url, body, None, f"transport error: {reason}")
            self.failures += 1
            raise DriverError(self.device, f"{method} {url}: {reason}", self.last) from None
        self._log(wall, start, method, url, body, answer.status, answer.body)
        return answer

    def _log(self, wall: float, start: float, method: str, url: str, body: bytes | None,
             status: int | None, answer: bytes | str) -> None:  # fmt: skip
        ms = (time.monotonic() - start) * 1000
        sent = _short(body) if body else ""
        got = answer if isinstance(answer, str) else _short(answer)
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"
        )
        line = f"{stamp} {method} {url} -> {status if status is not None else 'ERR'} ({ms:.1f} ms)"
        if sent:
            line += f" >> {sent}"
        if got:
            line += f" << {got}"
        with self._lock:
            self.exchanges += 1
            self.last = [*self.last[-4:], line[25:200]]
            try:
                if self._file is None:
                    self.transcript_path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = self.transcript_path.open("a", encoding="utf-8")
                self._file.write(line + "\n")
                self._file.flush()
            except OSError:
                pass  # a full disk must not turn into a core fault

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None


def _short(data: bytes) -> str:
    text = redact(data.decode("utf-8", errors="replace")).replace("\n", "\\n")
    return text if len(text) <= BODY_LOG_MAX else text[:BODY_LOG_MAX] + "..."


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


def _url(device: str, where: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise DriverError(device, f"{where} must be an http:// URL such as "
                          f"http://10.0.0.5:9999, got {raw!r}")  # fmt: skip
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DriverError(device, f"{where} must be an http:// URL, got {raw!r}")
    return raw.strip().rstrip("/")


class Open5gsCore(Core):
    """An Open5GS core, real or emulated. See the module docstring for settings and actions."""

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        s = self.settings
        unknown = sorted(set(s) - SETTINGS)
        if unknown:
            raise DriverError(name, f"settings: unknown {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(SETTINGS))})")  # fmt: skip
        self.emulate: Mapping[str, Any] | None = None
        self.webui = ""
        self.metrics_urls: dict[str, str] = {}
        if "emulate" in s:
            given = sorted(k for k in ("webui", "metrics", "components") if k in s)
            if given:
                raise DriverError(name, f"settings: give emulate or {', '.join(given)}, not "
                                  "both (the emulated core brings its own URLs and component "
                                  "'core')")  # fmt: skip
            if not isinstance(s["emulate"], Mapping):
                raise DriverError(name, "settings.emulate must be a mapping such as "
                                  '{plmn: "00101"}')  # fmt: skip
            self.emulate = s["emulate"]
        else:
            if "webui" not in s:
                raise DriverError(name, "settings.webui (the WebUI's URL, e.g. "
                                  "http://10.0.0.5:9999) is required unless settings.emulate "
                                  "is given")  # fmt: skip
            self.webui = _url(name, "settings.webui", s["webui"])
            self.metrics_urls = self._metrics_setting(s.get("metrics"))
        self.username = self._text("username", s.get("username", "admin"))
        self.password = self._text("password", s.get("password", "1423"))
        timeout = s.get("timeout_s", DEFAULT_TIMEOUT_S)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (math.isfinite(timeout) and timeout > 0)
        ):
            raise DriverError(name, f"settings.timeout_s must be a positive number, "
                              f"got {timeout!r}")  # fmt: skip
        self.timeout_s = float(timeout)
        restore = s.get("restore_on_exit", True)
        if not isinstance(restore, bool):
            raise DriverError(name, f"settings.restore_on_exit must be true or false, "
                              f"got {restore!r}")  # fmt: skip
        self.restore_on_exit = restore
        self.lab_subscribers = self._subscribers_setting(s.get("subscribers"))
        parse_components(name, s.get("components"))  # checked now; used at open
        self.http = HttpClient(name, self.timeout_s,
                               context.run_dir / "transcripts" / f"{name}.http.log")  # fmt: skip
        self.control: ComponentControl | None = None
        self._emulated: Any = None
        self._token: str | None = None
        self._csrf: str | None = None
        self._logged_in_to = ""
        self._down: set[str] = set()
        self._isolated: set[str] = set()
        self._state_lock = threading.Lock()
        self.provisioned = 0
        self.removed = 0
        self.component_actions = 0

    # ---------------------------------------------------------------- settings

    def _text(self, key: str, raw: Any) -> str:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return str(raw)  # an unquoted password such as 1423 in YAML
        if not isinstance(raw, str) or not raw:
            raise DriverError(self.name, f"settings.{key} must be a non-empty text")
        return raw

    def _metrics_setting(self, raw: Any) -> dict[str, str]:
        if raw is None:
            return {}
        if isinstance(raw, str):
            return {"mme": _url(self.name, "settings.metrics", raw)}
        if not isinstance(raw, Mapping) or not raw:
            raise DriverError(
                self.name,
                "settings.metrics must be a URL (the MME's metrics server) or "
                "{component: URL}, e.g. {mme: http://10.0.0.5:9090}",
            )
        return {str(k): _url(self.name, f"settings.metrics.{k}", v) for k, v in raw.items()}

    def _subscribers_setting(self, raw: Any) -> list[Subscriber]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise DriverError(self.name, "settings.subscribers must be a list of subscribers")
        out: list[Subscriber] = []
        for i, entry in enumerate(raw):
            try:
                sub = Subscriber.from_mapping(entry)
            except ValueError as exc:
                raise DriverError(self.name, f"settings.subscribers[{i}]: {exc}") from None
            if any(other.imsi == sub.imsi for other in out):
                raise DriverError(self.name, f"settings.subscribers[{i}]: IMSI {sub.imsi} is "
                                  "listed twice")  # fmt: skip
            out.append(sub)
        return out

    # ---------------------------------------------------------------- life cycle

    def open(self) -> None:
        """Start the emulated core if asked, log in, provision the lab's subscribers."""
        if self.emulate is not None:
            from drivers.core.emulator import start_emulated_core

            self._emulated = start_emulated_core(self.name, self.settings, self.context,
                                                 ("open5gs",))  # fmt: skip
            self.control = self._emulated.control
        else:
            self.control = HostControl(
                self.name, self.settings.get("components") or {},
                log_dir=self.context.run_dir / "core-components",
                command_timeout_s=max(30.0, self.timeout_s),
            )  # fmt: skip
        self.login()
        results: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
        for sub in self.lab_subscribers:
            results[self.provision(sub)["result"]].append(sub.imsi)
        self.context.emit("core.opened", {
            "driver": "open5gs", "webui": self._webui(), "metrics": self._metrics_urls(),
            "emulated": self._emulated is not None, "auth": "jwt" if self._token else "session",
            "components": self.control.components() if self.control else [], **results,
        })  # fmt: skip

    def close(self) -> None:
        """Stop the emulated core (if this driver started one); release the rest."""
        with contextlib.suppress(Exception):
            if self.control is not None:
                self.control.close()
        with contextlib.suppress(Exception):
            if self._emulated is not None:
                self._emulated.close()
        with contextlib.suppress(Exception):
            self.http.close()

    # ---------------------------------------------------------------- endpoints

    def _webui(self) -> str:
        if self._emulated is not None:
            return str(self._emulated.ready.get("webui_url", "")).rstrip("/")
        return self.webui

    def _metrics_urls(self) -> dict[str, str]:
        """Component -> metrics server URL; the emulated core serves all on one (as ``mme``).
        Read each time: a restarted emulated core serves on new ports."""
        if self._emulated is not None:
            url = self._emulated.ready.get("metrics_url")
            return {"mme": str(url).rstrip("/")} if url else {}
        return dict(self.metrics_urls)

    # ---------------------------------------------------------------- WebUI session

    def login(self) -> None:
        """CSRF token, login with it, then the session's ``authToken`` (spec 6.1 [src])."""
        base = self._webui()
        csrf = self.http.request("GET", f"{base}/api/auth/csrf")
        if csrf.status != 200:
            raise DriverError(self.name, f"GET /api/auth/csrf answered {csrf.status}: is "
                              f"{base} an Open5GS WebUI?", self.http.last)  # fmt: skip
        token = csrf.json(self.name, "GET /api/auth/csrf").get("csrfToken")
        form = urlencode({"username": self.username, "password": self.password,
                          "_csrf": token or ""}).encode()  # fmt: skip
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if token:
            headers["X-CSRF-TOKEN"] = str(token)
        answer = self.http.request("POST", f"{base}/api/auth/login", body=form, headers=headers)
        if answer.status == 401:
            raise DriverError(self.name, f"the WebUI refused the login of {self.username!r} "
                              "(settings.username / settings.password)")  # fmt: skip
        if answer.status not in (200, 302):
            raise DriverError(self.name, f"POST /api/auth/login answered {answer.status}",
                              self.http.last)  # fmt: skip
        session = self.http.request("GET", f"{base}/api/auth/session")
        data = session.json(self.name, "GET /api/auth/session") if session.status == 200 else {}
        if not isinstance(data, dict) or not data.get("user"):
            raise DriverError(self.name, f"the login of {self.username!r} did not take (no user "
                              f"in /api/auth/session, status {session.status})",
                              self.http.last)  # fmt: skip
        self._token = str(data["authToken"]) if data.get("authToken") else None
        self._csrf = str(data.get("csrfToken") or token or "") or None
        self._logged_in_to = base

    def _api(self, method: str, path: str, doc: Any = None) -> Response:
        """A REST call under ``/api/db``; logs in again once when the session has gone (an
        expired token, a restarted WebUI)."""
        if self._logged_in_to != self._webui():
            self.login()
        for attempt in (1, 2):
            headers = {"Accept": "application/json"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            if method != "GET" and self._csrf:
                headers["X-CSRF-TOKEN"] = self._csrf
            body = None
            if doc is not None:
                body = json.dumps(doc).encode()
                headers["Content-Type"] = "application/json"
            answer = self.http.request(method, f"{self._webui()}/api/db/{path}", body=body,
                                       headers=headers)  # fmt: skip
            if answer.status not in (401, 403) or attempt == 2:
                return answer
            self.login()
        raise AssertionError("unreachable")

    def _check(self, answer: Response, what: str, ok: Sequence[int]) -> None:
        if answer.status not in ok:
            detail = answer.body.decode("utf-8", errors="replace")[:200]
            raise DriverError(self.name, f"{what}: the WebUI answered {answer.status}: "
                              f"{redact(detail)}", self.http.last)  # fmt: skip

    # ---------------------------------------------------------------- subscribers

    def subscriber(self, imsi: str) -> Subscriber | None:
        answer = self._api("GET", f"Subscriber/{quote(imsi)}")
        if answer.status == 404:
            return None
        self._check(answer, f"GET subscriber {imsi}", (200,))
        try:
            return Subscriber.from_open5gs(answer.json(self.name, f"subscriber {imsi}"))
        except ValueError as exc:
            raise DriverError(self.name, f"subscriber {imsi}: {exc}") from None

    def provision(self, sub: Subscriber) -> dict[str, Any]:
        """Upsert: ``created``, ``updated`` or ``unchanged`` (already the same record)."""
        current = self.subscriber(sub.imsi)
        wall = time.time()
        if current == sub:
            result = "unchanged"
        elif current is None:
            answer = self._api("POST", "Subscriber", sub.to_open5gs())
            self._check(answer, f"create subscriber {sub.imsi}", (200, 201))
            result = "created"
        else:
            answer = self._api("PUT", f"Subscriber/{quote(sub.imsi)}", sub.to_open5gs())
            self._check(answer, f"update subscriber {sub.imsi}", (200, 204))
            result = "updated"
        self.provisioned += result != "unchanged"
        details = {"imsi": sub.imsi, "result": result, "apn": sub.apn, "qci": sub.qci,
                   "pcc_rules": len(sub.pcc_rules), "wall": wall}  # fmt: skip
        self.context.emit("core.subscriber", details)
        return details

    def remove(self, imsi: str) -> dict[str, Any]:
        wall = time.time()
        answer = self._api("DELETE", f"Subscriber/{quote(imsi)}")
        self._check(answer, f"remove subscriber {imsi}", (200, 204, 404))
        removed = answer.status != 404
        self.removed += removed
        details = {"imsi": imsi, "result": "removed" if removed else "absent", "wall": wall}
        self.context.emit("core.subscriber", details)
        return details

    def subscribers(self) -> list[Mapping[str, Any]]:
        """Every subscriber the WebUI lists, in the lab-file form; a document this driver
        cannot read (features outside :class:`Subscriber`) is listed with its ``error``."""
        answer = self._api("GET", "Subscriber")
        self._check(answer, "list subscribers", (200,))
        docs = answer.json(self.name, "subscriber list")
        if not isinstance(docs, list):
            raise DriverError(self.name, f"subscriber list: expected a JSON array, got "
                              f"{type(docs).__name__}")  # fmt: skip
        out: list[Mapping[str, Any]] = []
        for doc in docs:
            try:
                out.append(Subscriber.from_open5gs(doc).to_mapping())
            except ValueError as exc:
                imsi = doc.get("imsi") if isinstance(doc, dict) else None
                out.append({"imsi": imsi, "error": str(exc)})
        return out

    # ---------------------------------------------------------------- metrics and UEs

    def scrape(self, component: str) -> list[Sample]:
        """The samples of one component's ``/metrics``."""
        urls = self._metrics_urls()
        if component not in urls:
            raise DriverError(self.name, f"no metrics URL for {component!r} (settings.metrics: "
                              f"{', '.join(sorted(urls)) or 'none'})")  # fmt: skip
        answer = self.http.request("GET", f"{urls[component]}/metrics")
        if answer.status != 200:
            raise DriverError(self.name, f"GET {urls[component]}/metrics answered "
                              f"{answer.status}", self.http.last)  # fmt: skip
        try:
            return parse_metrics_text(answer.body.decode("utf-8", errors="replace"))
        except ValueError as exc:
            raise DriverError(self.name, f"{component} metrics: {exc}") from None

    def metrics(self, component: str | None = None) -> dict[str, float]:
        """name -> value (see :func:`aggregate`) of one component, or of all of them summed
        (a name two NFs export, such as ``pfcp_peers_active``, is then their sum)."""
        names = [component] if component is not None else sorted(self._metrics_urls())
        out: dict[str, float] = {}
        for name in names:
            for key, value in aggregate(self.scrape(name)).items():
                out[key] = out.get(key, 0.0) + value
        return out

    def ues(self) -> list[Mapping[str, Any]]:
        """The MME's ``/ue-info``, every page: one dict per UE (the item as Open5GS writes it,
        plus ``imsi`` = its ``supi``)."""
        base = self._metrics_urls().get("mme")
        if base is None:
            raise DriverError(self.name, "ues: give the MME's metrics server "
                              "(settings.metrics.mme), which serves /ue-info")  # fmt: skip
        out: list[Mapping[str, Any]] = []
        page = 0
        while page < UE_INFO_PAGES_MAX:
            url = f"{base}/ue-info?page={page}&page_size={UE_INFO_PAGE_SIZE}"
            answer = self.http.request("GET", url)
            if answer.status != 200:
                raise DriverError(self.name, f"GET {url} answered {answer.status} (an Open5GS "
                                  "older than /ue-info?)", self.http.last)  # fmt: skip
            data = answer.json(self.name, "/ue-info")
            items = data.get("items") if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise DriverError(self.name, f"/ue-info: no items list in {str(data)[:120]}")
            out += [{"imsi": item.get("supi"), **item} for item in items if isinstance(item, dict)]
            pager = data.get("pager") or {}
            if not items or not isinstance(pager, dict) or not pager.get("next"):
                break
            page += 1
        return out

    # ---------------------------------------------------------------- actions

    def perform(self, action: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        if action == "provision":
            self._args(action, args, ("subscriber",), ())
            try:
                sub = Subscriber.from_mapping(args["subscriber"])
            except ValueError as exc:
                raise DriverError(self.name, f"provision: {exc}") from None
            return self.provision(sub)
        if action == "remove_subscriber":
            self._args(action, args, ("imsi",), ())
            return self.remove(str(args["imsi"]))
        if action in BEARER_ACTIONS:
            return self._bearer(action, args)
        if action in COMPONENT_ACTIONS:
            self._args(action, args, (), ("component",))
            component = args.get("component")
            return self.lifecycle(action, None if component is None else str(component))
        return super().perform(action, args)

    def _args(self, action: str, args: Mapping[str, Any], required: Sequence[str],
              optional: Sequence[str]) -> None:  # fmt: skip
        missing = [key for key in required if args.get(key) is None]
        if missing:
            raise DriverError(self.name, f"{action}: give {', '.join(missing)}")
        unknown = sorted(set(args) - set(required) - set(optional))
        if unknown:
            raise DriverError(self.name, f"{action}: unknown {', '.join(unknown)} (known: "
                              f"{', '.join([*required, *optional]) or 'none'})")  # fmt: skip

    def _bearer(self, action: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        if action == "bearer_create":
            self._args(action, args, ("imsi", "qci"), ("gbr_kbps", "arp"))
        else:
            self._args(action, args, ("imsi", "ebi"), ())
        if self._emulated is None:
            raise DriverError(self.name, f"{action}: Open5GS has no REST API for dedicated "
                              "bearers; they come from the subscriber's PCC rules at attach "
                              "(provision them) or from an MC server's Rx/N5 request to the "
                              "PCRF/PCF")  # fmt: skip
        hook = getattr(self._emulated, "bearer", None)
        if not callable(hook):
            raise DriverError(self.name, f"{action}: this emulated core offers no bearer control")
        wall = time.time()
        result = dict(hook(action, dict(args)))
        details = {"action": action, **{k: v for k, v in result.items() if k not in ("re", "ok")},
                   "wall": result.get("wall", wall)}  # fmt: skip
        self.context.emit("core.bearer", details)
        return details

    def lifecycle(self, action: str, component: str | None) -> dict[str, Any]:
        """A component fault (or its end) through the control; tracked for the safe state."""
        control = self.control
        if control is None:
            raise DriverError(self.name, f"{action}: not open")
        known = control.components()
        if component is not None and component not in known:
            listed = ", ".join(known) or "none; see settings.components"
            raise DriverError(
                self.name, f"{action}: unknown component {component!r} (known: {listed})"
            )
        details = dict(control.act(action, component))
        self.component_actions += 1
        touched = known if component is None else [component]
        with self._state_lock:
            if action in ("stop", "kill"):
                self._down.update(touched)
            elif action == "restart":
                self._down.difference_update(touched)
                self._isolated.difference_update(touched)  # a new process is not isolated
            elif action == "isolate":
                self._isolated.update(touched)
            elif action == "restore":
                self._isolated.difference_update(touched)
        details.setdefault("wall", time.time())
        self.context.emit("core.component", {"action": action, "component": component,
                                             **details})  # fmt: skip
        return details

    # ---------------------------------------------------------------- end of run

    def counters(self) -> Mapping[str, Any]:
        """What the driver did, and what the core reports now (errors listed, not raised:
        the core may be down at the end of a fault run)."""
        out: dict[str, Any] = {
            "webui": self._webui(), "emulated": self._emulated is not None,
            "subscribers_provisioned": self.provisioned, "subscribers_removed": self.removed,
            "component_actions": self.component_actions,
            "transcript": str(self.http.transcript_path),
        }  # fmt: skip
        errors: list[str] = []
        per_component: dict[str, dict[str, float]] = {}
        for component in sorted(self._metrics_urls()):
            try:
                per_component[component] = self.metrics(component)
            except DriverError as exc:
                errors.append(str(exc))
        out["metrics"] = per_component
        if self._emulated is not None:
            out["procedures"] = self._emulated.procedures()
        if "mme" in self._metrics_urls():
            try:
                out["ues_attached"] = len(self.ues())
            except DriverError as exc:
                errors.append(str(exc))
        out["http_exchanges"] = self.http.exchanges  # these read-outs included
        out["http_failures"] = self.http.failures
        if errors:
            out["errors"] = errors
        return out

    def safe_state(self) -> None:
        """Lift every isolation this run left; with ``restore_on_exit``, restart what it
        stopped or killed. Reported in ``core.safe_state``; never raises."""
        restored: list[str] = []
        restarted: list[str] = []
        errors: list[str] = []
        try:
            control = self.control
            with self._state_lock:
                isolated, down = sorted(self._isolated), sorted(self._down)
            if control is not None:
                for component in isolated:
                    if component in down:
                        continue  # restarted below, or down anyway
                    try:
                        self.lifecycle("restore", component)
                        restored.append(component)
                    except Exception as exc:
                        errors.append(f"restore {component}: {exc}")
                if self.restore_on_exit:
                    for component in down:
                        try:
                            self.lifecycle("restart", component)
                            restarted.append(component)
                        except Exception as exc:
                            errors.append(f"restart {component}: {exc}")
            if isinstance(control, HostControl):
                for component in control.isolated():  # isolated by any path: still lift it
                    try:
                        control.act("restore", component)
                        restored.append(component)
                    except Exception as exc:
                        errors.append(f"restore {component}: {exc}")
            with self._state_lock:
                left_down = sorted(self._down)
        except Exception as exc:  # the contract: never raise
            errors.append(repr(exc))
            left_down = []
        with contextlib.suppress(Exception):
            self.context.emit("core.safe_state", {
                "restored": restored, "restarted": restarted, "left_down": left_down,
                "restore_on_exit": self.restore_on_exit, "errors": errors,
            })  # fmt: skip
