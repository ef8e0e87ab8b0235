"""Tests of the SCPI lab instruments: the ``attenuator`` and ``power_supply`` models of the
instrument emulator (as real processes over TCP, plus the generic resolution and reading
features in-process), and the attenuator, power supply and generic drivers against
emulator processes they start themselves (``emulate: true``), the way the emulated lab
uses them. Every process is stopped in a ``finally``; timing bounds are generous."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # in case the package is not installed into the venv
    sys.path.insert(0, str(REPO))

from drivers.base import Device, DeviceContext  # noqa: E402
from drivers.emulators import EmulatorProcess, start_emulator, state_path  # noqa: E402
from drivers.errors import DriverError  # noqa: E402
from drivers.instrument.attenuator import ScpiAttenuator  # noqa: E402
from drivers.instrument.generic import GenericScpi  # noqa: E402
from drivers.instrument.power_supply import ScpiPowerSupply  # noqa: E402
from drivers.scpi.emulator import InstrumentModel, Reading, ScpiInstrument, Setting  # noqa: E402
from tests.drivers.support import Processes  # noqa: E402

TIMEOUT_S = 1.0

# --------------------------------------------------------------------------------------------
# Helpers: a device context that records events and processes, a raw line client
# --------------------------------------------------------------------------------------------


class Lab:
    """A run directory, its events and processes, and the devices a test opened."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.processes = Processes()
        self.recorded: list[tuple[str, dict[str, Any]]] = []
        self.context = DeviceContext(
            run_dir=run_dir,
            name_prefix="tb-test",
            emit=lambda name, fields: self.recorded.append((name, dict(fields))),
            processes=self.processes,
        )
        self.devices: list[Device] = []

    def add(self, device: Device) -> Any:
        self.devices.append(device)
        return device

    def events(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.recorded if event == name]

    def state(self, device: str) -> dict[str, Any]:
        settings: dict[str, Any] = json.loads(state_path(self.run_dir, device).read_text())[
            "settings"
        ]
        return settings

    def emulator(self, device: Device) -> EmulatorProcess:
        emulator = getattr(device, "conn").emulator  # noqa: B009 - every instrument driver has one
        assert isinstance(emulator, EmulatorProcess)
        return emulator


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        for device in lab.devices:
            device.close()
        for proc, _ in lab.processes.tracked:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)


def attenuator(lab: Lab, name: str = "att1", **settings: Any) -> ScpiAttenuator:
    settings = {"emulate": True, "timeout_s": TIMEOUT_S, **settings}
    device: ScpiAttenuator = lab.add(ScpiAttenuator(name, settings, lab.context))
    return device


def power_supply(lab: Lab, name: str = "psu1", **settings: Any) -> ScpiPowerSupply:
    settings = {"emulate": True, "timeout_s": TIMEOUT_S, **settings}
    device: ScpiPowerSupply = lab.add(ScpiPowerSupply(name, settings, lab.context))
    return device


