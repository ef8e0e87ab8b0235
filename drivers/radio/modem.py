"""The AT modem driver (``kind: radio, driver: at``): an LTE modem driven with 3GPP TS 27.007
commands through :class:`~drivers.radio.at.AtChannel`, over any pyserial URL or over the
emulated modem (:mod:`drivers.radio.modem_emulator`) that it starts itself.

Lab settings::

    url: /dev/ttyUSB2            # pyserial URL (a tty, socket://host:port, rfc2217://...) OR
    emulator: {...}              # start the emulated modem (below) and talk to it over a pty
    baudrate: 115200
    timeout_s: 5                 # per command
    pin: "1234"                  # SIM PIN, if the SIM asks for one
    apn: internet                # AT+CGDCONT for cid at open (default: leave as is)
    cid: 1                       # the PDN context the actions act on
    plmn: "00101"                # manual PLMN selection at open (default: automatic)
    safe_state: registered       # or "off": AT+CFUN=4 when the run ends
    poll_signal_s: 1.0           # signal and registration polling (0 = none)
    quectel: false               # also read AT+QENG="servingcell" (SINR, RRC state)
    register_timeout_s: 30

``emulator`` settings (translated into the emulator's configuration): ``node`` (the UE node:
the PDN address is its address), ``link`` (the radio link whose relay is blocked while the
modem has no data service), ``imsi``, ``home_plmn``, ``networks`` (as the emulator's, with
``link`` a link name), ``attenuator: {device, channel}`` and ``power: {device, channel,
min_voltage_v}`` (the SCPI emulators whose state files it follows), ``attach_s``, ``boot_s``,
``min_rsrp_dbm``, ``hysteresis_db``, ``qci``, ``pin`` and ``puk`` (of the emulated SIM),
``identity``, ``apn``, ``pdn_address``, and for tests ``interleave_urcs``, ``garble_every``,
``seed``. With emulated cores (a network's ``cores``: core device names of the lab, primary
first, or attach socket paths, and ``ran``: its RAN node; ``attenuated: false`` for a cell the
attenuator does not weaken): ``k`` and ``opc`` (the USIM's keys), ``core_detection_s``,
``echo_interval_s``; ``node`` is then also sent to the core as the UE node. Only the cores this
run opened are used; a network none of whose cores is open behaves as without a core.

Timeline actions: ``radio_off`` (AT+CFUN=4), ``radio_on`` (AT+CFUN=1), ``select_plmn``
(``plmn``: MCC+MNC or ``auto``), ``pdn_activate``, ``pdn_deactivate``, ``read_signal``.

Events: ``radio.identity``, ``radio.registration`` (EPS, from +CEREG: stat, stat_name, tac, ci,
act, source ``urc``/``query``/``reboot``, wall), ``radio.cs_registration`` (+CREG),
``radio.operator`` (plmn after each registration change), ``radio.signal`` (rsrp_dbm, rsrq_db,
rssi_dbm, csq, sinr_db with ``quectel``), ``radio.pdn``, ``radio.cgev``, ``radio.bearer``
(a dedicated bearer from ``+CGEV: NW|ME ACT|DEACT <p_cid>,<cid>,<event_type>``: what
activated/released, origin nw/me, p_cid, cid, wall) and ``radio.bearer_qos`` (its
``+CGEQOSRDP``: qci, GBR and MBR read right after the activation), ``radio.function``,
``radio.reboot`` (the modem said RDY; the driver configures it again and says
``radio.reconfigured``), ``radio.unresponsive`` / ``radio.responsive`` (polls went unanswered
/ answered again), ``radio.lost`` (the connection went away; the run is failed through
``context.fault``), ``radio.safe_state``, ``radio.task_error``. ``counters()`` keeps the
identity, the final state, every registration change, the outages, the dedicated bearer
changes (``bearers``), signal extremes, the channel's counts and the transcript's path.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from drivers.base import DeviceContext, Radio
from drivers.core.emulator import attach_socket_path
from drivers.emulators import EMULATOR_DIR, EmulatorProcess, start_emulator, state_path
from drivers.errors import DriverError
from drivers.impairment.emulated import link_control_path
from drivers.radio.at import (
    AtChannel,
    AtCommandError,
    AtError,
    AtResponse,
    Transcript,
    Urc,
    split_params,
)
from drivers.radio.modem_state import CESQ_RSRP, CESQ_RSRQ, CSQ_RSSI, STAT_NAMES, ModemConfig

__all__ = [
    "AtModem",
    "Registration",
    "decode_cesq",
    "decode_csq",
    "decode_qeng",
    "is_read_form",
    "parse_registration",
]

URC_NAMES = ("+CEREG", "+CREG", "+CGEV", "+CPIN", "+CFUN", "+QIND", "+QUSIM", "RDY")
REGISTERED = (1, 5)
SETTINGS = frozenset(
    {"url", "emulator", "baudrate", "timeout_s", "pin", "apn", "cid", "plmn", "safe_state",
     "poll_signal_s", "quectel", "register_timeout_s"}
)  # fmt: skip
EMULATOR_SETTINGS = frozenset(
    {"node", "link", "imsi", "home_plmn", "networks", "attenuator", "power", "attach_s",
     "boot_s", "min_rsrp_dbm", "hysteresis_db", "qci", "pin", "puk", "identity", "apn",
     "pdn_address", "interleave_urcs", "garble_every", "seed", "k", "opc", "core_detection_s",
     "echo_interval_s"}
)  # fmt: skip
SAFE_STATES = ("registered", "off")
DEFAULT_PDN_ADDRESS = "10.45.0.2"
SIM_READY_TIMEOUT_S = 10.0
"""After the PIN, the SIM may answer +CME ERROR: 14 (busy) for a few seconds."""
SYNC_ATTEMPTS = 3
_PLMN = re.compile(r"^\d{5,6}$")
_DEDICATED = re.compile(r"^(NW|ME) (ACT|DEACT) (\d+)\s*,\s*(\d+)(?:\s*,\s*(\d+))?")
"""``+CGEV: NW ACT <p_cid>,<cid>,<event_type>`` and its DEACT/ME siblings: dedicated bearers
(TS 27.007 §10.1.19 [src: nRF91 AT Commands §7.3]); the spec text shows a blank after each
comma, modems mostly send none: both parse. The default bearer's are ``PDN ACT <cid>``."""


