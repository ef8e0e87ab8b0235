"""The planner binds a profile to a lab: names, addresses, routes, timeline, every problem."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from testbed.errors import ConfigError
from testbed.model import Lab, Profile, load_lab, load_profile
from testbed.plan import DEFAULT_PROBE_PORT, Plan, make_plan
from testbed.registry import catalog as real_catalog

REPO = Path(__file__).resolve().parents[2]
SHIPPED_LAB = REPO / "profiles" / "labs" / "emulated.yaml"
SHIPPED_PROFILE = REPO / "profiles" / "radio_outage.yaml"

NETWORK_ACTIONS = frozenset({"link_down", "link_up", "isolate", "restore"})
FAKE_DRIVERS: dict[tuple[str, str], frozenset[str]] = {
    ("network", "emulated"): NETWORK_ACTIONS,
    ("traffic", "emulated"): frozenset(),
    ("capture", "dumpcap"): frozenset(),
    ("impairment", "netem"): frozenset({"apply", "clear"}),
    ("impairment", "emulated"): frozenset({"set", "clear", "outage_start", "outage_end"}),
    ("mcptt", "emulated"): frozenset({"join", "ptt_press", "ptt_release"}),
    ("radio", "at"): frozenset({"radio_off", "radio_on"}),
    ("radio", "pei"): frozenset({"ptt_press", "ptt_release"}),
    ("core", "tetra_emulated"): frozenset(),
    ("core", "open5gs"): frozenset({"kill", "restart", "bearer_create"}),
    ("core", "amarisoft"): frozenset({"kill", "cell_gain"}),
    ("attenuator", "scpi"): frozenset({"set", "ramp"}),
    ("power_supply", "scpi"): frozenset({"output", "set"}),
}


def fake_catalog(kind: str, driver: str) -> frozenset[str] | None:
    return FAKE_DRIVERS.get((kind, driver))


def lab_of(**data: Any) -> Lab:
    return Lab.model_validate_json(json.dumps(data))


def profile_of(**data: Any) -> Profile:
    data.setdefault("name", "p")
    data.setdefault("duration_s", 10)
    return Profile.model_validate_json(json.dumps(data))


def stream(sid: str, src: str, dst: str, **extra: Any) -> dict[str, Any]:
    return {"id": sid, "from": src, "to": dst, "rate_pps": 10, **extra}


def plan_problems(profile: Profile, lab: Lab, catalog: Any = fake_catalog) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_plan(profile, lab, catalog)
    return info.value.problems


@pytest.fixture(scope="module")
def shipped_lab() -> Lab:
    return load_lab(SHIPPED_LAB)[0]


@pytest.fixture(scope="module")
def shipped_profile() -> Profile:
    return load_profile(SHIPPED_PROFILE)[0]


@pytest.fixture(scope="module")
def shipped_plan(shipped_profile: Profile, shipped_lab: Lab) -> Plan:
    return make_plan(shipped_profile, shipped_lab, real_catalog)


# --------------------------------------------------------------------------------------------
# Helpers that read a plan the way the network would
# --------------------------------------------------------------------------------------------


def ports_of(plan: Plan) -> list[tuple[str, str, ipaddress.IPv4Interface]]:
    """(link, node, interface) of every port."""
    return [
        (seg.link, p.node, ipaddress.IPv4Interface(p.address))
        for seg in plan.segments
        for p in seg.ports
    ]


def attached(plan: Plan, node: str) -> set[ipaddress.IPv4Network]:
    return {iface.network for _, n, iface in ports_of(plan) if n == node}


def owner(plan: Plan, ip: ipaddress.IPv4Address) -> str:
    owners = [n for _, n, iface in ports_of(plan) if iface.ip == ip]
    assert len(owners) == 1, f"{ip} is owned by {owners}"
    return owners[0]


def deliver(plan: Plan, src: str, dst_ip: str, max_hops: int = 16) -> list[str]:
    """Follow the planned routes from ``src`` to ``dst_ip``; returns the nodes visited."""
    target = ipaddress.IPv4Address(dst_ip)
    forwarding = {n["name"] for n in plan.nodes if n["forwarding"]}
    path = [src]
    here = src
    for _ in range(max_hops):
        if any(target in net for net in attached(plan, here)):
            path.append(owner(plan, target))
            return path
        routes = [r for r in plan.routes if r.node == here]
        matching = [r for r in routes if target in ipaddress.IPv4Network(r.destination)]
        assert len(matching) == 1, f"{here} has {len(matching)} routes toward {target}"
        via = ipaddress.IPv4Address(matching[0].via)
        assert any(via in net for net in attached(plan, here)), f"{here}: {via} not on-link"
        here = owner(plan, via)
        assert here in forwarding, f"{here} does not forward but is a next hop"
        path.append(here)
    raise AssertionError(f"no delivery from {src} to {dst_ip} within {max_hops} hops: {path}")


# --------------------------------------------------------------------------------------------
# The shipped profile on the shipped lab
# --------------------------------------------------------------------------------------------


def test_shipped_plan_summary(shipped_plan: Plan) -> None:
    assert shipped_plan.profile == "radio_outage"
    assert shipped_plan.lab == "emulated-cross-border"
    assert shipped_plan.duration_s == 8
    assert shipped_plan.repetitions == 1
    assert [s.link for s in shipped_plan.segments] == [
        "radio_a1", "radio_a2", "radio_b1", "radio_b2", "backhaul_a", "backhaul_b", "backbone",
        "backhaul_a_sb", "radio_a1_b", "radio_a2_b",
    ]  # fmt: skip
    assert {d.name: d.lease_key for d in shipped_plan.devices}["net"] == "emulated-cross-border/net"
    assert [c.name for c in shipped_plan.captures] == ["ue_a1_radio", "as_backbone"]
    assert [k.stream for k in shipped_plan.kpis] == [
        "ue_a1_to_as", "as_to_ue_b1", "as_to_ue_b1", "ops_to_ue_a2",
    ]  # fmt: skip


def test_shipped_addresses_are_unique_and_inside_their_subnets(shipped_plan: Plan) -> None:
    seen: list[ipaddress.IPv4Address] = []
    subnets = []
    for seg in shipped_plan.segments:
        subnet = ipaddress.IPv4Network(seg.subnet)
        subnets.append(subnet)
        for port in seg.ports:
            iface = ipaddress.IPv4Interface(port.address)
            assert iface.network == subnet, (seg.link, port)
            assert iface.ip not in (subnet.network_address, subnet.broadcast_address)
            seen.append(iface.ip)
    assert len(seen) == len(set(seen)) == 23  # 9 point-to-point links + 5 on the backbone
    for i, a in enumerate(subnets):
        for b in subnets[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    pool = ipaddress.IPv4Network("10.201.0.0/16")
    backbone = next(s for s in shipped_plan.segments if s.link == "backbone")
    assert backbone.subnet == "10.200.0.0/24"  # the lab's own subnets are kept
    home_radio = {"radio_a1", "radio_a2", "radio_b1", "radio_b2"}
    ue_addresses = ipaddress.IPv4Network("10.45.0.0/16")
    for seg in shipped_plan.segments:
        if seg.link != "backbone":
            expected = ue_addresses if seg.link in home_radio else pool
            assert ipaddress.IPv4Network(seg.subnet).subnet_of(expected), seg.link


def test_shipped_interface_names_are_unique_per_node(shipped_plan: Plan) -> None:
    per_node: dict[str, list[str]] = {}
    for seg in shipped_plan.segments:
        for port in seg.ports:
            per_node.setdefault(port.node, []).append(port.ifname)
    for node, names in per_node.items():
        assert len(names) == len(set(names)), (node, names)
    assert sorted(per_node["ran_a"]) == ["eth0", "eth1", "eth2", "eth3"]


def test_shipped_node_address_is_one_of_its_ports(shipped_plan: Plan) -> None:
    for node, address in shipped_plan.addresses.items():
        mine = [iface.ip for _, n, iface in ports_of(shipped_plan) if n == node]
        assert ipaddress.IPv4Address(address) in mine


def test_every_ue_routes_to_every_other_subnet_via_its_ran(
    shipped_plan: Plan, shipped_lab: Lab
) -> None:
    unrouted = {link.name for link in shipped_lab.links if not link.static_routes}
    all_subnets = {
        ipaddress.IPv4Network(s.subnet) for s in shipped_plan.segments if s.link not in unrouted
    }
    forwarding = {n.name for n in shipped_lab.nodes if n.forwarding}
    ues = [n.name for n in shipped_lab.nodes if "ue" in n.roles]
    assert len(ues) == 4
    for ue in ues:
        mine = attached(shipped_plan, ue)
        routes = [r for r in shipped_plan.routes if r.node == ue]
        destinations = [ipaddress.IPv4Network(r.destination) for r in routes]
        assert len(destinations) == len(set(destinations)), ue
        assert set(destinations) == all_subnets - mine, ue  # roaming links only when programmed
        for route in routes:
            via = ipaddress.IPv4Address(route.via)
            assert any(via in net for net in mine), (ue, route)
            assert owner(shipped_plan, via) in forwarding, (ue, route)


def test_every_pair_of_addressed_nodes_can_reach_each_other(shipped_plan: Plan) -> None:
    for src in shipped_plan.addresses:
        for dst, address in shipped_plan.addresses.items():
            if src != dst:
                assert deliver(shipped_plan, src, address)[-1] == dst


def test_shipped_streams(shipped_plan: Plan) -> None:
    assert [(s.id, s.from_node, s.to_node) for s in shipped_plan.streams] == [
        ("ue_a1_to_as", "ue_a1", "mcptt_as"),
        ("as_to_ue_b1", "mcptt_as", "ue_b1"),
        ("ops_to_ue_a2", "ops_centre", "ue_a2"),
    ]
    assert [s.wire_id for s in shipped_plan.streams] == [1, 2, 3]
    for s in shipped_plan.streams:
        assert s.dst_address == shipped_plan.addresses[s.to_node]
        assert owner(shipped_plan, ipaddress.IPv4Address(s.dst_address)) == s.to_node
        assert (s.start_s, s.stop_s) == (0.0, 8.0)  # stop_s defaults to the duration
        assert s.port == DEFAULT_PROBE_PORT
        assert deliver(shipped_plan, s.from_node, s.dst_address)[-1] == s.to_node
    ue_path = deliver(shipped_plan, "ue_a1", shipped_plan.addresses["mcptt_as"])
    assert ue_path == ["ue_a1", "ran_a", "core_a", "mcptt_as"]


def test_shipped_timeline(shipped_plan: Plan) -> None:
    assert [(e.at_s, e.device, e.action, e.args) for e in shipped_plan.timeline] == [
        (3.0, "net", "link_down", {"link": "radio_a1"}),
        (5.0, "net", "link_up", {"link": "radio_a1"}),
    ]


def test_timeline_is_sorted_and_stable_for_ties(shipped_lab: Lab) -> None:
    events = [
        {"at_s": 5, "device": "net", "action": "link_down", "args": {"n": 1}},
        {"at_s": 1, "device": "net", "action": "link_up", "args": {"n": 2}},
        {"at_s": 5, "device": "net", "action": "isolate", "args": {"n": 3}},
        {"at_s": 0, "device": "net", "action": "restore", "args": {"n": 4}},
        {"at_s": 1, "device": "net", "action": "link_down", "args": {"n": 5}},
        {"at_s": 5, "device": "net", "action": "restore", "args": {"n": 6}},
    ]
    plan = make_plan(profile_of(timeline=events), shipped_lab, fake_catalog)
    assert [e.args["n"] for e in plan.timeline] == [4, 2, 5, 1, 3, 6]
    times = [e.at_s for e in plan.timeline]
    assert times == sorted(times)


# --------------------------------------------------------------------------------------------
# Names and roles
# --------------------------------------------------------------------------------------------


def test_unique_roles_resolve_to_their_holder(shipped_lab: Lab) -> None:
    profile = profile_of(
        streams=[
            stream("a", "mcptt_server", "ran_country_b"),
            stream("b", "dispatcher", "core_country_a"),
        ]
    )
    plan = make_plan(profile, shipped_lab, fake_catalog)
    assert [(s.from_node, s.to_node) for s in plan.streams] == [
        ("mcptt_as", "ran_b"),
        ("ops_centre", "core_a"),
    ]
    assert plan.streams[0].dst_address == plan.addresses["ran_b"]


def test_ambiguous_role_names_its_holders(shipped_lab: Lab) -> None:
    problems = plan_problems(
        profile_of(streams=[stream("s", "ue_country_a", "mcptt_as")]), shipped_lab
    )
    assert len(problems) == 1, problems
    assert problems[0].startswith("profile: streams.0.from: ")
    assert "ue_country_a" in problems[0]
    assert "ue_a1, ue_a2" in problems[0]
    assert "use a name" in problems[0]


def test_unknown_name_is_an_error(shipped_lab: Lab) -> None:
    problems = plan_problems(profile_of(streams=[stream("s", "ue_a1", "ue_z9")]), shipped_lab)
    assert problems == ["profile: streams.0.to: no entry named 'ue_z9' and no entry with that role"]


def test_a_name_wins_over_a_role() -> None:
    lab = lab_of(
        name="l",
        nodes=[{"name": "server"}, {"name": "x", "roles": ["server"]}, {"name": "c"}],
        links=[{"name": "lan", "endpoints": ["server", "x", "c"]}],
        devices=[{"name": "t", "kind": "traffic", "driver": "emulated"}],
    )
    plan = make_plan(profile_of(streams=[stream("s", "c", "server")]), lab, fake_catalog)
    assert plan.streams[0].to_node == "server"


def test_timeline_device_by_role() -> None:
    lab = lab_of(
        name="l",
        nodes=[{"name": "a"}],
        devices=[
            {"name": "net", "kind": "network", "driver": "emulated", "roles": ["switch"]},
            {"name": "imp1", "kind": "impairment", "driver": "netem", "roles": ["shaper"]},
            {"name": "imp2", "kind": "impairment", "driver": "netem", "roles": ["shaper"]},
        ],
    )
    ok = profile_of(timeline=[{"at_s": 1, "device": "switch", "action": "isolate"}])
    assert make_plan(ok, lab, fake_catalog).timeline[0].device == "net"
    bad = profile_of(timeline=[{"at_s": 1, "device": "shaper", "action": "apply"}])
    problems = plan_problems(bad, lab)
    assert len(problems) == 1
    assert problems[0].startswith("profile: timeline.0.device: ")
    assert "imp1, imp2" in problems[0]


# --------------------------------------------------------------------------------------------
# Devices, impairments, streams, KPIs
# --------------------------------------------------------------------------------------------


def test_unknown_device_action_lists_the_known_ones(shipped_lab: Lab) -> None:
    profile = profile_of(timeline=[{"at_s": 2, "device": "net", "action": "link_flap"}])
    problems = plan_problems(profile, shipped_lab)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.startswith("profile: timeline.0.action: ")
    assert "'link_flap'" in problem
    assert "(it has: isolate, link_down, link_up, restore)" in problem


def test_action_check_with_the_real_registry(shipped_lab: Lab) -> None:
    profile = profile_of(timeline=[{"at_s": 2, "device": "traffic", "action": "burst"}])
    problems = plan_problems(profile, shipped_lab, real_catalog)
    assert len(problems) == 1
    assert "has no action 'burst'" in problems[0]
    assert "(it has: none)" in problems[0]


def test_unknown_driver_is_an_error() -> None:
    lab = lab_of(
        name="l",
        nodes=[{"name": "a"}],
        devices=[
            {"name": "net", "kind": "network", "driver": "emulated"},
            {"name": "radio1", "kind": "radio", "driver": "acme9000"},
        ],
    )
    profile = profile_of(timeline=[{"at_s": 1, "device": "radio1", "action": "key_up"}])
    problems = plan_problems(profile, lab)
    assert problems == ["lab: devices.1.driver: no driver 'acme9000' for kind 'radio'"]
    assert plan_problems(profile, lab, real_catalog) == problems


def test_impairment_needs_an_impairment_device(shipped_lab: Lab) -> None:
    problems = plan_problems(
        profile_of(impairments=[{"link": "backhaul_a", "delay_ms": 50}]), shipped_lab
    )
    assert problems == [
        "profile: impairments.0.link: link 'backhaul_a' has no impairment device in this lab"
    ]
    problems = plan_problems(
        profile_of(impairments=[{"link": "no_such", "delay_ms": 5}]), shipped_lab
    )
    assert problems == ["profile: impairments.0.link: no link 'no_such' in the lab"]


def test_impairment_on_an_impaired_link_is_planned() -> None:
    lab = lab_of(
        name="l",
        nodes=[{"name": "a"}, {"name": "b"}],
        links=[{"name": "ab", "endpoints": ["a", "b"], "impaired_by": "shaper"}],
        devices=[{"name": "shaper", "kind": "impairment", "driver": "netem"}],
    )
    plan = make_plan(profile_of(impairments=[{"link": "ab", "loss_pct": 5}]), lab, fake_catalog)
    assert len(plan.impairments) == 1
    assert plan.impairments[0]["device"] == "shaper"
    assert plan.impairments[0]["link"] == "ab"
    assert plan.impairments[0]["params"]["loss_pct"] == 5
    assert plan.segments[0].impaired_by == "shaper"


@pytest.mark.parametrize(
    ("timing", "duration"),
    [({"stop_s": 12}, 10), ({"start_s": 4, "stop_s": 4}, 10), ({"start_s": 11}, 10)],
    ids=["stop-after-end", "empty-window", "start-after-end"],
)
def test_stream_window_must_lie_within_the_duration(
    shipped_lab: Lab, timing: dict[str, float], duration: float
) -> None:
    profile = profile_of(duration_s=duration, streams=[stream("s", "ue_a1", "mcptt_as", **timing)])
    problems = plan_problems(profile, shipped_lab)
    assert problems == ["profile: streams.0.stop_s: must lie after start_s, within duration_s"]


def test_stream_stop_at_the_end_is_fine(shipped_lab: Lab) -> None:
    profile = profile_of(streams=[stream("s", "ue_a1", "mcptt_as", start_s=2, stop_s=10)])
    planned = make_plan(profile, shipped_lab, fake_catalog).streams[0]
    assert (planned.start_s, planned.stop_s) == (2, 10)


def test_kpi_on_an_unknown_stream(shipped_lab: Lab) -> None:
    profile = profile_of(
        streams=[stream("s", "ue_a1", "mcptt_as")],
        kpis=[
            {"name": "good", "stream": "s", "metric": "loss_pct", "max": 1},
            {"name": "bad", "stream": "ghost", "metric": "jitter_ms", "max": 5},
        ],
    )
    assert plan_problems(profile, shipped_lab) == [
        "profile: kpis.1.stream: no stream 'ghost' in this profile"
    ]


def test_several_problems_are_reported_in_one_error(shipped_lab: Lab) -> None:
    profile = profile_of(
        duration_s=10,
        streams=[
            stream("s1", "ue", "mcptt_as"),  # ambiguous role
            stream("s2", "ue_a1", "nobody", stop_s=20),  # unknown node + stop beyond the end
            stream("s1", "ue_a1", "ue_a1"),  # duplicate id + same node twice
        ],
        impairments=[{"link": "backbone", "delay_ms": 10}],  # no impairment device
        timeline=[
            {"at_s": 11, "device": "net", "action": "link_down"},  # after the end
            {"at_s": 1, "device": "ghost", "action": "x"},  # unknown device
            {"at_s": 2, "device": "net", "action": "explode"},  # unknown action
        ],
        captures=["ue_a1_radio", "nowhere"],  # unknown capture point
        kpis=[{"name": "k", "stream": "zzz", "metric": "loss_pct", "max": 0}],  # unknown stream
    )
    problems = plan_problems(profile, shipped_lab)
    fields = [p.split(": ")[1] for p in problems]
    assert sorted(fields) == sorted(
        [
            "streams.0.from",
            "streams.1.to",
            "streams.1.stop_s",
            "streams.2.to",
            "streams.2.id",
            "impairments.0.link",
            "timeline.0.at_s",
            "timeline.1.device",
            "timeline.2.action",
            "captures.1",
            "kpis.0.stream",
        ]
    ), problems
    assert all(p.startswith("profile: ") for p in problems)


def test_streams_need_a_traffic_device_and_an_addressed_destination() -> None:
    lab = lab_of(
        name="l",
        nodes=[{"name": "a"}, {"name": "b"}, {"name": "island"}],
        links=[{"name": "ab", "endpoints": ["a", "b"]}],
    )
    profile = profile_of(streams=[stream("s1", "a", "b"), stream("s2", "a", "island")])
    assert plan_problems(profile, lab) == [
        "profile: streams.1.to: node 'island' has no link, no address",
        "profile: streams: the lab has no traffic device to send streams",
    ]


# --------------------------------------------------------------------------------------------
# Purity and locations
# --------------------------------------------------------------------------------------------


def netns_names() -> set[str]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        pytest.skip(f"ip netns list failed: {done.stderr.strip()}")
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def assert_creates_no_namespace(action: Callable[[], object], attempts: int = 20) -> None:
    """``ip netns list`` shows no new namespace after ``action``.

    Other runs on this host may create namespaces at the same moment, so a change is
    retried: an action that makes namespaces itself shows new ones on every attempt.
    """
    new: set[str] = set()
    for _ in range(attempts):
        before = netns_names()
        action()
        new = netns_names() - before
        if not new:
            return
        time.sleep(0.05)
    raise AssertionError(f"new namespaces after planning, on every attempt: {sorted(new)[:10]}")


@pytest.fixture
def no_processes_or_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every way of starting a process or entering a namespace fail loudly."""

    def forbidden(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"the planner must touch nothing, but called with {args!r}")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    for name in ("system", "fork", "posix_spawn", "posix_spawnp", "unshare", "setns"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, forbidden)


