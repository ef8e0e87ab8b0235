"""Tests of the Open5GS surfaces and driver: the WebUI REST API and metrics server of
:mod:`drivers.core.open5gs_api` as a separate process (``--port-file``), spoken to by a raw
urllib client (auth: 401 without token, 403 without CSRF) and by the driver (login, subscriber
CRUD through the Open5GS schema, transcript redaction, metrics parsed as
``prometheus_client``'s parser reads them); ``/ue-info`` paging over a core with attached UEs;
the component control against fake ``systemctl``/``iptables`` on PATH and a real child process;
the driver's lifecycle actions and safe state. Every process is stopped in a ``finally``."""

from __future__ import annotations

import http.cookiejar
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # in case the package is not installed into the venv
    sys.path.insert(0, str(REPO))

from drivers.base import DeviceContext  # noqa: E402
from drivers.core.control import HostControl  # noqa: E402
from drivers.core.milenage import milenage_res  # noqa: E402
from drivers.core.open5gs import Open5gsCore, aggregate, parse_metrics_text  # noqa: E402
from drivers.core.open5gs_api import Family, Open5gsApi, render_metrics  # noqa: E402
from drivers.core.state import CoreState  # noqa: E402
from drivers.core.subscriber import Subscriber  # noqa: E402
from drivers.errors import DriverError  # noqa: E402
from tests.drivers.support import Processes  # noqa: E402

PASSWORD = "s3cret-pw-77"
K = "465B5CE8B199B49FAA5F0A2EE238A6BC"
OPC = "E8ED289DEBA952E4283B54E88E6183CA"
LAB_SUB: dict[str, Any] = {
    "imsi": "001010000000011", "k": K, "opc": OPC, "apn": "internet", "qci": 9,
    "ipv4": "10.201.0.2", "msisdn": "4915200011",
    "arp": {"priority_level": 8, "pre_emption_capability": False,
            "pre_emption_vulnerability": True},
    "pcc_rules": [{"qci": 65, "gbr_kbps": 64, "mbr_kbps": 128,
                   "arp": {"priority_level": 10, "pre_emption_vulnerability": True}}],
}  # fmt: skip
START_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


class Lab:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.recorded: list[tuple[str, dict[str, Any]]] = []
        self.processes = Processes()
        self.context = DeviceContext(
            run_dir=run_dir,
            name_prefix="tb-o5",
            emit=lambda name, fields: self.recorded.append((name, dict(fields))),
            processes=self.processes,
        )

    def events(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.recorded if event == name]


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def _start_api(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    port_file = tmp_path / f"o5gs-{secrets.token_hex(3)}.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivers.core.open5gs_api", "--port-file", str(port_file),
         "--password", PASSWORD, *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"open5gs_api did not start: {err.decode()[-800:]}")
        time.sleep(0.02)
    return proc, json.loads(port_file.read_text())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[dict[str, Any]]:
    proc, ready = _start_api(tmp_path)
    try:
        assert ready["pid"] == proc.pid
        yield {**ready, "proc": proc}
    finally:
        _stop(proc)


