"""Tests of the SCPI emulator, the pyvisa session and the SCPI impairment driver. The emulator
always runs as a real separate process on 127.0.0.1 and is spoken to over real TCP, as a lab
instrument would be; only the parser's corner cases are also checked in-process. Every
emulator process is killed in a ``finally``; timeouts are short so a dead peer cannot hang."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # in case the package is not installed into the venv
    sys.path.insert(0, str(REPO))

from drivers.base import DeviceContext  # noqa: E402
from drivers.errors import DriverError  # noqa: E402
from drivers.impairment.params import ImpairmentParams  # noqa: E402
from drivers.impairment.scpi import DEFAULT_COMMANDS, ScpiImpairment  # noqa: E402
from drivers.scpi.client import ScpiCommandError, ScpiIOError, ScpiSession  # noqa: E402
from drivers.scpi.emulator import NETWORK_EMULATOR, ScpiInstrument  # noqa: E402
from tests.drivers.support import Processes  # noqa: E402

TIMEOUT_S = 1.0

# --------------------------------------------------------------------------------------------
# Helpers: the emulator process, a raw line client, a minimal device context
# --------------------------------------------------------------------------------------------


@dataclass
class Emulator:
    proc: subprocess.Popen[bytes]
    port: int
    state_file: Path

    @property
    def resource(self) -> str:
        return f"TCPIP::127.0.0.1::{self.port}::SOCKET"

    def state(self) -> dict[str, Any]:
        settings: dict[str, Any] = json.loads(self.state_file.read_text())["settings"]
        return settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=5)


@contextmanager
def running_emulator(tmp: Path, port: int = 0) -> Iterator[Emulator]:
    """The emulator as its own process; ``port=0`` lets it pick a free port and report it."""
    tmp.mkdir(parents=True, exist_ok=True)
    ready, state = tmp / "ready.json", tmp / "state.json"
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivers.scpi.emulator", "--host", "127.0.0.1", "--port", str(port),
         "--model", "network_emulator", "--ready-file", str(ready), "--state-out", str(state)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "emulator did not start"
            time.sleep(0.01)
        info = json.loads(ready.read_text())
        assert info["pid"] == proc.pid
        yield Emulator(proc, int(info["port"]), state)
    finally:
        _kill(proc)
        if proc.stdout is not None:
            proc.stdout.close()


class LineClient:
    """A bare socket client: the test of the wire format must not rely on pyvisa."""

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
        assert entry == '0,"No error"'
        return out

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One emulator for the protocol tests, on a port chosen here (the explicit --port path)."""
    with running_emulator(tmp_path_factory.mktemp("emulator"), _free_port()) as emu:
        yield emu


@pytest.fixture
def client(emulator: Emulator) -> Iterator[LineClient]:
    c = LineClient(emulator.port)
    try:
        c.ask("*RST;*CLS;*OPC?")
        yield c
    finally:
        c.close()


def make_context(tmp_path: Path) -> DeviceContext:
    events: list[tuple[str, dict[str, Any]]] = []
    return DeviceContext(
        run_dir=tmp_path,
        name_prefix="tb-test",
        emit=lambda name, fields: events.append((name, dict(fields))),
        processes=Processes(),
        nodes=None,
        extra={"events": events},
    )


LINKS = {"radio_a1": {"forward": 1, "reverse": 2}, "backhaul_a": {"forward": 3}}


# --------------------------------------------------------------------------------------------
# The emulator over TCP
# --------------------------------------------------------------------------------------------


def test_idn_and_common_commands(client: LineClient) -> None:
    manufacturer, model, serial, firmware = client.ask("*IDN?").split(",")
    assert manufacturer and "Network Emulator" in model and serial and firmware
    assert client.ask("*opc?") == "1"
    assert client.ask("*TST?") == "0"
    assert client.ask("SYST:VERS?") == "1999.0"
    client.send("CHAN1:DEL 1.5")
    assert client.ask("CHAN1:DEL?") == "1.5"
    client.send("*RST")
    assert client.ask("CHAN1:DEL?") == "0"
    assert client.errors() == []


