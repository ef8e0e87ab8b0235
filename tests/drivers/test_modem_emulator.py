"""Tests of the emulated LTE modem (``drivers.radio.modem_emulator``) as a separate process,
spoken to over a real pty or TCP socket by a bare line client, so that the exact bytes of
3GPP TS 27.007 framing, echo, error modes and URCs are what is checked. The lab's physics
(attenuator, power supply) is driven by writing their state files the way the SCPI emulators
do; the relay coupling is checked against the real relay's request handler behind a Unix
socket. Only the spec's index scales are also checked in-process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # in case the package is not installed into the venv
    sys.path.insert(0, str(REPO))

from drivers.files import write_json_atomic  # noqa: E402
from drivers.radio.modem_state import CESQ_RSRP, CESQ_RSRQ, CSQ_RSSI  # noqa: E402
from tests.drivers.support import relay_socket  # noqa: E402

WAIT_S = 5.0
FINALS = ("OK", "ERROR", "NO CARRIER")

HOME = {
    "plmn": "00101",
    "long": "Home Net",
    "short": "Home",
    "tac": "00A1",
    "ci": "1A2B3C4",
    "pci": 7,
    "earfcn": 1300,
    "band": 3,
    "rsrp_dbm": -95,
    "rsrq_db": -10,
    "sinr_db": 18,
}
ROAM = {"plmn": "00102", "long": "Roam Net", "short": "Roam", "tac": 2, "ci": 5, "rsrp_dbm": -90}
BARRED = {"plmn": "00103", "long": "Barred Net", "short": "Barred", "forbidden": True}

# --------------------------------------------------------------------------------------------
# Helpers: the emulator process, a raw line client
# --------------------------------------------------------------------------------------------


@dataclass
class Modem:
    proc: subprocess.Popen[bytes]
    url: str
    state_file: Path
    log: Path
    dir: Path

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return data

    def wait_state(
        self, check: Callable[[dict[str, Any]], bool], timeout_s: float = WAIT_S
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError, ValueError):
                state = self.state()
                if check(state):
                    return state
            assert time.monotonic() < deadline, f"state never matched: {self.state()}"
            time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def running_modem(
    tmp: Path, config: dict[str, Any], *, tcp: bool = False, args: tuple[str, ...] = ()
) -> Iterator[Modem]:
    tmp.mkdir(parents=True, exist_ok=True)
    config_file, ready = tmp / "modem.json", tmp / "ready.json"
    state, log = tmp / "state.json", tmp / "modem.log"
    config_file.write_text(json.dumps({"attach_s": 0.2, "boot_s": 0.1, **config}))
    where = ["--tcp-port", "0"] if tcp else ["--pty-link", str(tmp / "modem.tty")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "drivers.radio.modem_emulator", "--config", str(config_file),
             *where, "--ready-file", str(ready), "--state-out", str(state), *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "emulator did not start"
            time.sleep(0.01)
        info = json.loads(ready.read_text())
        assert info["pid"] == proc.pid
        yield Modem(proc, info["url"], state, log, tmp)
    finally:
        _stop(proc)


class RawClient:
    """Bytes in, bytes out: a pty opened raw, or a TCP socket. Lines are split here."""

    def __init__(self, url: str) -> None:
        self.sock: socket.socket | None = None
        if url.startswith("socket://"):
            host, port = url[len("socket://") :].split(":")
            self.sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
            self.fd = self.sock.fileno()
        else:
            self.fd = os.open(url, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(self.fd)
        self.raw = b""
        self._buffer = b""
        self.lines: list[str] = []

    def send(self, text: str, end: bytes = b"\r") -> None:
        os.write(self.fd, text.encode() + end)

    def _pump(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return False
        chunk = os.read(self.fd, 4096)
        if not chunk:
            raise EOFError("connection closed")
        self.raw += chunk
        self._buffer += chunk
        while True:
            cuts = [i for i in (self._buffer.find(b"\r"), self._buffer.find(b"\n")) if i >= 0]
            if not cuts:
                return True
            line, self._buffer = self._buffer[: min(cuts)], self._buffer[min(cuts) + 1 :]
            if line.strip():
                self.lines.append(line.decode("latin-1"))

    def quiet(self, duration_s: float = 0.3) -> bytes:
        """Everything that arrives until nothing has come for ``duration_s``."""
        start = len(self.raw)
        while self._pump(duration_s):
            pass
        return self.raw[start:]

    def wait_line(self, match: Callable[[str], bool], timeout_s: float = WAIT_S) -> str:
        """Consume lines up to and including the first that matches."""
        deadline = time.monotonic() + timeout_s
        while True:
            while self.lines:
                line = self.lines.pop(0)
                if match(line):
                    return line
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no matching line arrived"
            self._pump(remaining)

    def command(self, command: str, timeout_s: float = WAIT_S) -> list[str]:
        """Send, then every line up to and including the final result code."""
        self.lines.clear()
        self.send(command)
        out: list[str] = []
        deadline = time.monotonic() + timeout_s
        while True:
            while self.lines:
                line = self.lines.pop(0)
                out.append(line)
                if line in FINALS or line.startswith("+CME ERROR"):
                    return out
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no final result to {command}: {out}"
            self._pump(remaining)

    def info(self, command: str) -> tuple[list[str], str]:
        """Information lines (echo and other commands' URCs left out) and the final result."""
        lines = self.command(command)
        names = set(re.findall(r"(\+[A-Z]+)", command.upper()))
        body = [
            x for x in lines[:-1]
            if x != command and not (_is_urc(x) and x.split(":")[0] not in names)
        ]  # fmt: skip
        return body, lines[-1]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        else:
            os.close(self.fd)


def _is_urc(line: str) -> bool:
    return line.startswith(("+CEREG: ", "+CREG: ", "+CGEV: "))


@contextmanager
def client(modem: Modem, echo: bool = False) -> Iterator[RawClient]:
    c = RawClient(modem.url)
    try:
        if not echo:
            c.command("ATE0")
        yield c
    finally:
        c.close()


def registered(state: dict[str, Any]) -> bool:
    return state["stat"] in (1, 5)


def set_attenuation(path: Path, atten_db: float) -> None:
    write_json_atomic(path, {"model": "attenuator", "settings": {"CHAN1:ATT": atten_db}})


def set_power(path: Path, on: bool, volts: float = 3.8) -> None:
    write_json_atomic(
        path, {"model": "power_supply", "settings": {"OUTP1": on, "SOUR1:VOLT": volts}}
    )


# --------------------------------------------------------------------------------------------
# Spec tables (in-process)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "value", "index"),
    [
        (CSQ_RSSI, -120.0, 0), (CSQ_RSSI, -113.0, 0), (CSQ_RSSI, -111.0, 1),
        (CSQ_RSSI, -109.0, 2), (CSQ_RSSI, -53.0, 30), (CSQ_RSSI, -51.0, 31),
        (CSQ_RSSI, -40.0, 31), (CSQ_RSSI, None, 99),
        (CESQ_RSRP, -150.0, 0), (CESQ_RSRP, -140.5, 0), (CESQ_RSRP, -140.0, 1),
        (CESQ_RSRP, -95.0, 46), (CESQ_RSRP, -44.0, 97), (CESQ_RSRP, None, 255),
        (CESQ_RSRQ, -25.0, 0), (CESQ_RSRQ, -19.5, 1), (CESQ_RSRQ, -10.0, 20),
        (CESQ_RSRQ, -3.0, 34), (CESQ_RSRQ, 0.0, 34), (CESQ_RSRQ, None, 255),
    ],
)  # fmt: skip
def test_index_scales_follow_the_spec_mappings(scale: Any, value: float | None, index: int) -> None:
    assert scale.encode(value) == index
    if value is not None and 0 < index < scale.last:
        assert scale.decode(index) == pytest.approx(value)  # interval's lower bound
    assert scale.decode(scale.unknown) is None


