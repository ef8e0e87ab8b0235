"""The emulated LTE modem behind :mod:`drivers.radio.modem_emulator`: its 3GPP TS 27.007 command
set, its state (functionality, SIM, PLMN selection, EPS registration, PDN contexts) and the radio
physics that drive it (received power per network minus the attenuator's setting, the power
supply's output), plus the spec tables the AT modem driver decodes with (index scales of
``+CSQ``/``+CESQ``, registration states). It does no I/O: the emulator process feeds it bytes,
physics and the clock, and writes out what it produces, so every behaviour here is the same over
a pty or TCP. Times are ``time.monotonic()`` seconds passed in by the caller. Networks with
emulated cores gate their attach on the core's answer through a
:class:`~drivers.radio.core_gate.CoreGate` (the sockets are :mod:`drivers.radio.core_link`'s).
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from drivers.radio.at import CME_ERRORS, split_params
from drivers.radio.core_gate import CoreBearer, CoreEvent, CoreGate, CorePort

__all__ = [
    "CESQ_RSRP",
    "CESQ_RSRQ",
    "CSQ_RSSI",
    "STAT_NAMES",
    "IndexScale",
    "Modem",
    "ModemConfig",
    "NetworkConfig",
    "Output",
]

# --------------------------------------------------------------------------------------------
# Spec tables (shared with the driver)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexScale:
    """A quantity reported as an index: index ``n`` stands for ``[base + n*step, base +
    (n+1)*step)``, index 0 for everything below, ``last`` for everything above and ``unknown``
    for "not known or not detectable". :meth:`decode` gives the lower bound of the interval."""

    name: str
    reference: str
    base: float
    step: float
    last: int
    unknown: int

    def encode(self, value: float | None) -> int:
        if value is None:
            return self.unknown
        index = math.floor((value - self.base) / self.step + 1e-9)
        return min(max(index, 0), self.last)

    def decode(self, index: int) -> float | None:
        if index == self.unknown or not 0 <= index <= self.last:
            return None
        return self.base + self.step * index


CSQ_RSSI = IndexScale("rssi", "TS 27.007 §8.5 +CSQ [mem]", -113.0, 2.0, 31, 99)
"""0 <= -113 dBm, 1 = -111, 2..30 = -109..-53 (-113 + 2n), 31 >= -51, 99 unknown."""
CESQ_RSRP = IndexScale("rsrp", "TS 27.007 §8.69 +CESQ / TS 36.133 §9.1.4 [src: Telit ME910]",
                       -141.0, 1.0, 97, 255)  # fmt: skip
"""0 < -140 dBm, n = [-141+n, -140+n) dBm, 97 >= -44 dBm, 255 unknown."""
CESQ_RSRQ = IndexScale("rsrq", "TS 27.007 §8.69 +CESQ / TS 36.133 §9.1.7 [src: Telit ME910]",
                       -20.0, 0.5, 34, 255)  # fmt: skip
"""0 < -19.5 dB, n = [-20+n/2, -19.5+n/2) dB, 34 >= -3 dB, 255 unknown."""

STAT_NAMES: dict[int, str] = {
    0: "not registered",
    1: "registered home",
    2: "searching",
    3: "denied",
    4: "unknown",
    5: "registered roaming",
}
"""``<stat>`` of ``+CREG``/``+CEREG`` (TS 27.007 §7.2, §10.1.22) [mem, spec notes section 3]."""
REGISTERED = (1, 5)
ACT_EUTRAN = 7
"""``<AcT>`` E-UTRAN (TS 27.007 §7.3) [mem]."""
EMM_CAUSE_PLMN_NOT_ALLOWED = 11
"""EMM reject cause #11 "PLMN not allowed" (TS 24.301 §9.9.3.9) [mem]: the ``+CEREG`` n=3
reject cause reported for a forbidden network."""

CME_NOT_ALLOWED = 3
CME_NOT_SUPPORTED = 4
CME_SIM_PIN_REQUIRED = 11
CME_SIM_PUK_REQUIRED = 12
CME_INCORRECT_PASSWORD = 16
CME_NO_SERVICE = 30
CME_NETWORK_NOT_ALLOWED = 32
"""``+CME ERROR`` codes (TS 27.007 §9.2.1) [mem]. Choices: a known command with a value it does
not support answers 4; a manual ``+COPS`` to a network the SIM may not use answers 32 ("network
not allowed - emergency calls only", which is what a registration rejected with cause #11
leaves; Wavecom-class modems answer a +CME error here, Siemens MC35 answers OK and reports stat
3, so the driver must not rely on either); a PLMN that is not there answers 30. Unknown commands
answer a plain ERROR whatever +CMEE says, as Quectel and V.250 do."""

BANDWIDTH_RBS: dict[int, int] = {0: 6, 1: 15, 2: 25, 3: 50, 4: 75, 5: 100}
"""Quectel bandwidth code (0 = 1.4 MHz ... 5 = 20 MHz) -> resource blocks (TS 36.101 Table
5.6-1) [mem; codes: spec notes 3.1]."""
NOISE_PER_RE_DBM = -174.0 + 10 * math.log10(15_000) + 7.0
"""Thermal noise in one 15 kHz resource element plus a 7 dB UE noise figure [mem]: the floor
that caps SINR as the attenuation grows (SINR = min(configured, RSRP - floor))."""

Stat = int

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

_PLMN = re.compile(r"^\d{5,6}$")


def _hex_or_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer or a hex string, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise ValueError(f"{what} must be an integer or a hex string, got {value!r}")


def _number(data: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return float(value)


def _text(data: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be text, got {value!r}")
    return value


@dataclass(frozen=True)
class NetworkConfig:
    """One PLMN the modem can see: identity, cell, and received power at 0 dB attenuation."""

    plmn: str
    long: str
    short: str
    tac: int
    ci: int
    pci: int
    earfcn: int
    band: int
    rsrp_dbm: float
    rsrq_db: float
    sinr_db: float
    link: str | None = None
    forbidden: bool = False
    bandwidth: int = 5
    duplex: str = "FDD"
    cores: tuple[str, ...] = ()
    ran: str | None = None
    attenuated: bool = True
    """False: this cell reaches the modem over another RF path than the attenuator's (a
    neighbour country's cell near the border), so an attenuator ramp does not weaken it."""

    KEYS = frozenset(
        {"plmn", "long", "short", "tac", "ci", "pci", "earfcn", "band", "rsrp_dbm", "rsrq_db",
         "sinr_db", "link", "forbidden", "bandwidth", "duplex", "cores", "ran", "attenuated"}
    )  # fmt: skip

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> NetworkConfig:
        unknown = sorted(set(data) - cls.KEYS)
        if unknown:
            raise ValueError(f"unknown network field(s) {unknown}; known: {sorted(cls.KEYS)}")
        plmn = _text(data, "plmn")
        if not _PLMN.match(plmn):
            raise ValueError(f"plmn must be MCC+MNC digits (00101), got {plmn!r}")
        link = data.get("link")
        if link is not None and not isinstance(link, str):
            raise ValueError(f"network {plmn}: link must be a socket path, got {link!r}")
        bandwidth = int(_number(data, "bandwidth", 5))
        if bandwidth not in BANDWIDTH_RBS:
            raise ValueError(f"network {plmn}: bandwidth code must be 0..5, got {bandwidth}")
        duplex = _text(data, "duplex", "FDD").upper()
        if duplex not in ("FDD", "TDD"):
            raise ValueError(f"network {plmn}: duplex must be FDD or TDD, got {duplex!r}")
        cores = data.get("cores", [])
        if (
            not isinstance(cores, Sequence)
            or isinstance(cores, str)
            or not all(isinstance(c, str) and c for c in cores)
        ):
            raise ValueError(f"network {plmn}: cores must be a list of attach socket paths")
        ran = data.get("ran")
        if (ran is None and cores) or (ran is not None and not (isinstance(ran, str) and ran)):
            raise ValueError(f"network {plmn}: a network with cores needs ran (its RAN node name)")
        return cls(
            plmn=plmn,
            long=_text(data, "long", f"PLMN {plmn}"),
            short=_text(data, "short", plmn),
            tac=_hex_or_int(data.get("tac", 1), "tac") & 0xFFFF,
            ci=_hex_or_int(data.get("ci", 1), "ci") & 0xFFFFFFF,
            pci=int(_number(data, "pci", 1)),
            earfcn=int(_number(data, "earfcn", 1300)),
            band=int(_number(data, "band", 3)),
            rsrp_dbm=_number(data, "rsrp_dbm", -80.0),
            rsrq_db=_number(data, "rsrq_db", -9.0),
            sinr_db=_number(data, "sinr_db", 20.0),
            link=link,
            forbidden=bool(data.get("forbidden", False)),
            bandwidth=bandwidth,
            duplex=duplex,
            cores=tuple(cores),
            ran=ran,
            attenuated=bool(data.get("attenuated", True)),
        )

    @property
    def mcc(self) -> str:
        return self.plmn[:3]

    @property
    def mnc(self) -> str:
        return self.plmn[3:]


