"""`testbed analyze` on good and bad captures: JSON keys, exit codes, no tracebacks."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cli import main

REPO = Path(__file__).resolve().parents[2]


def _rtp_pcap(
    path: Path,
    packets: int = 50,
    lose: frozenset[int] = frozenset(),
    pt: int = 0,
    late: bool = False,
) -> Path:
    """A pcap of one RTP stream (PT 0, 8 kHz, 20 ms; or ``pt``) over Ethernet/IPv4/UDP; with
    ``late``, every tenth packet arrives 5 ms late."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for seq in range(packets):
        if seq in lose:
            continue
        rtp = struct.pack("!BBHII", 0x80, pt, seq, seq * 160, 0x1234ABCD) + bytes(160)
        udp = struct.pack("!HHHH", 5004, 6006, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq, 0, 64, 17, 0,
            bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]),
        ) + udp  # fmt: skip
        frame = bytes(6) + bytes(6) + b"\x08\x00" + ip
        ts_us = 1_000_000 + seq * 20_000 + (5_000 if late and seq % 10 == 9 else 0)
        out += struct.pack("<IIII", ts_us // 1_000_000, ts_us % 1_000_000, len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))
    return path


def test_rtp_streams_are_found_without_port_hints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = _rtp_pcap(tmp_path / "voice.pcap", lose=frozenset({10, 11}))
    assert main(["analyze", str(capture), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (stream,) = report["rtp_streams"]
    for key in (
        "ssrc",
        "src",
        "dst",
        "packets",
        "lost",
        "loss_pct",
        "jitter_ms",
        "max_gap_ms",
        "reordered",
        "duplicates",
    ):
        assert key in stream
    assert stream["ssrc"] == "0x1234ABCD"
    assert (stream["src"], stream["dst"]) == ("10.0.0.1:5004", "10.0.0.2:6006")
    assert (stream["packets"], stream["lost"]) == (48, 2)
    assert stream["jitter_ms"] == 0
    assert stream["max_gap_ms"] == pytest.approx(60.0)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"this is not a capture at all\n", "not a pcap or pcapng"),
    ],
)
def test_bad_captures_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(content)
    assert main(["analyze", str(bad)]) == 3
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_truncated_capture_is_read_up_to_the_last_whole_packet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = _rtp_pcap(tmp_path / "whole.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[: len(whole) - 50])
    assert main(["analyze", str(cut), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["captures"][0]["truncated"] is True
    assert report["rtp_streams"][0]["packets"] == 49


def test_missing_file_through_the_console_script(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "analyze", str(tmp_path / "nope.pcapng")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3
    assert "nope.pcapng" in proc.stderr and "Traceback" not in proc.stderr


def test_a_dynamic_payload_type_gets_jitter_from_its_clock_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = _rtp_pcap(tmp_path / "amr.pcap", pt=96, late=True)
    assert main(["analyze", str(capture), "--json"]) == 0
    (unknown,) = json.loads(capsys.readouterr().out)["rtp_streams"]
    assert unknown["jitter_ms"] is None  # the capture alone does not say the clock rate
    assert main(["analyze", str(capture), "--json", "--clock-rate", "96=8000"]) == 0
    (known,) = json.loads(capsys.readouterr().out)["rtp_streams"]
    assert known["jitter_ms"] > 0
    # same timestamps at twice the clock: each late packet is half as many ticks off
    assert main(["analyze", str(capture), "--json", "--clock-rate", "96=16000"]) == 0
    (doubled,) = json.loads(capsys.readouterr().out)["rtp_streams"]
    assert doubled["jitter_ms"] != known["jitter_ms"]


@pytest.mark.parametrize("value", ["96", "x=16000", "96=0", "200=8000"])
def test_a_bad_clock_rate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    capture = _rtp_pcap(tmp_path / "amr.pcap", pt=96)
    assert main(["analyze", str(capture), "--clock-rate", value]) == 3
    assert "--clock-rate" in capsys.readouterr().err
