"""Tests of the PEI driver (``PeiTerminal``) and the emulated core driver (``EmulatedSwmi``)
against the emulators as real processes: two or three terminals share one SwMI, each driver
starts its own terminal emulator and speaks the PEI to it over a real pty (one over TCP).
Timings measured from URCs are checked against the SwMI's own events file with generous
bounds; faults (noise, URCs inside answers, a killed emulator) are real. Every driver is
closed in a ``finally`` and the test checks that no emulator process is left."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
from drivers.radio.at import AtCommandError  # noqa: E402
from drivers.tetra import tables  # noqa: E402
from drivers.tetra.emulated_swmi import EmulatedSwmi, read_events  # noqa: E402
from drivers.tetra.pei import PeiTerminal  # noqa: E402
from tests.drivers.support import Processes  # noqa: E402

GROUP = 9001
WAIT_S = 5.0
SLACK_S = 0.05
"""Tolerance when comparing wall times taken by different processes of this machine."""


@dataclass
class Recorder:
    """What the drivers hand the run: events (by device) and faults."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)

    def of(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [f for n, f in list(self.events)
                if n == name and all(f.get(k) == v for k, v in match.items())]  # fmt: skip

    def wait(self, name: str, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            found = self.of(name, **match)
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"no {name} {match}; last: {self.events[-6:]}")


def make_context(tmp_path: Path, recorder: Recorder, device: str) -> DeviceContext:
    return DeviceContext(
        run_dir=tmp_path,
        name_prefix="tb-test",
        emit=lambda name, fields: recorder.events.append((name, {"device": device, **fields})),
        processes=Processes(),
        nodes=None,
        fault=recorder.faults.append,
    )


@dataclass
class Lab:
    tmp: Path
    recorder: Recorder
    swmi: EmulatedSwmi
    radios: dict[str, PeiTerminal]

    def swmi_events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in read_events(self.swmi.events_path)
                if e["event"] == name and all(e.get(k) == v for k, v in match.items())]  # fmt: skip


def radio_settings(issi: int, **emulator: Any) -> dict[str, Any]:
    return {"emulator": {"swmi": "core", "issi": issi, **emulator}, "group": GROUP,
            "timeout_s": WAIT_S}  # fmt: skip


@contextmanager
def tetra_lab(tmp_path: Path, radios: dict[str, dict[str, Any]], **swmi: Any) -> Iterator[Lab]:
    recorder = Recorder()
    core = EmulatedSwmi("core", {"hang_time_s": 30, **swmi},
                        make_context(tmp_path, recorder, "core"))  # fmt: skip
    opened: dict[str, PeiTerminal] = {}
    try:
        core.open()
        for name, settings in radios.items():
            opened[name] = PeiTerminal(name, settings, make_context(tmp_path, recorder, name))
            opened[name].open()
        yield Lab(tmp_path, recorder, core, opened)
    finally:
        procs = [core.process.proc] if core.process else []
        for radio in opened.values():
            if radio.emulator_process is not None:
                procs.append(radio.emulator_process.proc)
            radio.safe_state()
            radio.close()
        core.safe_state()
        core.close()
        for proc in procs:
            if proc.poll() is None:  # a failed close must not leave the process behind
                proc.kill()
                proc.wait(timeout=10)
                raise AssertionError(f"close() left process {proc.pid} running")


def transcript_marks(radio: PeiTerminal) -> list[tuple[str, str]]:
    """(mark, text) of every transcript line."""
    out = []
    for line in radio.transcript_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            continue
        _stamp, _, rest = line.partition(" ")
        mark, _, text = rest.partition(" ")
        out.append((mark, text))
    return out


def lines_written(tmp_path: Path, radio: str) -> int:
    state = json.loads((tmp_path / "emulators" / f"{radio}.terminal.json").read_text())
    return int(state["counts"]["lines_out"])


def wait_transcript_complete(tmp_path: Path, radio: PeiTerminal) -> tuple[int, int]:
    """Lines the emulator wrote vs lines the transcript holds as read, once they agree."""
    deadline = time.monotonic() + WAIT_S
    while True:
        read = sum(1 for mark, _ in transcript_marks(radio) if mark in ("<", "~", "?"))
        written = lines_written(tmp_path, radio.name)
        if read == written or time.monotonic() > deadline:
            return written, read
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------


