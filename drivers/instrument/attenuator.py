"""A programmable RF attenuator over SCPI: set a channel, or ramp it on a fixed schedule.

The lab file says how its box is spoken to (``settings.commands``, laid over
:data:`DEFAULT_COMMANDS`, which speak the ``attenuator`` model of
:mod:`drivers.scpi.emulator`) and which channels a profile may touch. Every setting is
checked against the instrument's error queue and read back: a step attenuator keeps the
nearest step, so an ``attenuator.set`` event carries both the requested and the actual
value (``tolerance_db`` turns a larger difference into an error). A ramp goes from the
current value to ``to_db`` in equal steps of at most ``step_db``, each sent at its own
time on a schedule fixed at the start (a late step does not delay the next, and steps
already overdue are skipped), and the safe state interrupts it. ``initial.atten_db``
(set when the device opens) and ``safe.atten_db`` (the safe state) are one value or
``{channel: dB}``, and nothing by default: whether a run should end at full attenuation
(no RF reaches the receivers, every radio loses service) or at the link's nominal level
(radios stay attached for the next run) is the lab's decision, not the driver's.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from drivers.base import Attenuator, DeviceContext
from drivers.errors import DriverError
from drivers.instrument import common
from drivers.instrument.common import Command, Connection
from drivers.scpi.client import ScpiIOError

DEFAULT_COMMANDS: dict[str, Any] = {
    "set": "CHAN{ch}:ATT {value}",
    "get": "CHAN{ch}:ATT?",
}
"""The command map of :data:`drivers.scpi.emulator.ATTENUATOR`; ``{ch}`` is the channel,
``{value}`` the attenuation in dB. An optional ``init`` entry is sent once after opening."""

COMMAND_FIELDS: dict[str, frozenset[str]] = {
    "set": frozenset({"ch", "value"}),
    "get": frozenset({"ch"}),
    common.INIT: frozenset(),
}
DEFAULT_CHANNELS = (1, 2, 3, 4)
SETTINGS = common.BASE_SETTINGS | {"channels", "initial", "safe", "tolerance_db",
                                   "ramp_step_events_max"}  # fmt: skip
STATE_SETTINGS = frozenset({"atten_db"})
RAMP_STEP_EVENTS_MAX = 100
"""Up to this many steps, a ramp emits an ``attenuator.set`` event per step; beyond, only
its ``attenuator.ramp`` summary (first and last step, count)."""
EMULATOR_MODEL = "attenuator"


class ScpiAttenuator(Attenuator):
    """A multi-channel step attenuator: actions ``set`` (channel, atten_db) and ``ramp``
    (channel, to_db, duration_s, optional step_db, default 1 dB)."""

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        self.conn = Connection(name, self.settings, context, EMULATOR_MODEL)
        self.commands: dict[str, Command] = {}
        self.channels: tuple[int, ...] = DEFAULT_CHANNELS
        self.initial_atten_db: dict[int, float] = {}
        self.safe_atten_db: dict[int, float] = {}
        self.tolerance_db: float | None = None
        self.ramp_step_events_max = RAMP_STEP_EVENTS_MAX
        self.known_db: dict[int, float] = {}
        """The last value read back per channel (the counters' final values)."""
        self._op_lock = threading.RLock()  # one step or setting at a time, safe state included
        self._ramp_lock = threading.Lock()
        self._ramp_cancel: threading.Event | None = None

    # ---------------------------------------------------------------- life cycle

    def open(self) -> None:
        """Check the settings (all of them before anything is touched), then connect."""
        s = self.settings
        common.check_known(self.name, "settings", s, SETTINGS)
        self.commands = common.parse_commands(
            self.name, s.get("commands"), DEFAULT_COMMANDS, fields=COMMAND_FIELDS,
            required=("set", "get"),
        )  # fmt: skip
        self.channels = common.channel_list(self.name, s.get("channels"), DEFAULT_CHANNELS)
        self.initial_atten_db = self._state("initial", s.get("initial"))
        self.safe_atten_db = self._state("safe", s.get("safe"))
        if s.get("tolerance_db") is not None:
            self.tolerance_db = common.number(self.name, "settings.tolerance_db",
                                              s["tolerance_db"], minimum=0)  # fmt: skip
        events_max = s.get("ramp_step_events_max", RAMP_STEP_EVENTS_MAX)
        if isinstance(events_max, bool) or not isinstance(events_max, int) or events_max < 0:
            raise DriverError(self.name, "settings.ramp_step_events_max must be a count")
        self.ramp_step_events_max = events_max
        self.conn.open()
        self.conn.init(self.commands)
        for ch, atten_db in self.initial_atten_db.items():
            self._set(ch, atten_db, {"initial": True})

    def _state(self, key: str, raw: Any) -> dict[int, float]:
        """``initial`` or ``safe``: the dB of some channels."""
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise DriverError(self.name, f"settings.{key} must be a mapping such as "
                              "{atten_db: 60}")  # fmt: skip
        common.check_known(self.name, f"settings.{key}", raw, STATE_SETTINGS)
        return common.per_channel(
            self.name, f"settings.{key}.atten_db", raw.get("atten_db"), self.channels,
            lambda where, v: common.number(self.name, where, v, minimum=0),
        )  # fmt: skip

    def close(self) -> None:
        self._cancel_ramp()
        self.conn.close()

    # ---------------------------------------------------------------- settings

    def set_attenuation(self, channel: int, atten_db: float) -> None:
        self._set(channel, atten_db)

    def attenuation(self, channel: int) -> float:
        """What the box holds for the channel, in dB (asked, not remembered)."""
        with self._op_lock:
            value = self.commands["get"].number(
                self.name, self.conn.query(self.commands["get"].render(self.name, ch=channel)[0])
            )
            self.known_db[channel] = value
            return value

    def _set(
        self,
        channel: int,
        atten_db: float,
        extra: Mapping[str, Any] | None = None,
        *,
        emit: bool = True,
    ) -> tuple[float, float]:
        """Send, check, read back, emit ``attenuator.set``; (actual dB, wall when sent)."""
        with self._op_lock:
            lines = self.commands["set"].render(self.name, ch=channel, value=atten_db)
            self.known_db.pop(channel, None)  # unknown until read back
            wall = time.time()
            for line in lines:
                self.conn.write(line)
            actual = self.attenuation(channel)
        if emit:
            fields = {"channel": channel, "atten_db": atten_db, "actual_db": actual, "wall": wall}
            self.context.emit("attenuator.set", {**fields, **(extra or {})})
        if self.tolerance_db is not None and abs(actual - atten_db) > self.tolerance_db + 1e-9:
            raise DriverError(
                self.name,
                f"channel {channel} reads back {actual:g} dB after setting {atten_db:g} dB "
                f"(settings.tolerance_db {self.tolerance_db:g})",
                self.conn.live().last_exchanges(),
            )
        return actual, wall

    # ---------------------------------------------------------------- actions

    def perform(self, action: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        if action == "set":
            common.check_args(self.name, action, args, ("atten_db",), ("channel",))
            channel = common.channel_arg(self.name, action, args.get("channel"), self.channels)
            atten_db = common.number(self.name, "set: atten_db", args["atten_db"])
            actual, _ = self._set(channel, atten_db)
            return {"channel": channel, "atten_db": atten_db, "actual_db": actual}
        if action == "ramp":
            common.check_args(self.name, action, args, ("to_db", "duration_s"),
                              ("channel", "step_db"))  # fmt: skip
            channel = common.channel_arg(self.name, action, args.get("channel"), self.channels)
            return self.ramp(
                channel,
                common.number(self.name, "ramp: to_db", args["to_db"]),
                common.number(self.name, "ramp: duration_s", args["duration_s"], minimum=0),
                common.number(self.name, "ramp: step_db", args.get("step_db", 1.0), positive=True),
            )
        return super().perform(action, args)

    def ramp(
        self, channel: int, to_db: float, duration_s: float, step_db: float = 1.0
    ) -> dict[str, Any]:
        """From the current value to ``to_db`` in ``n`` equal steps of at most ``step_db``:
        step ``i`` (1..n) is sent at ``start + duration_s * i / n``, when a linear ramp would
        pass its level, so the last one lands at ``duration_s``. Steps already overdue when
        the previous one is done are skipped (the ramp keeps time rather than every level).
        Raises :class:`DriverError` if the box fails or the safe state interrupts it; a new
        ramp interrupts one still running (left behind by an action that timed out)."""
        cancel = threading.Event()
        with self._ramp_lock:
            previous, self._ramp_cancel = self._ramp_cancel, cancel
        if previous is not None:
            previous.set()
        try:
            from_db = self.attenuation(channel)
        except BaseException:
            self._ramp_done(cancel)
            raise
        start, start_wall = time.monotonic(), time.time()
        span = to_db - from_db
        steps = max(1, math.ceil(abs(span) / step_db - 1e-9))
        events = steps <= self.ramp_step_events_max
        done: list[dict[str, Any]] = []
        skipped, late_max_ms, i = 0, 0.0, 1
        summary: dict[str, Any] = {
            "channel": channel, "from_db": from_db, "to_db": to_db, "step_db": step_db,
            "planned_steps": steps, "planned_duration_s": duration_s, "start_wall": start_wall,
        }  # fmt: skip
        try:
            while i <= steps:
                due = start + duration_s * i / steps
                if cancel.wait(max(0.0, due - time.monotonic())):
                    raise DriverError(self.name, f"ramp of channel {channel} interrupted after "
                                      f"{len(done)} of {steps} steps")  # fmt: skip
                now = time.monotonic()
                while i < steps and start + duration_s * (i + 1) / steps <= now:
                    i, skipped = i + 1, skipped + 1  # overdue: go straight to the level due now
                due = start + duration_s * i / steps
                level = to_db if i == steps else from_db + span * i / steps
                with self._op_lock:
                    if cancel.is_set():
                        continue  # the wait above reports the interruption
                    late_ms = max(0.0, (time.monotonic() - due) * 1000)
                    extra = {"ramp_step": i, "ramp_steps": steps, "late_ms": round(late_ms, 3)}
                    actual, wall = self._set(channel, level, extra, emit=events)
                late_max_ms = max(late_max_ms, late_ms)
                done.append({"step": i, "atten_db": level, "actual_db": actual, "wall": wall,
                             "t_s": round(wall - start_wall, 6)})  # fmt: skip
                i += 1
        except DriverError as exc:
            summary["error"] = str(exc)
            raise
        finally:
            summary |= {
                "steps": len(done), "skipped": skipped, "late_max_ms": round(late_max_ms, 3),
                "duration_s": done[-1]["t_s"] if done else 0.0,
                "interrupted": cancel.is_set(),
                "first": done[0] if done else None, "last": done[-1] if done else None,
            }  # fmt: skip
            common.report(self.context, "attenuator.ramp", summary)
            self._ramp_done(cancel)
        return {
            "channel": channel, "steps": len(done), "skipped": skipped, "from_db": from_db,
            "to_db": to_db, "actual_db": done[-1]["actual_db"], "duration_s": summary["duration_s"],
            "planned_duration_s": duration_s, "late_max_ms": summary["late_max_ms"],
        }  # fmt: skip

    def _ramp_done(self, cancel: threading.Event) -> None:
        with self._ramp_lock:
            if self._ramp_cancel is cancel:
                self._ramp_cancel = None

    def _cancel_ramp(self) -> bool:
        with self._ramp_lock:
            cancel = self._ramp_cancel
        if cancel is None:
            return False
        cancel.set()
        return True

    # ---------------------------------------------------------------- end of run

    def counters(self) -> Mapping[str, Any]:
        return {**self.conn.counters(), "final_atten_db": dict(sorted(self.known_db.items()))}

    def safe_state(self) -> None:
        """Stop a running ramp, then set every channel of ``safe.atten_db`` (nothing when
        not configured) and record what was done in an ``attenuator.safe_state`` event. A
        dead connection ends the attempt (each further command would wait for its timeout);
        a refused value does not. Never raises."""
        try:
            interrupted = self._cancel_ramp()
            applied: dict[int, float] = {}
            errors: list[str] = []
            if self.safe_atten_db and not self.conn.is_open:
                errors.append("not connected")
            elif self.safe_atten_db:
                self._apply_safe(applied, errors)
            unchanged = [ch for ch in self.channels if ch not in applied]
            common.report(self.context, "attenuator.safe_state", {
                "applied_db": applied, "unchanged": unchanged, "errors": errors,
                "ramp_interrupted": interrupted,
            })  # fmt: skip
        except Exception as exc:  # the contract: never raise
            common.report(self.context, "attenuator.safe_state", {"errors": [repr(exc)]})

    def _apply_safe(self, applied: dict[int, float], errors: list[str]) -> None:
        timeout_s = self.conn.live().timeout_s
        # a ramp step in flight finishes (or times out) first: at most a write, its check
        # and the read back, each bounded by the session timeout
        if not self._op_lock.acquire(timeout=3 * timeout_s + 1):
            errors.append("a ramp step did not finish in time")
            return
        try:
            for ch, atten_db in self.safe_atten_db.items():
                try:
                    applied[ch] = self._set(ch, atten_db, {"safe_state": True})[0]
                except ScpiIOError as exc:
                    errors.append(str(exc))
                    return
                except Exception as exc:
                    errors.append(str(exc))
        finally:
            self._op_lock.release()
