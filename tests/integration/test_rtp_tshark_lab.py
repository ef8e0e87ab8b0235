"""RTP jitter and loss from the emulated lab's capture, against ``tshark -z rtp,streams``.

One real ``testbed run`` on the emulated lab: an AMR-WB ``rtp_voice`` stream (dynamic payload type
96, RTP clock 16 kHz, talk spurts with SID frames in the silences, 30 s) from UE A1 to the MCPTT
server, through UE A1's radio link impaired with 20 ms +- 5 ms (uniform) delay and 1 % random loss,
captured by dumpcap behind the impairment (capture point ``as_backbone``). The capture file from
the run record is then analysed twice: by ``testbed.analysis.passive`` and by ``tshark -q -z
rtp,streams``, and the two must agree: same packets and lost packets, Wireshark's mean and max
jitter and max delta within 0.05 ms (they agree to tshark's printed 3 decimals), and our RFC 3550
``jitter_ms`` within 0.05 ms of the same RFC 3550 A.8 loop run over tshark's own per-packet
decoding of the file (``rtp,streams`` prints running statistics, not the final jitter).

The dynamic payload type: Wireshark knows a dynamic type's clock only from the call's SDP
(``rtpmap:96 AMR-WB/16000``), which a capture of media alone does not hold; without it, tshark
prints jitter 0 for PT 96 (``ui/tap-rtp-analysis.c``: ``clock_rate = 0`` when the RTP info has
no payload-type name). Wireshark 4.0's ``packet-rtp.c`` has a second source, used when no SDP
set up the conversation: the ``rtp.pt`` dissector table, which Decode As fills. With
``-d rtp.pt==96,amr_wb`` the RTP dissector names PT 96 after the AMR-WB dissector
(``amr-wb``), and ``get_dyn_pt_clock_rate()`` maps that name, like an SDP encoding name, to
16000 Hz through its table of IANA media subtypes. This is Wireshark's documented Decode As
(the same as choosing AMR-WB for payload type 96 in the GUI), changes nothing in the file, and
states exactly what SDP would. Pitfall: the AMR preference ``amr.dynamic.payload.type:96`` or
``-d rtp.pt==96,amr`` name it ``amr``, whose clock is AMR-NB's 8000 Hz: jitter then comes out
about three times too large. Our side is told the same fact through ``clock_rates={96: 16000}``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from testbed.analysis.passive import analyze_captures
from tests.integration.helpers import assert_clean, run_dirs, start_run

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (apt install tshark)"),
]

PORT = 40002
PT = 96
CLOCK = 16_000
TOLERANCE_MS = 0.05

PROFILE: dict[str, Any] = {
    "schema_version": 1,
    "name": "rtp_tshark_lab",
    "duration_s": 30,
    "impairments": [
        {
            "link": "radio_a1",
            "direction": "forward",
            "delay_ms": 20,
            "jitter_ms": 5,
            "jitter_distribution": "uniform",
            "loss_pct": 1,
        }
    ],
    "streams": [
        {"id": "voice", "kind": "rtp_voice", "from": "ue_a1", "to": "mcptt_as", "port": PORT},
    ],
    "captures": ["as_backbone"],
}

# tshark 4.0's rtp,streams row: start, end, src, port, dst, port, SSRC, payload, packets,
# lost (pct), min/mean/max delta, min/mean/max jitter, problems.
_ROW = re.compile(
    r"^\s*\S+\s+\S+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+0x([0-9A-Fa-f]+)\s+(.+?)\s+(\d+)\s+"
    r"(-?\d+)\s+\(\S+%\)\s+\S+\s+\S+\s+(\S+)\s+\S+\s+(\S+)\s+(\S+)\s*X?\s*$"
)


def _tshark(*args: str) -> str:
    proc = subprocess.run(
        ["tshark", "-n", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def tshark_rtp_streams(capture: Path) -> dict[int, dict[str, Any]]:
    """``tshark -q -z rtp,streams`` with RTP on the stream's port and PT 96 decoded as AMR-WB
    (see the module docstring), keyed by SSRC."""
    out = _tshark(
        "-q", "-r", str(capture), "-d", f"udp.port=={PORT},rtp", "-d", f"rtp.pt=={PT},amr_wb",
        "-z", "rtp,streams",
    )  # fmt: skip
    rows = {}
    for line in out.splitlines():
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
    assert rows, f"no RTP stream in tshark's output:\n{out}"
    return rows


def rfc3550_jitter_from_tshark(capture: Path, ssrc: int) -> float:
    """Final RFC 3550 A.8 interarrival jitter (ms) of ``ssrc``, computed with a plain loop over
    tshark's own per-packet fields (arrival time, RTP timestamp), first copies in arrival
    order: the definition of our ``jitter_ms``, on tshark's decoding of the file."""
    out = _tshark(
        "-r", str(capture), "-d", f"udp.port=={PORT},rtp", "-Y", f"rtp.ssrc == {ssrc}",
        "-T", "fields", "-e", "frame.time_epoch", "-e", "rtp.seq", "-e", "rtp.timestamp",
    )  # fmt: skip
    seen: set[int] = set()
    packets = []
    for line in out.splitlines():
        epoch, seq, ts = line.split("\t")
        if int(seq) not in seen:  # ~650 packets: a raw number cannot come round again
            seen.add(int(seq))
            sec, frac = epoch.split(".")
            packets.append((int(sec) * 10**9 + int(frac.ljust(9, "0")[:9]), int(ts)))
    jitter = 0.0
    for (r_i, s_i), (r_j, s_j) in pairwise(packets):
        ts_step = (s_j - s_i + 2**31) % 2**32 - 2**31
        d = (r_j - r_i) * CLOCK / 1e9 - ts_step
        jitter += (abs(d) - jitter) / 16
    return jitter / CLOCK * 1000


