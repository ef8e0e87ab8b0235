"""The emulated core's state: MILENAGE against the published 3GPP test sets, the subscriber
record and its Open5GS document, attach and its refusals, address allocation, and GBR bearer
admission with ARP pre-emption (spec section 5.2).

MILENAGE references (3GPP TS 35.207 / TS 35.208 conformance test data, as published in open
source test suites; the 3GPP documents themselves were not read):
* Test Set 1 (K 465b5ce8..., OP cdc202d5...): ``sigscale/ocs: test/ocs_milenage_SUITE.erl``
  ``test_set(1)`` ("3GPP TS 35.208 4. Conformance test data for MILENAGE"), identical in
  ``yknaveentel/milenage: src/test/java/threegpp/milenage/MilenageTestData.java`` ("Test set 1")
  and in ``srsran/srsRAN_4G: lib/test/common/test_f12345.cc`` ("Document Reference: 35.208").
* Test Sets 3, 4 and 5: ``sigscale/ocs: test/ocs_milenage_SUITE.erl`` ``test_set(3..5)``
  (decimal octets there, converted to hex here).
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from drivers.core.milenage import f1, f5_star, f2345, milenage_res, opc_from_op
from drivers.core.state import Bearer, CoreReject, CoreState
from drivers.core.subscriber import Arp, PccRule, Subscriber

# ------------------------------------------------------------------------------- MILENAGE

# k, rand, sqn, amf, op, opc, f1, f1*, f2, f3, f4, f5, f5*
TEST_SETS = {
    1: (
        "465b5ce8b199b49faa5f0a2ee238a6bc", "23553cbe9637a89d218ae64dae47bf35", "ff9bb4d0b607",
        "b9b9", "cdc202d5123e20f62b6d676ac72cb318", "cd63cb71954a9f4e48a5994e37a02baf",
        "4a9ffac354dfafb3", "01cfaf9ec4e871e9", "a54211d5e3ba50bf",
        "b40ba9a3c58b2a05bbf0d987b21bf8cb", "f769bcd751044604127672711c6d3441", "aa689c648370",
        "451e8beca43b",
    ),
    3: (
        "fec86ba6eb707ed08905757b1bb44b8f", "9f7c8d021accf4db213ccff0c7f71a6a", "9d0277595ffc",
        "725c", "dbc59adcb6f9a0ef735477b7fadf8374", "1006020f0a478bf6b699f15c062e42b3",
        "9cabc3e99baf7281", "95814ba2b3044324", "8011c48c0c214ed2",
        "5dbdbb2954e8f3cde665b046179a5098", "59a92d3b476a0443487055cf88b2307b", "33484dc2136b",
        "deacdd848cc6",
    ),
    4: (
        "9e5944aea94b81165c82fbf9f32db751", "ce83dbc54ac0274a157c17f80d017bd6", "0b604a81eca8",
        "9e09", "223014c5806694c007ca1eeef57f004f", "a64a507ae1a2a98bb88eb4210135dc87",
        "74a58220cba84c49", "ac2cc74a96871837", "f365cd683cd92e96",
        "e203edb3971574f5a94b0d61b816345d", "0c4524adeac041c4dd830d20854fc46b", "f0b9c08ad02e",
        "6085a86c6f63",
    ),
    5: (
        "4ab1deb05ca6ceb051fc98e77d026a84", "74b0cd6031a1c8339b2b6ce2b8c4a186", "e880a1b580b6",
        "9f07", "2d16c5cd1fdf6b22383584e3bef2a8d8", "dcf07cbd51855290b92a07a9891e523e",
        "49e785dd12626ef2", "9e85790336bb3fa2", "5860fc1bce351e7e",
        "7657766b373d1c2138f307e3de9242f9", "1c42e960d89b8fa99f2744e0708ccb53", "31e11a609118",
        "fe2555e54aa9",
    ),
}  # fmt: skip


@pytest.mark.parametrize("number", sorted(TEST_SETS))
def test_milenage_matches_the_3gpp_test_sets(number: int) -> None:
    k, rand, sqn, amf, op, opc, mac_a, mac_s, res, ck, ik, ak, ak_s = (
        bytes.fromhex(v) for v in TEST_SETS[number]
    )
    assert opc_from_op(k, op) == opc
    assert f1(k, opc, rand, sqn, amf) == (mac_a, mac_s)
    assert f2345(k, opc, rand) == (res, ck, ik, ak)
    assert f5_star(k, opc, rand) == ak_s


def test_milenage_res_is_f2_in_hex_whatever_the_case() -> None:
    k, rand, *_ = TEST_SETS[1]
    opc, res = TEST_SETS[1][5], TEST_SETS[1][8]
    assert milenage_res(k.upper(), opc.upper(), rand) == res


def test_milenage_refuses_wrong_lengths() -> None:
    k, rand = bytes(16), bytes(16)
    with pytest.raises(ValueError, match="RAND must be 16 bytes"):
        f2345(k, k, rand[:15])
    with pytest.raises(ValueError, match="SQN must be 6 bytes"):
        f1(k, k, rand, bytes(5), bytes(2))


# ------------------------------------------------------------------------------- Subscriber

K1, OPC1 = "465B5CE8B199B49FAA5F0A2EE238A6BC", "E8ED289DEBA952E4283B54E88E6183CA"
LAB_FORM: dict[str, Any] = {
    "imsi": "001010000000011",
    "k": K1,
    "opc": OPC1,
    "apn": "internet",
    "qci": 9,
    "ipv4": "10.201.0.2",
    "arp": {
        "priority_level": 8,
        "pre_emption_capability": False,
        "pre_emption_vulnerability": True,
    },
    "pcc_rules": [{"qci": 65, "gbr_kbps": 64, "arp": {"priority_level": 10}}],
}


def test_lab_form_is_read_and_normalised() -> None:
    sub = Subscriber.from_mapping(LAB_FORM)
    assert sub.k == K1.lower() and sub.opc == OPC1.lower()
    assert sub.arp == Arp(8, False, True)
    assert sub.pcc_rules == (PccRule(qci=65, arp=Arp(10, False, True), gbr_kbps=64),)
    assert sub.ipv4 == "10.201.0.2"
    assert Subscriber.from_mapping(sub.to_mapping()) == sub


def test_op_instead_of_opc_derives_opc() -> None:
    k, op, opc = TEST_SETS[1][0], TEST_SETS[1][4], TEST_SETS[1][5]
    sub = Subscriber.from_mapping({"imsi": "001010000000001", "k": k, "op": op})
    assert sub.opc == opc


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"imsi": "00101"}, "subscriber.imsi"),
        ({"imsi": 1010000000011}, "subscriber.imsi"),
        ({"k": "00" * 15}, "subscriber.k"),
        ({"opc": "zz" * 16}, "subscriber.opc"),
        ({"qci": 0}, "subscriber.qci"),
        ({"ipv4": "10.0.0.300"}, "subscriber.ipv4"),
        ({"arp": {"priority_level": 16}}, "subscriber.arp.priority_level"),
        ({"arp": {"pre_emption_capability": "yes"}}, "subscriber.arp.pre_emption_capability"),
        ({"pcc_rules": [{"gbr_kbps": 64}]}, "subscriber.pcc_rules[0].qci"),
        ({"pcc_rules": [{"qci": 65, "gbr_kbps": -1}]}, "subscriber.pcc_rules[0].gbr_kbps"),
        ({"colour": "blue"}, "subscriber: unknown keys ['colour']"),
    ],
)
def test_lab_form_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Subscriber.from_mapping({**LAB_FORM, **change})


def test_open5gs_document_uses_the_5gc_arp_convention() -> None:
    sub = Subscriber.from_mapping({**LAB_FORM, "msisdn": "4915100011"})
    doc = sub.to_open5gs()
    assert doc["schema_version"] == 1 and doc["imsi"] == sub.imsi
    assert doc["msisdn"] == ["4915100011"]
    assert doc["security"] == {
        "k": K1.lower(), "op": None, "opc": OPC1.lower(), "amf": "8000", "sqn": 0,
    }  # fmt: skip
    assert (doc["access_restriction_data"], doc["subscriber_status"]) == (32, 0)
    (slice_,) = doc["slice"]
    assert slice_["sst"] == 1 and slice_["default_indicator"] is True
    (session,) = slice_["session"]
    assert session["name"] == "internet" and session["ue"] == {"ipv4": "10.201.0.2"}
    # capability false -> 1 (disabled), vulnerability true -> 2 (enabled)  [src: spec 6.1]
    assert session["qos"] == {
        "index": 9,
        "arp": {"priority_level": 8, "pre_emption_capability": 1, "pre_emption_vulnerability": 2},
    }
    (rule,) = session["pcc_rule"]
    assert rule["qos"]["index"] == 65
    assert rule["qos"]["arp"] == {
        "priority_level": 10, "pre_emption_capability": 1, "pre_emption_vulnerability": 2,
    }  # fmt: skip
    assert rule["qos"]["gbr"]["downlink"] == {"value": 64, "unit": 1}  # unit 1 = Kbps
    capable = Subscriber.from_mapping(
        {**LAB_FORM, "arp": {"pre_emption_capability": True, "pre_emption_vulnerability": False}}
    ).to_open5gs()["slice"][0]["session"][0]["qos"]["arp"]
    assert (capable["pre_emption_capability"], capable["pre_emption_vulnerability"]) == (2, 1)


def test_open5gs_document_round_trip() -> None:
    subs = [
        Subscriber.from_mapping(LAB_FORM),
        Subscriber("001010000000012", K1, OPC1, apn="mcptt", qci=69, arp=Arp(2, True, False)),
        Subscriber(
            "00101000000013", K1, OPC1, msisdn="123",
            pcc_rules=(PccRule(65, Arp(3, True, False), 128, 256, "permit out ip from any to any"),
                       PccRule(69, Arp(1, False, False))),
        ),
    ]  # fmt: skip
    for sub in subs:
        assert Subscriber.from_open5gs(sub.to_open5gs()) == sub


def test_open5gs_dbctl_document_is_read() -> None:
    """The document `open5gs-dbctl add {imsi ip key opc}` writes (open5gs/open5gs:
    misc/db/open5gs-dbctl, version 0.10.3: older ``ue.addr`` spelling, bit rates in bps)."""
    doc = {
        "schema_version": 1, "imsi": "001010000000001", "msisdn": [], "imeisv": [],
        "mme_host": [], "mm_realm": [], "purge_flag": [],
        "slice": [{
            "sst": 1, "default_indicator": True,
            "session": [{
                "name": "internet", "type": 3,
                "qos": {"index": 9, "arp": {"priority_level": 8, "pre_emption_capability": 1,
                                            "pre_emption_vulnerability": 2}},
                "ambr": {"downlink": {"value": 1000000000, "unit": 0},
                         "uplink": {"value": 1000000000, "unit": 0}},
                "ue": {"addr": "10.45.0.7"},
                "pcc_rule": [],
            }],
        }],
        "security": {"k": K1, "op": None, "opc": OPC1, "amf": "8000"},
        "ambr": {"downlink": {"value": 1000000000, "unit": 0},
                 "uplink": {"value": 1000000000, "unit": 0}},
        "access_restriction_data": 32, "network_access_mode": 0, "subscribed_rau_tau_timer": 12,
        "__v": 0,
    }  # fmt: skip
    sub = Subscriber.from_open5gs(doc)
    assert sub == Subscriber("001010000000001", K1, OPC1, ipv4="10.45.0.7")
    assert sub.arp == Arp(8, pre_emption_capability=False, pre_emption_vulnerability=True)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: d["security"].pop("k"), "security.k"),
        (lambda d: d.pop("slice"), "slice"),
        (lambda d: d["slice"][0]["session"][0]["qos"]["arp"].update(pre_emption_capability=0),
         "pre_emption_capability must be 1 \\(disabled\\) or 2 \\(enabled\\)"),
        (lambda d: d["slice"][0]["session"][0]["qos"].update(index="nine"), "qci"),
    ],
)  # fmt: skip
def test_malformed_open5gs_document_is_refused(
    breakage: Callable[[dict[str, Any]], object], message: str
) -> None:
    doc = Subscriber.from_mapping(LAB_FORM).to_open5gs()
    breakage(doc)
    with pytest.raises(ValueError, match=message):
        Subscriber.from_open5gs(doc)


# ------------------------------------------------------------------------------- CoreState

PLMN = "00101"


class Rig:
    """A state with a fake clock, a record and a listener log."""

    def __init__(self, **options: Any) -> None:
        ticks = itertools.count(1000)
        options.setdefault("clock", lambda: float(next(ticks)))
        self.records: list[dict[str, Any]] = []
        self.heard: list[tuple[str, str, int, str]] = []
        self.state = CoreState("core1", PLMN, record=self.records.append, **options)
        self.state.add_listener(lambda imsi, event, b, cause: self.heard.append(
            (imsi, event, b.ebi, cause)))  # fmt: skip

    def provision(self, imsi: str, **fields: Any) -> Subscriber:
        sub = Subscriber(imsi, K1, OPC1, **fields)
        self.state.put_subscriber(sub)
        return sub

    def attach(self, imsi: str, ran: str = "cell1", **fields: Any) -> None:
        """Provision and attach with a correct RES."""
        sub = self.provision(imsi, **fields)
        rand = self.state.challenge(imsi)
        self.state.attach(imsi, plmn=PLMN, ran=ran, res=milenage_res(sub.k, sub.opc, rand))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] == name]


def test_attach_authenticates_and_creates_the_default_bearer() -> None:
    rig = Rig(address_pool="10.201.0.0/24")
    sub = rig.provision("001010000000011", qci=9, arp=Arp(7, False, True))
    rand = rig.state.challenge(sub.imsi)
    assert len(bytes.fromhex(rand)) == 16
    ue = rig.state.attach(
        sub.imsi, plmn=PLMN, ran="cell1", res=milenage_res(sub.k, sub.opc, rand).upper()
    )
    assert (ue.address, ue.plmn, ue.ran, ue.roaming) == ("10.201.0.2", PLMN, "cell1", False)
    (bearer,) = ue.bearers
    assert bearer == Bearer(5, 9, Arp(7, False, True), 0, True, ue.attached_wall)
    assert rig.state.ue(sub.imsi) == ue
    (attach,) = rig.events("attach")
    assert attach["core"] == "core1" and attach["auth"] == "milenage"
    assert attach["address"] == "10.201.0.2" and attach["wall"] == ue.attached_wall
    (activated,) = rig.events("bearer_activated")
    assert activated["arp"] == {
        "priority_level": 7, "pre_emption_capability": False, "pre_emption_vulnerability": True,
    }  # fmt: skip
    assert rig.heard == [(sub.imsi, "activated", 5, "attach")]
    c = rig.state.counters()
    assert (c["attach_requests"], c["attach_accepts"], c["ues_attached"]) == (1, 1, 1)
    assert (c["bearers_active"], c["gbr_bearers_active"], c["auth_requests"]) == (1, 0, 1)


def test_wrong_res_is_refused_with_cause_3() -> None:
    rig = Rig(address_pool="10.201.0.0/24")
    sub = rig.provision("001010000000011")
    rand = rig.state.challenge(sub.imsi)
    wrong = milenage_res(sub.k, TEST_SETS[1][5], rand)  # the OPc of another operator
    with pytest.raises(CoreReject) as rejected:
        rig.state.attach(sub.imsi, plmn=PLMN, ran="cell1", res=wrong)
    assert (rejected.value.cause, rejected.value.name) == (3, "Illegal UE")
    # the challenge is used up: the right answer to it no longer works (no replay)
    with pytest.raises(CoreReject, match="no challenge outstanding"):
        rig.state.attach(sub.imsi, plmn=PLMN, ran="cell1", res=milenage_res(K1, OPC1, rand))
    assert rig.state.ues() == []
    c = rig.state.counters()
    assert (c["auth_failures"], c["attach_rejects"], c["attach_accepts"]) == (2, 2, 0)
    assert [r["cause"] for r in rig.events("attach_reject")] == [3, 3]


def test_unknown_subscriber_and_roaming_causes() -> None:
    rig = Rig(address_pool="10.201.0.0/24", allow_roaming=["00102"])
    with pytest.raises(CoreReject) as unknown:
        rig.state.attach("001010000000099", plmn=PLMN, ran="cell1")
    assert unknown.value.cause == 8
    rig.provision("001030000000001")  # provisioned, but its home PLMN has no agreement
    with pytest.raises(CoreReject) as barred:
        rig.state.attach("001030000000001", plmn=PLMN, ran="cell1")
    assert (barred.value.cause, barred.value.name) == (11, "PLMN not allowed")
    rig.provision("001020000000001")
    visitor = rig.state.attach("001020000000001", plmn=PLMN, ran="cell1")
    assert visitor.roaming is True
    assert [r["cause"] for r in rig.events("attach_reject")] == [8, 11]
    assert rig.events("attach")[0]["auth"] == "none"


def test_address_pool_allocation_and_release() -> None:
    rig = Rig(address_pool="10.201.0.0/29")  # hosts .1-.6; .1 is the core's gateway end
    rig.provision("001010000000050", ipv4="10.201.0.3")  # a static address inside the pool
    for n in range(1, 4):
        rig.attach(f"00101000000000{n}")
    assert [ue.address for ue in rig.state.ues()] == ["10.201.0.2", "10.201.0.4", "10.201.0.5"]
    assert rig.state.detach("001010000000001") is True
    rig.attach("001010000000004")
    assert rig.state.ue("001010000000004").address == "10.201.0.2"  # type: ignore[union-attr]
    rig.attach("001010000000005")
    assert rig.state.ue("001010000000005").address == "10.201.0.6"  # type: ignore[union-attr]
    with pytest.raises(CoreReject) as exhausted:
        rig.attach("001010000000006")
    assert exhausted.value.cause == 26 and "exhausted" in exhausted.value.detail
    # a re-attach keeps its address; the static subscriber gets its own
    rig.attach("001010000000003", ran="cell2")
    assert rig.state.ue("001010000000003").address == "10.201.0.5"  # type: ignore[union-attr]
    assert rig.state.attach("001010000000050", plmn=PLMN, ran="cell1").address == "10.201.0.3"


def test_static_address_conflict_and_no_pool() -> None:
    rig = Rig()
    rig.attach("001010000000001", ipv4="10.9.0.1")
    with pytest.raises(CoreReject, match="in use by 001010000000001"):
        rig.attach("001010000000002", ipv4="10.9.0.1")
    with pytest.raises(CoreReject, match="no address pool"):
        rig.attach("001010000000003")


def test_pcc_rules_become_dedicated_bearers_and_a_refused_one_does_not_fail_attach() -> None:
    rig = Rig(address_pool="10.201.0.0/24", cell_gbr_capacity={"cell1": 1})
    rules = (PccRule(69, Arp(2, False, False)), PccRule(65, Arp(3, False, True), gbr_kbps=64))
    rig.attach("001010000000001", pcc_rules=rules)
    ue = rig.state.ue("001010000000001")
    assert ue is not None
    assert [(b.ebi, b.qci, b.gbr_kbps, b.default) for b in ue.bearers] == [
        (5, 9, 0, True), (6, 69, 0, False), (7, 65, 64, False),
    ]  # fmt: skip
    rig.attach("001010000000002", pcc_rules=rules)  # the cell's one GBR place is taken
    ue2 = rig.state.ue("001010000000002")
    assert ue2 is not None and [b.ebi for b in ue2.bearers] == [5, 6]
    (rejected,) = rig.events("bearer_rejected")
    assert (rejected["imsi"], rejected["qci"], rejected["cause"]) == ("001010000000002", 65, 26)
    assert rig.state.cells() == {"cell1": {"ues": 2, "gbr_bearers": 1, "gbr_capacity": 1}}


def _gbr_rig(capacity: int) -> Rig:
    return Rig(address_pool="10.201.0.0/24", cell_gbr_capacity={"cellA": capacity, "cellB": 5})


def test_preemption_takes_the_lowest_priority_vulnerable_bearer_and_records_both_sides() -> None:
    rig = _gbr_rig(3)
    for n in range(1, 5):
        rig.attach(f"00101000000000{n}", ran="cellA")
    st = rig.state
    st.create_bearer("001010000000001", qci=65, arp=Arp(10, False, True), gbr_kbps=64)
    victim = st.create_bearer("001010000000002", qci=65, arp=Arp(12, False, True), gbr_kbps=64)
    st.create_bearer("001010000000003", qci=65, arp=Arp(14, False, False), gbr_kbps=64)
    rig.heard.clear()
    won = st.create_bearer("001010000000004", qci=65, arp=Arp(2, True, False), gbr_kbps=128)
    # level 14 is lower priority but not vulnerable; level 12 is the one to go
    assert st.ue("001010000000002").bearer(victim.ebi) is None  # type: ignore[union-attr]
    assert st.ue("001010000000004").bearer(won.ebi) == won  # type: ignore[union-attr]
    (pre,) = rig.events("bearer_preempted")
    assert (pre["imsi"], pre["ebi"], pre["qci"], pre["ran"]) == ("001010000000002", 6, 65, "cellA")
    assert pre["arp"] == {
        "priority_level": 12, "pre_emption_capability": False, "pre_emption_vulnerability": True,
    }  # fmt: skip
    assert (pre["by_imsi"], pre["by_ebi"], pre["by_gbr_kbps"]) == ("001010000000004", 6, 128)
    assert pre["by_arp"]["priority_level"] == 2 and pre["by_arp"]["pre_emption_capability"]
    assert rig.heard == [
        ("001010000000002", "released", 6, "preempted"),
        ("001010000000004", "activated", 6, "requested"),
    ]
    c = st.counters()
    assert (c["bearers_preempted"], c["gbr_bearers_active"], c["bearers_rejected"]) == (1, 3, 0)
    assert st.cells()["cellA"] == {"ues": 4, "gbr_bearers": 3, "gbr_capacity": 3}


def test_preemption_tie_takes_the_latest_created() -> None:
    rig = Rig(cell_gbr_capacity={"cellA": 2}, clock=lambda: 5.0)  # every wall time the same
    for n in (1, 2, 3):
        rig.attach(f"00101000000000{n}", ran="cellA", ipv4=f"10.0.0.{n}")
    for n in (1, 2):
        rig.state.create_bearer(f"00101000000000{n}", qci=1, arp=Arp(9), gbr_kbps=10)
    rig.state.create_bearer("001010000000003", qci=65, arp=Arp(1, True, False), gbr_kbps=10)
    assert rig.events("bearer_preempted")[0]["imsi"] == "001010000000002"


def test_not_capable_or_no_victim_is_refused_with_cause_26() -> None:
    rig = _gbr_rig(2)
    for n in range(1, 4):
        rig.attach(f"00101000000000{n}", ran="cellA")
    rig.attach("001010000000009", ran="cellB")
    st = rig.state
    st.create_bearer("001010000000001", qci=65, arp=Arp(5, False, True), gbr_kbps=64)
    st.create_bearer("001010000000002", qci=65, arp=Arp(9, False, False), gbr_kbps=64)
    st.create_bearer("001010000000009", qci=65, arp=Arp(15, False, True), gbr_kbps=64)  # cellB
    before = st.ues()
    attempts = [
        (Arp(1, False, False), "may not pre-empt"),  # high priority but not capable
        (Arp(5, True, False), "none is pre-emptable"),  # capable, but level 5 is not lower
        (Arp(8, True, False), "none is pre-emptable"),  # only the invulnerable 9 is lower
    ]
    for arp, why in attempts:
        with pytest.raises(CoreReject, match=why) as refused:
            st.create_bearer("001010000000003", qci=65, arp=arp, gbr_kbps=64)
        assert (refused.value.cause, refused.value.name) == (26, "Insufficient resources")
    assert st.ues() == before  # nothing released, not even the vulnerable bearer of cellB
    rejected = rig.events("bearer_rejected")
    assert [(r["imsi"], r["cause"], r["ran"]) for r in rejected] == [
        ("001010000000003", 26, "cellA")
    ] * 3
    assert rig.events("bearer_preempted") == []
    assert st.counters()["bearers_rejected"] == 3


def test_non_gbr_bearers_are_always_admitted() -> None:
    rig = _gbr_rig(0)
    rig.attach("001010000000001", ran="cellA")
    bearer = rig.state.create_bearer("001010000000001", qci=69, arp=Arp(15, False, True))
    assert bearer.ebi == 6 and not bearer.gbr
    with pytest.raises(CoreReject):
        rig.state.create_bearer("001010000000001", qci=65, arp=Arp(1, True, False), gbr_kbps=1)


def test_create_bearer_refusals_without_context_or_bearer_id() -> None:
    rig = Rig(address_pool="10.201.0.0/24")
    with pytest.raises(CoreReject) as detached:
        rig.state.create_bearer("001010000000001", qci=65, arp=Arp())
    assert detached.value.cause == 31
    rig.attach("001010000000001")
    ebis = [rig.state.create_bearer("001010000000001", qci=8, arp=Arp()).ebi for _ in range(10)]
    assert ebis == list(range(6, 16))
    with pytest.raises(CoreReject) as full:
        rig.state.create_bearer("001010000000001", qci=8, arp=Arp())
    assert full.value.cause == 65
    with pytest.raises(ValueError, match="qci"):
        rig.state.create_bearer("001010000000001", qci=0, arp=Arp())


def test_delete_bearer_detach_and_drop_all() -> None:
    rig = Rig(address_pool="10.201.0.0/24")
    for n in (1, 2, 3):
        rig.attach(f"00101000000000{n}")
    st = rig.state
    st.create_bearer("001010000000001", qci=65, arp=Arp(), gbr_kbps=64)
    rig.heard.clear()
    assert st.delete_bearer("001010000000001", 6) is True
    assert st.delete_bearer("001010000000001", 6) is False
    assert st.delete_bearer("001010000000077", 5) is False
    assert rig.events("bearer_released")[-1]["cause"] == "released"
    assert st.delete_bearer("001010000000001", 5, cause="pdn released") is True  # -> detach
    assert st.ue("001010000000001") is None
    assert rig.events("detach")[-1]["cause"] == "pdn released"
    assert st.detach("001010000000002") is True and st.detach("001010000000002") is False
    assert st.drop_all("core restart") == ["001010000000003"]
    assert rig.heard == [
        ("001010000000001", "released", 6, "released"),
        ("001010000000001", "released", 5, "detached"),
        ("001010000000002", "released", 5, "detached"),
        ("001010000000003", "released", 5, "core restart"),
    ]
    (dropped,) = rig.events("contexts_dropped")
    assert dropped["imsis"] == ["001010000000003"] and dropped["cause"] == "core restart"
    c = st.counters()
    assert (c["detaches"], c["contexts_dropped"], c["ues_attached"], c["bearers_active"]) == (
        2, 1, 0, 0,
    )  # fmt: skip
    assert c["bearers_created"] == c["bearers_released"] == 4


def test_listeners_run_outside_the_lock() -> None:
    rig = Rig(address_pool="10.201.0.0/24")
    finished: list[bool] = []

    def listener(imsi: str, event: str, bearer: Bearer, cause: str) -> None:
        # Another thread must get the lock while we run: it would block if we held it.
        other = threading.Thread(target=rig.state.counters)
        other.start()
        other.join(timeout=10)
        finished.append(not other.is_alive())
        raise RuntimeError("a broken listener must not break the procedure")

    rig.state.add_listener(listener)
    rig.attach("001010000000001")
    assert finished == [True]
    assert rig.heard == [("001010000000001", "activated", 5, "attach")]  # the other one ran
    assert rig.state.ue("001010000000001") is not None


def test_subscriber_store() -> None:
    rig = Rig()
    assert rig.state.put_subscriber(Subscriber("001010000000002", K1, OPC1)) is True
    assert rig.state.put_subscriber(Subscriber("001010000000001", K1, OPC1)) is True
    assert rig.state.put_subscriber(Subscriber("001010000000001", K1, OPC1, qci=8)) is False
    assert [s.imsi for s in rig.state.subscribers()] == ["001010000000001", "001010000000002"]
    assert rig.state.subscriber("001010000000001").qci == 8  # type: ignore[union-attr]
    assert rig.state.delete_subscriber("001010000000002") is True
    assert rig.state.delete_subscriber("001010000000002") is False
    assert [r["event"] for r in rig.records] == ["subscriber_put"] * 3 + ["subscriber_deleted"]
    assert rig.state.counters()["subscribers"] == 1
    with pytest.raises(ValueError, match="plmn"):
        CoreState("bad", "0010")


def test_concurrent_procedures_keep_the_state_consistent() -> None:
    """Smoke test: many threads attaching, adding GBR bearers and detaching at once."""
    capacity = {"cellA": 4, "cellB": 3}
    rig = Rig(address_pool="10.201.0.0/24", cell_gbr_capacity=capacity)
    st = rig.state
    imsis = [f"0010100000001{n:02d}" for n in range(24)]
    for imsi in imsis:
        rig.provision(imsi)
    errors: list[BaseException] = []

    def worker(imsi: str, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(15):
                st.attach(imsi, plmn=PLMN, ran=rng.choice(["cellA", "cellB"]))
                for _ in range(rng.randint(0, 3)):
                    arp = Arp(rng.randint(1, 15), rng.random() < 0.5, rng.random() < 0.5)
                    try:
                        st.create_bearer(imsi, qci=65, arp=arp, gbr_kbps=64)
                    except CoreReject as exc:
                        assert exc.cause == 26  # the cell is full
                if rng.random() < 0.5:
                    st.detach(imsi)
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i, n)) for n, i in enumerate(imsis)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    for ran, cell in st.cells().items():
        assert cell["gbr_bearers"] <= capacity[ran]
    c = st.counters()
    assert c["attach_requests"] == c["attach_accepts"] == len(imsis) * 15
    assert c["bearers_created"] - c["bearers_released"] == c["bearers_active"]
    assert c["bearers_active"] == sum(len(ue.bearers) for ue in st.ues())
    addresses = [ue.address for ue in st.ues()]
    assert len(addresses) == len(set(addresses))
    activated = sum(1 for h in rig.heard if h[1] == "activated")
    assert activated == c["bearers_created"] == len(rig.events("bearer_activated"))
    walls = [r["wall"] for r in rig.records]
    assert walls == sorted(walls)  # the record is written in procedure order