@pytest.mark.parametrize(
    "command",
    ["CHAN1:DEL 0.25", "CHANnel1:DELay 0.25", "CHANNEL1:DELAY 0.25", "chan1:del 0.25",
     ":Channel1:Delay 0.25", "CHAN1:DEL 250ms", "CHAN:DEL 0.25", "CHAN1:DEL\t0.25"],
)  # fmt: skip
def test_short_and_long_forms(client: LineClient, emulator: Emulator, command: str) -> None:
    client.send(command)
    for query in ("CHAN1:DEL?", "channel1:delay?", "CHAN:DELAY?"):
        assert client.ask(query) == "0.25"
    assert client.errors() == []
    assert emulator.state()["CHAN1:DEL"] == 0.25


def test_partial_mnemonics_are_not_accepted(client: LineClient) -> None:
    """Only the short and the long form exist: ``DELA`` is neither."""
    client.send("CHAN1:DELA 1")
    assert client.errors() == ['-113,"Undefined header;CHAN1:DELA"']


def test_semicolon_chains_and_compound_paths(client: LineClient, emulator: Emulator) -> None:
    client.send("CHAN2:DEL 0.1;LOSS 5;:CHAN3:RATE 2KBPS;STAT ON;*OPC")
    assert client.ask("CHAN2:DEL?;LOSS?;:CHAN3:RATE?;STAT?;:CHAN2:STAT?") == "0.1;5;2000;1;0"
    # an absolute header after ';' works with and without the leading colon
    assert client.ask("CHAN2:LOSS?;CHAN3:RATE?") == "5;2000"
    assert client.ask("*ESR?") == "1"  # *OPC sets the operation-complete bit
    state = emulator.state()
    assert state["CHAN2:DEL"] == 0.1 and state["CHAN2:LOSS"] == 5.0
    assert state["CHAN3:RATE"] == 2000 and state["CHAN3:STAT"] is True
    assert client.errors() == []


def test_error_queue_is_fifo_with_standard_codes(client: LineClient, emulator: Emulator) -> None:
    client.send("CHAN1:LOSS 2")
    client.send("CHAN1:BOGUS 1")
    client.send("CHAN1:LOSS abc")
    client.send("CHAN1:LOSS 101")
    client.send("CHAN1:LOSS")
    client.send("CHAN1:STAT maybe")
    client.send("CHAN1:DEL 5XS")
    client.send("CHAN9:DEL 1")
    assert client.ask("SYST:ERR:COUN?") == "7"
    assert client.ask("*STB?") == "4"  # error/event queue not empty
    codes = [int(e.split(",")[0]) for e in client.errors()]
    assert codes == [-113, -224, -222, -109, -224, -131, -114]
    assert client.ask("SYST:ERR?") == '0,"No error"'
    assert client.ask("SYSTem:ERRor:NEXT?") == '0,"No error"'
    assert client.ask("*ESR?") == str(0x20 | 0x10)  # command and execution error bits
    assert emulator.state()["CHAN1:LOSS"] == 2.0  # the bad values changed nothing


def test_command_error_abandons_the_rest_of_the_line(client: LineClient) -> None:
    client.send("CHAN1:LOSS 101;LOSS 3;CHAN1:NOPE 1;LOSS 4")
    assert client.ask("CHAN1:LOSS?") == "3"  # -222 only fails its unit, -113 the rest
    assert [e.split(",")[0] for e in client.errors()] == ["-222", "-113"]


@pytest.mark.parametrize(
    ("command", "query", "answer"),
    [("CHAN4:DEL 0", "CHAN4:DEL?", "0"), ("CHAN4:DEL 10", "CHAN4:DEL?", "10"),
     ("CHAN4:DEL MAX", "CHAN4:DEL?", "10"), ("CHAN4:JITT 1.5E-3", "CHAN4:JITT?", "0.0015"),
     ("CHAN4:LOSS 100", "CHAN4:LOSS?", "100"), ("CHAN4:DUPL 0.5PCT", "CHAN4:DUPL?", "0.5"),
     ("CHAN4:REOR 12.5", "CHAN4:REOR?", "12.5"), ("CHAN4:RATE 1.5MBPS", "CHAN4:RATE?", "1500000"),
     ("CHAN4:RATE 1000.4", "CHAN4:RATE?", "1000"), ("CHAN4:STAT 1", "CHAN4:STAT?", "1"),
     ("CHAN4:OUTage ON", "CHAN4:OUT?", "1"), ("CHAN4:OUT 0", "CHAN4:OUT?", "0")],
)  # fmt: skip
def test_values_in_range(client: LineClient, command: str, query: str, answer: str) -> None:
    client.send(command)
    assert client.ask(query) == answer
    assert client.errors() == []