class LineClient:
    """A bare socket client: the wire format is checked without pyvisa."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.file = self.sock.makefile("rb")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def ask(self, line: str) -> str:
        self.send(line)
        return self.file.readline().decode().rstrip("\n")

    def errors(self) -> list[str]:
        out = []
        while not (entry := self.ask("SYST:ERR?")).startswith("0,"):
            out.append(entry)
        return out

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@dataclass
class Model:
    emulator: EmulatorProcess
    client: LineClient
    state_file: Path

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return data


def _model(lab_dir: Path, model: str) -> Iterator[Model]:
    lab = Lab(lab_dir)
    state = state_path(lab_dir, model)
    args = ["--port", "0", "--model", model, "--state-out", str(state)]
    emulator = start_emulator(lab.context, model, "drivers.scpi.emulator", args, role="model")
    client = None
    try:
        client = LineClient(int(emulator.ready["port"]))
        yield Model(emulator, client, state)
    finally:
        if client is not None:
            client.close()
        emulator.stop()
        assert not emulator.alive()


@pytest.fixture(scope="module")
def att_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Model]:
    yield from _model(tmp_path_factory.mktemp("att"), "attenuator")


@pytest.fixture(scope="module")
def psu_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Model]:
    yield from _model(tmp_path_factory.mktemp("psu"), "power_supply")


@pytest.fixture
def att(att_model: Model) -> LineClient:
    assert att_model.client.ask("*RST;*CLS;*OPC?") == "1"
    return att_model.client


@pytest.fixture
def psu(psu_model: Model) -> LineClient:
    assert psu_model.client.ask("*RST;*CLS;*OPC?") == "1"
    return psu_model.client


# --------------------------------------------------------------------------------------------
# The attenuator model
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "query", "answer"),
    [("CHAN1:ATT 10", "CHAN1:ATT?", "10"), ("CHAN1:ATT 10.1", "CHAN1:ATT?", "10"),
     ("CHAN1:ATT 10.13", "CHAN1:ATT?", "10.25"), ("CHAN1:ATT 10.125", "CHAN1:ATT?", "10"),
     ("CHAN1:ATT 10.375", "CHAN1:ATT?", "10.5"), ("CHANnel2:ATTenuation 1.3", "CHAN2:ATT?", "1.25"),
     ("CHAN3:ATT 95.5", "chan3:att?", "95.5"), ("CHAN4:ATT MAX", "CHAN4:ATT?", "95.5"),
     ("CHAN4:ATT 30DB", "CHAN4:ATT?", "30"), ("CHAN:ATT 0.2", "CHAN1:ATT?", "0.25"),
     ("CHAN1:ATT 0.1", "CHAN1:ATT?", "0")],
)  # fmt: skip
def test_attenuator_model_keeps_the_nearest_step(
    att: LineClient, att_model: Model, command: str, query: str, answer: str
) -> None:
    """0.25 dB steps: the read back is the nearest step (a tie goes to the even step)."""
    att.send(command)
    assert att.ask(query) == answer
    assert att.errors() == []
    key = f"CHAN{query[4] if query[4].isdigit() else 1}:ATT"
    assert att_model.state()["settings"][key] == float(answer)


@pytest.mark.parametrize(
    ("command", "code"),
    [("CHAN1:ATT 95.6", -222), ("CHAN1:ATT -0.1", -222), ("CHAN1:ATT 96DB", -222),
     ("CHAN5:ATT 1", -114), ("CHAN0:ATT 1", -114), ("CHAN1:ATT abc", -224),
     ("CHAN1:ATT 3DBM", -131), ("CHAN1:ATT", -109), ("CHAN1:ATTN 3", -113)],
)  # fmt: skip
def test_attenuator_model_refuses_bad_values(
    att: LineClient, att_model: Model, command: str, code: int
) -> None:
    att.send("CHAN1:ATT 20")
    att.send(command)
    errors = att.errors()
    assert len(errors) == 1 and int(errors[0].split(",")[0]) == code, errors
    assert att.ask("CHAN1:ATT?") == "20"
    assert att_model.state()["settings"]["CHAN1:ATT"] == 20.0


def test_attenuator_model_state_file(att: LineClient, att_model: Model) -> None:
    """The radio emulators read exactly these keys."""
    att.send("CHAN2:ATT 42.3")
    assert att.ask("*OPC?") == "1"
    state = att_model.state()
    assert state["model"] == "attenuator" and "Attenuator" in state["idn"]
    assert state["settings"] == {"CHAN1:ATT": 0.0, "CHAN2:ATT": 42.25, "CHAN3:ATT": 0.0,
                                 "CHAN4:ATT": 0.0}  # fmt: skip


# --------------------------------------------------------------------------------------------
# The power supply model
# --------------------------------------------------------------------------------------------


def test_power_supply_model_measures_cv_and_cc(psu: LineClient) -> None:
    assert psu.ask("SOUR1:VOLT?;CURR?;:OUTP1?;:SYST:LOAD1?") == "0;1;0;10"
    psu.send("SOUR1:VOLT 12;CURR 2")
    assert psu.ask("MEAS1:VOLT?;:MEAS1:CURR?") == "0;0"  # output off
    psu.send("OUTP1 ON")
    assert psu.ask("MEAS1:VOLT?;:MEAS1:CURR?") == "12;1.2"  # constant voltage: 12 V / 10 ohm
    psu.send("SOUR1:CURR 500MA")
    assert psu.ask("MEAS1:VOLT?;:MEAS1:CURR?") == "5;0.5"  # constant current: 0.5 A * 10 ohm
    psu.send("SYST:LOAD1 1KOHM")
    assert psu.ask("MEASure1:VOLTage:DC?;:MEAS1:CURR?") == "12;0.012"  # back to CV
    assert psu.ask("MEAS2:VOLT?;:MEAS2:CURR?") == "0;0"  # the other output is untouched
    psu.send("OUTPut1:STATe OFF")
    assert psu.ask("MEAS1:VOLT?;:MEAS1:CURR?") == "0;0"
    assert psu.errors() == []


@pytest.mark.parametrize(
    ("command", "code"),
    [("SOUR1:VOLT 30.1", -222), ("SOUR1:VOLT -1", -222), ("SOUR1:CURR 5.01", -222),
     ("SOUR2:CURR 6A", -222), ("SOUR3:VOLT 1", -114), ("OUTP1 maybe", -224),
     ("SYST:LOAD1 0", -222), ("MEAS1:VOLT 3", -113), ("MEAS3:VOLT?", -114),
     ("MEAS1:CURR? MAX", -108), ("SOUR1:VOLT 5A", -131)],
)  # fmt: skip
def test_power_supply_model_refuses_bad_values(psu: LineClient, command: str, code: int) -> None:
    psu.send(command)
    assert psu.ask("*OPC?") == "1"
    errors = psu.errors()
    assert len(errors) == 1 and int(errors[0].split(",")[0]) == code, errors
    assert psu.ask("SOUR1:VOLT?;CURR?;:SOUR2:CURR?;:OUTP1?") == "0;1;1;0"


def test_power_supply_model_state_file(psu: LineClient, psu_model: Model) -> None:
    psu.send("SOURce2:VOLTage:LEVel:IMMediate:AMPLitude 3300MV;:OUTP2 ON")
    assert psu.ask("*OPC?") == "1"
    state = psu_model.state()
    assert state["model"] == "power_supply"
    assert state["settings"] == {
        "SOUR1:VOLT": 0.0, "SOUR1:CURR": 1.0, "OUTP1": False, "SYST:LOAD1": 10.0,
        "SOUR2:VOLT": 3.3, "SOUR2:CURR": 1.0, "OUTP2": True, "SYST:LOAD2": 10.0,
    }  # fmt: skip
    assert "MEAS1:VOLT" not in state["settings"]  # readings are not settings


def test_resolution_and_readings_are_generic() -> None:
    """In-process: any model may quantise a setting and compute a read-only value."""
    model = InstrumentModel(
        name="gadget", manufacturer="T", model="G", firmware="1",
        settings=(
            Setting("LEVel", "float", 0.0, -10.0, 10.0, resolution=0.5),
            Setting("OFFSet", "float", 0.0, None, 3.0, resolution=2.0),
        ),
        readings=(Reading("SUM", lambda v, s: float(v["LEV"]) + float(v["OFFS"])),),
    )  # fmt: skip
    inst = ScpiInstrument(model)
    assert inst.execute("LEV -3.2;LEV?") == "-3"
    assert inst.execute("LEV -3.3;LEV?") == "-3.5"
    assert inst.execute("LEV 9.9;LEV?") == "10"
    assert inst.execute("OFFS -7.1;OFFS?") == "-8"  # no minimum: steps count from 0
    assert inst.execute("OFFS 2.9;OFFS?") == "2"  # the nearest step (4) is above the maximum
    assert inst.execute("SUM?") == "12"
    inst.execute("SUM 3")
    assert inst.execute("SYST:ERR?") == '-113,"Undefined header;query only"'
    assert inst.snapshot()["settings"] == {"LEV": 10.0, "OFFS": 2.0}


# --------------------------------------------------------------------------------------------
# The attenuator driver
# --------------------------------------------------------------------------------------------


def test_attenuator_sets_reads_back_and_saves_its_transcript(lab: Lab) -> None:
    device = attenuator(lab, idn_contains="Attenuator", safe={"atten_db": {1: 60, 3: 95.5}})
    device.open()
    assert [role for _, role in lab.processes.tracked] == ["scpi-emulator:att1"]
    assert "att1" in device.conn.idn  # the emulator's serial number is the device name
    details = device.perform("set", {"channel": 1, "atten_db": 10.1})
    assert details == {"channel": 1, "atten_db": 10.1, "actual_db": 10.0}
    (event,) = lab.events("attenuator.set")
    assert event["channel"] == 1 and event["atten_db"] == 10.1 and event["actual_db"] == 10.0
    assert abs(event["wall"] - time.time()) < 5
    assert lab.state("att1")["CHAN1:ATT"] == 10.0
    device.set_attenuation(2, 33.3)
    assert device.attenuation(2) == 33.25
    assert lab.state("att1")["CHAN2:ATT"] == 33.25

    device.safe_state()
    state = lab.state("att1")
    assert state == {"CHAN1:ATT": 60.0, "CHAN2:ATT": 33.25, "CHAN3:ATT": 95.5, "CHAN4:ATT": 0.0}
    (safe,) = lab.events("attenuator.safe_state")
    assert safe["applied_db"] == {1: 60.0, 3: 95.5} and safe["unchanged"] == [2, 4]
    assert safe["errors"] == [] and safe["ramp_interrupted"] is False
    counters = device.counters()
    assert counters["settings_applied"] == 4 and counters["instrument_errors"] == 0
    assert counters["final_atten_db"] == {1: 60.0, 2: 33.25, 3: 95.5}
    assert counters["emulator_state"] == str(state_path(lab.run_dir, "att1"))
    exchanges = counters["exchanges"]
    device.close()
    assert all(proc.poll() is not None for proc, _ in lab.processes.tracked)  # close stopped it
    lines = (lab.run_dir / "transcripts" / "att1.scpi.log").read_text().splitlines()
    assert lines[0].startswith("# att1 TCPIP::127.0.0.1::")
    assert len(lines) == 1 + exchanges  # every exchange, one per line
    text = "\n".join(lines)
    expected = ["> *IDN?", "> CHAN1:ATT 10.1", "> SYST:ERR?", "> CHAN1:ATT?", "< 10",
                "> CHAN2:ATT 33.3", "< 33.25", "> CHAN3:ATT 95.5", '< 0,"No error"']  # fmt: skip
    assert [line for line in expected if line not in text] == []


def test_attenuator_refusals_name_the_device_and_the_error(lab: Lab) -> None:
    device = attenuator(lab, channels=[1, 2], tolerance_db=0.1)
    device.open()
    with pytest.raises(DriverError, match=r"^att1: 'CHAN1:ATT 120' refused: -222,") as refused:
        device.perform("set", {"channel": 1, "atten_db": 120})
    assert "Data out of range" in str(refused.value) and refused.value.device == "att1"
    assert device.counters()["instrument_errors"] == 1
    sent = device.counters()["exchanges"]
    with pytest.raises(DriverError, match=r"channel 3 is not one of mine \(1, 2"):
        device.perform("set", {"channel": 3, "atten_db": 1})
    with pytest.raises(DriverError, match="give the channel"):
        device.perform("set", {"atten_db": 1})
    with pytest.raises(DriverError, match="unknown atten"):
        device.perform("set", {"channel": 1, "atten_db": 1, "atten": 1})
    with pytest.raises(DriverError, match="must be a number"):
        device.perform("set", {"channel": 1, "atten_db": "ten"})
    with pytest.raises(DriverError, match="not supported"):
        device.perform("sweep", {})
    assert device.counters()["exchanges"] == sent  # none of these reached the box
    device.perform("set", {"channel": 2, "atten_db": 10.2})  # reads 10.25: within 0.1 dB
    with pytest.raises(DriverError, match=r"reads back 10 dB after setting 10.125 dB"):
        device.perform("set", {"channel": 2, "atten_db": 10.125})


def test_attenuator_ramp_keeps_its_schedule(lab: Lab) -> None:
    device = attenuator(lab)
    device.open()
    device.set_attenuation(1, 5)
    started = time.monotonic()
    details = device.perform("ramp", {"channel": 1, "to_db": 15, "duration_s": 1.0})
    took = time.monotonic() - started
    assert details["from_db"] == 5.0 and details["to_db"] == 15.0 and details["actual_db"] == 15
    assert details["steps"] + details["skipped"] == 10  # 1 dB steps
    assert details["steps"] >= 5  # a loaded machine may skip some, never most
    assert abs(details["duration_s"] - 1.0) < 0.5 and abs(took - 1.0) < 0.5
    assert details["late_max_ms"] < 500
    steps = [e for e in lab.events("attenuator.set") if "ramp_step" in e]
    assert len(steps) == details["steps"] and steps[-1]["actual_db"] == 15.0
    (summary,) = lab.events("attenuator.ramp")
    for step in steps:  # each at its own time on the schedule, not after the previous one
        scheduled = step["ramp_step"] / 10 * 1.0
        assert -0.01 < step["wall"] - summary["start_wall"] - scheduled < 0.3, step
        assert step["atten_db"] == 5 + step["ramp_step"]
    assert summary["planned_steps"] == 10 and summary["interrupted"] is False
    assert summary["first"]["step"] == steps[0]["ramp_step"] and summary["last"]["step"] == 10
    assert lab.state("att1")["CHAN1:ATT"] == 15.0


def test_attenuator_long_ramp_is_summarised(lab: Lab) -> None:
    device = attenuator(lab, ramp_step_events_max=5)
    device.open()
    device.set_attenuation(2, 30)
    details = device.perform("ramp", {"channel": 2, "to_db": 10, "duration_s": 0.3,
                                      "step_db": 0.5})  # fmt: skip
    assert details["steps"] + details["skipped"] == 40 and details["actual_db"] == 10.0
    assert [e for e in lab.events("attenuator.set") if "ramp_step" in e] == []
    (summary,) = lab.events("attenuator.ramp")
    assert summary["steps"] == details["steps"] and summary["last"]["actual_db"] == 10.0
    assert summary["first"]["atten_db"] == (29.5 if summary["first"]["step"] == 1 else
                                            30 - 0.5 * summary["first"]["step"])  # fmt: skip
    # no duration: a jump; a ramp to where it is: one step at the end
    assert device.perform("ramp", {"channel": 2, "to_db": 40.25, "duration_s": 0})["steps"] == 1
    assert device.ramp(2, 40.25, 0.1)["steps"] == 1
    assert lab.state("att1")["CHAN2:ATT"] == 40.25
    with pytest.raises(DriverError, match="step_db must be positive"):
        device.perform("ramp", {"channel": 2, "to_db": 1, "duration_s": 1, "step_db": 0})
    with pytest.raises(DriverError, match="give to_db"):
        device.perform("ramp", {"channel": 2, "duration_s": 1})


def _ramp_in_thread(device: ScpiAttenuator, *args: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(device.ramp(*args))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_safe_state_interrupts_a_ramp(lab: Lab) -> None:
    device = attenuator(lab, safe={"atten_db": 60})
    device.open()
    thread, outcome = _ramp_in_thread(device, 1, 40.0, 3.0)
    _wait_for(lambda: len(lab.events("attenuator.set")) >= 3)
    started = time.monotonic()
    device.safe_state()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 2
    (failure,) = outcome
    assert isinstance(failure, DriverError) and str(failure).startswith("att1: ramp of channel 1")
    assert "interrupted" in str(failure)
    (summary,) = lab.events("attenuator.ramp")
    assert summary["interrupted"] is True and 3 <= summary["steps"] < 40
    (safe,) = lab.events("attenuator.safe_state")
    assert safe["ramp_interrupted"] is True and safe["applied_db"] == dict.fromkeys(range(1, 5), 60)
    time.sleep(0.2)  # a step the ramp would have sent by now must not come
    assert lab.state("att1")["CHAN1:ATT"] == 60.0
    assert lab.events("attenuator.set")[-1]["safe_state"] is True


def test_killed_instrument_mid_ramp(lab: Lab) -> None:
    device = attenuator(lab, safe={"atten_db": 60})
    device.open()
    thread, outcome = _ramp_in_thread(device, 1, 40.0, 2.0)
    _wait_for(lambda: len(lab.events("attenuator.set")) >= 2)
    emulator = lab.emulator(device)
    emulator.proc.send_signal(signal.SIGKILL)
    emulator.proc.wait(timeout=5)
    thread.join(timeout=3 * TIMEOUT_S + 3)
    assert not thread.is_alive()
    (failure,) = outcome
    assert isinstance(failure, DriverError) and failure.device == "att1"
    assert str(failure).startswith("att1: ") and failure.exchanges
    (summary,) = lab.events("attenuator.ramp")
    assert "error" in summary and summary["interrupted"] is False
    started = time.monotonic()
    device.safe_state()  # never raises, and gives up at the first dead exchange
    assert time.monotonic() - started < 3 * TIMEOUT_S + 1
    (safe,) = lab.events("attenuator.safe_state")
    assert safe["errors"] and safe["errors"][0].startswith("att1: ") and safe["applied_db"] == {}
    device.close()
    assert (lab.run_dir / "transcripts" / "att1.scpi.log").exists()


def test_attenuator_with_a_command_map_of_its_own(lab: Lab) -> None:
    commands = {
        "set": {"command": "CHANnel{ch}:ATTenuation {value:.2f}DB"},
        "get": "CHANNEL{ch}:ATTENUATION?",
        "init": ["*CLS", "CHAN4:ATT 1"],
    }
    device = attenuator(lab, commands=commands, channels=[3], initial={"atten_db": 20})
    device.open()
    assert lab.state("att1")["CHAN4:ATT"] == 1.0  # init ran
    assert lab.state("att1")["CHAN3:ATT"] == 20.0  # then the initial state
    assert lab.events("attenuator.set")[0]["initial"] is True
    assert device.perform("set", {"atten_db": 7.5})["actual_db"] == 7.5  # the only channel
    assert lab.state("att1")["CHAN3:ATT"] == 7.5
    assert device.conn.session is not None
    sent = [x.text for x in device.conn.session.transcript if x.direction == ">"]
    assert "CHANnel3:ATTenuation 7.50DB" in sent and "CHANNEL3:ATTENUATION?" in sent


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"timeout": 3}, r"settings: unknown timeout"),
     ({"commands": {"set": "CHAN{ch}:ATT {db}"}}, r"unknown field \{db\}"),
     ({"commands": {"set": "CHAN{}:ATT {value}"}}, "use named fields"),
     ({"commands": {"sett": "CHAN{ch}:ATT {value}"}}, "unknown sett"),
     ({"commands": {"get": None}}, "get required"),
     ({"commands": {"set": "CHAN{ch}:ATT {value:q}"}}, "cannot render"),
     ({"commands": {"set": ["CHAN{ch}:ATT {value}", "CHAN{ch}:ATT?"]}}, "single template"),
     ({"channels": [1, 1]}, "listed twice"),
     ({"safe": {"atten_db": {5: 10}}}, "channel 5 is not one of"),
     ({"safe": {"atten": 10}}, "settings.safe: unknown atten"),
     ({"safe": {"atten_db": "max"}}, "must be a number"),
     ({"timeout_s": 0}, "timeout_s must be positive"),
     ({"emulate": False}, "settings.resource"),
     ({"resource": "TCPIP::127.0.0.1::1::SOCKET"}, "resource .* or emulate, not both"),
     ({"emulate": False, "resource": "TCPIP::x::1::SOCKET", "backend": "nowhere.yaml@sim"},
      "no pyvisa-sim definitions")],
)  # fmt: skip
def test_attenuator_checks_its_settings(lab: Lab, settings: dict[str, Any], message: str) -> None:
    device = attenuator(lab, **settings)
    with pytest.raises(DriverError, match=message):
        device.open()
    assert lab.processes.tracked == []  # nothing started for a bad lab file
    device.safe_state()
    device.close()


def test_wrong_instrument_is_refused(lab: Lab) -> None:
    device = attenuator(lab, idn_contains="Keysight")
    with pytest.raises(DriverError, match=r"^att1: unexpected \*IDN\? answer .*Keysight"):
        device.open()
    device.close()
    assert all(proc.poll() is not None for proc, _ in lab.processes.tracked)


# --------------------------------------------------------------------------------------------
# The power supply driver
# --------------------------------------------------------------------------------------------


def test_power_supply_sets_switches_and_measures(lab: Lab) -> None:
    device = power_supply(lab, max_voltage_v=14, max_current_a={1: 3},
                          safe={"output": False, "voltage_v": {1: 0}})  # fmt: skip
    device.open()
    details = device.perform("set", {"channel": 1, "voltage_v": 12, "current_a": 2})
    assert details["actual_voltage_v"] == 12 and details["actual_current_a"] == 2
    details = device.perform("output", {"channel": 1, "on": True})
    assert details == {"channel": 1, "on": True, "actual_on": True, "voltage_v": 12.0,
                       "current_a": 1.2}  # fmt: skip
    assert lab.state("psu1")["OUTP1"] is True and lab.state("psu1")["SOUR1:VOLT"] == 12.0
    device.perform("set", {"channel": 1, "current_a": 0.5})
    assert device.measure(1) == {"voltage_v": 5.0, "current_a": 0.5}  # constant current
    assert device.perform("measure", {"channel": 2}) == {"channel": 2, "voltage_v": 0.0,
                                                         "current_a": 0.0}  # fmt: skip
    (output,) = lab.events("power.output")
    assert output["on"] is True and output["actual_on"] is True and "wall" in output
    sets = lab.events("power.set")
    assert [s["current_a"] for s in sets] == [2.0, 0.5] and sets[0]["voltage_v"] == 12.0
    assert [m["current_a"] for m in lab.events("power.measure")] == [1.2, 0.5, 0.0]

    # the lab's limits protect the radio: nothing is sent
    sent = device.counters()["exchanges"]
    with pytest.raises(DriverError, match=r"^psu1: output 1: 15 V is above settings.max_vol"):
        device.perform("set", {"channel": 1, "voltage_v": 15})
    with pytest.raises(DriverError, match=r"3.5 A is above settings.max_current_a"):
        device.perform("set", {"channel": 1, "current_a": 3.5})
    with pytest.raises(DriverError, match="give voltage_v and/or current_a"):
        device.perform("set", {"channel": 1})
    with pytest.raises(DriverError, match="must be on or off"):
        device.perform("output", {"channel": 1, "on": "maybe"})
    assert device.counters()["exchanges"] == sent
    with pytest.raises(DriverError, match=r"'SOUR2:CURR 6' refused: -222,\"Data out of range"):
        device.perform("set", {"channel": 2, "current_a": 6})  # no limit of mine, the box's 5 A

    device.safe_state()
    state = lab.state("psu1")
    assert state["OUTP1"] is False and state["OUTP2"] is False and state["SOUR1:VOLT"] == 0.0
    (safe,) = lab.events("power.safe_state")
    assert safe["applied"] == {1: {"output": False, "actual_voltage_v": 0.0}, 2: {"output": False}}
    assert safe["errors"] == [] and safe["unchanged"] == []
    assert device.conn.session is not None
    sent_lines = [x.text for x in device.conn.session.transcript if x.direction == ">"]
    assert sent_lines.index("OUTP1 OFF") < sent_lines.index("SOUR1:VOLT 0")  # off, then levels
    counters = device.counters()
    assert counters["final"][1] == {"voltage_v": 0.0, "current_a": 0.5, "output": False}
    assert counters["instrument_errors"] == 1


def test_power_supply_safe_state_switches_on_after_the_levels(lab: Lab) -> None:
    """``on``/``off`` arrive from YAML as booleans; a per-output mapping may leave one alone."""
    output = {"command": "OUTP{ch}:STAT {value}", "values": {True: 1, False: 0}}
    commands = {"set_output": output, "measure_current": None}
    device = power_supply(lab, commands=commands,
                          safe={"output": {1: True, 2: "unchanged"}, "voltage_v": 3.8,
                                "current_a": {1: 2}})  # fmt: skip
    device.open()
    device.perform("output", {"channel": 2, "on": "on"})
    device.safe_state()
    state = lab.state("psu1")
    assert state["OUTP1"] is True and state["SOUR1:VOLT"] == 3.8 and state["SOUR1:CURR"] == 2
    assert state["OUTP2"] is True and state["SOUR2:VOLT"] == 3.8  # levels, output untouched
    assert device.conn.session is not None
    sent = [x.text for x in device.conn.session.transcript if x.direction == ">"]
    assert "OUTP2:STAT 1" in sent and "OUTP2:STAT 0" not in sent
    assert sent.index("SOUR1:CURR 2") < sent.index("SOUR1:VOLT 3.8") < sent.index("OUTP1:STAT 1")
    with pytest.raises(DriverError, match="cannot measure: no measure_current"):
        device.measure(1)


def test_power_supply_initial_state_powers_the_radios(lab: Lab) -> None:
    """An emulated supply starts with its outputs off, like a real one at power-up."""
    device = power_supply(lab, initial={"output": {1: "on"}, "voltage_v": 3.8, "current_a": 2})
    device.open()
    state = lab.state("psu1")
    assert state["OUTP1"] is True and state["SOUR1:VOLT"] == 3.8 and state["SOUR1:CURR"] == 2
    assert state["OUTP2"] is False and state["SOUR2:VOLT"] == 3.8
    assert device.conn.session is not None
    sent = [x.text for x in device.conn.session.transcript if x.direction == ">"]
    assert sent.index("SOUR1:CURR 2") < sent.index("SOUR1:VOLT 3.8") < sent.index("OUTP1 ON")
    assert [e["initial"] for e in lab.events("power.output")] == [True]
    assert device.measure(1) == {"voltage_v": 3.8, "current_a": 0.38}


def test_dead_power_supply(lab: Lab) -> None:
    device = power_supply(lab, safe={"output": "off"})
    device.open()
    emulator = lab.emulator(device)
    emulator.proc.send_signal(signal.SIGKILL)
    emulator.proc.wait(timeout=5)
    started = time.monotonic()
    with pytest.raises(DriverError, match=r"^psu1: ") as failed:
        device.perform("output", {"channel": 1, "on": True})
    assert failed.value.exchanges
    device.safe_state()
    assert time.monotonic() - started < 4 * TIMEOUT_S + 1
    (safe,) = lab.events("power.safe_state")
    assert len(safe["errors"]) == 1 and safe["applied"] == {}  # stopped at the dead box


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"safe": {"output": "maybe"}}, "must be on or off"),
     ({"safe": {"voltage_v": 20}, "max_voltage_v": 12}, "above settings.max_voltage_v"),
     ({"commands": {"set_voltage": None}}, "set_voltage required"),
     ({"commands": {"set_current": None}, "safe": {"current_a": 1}}, "needs a set_current"),
     ({"commands": {"get_output": "OUTP{ch}? {value}"}}, r"unknown field \{value\}"),
     ({"max_current_a": -1}, "at least 0"),
     ({"initial": {"voltage_v": 9}, "max_voltage_v": {2: 5}}, r"settings.initial: .*output 2"),
     ({"initial": {"volts": 9}}, "settings.initial: unknown volts")],
)  # fmt: skip
def test_power_supply_checks_its_settings(lab: Lab, settings: dict[str, Any], message: str) -> None:
    device = power_supply(lab, **settings)
    with pytest.raises(DriverError, match=message):
        device.open()
    assert lab.processes.tracked == []


# --------------------------------------------------------------------------------------------
# The generic SCPI driver
# --------------------------------------------------------------------------------------------

GENERIC_COMMANDS = {
    "level": "CHAN{ch}:ATT {db}",
    "level_now": "CHAN{ch}:ATT?",
    "park": {"command": ["CHAN1:ATT {db}", "CHAN2:ATT {db}"], "defaults": {"db": 95.5}},
}


def test_generic_device_sends_and_queries(lab: Lab) -> None:
    assert GenericScpi.kind == "scpi" and GenericScpi.actions == {"send", "query"}
    settings = {"emulate": True, "emulator_model": "attenuator", "timeout_s": TIMEOUT_S,
                "commands": GENERIC_COMMANDS, "safe": ["park"]}  # fmt: skip
    device: GenericScpi = lab.add(GenericScpi("box1", settings, lab.context))
    device.open()
    assert device.perform("send", {"command": "level", "ch": 3, "db": 12.5}) == {
        "command": "level", "sent": ["CHAN3:ATT 12.5"]}  # fmt: skip
    assert device.perform("query", {"command": "level_now", "ch": 3})["answer"] == "12.5"
    assert device.perform("level", {"ch": 1, "db": 3})["sent"] == ["CHAN1:ATT 3"]
    assert device.perform("level_now", {"ch": 1}) == {"command": "level_now", "answer": "3"}
    assert lab.state("box1")["CHAN3:ATT"] == 12.5
    (query, _) = lab.events("scpi.query")
    assert query["sent"] == "CHAN3:ATT?" and query["answer"] == "12.5" and "wall" in query
    assert len(lab.events("scpi.send")) == 2

    with pytest.raises(DriverError, match=r"^box1: 'CHAN1:ATT 99' refused: -222,"):
        device.perform("send", {"command": "level", "ch": 1, "db": 99})
    with pytest.raises(DriverError, match="'level_now' is a query; use query"):
        device.perform("send", {"command": "level_now", "ch": 1})
    with pytest.raises(DriverError, match="command 'level' needs db"):
        device.perform("send", {"command": "level", "ch": 1})
    with pytest.raises(DriverError, match="level: dB not used"):
        device.perform("send", {"command": "level", "ch": 1, "db": 1, "dB": 2})
    with pytest.raises(DriverError, match=r"'sweep' is not in settings\.commands"):
        device.perform("send", {"command": "sweep"})

    device.safe_state()
    state = lab.state("box1")
    assert state["CHAN1:ATT"] == 95.5 and state["CHAN2:ATT"] == 95.5
    assert lab.events("scpi.safe_state") == [{"sent": ["park"], "errors": []}]
    counters = device.counters()
    assert counters["last_answers"] == {"level_now": "3"} and counters["instrument_errors"] == 1
    assert counters["settings_applied"] == 4


@pytest.mark.parametrize(
    ("settings", "message"),
    [({}, "settings.commands: name the operations"),
     ({"commands": GENERIC_COMMANDS, "safe": ["level_now"]}, "is a query"),
     ({"commands": GENERIC_COMMANDS, "safe": ["level"]}, "needs ch, db"),
     ({"commands": GENERIC_COMMANDS, "safe": ["nope"]}, "'nope' is not in settings.commands"),
     ({"commands": {"bad name": "X"}}, "letters, digits"),
     ({"commands": GENERIC_COMMANDS, "emulator_model": "scope"}, "not one of attenuator"),
     ({"commands": GENERIC_COMMANDS}, "needs settings.emulator_model")],
)  # fmt: skip
def test_generic_device_checks_its_settings(
    lab: Lab, settings: dict[str, Any], message: str
) -> None:
    device = lab.add(GenericScpi("box1", {"emulate": True, **settings}, lab.context))
    with pytest.raises(DriverError, match=message):
        device.open()
    assert lab.processes.tracked == []