@dataclass(frozen=True)
class FileCoupling:
    """Where the modem reads a physics value: a JSON state file and a key in its ``settings``."""

    state_file: str
    key: str


@dataclass(frozen=True)
class PowerCoupling:
    state_file: str
    output_key: str
    voltage_key: str
    min_voltage_v: float = 3.3


@dataclass(frozen=True)
class ModemConfig:
    """The emulator's configuration file (JSON, written by the driver); see the module
    :mod:`drivers.radio.modem_emulator` for the format."""

    manufacturer: str = "Quectel"
    model: str = "EC25"
    revision: str = "EC25EFAR06A03M4G"
    imei: str = "866758040000017"
    imsi: str = "001010000000001"
    pin: str | None = None
    puk: str = "12345678"
    home_plmn: str = "00101"
    networks: tuple[NetworkConfig, ...] = ()
    apn: str = "internet"
    pdn_address: str = "10.45.0.2"
    qci: int = 9
    attach_s: float = 0.3
    boot_s: float = 0.2
    min_rsrp_dbm: float = -120.0
    hysteresis_db: float = 3.0
    smsc: str = "+99900000000"
    attenuator: FileCoupling | None = None
    power: PowerCoupling | None = None
    block_reason: str = "no-service:modem"
    k: str | None = None
    opc: str | None = None
    node: str | None = None
    core_detection_s: float = 1.0
    echo_interval_s: float = 0.05

    KEYS = frozenset(
        {"identity", "imsi", "pin", "puk", "home_plmn", "networks", "apn", "pdn_address", "qci",
         "attach_s", "boot_s", "min_rsrp_dbm", "hysteresis_db", "smsc", "attenuator", "power",
         "block_reason", "k", "opc", "node", "core_detection_s", "echo_interval_s"}
    )  # fmt: skip

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ModemConfig:
        """Validate a configuration; raises ValueError naming the bad field."""
        unknown = sorted(set(data) - cls.KEYS)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; known: {sorted(cls.KEYS)}")
        identity = data.get("identity") or {}
        if not isinstance(identity, Mapping):
            raise ValueError("identity must be a mapping")
        bad = sorted(set(identity) - {"manufacturer", "model", "revision", "imei"})
        if bad:
            raise ValueError(f"unknown identity field(s) {bad}")
        defaults = cls()
        home = _text(data, "home_plmn", defaults.home_plmn)
        if not _PLMN.match(home):
            raise ValueError(f"home_plmn must be MCC+MNC digits, got {home!r}")
        raw_networks = data.get("networks")
        if raw_networks is None:
            raw_networks = [{"plmn": home, "long": "Testbed Home", "short": "Home"}]
        if not isinstance(raw_networks, Sequence) or isinstance(raw_networks, str):
            raise ValueError("networks must be a list")
        networks = tuple(NetworkConfig.from_mapping(n) for n in raw_networks)
        if len({n.plmn for n in networks}) != len(networks):
            raise ValueError("networks: each plmn may appear once")
        pin = data.get("pin")
        if pin is not None and not (isinstance(pin, str) and pin.isdigit() and 4 <= len(pin) <= 8):
            raise ValueError(f"pin must be null or 4-8 digits as text, got {pin!r}")
        imsi = _text(data, "imsi", home + "0000000001")
        if not (imsi.isdigit() and 6 <= len(imsi) <= 15):
            raise ValueError(f"imsi must be up to 15 digits, got {imsi!r}")
        attenuator = data.get("attenuator")
        power = data.get("power")
        qci = int(_number(data, "qci", 9))
        if not 1 <= qci <= 255:
            raise ValueError(f"qci must be 1..255, got {qci}")
        config = cls(
            manufacturer=str(identity.get("manufacturer", defaults.manufacturer)),
            model=str(identity.get("model", defaults.model)),
            revision=str(identity.get("revision", defaults.revision)),
            imei=str(identity.get("imei", defaults.imei)),
            imsi=imsi,
            pin=pin,
            puk=_text(data, "puk", defaults.puk),
            home_plmn=home,
            networks=networks,
            apn=_text(data, "apn", defaults.apn),
            pdn_address=_text(data, "pdn_address", defaults.pdn_address),
            qci=qci,
            attach_s=_number(data, "attach_s", defaults.attach_s),
            boot_s=_number(data, "boot_s", defaults.boot_s),
            min_rsrp_dbm=_number(data, "min_rsrp_dbm", defaults.min_rsrp_dbm),
            hysteresis_db=_number(data, "hysteresis_db", defaults.hysteresis_db),
            smsc=_text(data, "smsc", defaults.smsc),
            attenuator=None if attenuator is None else _file_coupling(attenuator),
            power=None if power is None else _power_coupling(power),
            block_reason=_text(data, "block_reason", defaults.block_reason),
            k=_usim_key(data, "k"),
            opc=_usim_key(data, "opc"),
            node=None if data.get("node") is None else _text(data, "node"),
            core_detection_s=_number(data, "core_detection_s", defaults.core_detection_s),
            echo_interval_s=_number(data, "echo_interval_s", defaults.echo_interval_s),
        )
        if config.attach_s < 0 or config.boot_s < 0 or config.hysteresis_db < 0:
            raise ValueError("attach_s, boot_s and hysteresis_db must be >= 0")
        if config.core_detection_s <= 0 or config.echo_interval_s <= 0:
            raise ValueError("core_detection_s and echo_interval_s must be > 0")
        if any(n.cores for n in networks) and (config.k is None or config.opc is None):
            raise ValueError("networks with cores authenticate the USIM: give k and opc")
        return config


def _usim_key(data: Mapping[str, Any], key: str) -> str | None:
    """K or OPc of the USIM (TS 35.206): 128 bits as 32 hex digits, kept in lower case."""
    value = data.get(key)
    if value is None:
        return None
    if not (isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f]{32}", value)):
        raise ValueError(f"{key} must be 32 hex digits (128 bits), got {value!r}")
    return value.lower()


def _file_coupling(data: Any) -> FileCoupling:
    if not isinstance(data, Mapping) or set(data) != {"state_file", "key"}:
        raise ValueError(f"attenuator must be null or {{state_file, key}}, got {data!r}")
    return FileCoupling(_text(data, "state_file"), _text(data, "key"))


def _power_coupling(data: Any) -> PowerCoupling:
    keys = {"state_file", "output_key", "voltage_key", "min_voltage_v"}
    if not isinstance(data, Mapping) or not set(data) <= keys or "state_file" not in data:
        raise ValueError(f"power must be null or {{{', '.join(sorted(keys))}}}, got {data!r}")
    return PowerCoupling(
        _text(data, "state_file"),
        _text(data, "output_key", "OUTP1"),
        _text(data, "voltage_key", "SOUR1:VOLT"),
        _number(data, "min_voltage_v", 3.3),
    )


# --------------------------------------------------------------------------------------------
# The modem
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """Something the modem sends: the echo of received bytes, a response (information lines and
    a final result code) or an unsolicited result code. The emulator frames it."""

    kind: Literal["echo", "response", "urc"]
    lines: tuple[str, ...] = ()
    final: str = ""
    data: bytes = b""


