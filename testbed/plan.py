"""The planner: binds a profile to a lab, as a pure function.

It resolves every name or role the profile uses to the lab's nodes, links, devices and
capture points, allocates addresses, computes static routes, orders the timeline and
checks each action against its driver. Every unsatisfiable reference is reported at once;
nothing is touched, so ``testbed plan`` is always safe to run.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from testbed.errors import ConfigError
from testbed.model.lab import Device, Lab, Node
from testbed.model.profile import Impairment, Profile

DEFAULT_PROBE_PORT = 40000

ActionCatalog = Callable[[str, str], frozenset[str] | None]
"""``catalog(kind, driver)`` -> the driver's actions, or None when no such driver exists."""


class _PlanModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class PlannedPort(_PlanModel):
    node: str
    ifname: str
    address: str


class PlannedSegment(_PlanModel):
    link: str
    subnet: str
    ports: tuple[PlannedPort, ...]
    impaired_by: str | None
    mtu_bytes: int


class PlannedRoute(_PlanModel):
    node: str
    destination: str
    via: str


class PlannedDevice(_PlanModel):
    name: str
    kind: str
    driver: str
    lease_key: str | None
    settings: dict[str, Any]


class PlannedStream(_PlanModel):
    id: str
    wire_id: int
    kind: str
    from_node: str
    to_node: str
    dst_address: str
    port: int
    rate_pps: float
    payload_bytes: int
    dscp: int
    start_s: float
    stop_s: float
    rate_kbps: float | None = None
    codec_mode: int = 8
    payload_type: int = 96
    talk_on_s: float | None = None
    talk_off_s: float | None = None
    seed: int | None = None


class PlannedEvent(_PlanModel):
    at_s: float
    device: str
    action: str
    args: dict[str, Any]
    timeout_s: float
    fault: bool = False


class PlannedCapture(_PlanModel):
    name: str
    node: str
    ifname: str
    device: str


class PlannedPoint(_PlanModel):
    """One combination of a sweep: the swept values and the impairments that result."""

    index: int
    settings: dict[str, float]
    impairments: tuple[dict[str, Any], ...]


class PlannedKpi(_PlanModel):
    name: str
    stream: str | None
    metric: str | None
    mcptt: str | None = None
    device: str | None = None
    counter: str | None = None
    unit: str = ""
    failover: str | None = None
    statistic: str = "max"
    max: float | None
    min: float | None
    reference: str


class Plan(_PlanModel):
    """A profile bound to a lab: everything the runner needs, nothing it must look up."""

    profile: str
    lab: str
    duration_s: float
    repetitions: int
    nodes: tuple[dict[str, Any], ...]
    segments: tuple[PlannedSegment, ...]
    routes: tuple[PlannedRoute, ...]
    addresses: dict[str, str]
    devices: tuple[PlannedDevice, ...]
    streams: tuple[PlannedStream, ...]
    impairments: tuple[dict[str, Any], ...]
    points: tuple[PlannedPoint, ...]
    timeline: tuple[PlannedEvent, ...]
    captures: tuple[PlannedCapture, ...]
    kpis: tuple[PlannedKpi, ...]

    def topology(self) -> dict[str, Any]:
        """The network part, as plain data for the network driver."""
        return {
            "nodes": list(self.nodes),
            "segments": [s.model_dump() for s in self.segments],
            "routes": [r.model_dump() for r in self.routes],
            "addresses": dict(self.addresses),
        }

    def device(self, name: str) -> PlannedDevice:
        return next(d for d in self.devices if d.name == name)


Loc = tuple[str | int, ...]


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, Loc, str]] = []  # (file: "profile"|"lab", loc, message)

    def add(self, where: str, loc: Loc, message: str) -> None:
        self.items.append((where, loc, message))


def _resolve(ref: str, items: Sequence[Node] | Sequence[Device]) -> tuple[str | None, str]:
    """A name, or a role held by exactly one item. Returns (name, problem)."""
    for item in items:
        if item.name == ref:
            return item.name, ""
    holders = [item.name for item in items if ref in item.roles]
    if len(holders) == 1:
        return holders[0], ""
    if holders:
        return None, f"role {ref!r} is held by several entries ({', '.join(holders)}); use a name"
    return None, f"no entry named {ref!r} and no entry with that role"


