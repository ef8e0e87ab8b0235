"""The TETRA terminal driver: a radio driven over its Peripheral Equipment Interface (ETSI
EN 300 392-5 AT commands), real or emulated, that sets up group calls, presses and releases
PTT, sends SDS and turns the PEI's unsolicited result codes into timed events.

Lab settings (``kind: radio, driver: pei``)::

    url: /dev/ttyUSB0            # or socket://host:port; or, in the emulated lab:
    emulator:                    # start drivers.tetra.terminal_emulator for this radio
      swmi: tetra_core           # the EmulatedSwmi device (opened before this radio)
      issi: 1001
      mcc: 901                   # default 901
      mnc: 16383                 # default 16383
      groups: [9001]             # attached at boot, first selected (default: [group])
      power: {device: psu1, channel: 1, min_voltage_v: 3.3}   # optional coupling
      garble_every: 0            # fault injection: noise before every Nth line
      interleave_urcs: false     # fault injection: URCs inside answers
      transport: pty             # or tcp
    baudrate: 115200
    timeout_s: 5                 # per command, and how long actions wait for URCs
    group: 9001                  # selected at open (AT+CTGS=1,<gssi>)
    safe_state: idle             # the only choice: transmission ceased, calls released

Actions: ``select_group`` (``group``; AT+CTGS replaces the group set), ``call`` (``group``
default the selected one, ``priority`` 0-15 or normal/preemptive/emergency: the +CTSDC call
priority, an open [mem] question, see :mod:`drivers.tetra.tables`), ``ptt_press``
(``priority`` low/high/preemptive/emergency or 0-3, default high as SvxLink; waits up to
``timeout_s`` for the grant; a queued demand returns grant 2 and a later grant is still
recorded), ``ptt_release``, ``hangup`` (ATH: every call of the terminal), ``send_sds``
(``to`` ISSI, ``text``: SDS-TL text as SvxLink sends it). Timings come from the time a URC
was read: call set-up time = ATD sent -> ``+CTCC``; access time = AT+CTXD sent -> ``+CTXG``
with TxGrant 0 (spec notes 1.3). Events: ``tetra.ready``, ``tetra.call`` {cc, event
incoming/connected/released, cause, cause_name, setup_ms, wall}, ``tetra.tx`` {cc, grant,
grant_name, access_ms, tpi, by, wall} (grant_name ``ceased`` for ``+CDTXC`` (by other) and
for ptt_release (by self)), ``tetra.preempted`` {cc, by_tpi, cause, wall} (TxGrant 3 while
this terminal held the grant, or a call released with cause 9), ``tetra.sds`` {direction,
peer, text or hex, status, status_name, wall}, ``tetra.registration``, ``tetra.lost``. A lost
connection is reported once through ``context.fault``. Before each action one ``AT+CMEE?``
checks that the terminal still has the settings the driver gave it: if it was switched off
and on (its PEI settings and calls are gone) the driver sets it up again and emits
``tetra.restarted``; a terminal that does not answer fails the action ("switched off?"). Transcript:
``run_dir/transcripts/<device>.pei.log``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from drivers.base import DeviceContext, Radio
from drivers.emulators import EMULATOR_DIR, EmulatorProcess, start_emulator, state_path
from drivers.errors import DriverError
from drivers.radio.at import AtChannel, AtResponse, AtTimeout, Transcript, Urc, split_params
from drivers.tetra import tables

__all__ = ["URC_NAMES", "PeiTerminal"]

URC_NAMES = (
    "+CTICN",
    "+CTCC",
    "+CTXG",
    "+CDTXC",
    "+CTCR",
    "+CTSDSR",
    "+CMGS",
    "+CTXI",
    "+CTXW",
    "+CTGS",
    "+CTOM",
    "+CREG",
)
"""The PEI's unsolicited result codes (spec notes 4.3)."""
URC_EXTRA_LINES = {"+CTSDSR": 1}
DEFAULT_TIMEOUT_S = 5.0
REGISTRATION_TIMEOUT_S = 10.0
REGISTRATION_POLL_S = 0.1
SAFE_STATE_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 2.0
EXIT_WAIT_S = 1.0
SETTINGS = frozenset({"url", "emulator", "baudrate", "timeout_s", "group", "safe_state"})
EMULATOR_SETTINGS = frozenset(
    {
        "swmi",
        "issi",
        "mcc",
        "mnc",
        "groups",
        "power",
        "garble_every",
        "interleave_urcs",
        "transport",
    }
)