class AtFail(Exception):
    """A command failed: ``code`` None = plain ``ERROR`` (unknown command, bad syntax), else a
    ``+CME ERROR`` code shown as CMEE says."""

    def __init__(self, code: int | None = None) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class _Deferred:
    """A command whose final result waits for the network (manual ``+COPS``, ``+CGATT=1``, a
    scan): ``check`` returns None while undecided, else the information lines, or raises
    :class:`AtFail`. The commands after it on the same line run once it is decided."""

    check: Callable[[float], list[str] | None]
    deadline: float
    rest: list[str]
    lines: list[str]


@dataclass
class _Attach:
    network: NetworkConfig
    stat: Stat
    due: float


@dataclass
class _Context:
    pdp_type: str
    apn: str


@dataclass
class _Ta:
    """Terminal adapter settings: what ``ATZ``/``AT&F`` and a reboot restore."""

    echo: bool = True
    cmee: int = 1
    creg_n: int = 0
    cereg_n: int = 0
    cgerep: tuple[int, int] = (0, 0)
    cops_format: int = 0
    cmgf: int = 0
    cscs: str = "GSM"
    cnmi: str = "2,1,0,0,0"
    clip: int = 0
    crc: int = 0
    cvhu: int = 0
    s_registers: dict[int, int] = field(
        default_factory=lambda: {0: 0, 3: 13, 4: 10, 5: 8, 6: 2, 7: 0, 8: 2, 10: 15}
    )


MAX_LINE = 2048
PDP_TYPES = ("IP", "IPV6", "IPV4V6", "PPP", "NON-IP")
CID_RANGE = range(1, 16)
SIM_PIN_ATTEMPTS = 3
DEFERRED_LIMIT_S = 60.0
"""The longest a manual selection or attach waits for the network before +CME ERROR: 30 (real
modems allow up to 180 s)."""
SIM_PROTECTED = frozenset(
    {"+CIMI", "+COPS", "+CGATT", "+CGACT", "+CGPADDR", "+CGEQOSRDP", "+CPMS", "+CSCA", "+CNUM",
     "+CGCONTRDP", "+CGSCONTRDP"}
)  # fmt: skip
"""Commands that need the SIM unlocked (+CME ERROR: 11 before the PIN)."""