# --------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------


def test_pty_framing_echo_and_identity(tmp_path: Path) -> None:
    with running_modem(tmp_path, {"networks": [HOME], "imsi": "001010123456789"}) as modem:
        link = Path(modem.url)
        assert link.is_symlink() and os.readlink(link).startswith("/dev/pts/")
        with client(modem, echo=True) as c:
            c.send("AT")
            assert c.quiet() == b"AT\r\r\nOK\r\n"  # echo on by default, like real modems
            c.send("ATE0")
            assert c.quiet() == b"ATE0\r\r\nOK\r\n"  # the command that turns echo off is echoed
            c.send("AT+CGMI")
            assert c.quiet() == b"\r\nQuectel\r\n\r\nOK\r\n"
            c.send("AT+CSQ=?")
            assert c.quiet() == b"\r\n+CSQ: (0-31,99),(0-7,99)\r\n\r\nOK\r\n"
            assert c.info("ATI") == (["Quectel", "EC25", "Revision: EC25EFAR06A03M4G"], "OK")
            assert c.info("AT+CGMM") == (["EC25"], "OK")
            assert c.info("AT+CGMR") == (["EC25EFAR06A03M4G"], "OK")
            assert c.info("AT+CGSN") == (["866758040000017"], "OK")
            assert c.info("AT+CGSN=1") == (['+CGSN: "866758040000017"'], "OK")
            assert c.info("AT+CIMI") == (["001010123456789"], "OK")
    assert not link.exists() and not link.is_symlink(), "the symlink must go with the emulator"


