"""What the CLI shows while a run goes on, and the verdict table at its end.

On a terminal, one status line is redrawn in place; otherwise (CI logs, pipes) each
notable event is one plain line, so logs stay readable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

from testbed.runner import events as ev


class Progress:
    """Listener of run events. On a terminal a ticker redraws the line while measuring."""

    def __init__(self, out: TextIO, total_s: float, repetitions: int = 1) -> None:
        self.out = out
        self.total_s = total_s
        self.repetitions = repetitions
        self.tty = out.isatty()
        self._measure_t0: float | None = None
        self._rep = 1
        self._last = ""
        self._drawn = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if self.tty:
            threading.Thread(target=self._tick, name="progress", daemon=True).start()

    def __call__(self, event: ev.Event) -> None:
        line = self._describe(event)
        if line is None:
            return
        with self._lock:
            if self.tty:
                self._last = line
                self._draw()
            else:
                self.out.write(f"[{event.t_s:8.3f}s] {line}\n")
                self.out.flush()

    def _draw(self) -> None:
        clock = self._clock()
        self.out.write("\r\x1b[2K" + (f"{clock} " if clock else "") + self._last)
        self.out.flush()
        self._drawn = True

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                if self._measure_t0 is not None:
                    self._draw()

    def _describe(self, event: ev.Event) -> str | None:
        if isinstance(event, ev.RunStarted):
            return f"run {event.run_id}: {event.profile} on {event.lab}"
        if isinstance(event, ev.PhaseStarted):
            if event.phase == "measure":
                self._measure_t0 = time.monotonic()
                self._rep = event.repetition or 1
                return f"measuring (repetition {self._rep} of {self.repetitions})"
            self._measure_t0 = None
            return f"{event.phase}"
        if isinstance(event, ev.LeaseWaiting):
            return f"waiting for {event.device}, leased by run {event.holder_run} ({event.holder})"
        if isinstance(event, ev.DeviceOpened):
            return f"opened {event.device} ({event.kind}/{event.driver})"
        if isinstance(event, ev.ActionExecuted):
            status = "ok" if event.ok else f"FAILED: {event.error}"
            return f"{event.device}.{event.action} (at {event.planned_at_s:g} s) {status}"
        if isinstance(event, ev.DeviceEvent) and event.name.endswith(("built", "started")):
            return f"{event.device}: {event.name} {_fields(event.fields)}"
        if isinstance(event, ev.DeviceEvent) and event.name in SHOWN_DEVICE_EVENTS:
            shown = {k: v for k, v in event.fields.items() if k in SHOWN_FIELDS}
            return f"{event.device}: {event.name} {_fields(shown)}"
        if isinstance(event, ev.DeviceFault):
            return f"{event.device} FAILED: {event.message}"
        if isinstance(event, ev.TeardownStep) and not event.ok:
            return f"teardown {event.device}.{event.step} FAILED: {event.error}"
        if isinstance(event, ev.RunFinished):
            return f"finished: {event.verdict}"
        return None

    def _clock(self) -> str:
        if self._measure_t0 is None or not self.tty:
            return ""
        per_rep = self.total_s / self.repetitions
        done = (self._rep - 1) * per_rep + min(time.monotonic() - self._measure_t0, per_rep)
        return f"[{done:6.1f}/{self.total_s:g} s]"

    def close(self) -> None:
        self._stop.set()
        if self.tty and self._drawn:
            self.out.write("\n")
            self.out.flush()


SHOWN_DEVICE_EVENTS = frozenset(
    {
        "radio.registration",
        "radio.reboot",
        "radio.lost",
        "tetra.lost",
        "core.lost",
        "tetra.preempted",
        "attenuator.ramp",
    }
)
"""Driver events worth a line of progress: the state changes a lab engineer watches for."""
SHOWN_FIELDS = frozenset({"stat_name", "plmn", "from_db", "to_db", "duration_s", "by_tpi", "why"})


def _fields(fields: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


def print_verdict_table(out: TextIO, summary: Mapping[str, Any]) -> None:
    """KPIs with value, limit and verdict; then the streams; then errors."""
    out.write(f"\n{summary['profile']} on {summary['lab']}: {summary['verdict']}\n")
    kpis = summary.get("kpis", [])
    if kpis:
        width = max(len(k["name"]) for k in kpis)
        out.write(f"  {'KPI':<{width}}  {'VALUE':>12}  {'LIMIT':<14} {'SAMPLES':>8}  VERDICT\n")
        for k in kpis:
            value = "-" if k.get("value") is None else f"{k['value']:.3f} {k['unit']}"
            out.write(
                f"  {k['name']:<{width}}  {value:>12}  {k['limit']:<14} "
                f"{k.get('samples', 0):>8}  {k['verdict']}\n"
            )
    streams = summary.get("streams", [])
    if streams:
        out.write(
            f"  {'STREAM':<18} {'SENT':>7} {'RECV':>7} {'LOSS%':>7} {'P50 ms':>8} "
            f"{'P95 ms':>8} {'JITTER':>8} {'MAX GAP ms':>11}\n"
        )
        for s in streams:
            owd = s.get("owd_ms") or {}
            out.write(
                f"  {s['id']:<18} {s['sent']:>7} {s['received']:>7} {s['loss_pct']:>7.2f} "
                f"{_num(owd.get('p50')):>8} {_num(owd.get('p95')):>8} "
                f"{_num(s.get('jitter_ms')):>8} {_num(s.get('max_gap_ms')):>11}\n"
            )
    sweep = summary.get("sweep", [])
    if sweep:
        keys = [k for k in sweep[0] if k.startswith("impairments[")]
        names = [k.split(".", 1)[1] for k in keys]
        out.write(
            "  SWEEP "
            + " ".join(f"{n:>14}" for n in names)
            + f" {'STREAM':<18} {'LOSS%':>7} {'P50 ms':>9} {'P95 ms':>9} {'JITTER':>8}\n"
        )
        for row in sweep:
            values = " ".join(f"{row[k]:>14g}" for k in keys)
            out.write(
                f"  {row['point']:>5} {values} {row['stream']:<18} {row['loss_pct']:>7.2f} "
                f"{_num(row['owd_p50_ms']):>9} {_num(row['owd_p95_ms']):>9} "
                f"{_num(row['jitter_ms']):>8}\n"
            )
    for device, counters in sorted(summary.get("devices", {}).items()):
        for outage in counters.get("outages", []) if isinstance(counters, dict) else []:
            lost = _clock_time(outage.get("lost_wall"))
            back = _clock_time(outage.get("regained_wall"))
            took = outage.get("duration_s")
            length = "still out at the end" if took is None else f"{took:.3f} s"
            out.write(f"  RADIO {device}: not registered {length} (lost {lost}, back {back})\n")
    for error in summary.get("errors", []):
        out.write(f"  error: {error}\n")


def _clock_time(wall: Any) -> str:
    if not isinstance(wall, int | float):
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"
