"""Tests of the emulated modem's core link (``drivers.radio.core_link``): the modem emulator runs
as its own process against fake cores written here (Unix-socket JSON-lines servers following the
attach protocol, authenticating with MILENAGE, checked first against the published TS 35.207
test set), and is spoken to over its real pty with raw AT or through the real AT driver. What is
checked is what a lab sees: registration only once the core accepted, the core's address, a
refused USIM, a lost core declared about ``core_detection_s`` after its first sign and the
standby taking over, roaming when a network's cores are all gone (and the return home), and
dedicated bearers as secondary contexts. Timing checks use generous bounds only."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # in case the package is not installed into the venv
    sys.path.insert(0, str(REPO))

from drivers.core.milenage import f2345, milenage_res  # noqa: E402
from drivers.radio.modem import AtModem  # noqa: E402
from tests.drivers.test_modem_driver import Lab  # noqa: E402
from tests.drivers.test_modem_emulator import HOME, ROAM, RawClient, client, running_modem  # noqa: E402

WAIT_S = 8.0
K = "465b5ce8b199b49faa5f0a2ee238a6bc"
OPC = "cd63cb71954a9f4e48a5994e37a02baf"
IMSI = "001010000000011"
DETECTION_S = 0.6

# --------------------------------------------------------------------------------------------
# A fake core
# --------------------------------------------------------------------------------------------


class FakeCore:
    """The core side of the attach protocol, small: one thread per NAS session, a subscriber
    database of one USIM, an address per core, dedicated bearers pushed on demand."""

    def __init__(
        self,
        path: Path,
        address: str,
        *,
        k: str = K,
        attach_bearers: tuple[dict[str, Any], ...] = (),
        hold: threading.Event | None = None,
    ) -> None:
        self.path, self.address, self.k = path, address, k
        self.attach_bearers = attach_bearers
        self.hold = hold
        self.requests: list[dict[str, Any]] = []
        self.rands: list[str] = []
        self.answered: list[tuple[float, dict[str, Any]]] = []
        self.silent = threading.Event()
        self.stopped_wall: float | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(8)
        self._listener.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()

    def ops(self, op: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r.get("op") == op]

    def push(self, message: dict[str, Any]) -> None:
        """An unsolicited message to every open session."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(message).encode() + b"\n")

    def stop(self) -> float:
        """The core process dies: listener and sessions closed; returns the wall time."""
        self.stopped_wall = time.time()
        self._stop.set()
        with self._lock:
            conns, self._conns = list(self._conns), []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return self.stopped_wall

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        rand = ""
        with contextlib.suppress(OSError), conn.makefile("rb") as lines:
            for line in lines:
                request = json.loads(line)
                with self._lock:
                    self.requests.append({**request, "wall": time.time()})
                op = request["op"]
                if op == "challenge":
                    rand = os.urandom(16).hex()
                    self.rands.append(rand)
                    self._reply(conn, {"re": "challenge", "rand": rand})
                elif op == "attach":
                    if self.hold is not None:
                        self.hold.wait(WAIT_S)
                    self._reply(conn, self._attach(request, rand))
                elif op == "echo" and not self.silent.is_set():
                    self._reply(conn, {"re": "echo", "n": request["n"]})
                elif op == "detach":
                    self._reply(conn, {"re": "detach", "ok": True})
                    break
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        conn.close()

    def _attach(self, request: dict[str, Any], rand: str) -> dict[str, Any]:
        xres = f2345(bytes.fromhex(self.k), bytes.fromhex(OPC), bytes.fromhex(rand)).res.hex()
        if request["imsi"] != IMSI:
            return {"re": "attach", "ok": False, "cause": 8, "name": "EPS services not allowed"}
        if request.get("res") != xres:
            return {"re": "attach", "ok": False, "cause": 3, "name": "Illegal UE"}
        default = {"ebi": 5, "qci": 9, "gbr_kbps": 0, "default": True,
                   "arp": {"priority_level": 8, "pre_emption_capability": False,
                           "pre_emption_vulnerability": True}}  # fmt: skip
        answer = {"re": "attach", "ok": True, "address": self.address,
                  "bearers": [default, *self.attach_bearers]}  # fmt: skip
        with self._lock:
            self.answered.append((time.time(), request))
        return answer

    def _reply(self, conn: socket.socket, message: dict[str, Any]) -> None:
        conn.sendall(json.dumps(message).encode() + b"\n")