class Modem:
    """One emulated modem. Feed it with :meth:`feed`, :meth:`set_physics` and :meth:`tick`;
    collect what it sends with :meth:`take_output`."""

    def __init__(
        self,
        config: ModemConfig,
        now: float,
        *,
        powered: bool = True,
        attenuation_db: float = 0.0,
        core: CorePort | None = None,
    ) -> None:
        self.config = config
        self.gate = CoreGate((n.plmn for n in config.networks if n.cores), core)
        self.outbox: list[Output] = []
        self.attenuation_db = attenuation_db
        self.powered = powered
        self.booting_until: float | None = None
        self.reboots = 0
        self.ta = _Ta()
        self.fun = 1
        self.pin = config.pin
        self.sim = "SIM PIN" if config.pin else "READY"
        self.pin_attempts = SIM_PIN_ATTEMPTS
        self.cops_mode = 0
        self.cops_plmn: str | None = None
        self.attach_wanted = True
        self.contexts: dict[int, _Context] = {1: _Context("IP", config.apn)}
        self.wanted: set[int] = {1}
        self.active: set[int] = set()
        self.stat: Stat = 0
        self.serving: NetworkConfig | None = None
        self.attach: _Attach | None = None
        self._reported: dict[str, tuple[int, ...]] = {}
        self._line = bytearray()
        self._queue: deque[str] = deque()
        self._deferred: _Deferred | None = None
        self._last_line = ""
        self.commands = 0
        self._handlers: dict[str, Callable[[str, str, float], list[str] | _Deferred]] = {
            "+CGMI": self._cmd_cgmi, "+GMI": self._cmd_cgmi,
            "+CGMM": self._cmd_cgmm, "+GMM": self._cmd_cgmm,
            "+CGMR": self._cmd_cgmr, "+GMR": self._cmd_cgmr,
            "+CGSN": self._cmd_cgsn, "+GSN": self._cmd_cgsn,
            "+CIMI": self._cmd_cimi, "+CMEE": self._cmd_cmee, "+CPIN": self._cmd_cpin,
            "+CFUN": self._cmd_cfun, "+COPS": self._cmd_cops, "+CREG": self._cmd_creg,
            "+CEREG": self._cmd_cereg, "+CSQ": self._cmd_csq, "+CESQ": self._cmd_cesq,
            "+QENG": self._cmd_qeng, "+CGDCONT": self._cmd_cgdcont, "+CGACT": self._cmd_cgact,
            "+CGPADDR": self._cmd_cgpaddr, "+CGEQOSRDP": self._cmd_cgeqosrdp,
            "+CGEREP": self._cmd_cgerep, "+CGATT": self._cmd_cgatt, "+CMGF": self._cmd_cmgf,
            "+CSCS": self._cmd_cscs, "+CNMI": self._cmd_cnmi, "+CLIP": self._cmd_clip,
            "+CRC": self._cmd_crc, "+CVHU": self._cmd_cvhu, "+CSMP": self._cmd_csmp,
            "+CPMS": self._cmd_cpms, "+CSCA": self._cmd_csca, "+CNUM": self._cmd_cnum,
            "+CLAC": self._cmd_clac, "+CGCONTRDP": self._cmd_cgcontrdp,
            "+CGSCONTRDP": self._cmd_cgscontrdp,
        }  # fmt: skip
        if powered:
            self._evaluate(now)

    # ---------------------------------------------------------------- inputs

    @property
    def alive(self) -> bool:
        """Powered and booted: only then does the modem read or send anything."""
        return self.powered and self.booting_until is None

    def feed(self, data: bytes, now: float) -> None:
        """Bytes from the wire: echoed (if on), assembled into lines, executed in order."""
        if not self.alive:
            return
        if self.ta.echo:
            self.outbox.append(Output("echo", data=data))
        for byte in data:
            if byte in (0x0D, 0x0A):
                line = self._line.decode("latin-1").strip()
                self._line.clear()
                if line:
                    self._queue.append(line)
            elif byte in (0x08, 0x7F):
                del self._line[-1:]
            elif len(self._line) < MAX_LINE:
                self._line.append(byte)
        self._run_queue(now)

    def reset_input(self) -> None:
        """A new client: what the old one left half-typed is gone."""
        self._line.clear()

    def set_physics(self, attenuation_db: float, powered: bool, now: float) -> None:
        """The attenuator's setting and the power supply's verdict, as last read."""
        self.attenuation_db = attenuation_db
        if powered and not self.powered:
            self.powered = True
            self._boot(now, fun=1)
        elif not powered and self.powered:
            self._power_off()
        self._evaluate(now)

    def tick(self, now: float) -> None:
        """Let time pass: boot completion, attach completion, deferred results."""
        if self.booting_until is not None and now >= self.booting_until:
            self.booting_until = None
            # what a Quectel module says when its UART comes up
            self._urc("RDY")
            self._urc(f"+CFUN: {self.fun}")
            self._urc(f"+CPIN: {self.sim}")
        self._evaluate(now)

    def next_deadline(self) -> float | None:
        attach = self.attach
        due = attach.due if attach is not None and self._core_ready(attach) else None
        times = [t for t in (self.booting_until, due) if t]
        if self._deferred is not None:
            times.append(self._deferred.deadline)
        return min(times) if times else None

    def take_output(self) -> list[Output]:
        out, self.outbox = self.outbox, []
        return out

    # ---------------------------------------------------------------- power

    def _power_off(self) -> None:
        self.powered = False
        self.booting_until = None
        self.stat, self.serving, self.attach = 0, None, None
        self.active.clear()
        self.gate.hide_all()
        self.gate.sync(None, graceful=False)  # no detach from a modem whose power went
        self.gate.need(())
        self._deferred = None
        self._queue.clear()
        self._line.clear()
        self.outbox.clear()

    def _boot(self, now: float, fun: int) -> None:
        """Power-on or reset: volatile state back to defaults. The PDP context definitions stay
        (they are kept in non-volatile memory on real modems); the PLMN selection goes back to
        automatic."""
        self.reboots += 1
        self.booting_until = now + self.config.boot_s
        self.ta = _Ta()
        self.fun = fun
        self.sim = "SIM PIN" if self.pin else "READY"
        self.pin_attempts = SIM_PIN_ATTEMPTS
        self.cops_mode, self.cops_plmn = 0, None
        self.attach_wanted = True
        self.wanted = {1} & set(self.contexts)
        self.stat, self.serving, self.attach = 0, None, None
        self.active.clear()
        self.gate.hide_all()
        self.gate.forget()
        self._reported.clear()
        self._deferred = None
        self._queue.clear()
        self._line.clear()

    # ---------------------------------------------------------------- radio model

    def rsrp_dbm(self, network: NetworkConfig) -> float:
        return network.rsrp_dbm - (self.attenuation_db if network.attenuated else 0.0)

    def sinr_db(self, network: NetworkConfig) -> float:
        return min(network.sinr_db, self.rsrp_dbm(network) - NOISE_PER_RE_DBM)

    def rssi_dbm(self, network: NetworkConfig) -> float:
        """RSSI over the carrier from RSRQ = N x RSRP / RSSI (TS 36.214 §5.1.3) [mem]."""
        rbs = BANDWIDTH_RBS[network.bandwidth]
        return self.rsrp_dbm(network) + 10 * math.log10(rbs) - network.rsrq_db

    def _usable(self, network: NetworkConfig) -> bool:
        """Coverage with hysteresis: a cell the modem is on (or attaching to) serves down to
        ``min_rsrp_dbm``; another one needs ``hysteresis_db`` more."""
        attaching = self.attach is not None and self.attach.network is network
        holding = network is self.serving or attaching
        margin = 0.0 if holding else self.config.hysteresis_db
        if network.plmn in self.gate.down:
            return False  # no core alive behind the cell: as good as no coverage
        return self.rsrp_dbm(network) >= self.config.min_rsrp_dbm + margin

    def network(self, plmn: str | None) -> NetworkConfig | None:
        return next((n for n in self.config.networks if n.plmn == plmn), None)

    def _home(self, network: NetworkConfig) -> bool:
        return network.plmn == self.config.home_plmn

    def _desired(self) -> tuple[Stat, NetworkConfig | None]:
        if (not self.alive or self.fun != 1 or self.sim != "READY" or self.cops_mode == 2
                or not self.attach_wanted):  # fmt: skip
            return 0, None
        if self.cops_mode in (1, 4):
            chosen = self.network(self.cops_plmn)
            if chosen is not None and self._usable(chosen):
                if not self._denied(chosen):
                    return (1 if self._home(chosen) else 5), chosen
                if self.cops_mode == 1:
                    return 3, chosen
            elif self.cops_mode == 1:
                return 2, None
        allowed = [n for n in self.config.networks if not self._denied(n) and self._usable(n)]
        home = [n for n in allowed if self._home(n)]
        pool, stat = (home, 1) if home else (allowed, 5)
        if not pool:
            return 2, None
        # no reason to leave a cell that still serves, or to restart an attach under way
        for keep in (self.serving, None if self.attach is None else self.attach.network):
            if keep is not None and any(keep is n for n in pool):
                return stat, keep
        return stat, max(pool, key=self.rsrp_dbm)

    def _denied(self, network: NetworkConfig) -> bool:
        """Forbidden on the SIM, or its core rejected the last attach."""
        return network.forbidden or network.plmn in self.gate.rejected

    def _core_ready(self, attach: _Attach) -> bool:
        return attach.stat not in REGISTERED or self.gate.ready(attach.network.plmn)

    def _evaluate(self, now: float) -> None:
        """Move registration towards what the radio conditions and settings allow."""
        if not self.powered:
            return
        old = self.attach.network if self.attach is not None else self.serving
        self._evaluate_radio(now)
        # the core session follows the attach (started with its window) or the registration
        attach = self.attach
        if attach is not None:
            target = attach.network if attach.stat in REGISTERED else None
        else:
            target = self.serving if self.stat in REGISTERED else None
        graceful = old is not None and self._usable(old)
        self.gate.sync(None if target is None else target.plmn, graceful)
        self.gate.need(self._core_needs())
        self._check_deferred(now)

    def _core_needs(self) -> list[str]:
        """Networks whose dead cores are worth probing: the ones the modem would use."""
        if (not self.alive or self.fun != 1 or self.sim != "READY" or self.cops_mode == 2
                or not self.attach_wanted):  # fmt: skip
            return []
        manual = self.network(self.cops_plmn) if self.cops_mode in (1, 4) else None
        floor = self.config.min_rsrp_dbm
        return [n.plmn for n in self.config.networks
                if n is manual or (not self._denied(n) and self.rsrp_dbm(n) >= floor)]  # fmt: skip

    def _evaluate_radio(self, now: float) -> None:
        stat, network = self._desired()
        if network is None:
            self.attach = None
            self._set_stat(stat, None)
        elif self.serving is network and self.stat == stat:
            self.attach = None
        elif (
            self.attach is not None and self.attach.network is network and self.attach.stat == stat
        ):
            if now >= self.attach.due and self._core_ready(self.attach):
                self.attach = None
                self._set_stat(stat, network)
        else:
            self.attach = _Attach(network, stat, now + self.config.attach_s)
            self._set_stat(2, None)
            if self.config.attach_s <= 0:
                self._evaluate_radio(now)

    def _set_stat(self, stat: Stat, network: NetworkConfig | None, nw_loss: bool = False) -> None:
        was_registered = self.stat in REGISTERED
        lost_coverage = nw_loss or (self.serving is not None and not self._usable(self.serving))
        old_serving = self.serving
        self.stat, self.serving = stat, network
        self._report_registration()
        if was_registered and (stat not in REGISTERED or network is not old_serving):
            # TS 27.007 §10.1.19: a detach implies the contexts' deactivation; on a network
            # loss this modem reports them too (as some do), so drivers must cope with both
            gone = self.gate.hide_all()
            if lost_coverage:
                for shown in gone:
                    self._cgev(f"NW DEACT {shown.p_cid},{shown.cid},0")
                for cid in sorted(self.active):
                    self._cgev(f"NW PDN DEACT {cid}")
            self.active.clear()
            self._cgev("NW DETACH" if lost_coverage else "ME DETACH")
        if stat in REGISTERED and (not was_registered or network is not old_serving):
            for cid in sorted(self.wanted & set(self.contexts)):
                self.active.add(cid)
                self._cgev(f"ME PDN ACT {cid}")
            for bearer in list(self.gate.network_bearers.values()):
                self._show_bearer(bearer)

    # ---------------------------------------------------------------- the core

    def core_event(self, event: CoreEvent, now: float) -> None:
        """What the core link learnt: an attach answer, a lost core, a bearer change."""
        kind = self.gate.receive(event)
        if not self.powered:
            return
        registered_there = (
            self.stat in REGISTERED and self.serving is not None and self.serving.plmn == event.plmn
        )
        attaching_there = self.attach is not None and self.attach.network.plmn == event.plmn
        if kind in ("lost", "detached"):
            # the network side went: registration drops now, the next attach picks a standby
            # core, or, with none left, another network (down networks count as no coverage)
            if attaching_there:
                self.attach = None
            if registered_there:
                self._set_stat(2, None, nw_loss=True)
        elif kind == "rejected" and self.attach is not None and attaching_there:
            self.attach = _Attach(self.attach.network, 3, now)  # denied at once
        elif kind == "bearer" and event.bearer is not None and registered_there:
            if event.what == "activated":
                self._show_bearer(event.bearer)
            else:
                shown = self.gate.hide(event.bearer.ebi)
                if shown is not None:
                    self._cgev(f"NW DEACT {shown.p_cid},{shown.cid},0")
        self._evaluate(now)

    def _show_bearer(self, bearer: CoreBearer) -> None:
        """A dedicated bearer becomes a secondary context of the first active PDN context:
        ``+CGEV: NW ACT <p_cid>,<cid>,<event_type>`` with event_type 0, "informational"
        (TS 27.007 §10.1.19 [src: nRF91 AT Commands §7.3 +CGEV, and the MediaTek/Marvell
        modem headers that quote the clause])."""
        if not self.active:
            return
        shown = self.gate.show(bearer, min(self.active), self.contexts)
        if shown is not None:
            self._cgev(f"NW ACT {shown.p_cid},{shown.cid},0")

    def pdn_address(self) -> str:
        """The PDN address: the one the core allocated, else the configured one."""
        serving = self.serving
        if serving is not None and serving.plmn in self.gate.cored:
            return self.gate.address or "0.0.0.0"
        return self.config.pdn_address

    @property
    def data_service(self) -> bool:
        return self.alive and self.stat in REGISTERED and bool(self.active)

    def link_blocks(self) -> dict[str, bool]:
        """Per relay link: blocked unless it carries the serving network's data right now."""
        blocks: dict[str, bool] = {}
        for network in self.config.networks:
            if network.link is not None:
                serving = self.data_service and network is self.serving
                blocks[network.link] = blocks.get(network.link, True) and not serving
        return blocks

    # ---------------------------------------------------------------- URCs

    def _urc(self, line: str) -> None:
        if self.alive:
            self.outbox.append(Output("urc", lines=(line,)))

    def _cgev(self, text: str) -> None:
        if self.ta.cgerep[0] > 0:
            self._urc(f"+CGEV: {text}")

    def _location(self) -> tuple[int, ...]:
        if self.serving is None:
            return (self.stat,)
        return (self.stat, self.serving.tac, self.serving.ci)

    def _report_registration(self) -> None:
        """URCs on every change: stat for n=1, stat or cell for n>=2."""
        current = self._location()
        for name, n in (("+CEREG", self.ta.cereg_n), ("+CREG", self.ta.creg_n)):
            before = self._reported.get(name)
            self._reported[name] = current
            if before is None and current == (0,):
                continue  # nothing changed since power-on
            changed_stat = before is None or before[0] != current[0]
            if n == 1 and changed_stat:
                self._urc(f"{name}: {self.stat}")
            elif n >= 2 and before != current:
                self._urc(f"{name}: {self._reg_fields(name, n)}")

    def _reg_fields(self, name: str, n: int) -> str:
        text = str(self.stat)
        if n >= 2 and self.serving is not None:
            text += f',"{self.serving.tac:04X}","{self.serving.ci:08X}",{ACT_EUTRAN}'
            if n >= 3 and name == "+CEREG" and self.stat == 3:
                cause, _ = self.gate.rejected.get(self.serving.plmn, (0, ""))
                text += f",0,{cause or EMM_CAUSE_PLMN_NOT_ALLOWED}"
        return text

    # ---------------------------------------------------------------- command lines

    def _run_queue(self, now: float) -> None:
        while self._queue and self._deferred is None and self.alive:
            self._run_line(self._queue.popleft(), now)

    def _run_line(self, line: str, now: float) -> None:
        upper = line.upper()
        if upper == "A/":
            line, upper = self._last_line, self._last_line.upper()
        if not upper.startswith("AT"):
            return  # V.250: nothing but "AT" starts a command line
        self._last_line = line
        try:
            commands = _split_commands(line[2:])
        except AtFail:
            self._respond([], "ERROR")
            return
        self._run_commands(commands, [], now)

    def _run_commands(self, commands: list[str], lines: list[str], now: float) -> None:
        while commands:
            command = commands.pop(0)
            self.commands += 1
            try:
                result = self._execute(command, now)
            except _Silent:
                return
            except _NoCarrier:
                self._respond(lines, "NO CARRIER")
                return
            except AtFail as fail:
                self._respond(lines, self._error(fail.code))
                return
            if isinstance(result, _Deferred):
                result.rest, result.lines = commands, lines
                self._deferred = result
                self._check_deferred(now)
                return
            lines.extend(result)
        self._respond(lines, "OK")

    def _check_deferred(self, now: float) -> None:
        deferred = self._deferred
        if deferred is None:
            return
        try:
            result = deferred.check(now)
            if result is None and now >= deferred.deadline:
                raise AtFail(CME_NO_SERVICE)
        except AtFail as fail:
            self._deferred = None
            self._respond(deferred.lines, self._error(fail.code))
            self._run_queue(now)
            return
        if result is not None:
            self._deferred = None
            self._run_commands(deferred.rest, deferred.lines + result, now)
            self._run_queue(now)

    def _respond(self, lines: Sequence[str], final: str) -> None:
        if self.alive:
            self.outbox.append(Output("response", lines=tuple(lines), final=final))

    def _error(self, code: int | None) -> str:
        if code is None or self.ta.cmee == 0:
            return "ERROR"
        if self.ta.cmee == 1:
            return f"+CME ERROR: {code}"
        return f"+CME ERROR: {CME_ERRORS.get(code, 'unknown')}"

    def _execute(self, command: str, now: float) -> list[str] | _Deferred:
        if command[0] in "+$%^#*":
            match = re.match(r"^([+$%^#*][A-Za-z0-9]+)(.*)$", command)
            if match is None:
                raise AtFail()
            name, rest = match.group(1).upper(), match.group(2).strip()
            handler = self._handlers.get(name)
            if handler is None:
                raise AtFail()
            if name in SIM_PROTECTED and self.sim != "READY":
                raise AtFail(
                    CME_SIM_PUK_REQUIRED if self.sim == "SIM PUK" else CME_SIM_PIN_REQUIRED
                )
            if rest == "=?":
                form = "test"
            elif rest == "?":
                form = "read"
            elif rest.startswith("="):
                form = "set"
            elif rest == "":
                form = "exec"
            else:
                raise AtFail()
            return handler(form, rest[1:] if form == "set" else "", now)
        return self._basic(command, now)

    def _basic(self, command: str, now: float) -> list[str]:
        """V.250 basic commands: one letter (or & and a letter) and an optional number."""
        letter, value = command[0].upper(), command[1:]
        if letter == "&":
            letter, value = "&" + command[1:2].upper(), command[2:]
        if letter == "S":
            match = re.match(r"^(\d+)(=(\d*)|\?)$", value)
            if match is None:
                raise AtFail()
            register = int(match.group(1))
            if match.group(2) == "?":
                return [f"{self.ta.s_registers.get(register, 0):03d}"]
            self.ta.s_registers[register] = int(match.group(3) or 0) & 0xFF
            return []
        if letter == "D":
            raise _NoCarrier()
        if value and not value.isdigit():
            raise AtFail()
        number = int(value or 0)
        if letter == "E" and number in (0, 1):
            self.ta.echo = number == 1
        elif letter in ("V", "Q") and number == (1 if letter == "V" else 0):
            pass  # verbose result codes, not quiet: the only mode emulated
        elif letter in ("Z", "&F") and number == 0:
            self.ta = _Ta()
        elif letter == "I" and number == 0:
            return [
                self.config.manufacturer,
                self.config.model,
                f"Revision: {self.config.revision}",
            ]
        elif letter in ("&W", "&C", "&D", "X", "H", "L", "M"):
            pass  # accepted, no effect in an emulator
        else:
            raise AtFail()
        return []

    # ---------------------------------------------------------------- identity

    def _identity(self, form: str, value: str) -> list[str]:
        if form == "test":
            return []
        if form != "exec":
            raise AtFail()
        return [value]

    def _cmd_cgmi(self, form: str, args: str, now: float) -> list[str]:
        return self._identity(form, self.config.manufacturer)

    def _cmd_cgmm(self, form: str, args: str, now: float) -> list[str]:
        return self._identity(form, self.config.model)

    def _cmd_cgmr(self, form: str, args: str, now: float) -> list[str]:
        return self._identity(form, self.config.revision)

    def _cmd_cgsn(self, form: str, args: str, now: float) -> list[str]:
        if form == "set":
            snt = _int_args(args, 1)[0]
            if snt == 0:
                return [self.config.imei]
            if snt == 1:
                return [f'+CGSN: "{self.config.imei}"']
            raise AtFail(CME_NOT_SUPPORTED)
        if form == "test":
            return ["+CGSN: (0-1)"]
        return self._identity(form, self.config.imei)

    def _cmd_cimi(self, form: str, args: str, now: float) -> list[str]:
        return self._identity(form, self.config.imsi)

    # ---------------------------------------------------------------- TA settings

    def _setting(
        self, name: str, form: str, args: str, current: int, allowed: Sequence[int], test: str
    ) -> tuple[list[str], int]:
        """A one-number setting: read, test, set; returns (lines, new value)."""
        if form == "read":
            return [f"{name}: {current}"], current
        if form == "test":
            return [f"{name}: {test}"], current
        if form != "set":
            raise AtFail()
        value = _int_args(args or "0", 1)[0]
        if value not in allowed:
            raise AtFail(CME_NOT_SUPPORTED)
        return [], value

    def _cmd_cmee(self, form: str, args: str, now: float) -> list[str]:
        lines, self.ta.cmee = self._setting("+CMEE", form, args, self.ta.cmee, (0, 1, 2), "(0-2)")
        return lines

    def _cmd_cmgf(self, form: str, args: str, now: float) -> list[str]:
        lines, self.ta.cmgf = self._setting("+CMGF", form, args, self.ta.cmgf, (0, 1), "(0-1)")
        return lines

    def _cmd_crc(self, form: str, args: str, now: float) -> list[str]:
        lines, self.ta.crc = self._setting("+CRC", form, args, self.ta.crc, (0, 1), "(0,1)")
        return lines

    def _cmd_cvhu(self, form: str, args: str, now: float) -> list[str]:
        lines, self.ta.cvhu = self._setting("+CVHU", form, args, self.ta.cvhu, (0, 1), "(0,1)")
        return lines

    def _cmd_clip(self, form: str, args: str, now: float) -> list[str]:
        if form == "read":
            return [f"+CLIP: {self.ta.clip},1"]  # m=1: CLIP provisioned
        lines, self.ta.clip = self._setting("+CLIP", form, args, self.ta.clip, (0, 1), "(0,1)")
        return lines

    def _cmd_cscs(self, form: str, args: str, now: float) -> list[str]:
        charsets = ("GSM", "IRA", "UCS2")
        if form == "read":
            return [f'+CSCS: "{self.ta.cscs}"']
        if form == "test":
            return ["+CSCS: (" + ",".join(f'"{c}"' for c in charsets) + ")"]
        if form != "set":
            raise AtFail()
        value = split_params(args)[0].upper()
        if value not in charsets:
            raise AtFail(CME_NOT_SUPPORTED)
        self.ta.cscs = value
        return []

    def _cmd_cnmi(self, form: str, args: str, now: float) -> list[str]:
        if form == "read":
            return [f"+CNMI: {self.ta.cnmi}"]
        if form == "test":
            return ["+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)"]
        if form != "set":
            raise AtFail()
        values = _int_args(args, 5, optional=True)
        self.ta.cnmi = ",".join(str(v) for v in values)
        return []

    def _cmd_csmp(self, form: str, args: str, now: float) -> list[str]:
        if form == "read":
            return ["+CSMP: 17,167,0,0"]
        if form in ("test", "set"):
            return []
        raise AtFail()

    def _cmd_cpms(self, form: str, args: str, now: float) -> list[str]:
        memories = '("SM","ME","MT")'
        if form == "test":
            return [f"+CPMS: {memories},{memories},{memories}"]
        if form == "read":
            return ['+CPMS: "ME",0,255,"ME",0,255,"ME",0,255']
        if form != "set":
            raise AtFail()
        chosen = [m.upper() for m in split_params(args)]
        if not 1 <= len(chosen) <= 3 or any(m not in ("SM", "ME", "MT") for m in chosen):
            raise AtFail(CME_NOT_SUPPORTED)
        return ["+CPMS: " + ",".join("0,255" for _ in range(3))]

    def _cmd_csca(self, form: str, args: str, now: float) -> list[str]:
        if form == "read":
            return [f'+CSCA: "{self.config.smsc}",145']
        if form in ("set", "test"):
            return []
        raise AtFail()

    def _cmd_cnum(self, form: str, args: str, now: float) -> list[str]:
        if form in ("exec", "test"):
            return []  # no own number stored on the SIM
        raise AtFail()

    def _cmd_clac(self, form: str, args: str, now: float) -> list[str]:
        if form == "test":
            return []
        if form != "exec":
            raise AtFail()
        basic = ["ATE", "ATI", "ATQ", "ATV", "ATZ", "AT&F", "AT&W", "ATS"]
        return basic + [f"AT{name}" for name in sorted(self._handlers)]

    # ---------------------------------------------------------------- SIM

    def _cmd_cpin(self, form: str, args: str, now: float) -> list[str]:
        if form == "read":
            return [f"+CPIN: {self.sim}"]
        if form == "test":
            return []
        if form != "set":
            raise AtFail()
        params = split_params(args)
        if self.sim == "READY":
            raise AtFail(CME_NOT_ALLOWED)
        if self.sim == "SIM PIN":
            if params[0] != self.pin:
                self.pin_attempts -= 1
                if self.pin_attempts <= 0:
                    self.sim = "SIM PUK"
                raise AtFail(CME_INCORRECT_PASSWORD)
        else:
            if len(params) != 2 or not params[1].isdigit():
                raise AtFail(CME_SIM_PUK_REQUIRED)
            if params[0] != self.config.puk:
                raise AtFail(CME_INCORRECT_PASSWORD)
            self.pin = params[1]
        self.sim, self.pin_attempts = "READY", SIM_PIN_ATTEMPTS
        self._evaluate(now)
        return []

    # ---------------------------------------------------------------- radio

    def _cmd_cfun(self, form: str, args: str, now: float) -> list[str]:
        if form == "read":
            return [f"+CFUN: {self.fun}"]
        if form == "test":
            return ["+CFUN: (0,1,4),(0-1)"]
        if form != "set":
            raise AtFail()
        values = _int_args(args, 2, optional=True)
        fun, reset = values[0], values[1] if len(values) > 1 else 0
        if fun not in (0, 1, 4) or reset not in (0, 1):
            raise AtFail(CME_NOT_SUPPORTED)
        if reset:
            # OK first, then the modem restarts (silent for boot_s, then RDY)
            self._respond([], "OK")
            self._boot(now, fun)
            raise _Silent()
        if fun == 1 and self.fun != 1:
            self.gate.forget()  # radio back on: a fresh try at every core that refused it
        self.fun = fun
        self._evaluate(now)
        return []

    def _cmd_csq(self, form: str, args: str, now: float) -> list[str]:
        if form == "test":
            return ["+CSQ: (0-31,99),(0-7,99)"]
        if form != "exec":
            raise AtFail()
        rssi = None if self.serving is None else self.rssi_dbm(self.serving)
        return [f"+CSQ: {CSQ_RSSI.encode(rssi)},99"]

    def _cmd_cesq(self, form: str, args: str, now: float) -> list[str]:
        if form == "test":
            return ["+CESQ: (0-63,99),(0-7,99),(0-96,255),(0-49,255),(0-34,255),(0-97,255)"]
        if form != "exec":
            raise AtFail()
        cell = self.serving
        rsrq = CESQ_RSRQ.encode(None if cell is None else cell.rsrq_db)
        rsrp = CESQ_RSRP.encode(None if cell is None else self.rsrp_dbm(cell))
        return [f"+CESQ: 99,99,255,255,{rsrq},{rsrp}"]

    def _cmd_qeng(self, form: str, args: str, now: float) -> list[str]:
        if form == "test":
            return ['+QENG: ("servingcell","neighbourcell")']
        if form != "set":
            raise AtFail()
        kind = split_params(args)[0].lower()
        if kind == "neighbourcell":
            return []
        if kind != "servingcell":
            raise AtFail(CME_NOT_SUPPORTED)
        cell = self.serving
        if cell is None:
            return ['+QENG: "servingcell","SEARCH"']
        state = "LIMSRV" if self.stat == 3 else "CONNECT" if self.active else "NOCONN"
        rsrp = self.rsrp_dbm(cell)
        srxlev = max(0, round(rsrp - self.config.min_rsrp_dbm))
        items = [
            '"servingcell"', f'"{state}"', '"LTE"', f'"{cell.duplex}"', cell.mcc, cell.mnc,
            f"{cell.ci:X}", str(cell.pci), str(cell.earfcn), str(cell.band),
            str(cell.bandwidth), str(cell.bandwidth), f"{cell.tac:X}", str(round(rsrp)),
            str(round(cell.rsrq_db)), str(round(self.rssi_dbm(cell))),
            str(round(self.sinr_db(cell))), str(srxlev),
        ]  # fmt: skip
        return ["+QENG: " + ",".join(items)]

    # ---------------------------------------------------------------- network selection

    def _cmd_cops(self, form: str, args: str, now: float) -> list[str] | _Deferred:
        if form == "read":
            if self.serving is None or self.stat not in REGISTERED:
                return [f"+COPS: {self.cops_mode}"]
            return [f"+COPS: {self.cops_mode},{self.ta.cops_format},"
                    f'"{self._oper(self.serving, self.ta.cops_format)}",{ACT_EUTRAN}']  # fmt: skip
        if form == "test":
            if self.fun != 1:
                raise AtFail(CME_NOT_ALLOWED)
            return self._scan(now)
        if form != "set":
            raise AtFail()
        params = split_params(args)
        mode = _int(params[0])
        fmt = _int(params[1]) if len(params) > 1 and params[1] else self.ta.cops_format
        if mode not in (0, 1, 2, 3, 4) or fmt not in (0, 1, 2):
            raise AtFail(CME_NOT_SUPPORTED)
        if len(params) > 3 and params[3] and _int(params[3]) != ACT_EUTRAN:
            raise AtFail(CME_NOT_SUPPORTED)  # an LTE-only modem
        if mode == 3:
            self.ta.cops_format = fmt
            return []
        if mode in (0, 2):
            self.cops_mode, self.cops_plmn = mode, None
            self._evaluate(now)
            return []
        if len(params) < 3 or not params[2]:
            raise AtFail(CME_NOT_SUPPORTED)
        chosen = self._find_oper(params[2], fmt)
        if chosen is not None:
            self.gate.rejected.pop(chosen.plmn, None)  # asked for by hand: try its core again
        self.cops_mode = mode
        self.cops_plmn = chosen.plmn if chosen else params[2]
        self._evaluate(now)
        if chosen is None or not self._usable(chosen):
            if mode == 1:
                raise AtFail(CME_NO_SERVICE)
            self.cops_mode, self.cops_plmn = 0, None  # mode 4: fall back to automatic
            self._evaluate(now)
            return []
        return self._wait_registered(now, chosen if mode == 1 else None)

    def _wait_registered(self, now: float, network: NetworkConfig | None) -> _Deferred:
        """Answer once registered (on ``network`` if given); denied there: +CME ERROR: 32."""

        def check(now: float) -> list[str] | None:
            if self.stat in REGISTERED and (network is None or self.serving is network):
                return []
            if self.stat == 3 and network is not None and self.serving is network:
                raise AtFail(CME_NETWORK_NOT_ALLOWED)
            if self.attach is None and self.stat not in REGISTERED:
                raise AtFail(CME_NO_SERVICE)  # the network went away meanwhile
            return None

        return _Deferred(check, now + self.config.attach_s + DEFERRED_LIMIT_S, [], [])

    def _scan(self, now: float) -> _Deferred:
        """``+COPS=?``: takes a search time (``attach_s``), lists the networks in coverage."""
        ready_at = now + self.config.attach_s

        def check(now: float) -> list[str] | None:
            if now < ready_at:
                return None
            found = []
            for n in self.config.networks:
                if self.rsrp_dbm(n) < self.config.min_rsrp_dbm:
                    continue
                status = (
                    3 if n.forbidden else 2 if n is self.serving and self.stat in REGISTERED else 1
                )
                found.append(f'({status},"{n.long}","{n.short}","{n.plmn}",{ACT_EUTRAN})')
            return ["+COPS: " + ",".join(found) + ",,(0,1,2,3,4),(0,1,2)"]

        return _Deferred(check, ready_at + 1.0, [], [])

    def _oper(self, network: NetworkConfig, fmt: int) -> str:
        return (network.long, network.short, network.plmn)[fmt]

    def _find_oper(self, oper: str, fmt: int) -> NetworkConfig | None:
        return next((n for n in self.config.networks if self._oper(n, fmt) == oper), None)

    def _registration(
        self, name: str, form: str, args: str, top: int
    ) -> tuple[list[str], int | None]:
        n = self.ta.cereg_n if name == "+CEREG" else self.ta.creg_n
        if form == "read":
            return [f"{name}: {n},{self._reg_fields(name, n)}"], None
        if form == "test":
            return [f"{name}: (0-{top})"], None
        if form != "set":
            raise AtFail()
        value = _int_args(args or "0", 1)[0]
        if not 0 <= value <= top:
            raise AtFail(CME_NOT_SUPPORTED)
        return [], value

    def _cmd_creg(self, form: str, args: str, now: float) -> list[str]:
        lines, value = self._registration("+CREG", form, args, 2)
        if value is not None:
            self.ta.creg_n = value
        return lines

    def _cmd_cereg(self, form: str, args: str, now: float) -> list[str]:
        lines, value = self._registration("+CEREG", form, args, 3)
        if value is not None:
            self.ta.cereg_n = value
        return lines

    # ---------------------------------------------------------------- packet domain

    def _cmd_cgatt(self, form: str, args: str, now: float) -> list[str] | _Deferred:
        if form == "read":
            return [f"+CGATT: {1 if self.stat in REGISTERED else 0}"]
        if form == "test":
            return ["+CGATT: (0,1)"]
        if form != "set":
            raise AtFail()
        state = _int_args(args, 1)[0]
        if state not in (0, 1):
            raise AtFail(CME_NOT_SUPPORTED)
        self.attach_wanted = state == 1
        self._evaluate(now)
        if state == 0 or self.stat in REGISTERED:
            return []
        if self.attach is None:
            raise AtFail(CME_NO_SERVICE)
        return self._wait_registered(now, None)

    def _cmd_cgdcont(self, form: str, args: str, now: float) -> list[str]:
        if form == "read":
            lines = []
            for cid, ctx in sorted(self.contexts.items()):
                address = self.pdn_address() if cid in self.active else "0.0.0.0"
                lines.append(f'+CGDCONT: {cid},"{ctx.pdp_type}","{ctx.apn}","{address}",0,0')
            return lines
        if form == "test":
            return [f'+CGDCONT: (1-15),"{t}",,,(0-2),(0-4)' for t in PDP_TYPES]
        if form != "set":
            raise AtFail()
        params = split_params(args)
        cid = _int(params[0])
        if cid not in CID_RANGE:
            raise AtFail(CME_NOT_SUPPORTED)
        if len(params) == 1:
            self.contexts.pop(cid, None)
            self.wanted.discard(cid)
            self._deactivate(cid, "ME PDN DEACT")
            return []
        pdp_type = params[1].upper() or "IP"
        if pdp_type not in PDP_TYPES:
            raise AtFail(CME_NOT_SUPPORTED)
        apn = params[2] if len(params) > 2 else ""
        self.contexts[cid] = _Context(pdp_type, apn)
        return []

    def _deactivate(self, cid: int, event: str) -> None:
        if cid in self.active:
            for shown in self.gate.hide_all(p_cid=cid):  # its dedicated bearers go with it
                self._cgev(f"ME DEACT {shown.p_cid},{shown.cid},0")
            self.active.discard(cid)
            self._cgev(f"{event} {cid}")

    def _cmd_cgact(self, form: str, args: str, now: float) -> list[str] | _Deferred:
        if form == "read":
            states = {cid: int(cid in self.active) for cid in self.contexts}
            states.update((cid, 1) for cid in self.gate.dedicated)
            return [f"+CGACT: {cid},{state}" for cid, state in sorted(states.items())]
        if form == "test":
            return ["+CGACT: (0,1)"]
        if form != "set":
            raise AtFail()
        values = _int_args(args, 16, optional=True)
        state, cids = values[0], values[1:] or sorted(self.contexts)
        if state not in (0, 1) or any(c not in self.contexts for c in cids):
            raise AtFail(CME_NOT_SUPPORTED)
        if state == 0:
            for cid in cids:
                self.wanted.discard(cid)
                self._deactivate(cid, "ME PDN DEACT")
            return []
        if self.stat not in REGISTERED and self.attach is None:
            raise AtFail(CME_NO_SERVICE)
        self.wanted.update(cids)
        if self.stat in REGISTERED:
            for cid in cids:
                if cid not in self.active:
                    self.active.add(cid)
                    self._cgev(f"ME PDN ACT {cid}")
            return []
        return self._wait_registered(now, None)

    def _cmd_cgpaddr(self, form: str, args: str, now: float) -> list[str]:
        """A secondary context shares its primary's address (TS 23.060 §9.2.2.1.1 [mem]),
        so a dedicated bearer's cid shows the PDN address too."""
        defined = sorted({*self.contexts, *self.gate.dedicated})
        if form == "test":
            return ["+CGPADDR: (" + ",".join(str(c) for c in defined) + ")"]
        if form == "read":
            raise AtFail()
        cids = _int_args(args, 15, optional=True) if form == "set" else defined
        lines = []
        for cid in cids:
            if cid in self.active or cid in self.gate.dedicated:
                lines.append(f'+CGPADDR: {cid},"{self.pdn_address()}"')
            elif cid in self.contexts:
                lines.append(f"+CGPADDR: {cid}")
        return lines

    def _cmd_cgeqosrdp(self, form: str, args: str, now: float) -> list[str]:
        """``+CGEQOSRDP: <cid>,<QCI>,[<DL_GBR>,<UL_GBR>],[<DL_MBR>,<UL_MBR>]`` (TS 27.007
        §10.1.27 [src: nRF91 AT Commands §7.7]): the default bearer's QCI from the core when
        it has one; a dedicated bearer's QCI, GBR and MBR (both directions alike)."""
        active = sorted({*self.active, *self.gate.dedicated})
        if form == "test":
            return ["+CGEQOSRDP: (" + ",".join(str(c) for c in active) + ")"]
        if form == "read":
            raise AtFail()
        cids = _int_args(args, 15, optional=True) if form == "set" else active
        default = self.gate.default_bearer
        qci = self.config.qci if default is None else default.qci
        lines = []
        for cid in cids:
            shown = self.gate.dedicated.get(cid)
            if shown is not None:
                b = shown.bearer
                lines.append(f"+CGEQOSRDP: {cid},{b.qci},{b.gbr_kbps},{b.gbr_kbps},"
                             f"{b.mbr_kbps},{b.mbr_kbps}")  # fmt: skip
            elif cid in self.active:
                lines.append(f"+CGEQOSRDP: {cid},{qci},0,0,0,0")
        return lines

    def _cmd_cgcontrdp(self, form: str, args: str, now: float) -> list[str]:
        """``+CGCONTRDP: <cid>,<bearer_id>,<apn>,<local_addr and subnet_mask>`` for active
        primary contexts only (TS 27.007 §10.1.23 [src: nRF91 AT Commands §7.9, MediaTek
        at_cgcontrdp]); the address in the dotted "a1.a2.a3.a4.m1.m2.m3.m4" form [mem]."""
        if form == "test":
            return ["+CGCONTRDP: (" + ",".join(str(c) for c in sorted(self.active)) + ")"]
        if form == "read":
            raise AtFail()
        cids = _int_args(args, 1) if form == "set" else sorted(self.active)
        default = self.gate.default_bearer
        ebi = 5 if default is None else default.ebi
        return [f'+CGCONTRDP: {cid},{ebi},"{self.contexts[cid].apn}",'
                f'"{self.pdn_address()}.255.255.255.255"'
                for cid in cids if cid in self.active]  # fmt: skip

    def _cmd_cgscontrdp(self, form: str, args: str, now: float) -> list[str]:
        """``+CGSCONTRDP: <cid>,<p_cid>,<bearer_id>`` for the dedicated bearers' secondary
        contexts (TS 27.007 §10.1.24 [src: MediaTek at_cgscontrdp_ind_struct])."""
        if form == "test":
            return ["+CGSCONTRDP: (" + ",".join(str(c) for c in sorted(self.gate.dedicated)) + ")"]
        if form == "read":
            raise AtFail()
        cids = _int_args(args, 1) if form == "set" else sorted(self.gate.dedicated)
        shown = [self.gate.dedicated[c] for c in cids if c in self.gate.dedicated]
        return [f"+CGSCONTRDP: {d.cid},{d.p_cid},{d.bearer.ebi}" for d in shown]

    def _cmd_cgerep(self, form: str, args: str, now: float) -> list[str]:
        if form == "read":
            return [f"+CGEREP: {self.ta.cgerep[0]},{self.ta.cgerep[1]}"]
        if form == "test":
            return ["+CGEREP: (0-2),(0-1)"]
        if form != "set":
            raise AtFail()
        values = _int_args(args or "0", 2, optional=True)
        mode, bfr = values[0], values[1] if len(values) > 1 else 0
        if mode not in (0, 1, 2) or bfr not in (0, 1):
            raise AtFail(CME_NOT_SUPPORTED)
        self.ta.cgerep = (mode, bfr)
        return []

    # ---------------------------------------------------------------- state image

    def snapshot(self) -> dict[str, Any]:
        """What ``--state-out`` publishes."""
        cell = self.serving
        return {
            "powered": self.powered,
            "booting": self.booting_until is not None,
            "reboots": self.reboots,
            "fun": self.fun,
            "sim": self.sim,
            "stat": self.stat,
            "stat_name": STAT_NAMES.get(self.stat, str(self.stat)),
            "mode": self.cops_mode,
            "selected_plmn": self.cops_plmn,
            "plmn": None if cell is None else cell.plmn,
            "rsrp_dbm": None if cell is None else round(self.rsrp_dbm(cell), 1),
            "attenuation_db": round(self.attenuation_db, 2),
            "echo": self.ta.echo,
            "cmee": self.ta.cmee,
            "cereg_n": self.ta.cereg_n,
            "pdn": {
                str(cid): {
                    "apn": ctx.apn,
                    "type": ctx.pdp_type,
                    "active": cid in self.active,
                    "address": self.pdn_address() if cid in self.active else None,
                }
                for cid, ctx in sorted(self.contexts.items())
            },
            "bearers": [
                {"cid": d.cid, "p_cid": d.p_cid, **d.bearer.to_json()}
                for _, d in sorted(self.gate.dedicated.items())
            ],
            "core": self.gate.snapshot(),
            "data_service": self.data_service,
            "blocked": self.link_blocks(),
        }


