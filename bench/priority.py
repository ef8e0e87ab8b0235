"""Benchmark: does the relay's priority scheduler keep MCPTT voice whole under a best-effort flood?

The script builds the line of bench/impairment.py (``tbbpXXXX-x`` eth0 -- ports ``a|b`` of
``tbbpXXXX-wire`` -- ``tbbpXXXX-y`` eth0, static neighbours, offloads off as the emulated network
does) and impairs x -> y with a rate limit (``--rate-kbps``, 2 000 kbit/s) in front of a delay
(``--delay-ms``, 20 ms) and a queue limit (``--queue-limit``, 100 packets: 0.5 s of full-size
frames at 2 Mbit/s, a radio bearer's buffer rather than the 1 000-packet default, so the flood
fills it and loses packets within the run). A fresh relay runs for each phase. The traffic comes
from the project's probe sender (``drivers.traffic.probe``) in x: VOICE is an RTP-voice-like paced
stream marked EF (DSCP 46, MCPTT QCI 65), 50 packets/s of 80-byte UDP payloads (122-byte frames,
AMR-WB 23.85 + RTP), and the FLOOD a best-effort stream marked DF (DSCP 0, QCI 9) of 1 200-byte
payloads (1 242-byte frames) at 150 % of the link rate (``--flood-pct``). A receiver in y records
both with kernel RX timestamps; one-way delay is that minus the transmit stamp. Four phases of
``--duration-s`` (10 s) each: voice alone, then voice + flood, with ``scheduler: priority`` and
then ``fifo``. Printed per phase: voice loss, one-way delay p50/p95/p99/max, the flood's loss, the
relay's per-class drops and its send lateness, the relay's CPU and "others", the CPU (in cores)
that other jobs' processes used meanwhile (above 0.2 a warning is printed: tails then come from
the shared 2-core machine). Then the targets: with priority, the voice p95 under the flood rises
by less than 10 ms over voice alone (the most it should rise is about one flood frame's
serialisation, 5 ms at 2 Mbit/s), voice loses nothing, and the flood loses packets; the fifo rows
are the contrast (what the scheduler prevents). Figures are medians over ``--repeat`` runs
(losses: the worst run). Everything is torn down in a ``finally`` (Ctrl-C and SIGTERM included).
Run as root: ``.venv/bin/python bench/priority.py [--duration-s 10] [--repeat 1]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from relaylab import (
    CLK_TCK,
    Lab,
    build_line,
    cpu_s,
    new_prefix,
    process_ticks,
    progress,
    raise_interrupt,
    signals_deferred,
    wait_file,
)

from drivers.errors import DriverError
from drivers.impairment.params import PRIORITY_CLASSES, ImpairmentParams, Scheduler
from drivers.impairment.relay import RelayControl, relay_command
from drivers.traffic.probe import (
    StreamSpec,
    read_records,
    read_sender_stats,
    receiver_command,
    records_for,
    sender_command,
)

X_IP, Y_IP = "10.252.0.1", "10.252.0.2"
PORT = 40_000
VOICE_WIRE, FLOOD_WIRE = 1, 2
VOICE_PPS = 50.0
VOICE_PAYLOAD = 80  # AMR-WB 23.85 kbit/s frame (61 B) + its payload header + RTP (12 B), rounded
FLOOD_PAYLOAD = 1200
ETH_IP_UDP = 42  # Ethernet 14 + IPv4 20 + UDP 8
EF, DF = 46, 0
START_LEAD_S = 0.6
"""The sender starts this long after launch (``--start-at-ns``): Python and numpy load first."""
TARGET_P95_RISE_MS = 10.0
CONTAMINATED_CORES = 0.2
SCHEDULERS: tuple[Scheduler, ...] = ("priority", "fifo")


# --- the lab ----------------------------------------------------------------------------


# --- one phase --------------------------------------------------------------------------


@dataclass
class Phase:
    scheduler: str
    flood: bool
    voice_sent: int
    voice_received: int
    voice_owd_ms: npt.NDArray[np.float64]
    flood_sent: int
    flood_received: int
    relay: dict[str, Any]
    relay_cpu: float
    others_cpu: float
    sender_error: str | None = None

    @property
    def voice_loss_pct(self) -> float:
        return 100.0 * (1 - self.voice_received / self.voice_sent) if self.voice_sent else 0.0

    @property
    def flood_loss_pct(self) -> float:
        return 100.0 * (1 - self.flood_received / self.flood_sent) if self.flood_sent else 0.0

    def owd(self, q: float) -> float:
        v = self.voice_owd_ms
        return float(np.percentile(v, q)) if len(v) else float("nan")

    @property
    def owd_max(self) -> float:
        return float(self.voice_owd_ms.max()) if len(self.voice_owd_ms) else float("nan")


def drain(control: RelayControl, limit_s: float = 30.0) -> dict[str, Any]:
    """Wait until the relay holds nothing (the flood's queue drains at the link rate)."""
    deadline = time.monotonic() + limit_s
    counters = control.counters()["a_to_b"]
    while counters["queued"] and time.monotonic() < deadline:
        time.sleep(0.1)
        counters = control.counters()["a_to_b"]
    return counters


def run_phase(
    lab: Lab, args: argparse.Namespace, scheduler: Scheduler, flood: bool, flood_pps: float
) -> Phase:
    control_path = lab.path("relay.sock")
    ready = lab.path("relay.ready")
    relay_proc = lab.spawn(lab.wire, relay_command(control_path, ready_file=ready, seed=1))
    rx_proc: subprocess.Popen[bytes] | None = None
    control = RelayControl(control_path)
    try:
        wait_file(ready, relay_proc, "relay")
        relay_pid = int(control.ping()["pid"])
        control.set(
            "a_to_b",
            ImpairmentParams(
                delay_ms=args.delay_ms,
                rate_kbps=args.rate_kbps,
                scheduler=scheduler,
                queue_limit_packets=args.queue_limit,
            ),
        )
        records_path = lab.path("rx.bin")
        rx_ready = lab.path("rx.ready")
        rx_proc = lab.spawn(lab.y, receiver_command(Y_IP, PORT, records_path, ready_file=rx_ready))
        wait_file(rx_ready, rx_proc, "receiver")
        voice = StreamSpec("voice", VOICE_WIRE, Y_IP, PORT, VOICE_PPS, VOICE_PAYLOAD, dscp=EF)
        bulk = [StreamSpec("flood", FLOOD_WIRE, Y_IP, PORT, flood_pps, FLOOD_PAYLOAD, dscp=DF)]
        stats_path = lab.path("tx.json")
        start_ns = time.time_ns() + int(START_LEAD_S * 1e9)
        tx_proc = lab.spawn(
            lab.x,
            sender_command(
                [voice],
                args.duration_s,
                stats_path,
                bulk_streams=bulk if flood else (),
                start_at_ns=start_ns,
            ),
        )
        time.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
        cpu0, t0, ticks0 = cpu_s(relay_pid), time.monotonic(), process_ticks()
        tx_proc.wait(timeout=args.duration_s + 30)
        cpu1, t1, ticks1 = cpu_s(relay_pid), time.monotonic(), process_ticks()
        ours = {os.getpid(), relay_proc.pid, tx_proc.pid, rx_proc.pid}
        others = sum(t - ticks0.get(pid, 0) for pid, t in ticks1.items() if pid not in ours)
        tx_err = lab.stop(tx_proc)
        relay = drain(control)
        time.sleep(args.delay_ms / 1e3 + 0.2)  # the last frames' delay, the receiver's poll
        lab.stop(rx_proc)
        rx_proc = None
        stats = read_sender_stats(stats_path)
        records = read_records(records_path)
        v_seq, v_tx, v_rx = records_for(records, VOICE_WIRE)
        f_seq, _f_tx, _f_rx = records_for(records, FLOOD_WIRE)
        v = stats.streams["voice"]
        f = stats.streams.get("flood")
        return Phase(
            scheduler=scheduler,
            flood=flood,
            voice_sent=v.sent - v.send_errors,
            voice_received=len(np.unique(v_seq)),
            voice_owd_ms=(v_rx - v_tx).astype(np.float64) / 1e6,
            flood_sent=(f.sent - f.send_errors) if f is not None else 0,
            flood_received=len(np.unique(f_seq)),
            relay=relay,
            relay_cpu=(cpu1 - cpu0) / (t1 - t0),
            others_cpu=others / CLK_TCK / (t1 - t0),
            sender_error=stats.error or (tx_err if tx_proc.returncode not in (0, None) else None),
        )
    finally:
        control.close()
        if rx_proc is not None:
            lab.stop(rx_proc)
        lab.stop(relay_proc)
        control_path.unlink(missing_ok=True)


# --- report -----------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


@dataclass
class Row:
    """One (scheduler, phase) over the repeats: medians, and the worst losses."""

    runs: list[Phase]

    def m(self, get: Any) -> float:
        return med([get(p) for p in self.runs])

    @property
    def voice_loss(self) -> float:
        return max(p.voice_loss_pct for p in self.runs)

    @property
    def flood_loss(self) -> float:
        return max(p.flood_loss_pct for p in self.runs)

    @property
    def min_flood_loss(self) -> float:
        return min(p.flood_loss_pct for p in self.runs)


def class_drops(relay: dict[str, Any]) -> str:
    classes = relay.get("classes", {})
    return "/".join(str(classes.get(name, {}).get("dropped", "-")) for name in PRIORITY_CLASSES)


def report(
    rows: dict[tuple[str, bool], Row], args: argparse.Namespace, flood_pps: float, notes: list[str]
) -> None:
    voice_frame = VOICE_PAYLOAD + ETH_IP_UDP
    flood_frame = FLOOD_PAYLOAD + ETH_IP_UDP
    flood_kbps = flood_pps * flood_frame * 8 / 1e3
    one_frame_ms = flood_frame * 8 / args.rate_kbps
    runs = args.repeat
    print(
        f"Priority scheduling benchmark: x -- relay(wire) -- y, link {args.rate_kbps:g} kbit/s, "
        f"delay {args.delay_ms:g} ms, queue_limit_packets {args.queue_limit}, "
        f"{args.duration_s:g} s per phase; median of {runs} run(s)"
    )
    print(
        f"voice: EF ({EF}) {VOICE_PPS:g} pps of {voice_frame}-byte frames "
        f"({VOICE_PPS * voice_frame * 8 / 1e3:.1f} kbit/s); flood: DF ({DF}) {flood_pps:.0f} pps "
        f"of {flood_frame}-byte frames = {flood_kbps:.0f} kbit/s "
        f"({100 * flood_kbps / args.rate_kbps:.0f} % of the link); one flood frame takes "
        f"{one_frame_ms:.2f} ms on the link"
    )
    print()
    head = (
        f"{'scheduler':>9} | {'phase':>11} | {'voice sent':>10} {'loss %':>6} | "
        f"{'OWD p50':>7} {'p95':>6} {'p99':>6} {'max':>6} ms | {'flood sent':>10} {'loss %':>6} | "
        f"{'drops s/v/d/df':>14} | {'late p99':>8} | {'CPU':>4} {'others':>6}"
    )
    print(head)
    print("-" * len(head))
    for (scheduler, flood), row in rows.items():
        last = row.runs[-1]
        late = row.m(lambda p: float(p.relay.get("late_p99_us") or float("nan")))
        print(
            f"{scheduler:>9} | {'voice+flood' if flood else 'voice alone':>11} | "
            f"{round(row.m(lambda p: p.voice_sent)):>10} {row.voice_loss:>6.2f} | "
            f"{row.m(lambda p: p.owd(50)):>7.2f} {row.m(lambda p: p.owd(95)):>6.2f} "
            f"{row.m(lambda p: p.owd(99)):>6.2f} {row.m(lambda p: p.owd_max):>6.2f}    | "
            f"{round(row.m(lambda p: p.flood_sent)):>10} {row.flood_loss:>6.1f} | "
            f"{class_drops(last.relay):>14} | {late:>6.0f}µs | "
            f"{row.m(lambda p: p.relay_cpu):>4.2f} {row.m(lambda p: p.others_cpu):>6.2f}"
        )
    print(
        "   (OWD = voice one-way delay, kernel RX - TX stamp; drops = the relay's per-class drops"
        " signalling/voice/data/default in the last run; late = relay send lateness; CPU = relay,"
        " others = other jobs, in cores)"
    )
    print()
    print("Targets (issue):")
    for scheduler in SCHEDULERS:
        alone, loaded = rows.get((scheduler, False)), rows.get((scheduler, True))
        if alone is None or loaded is None:
            continue
        p95_alone = alone.m(lambda p: p.owd(95))
        p95_loaded = loaded.m(lambda p: p.owd(95))
        rise = p95_loaded - p95_alone
        if scheduler == "priority":
            verdict = "PASS" if rise < TARGET_P95_RISE_MS else "MISS"
            print(
                f"   priority: voice p95 rise under the flood below {TARGET_P95_RISE_MS:g} ms: "
                f"{verdict} (p95 {p95_alone:.2f} ms alone, {p95_loaded:.2f} ms under the flood: "
                f"+{rise:.2f} ms; one flood frame is {one_frame_ms:.2f} ms)"
            )
            verdict = "PASS" if loaded.voice_loss == 0.0 else "MISS"
            print(f"   priority: voice loses nothing: {verdict} ({loaded.voice_loss:.2f} %)")
            verdict = "PASS" if loaded.min_flood_loss > 0.0 else "MISS"
            print(
                f"   priority: the flood loses packets (it saturates the link): {verdict} "
                f"({loaded.flood_loss:.1f} %)"
            )
        else:
            print(
                f"   fifo (contrast): voice p95 +{rise:.1f} ms under the flood "
                f"({p95_alone:.2f} -> {p95_loaded:.2f} ms), voice loss {loaded.voice_loss:.1f} %, "
                f"flood loss {loaded.flood_loss:.1f} %"
            )
    busy = [p.others_cpu for row in rows.values() for p in row.runs]
    if busy and max(busy) > CONTAMINATED_CORES:
        print(
            f"   WARNING: other jobs used up to {max(busy):.2f} cores of the 2 during the "
            "measurements (column 'others'): tails are contaminated; rerun when the machine is "
            "quiet."
        )
    for note in notes:
        print(f"   note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration-s", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--rate-kbps", type=float, default=2000.0, help="link rate")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay after the serialiser")
    parser.add_argument("--queue-limit", type=int, default=100, help="queue_limit_packets")
    parser.add_argument("--flood-pct", type=float, default=150.0, help="flood, %% of the link")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the whole set")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.duration_s <= 0 or args.rate_kbps <= 0 or args.flood_pct <= 0:
        parser.error("--repeat >= 1 and positive --duration-s, --rate-kbps, --flood-pct needed")
    if os.geteuid() != 0:
        parser.error("run as root (namespaces)")
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    flood_pps = args.flood_pct / 100 * args.rate_kbps * 1e3 / ((FLOOD_PAYLOAD + ETH_IP_UDP) * 8)
    prefix = new_prefix("tbbp")
    lab = Lab(prefix, Path(tempfile.mkdtemp(prefix=prefix)))
    rows: dict[tuple[str, bool], Row] = {}
    notes: list[str] = []
    interrupted = False
    try:
        progress(f"building {prefix}x -- {prefix}wire -- {prefix}y")
        build_line(lab, X_IP, Y_IP)
        for run in range(args.repeat):
            for scheduler in SCHEDULERS:
                for flood in (False, True):
                    what = "voice + flood" if flood else "voice alone"
                    progress(f"  run {run + 1}/{args.repeat}: {scheduler}, {what}")
                    phase = run_phase(lab, args, scheduler, flood, flood_pps)
                    if phase.sender_error:
                        notes.append(f"{scheduler}, {what}: sender: {phase.sender_error}")
                    rows.setdefault((scheduler, flood), Row([])).runs.append(phase)
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted; tearing down")
    except (DriverError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        progress(f"failed: {exc}")
        return 1
    finally:
        with signals_deferred():
            lab.teardown()
    if rows:
        report(rows, args, flood_pps, notes)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