def bearer_event(what: str, ebi: int, qci: int, gbr_kbps: int) -> dict[str, Any]:
    return {"event": "bearer", "what": what, "ebi": ebi, "qci": qci, "gbr_kbps": gbr_kbps,
            "arp": {"priority_level": 2, "pre_emption_capability": True,
                    "pre_emption_vulnerability": False}, "cause": "rx"}  # fmt: skip


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory: a Unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="cl", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def cores(*specs: tuple[Path, str, dict[str, Any]]) -> Iterator[list[FakeCore]]:
    started = [FakeCore(path, address, **options) for path, address, options in specs]
    try:
        yield started
    finally:
        for core in started:
            if core.stopped_wall is None:
                core.stop()


def modem_config(networks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"imsi": IMSI, "k": K, "opc": OPC, "node": "ue_a1", "networks": networks,
            "core_detection_s": DETECTION_S, **extra}  # fmt: skip


def arrival(c: RawClient, match: Callable[[str], bool], timeout_s: float = WAIT_S) -> float:
    """Wall time at which the first line that matches arrived (read as it comes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        while c.lines:
            if match(c.lines.pop(0)):
                return time.time()
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no matching line arrived"
        c._pump(min(remaining, 0.05))


def until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def urc_setup(c: RawClient) -> None:
    assert c.info("AT+CEREG=2")[1] == "OK"
    assert c.info("AT+CGEREP=2,1")[1] == "OK"


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_milenage_res_matches_the_published_test_set_1() -> None:
    """The fake cores' reference: TS 35.207 test set 1 (K, OPc, RAND -> RES = f2)."""
    assert milenage_res(K, OPC, "23553cbe9637a89d218ae64dae47bf35") == "a54211d5e3ba50bf"


def test_accepted_attach_registers_with_the_core_address(sockdir: Path, tmp_path: Path) -> None:
    home = {**HOME, "cores": [str(sockdir / "a.sock")], "ran": "ran_a"}
    hold = threading.Event()
    with (
        cores((sockdir / "a.sock", "10.201.0.2", {"hold": hold})) as (core,),
        running_modem(tmp_path, modem_config([home], core_detection_s=3.0)) as modem,
        client(modem) as c,
    ):
        until(lambda: bool(core.ops("attach")), "no attach request")
        request = core.ops("attach")[0]
        assert {k: request[k] for k in ("imsi", "plmn", "ran", "ue_node")} == {
            "imsi": IMSI, "plmn": "00101", "ran": "ran_a", "ue_node": "ue_a1"}  # fmt: skip
        assert request["res"] == milenage_res(K, OPC, core.rands[-1])
        time.sleep(0.8)  # four attach windows (0.2 s): the core has not answered yet
        assert modem.state()["stat"] == 2
        assert c.info("AT+CGPADDR=1") == (["+CGPADDR: 1"], "OK")
        hold.set()
        state = modem.wait_state(lambda s: s["stat"] == 1)
        assert state["pdn"]["1"]["address"] == "10.201.0.2"
        assert state["core"]["accepted"] and state["core"]["plmn"] == "00101"
        assert c.info("AT+CGPADDR=1") == (['+CGPADDR: 1,"10.201.0.2"'], "OK")
        assert c.info("AT+CGCONTRDP=1") == (
            ['+CGCONTRDP: 1,5,"internet","10.201.0.2.255.255.255.255"'], "OK")  # fmt: skip
        assert c.info("AT+CGEQOSRDP") == (["+CGEQOSRDP: 1,9,0,0,0,0"], "OK")
        assert c.info("AT+CGDCONT?")[0] == ['+CGDCONT: 1,"IP","internet","10.201.0.2",0,0']
        assert modem.state()["cores"]["networks"]["00101"] == {
            "state": "up", "ran": "ran_a", "cores": {str(sockdir / "a.sock"): "alive"}}  # fmt: skip
        until(lambda: len(core.ops("echo")) >= 5, "no keepalive echoes")
        assert c.info("AT+CFUN=4") == ([], "OK")  # the ME detaches: the core hears it
        until(lambda: bool(core.ops("detach")), "no detach on AT+CFUN=4")
        modem.wait_state(lambda s: s["cores"]["in_use"] is None)