@pytest.mark.usefixtures("no_processes_or_namespaces")
def test_planning_is_pure(shipped_profile: Profile, shipped_lab: Lab) -> None:
    profile_dump = shipped_profile.model_dump()
    lab_dump = shipped_lab.model_dump()
    first = make_plan(shipped_profile, shipped_lab, real_catalog)
    second = make_plan(shipped_profile, shipped_lab, real_catalog)
    assert first == second
    assert first.model_dump_json() == second.model_dump_json()
    assert shipped_profile.model_dump() == profile_dump
    assert shipped_lab.model_dump() == lab_dump


def test_planning_creates_no_namespaces(shipped_profile: Profile, shipped_lab: Lab) -> None:
    plans: list[Plan] = []
    assert_creates_no_namespace(
        lambda: plans.append(make_plan(shipped_profile, shipped_lab, real_catalog))
    )
    assert_creates_no_namespace(
        lambda: plan_problems(profile_of(streams=[stream("s", "ue", "x")]), shipped_lab)
    )
    assert all(plan == plans[0] for plan in plans)


def test_cli_locate_gives_file_and_line(tmp_path: Path) -> None:
    from testbed.cli import load_bound

    text = (
        "name: p\n"
        "duration_s: 10\n"
        "streams:\n"
        "  - {id: s1, from: ue_a1, to: mcptt_as, rate_pps: 10}\n"
        "  - id: s2\n"
        "    from: ue\n"
        "    to: nobody\n"
        "    rate_pps: 10\n"
        "timeline:\n"
        "  - {at_s: 1, device: net, action: explode}\n"
    )
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_bound(str(path), str(SHIPPED_LAB))
    assert info.value.problems == [
        f"{path}:6: streams[1].from: role 'ue' is held by several entries "
        "(ue_a1, ue_a2, ue_b1, ue_b2); use a name",
        f"{path}:7: streams[1].to: no entry named 'nobody' and no entry with that role",
        f"{path}:10: timeline[0].action: device 'net' (network/emulated) has no action "
        "'explode' (it has: isolate, link_down, link_up, restore)",
    ]


