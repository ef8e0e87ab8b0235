"""Benchmark: passive capture analysis (``analyze_captures``) against tshark and pyshark.

The script writes, straight from numpy, a synthetic capture of ``--packets`` packets (default
1 000 000) as pcapng and as pcap with microsecond stamps: 48 PCMU (payload type 0, 8 kHz, 20 ms)
and 16 AMR-WB-like (payload type 96, 16 kHz) RTP streams carry 60 % of the packets and 8 probe
streams (our ``b"TBPR"`` header) the rest, over about three minutes of capture time, with ~1 %
random loss plus a loss burst per stream, delay spikes that reorder, a few duplicates and
wrapping RTP sequence numbers, all frame sizes interleaved as on a real link. It then times, in
a fresh child process, the step from capture file to per-stream metrics (``analyze_captures``,
RTP found by its heuristic, no port hints, PT 96 given its 16 kHz clock as SDP would;
``--repeat`` runs on a file in the page cache, import time excluded; packets/s from the best
run, the median shown beside it since the machine is shared), plus the reader alone.

Memory, each figure from a child process of its own so that measurements do not pollute each
other: the child's peak RSS, ``VmHWM`` from ``/proc/self/status`` (getrusage's ``ru_maxrss`` is
not used: it carries the parent's RSS across fork and exec), and, in another child, the peak of
the analysis's own allocations under ``tracemalloc`` (numpy's included, the interpreter's and
imports' not). Both on the N-packet capture and on a capture of 2N packets: the analysis
streams the file in chunks and keeps per-stream state, so the peak should not grow with N
except by the probe streams' one-way delays (4 bytes per probe packet, kept for exact
percentiles); the growth per extra packet is printed beside the file's bytes per packet. A row
with every frame padded to one size shows the reader's best case.

References on the same file in the same run: ``tshark -n -q -z rtp,streams`` with the RTP
ports given by ``-d`` and with Wireshark's RTP heuristic instead (both with ``-d
rtp.pt==96,amr_wb``, Decode As giving PT 96 the AMR-WB clock; one run each, wall time including
start-up, peak RSS from sampling its ``VmHWM``), and pyshark, default (PDML) mode and
``use_json=True``, on the first ``--pyshark-packets`` packets only, pulling out the fields a
metric needs but computing no metric, timed from its first packet (both favour pyshark),
packets/s EXTRAPOLATED to the whole file. "ours / it" divides packets/s, so above 1 means ours
is faster. The issue's targets (at least 1 M packets/s; more than 1000 times pyshark in its
default mode; at least 3 times tshark's own RTP statistics, its faster variant; a peak that does
not grow with the capture beyond the delay samples) print PASS or MISS. Last, a correctness
check: every stream's packet count against the generator, and our RTP figures (packets, lost,
max delta, mean and max jitter) against tshark's table for every PT 0 and PT 96 stream, as the
largest differences (tshark prints 3 decimals, so up to 0.0015 ms is rounding; for ``lost`` it
counts up to a stream's last captured packet where RFC 3550 counts up to the highest, as
documented in ``rtp.py``, and the check applies that rule). Progress goes to stderr, results to
stdout; temporary files go in a temporary directory removed at the end. Run as
``.venv/bin/python bench/analysis.py [--packets 1000000] [--pyshark-packets 5000] [--repeat
5]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt

EPOCH_NS = 1_760_000_000 * 1_000_000_000
RTP_PERIOD_NS = 20_000_000
RTP_DPORT0 = 20000
PROBE_DPORT = 9000
N_PCMU = 48
N_AMRWB = 16
N_PROBE = 8
RTP_SHARE = 0.6
PCMU_PAYLOAD = 12 + 160
AMRWB_PAYLOAD = 12 + 62
PROBE_PAYLOAD = 64
LOSS = 0.01
DUPLICATES = 0.0005
CHUNK = 1 << 17
SNAPLEN = 262144

TARGET_PPS = 1_000_000
TARGET_VS_PYSHARK = 1000.0
TARGET_VS_TSHARK = 3.0
MAX_GROWTH_BYTES = 8.0
TSHARK_ROUNDING_MS = 0.0015
# What SDP would say about the dynamic payload type, for us and (Decode As) for tshark.
CLOCK_RATES = {96: 16000}
TSHARK_PT96 = "rtp.pt==96,amr_wb"
TSHARK_PAYLOADS = {"g711U": N_PCMU, "amr-wb": N_AMRWB}
# Bytes per probe packet the analysis keeps (one-way delay, int32 ns) for exact percentiles.
DELAY_BYTES = 4

_U8 = npt.NDArray[np.uint8]
_I64 = npt.NDArray[np.int64]


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Synthetic capture
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    kind: str  # "rtp" or "probe"
    src: int
    dst: int
    sport: int
    dport: int
    payload_len: int
    pt: int  # RTP payload type (-1 for probes)
    ident: int  # SSRC, or the probe's wire stream id
    tos: int


PACKET_TABLE = np.dtype(
    [
        ("rx_ns", "<i8"),
        ("stream", "<u2"),
        ("marker", "u1"),
        ("seq", "<u4"),  # RTP: 16-bit sequence number; probe: 32-bit sequence number
        ("value", "<u8"),  # RTP: 32-bit timestamp; probe: transmit time in ns
    ]
)


def make_streams(rng: np.random.Generator) -> list[Stream]:
    streams: list[Stream] = []
    ssrcs = rng.choice(1 << 32, size=N_PCMU + N_AMRWB, replace=False)
    for i in range(N_PCMU + N_AMRWB):
        pcmu = i < N_PCMU
        streams.append(
            Stream(
                kind="rtp",
                src=(10 << 24) | (1 << 16) | (i + 1),
                dst=(10 << 24) | (2 << 16) | (i + 1),
                sport=30000 + 2 * i,
                dport=RTP_DPORT0 + 2 * i,
                payload_len=PCMU_PAYLOAD if pcmu else AMRWB_PAYLOAD,
                pt=0 if pcmu else 96,
                ident=int(ssrcs[i]),
                tos=0xB8,  # DSCP EF
            )
        )
    for i in range(N_PROBE):
        streams.append(
            Stream(
                kind="probe",
                src=(10 << 24) | (3 << 16) | 1,
                dst=(10 << 24) | (4 << 16) | 1,
                sport=40000 + i,
                dport=PROBE_DPORT,
                payload_len=PROBE_PAYLOAD,
                pt=-1,
                ident=i + 1,
                tos=0x88,  # DSCP AF41
            )
        )
    return streams


def make_packets(n: int, seed: int) -> tuple[npt.NDArray[np.void], list[Stream]]:
    """Exactly ``n`` captured packets in capture order: each stream is sent at a constant rate,
    loses packets at random and in one burst, gets a delay with exponential jitter and rare
    spikes (which reorder), a few duplicates; the capture is then cut after ``n`` packets."""
    rng = np.random.default_rng(seed)
    streams = make_streams(rng)
    # Send a little more than needed (losses, bursts of up to 40), then cut the capture at n.
    margin = 1.04 / (1 - LOSS)
    rtp_sent = int(n * RTP_SHARE * margin / (N_PCMU + N_AMRWB)) + 60
    duration_ns = rtp_sent * RTP_PERIOD_NS
    probe_sent = int(n * (1 - RTP_SHARE) * margin / N_PROBE) + 60
    probe_period = duration_ns // probe_sent
    parts: list[npt.NDArray[np.void]] = []
    for index, s in enumerate(streams):
        rtp = s.kind == "rtp"
        count = rtp_sent if rtp else probe_sent
        period = RTP_PERIOD_NS if rtp else probe_period
        i = np.arange(count, dtype=np.int64)
        start = EPOCH_NS + int(rng.integers(0, 1_000_000_000))
        tx = start + i * period
        if not rtp:  # a real sender wakes a little late
            tx += rng.integers(0, 30_000, size=count)
        keep = rng.random(count) >= LOSS
        burst = int(rng.integers(5, 40))
        at = int(rng.integers(1, count - burst))
        keep[at : at + burst] = False
        keep[0] = True
        if rtp:
            delay = 20_000_000 + rng.exponential(1_500_000, size=count)
            spikes = rng.random(count) < 0.003
            delay[spikes] += rng.uniform(20e6, 70e6, size=int(spikes.sum()))  # 1 to 3 periods
        else:
            delay = 1_000_000 + rng.exponential(200_000, size=count)
            spikes = rng.random(count) < 0.002
            delay[spikes] += rng.uniform(1.0, 3.0, size=int(spikes.sum())) * probe_period
        rx = tx + delay.astype(np.int64)
        sel = np.flatnonzero(keep)
        dup = sel[rng.random(sel.size) < DUPLICATES]
        rec = np.zeros(sel.size + dup.size, dtype=PACKET_TABLE)
        idx = np.concatenate([sel, dup])
        rec["rx_ns"] = rx[idx]
        rec["rx_ns"][sel.size :] += rng.integers(50_000, 2_000_000, size=dup.size)
        rec["stream"] = index
        if rtp:
            seq0 = int(rng.integers(0, 1 << 16))
            ts0 = int(rng.integers(0, 1 << 32))
            step = 160 if s.pt == 0 else 320
            rec["seq"] = (seq0 + idx) & 0xFFFF
            rec["value"] = (ts0 + idx * step) & 0xFFFFFFFF
            rec["marker"] = idx == 0
        else:
            rec["seq"] = idx
            rec["value"] = tx[idx]
        parts.append(rec)
    table = np.concatenate(parts)
    table = table[np.argsort(table["rx_ns"], kind="stable")]
    if table.size < n:
        raise RuntimeError(f"generator made {table.size} packets, fewer than {n}")
    return table[:n].copy(), streams


def _put(a: _U8, rows: Any, col: int, values: npt.ArrayLike, dtype: str) -> None:
    """Write ``values`` with ``dtype`` (e.g. ``">u2"``) at byte column ``col`` of ``rows``."""
    arr = np.asarray(values).astype(dtype)
    size = arr.dtype.itemsize
    a[rows, col : col + size] = arr.view(np.uint8).reshape(-1, size)


def _frames(table: npt.NDArray[np.void], streams: list[Stream], first_id: int) -> tuple[_U8, _I64]:
    """Ethernet/IPv4/UDP frames of ``table`` as a zero-padded 2-D array (as wide as the
    largest frame of any stream), and their lengths."""
    k = table.size
    st = table["stream"].astype(np.int64)
    col = {
        name: np.array([getattr(s, name) for s in streams], dtype=np.int64)
        for name in ("src", "dst", "sport", "dport", "payload_len", "pt", "ident", "tos")
    }
    plen = col["payload_len"][st]
    flen = 42 + plen
    fr = np.zeros((k, 42 + int(col["payload_len"].max())), dtype=np.uint8)
    every = slice(None)
    fr[:, 0:6] = (0x02, 0, 0, 0, 0, 0x02)
    fr[:, 6:12] = (0x02, 0, 0, 0, 0, 0x01)
    fr[:, 12] = 0x08  # IPv4
    fr[:, 14] = 0x45
    fr[:, 15] = col["tos"][st]
    _put(fr, every, 16, 28 + plen, ">u2")
    _put(fr, every, 18, (first_id + np.arange(k)) & 0xFFFF, ">u2")
    fr[:, 20] = 0x40  # DF
    fr[:, 22] = 64
    fr[:, 23] = 17
    _put(fr, every, 26, col["src"][st], ">u4")
    _put(fr, every, 30, col["dst"][st], ">u4")
    ip = fr[:, 14:34].astype(np.uint32)
    total = ((ip[:, 0::2] << 8) | ip[:, 1::2]).sum(axis=1)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    _put(fr, every, 24, ~total & 0xFFFF, ">u2")
    _put(fr, every, 34, col["sport"][st], ">u2")
    _put(fr, every, 36, col["dport"][st], ">u2")
    _put(fr, every, 38, 8 + plen, ">u2")  # UDP checksum 0: none (allowed over IPv4)
    pt = col["pt"][st]
    r = np.flatnonzero(pt >= 0)
    fr[r, 42] = 0x80
    fr[r, 43] = (table["marker"][r] << 7) | pt[r]
    _put(fr, r, 44, table["seq"][r], ">u2")
    _put(fr, r, 46, table["value"][r], ">u4")
    _put(fr, r, 50, col["ident"][st[r]], ">u4")
    p = np.flatnonzero(pt < 0)
    fr[p, 42:46] = np.frombuffer(b"TBPR", dtype=np.uint8)
    fr[p, 46] = 1
    _put(fr, p, 48, col["ident"][st[p]], ">u2")
    _put(fr, p, 50, table["seq"][p], ">u4")
    _put(fr, p, 52, table["value"][p], ">u8")
    return fr, flen


def _pcapng_header() -> bytes:
    shb = (0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    idb = (1, 20, 1, 0, SNAPLEN, 20)  # Ethernet, no options: microsecond stamps
    return (
        np.array(shb[:3], "<u4").tobytes()
        + np.array(shb[3:5], "<u2").tobytes()
        + (np.array(shb[5:6], "<i8").tobytes() + np.array(shb[6:], "<u4").tobytes())
        + np.array(idb[:2], "<u4").tobytes()
        + np.array(idb[2:4], "<u2").tobytes()
        + np.array(idb[4:], "<u4").tobytes()
    )


def _pcap_header() -> bytes:
    return (
        np.array([0xA1B2C3D4], "<u4").tobytes()
        + np.array([2, 4], "<u2").tobytes()
        + np.array([0, 0, SNAPLEN, 1], "<u4").tobytes()
    )


def write_capture(
    path: Path,
    fmt: str,
    table: npt.NDArray[np.void],
    streams: list[Stream],
    one_size: bool = False,
) -> None:
    """Write ``table`` as a pcapng (EPB) or pcap file, ``CHUNK`` packets at a time: each chunk
    becomes a zero-padded 2-D array of records, flattened by a row-length mask. ``one_size``
    pads every frame to the largest (as an Ethernet trailer: IP and UDP lengths unchanged)."""
    with path.open("wb") as f:
        f.write(_pcapng_header() if fmt == "pcapng" else _pcap_header())
        for lo in range(0, table.size, CHUNK):
            part = table[lo : lo + CHUNK]
            fr, flen = _frames(part, streams, lo)
            k, width = fr.shape
            if one_size:
                flen = np.full(k, width, dtype=np.int64)
            ts_us = part["rx_ns"] // 1000
            every = slice(None)
            if fmt == "pcapng":
                padded = (flen + 3) & ~3
                blen = 32 + padded
                rec = np.zeros((k, 28 + ((width + 3) & ~3) + 4), dtype=np.uint8)
                _put(rec, every, 0, np.full(k, 6), "<u4")
                _put(rec, every, 4, blen, "<u4")
                _put(rec, every, 12, ts_us >> 32, "<u4")
                _put(rec, every, 16, ts_us & 0xFFFFFFFF, "<u4")
                _put(rec, every, 20, flen, "<u4")
                _put(rec, every, 24, flen, "<u4")
                rec[:, 28 : 28 + width] = fr
                cols = 28 + padded[:, None] + np.arange(4)
                rec[np.arange(k)[:, None], cols] = blen.astype("<u4").view(np.uint8).reshape(-1, 4)
                length = blen
            else:
                rec = np.zeros((k, 16 + width), dtype=np.uint8)
                _put(rec, every, 0, ts_us // 1_000_000, "<u4")
                _put(rec, every, 4, ts_us % 1_000_000, "<u4")
                _put(rec, every, 8, flen, "<u4")
                _put(rec, every, 12, flen, "<u4")
                rec[:, 16:] = fr
                length = 16 + flen
            f.write(rec[np.arange(rec.shape[1]) < length[:, None]].tobytes())


# ------------------------------------------------------------------------------------------------
# Child process: our analysis, timed and measured
# ------------------------------------------------------------------------------------------------


def vm_hwm_mb() -> float:
    """This process's peak RSS so far (``VmHWM``), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_main(path: str, repeat: int, out: str | None) -> None:
    from testbed.analysis.passive import analyze_captures
    from testbed.analysis.pcap import CaptureReader

    base = vm_hwm_mb()
    t0 = time.perf_counter()
    for _ in CaptureReader(path):  # the reader alone, before VmHWM includes the analysis
        pass
    read_s = time.perf_counter() - t0
    read_peak = vm_hwm_mb()
    times = []
    result: dict[str, Any] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = analyze_captures([path], clock_rates=CLOCK_RATES)
        times.append(time.perf_counter() - t0)
    peak = vm_hwm_mb()
    if out:
        Path(out).write_text(json.dumps(result))
    cap = result["captures"][0]
    print(
        json.dumps(
            {
                "times": times,
                "read_s": read_s,
                "read_peak_mb": read_peak,
                "base_mb": base,
                "peak_mb": peak,
                "packets": cap["packets"],
                "rtp_streams": cap["rtp_streams"],
                "probe_streams": cap["probe_streams"],
            }
        )
    )


