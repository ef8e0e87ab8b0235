"""MCPTT capture analysis (testbed.analysis.mcptt) on synthetic captures of a small lab.

The lab: an MCPTT server and six UEs, each with its own uplink and downlink delay. Captures are
taken at the server and at the radio links of ue1 and ue2; the other UEs are seen only at the
server. Floor control runs on unusual, different ports per node (nothing is bound to a port),
and a message is stamped where it is sent and, one link delay later, where it arrives, so every
expected figure below is a sum of delays written out by hand.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import CookedLinux, Ether
from scapy.packet import Packet, Raw
from scapy.utils import EDecimal, wrpcap

from drivers.mcptt import codec
from drivers.mcptt.messages import (
    CallControlMessage,
    CallControlType,
    CallType,
    FloorMessage,
    FloorType,
    SessionType,
    indicator_for,
)
from testbed.analysis.mcptt import KPI_TABLE, analyze_mcptt, min_samples, preempts
from testbed.errors import AnalysisError

BASE = 1_700_000_000  # UNIX seconds of time 0 of every capture
SERVER = ("10.77.0.1", 47123, 39001)  # ip, floor port, media port
SERVER_SSRC = 0x5E5E5E5E
GROUP = "sip:fire-1@mcptt.lab"
# ip, floor port, media port, uplink ms, downlink ms
UES = {
    "ue1": ("10.77.1.1", 61001, 61003, 10.0, 12.0),
    "ue2": ("10.77.1.2", 62001, 62003, 20.0, 22.0),
    "ue3": ("10.77.1.3", 63001, 63003, 5.0, 6.0),
    "ue4": ("10.77.1.4", 64001, 64003, 5.0, 6.0),
    "ue5": ("10.77.1.5", 65001, 65003, 5.0, 6.0),
    "ue6": ("10.77.1.6", 65101, 65103, 5.0, 6.0),
}
SSRC = {name: 0x1000 + i for i, name in enumerate(UES, start=1)}
FORWARD_MS = 0.2  # server: media in -> copies out


def user(ue: str) -> str:
    return f"sip:{ue}@mcptt.lab"


def ep(ue: str) -> str:
    return f"{UES[ue][0]}:{UES[ue][1]}"


def at(ms: float) -> float:
    """The UNIX time the report gives for ``ms`` after time 0."""
    return round(BASE + ms / 1000, 6)


class Lab:
    """Frames per capture point, each stamped in integer microseconds."""

    def __init__(self, points: Iterable[str] = ("server", "ue1", "ue2"), sll: bool = False) -> None:
        self.frames: dict[str, list[tuple[int, Packet]]] = {p: [] for p in points}
        self.sll = sll

    def _packet(self, src: str, sport: int, dst: str, dport: int, payload: bytes) -> Packet:
        link = CookedLinux(proto=0x0800) if self.sll else Ether()
        pkt: Packet = link / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload)
        return pkt

    def _add(self, point: str, ms: float, pkt: Packet) -> None:
        if point in self.frames:
            self.frames[point].append((round(ms * 1000), pkt.copy()))

    def up(self, ue: str, ms: float, payload: bytes, *, media: bool = False) -> None:
        """``ue`` sends to the server at ``ms`` (its own clock point)."""
        ip, fport, mport, ul, _ = UES[ue]
        sport, dport = (mport, SERVER[2]) if media else (fport, SERVER[1])
        pkt = self._packet(ip, sport, SERVER[0], dport, payload)
        self._add(ue, ms, pkt)
        self._add("server", ms + ul, pkt)

    def down(self, ue: str, ms: float, payload: bytes, *, media: bool = False) -> None:
        """The server sends to ``ue`` at ``ms``."""
        ip, fport, mport, _, dl = UES[ue]
        sport, dport = (SERVER[2], mport) if media else (SERVER[1], fport)
        pkt = self._packet(SERVER[0], sport, ip, dport, payload)
        self._add("server", ms, pkt)
        self._add(ue, ms + dl, pkt)

    # messages

    def request(
        self, ue: str, ms: float, call_type: CallType = CallType.NORMAL, priority: int = 1
    ) -> None:
        msg = FloorMessage(
            FloorType.REQUEST,
            SSRC[ue],
            priority=priority,
            indicator=indicator_for(call_type, queueing=True),
            user_id=user(ue),
        )
        self.up(ue, ms, codec.encode(msg))

    def release(self, ue: str, ms: float) -> None:
        self.up(ue, ms, codec.encode(FloorMessage(FloorType.RELEASE, SSRC[ue], user_id=user(ue))))

    def server(self, ue: str, ms: float, kind: FloorType, **fields: Any) -> None:
        self.down(ue, ms, codec.encode(FloorMessage(kind, SERVER_SSRC, **fields)))

    def granted(self, ue: str, ms: float, priority: int = 1) -> None:
        self.server(
            ue, ms, FloorType.GRANTED, duration_s=30, priority=priority, granted_ssrc=SSRC[ue]
        )

    def connect(self, ue: str, ms: float) -> None:
        msg = CallControlMessage(
            CallControlType.CONNECT,
            SSRC[ue],
            session_type=SessionType.PREARRANGED,
            session_id=GROUP,
            group_id=GROUP,
            inviting_user=user(ue),
        )
        self.up(ue, ms, codec.encode(msg))

    def ack(self, ue: str, ms: float, reason: int = 0) -> None:
        msg = CallControlMessage(CallControlType.ACK, SERVER_SSRC, reason_code=reason)
        self.down(ue, ms, codec.encode(msg))

    def burst(
        self,
        talker: str,
        ms: float,
        count: int,
        seq: int,
        listeners: Iterable[str],
        *,
        marker: bool = True,
        skip_first_to: Iterable[str] = (),
        first_copy_to: dict[str, int] | None = None,
    ) -> None:
        """``count`` RTP packets every 20 ms from ``talker``, forwarded to each listener
        (from packet ``first_copy_to[listener]`` on, if given)."""
        ul = UES[talker][3]
        listeners = list(listeners)
        skip = set(skip_first_to)
        for k in range(count):
            header = (
                bytes([0x80, (0x80 if marker and k == 0 else 0) | 96])
                + (seq + k).to_bytes(2, "big")
                + (16000 + 320 * (seq + k)).to_bytes(4, "big")
                + SSRC[talker].to_bytes(4, "big")
            )
            rtp = header + bytes([0xF0, 0x44]) + bytes(60)
            t = ms + 20 * k
            self.up(talker, t, rtp, media=True)
            for listener in listeners:
                if k == 0 and listener in skip:
                    continue
                if first_copy_to and k < first_copy_to.get(listener, 0):
                    continue
                self.down(listener, t + ul + FORWARD_MS, rtp, media=True)

    def write(self, directory: Path, fmt: str = "pcap") -> list[Path]:
        paths = []
        for point, frames in self.frames.items():
            frames.sort(key=lambda f: f[0])
            for us, pkt in frames:
                pkt.time = EDecimal(BASE) + EDecimal(us) / EDecimal(1_000_000)
            path = directory / f"{point}.pcap"
            wrpcap(str(path), [pkt for _, pkt in frames])
            if fmt == "pcapng":
                ng = directory / f"{point}.pcapng"
                subprocess.run(["editcap", "-F", "pcapng", str(path), str(ng)], check=True)
                path.unlink()
                path = ng
            paths.append(path)
        return paths


OFF = 1000.0  # floor activity starts here, well after the initial joins


def full_lab() -> Lab:
    """The timeline of the module docstring; figures in the tests below."""
    lab = Lab()
    # Initial joins (none of them a KPI 2/4 sample).
    for ue, ms in (("ue1", 100.0), ("ue2", 110.0), ("ue3", 120.0)):
        lab.connect(ue, ms)
        lab.ack(ue, ms + UES[ue][3] + 0.5)
    # ue1 asks, granted at once: 2000 -> server 2010 -> Granted 2010.5 -> ue1 2022.5.
    lab.request("ue1", OFF + 1000.0)
    lab.granted("ue1", OFF + 1010.5)
    for ue in ("ue2", "ue3"):
        lab.server(ue, OFF + 1010.6, FloorType.TAKEN, granted_party=user("ue1"), sequence=1)
    lab.burst("ue1", OFF + 1023.0, 50, 1000, ["ue2", "ue3"])
    lab.granted("ue1", OFF + 1510.5)  # a T20 resend: ignored
    # ue2 asks while ue1 talks; resends after 500 ms; queued; granted on ue1's release.
    lab.request("ue2", OFF + 1100.0)
    lab.request("ue2", OFF + 1600.0)
    lab.server(
        "ue2", OFF + 1700.0, FloorType.QUEUE_POSITION_INFO, queue_position=1, queue_priority=1
    )
    lab.release("ue1", OFF + 2010.0)
    lab.granted("ue2", OFF + 2020.5)
    lab.burst("ue2", OFF + 2043.0, 20, 5000, ["ue1", "ue3"])
    # ue3 (no capture of its own: timed at the server) is denied, then abandons.
    lab.request("ue3", OFF + 2100.0)
    lab.server("ue3", OFF + 2105.3, FloorType.DENY, reject_cause=1, reject_phrase="floor is taken")
    lab.request("ue3", OFF + 2200.0)
    lab.server(
        "ue3", OFF + 2205.3, FloorType.QUEUE_POSITION_INFO, queue_position=1, queue_priority=1
    )
    lab.release("ue3", OFF + 2300.0)
    # ue1 pre-empts ue2 with an emergency request.
    lab.request("ue1", OFF + 2400.0, CallType.EMERGENCY, 255)
    lab.server("ue2", OFF + 2410.4, FloorType.REVOKE, reject_cause=4)
    lab.server(
        "ue1", OFF + 2410.5, FloorType.QUEUE_POSITION_INFO, queue_position=0, queue_priority=1
    )
    lab.release("ue2", OFF + 2440.0)
    lab.granted("ue1", OFF + 2460.5, 255)
    # ue1's second burst has no marker bit: the grant splits it from the first.
    lab.burst("ue1", OFF + 2473.0, 10, 1050, ["ue2", "ue3"], marker=False, skip_first_to=["ue3"])
    lab.release("ue1", OFF + 2660.0)
    for ue in ("ue1", "ue2", "ue3"):
        lab.server(ue, OFF + 2670.5, FloorType.IDLE, sequence=2)
    # ue4 presses while not joined: Connect, Ack, Floor Request (KPI 2), all seen at the server.
    lab.connect("ue4", OFF + 2700.0)
    lab.ack("ue4", OFF + 2705.5)
    lab.request("ue4", OFF + 2711.0)
    lab.granted("ue4", OFF + 2716.5)
    lab.release("ue4", OFF + 2800.0)
    # ue2 talks; ue5 joins during the burst (KPI 4).
    lab.request("ue2", OFF + 3000.0)
    lab.granted("ue2", OFF + 3020.5)
    lab.connect("ue5", OFF + 3500.0)
    lab.ack("ue5", OFF + 3505.5)
    lab.server("ue5", OFF + 3505.6, FloorType.TAKEN, granted_party=user("ue2"), sequence=3)
    lab.burst(
        "ue2", OFF + 3043.0, 50, 6000, ["ue1", "ue3", "ue4", "ue5"], first_copy_to={"ue5": 23}
    )
    lab.release("ue2", OFF + 4030.0)
    # ue6 joins an idle call; ue3's last request is never answered.
    lab.connect("ue6", OFF + 5000.0)
    lab.ack("ue6", OFF + 5005.5)
    lab.request("ue3", OFF + 5100.0)
    return lab


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    paths = full_lab().write(tmp_path_factory.mktemp("lab"))
    return analyze_mcptt(paths, ["server", "ue1", "ue2"])


def _requests(block: dict[str, Any], ue: str) -> list[dict[str, Any]]:
    return [r for r in block["requests"] if r["participant"] == ep(ue)]


def test_participants_servers_and_home_captures(block: dict[str, Any]) -> None:
    assert block["servers"] == [f"{SERVER[0]}:{SERVER[1]}"]
    homes = {p["endpoint"]: p["capture"] for p in block["participants"]}
    assert homes == {
        ep("ue1"): "ue1",
        ep("ue2"): "ue2",
        **{ep(u): "server" for u in ("ue3", "ue4", "ue5", "ue6")},
    }
    users = {p["endpoint"]: p["user_id"] for p in block["participants"]}
    assert users[ep("ue5")] == user("ue5")
    ssrcs = {p["endpoint"]: p["ssrcs"] for p in block["participants"]}
    assert ssrcs[ep("ue1")] == [SSRC["ue1"]] and ssrcs[ep("ue4")] == []
    caps = {c["name"]: c for c in block["captures"]}
    assert caps["server"]["format"] == "pcap" and caps["server"]["undecodable"] == 0
    assert caps["ue1"]["rtp_packets"] == 50 + 10 + 20 + 50  # own bursts + copies from ue2


def test_every_outcome_and_access_time_to_the_microsecond(block: dict[str, Any]) -> None:
    rows = [(r["participant"], r["outcome"], r["access_time_ms"]) for r in block["requests"]]
    assert rows == [
        (ep("ue1"), "granted", 22.5),  # 2010.5 + 12 - 2000
        (ep("ue2"), "revoked", 942.5),  # queued, granted 2020.5 + 22 - 1100, then pre-empted
        (ep("ue3"), "denied", None),
        (ep("ue3"), "abandoned", None),
        (ep("ue1"), "queued_granted", 72.5),  # 2460.5 + 12 - 2400
        (ep("ue4"), "granted", 0.5),  # at the server: 2716.5 - 2716
        (ep("ue2"), "granted", 42.5),  # 3020.5 + 22 - 3000
        (ep("ue3"), "unanswered", None),
    ]
    first = block["requests"][0]
    assert first["time"] == at(OFF + 1000.0)
    assert first["capture"] == "ue1" and first["user_id"] == user("ue1")
    assert first["call_type"] == "normal" and first["priority"] == 1 and not first["queued"]
    revoked = _requests(block, "ue2")[0]
    assert revoked["queued"] is True
    assert revoked["cause"] == {"code": 4, "name": "preempted", "phrase": None}
    denied = _requests(block, "ue3")[0]
    assert denied["capture"] == "server"
    assert denied["cause"] == {
        "code": 1,
        "name": "another_has_permission",
        "phrase": "floor is taken",
    }
    emergency = _requests(block, "ue1")[1]
    assert emergency["call_type"] == "emergency" and emergency["priority"] == 255
    assert emergency["queued"] is True


def test_microsecond_access_time(tmp_path: Path) -> None:
    lab = Lab(points=("ue1",))
    lab.request("ue1", 1000.001)
    lab.granted("ue1", 1024.338)  # arrives at 1036.338
    (path,) = lab.write(tmp_path)
    (req,) = analyze_mcptt([path])["requests"]
    assert req["access_time_ms"] == pytest.approx(36.337, abs=1e-9)
    assert req["time"] == at(1000.001)


def test_retransmitted_request_is_one_request(block: dict[str, Any]) -> None:
    first = _requests(block, "ue2")[0]
    assert first["retransmissions"] == 1
    assert first["time"] == at(OFF + 1100.0)  # timed from the first transmission
    assert len(_requests(block, "ue2")) == 2


def test_preemption_revoke_and_grant_times(block: dict[str, Any]) -> None:
    (pre,) = block["preemptions"]
    assert pre["cause"]["code"] == 4
    assert pre["talker"] == {
        "participant": ep("ue2"),
        "user_id": user("ue2"),
        "call_type": "normal",
        "priority": 1,
        "capture": "ue2",
    }
    assert pre["preempting"] == {
        "participant": ep("ue1"),
        "user_id": user("ue1"),
        "call_type": "emergency",
        "priority": 255,
        "time": at(OFF + 2400.0),
        "capture": "ue1",
    }
    assert pre["revoke_time_ms"] == pytest.approx(32.4, abs=1e-9)  # 2410.4 + 22 - 2400
    assert pre["grant_time_ms"] == pytest.approx(72.5, abs=1e-9)
    assert pre["time"] == at(OFF + 2432.4)
    kpis = block["kpis"]
    assert kpis["preemption_revoke"]["samples"] == 1
    assert kpis["preemption_revoke"]["value"] == pytest.approx(32.4)
    assert kpis["preemption_revoke"]["captures"] == ["ue1", "ue2"]
    assert kpis["preemption_grant"]["limit"] is None


def test_call_setup_and_late_entry_are_told_apart(block: dict[str, Any]) -> None:
    (call,) = block["calls"]
    assert call["participant"] == ep("ue4") and call["capture"] == "server"
    assert call["outcome"] == "granted"
    assert call["e2e_access_time_ms"] == pytest.approx(11.5)  # 2716.5 - 2705 at the server
    assert call["ack_ms"] == pytest.approx(0.5)
    assert call["request_time"] == at(OFF + 2716.0)
    (late,) = block["late_entries"]
    assert late["participant"] == ep("ue5") and late["group_id"] == GROUP
    # ue2's packet 23 leaves the server at 3043 + 460 + 20.2; ue5's Connect reached it at 3505.
    assert late["late_entry_time_ms"] == pytest.approx(18.2)
    assert late["first_media"]["seq"] == 6023
    assert late["first_media"]["ssrc"] == SSRC["ue2"]
    assert late["first_media"]["source"] == f"{SERVER[0]}:{SERVER[2]}"
    reasons = {j["participant"]: j["reason"] for j in block["other_joins"]}
    assert reasons == {
        ep("ue1"): "floor request long after joining",
        ep("ue2"): "joined an idle call (media started later)",
        ep("ue3"): "joined an idle call (media started later)",
        ep("ue6"): "neither a floor request nor media followed",
    }
    assert block["kpis"]["kpi2"]["samples"] == 1 and block["kpis"]["kpi4"]["samples"] == 1


def test_voice_latency_across_captures(block: dict[str, Any]) -> None:
    rows = [
        (b["talker"], b["seq"], b["listener"], b["arrival_capture"], b["latency_ms"])
        for b in block["bursts"]
    ]
    up1, up2 = round(10.0 + FORWARD_MS, 6), round(20.0 + FORWARD_MS, 6)
    down1, down2 = round(up1 + 22.0, 6), round(up2 + 12.0, 6)  # to ue2 and ue1
    assert rows == [
        (ep("ue1"), 1000, ep("ue2"), "ue2", down1),
        (ep("ue1"), 1000, ep("ue3"), "server", up1),
        (ep("ue2"), 5000, ep("ue1"), "ue1", down2),
        (ep("ue2"), 5000, ep("ue3"), "server", up2),
        (ep("ue1"), 1050, ep("ue2"), "ue2", down1),  # split from 1000 by the grant: no marker
        (ep("ue1"), 1050, ep("ue3"), None, None),  # the first packet never reached ue3
        (ep("ue2"), 6000, ep("ue1"), "ue1", down2),
        (ep("ue2"), 6000, ep("ue3"), "server", up2),
        (ep("ue2"), 6000, ep("ue4"), "server", up2),
        (ep("ue2"), 6000, ep("ue5"), None, None),  # joined late
    ]
    first = block["bursts"][0]
    assert first["departure_capture"] == "ue1" and first["packets"] == 50
    assert first["time"] == at(OFF + 1023.0) and first["ssrc"] == SSRC["ue1"]
    assert first["talker_user"] == user("ue1") and first["listener_user"] == user("ue2")
    kpi3 = block["kpis"]["kpi3"]
    # ue5 joined during the burst: a late entry, noted, not a missing sample
    late = [b for b in block["bursts"] if b["listener"] == ep("ue5")]
    assert [b.get("note", "") for b in late] == [
        "joined during the burst (a late entry, not a lost first packet)"
    ]
    assert kpi3["samples"] == 8 and kpi3["missing"] == 1
    assert kpi3["max"] == pytest.approx(32.2) and kpi3["min"] == pytest.approx(10.2)
    assert kpi3["captures"] == ["server", "ue1", "ue2"]


def test_kpi3_from_talker_and_listener_captures_only(tmp_path: Path) -> None:
    lab = Lab(points=("ue1", "ue2"))
    lab.connect("ue2", 10.0)
    lab.ack("ue2", 30.5)
    lab.request("ue1", 100.0)
    lab.granted("ue1", 110.5)
    lab.server("ue2", 110.6, FloorType.TAKEN, granted_party=user("ue1"), sequence=1)
    lab.burst("ue1", 130.0, 5, 7, ["ue2"])
    paths = lab.write(tmp_path)
    got = analyze_mcptt(paths)
    (burst,) = got["bursts"]
    assert burst["departure_capture"] == "ue1" and burst["arrival_capture"] == "ue2"
    assert burst["latency_ms"] == pytest.approx(10.0 + FORWARD_MS + 22.0)
    assert got["kpis"]["kpi3"]["captures"] == ["ue1", "ue2"]


def test_kpi_table_limits_and_sample_sizes(block: dict[str, Any]) -> None:
    kpis = block["kpis"]
    assert (
        list(kpis)
        == [s.id for s in KPI_TABLE]
        == [
            "kpi1",
            "kpi2",
            "kpi3",
            "kpi4",
            "preemption_revoke",
            "preemption_grant",
        ]
    )
    limits = {k: (v["limit"] or {}).get("max_ms") for k, v in kpis.items()}
    assert limits == {
        "kpi1": 300.0,
        "kpi2": 1000.0,
        "kpi3": 300.0,
        "kpi4": 150.0,
        "preemption_revoke": None,
        "preemption_grant": None,
    }
    assert kpis["kpi1"]["limit"]["clause"] == "TS 22.179 6.15.3.2"
    assert kpis["kpi1"]["limit"]["requirement_ids"] == ["R-6.15.3.2-012a", "R-6.15.3.2-013"]
    assert kpis["kpi1"]["limit"]["confidence"] == "[2nd]"
    assert kpis["kpi4"]["limit"]["clause"] == "TS 22.179 6.15.4.2"
    assert kpis["kpi4"]["limit"]["confidence"] == "[mem]"
    assert "R-6.15.3.2-015" in kpis["kpi3"]["limit"]["reference"]
    for entry in kpis.values():
        assert entry["unit"] == "ms" and entry["percentile"] == 95
        assert entry["min_samples"] == 59 and entry["definition"]
        assert " -> " in entry["definition"]
    assert "jitter buffer" in kpis["kpi3"]["definition"]
    kpi1 = kpis["kpi1"]
    assert kpi1["samples"] == 5 and kpi1["enough_samples"] is False
    assert kpi1["value"] == pytest.approx(942.5)  # nearest rank: the 5th of 5
    assert kpi1["median"] == pytest.approx(42.5)
    assert kpi1["exceedances"] == 1 and kpi1["confident"] is False
    assert kpi1["captures"] == ["server", "ue1", "ue2"]


@pytest.mark.parametrize(("count", "enough"), [(58, False), (59, True)])
def test_enough_samples_at_59(tmp_path: Path, count: int, enough: bool) -> None:
    lab = Lab(points=("ue1",), sll=True)  # Linux cooked capture, for the link layer
    for i in range(count):
        t = 1000.0 + 200.0 * i
        lab.request("ue1", t)
        lab.granted("ue1", t + 5.0 + i / 1000)  # access 17.000 .. 17.058 ms
        lab.release("ue1", t + 100.0)
    (path,) = lab.write(tmp_path)
    kpi1 = analyze_mcptt([path])["kpis"]["kpi1"]
    assert kpi1["samples"] == count
    assert kpi1["enough_samples"] is enough
    assert kpi1["min_samples"] == 59
    assert kpi1["confident"] is enough  # zero exceedances: the claim needs 59
    assert kpi1["min"] == pytest.approx(17.0)
    # Nearest rank 95th percentile: the ceil(0.95 n)-th smallest (56th of 58, 57th of 59).
    assert kpi1["value"] == pytest.approx(17.0 + (-(-95 * count // 100) - 1) / 1000)


def test_capture_without_mcptt_gives_an_empty_block(tmp_path: Path) -> None:
    packets = []
    for i in range(30):
        rtp = bytes([0x80, 96]) + i.to_bytes(2, "big") + (i * 160).to_bytes(4, "big")
        pkt = (
            Ether()
            / IP(src="10.1.0.1", dst="10.1.0.2")
            / UDP(sport=5004, dport=5006)
            / Raw(rtp + b"\x00\x00\x00\x07" + bytes(20))
        )
        pkt.time = BASE + i * 0.02
        packets.append(pkt)
    path = tmp_path / "plain.pcap"
    wrpcap(str(path), packets)
    got = analyze_mcptt([path], ["plain"])
    for key in ("servers", "participants", "requests", "preemptions", "calls"):
        assert got[key] == []
    for key in ("late_entries", "other_joins", "bursts"):
        assert got[key] == []
    assert got["captures"][0]["packets"] == 30 and got["captures"][0]["mc_messages"] == 0
    for entry in got["kpis"].values():
        assert entry["samples"] == 0 and entry["value"] is None
        assert entry["enough_samples"] is False and entry["captures"] == []
    assert got["kpis"]["kpi1"]["limit"]["max_ms"] == 300.0
    json.dumps(got)


def test_block_is_json_and_stable(tmp_path: Path, block: dict[str, Any]) -> None:
    paths = full_lab().write(tmp_path)
    again = analyze_mcptt(paths, ["server", "ue1", "ue2"])
    for c in again["captures"]:
        c["file"] = None
    expected = json.loads(json.dumps(block))
    for c in expected["captures"]:
        c["file"] = None
    assert json.loads(json.dumps(again)) == expected


@pytest.mark.skipif(shutil.which("editcap") is None, reason="needs editcap (Wireshark)")
def test_pcapng_gives_the_same_block(tmp_path: Path, block: dict[str, Any]) -> None:
    paths = full_lab().write(tmp_path, "pcapng")
    got = analyze_mcptt(paths, ["server", "ue1", "ue2"])
    assert [c["format"] for c in got["captures"]] == ["pcapng"] * 3
    for key in ("requests", "preemptions", "calls", "late_entries", "bursts", "kpis"):
        assert got[key] == block[key]


def test_bad_captures_raise_analysis_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    text = tmp_path / "notes.pcap"
    text.write_text("not a capture at all\n")
    for path, words in (
        (empty, "empty"),
        (text, "not a pcap or pcapng"),
        (tmp_path / "missing.pcap", "cannot read"),
    ):
        with pytest.raises(AnalysisError, match=words):
            analyze_mcptt([path])
    with pytest.raises(AnalysisError, match="names"):
        analyze_mcptt([empty], ["a", "b"])


def test_truncated_capture_is_read_up_to_the_cut(tmp_path: Path) -> None:
    lab = Lab(points=("ue1",))
    lab.request("ue1", 1000.0)
    lab.granted("ue1", 1010.0)
    lab.release("ue1", 1100.0)
    (path,) = lab.write(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    got = analyze_mcptt([path])
    assert got["captures"][0]["truncated"] is True
    assert got["captures"][0]["packets"] == 2
    assert got["requests"][0]["outcome"] == "granted"


@pytest.mark.skipif(shutil.which("editcap") is None, reason="needs editcap (Wireshark)")
def test_truncated_pcapng_is_flagged(tmp_path: Path) -> None:
    lab = Lab(points=("ue1",))
    lab.request("ue1", 1000.0)
    lab.granted("ue1", 1010.0)
    lab.release("ue1", 1100.0)
    (path,) = lab.write(tmp_path, "pcapng")
    assert analyze_mcptt([path])["captures"][0]["truncated"] is False
    path.write_bytes(path.read_bytes()[:-10])
    got = analyze_mcptt([path])
    assert got["captures"][0]["truncated"] is True
    assert got["requests"][0]["outcome"] == "granted"


def test_undecodable_mc_datagram_is_counted(tmp_path: Path) -> None:
    bad = bytearray(
        codec.encode(FloorMessage(FloorType.REQUEST, 1, priority=1, user_id=user("ue1")))
    )
    bad[0] = 0x80 | 7  # subtype 7 names no floor message
    lab = Lab(points=("ue1",))
    lab.up("ue1", 10.0, bytes(bad))
    (path,) = lab.write(tmp_path)
    got = analyze_mcptt([path])
    assert got["captures"][0]["undecodable"] == 1 and got["requests"] == []


def test_preemption_rule_and_min_samples() -> None:
    n, ip, em = CallType.NORMAL, CallType.IMMINENT_PERIL, CallType.EMERGENCY
    assert preempts(em, 0, n, 255) and preempts(em, 0, ip, 255) and preempts(ip, 0, n, 255)
    assert not preempts(n, 255, ip, 0) and not preempts(ip, 255, em, 0)
    assert preempts(n, 2, n, 1) and not preempts(n, 1, n, 1) and not preempts(em, 5, em, 5)
    assert min_samples(95) == 59 and min_samples(99) == 299


def test_confidence_with_exceedances_is_a_binomial_test() -> None:
    from testbed.analysis.mcptt import _confident

    assert not _confident(58, 0, 95) and _confident(59, 0, 95)
    assert not _confident(59, 1, 95) and _confident(93, 1, 95)  # 1 exceedance needs 93
    assert not _confident(92, 1, 95)
    assert _confident(100_000, 4_800, 95) and not _confident(100_000, 5_000, 95)  # no overflow
