"""Probe streams on the emulated lab: sender and receiver processes inside the nodes.

Streams from one node with the same start and stop share one sender process (one paced
scheduler for all of them); each destination node and port gets one receiver. The raw
receive records and sender statistics stay in the run record (``traffic/<label>/``), so
metrics can always be recomputed from them.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.base import DeviceContext, StreamResult, StreamSpec, TrafficSource
from drivers.errors import DriverError
from drivers.traffic import probe

READY_TIMEOUT_S = 10.0
DRAIN_S = 0.2
"""How long receivers keep listening after the last packet was sent (in-flight packets)."""


@dataclass
class _Proc:
    role: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class _Session:
    label: str
    out_dir: Path
    streams: list[StreamSpec]
    start_at_ns: int
    senders: list[tuple[_Proc, Path, list[StreamSpec]]] = field(default_factory=list)
    receivers: list[tuple[_Proc, Path]] = field(default_factory=list)


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
        out_dir = self.context.run_dir / "traffic" / label
        out_dir.mkdir(parents=True, exist_ok=True)
        session = _Session(label, out_dir, list(streams), start_at_ns)
        self._session = session
        for node, port in sorted({(s.to_node, s.port) for s in streams}):
            records = out_dir / f"rx-{node}-{port}.bin"
            ready = out_dir / f".rx-{node}-{port}.ready"
            argv = probe.receiver_command("0.0.0.0", port, records, ready_file=ready)
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
            specs = [
                probe.StreamSpec(
                    s.id, s.wire_id, s.dst_address, s.port, s.rate_pps, s.payload_bytes, s.dscp
                )
                for s in group
            ]
            argv = probe.sender_command(
                specs, stop_s - start_s, stats, start_at_ns=start_at_ns + int(start_s * 1e9)
            )
            proc = self._spawn(node, argv, f"tx-{node}-{i}", out_dir)
            session.senders.append((proc, stats, group))
        self.context.emit(
            "traffic.started",
            {
                "streams": len(streams),
                "senders": len(session.senders),
                "receivers": len(session.receivers),
            },
        )

    def stop(self) -> list[StreamResult]:
        session = self._session
        if session is None:
            return []
        self._session = None
        end_ns = session.start_at_ns + int(max(s.stop_s for s in session.streams) * 1e9)
        for tx, _, _ in session.senders:
            left = (end_ns - time.time_ns()) / 1e9 + 5.0
            _finish(tx.proc, max(left, 0.0))  # a sender past its end (an abort) is stopped
        time.sleep(DRAIN_S)
        for rx, _ in session.receivers:
            _finish(rx.proc, 0.0)
        records = {}
        for node, port in sorted({(s.to_node, s.port) for s in session.streams}):
            records[(node, port)] = probe.read_records(session.out_dir / f"rx-{node}-{port}.bin")
        results = []
        for _, stats_path, group in session.senders:
            stats = None
            try:
                stats = probe.read_sender_stats(stats_path)
            except (OSError, ValueError, KeyError) as exc:
                note = f"sender statistics unreadable ({exc}); sent count from sequence numbers"
            for s in group:
                seq, tx_ns, rx_ns = probe.records_for(records[(s.to_node, s.port)], s.wire_id)
                notes: list[str] = []
                sent, errors, window = -1, 0, None
                if stats is not None and s.id in stats.streams:
                    st = stats.streams[s.id]
                    sent, errors = st.sent, st.send_errors
                    if st.first_tx_ns is not None and st.last_tx_ns is not None:
                        window = (st.first_tx_ns, st.last_tx_ns)
                    p99 = st.late_p99_us
                    if p99 is not None and p99 > 1000:
                        notes.append(f"sender was late: p99 {p99:.0f} us (CPU contention)")
                else:
                    notes.append(note if stats is None else "no sender statistics for stream")
                if errors:
                    notes.append(f"{errors} sends failed (e.g. link down)")
                results.append(StreamResult(s.id, sent, seq, tx_ns, rx_ns, errors, notes, window))
        return results

    def safe_state(self) -> None:
        """Stop every sender and receiver of ours."""
        session = self._session
        if session is None:
            return
        for proc, _, _ in session.senders:
            _finish(proc.proc, 0.0)
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
