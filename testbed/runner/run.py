"""Running a plan: devices, network, traffic, timeline, and a teardown that always happens.

Every exit path (normal end, failed limit, exception, SIGINT, SIGTERM, timeout) goes
through the same ``finally``: devices to their safe state, devices closed, namespaces of
this run removed, leases released, the run record completed. Signals raise once into the
main thread; while tearing down, further signals are noted and ignored so that the
teardown itself is never cut short.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import testbed
from drivers.base import (
    Capture,
    CaptureResult,
    CaptureSpec,
    Device,
    DeviceContext,
    Impairment,
    Network,
    StreamResult,
    StreamSpec,
    TrafficSource,
)
from drivers.netns import destroy
from testbed.analysis import failover
from testbed.analysis.kpis import evaluate
from testbed.analysis.passive import analyze_captures
from testbed.analysis.streams import stream_metrics
from testbed.errors import AnalysisError, RunError, TestbedError
from testbed.plan import Plan, PlannedPoint
from testbed.registry import driver_class
from testbed.results.index import Index, holder_name, this_host
from testbed.results.record import SUMMARY, RunRecord, new_run_id
from testbed.results.report import write_report
from testbed.results.series import write_series
from testbed.results.summary import junit_xml, overall_verdict, sweep_table
from testbed.runner import events as ev
from testbed.runner.state import RunState, StateFile
from testbed.settings import Settings

Listener = Callable[[ev.Event], None]
AMRWB_CLOCK_HZ = 16_000
MCPTT_PAYLOAD_TYPE = 96
"""The dynamic payload type the emulated MCPTT clients send AMR-WB with (docs/mcptt.md)."""
START_DELAY_S = 0.3
"""Time between arming the streams and their first packet, so every sender is ready."""


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM arrived: abort the run (a BaseException so no handler eats it)."""


class RunTimeout(BaseException):
    """The run exceeded its time limit."""


@dataclass
class RunOutcome:
    run_id: str
    verdict: str
    run_dir: Path
    summary: dict[str, Any]


@dataclass
class _Opened:
    name: str
    kind: str
    device: Device


@dataclass
class _RunData:
    streams: list[dict[str, Any]] = field(default_factory=list)
    captures: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    aborted: bool = False
    mcptt: dict[str, Any] | None = None
    rep_ends: dict[tuple[int, int], float] = field(default_factory=dict)
    """(point, repetition) -> wall-clock end of its measurement (the last fault window's end)."""
    stream_failover: dict[tuple[int, int, int], dict[str, Any]] = field(default_factory=dict)
    """(point, repetition, timeline index of a fault) -> {stream id: its failover result}."""