def test_line_endings_case_and_concatenated_commands(tmp_path: Path) -> None:
    with running_modem(tmp_path, {"networks": [HOME]}) as modem, client(modem) as c:
        for end in (b"\r", b"\n", b"\r\n"):
            c.lines.clear()
            c.send("at+cgmi", end)
            assert c.wait_line(lambda x: x in FINALS) == "OK"
        assert c.info("AT+CGMI;+CGMM") == (["Quectel", "EC25"], "OK")
        assert c.info("ATE0V1Q0") == ([], "OK")
        assert c.info("ATS3?") == (["013"], "OK")
        c.send("junk without the prefix")
        assert c.quiet() == b""  # V.250: nothing but AT starts a command
        assert c.info("A/") == (["013"], "OK")  # repeats the last command line
        assert c.info("AT+CGMM") == (["EC25"], "OK")


def test_cme_error_modes_and_unknown_commands(tmp_path: Path) -> None:
    with running_modem(tmp_path, {"networks": [HOME]}) as modem, client(modem) as c:
        assert c.info("AT+CMEE?") == (["+CMEE: 1"], "OK")  # numeric by default
        assert c.info("AT+CMEE=?") == (["+CMEE: (0-2)"], "OK")
        assert c.info("AT+CFUN=7") == ([], "+CME ERROR: 4")
        assert c.info("AT+NOSUCH") == ([], "ERROR")  # unknown: plain ERROR whatever CMEE says
        assert c.info("AT+CMEE=2") == ([], "OK")
        assert c.info("AT+CFUN=7") == ([], "+CME ERROR: operation not supported")
        assert c.info("AT+CMEE=0") == ([], "OK")
        assert c.info("AT+CFUN=7") == ([], "ERROR")
        assert c.info("AT+CMEE=1;+CGMI;+CFUN=9;+CGMM") == (["Quectel"], "+CME ERROR: 4")
        assert c.info("ATD112;") == ([], "NO CARRIER")
        assert c.info("AT&F") == ([], "OK")  # factory profile: echo back on
        assert c.command("AT")[0] == "AT"


def test_tcp_serves_one_client_and_a_new_one_replaces_it(tmp_path: Path) -> None:
    with running_modem(tmp_path, {"networks": [HOME]}, tcp=True) as modem:
        assert modem.url.startswith("socket://127.0.0.1:")
        first = RawClient(modem.url)
        second = None
        try:
            assert first.command("ATE0")[-1] == "OK"
            second = RawClient(modem.url)
            assert second.command("AT+CGMI")[-2:] == ["Quectel", "OK"]  # echo still off
            with pytest.raises(EOFError):
                first.quiet(1.0)
        finally:
            first.close()
            if second is not None:
                second.close()


# --------------------------------------------------------------------------------------------
# Radio behaviour
# --------------------------------------------------------------------------------------------