def make_plan(
    profile: Profile,
    lab: Lab,
    catalog: ActionCatalog,
    locate: Callable[[str, Loc, str], str] | None = None,
) -> Plan:
    """Bind ``profile`` to ``lab``. Raises :class:`ConfigError` listing every problem.

    ``locate(file, loc, message)`` turns a problem into a line naming the file and YAML
    line; without it problems read ``profile: field: message``.
    """
    problems = _Problems()
    segments, addresses = _address_links(lab, problems)
    routes = _routes(lab, segments)
    devices = _devices(lab, catalog, problems)
    device_names = {d.name: d for d in devices}

    streams = []
    for i, s in enumerate(profile.streams):
        src, why_src = _resolve(s.from_node, lab.nodes)
        dst, why_dst = _resolve(s.to_node, lab.nodes)
        if src is None:
            problems.add("profile", ("streams", i, "from"), why_src)
        if dst is None:
            problems.add("profile", ("streams", i, "to"), why_dst)
        stop = s.stop_s if s.stop_s is not None else profile.duration_s
        if stop > profile.duration_s or stop <= s.start_s:
            problems.add(
                "profile", ("streams", i, "stop_s"), "must lie after start_s, within duration_s"
            )
        if src is None or dst is None:
            continue
        if src == dst:
            problems.add("profile", ("streams", i, "to"), "a stream needs two different nodes")
            continue
        if dst not in addresses:
            problems.add("profile", ("streams", i, "to"), f"node {dst!r} has no link, no address")
            continue
        streams.append(
            PlannedStream(
                id=s.id,
                wire_id=i + 1,
                kind=s.kind,
                from_node=src,
                to_node=dst,
                dst_address=addresses[dst],
                port=s.port or DEFAULT_PROBE_PORT,
                rate_pps=s.packet_rate_pps,
                payload_bytes=s.udp_payload_bytes,
                dscp=s.dscp,
                start_s=s.start_s,
                stop_s=stop,
                rate_kbps=s.rate_kbps,
                codec_mode=s.codec_mode,
                payload_type=s.payload_type,
                talk_on_s=s.talk_on_s if s.kind == "rtp_voice" else None,
                talk_off_s=s.talk_off_s if s.kind == "rtp_voice" else None,
                seed=s.seed,
            )
        )
    seen: set[str] = set()
    for i, s in enumerate(profile.streams):
        if s.id in seen:
            problems.add("profile", ("streams", i, "id"), f"duplicate stream id {s.id!r}")
        seen.add(s.id)
    if streams and not any(d.kind == "traffic" for d in devices):
        problems.add("profile", ("streams",), "the lab has no traffic device to send streams")

    links = {seg.link: seg for seg in segments}
    impairments = []
    for i, imp in enumerate(profile.impairments):
        seg = links.get(imp.link)
        if seg is None:
            problems.add("profile", ("impairments", i, "link"), f"no link {imp.link!r} in the lab")
        elif seg.impaired_by is None:
            problems.add(
                "profile",
                ("impairments", i, "link"),
                f"link {imp.link!r} has no impairment device in this lab",
            )
        else:
            impairments.append(
                {
                    "device": seg.impaired_by,
                    "link": imp.link,
                    "direction": imp.direction,
                    "params": imp.engine_params(),
                }
            )
    sweep_points = _sweep_points(profile, impairments, problems)

    timeline = []
    for i, ev in enumerate(profile.timeline):
        name, why = _resolve(ev.device, lab.devices)
        if name is None:
            problems.add("profile", ("timeline", i, "device"), why)
            continue
        if ev.at_s > profile.duration_s:
            problems.add("profile", ("timeline", i, "at_s"), "lies after the end (duration_s)")
        lasts = ev.args.get("duration_s")
        if isinstance(lasts, int | float) and not isinstance(lasts, bool):
            if lasts >= ev.timeout_s:
                problems.add(
                    "profile",
                    ("timeline", i, "timeout_s"),
                    f"the action lasts {lasts:g} s (args.duration_s): give it a timeout_s above "
                    f"that (now {ev.timeout_s:g} s)",
                )
            elif ev.at_s + lasts > profile.duration_s:
                problems.add(
                    "profile",
                    ("timeline", i, "args", "duration_s"),
                    "the action would outlast the profile (at_s + duration_s > duration_s)",
                )
        dev = device_names.get(name)
        if dev is not None:
            try:
                actions = catalog(dev.kind, dev.driver)
            except ConfigError:
                actions = None  # already reported with the device
            if actions is not None and ev.action not in actions:
                known = ", ".join(sorted(actions)) or "none"
                problems.add(
                    "profile",
                    ("timeline", i, "action"),
                    f"device {name!r} ({dev.kind}/{dev.driver}) has no action {ev.action!r} "
                    f"(it has: {known})",
                )
        timeline.append(
            PlannedEvent(
                at_s=ev.at_s,
                device=name,
                action=ev.action,
                args=ev.args,
                timeout_s=ev.timeout_s,
                fault=ev.fault,
            )
        )
    timeline.sort(key=lambda e: e.at_s)  # stable: equal times keep profile order
    used = {e.device for e in timeline}
    for i, ref in enumerate(profile.devices):
        name, why = _resolve(ref, lab.devices)
        if name is None:
            problems.add("profile", ("devices", i), why)
        else:
            used.add(name)
    devices = [d for d in devices if d.kind in INFRASTRUCTURE_KINDS or d.name in used]
    devices.sort(key=lambda d: OPEN_ORDER.get(d.kind, len(OPEN_ORDER)))

    captures = []
    points = {c.name: c for c in lab.capture_points}
    for i, ref in enumerate(profile.captures):
        cp = points.get(ref)
        if cp is None:
            problems.add("profile", ("captures", i), f"no capture point {ref!r} in the lab")
            continue
        ifname = cp.ifname
        if cp.link is not None:
            ifname = next(p.ifname for p in links[cp.link].ports if p.node == cp.node)
        assert ifname is not None  # the lab checks guarantee link or ifname
        captures.append(PlannedCapture(name=cp.name, node=cp.node, ifname=ifname, device=cp.device))

    stream_ids = {s.id for s in profile.streams}
    kpis = []
    for i, k in enumerate(profile.kpis):
        if k.mcptt is not None and not profile.captures:
            problems.add(
                "profile", ("kpis", i, "mcptt"), "MCPTT KPIs come from captures: list some"
            )
        if k.stream is not None and k.stream not in stream_ids:
            problems.add(
                "profile", ("kpis", i, "stream"), f"no stream {k.stream!r} in this profile"
            )
        if k.failover is not None and not any(e.fault for e in profile.timeline):
            problems.add(
                "profile",
                ("kpis", i, "failover"),
                "failover KPIs are measured at fault events: mark one with fault: true",
            )
        planned = k.model_dump()
        if k.device is not None:
            name, why = _resolve(k.device, lab.devices)
            if name is None:
                problems.add("profile", ("kpis", i, "device"), why)
            elif name not in {d.name for d in devices}:
                problems.add(
                    "profile",
                    ("kpis", i, "device"),
                    f"device {name!r} is not opened by this profile: drive it from the "
                    "timeline or list it in devices",
                )
            elif k.failover is not None and device_names[name].kind != "radio":
                problems.add(
                    "profile",
                    ("kpis", i, "device"),
                    f"failover {k.failover} comes from a radio's registration reports; "
                    f"{name!r} is a {device_names[name].kind}",
                )
            planned["device"] = name or k.device
        kpis.append(PlannedKpi(**planned))

    if problems.items:

        def plain(where: str, loc: Loc, message: str) -> str:
            field = ".".join(str(p) for p in loc)
            return f"{where}: {field}: {message}"

        fmt = locate or plain
        raise ConfigError([fmt(where, loc, msg) for where, loc, msg in problems.items])

    return Plan(
        profile=profile.name,
        lab=lab.name,
        duration_s=profile.duration_s,
        repetitions=profile.repetitions,
        nodes=tuple({"name": n.name, "forwarding": n.forwarding} for n in lab.nodes),
        segments=tuple(segments),
        routes=tuple(routes),
        addresses=addresses,
        devices=tuple(devices),
        streams=tuple(streams),
        impairments=tuple(impairments),
        points=tuple(sweep_points),
        timeline=tuple(timeline),
        captures=tuple(captures),
        kpis=tuple(kpis),
    )


