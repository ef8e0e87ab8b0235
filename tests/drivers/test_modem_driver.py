"""Tests of the AT modem driver (``drivers.radio.modem.AtModem``) against the emulated modem
running as its own process on a real pty (or TCP for the ``url`` setting): open and identity,
registration events and history, the timeline actions, a noisy wire (garbage lines, URCs inside
responses), a silent modem, SIM PIN errors, a killed emulator, and the relay coupling of its
radio link through the real relay request handler. Every emulator the driver starts is tracked
and killed in the fixture's ``finally``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # in case the package is not installed into the venv
    sys.path.insert(0, str(REPO))

from drivers.base import DeviceContext  # noqa: E402
from drivers.emulators import state_path  # noqa: E402
from drivers.errors import DriverError  # noqa: E402
from drivers.files import write_json_atomic  # noqa: E402
from drivers.impairment.emulated import link_control_path  # noqa: E402
from drivers.radio.at import AtCommandError, AtTimeout  # noqa: E402
from drivers.radio.modem import AtModem, decode_qeng, is_read_form, parse_registration  # noqa: E402
from tests.drivers.support import relay_socket  # noqa: E402

WAIT_S = 5.0
HOME = {
    "plmn": "00101",
    "long": "Home Net",
    "short": "Home",
    "tac": "00A1",
    "ci": "1A2B3C4",
    "rsrp_dbm": -95,
    "rsrq_db": -10,
    "sinr_db": 18,
}
ROAM = {"plmn": "00102", "long": "Roam Net", "short": "Roam", "tac": 2, "ci": 5, "rsrp_dbm": -90}
BARRED = {"plmn": "00103", "long": "Barred Net", "short": "Barred", "forbidden": True}


class Recorder:
    """What the controller would collect: events, faults and started processes."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.faults: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    def emit(self, name: str, fields: Any) -> None:
        with self._lock:
            self.events.append((name, dict(fields)))

    def fault(self, message: str) -> None:
        with self._lock:
            self.faults.append(message)

    def track(self, proc: subprocess.Popen[bytes], role: str) -> None:
        self.procs.append(proc)

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [fields for event, fields in self.events if event == name]

    def wait(self, name: str, check: Callable[[dict[str, Any]], bool] = lambda f: True,
             after: float = 0.0, timeout_s: float = WAIT_S) -> dict[str, Any]:  # fmt: skip
        """The latest ``name`` event that passes ``check`` (and is stamped after ``after``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [f for f in self.named(name) if check(f) and f.get("wall", 0) >= after]
            if found:
                return found[-1]
            assert time.monotonic() < deadline, f"no {name} event: {self.events[-8:]}"
            time.sleep(0.02)


class Lab:
    """A run directory, a context and the modems opened in it (closed and killed at the end)."""

    def __init__(self, run_dir: Path, prefix: str) -> None:
        self.run_dir = run_dir
        self.rec = Recorder()
        self.context = DeviceContext(
            run_dir=run_dir, name_prefix=prefix, emit=self.rec.emit, processes=self.rec,
            fault=self.rec.fault,
        )  # fmt: skip
        self.modems: list[AtModem] = []

    def modem(self, name: str = "ue1", **settings: Any) -> AtModem:
        emulator = {"attach_s": 0.2, "boot_s": 0.1, "networks": [HOME], **settings.pop("emu", {})}
        if "url" not in settings:
            settings["emulator"] = emulator
        modem = AtModem(name, {"poll_signal_s": 0, "timeout_s": 2.0, **settings}, self.context)
        self.modems.append(modem)
        return modem

    def state(self, name: str = "ue1") -> dict[str, Any]:
        data: dict[str, Any] = json.loads(state_path(self.run_dir, name).read_text())
        return data


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path, f"t{os.getpid()}")
    try:
        yield lab
    finally:
        for modem in lab.modems:
            modem.close()
        for proc in lab.rec.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)


def until(check: Callable[[], bool], what: Any, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.02)


def set_attenuation(lab: Lab, atten_db: float) -> None:
    path = state_path(lab.run_dir, "att1")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"model": "attenuator", "settings": {"CHAN2:ATT": atten_db}})


def set_power(lab: Lab, on: bool) -> None:
    path = state_path(lab.run_dir, "psu1")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"model": "power_supply", "settings": {"OUTP1": on, "SOUR1:VOLT": 3.8}})


# --------------------------------------------------------------------------------------------
# Parsing (in-process)
# --------------------------------------------------------------------------------------------


def test_registration_reports_are_told_apart_from_read_answers() -> None:
    assert not is_read_form("1") and is_read_form("2,1") and is_read_form("0,0")
    assert not is_read_form('1,"00A1","01A2B3C4",7') and is_read_form('2,1,"00A1","01A2B3C4",7')
    urc = parse_registration('5,"0002","00000005",7')
    assert urc is not None and (urc.stat, urc.tac, urc.ci, urc.act) == (5, "0002", "00000005", 7)
    read = parse_registration('3,3,"0001","00000001",7,0,11')
    assert read is not None and (read.stat, read.reject_cause) == (3, 11)
    assert parse_registration("x") is None
    qeng = decode_qeng('"servingcell","NOCONN","LTE","FDD",302,610,844D92A,248,900,2,5,5,D6E7,'
                       "-89,-8,-61,17,38")  # fmt: skip
    assert qeng["state"] == "NOCONN" and qeng["plmn"] == "302610" and qeng["sinr_db"] == 17.0
    assert decode_qeng('"servingcell","SEARCH"') == {"state": "SEARCH"}


def test_settings_are_checked_before_anything_starts(lab: Lab) -> None:
    with pytest.raises(DriverError, match=r"unknown setting\(s\) \['baud'\]"):
        AtModem("ue1", {"url": "socket://127.0.0.1:1", "baud": 9600}, lab.context)
    with pytest.raises(DriverError, match="either url"):
        AtModem("ue1", {}, lab.context)
    with pytest.raises(DriverError, match="either url"):
        AtModem("ue1", {"url": "/dev/null", "emulator": {}}, lab.context)
    with pytest.raises(DriverError, match=r"unknown emulator setting\(s\) \['rsrp'\]"):
        AtModem("ue1", {"emulator": {"rsrp": -80}}, lab.context)
    with pytest.raises(DriverError, match="safe_state"):
        AtModem("ue1", {"url": "x", "safe_state": "sleep"}, lab.context)
    with pytest.raises(DriverError, match="plmn must be"):
        AtModem("ue1", {"url": "x", "plmn": 101}, lab.context)
    with pytest.raises(DriverError, match="pin must be digits in quotes"):
        AtModem("ue1", {"url": "x", "pin": 123}, lab.context)
    bad = AtModem("ue1", {"emulator": {"networks": [{"plmn": "1"}]}}, lab.context)
    with pytest.raises(DriverError, match="plmn must be MCC"):
        bad.emulator_config()
    assert lab.rec.procs == []


def test_emulator_settings_become_the_emulator_configuration(lab: Lab) -> None:
    modem = AtModem(
        "ue1",
        {"emulator": {"link": "radio_a1", "attenuator": {"device": "att1", "channel": 2},
                      "power": {"device": "psu1", "channel": 1, "min_voltage_v": 3.5},
                      "networks": [HOME, {**ROAM, "link": "radio_r"}], "qci": 69}},
        lab.context,
    )  # fmt: skip
    config = modem.emulator_config()
    home, roam = config["networks"]
    assert home["link"] == str(link_control_path(lab.context.name_prefix, "radio_a1"))
    assert roam["link"] == str(link_control_path(lab.context.name_prefix, "radio_r"))
    assert config["attenuator"] == {"state_file": str(state_path(lab.run_dir, "att1")),
                                    "key": "CHAN2:ATT"}  # fmt: skip
    assert config["power"]["output_key"] == "OUTP1" and config["power"]["min_voltage_v"] == 3.5
    assert config["block_reason"] == "no-service:ue1" and config["qci"] == 69


# --------------------------------------------------------------------------------------------
# Against the emulator process
# --------------------------------------------------------------------------------------------


def test_open_reads_identity_registers_and_reports(lab: Lab) -> None:
    modem = lab.modem(quectel=True, apn="mcx", emu={"imsi": "001019876543210"})
    modem.open()
    rec = lab.rec
    identity = rec.wait("radio.identity")
    assert identity["manufacturer"] == "Quectel" and identity["model"] == "EC25"
    assert identity["imei"] == "866758040000017" and identity["imsi"] == "001019876543210"
    registered = rec.wait("radio.registration", lambda f: f["stat"] == 1)
    assert registered["stat_name"] == "registered home"
    assert (registered["tac"], registered["ci"], registered["act"]) == ("00A1", "01A2B3C4", 7)
    assert registered["source"] in ("urc", "query") and registered["wall"] > 0
    assert rec.wait("radio.operator")["plmn"] == "00101"
    pdn = rec.wait("radio.pdn", lambda f: f["active"])
    assert (pdn["cid"], pdn["address"]) == (1, "10.45.0.2")
    sample = modem.perform("read_signal", {})
    assert (sample["rsrp_dbm"], sample["rsrq_db"], sample["rssi_dbm"], sample["csq"]) == (
        -95.0, -10.0, -65.0, 24)  # fmt: skip
    assert sample["sinr_db"] == 18.0 and sample["state"] == "CONNECT"
    assert lab.state()["pdn"]["1"]["apn"] == "mcx"  # AT+CGDCONT at open

    counters = modem.counters()
    assert counters["identity"]["imsi"] == "001019876543210"
    assert counters["state"] == {
        "stat": 1, "stat_name": "registered home", "plmn": "00101", "fun": 1,
        "pdn_active": True, "pdn_address": "10.45.0.2",
    }  # fmt: skip
    assert counters["registration"][-1]["stat"] == 1 and counters["outages"] == []
    assert counters["signal"]["samples"] >= 2 and counters["signal"]["rsrp_max_dbm"] == -95.0
    assert counters["channel"]["commands"] > 10 and counters["channel"]["timeouts"] == 0
    modem.safe_state()
    modem.close()
    transcript = Path(counters["transcript"]).read_text()
    for line in ("> ATE0", "> AT+CIMI", "< 001019876543210", "< +CESQ: 99,99,255,255,20,46",
                 '+CEREG: 1,"00A1","01A2B3C4",7', "! closed"):  # fmt: skip
        assert line in transcript, line
    assert rec.named("radio.safe_state")[-1]["done"] == []
    assert rec.faults == []


def test_timeline_actions_and_the_outage_history(lab: Lab) -> None:
    modem = lab.modem(emu={"networks": [HOME, ROAM, BARRED]})
    modem.open()
    rec = lab.rec
    start = time.time()
    assert modem.perform("radio_off", {}) == {"fun": 4}
    rec.wait("radio.registration", lambda f: f["stat"] == 0)
    assert rec.named("radio.function")[-1]["fun"] == 4
    assert modem.perform("read_signal", {})["rsrp_dbm"] is None
    assert modem.perform("radio_on", {}) == {"fun": 1}
    back = rec.wait("radio.registration", lambda f: f["stat"] == 1, after=start)

    assert modem.perform("select_plmn", {"plmn": "00102"}) == {"plmn": "00102", "mode": "manual"}
    rec.wait("radio.registration", lambda f: f["stat"] == 5)
    rec.wait("radio.operator", lambda f: f["plmn"] == "00102")
    with pytest.raises(DriverError, match=r"selecting PLMN 00103 failed: \+CME ERROR: 32"):
        modem.perform("select_plmn", {"plmn": "00103"})
    rec.wait("radio.registration", lambda f: f["stat"] == 3)
    modem.perform("select_plmn", {"plmn": "auto"})
    rec.wait("radio.operator", lambda f: f["plmn"] == "00101", after=back["wall"])

    assert modem.perform("pdn_deactivate", {}) == {"cid": 1, "active": False, "address": None}
    assert lab.state()["data_service"] is False
    assert modem.perform("pdn_activate", {}) == {"cid": 1, "active": True,
                                                 "address": "10.45.0.2"}  # fmt: skip
    with pytest.raises(DriverError, match="plmn must be"):
        modem.perform("select_plmn", {"plmn": "home"})
    with pytest.raises(DriverError, match="unknown argument"):
        modem.perform("radio_on", {"now": True})
    with pytest.raises(DriverError, match="not supported"):
        modem.perform("ptt_press", {})

    counters = modem.counters()
    stats = [h["stat"] for h in counters["registration"]]
    assert stats[-1] == 1 and 0 in stats and 5 in stats and 3 in stats
    outages = counters["outages"]
    assert len(outages) >= 2 and all(o["regained_wall"] is not None for o in outages)
    assert all(o["duration_s"] > 0 for o in outages)
    assert rec.named("radio.cgev") and rec.faults == []


def test_garbage_and_interleaved_urcs_do_not_confuse_the_driver(lab: Lab) -> None:
    modem = lab.modem(emu={"garble_every": 2, "interleave_urcs": True, "seed": 3,
                           "attenuator": {"device": "att1", "channel": 2}})  # fmt: skip
    set_attenuation(lab, 0.0)
    modem.open()
    for _ in range(3):
        assert modem.perform("read_signal", {})["rsrp_dbm"] == -95.0
    set_attenuation(lab, 50.0)
    time.sleep(0.3)  # the +CEREG: 2 is now held back for the next response
    assert modem.perform("read_signal", {})["rsrp_dbm"] is None
    lost = lab.rec.wait("radio.registration", lambda f: f["stat"] == 2 and f["source"] == "urc")
    set_attenuation(lab, 10.0)
    time.sleep(0.5)
    assert modem.perform("read_signal", {})["rsrp_dbm"] == -105.0
    lab.rec.wait("radio.registration", lambda f: f["stat"] == 1, after=lost["wall"])
    counts = modem.counters()["channel"]
    assert counts["garbled"] >= 3 and counts["timeouts"] == 0
    assert modem.counters()["outages"][0]["regained_wall"] is not None
    transcript = [line.split(" ", 1)[1] for line in modem.transcript_path.read_text().splitlines()
                  if not line.startswith("#")]  # fmt: skip
    assert any(line.startswith("? garbled b'\\x") for line in transcript)
    # the URC really came inside the answer: between its information line and its OK
    at = transcript.index("~ +CEREG: 2")
    after = [line for line in transcript[at + 1 :] if not line.startswith("~")]
    assert transcript[at - 1].startswith("< +CESQ: ") and after[0] == "< OK"


def test_a_silent_modem_times_out_and_a_rebooted_one_is_set_up_again(lab: Lab) -> None:
    set_power(lab, True)
    modem = lab.modem(timeout_s=1.0, emu={"power": {"device": "psu1", "channel": 1}})
    modem.open()
    set_power(lab, False)
    time.sleep(0.2)
    with pytest.raises(AtTimeout) as excinfo:
        modem.perform("read_signal", {})
    assert isinstance(excinfo.value, DriverError) and excinfo.value.device == "ue1"
    assert str(excinfo.value).startswith("ue1: no answer to 'AT+CESQ' within 1 s")

    set_power(lab, True)
    reboot = lab.rec.wait("radio.reboot")
    assert lab.rec.wait("radio.reconfigured")["ok"] is True
    lab.rec.wait("radio.registration", lambda f: f["stat"] == 1, after=reboot["wall"])
    assert modem.perform("read_signal", {})["rsrp_dbm"] == -95.0
    assert modem.counters()["reboots"] == 1
    assert lab.state()["echo"] is False  # ATE0 again after the reboot
    assert lab.rec.faults == []


def test_a_wrong_pin_is_decoded_and_a_missing_one_explained(lab: Lab) -> None:
    modem = lab.modem(pin="0000", emu={"pin": "1234"})
    with pytest.raises(AtCommandError) as excinfo:
        modem.open()
    assert excinfo.value.code == 16 and excinfo.value.reason == "incorrect password"
    assert "0000" not in str(excinfo.value).split("(last exchanges")[0]
    assert not any(p.poll() is None for p in lab.rec.procs)  # a failed open cleans up

    modem = lab.modem(name="ue2", emu={"pin": "1234"})
    with pytest.raises(DriverError, match=r"SIM asks for its PIN .* give `pin`"):
        modem.open()

    modem = lab.modem(name="ue3", pin="1234", emu={"pin": "1234"})
    modem.open()
    assert lab.state("ue3")["sim"] == "READY"


def test_a_killed_emulator_is_a_fault_reported_once(lab: Lab) -> None:
    modem = lab.modem(poll_signal_s=0.2)
    modem.open()
    (proc,) = lab.rec.procs
    proc.send_signal(signal.SIGKILL)
    lost = lab.rec.wait("radio.lost")
    assert "emulator exited with code -9" in lost["why"]
    time.sleep(0.5)  # the poller keeps trying: still only one fault
    assert lab.rec.faults == [f"connection lost: {lost['why']}"]
    with pytest.raises(DriverError, match="ue1"):
        modem.perform("read_signal", {})
    modem.safe_state()  # must not raise
    modem.close()
    modem.close()
    assert lab.rec.named("radio.safe_state")[-1]["errors"] == ["not connected"]


def test_safe_state_off_and_the_url_setting(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "tcp-modem.json"
    config.write_text(json.dumps({"networks": [HOME], "attach_s": 0.1}))
    ready = tmp_path / "tcp-ready.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivers.radio.modem_emulator", "--config", str(config),
         "--tcp-port", "0", "--ready-file", str(ready), "--state-out", str(tmp_path / "s.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    lab.rec.procs.append(proc)
    deadline = time.monotonic() + 10
    while not ready.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    url = json.loads(ready.read_text())["url"]
    modem = lab.modem(url=url, safe_state="off", plmn="00101")
    modem.open()

    def state() -> dict[str, Any]:
        data: dict[str, Any] = json.loads((tmp_path / "s.json").read_text())
        return data

    until(lambda: state()["mode"] == 1, state)  # manual selection at open
    modem.safe_state()
    assert lab.rec.named("radio.safe_state")[-1]["done"] == ["AT+CFUN=4"]
    until(lambda: state()["fun"] == 4, state)
    modem.close()
    assert proc.poll() is None  # not ours to stop


def test_the_radio_link_is_blocked_while_the_radio_is_off(lab: Lab) -> None:
    lab.context.name_prefix = f"m{os.getpid() % 100000}"
    path = link_control_path(lab.context.name_prefix, "radio_a1")
    with relay_socket(path) as relay:
        modem = lab.modem(emu={"link": "radio_a1"})
        modem.open()
        until(lambda: relay.blocks() == [True, False], lambda: relay.requests)
        assert relay.requests[0]["reason"] == "no-service:ue1"
        modem.perform("radio_off", {})
        until(lambda: relay.blocks() == [True, False, True], lambda: relay.requests)
        modem.perform("radio_on", {})
        until(lambda: relay.blocks() == [True, False, True, False], lambda: relay.requests)
        modem.close()