def test_attenuation_drives_registration_signal_and_urcs(tmp_path: Path) -> None:
    att = tmp_path / "att.state.json"
    config = {"networks": [HOME], "min_rsrp_dbm": -120, "hysteresis_db": 3,
              "attenuator": {"state_file": str(att), "key": "CHAN1:ATT"}}  # fmt: skip
    with running_modem(tmp_path, config) as modem, client(modem) as c:
        modem.wait_state(registered)  # a missing attenuator file means 0 dB
        for command in ("AT+CEREG=2", "AT+CREG=1", "AT+CGEREP=2,1"):
            assert c.info(command) == ([], "OK")
        assert c.info("AT+CEREG?") == (['+CEREG: 2,1,"00A1","01A2B3C4",7'], "OK")
        assert c.info("AT+CREG?") == (["+CREG: 1,1"], "OK")
        # rsrp -95 dBm, rsrq -10 dB; RSSI = RSRP + 10 log10(100 RB) - RSRQ = -65 dBm
        assert c.info("AT+CESQ") == (["+CESQ: 99,99,255,255,20,46"], "OK")
        assert c.info("AT+CSQ") == (["+CSQ: 24,99"], "OK")

        set_attenuation(att, 20.0)  # -115 dBm: still in service
        modem.wait_state(lambda s: s["attenuation_db"] == 20.0)
        assert c.info("AT+CESQ") == (["+CESQ: 99,99,255,255,20,26"], "OK")

        c.lines.clear()
        set_attenuation(att, 30.0)  # -125 dBm: below -120, lost at once
        assert c.wait_line(lambda x: x.startswith("+CEREG")) == "+CEREG: 2"
        assert c.wait_line(lambda x: x.startswith("+CREG")) == "+CREG: 2"
        assert c.wait_line(lambda x: x.startswith("+CGEV")) == "+CGEV: NW PDN DEACT 1"
        assert c.wait_line(lambda x: x.startswith("+CGEV")) == "+CGEV: NW DETACH"
        assert c.info("AT+CESQ") == (["+CESQ: 99,99,255,255,255,255"], "OK")
        assert c.info("AT+CSQ") == (["+CSQ: 99,99"], "OK")
        assert c.info("AT+CGPADDR=1") == (["+CGPADDR: 1"], "OK")

        set_attenuation(att, 23.0)  # -118 dBm: above the minimum, below min + hysteresis
        modem.wait_state(lambda s: s["attenuation_db"] == 23.0)
        time.sleep(0.6)  # three attach times
        assert modem.state()["stat"] == 2, "regained service without the hysteresis margin"

        set_attenuation(att, 10.0)
        assert c.wait_line(lambda x: x.startswith("+CEREG")) == '+CEREG: 1,"00A1","01A2B3C4",7'
        assert c.wait_line(lambda x: x.startswith("+CGEV")) == "+CGEV: ME PDN ACT 1"
        assert c.info("AT+CGPADDR=1") == (['+CGPADDR: 1,"10.45.0.2"'], "OK")


def test_power_off_silences_the_modem_and_power_on_reboots_it(tmp_path: Path) -> None:
    psu = tmp_path / "psu.state.json"
    set_power(psu, True)
    config = {"networks": [HOME],
              "power": {"state_file": str(psu), "output_key": "OUTP1", "voltage_key": "SOUR1:VOLT",
                        "min_voltage_v": 3.3}}  # fmt: skip
    with running_modem(tmp_path, config) as modem, client(modem) as c:
        modem.wait_state(registered)
        assert c.info("AT+CEREG=1") == ([], "OK")
        assert c.info("AT+CMEE=2") == ([], "OK")
        set_power(psu, True, volts=3.0)  # under-voltage: off as well
        modem.wait_state(lambda s: not s["powered"])
        c.send("AT")
        assert c.quiet(0.8) == b"", "a modem without power must not answer"

        set_power(psu, True)
        assert c.wait_line(lambda x: x == "RDY") == "RDY"
        assert c.wait_line(lambda x: x.startswith("+CPIN")) == "+CPIN: READY"
        lines = c.command("AT+CMEE?")
        assert lines == ["AT+CMEE?", "+CMEE: 1", "OK"], "settings and echo back to defaults"
        modem.wait_state(registered)
        assert c.info("AT+CEREG?")[0] == ["+CEREG: 0,1"]  # URCs off again after the reboot
        assert modem.state()["reboots"] == 1