MAX_SWEEP_POINTS = 10_000


def _sweep_points(
    profile: Profile, impairments: list[dict[str, Any]], problems: _Problems
) -> list[PlannedPoint]:
    """Every combination of the sweep axes (one point, the profile as written, if none)."""
    axes = []
    for i, axis in enumerate(profile.sweep):
        if axis.impairment >= len(profile.impairments):
            problems.add(
                "profile",
                ("sweep", i, "impairment"),
                f"there is no impairment #{axis.impairment} "
                f"(the profile has {len(profile.impairments)})",
            )
            continue
        base = profile.impairments[axis.impairment].model_dump()
        for j, value in enumerate(axis.values):
            try:  # each swept value must be a valid impairment, as if written in the file
                Impairment.model_validate_json(json.dumps(base | {axis.parameter: value}))
            except ValidationError as exc:
                message = exc.errors(include_url=False)[0]["msg"]
                problems.add("profile", ("sweep", i, "values", j), message)
        axes.append(axis)
    if len(impairments) != len(profile.impairments):
        return []  # already reported: a sweep over unplanned impairments means nothing
    count = 1
    for axis in axes:
        count *= len(axis.values)
    if count > MAX_SWEEP_POINTS:
        problems.add("profile", ("sweep",), f"{count} points; at most {MAX_SWEEP_POINTS}")
        return []
    points = []
    for index, combo in enumerate(itertools.product(*(axis.values for axis in axes))):
        planned = [dict(imp, params=dict(imp["params"])) for imp in impairments]
        settings: dict[str, float] = {}
        for axis, value in zip(axes, combo, strict=True):
            planned[axis.impairment]["params"][axis.parameter] = value
            settings[f"impairments[{axis.impairment}].{axis.parameter}"] = value
        points.append(PlannedPoint(index=index, settings=settings, impairments=tuple(planned)))
    return points