def test_a_refused_usim_denies_the_network(sockdir: Path, tmp_path: Path) -> None:
    """Wrong K on the core's side: EMM cause 3. Automatic selection moves to the other
    network; a manual selection of the refusing one ends in stat 3 with the core's cause."""
    home = {**HOME, "cores": [str(sockdir / "a.sock")], "ran": "ran_a"}
    wrong_k = "0396eb317b6d1c36f19c1c84cd6ffd16"
    with (
        cores((sockdir / "a.sock", "10.201.0.2", {"k": wrong_k})) as (core,),
        running_modem(tmp_path, modem_config([home, ROAM])) as modem,
        client(modem) as c,
    ):
        state = modem.wait_state(lambda s: s["stat"] == 5)
        assert state["plmn"] == "00102"
        assert state["core"]["rejected"] == {"00101": {"cause": 3, "name": "Illegal UE"}}
        assert c.info("AT+CGPADDR=1") == (['+CGPADDR: 1,"10.45.0.2"'], "OK")  # no core there
        assert c.info("AT+CEREG=3")[1] == "OK"
        assert c.info('AT+COPS=1,2,"00101"') == ([], "+CME ERROR: 32")
        assert len(core.ops("attach")) == 2  # the manual selection asked the core again
        assert c.info("AT+CEREG?") == (['+CEREG: 3,3,"00A1","01A2B3C4",7,0,3'], "OK")
        assert modem.state()["stat"] == 3


def test_a_closed_core_is_declared_lost_and_the_standby_takes_over(
    sockdir: Path, tmp_path: Path
) -> None:
    a, b = sockdir / "a.sock", sockdir / "b.sock"
    home = {**HOME, "cores": [str(a), str(b)], "ran": "ran_a"}
    with (
        cores((a, "10.201.0.2", {}), (b, "10.202.0.2", {})) as (primary, standby),
        running_modem(tmp_path, modem_config([home])) as modem,
        client(modem) as c,
    ):
        modem.wait_state(lambda s: s["stat"] == 1)
        urc_setup(c)
        assert c.info("AT+CGPADDR=1") == (['+CGPADDR: 1,"10.201.0.2"'], "OK")
        time.sleep(0.3)  # a few keepalives
        closed = primary.stop()
        lost = arrival(c, lambda line: line == "+CEREG: 2")
        # the first sign is the close, or an echo in flight just before it (< one interval)
        assert DETECTION_S - 0.05 <= lost - closed <= DETECTION_S + 0.5, lost - closed
        c.wait_line(lambda line: line == "+CGEV: NW PDN DEACT 1", timeout_s=1)
        c.wait_line(lambda line: line == "+CGEV: NW DETACH", timeout_s=1)
        c.wait_line(lambda line: line.startswith("+CEREG: 1,"))
        assert len(standby.ops("attach")) == 1 and standby.answered
        assert c.info("AT+CGPADDR=1") == (['+CGPADDR: 1,"10.202.0.2"'], "OK")
        state = modem.state()
        assert state["cores"]["in_use"]["core"] == str(b)
        assert state["cores"]["networks"]["00101"]["cores"] == {str(a): "dead", str(b): "alive"}
        (loss,) = state["cores"]["losses"]
        assert loss["why"] == "connection closed" and loss["core"] == str(a)
        assert loss["declared_wall"] - loss["first_sign_wall"] == pytest.approx(
            DETECTION_S, abs=0.1
        )