def test_call_access_preemption_sds_and_counters(tmp_path: Path) -> None:
    radios = {"a": radio_settings(1001), "b": radio_settings(1002),
              "c": radio_settings(1003, transport="tcp")}  # fmt: skip
    with tetra_lab(tmp_path, radios) as lab:
        a, b, c = lab.radios["a"], lab.radios["b"], lab.radios["c"]
        rec = lab.recorder
        assert a.tsi == tables.extended_tsi(901, 16383, 1001) and a.issi == 1001
        assert a.selected_group == GROUP
        assert state_path(tmp_path, "core").exists()

        called = a.perform("call", {"group": GROUP})
        assert called["setup_ms"] is not None and called["setup_ms"] > 0
        assert (
            rec.wait("tetra.call", device="a", event="connected")["setup_ms"] == called["setup_ms"]
        )
        for member in ("b", "c"):
            incoming = rec.wait("tetra.call", device=member, event="incoming")
            assert incoming["group"] == GROUP and incoming["caller"] == a.tsi

        sent_wall = time.time()
        pressed = a.perform("ptt_press", {"priority": "high"})
        assert pressed["grant"] == tables.TX_GRANTED and pressed["grant_name"] == "granted"
        access_ms = pressed["access_ms"]
        assert access_ms is not None and 0 < access_ms < 5000
        # the SwMI's own times lie between the demand leaving and the grant being read
        granted_urc = rec.wait("tetra.tx", device="a", grant=0)
        demand = lab.swmi_events("tx_demand", issi=1001)[0]
        granted = lab.swmi_events("tx_granted", issi=1001)[0]
        assert sent_wall - SLACK_S <= demand["wall"] <= granted["wall"]
        assert granted["wall"] <= granted_urc["wall"] + SLACK_S
        assert access_ms / 1000 >= granted["wall"] - demand["wall"] - SLACK_S
        assert access_ms / 1000 <= granted_urc["wall"] - sent_wall + SLACK_S
        assert rec.wait("tetra.tx", device="b", grant=3)["tpi"] == a.tsi

        # b pre-empts a; a sees it, with b as the new talker
        assert b.perform("ptt_press", {"priority": "preemptive"})["grant"] == 0
        preempted = rec.wait("tetra.preempted", device="a")
        assert preempted["by_tpi"] == b.tsi
        assert lab.swmi_events("tx_preempted", issi=1001)[0]["by"] == 1002

        # c asks with low priority: queued; granted later when b releases
        queued = c.perform("ptt_press", {"priority": "low", "timeout_s": 0.3})
        assert queued["grant"] == tables.TX_QUEUED and queued["access_ms"] is None
        assert b.perform("ptt_release", {})["was_transmitting"] is True
        late = rec.wait("tetra.tx", device="c", grant=0)
        assert late["access_ms"] > 0
        assert rec.wait("tetra.tx", device="a", grant_name="ceased")["by"] == "other"
        c.perform("ptt_release", {})

        sds = c.perform("send_sds", {"to": 1001, "text": "Grüße from c"})
        assert sds["status"] == tables.SDS_SENT and sds["status_name"] == tables.SDS_STATUS[4]
        received = rec.wait("tetra.sds", device="a", direction="in")
        assert received["text"] == "Grüße from c" and received["peer"] == "1003"
        failed = c.perform("send_sds", {"to": 4242, "text": "nobody"})
        assert failed["status"] == tables.SDS_FAILED

        assert a.perform("hangup", {})["released"] == [called["cc"]]
        for member in ("b", "c"):
            released = rec.wait("tetra.call", device=member, event="released")
            assert released["cause"] == 1 and released["cause_name"] == "user request"

        counters = dict(a.counters())
        assert counters["access_ms"] == [access_ms] and counters["access_ms_p50"] == access_ms
        assert counters["setup_ms"] == [called["setup_ms"]]
        assert counters["preempted_tx"] == 1 and counters["sds_received"] == 1
        assert counters["channel"]["garbled"] == 0
        assert dict(c.counters())["sds_failed"] == 1
        core = dict(lab.swmi.counters())
        assert core["calls_set_up"] == 1 and core["tx_preempted"] == 1
        assert core["tx_queued"] == 1 and core["sds"] == {"delivered": 1, "failed": 1}
        assert core["calls_released"] == {"user request": 1} and core["alive"] is True

        # the transcript holds every line the terminal wrote, and what was sent
        for radio in (a, c):
            written, read = wait_transcript_complete(tmp_path, radio)
            assert read == written
        marks = transcript_marks(a)
        assert (">", f"ATD{GROUP}") in marks and ("~", f"+CTXG: 1,3,0,0,3,{b.tsi}") in marks
        assert not lab.recorder.faults


