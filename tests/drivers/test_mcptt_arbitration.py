"""Tests of the pure floor arbitration (drivers.mcptt.arbitration): the pre-emption table of
docs/mcptt.md, queueing, revoke and grace, the timers T1/T2/T3/T20 with an injected clock, and
what every member is told. No sockets, no sleeping: time is whatever ``now_s`` says."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # in case the package is not installed into the venv
    sys.path.insert(0, str(REPO))

from drivers.mcptt.arbitration import (  # noqa: E402
    DEFAULT_SERVER_SSRC,
    FloorArbitrator,
    FloorConfig,
    FloorState,
    Send,
    preempts,
)
from drivers.mcptt.messages import (  # noqa: E402
    CallType,
    DenyCause,
    FloorMessage,
    FloorType,
    RevokeCause,
    Source,
    indicator_for,
)

A, B, C, D, E = (f"sip:{n}@mcptt.test" for n in "abcde")
SSRC = {A: 0xA, B: 0xB, C: 0xC, D: 0xD, E: 0xE}
N, IP, EM = CallType.NORMAL, CallType.IMMINENT_PERIL, CallType.EMERGENCY


def call(
    *members: str, **config: object
) -> FloorArbitrator:  # a call whose members joined at t = 0
    arb = FloorArbitrator(FloorConfig(**config))  # type: ignore[arg-type]
    for user in members:
        assert arb.join(user, SSRC[user], 0.0) == []
    return arb


def press(
    arb: FloorArbitrator, user: str, now: float, call_type: CallType = N, priority: int = 1
) -> list[Send]:
    return arb.request(
        user, now, ssrc=SSRC[user], priority=priority, indicator=indicator_for(call_type)
    )


def of(sends: list[Send], kind: FloorType, to: str | None = None) -> list[FloorMessage]:
    return [s.message for s in sends if s.message.type is kind and (to is None or s.to == to)]


def only(sends: list[Send], kind: FloorType, to: str) -> FloorMessage:
    found = of(sends, kind, to)
    assert len(found) == 1, sends
    return found[0]


def recipients(sends: list[Send], kind: FloorType) -> list[str]:
    return [s.to for s in sends if s.message.type is kind]


# --------------------------------------------------------------------------------------------
# The pre-emption table (docs/mcptt.md; psc-ns3 IsPreemptive)
# --------------------------------------------------------------------------------------------

# Request type x talker type -> "yes", "no" or "higher" (only with a higher Floor Priority).
TABLE = {
    (N, N): "higher",
    (N, IP): "no",
    (N, EM): "no",
    (IP, N): "yes",
    (IP, IP): "higher",
    (IP, EM): "no",
    (EM, N): "yes",
    (EM, IP): "yes",
    (EM, EM): "higher",
}
CASES = [
    pytest.param(req, cur, delta, id=f"{req.name}-vs-{cur.name}-prio{delta:+d}")
    for (req, cur) in TABLE
    for delta in (-1, 0, 1)
]


def expected_preemption(req: CallType, cur: CallType, delta: int) -> bool:
    rule = TABLE[(req, cur)]
    return rule == "yes" or (rule == "higher" and delta > 0)


@pytest.mark.parametrize(("req", "cur", "delta"), CASES)
def test_preempts_function(req: CallType, cur: CallType, delta: int) -> None:
    assert preempts(req, 100 + delta, cur, 100) is expected_preemption(req, cur, delta)


@pytest.mark.parametrize("queueing", [True, False], ids=["queueing", "no-queueing"])
@pytest.mark.parametrize(("req", "cur", "delta"), CASES)
def test_preemption_table_in_the_machine(
    req: CallType, cur: CallType, delta: int, queueing: bool
) -> None:
    arb = call(A, B, C, queueing=queueing)
    press(arb, A, 0.0, cur, 100)
    out = press(arb, B, 1.0, req, 100 + delta)
    if expected_preemption(req, cur, delta):
        revoke = only(out, FloorType.REVOKE, A)
        assert revoke.reject_cause == RevokeCause.PREEMPTED
        assert arb.state is FloorState.PENDING_REVOKE
        assert arb.queue == [B]
        assert arb.timers()["T3"] == pytest.approx(4.0)
        if queueing:
            assert only(out, FloorType.QUEUE_POSITION_INFO, B).queue_position == 1
        else:
            assert of(out, FloorType.QUEUE_POSITION_INFO) == []
        # The pre-empting requester gets the floor once the talker releases.
        granted = only(arb.release(A, 1.5), FloorType.GRANTED, B)
        assert granted.granted_ssrc == SSRC[B]
        assert arb.talker == B
    else:
        assert of(out, FloorType.REVOKE) == []
        assert arb.state is FloorState.TAKEN and arb.talker == A
        if queueing:
            assert only(out, FloorType.QUEUE_POSITION_INFO, B).queue_position == 1
            assert arb.queue == [B]
        else:
            deny = only(out, FloorType.DENY, B)
            assert deny.reject_cause == DenyCause.ANOTHER_HAS_PERMISSION
            assert arb.queue == []
    assert [s.to for s in out if s.to == C] == []  # bystanders hear nothing of it


# --------------------------------------------------------------------------------------------
# Grant, Floor Taken / Floor Idle and their sequence numbers
# --------------------------------------------------------------------------------------------


def test_grant_tells_the_requester_and_every_other_member() -> None:
    arb = call(A, B, C)
    out = press(arb, A, 0.0, IP, 7)
    granted = only(out, FloorType.GRANTED, A)
    assert granted.ssrc == DEFAULT_SERVER_SSRC
    assert granted.duration_s == 30
    assert granted.priority == 7
    assert granted.indicator == indicator_for(IP)
    assert granted.granted_ssrc == SSRC[A]
    assert not granted.ack_required
    assert sorted(recipients(out, FloorType.TAKEN)) == [B, C]
    taken = only(out, FloorType.TAKEN, B)
    assert taken.granted_party == A
    assert taken.permission_to_request is True
    assert taken.granted_ssrc == SSRC[A]
    assert taken.indicator == indicator_for(IP)
    assert arb.state is FloorState.TAKEN and arb.talker == A
    assert arb.timers() == {"T1": 4.0, "T2": 30.0}


def test_taken_and_idle_sequence_numbers_increase() -> None:
    arb = call(A, B, C)
    seqs: list[int | None] = []
    for t in range(3):
        out = press(arb, A if t % 2 == 0 else B, float(t))
        seqs += [m.sequence for m in of(out, FloorType.TAKEN)]
        out = arb.release(A if t % 2 == 0 else B, t + 0.5)
        idle = of(out, FloorType.IDLE)
        assert sorted(recipients(out, FloorType.IDLE)) == [A, B, C]  # the releaser too
        seqs += [m.sequence for m in idle]
    # one sequence number per fan-out: Taken x2 members, Idle x3 members
    assert seqs == [1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6, 6]
    assert arb.state is FloorState.IDLE and arb.talker is None and arb.next_deadline() is None


def test_sequence_number_wraps_at_16_bits() -> None:
    arb = call(A, B)
    arb._sequence = 0xFFFF  # white-box: skip 65535 floor events
    assert only(press(arb, A, 0.0), FloorType.TAKEN, B).sequence == 0


def test_late_join_while_taken_gets_floor_taken() -> None:
    arb = call(A, B)
    press(arb, A, 0.0)
    out = arb.join(C, SSRC[C], 1.0)
    assert [s.to for s in out] == [C]
    taken = only(out, FloorType.TAKEN, C)
    assert taken.granted_party == A and taken.sequence == arb.sequence == 1
    assert arb.join(D, SSRC[D], 1.0) != []
    # Joining an idle call says nothing; the talker re-joining gets no Floor Taken.
    assert call(A, B).join(C, SSRC[C], 0.0) == []
    assert arb.join(A, SSRC[A], 2.0) == []


def test_talker_leaving_releases_the_floor() -> None:
    arb = call(A, B, C)
    press(arb, A, 0.0)
    out = arb.leave(A, 1.0)
    assert sorted(recipients(out, FloorType.IDLE)) == [B, C]
    assert arb.state is FloorState.IDLE and A not in arb.members


def test_talker_leaving_grants_the_queue_head() -> None:
    arb = call(A, B, C)
    press(arb, A, 0.0)
    press(arb, B, 0.5)
    out = arb.leave(A, 1.0)
    only(out, FloorType.GRANTED, B)
    assert recipients(out, FloorType.TAKEN) == [C]
    assert arb.talker == B


def test_leave_of_a_non_member_and_release_of_a_bystander_change_nothing() -> None:
    arb = call(A, B)
    press(arb, A, 0.0)
    assert arb.leave(C, 0.5) == []
    assert arb.release(B, 0.5) == []
    assert arb.talker == A


def test_request_from_non_member_is_denied() -> None:
    arb = call(A)
    deny = only(press(arb, B, 0.0), FloorType.DENY, B)
    assert deny.reject_cause == DenyCause.OTHER and deny.reject_phrase
    assert arb.state is FloorState.IDLE


def test_only_participant_is_denied_when_modelled() -> None:
    arb = call(A, deny_only_participant=True)
    deny = only(press(arb, A, 0.0), FloorType.DENY, A)
    assert deny.reject_cause == DenyCause.ONLY_ONE_PARTICIPANT
    arb.join(B, SSRC[B], 0.5)
    only(press(arb, A, 1.0), FloorType.GRANTED, A)
    # Off (the default), a lone member gets the floor.
    only(press(call(A), A, 0.0), FloorType.GRANTED, A)


def test_resent_request_from_talker_is_granted_again() -> None:
    arb = call(A, B, t1_s=60.0)
    press(arb, A, 0.0)
    out = press(arb, A, 10.0)
    assert [s.to for s in out] == [A]
    assert only(out, FloorType.GRANTED, A).duration_s == 20  # what is left of T2


# --------------------------------------------------------------------------------------------
# Queueing
# --------------------------------------------------------------------------------------------


def test_queue_order_call_type_then_priority_then_arrival() -> None:
    arb = call(A, B, C, D, E, t1_s=60.0)
    press(arb, A, 0.0, EM, 255)  # nobody pre-empts this talker
    positions = {
        user: only(press(arb, user, t, ct, prio), FloorType.QUEUE_POSITION_INFO, user)
        for user, t, ct, prio in [(B, 1, N, 5), (C, 2, N, 10), (D, 3, IP, 1), (E, 4, N, 10)]
    }
    assert {u: m.queue_position for u, m in positions.items()} == {B: 1, C: 1, D: 1, E: 3}
    assert positions[C].queued_user == C and positions[C].queue_priority == 10
    assert arb.queue == [D, C, E, B]
    # Asked later, positions are current.
    qpi = only(arb.queue_position_request(B, 5.0), FloorType.QUEUE_POSITION_INFO, B)
    assert qpi.queue_position == 4
    assert arb.queue_position_request(A, 5.0) == []  # not queued: no answer
    # Grants follow the queue, each with Floor Taken to everybody else.
    order = []
    talker = A
    for t in range(6, 10):
        out = arb.release(talker, float(t))
        (granted,) = [s for s in out if s.message.type is FloorType.GRANTED]
        assert sorted(recipients(out, FloorType.TAKEN)) == sorted({A, B, C, D, E} - {granted.to})
        talker = granted.to
        order.append(talker)
    assert order == [D, C, E, B]
    assert sorted(recipients(arb.release(B, 10.0), FloorType.IDLE)) == [A, B, C, D, E]


def test_resent_request_keeps_its_place_and_a_changed_one_is_rejudged() -> None:
    arb = call(A, B, C, D, t1_s=60.0)
    press(arb, A, 0.0, EM, 255)
    press(arb, B, 1.0)
    press(arb, C, 2.0)
    assert only(press(arb, B, 3.0), FloorType.QUEUE_POSITION_INFO, B).queue_position == 1
    assert arb.queue == [B, C]
    assert only(press(arb, C, 4.0, IP), FloorType.QUEUE_POSITION_INFO, C).queue_position == 1
    assert arb.queue == [C, B]


def test_queue_limit_denies_with_cause_7() -> None:
    arb = call(A, B, C, D, queue_limit=2, t1_s=60.0)
    press(arb, A, 0.0)
    press(arb, B, 1.0)
    press(arb, C, 2.0)
    deny = only(press(arb, D, 3.0), FloorType.DENY, D)
    assert deny.reject_cause == DenyCause.QUEUE_FULL
    assert arb.queue == [B, C]
    # A pre-empting requester still gets in, at the head.
    out = press(arb, D, 4.0, EM)
    assert only(out, FloorType.REVOKE, A).reject_cause == RevokeCause.PREEMPTED
    assert arb.queue == [D, B, C]


def test_queueing_off_denies_with_cause_1() -> None:
    arb = call(A, B, queueing=False)
    press(arb, A, 0.0)
    out = press(arb, B, 1.0)
    assert [s.message.type for s in out] == [FloorType.DENY]
    assert out[0].message.reject_cause == DenyCause.ANOTHER_HAS_PERMISSION
    assert arb.queue == []
    assert sorted(recipients(arb.release(A, 2.0), FloorType.IDLE)) == [A, B]


def test_release_by_queued_user_leaves_the_queue() -> None:
    arb = call(A, B, C)
    press(arb, A, 0.0)
    press(arb, B, 1.0)
    press(arb, C, 2.0)
    assert arb.release(B, 3.0) == []
    assert arb.queue == [C]
    only(arb.release(A, 4.0), FloorType.GRANTED, C)


def test_leave_by_queued_user_leaves_the_queue() -> None:
    arb = call(A, B, C)
    press(arb, A, 0.0)
    press(arb, B, 1.0)
    assert arb.leave(B, 2.0) == []
    assert arb.queue == []
    assert sorted(recipients(arb.release(A, 3.0), FloorType.IDLE)) == [A, C]


# --------------------------------------------------------------------------------------------
# Pre-emption: revoke, grace, grant
# --------------------------------------------------------------------------------------------


def test_preemption_head_of_queue_then_grant_after_release() -> None:
    arb = call(A, B, C, D)
    press(arb, A, 0.0)
    press(arb, C, 0.5)  # queued normal request
    out = press(arb, B, 1.0, EM, 1)
    assert only(out, FloorType.REVOKE, A).reject_cause == RevokeCause.PREEMPTED
    assert only(out, FloorType.QUEUE_POSITION_INFO, B).queue_position == 1
    assert arb.queue == [B, C]
    assert "T2" not in arb.timers()
    # A request during the grace that does not beat the pre-empting requester queues behind it.
    assert only(press(arb, D, 1.5), FloorType.QUEUE_POSITION_INFO, D).queue_position == 3
    # The revoked talker's media is still forwarded during the grace.
    assert arb.media(A, 2.0) == (True, [])
    out = arb.release(A, 2.5)
    granted = only(out, FloorType.GRANTED, B)
    assert granted.indicator == indicator_for(EM) and granted.duration_s == 30
    assert sorted(recipients(out, FloorType.TAKEN)) == [A, C, D]
    assert only(out, FloorType.TAKEN, A).granted_party == B
    assert arb.state is FloorState.TAKEN and arb.queue == [C, D]
    assert "T3" not in arb.timers()


def test_preemption_grant_after_t3_without_release() -> None:
    arb = call(A, B, C)
    press(arb, A, 0.0)
    arb.media(A, 1.0)  # T1 now 5.0
    out = press(arb, B, 1.5, EM)
    assert of(out, FloorType.REVOKE, A)
    assert arb.next_deadline() == pytest.approx(4.5)  # T3 = 3 s after the revoke
    assert arb.tick(4.49) == []
    out = arb.tick(4.5)
    only(out, FloorType.GRANTED, B)
    assert sorted(recipients(out, FloorType.TAKEN)) == [A, C]
    assert arb.talker == B
    # The old talker's media is no longer forwarded.
    assert arb.media(A, 4.6) == (False, [])


def test_preemption_t1_during_grace_grants_early() -> None:
    arb = call(A, B)
    press(arb, A, 0.0)  # no media: T1 at 4.0
    press(arb, B, 3.0, EM)  # T3 would be 6.0
    only(arb.tick(4.0), FloorType.GRANTED, B)


def test_preemption_without_queueing_still_grants_the_preempting_user() -> None:
    arb = call(A, B, C, queueing=False)
    press(arb, A, 0.0)
    out = press(arb, B, 1.0, IP)
    assert [(s.to, s.message.type) for s in out] == [(A, FloorType.REVOKE)]
    # A normal request during the grace is denied, not queued.
    deny = only(press(arb, C, 1.5), FloorType.DENY, C)
    assert deny.reject_cause == DenyCause.ANOTHER_HAS_PERMISSION
    only(arb.release(A, 2.0), FloorType.GRANTED, B)


def test_more_urgent_request_during_grace_takes_the_head() -> None:
    arb = call(A, B, C)
    press(arb, A, 0.0)
    press(arb, B, 1.0, IP)
    out = press(arb, C, 1.5, EM)
    assert of(out, FloorType.REVOKE) == []  # already being revoked
    assert only(out, FloorType.QUEUE_POSITION_INFO, C).queue_position == 1
    assert only(out, FloorType.QUEUE_POSITION_INFO, B).queue_position == 2
    assert arb.queue == [C, B]
    only(arb.release(A, 2.0), FloorType.GRANTED, C)
    assert arb.queue == [B]


def test_revoked_talker_requesting_again_is_denied() -> None:
    arb = call(A, B)
    press(arb, A, 0.0)
    press(arb, B, 1.0, EM)
    deny = only(press(arb, A, 1.5), FloorType.DENY, A)
    assert deny.reject_cause == DenyCause.ANOTHER_HAS_PERMISSION


def test_preempting_requester_leaving_during_grace() -> None:
    arb = call(A, B, C)
    press(arb, A, 0.0)
    press(arb, B, 1.0, EM)
    arb.leave(B, 1.5)
    assert arb.queue == []
    assert sorted(recipients(arb.release(A, 2.0), FloorType.IDLE)) == [A, C]


# --------------------------------------------------------------------------------------------
# Timers
# --------------------------------------------------------------------------------------------


def test_t2_expiry_revokes_with_cause_2_then_t3_frees_the_floor() -> None:
    arb = call(A, B)
    press(arb, A, 0.0)
    for t in range(1, 30):
        assert arb.media(A, float(t)) == (True, [])
    assert arb.next_deadline() == pytest.approx(30.0)
    forwarded, out = arb.media(A, 30.0)  # the timer runs before the packet is judged
    assert forwarded
    assert only(out, FloorType.REVOKE, A).reject_cause == RevokeCause.MEDIA_BURST_TOO_LONG
    assert arb.state is FloorState.PENDING_REVOKE
    assert arb.timers() == {"T1": 34.0, "T3": 33.0}
    out = arb.tick(33.0)
    assert sorted(recipients(out, FloorType.IDLE)) == [A, B]
    assert arb.talker is None and arb.timers() == {}


def test_t2_revoke_then_release_grants_the_queue() -> None:
    arb = call(A, B, t2_s=5.0, t1_s=10.0)
    press(arb, A, 0.0)
    press(arb, B, 1.0)
    assert of(arb.tick(5.0), FloorType.REVOKE, A)[0].reject_cause == 2
    only(arb.release(A, 5.5), FloorType.GRANTED, B)


def test_t1_end_of_media_frees_the_floor() -> None:
    arb = call(A, B)
    press(arb, A, 0.0)
    arb.media(A, 1.0)
    assert arb.next_deadline() == pytest.approx(5.0)
    assert arb.tick(4.99) == []
    out = arb.tick(5.0)
    assert sorted(recipients(out, FloorType.IDLE)) == [A, B]
    assert arb.state is FloorState.IDLE and arb.next_deadline() is None


def test_t1_grants_the_next_in_queue() -> None:
    arb = call(A, B, C)
    press(arb, A, 0.0)
    press(arb, B, 1.0)
    out = arb.tick(4.0)
    only(out, FloorType.GRANTED, B)
    assert sorted(recipients(out, FloorType.TAKEN)) == [A, C]


def test_media_from_others_is_not_forwarded_and_does_not_restart_t1() -> None:
    arb = call(A, B)
    assert arb.media(A, 0.0) == (False, [])
    press(arb, A, 0.0)
    assert arb.media(B, 1.0) == (False, [])
    assert arb.timers()["T1"] == pytest.approx(4.0)


def test_t20_resends_granted_until_c20() -> None:
    arb = call(A, B, ack_granted=True)
    out = press(arb, A, 0.0)
    assert only(out, FloorType.GRANTED, A).ack_required
    assert arb.timers()["T20"] == pytest.approx(1.0)
    resend = only(arb.tick(1.0), FloorType.GRANTED, A)
    assert resend.ack_required and resend.duration_s == 29
    only(arb.tick(2.0), FloorType.GRANTED, A)  # third send: C20 = 3 reached
    assert arb.tick(3.0) == []
    assert "T20" not in arb.timers() and arb.talker == A


def test_t20_stops_on_floor_ack() -> None:
    arb = call(A, B, ack_granted=True)
    press(arb, A, 0.0)
    ack = FloorMessage(FloorType.ACK, SSRC[A], source=0, acked_type=int(FloorType.GRANTED))
    assert arb.handle(B, ack, 0.5) == []  # only the talker's ack counts
    assert "T20" in arb.timers()
    assert arb.handle(A, ack, 0.5) == []
    assert "T20" not in arb.timers()
    assert arb.tick(1.0) == []


def test_t20_stops_on_media() -> None:
    arb = call(A, B, ack_granted=True)
    press(arb, A, 0.0)
    arb.media(A, 0.1)
    assert "T20" not in arb.timers()


def test_no_t20_without_ack() -> None:
    arb = call(A, B)
    press(arb, A, 0.0)
    assert "T20" not in arb.timers()


def test_late_tick_runs_timers_in_deadline_order() -> None:
    arb = call(A, B, C)
    press(arb, A, 0.0)
    press(arb, B, 0.5)
    # At 100 s: T1 (4 s) freed the floor for B at 100 s; B's own T1 is then 104 s.
    out = arb.tick(100.0)
    only(out, FloorType.GRANTED, B)
    assert arb.timers()["T1"] == pytest.approx(104.0)


# --------------------------------------------------------------------------------------------
# Messages through handle()
# --------------------------------------------------------------------------------------------


def test_handle_dispatches_and_acknowledges() -> None:
    arb = call(A, B)
    request = FloorMessage(
        FloorType.REQUEST, SSRC[A], priority=3, indicator=indicator_for(N, queueing=True)
    )
    out = arb.handle(A, request, 0.0)
    assert only(out, FloorType.GRANTED, A).priority == 3
    release = FloorMessage(FloorType.RELEASE, SSRC[A], ack_required=True)
    out = arb.handle(A, release, 1.0)
    ack = out[0]
    assert ack.to == A and ack.message.type is FloorType.ACK
    assert ack.message.acked_type == release.subtype == 0x14
    assert ack.message.source == Source.CONTROLLING_FUNCTION
    assert sorted(recipients(out, FloorType.IDLE)) == [A, B]
    # A server-only message type from a participant is ignored.
    assert arb.handle(A, FloorMessage(FloorType.IDLE, SSRC[A]), 2.0) == []
    qpr = FloorMessage(FloorType.QUEUE_POSITION_REQUEST, SSRC[A])
    assert arb.handle(A, qpr, 2.0) == []


def test_request_without_priority_or_indicator_is_a_normal_call_at_priority_0() -> None:
    arb = call(A, B)
    granted = only(arb.request(A, 0.0, ssrc=SSRC[A]), FloorType.GRANTED, A)
    assert granted.priority == 0 and granted.indicator == indicator_for(N)


@pytest.mark.parametrize(
    "bad",
    [{"t1_s": 0}, {"t3_s": -1.0}, {"c20": 0}, {"queue_limit": -1}, {"server_ssrc": 1 << 32}],
)
def test_config_validation(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FloorConfig(**bad)  # type: ignore[arg-type]
