"""Tests of the rtp_voice and bulk stream kinds: AMR-WB/RTP packet building, the seeded talk-spurt
schedule, sequence-number extension and the transmit/receive join, the profile model's checks,
then one real run of the emulated traffic driver over loopback (rtp_voice + probe in one sender,
bulk in its own), captured with dumpcap and read back with scapy and tshark. Timing bounds are
loose on purpose: the lab machine has 2 noisy cores."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from drivers.base import DeviceContext, StreamResult, StreamSpec  # noqa: E402
from drivers.traffic import probe, rtp  # noqa: E402
from drivers.traffic.amrwb import AMRWB_SPEECH_BYTES, udp_payload_bytes  # noqa: E402
from drivers.traffic.emulated import EmulatedTraffic  # noqa: E402
from testbed.model.profile import Stream  # noqa: E402

scapy_rtp = pytest.importorskip("scapy.layers.rtp")

# --------------------------------------------------------------------------------------------
# AMR-WB payload, spec strings, identity, talk spurts
# --------------------------------------------------------------------------------------------


def test_amrwb_sizes_follow_the_octet_aligned_format() -> None:
    assert AMRWB_SPEECH_BYTES == (17, 23, 32, 36, 40, 46, 50, 58, 60)
    # RTP header + CMR + ToC + speech octets
    assert udp_payload_bytes(8) == 12 + 2 + 60
    assert udp_payload_bytes(2) == 12 + 2 + 32


def test_rtp_stream_spec_parse_and_format() -> None:
    spec = rtp.RtpStreamSpec("v", 3, "fd00::2", 40000, 46, 97, 2, 1.004, 1.587, 7)
    assert rtp.RtpStreamSpec.parse(spec.format()) == spec
    cont = rtp.RtpStreamSpec.parse("name=c,wire=4,dst=10.0.0.2,port=5004,on=none")
    assert cont.continuous and cont.codec_mode == 8 and cont.payload_type == 96
    for bad in [
        "name=a,wire=1,dst=10.0.0.1",  # port missing
        "name=a,wire=1,dst=10.0.0.1,port=5004,mode=9",
        "name=a,wire=1,dst=10.0.0.1,port=5004,pt=128",
        "name=a,wire=1,dst=10.0.0.1,port=5004,bogus=1",
        "name=a,wire=1,dst=10.0.0.1,port=5004,on=-1",
        "name=a:b,wire=1,dst=10.0.0.1,port=5004",
    ]:
        with pytest.raises(ValueError):
            rtp.RtpStreamSpec.parse(bad)
    binding = rtp.RtpBinding.parse("0xdeadbeef:9:65535")
    assert binding == rtp.RtpBinding(0xDEADBEEF, 9, 65535)
    assert rtp.RtpBinding.parse(binding.format()) == binding
    assert rtp.RtpBinding.parse("12:3").seq0 is None


def _spec(seed: int = 5, on: float | None = 0.3, off: float | None = 0.5) -> rtp.RtpStreamSpec:
    return rtp.RtpStreamSpec("v", 1, "127.0.0.1", 5004, talk_on_s=on, talk_off_s=off, seed=seed)


def test_same_seed_same_stream() -> None:
    a, frames_a = rtp.build_templates(_spec(5))
    b, frames_b = rtp.build_templates(_spec(5))
    c, frames_c = rtp.build_templates(_spec(6))
    assert (a.speech, a.sid, a.identity) == (b.speech, b.sid, b.identity)
    assert list(islice(frames_a, 500)) == list(islice(frames_b, 500))
    assert a.identity.ssrc != c.identity.ssrc
    assert list(islice(frames_a, 500)) != list(islice(frames_c, 500))
    assert list(islice(rtp.voice_frames(_spec(5)), 300)) == list(
        islice(rtp.build_templates(_spec(5))[1], 300)
    )


def _check_pattern(frames: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """Assert the DTX structure of a frame schedule; returns (spurts, SID_UPDATEs)."""
    spurts = updates = 0
    prev_frame, prev_flags = -1, rtp.FLAG_SID
    for frame, flags in frames:
        if flags & rtp.FLAG_SID:
            if prev_flags & rtp.FLAG_SID:  # inside a silence: every 8th frame, SID_UPDATE
                assert frame - prev_frame == rtp.SID_INTERVAL_FRAMES
                assert flags == rtp.FLAG_SID | rtp.FLAG_SID_UPDATE
                updates += 1
            else:  # the first silent frame: SID_FIRST right after the last speech frame
                assert frame - prev_frame == 1 and flags == rtp.FLAG_SID
        else:
            # speech: a marker exactly after a silence (and at the very start)
            assert bool(flags & rtp.FLAG_MARKER) == bool(prev_flags & rtp.FLAG_SID)
            if flags & rtp.FLAG_MARKER:
                spurts += 1
                assert frame - prev_frame <= rtp.SID_INTERVAL_FRAMES
            else:
                assert frame - prev_frame == 1
        prev_frame, prev_flags = frame, flags
    return spurts, updates


def test_talk_spurts_markers_and_sid_schedule() -> None:
    spurts, updates = _check_pattern(list(islice(rtp.voice_frames(_spec()), 3000)))
    assert spurts > 20 and updates > 20
    cont = list(islice(rtp.voice_frames(_spec(on=None)), 100))
    assert cont == [(0, rtp.FLAG_MARKER)] + [(f, 0) for f in range(1, 100)]


def test_talk_spurt_means_follow_p59() -> None:
    frames = list(islice(rtp.voice_frames(_spec(seed=11, on=1.004, off=1.587)), 200_000))
    starts = np.array([f for f, flags in frames if flags & rtp.FLAG_MARKER])
    silences = np.array([f for f, flags in frames if flags == rtp.FLAG_SID])  # SID_FIRST
    cycles = min(len(starts) - 1, len(silences))
    assert cycles > 1000
    talk_s = (silences[:cycles] - starts[:cycles]) * 0.02
    quiet_s = (starts[1 : cycles + 1] - silences[:cycles]) * 0.02
    assert float(talk_s.mean()) == pytest.approx(1.004, rel=0.06)
    assert float(quiet_s.mean()) == pytest.approx(1.587, rel=0.06)


def test_templates_are_rtp_with_amrwb_payload() -> None:
    spec = rtp.RtpStreamSpec("v", 1, "127.0.0.1", 5004, payload_type=101, codec_mode=2, seed=9)
    t, _ = rtp.build_templates(spec)
    ident = rtp.rtp_identity(9)
    for packet, ft, size in [(t.speech, 2, 32), (t.sid, 9, 5)]:
        decoded = scapy_rtp.RTP(bytes(packet))
        assert decoded.version == 2 and decoded.payload_type == 101
        assert (decoded.sequence, decoded.timestamp) == (ident.seq0, ident.ts0)
        assert decoded.sourcesync == ident.ssrc and decoded.numsync == 0
        amr = bytes(decoded.payload)
        assert amr[0] == 0xF0  # CMR 15: no mode request
        assert amr[1] == (ft << 3) | 0x04  # F = 0, FT, Q = 1
        assert len(amr) == 2 + size
    assert len(t.speech) == udp_payload_bytes(2)
    assert t.speech[-1] & 0x07 == 0  # 253 bits: three zero padding bits
    assert rtp.decode_rtp(t.speech) == (0, 101, ident.seq0, ident.ts0, ident.ssrc)
    assert rtp.decode_rtp(b"TBPR" + bytes(16)) is None


def test_extend_seq_handles_wrap_and_reordering() -> None:
    assert rtp.extend_seq(65535, 0) == 65536
    assert rtp.extend_seq(65536, 65535) == 65535  # late packet from before the wrap
    assert rtp.extend_seq(70000, 70001 & 0xFFFF) == 70001
    assert rtp.extend_seq(-1, 0) == 0


def _tx_log(wire: int, seq0: int, n: int, t0: int = 10**18) -> np.ndarray:
    log = np.zeros(n, dtype=rtp.TX_RECORD)
    log["stream"] = wire
    log["seq"] = seq0 + np.arange(n)
    log["tx_ns"] = t0 + np.arange(n) * 20_000_000
    log["rtp_ts"] = np.arange(n) * 320
    return log


def test_join_pairs_by_sequence_number() -> None:
    seq0 = 65530
    log = np.concatenate([_tx_log(1, seq0, 100), _tx_log(2, 0, 5)])
    arrived = np.array([1, 0, 3, 7, 99, 150], dtype=np.int64) + seq0  # reordered, lost, stray
    rx_ns = 10**18 + (arrived - seq0) * 20_000_000 + 1000
    joined = rtp.join_tx_rx(log, 1, seq0, arrived.astype(np.uint32), rx_ns)
    assert joined.seq.tolist() == [1, 0, 3, 7, 99]
    assert joined.unmatched == 1
    assert (joined.rx_ns - joined.tx_ns).tolist() == [1000] * 5
    assert joined.rtp_ts.tolist() == [320, 0, 960, 2240, 31680]
    empty = rtp.join_tx_rx(log[:0], 1, seq0, arrived.astype(np.uint32), rx_ns)
    assert empty.unmatched == len(arrived) and len(empty.seq) == 0


# --------------------------------------------------------------------------------------------
# Profile model
# --------------------------------------------------------------------------------------------


def _stream(**fields: Any) -> Stream:
    return Stream.model_validate({"id": "s", "from": "a", "to": "b", **fields})


def test_stream_model_derives_rates_and_sizes() -> None:
    probe_s = _stream(rate_pps=10)
    assert (probe_s.packet_rate_pps, probe_s.udp_payload_bytes) == (10, 64)
    voice = _stream(kind="rtp_voice", codec_mode=2, talk_on_s=None)
    assert (voice.packet_rate_pps, voice.udp_payload_bytes) == (50, 46)
    assert voice.payload_type == 96 and voice.talk_off_s == 1.587
    bulk = _stream(kind="bulk", rate_kbps=9600)
    assert (bulk.packet_rate_pps, bulk.udp_payload_bytes) == (1000, 1200)
    assert _stream(kind="bulk", rate_kbps=96, payload_bytes=120).packet_rate_pps == 100


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, [("rate_pps", "missing")]),
        ({"rate_pps": 10, "rate_kbps": 5}, [("rate_kbps", "for bulk streams")]),
        ({"rate_pps": 10, "codec_mode": 2, "seed": 1}, [("codec_mode", "rtp_voice"), ("seed", "")]),
        ({"kind": "rtp_voice", "rate_pps": 50}, [("rate_pps", "20 ms frame")]),
        ({"kind": "rtp_voice", "payload_bytes": 80}, [("payload_bytes", "codec_mode")]),
        ({"kind": "rtp_voice", "talk_on_s": None, "talk_off_s": 2}, [("talk_off_s", "null")]),
        ({"kind": "rtp_voice", "codec_mode": 9}, [("codec_mode", "less than or equal")]),
        ({"kind": "rtp_voice", "payload_type": 8}, [("payload_type", "greater than or equal")]),
        ({"kind": "bulk"}, [("rate_kbps", "missing")]),
        ({"kind": "bulk", "rate_kbps": 1000, "rate_pps": 5}, [("rate_pps", "rate_kbps")]),
        ({"kind": "bulk", "rate_kbps": 1e6, "payload_bytes": 100}, [("rate_kbps", "100000")]),
        ({"kind": "bulk", "rate_kbps": 1000, "talk_on_s": 1}, [("talk_on_s", "rtp_voice")]),
    ],
)
def test_stream_model_reports_each_wrong_combination(
    fields: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    with pytest.raises(ValidationError) as info:
        _stream(**fields)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [(field,) for field, _ in expected]
    for error, (_, words) in zip(errors, expected, strict=True):
        assert words in f"{error['type']} {error['msg']}"


# --------------------------------------------------------------------------------------------
# Receiver: RTP recognition and sequence extension
# --------------------------------------------------------------------------------------------


def _rtp_packet(seq: int, ssrc: int, marker: int = 0) -> bytes:
    return (
        bytes([0x80, (marker << 7) | 96])
        + seq.to_bytes(2, "big")
        + bytes(4)
        + (ssrc.to_bytes(4, "big"))
        + bytes(20)
    )


def test_receiver_records_bound_rtp_streams(tmp_path: Path) -> None:
    stop = threading.Event()
    ready = tmp_path / "ready"
    out = tmp_path / "rx.bin"
    bindings = [rtp.RtpBinding(0x11, 1, 65534), rtp.RtpBinding(0x22, 2)]
    result: dict[str, probe.ReceiverStats] = {}

    def receive() -> None:
        result["stats"] = probe.run_receiver(
            "127.0.0.1", 0, out, ready_file=ready, stop=stop, rtp=bindings
        )

    thread = threading.Thread(target=receive)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        port = int(ready.read_text())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for seq16 in [65535, 1, 0, 2]:  # stream 1 wraps, with a late packet across the wrap
                s.sendto(_rtp_packet(seq16, 0x11), ("127.0.0.1", port))
            for seq16 in [500, 499, 501]:  # stream 2: first arrival sets the reference
                s.sendto(_rtp_packet(seq16, 0x22), ("127.0.0.1", port))
            s.sendto(_rtp_packet(7, 0x33), ("127.0.0.1", port))  # unknown SSRC
            s.sendto(probe.encode_header(9, 4, time.time_ns()), ("127.0.0.1", port))
            time.sleep(0.3)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert (result["stats"].records, result["stats"].ignored) == (8, 1)
    records = probe.read_records(out)
    seq1, tx1, _ = probe.records_for(records, 1)
    assert seq1.tolist() == [65535, 65537, 65536, 65538] and not tx1.any()
    assert probe.records_for(records, 2)[0].tolist() == [500, 499, 501]
    assert probe.records_for(records, 9)[0].tolist() == [4]


# --------------------------------------------------------------------------------------------
# One run of the emulated traffic driver over loopback
# --------------------------------------------------------------------------------------------

VOICE_SEED = 104872
"""First sequence number 65481, so the 16-bit sequence wraps mid-run; 6 spurts in 3 s."""
VOICE_S = 3.0
BULK_KBPS = 10_000.0
BULK_START_S, BULK_STOP_S = 0.5, 2.5


class _LocalNodes:
    """Every node is this host: commands run as they are, addresses are loopback."""

    def node_command(self, node: str, argv: Sequence[str]) -> list[str]:
        return ["env", f"PYTHONPATH={REPO}", *argv]

    def node_address(self, node: str) -> str:
        return "127.0.0.1"

    def link_command(self, link: str, argv: Sequence[str]) -> list[str]:
        raise AssertionError("no links here")


class _Tracker:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def track(self, proc: subprocess.Popen[bytes], role: str) -> None:
        self.procs.append(proc)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("0.0.0.0", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class VoiceRun:
    out_dir: Path
    voice: StreamSpec
    bulk: StreamSpec
    results: dict[str, StreamResult]
    pcap: Path | None
    capture_error: str


def _start_dumpcap(port: int, pcap: Path) -> subprocess.Popen[bytes] | None:
    """dumpcap on lo for one UDP port; None when it cannot capture here."""
    if shutil.which("dumpcap") is None:
        return None
    argv = ["dumpcap", "-i", "lo", "-f", f"udp port {port}", "-P", "-w", str(pcap)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    seen = b""
    while b"Capturing on" not in seen:  # printed once the capture is live
        line = proc.stderr.readline()
        if not line or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            return None
        seen += line
    return proc


@pytest.fixture(scope="module")
def voice_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoiceRun]:
    run_dir = tmp_path_factory.mktemp("voice-run")
    voice_port, probe_port, bulk_port = _free_ports(3)
    common: dict[str, Any] = {"from_node": "a", "to_node": "b", "dst_address": "127.0.0.1"}
    voice = StreamSpec(
        id="voice",
        wire_id=1,
        kind="rtp_voice",
        port=voice_port,
        rate_pps=50.0,
        payload_bytes=udp_payload_bytes(8),
        dscp=46,
        start_s=0.0,
        stop_s=VOICE_S,
        talk_on_s=0.3,
        talk_off_s=0.5,
        seed=VOICE_SEED,
        **common,
    )
    tick = StreamSpec(
        id="tick",
        wire_id=2,
        kind="probe",
        port=probe_port,
        rate_pps=100.0,
        payload_bytes=64,
        dscp=0,
        start_s=0.0,
        stop_s=VOICE_S,
        **common,
    )
    bulk = StreamSpec(
        id="bulk",
        wire_id=3,
        kind="bulk",
        port=bulk_port,
        rate_pps=BULK_KBPS * 1000 / 8 / 1200,
        payload_bytes=1200,
        dscp=0,
        start_s=BULK_START_S,
        stop_s=BULK_STOP_S,
        rate_kbps=BULK_KBPS,
        **common,
    )
    tracker = _Tracker()
    context = DeviceContext(run_dir, "t", lambda *_: None, tracker, _LocalNodes())
    pcap = run_dir / "voice.pcap"
    dumpcap = _start_dumpcap(voice_port, pcap)
    traffic = EmulatedTraffic("traffic", {}, context)
    try:
        traffic.start([voice, tick, bulk], time.time_ns() + 800_000_000, "r1")
        results = {r.id: r for r in traffic.stop()}
    finally:
        traffic.close()
        for proc in tracker.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        capture_error = ""
        if dumpcap is not None:
            dumpcap.send_signal(signal.SIGTERM)
            try:
                _, err = dumpcap.communicate(timeout=10)
                capture_error = err.decode(errors="replace")
            except subprocess.TimeoutExpired:
                dumpcap.kill()
                dumpcap.wait()
    yield VoiceRun(
        run_dir / "traffic" / "r1",
        voice,
        bulk,
        results,
        pcap if dumpcap is not None and pcap.exists() else None,
        capture_error,
    )


def _voice_log(run: VoiceRun) -> np.ndarray:
    logs = sorted(run.out_dir.glob("tx-*.rtp.bin"))
    assert len(logs) == 1, logs
    log = rtp.read_tx_log(logs[0])
    mine: np.ndarray = log[log["stream"] == run.voice.wire_id]
    return mine


def test_voice_packets_follow_the_seeded_schedule(voice_run: VoiceRun) -> None:
    log = _voice_log(voice_run)
    ident = rtp.rtp_identity(VOICE_SEED)
    spec = rtp.RtpStreamSpec(
        "voice", 1, "127.0.0.1", 1, talk_on_s=0.3, talk_off_s=0.5, seed=VOICE_SEED
    )
    n = len(log)
    in_run = [f for f, _ in islice(rtp.voice_frames(spec), 200) if f * 20 < VOICE_S * 1000]
    assert len(in_run) - 1 <= n <= len(in_run)  # the last frame may fall after the stagger
    assert ident.seq0 + n > 65536
    # sequence numbers +1 per packet from the seeded start, even across the 16-bit wrap
    assert np.array_equal(log["seq"].astype(np.int64), ident.seq0 + np.arange(n))
    frames = ((log["rtp_ts"].astype(np.int64) - ident.ts0) & 0xFFFFFFFF) // rtp.TS_PER_FRAME
    assert not bool(np.any((log["rtp_ts"].astype(np.int64) - ident.ts0) % rtp.TS_PER_FRAME))
    expected = list(islice(rtp.voice_frames(spec), n))
    assert list(zip(frames.tolist(), log["flags"].tolist(), strict=True)) == expected
    spurts, updates = _check_pattern(expected)
    assert spurts >= 3 and updates >= 2, "pick a seed whose 3 s hold spurts and long silences"
    # timestamps advance 320 per 20 ms: transmit times follow frame indices
    dt_ms = np.diff(log["tx_ns"]) / 1e6
    want_ms = np.diff(frames) * 20.0
    err = np.abs(dt_ms - want_ms)
    assert float(np.median(err)) < 0.5
    assert float(np.mean(err < 2.0)) >= 0.9
    sid = (log["flags"] & rtp.FLAG_SID_UPDATE) != 0
    assert float(np.median(np.abs(dt_ms[sid[1:]] - 160.0))) < 1.0  # SID_UPDATE every 160 ms


def test_voice_one_way_delay_from_joined_logs(voice_run: VoiceRun) -> None:
    res = voice_run.results["voice"]
    assert res.sent == len(_voice_log(voice_run))
    assert len(res.seq) == res.sent, res.notes  # loopback loses nothing
    assert np.array_equal(np.sort(res.seq), np.arange(res.sent, dtype=np.uint32))
    owd = res.rx_ns - res.tx_ns
    assert owd.min() > 0 and owd.max() < 50_000_000
    assert not [n for n in res.notes if "transmit record" in n or "log" in n]
    tick = voice_run.results["tick"]  # a probe stream in the same sender is unaffected
    assert len(tick.seq) == tick.sent == 300
    assert (tick.rx_ns - tick.tx_ns).min() > 0


def test_bulk_alone_keeps_its_rate(voice_run: VoiceRun) -> None:
    res = voice_run.results["bulk"]
    expected_bps = BULK_KBPS * 1000
    received_bps = len(res.seq) * 1200 * 8 / (BULK_STOP_S - BULK_START_S)
    assert received_bps == pytest.approx(expected_bps, rel=0.05)
    assert res.sent_window_ns is not None
    sent_s = (res.sent_window_ns[1] - res.sent_window_ns[0]) / 1e9
    assert sent_s == pytest.approx(BULK_STOP_S - BULK_START_S, abs=0.1)
    assert len(list(voice_run.out_dir.glob("tx-*.json"))) == 2  # another window: own sender


def test_bulk_beside_paced_streams_keeps_its_rate(tmp_path: Path) -> None:
    """Bulk in the sender of a paced stream: it fills gaps, the paced stream stays on time."""
    ready = tmp_path / "ready"
    rx = subprocess.Popen(
        probe.receiver_command("127.0.0.1", 0, tmp_path / "rx.bin", ready_file=ready),
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline and rx.poll() is None
            time.sleep(0.01)
        port = int(ready.read_text())
        paced = probe.StreamSpec("paced", 1, "127.0.0.1", port, 100.0, 64, 46)
        bulk = probe.StreamSpec("bulk", 2, "127.0.0.1", port, BULK_KBPS * 1000 / 8 / 1200, 1200, 0)
        argv = probe.sender_command(
            [paced], 2.0, tmp_path / "tx.json", bulk_streams=[bulk], start_at_ns=time.time_ns()
        )
        assert subprocess.run(argv, cwd=REPO, timeout=20).returncode == 0
        time.sleep(0.2)
    finally:
        rx.send_signal(signal.SIGTERM)
        rx.wait(timeout=5)
    stats = probe.read_sender_stats(tmp_path / "tx.json")
    records = probe.read_records(tmp_path / "rx.bin")
    bulk_seq, _, _ = probe.records_for(records, 2)
    assert stats.streams["bulk"].sent == len(bulk_seq)
    assert len(bulk_seq) * 1200 * 8 / 2.0 == pytest.approx(BULK_KBPS * 1000, rel=0.05)
    seq, tx_ns, _ = probe.records_for(records, 1)
    assert len(seq) == stats.streams["paced"].sent == 200
    assert float(np.median(np.diff(tx_ns))) == pytest.approx(10_000_000, abs=100_000)
    late_p50 = stats.streams["paced"].late_p50_us
    assert late_p50 is not None and late_p50 < 100


def test_captured_packets_are_rtp(voice_run: VoiceRun) -> None:
    if voice_run.pcap is None:
        pytest.skip(f"no capture (dumpcap missing or not permitted) {voice_run.capture_error}")
    from scapy.layers.inet import UDP
    from scapy.utils import rdpcap

    log = _voice_log(voice_run)
    ident = rtp.rtp_identity(VOICE_SEED)
    rows = []
    for pkt in rdpcap(str(voice_run.pcap)):
        if UDP in pkt and pkt[UDP].dport == voice_run.voice.port:
            decoded = scapy_rtp.RTP(bytes(pkt[UDP].payload))
            amr = bytes(decoded.payload)
            header = (decoded.version, decoded.payload_type, decoded.sourcesync)
            fields = (decoded.sequence, decoded.timestamp, decoded.marker)
            rows.append((*header, *fields, amr[1] >> 3, len(amr)))
    assert len(rows) == len(log)
    for row, rec in zip(rows, log, strict=True):
        version, pt, ssrc, seq, ts, marker, ft, size = row
        assert (version, pt, ssrc) == (2, 96, ident.ssrc)
        assert (seq, ts) == (int(rec["seq"]) & 0xFFFF, int(rec["rtp_ts"]))
        assert marker == int(rec["flags"]) & rtp.FLAG_MARKER
        is_sid = bool(rec["flags"] & rtp.FLAG_SID)
        assert (ft, size) == ((9, 2 + 5) if is_sid else (8, 2 + 60))


def test_tshark_sees_one_rtp_stream_without_loss(voice_run: VoiceRun) -> None:
    if voice_run.pcap is None:
        pytest.skip(f"no capture (dumpcap missing or not permitted) {voice_run.capture_error}")
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    port = voice_run.voice.port
    base = ["tshark", "-r", str(voice_run.pcap), "-d", f"udp.port=={port},rtp"]
    out = subprocess.run(
        [*base, "-q", "-z", "rtp,streams"], capture_output=True, text=True, timeout=60
    ).stdout
    ssrc = f"0x{rtp.rtp_identity(VOICE_SEED).ssrc:08X}"
    rows = [line for line in out.splitlines() if re.search(r"0x[0-9A-Fa-f]{8}", line)]
    assert len(rows) == 1 and ssrc.lower() in rows[0].lower(), out
    match = re.search(r"0x[0-9A-Fa-f]{8}\s+\S+\s+(\d+)\s+(-?\d+) \(", rows[0])
    assert match is not None, rows[0]
    assert int(match[1]) == len(_voice_log(voice_run)) and int(match[2]) == 0, rows[0]
    # Wireshark's own AMR-WB dissector reads every payload as octet-aligned frames
    amr_fields = ["-e", "amr.wb.toc.ft", "-e", "amr.toc.q", "-e", "_ws.malformed"]
    fields = subprocess.run(
        [*base, "-d", "rtp.pt==96,amr_wb", "-T", "fields", *amr_fields],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split("\n")
    decoded = [line.split("\t") for line in fields if line]
    assert decoded and {tuple(d) for d in decoded} <= {("8", "1", ""), ("9", "1", "")}, decoded
