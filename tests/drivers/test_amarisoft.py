"""The Amarisoft remote API surface and the ``core/amarisoft`` driver.

The driver talks to :mod:`drivers.core.amarisoft_api` running as a separate process
(``python -m drivers.core.amarisoft_api --port-file F --demo``), whose state holds two attached
UEs (``DEMO_SUBSCRIBERS``: IMSI 001010000000011 at 10.201.0.2 on cell 1 with a GBR QCI 65
bearer of ARP 10, IMSI 001010000000012 at 10.201.0.3 on cell 2 with a QCI 69 default bearer
and a GBR QCI 67 bearer of ARP 3). The expectations below are written from that documented
data, not from the server's code; a plain ``websockets`` client (what ``ws.js`` does: read the
ready message, send, read) is the independent check of what is on the wire.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import ServerConnection, serve
from websockets.typing import Origin

from drivers.base import DeviceContext
from drivers.core.amarisoft import AmarisoftCore
from drivers.errors import DriverError
from tests.drivers.support import Processes

ROOT = Path(__file__).resolve().parents[2]
START_BOUND_S = 30.0  # generous: a noisy 2-core box starting Python with cryptography
UE1, UE2 = "001010000000011", "001010000000012"


class Server:
    """One ``amarisoft_api`` process; ``url`` once it listens."""

    def __init__(self, tmp: Path, component: str) -> None:
        self.port_file = tmp / f"{component}.port.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "drivers.core.amarisoft_api", "--port-file",
             str(self.port_file), "--component", component, "--demo"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        deadline = time.monotonic() + START_BOUND_S
        while not self.port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"amarisoft_api did not start: {out}")
            time.sleep(0.02)
        self.url: str = json.loads(self.port_file.read_text())["url"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for component in ("mme", "enb"):
            started[component] = Server(tmp_path, component)
        yield started
    finally:
        for server in started.values():
            server.stop()


class Recorder:
    """A device context that keeps events and faults."""

    def __init__(self, run_dir: Path) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.faults: list[str] = []
        self.faulted = threading.Event()
        self.context = DeviceContext(run_dir=run_dir, name_prefix="tb", emit=self.emit,
                                     processes=Processes(), fault=self.fault)  # fmt: skip

    def emit(self, name: str, fields: Any) -> None:
        self.events.append((name, dict(fields)))

    def fault(self, message: str) -> None:
        self.faults.append(message)
        self.faulted.set()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.events if event == name]


def _driver(tmp: Path, settings: dict[str, Any]) -> tuple[AmarisoftCore, Recorder]:
    rec = Recorder(tmp / "run")
    return AmarisoftCore("callbox", settings, rec.context), rec


@pytest.fixture
def driver(servers: dict[str, Server], tmp_path: Path) -> Iterator[tuple[AmarisoftCore, Recorder]]:
    core, rec = _driver(tmp_path, {"mme": servers["mme"].url, "enb": servers["enb"].url,
                                   "timeout_s": 10})  # fmt: skip
    core.open()
    try:
        yield core, rec
    finally:
        core.safe_state()
        core.close()


def _raw(url: str) -> ClientConnection:
    return connect(url, origin=Origin("http://reference"), proxy=None, open_timeout=10)


def _ask(ws: ClientConnection, request: dict[str, Any]) -> dict[str, Any]:
    ws.send(json.dumps(request))
    answer: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return answer


# ================================================================== the wire (raw client)


def test_raw_client_reads_ready_and_gets_answers_with_its_message_id(
    servers: dict[str, Server],
) -> None:
    with _raw(servers["enb"].url) as ws:
        ready = json.loads(ws.recv(timeout=10))
        assert ready["message"] == "ready" and ready["type"] == "ENB"
        assert ready["version"] and ready["name"]
        answer = _ask(ws, {"message": "erab_get", "message_id": "ref-42"})
        assert answer["message"] == "erab_get" and answer["message_id"] == "ref-42"
        assert isinstance(answer["time"], float | int) and answer["utc"] > 1.6e9
        by_qci = {e["qci"]: e for e in answer["erab_list"]}
        assert set(by_qci) == {9, 65, 69, 67}
        assert by_qci[65]["erab_id"] == 6 and by_qci[65]["dl_gbr"] == 64_000
        assert by_qci[65]["arp"]["priority_level"] == 10
        assert by_qci[65]["arp"]["pre_emption_vulnerability"] is True
        assert by_qci[67]["dl_gbr"] == 512_000 and by_qci[67]["arp"]["priority_level"] == 3
        assert by_qci[67]["arp"]["pre_emption_capability"] is True
        assert "dl_gbr" not in by_qci[9]  # GBR fields only for GBR bearers (lteenb manual)
    with _raw(servers["mme"].url) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "MME"
        ues = {u["imsi"]: u for u in _ask(ws, {"message": "ue_get", "message_id": 1})["ue_list"]}
        assert set(ues) == {UE1, UE2}
        assert ues[UE1]["bearers"][0]["ip"] == "10.201.0.2"
        assert ues[UE1]["bearers"][0]["erab_id"] == 5
        assert [d["erab_id"] for d in ues[UE1]["bearers"][0]["dedicated"]] == [6]
        assert ues[UE2]["bearers"][0]["ip"] == "10.201.0.3"
        assert ues[UE2]["bearers"][0]["apn"] == "mc"
        only = _ask(ws, {"message": "ue_get", "message_id": 2, "imsi": UE2})["ue_list"]
        assert [u["imsi"] for u in only] == [UE2]


def test_unknown_message_array_and_component_specific_messages(
    servers: dict[str, Server],
) -> None:
    with _raw(servers["mme"].url) as ws:
        ws.recv(timeout=10)
        answer = _ask(ws, {"message": "no_such_thing", "message_id": 9})
        assert answer["message_id"] == 9 and "no_such_thing" in answer["error"]
        # erab_get and cell_gain are eNB messages: the MME does not know them
        assert "error" in _ask(ws, {"message": "erab_get", "message_id": 10})
        ws.send(json.dumps([{"message": "config_get", "message_id": "a"},
                            {"message": "stats", "message_id": "b"}]))  # fmt: skip
        first, second = json.loads(ws.recv(timeout=10)), json.loads(ws.recv(timeout=10))
        assert (first["message_id"], second["message_id"]) == ("a", "b")
        assert second["emm_registered_ue_count"] == 2
        ws.send("{not json")
        assert "error" in json.loads(ws.recv(timeout=10))


def test_a_handshake_without_origin_is_refused(servers: dict[str, Server]) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(servers["enb"].url, proxy=None, open_timeout=10)
    assert info.value.response.status_code == 403


def test_cell_gain_on_the_wire_changes_config_get(servers: dict[str, Server]) -> None:
    with _raw(servers["enb"].url) as ws:
        ws.recv(timeout=10)
        assert _ask(ws, {"message": "config_get"})["cells"]["2"]["gain"] == 0
        answer = _ask(ws, {"message": "cell_gain", "message_id": 3, "cell_id": 2, "gain": -30})
        assert "error" not in answer
        assert _ask(ws, {"message": "config_get"})["cells"]["2"]["gain"] == -30
        assert "error" in _ask(ws, {"message": "cell_gain", "cell_id": 2, "gain": 3})
        assert "error" in _ask(ws, {"message": "cell_gain", "cell_id": 7, "gain": -3})


# ================================================================== the driver


def test_driver_reports_ues_with_addresses_qci_and_arp(
    driver: tuple[AmarisoftCore, Recorder],
) -> None:
    core, rec = driver
    ready = {e["component"]: e for e in rec.named("core.ready")}
    assert ready["mme"]["type"] == "MME" and ready["enb"]["type"] == "ENB"
    ues = {u["imsi"]: u for u in core.ues()}
    assert set(ues) == {UE1, UE2}
    assert ues[UE1]["address"] == "10.201.0.2" and ues[UE1]["cell_id"] == 1
    assert ues[UE2]["address"] == "10.201.0.3" and ues[UE2]["cell_id"] == 2
    first = {b["ebi"]: b for b in ues[UE1]["bearers"]}
    assert first[5]["default"] is True and first[5]["qci"] == 9 and first[5]["gbr_kbps"] == 0
    assert first[6]["default"] is False and first[6]["qci"] == 65 and first[6]["gbr_kbps"] == 64
    assert first[6]["arp"] == {"priority_level": 10, "pre_emption_capability": False,
                               "pre_emption_vulnerability": True}  # fmt: skip
    second = {b["qci"]: b for b in ues[UE2]["bearers"]}
    assert second[69]["default"] is True and second[69]["arp"]["priority_level"] == 2
    assert second[67]["gbr_kbps"] == 512 and second[67]["apn"] == "mc"


def test_driver_stats_counters_and_transcript(driver: tuple[AmarisoftCore, Recorder]) -> None:
    core, _ = driver
    stats = core.stats()
    assert stats["enb"]["cells"]["1"]["ue_count_avg"] == 1
    assert stats["enb"]["cells"]["1"]["erab_count_avg"] == 2
    assert stats["enb"]["cells"]["2"]["erab_count_avg"] == 2
    assert stats["mme"]["emm_registered_ue_count"] == 2
    counters = core.counters()
    assert counters["emm_registered_ue_count"] == 2 and counters["enb_ue_count"] == 2
    assert counters["mme_counters"]["messages"]["attach_accepts"] == 2
    assert counters["links"]["enb"]["errors"] == 0
    lines = core.transcript_path.read_text().splitlines()
    sent = [json.loads(line.split(" > enb ", 1)[1]) for line in lines if " > enb " in line]
    got = [json.loads(line.split(" < enb ", 1)[1]) for line in lines if " < enb " in line]
    ids = [m["message_id"] for m in sent]
    assert len(ids) == len(set(ids))  # unique per request
    assert {m["message_id"] for m in got if "message_id" in m} == set(ids)
    assert any(m["message"] == "ready" for m in got)


def test_driver_cell_gain_is_read_back_and_restored_by_the_safe_state(
    driver: tuple[AmarisoftCore, Recorder], servers: dict[str, Server]
) -> None:
    core, rec = driver
    done = core.perform("cell_gain", {"cell_id": 1, "gain_db": -45.5})
    assert done["actual_db"] == -45.5 and done["wall"] > 0
    core.perform("cell_gain", {"cell_id": 1, "gain_db": -80})
    with _raw(servers["enb"].url) as ws:  # the independent look
        ws.recv(timeout=10)
        assert _ask(ws, {"message": "config_get"})["cells"]["1"]["gain"] == -80
    assert [e["gain_db"] for e in rec.named("core.cell_gain")] == [-45.5, -80]
    core.safe_state()
    with _raw(servers["enb"].url) as ws:
        ws.recv(timeout=10)
        assert _ask(ws, {"message": "config_get"})["cells"]["1"]["gain"] == 0
    assert rec.named("core.safe_state")[-1] == {"gains_restored_db": {1: 0.0}, "errors": []}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"cell_id": 1, "gain_db": 5}, "-200 to 0"),
        ({"cell_id": 1, "gain_db": -201}, "-200 to 0"),
        ({"cell_id": True, "gain_db": -3}, "cell_id must be an integer"),
        ({"cell_id": 9, "gain_db": -3}, "no cell 9"),
        ({"cell_id": 1}, "give gain_db"),
        ({"cell_id": 1, "gain_db": -3, "channel": 2}, "unknown argument"),
    ],
)
def test_driver_cell_gain_refusals(
    driver: tuple[AmarisoftCore, Recorder], args: dict[str, Any], fragment: str
) -> None:
    core, _ = driver
    with pytest.raises(DriverError, match=fragment) as info:
        core.perform("cell_gain", args)
    assert info.value.device == "callbox"
    assert core.original_gain_db == {}


def test_provision_explains_the_ue_db_and_bearers_are_not_offered(
    driver: tuple[AmarisoftCore, Recorder],
) -> None:
    core, _ = driver
    with pytest.raises(DriverError, match="ue_db"):
        core.perform("provision", {"subscriber": {"imsi": "001010000000099"}})
    with pytest.raises(DriverError, match="ue_db"):
        core.perform("remove_subscriber", {"imsi": UE1})
    assert "bearer_create" not in AmarisoftCore.actions and "cell_gain" in AmarisoftCore.actions
    with pytest.raises(DriverError, match="no component control"):
        core.perform("restart", {"component": "mme"})


def test_a_killed_server_is_one_fault_and_a_clean_driver_error(
    driver: tuple[AmarisoftCore, Recorder], servers: dict[str, Server]
) -> None:
    core, rec = driver
    servers["enb"].proc.kill()
    servers["enb"].proc.wait(timeout=10)
    assert rec.faulted.wait(timeout=30)
    with pytest.raises(DriverError) as info:
        core.erabs()
    assert info.value.device == "callbox" and "erab_get" in str(info.value)
    assert "enb" in str(info.value) and "unreachable" in str(info.value)
    with pytest.raises(DriverError):
        core.perform("cell_gain", {"cell_id": 1, "gain_db": -3})
    assert len(rec.faults) == 1 and "enb" in rec.faults[0]
    assert rec.named("core.lost")[0]["component"] == "enb"
    assert {u["imsi"] for u in core.request("mme", "ue_get")["ue_list"]} == {UE1, UE2}
    core.safe_state()  # never raises, even with the eNB gone
    core.close()


def test_wrong_component_and_authentication_are_refused_at_open(
    servers: dict[str, Server], tmp_path: Path
) -> None:
    core, _ = _driver(tmp_path, {"mme": servers["enb"].url, "timeout_s": 10})
    with pytest.raises(DriverError, match="'ENB' server, not the MME"):
        core.open()
    core.close()
    with _Fake(lambda ws: ws.send(json.dumps({"message": "authenticate", "type": "ENB",
                                              "name": "x", "challenge": "c"}))) as url:  # fmt: skip
        core, _ = _driver(tmp_path, {"enb": url, "timeout_s": 10})
        with pytest.raises(DriverError, match="com_auth"):
            core.open()
        core.close()


def _silent_enb(ws: ServerConnection) -> None:
    ws.send(json.dumps({"message": "ready", "type": "ENB", "name": "mute", "version": "x"}))
    for _ in ws:
        pass  # reads requests, never answers


def _wrong_id_enb(ws: ServerConnection) -> None:
    ws.send(json.dumps({"message": "ready", "type": "ENB", "name": "odd", "version": "x"}))
    for frame in ws:
        request = json.loads(frame)
        ws.send(json.dumps({"message": request["message"], "message_id": 424242}))


class _Fake:
    """A misbehaving remote API in a thread of the test."""

    def __init__(self, handler: Any) -> None:
        self.server = serve(handler, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


@pytest.mark.parametrize(
    ("handler", "fragment"),
    [(_silent_enb, "no answer to config_get"), (_wrong_id_enb, "message_id 424242")],
)
def test_no_answer_or_a_foreign_message_id_is_a_driver_error(
    tmp_path: Path, handler: Any, fragment: str
) -> None:
    with _Fake(handler) as url:
        core, rec = _driver(tmp_path, {"enb": url, "timeout_s": 0.5})
        with pytest.raises(DriverError, match=fragment) as info:
            core.open()  # open reads the cells (config_get)
        assert info.value.device == "callbox"
        assert "config_get" in str(info.value)
        core.close()
        assert rec.faults == []  # closing is not a fault


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({}, "give mme"),
        ({"mme": "http://h:9000"}, "ws://HOST:PORT"),
        ({"enb": "ws://h"}, "ws://HOST:PORT"),
        ({"mme": "ws://h:9000", "timeout_s": 0}, "timeout_s"),
        ({"mme": "ws://h:9000", "colour": "red"}, "unknown colour"),
        ({"mme": "ws://h:9000", "emulate": {"plmn": "00101"}}, "exclude each other"),
        ({"mme": "ws://h:9000", "components": {"mme": {"sytemd": "lte"}}}, "unknown sytemd"),
    ],
)
def test_settings_are_checked_before_connecting(
    tmp_path: Path, settings: dict[str, Any], fragment: str
) -> None:
    core, rec = _driver(tmp_path, settings)
    with pytest.raises(DriverError, match=fragment):
        core.open()
    assert rec.events == []
    core.close()


FAKE_SYSTEMCTL = """#!{python}
# A stand-in for systemctl: unit amari-enb is the amarisoft_api process of the test.
import json, os, signal, subprocess, sys, time
env = os.environ
pid_file, port_file, port = env["AMARI_PID"], env["AMARI_PORT_FILE"], env["AMARI_PORT"]
verb = sys.argv[1]
pid = int(open(pid_file).read())
if verb in ("stop", "restart"):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
elif verb == "kill":
    os.kill(pid, signal.SIGKILL)