def test_a_silent_core_is_lost_from_its_first_unanswered_echo(
    sockdir: Path, tmp_path: Path
) -> None:
    a, b = sockdir / "a.sock", sockdir / "b.sock"
    home = {**HOME, "cores": [str(a), str(b)], "ran": "ran_a"}
    with (
        cores((a, "10.201.0.2", {}), (b, "10.202.0.2", {})) as (primary, _),
        running_modem(tmp_path, modem_config([home])) as modem,
        client(modem) as c,
    ):
        modem.wait_state(lambda s: s["stat"] == 1)
        urc_setup(c)
        silenced = time.time()
        primary.silent.set()  # alive (the connection stays open) but no longer answering
        lost = arrival(c, lambda line: line == "+CEREG: 2")
        assert DETECTION_S - 0.05 <= lost - silenced <= DETECTION_S + 0.5, lost - silenced
        c.wait_line(lambda line: line.startswith("+CEREG: 1,"))
        (loss,) = modem.state()["cores"]["losses"]
        assert loss["why"] == "request unanswered"


def test_a_network_detach_drops_the_registration_and_the_modem_attaches_again(
    sockdir: Path, tmp_path: Path
) -> None:
    home = {**HOME, "cores": [str(sockdir / "a.sock")], "ran": "ran_a"}
    with (
        cores((sockdir / "a.sock", "10.201.0.2", {})) as (core,),
        running_modem(tmp_path, modem_config([home])) as modem,
        client(modem) as c,
    ):
        modem.wait_state(lambda s: s["stat"] == 1)
        urc_setup(c)
        core.push({"event": "detach", "cause": "subscriber removed"})
        c.wait_line(lambda line: line == "+CEREG: 2")
        c.wait_line(lambda line: line == "+CGEV: NW DETACH", timeout_s=1)
        c.wait_line(lambda line: line.startswith("+CEREG: 1,"))
        assert len(core.ops("attach")) == 2  # the same core: it is alive, no failover
        state = modem.state()
        assert state["cores"]["losses"] == [] and state["pdn"]["1"]["active"]


def test_with_every_home_core_gone_the_modem_roams_and_comes_back(
    sockdir: Path, tmp_path: Path
) -> None:
    a, b, r = sockdir / "a.sock", sockdir / "b.sock", sockdir / "r.sock"
    home = {**HOME, "cores": [str(a), str(b)], "ran": "ran_a"}
    roam = {**ROAM, "cores": [str(r)], "ran": "ran_r"}
    with (
        cores((a, "10.201.0.2", {}), (b, "10.202.0.2", {}), (r, "10.210.0.2", {})) as (
            primary,
            standby,
            visited,
        ),
        running_modem(tmp_path, modem_config([home, roam])) as modem,
        client(modem) as c,
    ):
        modem.wait_state(lambda s: s["stat"] == 1)
        urc_setup(c)
        standby.stop()
        closed = primary.stop()
        lost = arrival(c, lambda line: line == "+CEREG: 2")
        assert DETECTION_S - 0.05 <= lost - closed <= DETECTION_S + 0.5
        c.wait_line(lambda line: line.startswith('+CEREG: 5,"0002","00000005"'))
        assert visited.ops("attach")[0]["plmn"] == "00102"
        assert visited.ops("attach")[0]["ran"] == "ran_r"
        assert c.info("AT+CGPADDR=1") == (['+CGPADDR: 1,"10.210.0.2"'], "OK")
        state = modem.state()
        assert state["cores"]["networks"]["00101"]["state"] == "down"
        assert state["core"]["down"] == ["00101"]

        with cores((a, "10.201.0.9", {})) as (restarted,):  # the primary comes back
            c.wait_line(lambda line: line.startswith('+CEREG: 1,"00A1"'))
            assert restarted.answered
            until(lambda: bool(visited.ops("detach")), "the visited core never heard a detach")
            assert c.info("AT+CGPADDR=1") == (['+CGPADDR: 1,"10.201.0.9"'], "OK")