@dataclass
class _Call:
    cc: int
    gssi: int | None
    own: bool
    transmitting: bool = False
    demand_mono: float | None = None
    demand_priority: int | None = None
    demand_grant: int | None = None
    """The answer (TxGrant 0, 1 or 2) to the last AT+CTXD, None while none came."""
    demand_access_ms: float | None = None


@dataclass
class _Setup:
    gssi: int
    sent_mono: float
    cc: int | None = None
    setup_ms: float | None = None
    failed_cause: int | None = None


@dataclass(frozen=True)
class _EmulatorSettings:
    swmi: str
    issi: int
    mcc: int
    mnc: int
    groups: tuple[int, ...]
    power: tuple[str, int, float] | None
    garble_every: int
    interleave_urcs: bool
    transport: str


class PeiTerminal(Radio):
    actions = frozenset({"select_group", "call", "ptt_press", "ptt_release", "hangup", "send_sds"})

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        unknown = sorted(set(self.settings) - SETTINGS)
        if unknown:
            raise DriverError(name, f"unknown settings {unknown} (known: {sorted(SETTINGS)})")
        url, emulator = self.settings.get("url"), self.settings.get("emulator")
        if (url is None) == (emulator is None):
            raise DriverError(name, "give exactly one of 'url' and 'emulator'")
        if url is not None and (not isinstance(url, str) or not url):
            raise DriverError(name, "url must be a pyserial URL (a tty path or socket://...)")
        self.url: str | None = url
        self.timeout_s = _number(name, self.settings, "timeout_s", DEFAULT_TIMEOUT_S)
        baudrate = self.settings.get("baudrate", 115_200)
        if isinstance(baudrate, bool) or not isinstance(baudrate, int) or baudrate <= 0:
            raise DriverError(name, f"baudrate must be a positive integer, not {baudrate!r}")
        self.baudrate = baudrate
        group = self.settings.get("group")
        self.selected_group: int | None = None if group is None else _gssi(name, group, "group")
        if self.settings.get("safe_state", "idle") != "idle":
            raise DriverError(
                name,
                "safe_state must be 'idle' (transmission ceased, calls "
                "released); switching a terminal off is the power supply's job",
            )
        self.emulator = None if emulator is None else self._emulator_settings(emulator)
        self.tsi: str | None = None
        self.issi: int | None = None
        self.channel: AtChannel | None = None
        self.transcript: Transcript | None = None
        self.transcript_path = context.run_dir / "transcripts" / f"{name}.pei.log"
        self.emulator_process: EmulatorProcess | None = None
        self._cond = threading.Condition()
        self._calls: dict[int, _Call] = {}
        self._setup: _Setup | None = None
        self._service_priority: int | None = None
        self._sds_reference = 0
        self._closing = False
        self._lost: str | None = None
        self.access_ms: list[float] = []
        self.setup_ms: list[float] = []
        self.counts = {
            "calls_set_up": 0,
            "calls_incoming": 0,
            "calls_released": 0,
            "preempted_tx": 0,
            "preempted_calls": 0,
            "grants": 0,
            "queued": 0,
            "not_granted": 0,
            "sds_sent": 0,
            "sds_delivered": 0,
            "sds_failed": 0,
            "sds_received": 0,
        }

    def _emulator_settings(self, raw: Any) -> _EmulatorSettings:
        name = self.name
        if not isinstance(raw, Mapping):
            raise DriverError(name, "emulator must be a mapping (swmi, issi, ...)")
        unknown = sorted(set(raw) - EMULATOR_SETTINGS)
        if unknown:
            raise DriverError(name, f"unknown emulator settings {unknown}")
        swmi = raw.get("swmi")
        if not isinstance(swmi, str) or not swmi:
            raise DriverError(name, "emulator.swmi must name the EmulatedSwmi device")
        issi = _integer(name, raw, "issi", None, 1, tables.SSI_MAX)
        mcc = _integer(name, raw, "mcc", 901, 0, 9999)
        mnc = _integer(name, raw, "mnc", 16383, 0, 99999)
        groups_raw = raw.get("groups", [self.selected_group] if self.selected_group else [])
        if not isinstance(groups_raw, list):
            raise DriverError(name, "emulator.groups must be a list of GSSIs")
        groups = tuple(_gssi(name, g, "emulator.groups") for g in groups_raw)
        power: tuple[str, int, float] | None = None
        power_raw = raw.get("power")
        if power_raw is not None:
            if not isinstance(power_raw, Mapping) or not isinstance(power_raw.get("device"), str):
                raise DriverError(name, "emulator.power needs device (and channel, min_voltage_v)")
            channel = _integer(name, power_raw, "channel", 1, 1, 99)
            min_v = _number(name, power_raw, "min_voltage_v", 3.3)
            power = (str(power_raw["device"]), channel, min_v)
        garble = _integer(name, raw, "garble_every", 0, 0, 1_000_000)
        interleave = raw.get("interleave_urcs", False)
        if not isinstance(interleave, bool):
            raise DriverError(name, "emulator.interleave_urcs must be true or false")
        transport = raw.get("transport", "pty")
        if transport not in ("pty", "tcp"):
            raise DriverError(name, "emulator.transport must be 'pty' or 'tcp'")
        return _EmulatorSettings(
            swmi, issi, mcc, mnc, groups, power, garble, interleave, str(transport)
        )

    # ================================================================== life cycle

    def open(self) -> None:
        url = self._start_emulator(self.emulator) if self.emulator is not None else self.url
        if url is None:  # __init__ made sure one of them is given
            raise DriverError(self.name, "no url")
        self.transcript = Transcript(self.transcript_path, f"{self.name} TETRA PEI on {url}")
        self.channel = AtChannel(
            url,
            device=self.name,
            transcript=self.transcript,
            urc_names=URC_NAMES,
            urc_extra_lines=URC_EXTRA_LINES,
            on_urc=self._on_urc,
            on_lost=self._on_lost,
            baudrate=self.baudrate,
            timeout_s=self.timeout_s,
            error_names=tables.PEI_ERRORS,
        )
        self.channel.open()
        self._initialise()

    def _start_emulator(self, emulator: _EmulatorSettings) -> str:
        run_dir = self.context.run_dir
        swmi_file = state_path(run_dir, emulator.swmi)
        try:
            swmi = json.loads(swmi_file.read_text())
            address = f"{swmi['host']}:{int(swmi['port'])}"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DriverError(
                self.name,
                f"the SwMI {emulator.swmi!r} is not running (no "
                f"usable {swmi_file}: {exc}); open it before this radio",
            ) from exc
        args = [
            "--swmi",
            address,
            "--issi",
            str(emulator.issi),
            "--mcc",
            str(emulator.mcc),
            "--mnc",
            str(emulator.mnc),
            "--state-out",
            str(run_dir / EMULATOR_DIR / f"{self.name}.terminal.json"),
        ]
        if emulator.transport == "pty":
            args += ["--pty-link", str(run_dir / EMULATOR_DIR / f"{self.name}.pei.pty")]
        else:
            args += ["--tcp-port", "0"]
        if emulator.groups:
            args += ["--groups", ",".join(map(str, emulator.groups))]
        if emulator.garble_every:
            args += ["--garble-every", str(emulator.garble_every)]
        if emulator.interleave_urcs:
            args.append("--interleave-urcs")
        if emulator.power is not None:
            device, channel, min_v = emulator.power
            args += [
                "--power-state",
                str(state_path(run_dir, device)),
                "--power-output-key",
                f"OUTP{channel}",
                "--power-voltage-key",
                f"SOUR{channel}:VOLT",
                "--min-voltage-v",
                str(min_v),
            ]
        self.emulator_process = start_emulator(
            self.context, self.name, "drivers.tetra.terminal_emulator", args, role="pei"
        )
        return str(self.emulator_process.ready["url"])

    def _initialise(self) -> None:
        """Echo off, numeric errors, TMO, SvxLink's service routing, identity, registration,
        the group call service definition and the selected group."""
        self._command("ATE0")
        self._command("AT+CMEE=1")
        if self._command("AT+CTOM?").values("+CTOM") != ["0"]:
            self._command("AT+CTOM=0")
        for routing in tables.SVXLINK_CTSP_INIT:
            self._command(routing)
        cnumf = split_params(self._command("AT+CNUMF?").value("+CNUMF"))
        self.tsi = cnumf[-1]
        with contextlib.suppress(ValueError):
            self.issi = tables.ssi_of(self.tsi)
        stat = self._wait_registered()
        self._define_call_service(0)
        self._command(f"AT+CTSDS={tables.AI_SERVICE_SDS_TYPE4},{tables.ID_TYPE_SSI}")
        if self.selected_group is not None:
            self._command(f"AT+CTGS={tables.GROUP_SELECT},{self.selected_group}")
        else:
            for line in self._command("AT+CTGS?").values("+CTGS"):
                params = split_params(line)
                if len(params) >= 2 and params[0] == str(tables.GROUP_SELECT):
                    self.selected_group = tables.ssi_of(params[1])
        self.context.emit(
            "tetra.ready",
            {
                "tsi": self.tsi,
                "issi": self.issi,
                "reg_stat": stat,
                "reg_name": tables.REG_STAT.get(stat, "?"),
                "group": self.selected_group,
                "wall": time.time(),
            },
        )

    def _wait_registered(self) -> int:
        deadline = time.monotonic() + max(REGISTRATION_TIMEOUT_S, self.timeout_s)
        while True:
            params = split_params(self._command("AT+CREG?").value("+CREG"))
            stat = int(params[1] if len(params) > 1 else params[0])
            if stat in (tables.REG_HOME, tables.REG_VISITED):
                return stat
            if stat == tables.REG_REJECTED or time.monotonic() > deadline:
                raise DriverError(
                    self.name,
                    f"not registered: +CREG stat {stat} ({tables.REG_STAT.get(stat, 'unknown')})",
                )
            time.sleep(REGISTRATION_POLL_S)

    def _define_call_service(self, priority: int) -> None:
        service = list(tables.GROUP_CALL_SERVICE)
        service[tables.CTSDC_FIELDS.index("priority")] = priority
        self._command("AT+CTSDC=" + ",".join(map(str, service)))
        self._service_priority = priority

    def _command(
        self, command: str, *, timeout_s: float | None = None, data: str | None = None
    ) -> AtResponse:
        if self.channel is None:
            raise DriverError(self.name, "not open")
        return self.channel.command(command, timeout_s=timeout_s, data=data)

    def close(self) -> None:
        """Stop the channel, then the emulator this driver started. Never raises."""
        self._closing = True
        with contextlib.suppress(Exception):
            if self.channel is not None:
                self.channel.close()
        with contextlib.suppress(Exception):
            if self.emulator_process is not None:
                self.emulator_process.stop()
        with contextlib.suppress(Exception):
            if self.transcript is not None:
                self.transcript.close()
        with self._cond:
            self._cond.notify_all()

    def safe_state(self) -> None:
        """Cease transmission, release the calls. Never raises; skipped when the PEI is gone."""
        channel = self.channel
        if channel is None or not channel.is_open:
            return
        with self._cond:
            active = [
                c.cc for c in self._calls.values() if c.transmitting or c.demand_mono is not None
            ]
            any_call = bool(self._calls)
        for cc in active:
            with contextlib.suppress(Exception):
                channel.command(f"AT+CUTXC={cc}", timeout_s=SAFE_STATE_TIMEOUT_S)
        if any_call:
            with contextlib.suppress(Exception):
                channel.command("ATH", timeout_s=SAFE_STATE_TIMEOUT_S)

    # ================================================================== actions

    def perform(self, action: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        handlers: dict[str, Callable[[Mapping[str, Any]], Mapping[str, Any]]] = {
            "select_group": self.select_group,
            "call": self.call,
            "ptt_press": self.ptt_press,
            "ptt_release": self.ptt_release,
            "hangup": self.hangup,
            "send_sds": self.send_sds,
        }
        handler = handlers.get(action)
        if handler is None:
            return super().perform(action, args)
        if self.channel is None:
            raise DriverError(self.name, f"{action}: the radio is not open")
        self._check_restart(action)
        return handler(args)

    def _check_restart(self, action: str) -> None:
        """A terminal that was switched off and on again has lost what :meth:`_initialise`
        set (the PEI settings are not kept over a restart) and its calls: ``AT+CMEE?`` tells,
        in one short exchange, and the driver sets the terminal up again."""
        try:
            answer = self._command("AT+CMEE?", timeout_s=min(self.timeout_s, PROBE_TIMEOUT_S))
        except AtTimeout as exc:
            raise DriverError(
                self.name, f"{action}: the radio does not answer (switched off?)", exc.exchanges
            ) from exc
        if answer.values("+CMEE") == ["1"]:
            return
        with self._cond:
            lost_calls = sorted(self._calls)
            self._calls.clear()
            self._cond.notify_all()
        self.context.emit("tetra.restarted", {"lost_calls": lost_calls, "wall": time.time()})
        self._initialise()

    def select_group(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        gssi = _gssi(self.name, args.get("group"), "select_group: group")
        self._command(f"AT+CTGS={tables.GROUP_SELECT},{gssi}")
        self.selected_group = gssi
        return {"group": gssi}

    def call(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        group = args.get("group", self.selected_group)
        if group is None:
            raise DriverError(self.name, "call: give a group (no group is selected)")
        gssi = _gssi(self.name, group, "call: group")
        priority = _call_priority(self.name, args.get("priority", 0))
        if priority != self._service_priority:
            self._define_call_service(priority)
        if self.channel is not None:
            self.channel.sync()  # the set-up time must not include a resynchronisation
        setup = _Setup(gssi, time.monotonic())
        with self._cond:
            self._setup = setup
        try:
            self._command(f"ATD{gssi}")
            deadline = time.monotonic() + self.timeout_s
            with self._cond:
                while setup.cc is None and setup.failed_cause is None and self._lost is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
        finally:
            with self._cond:
                self._setup = None
        if setup.cc is None:
            if setup.failed_cause is not None:
                cause = setup.failed_cause
                raise DriverError(
                    self.name,
                    f"call to group {gssi} failed: disconnect cause "
                    f"{cause} ({tables.DISCONNECT_CAUSES.get(cause, '?')})",
                )
            why = self._lost or f"no +CTCC within {self.timeout_s:g} s"
            raise DriverError(
                self.name,
                f"call to group {gssi}: {why}",
                self.transcript.tail() if self.transcript else (),
            )
        return {"cc": setup.cc, "group": gssi, "priority": priority, "setup_ms": setup.setup_ms}

    def ptt_press(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        priority = _demand_priority(self.name, args.get("priority", "high"))
        timeout_s = _number(self.name, args, "timeout_s", self.timeout_s)
        if self.channel is not None:
            self.channel.sync()  # the access time must not include a resynchronisation
        with self._cond:
            call = self._current_call()
            call.demand_grant = None
            call.demand_access_ms = None
            call.demand_priority = priority
            call.demand_mono = time.monotonic()
        try:
            self._command(f"AT+CTXD={call.cc},{priority}")
        except Exception:
            with self._cond:
                call.demand_mono = None  # refused: there is no demand to wait for or cease
            raise
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (
                call.demand_grant not in (tables.TX_GRANTED, tables.TX_NOT_GRANTED)
                and self._calls.get(call.cc) is call
                and self._lost is None
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            grant, access_ms = call.demand_grant, call.demand_access_ms
            released = self._calls.get(call.cc) is not call
        if released and grant != tables.TX_GRANTED:
            raise DriverError(self.name, f"ptt_press: call {call.cc} was released before a grant")
        return {
            "cc": call.cc,
            "priority": tables.TX_DEMAND_PRIORITY[priority],
            "grant": grant,
            "grant_name": tables.TX_GRANT.get(grant, "no answer")
            if grant is not None
            else "no answer",
            "access_ms": access_ms,
        }

    def ptt_release(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        with self._cond:
            candidates = [
                c for c in self._calls.values() if c.transmitting or c.demand_mono is not None
            ]
            call = candidates[-1] if candidates else self._current_call()
            was_transmitting = call.transmitting
        response = self._command(f"AT+CUTXC={call.cc}")
        with self._cond:
            call.transmitting = False
            call.demand_mono = None
        self.context.emit(
            "tetra.tx",
            {
                "cc": call.cc,
                "grant": None,
                "grant_name": "ceased",
                "by": "self",
                "wall": response.sent_wall,
            },
        )
        return {"cc": call.cc, "was_transmitting": was_transmitting}

    def hangup(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        with self._cond:
            ccs = sorted(self._calls)
        self._command("ATH")
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while any(cc in self._calls for cc in ccs) and self._lost is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            still = sorted(cc for cc in ccs if cc in self._calls)
        return {"released": [cc for cc in ccs if cc not in still], "not_released": still}

    def send_sds(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        to_raw, text = args.get("to"), args.get("text")
        try:
            to = tables.ssi_of(str(to_raw)) if not isinstance(to_raw, bool) else 0
        except ValueError:
            to = 0
        if not 1 <= to <= tables.SSI_MAX:
            raise DriverError(self.name, f"send_sds: 'to' must be an ISSI, not {to_raw!r}")
        if not isinstance(text, str):
            raise DriverError(self.name, "send_sds: give the text")
        try:
            encoded = text.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise DriverError(self.name, "send_sds: text must be ISO 8859-1") from exc
        self._sds_reference = self._sds_reference % 255 + 1
        payload = (
            (
                bytes(
                    [
                        tables.SDS_TL_TEXT_PID,
                        tables.SDS_TL_TRANSFER,
                        self._sds_reference,
                        tables.SDS_TL_TEXT_LATIN1,
                    ]
                )
                + encoded
            )
            .hex()
            .upper()
        )
        bits = len(payload) * 4
        if bits > tables.SDS_MAX_BITS:
            raise DriverError(
                self.name, f"send_sds: text too long ({bits} bits > {tables.SDS_MAX_BITS})"
            )
        response = self._command(f"AT+CMGS={to},{bits}", data=payload)
        status: int | None = None
        instance: int | None = None
        for value in response.values("+CMGS"):
            params = split_params(value)
            with contextlib.suppress(ValueError, IndexError):
                instance = int(params[0])
                status = int(params[1]) if len(params) > 1 else None
        self.counts["sds_sent"] += 1
        if status == tables.SDS_SENT:
            self.counts["sds_delivered"] += 1
        elif status == tables.SDS_FAILED:
            self.counts["sds_failed"] += 1
        status_name = tables.SDS_STATUS.get(status, "unknown") if status is not None else None
        self.context.emit(
            "tetra.sds",
            {
                "direction": "out",
                "peer": to,
                "text": text,
                "status": status,
                "status_name": status_name,
                "instance": instance,
                "wall": response.sent_wall,
            },
        )
        return {
            "to": to,
            "status": status,
            "status_name": status_name,
            "instance": instance,
            "reference": self._sds_reference,
            "bits": bits,
        }

    def _current_call(self) -> _Call:
        """The call PTT works on: the latest one (caller holds the lock)."""
        if not self._calls:
            raise DriverError(self.name, "no call: set one up (call) or wait for an incoming one")
        return self._calls[max(self._calls)]

    # ================================================================== URCs

    def _on_urc(self, urc: Urc) -> None:
        handler = {
            "+CTICN": self._urc_incoming,
            "+CTCC": self._urc_connected,
            "+CTXG": self._urc_grant,
            "+CDTXC": self._urc_ceased,
            "+CTCR": self._urc_released,
            "+CTSDSR": self._urc_sds,
            "+CMGS": self._urc_sds_status,
            "+CTXI": self._urc_tx_other,
            "+CTXW": self._urc_tx_other,
            "+CREG": self._urc_registration,
        }.get(urc.name)
        if handler is None:
            return
        params = split_params(urc.text)
        try:
            with self._cond:
                handler(urc, params)
                self._cond.notify_all()
        except (ValueError, IndexError) as exc:
            if self.transcript is not None:
                self.transcript.add("!", f"cannot decode {urc.line}: {exc}")

    def _urc_incoming(self, urc: Urc, p: list[str]) -> None:
        cc = int(p[0])
        gssi = tables.ssi_of(p[11]) if len(p) > 11 and p[11] else None
        self._calls[cc] = _Call(cc, gssi, own=False)
        self.counts["calls_incoming"] += 1
        self.context.emit(
            "tetra.call",
            {
                "cc": cc,
                "event": "incoming",
                "group": gssi,
                "caller": p[4] if len(p) > 4 else None,
                "priority": int(p[12]) if len(p) > 12 and p[12] else None,
                "wall": urc.wall,
            },
        )

    def _urc_connected(self, urc: Urc, p: list[str]) -> None:
        cc = int(p[0])
        setup = self._setup
        fields: dict[str, Any] = {"cc": cc, "event": "connected", "wall": urc.wall}
        call = self._calls.get(cc)
        if call is None:
            call = self._calls[cc] = _Call(cc, setup.gssi if setup else None, own=True)
        call.own = True
        if setup is not None and setup.cc is None:
            setup.cc = cc
            setup.setup_ms = round((urc.mono - setup.sent_mono) * 1000, 3)
            self.setup_ms.append(setup.setup_ms)
            fields.update(setup_ms=setup.setup_ms, group=setup.gssi)
        self.counts["calls_set_up"] += 1
        self.context.emit("tetra.call", fields)

    def _urc_grant(self, urc: Urc, p: list[str]) -> None:
        cc, grant = int(p[0]), int(p[1])
        tpi = p[5] if len(p) > 5 and p[5] else None
        call = self._calls.get(cc)
        if call is None:
            call = self._calls[cc] = _Call(cc, None, own=False)
        fields: dict[str, Any] = {
            "cc": cc,
            "grant": grant,
            "grant_name": tables.TX_GRANT.get(grant, "?"),
            "wall": urc.wall,
        }
        if tpi is not None:
            fields["tpi"] = tpi
        own_demand = call.demand_mono is not None
        if grant == tables.TX_GRANTED:
            self.counts["grants"] += 1
            call.transmitting = True
            if call.demand_mono is not None:
                access_ms = round((urc.mono - call.demand_mono) * 1000, 3)
                self.access_ms.append(access_ms)
                call.demand_access_ms = access_ms
                fields["access_ms"] = access_ms
                fields["priority"] = tables.TX_DEMAND_PRIORITY.get(call.demand_priority or 0)
            call.demand_mono = None
        elif grant == tables.TX_GRANTED_TO_ANOTHER:
            if call.transmitting:
                call.transmitting = False
                self.counts["preempted_tx"] += 1
                self.context.emit(
                    "tetra.preempted", {"cc": cc, "by_tpi": tpi, "cause": None, "wall": urc.wall}
                )
        elif grant == tables.TX_NOT_GRANTED:
            self.counts["not_granted"] += 1
            call.demand_mono = None
        elif grant == tables.TX_QUEUED:
            self.counts["queued"] += 1
        if own_demand and grant in (tables.TX_GRANTED, tables.TX_NOT_GRANTED, tables.TX_QUEUED):
            call.demand_grant = grant
        self.context.emit("tetra.tx", fields)

    def _urc_ceased(self, urc: Urc, p: list[str]) -> None:
        self.context.emit(
            "tetra.tx",
            {
                "cc": int(p[0]),
                "grant": None,
                "grant_name": "ceased",
                "by": "other",
                "wall": urc.wall,
            },
        )

    def _urc_tx_other(self, urc: Urc, p: list[str]) -> None:
        name = "interrupt" if urc.name == "+CTXI" else "wait"
        self.context.emit(
            "tetra.tx",
            {
                "cc": int(p[0]) if p and p[0] else None,
                "grant": None,
                "grant_name": name,
                "text": urc.text,
                "wall": urc.wall,
            },
        )

    def _urc_released(self, urc: Urc, p: list[str]) -> None:
        cc = int(p[0])
        cause = int(p[1]) if len(p) > 1 and p[1] else 0
        cause_name = tables.DISCONNECT_CAUSES.get(cause, "unknown")
        known = self._calls.pop(cc, None)
        setup = self._setup
        if known is None and setup is not None and setup.cc is None:
            setup.failed_cause = cause  # the call this terminal was setting up never connected
        self.counts["calls_released"] += 1
        self.context.emit(
            "tetra.call",
            {
                "cc": cc,
                "event": "released",
                "cause": cause,
                "cause_name": cause_name,
                "wall": urc.wall,
            },
        )
        if cause == tables.CAUSE_PREEMPTION:
            self.counts["preempted_calls"] += 1
            self.context.emit(
                "tetra.preempted", {"cc": cc, "by_tpi": None, "cause": cause, "wall": urc.wall}
            )

    def _urc_sds(self, urc: Urc, p: list[str]) -> None:
        payload = urc.extra[0] if urc.extra else ""
        self.counts["sds_received"] += 1
        fields: dict[str, Any] = {
            "direction": "in",
            "peer": p[1] if len(p) > 1 else None,
            "bits": int(p[5]) if len(p) > 5 and p[5] else None,
            "status": None,
            "wall": urc.wall,
        }
        text = _sds_text(payload)
        if text is not None:
            fields["text"] = text
        else:
            fields["hex"] = payload
        self.context.emit("tetra.sds", fields)

    def _urc_sds_status(self, urc: Urc, p: list[str]) -> None:
        status = int(p[1]) if len(p) > 1 and p[1] else None
        self.context.emit(
            "tetra.sds",
            {
                "direction": "out",
                "instance": int(p[0]),
                "status": status,
                "status_name": tables.SDS_STATUS.get(status or -1),
                "wall": urc.wall,
            },
        )

    def _urc_registration(self, urc: Urc, p: list[str]) -> None:
        stat = int(p[-1])
        self.context.emit(
            "tetra.registration",
            {"stat": stat, "stat_name": tables.REG_STAT.get(stat, "?"), "wall": urc.wall},
        )

    def _on_lost(self, why: str) -> None:
        """From the reader thread, once: say what went away, and why if we know."""
        if self._closing:
            return
        reason = f"PEI connection lost: {why}"
        process = self.emulator_process
        if process is not None:
            with contextlib.suppress(Exception):
                process.proc.wait(timeout=EXIT_WAIT_S)
            code = process.proc.poll()
            if code is not None:
                reason += f"; the terminal emulator exited ({_exit_text(code)})"
        with self._cond:
            if self._lost is not None:
                return
            self._lost = reason
            self._cond.notify_all()
        self.context.emit("tetra.lost", {"reason": reason, "wall": time.time()})
        self.context.fault(reason)

    # ================================================================== counters

    def counters(self) -> Mapping[str, Any]:
        with self._cond:
            access, setup = list(self.access_ms), list(self.setup_ms)
            counts = dict(self.counts)
        channel = self.channel
        return {
            "access_ms": access,
            "access_ms_p50": statistics.median(access) if access else None,
            "access_ms_max": max(access) if access else None,
            "setup_ms": setup,
            "setup_ms_p50": statistics.median(setup) if setup else None,
            "setup_ms_max": max(setup) if setup else None,
            **counts,
            "channel": dict(channel.counts) if channel is not None else {},
            "transcript": str(self.transcript_path),
            "lost": self._lost,
        }


# ------------------------------------------------------------------------------ helpers


def _sds_text(payload: str) -> str | None:
    """The text of an SDS-TL text message (``82 04 <ref> 01 <ISO 8859-1>``), else None."""
    try:
        data = bytes.fromhex(payload)
    except ValueError:
        return None
    if (
        len(data) >= 4
        and data[0] == tables.SDS_TL_TEXT_PID
        and data[3] == tables.SDS_TL_TEXT_LATIN1
    ):
        return data[4:].decode("latin-1")
    return None


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _number(device: str, values: Mapping[str, Any], key: str, default: float) -> float:
    value = values.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise DriverError(device, f"{key} must be a positive number, not {value!r}")
    return float(value)


def _integer(
    device: str, values: Mapping[str, Any], key: str, default: int | None, low: int, high: int
) -> int:
    value = values.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DriverError(device, f"{key} must be an integer {low}..{high}, not {value!r}")
    return value


def _gssi(device: str, value: Any, what: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = tables.ssi_of(value) if len(value) <= 17 else -1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= tables.SSI_MAX:
        raise DriverError(device, f"{what} must be a GSSI 1..{tables.SSI_MAX}, not {value!r}")
    return value


def _call_priority(device: str, value: Any) -> int:
    if isinstance(value, str) and value in tables.CALL_PRIORITY_BY_NAME:
        return tables.CALL_PRIORITY_BY_NAME[value]
    if isinstance(value, bool) or not isinstance(value, int):
        raise DriverError(
            device,
            f"call: priority must be 0..{tables.CALL_PRIORITY_MAX} or one "
            f"of {sorted(tables.CALL_PRIORITY_BY_NAME)}, not {value!r}",
        )
    if not 0 <= value <= tables.CALL_PRIORITY_MAX:
        raise DriverError(device, f"call: priority {value} out of 0..{tables.CALL_PRIORITY_MAX}")
    return value


def _demand_priority(device: str, value: Any) -> int:
    if isinstance(value, str) and value in tables.TX_DEMAND_BY_NAME:
        return tables.TX_DEMAND_BY_NAME[value]
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value in tables.TX_DEMAND_PRIORITY
    ):
        return value
    raise DriverError(
        device,
        f"ptt_press: priority must be one of "
        f"{sorted(tables.TX_DEMAND_BY_NAME)} or 0-3, not {value!r}",
    )