def test_rf_off_and_on(tmp_path: Path) -> None:
    with running_modem(tmp_path, {"networks": [HOME]}) as modem, client(modem) as c:
        modem.wait_state(registered)
        assert c.info("AT+CEREG=1;+CGEREP=2") == ([], "OK")
        assert c.info("AT+CFUN?") == (["+CFUN: 1"], "OK")
        assert c.command("AT+CFUN=4") == ["+CEREG: 0", "+CGEV: ME DETACH", "OK"]
        assert c.info("AT+CFUN?") == (["+CFUN: 4"], "OK")
        assert c.info("AT+CSQ") == (["+CSQ: 99,99"], "OK")
        assert c.info("AT+CGATT?") == (["+CGATT: 0"], "OK")
        state = modem.wait_state(lambda s: s["fun"] == 4)
        assert state["stat"] == 0 and not state["pdn"]["1"]["active"]
        assert c.command("AT+CFUN=1") == ["+CEREG: 2", "OK"]  # searching, then attached
        assert c.wait_line(lambda x: x.startswith("+CEREG")) == "+CEREG: 1"
        assert c.info("AT+CGATT?") == (["+CGATT: 1"], "OK")


def test_manual_selection_roaming_forbidden_and_absent_networks(tmp_path: Path) -> None:
    with running_modem(tmp_path, {"networks": [HOME, ROAM, BARRED]}) as modem, client(modem) as c:
        modem.wait_state(registered)
        assert c.info("AT+COPS?") == (['+COPS: 0,0,"Home Net",7'], "OK")
        assert c.info("AT+COPS=3,2") == ([], "OK")
        assert c.info("AT+COPS?") == (['+COPS: 0,2,"00101",7'], "OK")
        assert c.info("AT+COPS=?") == (
            ['+COPS: (2,"Home Net","Home","00101",7),(1,"Roam Net","Roam","00102",7),'
             '(3,"Barred Net","Barred","00103",7),,(0,1,2,3,4),(0,1,2)'],
            "OK",
        )  # fmt: skip
        assert c.info("AT+CEREG=2") == ([], "OK")
        # manual selection answers once registered, with the URCs before the final result
        lines = c.command('AT+COPS=1,2,"00102",7')
        assert lines[-1] == "OK"
        assert '+CEREG: 5,"0002","00000005",7' in lines
        assert c.info("AT+COPS?") == (['+COPS: 1,2,"00102",7'], "OK")
        assert modem.state()["plmn"] == "00102"

        lines = c.command('AT+COPS=1,2,"00103"')
        assert lines[-1] == "+CME ERROR: 32"  # network not allowed
        assert '+CEREG: 3,"0001","00000001",7' in lines
        assert c.info("AT+CEREG=3;+CEREG?") == (['+CEREG: 3,3,"0001","00000001",7,0,11'], "OK")
        assert c.info("AT+COPS?") == (["+COPS: 1"], "OK")

        assert c.info('AT+COPS=1,2,"99999"') == ([], "+CME ERROR: 30")
        assert c.info('AT+COPS=1,2,"00101",0') == ([], "+CME ERROR: 4")  # GSM on an LTE modem
        assert c.info("AT+COPS=0") == ([], "OK")
        modem.wait_state(lambda s: s["stat"] == 1 and s["plmn"] == "00101")
        assert c.info("AT+COPS=2") == ([], "OK")
        assert modem.wait_state(lambda s: s["mode"] == 2)["stat"] == 0