class Raw:
    """A plain urllib client with its own cookie jar, no redirects: the reference client."""

    def __init__(self, base: str) -> None:
        self.base = base

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect()
        )

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
        form: bool = False,
    ) -> tuple[int, Any, dict[str, str]]:  # fmt: skip
        data = None
        hdrs = dict(headers or {})
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                hdrs["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with self.opener.open(req, timeout=10) as resp:
                status, raw, got = resp.status, resp.read(), dict(resp.headers.items())
        except urllib.error.HTTPError as exc:
            status, raw, got = exc.code, exc.read(), dict(exc.headers.items())
            exc.close()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode()
        return status, parsed, got

    def login(self, password: str = PASSWORD) -> tuple[str, str]:
        """(authToken, csrf) after the WebUI's login flow."""
        _, csrf, _ = self.call("GET", "/api/auth/csrf")
        token = csrf["csrfToken"]
        status, _, headers = self.call(
            "POST", "/api/auth/login", {"username": "admin", "password": password,
                                        "_csrf": token}, form=True,
        )  # fmt: skip
        assert status == 302 and headers["Location"] == "/"
        _, session, _ = self.call("GET", "/api/auth/session")
        return session["authToken"], session["csrfToken"]


def _driver(lab: Lab, api: dict[str, Any], **settings: Any) -> Open5gsCore:
    base = {"webui": api["webui_url"], "metrics": {"mme": api["metrics_url"]},
            "password": PASSWORD, "timeout_s": 10}  # fmt: skip
    return Open5gsCore("core1", {**base, **settings}, lab.context)


# --------------------------------------------------------------------------------------------
# WebUI: auth, raw
# --------------------------------------------------------------------------------------------


def test_webui_auth_401_without_token_and_403_without_csrf(api: dict[str, Any]) -> None:
    raw = Raw(api["webui_url"])
    assert raw.call("GET", "/api/db/Subscriber")[0] == 401
    # lusca runs before the routes: a state-changing call without the token is 403 first
    assert raw.call("POST", "/api/db/Subscriber", {"imsi": "1"})[0] == 403
    no_csrf = {"username": "admin", "password": PASSWORD}
    assert raw.call("POST", "/api/auth/login", no_csrf, form=True)[0] == 403
    _, csrf, _ = raw.call("GET", "/api/auth/csrf")
    wrong = {"username": "admin", "password": "1423", "_csrf": csrf["csrfToken"]}
    assert raw.call("POST", "/api/auth/login", wrong, form=True)[0] == 401
    _, session, _ = raw.call("GET", "/api/auth/session")
    assert "user" not in session and "authToken" not in session

    token, csrf_token = raw.login()
    assert token.count(".") == 2  # a JWT: header.payload.signature
    bearer = {"Authorization": f"Bearer {token}"}
    assert raw.call("GET", "/api/db/Subscriber", headers=bearer)[:2] == (200, [])
    doc = Subscriber.from_mapping(LAB_SUB).to_open5gs()
    assert raw.call("POST", "/api/db/Subscriber", doc, headers=bearer)[0] == 403
    with_csrf = {**bearer, "X-CSRF-TOKEN": csrf_token}
    assert (
        raw.call("POST", "/api/db/Subscriber", doc, headers={"X-CSRF-TOKEN": csrf_token})[0] == 401
    )
    status, created, _ = raw.call("POST", "/api/db/Subscriber", doc, headers=with_csrf)
    assert status == 201 and created["imsi"] == LAB_SUB["imsi"] and len(created["_id"]) == 24
    assert raw.call("POST", "/api/db/Subscriber", doc, headers=with_csrf)[1]["code"] == 11000
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert (
        raw.call("GET", "/api/db/Subscriber", headers={"Authorization": f"Bearer {tampered}"})[0]
        == 401
    )
    # another client's session has another CSRF token: this one's is refused there
    other = Raw(api["webui_url"])
    other_token, _ = other.login()
    refused = {"Authorization": f"Bearer {other_token}", "X-CSRF-TOKEN": csrf_token}
    assert other.call("DELETE", f"/api/db/Subscriber/{LAB_SUB['imsi']}", headers=refused)[0] == 403
    bad = {**doc, "security": {"k": "xyz"}}
    status, error, _ = raw.call("PUT", f"/api/db/Subscriber/{LAB_SUB['imsi']}", bad,
                                headers=with_csrf)  # fmt: skip
    assert status == 400 and error["name"] == "ValidationError" and "security.k" in error["message"]
    assert raw.call("DELETE", f"/api/db/Subscriber/{LAB_SUB['imsi']}", headers=with_csrf)[0] == 204
    assert raw.call("GET", f"/api/db/Subscriber/{LAB_SUB['imsi']}", headers=bearer)[0] == 404


# --------------------------------------------------------------------------------------------
# The driver against the process
# --------------------------------------------------------------------------------------------


def test_driver_provisions_and_round_trips_the_open5gs_schema(
    lab: Lab, api: dict[str, Any]
) -> None:
    core = _driver(lab, api, subscribers=[LAB_SUB])
    try:
        core.open()
        opened = lab.events("core.opened")[0]
        assert opened["created"] == [LAB_SUB["imsi"]] and opened["auth"] == "jwt"
        expected = Subscriber.from_mapping(LAB_SUB)
        assert core.subscriber(LAB_SUB["imsi"]) == expected
        assert core.subscribers() == [expected.to_mapping()]

        # the stored document, read by a client of its own, is in the Open5GS schema (spec 6.1)
        raw = Raw(api["webui_url"])
        token, _ = raw.login()
        status, doc, _ = raw.call("GET", f"/api/db/Subscriber/{LAB_SUB['imsi']}",
                                  headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert status == 200 and doc["schema_version"] == 1 and doc["__v"] == 0
        assert doc["security"]["k"] == K.lower() and doc["security"]["opc"] == OPC.lower()
        assert doc["security"]["amf"] == "8000" and doc["msisdn"] == ["4915200011"]
        session = doc["slice"][0]["session"][0]
        assert doc["slice"][0]["sst"] == 1 and doc["slice"][0]["default_indicator"] is True
        assert session["name"] == "internet" and session["ue"]["ipv4"] == "10.201.0.2"
        # ARP flags in the 5GC convention, 1 = disabled, 2 = enabled [spec 6.1]
        arp = {"priority_level": 8, "pre_emption_capability": 1, "pre_emption_vulnerability": 2}
        assert session["qos"] == {"index": 9, "arp": arp}
        rule = session["pcc_rule"][0]["qos"]
        assert rule["index"] == 65 and rule["arp"]["priority_level"] == 10
        assert rule["gbr"]["downlink"] == {"value": 64, "unit": 1}  # unit 1 = Kbps
        assert rule["mbr"]["uplink"] == {"value": 128, "unit": 1}

        # upsert: the same record is left alone, a changed one replaced
        assert core.perform("provision", {"subscriber": LAB_SUB})["result"] == "unchanged"
        changed = {**LAB_SUB, "qci": 7, "arp": {"priority_level": 2,
                                                "pre_emption_capability": True}}  # fmt: skip
        done = core.perform("provision", {"subscriber": changed})
        assert done["result"] == "updated" and isinstance(done["wall"], float)
        got = core.subscriber(LAB_SUB["imsi"])
        assert got is not None and got.qci == 7 and got.arp.pre_emption_capability is True
        second = {**LAB_SUB, "imsi": "001010000000012", "pcc_rules": []}
        assert core.perform("provision", {"subscriber": second})["result"] == "created"
        assert [s["imsi"] for s in core.subscribers()] == [LAB_SUB["imsi"], second["imsi"]]

        assert core.perform("remove_subscriber", {"imsi": second["imsi"]})["result"] == "removed"
        assert core.perform("remove_subscriber", {"imsi": second["imsi"]})["result"] == "absent"
        assert core.subscriber(second["imsi"]) is None
        assert [e["result"] for e in lab.events("core.subscriber")] == [
            "created", "unchanged", "updated", "created", "removed", "absent",
        ]  # fmt: skip

        with pytest.raises(DriverError, match=r"subscriber\.k"):
            core.perform("provision", {"subscriber": {**LAB_SUB, "k": "00"}})
        with pytest.raises(DriverError, match="give imsi"):
            core.perform("remove_subscriber", {})
        with pytest.raises(DriverError, match="no REST API for dedicated bearers"):
            core.perform("bearer_create", {"imsi": LAB_SUB["imsi"], "qci": 65})
    finally:
        core.safe_state()
        core.close()


def test_transcript_has_every_exchange_and_no_secret(lab: Lab, api: dict[str, Any]) -> None:
    core = _driver(lab, api, subscribers=[LAB_SUB])
    try:
        core.open()
        core.subscribers()
    finally:
        core.close()
    text = (lab.run_dir / "transcripts" / "core1.http.log").read_text()
    lines = text.splitlines()
    assert len(lines) == core.http.exchanges
    assert any(" POST " in ln and "/api/auth/login -> 302" in ln for ln in lines)
    assert any(" GET " in ln and "/api/db/Subscriber/001010000000011 -> 404" in ln for ln in lines)
    assert any(" POST " in ln and "/api/db/Subscriber -> 201" in ln for ln in lines)
    assert "password=***" in text and '"authToken":"***"' in text
    for secret in (PASSWORD, K, K.lower(), OPC.lower(), "Bearer"):
        assert secret not in text


def test_wrong_password_and_unreachable_webui_fail_clearly(lab: Lab, api: dict[str, Any]) -> None:
    core = _driver(lab, api, password="nope")
    with pytest.raises(DriverError, match=r"refused the login of 'admin' \(settings\.username"):
        core.open()
    core.close()
    dead = Open5gsCore("core2", {"webui": "http://127.0.0.1:9", "timeout_s": 2}, lab.context)
    with pytest.raises(DriverError, match=r"core2: GET http://127\.0\.0\.1:9/api/auth/csrf"):
        dead.open()
    dead.safe_state()
    dead.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"webui": "http://h:1", "colour": 1}, r"settings: unknown colour"),
        ({}, r"settings\.webui .* is required"),
        ({"webui": "ftp://h"}, r"settings\.webui must be an http:// URL"),
        ({"webui": "http://h:1", "emulate": {}, }, r"give emulate or webui, not both"),
        ({"emulate": "yes"}, r"settings\.emulate must be a mapping"),
        ({"webui": "http://h:1", "timeout_s": 0}, r"settings\.timeout_s must be a positive"),
        ({"webui": "http://h:1", "restore_on_exit": "yes"}, r"restore_on_exit must be true"),
        ({"webui": "http://h:1", "metrics": {"mme": "h:9090"}}, r"settings\.metrics\.mme"),
        ({"webui": "http://h:1", "subscribers": [{**LAB_SUB, "qci": 0}]},
         r"settings\.subscribers\[0\]: subscriber\.qci"),
        ({"webui": "http://h:1", "subscribers": [LAB_SUB, LAB_SUB]},
         r"subscribers\[1\]: IMSI 001010000000011 is listed twice"),
        ({"webui": "http://h:1", "components": {"mme": {"systemd": "a", "process": "b"}}},
         r"settings\.components\.mme: give exactly one of systemd"),
        ({"webui": "http://h:1", "components": {"upf": {"process": "u", "isolate": [
            {"proto": "icmp", "port": 1}]}}}, r"components\.upf\.isolate\[0\]\.proto"),
        ({"webui": "http://h:1", "components": {"mme": {"systemd": "a", "command": ["x"]}}},
         r"command only applies to process components"),
    ],
)  # fmt: skip
def test_settings_are_checked_with_the_field_named(
    lab: Lab, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(DriverError, match=message):
        Open5gsCore("core1", settings, lab.context)


# --------------------------------------------------------------------------------------------
# Metrics: the driver's parser against prometheus_client's
# --------------------------------------------------------------------------------------------


def _reference(text: str) -> list[tuple[str, dict[str, str], float, float | None]]:
    """The samples as prometheus_client reads them. Its parser renames the samples of a
    counter to the OpenMetrics ``<name>_total``; the wire name (Open5GS's, without the suffix)
    is put back when that is what the text says, so the two lists compare name for name."""
    wire = {line.split("{")[0].split()[0] for line in text.splitlines() if line[:1].isalpha()}
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = s.name
            if family.type == "counter" and name == f"{family.name}_total" and name not in wire:
                name = family.name
            ts = None if s.timestamp is None else float(s.timestamp)
            out.append((name, dict(s.labels), s.value, ts))
    return out


def _same(mine: list[Any], reference: list[Any]) -> None:
    assert len(mine) == len(reference)
    for (name, labels, value, ts_ms), (r_name, r_labels, r_value, r_ts) in zip(
        mine, reference, strict=True
    ):
        assert (name, labels) == (r_name, r_labels)
        assert (math.isnan(value) and math.isnan(r_value)) or value == r_value
        assert (ts_ms is None and r_ts is None) or (ts_ms is not None and ts_ms / 1000 == r_ts)


TRICKY = """# HELP enb Status of eNBs
# TYPE enb gauge
enb{connected="total"} 2
enb{connected="10.0.0.7"} 1
enb{connected="cell \\"north\\"\\\\a\\nb",  zone="z1",} 1
# a free comment
ues_active 3 1700000000123
# TYPE weird gauge
weird{a="x"} NaN
weird{a="y"} +Inf
weird{a="z"} -Inf
weird{a="w"} -1.5e-3
# TYPE lat histogram
lat_bucket{le="0.1"} 4
lat_bucket{le="+Inf"} 9
lat_sum 3.25
lat_count 9
"""


def test_metrics_parser_agrees_with_prometheus_client() -> None:
    _same(parse_metrics_text(TRICKY), _reference(TRICKY))
    tricky_labels = {"connected": 'a "quoted" \\ back\nslash', "x": "é"}
    samples = (({"connected": "total"}, 2.0), (tricky_labels, 1.0))
    text = render_metrics([Family("enb", "gauge", "help with \\ and\nnewline", samples)])
    _same(parse_metrics_text(text), _reference(text))
    assert aggregate(parse_metrics_text(TRICKY))["enb"] == 2  # the total, not total + each eNB
    assert aggregate(parse_metrics_text(TRICKY))["lat_bucket"] == 13
    with pytest.raises(ValueError, match="metrics line 2"):
        parse_metrics_text('ok 1\nbad{a="1" 2\n')


def test_metrics_server_serves_what_the_reference_parser_reads(
    lab: Lab, api: dict[str, Any]
) -> None:
    core = _driver(lab, api, subscribers=[LAB_SUB])
    try:
        core.open()
        raw = Raw(api["metrics_url"])
        status, text, headers = raw.call("GET", "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        names = {"enb_ue", "mme_session", "enb", "ues_active", "bearers_active", "s6a_rx_air",
                 "s6a_rx_ulr", "hss_imsi", "fivegs_upffunction_upf_sessionnbr"}  # fmt: skip
        assert names <= set(families)
        assert families["s6a_rx_air"].type == "counter" and families["enb_ue"].type == "gauge"
        _same(core.scrape("mme"), _reference(text))
        values = core.metrics()
        assert values["hss_imsi"] == 1 and values["enb_ue"] == 0
        assert raw.call("GET", "/metrics/")[0] == 404
        assert raw.call("POST", "/metrics", {})[0] == 400
        assert raw.call("GET", "/")[:2] == (200, "OK\n")
        counters = core.counters()
        assert counters["metrics"]["mme"]["hss_imsi"] == 1 and counters["ues_attached"] == 0
        assert counters["http_exchanges"] == core.http.exchanges > 0
    finally:
        core.close()


# --------------------------------------------------------------------------------------------
# /ue-info over a core with attached UEs (served in this process: the state is needed)
# --------------------------------------------------------------------------------------------


def _attached_core(n: int) -> CoreState:
    state = CoreState("core1", "00101", address_pool="10.45.0.0/16")
    for i in range(n):
        sub = Subscriber.from_mapping({**LAB_SUB, "imsi": f"00101{i:010d}", "ipv4": None,
                                       "msisdn": None})  # fmt: skip
        state.put_subscriber(sub)
        res = milenage_res(sub.k, sub.opc, state.challenge(sub.imsi))
        state.attach(sub.imsi, plmn="00101", ran=f"cell{i % 3}", res=res)
    return state


def test_ue_info_pages_as_open5gs_and_the_driver_reads_every_page(lab: Lab) -> None:
    state = _attached_core(105)
    api = Open5gsApi(state, password=PASSWORD)
    api.start()
    core = _driver(lab, {"webui_url": api.webui_url, "metrics_url": api.metrics_url})
    try:
        raw = Raw(api.metrics_url)
        _, first, _ = raw.call("GET", "/ue-info?page=0&page_size=40")
        assert first["pager"] == {"page": 0, "page_size": 40, "count": 40,
                                  "next": "/ue-info?page=1"}  # fmt: skip
        _, last, _ = raw.call("GET", "/ue-info?page=2&page_size=40")
        assert last["pager"] == {"page": 2, "page_size": 40, "count": 25,
                                 "prev": "/ue-info?page=1"}  # fmt: skip
        _, capped, _ = raw.call("GET", "/ue-info?page_size=500")
        assert capped["pager"]["page_size"] == 100 and capped["pager"]["count"] == 100
        _, everything, _ = raw.call("GET", "/ue-info?page=-1")
        assert everything["pager"] == {"page": 0, "page_size": 0, "count": 105}
        assert [i["supi"] for i in first["items"]] + [i["supi"] for i in last["items"]] == [
            ue.imsi for ue in state.ues()[:40]] + [ue.imsi for ue in state.ues()[80:]]  # fmt: skip

        item = first["items"][0]
        ue = state.ues()[0]
        assert item["domain"] == "EPS" and item["rat"] == "E-UTRA"
        assert item["location"]["tai"]["plmn"] == "00101"
        assert item["ambr"] == {"downlink": 1_000_000_000, "uplink": 1_000_000_000}
        pdn = item["pdn"][0]
        assert pdn["apn"] == "internet" and pdn["qci"] == 9 and pdn["ebi"] == 5
        assert pdn["bearer_count"] == len(ue.bearers) == 2  # default + the QCI 65 PCC rule
        assert [f["ebi"] for f in pdn["qos_flows"]] == [b.ebi for b in ue.bearers]
        assert item["x_emulated"]["address"] == ue.address
        assert item["x_emulated"]["bearers"][1]["qci"] == 65

        ues = core.ues()  # 105 UEs: two pages of at most 100
        assert [u["imsi"] for u in ues] == [u.imsi for u in state.ues()]
        assert sum(1 for ln in core.http.last if "/ue-info?page=1" in ln) == 1
        counts = state.counters()
        values = core.metrics()
        assert values["enb_ue"] == values["ues_active"] == counts["ues_attached"] == 105
        assert values["bearers_active"] == counts["bearers_active"] == 210
        assert values["s6a_rx_air"] == counts["attach_requests"]
        assert values["enb"] == 3  # eNBs: the total sample only
    finally:
        core.close()
        api.close()


# --------------------------------------------------------------------------------------------
# Component control
# --------------------------------------------------------------------------------------------

FAKE_TOOL = """#!{python}
import json, os, sys
with open({log!r}, "a") as f:
    f.write(json.dumps({{"argv": [os.path.basename(sys.argv[0])] + sys.argv[1:],
                        "via": os.environ.get("TB_VIA")}}) + "\\n")
if "broken-unit" in sys.argv:
    sys.stderr.write("Failed to stop broken-unit.service: Unit not loaded.\\n")
    sys.exit(5)
"""


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``systemctl`` and ``iptables`` on PATH that record their argv (one JSON line each)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "tools.log"
    for tool in ("systemctl", "iptables"):
        path = bindir / tool
        path.write_text(FAKE_TOOL.format(python=sys.executable, log=str(log)))
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def _calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_host_control_builds_systemctl_and_iptables_argv(fake_tools: Path) -> None:
    control = HostControl("core1", {
        "mme": {"systemd": "open5gs-mmed", "isolate": [{"proto": "sctp", "port": 36412}]},
        "hss": {"systemd": "open5gs-hssd", "via": ["env", "TB_VIA=ssh-like"]},
        "bad": {"systemd": "broken-unit"},
    })  # fmt: skip
    assert control.components() == ["bad", "hss", "mme"]
    for action in ("stop", "kill", "restart"):
        assert control.act(action, "mme")["wall"] > 0
    control.act("stop", "hss")
    assert [c["argv"] for c in _calls(fake_tools)] == [
        ["systemctl", "stop", "open5gs-mmed"],
        ["systemctl", "kill", "-s", "KILL", "open5gs-mmed"],
        ["systemctl", "restart", "open5gs-mmed"],
        ["systemctl", "stop", "open5gs-hssd"],
    ]
    assert _calls(fake_tools)[-1]["via"] == "ssh-like"  # the command ran through `via`

    fake_tools.unlink()
    tag = ["-m", "comment", "--comment", "testbed core1 mme", "-j", "DROP"]
    assert control.act("isolate", "mme")["rules"] == 2
    assert control.isolated() == ["mme"]
    assert control.act("restore", "mme")["rules"] == 2
    assert control.isolated() == []
    assert [c["argv"] for c in _calls(fake_tools)] == [
        ["iptables", "-I", "INPUT", "-p", "sctp", "--dport", "36412", *tag],
        ["iptables", "-I", "OUTPUT", "-p", "sctp", "--sport", "36412", *tag],
        ["iptables", "-D", "OUTPUT", "-p", "sctp", "--sport", "36412", *tag],
        ["iptables", "-D", "INPUT", "-p", "sctp", "--dport", "36412", *tag],
    ]
    with pytest.raises(DriverError, match=r"systemctl stop broken-unit failed with status 5: "
                       r"Failed to stop broken-unit\.service"):  # fmt: skip
        control.act("stop", "bad")
    with pytest.raises(DriverError, match=r"isolate hss: give settings\.components\.hss\.isolate"):
        control.act("isolate", "hss")
    calls = len(_calls(fake_tools))
    with pytest.raises(DriverError, match=r"isolate bad: give"):
        control.act("isolate", None)  # all: refused before any rule goes in
    assert len(_calls(fake_tools)) == calls and control.isolated() == []
    with pytest.raises(DriverError, match=r"unknown component 'amf' \(known: bad, hss, mme\)"):
        control.act("stop", "amf")


CHILD = """#!{python}
import signal, sys, time
def term(*_):
    open({marker!r}, "a").write("TERM\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
open({marker!r}, "a").write("up\\n")
while True:
    time.sleep(0.05)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def test_host_control_signals_a_real_process_and_restarts_it(tmp_path: Path) -> None:
    name = f"o5t-{secrets.token_hex(4)}"  # <= 15 characters: what pgrep -x matches
    script = tmp_path / name
    marker = tmp_path / "marker"
    script.write_text(CHILD.format(python=sys.executable, marker=str(marker)))
    script.chmod(0o755)
    child = subprocess.Popen([str(script)])
    # its parent reaps it when it ends, as a real NF's parent (systemd, a shell) would: an
    # unreaped zombie would still be listed by pgrep
    reaper = threading.Thread(target=child.wait, daemon=True)
    reaper.start()
    control = HostControl("core1", {"upf": {"process": name, "command": [str(script)]}},
                          log_dir=tmp_path / "logs", stop_timeout_s=20)  # fmt: skip
    restarted: int | None = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (marker.exists() and "up" in marker.read_text()):
            assert time.monotonic() < deadline, "the child did not start"
            time.sleep(0.02)
        stopped = control.act("stop", "upf")
        assert stopped["pids"] == [child.pid] and stopped["forced"] is False
        reaper.join(timeout=20)
        assert child.returncode == 0 and marker.read_text().splitlines() == ["up", "TERM"]
        assert control.act("stop", "upf")["pids"] == []  # nothing left to stop

        started = control.act("restart", "upf")["started"]
        restarted = int(started["pid"])
        deadline = time.monotonic() + START_TIMEOUT_S
        while marker.read_text().count("up") < 2:
            assert time.monotonic() < deadline, "the restarted process did not come up"
            time.sleep(0.02)
        killed = control.act("kill", "upf")
        assert killed["pids"] == [restarted]
        deadline = time.monotonic() + START_TIMEOUT_S
        while _alive(restarted):
            assert time.monotonic() < deadline, "SIGKILL did not end the process"
            time.sleep(0.02)
        assert marker.read_text().count("TERM") == 1  # KILL cannot be caught
        assert control.act("stop", "upf")["pids"] == []  # reaped, not a zombie pgrep lists
        no_command = HostControl("core1", {"upf": {"process": name}})
        with pytest.raises(DriverError, match=r"restart upf: give settings\.components\.upf"):
            no_command.act("restart", "upf")
    finally:
        for pid in (child.pid, restarted):
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        child.wait(timeout=20)


def test_driver_lifecycle_and_safe_state_restore_the_core(
    lab: Lab, api: dict[str, Any], fake_tools: Path
) -> None:
    components = {
        "mme": {"systemd": "open5gs-mmed"},
        "upf": {"systemd": "open5gs-upfd", "isolate": [{"proto": "udp", "port": 2152}]},
    }
    core = _driver(lab, api, components=components)
    try:
        core.open()
        assert core.perform("stop", {"component": "mme"})["unit"] == "open5gs-mmed"
        assert core.perform("isolate", {"component": "upf"})["rules"] == 2
        with pytest.raises(DriverError, match=r"unknown component 'amf' \(known: mme, upf\)"):
            core.perform("kill", {"component": "amf"})
        with pytest.raises(DriverError, match="unknown colour"):
            core.perform("stop", {"colour": "red"})
        core.safe_state()
        report = lab.events("core.safe_state")[-1]
        assert report["restored"] == ["upf"] and report["restarted"] == ["mme"]
        assert report["errors"] == [] and report["left_down"] == []
        argv = [c["argv"] for c in _calls(fake_tools)]
        assert argv[0] == ["systemctl", "stop", "open5gs-mmed"]
        assert [a[:3] for a in argv[1:]] == [
            ["iptables", "-I", "INPUT"], ["iptables", "-I", "OUTPUT"],
            ["iptables", "-D", "OUTPUT"], ["iptables", "-D", "INPUT"],
            ["systemctl", "restart", "open5gs-mmed"],
        ]  # fmt: skip
        actions = [(e["action"], e["component"]) for e in lab.events("core.component")]
        assert actions == [("stop", "mme"), ("isolate", "upf"), ("restore", "upf"),
                           ("restart", "mme")]  # fmt: skip
    finally:
        core.close()


def test_safe_state_without_restore_on_exit_still_lifts_isolation(
    lab: Lab, api: dict[str, Any], fake_tools: Path
) -> None:
    components = {"upf": {"systemd": "open5gs-upfd", "isolate": [{"proto": "udp", "port": 2152}]},
                  "bad": {"systemd": "broken-unit"}}  # fmt: skip
    core = _driver(lab, api, components=components, restore_on_exit=False)
    try:
        core.open()
        core.perform("isolate", {"component": "upf"})
        core.perform("kill", {"component": "upf"})
        _stop(api["proc"])  # the WebUI gone too: the safe state must not care
        core.safe_state()
        report = lab.events("core.safe_state")[-1]
        assert report["restarted"] == [] and report["left_down"] == ["upf"]
        assert report["restored"] == ["upf"]  # rules removed although the unit is down
        assert [c["argv"][:2] for c in _calls(fake_tools)][-2:] == [["iptables", "-D"]] * 2
        counters = core.counters()  # the core is gone: errors listed, nothing raised
        assert counters["errors"] and "metrics" in counters
    finally:
        core.close()


# --------------------------------------------------------------------------------------------
# Emulated mode: the lead's emulated core process, spoken to as a real Open5GS
# --------------------------------------------------------------------------------------------


def test_emulated_core_is_driven_like_a_real_one(lab: Lab) -> None:
    settings = {"emulate": {"plmn": "00101"}, "password": PASSWORD, "subscribers": [LAB_SUB]}
    core = Open5gsCore("core1", settings, lab.context)
    try:
        core.open()
        assert lab.events("core.opened")[0]["emulated"] is True
        assert [s["imsi"] for s in core.subscribers()] == [LAB_SUB["imsi"]]
        assert core.metrics()["hss_imsi"] == 1 and core.ues() == []
        webui = core.counters()["webui"]
        with pytest.raises(DriverError, match="bearer_create refused"):
            core.perform("bearer_create", {"imsi": LAB_SUB["imsi"], "qci": 65, "gbr_kbps": 64})
        # a restarted core serves on new ports and keeps its subscribers (its store): the
        # driver follows it and logs in again
        core.perform("stop", {})
        with pytest.raises(DriverError):
            core.subscribers()
        core.safe_state()  # restore_on_exit: the core is started again
        assert lab.events("core.safe_state")[-1]["restarted"] == ["core"]
        assert core.counters()["webui"] != webui
        assert [s["imsi"] for s in core.subscribers()] == [LAB_SUB["imsi"]]
    finally:
        core.close()
    assert all(proc.poll() is not None for proc, _ in lab.processes.tracked)
