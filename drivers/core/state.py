"""The state of an emulated LTE core: subscribers (HSS), attached UEs with their address and
EPS bearers (MME/SMF), dedicated-bearer admission with ARP pre-emption (PCRF + eNB admission
control), counters and a procedure record.

It is pure (no sockets) so that every management surface of the emulated core process (the
Open5GS WebUI/metrics, the Amarisoft remote API, the attach socket of the emulated modems)
reads and changes one consistent state, and so that the admission rules can be tested without
a network. Thread-safe: one re-entrant lock guards everything; the procedure record is written
under the lock (its order is the order of the procedures), bearer listeners are called after
the lock is released, so a listener may call back into the state or block briefly without
stalling other threads' procedures.

Pre-emption (spec section 5.2 [src]): when a cell has no room for another GBR bearer, a request
whose ARP has pre-emption *capability* may release a GBR bearer in that cell whose ARP has
pre-emption *vulnerability* and a numerically higher (lower priority) level: the lowest
priority such bearer, the most recently created on a tie. Otherwise it is refused with ESM
cause 26 (TS 24.301 §9.9.4.4 [mem]). ARP does not order anything else here (scheduling is
QCI priority, spec 5.2 [src]).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn

from drivers.core.milenage import milenage_res
from drivers.core.subscriber import Arp, Subscriber

__all__ = [
    "Bearer",
    "BearerListener",
    "CoreReject",
    "CoreState",
    "UeContext",
    "milenage_res",
]

log = logging.getLogger(__name__)

# EMM causes, TS 24.301 §9.9.3.9 [mem]
ILLEGAL_UE = (3, "Illegal UE")  # authentication failed
EPS_AND_NON_EPS_NOT_ALLOWED = (8, "EPS services and non-EPS services not allowed")  # unknown
PLMN_NOT_ALLOWED = (11, "PLMN not allowed")  # visitor without a roaming agreement
# ESM causes, TS 24.301 §9.9.4.4 [mem]
INSUFFICIENT_RESOURCES = (26, "Insufficient resources")
REQUEST_REJECTED = (31, "Request rejected, unspecified")
MAX_BEARERS = (65, "Maximum number of EPS bearers reached")

DEFAULT_EBI = 5
"""EPS bearer identities 5..15 are the ones a bearer may take (TS 24.007 §11.2.3.1.5 [mem]);
the default bearer takes the first."""
MAX_EBI = 15


class CoreReject(Exception):
    """A procedure the core refuses: ``cause`` is the EMM/ESM cause (TS 24.301 §9.9.3.9 /
    §9.9.4.4, [mem]) and ``name`` its text."""

    def __init__(self, cause: int, name: str, detail: str = "") -> None:
        super().__init__(f"cause {cause} ({name})" + (f": {detail}" if detail else ""))
        self.cause = cause
        self.name = name
        self.detail = detail


@dataclass(frozen=True)
class Bearer:
    ebi: int  # EPS bearer id 5..15 (5 = default)
    qci: int
    arp: Arp
    gbr_kbps: int  # 0 = non-GBR
    default: bool
    created_wall: float

    @property
    def gbr(self) -> bool:
        return self.gbr_kbps > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ebi": self.ebi,
            "qci": self.qci,
            "arp": self.arp.to_dict(),
            "gbr_kbps": self.gbr_kbps,
            "default": self.default,
            "created_wall": self.created_wall,
        }


@dataclass(frozen=True)
class UeContext:
    imsi: str
    address: str  # the UE's IPv4
    plmn: str  # the PLMN it attached through (serving network, may be a visitor)
    ran: str  # the RAN node name (cell) it is served by
    attached_wall: float
    bearers: tuple[Bearer, ...]  # sorted by ebi
    roaming: bool  # plmn of the IMSI != core plmn

    def bearer(self, ebi: int) -> Bearer | None:
        return next((b for b in self.bearers if b.ebi == ebi), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "imsi": self.imsi,
            "address": self.address,
            "plmn": self.plmn,
            "ran": self.ran,
            "attached_wall": self.attached_wall,
            "roaming": self.roaming,
            "bearers": [b.to_dict() for b in self.bearers],
        }


BearerListener = Callable[[str, str, Bearer, str], None]
"""listener(imsi, event, bearer, cause): event "activated" | "released". Causes of "activated":
"attach" (default bearer and PCC rules) or "requested" (:meth:`CoreState.create_bearer`); of
"released": "preempted", "detached", "reattach", the ``cause`` given to
:meth:`CoreState.delete_bearer` ("released" by default) or to :meth:`CoreState.drop_all`.
Called *after* the lock is released; an exception is logged and does not stop the others."""

_Note = tuple[str, str, Bearer, str]


@dataclass
class _Ue:
    """A UE context as the state keeps it: bearers by ebi with their creation sequence
    number (the pre-emption tie-break, independent of the clock's resolution)."""

    imsi: str
    address: str
    plmn: str
    ran: str
    attached_wall: float
    roaming: bool
    bearers: dict[int, tuple[int, Bearer]] = field(default_factory=dict)

    def view(self) -> UeContext:
        bearers = tuple(self.bearers[ebi][1] for ebi in sorted(self.bearers))
        return UeContext(
            self.imsi, self.address, self.plmn, self.ran, self.attached_wall, bearers, self.roaming
        )


class _Held(NamedTuple):
    ue: _Ue
    seq: int
    bearer: Bearer


def _plmn(where: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"\d{5,6}", value):
        raise ValueError(f"{where}: a PLMN is MCC+MNC, 5 or 6 digits, not {value!r}")
    return value


class CoreState:
    """Subscribers, UE contexts and bearers of one core. See the module docstring."""

    def __init__(
        self,
        name: str,
        plmn: str,
        *,
        cell_gbr_capacity: Mapping[str, int] | None = None,
        address_pool: str | None = None,
        allow_roaming: Sequence[str] = (),
        record: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``cell_gbr_capacity``: RAN name -> how many GBR bearers that cell admits (missing =
        unlimited). ``address_pool``: CIDR for UEs without a static address; its first host is
        left for the core's own gateway end (as Open5GS's ``ogstun`` holds 10.45.0.1).
        ``allow_roaming``: home PLMNs of visitors this core accepts (its own always).
        ``record(entry)``: called for every procedure with ``{"wall", "core", "event", ...}``."""
        self.name = name
        self.plmn = _plmn("plmn", plmn)
        self.allow_roaming = tuple(_plmn("allow_roaming", p) for p in allow_roaming)
        self._capacity: dict[str, int] = {}
        for ran, capacity in (cell_gbr_capacity or {}).items():
            if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
                raise ValueError(f"cell_gbr_capacity[{ran!r}]: must be an integer >= 0")
            self._capacity[ran] = capacity
        self._pool = ipaddress.IPv4Network(address_pool, strict=False) if address_pool else None
        self._record = record
        self._clock = clock
        self._lock = threading.RLock()
        self._subscribers: dict[str, Subscriber] = {}
        self._ues: dict[str, _Ue] = {}
        self._expected_res: dict[str, str] = {}
        self._listeners: list[BearerListener] = []
        self._seq = itertools.count()
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "attach_requests",
                "attach_accepts",
                "attach_rejects",
                "auth_requests",
                "auth_failures",
                "detaches",
                "bearers_created",
                "bearers_released",
                "bearers_preempted",
                "bearers_rejected",
                "contexts_dropped",
            ),
            0,
        )

    # ------------------------------------------------------------------ subscribers (HSS)

    def put_subscriber(self, sub: Subscriber) -> bool:
        """Create or replace; True = created. An attached UE keeps its context (a real core
        applies a changed profile at the next attach)."""
        with self._lock:
            created = sub.imsi not in self._subscribers
            self._subscribers[sub.imsi] = sub
            self._emit("subscriber_put", self._clock(), imsi=sub.imsi, created=created)
            return created

    def delete_subscriber(self, imsi: str) -> bool:
        """False = unknown. An attached UE keeps its context until it detaches."""
        with self._lock:
            if self._subscribers.pop(imsi, None) is None:
                return False
            self._expected_res.pop(imsi, None)
            self._emit("subscriber_deleted", self._clock(), imsi=imsi)
            return True

    def subscriber(self, imsi: str) -> Subscriber | None:
        with self._lock:
            return self._subscribers.get(imsi)

    def subscribers(self) -> list[Subscriber]:
        with self._lock:
            return [self._subscribers[imsi] for imsi in sorted(self._subscribers)]

    # ------------------------------------------------------------------ attach / detach

    def challenge(self, imsi: str) -> str:
        """A fresh RAND (32 hex) for the next :meth:`attach` of ``imsi``, which must answer
        RES = f2(K, OPc, RAND). An unknown IMSI gets a RAND too; its attach is refused."""
        rand = os.urandom(16).hex()
        with self._lock:
            self._counts["auth_requests"] += 1
            sub = self._subscribers.get(imsi)
            if sub is not None:
                self._expected_res[imsi] = milenage_res(sub.k, sub.opc, rand)
            return rand

    def attach(self, imsi: str, *, plmn: str, ran: str, res: str | None = None) -> UeContext:
        """Attach (or re-attach) ``imsi`` through serving PLMN ``plmn`` and cell ``ran``.

        ``res``: the UE's answer to the last :meth:`challenge` (consumed either way); None =
        no authentication (a UE that does not run AKA). Refusals, in this order: cause 11 for a
        visitor whose home PLMN is not allowed, 8 for an unknown subscriber, 3 for a wrong or
        unchallenged RES, 26 when no address can be given. Then the address (static or the
        pool's lowest free), the default bearer (ebi 5) and one dedicated bearer per PCC rule;
        a PCC bearer that admission refuses is recorded and left out, the attach stands."""
        _plmn("attach plmn", plmn)
        if not isinstance(ran, str) or not ran:
            raise ValueError(f"attach ran: must be a cell name, not {ran!r}")
        notes: list[_Note] = []
        try:
            with self._lock:
                wall = self._clock()
                self._counts["attach_requests"] += 1
                try:
                    sub, auth = self._authorise(imsi, res)
                    address = self._address_for(sub)
                except CoreReject as reject:
                    self._counts["attach_rejects"] += 1
                    self._emit(
                        "attach_reject",
                        wall,
                        imsi=imsi,
                        plmn=plmn,
                        ran=ran,
                        cause=reject.cause,
                        cause_name=reject.name,
                        detail=reject.detail,
                    )
                    raise
                old = self._ues.pop(imsi, None)
                if old is not None:
                    self._release_all(old, "reattach", wall, notes)
                ue = _Ue(imsi, address, plmn, ran, wall, not imsi.startswith(self.plmn))
                self._ues[imsi] = ue
                self._counts["attach_accepts"] += 1
                self._emit(
                    "attach",
                    wall,
                    imsi=imsi,
                    address=address,
                    plmn=plmn,
                    ran=ran,
                    roaming=ue.roaming,
                    auth=auth,
                    reattach=old is not None,
                )
                self._activate(ue, DEFAULT_EBI, sub.qci, sub.arp, 0, True, "attach", wall, notes)
                for rule in sub.pcc_rules:
                    # a refusal is recorded as bearer_rejected; the attach stands
                    with contextlib.suppress(CoreReject):
                        self._add_bearer(ue, rule.qci, rule.arp, rule.gbr_kbps, "attach", notes)
                return ue.view()
        finally:
            self._notify(notes)

    def detach(self, imsi: str, cause: str = "ue") -> bool:
        """Release the UE's bearers and context; False = not attached."""
        notes: list[_Note] = []
        try:
            with self._lock:
                ue = self._ues.get(imsi)
                if ue is None:
                    return False
                self._detach(ue, cause, self._clock(), notes)
                return True
        finally:
            self._notify(notes)

    def drop_all(self, cause: str) -> list[str]:
        """Every UE context gone at once (a core restart): one ``contexts_dropped`` record,
        listeners told of every bearer with ``cause``. Returns the IMSIs that were attached."""
        notes: list[_Note] = []
        try:
            with self._lock:
                imsis = sorted(self._ues)
                bearers = 0
                for imsi in imsis:
                    ue = self._ues.pop(imsi)
                    for ebi in sorted(ue.bearers):
                        notes.append((imsi, "released", ue.bearers[ebi][1], cause))
                        bearers += 1
                self._counts["bearers_released"] += bearers
                self._counts["contexts_dropped"] += len(imsis)
                self._expected_res.clear()
                self._emit(
                    "contexts_dropped", self._clock(), cause=cause, imsis=imsis, bearers=bearers
                )
                return imsis
        finally:
            self._notify(notes)

    def ues(self) -> list[UeContext]:
        with self._lock:
            return [self._ues[imsi].view() for imsi in sorted(self._ues)]

    def ue(self, imsi: str) -> UeContext | None:
        with self._lock:
            ue = self._ues.get(imsi)
            return ue.view() if ue is not None else None

    # ------------------------------------------------------------------ dedicated bearers

    def create_bearer(self, imsi: str, *, qci: int, arp: Arp, gbr_kbps: int = 0) -> Bearer:
        """A dedicated bearer, as a PCRF sets one up on an Rx request from the MC server.
        GBR bearers go through the admission of the UE's cell (module docstring); refusals
        raise :class:`CoreReject` (26 no resources, 31 not attached, 65 no bearer id left)."""
        if isinstance(qci, bool) or not isinstance(qci, int) or not 1 <= qci <= 255:
            raise ValueError(f"qci: must be an integer 1..255, not {qci!r}")
        if isinstance(gbr_kbps, bool) or not isinstance(gbr_kbps, int) or gbr_kbps < 0:
            raise ValueError(f"gbr_kbps: must be an integer >= 0, not {gbr_kbps!r}")
        if not isinstance(arp, Arp):
            raise ValueError(f"arp: must be an Arp, not {arp!r}")
        notes: list[_Note] = []
        try:
            with self._lock:
                ue = self._ues.get(imsi)
                if ue is None:
                    self._refuse(imsi, None, qci, arp, gbr_kbps, REQUEST_REJECTED, "not attached")
                return self._add_bearer(ue, qci, arp, gbr_kbps, "requested", notes)
        finally:
            self._notify(notes)

    def delete_bearer(self, imsi: str, ebi: int, cause: str = "released") -> bool:
        """Release one bearer; False = no such UE or bearer. Releasing the default bearer
        ends the UE's only PDN connection, so the UE is detached (with ``cause``)."""
        notes: list[_Note] = []
        try:
            with self._lock:
                ue = self._ues.get(imsi)
                if ue is None or ebi not in ue.bearers:
                    return False
                wall = self._clock()
                if ebi == DEFAULT_EBI:
                    self._detach(ue, cause, wall, notes)
                else:
                    self._release(ue, ebi, cause, wall, notes)
                return True
        finally:
            self._notify(notes)

    def add_listener(self, listener: BearerListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: BearerListener) -> None:
        with self._lock:
            self._listeners.remove(listener)

    # ------------------------------------------------------------------ read-outs

    def counters(self) -> dict[str, int]:
        """Procedure counts since start plus the gauges the management surfaces export."""
        with self._lock:
            held = [b for ue in self._ues.values() for _, b in ue.bearers.values()]
            return {
                **self._counts,
                "ues_attached": len(self._ues),
                "bearers_active": len(held),
                "gbr_bearers_active": sum(b.gbr for b in held),
                "subscribers": len(self._subscribers),
            }

    def cells(self) -> dict[str, dict[str, int]]:
        """RAN name -> ``ues``, ``gbr_bearers``, ``gbr_capacity`` (-1 = unlimited), for every
        configured cell and every cell a UE is attached through."""
        with self._lock:
            out = {
                ran: {"ues": 0, "gbr_bearers": 0, "gbr_capacity": cap}
                for ran, cap in self._capacity.items()
            }
            for ue in self._ues.values():
                cell = out.setdefault(ue.ran, {"ues": 0, "gbr_bearers": 0, "gbr_capacity": -1})
                cell["ues"] += 1
                cell["gbr_bearers"] += sum(b.gbr for _, b in ue.bearers.values())
            return dict(sorted(out.items()))

    # ------------------------------------------------------------------ internals (locked)

    def _authorise(self, imsi: str, res: str | None) -> tuple[Subscriber, str]:
        if not imsi.startswith(self.plmn) and not any(
            imsi.startswith(p) for p in self.allow_roaming
        ):
            raise CoreReject(*PLMN_NOT_ALLOWED, f"home PLMN of {imsi} not in allow_roaming")
        sub = self._subscribers.get(imsi)
        if sub is None:
            raise CoreReject(*EPS_AND_NON_EPS_NOT_ALLOWED, f"unknown subscriber {imsi}")
        if res is None:
            return sub, "none"
        expected = self._expected_res.pop(imsi, None)
        if expected is None or not hmac.compare_digest(expected, res.lower()):
            self._counts["auth_failures"] += 1
            why = "RES does not match" if expected is not None else "no challenge outstanding"
            raise CoreReject(*ILLEGAL_UE, f"authentication failed: {why}")
        return sub, "milenage"

    def _address_for(self, sub: Subscriber) -> str:
        in_use = {ue.address: ue.imsi for ue in self._ues.values() if ue.imsi != sub.imsi}
        if sub.ipv4 is not None:
            holder = in_use.get(sub.ipv4)
            if holder is not None:
                raise CoreReject(*INSUFFICIENT_RESOURCES, f"{sub.ipv4} is in use by {holder}")
            return sub.ipv4
        if self._pool is None:
            raise CoreReject(*INSUFFICIENT_RESOURCES, "no static address and no address pool")
        reserved = {s.ipv4 for s in self._subscribers.values() if s.ipv4 is not None}
        old = self._ues.get(sub.imsi)
        if (
            old is not None
            and old.address not in reserved
            and old.address not in in_use
            and ipaddress.IPv4Address(old.address) in self._pool
        ):
            return old.address  # a re-attach keeps its address
        for host in itertools.islice(self._pool.hosts(), 1, None):
            address = str(host)
            if address not in in_use and address not in reserved:
                return address
        raise CoreReject(*INSUFFICIENT_RESOURCES, f"address pool {self._pool} exhausted")

    def _add_bearer(
        self, ue: _Ue, qci: int, arp: Arp, gbr_kbps: int, why: str, notes: list[_Note]
    ) -> Bearer:
        wall = self._clock()
        free = [ebi for ebi in range(DEFAULT_EBI + 1, MAX_EBI + 1) if ebi not in ue.bearers]
        if not free:
            self._refuse(ue.imsi, ue.ran, qci, arp, gbr_kbps, MAX_BEARERS, "no EPS bearer id left")
        if gbr_kbps > 0:
            self._admit_gbr(ue, free[0], qci, arp, gbr_kbps, wall, notes)
        return self._activate(ue, free[0], qci, arp, gbr_kbps, False, why, wall, notes)

    def _admit_gbr(
        self, ue: _Ue, ebi: int, qci: int, arp: Arp, gbr_kbps: int, wall: float, notes: list[_Note]
    ) -> None:
        """Make room for one GBR bearer in ``ue``'s cell, pre-empting if it must and may."""
        capacity = self._capacity.get(ue.ran)
        if capacity is None:
            return
        held = [
            _Held(owner, seq, b)
            for owner in self._ues.values()
            if owner.ran == ue.ran
            for seq, b in owner.bearers.values()
            if b.gbr
        ]
        if len(held) < capacity:
            return
        full = f"cell {ue.ran} holds {len(held)} of {capacity} GBR bearers"
        if not arp.pre_emption_capability:
            self._refuse(
                ue.imsi,
                ue.ran,
                qci,
                arp,
                gbr_kbps,
                INSUFFICIENT_RESOURCES,
                f"{full}; the request may not pre-empt",
            )
        victims = [
            h
            for h in held
            if h.bearer.arp.pre_emption_vulnerability
            and h.bearer.arp.priority_level > arp.priority_level
        ]
        if not victims:
            self._refuse(
                ue.imsi,
                ue.ran,
                qci,
                arp,
                gbr_kbps,
                INSUFFICIENT_RESOURCES,
                f"{full}; none is pre-emptable by priority {arp.priority_level}",
            )
        victim = max(victims, key=lambda h: (h.bearer.arp.priority_level, h.seq))
        del victim.ue.bearers[victim.bearer.ebi]
        self._counts["bearers_released"] += 1
        self._counts["bearers_preempted"] += 1
        b = victim.bearer
        self._emit(
            "bearer_preempted",
            wall,
            imsi=victim.ue.imsi,
            ebi=b.ebi,
            qci=b.qci,
            arp=b.arp.to_dict(),
            gbr_kbps=b.gbr_kbps,
            ran=ue.ran,
            by_imsi=ue.imsi,
            by_ebi=ebi,
            by_qci=qci,
            by_arp=arp.to_dict(),
            by_gbr_kbps=gbr_kbps,
        )
        notes.append((victim.ue.imsi, "released", b, "preempted"))

    def _refuse(
        self,
        imsi: str,
        ran: str | None,
        qci: int,
        arp: Arp,
        gbr_kbps: int,
        cause: tuple[int, str],
        detail: str,
    ) -> NoReturn:
        self._counts["bearers_rejected"] += 1
        self._emit(
            "bearer_rejected",
            self._clock(),
            imsi=imsi,
            ran=ran,
            qci=qci,
            arp=arp.to_dict(),
            gbr_kbps=gbr_kbps,
            cause=cause[0],
            cause_name=cause[1],
            detail=detail,
        )
        raise CoreReject(*cause, detail)

    def _activate(
        self,
        ue: _Ue,
        ebi: int,
        qci: int,
        arp: Arp,
        gbr_kbps: int,
        default: bool,
        why: str,
        wall: float,
        notes: list[_Note],
    ) -> Bearer:
        bearer = Bearer(ebi, qci, arp, gbr_kbps, default, wall)
        ue.bearers[ebi] = (next(self._seq), bearer)
        self._counts["bearers_created"] += 1
        self._emit(
            "bearer_activated",
            wall,
            imsi=ue.imsi,
            ebi=ebi,
            qci=qci,
            arp=arp.to_dict(),
            gbr_kbps=gbr_kbps,
            default=default,
            ran=ue.ran,
            reason=why,
        )
        notes.append((ue.imsi, "activated", bearer, why))
        return bearer

    def _release(self, ue: _Ue, ebi: int, cause: str, wall: float, notes: list[_Note]) -> None:
        _, bearer = ue.bearers.pop(ebi)
        self._counts["bearers_released"] += 1
        self._emit(
            "bearer_released",
            wall,
            imsi=ue.imsi,
            ebi=ebi,
            qci=bearer.qci,
            arp=bearer.arp.to_dict(),
            gbr_kbps=bearer.gbr_kbps,
            ran=ue.ran,
            cause=cause,
        )
        notes.append((ue.imsi, "released", bearer, cause))

    def _release_all(self, ue: _Ue, cause: str, wall: float, notes: list[_Note]) -> None:
        for ebi in sorted(ue.bearers, reverse=True):  # dedicated ones first, default last
            self._release(ue, ebi, cause, wall, notes)

    def _detach(self, ue: _Ue, cause: str, wall: float, notes: list[_Note]) -> None:
        self._release_all(ue, "detached", wall, notes)
        del self._ues[ue.imsi]
        self._counts["detaches"] += 1
        self._emit("detach", wall, imsi=ue.imsi, address=ue.address, ran=ue.ran, cause=cause)

    def _emit(self, event: str, wall: float, **fields: Any) -> None:
        if self._record is not None:
            self._record({"wall": wall, "core": self.name, "event": event, **fields})

    def _notify(self, notes: list[_Note]) -> None:
        """Tell the listeners, outside the lock (callers call this after leaving it)."""
        if not notes:
            return
        with self._lock:
            listeners = list(self._listeners)
        for note in notes:
            for listener in listeners:
                try:
                    listener(*note)
                except Exception:
                    log.exception("bearer listener %r failed on %s", listener, note[:2])