def test_pdn_contexts_and_qos(tmp_path: Path) -> None:
    config = {"networks": [HOME], "apn": "mcx", "pdn_address": "10.46.0.7", "qci": 69}
    with running_modem(tmp_path, config) as modem, client(modem) as c:
        modem.wait_state(registered)
        assert c.info("AT+CGEREP=2,1") == ([], "OK")
        assert c.info("AT+CGDCONT?") == (['+CGDCONT: 1,"IP","mcx","10.46.0.7",0,0'], "OK")
        assert c.info("AT+CGDCONT=?")[0][0] == '+CGDCONT: (1-15),"IP",,,(0-2),(0-4)'
        assert c.info('AT+CGDCONT=2,"IPV4V6","internet"') == ([], "OK")
        assert c.info('AT+CGDCONT=3,"X25","old"') == ([], "+CME ERROR: 4")
        assert c.info("AT+CGACT?") == (["+CGACT: 1,1", "+CGACT: 2,0"], "OK")
        assert c.info("AT+CGPADDR") == (['+CGPADDR: 1,"10.46.0.7"', "+CGPADDR: 2"], "OK")
        assert c.info("AT+CGEQOSRDP=1") == (["+CGEQOSRDP: 1,69,0,0,0,0"], "OK")
        assert c.info("AT+CGEQOSRDP=?") == (["+CGEQOSRDP: (1)"], "OK")

        assert c.command("AT+CGACT=0,1") == ["+CGEV: ME PDN DEACT 1", "OK"]
        assert c.info("AT+CGPADDR=1") == (["+CGPADDR: 1"], "OK")
        assert c.info("AT+CGEQOSRDP=1") == ([], "OK")
        assert not modem.wait_state(lambda s: not s["data_service"])["pdn"]["1"]["active"]
        assert modem.state()["stat"] == 1  # still registered without a PDN
        assert c.command("AT+CGACT=1,1") == ["+CGEV: ME PDN ACT 1", "OK"]
        assert c.info("AT+CGACT=1,9") == ([], "+CME ERROR: 4")  # undefined context


def test_qeng_servingcell_reports_18_items(tmp_path: Path) -> None:
    with running_modem(tmp_path, {"networks": [HOME]}) as modem, client(modem) as c:
        modem.wait_state(registered)
        (line,), final = c.info('AT+QENG="servingcell"')
        assert final == "OK"
        assert line == ('+QENG: "servingcell","CONNECT","LTE","FDD",001,01,1A2B3C4,7,1300,3,5,5,'
                        "A1,-95,-10,-65,18,25")  # fmt: skip
        assert len(line.split(": ", 1)[1].split(",")) == 18
        assert c.info("AT+CGACT=0,1") == ([], "OK")
        assert c.info('AT+QENG="servingcell"')[0][0].split(",")[1] == '"NOCONN"'
        assert c.info("AT+CFUN=4") == ([], "OK")
        assert c.info('AT+QENG="servingcell"') == (['+QENG: "servingcell","SEARCH"'], "OK")
        assert c.info('AT+QENG="nonsense"') == ([], "+CME ERROR: 4")


def test_sim_pin_gates_network_commands(tmp_path: Path) -> None:
    with running_modem(tmp_path, {"networks": [HOME], "pin": "1234"}) as modem, client(modem) as c:
        assert c.info("AT+CPIN?") == (["+CPIN: SIM PIN"], "OK")
        assert c.info("AT+CIMI") == ([], "+CME ERROR: 11")
        assert c.info("AT+COPS?") == ([], "+CME ERROR: 11")
        assert c.info("AT+CEREG?") == (["+CEREG: 0,0"], "OK")  # allowed, not registered
        assert c.info('AT+CPIN="0000"') == ([], "+CME ERROR: 16")
        assert c.info("AT+CMEE=2") == ([], "OK")
        assert c.info('AT+CPIN="0001"') == ([], "+CME ERROR: incorrect password")
        assert c.info('AT+CPIN="1234"') == ([], "OK")
        assert c.info("AT+CPIN?") == (["+CPIN: READY"], "OK")
        assert modem.wait_state(registered)["sim"] == "READY"
        assert c.info('AT+CPIN="1234"') == ([], "+CME ERROR: operation not allowed")


# --------------------------------------------------------------------------------------------
# Fault injection, state image, link coupling
# --------------------------------------------------------------------------------------------


def test_garbage_lines_and_interleaved_urcs(tmp_path: Path) -> None:
    att = tmp_path / "att.state.json"
    config = {"networks": [HOME], "attenuator": {"state_file": str(att), "key": "CHAN1:ATT"}}
    args = ("--garble-every", "2", "--interleave-urcs", "--seed", "7")
    with running_modem(tmp_path, config, args=args) as modem, client(modem) as c:
        modem.wait_state(registered)
        c.send("AT+CGMI")
        out = c.quiet()
        assert out.startswith(b"\r\nQuectel\r\n\r\nOK\r\n\r\n")  # 2nd response, then noise
        noise = out[len(b"\r\nQuectel\r\n\r\nOK\r\n\r\n") : -2]
        assert len(noise) >= 4 and all(b >= 0x80 for b in noise)
        assert c.info("AT+CEREG=1") == ([], "OK")
        set_attenuation(att, 60.0)
        modem.wait_state(lambda s: s["stat"] == 2)
        c.quiet(0.1)
        c.send("AT+CSQ")
        # the +CEREG that fell due meanwhile rides inside the next answer, before its OK
        assert c.quiet().startswith(b"\r\n+CSQ: 99,99\r\n\r\n+CEREG: 2\r\n\r\nOK\r\n")