def _run(tmp_path: Path, env: dict[str, str]) -> Path:
    profile = tmp_path / "profile.yaml"
    profile.write_text(json.dumps(PROFILE))
    proc = start_run(profile, env, "--json")
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    summary: dict[str, Any] = json.loads(out)
    assert summary["errors"] == [], err
    (run_dir,) = run_dirs(env)
    assert_clean(run_dir)
    (entry,) = summary["captures"]
    assert entry["name"] == "as_backbone" and not entry["dropped"], entry
    return run_dir / entry["file"]


def test_rtp_jitter_and_loss_agree_with_tshark(tmp_path: Path, testbed_env: dict[str, str]) -> None:
    capture = _run(tmp_path, testbed_env)
    report = analyze_captures([capture], clock_rates={PT: CLOCK})
    (ours,) = [s for s in report["rtp_streams"] if s["dst"].endswith(f":{PORT}")]
    assert (ours["payload_type"], ours["clock_rate"]) == (PT, CLOCK)
    assert ours["packets"] > 450 and ours["lost"] > 0, ours  # ~1 % of ~650 packets is lost
    assert ours["duplicates"] == 0, ours

    ssrc = int(ours["ssrc"], 16)
    theirs = tshark_rtp_streams(capture)[ssrc]
    assert theirs["payload"] == "amr-wb", theirs
    assert (ours["packets"], ours["lost"]) == (theirs["packets"], theirs["lost"])
    diffs = {
        key: abs(ours[key] - theirs[key])
        for key in ("mean_jitter_ms", "max_jitter_ms", "max_delta_ms")
    }
    diffs["jitter_ms"] = abs(ours["jitter_ms"] - rfc3550_jitter_from_tshark(capture, ssrc))
    print(f"|ours - tshark| in ms: {diffs}; ours: {ours}; tshark: {theirs}")
    assert all(d <= TOLERANCE_MS for d in diffs.values()), (diffs, ours, theirs)
    # A jitter of +-5 ms uniform on the delay gives an RFC 3550 jitter of about 3.3 ms (the mean
    # |D| of two independent draws, 10/3 ms); far from 0 (no clock) or 3x (AMR-NB's clock).
    assert 1.5 < ours["jitter_ms"] < 6.0 and 1.5 < theirs["mean_jitter_ms"] < 6.0