def test_cli_locate_points_lab_problems_at_the_lab_file(tmp_path: Path) -> None:
    from testbed.cli import load_bound

    lab_text = (
        "name: l\n"
        "nodes: [{name: a}, {name: b}]\n"
        "links:\n"
        "  - {name: ab, endpoints: [a, b]}\n"
        "devices:\n"
        "  - {name: traffic, kind: traffic, driver: emulated}\n"
        "  - name: radio\n"
        "    kind: radio\n"
        "    driver: acme\n"
    )
    lab_path = tmp_path / "lab.yaml"
    lab_path.write_text(lab_text, encoding="utf-8")
    profile_path = tmp_path / "p.yaml"
    profile_path.write_text("name: p\nduration_s: 5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_bound(str(profile_path), str(lab_path))
    assert info.value.problems == [
        f"{lab_path}:9: devices[1].driver: no driver 'acme' for kind 'radio'"
    ]


# --------------------------------------------------------------------------------------------
# Routing on a small custom lab: a - r1 - r2 - b
# --------------------------------------------------------------------------------------------


def line_lab(r1_forwards: bool = True, r2_forwards: bool = True) -> Lab:
    return lab_of(
        name="line",
        nodes=[
            {"name": "a"},
            {"name": "r1", "forwarding": r1_forwards},
            {"name": "r2", "forwarding": r2_forwards},
            {"name": "b"},
        ],
        links=[
            {"name": "a_r1", "endpoints": ["a", "r1"], "subnet": "192.168.1.0/30"},
            {"name": "r1_r2", "endpoints": ["r1", "r2"], "subnet": "192.168.2.0/30"},
            {"name": "r2_b", "endpoints": ["r2", "b"], "subnet": "192.168.3.0/30"},
        ],
        devices=[{"name": "t", "kind": "traffic", "driver": "emulated"}],
    )


def routes_of(plan: Plan, node: str) -> dict[str, str]:
    return {r.destination: r.via for r in plan.routes if r.node == node}


def test_routes_on_a_line_of_two_routers() -> None:
    plan = make_plan(profile_of(), line_lab(), fake_catalog)
    assert plan.addresses == {
        "a": "192.168.1.1",
        "r1": "192.168.1.2",
        "r2": "192.168.2.2",
        "b": "192.168.3.2",
    }
    assert routes_of(plan, "a") == {
        "192.168.2.0/30": "192.168.1.2",
        "192.168.3.0/30": "192.168.1.2",
    }
    assert routes_of(plan, "b") == {
        "192.168.1.0/30": "192.168.3.1",
        "192.168.2.0/30": "192.168.3.1",
    }
    assert routes_of(plan, "r1") == {"192.168.3.0/30": "192.168.2.2"}
    assert routes_of(plan, "r2") == {"192.168.1.0/30": "192.168.2.1"}
    assert deliver(plan, "a", "192.168.3.2") == ["a", "r1", "r2", "b"]
    assert deliver(plan, "b", "192.168.1.1") == ["b", "r2", "r1", "a"]


def test_a_non_forwarding_middle_node_gives_no_transit_route() -> None:
    plan = make_plan(profile_of(), line_lab(r2_forwards=False), fake_catalog)
    a_routes = routes_of(plan, "a")
    assert "192.168.3.0/30" not in a_routes  # r2 does not pass traffic on to b's link
    assert a_routes == {"192.168.2.0/30": "192.168.1.2"}  # r1 still delivers onto r1_r2
    assert "192.168.1.0/30" not in routes_of(plan, "b")
    assert routes_of(plan, "r1") == {}  # r2 is the only way to r2_b, and it does not forward

    plan = make_plan(profile_of(), line_lab(r1_forwards=False, r2_forwards=False), fake_catalog)
    assert plan.routes == ()


def test_routes_prefer_the_shorter_path() -> None:
    # a square a - r1 - r2 - b with a shortcut r1 - b: a reaches b's subnets through r1 only
    lab = lab_of(
        name="sq",
        nodes=[
            {"name": "a"},
            {"name": "r1", "forwarding": True},
            {"name": "r2", "forwarding": True},
            {"name": "r3", "forwarding": True},
            {"name": "b"},
        ],
        links=[
            {"name": "a_r1", "endpoints": ["a", "r1"]},
            {"name": "r1_r2", "endpoints": ["r1", "r2"]},
            {"name": "r2_r3", "endpoints": ["r2", "r3"]},
            {"name": "r1_r3", "endpoints": ["r1", "r3"]},
            {"name": "r3_b", "endpoints": ["r3", "b"]},
        ],
    )
    plan = make_plan(profile_of(), lab, fake_catalog)
    subnet = {s.link: s.subnet for s in plan.segments}
    r1_addr = {
        seg.link: p.address.split("/")[0]
        for seg in plan.segments
        for p in seg.ports
        if p.node == "r1"
    }
    r3_on_r1_r3 = next(
        p.address.split("/")[0]
        for seg in plan.segments
        if seg.link == "r1_r3"
        for p in seg.ports
        if p.node == "r3"
    )
    assert routes_of(plan, "r1")[subnet["r3_b"]] == r3_on_r1_r3
    assert routes_of(plan, "a")[subnet["r3_b"]] == r1_addr["a_r1"]
    b_addr = plan.addresses["b"]
    assert deliver(plan, "a", b_addr) == ["a", "r1", "r3", "b"]


# --------------------------------------------------------------------------------------------
# Addressing bugs
# --------------------------------------------------------------------------------------------


def test_automatic_interface_names_avoid_explicit_ones() -> None:
    lab = lab_of(
        name="l",
        nodes=[{"name": "a"}, {"name": "b"}, {"name": "c"}],
        links=[
            {"name": "ab", "endpoints": ["a:eth1", "b"]},
            {"name": "ac", "endpoints": ["a", "c"]},
        ],
    )
    plan = make_plan(profile_of(), lab, fake_catalog)
    names = [p.ifname for seg in plan.segments for p in seg.ports if p.node == "a"]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize(
    ("first", "second"),
    [("10.9.0.1/29", "10.9.0.1/29"), ("10.9.0.0/29", None), ("10.9.0.7/29", None)],
    ids=["duplicate", "network-address", "broadcast-address"],
)
def test_unusable_explicit_addresses_are_reported(
    tmp_path: Path, first: str, second: str | None
) -> None:
    b = f"{{node: b, address: {second}}}" if second else "b"
    path = tmp_path / "lab.yaml"
    path.write_text(
        "name: l\n"
        "nodes: [{name: a}, {name: b}]\n"
        "links:\n"
        f"  - {{name: ab, subnet: 10.9.0.0/29, endpoints: [{{node: a, address: {first}}}, {b}]}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        lab, _ = load_lab(path)
        make_plan(profile_of(), lab, fake_catalog)
    assert any(first.split("/")[0] in p for p in info.value.problems), info.value.problems


def test_devices_outside_the_infrastructure_are_planned_only_when_the_timeline_uses_them(
    shipped_lab: Lab,
) -> None:
    idle = make_plan(profile_of(), shipped_lab, fake_catalog)
    assert "mcptt" not in {d.name for d in idle.devices}
    assert {"net", "traffic", "capture", "radio_channel"} <= {d.name for d in idle.devices}
    events = [{"at_s": 1, "device": "mcptt", "action": "join", "args": {"user": "ue_a1"}}]
    used = make_plan(profile_of(timeline=events), shipped_lab, fake_catalog)
    assert "mcptt" in {d.name for d in used.devices}


def test_listed_devices_are_opened_in_coupling_order(shipped_lab: Lab) -> None:
    events = [{"at_s": 1, "device": "atten", "action": "set", "args": {"atten_db": 3}}]
    profile = profile_of(timeline=events, devices=["modem_a1", "psu"])
    kinds = [d.kind for d in make_plan(profile, shipped_lab, fake_catalog).devices]
    assert kinds.index("network") < kinds.index("impairment") < kinds.index("power_supply")
    assert kinds.index("power_supply") < kinds.index("attenuator") < kinds.index("radio")
    assert plan_problems(profile_of(devices=["nothing"]), shipped_lab) == [
        "profile: devices.0: no entry named 'nothing' and no entry with that role"
    ]


def test_device_kpis_name_an_opened_device(shipped_lab: Lab) -> None:
    kpi = {"name": "k", "device": "modem_a1", "counter": "outages.0.duration_s", "max": 5}
    assert plan_problems(profile_of(kpis=[kpi]), shipped_lab) == [
        "profile: kpis.0.device: device 'modem_a1' is not opened by this profile: drive it from "
        "the timeline or list it in devices"
    ]
    plan = make_plan(profile_of(kpis=[kpi], devices=["modem_a1"]), shipped_lab, fake_catalog)
    assert (plan.kpis[0].device, plan.kpis[0].counter) == ("modem_a1", "outages.0.duration_s")
    with pytest.raises(ValueError, match="names both the device and its counter"):
        profile_of(kpis=[{"name": "k", "device": "modem_a1", "max": 1}])


def test_an_action_that_lasts_needs_a_longer_deadline(shipped_lab: Lab) -> None:
    ramp = {"at_s": 1, "device": "atten", "action": "ramp", "args": {"duration_s": 12}}
    assert plan_problems(profile_of(duration_s=20, timeline=[ramp]), shipped_lab) == [
        "profile: timeline.0.timeout_s: the action lasts 12 s (args.duration_s): give it a "
        "timeout_s above that (now 10 s)"
    ]
    late = {**ramp, "at_s": 15, "timeout_s": 14}
    assert plan_problems(profile_of(duration_s=20, timeline=[late]), shipped_lab) == [
        "profile: timeline.0.args.duration_s: the action would outlast the profile "
        "(at_s + duration_s > duration_s)"
    ]


def test_mcptt_kpis_need_captures(shipped_lab: Lab) -> None:
    kpis = [{"name": "KPI 1", "mcptt": "kpi1"}]
    assert plan_problems(profile_of(kpis=kpis), shipped_lab) == [
        "profile: kpis.0.mcptt: MCPTT KPIs come from captures: list some"
    ]
    plan = make_plan(profile_of(kpis=kpis, captures=["ue_a1_radio"]), shipped_lab, fake_catalog)
    assert plan.kpis[0].mcptt == "kpi1" and plan.kpis[0].max is None