@dataclass(frozen=True)
class Registration:
    """One ``+CEREG``/``+CREG`` report: stat and, with n >= 2, the cell."""

    stat: int
    tac: str | None = None
    ci: str | None = None
    act: int | None = None
    reject_cause: int | None = None


def is_read_form(text: str) -> bool:
    """Whether a ``+CEREG:``/``+CREG:`` text is a read answer (``<n>,<stat>[,...]``) rather than
    a URC (``<stat>[,"<tac>",...]``): the two differ in their second field, a number or a
    quoted hex string. A URC of the same name can land among a read command's lines."""
    raw = split_params(text, keep_quotes=True)
    if len(raw) == 1:
        return False
    return not raw[1].startswith('"')


def parse_registration(text: str) -> Registration | None:
    """Decode a registration report in either form; None if it is not one."""
    params = split_params(text)
    if is_read_form(text):
        params = params[1:]

    def number(i: int) -> int | None:
        if len(params) > i and params[i].isdigit():
            return int(params[i])
        return None

    stat = number(0)
    if stat is None:
        return None
    tac = (params[1] or None) if len(params) > 1 else None
    ci = (params[2] or None) if len(params) > 2 else None
    return Registration(stat, tac, ci, number(3), number(5))


def decode_cesq(text: str) -> tuple[float | None, float | None]:
    """``+CESQ: <rxlev>,<ber>,<rscp>,<ecno>,<rsrq>,<rsrp>`` -> (rsrq_db, rsrp_dbm)."""
    params = split_params(text)
    if len(params) < 6 or not all(p.isdigit() for p in params[4:6]):
        return None, None
    return CESQ_RSRQ.decode(int(params[4])), CESQ_RSRP.decode(int(params[5]))


def decode_csq(text: str) -> tuple[int | None, float | None]:
    """``+CSQ: <rssi>,<ber>`` -> (index, rssi_dbm)."""
    params = split_params(text)
    if not params or not params[0].isdigit():
        return None, None
    index = int(params[0])
    return index, CSQ_RSSI.decode(index)


def decode_qeng(text: str) -> dict[str, Any]:
    """Quectel ``+QENG: "servingcell",<state>,"LTE",...``: 18 items (20 on modules that add CQI
    and TX power before srxlev; the fields used here come before them). SINR is taken as dB,
    which is firmware-dependent (spec notes 3.1)."""
    params = split_params(text)
    out: dict[str, Any] = {"state": params[1] if len(params) > 1 else None}
    if len(params) >= 18 and params[2] == "LTE":
        with contextlib.suppress(ValueError):
            out.update(
                plmn=params[4] + params[5],
                ci=params[6],
                pci=int(params[7]),
                earfcn=int(params[8]),
                band=int(params[9]),
                tac=params[12],
                qeng_rsrp_dbm=float(params[13]),
                qeng_rsrq_db=float(params[14]),
                qeng_rssi_dbm=float(params[15]),
                sinr_db=float(params[16]),
            )
    return out


def _setting_error(name: str, message: str) -> DriverError:
    return DriverError(name, f"lab settings: {message}")


