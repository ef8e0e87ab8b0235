"""Floor arbitration of one MCPTT group call: the controlling function's floor control server
(TS 24.380 clause 6.3.4, general floor control state machine), as a pure state machine.

Why pure: the emulated server (:mod:`drivers.mcptt.server`) only moves bytes and keeps time; every
decision about who may talk lives here, where tests drive it with a fake clock and read exactly
which message goes to which member. Nothing here touches sockets, threads or the system clock:
every input is a method call carrying ``now_s`` (any monotonic clock, in seconds), every output is
a list of :class:`Send` items ("send this :class:`~drivers.mcptt.messages.FloorMessage` to this
member"), and :meth:`FloorArbitrator.next_deadline` says when :meth:`FloorArbitrator.tick` must
run next for the timers (T1, T2, T3, T20). Every input method first runs the timers that are due,
so a caller that ticks late still sees events in time order.

What it does (``docs/mcptt.md`` is the contract; ``../shared/specs/mission-critical.md`` 2.5-2.7
the sources, following NIST psc-ns3 ``mcptt-on-network-floor-arbitrator-state.cc``):

* states 'G: Floor Idle', 'G: Floor Taken' and 'G: Pending Floor Revoke' (:class:`FloorState`);
* a grant sends Floor Granted to the requester and Floor Taken (granted party, permission to
  request, a new Message Sequence Number) to every other member; a floor that becomes free is
  granted to the head of the queue, or Floor Idle (new sequence number) goes to every member;
* a request while the floor is taken either pre-empts (:func:`preempts`, the psc-ns3
  ``IsPreemptive`` table: Floor Revoke cause 4 to the talker, T3 grace, the requester held at the
  head of the queue and granted on the talker's Floor Release, T3 or T1 expiry), or is queued
  (queueing on: Floor Queue Position Info) or denied (queueing off: Floor Deny cause 1; queue full:
  cause 7); the queue is ordered by call type, then Floor Priority, then arrival;
* T1 (no RTP from the talker) frees the floor; T2 (talked too long) revokes with cause 2; T20
  resends Floor Granted (up to C20 sends in all) while a grant that asked for a Floor Ack has
  neither been acknowledged nor followed by media;
* a member that joins while the floor is taken gets Floor Taken (late entry); a talker that leaves
  frees the floor; a queued member that releases or leaves leaves the queue.

Simplifications (documented in ``docs/mcptt.md``): one floor (no dual floor, no audio cut-in, no
broadcast group calls), the requested Floor Priority is trusted (no per-user maximum from SDP),
T2 starts at the grant (psc-ns3 starts it at the first media packet), T4 and T7 (Floor Idle
resend) are not run, queue positions are sent when a member is queued and when it asks (Floor
Queue Position Request), not pushed whenever they change.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from drivers.mcptt.messages import (
    CallType,
    DenyCause,
    FloorIndicator,
    FloorMessage,
    FloorType,
    RevokeCause,
    Source,
    call_type_of,
)

__all__ = [
    "DEFAULT_SERVER_SSRC",
    "FloorArbitrator",
    "FloorConfig",
    "FloorState",
    "QueueEntry",
    "Send",
    "preempts",
]

DEFAULT_SERVER_SSRC = 0x5EC0F100
"""SSRC the floor control server sends with when the configuration names none."""

_MAX_SEQUENCE = 0xFFFF
_MAX_DURATION_S = 0xFFFF


class FloorState(Enum):
    """States of the general floor control state machine (TS 24.380 clause 6.3.4)."""

    IDLE = "idle"  # 'G: Floor Idle'
    TAKEN = "taken"  # 'G: Floor Taken'
    PENDING_REVOKE = "pending_revoke"  # 'G: Pending Floor Revoke'


@dataclass(frozen=True, slots=True)
class FloorConfig:
    """Per-group floor control settings. Timer defaults: TS 24.380 Annex F as used by NIST
    psc-ns3 (``mission-critical.md`` 2.7; ``docs/mcptt.md`` Timers)."""

    server_ssrc: int = DEFAULT_SERVER_SSRC
    queueing: bool = True
    """Queue requests that find the floor taken (SDP ``mc_queueing``); off: Floor Deny cause 1."""
    queue_limit: int | None = None
    """Most queued requests (not counting a pre-empting requester); more: Floor Deny cause 7."""
    t1_s: float = 4.0
    """T1 end of RTP media: no media from the talker for this long frees the floor."""
    t2_s: float = 30.0
    """T2 stop talking: the longest talk burst; on expiry Floor Revoke cause 2."""
    t3_s: float = 3.0
    """T3 stop-talking grace: how long a revoked talker has to release (psc-ns3 value)."""
    t20_s: float = 1.0
    """T20 Floor Granted resend interval, while a grant that asked for a Floor Ack is unanswered."""
    c20: int = 3
    """C20: Floor Granted is sent at most this many times per grant (the first one included)."""
    ack_granted: bool = False
    """Floor Granted asks for a Floor Ack (subtype 17) and T20 runs; off: no ack, no T20."""
    deny_only_participant: bool = False
    """Deny a request with cause 3 when the requester is the call's only member."""

    def __post_init__(self) -> None:
        if not 0 <= self.server_ssrc <= 0xFFFFFFFF:
            raise ValueError(f"server SSRC must fit in 32 bits: {self.server_ssrc}")
        for name in ("t1_s", "t2_s", "t3_s", "t20_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds: {value}")
        if self.c20 < 1:
            raise ValueError(f"c20 must be at least 1: {self.c20}")
        if self.queue_limit is not None and self.queue_limit < 0:
            raise ValueError(f"queue_limit must be >= 0: {self.queue_limit}")