INFRASTRUCTURE_KINDS = frozenset({"network", "traffic", "capture", "impairment"})
"""Device kinds every run uses (links run through impairments whether or not the timeline acts
on them); a device of any other kind (radios, instruments, cores, MCPTT) is reserved and opened
only when the profile's timeline drives it or its ``devices`` list names it."""

OPEN_ORDER = {
    kind: rank
    for rank, kind in enumerate(
        ("network", "impairment", "core", "power_supply", "attenuator", "scpi", "radio", "mcptt")
    )
}
"""The order devices open in (and close in reverse): what others run on or are coupled to comes
first: the network, the links' impairment engines, the cores, the instruments that power and
attenuate the radios, then the radios and the applications; the rest (traffic, capture) last."""


def _devices(lab: Lab, catalog: ActionCatalog, problems: _Problems) -> list[PlannedDevice]:
    out = []
    for i, dev in enumerate(lab.devices):
        try:
            known = catalog(dev.kind, dev.driver) is not None
        except ConfigError as exc:
            problems.add("lab", ("devices", i, "driver"), "; ".join(exc.problems))
            known = True  # reported; do not also say it does not exist
        if not known:
            problems.add(
                "lab", ("devices", i, "driver"), f"no driver {dev.driver!r} for kind {dev.kind!r}"
            )
        out.append(
            PlannedDevice(
                name=dev.name,
                kind=dev.kind,
                driver=dev.driver,
                lease_key=f"{lab.name}/{dev.name}" if dev.lease else None,
                settings=dev.settings,
            )
        )
    return out