def _number(
    name: str, settings: Mapping[str, Any], key: str, default: float, minimum: float = 0.0
) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise _setting_error(name, f"{key} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


class AtModem(Radio):
    """An LTE modem on an AT command port."""

    actions = frozenset(
        {"radio_off", "radio_on", "select_plmn", "pdn_activate", "pdn_deactivate", "read_signal"}
    )

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        unknown = sorted(set(settings) - SETTINGS)
        if unknown:
            raise _setting_error(
                name, f"unknown setting(s) {unknown}; known: {', '.join(sorted(SETTINGS))}"
            )
        url, emulator = settings.get("url"), settings.get("emulator")
        if (url is None) == (emulator is None):
            raise _setting_error(name, "give either url (a pyserial URL) or emulator (mapping)")
        if url is not None and not isinstance(url, str):
            raise _setting_error(name, f"url must be text, got {url!r}")
        if emulator is not None:
            if not isinstance(emulator, Mapping):
                raise _setting_error(name, "emulator must be a mapping of emulator settings")
            bad = sorted(set(emulator) - EMULATOR_SETTINGS)
            if bad:
                known = ", ".join(sorted(EMULATOR_SETTINGS))
                raise _setting_error(name, f"unknown emulator setting(s) {bad}; known: {known}")
        self.url: str | None = url
        self.emulator_settings: dict[str, Any] | None = None if emulator is None else dict(emulator)
        self.baudrate = int(_number(name, settings, "baudrate", 115_200, 1))
        self.timeout_s = _number(name, settings, "timeout_s", 5.0, 0.1)
        self.poll_signal_s = _number(name, settings, "poll_signal_s", 1.0)
        self.register_timeout_s = _number(name, settings, "register_timeout_s", 30.0, 0.1)
        self.cid = int(_number(name, settings, "cid", 1, 1))
        self.quectel = bool(settings.get("quectel", False))
        pin = settings.get("pin")
        if pin is not None and not (isinstance(pin, str) and pin.isdigit()):
            # a YAML number would lose its leading zeros (0123 is even read as octal)
            raise _setting_error(name, f"pin must be digits in quotes, got {pin!r}")
        self.pin: str | None = pin
        self.apn = None if settings.get("apn") is None else str(settings["apn"])
        plmn = settings.get("plmn")
        if plmn is not None and (not isinstance(plmn, str) or not _PLMN.match(plmn)):
            raise _setting_error(name, f"plmn must be MCC+MNC digits as text, got {plmn!r}")
        self.plmn: str | None = plmn
        self.safe_mode = str(settings.get("safe_state", "registered"))
        if self.safe_mode not in SAFE_STATES:
            raise _setting_error(name, f"safe_state must be one of {SAFE_STATES}")
        self.transcript_path = context.run_dir / "transcripts" / f"{name}.at.log"

        self._channel: AtChannel | None = None
        self._closed_channel: AtChannel | None = None
        self._transcript: Transcript | None = None
        self._emulator: EmulatorProcess | None = None
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._reg_changed = threading.Event()
        self._poller: threading.Thread | None = None
        self._tasks: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._faulted = False
        self._switched_off = False
        self._unresponsive = False
        self.identity: dict[str, str | None] = {}
        self._stat: int | None = None
        self._cell: tuple[str | None, str | None] = (None, None)
        self._cs_stat: int | None = None
        self._plmn: str | None = None
        self._fun: int | None = None
        self._pdn: tuple[bool, str | None] | None = None
        self.history: list[dict[str, Any]] = []
        self.outages: list[dict[str, Any]] = []
        self._signal_samples = 0
        self._rsrp_range: tuple[float, float] | None = None
        self._poll_errors = 0
        self._task_errors = 0
        self._reboots = 0
        self._urc_counts: dict[str, int] = {}
        self.bearers: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- open

    def open(self) -> None:
        try:
            url = self.url if self.url is not None else self._start_emulator()
            self._transcript = Transcript(self.transcript_path, f"{self.name} on {url}")
            self._channel = AtChannel(
                url,
                device=self.name,
                transcript=self._transcript,
                urc_names=URC_NAMES,
                on_urc=self._on_urc,
                on_lost=self._on_lost,
                baudrate=self.baudrate,
                timeout_s=self.timeout_s,
            )
            self._channel.open()
            self._worker = self._thread(self._work, "tasks")
            self._configure()
            self._read_identity()
            self._wait_registered(self.register_timeout_s)
            self._read_function("query")
            self._ensure_pdn()
            self._refresh_operator()
            self._read_signal("query")
        except BaseException:
            self._shutdown()
            raise
        if self.poll_signal_s > 0:
            self._poller = self._thread(self._poll, "poll")

    def _thread(self, target: Callable[[], None], role: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"modem-{role}-{self.name}", daemon=True)
        thread.start()
        return thread

    def _start_emulator(self) -> str:
        config = self.emulator_config()
        out_dir = self.context.run_dir / EMULATOR_DIR
        out_dir.mkdir(parents=True, exist_ok=True)
        config_path = out_dir / f"{self.name}.modem.json"
        config_path.write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
        emulator = self.emulator_settings or {}
        args = [
            "--config", str(config_path),
            "--pty-link", str(out_dir / f"{self.name}.tty"),
            "--state-out", str(state_path(self.context.run_dir, self.name)),
        ]  # fmt: skip
        if emulator.get("interleave_urcs"):
            args.append("--interleave-urcs")
        if emulator.get("garble_every"):
            args += ["--garble-every", str(int(emulator["garble_every"]))]
        if emulator.get("seed") is not None:
            args += ["--seed", str(int(emulator["seed"]))]
        self._emulator = start_emulator(
            self.context, self.name, "drivers.radio.modem_emulator", args, role="modem"
        )
        return str(self._emulator.ready["url"])

    def emulator_config(self) -> dict[str, Any]:
        """The emulator's configuration from the ``emulator`` settings (validated)."""
        e = self.emulator_settings or {}
        home = str(e.get("home_plmn", "00101"))
        default_link = e.get("link")
        networks = e.get("networks") or [{"plmn": home, "long": "Testbed Home", "short": "Home"}]
        if not isinstance(networks, list) or not all(isinstance(n, Mapping) for n in networks):
            raise _setting_error(self.name, "emulator.networks must be a list of mappings")
        translated = []
        for network in networks:
            entry = dict(network)
            link = entry.get("link", default_link)
            if link is None:
                entry.pop("link", None)
            else:
                entry["link"] = str(link_control_path(self.context.name_prefix, str(link)))
            cores = entry.get("cores")
            if isinstance(cores, list):
                # core device names -> their attach sockets, for the cores this run opened
                # (they open before the radios); with none, the network is core-less as before
                prefix, run_dir = self.context.name_prefix, self.context.run_dir
                entry["cores"] = [
                    str(c) if "/" in str(c) else str(attach_socket_path(prefix, str(c)))
                    for c in cores
                    if "/" in str(c) or state_path(run_dir, str(c)).exists()
                ]
                if not entry["cores"]:
                    del entry["cores"]
                    entry.pop("ran", None)
            translated.append(entry)
        node = e.get("node")
        if node is not None and self.context.nodes is not None:
            address = self.context.nodes.node_address(str(node))
        else:
            address = str(e.get("pdn_address", DEFAULT_PDN_ADDRESS))
        config: dict[str, Any] = {
            "home_plmn": home,
            "networks": translated,
            "apn": str(e.get("apn", self.apn or "internet")),
            "pdn_address": address,
            "pin": e.get("pin"),
            "block_reason": f"no-service:{self.name}",
        }
        if node is not None:
            config["node"] = str(node)  # what a core programs the UE's data path towards
        for key in ("identity", "imsi", "puk", "qci", "attach_s", "boot_s", "min_rsrp_dbm",
                    "hysteresis_db", "k", "opc", "core_detection_s",
                    "echo_interval_s"):  # fmt: skip
            if key in e:
                config[key] = e[key]
        attenuator = e.get("attenuator")
        if attenuator is not None:
            device, channel = self._coupling("attenuator", attenuator, {"device", "channel"})
            config["attenuator"] = {
                "state_file": str(state_path(self.context.run_dir, device)),
                "key": f"CHAN{channel}:ATT",
            }
        power = e.get("power")
        if power is not None:
            device, channel = self._coupling("power", power, {"device", "channel", "min_voltage_v"})
            config["power"] = {
                "state_file": str(state_path(self.context.run_dir, device)),
                "output_key": f"OUTP{channel}",
                "voltage_key": f"SOUR{channel}:VOLT",
                "min_voltage_v": float(power.get("min_voltage_v", 3.3)),
            }
        try:
            ModemConfig.from_mapping(config)
        except ValueError as exc:
            raise _setting_error(self.name, f"emulator: {exc}") from exc
        return config

    def _coupling(self, what: str, value: Any, keys: set[str]) -> tuple[str, int]:
        if not isinstance(value, Mapping) or "device" not in value or not set(value) <= keys:
            raise _setting_error(
                self.name, f"emulator.{what} must be a mapping of {sorted(keys)} with a device"
            )
        channel = value.get("channel", 1)
        if isinstance(channel, bool) or not isinstance(channel, int) or channel < 1:
            raise _setting_error(self.name, f"emulator.{what}.channel must be an integer >= 1")
        return str(value["device"]), channel

    # ---------------------------------------------------------------- configuration

    def _at(self, command: str, timeout_s: float | None = None) -> AtResponse:
        channel = self._channel
        if channel is None:
            raise DriverError(self.name, "not open")
        return channel.command(command, timeout_s=timeout_s)

    def _value(self, response: AtResponse, name: str) -> str:
        """The one ``<name>:`` line of an answer, or a DriverError saying what came instead."""
        try:
            return response.value(name)
        except ValueError as exc:
            raise DriverError(self.name, str(exc), self._tail()) from exc

    def _configure(self) -> None:
        """Echo off, numeric errors, SIM, URCs on, APN, PLMN selection: at open and again
        after the modem rebooted (a reboot forgets all of it)."""
        self._sync()
        self._at("ATE0")
        self._at("AT+CMEE=1")
        self._unlock_sim()
        self._salvage(self._at("AT+CEREG=2"))
        with contextlib.suppress(AtCommandError):  # LTE-only modems may lack +CREG
            self._salvage(self._at("AT+CREG=2"))
        with contextlib.suppress(AtCommandError):  # +CGEV reports are a bonus
            self._at("AT+CGEREP=2,1")
        if self.apn is not None:
            self._at(f'AT+CGDCONT={self.cid},"IP","{self.apn}"')
        with contextlib.suppress(AtCommandError):
            self._at("AT+COPS=3,2")  # numeric operator in +COPS?
        if self.plmn is not None:
            self._select_plmn(self.plmn)
        else:
            mode = split_params(self._value(self._at("AT+COPS?"), "+COPS"))[0]
            if mode != "0":
                self._at("AT+COPS=0")

    def _sync(self) -> None:
        """A modem that just came up may miss the first bytes: ``AT`` until it answers."""
        for attempt in range(SYNC_ATTEMPTS):
            try:
                self._at("AT", timeout_s=min(self.timeout_s, 2.0))
                return
            except AtCommandError:
                return  # it answers, if oddly
            except AtError:
                if attempt == SYNC_ATTEMPTS - 1:
                    raise

    def _unlock_sim(self) -> None:
        state = self._value(self._at("AT+CPIN?"), "+CPIN")
        if state == "READY":
            return
        if state != "SIM PIN":
            raise DriverError(self.name, f"the SIM is locked ({state}): unlock it by hand first")
        if self.pin is None:
            raise DriverError(
                self.name, "the SIM asks for its PIN (+CPIN: SIM PIN); give `pin` in the lab file"
            )
        try:
            self._at(f'AT+CPIN="{self.pin}"')
        except AtCommandError as exc:
            # the same failure, without the PIN in the message; a SIM locks after 3 wrong PINs
            raise AtCommandError(
                self.name, 'AT+CPIN="****"', exc.final, exc.code, exc.reason, exc.exchanges
            ) from None
        deadline = time.monotonic() + SIM_READY_TIMEOUT_S
        while self._value(self._at("AT+CPIN?"), "+CPIN") != "READY":
            if time.monotonic() > deadline:
                raise DriverError(self.name, "the SIM took the PIN but never became READY")
            time.sleep(0.2)

    def _read_identity(self) -> None:
        def line(command: str) -> str | None:
            try:
                lines = self._at(command).lines
            except AtCommandError:
                return None
            text = lines[0] if lines else ""
            return text.split(":", 1)[1].strip().strip('"') if text.startswith("+") else text

        identity: dict[str, str | None] = {
            "manufacturer": line("AT+CGMI"),
            "model": line("AT+CGMM"),
            "revision": line("AT+CGMR"),
            "imei": line("AT+CGSN"),
        }
        deadline = time.monotonic() + SIM_READY_TIMEOUT_S
        while True:
            try:
                lines = self._at("AT+CIMI").lines
                identity["imsi"] = lines[0] if lines else None
                break
            except AtCommandError as exc:
                if exc.code != 14 or time.monotonic() > deadline:  # 14: SIM busy
                    raise
                time.sleep(0.2)
        self.identity = identity
        self.context.emit("radio.identity", {**identity, "wall": time.time()})

    # ---------------------------------------------------------------- registration

    def _salvage(self, response: AtResponse) -> None:
        """Registration URCs that landed among a set command's lines (same name)."""
        wall = response.sent_wall + response.elapsed_s
        for name in ("+CEREG", "+CREG"):
            for text in response.values(name):
                self._registration_text(name, text, "urc", wall)

    def _registration_text(self, name: str, text: str, source: str, wall: float) -> int | None:
        registration = parse_registration(text)
        if registration is None:
            return None
        self._note_registration(registration, "eps" if name == "+CEREG" else "cs", source, wall)
        return registration.stat

    def _query_registration(self) -> int | None:
        response = self._at("AT+CEREG?")
        wall = response.sent_wall + response.elapsed_s
        stat = None
        for text in response.values("+CEREG"):
            if is_read_form(text):
                stat = self._registration_text("+CEREG", text, "query", wall)
            else:
                self._registration_text("+CEREG", text, "urc", wall)
        return stat

    def _note_registration(self, reg: Registration, domain: str, source: str, wall: float) -> None:
        fields: dict[str, Any] = {
            "stat": reg.stat,
            "stat_name": STAT_NAMES.get(reg.stat, f"stat {reg.stat}"),
            "tac": reg.tac,
            "ci": reg.ci,
            "act": reg.act,
            "source": source,
            "wall": wall,
        }
        if reg.reject_cause is not None:
            fields["reject_cause"] = reg.reject_cause
        if domain == "cs":
            with self._lock:
                changed = reg.stat != self._cs_stat
                self._cs_stat = reg.stat
            if changed or source == "urc":
                self.context.emit("radio.cs_registration", fields)
            return
        with self._lock:
            stat_changed = reg.stat != self._stat
            changed = stat_changed or (reg.tac, reg.ci) != self._cell
            was_registered = self._stat in REGISTERED
            self._stat, self._cell = reg.stat, (reg.tac, reg.ci)
            if stat_changed:
                self.history.append(
                    {"wall": wall, "stat": reg.stat, "stat_name": fields["stat_name"]}
                )
                registered = reg.stat in REGISTERED
                if was_registered and not registered:
                    self.outages.append(
                        {"lost_wall": wall, "regained_wall": None, "duration_s": None}
                    )
                    self._plmn = None
                elif registered and self.outages and self.outages[-1]["regained_wall"] is None:
                    outage = self.outages[-1]
                    outage["regained_wall"] = wall
                    outage["duration_s"] = round(wall - outage["lost_wall"], 6)
        if changed or source == "urc":
            self.context.emit("radio.registration", fields)
        if stat_changed:
            self._reg_changed.set()
            if reg.stat in REGISTERED and source != "query":
                self._tasks.put(self._refresh_operator)

    def _wait_registered(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self._reg_changed.clear()
            stat = self._query_registration()
            if stat in REGISTERED or self._stat in REGISTERED:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                name = STAT_NAMES.get(stat, "?") if stat is not None else "no answer"
                raise DriverError(
                    self.name,
                    f"not registered within {timeout_s:g} s (last +CEREG stat {stat}: {name})",
                    self._tail(),
                )
            self._reg_changed.wait(min(0.5, remaining))

    def _refresh_operator(self) -> None:
        response = self._at("AT+COPS?")
        params = split_params(self._value(response, "+COPS"))
        plmn = params[2] if len(params) > 2 and params[2] else None
        with self._lock:
            changed, self._plmn = plmn != self._plmn, plmn
        if changed:
            act = int(params[3]) if len(params) > 3 and params[3].isdigit() else None
            wall = response.sent_wall + response.elapsed_s
            self.context.emit(
                "radio.operator", {"plmn": plmn, "mode": params[0], "act": act, "wall": wall}
            )

    def _select_plmn(self, plmn: str) -> None:
        try:
            if plmn == "auto":
                self._at("AT+COPS=0")
            else:
                self._at(f'AT+COPS=1,2,"{plmn}",7', timeout_s=self.register_timeout_s)
        except AtCommandError as exc:
            raise DriverError(
                self.name,
                f"selecting PLMN {plmn} failed: {exc.final} ({exc.reason})",
                exc.exchanges,
            ) from exc

    # ---------------------------------------------------------------- PDN, function, signal

    def _ensure_pdn(self) -> None:
        """After attach the default bearer is normally up; bring it up if it is not."""
        states = self._at("AT+CGACT?").values("+CGACT")
        active = any(split_params(s)[:2] == [str(self.cid), "1"] for s in states)
        if not active:
            self._at(f"AT+CGACT=1,{self.cid}", timeout_s=self.register_timeout_s)
        self._read_pdn("query", None)

    def _read_pdn(self, source: str, wall: float | None) -> tuple[bool, str | None]:
        response = self._at(f"AT+CGPADDR={self.cid}")
        address = None
        for text in response.values("+CGPADDR"):
            params = split_params(text)
            if params[0] == str(self.cid) and len(params) > 1 and params[1]:
                address = params[1]
        self._note_pdn(address is not None, address, source, wall or time.time())
        return address is not None, address

    def _note_pdn(self, active: bool, address: str | None, source: str, wall: float) -> None:
        with self._lock:
            changed = self._pdn != (active, address)
            self._pdn = (active, address)
        if changed:
            self.context.emit(
                "radio.pdn",
                {"cid": self.cid, "active": active, "address": address, "source": source,
                 "wall": wall},
            )  # fmt: skip

    def _read_function(self, source: str) -> int:
        text = split_params(self._value(self._at("AT+CFUN?"), "+CFUN"))[0]
        if not text.isdigit():
            raise DriverError(self.name, f"unreadable +CFUN answer {text!r}", self._tail())
        self._note_function(int(text), source, time.time())
        return int(text)

    def _note_function(self, fun: int, source: str, wall: float) -> None:
        with self._lock:
            self._fun = fun
        self.context.emit("radio.function", {"fun": fun, "source": source, "wall": wall})

    def _read_signal(self, source: str) -> dict[str, Any]:
        sample: dict[str, Any] = {"source": source}
        response = self._at("AT+CESQ")
        sample["rsrq_db"], sample["rsrp_dbm"] = decode_cesq(self._value(response, "+CESQ"))
        csq = self._value(self._at("AT+CSQ"), "+CSQ")
        sample["csq"], sample["rssi_dbm"] = decode_csq(csq)
        if self.quectel:
            for text in self._at('AT+QENG="servingcell"').values("+QENG"):
                if text.startswith('"servingcell"'):
                    sample.update(decode_qeng(text))
        sample["wall"] = response.sent_wall + response.elapsed_s
        rsrp = sample["rsrp_dbm"]
        with self._lock:
            self._signal_samples += 1
            if rsrp is not None:
                low, high = self._rsrp_range or (rsrp, rsrp)
                self._rsrp_range = (min(low, rsrp), max(high, rsrp))
        self.context.emit("radio.signal", sample)
        return sample

    # ---------------------------------------------------------------- URCs and threads

    def _on_urc(self, urc: Urc) -> None:
        with self._lock:
            self._urc_counts[urc.name] = self._urc_counts.get(urc.name, 0) + 1
        if urc.name in ("+CEREG", "+CREG"):
            self._registration_text(urc.name, urc.text, "urc", urc.wall)
        elif urc.name == "+CGEV":
            self.context.emit("radio.cgev", {"text": urc.text, "wall": urc.wall})
            self._on_cgev(urc)
        elif urc.name == "+CFUN" and urc.text.isdigit():
            self._note_function(int(urc.text), "urc", urc.wall)
        elif urc.name == "RDY":
            self._on_reboot(urc)

    def _on_cgev(self, urc: Urc) -> None:
        dedicated = _DEDICATED.match(urc.text)
        if dedicated is not None:
            self._on_bearer(dedicated, urc.wall)
            return
        words = urc.text.split()
        if words[-1:] == [str(self.cid)] and "ACT" in words and "PDN" in words:
            wall = urc.wall

            def read_address() -> None:
                self._read_pdn("urc", wall)

            self._tasks.put(read_address)
        elif ("DEACT" in words and words[-1:] == [str(self.cid)]) or "DETACH" in words:
            self._note_pdn(False, None, "urc", urc.wall)

    def _on_bearer(self, match: re.Match[str], wall: float) -> None:
        """A dedicated bearer came or went: an event now, its QoS read off the URC thread."""
        origin, verb, p_cid, cid = match.group(1), match.group(2), match.group(3), match.group(4)
        change: dict[str, Any] = {
            "what": "activated" if verb == "ACT" else "released",
            "origin": origin.lower(),
            "p_cid": int(p_cid),
            "cid": int(cid),
            "event_type": None if match.group(5) is None else int(match.group(5)),
            "wall": wall,
        }
        with self._lock:
            self.bearers.append(change)
        self.context.emit("radio.bearer", dict(change))
        if verb == "ACT":

            def read_qos() -> None:
                self._read_bearer_qos(change)

            self._tasks.put(read_qos)

    def _read_bearer_qos(self, change: dict[str, Any]) -> None:
        """``+CGEQOSRDP: <cid>,<QCI>,<DL_GBR>,<UL_GBR>,<DL_MBR>,<UL_MBR>`` of the new bearer."""
        response = self._at(f"AT+CGEQOSRDP={change['cid']}")
        for text in response.values("+CGEQOSRDP"):
            params = split_params(text)
            if params[0] != str(change["cid"]) or len(params) < 2:
                continue
            numbers = [int(p) if p.isdigit() else None for p in params[1:6]]
            numbers += [None] * (5 - len(numbers))
            qos = dict(zip(("qci", "dl_gbr_kbps", "ul_gbr_kbps", "dl_mbr_kbps", "ul_mbr_kbps"),
                           numbers, strict=True))  # fmt: skip
            with self._lock:
                change.update(qos)
            self.context.emit(
                "radio.bearer_qos",
                {"cid": change["cid"], **qos, "wall": response.sent_wall + response.elapsed_s},
            )

    def _on_reboot(self, urc: Urc) -> None:
        """The modem restarted (power came back, or a reset): it is unregistered and has
        forgotten its configuration."""
        with self._lock:
            self._reboots += 1
            self._switched_off = False  # it comes up with the radio on
        self.context.emit("radio.reboot", {"wall": urc.wall})
        self._note_registration(Registration(0), "eps", "reboot", urc.wall)
        self._note_pdn(False, None, "reboot", urc.wall)
        self._tasks.put(self._reconfigure)

    def _reconfigure(self) -> None:
        try:
            self._configure()
            self._query_registration()
            self.context.emit("radio.reconfigured", {"ok": True, "wall": time.time()})
        except DriverError as exc:
            self.context.emit(
                "radio.reconfigured", {"ok": False, "error": str(exc), "wall": time.time()}
            )

    def _work(self) -> None:
        """Follow-ups of URCs that need commands, off the URC thread so that URCs keep flowing
        while a long command (a manual PLMN selection) holds the channel."""
        while True:
            task = self._tasks.get()
            if task is None or self._closing.is_set():
                return
            try:
                task()
            except Exception as exc:  # one failed follow-up must not stop the others
                with self._lock:
                    self._task_errors += 1
                with contextlib.suppress(Exception):
                    self.context.emit("radio.task_error", {"error": str(exc), "wall": time.time()})

    def _poll(self) -> None:
        while not self._closing.wait(self.poll_signal_s):
            channel = self._channel
            if channel is None or channel.lost is not None:
                return
            try:
                self._read_signal("poll")
                self._query_registration()
            except DriverError as exc:
                if self._closing.is_set():
                    return
                with self._lock:
                    self._poll_errors += 1
                    first, self._unresponsive = not self._unresponsive, True
                if first:
                    self.context.emit(
                        "radio.unresponsive", {"error": str(exc), "wall": time.time()}
                    )
                continue
            if self._unresponsive:
                self._unresponsive = False
                self.context.emit("radio.responsive", {"wall": time.time()})

    def _on_lost(self, why: str) -> None:
        if self._closing.is_set():
            return
        with self._lock:
            if self._faulted:
                return
            self._faulted = True
        emulator = self._emulator
        if emulator is not None:
            with contextlib.suppress(Exception):
                emulator.proc.wait(timeout=0.5)
            if emulator.proc.returncode is not None:
                why += f" (the modem emulator exited with code {emulator.proc.returncode})"
        self.context.emit("radio.lost", {"why": why, "wall": time.time()})
        self.context.fault(f"connection lost: {why}")

    def _tail(self) -> list[str]:
        return self._transcript.tail() if self._transcript is not None else []

    # ---------------------------------------------------------------- actions

    def perform(self, action: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        allowed = {"select_plmn": {"plmn"}}.get(action, set())
        extra = sorted(set(args) - allowed)
        if extra and action in self.actions:
            raise DriverError(self.name, f"{action}: unknown argument(s) {extra}")
        if action == "radio_off":
            self._at("AT+CFUN=4")
            self._switched_off = True
            self._note_function(4, "action", time.time())
            return {"fun": 4}
        if action == "radio_on":
            self._at("AT+CFUN=1")
            self._switched_off = False
            self._note_function(1, "action", time.time())
            return {"fun": 1}
        if action == "select_plmn":
            plmn = args.get("plmn")
            if not isinstance(plmn, str) or not (plmn == "auto" or _PLMN.match(plmn)):
                raise DriverError(self.name, f"select_plmn: plmn must be MCC+MNC or auto: {plmn!r}")
            self._select_plmn(plmn)
            return {"plmn": plmn, "mode": "automatic" if plmn == "auto" else "manual"}
        if action == "pdn_activate":
            self._at(f"AT+CGACT=1,{self.cid}", timeout_s=self.register_timeout_s)
            active, address = self._read_pdn("action", None)
            return {"cid": self.cid, "active": active, "address": address}
        if action == "pdn_deactivate":
            self._at(f"AT+CGACT=0,{self.cid}")
            active, address = self._read_pdn("action", None)
            return {"cid": self.cid, "active": active, "address": address}
        if action == "read_signal":
            return self._read_signal("action")
        return super().perform(action, args)

    # ---------------------------------------------------------------- end

    def counters(self) -> Mapping[str, Any]:
        with self._lock:
            low, high = self._rsrp_range or (None, None)
            active, address = self._pdn or (None, None)
            channel = self._channel or self._closed_channel
            return {
                "identity": dict(self.identity),
                "state": {
                    "stat": self._stat,
                    "stat_name": None if self._stat is None else STAT_NAMES.get(self._stat),
                    "plmn": self._plmn,
                    "fun": self._fun,
                    "pdn_active": active,
                    "pdn_address": address,
                },
                "registration": [dict(h) for h in self.history],
                "outages": [dict(o) for o in self.outages],
                "bearers": [dict(b) for b in self.bearers],
                "signal": {
                    "samples": self._signal_samples,
                    "rsrp_min_dbm": low,
                    "rsrp_max_dbm": high,
                    "poll_errors": self._poll_errors,
                },
                "task_errors": self._task_errors,
                "channel": dict(channel.counts) if channel is not None else {},
                "urcs": dict(self._urc_counts),
                "reboots": self._reboots,
                "transcript": str(self.transcript_path),
            }

    def safe_state(self) -> None:
        """Nothing to release on a modem: leave it registered (switch the radio back on if the
        timeline switched it off) or switch it off, as ``safe_state`` says. Never raises."""
        done: list[str] = []
        errors: list[str] = []
        try:
            channel = self._channel
            if channel is None or not channel.is_open:
                errors.append("not connected")
            elif self.safe_mode == "off":
                self._at("AT+CFUN=4")
                done.append("AT+CFUN=4")
            elif self._switched_off:
                self._at("AT+CFUN=1")
                self._switched_off = False
                done.append("AT+CFUN=1")
        except Exception as exc:  # the safe state must never raise
            errors.append(str(exc))
        with contextlib.suppress(Exception):
            self.context.emit(
                "radio.safe_state",
                {"mode": self.safe_mode, "done": done, "errors": errors, "wall": time.time()},
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._shutdown()

    def _shutdown(self) -> None:
        self._closing.set()
        self._tasks.put(None)
        # let a command in flight finish first: AtChannel.close() does not wake a waiting
        # command, which would then sit out its whole timeout
        for thread in (self._poller, self._worker):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=self.timeout_s + 2.0)
        self._poller = self._worker = None
        channel, self._channel = self._channel, None
        if channel is not None:
            self._closed_channel = channel  # its counts stay readable
            channel.close()
        if self._transcript is not None:
            self._transcript.close()
        emulator, self._emulator = self._emulator, None
        if emulator is not None:
            emulator.stop()
