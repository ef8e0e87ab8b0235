"""What the emulated modem knows of the cores behind its networks: the answer to its attach,
which networks are down or refused it, and the dedicated bearers the core set up, as secondary
contexts on the AT side. Pure bookkeeping shared by :class:`~drivers.radio.modem_state.Modem`
(which reports it in 3GPP TS 27.007 terms) and :class:`~drivers.radio.core_link.CoreLink` (which
does the socket work on a thread of its own and speaks through :class:`CoreEvent`), so that the
1,400-line state machine only gains hooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["CoreBearer", "CoreEvent", "CoreGate", "CorePort", "Dedicated"]

EventKind = Literal["accepted", "rejected", "lost", "detached", "down", "up", "bearer"]


@dataclass(frozen=True)
class CoreBearer:
    """An EPS bearer as the core describes it (attach answer or bearer notification)."""

    ebi: int
    qci: int
    gbr_kbps: int = 0
    mbr_kbps: int = 0
    default: bool = False
    arp: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, data: Any) -> CoreBearer:
        """Raises ValueError on a malformed bearer (the core's fault, logged by the link)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a bearer must be an object, got {data!r}")
        try:
            ebi, qci = int(data["ebi"]), int(data["qci"])
            gbr = int(data.get("gbr_kbps") or 0)
            # the attach protocol carries no MBR: a GBR bearer's MBR is at least its GBR
            mbr = int(data.get("mbr_kbps") or gbr)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad bearer {data!r}: {exc}") from None
        arp = data.get("arp")
        return cls(ebi, qci, gbr, mbr, bool(data.get("default", False)),
                   dict(arp) if isinstance(arp, Mapping) else {})  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "ebi": self.ebi,
            "qci": self.qci,
            "gbr_kbps": self.gbr_kbps,
            "mbr_kbps": self.mbr_kbps,
            "default": self.default,
            "arp": dict(self.arp),
        }


@dataclass(frozen=True)
class CoreEvent:
    """Something the core link learnt: ``attempt`` ties an answer to the attach it answers
    (a late answer to an abandoned attach is dropped); ``down``/``up`` are per network."""

    kind: EventKind
    plmn: str
    attempt: int = 0
    wall: float = 0.0
    core: str | None = None
    address: str | None = None
    bearers: tuple[CoreBearer, ...] = ()
    bearer: CoreBearer | None = None
    what: str = ""
    cause: int | None = None
    name: str = ""


class CorePort(Protocol):
    """The modem's handle on the core link; every call returns at once (the link works on its
    own thread and answers with :class:`CoreEvent`)."""

    def attach(self, plmn: str, attempt: int) -> None:
        """Start a fresh NAS session (connect, challenge, attach) on ``plmn``'s cores."""

    def release(self, detach: bool) -> None:
        """End the session: with a NAS detach first, or just drop it (radio or power gone)."""

    def needed(self, plmns: frozenset[str]) -> None:
        """Networks the modem would use if their cores were up: the ones worth probing."""


@dataclass(frozen=True)
class Dedicated:
    """A dedicated bearer shown as a secondary context ``cid`` of the primary ``p_cid``."""

    cid: int
    p_cid: int
    bearer: CoreBearer


class CoreGate:
    """The per-network core state of one modem and its current attach session."""

    def __init__(self, cored: Iterable[str], port: CorePort | None) -> None:
        self.cored = frozenset(cored)
        self.port = port
        self.down: set[str] = set()
        self.rejected: dict[str, tuple[int, str]] = {}
        self.attempt = 0
        self.plmn: str | None = None
        self.answer: CoreEvent | None = None
        self.network_bearers: dict[int, CoreBearer] = {}
        self.dedicated: dict[int, Dedicated] = {}
        self._needed: frozenset[str] | None = None

    def ready(self, plmn: str) -> bool:
        """Whether an attach to ``plmn`` may complete: no core, or the core accepted it."""
        return plmn not in self.cored or (self.plmn == plmn and self.answer is not None)

    def sync(self, plmn: str | None, graceful: bool) -> None:
        """Keep one session on the network the modem attaches to or is registered on."""
        target = plmn if plmn in self.cored else None
        if target == self.plmn:
            return
        if self.plmn is not None and self.port is not None:
            self.port.release(graceful)
        self.plmn, self.answer = target, None
        self.network_bearers.clear()
        if target is not None and self.port is not None:
            self.attempt += 1
            self.port.attach(target, self.attempt)

    def need(self, plmns: Iterable[str]) -> None:
        wanted = frozenset(plmns) & self.cored
        if wanted != self._needed and self.port is not None:
            self._needed = wanted
            self.port.needed(wanted)

    def forget(self) -> None:
        """A reboot: rejections are forgotten (a new USIM session), the rest is the link's."""
        self.rejected.clear()
        self._needed = None

    def receive(self, event: CoreEvent) -> EventKind | None:
        """Book an event; None when it answers an attach the modem has given up."""
        if event.kind == "down":
            self.down.add(event.plmn)
        elif event.kind == "up":
            self.down.discard(event.plmn)
        elif event.attempt != self.attempt or event.plmn != self.plmn:
            return None
        elif event.kind == "accepted":
            self.answer = event
            self.network_bearers = {b.ebi: b for b in event.bearers if not b.default}
        elif event.kind == "bearer" and event.bearer is not None:
            if event.what == "activated":
                self.network_bearers[event.bearer.ebi] = event.bearer
            else:
                self.network_bearers.pop(event.bearer.ebi, None)
        elif event.kind == "rejected":
            self.rejected[event.plmn] = (event.cause or 0, event.name)
        if event.kind in ("rejected", "lost", "detached") or (
            event.kind == "down" and event.plmn == self.plmn
        ):
            self.plmn, self.answer = None, None  # the link closed the session
            self.network_bearers.clear()
        return event.kind

    @property
    def address(self) -> str | None:
        return None if self.answer is None else self.answer.address

    @property
    def default_bearer(self) -> CoreBearer | None:
        if self.answer is None:
            return None
        return next((b for b in self.answer.bearers if b.default), None)

    def show(self, bearer: CoreBearer, p_cid: int, taken: Iterable[int]) -> Dedicated | None:
        """Give a network-activated bearer the lowest free cid (None: all 15 in use)."""
        if any(d.bearer.ebi == bearer.ebi for d in self.dedicated.values()):
            return None
        used = set(taken) | set(self.dedicated)
        cid = next((c for c in range(1, 16) if c not in used), None)
        if cid is None:
            return None
        shown = self.dedicated[cid] = Dedicated(cid, p_cid, bearer)
        return shown

    def hide(self, ebi: int) -> Dedicated | None:
        for cid, shown in list(self.dedicated.items()):
            if shown.bearer.ebi == ebi:
                return self.dedicated.pop(cid)
        return None

    def hide_all(self, p_cid: int | None = None) -> list[Dedicated]:
        gone = [d for d in self.dedicated.values() if p_cid is None or d.p_cid == p_cid]
        for shown in gone:
            del self.dedicated[shown.cid]
        return sorted(gone, key=lambda d: d.cid)

    def snapshot(self) -> dict[str, Any]:
        return {
            "plmn": self.plmn,
            "attempt": self.attempt,
            "accepted": self.answer is not None,
            "address": self.address,
            "down": sorted(self.down),
            "rejected": {p: {"cause": c, "name": n} for p, (c, n) in sorted(self.rejected.items())},
        }