class Runner:
    def __init__(
        self,
        plan: Plan,
        settings: Settings,
        *,
        profile_path: Path,
        lab_path: Path,
        wait_s: float = 0.0,
        timeout_s: float | None = None,
        listeners: Sequence[Listener] = (),
        run_id: str | None = None,
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.profile_path = profile_path
        self.lab_path = lab_path
        self.wait_s = wait_s
        per_rep = plan.duration_s + START_DELAY_S + 2.0
        self.timeout_s = timeout_s or (per_rep * plan.repetitions + 120.0)
        self.listeners = list(listeners)
        self.run_id = run_id or new_run_id(plan.profile)
        self.prefix = "tb" + _name_suffix(self.run_id)
        self._t0 = time.monotonic()
        self._record: RunRecord | None = None
        self._opened: list[_Opened] = []
        self._signals_seen: list[str] = []
        self._tearing_down = False
        self._heartbeat_stop = threading.Event()
        self._traffic_running: TrafficSource | None = None
        self._faults: list[str] = []
        self._registrations: list[tuple[str, str, dict[str, Any]]] = []

    # events --------------------------------------------------------------------------

    def _now(self) -> tuple[float, float]:
        return round(time.monotonic() - self._t0, 6), time.time()

    def _emit(self, event_type: type[ev.Event], /, **fields: Any) -> None:
        t_s, wall = self._now()
        event = event_type(t_s=t_s, wall=wall, **fields)
        if self._record is not None:
            self._record.append_event(event.to_dict())
        for listener in self.listeners:
            with contextlib.suppress(Exception):  # a display problem never stops a run
                listener(event)

    def _device_emitter(self, device: str) -> Callable[[str, Mapping[str, Any]], None]:
        def emit(name: str, fields: Mapping[str, Any]) -> None:
            if name in ("radio.registration", "radio.operator"):  # for the failover block
                self._registrations.append((device, name, dict(fields)))
            self._emit(ev.DeviceEvent, device=device, name=name, fields=dict(fields))

        return emit

    def _fault_reporter(self, device: str) -> Callable[[str], None]:
        """A device failed on its own (from any thread): the measurement stops at its next
        check and the run ends ERROR. During teardown devices are being stopped on purpose, so
        a fault then is only recorded as an event."""

        def fault(message: str) -> None:
            during_teardown = self._tearing_down
            self._emit(
                ev.DeviceFault, device=device, message=message, during_teardown=during_teardown
            )
            if not during_teardown:
                self._faults.append(f"{device}: {message}")

        return fault

    def _check_faults(self) -> None:
        if self._faults:
            raise RunError("device failed during the run: " + "; ".join(self._faults))

    # signals and time limit ------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self._signals_seen.append(name)
        if not self._tearing_down and len(self._signals_seen) == 1:
            raise RunInterrupted(name)

    def _on_alarm(self, _signum: int, _frame: FrameType | None) -> None:
        if not self._tearing_down:
            raise RunTimeout(f"the run exceeded its time limit of {self.timeout_s:g} s")

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        in_main = threading.current_thread() is threading.main_thread()
        if not in_main:
            yield
            return
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for s, handler in previous.items():
                signal.signal(s, handler)

    # the run -------------------------------------------------------------------------

    def run(self) -> RunOutcome:
        settings = self.settings
        record = RunRecord.create(settings.results_dir, self.run_id)
        self._record = record
        started_at = time.time()
        record.write(
            "manifest.json",
            {
                "run_id": self.run_id,
                "profile": self.plan.profile,
                "lab": self.plan.lab,
                "status": "running",
                "verdict": None,
                "started_at": started_at,
                "ended_at": None,
                "host": this_host(),
                "controller_pid": os.getpid(),
                "versions": {"testbed": testbed.__version__, "python": platform.python_version()},
                "name_prefix": self.prefix,
            },
        )
        record.copy_in(self.profile_path, "profile.yaml")
        record.copy_in(self.lab_path, "lab.yaml")
        record.write("plan.json", self.plan.model_dump(mode="json"))
        state = StateFile(
            settings.state_dir, RunState(self.run_id, self.prefix, str(record.path.resolve()))
        )
        index = Index(settings.database_url)
        index.put_run(
            run_id=self.run_id,
            profile=self.plan.profile,
            lab=self.plan.lab,
            verdict="RUNNING",
            status="running",
            started_at=started_at,
            ended_at=None,
            path=str(record.path.resolve()),
        )
        data = _RunData()
        self._emit(
            ev.RunStarted,
            run_id=self.run_id,
            profile=self.plan.profile,
            lab=self.plan.lab,
            run_dir=str(record.path),
        )
        current = (0, 0)
        with self._guarded():
            try:
                try:
                    self._emit(ev.PhaseStarted, phase="setup")
                    self._lease(index)
                    self._open_devices(state)
                    capture = self._start_captures(record)
                    for point in self.plan.points:
                        for rep in range(1, self.plan.repetitions + 1):
                            current = (point.index, rep)
                            self._measure(point, rep, data)
                    if capture is not None:
                        captured = capture.stop()
                        data.captures += _capture_entries(
                            captured, record.path, self._clock_rates()
                        )
                        if self._wants_mcptt():
                            data.mcptt = _mcptt_block(captured, data.errors)
                except RunInterrupted as exc:
                    data.aborted = True
                    data.errors.append(f"aborted by {exc}")
                except RunTimeout as exc:
                    data.errors.append(str(exc))
                except TestbedError as exc:
                    data.errors.append(str(exc))
                except Exception as exc:
                    data.errors.append(f"internal error: {exc!r} (traceback in crash.log)")
                    record.write_text("crash.log", traceback.format_exc())
                finally:
                    self._tearing_down = True
                    self._emit(ev.PhaseStarted, phase="teardown")
                    running = self._traffic_running
                    if running is not None:  # keep what arrived before the stop
                        try:
                            running.safe_state()  # stop sending now, not at the end
                            results = running.stop()
                            data.rep_ends.setdefault(current, time.time())
                            data.streams += self._metrics(results, *current, partial=True)
                            self._stream_failover(results, *current, data)
                        except Exception as exc:
                            data.errors.append(f"collecting partial traffic results: {exc}")
                    self._teardown(data, record)
            finally:
                self._tearing_down = True
                self._heartbeat_stop.set()
                with contextlib.suppress(Exception):
                    index.release(self.run_id)
                summary = self._finish(record, index, data, started_at)
                state.remove()
                index.close()
        return RunOutcome(self.run_id, summary["verdict"], record.path, summary)

    def _clock_rates(self) -> dict[int, int]:
        """RTP clock rates of the dynamic payload types on this run's wire, which a capture of
        media alone does not tell: AMR-WB (16 kHz) for rtp_voice streams and MCPTT voice."""
        rates = {s.payload_type: AMRWB_CLOCK_HZ for s in self.plan.streams if s.kind == "rtp_voice"}
        if any(d.kind == "mcptt" for d in self.plan.devices):
            rates.setdefault(MCPTT_PAYLOAD_TYPE, AMRWB_CLOCK_HZ)
        return rates

    def _wants_mcptt(self) -> bool:
        return any(k.mcptt for k in self.plan.kpis) or any(
            d.kind == "mcptt" for d in self.plan.devices
        )

    def _lease(self, index: Index) -> None:
        keys = [d.lease_key for d in self.plan.devices if d.lease_key]
        if not keys:
            return

        def waiting(lease: Any) -> None:
            self._emit(
                ev.LeaseWaiting, device=lease.device, holder_run=lease.run_id, holder=lease.holder
            )

        index.acquire(
            keys,
            self.run_id,
            holder_name(os.getpid()),
            self.settings.lease_ttl_s,
            wait_s=self.wait_s,
            on_wait=waiting,
        )
        ttl = self.settings.lease_ttl_s

        def heartbeat() -> None:
            while not self._heartbeat_stop.wait(ttl / 3):
                with contextlib.suppress(Exception):
                    index.renew(self.run_id, ttl)

        threading.Thread(target=heartbeat, name="lease-heartbeat", daemon=True).start()

    def _open_devices(self, state: StateFile) -> Network | None:
        """Open the network first (others run on its nodes), then every other device."""
        assert self._record is not None
        ordered = sorted(self.plan.devices, key=lambda d: d.kind != "network")
        network: Network | None = None
        for planned in ordered:
            cls = driver_class(planned.kind, planned.driver)
            context = DeviceContext(
                run_dir=self._record.path,
                name_prefix=self.prefix,
                emit=self._device_emitter(planned.name),
                processes=state,
                nodes=network,
                fault=self._fault_reporter(planned.name),
            )
            device = cls(planned.name, planned.settings, context)
            self._opened.append(_Opened(planned.name, planned.kind, device))
            device.open()
            if isinstance(device, Network):
                device.build(self.plan.topology())
                network = device
            if isinstance(device, Impairment):
                device.attach([s.link for s in self.plan.segments if s.impaired_by == planned.name])
            self._emit(
                ev.DeviceOpened, device=planned.name, kind=planned.kind, driver=planned.driver
            )
        return network

    def _start_captures(self, record: RunRecord) -> Capture | None:
        if not self.plan.captures:
            return None
        by_device: dict[str, list[CaptureSpec]] = {}
        for c in self.plan.captures:
            by_device.setdefault(c.device, []).append(CaptureSpec(c.name, c.node, c.ifname))
        if len(by_device) > 1:
            raise RunError("captures on more than one capture device are not supported yet")
        ((device_name, specs),) = by_device.items()
        device = self._device(device_name)
        if not isinstance(device, Capture):
            raise RunError(f"device {device_name!r} is not a capture device")
        device.start(specs, record.path / "captures")
        return device

    def _measure(self, point: PlannedPoint, rep: int, data: _RunData) -> None:
        """One repetition at one sweep point: conditions, streams, timeline, results."""
        self._emit(
            ev.PhaseStarted, phase="measure", repetition=rep, point=point.index,
            settings=point.settings,
        )  # fmt: skip
        self._apply_impairments(point)
        traffic = self._traffic()
        t_rep = time.monotonic()
        label = f"rep{rep}" if len(self.plan.points) == 1 else f"point{point.index}-rep{rep}"
        if traffic is not None and self.plan.streams:
            start_ns = time.time_ns() + int(START_DELAY_S * 1e9)
            self._traffic_running = traffic
            traffic.start(self._stream_specs(), start_ns, label)
            t_rep += START_DELAY_S
        self._run_timeline(rep, t_rep, data, point.index)
        self._sleep_until(t_rep + self.plan.duration_s)
        self._check_faults()
        data.rep_ends[(point.index, rep)] = time.time()
        if self._traffic_running is not None:
            results = self._traffic_running.stop()
            self._traffic_running = None
            data.streams += self._metrics(results, point.index, rep)
            self._stream_failover(results, point.index, rep, data)

    def _apply_impairments(self, point: PlannedPoint) -> None:
        """Every repetition starts from the profile's conditions, whatever the timeline did."""
        for opened in self._opened:
            if isinstance(opened.device, Impairment):
                opened.device.clear()
        for imp in point.impairments:
            device = self._device(imp["device"])
            if not isinstance(device, Impairment):
                raise RunError(f"device {imp['device']!r} is not an impairment device")
            device.apply(imp["link"], imp["direction"], imp["params"])
            self._emit(
                ev.DeviceEvent,
                device=imp["device"],
                name="impairment.applied",
                fields={"link": imp["link"], "direction": imp["direction"], **imp["params"]},
            )

    def _traffic(self) -> TrafficSource | None:
        for opened in self._opened:
            if isinstance(opened.device, TrafficSource):
                return opened.device
        return None

    def _device(self, name: str) -> Device:
        for opened in self._opened:
            if opened.name == name:
                return opened.device
        raise RunError(f"device {name!r} is not open")

    def _stream_specs(self) -> list[StreamSpec]:
        return [StreamSpec(**s.model_dump()) for s in self.plan.streams]

    def _sleep_until(self, deadline: float) -> None:
        while True:
            self._check_faults()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def _run_timeline(self, rep: int, t_rep: float, data: _RunData, point: int = 0) -> None:
        for index, event in enumerate(self.plan.timeline):
            self._sleep_until(t_rep + event.at_s)
            device = self._device(event.device)
            started = time.monotonic()
            outcome: dict[str, Any] = {"started_wall": time.time()}

            def act(dev: Device = device, e: Any = event, out: dict[str, Any] = outcome) -> None:
                try:
                    out["started_wall"] = time.time()
                    out["details"] = dict(dev.perform(e.action, e.args))
                except Exception as exc:
                    out["error"] = str(exc)

            worker = threading.Thread(target=act, name=f"action-{event.action}", daemon=True)
            worker.start()
            worker.join(event.timeout_s)
            if worker.is_alive():
                outcome["error"] = f"deadline of {event.timeout_s:g} s exceeded"
            took_ms = (time.monotonic() - started) * 1000
            error = outcome.get("error")
            at_s = round(started - t_rep, 6)
            details = outcome.get("details", {})
            reported = details.get("wall")
            wall = (
                float(reported)
                if isinstance(reported, int | float) and not isinstance(reported, bool)
                else float(outcome["started_wall"])
            )
            self._emit(
                ev.ActionExecuted,
                device=event.device,
                action=event.action,
                planned_at_s=event.at_s,
                repetition=rep,
                ok=error is None,
                duration_ms=round(took_ms, 3),
                error=error,
                details=details,
                started_wall=wall,
                fault=event.fault,
            )
            action = {
                "t_s": at_s,
                "planned_at_s": event.at_s,
                "repetition": rep,
                "index": index,
                "device": event.device,
                "action": event.action,
                "args": event.args,
                "ok": error is None,
                "error": error,
                "duration_ms": round(took_ms, 3),
                "wall": round(wall, 6),
                "fault": event.fault,
            }
            if len(self.plan.points) > 1:
                action["point"] = point
            data.actions.append(action)
            if error is not None:
                raise RunError(
                    f"{event.device}: {event.action} at {event.at_s:g} s failed: {error}"
                )

    def _metrics(
        self, results: Sequence[StreamResult], point: int, rep: int, partial: bool = False
    ) -> list[dict[str, Any]]:
        kinds = {s.id: s.kind for s in self.plan.streams}
        entries = []
        for res in results:
            metrics = stream_metrics(
                res.id,
                kinds.get(res.id, "probe"),
                res.seq,
                res.tx_ns,
                res.rx_ns,
                res.sent,
                res.sent_window_ns,
            )
            entry = metrics.to_dict()
            entry["repetition"] = rep
            if len(self.plan.points) > 1:
                entry["point"] = point
            entry["send_errors"] = res.send_errors
            entry["source"] = "receiver kernel timestamps (SO_TIMESTAMPNS)"
            notes = list(res.notes)
            if partial:
                notes.append("partial: the run stopped before this stream's end")
            entry["notes"] = notes
            entries.append(entry)
            self._keep_series(res, point, rep)
        return entries

    def _keep_series(self, res: StreamResult, point: int, rep: int) -> None:
        """The stream's packets for the dashboard's plots; losing them loses no figure."""
        if self._record is None:
            return
        sweep_point = point if len(self.plan.points) > 1 else None
        try:
            write_series(self._record.path, res.id, rep, sweep_point, res.seq, res.tx_ns, res.rx_ns)
        except (OSError, ValueError) as exc:
            self._emit(
                ev.DeviceEvent,
                device="traffic",
                name="series.not_kept",
                fields={"stream": res.id, "repetition": rep, "error": str(exc)},
            )

    def _stream_failover(
        self, results: Sequence[StreamResult], point: int, rep: int, data: _RunData
    ) -> None:
        """Per-stream failover of this repetition's faults, while the packets are at hand (the
        run record keeps the per-stream metrics, not every packet)."""
        mine = [a for a in data.actions if a["repetition"] == rep and a.get("point", 0) == point]
        faults = failover.fault_windows(mine, data.rep_ends)
        if not faults:
            return
        rates = {s.id: s.rate_pps for s in self.plan.streams}
        for f in faults:
            per_stream = data.stream_failover.setdefault((point, rep, f["index"]), {})
            for res in results:
                try:
                    per_stream[res.id] = failover.stream_failover(
                        res.seq,
                        res.tx_ns,
                        res.rx_ns,
                        fault_wall=f["wall"],
                        window_end_wall=f["window_end_wall"],
                        interval_ms=1000.0 / rates.get(res.id, 50.0),
                        sent=res.sent,
                        sent_window_ns=res.sent_window_ns,
                    )
                except AnalysisError as exc:
                    data.errors.append(f"failover analysis of stream {res.id}: {exc}")

    def _failover_block(self, data: _RunData) -> dict[str, Any] | None:
        """Streams (measured per repetition) and radios (from their registration reports)
        at every fault; ``None`` when the timeline marks no fault."""
        faults = failover.fault_windows(data.actions, data.rep_ends)
        if not faults:
            return None
        regs: dict[str, list[dict[str, Any]]] = {}
        ops: dict[str, list[dict[str, Any]]] = {}
        for device, name, fields in self._registrations:
            (regs if name == "radio.registration" else ops).setdefault(device, []).append(fields)
        radios: dict[tuple[int, int, int], dict[str, Any]] = {}
        for f in faults:
            horizon = data.rep_ends.get((f["point"], f["repetition"]), float("inf"))
            radios[(f["point"], f["repetition"], f["index"])] = {
                device: failover.radio_failover(
                    reports,
                    ops.get(device, []),
                    fault_wall=f["wall"],
                    window_end_wall=f["window_end_wall"],
                    horizon_wall=horizon,
                )
                for device, reports in sorted(regs.items())
            }
        return failover.summarise(faults, data.stream_failover, radios, len(self.plan.points))

    def _teardown(self, data: _RunData, record: RunRecord) -> None:
        for opened in reversed(self._opened):
            for step in ("safe_state", "counters", "close"):
                try:
                    if step == "safe_state":
                        opened.device.safe_state()
                    elif step == "counters":
                        counters = dict(opened.device.counters())
                        if counters:
                            data.counters[opened.name] = counters
                    else:
                        opened.device.close()
                    ok, error = True, None
                except Exception as exc:  # the contract says never raise; we still cope
                    ok, error = False, str(exc)
                    data.errors.append(f"{opened.name}: {step} failed: {exc}")
                self._emit(ev.TeardownStep, device=opened.name, step=step, ok=ok, error=error)
        try:
            leftovers = destroy(self.prefix + "-")
        except Exception as exc:
            data.errors.append(f"removing namespaces of {self.prefix}: {exc}")
        else:
            if leftovers:
                self._emit(
                    ev.TeardownStep,
                    device="net",
                    step="remove-leftovers",
                    ok=True,
                    error=f"removed {len(leftovers)} namespaces the drivers had left",
                )

    def _finish(
        self, record: RunRecord, index: Index, data: _RunData, started_at: float
    ) -> dict[str, Any]:
        try:
            failover_block = self._failover_block(data)
        except Exception as exc:  # a crash here must not lose the rest of the record
            data.errors.append(f"failover analysis failed: {exc!r}")
            failover_block = None
        kpis = evaluate(
            self.plan.kpis,
            [s for s in data.streams if s.get("repetition")],
            data.mcptt,
            data.counters,
            failover_block,
        )
        verdict = overall_verdict(data.aborted, data.errors, kpis)
        ended_at = time.time()
        summary = {
            "run_id": self.run_id,
            "profile": self.plan.profile,
            "lab": self.plan.lab,
            "verdict": verdict,
            "started_at": _iso(started_at),
            "ended_at": _iso(ended_at),
            "duration_s": round(ended_at - started_at, 3),
            "kpis": kpis,
            "streams": data.streams,
            "events": data.actions,
            "captures": data.captures,
            "devices": data.counters,
            "errors": data.errors,
            "signals": self._signals_seen,
        }
        if data.mcptt is not None:
            summary["mcptt"] = data.mcptt
        if failover_block is not None:
            summary["failover"] = failover_block
        if len(self.plan.points) > 1:
            summary["sweep"] = sweep_table(self.plan.points, data.streams)
        self._emit(ev.RunFinished, verdict=verdict, errors=list(data.errors))
        record.write(SUMMARY, summary)
        record.write_text("junit.xml", junit_xml(summary))
        record.update_manifest(status="complete", verdict=verdict, ended_at=ended_at)
        row = {
            "run_id": self.run_id,
            "profile": self.plan.profile,
            "lab": self.plan.lab,
            "verdict": verdict,
            "status": "complete",
            "started_at": started_at,
            "ended_at": ended_at,
            "path": str(record.path.resolve()),
        }
        with contextlib.suppress(Exception):
            index.put_run(**row)
            index.put_kpis(row, kpis)
        try:
            write_report(record.path)
        except Exception as exc:  # the record is whole without it; `testbed report` redoes it
            record.update_manifest(report_error=repr(exc))
        return summary


def _capture_entries(
    results: Sequence[CaptureResult], run_dir: Path, clock_rates: Mapping[int, int]
) -> list[dict[str, Any]]:
    """Each capture point with what was recorded and, analysed from the file alone, the
    probe and RTP streams seen there (an independent view of the receivers' numbers)."""
    entries = []
    for r in results:
        entry: dict[str, Any] = {
            "name": r.name,
            "file": str(r.path.relative_to(run_dir)),
            "packets": r.packets,
            "dropped": r.dropped,
            "notes": list(r.notes),
        }
        try:
            report = analyze_captures([r.path], clock_rates=clock_rates)
        except AnalysisError as exc:
            entry["notes"].append(f"not analysed: {exc}")
        else:
            entry["probe_streams"] = report["probe_streams"]
            entry["rtp_streams"] = report["rtp_streams"]
            if r.dropped:
                entry["notes"].append("the streams seen here miss the packets dumpcap dropped")
        entries.append(entry)
    return entries


def _mcptt_block(results: Sequence[CaptureResult], errors: list[str]) -> dict[str, Any] | None:
    """Floor control, call set-up, media and the MCPTT KPIs, from the captures alone."""
    from testbed.analysis.mcptt import analyze_mcptt

    try:
        return analyze_mcptt([r.path for r in results], [r.name for r in results])
    except AnalysisError as exc:
        errors.append(f"MCPTT analysis of the captures failed: {exc}")
        return None


def _name_suffix(run_id: str) -> str:
    """Six hex digits for the run's namespace and interface names (``tb<hex>-``, which
    ``testbed cleanup --orphans`` recognises): a generated id's own random part, else (an id
    given with --run-id) a digest of it."""
    suffix = run_id[-6:]
    if re.fullmatch(r"[0-9a-f]{6}", suffix):
        return suffix
    return hashlib.sha256(run_id.encode()).hexdigest()[:6]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