class _Silent(AtFail):
    """The command already answered (``+CFUN=...,1`` before it restarts the modem)."""


class _NoCarrier(AtFail):
    """``ATD``: no circuit-switched calls on this modem."""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise AtFail(CME_NOT_SUPPORTED) from None


def _int_args(text: str, most: int, optional: bool = False) -> list[int]:
    """Comma-separated integers (at least one, at most ``most``); empty trailing fields of
    optional parameters are dropped."""
    params = split_params(text)
    if optional:
        while len(params) > 1 and params[-1] == "":
            params.pop()
    if not params or params[0] == "" or len(params) > most:
        raise AtFail(CME_NOT_SUPPORTED)
    return [_int(p) for p in params]


def _split_commands(body: str) -> list[str]:
    """A V.250 command line after ``AT``: basic commands (``E0``, ``&F``, ``S0=1``) and
    extended ones (``+CSQ``) separated by ``;``. Raises :class:`AtFail` on bad syntax."""
    commands: list[str] = []
    i, n = 0, len(body)
    while i < n:
        ch = body[i]
        if ch in " ;":
            i += 1
        elif ch in "+$%^#*":
            j, quoted = i + 1, False
            while j < n and (quoted or body[j] != ";"):
                quoted ^= body[j] == '"'
                j += 1
            commands.append(body[i:j].strip())
            i = j
        elif ch.upper() == "D":
            commands.append(body[i:])
            break
        elif ch.upper() == "S" and i + 1 < n and body[i + 1].isdigit():
            match = re.match(r"S\d+(=\d*|\?)", body[i:], re.IGNORECASE)
            if match is None:
                raise AtFail()
            commands.append(match.group(0))
            i += match.end()
        elif ch == "&" or ch.isalpha():
            j = i + (2 if ch == "&" else 1)
            while j < n and body[j].isdigit():
                j += 1
            commands.append(body[i:j])
            i = j
        else:
            raise AtFail()
    return commands