def child_trace(path: str) -> None:
    """One analysis under tracemalloc: the peak of what it allocates (numpy arrays included)."""
    import tracemalloc

    from testbed.analysis.passive import analyze_captures

    tracemalloc.start()
    result = analyze_captures([path], clock_rates=CLOCK_RATES)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"traced_peak_mb": peak / 1e6, "packets": result["captures"][0]["packets"]}))


def run_traced(path: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(path), "--trace"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tracing child failed ({proc.returncode}):\n{proc.stderr}")
    res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return res


def run_ours(path: Path, repeat: int, out: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(path), "--repeat", str(repeat)]
    if out is not None:
        cmd += ["--child-out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"analysis child failed ({proc.returncode}):\n{proc.stderr}")
    res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    res["median_s"] = statistics.median(res["times"])
    res["best_s"] = min(res["times"])
    res["pps"] = res["packets"] / res["best_s"]
    res["median_pps"] = res["packets"] / res["median_s"]
    return res


# ------------------------------------------------------------------------------------------------
# References
# ------------------------------------------------------------------------------------------------


@dataclass
class Timed:
    wall_s: float
    maxrss_mb: float
    stdout: str


def _hwm_sampler(pid: int, peak: list[float], stop: threading.Event) -> None:
    """Keep ``peak[0]`` at the last ``VmHWM`` (MB) read for ``pid`` until ``stop`` is set."""
    status = f"/proc/{pid}/status"
    while not stop.is_set():
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak[0] = int(line.split()[1]) / 1024
        except OSError:
            return
        stop.wait(0.01)


def run_timed(cmd: list[str], workdir: Path) -> Timed:
    """Run ``cmd`` to completion: wall time, and its peak RSS from ``VmHWM`` sampled every
    10 ms (``wait4``'s ``ru_maxrss`` would include this process's RSS: it survives the fork
    and exec). The command is killed if this is interrupted."""
    out_path = workdir / "cmd.out"
    peak = [0.0]
    stop = threading.Event()
    with out_path.open("w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        sampler = threading.Thread(target=_hwm_sampler, args=(proc.pid, peak, stop), daemon=True)
        sampler.start()
        try:
            rc = proc.wait()
            wall = time.perf_counter() - t0
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            sampler.join()
    text = out_path.read_text()
    out_path.unlink()
    if rc != 0:
        raise RuntimeError(f"{cmd[0]} exited with {rc}")
    return Timed(wall_s=wall, maxrss_mb=peak[0], stdout=text)


def rtp_port_range() -> str:
    return f"{RTP_DPORT0}-{RTP_DPORT0 + 2 * (N_PCMU + N_AMRWB)}"


def tshark_cmd(tshark: str, path: Path, heuristic: bool) -> list[str]:
    cmd = [tshark, "-n", "-q", "-r", str(path), "-d", TSHARK_PT96, "-z", "rtp,streams"]
    if heuristic:
        return [*cmd, "--enable-heuristic", "rtp_udp"]
    return [*cmd, "-d", f"udp.port=={rtp_port_range()},rtp"]


# tshark 4.0's rtp,streams row: start, end, src, port, dst, port, SSRC, payload, packets,
# lost (pct), min/mean/max delta, min/mean/max jitter, problems.
_ROW = re.compile(
    r"^\s*\S+\s+\S+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+0x([0-9A-Fa-f]+)\s+(.+?)\s+(\d+)\s+"
    r"(-?\d+)\s+\(\S+%\)\s+\S+\s+\S+\s+(\S+)\s+\S+\s+(\S+)\s+(\S+)\s*X?\s*$"
)


def parse_rtp_streams(text: str) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            rows[int(m[5], 16)] = {
                "payload": m[6],
                "packets": int(m[7]),
                "lost": int(m[8]),
                "max_delta_ms": float(m[9]),
                "mean_jitter_ms": float(m[10]),
                "max_jitter_ms": float(m[11]),
            }
    return rows


def pyshark_pps(path: Path, packets: int, use_json: bool) -> tuple[float, int]:
    """Packets/s of pyshark reading ``path`` (the first ``packets`` packets of the capture)
    and pulling out the fields a metric needs, timed from the first packet to the end so that
    tshark's start-up is left out; the child tshark is closed in any case."""
    import pyshark  # type: ignore[import-untyped]

    decode = {f"udp.port=={rtp_port_range()}": "rtp"}
    cap = pyshark.FileCapture(str(path), keep_packets=False, decode_as=decode, use_json=use_json)
    rows: list[tuple[Any, ...]] = []
    t0 = 0.0
    try:
        for pkt in cap:
            if not rows:
                t0 = time.perf_counter()
            head: tuple[Any, ...] = (
                float(pkt.sniff_timestamp),
                pkt.ip.src,
                pkt.ip.dst,
                int(pkt.udp.srcport),
                int(pkt.udp.dstport),
            )
            if hasattr(pkt, "rtp"):
                rtp = pkt.rtp
                rows.append((*head, int(rtp.seq), int(rtp.timestamp), int(rtp.ssrc, 16)))
            else:
                data = bytes.fromhex(str(pkt.data.data).replace(":", ""))
                rows.append((*head, data[8:12], data[12:20]))
    finally:
        cap.close()
    wall = time.perf_counter() - t0
    return (len(rows) - 1) / wall, len(rows)


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def fmt_pps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_ratio(num: float | None, den: float | None) -> str:
    return "-" if not num or not den else f"{num / den:,.1f}x"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def check_against_tshark(
    ours: dict[str, Any],
    theirs: dict[int, dict[str, Any]],
    truth: dict[tuple[str, int], dict[str, int]],
) -> list[str]:
    """Lines describing the largest differences between our RTP streams and tshark's: PT 0
    (PCMU) and PT 96 (AMR-WB, whose clock both sides were given)."""
    by_ssrc = {int(s["ssrc"], 16): s for s in ours["rtp_streams"]}
    rtp = {ssrc: t for ssrc, t in theirs.items() if t["payload"] in TSHARK_PAYLOADS}
    missing = sorted(set(rtp) - set(by_ssrc))
    diff_pk = diff_lost = diff_lost_adj = 0
    diff_ms = {"max_delta_ms": 0.0, "mean_jitter_ms": 0.0, "max_jitter_ms": 0.0}
    explained = 0
    for ssrc, t in rtp.items():
        s = by_ssrc.get(ssrc)
        if s is None:
            continue
        diff_pk = max(diff_pk, abs(s["packets"] - t["packets"]))
        d = s["lost"] - t["lost"]
        late_by = truth[("rtp", ssrc)]["late_by"]
        diff_lost = max(diff_lost, abs(d))
        diff_lost_adj = max(diff_lost_adj, abs(d - late_by))
        explained += bool(d and d == late_by)
        for key in diff_ms:
            diff_ms[key] = max(diff_ms[key], abs((s[key] or 0.0) - t[key]))
    counts = {name: sum(t["payload"] == name for t in rtp.values()) for name in TSHARK_PAYLOADS}
    ours_pt = {pt: sum(s["payload_type"] == pt for s in by_ssrc.values()) for pt in (0, 96)}
    ok = (
        counts == TSHARK_PAYLOADS
        and ours_pt == {0: N_PCMU, 96: N_AMRWB}
        and not missing
        and diff_pk == 0
        and diff_lost_adj == 0
        and all(v <= TSHARK_ROUNDING_MS for v in diff_ms.values())
    )
    return [
        f"streams PT 0 / PT 96: tshark {counts['g711U']} / {counts['amr-wb']}, ours "
        f"{ours_pt[0]} / {ours_pt[96]}, generated {N_PCMU} / {N_AMRWB}; tshark's missing from "
        f"ours: {len(missing)}",
        f"max |ours - tshark|: packets {diff_pk}, lost {diff_lost} ({diff_lost_adj} once "
        f"tshark's rule is applied: it counts up to the last packet, RFC 3550 up to the "
        f"highest; {explained} stream(s) with a late last packet)",
        "max |ours - tshark| ms: "
        + ", ".join(f"{k.removesuffix('_ms')} {v:.4f}" for k, v in diff_ms.items())
        + f" (tshark prints 3 decimals: up to {TSHARK_ROUNDING_MS} is rounding) -> "
        + verdict(ok),
    ]


def truth_of(
    table: npt.NDArray[np.void], streams: list[Stream]
) -> dict[tuple[str, int], dict[str, int]]:
    """Per stream (keyed by kind and SSRC or probe wire id): captured packets, and by how
    much the last captured packet's (extended) sequence number is below the highest (0
    unless it arrived late)."""
    out: dict[tuple[str, int], dict[str, int]] = {}
    st = table["stream"]
    for index, s in enumerate(streams):
        seq = table["seq"][st == index].astype(np.int64)
        if s.kind == "rtp":
            seq = np.concatenate(
                [[seq[0]], seq[0] + np.cumsum(((np.diff(seq) + 0x8000) & 0xFFFF) - 0x8000)]
            )
        out[(s.kind, s.ident)] = {"packets": int(seq.size), "late_by": int(seq.max() - seq[-1])}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--pyshark-packets", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5, help="runs of our analysis per file")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child and args.trace:
        child_trace(args.child)
        return 0
    if args.child:
        child_main(args.child, args.repeat, args.child_out)
        return 0
    if args.packets < 1000:
        ap.error("--packets must be at least 1000")
    signal.signal(signal.SIGTERM, _sigterm)
    with tempfile.TemporaryDirectory(prefix="tb-bench-analysis-") as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> int:
    n = args.packets
    m = min(args.pyshark_packets, n)
    t0 = time.perf_counter()
    table, streams = make_packets(n, args.seed)
    files = {
        "pcapng": tmp / "capture.pcapng",
        "pcap": tmp / "capture.pcap",
        "one_size": tmp / "one-size.pcapng",
        "prefix": tmp / "prefix.pcapng",
        "double": tmp / "double.pcapng",
    }
    write_capture(files["pcapng"], "pcapng", table, streams)
    write_capture(files["pcap"], "pcap", table, streams)
    write_capture(files["one_size"], "pcapng", table, streams, one_size=True)
    write_capture(files["prefix"], "pcapng", table[:m], streams)
    truth = truth_of(table, streams)
    del table
    big_table, _ = make_packets(2 * n, args.seed + 1)
    write_capture(files["double"], "pcapng", big_table, streams)
    del big_table
    log(f"wrote the captures in {time.perf_counter() - t0:.1f} s")
    size_mb = {k: p.stat().st_size / 1e6 for k, p in files.items()}

    log("our analysis (child processes)")
    result_path = tmp / "ours.json"
    ours = {"pcapng": run_ours(files["pcapng"], args.repeat, result_path)}
    for key in ("pcap", "one_size", "double"):
        ours[key] = run_ours(files[key], args.repeat)
    ours_result = json.loads(result_path.read_text())
    log("our analysis under tracemalloc (child processes)")
    traced = {key: run_traced(files[key]) for key in ("pcapng", "double")}

    tshark = shutil.which("tshark")
    tsh: dict[str, Timed] = {}
    if tshark:
        for name, heuristic in (("-d udp.port", False), ("heuristic", True)):
            log(f"tshark -z rtp,streams ({name})")
            tsh[name] = run_timed(tshark_cmd(tshark, files["pcapng"], heuristic), tmp)
    else:
        log("tshark not found: skipping the tshark reference and the correctness check")

    pysh: dict[str, float] = {}
    pysh_note = ""
    try:
        import pyshark  # noqa: F401
    except ImportError:
        pysh_note = "pyshark is not installed (.venv/bin/pip install pyshark): skipped"
        log(pysh_note)
    else:
        for name, use_json in (("default", False), ("use_json=True", True)):
            log(f"pyshark {name} on the first {m} packets")
            pps, got = pyshark_pps(files["prefix"], m, use_json)
            if got != m:
                raise RuntimeError(f"pyshark read {got} packets of {m}")
            pysh[name] = pps

    report(args, n, m, streams, size_mb, ours, traced, ours_result, tsh, pysh, pysh_note, truth)
    return 0


def report(
    args: argparse.Namespace,
    n: int,
    m: int,
    streams: list[Stream],
    size_mb: dict[str, float],
    ours: dict[str, dict[str, Any]],
    traced: dict[str, dict[str, Any]],
    ours_result: dict[str, Any],
    tsh: dict[str, Timed],
    pysh: dict[str, float],
    pysh_note: str,
    truth: dict[tuple[str, int], dict[str, int]],
) -> None:
    main_res = ours["pcapng"]
    ours_pps = main_res["pps"]
    print(
        f"Capture: {n:,} packets, {N_PCMU} PT 0 + {N_AMRWB} PT 96 RTP and {N_PROBE} probe "
        f"streams, ~1 % loss + bursts, reordering, duplicates; pcapng {size_mb['pcapng']:.0f} MB"
        f", pcap {size_mb['pcap']:.0f} MB (page cache). Ours found {main_res['rtp_streams']} RTP "
        f"and {main_res['probe_streams']} probe streams (expected {N_PCMU + N_AMRWB}, {N_PROBE})."
    )
    print(
        f"Ours: best and median of {args.repeat} runs, packets/s from the best; tshark: one run, "
        f"wall time with start-up; pyshark: first {m:,} packets after the first, extrapolated.\n"
    )
    rows: list[tuple[str, ...]] = [
        ("method", "packets", "best s", "median s", "packets/s", "ours / it", "peak RSS MB"),
    ]
    for key, label in (
        ("pcapng", "ours analyze_captures, pcapng"),
        ("pcap", "ours analyze_captures, pcap"),
        ("one_size", "ours, pcapng, frames of one size"),
        ("double", "ours analyze_captures, pcapng 2N"),
    ):
        r = ours[key]
        rows.append(
            (
                label,
                f"{r['packets']:,}",
                f"{r['best_s']:.3f}",
                f"{r['median_s']:.3f}",
                fmt_pps(r["pps"]),
                fmt_ratio(ours_pps, r["pps"]),
                f"{r['peak_mb']:.0f}",
            )
        )
        if key == "pcapng":
            read_pps = r["packets"] / r["read_s"]
            rows.append(
                (
                    "  of which reading alone (one run)",
                    f"{r['packets']:,}",
                    f"{r['read_s']:.3f}",
                    "-",
                    fmt_pps(read_pps),
                    "-",
                    f"{r['read_peak_mb']:.0f}",
                )
            )
    for name, t in tsh.items():
        pps = n / t.wall_s
        rows.append(
            (
                f"tshark -q -z rtp,streams, {name}",
                f"{n:,}",
                f"{t.wall_s:.2f}",
                "-",
                fmt_pps(pps),
                fmt_ratio(ours_pps, pps),
                f"{t.maxrss_mb:.0f}",
            )
        )
    for name, pps in pysh.items():
        rows.append(
            (
                f"pyshark {name} (extrapolated)",
                f"{m:,}",
                f"{(m - 1) / pps:.2f}",
                "-",
                fmt_pps(pps),
                fmt_ratio(ours_pps, pps),
                "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, cells in enumerate(rows):
        print(
            "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w)
                for j, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if pysh_note:
        print(pysh_note)

    big = ours["double"]
    extra = max(big["packets"] - main_res["packets"], 1)
    delays = DELAY_BYTES * (1 - RTP_SHARE)
    print(
        f"\nMemory, N = {main_res['packets']:,} and 2N = {big['packets']:,} packets, each figure "
        f"from a child process of its own (RSS after imports: {main_res['base_mb']:.0f} MB). "
        f"The pcapng holds {size_mb['pcapng'] * 1e6 / n:.0f} bytes per packet; what the analysis "
        f"keeps per packet is the probe streams' one-way delays, {DELAY_BYTES} bytes per probe "
        f"packet = {delays:.1f} per packet here (exact percentiles need them all)."
    )
    growth: dict[str, float] = {}
    for label, key, source in (
        ("peak RSS, reader alone", "read_peak_mb", ours),
        ("peak RSS, whole analysis", "peak_mb", ours),
        ("tracemalloc peak, analysis", "traced_peak_mb", traced),
    ):
        low, high = source["pcapng"][key], source["double"][key]
        growth[key] = (high - low) * 1e6 / extra
        print(
            f"  {label:<27} N {low:6.1f} MB -> 2N {high:6.1f} MB: "
            f"{growth[key]:+5.1f} bytes per extra packet"
        )

    print("\nTargets from the issue:")
    print(
        f"  {verdict(ours_pps >= TARGET_PPS)}  >= {TARGET_PPS:,} packets/s: {fmt_pps(ours_pps)} "
        f"(median run: {fmt_pps(main_res['median_pps'])})"
    )
    if "default" in pysh:
        ratio = ours_pps / pysh["default"]
        also = ", ".join(f"{k}: {ours_pps / v:,.0f}x" for k, v in pysh.items() if k != "default")
        print(
            f"  {verdict(ratio > TARGET_VS_PYSHARK)}  > {TARGET_VS_PYSHARK:,.0f}x pyshark "
            f"(default mode): {ratio:,.0f}x" + (f" ({also})" if also else "")
        )
    else:
        print(f"  ----  > {TARGET_VS_PYSHARK:,.0f}x pyshark: not measured (pyshark missing)")
    if tsh:
        ratio = ours_pps / (n / min(t.wall_s for t in tsh.values()))
        print(
            f"  {verdict(ratio >= TARGET_VS_TSHARK)}  >= {TARGET_VS_TSHARK:.0f}x tshark -z "
            f"rtp,streams (its faster variant): {ratio:.1f}x"
        )
    else:
        print("  ----  several times tshark: not measured (tshark missing)")
    print(
        f"  {verdict(growth['peak_mb'] <= MAX_GROWTH_BYTES)}  memory bounded, peak RSS growing by "
        f"at most {MAX_GROWTH_BYTES:.0f} bytes per extra packet (delay samples and noise): "
        f"{growth['peak_mb']:+.1f} (tracemalloc: {growth['traced_peak_mb']:+.1f}); "
        f"peak {main_res['peak_mb']:.0f} MB for N, {big['peak_mb']:.0f} MB for 2N"
    )

    print("\nCorrectness:")
    wrong = [
        s
        for s in ours_result["rtp_streams"]
        if truth.get(("rtp", int(s["ssrc"], 16)), {}).get("packets") != s["packets"]
    ] + [
        s
        for s in ours_result["probe_streams"]
        if truth.get(("probe", s["stream"]), {}).get("packets") != s["packets"]
    ]
    found = len(ours_result["rtp_streams"]) + len(ours_result["probe_streams"])
    print(
        f"  against the generator: {found} of {len(streams)} streams found, "
        f"{len(wrong)} with a wrong packet count -> " + verdict(found == len(streams) and not wrong)
    )
    if tsh:
        theirs = parse_rtp_streams(tsh["-d udp.port"].stdout)
        heur = parse_rtp_streams(tsh["heuristic"].stdout)
        print(f"  tshark found {len(theirs)} RTP streams with -d, {len(heur)} with its heuristic")
        for line in check_against_tshark(ours_result, theirs, truth):
            print(f"  {line}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
