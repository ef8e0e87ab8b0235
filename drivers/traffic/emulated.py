"""Traffic streams on the emulated lab: sender and receiver processes inside the nodes.

Streams from one node with the same start and stop share one sender process (one paced
scheduler for all of them). ``bulk`` streams ride in that process as background load that
only fills the gaps between paced packets: on the 2-core lab machine a second sender process
competes with the spinning one for the CPU and makes the paced streams late by milliseconds.
A sender with nothing but bulk streams sleeps instead of spinning, for the same reason.
Each destination node and port gets one receiver, told the SSRCs of the ``rtp_voice``
streams it receives. RTP packets carry no transmit time, so their senders keep a transmit
log and :meth:`EmulatedTraffic.stop` joins it with the receive records by sequence number.
The raw receive records, transmit logs and sender statistics stay in the run record
(``traffic/<label>/``), so metrics can always be recomputed from them.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivers.base import DeviceContext, StreamResult, StreamSpec, TrafficSource
from drivers.errors import DriverError
from drivers.traffic import probe, rtp

READY_TIMEOUT_S = 10.0
DRAIN_S = 0.2
"""How long receivers keep listening after the last packet was sent (in-flight packets)."""
LATE_START_MS = 50.0
"""A stream whose first packet left this much after its planned start gets a note."""


@dataclass
class _Proc:
    role: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class _Sender:
    proc: _Proc
    stats: Path
    tx_log: Path | None
    streams: list[StreamSpec]


@dataclass
class _Session:
    label: str
    out_dir: Path
    streams: list[StreamSpec]
    start_at_ns: int
    senders: list[_Sender] = field(default_factory=list)
    receivers: list[tuple[_Proc, Path]] = field(default_factory=list)


def _seed(spec: StreamSpec) -> int:
    return spec.seed if spec.seed is not None else rtp.default_seed(spec.id)


def _probe_spec(spec: StreamSpec) -> probe.StreamSpec:
    """Probe and bulk streams: bulk packets are probe packets, paced from the bit rate."""
    rate_pps = spec.rate_pps
    if spec.kind == "bulk" and spec.rate_kbps is not None:
        rate_pps = spec.rate_kbps * 1000.0 / (8 * spec.payload_bytes)
    return probe.StreamSpec(
        spec.id, spec.wire_id, spec.dst_address, spec.port, rate_pps, spec.payload_bytes, spec.dscp
    )


def _rtp_spec(spec: StreamSpec) -> rtp.RtpStreamSpec:
    return rtp.RtpStreamSpec(
        spec.id,
        spec.wire_id,
        spec.dst_address,
        spec.port,
        dscp=spec.dscp,
        payload_type=spec.payload_type,
        codec_mode=spec.codec_mode,
        talk_on_s=spec.talk_on_s,
        talk_off_s=spec.talk_off_s,
        seed=_seed(spec),
    )


class EmulatedTraffic(TrafficSource):
    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        self._session: _Session | None = None

    def _spawn(self, node: str, argv: list[str], role: str, out_dir: Path) -> _Proc:
        assert self.context.nodes is not None
        log = out_dir / f"{role}.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                self.context.nodes.node_command(node, argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # signals reach them from us, not from the terminal
            )
        self.context.processes.track(proc, f"traffic:{role}")
        return _Proc(role, proc, log)

    def start(self, streams: Sequence[StreamSpec], start_at_ns: int, label: str) -> None:
        if self.context.nodes is None:
            raise DriverError(self.name, "no network: the lab needs a network device")
        if self._session is not None:
            raise DriverError(self.name, "streams are already running")
        unknown = sorted({s.kind for s in streams} - {"probe", "rtp_voice", "bulk"})
        if unknown:
            raise DriverError(self.name, f"unknown stream kinds: {', '.join(unknown)}")
        bindings = self._rtp_bindings(streams)
        out_dir = self.context.run_dir / "traffic" / label
        out_dir.mkdir(parents=True, exist_ok=True)
        session = _Session(label, out_dir, list(streams), start_at_ns)
        self._session = session
        for node, port in sorted({(s.to_node, s.port) for s in streams}):
            records = out_dir / f"rx-{node}-{port}.bin"
            ready = out_dir / f".rx-{node}-{port}.ready"
            argv = probe.receiver_command(
                "0.0.0.0", port, records, ready_file=ready, rtp=bindings.get((node, port), [])
            )
            session.receivers.append((self._spawn(node, argv, f"rx-{node}-{port}", out_dir), ready))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for rx, ready in session.receivers:
            while not ready.exists():
                if rx.proc.poll() is not None or time.monotonic() > deadline:
                    raise DriverError(
                        self.name, f"receiver {rx.role} did not start: {_tail(rx.log)}"
                    )
                time.sleep(0.005)
            ready.unlink()
        groups: dict[tuple[str, float, float], list[StreamSpec]] = {}
        for s in streams:
            groups.setdefault((s.from_node, s.start_s, s.stop_s), []).append(s)
        for i, ((node, start_s, stop_s), group) in enumerate(sorted(groups.items())):
            stats = out_dir / f"tx-{node}-{i}.json"
            rtp_specs = [_rtp_spec(s) for s in group if s.kind == "rtp_voice"]
            tx_log = out_dir / f"tx-{node}-{i}.rtp.bin" if rtp_specs else None
            argv = probe.sender_command(
                [_probe_spec(s) for s in group if s.kind == "probe"],
                stop_s - start_s,
                stats,
                rtp_streams=rtp_specs,
                bulk_streams=[_probe_spec(s) for s in group if s.kind == "bulk"],
                tx_log=tx_log,
                start_at_ns=start_at_ns + int(start_s * 1e9),
                spin_us=0 if all(s.kind == "bulk" for s in group) else None,
            )
            proc = self._spawn(node, argv, f"tx-{node}-{i}", out_dir)
            session.senders.append(_Sender(proc, stats, tx_log, group))
        self.context.emit(
            "traffic.started",
            {
                "streams": len(streams),
                "senders": len(session.senders),
                "receivers": len(session.receivers),
            },
        )

    def _rtp_bindings(
        self, streams: Sequence[StreamSpec]
    ) -> dict[tuple[str, int], list[rtp.RtpBinding]]:
        """SSRC -> wire id per receiver; two streams to one port need different SSRCs."""
        out: dict[tuple[str, int], list[rtp.RtpBinding]] = {}
        owners: dict[tuple[str, int, int], str] = {}
        for s in streams:
            if s.kind != "rtp_voice":
                continue
            ident = rtp.rtp_identity(_seed(s))
            other = owners.setdefault((s.to_node, s.port, ident.ssrc), s.id)
            if other != s.id:
                raise DriverError(
                    self.name,
                    f"streams {other!r} and {s.id!r} go to the same port with the same SSRC "
                    f"{ident.ssrc:#010x} (same seed?): give them different seeds",
                )
            binding = rtp.RtpBinding(ident.ssrc, s.wire_id, ident.seq0)
            out.setdefault((s.to_node, s.port), []).append(binding)
        return out

    def stop(self) -> list[StreamResult]:
        session = self._session
        if session is None:
            return []
        self._session = None
        end_ns = session.start_at_ns + int(max(s.stop_s for s in session.streams) * 1e9)
        for tx in session.senders:
            left = (end_ns - time.time_ns()) / 1e9 + 5.0
            _finish(tx.proc.proc, max(left, 0.0))  # a sender past its end (an abort) is stopped
        time.sleep(DRAIN_S)
        for rx, _ in session.receivers:
            _finish(rx.proc, 0.0)
        records = {}
        for node, port in sorted({(s.to_node, s.port) for s in session.streams}):
            records[(node, port)] = probe.read_records(session.out_dir / f"rx-{node}-{port}.bin")
        results = []
        for sender in session.senders:
            stats = None
            try:
                stats = probe.read_sender_stats(sender.stats)
            except (OSError, ValueError, KeyError) as exc:
                note = f"sender statistics unreadable ({exc}); sent count from sequence numbers"
            tx_log = None
            log_note = "no RTP transmit log: no delay or loss figures"
            if sender.tx_log is not None:
                try:
                    tx_log = rtp.read_tx_log(sender.tx_log)
                except OSError as exc:
                    log_note = f"RTP transmit log unreadable ({exc}): no delay or loss figures"
            for s in sender.streams:
                seq, tx_ns, rx_ns = probe.records_for(records[(s.to_node, s.port)], s.wire_id)
                notes: list[str] = []
                if s.kind == "rtp_voice":
                    if tx_log is None:
                        notes.append(log_note)
                        seq, tx_ns, rx_ns = seq[:0], tx_ns[:0], rx_ns[:0]
                    else:
                        joined = rtp.join_tx_rx(
                            tx_log, s.wire_id, rtp.rtp_identity(_seed(s)).seq0, seq, rx_ns
                        )
                        seq, tx_ns, rx_ns = joined.seq, joined.tx_ns, joined.rx_ns
                        if joined.unmatched:
                            notes.append(
                                f"{joined.unmatched} RTP packets arrived without a transmit "
                                "record (sender log cut short?); left out"
                            )
                sent, errors, window = -1, 0, None
                if stats is not None and s.id in stats.streams:
                    st = stats.streams[s.id]
                    sent, errors = st.sent, st.send_errors
                    if st.first_tx_ns is not None and st.last_tx_ns is not None:
                        window = (st.first_tx_ns, st.last_tx_ns)
                        planned_ns = session.start_at_ns + int(s.start_s * 1e9)
                        late_ms = (st.first_tx_ns - planned_ns) / 1e6 - 1000.0 / s.rate_pps
                        if late_ms > LATE_START_MS:
                            notes.append(
                                f"sender started {late_ms:.0f} ms late (slow start-up); "
                                "the stream is shifted"
                            )
                    p99 = st.late_p99_us
                    if p99 is not None and p99 > 1000:
                        notes.append(f"sender was late: p99 {p99:.0f} us (CPU contention)")
                else:
                    notes.append(note if stats is None else "no sender statistics for stream")
                if errors:
                    notes.append(f"{errors} sends failed (e.g. link down)")
                results.append(
                    StreamResult(
                        s.id,
                        sent,
                        np.ascontiguousarray(seq, dtype=np.uint32),
                        tx_ns,
                        rx_ns,
                        errors,
                        notes,
                        window,
                    )
                )
        return results

    def safe_state(self) -> None:
        """Stop every sender and receiver of ours."""
        session = self._session
        if session is None:
            return
        for sender in session.senders:
            _finish(sender.proc.proc, 0.0)
        for rx, _ in session.receivers:
            _finish(rx.proc, 0.0)

    def close(self) -> None:
        self.safe_state()
        self._session = None


def _finish(proc: subprocess.Popen[bytes], wait_s: float) -> None:
    """Let the process end by itself for ``wait_s``, then SIGTERM, then SIGKILL."""
    try:
        proc.wait(timeout=wait_s)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, limit: int = 400) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip() or "(no output)"
    except OSError:
        return "(no log)"
