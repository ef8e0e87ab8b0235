"""An independent check of the emulated modem: python-gsmmodem-new, a third-party AT library
written against real GSM/LTE modems, connects to the emulator over its pty and runs its whole
``connect()`` start-up sequence (ATZ, ATE0, +CFUN, +CMEE, +CPIN, +CLAC, +COPS, SMS set-up,
+CLIP, +CRC, +CVHU), then reads the identity, the signal (compared with the spec mapping of the
configured RSRP/RSRQ, worked out by hand here) and the operator, and waits for coverage. If the
emulator answered anything a real modem would not, this library would stumble on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

gsmmodem = pytest.importorskip("gsmmodem.modem")
exceptions = pytest.importorskip("gsmmodem.exceptions")

# RSRP -95 dBm, RSRQ -10 dB on 20 MHz (100 resource blocks): RSSI = RSRP + 10 log10(100) - RSRQ
# = -65 dBm (TS 36.214 RSRQ = N x RSRP / RSSI); +CSQ rssi = (-65 + 113) / 2 = 24 (TS 27.007 §8.5)
HOME = {"plmn": "00101", "long": "Testbed Home", "short": "Home", "rsrp_dbm": -95, "rsrq_db": -10}
EXPECTED_CSQ = 24


def _start(tmp: Path, config: dict[str, object]) -> tuple[subprocess.Popen[bytes], str]:
    (tmp / "modem.json").write_text(json.dumps({"attach_s": 0.2, **config}))
    ready = tmp / "ready.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivers.radio.modem_emulator", "--config", str(tmp / "modem.json"),
         "--pty-link", str(tmp / "modem.tty"), "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "emulator did not start"
        time.sleep(0.01)
    return proc, str(json.loads(ready.read_text())["url"])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.mark.slow
def test_python_gsmmodem_connects_and_reads_the_emulated_modem(tmp_path: Path) -> None:
    proc, url = _start(tmp_path, {"networks": [HOME], "imsi": "001010000004242"})
    modem = gsmmodem.GsmModem(url, 115200)
    try:
        modem.connect()
        assert modem.manufacturer == "Quectel"
        assert modem.model == "EC25"
        assert modem.revision == "EC25EFAR06A03M4G"
        assert modem.imei == "866758040000017"
        assert modem.imsi == "001010000004242"
        assert modem.waitForNetworkCoverage(timeout=10) == EXPECTED_CSQ
        assert modem.signalStrength == EXPECTED_CSQ
        assert modem.networkName == "Testbed Home"  # connect() asked for the long format
        assert modem.smsc is not None
    finally:
        modem.close()
        _stop(proc)


@pytest.mark.slow
def test_python_gsmmodem_unlocks_the_sim_and_sees_a_wrong_pin(tmp_path: Path) -> None:
    proc, url = _start(tmp_path, {"networks": [HOME], "pin": "4321"})
    modem = gsmmodem.GsmModem(url, 115200)
    try:
        with pytest.raises(exceptions.PinRequiredError):
            modem.connect()
        modem.close()
        modem = gsmmodem.GsmModem(url, 115200)
        with pytest.raises(exceptions.IncorrectPinError):
            modem.connect(pin="0000")  # +CME ERROR: 16
        modem.close()
        modem = gsmmodem.GsmModem(url, 115200)
        modem.connect(pin="4321")
        assert modem.imsi == "001010000000001"
    finally:
        modem.close()
        _stop(proc)