def test_garbled_lines_interleaved_urcs_and_pei_errors(tmp_path: Path) -> None:
    radios = {"a": radio_settings(1001, garble_every=3, interleave_urcs=True),
              "b": radio_settings(1002)}  # fmt: skip
    with tetra_lab(tmp_path, radios) as lab:
        a, b = lab.radios["a"], lab.radios["b"]
        rec = lab.recorder
        called = a.perform("call", {"priority": "emergency"})
        assert called["priority"] == tables.CALL_PRIORITY_EMERGENCY and called["setup_ms"] > 0
        assert rec.wait("tetra.call", device="b", event="incoming")["priority"] == 15
        pressed = a.perform("ptt_press", {"priority": "emergency"})
        assert pressed["grant"] == 0 and pressed["access_ms"] > 0
        b.perform("ptt_press", {"priority": 0, "timeout_s": 0.3})
        a.perform("ptt_release", {})
        assert rec.wait("tetra.tx", device="b", grant=0)["access_ms"] > 0
        assert b.perform("send_sds", {"to": 1001, "text": "noisy"})["status"] == 4
        assert rec.wait("tetra.sds", device="a", direction="in")["text"] == "noisy"

        # the noise was read and set aside; the URCs came inside the answers
        assert a.channel is not None and a.channel.counts["garbled"] > 0
        marks = transcript_marks(a)
        ctxd = marks.index((">", "AT+CTXD=1,3"))
        answer = marks[ctxd:]
        ok = answer.index(("<", "OK"))
        assert ("~", "+CTXG: 1,0,0,0") in answer[:ok]  # between the command and its OK
        dial = marks.index((">", f"ATD{GROUP}"))
        assert marks[dial:].index(("~", "+CTCC: 1,1,1,0,0,1,1")) < marks[dial:].index(("<", "OK"))
        written, read = wait_transcript_complete(tmp_path, a)
        assert read == written

        # +CME ERROR numbers are named from the PEI table, not the 27.007 one
        with pytest.raises(AtCommandError) as failure:
            a.channel.command("AT+CTXD=77,1")
        assert failure.value.code == 3 and failure.value.reason == tables.PEI_ERRORS[3]
        with pytest.raises(AtCommandError) as failure:
            a.channel.command("AT+CTOM=1")
        assert failure.value.reason == "not supported"
        assert b.perform("hangup", {})["released"] == [1]  # b leaves a's call
        with pytest.raises(DriverError, match="no call"):
            b.perform("ptt_press", {})
        with pytest.raises(DriverError, match="priority"):
            a.perform("ptt_press", {"priority": "urgent"})
        assert not rec.faults