@pytest.mark.parametrize(
    ("command", "code"),
    [("CHAN1:DEL 10.001", -222), ("CHAN1:DEL -1", -222), ("CHAN1:DEL 11S", -222),
     ("CHAN1:JITT 10001ms", -222), ("CHAN1:LOSS 100.5", -222), ("CHAN1:DUPL -0.1", -222),
     ("CHAN1:RATE -5", -222), ("CHAN1:STAT 2X", -224), ("CHAN1:OUT yes", -224),
     ("CHAN0:DEL 1", -114), ("CHAN5:LOSS 1", -114), ("CHAN1:DEL 1,2", -108),
     ("CHAN1:DEL? 3", -108), ("*RST 1", -108), ("*FOO", -113), ("SYST:ERR", -113)],
)  # fmt: skip
def test_values_out_of_range(client: LineClient, command: str, code: int) -> None:
    client.send(command)
    assert client.ask("*OPC?") == "1"
    errors = client.errors()
    assert len(errors) == 1 and int(errors[0].split(",")[0]) == code, errors


def test_query_limits(client: LineClient) -> None:
    assert client.ask("CHAN1:DEL? MIN;DEL? MAX;DEL? DEF;:CHAN1:LOSS? MAXimum") == "0;10;0;100"


def test_several_clients_share_one_instrument(emulator: Emulator, client: LineClient) -> None:
    """Each client on its own channel, at once: every answer is its own, nothing is lost."""
    failures: list[str] = []

    def work(ch: int) -> None:
        c = LineClient(emulator.port)
        try:
            for i in range(40):
                value = f"{ch}.{i:02d}"
                answer = c.ask(f"CHAN{ch}:LOSS {value};LOSS?")
                if float(answer) != float(value):
                    failures.append(f"CHAN{ch}: sent {value}, read {answer}")
        except Exception as exc:
            failures.append(f"CHAN{ch}: {exc!r}")
        finally:
            c.close()

    threads = [threading.Thread(target=work, args=(ch,)) for ch in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert failures == []
    assert client.ask("CHAN1:LOSS?;:CHAN4:LOSS?") == "1.39;4.39"
    state = emulator.state()
    assert [state[f"CHAN{ch}:LOSS"] for ch in (1, 2, 3, 4)] == [1.39, 2.39, 3.39, 4.39]


def test_error_queue_overflow_and_clear() -> None:
    """In-process: the parser alone, without a socket."""
    changes: list[dict[str, Any]] = []
    inst = ScpiInstrument(NETWORK_EMULATOR, on_change=changes.append)
    for _ in range(25):
        inst.execute("NOPE")
    assert inst.execute("SYST:ERR:COUN?") == "20"
    entries = [inst.execute("SYST:ERR?") for _ in range(20)]
    assert entries[-1] == '-350,"Queue overflow"' and str(entries[0]).startswith("-113,")
    assert inst.execute("SYST:ERR?") == '0,"No error"'
    inst.execute("NOPE;*CLS")  # the -113 abandons the line: *CLS does not run
    assert inst.execute("SYST:ERR:COUN?") == "1"
    inst.execute("*CLS")
    assert inst.execute("SYST:ERR:COUN?") == "0"
    assert changes == []
    inst.execute("CHAN1:STAT ON;STAT ON")
    assert len(changes) == 1 and changes[0]["settings"]["CHAN1:STAT"] is True


# --------------------------------------------------------------------------------------------
# The pyvisa session
# --------------------------------------------------------------------------------------------


def test_session_writes_queries_and_checks(emulator: Emulator, tmp_path: Path) -> None:
    with ScpiSession(emulator.resource, device="ne1", timeout_s=TIMEOUT_S) as session:
        session.write("*RST;*CLS", check=False)
        assert session.query("*IDN?").count(",") == 3
        session.write("CHAN1:DEL 0.02")
        assert session.query("CHAN1:DEL?") == "0.02"
        with pytest.raises(ScpiCommandError) as refused:
            session.write("CHAN1:LOSS 250")
        assert refused.value.device == "ne1"
        assert refused.value.errors[0].startswith("-222,")
        assert "CHAN1:LOSS 250" in str(refused.value) and "-222" in str(refused.value)
        assert "> CHAN1:LOSS 250" in refused.value.exchanges
        with pytest.raises(ScpiCommandError, match="-113"):
            session.write("CHAN1:NOPE 1")
        started = time.monotonic()
        with pytest.raises(ScpiCommandError, match=r"CHAN1:NOPE\?.*-113"):
            session.query("CHAN1:NOPE?")  # no answer: the error queue says why
        assert time.monotonic() - started < TIMEOUT_S + 1.5
        assert session.query("*OPC?") == "1"  # the session is in step again
        assert session.errors() == []
        assert session.instrument_errors == 3
        directions = {x.direction for x in session.transcript}
        assert directions == {">", "<", "!"}
        path = session.save_transcript(tmp_path / "t" / "ne1.scpi.log")
    text = path.read_text()
    assert "> CHAN1:DEL 0.02" in text and '< -222,"Data out of range' in text
    assert not session.is_open


def test_session_to_nothing_fails_cleanly(tmp_path: Path) -> None:
    port = _free_port()  # nobody listens there
    session = ScpiSession(f"TCPIP::127.0.0.1::{port}::SOCKET", device="ghost", timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(DriverError, match=r"^ghost: "):
        session.open()
        session.query("*IDN?")
    assert time.monotonic() - started < 3
    session.close()
    session.close()
    with pytest.raises(ScpiIOError, match="not open"):
        session.query("*IDN?")


# --------------------------------------------------------------------------------------------
# The SCPI impairment driver
# --------------------------------------------------------------------------------------------


def _driver(tmp_path: Path, **settings: Any) -> ScpiImpairment:
    return ScpiImpairment("ne1", {"links": LINKS, "timeout_s": TIMEOUT_S, **settings},
                          make_context(tmp_path))  # fmt: skip


def test_driver_applies_clears_and_saves_transcript(emulator: Emulator, tmp_path: Path) -> None:
    LineClient(emulator.port).ask("*RST;*CLS;*OPC?")
    driver = _driver(tmp_path, resource=emulator.resource, idn_contains="Network Emulator")
    try:
        driver.open()
        driver.attach(["radio_a1", "backhaul_a"])
        driver.apply("radio_a1", "forward", {"delay_ms": 20, "loss_pct": 1})
        state = emulator.state()
        assert state["CHAN1:DEL"] == 0.02 and state["CHAN1:LOSS"] == 1.0
        assert state["CHAN1:STAT"] is True
        assert state["CHAN2:STAT"] is False and state["CHAN2:DEL"] == 0.0

        # what the runner hands over: every parameter of the profile, on both directions
        params = ImpairmentParams(delay_ms=35, jitter_ms=2, duplicate_pct=0.5, reorder_pct=1,
                                  rate_kbps=512).to_dict()  # fmt: skip
        driver.perform("set", {"link": "radio_a1", "direction": "both", **params})
        state = emulator.state()
        for ch in (1, 2):
            assert state[f"CHAN{ch}:DEL"] == 0.035 and state[f"CHAN{ch}:JITT"] == 0.002
            assert state[f"CHAN{ch}:DUPL"] == 0.5 and state[f"CHAN{ch}:REOR"] == 1.0
            assert state[f"CHAN{ch}:RATE"] == 512_000 and state[f"CHAN{ch}:STAT"] is True
        assert state["CHAN1:LOSS"] == 0.0  # the full set says 0

        sent = len(driver.session.transcript) if driver.session else 0
        driver.apply("radio_a1", "forward", {"loss_pct": 2})
        assert driver.session is not None
        new = [x.text for x in driver.session.transcript[sent:] if x.direction == ">"]
        assert new == ["CHAN1:LOSS 2", "SYST:ERR?"]  # only what changed
        state = emulator.state()
        assert state["CHAN1:LOSS"] == 2.0 and state["CHAN1:DEL"] == 0.035  # the rest is kept

        driver.set_outage("radio_a1", "reverse", True)
        assert emulator.state()["CHAN2:OUT"] is True
        driver.perform("outage_end", {"link": "radio_a1", "direction": "reverse"})
        assert emulator.state()["CHAN2:OUT"] is False

        driver.clear("radio_a1")
        state = emulator.state()
        assert state["CHAN1:STAT"] is False and state["CHAN2:STAT"] is False
        driver.apply("backhaul_a", "forward", {"rate_kbps": None, "delay_ms": 5})
        assert emulator.state()["CHAN3:RATE"] == 0 and emulator.state()["CHAN3:DEL"] == 0.005
        with pytest.raises(DriverError, match="no channel for reverse"):
            driver.apply("backhaul_a", "both", {"delay_ms": 5})
        with pytest.raises(DriverError, match="not impaired by me"):
            driver.apply("radio_b1", "forward", {"delay_ms": 5})

        driver.safe_state()
        state = emulator.state()
        assert not any(state[f"CHAN{ch}:STAT"] for ch in (1, 2, 3))
        counters = driver.counters()
        assert counters["exchanges"] > 10 and counters["instrument_errors"] == 0
    finally:
        driver.close()
    log = (tmp_path / "transcripts" / "ne1.scpi.log").read_text()
    assert "> CHAN1:DEL 0.02" in log and "> CHAN1:LOSS 1" in log and "> *IDN?" in log
    assert counters["transcript"] == str(tmp_path / "transcripts" / "ne1.scpi.log")


@pytest.mark.parametrize(
    ("params", "named"),
    [({"jitter_distribution": "normal"}, "jitter_distribution"),
     ({"loss_model": "gilbert_elliott", "ge_p_pct": 5.0}, "ge_p_pct"),
     ({"queue_limit_packets": 50}, "queue_limit_packets")],
)  # fmt: skip
def test_driver_refuses_unsupported_parameters(
    emulator: Emulator, tmp_path: Path, params: dict[str, Any], named: str
) -> None:
    driver = _driver(tmp_path, resource=emulator.resource)
    try:
        driver.open()
        driver.attach(["radio_a1"])
        driver.apply("radio_a1", "both", {**ImpairmentParams().to_dict(), "delay_ms": 1})
        with pytest.raises(DriverError, match=rf"^ne1: .*{named}"):
            driver.apply("radio_a1", "forward", params)
        with pytest.raises(DriverError, match="unknown impairment parameter"):
            driver.apply("radio_a1", "forward", {"dealy_ms": 3})
        with pytest.raises(DriverError, match="Data out of range"):
            driver.apply("radio_a1", "forward", {"delay_ms": 20_000})  # the box's 10 s limit
    finally:
        driver.safe_state()
        driver.close()


def test_driver_with_a_map_of_its_own(emulator: Emulator, tmp_path: Path) -> None:
    commands = {
        "delay_ms": {"command": "CHANNEL{ch}:DELAY {value}", "scale": 0.001},
        "loss_pct": "CHAN{ch}:LOSS {value_ratio:.4f}E2",
        "clear": "CHAN{ch}:STAT OFF",
    }
    driver = _driver(tmp_path, resource=emulator.resource, commands=commands)
    try:
        driver.open()
        driver.attach(["radio_a1"])
        driver.apply("radio_a1", "reverse", {"delay_ms": 7, "loss_pct": 12.5})
        state = emulator.state()
        assert state["CHAN2:DEL"] == 0.007 and state["CHAN2:LOSS"] == 12.5
        with pytest.raises(DriverError, match="rate_kbps"):
            driver.apply("radio_a1", "reverse", {"rate_kbps": 100})
        with pytest.raises(DriverError, match="outage"):
            driver.set_outage("radio_a1", "reverse", True)
        driver.set_outage("radio_a1", "reverse", False)  # the default: nothing to say
    finally:
        driver.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"commands": {**DEFAULT_COMMANDS, "delay_ms": "CHAN{ch}:DEL {value_bps}"}}, "value_bps"),
     ({"commands": {**DEFAULT_COMMANDS, "delay": "CHAN{ch}:DEL {value}"}}, "not an impairment"),
     ({"commands": {"loss_pct": "CHAN{ch}:LOSS {value}"}}, "'clear' command is required"),
     ({"commands": {**DEFAULT_COMMANDS, "rate_kbps": "CHAN{ch}:RATE {value_bps}"}}, "unset"),
     ({"commands": {**DEFAULT_COMMANDS, "loss_pct": "CHAN{ch}:LOSS {value:q}"}}, "bad template"),
     ({"links": {"l1": {"forward": 1, "reverse": 1}}}, "channel 1 is both"),
     ({"links": {"l1": {"up": 1}}}, "not forward or reverse"),
     ({"timeout": 3}, "unknown setting"),
     ({}, "settings.resource")],
)  # fmt: skip
def test_driver_checks_its_settings(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    driver = ScpiImpairment("ne1", {"links": LINKS, **settings}, make_context(tmp_path))
    with pytest.raises(DriverError, match=message):
        driver.open()
    driver.safe_state()
    driver.close()


def test_driver_when_the_instrument_dies(tmp_path: Path) -> None:
    with running_emulator(tmp_path / "emu") as emu:
        driver = _driver(tmp_path, resource=emu.resource)
        try:
            driver.open()
            driver.attach(["radio_a1"])
            driver.apply("radio_a1", "forward", {"delay_ms": 20})
            emu.proc.send_signal(signal.SIGKILL)
            emu.proc.wait(timeout=5)
            started = time.monotonic()
            with pytest.raises(DriverError, match=r"^ne1: ") as failed:
                driver.apply("radio_a1", "forward", {"delay_ms": 30})
            assert failed.value.device == "ne1" and failed.value.exchanges
            with pytest.raises(DriverError, match=r"^ne1: "):
                driver.clear()
            driver.safe_state()  # never raises, and gives up at the first dead exchange
            assert time.monotonic() - started < 3 * TIMEOUT_S + 2
            events = [name for name, _ in driver.context.extra["events"]]
            assert "impairment.safe_state_failed" in events
        finally:
            driver.close()
        assert (tmp_path / "transcripts" / "ne1.scpi.log").read_text().count("> CHAN1:DEL") == 2


def test_driver_when_the_instrument_hangs(tmp_path: Path) -> None:
    """A frozen box still takes the bytes (the kernel buffers them) but never answers."""
    with running_emulator(tmp_path / "emu") as emu:
        driver = _driver(tmp_path, resource=emu.resource, timeout_s=0.5)
        try:
            driver.open()
            driver.attach(["radio_a1"])
            emu.proc.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(ScpiIOError, match=r"^ne1: no answer to 'SYST:ERR\?' within 0.5 s"):
                driver.apply("radio_a1", "forward", {"delay_ms": 20})
            driver.safe_state()
            assert time.monotonic() - started < 3
        finally:
            emu.proc.send_signal(signal.SIGCONT)
            driver.close()


def test_driver_starts_its_own_emulator(tmp_path: Path) -> None:
    driver = _driver(tmp_path, emulate=True)
    processes = driver.context.processes
    assert isinstance(processes, Processes)
    try:
        driver.open()
        assert [role for _, role in processes.tracked] == ["scpi-emulator:ne1"]
        driver.attach(["radio_a1"])
        driver.apply("radio_a1", "forward", {"delay_ms": 20, "loss_pct": 1})
        state_file = Path(driver.counters()["emulator_state"])
        state = json.loads(state_file.read_text())["settings"]
        assert state["CHAN1:DEL"] == 0.02 and state["CHAN1:LOSS"] == 1.0
        assert "ne1" in driver.idn  # the serial number is the device name
        driver.safe_state()
        assert json.loads(state_file.read_text())["settings"]["CHAN1:STAT"] is False
    finally:
        driver.close()
        for proc, _ in processes.tracked:
            try:
                assert proc.wait(timeout=5) is not None  # close() stopped it
            finally:
                _kill(proc)
