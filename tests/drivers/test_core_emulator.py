"""The emulated core process on real namespaces: its TUN user plane carries only attached UEs,
the attach programs the UE's path, and a killed core takes its UEs' traffic with it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.core.milenage import milenage_res
from drivers.netns import NodeSpec, PortSpec, RouteSpec, SegmentSpec, TopologySpec, build, destroy

REPO = Path(__file__).resolve().parents[2]
UE_IP, SRV_IP = "10.45.0.1", "10.9.1.2"
RAN_IP, CORE_IP, SRV_NET = "10.45.0.2/30", "10.9.0.2/30", "10.9.1.2/30"
K, OPC = "465b5ce8b199b49faa5f0a2ee238a6bc", "cd63cb71954a9f4e48a5994e37a02baf"
IMSI = "001010000000011"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and TUN")


@dataclass
class Net:
    prefix: str

    def ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"


@pytest.fixture
def net() -> Iterator[Net]:
    prefix = f"tbce{os.urandom(2).hex()}"
    net = Net(prefix)

    def port(node: str, ifname: str, address: str) -> PortSpec:
        return PortSpec(net.ns(node), ifname, address)

    spec = TopologySpec(
        prefix=prefix,
        nodes=(
            NodeSpec(net.ns("ue")),
            NodeSpec(net.ns("ran"), True),
            NodeSpec(net.ns("core"), True),
            NodeSpec(net.ns("srv")),
        ),
        segments=(
            SegmentSpec("radio", (port("ue", "eth0", "10.45.0.1/30"), port("ran", "eth0", RAN_IP))),
            SegmentSpec(
                "backhaul", (port("ran", "eth1", "10.9.0.1/30"), port("core", "eth0", CORE_IP))
            ),
            SegmentSpec("sgi", (port("core", "eth1", "10.9.1.1/30"), port("srv", "eth0", SRV_NET))),
        ),
        routes=(
            RouteSpec(net.ns("ue"), "10.9.0.0/16", "10.45.0.2"),
            RouteSpec(net.ns("ran"), "10.9.1.0/30", "10.9.0.2"),
            RouteSpec(net.ns("core"), "10.45.0.0/30", "10.9.0.1"),
            RouteSpec(net.ns("srv"), "10.45.0.0/30", "10.9.1.1"),
            RouteSpec(net.ns("srv"), "10.9.0.0/30", "10.9.1.1"),
        ),
    )
    try:
        build(spec)
        yield net
    finally:
        destroy(prefix + "-")


def _topology(net: Net) -> dict[str, Any]:
    def ports(*items: tuple[str, str, str]) -> list[dict[str, str]]:
        return [{"node": n, "ifname": i, "address": a} for n, i, a in items]

    return {
        "namespaces": {n: net.ns(n) for n in ("ue", "ran", "core", "srv")},
        "links": {
            "radio": ports(("ue", "eth0", "10.45.0.1/30"), ("ran", "eth0", "10.45.0.2/30")),
            "backhaul": ports(("ran", "eth1", "10.9.0.1/30"), ("core", "eth0", "10.9.0.2/30")),
            "sgi": ports(("core", "eth1", "10.9.1.1/30"), ("srv", "eth0", "10.9.1.2/30")),
        },
    }


def _reaches(net: Net, src: str, dst: str, dst_ip: str, port: int = 47000) -> bool:
    """Does a UDP datagram from node ``src`` arrive at node ``dst``? (three tries in 1.5 s)"""
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", net.ns(dst), sys.executable, "-c",
         "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
         f"s.bind(('0.0.0.0',{port}))\ns.settimeout(1.5)\n"
         "try:\n s.recv(100); print('ok')\nexcept OSError: print('none')\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.3)
    subprocess.run(
        ["ip", "netns", "exec", net.ns(src), sys.executable, "-c",
         "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
         f"for _ in range(3):\n s.sendto(b'x',('{dst_ip}',{port})); time.sleep(0.3)\n"],
        check=True,
    )  # fmt: skip
    out, _ = receiver.communicate(timeout=10)
    return out.strip() == "ok"


class Ue:
    """The UE side of the attach protocol, as the modem emulator speaks it."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.file = self.sock.makefile("r")

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        self.sock.sendall((json.dumps(message) + "\n").encode())
        answer: dict[str, Any] = json.loads(self.file.readline())
        return answer

    def attach(self, res: str | None = None) -> dict[str, Any]:
        rand = self.ask({"op": "challenge", "imsi": IMSI})["rand"]
        return self.ask(
            {"op": "attach", "imsi": IMSI, "plmn": "00101", "ran": "ran", "ue_node": "ue",
             "res": res if res is not None else milenage_res(K, OPC, rand)}
        )  # fmt: skip

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _start_core(net: Net, tmp: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any], Path]:
    events = tmp / "core.events.jsonl"
    config = {
        "name": "core",
        "plmn": "00101",
        "node": "core",
        "subscribers": [{"imsi": IMSI, "k": K, "opc": OPC, "ipv4": UE_IP}],
        "subscriber_store": str(tmp / "subscribers.json"),
        "events": str(events),
        "attach_socket": f"/tmp/{net.prefix}-core-core.sock",
        "topology": _topology(net),
        "user_plane": {"namespace": net.ns("core"), "ifnames": ["eth0", "eth1"],
                       "tun": f"{net.prefix}-upf"},
    }  # fmt: skip
    (tmp / "core.json").write_text(json.dumps(config))
    ready = tmp / "ready.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivers.core.emulator", "--config", str(tmp / "core.json"),
         "--ready-file", str(ready)],
        env=env, stdout=(tmp / "core.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not ready.exists():
        assert proc.poll() is None, (tmp / "core.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return proc, json.loads(ready.read_text()), events


def test_only_attached_ues_cross_a_core_and_a_killed_core_drops_them(
    net: Net, tmp_path: Path
) -> None:
    assert _reaches(net, "ue", "srv", SRV_IP)  # plain kernel forwarding before the core runs
    proc, ready, events = _start_core(net, tmp_path)
    try:
        assert not _reaches(net, "ue", "srv", SRV_IP)  # not attached: the user plane drops it
        ue = Ue(ready["attach_socket"])
        refused = ue.attach(res="00" * 8)
        assert refused["ok"] is False and refused["cause"] == 3  # wrong RES: Illegal UE
        accepted = ue.attach()
        assert accepted["ok"] is True and accepted["address"] == UE_IP
        assert [b["ebi"] for b in accepted["bearers"]] == [5]
        assert ue.ask({"op": "echo", "n": 1}) == {"re": "echo", "n": 1}
        assert _reaches(net, "ue", "srv", SRV_IP)
        assert _reaches(net, "srv", "ue", UE_IP)
        # the path was programmed: the UE leaves through its serving cell with its own address
        rules = subprocess.run(
            ["ip", "-n", net.ns("ue"), "route", "show", "table", "200"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert f"via 10.45.0.2 dev eth0 src {UE_IP}" in rules
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        assert ue.file.readline() == ""  # the UE side sees the session end
        ue.close()
        assert not _reaches(net, "ue", "srv", SRV_IP)  # the blackhole: a dead core carries nothing
        links = subprocess.run(
            ["ip", "-n", net.ns("core"), "link", "show"], capture_output=True, text=True
        ).stdout
        assert "upf" not in links  # the TUN went with the process
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        Path(ready["attach_socket"]).unlink(missing_ok=True)  # a SIGKILL leaves it behind
    record = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [e["event"] for e in record]
    assert "attach_reject" in kinds and "attach" in kinds and "path" in kinds
    path = next(e for e in record if e["event"] == "path")
    assert path["errors"] == [] and path["address"] == UE_IP


def test_path_follows_a_roaming_ue_into_the_other_country() -> None:
    """UE A1 attached by country B's core through B's cell: the lines each node gets."""
    from drivers.core.paths import Topology, path_commands

    def ports(*items: tuple[str, str, str]) -> list[dict[str, str]]:
        return [{"node": n, "ifname": i, "address": a} for n, i, a in items]

    topo = Topology(
        {
            "namespaces": {n: f"t-{n}" for n in ("ue", "ran_a", "ran_b", "core_a", "core_b", "as")},
            "links": {
                "radio": ports(("ue", "eth0", "10.45.0.1/30"), ("ran_a", "eth0", "10.45.0.2/30")),
                "radio_b": ports(("ue", "eth1", "10.9.9.1/30"), ("ran_b", "eth3", "10.9.9.2/30")),
                "bh_a": ports(("ran_a", "eth1", "10.9.0.1/30"), ("core_a", "eth0", "10.9.0.2/30")),
                "bh_b": ports(("ran_b", "eth1", "10.9.1.1/30"), ("core_b", "eth0", "10.9.1.2/30")),
                "backbone": ports(
                    ("core_a", "eth1", "10.200.0.1/24"),
                    ("core_b", "eth1", "10.200.0.2/24"),
                    ("as", "eth0", "10.200.0.3/24"),
                ),
            },
        }
    )
    lines = path_commands(
        topo, ue_node="ue", ran="ran_b", core="core_b", address="10.45.0.1",
        mac_of=lambda ns, ifname: f"02:00:00:00:{len(ns):02x}:{int(ifname[-1]):02x}",
    )  # fmt: skip
    assert lines["t-ue"][1] == (
        "route replace default via 10.9.9.2 dev eth1 src 10.45.0.1 table 200"
    )
    assert "neigh replace 10.9.9.2 lladdr 02:00:00:00:07:03 dev eth1 nud permanent" in lines["t-ue"]
    # the address is not on B's radio link: a host route on that link, and uplink to core_b
    assert "route replace 10.45.0.1/32 dev eth3" in lines["t-ran_b"]
    table = topo.table_of("core_b")
    assert f"rule add from 10.45.0.1/32 lookup {table} priority 300" in lines["t-ran_b"]
    assert f"route replace default via 10.9.1.2 dev eth1 table {table}" in lines["t-ran_b"]
    assert lines["t-core_b"] == ["route replace 10.45.0.1/32 via 10.9.1.1 dev eth0"]
    # the backbone (the MCPTT server, the home core) reaches the UE through core_b now
    assert lines["t-as"] == ["route replace 10.45.0.1/32 via 10.200.0.2 dev eth0"]
    assert lines["t-core_a"] == ["route replace 10.45.0.1/32 via 10.200.0.2 dev eth1"]
    assert "t-ran_a" not in lines