@dataclass(frozen=True, slots=True)
class Send:
    """One output: send ``message`` to the member whose MCPTT ID is ``to``."""

    to: str
    message: FloorMessage


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A floor request: the one granted (the talker) or one waiting in the queue."""

    user: str
    ssrc: int
    priority: int
    indicator: int
    arrival: int
    """Order of arrival (a counter), the last tie-breaker of the queue."""

    @property
    def call_type(self) -> CallType:
        return call_type_of(self.indicator)

    def rank(self) -> tuple[int, int, int]:
        """Queue sort key: call type, then priority (both highest first), then arrival."""
        return (-int(self.call_type), -self.priority, self.arrival)


def preempts(
    request_type: CallType, request_priority: int, talker_type: CallType, talker_priority: int
) -> bool:
    """Whether a request pre-empts the current talker (psc-ns3 ``IsPreemptive``): a more urgent
    call type always does, the same call type only with a higher Floor Priority, a less urgent
    call type never (``mission-critical.md`` 2.6; ``docs/mcptt.md`` pre-emption table)."""
    if request_type != talker_type:
        return request_type > talker_type
    return request_priority > talker_priority


class FloorArbitrator:
    """The floor of one group call. Inputs are method calls with ``now_s``; each returns the
    messages to send. Members are named by MCPTT ID; the server maps them to addresses."""

    def __init__(self, config: FloorConfig | None = None) -> None:
        self.config = config or FloorConfig()
        self._members: dict[str, int] = {}  # MCPTT ID -> SSRC given at join
        self._state = FloorState.IDLE
        self._talker: QueueEntry | None = None
        self._pinned: QueueEntry | None = None  # the pre-empting requester, head of the queue
        self._queue: list[QueueEntry] = []  # sorted by QueueEntry.rank
        self._arrivals = itertools.count()
        self._sequence = 0  # last Message Sequence Number sent
        self._t1: float | None = None
        self._t2: float | None = None
        self._t3: float | None = None
        self._t20: float | None = None
        self._granted_sends = 0

    # ----------------------------------------------------------------------------------------
    # State, for the server and for tests
    # ----------------------------------------------------------------------------------------

    @property
    def state(self) -> FloorState:
        return self._state

    @property
    def talker(self) -> str | None:
        """MCPTT ID of the member whose media is forwarded (also while its floor is revoked)."""
        return self._talker.user if self._talker else None

    @property
    def talker_entry(self) -> QueueEntry | None:
        return self._talker

    @property
    def members(self) -> Mapping[str, int]:
        """Members of the call: MCPTT ID -> SSRC (a read-only view)."""
        return MappingProxyType(self._members)

    @property
    def queue(self) -> list[str]:
        """Queued MCPTT IDs, the next to be granted first (a pre-empting requester leads)."""
        return [entry.user for entry in self._waiting()]

    @property
    def sequence(self) -> int:
        """The last Message Sequence Number sent (Floor Taken / Floor Idle)."""
        return self._sequence

    def timers(self) -> dict[str, float]:
        """Running timers and their deadlines (``now_s`` clock)."""
        running = {"T1": self._t1, "T2": self._t2, "T3": self._t3, "T20": self._t20}
        return {name: at for name, at in running.items() if at is not None}

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must run next, or None when no timer runs."""
        deadlines = [at for at in (self._t1, self._t2, self._t3, self._t20) if at is not None]
        return min(deadlines) if deadlines else None

    # ----------------------------------------------------------------------------------------
    # Inputs
    # ----------------------------------------------------------------------------------------

    def tick(self, now_s: float) -> list[Send]:
        """Run every timer due at ``now_s``, earliest first."""
        out: list[Send] = []
        while True:
            due = [(at, name) for name, at in self.timers().items() if at <= now_s]
            if not due:
                return out
            _, name = min(due)  # equal deadlines: T1, T2, T20, T3 (by name)
            if name == "T1":
                out += self._expiry_t1(now_s)
            elif name == "T2":
                out += self._expiry_t2(now_s)
            elif name == "T3":
                out += self._expiry_t3(now_s)
            else:
                out += self._expiry_t20(now_s)

    def join(self, user: str, ssrc: int, now_s: float) -> list[Send]:
        """A member joins the call (MCPC Connect accepted); late entry gets Floor Taken."""
        out = self.tick(now_s)
        self._members[user] = ssrc
        talker = self._talker
        if talker is not None and talker.user != user:
            out.append(Send(user, self._taken(talker, self._sequence)))
        return out

    def leave(self, user: str, now_s: float) -> list[Send]:
        """A member leaves (MCPC Disconnect): out of the queue; a leaving talker frees the floor."""
        out = self.tick(now_s)
        if self._members.pop(user, None) is None:
            return out
        self._unqueue(user)
        if self._talker is not None and self._talker.user == user:
            out += self._floor_free(now_s)
        return out

    def handle(self, user: str, message: FloorMessage, now_s: float) -> list[Send]:
        """A floor control message from ``user``: dispatched by type; a message that asks for an
        acknowledgement also gets a Floor Ack. Types a server does not act on are ignored."""
        out: list[Send] = []
        if message.type is FloorType.REQUEST:
            out = self.request(
                user,
                now_s,
                ssrc=message.ssrc,
                priority=message.priority,
                indicator=message.indicator,
            )
        elif message.type is FloorType.RELEASE:
            out = self.release(user, now_s)
        elif message.type is FloorType.ACK:
            out = self.ack(user, message.acked_type, now_s)
        elif message.type is FloorType.QUEUE_POSITION_REQUEST:
            out = self.queue_position_request(user, now_s)
        else:
            out = self.tick(now_s)
        if message.ack_required and message.type is not FloorType.ACK:
            ack = FloorMessage(
                FloorType.ACK,
                self.config.server_ssrc,
                source=int(Source.CONTROLLING_FUNCTION),
                acked_type=message.subtype,
            )
            out.insert(0, Send(user, ack))
        return out

    def request(
        self,
        user: str,
        now_s: float,
        *,
        ssrc: int,
        priority: int | None = None,
        indicator: int | None = None,
    ) -> list[Send]:
        """Floor Request (priority absent: 0; indicator absent: a normal call)."""
        out = self.tick(now_s)
        if user not in self._members:
            return [*out, self._deny(user, DenyCause.OTHER, "not a member of the call")]
        entry = QueueEntry(
            user=user,
            ssrc=ssrc,
            priority=priority or 0,
            indicator=indicator if indicator is not None else int(FloorIndicator.NORMAL),
            arrival=next(self._arrivals),
        )
        talker = self._talker
        if talker is None:
            if self.config.deny_only_participant and len(self._members) == 1:
                return [*out, self._deny(user, DenyCause.ONLY_ONE_PARTICIPANT)]
            return out + self._grant(entry, now_s)
        if talker.user == user:
            if self._state is FloorState.TAKEN:  # a resent request: grant again
                return [*out, Send(user, self._granted(talker, now_s))]
            return [*out, self._deny(user, DenyCause.ANOTHER_HAS_PERMISSION)]
        # A resent request from a queued member keeps its place; a changed one is re-judged.
        waiting = self._find(user)
        if waiting is not None:
            if waiting is self._pinned or (
                waiting.call_type == entry.call_type and waiting.priority == entry.priority
            ):
                return out + self._position_info(user)
            self._unqueue(user)
        contender = self._pinned or talker
        if preempts(entry.call_type, entry.priority, contender.call_type, contender.priority):
            return out + self._preempt(entry, now_s)
        return out + self._queue_or_deny(entry)

    def release(self, user: str, now_s: float) -> list[Send]:
        """Floor Release: the talker frees the floor; a queued member leaves the queue."""
        out = self.tick(now_s)
        if self._talker is not None and self._talker.user == user:
            return out + self._floor_free(now_s)
        self._unqueue(user)
        return out

    def ack(self, user: str, acked_type: int | None, now_s: float) -> list[Send]:
        """Floor Ack: the talker acknowledging Floor Granted stops T20."""
        out = self.tick(now_s)
        granted = acked_type is not None and acked_type & 0x0F == FloorType.GRANTED
        if granted and self._talker is not None and self._talker.user == user:
            self._t20 = None
        return out

    def queue_position_request(self, user: str, now_s: float) -> list[Send]:
        """Floor Queue Position Request: answered with Queue Position Info when queued."""
        return self.tick(now_s) + self._position_info(user)

    def media(self, user: str, now_s: float) -> tuple[bool, list[Send]]:
        """An RTP packet from ``user``: whether to forward it, and what the timers sent first.
        Media from the talker restarts T1 and stops T20 (the grant evidently arrived)."""
        out = self.tick(now_s)
        if self._talker is None or self._talker.user != user:
            return False, out
        self._t1 = now_s + self.config.t1_s
        self._t20 = None
        return True, out

    # ----------------------------------------------------------------------------------------
    # Procedures
    # ----------------------------------------------------------------------------------------

    def _grant(self, entry: QueueEntry, now_s: float) -> list[Send]:
        """Enter 'G: Floor Taken' for ``entry``: Granted to it, Taken to every other member."""
        self._state = FloorState.TAKEN
        self._talker = entry
        self._t1 = now_s + self.config.t1_s
        self._t2 = now_s + self.config.t2_s
        self._t3 = None
        self._granted_sends = 1
        self._t20 = now_s + self.config.t20_s if self.config.ack_granted else None
        out = [Send(entry.user, self._granted(entry, now_s))]
        taken = self._taken(entry, self._next_sequence())
        out += [Send(member, taken) for member in self._members if member != entry.user]
        return out

    def _floor_free(self, now_s: float) -> list[Send]:
        """The talker is gone: grant the head of the queue, or Floor Idle to every member."""
        self._talker = None
        self._t1 = self._t2 = self._t3 = self._t20 = None
        head = self._pinned
        self._pinned = None
        if head is None and self._queue:
            head = self._queue.pop(0)
        if head is not None:
            return self._grant(head, now_s)
        self._state = FloorState.IDLE
        idle = FloorMessage(FloorType.IDLE, self.config.server_ssrc, sequence=self._next_sequence())
        return [Send(member, idle) for member in self._members]

    def _preempt(self, entry: QueueEntry, now_s: float) -> list[Send]:
        """A pre-emptive request: revoke the talker (cause 4, T3) unless a revoke is already
        pending, and hold the requester at the head of the queue."""
        out: list[Send] = []
        displaced = self._pinned
        self._pinned = entry
        if self._state is FloorState.TAKEN:
            out += self._revoke(RevokeCause.PREEMPTED, now_s)
        if displaced is not None:  # overtaken by a still more urgent request during the grace
            if self.config.queueing:
                self._insert(displaced)
                out += self._position_info(displaced.user)
            else:
                out.append(self._deny(displaced.user, DenyCause.ANOTHER_HAS_PERMISSION))
        return out + self._position_info(entry.user)

    def _revoke(self, cause: RevokeCause, now_s: float) -> list[Send]:
        """Floor Revoke to the talker and enter 'G: Pending Floor Revoke' (T1 keeps running)."""
        assert self._talker is not None
        self._state = FloorState.PENDING_REVOKE
        self._t2 = self._t20 = None
        self._t3 = now_s + self.config.t3_s
        revoke = FloorMessage(
            FloorType.REVOKE,
            self.config.server_ssrc,
            reject_cause=int(cause),
            indicator=self._talker.indicator,
        )
        return [Send(self._talker.user, revoke)]

    def _queue_or_deny(self, entry: QueueEntry) -> list[Send]:
        if not self.config.queueing:
            return [self._deny(entry.user, DenyCause.ANOTHER_HAS_PERMISSION)]
        limit = self.config.queue_limit
        if limit is not None and len(self._queue) >= limit:
            return [self._deny(entry.user, DenyCause.QUEUE_FULL)]
        self._insert(entry)
        return self._position_info(entry.user)

    # ----------------------------------------------------------------------------------------
    # Timers
    # ----------------------------------------------------------------------------------------

    def _expiry_t1(self, now_s: float) -> list[Send]:
        """No media from the talker for T1: the floor is free ('G: Floor Idle' entry)."""
        self._t1 = None
        return self._floor_free(now_s)

    def _expiry_t2(self, now_s: float) -> list[Send]:
        """The talker talked for T2: Floor Revoke cause 2 and the T3 grace."""
        self._t2 = None
        if self._talker is None or self._state is not FloorState.TAKEN:
            return []
        return self._revoke(RevokeCause.MEDIA_BURST_TOO_LONG, now_s)

    def _expiry_t3(self, now_s: float) -> list[Send]:
        """The revoked talker did not release within T3: the floor is taken from it."""
        self._t3 = None
        return self._floor_free(now_s)

    def _expiry_t20(self, now_s: float) -> list[Send]:
        """Floor Granted unacknowledged: resend it until C20 sends, then stop resending."""
        self._t20 = None
        if self._talker is None or self._granted_sends >= self.config.c20:
            return []
        self._granted_sends += 1
        self._t20 = now_s + self.config.t20_s
        return [Send(self._talker.user, self._granted(self._talker, now_s))]

    # ----------------------------------------------------------------------------------------
    # Messages and the queue
    # ----------------------------------------------------------------------------------------

    def _granted(self, entry: QueueEntry, now_s: float) -> FloorMessage:
        remaining = (self._t2 - now_s) if self._t2 is not None else self.config.t2_s
        return FloorMessage(
            FloorType.GRANTED,
            self.config.server_ssrc,
            ack_required=self.config.ack_granted,
            duration_s=max(0, min(_MAX_DURATION_S, round(remaining))),
            priority=entry.priority,
            indicator=entry.indicator,
            granted_ssrc=entry.ssrc,
        )

    def _taken(self, entry: QueueEntry, sequence: int) -> FloorMessage:
        return FloorMessage(
            FloorType.TAKEN,
            self.config.server_ssrc,
            granted_party=entry.user,
            permission_to_request=True,
            sequence=sequence,
            indicator=entry.indicator,
            granted_ssrc=entry.ssrc,
        )

    def _deny(self, user: str, cause: DenyCause, phrase: str | None = None) -> Send:
        deny = FloorMessage(
            FloorType.DENY, self.config.server_ssrc, reject_cause=int(cause), reject_phrase=phrase
        )
        return Send(user, deny)

    def _position_info(self, user: str) -> list[Send]:
        """Floor Queue Position Info for a queued member (position 1 is granted next); none when
        the group does not queue (a held pre-empting requester then just waits for its grant)."""
        if not self.config.queueing:
            return []
        for position, entry in enumerate(self._waiting(), start=1):
            if entry.user == user:
                info = FloorMessage(
                    FloorType.QUEUE_POSITION_INFO,
                    self.config.server_ssrc,
                    queued_user=user,
                    queue_position=min(position, 254),  # 255 means "not disclosed"
                    queue_priority=entry.priority,
                )
                return [Send(user, info)]
        return []

    def _next_sequence(self) -> int:
        self._sequence = (self._sequence + 1) & _MAX_SEQUENCE
        return self._sequence

    def _waiting(self) -> Iterator[QueueEntry]:
        if self._pinned is not None:
            yield self._pinned
        yield from self._queue

    def _find(self, user: str) -> QueueEntry | None:
        return next((entry for entry in self._waiting() if entry.user == user), None)

    def _insert(self, entry: QueueEntry) -> None:
        self._queue.append(entry)
        self._queue.sort(key=QueueEntry.rank)

    def _unqueue(self, user: str) -> None:
        if self._pinned is not None and self._pinned.user == user:
            self._pinned = None
        self._queue = [entry for entry in self._queue if entry.user != user]
