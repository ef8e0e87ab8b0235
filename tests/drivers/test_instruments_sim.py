"""Quick tests of the SCPI instrument drivers against the pyvisa-sim definitions in
``drivers/instrument/sim`` (no processes: pyvisa-sim answers in-process), and a check that
those definitions speak the same command language as the emulator models. pyvisa-sim keeps
a definition file's device state for the life of the process, so every test loads its
own copy of the file."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # in case the package is not installed into the venv
    sys.path.insert(0, str(REPO))

from drivers.base import DeviceContext  # noqa: E402
from drivers.errors import DriverError  # noqa: E402
from drivers.instrument.attenuator import ScpiAttenuator  # noqa: E402
from drivers.instrument.common import SIM_DIR  # noqa: E402
from drivers.instrument.generic import GenericScpi  # noqa: E402
from drivers.instrument.power_supply import ScpiPowerSupply  # noqa: E402
from drivers.scpi.emulator import MODELS, ScpiInstrument  # noqa: E402

pytest.importorskip("pyvisa_sim")

ATT_RESOURCE = "TCPIP::attenuator.sim::5025::SOCKET"
PSU_RESOURCE = "TCPIP::power-supply.sim::5025::SOCKET"


class NoProcesses:
    def track(self, proc: Any, role: str) -> None:
        raise AssertionError(f"pyvisa-sim tests start no process ({role})")


def make_context(tmp_path: Path) -> tuple[DeviceContext, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    context = DeviceContext(
        run_dir=tmp_path,
        name_prefix="tb-test",
        emit=lambda name, fields: events.append((name, dict(fields))),
        processes=NoProcesses(),
    )
    return context, events


def sim_backend(tmp_path: Path, name: str) -> str:
    """A private copy of a bundled definition: pyvisa-sim state is per file, per process."""
    copy = tmp_path / "sim" / name
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(SIM_DIR / name, copy)
    return f"{copy}@sim"


def test_attenuator_on_pyvisa_sim(tmp_path: Path) -> None:
    context, events = make_context(tmp_path)
    settings = {"resource": ATT_RESOURCE, "backend": sim_backend(tmp_path, "attenuator.yaml"),
                "timeout_s": 0.2, "idn_contains": "Attenuator",
                "safe": {"atten_db": {2: 50}}}  # fmt: skip
    device = ScpiAttenuator("att1", settings, context)
    try:
        device.open()
        assert device.perform("set", {"channel": 1, "atten_db": 10.5})["actual_db"] == 10.5
        assert device.attenuation(1) == 10.5
        # SYST:ERR? works: the refusal carries pyvisa-sim's error entry
        with pytest.raises(DriverError, match=r"^att1: 'CHAN1:ATT 96' refused: -100,"):
            device.set_attenuation(1, 96)
        assert device.attenuation(1) == 10.5
        details = device.perform("ramp", {"channel": 1, "to_db": 12.5, "duration_s": 0.2,
                                          "step_db": 0.5})  # fmt: skip
        assert details["steps"] + details["skipped"] == 4 and details["actual_db"] == 12.5
        device.safe_state()
        assert device.attenuation(2) == 50.0
        counters = device.counters()
        assert counters["instrument_errors"] == 1 and counters["final_atten_db"][2] == 50.0
    finally:
        device.close()
    names = [name for name, _ in events]
    assert names[0] == "scpi.identified" and "attenuator.ramp" in names
    assert names[-1] == "attenuator.safe_state"
    assert "> CHAN1:ATT 96" in (tmp_path / "transcripts" / "att1.scpi.log").read_text()


def test_attenuator_channel_the_box_lacks(tmp_path: Path) -> None:
    """Settings may allow a channel the box does not have: the box says so."""
    context, _ = make_context(tmp_path)
    settings = {"resource": ATT_RESOURCE, "backend": sim_backend(tmp_path, "attenuator.yaml"),
                "timeout_s": 0.2, "channels": [1, 9]}  # fmt: skip
    device = ScpiAttenuator("att1", settings, context)
    try:
        device.open()
        with pytest.raises(DriverError, match=r"'CHAN9:ATT 1' refused: -100,\"Command error"):
            device.set_attenuation(9, 1)
    finally:
        device.close()


def test_power_supply_on_pyvisa_sim(tmp_path: Path) -> None:
    context, events = make_context(tmp_path)
    settings = {"resource": PSU_RESOURCE, "backend": sim_backend(tmp_path, "power_supply.yaml"),
                "timeout_s": 0.2, "safe": {"output": "off"}}  # fmt: skip
    device = ScpiPowerSupply("psu1", settings, context)
    try:
        device.open()
        details = device.perform("set", {"channel": 2, "voltage_v": 3.8, "current_a": 0.7})
        assert details["actual_voltage_v"] == 3.8 and details["actual_current_a"] == 0.7
        details = device.perform("output", {"channel": 2, "on": True})
        assert details["actual_on"] is True  # pyvisa-sim answers ON, the emulator 1
        assert details["voltage_v"] == 0.0  # pyvisa-sim cannot compute a measurement
        with pytest.raises(DriverError, match=r"'SOUR1:VOLT 31' refused: -100,"):
            device.perform("set", {"channel": 1, "voltage_v": 31})
        device.safe_state()
        assert device.counters()["final"][2]["output"] is False
    finally:
        device.close()
    (safe,) = [fields for name, fields in events if name == "power.safe_state"]
    assert safe["applied"] == {1: {"output": False}, 2: {"output": False}}


def test_generic_device_on_pyvisa_sim(tmp_path: Path) -> None:
    context, events = make_context(tmp_path)
    settings = {
        "resource": PSU_RESOURCE,
        "backend": sim_backend(tmp_path, "power_supply.yaml"),
        "timeout_s": 0.2,
        "commands": {
            "volts": "SOUR{out}:VOLT {v}",
            "volts_now": "SOUR{out}:VOLT?",
            "all_off": ["OUTP1 OFF", "OUTP2 OFF"],
        },
        "safe": ["all_off"],
    }
    device = GenericScpi("box1", settings, context)
    try:
        device.open()
        device.perform("send", {"command": "volts", "out": 1, "v": 5})
        assert device.perform("query", {"command": "volts_now", "out": 1})["answer"] == "5"
        device.safe_state()
    finally:
        device.close()
    assert [name for name, _ in events][-1] == "scpi.safe_state"


def test_bundled_definition_found_by_name(tmp_path: Path) -> None:
    context, _ = make_context(tmp_path)
    settings = {"resource": ATT_RESOURCE, "backend": "attenuator.yaml@sim", "timeout_s": 0.2}
    device = ScpiAttenuator("att1", settings, context)
    try:
        device.open()
        assert "simulated" in device.conn.idn
        assert device.conn.session is not None
        assert device.conn.session.backend == f"{SIM_DIR / 'attenuator.yaml'}@sim"
    finally:
        device.close()


@pytest.mark.filterwarnings("ignore:read string doesn't end with termination characters")
def test_no_such_resource_in_the_definitions(tmp_path: Path) -> None:
    """pyvisa-sim opens any resource name, and nothing answers there."""
    context, _ = make_context(tmp_path)
    settings = {"resource": "TCPIP::nowhere.sim::5025::SOCKET", "timeout_s": 0.2,
                "backend": sim_backend(tmp_path, "attenuator.yaml")}  # fmt: skip
    device = ScpiAttenuator("att1", settings, context)
    with pytest.raises(DriverError, match=r"^att1: (cannot open|unexpected \*IDN\? answer '')"):
        device.open()
    device.safe_state()
    device.close()


@pytest.mark.parametrize(
    ("definition", "model"),
    [("attenuator.yaml", "attenuator"), ("power_supply.yaml", "power_supply")],
)
def test_sim_definitions_speak_the_emulator_language(definition: str, model: str) -> None:
    """Every getter and setter of the pyvisa-sim device is accepted by the emulator model,
    with the same default values, so the drivers' default maps fit both."""
    spec = yaml.load((SIM_DIR / definition).read_text(), Loader=yaml.BaseLoader)  # as pyvisa-sim
    (device,) = spec["devices"].values()
    assert device["error"]["error_queue"][0]["q"] == "SYST:ERR?"
    inst = ScpiInstrument(MODELS[model])
    for name, prop in device["properties"].items():
        query = prop["getter"]["q"]
        answer = inst.execute(query)
        assert answer is not None, f"{name}: the emulator does not answer {query}"
        default = str(prop["default"])
        if prop["specs"]["type"] == "float":
            assert float(answer) == float(default), name
        else:
            assert answer == {"OFF": "0", "ON": "1"}[default], name
        if "setter" in prop:
            setter = prop["setter"]["q"].replace("{}", default)
            assert inst.execute(setter) is None
            assert inst.execute("SYST:ERR?") == '0,"No error"', f"{name}: {setter}"