def _address_links(lab: Lab, problems: _Problems) -> tuple[list[PlannedSegment], dict[str, str]]:
    """Give every link a subnet (its own or one from the pool) and every port an address."""
    pool = ipaddress.IPv4Network(lab.address_pool)
    taken = [ipaddress.IPv4Network(x.subnet) for x in lab.links if x.subnet]
    cursor = int(pool.network_address)
    end = int(pool.broadcast_address) + 1
    segments: list[PlannedSegment] = []
    addresses: dict[str, str] = {}
    used_ifnames: dict[str, set[str]] = {}
    for link in lab.links:  # explicit names first: automatic ones must step around them
        for e in link.endpoints:
            if e.ifname:
                used_ifnames.setdefault(e.node, set()).add(e.ifname)
    named: set[tuple[str, str]] = set()
    for i, link in enumerate(lab.links):
        if link.subnet:
            subnet = ipaddress.IPv4Network(link.subnet)
        else:
            # smallest aligned block holding the ports plus network and broadcast
            prefix = 32 - max(2, (len(link.endpoints) + 1).bit_length())
            size = 1 << (32 - prefix)
            cursor = (cursor + size - 1) // size * size
            while True:
                subnet = ipaddress.IPv4Network((cursor, prefix))
                if not any(subnet.overlaps(t) for t in taken):
                    break
                cursor += size
            if cursor + size > end:
                problems.add("lab", ("address_pool",), f"too small for link {link.name!r}")
                continue
            cursor += size
        hosts = subnet.hosts()
        explicit = {e.address.split("/")[0] for e in link.endpoints if e.address}
        seen_addresses: set[str] = set()
        ports = []
        for j, end_point in enumerate(link.endpoints):
            where = ("links", i, "endpoints", j)
            ifname = end_point.ifname or _free_ifname(used_ifnames, end_point.node)
            if (end_point.node, ifname) in named:
                problems.add(
                    "lab", (*where, "ifname"), f"node {end_point.node!r} already has {ifname!r}"
                )
            named.add((end_point.node, ifname))
            if end_point.address:
                iface = ipaddress.IPv4Interface(end_point.address)
                if iface.ip not in subnet:
                    problems.add(
                        "lab",
                        (*where, "address"),
                        f"{end_point.address} is outside the link's subnet {subnet}",
                    )
                elif iface.ip in (subnet.network_address, subnet.broadcast_address):
                    problems.add(
                        "lab",
                        (*where, "address"),
                        f"{iface.ip} is the network or broadcast address of {subnet}",
                    )
                elif str(iface.ip) in seen_addresses:
                    problems.add("lab", (*where, "address"), f"{iface.ip} is used twice")
                address = str(iface.ip)
                seen_addresses.add(address)
            else:
                address = next(str(h) for h in hosts if str(h) not in explicit)
            ports.append(PlannedPort(node=end_point.node, ifname=ifname, address=address))
            addresses.setdefault(end_point.node, address)
        segments.append(
            PlannedSegment(
                link=link.name,
                subnet=str(subnet),
                ports=tuple(
                    PlannedPort(
                        node=p.node, ifname=p.ifname, address=f"{p.address}/{subnet.prefixlen}"
                    )
                    for p in ports
                ),
                impaired_by=link.impaired_by,
                mtu_bytes=link.mtu_bytes,
            )
        )
    return segments, addresses


def _free_ifname(used: dict[str, set[str]], node: str) -> str:
    """The first ``ethN`` of the node that no port uses yet; marks it used."""
    taken = used.setdefault(node, set())
    n = 0
    while f"eth{n}" in taken:
        n += 1
    taken.add(f"eth{n}")
    return f"eth{n}"


def _routes(lab: Lab, segments: list[PlannedSegment]) -> list[PlannedRoute]:
    """Static routes along shortest paths; only forwarding nodes carry transit traffic."""
    forwarding = {n.name for n in lab.nodes if n.forwarding}
    neighbours: dict[str, list[tuple[str, str]]] = {n.name: [] for n in lab.nodes}
    attached: dict[str, set[str]] = {n.name: set() for n in lab.nodes}
    unrouted = {link.name for link in lab.links if not link.static_routes}
    for seg in segments:
        if seg.link in unrouted:  # programmed at run time (docs/profiles.md): no static route
            continue
        for p in seg.ports:
            attached[p.node].add(seg.subnet)
            for q in seg.ports:
                if q.node != p.node:
                    neighbours[p.node].append((q.node, q.address.split("/")[0]))
    holders: dict[str, set[str]] = {}
    for node, subnets in attached.items():
        for subnet in subnets:
            holders.setdefault(subnet, set()).add(node)
    routes = []
    for source in neighbours:
        # BFS from source, remembering hop counts and the first hop toward every node
        first_hop: dict[str, str] = {source: ""}
        hops = {source: 0}
        queue = deque([source])
        while queue:
            u = queue.popleft()
            if u != source and u not in forwarding:
                continue  # reachable, but does not pass traffic on
            for v, via in neighbours[u]:
                if v not in first_hop:
                    first_hop[v] = via if u == source else first_hop[u]
                    hops[v] = hops[u] + 1
                    queue.append(v)
        for subnet, nodes in sorted(holders.items()):
            if subnet in attached[source]:
                continue
            # the nearest forwarding node on the subnet delivers onto it
            reach = [n for n in sorted(nodes) if n in forwarding and n in first_hop]
            if reach:
                best = min(reach, key=lambda n: hops[n])
                routes.append(PlannedRoute(node=source, destination=subnet, via=first_hop[best]))
    return routes
