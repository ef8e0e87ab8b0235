"""Tests of the probe stream: wire format and record files, then real sender/receiver processes
over loopback (no namespaces needed). Timing bounds are deliberately loose; accuracy targets
belong in benchmarks, not here."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the package is not installed into the venv
    sys.path.insert(0, str(REPO))

from drivers.traffic.probe import (  # noqa: E402
    HEADER,
    RECORD,
    ProbeHeader,
    StreamSpec,
    decode_header,
    encode_header,
    read_records,
    read_sender_stats,
    receiver_command,
    records_for,
    sender_command,
)

# --------------------------------------------------------------------------------------------
# Unit tests
# --------------------------------------------------------------------------------------------


def test_header_round_trip() -> None:
    tx_ns = time.time_ns()
    raw = encode_header(513, 0xFFFFFFFF, tx_ns)
    assert len(raw) == HEADER.size == 20
    assert raw[:4] == b"TBPR" and raw[4] == 1 and raw[5] == 0
    assert decode_header(raw + bytes(80)) == ProbeHeader(513, 0xFFFFFFFF, tx_ns)


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"TBPR",
        bytes(19),
        b"XXXX" + encode_header(1, 2, 3)[4:],
        encode_header(1, 2, 3)[:4] + b"\x02" + encode_header(1, 2, 3)[5:],  # unknown version
        os.urandom(64).replace(b"TBPR", b"tbpr"),
    ],
)
def test_decode_junk_returns_none(junk: bytes) -> None:
    assert decode_header(junk) is None


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        encode_header(70000, 0, 0)
    with pytest.raises(ValueError):
        encode_header(1, -1, 0)


def test_stream_spec_parse_and_format() -> None:
    spec = StreamSpec.parse("voice:7:10.77.1.2:40000:50:172:46")
    assert spec == StreamSpec("voice", 7, "10.77.1.2", 40000, 50.0, 172, 46)
    assert StreamSpec.parse(spec.format()) == spec
    v6 = StreamSpec.parse("v6:8:fd00::2:40000:0.5:20:0")
    assert (v6.dst_ip, v6.dst_port, v6.rate_pps) == ("fd00::2", 40000, 0.5)
    assert StreamSpec.parse(v6.format()) == v6
    for bad in [
        "a:1:10.0.0.1:40000:50:172",  # field missing
        "a:70000:10.0.0.1:40000:50:172:0",  # wire id beyond u16
        "a:1:10.0.0.1:40000:50:19:0",  # payload smaller than the header
        "a:1:10.0.0.1:40000:0:172:0",  # zero rate
        "a:1:10.0.0.1:40000:50:172:64",  # DSCP beyond 6 bits
        "a:1:not-an-ip:40000:50:172:0",
    ]:
        with pytest.raises(ValueError):
            StreamSpec.parse(bad)


def _records(rows: list[tuple[int, int, int, int]]) -> np.ndarray:
    return np.array(rows, dtype=RECORD)


def test_record_layout_is_packed_little_endian() -> None:
    assert RECORD.itemsize == 22
    raw = _records([(1, 2, 3, 4)]).tobytes()
    assert raw == b"\x01\x00" + b"\x02\x00\x00\x00" + (3).to_bytes(8, "little") + (4).to_bytes(
        8, "little"
    )


def test_read_records_ignores_partial_trailing_record(tmp_path: Path) -> None:
    path = tmp_path / "rx.bin"
    path.write_bytes(b"")
    assert read_records(path).shape == (0,)
    rows = [(1, 0, 100, 150), (2, 0, 110, 170), (1, 1, 200, 260)]
    path.write_bytes(_records(rows).tobytes() + b"\x01\x00\x07")  # torn fourth record
    got = read_records(path)
    assert got.dtype == RECORD and len(got) == 3
    seq, tx, rx = records_for(got, 1)
    assert seq.dtype == np.uint32 and tx.dtype == np.int64 and rx.dtype == np.int64
    assert seq.tolist() == [0, 1] and tx.tolist() == [100, 200] and rx.tolist() == [150, 260]
    assert [len(a) for a in records_for(got, 9)] == [0, 0, 0]


# --------------------------------------------------------------------------------------------
# Integration over loopback
# --------------------------------------------------------------------------------------------

Spawn = Callable[[list[str]], "subprocess.Popen[bytes]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start processes from the repo root and make sure none outlives the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
            if proc.stderr is not None:
                proc.stderr.close()


def _wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _start_receiver(spawn: Spawn, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    ready = tmp / "rx.ready"
    proc = spawn(
        receiver_command(
            "127.0.0.1", 0, tmp / "rx.bin", ready_file=ready, stats_out=tmp / "rx.json"
        )
    )
    _wait_for(lambda: ready.exists() or proc.poll() is not None, 10, "receiver ready file")
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    return proc, int(ready.read_text())


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=5)


def test_two_streams_over_loopback(spawn: Spawn, tmp_path: Path) -> None:
    rx, port = _start_receiver(spawn, tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:  # must be ignored
        junk.sendto(b"not a probe", ("127.0.0.1", port))
    streams = [
        StreamSpec("fast", 11, "127.0.0.1", port, 200, 172, 46),
        StreamSpec("slow", 12, "127.0.0.1", port, 50, 60, 0),
    ]
    start_at = time.time_ns() + 300_000_000
    stats_path = tmp_path / "tx.json"
    tx = spawn(sender_command(streams, 2.0, stats_path, start_at_ns=start_at))
    assert tx.wait(timeout=15) == 0
    time.sleep(0.2)
    assert _stop(rx) == 0

    stats = read_sender_stats(stats_path)
    assert stats.ended_by == "duration" and stats.error is None
    rx_stats = json.loads((tmp_path / "rx.json").read_text())
    assert rx_stats == {"records": 500, "ignored": 1, "no_timestamp": 0}
    records = read_records(tmp_path / "rx.bin")
    assert len(records) == 500
    for spec, expected in [(streams[0], 400), (streams[1], 100)]:
        st = stats.streams[spec.name]
        assert (st.sent, st.send_errors, st.wire_id) == (expected, 0, spec.wire_id)
        assert st.late_p50_us is not None and st.late_p99_us is not None
        assert 0 <= st.late_p50_us <= st.late_p99_us
        assert st.first_tx_ns is not None and st.last_tx_ns is not None
        assert start_at <= st.first_tx_ns < st.last_tx_ns < start_at + 3_000_000_000
        seq, tx_ns, rx_ns = records_for(records, spec.wire_id)
        assert len(seq) == st.sent
        assert np.array_equal(seq, np.arange(st.sent, dtype=np.uint32))
        assert tx_ns[0] == st.first_tx_ns and tx_ns[-1] == st.last_tx_ns
        owd = rx_ns - tx_ns
        assert owd.min() > 0 and owd.max() < 50_000_000
        gaps_ms = np.diff(tx_ns) / 1e6
        assert abs(float(np.median(gaps_ms)) - 1000 / spec.rate_pps) < 1.0


def test_sigterm_stops_sender_with_stats(spawn: Spawn, tmp_path: Path) -> None:
    rx, port = _start_receiver(spawn, tmp_path)
    stats_path = tmp_path / "tx.json"
    spec = StreamSpec("s", 3, "127.0.0.1", port, 100, 100, 0)
    tx = spawn(sender_command([spec], 30.0, stats_path))
    # Packets on the wire prove the handlers are installed (they are set before sending).
    _wait_for(lambda: len(read_records(tmp_path / "rx.bin")) >= 5, 10, "first packets")
    t0 = time.monotonic()
    assert _stop(tx) == 0
    assert time.monotonic() - t0 < 2.0
    stats = read_sender_stats(stats_path)
    assert stats.ended_by == "signal"
    st = stats.streams["s"]
    assert 5 <= st.sent < 3000 and st.send_errors == 0
    assert st.late_p99_us is not None
    time.sleep(0.2)
    assert _stop(rx) == 0
    seq, _, _ = records_for(read_records(tmp_path / "rx.bin"), 3)
    assert np.array_equal(seq, np.arange(st.sent, dtype=np.uint32))


def test_send_errors_are_counted_and_consume_sequence_numbers(spawn: Spawn, tmp_path: Path) -> None:
    # Nobody listens on this port: loopback answers with ICMP port unreachable, and the
    # connected socket reports ECONNREFUSED on a following send.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    stats_path = tmp_path / "tx.json"
    spec = StreamSpec("dead", 4, "127.0.0.1", closed_port, 100, 40, 0)
    tx = spawn(sender_command([spec], 1.0, stats_path))
    assert tx.wait(timeout=10) == 0
    stats = read_sender_stats(stats_path)
    st = stats.streams["dead"]
    assert stats.ended_by == "duration"
    assert st.sent == 100
    assert 1 <= st.send_errors < st.sent


def test_sigkill_of_receiver_keeps_flushed_records(spawn: Spawn, tmp_path: Path) -> None:
    rx, port = _start_receiver(spawn, tmp_path)
    spec = StreamSpec("k", 5, "127.0.0.1", port, 500, 100, 0)
    tx = spawn(sender_command([spec], 5.0, tmp_path / "tx.json"))
    out = tmp_path / "rx.bin"
    _wait_for(lambda: out.stat().st_size >= 200 * RECORD.itemsize, 10, "flushed records")
    time.sleep(0.3)
    assert _stop(rx, signal.SIGKILL) == -signal.SIGKILL
    assert _stop(tx) == 0
    records = read_records(out)
    assert len(records) >= 200
    seq, tx_ns, rx_ns = records_for(records, 5)
    assert len(seq) == len(records)
    assert np.array_equal(seq, np.arange(len(seq), dtype=np.uint32))
    assert bool(np.all(rx_ns > tx_ns))
