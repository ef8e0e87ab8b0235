"""Subscriber records of an LTE core: the lab-file form, and the Open5GS subscriber document
(MongoDB / WebUI REST, spec section 6.1) that the Open5GS driver and the emulated WebUI exchange.

One record type for every core keeps a lab file portable: the same ``subscribers:`` list
provisions an emulated core, a real Open5GS, or the emulated UEs that must hold the same K/OPc.

Allocation and Retention Priority (spec section 5.2, TS 23.203 §6.1.7 / TS 23.401 §4.7.3):
priority level 1..15, 1 highest [src]; pre-emption capability (may take resources from others)
and vulnerability (may lose its resources) [src]. Open5GS stores the two flags in the 5GC
convention 1 = disabled, 2 = enabled [src: spec 6.1, ``misc/db/open5gs-dbctl`` default ARP 8 /
capability 1 / vulnerability 2]; that is not the Diameter encoding (0 = enabled, 1 = disabled,
TS 29.272 §7.3.40 [src]), which the HSS converts to and which never appears here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from drivers.core.milenage import opc_from_op

__all__ = ["Arp", "PccRule", "Subscriber"]

ARP_DISABLED, ARP_ENABLED = 1, 2
"""Open5GS database encoding of the pre-emption flags [src: spec 6.1]."""

# Open5GS bit-rate units {value, unit}: 0 bps, 1 Kbps, 2 Mbps, 3 Gbps, 4 Tbps [src: spec 6.1]
_UNIT_KBPS = 1
_UNIT_BPS = (1, 10**3, 10**6, 10**9, 10**12)
_AMBR = {"value": 1_000_000_000, "unit": 0}  # open5gs-dbctl default, 1 Gbps [src: spec 6.1]
# Flow direction 1 = downlink, 2 = uplink [src: spec 6.1]
_DOWNLINK, _UPLINK = 1, 2
_SESSION_IPV4V6 = 3  # session type 1 IPv4, 2 IPv6, 3 IPv4v6 [src: spec 6.1]

_HEX128 = re.compile(r"[0-9a-fA-F]{32}")
_FLOW = "permit out udp from any to any"


def _int(where: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{where}: must be an integer {low}..{high}, not {value!r}")
    return value


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: must be true or false, not {value!r}")
    return value


def _hex128(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _HEX128.fullmatch(value):
        raise ValueError(f"{where}: must be 32 hex digits, not {value!r}")
    return value.lower()


def _mapping(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: must be a mapping, not {value!r}")
    return value


def _known(where: str, data: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")


def _path(doc: Mapping[str, Any], *keys: str | int) -> Any:
    """``doc[k0][k1]...`` of an Open5GS document, a ValueError naming the path if absent."""
    node: Any = doc
    for key in keys:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            where = ".".join(str(k) for k in keys)
            raise ValueError(f"Open5GS document: missing or malformed {where}") from None
    return node


@dataclass(frozen=True)
class Arp:
    """Allocation and Retention Priority, TS 23.203 §6.1.7 / spec §5.2 [src]."""

    priority_level: int = 8  # 1..15, 1 highest [src]
    pre_emption_capability: bool = False  # may take resources from others
    pre_emption_vulnerability: bool = True  # may lose its resources

    def __post_init__(self) -> None:
        _int("arp.priority_level", self.priority_level, 1, 15)
        _bool("arp.pre_emption_capability", self.pre_emption_capability)
        _bool("arp.pre_emption_vulnerability", self.pre_emption_vulnerability)

    @classmethod
    def from_mapping(cls, data: Any, where: str = "arp") -> Arp:
        """Lab-file form; absent keys take the defaults (Open5GS's: 8, disabled, enabled)."""
        data = _mapping(where, data)
        _known(where, data, frozenset(cls.__dataclass_fields__))
        try:
            return cls(**data)
        except ValueError as exc:
            raise ValueError(str(exc).replace("arp.", f"{where}.", 1)) from None

    def to_dict(self) -> dict[str, Any]:
        """Lab-file form, also how procedure records carry an ARP."""
        return {
            "priority_level": self.priority_level,
            "pre_emption_capability": self.pre_emption_capability,
            "pre_emption_vulnerability": self.pre_emption_vulnerability,
        }

    def to_open5gs(self) -> dict[str, int]:
        flag = {False: ARP_DISABLED, True: ARP_ENABLED}
        return {
            "priority_level": self.priority_level,
            "pre_emption_capability": flag[self.pre_emption_capability],
            "pre_emption_vulnerability": flag[self.pre_emption_vulnerability],
        }

    @classmethod
    def from_open5gs(cls, doc: Any, where: str = "arp") -> Arp:
        doc = _mapping(f"Open5GS document: {where}", doc)

        def flag(key: str) -> bool:
            value = doc.get(key)
            if value not in (ARP_DISABLED, ARP_ENABLED) or isinstance(value, bool):
                raise ValueError(
                    f"Open5GS document: {where}.{key} must be 1 (disabled) or 2 (enabled), "
                    f"not {value!r}"
                )
            return bool(value == ARP_ENABLED)

        level = _int(f"Open5GS document: {where}.priority_level", doc.get("priority_level"), 1, 15)
        return cls(level, flag("pre_emption_capability"), flag("pre_emption_vulnerability"))


def _rate_kbps(where: str, rate: Any) -> int:
    """An Open5GS ``{value, unit}`` bit rate in kbit/s."""
    rate = _mapping(f"Open5GS document: {where}", rate)
    value = _int(f"Open5GS document: {where}.value", rate.get("value"), 0, 2**63)
    unit = _int(f"Open5GS document: {where}.unit", rate.get("unit"), 0, 4)
    return value * _UNIT_BPS[unit] // 1000


@dataclass(frozen=True)
class PccRule:
    """A dedicated bearer set up at attach (an Open5GS ``pcc_rule``). GBR and MBR are the
    same in both directions for simplicity; ``gbr_kbps`` 0 makes it a non-GBR bearer."""

    qci: int  # e.g. 65 (MCPTT voice, spec 5.1)
    arp: Arp
    gbr_kbps: int = 0
    mbr_kbps: int = 0
    description: str = _FLOW

    def __post_init__(self) -> None:
        _int("pcc_rule.qci", self.qci, 1, 255)
        if not isinstance(self.arp, Arp):
            raise ValueError(f"pcc_rule.arp: must be an Arp, not {self.arp!r}")
        _int("pcc_rule.gbr_kbps", self.gbr_kbps, 0, 2**53)
        _int("pcc_rule.mbr_kbps", self.mbr_kbps, 0, 2**53)
        if not isinstance(self.description, str) or not self.description:
            raise ValueError(f"pcc_rule.description: must be a text, not {self.description!r}")

    @classmethod
    def from_mapping(cls, data: Any, where: str = "pcc_rule") -> PccRule:
        data = _mapping(where, data)
        _known(where, data, frozenset(cls.__dataclass_fields__))
        if "qci" not in data:
            raise ValueError(f"{where}.qci: required")
        fields = dict(data)
        fields["arp"] = Arp.from_mapping(data.get("arp", {}), f"{where}.arp")
        try:
            return cls(**fields)
        except ValueError as exc:
            raise ValueError(str(exc).replace("pcc_rule", where, 1)) from None

    def to_mapping(self) -> dict[str, Any]:
        return {
            "qci": self.qci,
            "arp": self.arp.to_dict(),
            "gbr_kbps": self.gbr_kbps,
            "mbr_kbps": self.mbr_kbps,
            "description": self.description,
        }

    def to_open5gs(self) -> dict[str, Any]:
        def rate(kbps: int) -> dict[str, Any]:
            one = {"value": kbps, "unit": _UNIT_KBPS}
            return {"downlink": dict(one), "uplink": dict(one)}

        return {
            "flow": [
                {"direction": _DOWNLINK, "description": self.description},
                {"direction": _UPLINK, "description": self.description},
            ],
            "qos": {
                "index": self.qci,
                "arp": self.arp.to_open5gs(),
                "mbr": rate(self.mbr_kbps),
                "gbr": rate(self.gbr_kbps),
            },
        }

    @classmethod
    def from_open5gs(cls, doc: Any, where: str = "pcc_rule") -> PccRule:
        qos = _path(_mapping(f"Open5GS document: {where}", doc), "qos")
        qci = _int(f"Open5GS document: {where}.qos.index", _path(qos, "index"), 1, 255)
        arp = Arp.from_open5gs(_path(qos, "arp"), f"{where}.qos.arp")
        flows = doc.get("flow") or []
        description = next(
            (f["description"] for f in flows if isinstance(f, Mapping) and f.get("description")),
            _FLOW,
        )

        def rate(kind: str) -> int:
            if kind not in qos:
                return 0
            return _rate_kbps(f"{where}.qos.{kind}.downlink", _path(qos, kind, "downlink"))

        return cls(qci, arp, rate("gbr"), rate("mbr"), description)


_SUBSCRIBER_KEYS = frozenset(
    {"imsi", "k", "opc", "op", "apn", "qci", "arp", "ipv4", "msisdn", "pcc_rules"}
)


@dataclass(frozen=True)
class Subscriber:
    """One subscriber as the HSS knows it: identity, keys and its one APN's QoS. Hex keys are
    normalised to lower case; invalid values raise ValueError naming the field."""

    imsi: str  # 6..15 digits
    k: str  # 32 hex
    opc: str  # 32 hex
    apn: str = "internet"
    qci: int = 9  # default bearer QCI
    arp: Arp = field(default_factory=Arp)
    ipv4: str | None = None  # static UE address (Open5GS session.ue.ipv4)
    msisdn: str | None = None
    pcc_rules: tuple[PccRule, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.imsi, str) or not re.fullmatch(r"\d{6,15}", self.imsi):
            raise ValueError(f"subscriber.imsi: must be 6 to 15 digits, not {self.imsi!r}")
        object.__setattr__(self, "k", _hex128("subscriber.k", self.k))
        object.__setattr__(self, "opc", _hex128("subscriber.opc", self.opc))
        if not isinstance(self.apn, str) or not self.apn:
            raise ValueError(f"subscriber.apn: must be a name, not {self.apn!r}")
        _int("subscriber.qci", self.qci, 1, 255)
        if not isinstance(self.arp, Arp):
            raise ValueError(f"subscriber.arp: must be an Arp, not {self.arp!r}")
        if self.ipv4 is not None:
            try:
                object.__setattr__(self, "ipv4", str(ipaddress.IPv4Address(self.ipv4)))
            except ValueError:
                raise ValueError(f"subscriber.ipv4: not an IPv4 address: {self.ipv4!r}") from None
        if self.msisdn is not None and (
            not isinstance(self.msisdn, str) or not re.fullmatch(r"\d{1,15}", self.msisdn)
        ):
            raise ValueError(f"subscriber.msisdn: must be 1 to 15 digits, not {self.msisdn!r}")
        rules = tuple(self.pcc_rules)
        if not all(isinstance(r, PccRule) for r in rules):
            raise ValueError("subscriber.pcc_rules: must be PccRule records")
        object.__setattr__(self, "pcc_rules", rules)

    @classmethod
    def from_mapping(cls, data: Any) -> Subscriber:
        """The lab-file form (see the contract / docs). ``op`` may replace ``opc``: OPc is then
        derived from it with K, as an HSS does."""
        data = _mapping("subscriber", data)
        _known("subscriber", data, _SUBSCRIBER_KEYS)
        for key in ("imsi", "k"):
            if key not in data:
                raise ValueError(f"subscriber.{key}: required")
        fields = {key: value for key, value in data.items() if key != "op"}
        if "op" in data:
            if "opc" in data:
                raise ValueError("subscriber.op: give op or opc, not both")
            k = bytes.fromhex(_hex128("subscriber.k", data["k"]))
            op = bytes.fromhex(_hex128("subscriber.op", data["op"]))
            fields["opc"] = opc_from_op(k, op).hex()
        elif "opc" not in data:
            raise ValueError("subscriber.opc: required (or op)")
        if isinstance(fields["imsi"], int) and not isinstance(fields["imsi"], bool):
            raise ValueError("subscriber.imsi: write it as a quoted string (leading zeros)")
        if isinstance(fields.get("msisdn"), int) and not isinstance(fields["msisdn"], bool):
            fields["msisdn"] = str(fields["msisdn"])
        if "arp" in data:
            fields["arp"] = Arp.from_mapping(data["arp"], "subscriber.arp")
        rules = data.get("pcc_rules", [])
        if not isinstance(rules, list | tuple):
            raise ValueError(f"subscriber.pcc_rules: must be a list, not {rules!r}")
        fields["pcc_rules"] = tuple(
            PccRule.from_mapping(rule, f"subscriber.pcc_rules[{i}]") for i, rule in enumerate(rules)
        )
        return cls(**fields)

    def to_mapping(self) -> dict[str, Any]:
        """The lab-file form (what ``Core.subscribers()`` reports); ``from_mapping`` inverts it."""
        out: dict[str, Any] = {
            "imsi": self.imsi,
            "k": self.k,
            "opc": self.opc,
            "apn": self.apn,
            "qci": self.qci,
            "arp": self.arp.to_dict(),
            "pcc_rules": [rule.to_mapping() for rule in self.pcc_rules],
        }
        if self.ipv4 is not None:
            out["ipv4"] = self.ipv4
        if self.msisdn is not None:
            out["msisdn"] = self.msisdn
        return out

    def to_open5gs(self) -> dict[str, Any]:
        """The Open5GS subscriber document (schema of spec 6.1, defaults of open5gs-dbctl)."""
        session: dict[str, Any] = {
            "name": self.apn,
            "type": _SESSION_IPV4V6,
            "qos": {"index": self.qci, "arp": self.arp.to_open5gs()},
            "ambr": {"downlink": dict(_AMBR), "uplink": dict(_AMBR)},
            "pcc_rule": [rule.to_open5gs() for rule in self.pcc_rules],
        }
        if self.ipv4 is not None:
            session["ue"] = {"ipv4": self.ipv4}
        return {
            "schema_version": 1,
            "imsi": self.imsi,
            "msisdn": [self.msisdn] if self.msisdn is not None else [],
            "imeisv": [],
            "mme_host": [],
            "mme_realm": [],
            "purge_flag": [],
            "security": {"k": self.k, "op": None, "opc": self.opc, "amf": "8000", "sqn": 0},
            "ambr": {"downlink": dict(_AMBR), "uplink": dict(_AMBR)},
            "slice": [{"sst": 1, "default_indicator": True, "session": [session]}],
            "access_restriction_data": 32,
            "subscriber_status": 0,
            "operator_determined_barring": 0,
            "network_access_mode": 0,
            "subscribed_rau_tau_timer": 12,
        }

    @classmethod
    def from_open5gs(cls, doc: Any) -> Subscriber:
        """The inverse of :meth:`to_open5gs`, reading what this record type can hold: the
        default slice's first session. Accepts upper-case keys, ``op`` without ``opc`` (OPc is
        derived) and the older ``ue.addr`` spelling of the static address."""
        doc = _mapping("Open5GS document", doc)
        imsi = _path(doc, "imsi")
        security = _mapping("Open5GS document: security", _path(doc, "security"))
        k = _hex128("Open5GS document: security.k", security.get("k"))
        if security.get("opc"):
            opc = _hex128("Open5GS document: security.opc", security["opc"])
        elif security.get("op"):
            op = _hex128("Open5GS document: security.op", security["op"])
            opc = opc_from_op(bytes.fromhex(k), bytes.fromhex(op)).hex()
        else:
            raise ValueError("Open5GS document: security has neither opc nor op")
        slices = _path(doc, "slice")
        if not isinstance(slices, list) or not slices:
            raise ValueError("Open5GS document: slice must be a non-empty list")
        chosen = next(
            (s for s in slices if isinstance(s, Mapping) and s.get("default_indicator")),
            slices[0],
        )
        session = _mapping("Open5GS document: slice.session[0]", _path(chosen, "session", 0))
        qos = _path(session, "qos")
        ue = session.get("ue") or {}
        ipv4 = (ue.get("ipv4") or ue.get("addr")) if isinstance(ue, Mapping) else None
        msisdns = doc.get("msisdn") or []
        if not isinstance(msisdns, list):
            raise ValueError(f"Open5GS document: msisdn must be a list, not {msisdns!r}")
        rules = session.get("pcc_rule") or []
        if not isinstance(rules, list):
            raise ValueError(f"Open5GS document: pcc_rule must be a list, not {rules!r}")
        try:
            return cls(
                imsi=imsi,
                k=k,
                opc=opc,
                apn=_path(session, "name"),
                qci=_path(qos, "index"),
                arp=Arp.from_open5gs(_path(qos, "arp"), "session.qos.arp"),
                ipv4=ipv4,
                msisdn=str(msisdns[0]) if msisdns else None,
                pcc_rules=tuple(
                    PccRule.from_open5gs(rule, f"pcc_rule[{i}]") for i, rule in enumerate(rules)
                ),
            )
        except ValueError as exc:
            message = str(exc)
            if message.startswith("Open5GS document"):
                raise
            raise ValueError(f"Open5GS document: {message}") from None