if verb == "restart":
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    os.unlink(port_file)
    proc = subprocess.Popen([sys.executable, "-m", "drivers.core.amarisoft_api", "--port-file",
                             port_file, "--component", "enb", "--demo", "--port", port],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    open(pid_file, "w").write(str(proc.pid))
    while not os.path.exists(port_file) and time.monotonic() < deadline:
        time.sleep(0.02)
"""


def test_lifecycle_actions_expect_the_loss_and_the_next_request_reconnects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    port_file, pid_file = tmp_path / "enb.port.json", tmp_path / "enb.pid"
    first = subprocess.Popen(
        [sys.executable, "-m", "drivers.core.amarisoft_api", "--port-file", str(port_file),
         "--component", "enb", "--demo", "--port", str(port)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
    )  # fmt: skip
    pid_file.write_text(str(first.pid))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("AMARI_PID", str(pid_file))
    monkeypatch.setenv("AMARI_PORT_FILE", str(port_file))
    monkeypatch.setenv("AMARI_PORT", str(port))
    deadline = time.monotonic() + START_BOUND_S
    while not port_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    core, rec = _driver(tmp_path, {"enb": f"ws://127.0.0.1:{port}", "timeout_s": 10,
                                   "components": {"enb": {"systemd": "amari-enb"}}})  # fmt: skip
    try:
        core.open()
        core.perform("cell_gain", {"cell_id": 2, "gain_db": -20})
        done = core.perform("kill", {"component": "enb"})
        assert done["unit"] == "amari-enb" and done["wall"] > 0
        first.wait(timeout=10)
        with pytest.raises(DriverError, match="down"):
            core.erabs()
        core.perform("restart", {"component": "enb"})
        assert {e["qci"] for e in core.erabs()} == {9, 65, 69, 67}
        assert rec.faults == []  # the timeline's own doing, not a device fault
        assert [e["component"] for e in rec.named("core.reconnected")] == ["enb"]
        assert [e["argv"][:2] for e in rec.named("core.lifecycle")] == [
            ["systemctl", "kill"], ["systemctl", "restart"]]  # fmt: skip
        core.safe_state()  # the restarted eNB has gain 0 again: restored to 0 all the same
        assert rec.named("core.safe_state")[-1]["gains_restored_db"] == {2: 0.0}
    finally:
        core.close()
        with contextlib.suppress(Exception):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