def test_killed_terminal_emulator_is_a_fault_and_safe_state_survives(tmp_path: Path) -> None:
    radios = {"a": radio_settings(1001), "b": radio_settings(1002)}
    with tetra_lab(tmp_path, radios) as lab:
        a, b = lab.radios["a"], lab.radios["b"]
        a.perform("call", {})
        a.perform("ptt_press", {})
        assert a.emulator_process is not None
        a.emulator_process.proc.kill()
        deadline = time.monotonic() + WAIT_S
        while not lab.recorder.faults and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # a second report would come now
        assert len(lab.recorder.faults) == 1
        fault = lab.recorder.faults[0]
        assert "PEI connection lost" in fault and "SIGKILL" in fault
        assert lab.recorder.wait("tetra.lost", device="a")["reason"] == fault
        assert dict(a.counters())["lost"] == fault
        # b's view: the talker went away with its terminal
        assert lab.recorder.wait("tetra.tx", device="b", grant_name="ceased")["by"] == "other"
        with pytest.raises(DriverError):
            a.perform("ptt_release", {})
        a.safe_state()  # never raises
        a.close()
        a.close()
        b.safe_state()
        assert lab.swmi_events("deregister", issi=1001)


def test_settings_are_validated() -> None:
    recorder = Recorder()
    context = make_context(Path("/nonexistent"), recorder, "x")
    bad: list[dict[str, Any]] = [
        {},
        {"url": "/dev/null", "emulator": {"swmi": "core", "issi": 1}},
        {"url": "/dev/null", "baud": 9600},
        {"url": "/dev/null", "timeout_s": 0},
        {"url": "/dev/null", "group": "nine"},
        {"url": "/dev/null", "safe_state": "off"},
        {"emulator": {"issi": 1}},
        {"emulator": {"swmi": "core", "issi": 0}},
        {"emulator": {"swmi": "core", "issi": 1, "power": {"channel": 1}}},
        {"emulator": {"swmi": "core", "issi": 1, "transport": "usb"}},
    ]
    for settings in bad:
        with pytest.raises(DriverError):
            PeiTerminal("x", settings, context)
    for swmi in ({"hang_time_s": -1}, {"queueing": "yes"}, {"mcc": 901}, {"colour": 1}):
        with pytest.raises(DriverError):
            EmulatedSwmi("core", swmi, context)
    radio = PeiTerminal("x", {"emulator": {"swmi": "core", "issi": 7}}, context)
    radio.safe_state()  # never opened: nothing to do, no error
    radio.close()


def test_open_without_a_running_swmi_says_so(tmp_path: Path) -> None:
    recorder = Recorder()
    radio = PeiTerminal("a", radio_settings(1001), make_context(tmp_path, recorder, "a"))
    with pytest.raises(DriverError, match="SwMI 'core' is not running"):
        radio.open()
    radio.close()


def test_power_cycle_through_the_power_supply_state(tmp_path: Path) -> None:
    psu = state_path(tmp_path, "psu1")
    psu.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(psu, {"settings": {"OUTP1": True, "SOUR1:VOLT": 13.8}})
    power = {"device": "psu1", "channel": 1, "min_voltage_v": 10.0}
    radios = {"a": {**radio_settings(1001, power=power), "timeout_s": 1.0},
              "b": radio_settings(1002)}  # fmt: skip
    with tetra_lab(tmp_path, radios) as lab:
        a, b = lab.radios["a"], lab.radios["b"]
        a.perform("select_group", {"group": 9002})
        a.perform("call", {"group": GROUP})
        write_json_atomic(psu, {"settings": {"OUTP1": True, "SOUR1:VOLT": 9.0}})  # too low
        deadline = time.monotonic() + WAIT_S
        while not lab.swmi_events("deregister", issi=1001):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(DriverError, match="does not answer"):
            a.perform("ptt_press", {})

        write_json_atomic(psu, {"settings": {"OUTP1": True, "SOUR1:VOLT": 13.8}})
        deadline = time.monotonic() + WAIT_S
        while len(lab.swmi_events("register", issi=1001)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        called = b.perform("call", {})  # b joins the call a left behind when it went off
        restarted_call = a.perform("call", {"group": GROUP})  # a is set up again, then joins
        assert lab.recorder.wait("tetra.restarted", device="a")["lost_calls"] == [1]
        assert restarted_call["cc"] >= 1 and called["setup_ms"] > 0
        assert a.perform("ptt_press", {})["grant"] == 0
        assert a.selected_group == 9002
        sent = [text for mark, text in transcript_marks(a) if mark == ">"]
        assert sent.count("AT+CTGS=1,9002") == 2  # selected again after the restart
        assert not lab.recorder.faults