def test_dedicated_bearers_show_as_secondary_contexts(sockdir: Path, tmp_path: Path) -> None:
    home = {**HOME, "cores": [str(sockdir / "a.sock")], "ran": "ran_a"}
    pcc = {"ebi": 6, "qci": 65, "gbr_kbps": 64, "default": False,
           "arp": {"priority_level": 10, "pre_emption_capability": False,
                   "pre_emption_vulnerability": True}}  # fmt: skip
    with (
        cores((sockdir / "a.sock", "10.201.0.2", {"attach_bearers": (pcc,)})) as (core,),
        running_modem(tmp_path, modem_config([home], boot_s=0.1)) as modem,
        client(modem) as c,
    ):
        modem.wait_state(lambda s: s["stat"] == 1)
        # the PCC rule's bearer came with the attach: secondary context 2 of cid 1
        assert c.info("AT+CGEQOSRDP") == (
            ["+CGEQOSRDP: 1,9,0,0,0,0", "+CGEQOSRDP: 2,65,64,64,64,64"], "OK")  # fmt: skip
        assert c.info("AT+CGSCONTRDP=2") == (["+CGSCONTRDP: 2,1,6"], "OK")
        assert c.info("AT+CGCONTRDP=2") == ([], "OK")  # not a primary context
        assert c.info("AT+CGPADDR=2") == (['+CGPADDR: 2,"10.201.0.2"'], "OK")
        assert c.info("AT+CGACT?") == (["+CGACT: 1,1", "+CGACT: 2,1"], "OK")
        urc_setup(c)
        core.push(bearer_event("activated", 7, 69, 0))
        assert c.wait_line(lambda line: line.startswith("+CGEV:")) == "+CGEV: NW ACT 1,3,0"
        assert c.info("AT+CGEQOSRDP=3") == (["+CGEQOSRDP: 3,69,0,0,0,0"], "OK")
        core.push(bearer_event("released", 6, 65, 64))
        assert c.wait_line(lambda line: line.startswith("+CGEV:")) == "+CGEV: NW DEACT 1,2,0"
        assert c.info("AT+CGEQOSRDP=2") == ([], "OK")
        bearers = modem.wait_state(lambda s: len(s["bearers"]) == 1)["bearers"]
        assert [(b["cid"], b["p_cid"], b["ebi"], b["qci"]) for b in bearers] == [(3, 1, 7, 69)]
        # the default context goes: its dedicated bearer with it
        assert c.command("AT+CGACT=0,1") == [
            "+CGEV: ME DEACT 1,3,0", "+CGEV: ME PDN DEACT 1", "OK"]  # fmt: skip


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


def test_the_driver_reports_bearers_and_core_failover(sockdir: Path, lab: Lab) -> None:
    a, b = sockdir / "a.sock", sockdir / "b.sock"
    home = {**HOME, "cores": [str(a), str(b)], "ran": "ran_a"}
    with cores((a, "10.201.0.2", {}), (b, "10.202.0.2", {})) as (primary, standby):
        emu = {"networks": [home], "imsi": IMSI, "k": K, "opc": OPC, "node": "ue_a1",
               "core_detection_s": DETECTION_S}  # fmt: skip
        modem: AtModem = lab.modem(emu=emu)
        modem.open()
        rec = lab.rec
        assert rec.wait("radio.pdn", lambda f: f["active"])["address"] == "10.201.0.2"
        assert primary.ops("attach")[0]["ue_node"] == "ue_a1"

        primary.push(bearer_event("activated", 6, 65, 128))
        up = rec.wait("radio.bearer")
        assert (up["what"], up["origin"], up["p_cid"], up["cid"], up["event_type"]) == (
            "activated", "nw", 1, 2, 0)  # fmt: skip
        qos = rec.wait("radio.bearer_qos")
        assert (qos["cid"], qos["qci"], qos["dl_gbr_kbps"], qos["ul_gbr_kbps"]) == (2, 65, 128, 128)
        primary.push(bearer_event("released", 6, 65, 128))
        down = rec.wait("radio.bearer", lambda f: f["what"] == "released")
        assert (down["p_cid"], down["cid"]) == (1, 2)

        primary.stop()
        rec.wait("radio.registration", lambda f: f["stat"] == 2 and f["source"] == "urc")
        again = rec.wait("radio.pdn", lambda f: f["address"] == "10.202.0.2")
        assert again["active"] and standby.answered
        counters = modem.counters()
        assert [(x["what"], x["cid"], x.get("qci")) for x in counters["bearers"]] == [
            ("activated", 2, 65), ("released", 2, None)]  # fmt: skip
        assert counters["state"]["pdn_address"] == "10.202.0.2"
        assert len(counters["outages"]) == 1 and rec.faults == []