def test_state_out_and_a_clean_exit_on_sigterm(tmp_path: Path) -> None:
    with running_modem(tmp_path, {"networks": [HOME]}) as modem:
        state = modem.wait_state(registered)
        assert state["pid"] == modem.proc.pid
        assert state["powered"] and state["fun"] == 1 and state["plmn"] == "00101"
        assert state["rsrp_dbm"] == -95.0 and state["attenuation_db"] == 0.0
        assert state["pdn"]["1"] == {"active": True, "address": "10.45.0.2", "apn": "internet",
                                     "type": "IP"}  # fmt: skip
        modem.proc.send_signal(signal.SIGTERM)
        assert modem.proc.wait(timeout=5) == 0
        assert "serving on" in modem.log.read_text()


def test_a_bad_configuration_is_refused_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"networks": [{"plmn": "1"}]}))
    proc = subprocess.run(
        [sys.executable, "-m", "drivers.radio.modem_emulator", "--config", str(config),
         "--tcp-port", "0", "--ready-file", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=20, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "plmn must be MCC+MNC digits" in proc.stderr
    assert not (tmp_path / "r.json").exists()


def _wait(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_links_are_blocked_while_the_modem_has_no_data_service(tmp_path: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="mdm", dir="/tmp"))  # AF_UNIX paths are short
    try:
        home_link, roam_link, absent = short / "home.sock", short / "roam.sock", short / "no.sock"
        att = tmp_path / "att.state.json"
        networks = [{**HOME, "link": str(home_link)}, {**ROAM, "link": str(roam_link)},
                    {**BARRED, "link": str(absent)}]  # fmt: skip
        config = {"networks": networks, "block_reason": "no-service:ue1",
                  "attenuator": {"state_file": str(att), "key": "CHAN1:ATT"}}  # fmt: skip
        with (
            relay_socket(home_link) as home,
            relay_socket(roam_link) as roam,
            running_modem(tmp_path, config) as modem,
            client(modem) as c,
        ):
            _wait(lambda: home.blocks() == [True, False], f"home: {home.requests}")
            assert home.requests[0] == {"cmd": "block", "reason": "no-service:ue1", "on": True}
            assert roam.blocks() == [True]  # not serving: stays blocked

            set_attenuation(att, 40.0)  # coverage lost
            _wait(lambda: home.blocks()[-1:] == [True], f"home: {home.requests}")
            set_attenuation(att, 0.0)
            _wait(lambda: home.blocks() == [True, False, True, False], f"{home.requests}")

            assert c.info("AT+CFUN=4") == ([], "OK")
            _wait(lambda: home.blocks()[-1:] == [True], "RF off must block")
            assert c.info("AT+CFUN=1") == ([], "OK")
            _wait(lambda: home.blocks()[-1:] == [False], "RF on must unblock")

            assert c.info("AT+CGACT=0,1") == ([], "OK")  # registered, but no PDN
            _wait(lambda: home.blocks()[-1:] == [True], "PDN down must block")
            assert c.info("AT+CGACT=1,1") == ([], "OK")
            _wait(lambda: home.blocks()[-1:] == [False], "PDN up must unblock")
            assert c.info('AT+COPS=1,2,"00102"') == ([], "OK")
            _wait(lambda: roam.blocks() == [True, False], f"roam: {roam.requests}")
            assert home.blocks()[-1] is True
            # a relay that is not there is logged and retried, and the modem carries on
            assert "no.sock: cannot block" in modem.log.read_text()
            # the relay is told on a thread of its own: the state file may follow a bit later
            _wait(lambda: modem.state()["stat"] == 5, f"roaming state: {modem.state()}")
    finally:
        for leftover in short.iterdir():
            leftover.unlink()
        short.rmdir()
