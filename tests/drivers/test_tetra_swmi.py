"""Tests of the emulated TETRA SwMI and the terminal emulator, as processes: the SwMI and
several terminal emulators run as real separate processes and the tests speak raw PEI lines
to the terminals over their ptys (one over TCP), as a PEI cable would. The SwMI's events file
is the ground truth the arbitration is checked against. Every process is killed in a
``finally``; timeouts are generous for a noisy 2-core machine."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # in case the package is not installed into the venv
    sys.path.insert(0, str(REPO))

from drivers.files import write_json_atomic  # noqa: E402
from drivers.tetra import tables  # noqa: E402

WAIT_S = 5.0
MCC, MNC = 901, 16383
GROUP = 9001
FINALS = ("OK", "ERROR")
URC_PREFIXES = ("+CTICN", "+CTCC", "+CTXG", "+CDTXC", "+CTCR", "+CTSDSR", "+CTXI")


def tsi(issi: int) -> str:
    return tables.extended_tsi(MCC, MNC, issi)


# --------------------------------------------------------------------------------------------
# Helpers: processes, a raw PEI line client, the SwMI's events
# --------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _wait_ready(proc: subprocess.Popen[bytes], ready: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read().decode() if proc.stdout and proc.poll() is not None else ""
            raise AssertionError(f"emulator did not start: {out}")
        time.sleep(0.01)
    data: dict[str, Any] = json.loads(ready.read_text())
    return data


class PeiLine:
    """A TE on the PEI: writes command lines, reads framed lines; URCs wait in ``unread``."""

    def __init__(self, url: str) -> None:
        self.sock: socket.socket | None = None
        self.fd: int | None = None
        if url.startswith("socket://"):
            host, _, port = url[len("socket://") :].rpartition(":")
            self.sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
        else:
            self.fd = os.open(url, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            tty.setraw(self.fd)
        self.buffer = b""
        self.unread: list[str] = []
        self.seen: list[str] = []

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.fd is not None:
            os.close(self.fd)

    def send(self, text: str, data: str | None = None) -> None:
        raw = (text + "\r").encode("latin-1") + (
            data.encode() + b"\x1a" if data is not None else b""
        )
        if self.sock is not None:
            self.sock.sendall(raw)
        else:
            assert self.fd is not None
            os.write(self.fd, raw)

    def pump(self, timeout_s: float) -> bool:
        """Read what arrives within ``timeout_s``; False if the other end is gone."""
        source: Any = self.sock if self.sock is not None else self.fd
        ready, _, _ = select.select([source], [], [], timeout_s)
        if not ready:
            return True
        try:
            chunk = self.sock.recv(4096) if self.sock is not None else os.read(source, 4096)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not chunk:
            return False
        self.buffer += chunk
        while True:
            cuts = [i for i in (self.buffer.find(b"\r"), self.buffer.find(b"\n")) if i >= 0]
            if not cuts:
                return True
            raw, self.buffer = self.buffer[: min(cuts)], self.buffer[min(cuts) + 1 :]
            line = raw.decode("latin-1").strip()
            if line:
                self.unread.append(line)
                self.seen.append(line)

    def command(self, text: str, data: str | None = None, timeout_s: float = WAIT_S) -> list[str]:
        """Send and return the answer's lines up to the final result (URCs stay unread)."""
        self.send(text, data)
        deadline = time.monotonic() + timeout_s
        while True:
            for index, line in enumerate(self.unread):
                if line in FINALS or line.startswith("+CME ERROR"):
                    head, tail = self.unread[: index + 1], self.unread[index + 1 :]
                    self.unread = [x for x in head if x.startswith(URC_PREFIXES)] + tail
                    return [x for x in head if not x.startswith(URC_PREFIXES)]
            if time.monotonic() > deadline:
                raise AssertionError(f"no final result to {text!r}; unread {self.unread}")
            self.pump(0.05)

    def expect(self, prefix: str, timeout_s: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            for index, line in enumerate(self.unread):
                if line.startswith(prefix):
                    del self.unread[index]
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no {prefix!r} within {timeout_s} s; unread {self.unread}")
            self.pump(0.05)

    def expect_none(self, prefix: str, wait_s: float = 0.4) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            self.pump(0.05)
        assert not [x for x in self.unread if x.startswith(prefix)], self.unread

    def silent(self, wait_s: float) -> bool:
        before = len(self.seen)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            self.pump(0.05)
        return len(self.seen) == before


@dataclass
class Lab:
    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    swmi_port: int = 0
    events_file: Path = Path()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = [json.loads(x) for x in self.events_file.read_text().splitlines() if x.strip()]
        return [e for e in found if name is None or e["event"] == name]

    def wait_event(self, name: str, nth: int = 1, **match: Any) -> dict[str, Any]:
        """The ``nth`` SwMI event ``name`` whose fields match, once it is there."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            found = [e for e in self.events(name) if all(e.get(k) == v for k, v in match.items())]
            if len(found) >= nth:
                return found[nth - 1]
            time.sleep(0.02)
        raise AssertionError(f"no SwMI event {name} #{nth} {match}: {self.events()[-8:]}")

    def start_swmi(self, *args: str) -> None:
        ready = self.tmp / "swmi.ready.json"
        self.events_file = self.tmp / "swmi.events.jsonl"
        proc = subprocess.Popen(
            [sys.executable, "-m", "drivers.tetra.swmi", "--ready-file", str(ready),
             "--events", str(self.events_file), "--state-out", str(self.tmp / "swmi.state.json"),
             *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(),
        )  # fmt: skip
        self.procs.append(proc)
        self.swmi_port = int(_wait_ready(proc, ready)["port"])

    def start_terminals(
        self, specs: list[tuple[int, list[str]]]
    ) -> list[tuple[subprocess.Popen[bytes], PeiLine]]:
        """Start terminals ``(issi, extra args)`` in parallel; wait until all registered."""
        started = []
        for issi, extra in specs:
            ready = self.tmp / f"t{issi}.{len(self.procs)}.ready.json"
            where = ["--pty-link", str(self.tmp / f"t{issi}.{len(self.procs)}.pty")]
            if "--tcp-port" in extra:
                where = []
            proc = subprocess.Popen(
                [sys.executable, "-m", "drivers.tetra.terminal_emulator",
                 "--swmi", f"127.0.0.1:{self.swmi_port}", "--issi", str(issi),
                 "--mcc", str(MCC), "--mnc", str(MNC), "--ready-file", str(ready),
                 "--state-out", str(self.tmp / f"t{issi}.state.json"), *where, *extra],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=_env(),
            )  # fmt: skip
            self.procs.append(proc)
            started.append((proc, ready))
        out = []
        for proc, ready in started:
            line = PeiLine(str(_wait_ready(proc, ready)["url"]))
            line.command("ATE0")
            line.command("AT+CMEE=1")
            out.append((proc, line))
        return out

    def terminal(self, issi: int, *extra: str) -> PeiLine:
        return self.start_terminals([(issi, list(extra))])[0][1]


def registered(line: PeiLine, stat: str = "1") -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        answer = line.command("AT+CREG?")
        if answer[0] == f"+CREG: 0,{stat}":
            return
        assert time.monotonic() < deadline, answer
        time.sleep(0.05)


@contextmanager
def lab_of(tmp: Path, *swmi_args: str) -> Iterator[Lab]:
    lab = Lab(tmp)
    try:
        lab.start_swmi(*swmi_args)
        yield lab
    finally:
        for proc in lab.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def three(lab: Lab, *extra: str) -> list[PeiLine]:
    lines = [line for _, line in lab.start_terminals([(i, ["--groups", str(GROUP), *extra])
                                                      for i in (1001, 1002, 1003)])]  # fmt: skip
    for line in lines:
        registered(line)
    return lines


def talking_call(caller: PeiLine, members: list[PeiLine]) -> str:
    """Caller sets up a group call requesting transmission; returns its CC instance."""
    caller.command("AT+CTSDC=0,0,0,1,1,0,1,1,1,0,0")  # RqTx = 1
    assert caller.command(f"ATD{GROUP}") == ["OK"]
    cc = caller.expect("+CTCC:").split(": ")[1].split(",")[0]
    assert caller.expect("+CTXG:") == f"+CTXG: {cc},0,0,0"
    for member in members:
        member.expect("+CTICN:")
        member.expect("+CTXG:")
    return cc


# --------------------------------------------------------------------------------------------
# PEI basics
# --------------------------------------------------------------------------------------------


def test_identity_mode_errors_and_registration(tmp_path: Path) -> None:
    with lab_of(tmp_path) as lab:
        t1 = lab.terminal(1001, "--groups", "9001,9002")
        registered(t1)
        twin = lab.terminal(1001)
        registered(twin, "3")  # the same ISSI twice: system reject
        assert lab.events("register_rejected")[0]["issi"] == 1001

        assert t1.command("AT+CNUMF?") == [f"+CNUMF: 6,{tsi(1001)}", "OK"]
        assert t1.command("AT+CTOM?") == ["+CTOM: 0", "OK"]
        assert t1.command("AT+CTOM=0") == ["OK"]
        assert t1.command("AT+CTOM=1") == ["+CME ERROR: 4"]  # no DMO in this MT
        assert t1.command("AT+CTGS?") == [f"+CTGS: 1,{tsi(9001)}", f"+CTGS: 2,{tsi(9002)}", "OK"]
        for routing in tables.SVXLINK_CTSP_INIT:
            assert t1.command(routing) == ["OK"]
        assert "+CTSP: 2,0,0" in t1.command("AT+CTSP?")
        assert t1.command("AT+CTXD=5,1") == ["+CME ERROR: 3"]  # no call with CC instance 5
        assert t1.command("AT+CTXD=x,1") == ["+CME ERROR: 33"]
        assert t1.command("AT+CTSDC=0,9") == ["+CME ERROR: 34"]
        assert t1.command("AT+CTSDC") == ["+CME ERROR: 35"]
        assert t1.command("ATD12345678901234567890123456") == ["+CME ERROR: 26"]
        assert t1.command("ATD12AB") == ["+CME ERROR: 27"]
        assert t1.command("AT+NOSUCH") == ["ERROR"]
        assert t1.command("AT+CMEE=2") == ["OK"]
        assert t1.command("AT+CTOM=1") == [f"+CME ERROR: {tables.PEI_ERRORS[4]}"]
        assert t1.command("AT+CMEE=0") == ["OK"]
        assert t1.command("AT+CTOM=1") == ["ERROR"]
        assert t1.command("ATE1") == ["OK"]
        assert t1.command("AT") == ["AT", "OK"]  # the echo
        assert t1.command("AT+CTGS=1,9003") == ["AT+CTGS=1,9003", "OK"]
        lab.wait_event("detach", issi=1001, gssi=9002)
        lab.wait_event("attach", issi=1001, gssi=9003)


def test_tcp_pei_serves_one_client_at_a_time(tmp_path: Path) -> None:
    with lab_of(tmp_path) as lab:
        first = lab.terminal(1001, "--tcp-port", "0")
        registered(first)
        url = json.loads(next(tmp_path.glob("t1001.*.ready.json")).read_text())["url"]
        assert url.startswith("socket://127.0.0.1:")
        second = PeiLine(url)
        try:
            second.send("AT")
            assert second.pump(2.0) is False  # disconnected, never answered
            assert second.unread == []
        finally:
            second.close()
        assert first.command("AT+CNUMF?")[0] == f"+CNUMF: 6,{tsi(1001)}"


# --------------------------------------------------------------------------------------------
# Group calls and arbitration
# --------------------------------------------------------------------------------------------


def test_group_call_setup_grant_cease_and_release(tmp_path: Path) -> None:
    with lab_of(tmp_path, "--hang-time-s", "30") as lab:
        t1, t2, t3 = three(lab)
        cc = talking_call(t1, [])
        for member in (t2, t3):
            incoming = member.expect("+CTICN:").split(": ")[1].split(",")
            assert incoming[2] == "0" and incoming[4] == tsi(1001) and incoming[11] == tsi(GROUP)
            mcc = incoming[0]
            assert member.expect("+CTXG:") == f"+CTXG: {mcc},3,0,0,3,{tsi(1001)}"
        setup = lab.wait_event("call_setup")
        assert setup["caller"] == 1001 and setup["members"] == [1001, 1002, 1003]
        assert lab.wait_event("tx_granted")["issi"] == 1001

        assert t1.command(f"AT+CUTXC={cc}") == ["OK"]
        for member in (t2, t3):
            assert member.expect("+CDTXC:").endswith(",0")
        t1.expect_none("+CDTXC")  # the talker itself is not told
        lab.wait_event("tx_ceased", issi=1001)

        assert t1.command("ATH") == ["OK"]
        assert t1.expect("+CTCR:") == f"+CTCR: {cc},1"
        for member in (t2, t3):
            assert member.expect("+CTCR:").endswith(",1")
        assert lab.wait_event("call_released")["cause"] == tables.CAUSE_USER_REQUEST


def test_queueing_and_preemption_by_preemptive_and_emergency(tmp_path: Path) -> None:
    with lab_of(tmp_path, "--hang-time-s", "30") as lab:
        t1, t2, t3 = three(lab)
        talking_call(t1, [t2, t3])  # t1 talks with TxDemandPriority high (1)
        assert t2.command("AT+CTXD=1,0") == ["OK"]  # low: queued
        assert t2.expect("+CTXG:") == "+CTXG: 1,2,0,0"
        assert t2.command("AT+CTXD=1,1") == ["OK"]  # high, but not above the talker: queued
        assert t2.expect("+CTXG:") == "+CTXG: 1,2,0,0"

        assert t3.command("AT+CTXD=1,2") == ["OK"]  # pre-emptive above high: pre-empts t1
        assert t3.expect("+CTXG:") == "+CTXG: 1,0,0,0"
        assert t1.expect("+CTXG:") == f"+CTXG: 1,3,0,0,3,{tsi(1003)}"
        assert t2.expect("+CTXG:") == f"+CTXG: 1,3,0,0,3,{tsi(1003)}"
        assert lab.wait_event("tx_preempted", issi=1001)["by"] == 1003

        assert t1.command("AT+CTXD=1,2") == ["OK"]  # pre-emptive against pre-emptive: queued
        assert t1.expect("+CTXG:") == "+CTXG: 1,2,0,0"
        assert t1.command("AT+CTXD=1,3") == ["OK"]  # emergency pre-empts everything below
        assert t1.expect("+CTXG:") == "+CTXG: 1,0,0,0"
        assert t3.expect("+CTXG:") == f"+CTXG: 1,3,0,0,3,{tsi(1001)}"
        assert lab.wait_event("tx_preempted", issi=1003)["by"] == 1001
        assert t2.expect("+CTXG:") == f"+CTXG: 1,3,0,0,3,{tsi(1001)}"

        assert t1.command("AT+CUTXC=1") == ["OK"]  # the queue's head (t2) gets the grant
        assert t2.expect("+CDTXC:") == "+CDTXC: 1,0"
        assert t2.expect("+CTXG:") == "+CTXG: 1,0,0,0"
        assert t3.expect("+CTXG:") == f"+CTXG: 1,3,0,0,3,{tsi(1002)}"
        granted = [e["issi"] for e in lab.events("tx_granted")]
        assert granted == [1001, 1003, 1001, 1002]


def test_no_queueing_refuses_and_call_preemption_by_priority(tmp_path: Path) -> None:
    with lab_of(tmp_path, "--no-queueing", "--hang-time-s", "30") as lab:
        t1, t2, t3 = three(lab)
        talking_call(t1, [t2, t3])
        assert t2.command("AT+CTXD=1,1") == ["OK"]
        assert t2.expect("+CTXG:") == "+CTXG: 1,1,0,0"  # not granted
        assert lab.wait_event("tx_rejected")["issi"] == 1002

        # an emergency call (priority 15) in the same group pre-empts the running call
        assert t2.command("AT+CTSDC=0,0,0,1,1,0,1,1,0,15,0") == ["OK"]
        assert t2.command(f"ATD{GROUP}") == ["OK"]
        assert t2.expect("+CTCC:").startswith("+CTCC: 2,")
        assert t2.expect("+CTCR:") == "+CTCR: 1,9"
        assert t1.expect("+CTCR:") == "+CTCR: 1,9"
        assert t3.expect("+CTCR:") == "+CTCR: 1,9"
        for member in (t1, t3):
            assert member.expect("+CTICN:").split(",")[-1] == "15"
        assert lab.wait_event("call_preempted")["by"] == 1002

        # a lower-priority set-up joins the running call instead
        assert t3.command("AT+CTSDC=0,0,0,1,1,0,1,1,0,0,0") == ["OK"]
        assert t3.command(f"ATD{GROUP}") == ["OK"]
        assert t3.expect("+CTCC:").startswith("+CTCC: 2,")
        assert lab.wait_event("call_joined")["issi"] == 1003


def test_late_entry_and_hang_time_release(tmp_path: Path) -> None:
    with lab_of(tmp_path, "--hang-time-s", "0.6") as lab:
        (_, t1), (_, t2) = lab.start_terminals([(1001, ["--groups", str(GROUP)]), (1002, [])])
        registered(t1)
        registered(t2)
        cc = talking_call(t1, [])
        t2.expect_none("+CTICN", 0.2)  # not attached
        assert t2.command(f"AT+CTGS=1,{GROUP}") == ["OK"]  # late entry
        assert t2.expect("+CTICN:").startswith("+CTICN: 1,0,0,5,")
        assert t2.expect("+CTXG:") == f"+CTXG: 1,3,0,0,3,{tsi(1001)}"
        lab.wait_event("late_entry", issi=1002)

        assert t1.command(f"AT+CUTXC={cc}") == ["OK"]
        t2.expect("+CDTXC:")
        assert t1.expect("+CTCR:", 5) == f"+CTCR: {cc},13"  # hang time expired: timer expiry
        assert t2.expect("+CTCR:", 5) == "+CTCR: 1,13"
        released = lab.wait_event("call_released")
        assert released["cause"] == tables.CAUSE_TIMER_EXPIRY
        assert released["wall"] - lab.wait_event("tx_ceased")["wall"] >= 0.55

        # a call set up without a request to transmit starts its hang time at once
        t1.command("AT+CTSDC=0,0,0,1,1,0,1,1,0,0,0")
        assert t1.command(f"ATD{GROUP}") == ["OK"]
        t1.expect("+CTCC:")
        assert t1.expect("+CTCR:", 5).endswith(",13")


# --------------------------------------------------------------------------------------------
# SDS
# --------------------------------------------------------------------------------------------


def test_sds_both_ways_and_user_data_errors(tmp_path: Path) -> None:
    with lab_of(tmp_path) as lab:
        (_, t1), (_, t2) = lab.start_terminals([(1001, []), (1002, [])])
        registered(t1)
        registered(t2)
        text = "8204" + "07" + "01" + b"status ok".hex().upper()
        assert t1.command("AT+CTSDS=12,0") == ["OK"]
        assert t1.command(f"AT+CMGS=1002,{len(text) * 4}", text) == ["+CMGS: 1,4,7", "OK"]
        header = t2.expect("+CTSDSR:")
        assert header == f"+CTSDSR: 12,1001,0,1002,0,{len(text) * 4}"
        assert t2.expect(text) == text  # the payload line follows the header

        assert t2.command("AT+CMGS=1001,16", "8210") == ["+CMGS: 1,4,0", "OK"]
        assert t1.expect("+CTSDSR:") == "+CTSDSR: 12,1002,0,1001,0,16"
        assert t1.expect("8210") == "8210"
        assert t1.command("AT+CMGS=4242,16", "8210") == ["+CMGS: 2,5,0", "OK"]  # nobody there
        assert [e["status"] for e in lab.events("sds")] == [4, 4, 5]

        assert t1.command("AT+CMGS=1002,16", "82ZZ") == ["+CME ERROR: 32"]
        assert t1.command("AT+CMGS=1002,64", "8210") == ["+CME ERROR: 32"]  # length mismatch
        t1.send("\x1a")  # user data without AT+CMGS
        assert t1.expect("+CME ERROR") == "+CME ERROR: 36"
        assert t1.command("AT") == ["OK"]


# --------------------------------------------------------------------------------------------
# Faults: a terminal dying, power, stopping
# --------------------------------------------------------------------------------------------


def test_dying_terminal_is_deregistered_and_its_transmission_ceases(tmp_path: Path) -> None:
    with lab_of(tmp_path, "--hang-time-s", "30") as lab:
        specs = [(i, ["--groups", str(GROUP)]) for i in (1001, 1002, 1003)]
        (p1, t1), (_, t2), (_, t3) = lab.start_terminals(specs)
        for line in (t1, t2, t3):
            registered(line)
        talking_call(t1, [t2, t3])
        assert t2.command("AT+CTXD=1,1") == ["OK"]
        assert t2.expect("+CTXG:") == "+CTXG: 1,2,0,0"

        p1.kill()
        p1.wait(timeout=5)
        assert t2.expect("+CDTXC:") == "+CDTXC: 1,0"
        assert t2.expect("+CTXG:") == "+CTXG: 1,0,0,0"  # the queue moves on
        assert t3.expect("+CDTXC:") == "+CDTXC: 1,0"
        assert t3.expect("+CTXG:") == f"+CTXG: 1,3,0,0,3,{tsi(1002)}"
        gone = lab.wait_event("deregister", issi=1001)
        assert gone["reason"] == "connection closed"
        assert lab.wait_event("tx_ceased", issi=1001)["reason"] == "left"
        assert not all(t1.pump(0.2) for _ in range(10))  # the dead terminal's PEI is gone too


def test_power_off_silences_and_power_on_reboots(tmp_path: Path) -> None:
    power = tmp_path / "psu.state.json"
    write_json_atomic(power, {"settings": {"OUTP2": True, "SOUR2:VOLT": 12.0}})
    with lab_of(tmp_path) as lab:
        t1 = lab.terminal(1001, "--groups", str(GROUP), "--power-state", str(power),
                          "--power-output-key", "OUTP2", "--power-voltage-key", "SOUR2:VOLT",
                          "--min-voltage-v", "3.3")  # fmt: skip
        registered(t1)
        write_json_atomic(power, {"settings": {"OUTP2": True, "SOUR2:VOLT": 3.0}})  # brown-out
        lab.wait_event("deregister", issi=1001)
        t1.send("AT+CNUMF?")
        assert t1.silent(0.6)  # a switched-off radio says nothing

        write_json_atomic(power, {"settings": {"OUTP2": True, "SOUR2:VOLT": 12.0}})
        deadline = time.monotonic() + WAIT_S
        while len(lab.events("register")) < 2:
            assert time.monotonic() < deadline, lab.events()
            time.sleep(0.05)
        t1.unread.clear()
        assert t1.command("AT") == ["AT", "OK"]  # rebooted: echo is on again
        assert t1.command("ATE0") == ["ATE0", "OK"]
        registered(t1)
        lab.wait_event("attach", 2, issi=1001, gssi=GROUP)  # the groups of its boot again

        write_json_atomic(power, {"settings": {"OUTP2": False, "SOUR2:VOLT": 12.0}})
        lab.wait_event("deregister", 2, issi=1001)
        state = json.loads((tmp_path / "t1001.state.json").read_text())
        deadline = time.monotonic() + WAIT_S
        while state["powered"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
            state = json.loads((tmp_path / "t1001.state.json").read_text())
        assert state["counts"]["boots"] == 2


def test_sigterm_removes_the_pty_link_and_swmi_logs_its_stop(tmp_path: Path) -> None:
    with lab_of(tmp_path) as lab:
        ((proc, t1),) = lab.start_terminals([(1001, [])])
        registered(t1)
        link = next(tmp_path.glob("t1001.*.pty"))
        assert link.is_symlink() and os.readlink(link).startswith("/dev/pts/")
        t1.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not link.exists() and not link.is_symlink()
        lab.wait_event("deregister", issi=1001)
        swmi = lab.procs[0]
        swmi.send_signal(signal.SIGTERM)
        assert swmi.wait(timeout=10) == 0
        assert lab.events()[-1]["event"] == "stopped"


@pytest.mark.parametrize("argv", [["--issi", "0"], ["--mcc", "123456"]])
def test_terminal_rejects_bad_arguments(tmp_path: Path, argv: list[str]) -> None:
    base = {"--swmi": "127.0.0.1:1", "--issi": "1001", "--mcc": "901", "--mnc": "1"}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    args = [x for item in base.items() for x in item]
    result = subprocess.run(
        [sys.executable, "-m", "drivers.tetra.terminal_emulator", *args,
         "--pty-link", str(tmp_path / "x.pty")],
        capture_output=True, env=_env(), timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and b"must" in result.stderr
    assert not (tmp_path / "x.pty").exists()
