"""Consistency checks of a lab that a single field cannot express (names, references).

Each check returns ``(location, message)`` pairs so that all problems are reported together
and the loader can point each one at its YAML line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from testbed.model.lab import Lab

Problem = tuple[tuple[str | int, ...], str]


def _duplicates(section: str, names: Iterable[str]) -> list[Problem]:
    seen: set[str] = set()
    out: list[Problem] = []
    for i, name in enumerate(names):
        if name in seen:
            out.append(((section, i, "name"), f"duplicate name {name!r}"))
        seen.add(name)
    return out


def check_lab(lab: Lab) -> list[Problem]:
    problems: list[Problem] = []
    problems += _duplicates("nodes", (n.name for n in lab.nodes))
    problems += _duplicates("links", (x.name for x in lab.links))
    problems += _duplicates("devices", (d.name for d in lab.devices))
    problems += _duplicates("capture_points", (c.name for c in lab.capture_points))

    nodes = {n.name for n in lab.nodes}
    devices = {d.name: d for d in lab.devices}
    links = {x.name: x for x in lab.links}
    pool = ipaddress.ip_network(lab.address_pool)

    for i, link in enumerate(lab.links):
        for j, end in enumerate(link.endpoints):
            if end.node not in nodes:
                problems.append((("links", i, "endpoints", j, "node"), _unknown("node", end.node)))
        if link.impaired_by is not None:
            dev = devices.get(link.impaired_by)
            if dev is None:
                problems.append((("links", i, "impaired_by"), _unknown("device", link.impaired_by)))
            elif len(link.endpoints) != 2:
                problems.append(
                    (
                        ("links", i, "impaired_by"),
                        "only point-to-point links (two endpoints) can be impaired",
                    )
                )
            elif dev.kind != "impairment":
                problems.append(
                    (
                        ("links", i, "impaired_by"),
                        f"device {dev.name!r} is a {dev.kind}, not an impairment device",
                    )
                )
        if link.subnet is not None and ipaddress.ip_network(link.subnet).overlaps(pool):
            problems.append(
                (("links", i, "subnet"), f"overlaps the address_pool {lab.address_pool}")
            )
    problems += _check_subnet_overlaps(lab)

    for i, dev in enumerate(lab.devices):
        if dev.node is not None and dev.node not in nodes:
            problems.append((("devices", i, "node"), _unknown("node", dev.node)))

    for i, cp in enumerate(lab.capture_points):
        if cp.node not in nodes:
            problems.append((("capture_points", i, "node"), _unknown("node", cp.node)))
        if cp.link is None and cp.ifname is None:
            problems.append((("capture_points", i), "give the link or the ifname to capture on"))
        if cp.link is not None:
            cp_link = links.get(cp.link)
            if cp_link is None:
                problems.append((("capture_points", i, "link"), _unknown("link", cp.link)))
            elif cp.node not in {e.node for e in cp_link.endpoints}:
                problems.append(
                    (("capture_points", i, "link"), f"node {cp.node!r} is not on link {cp.link!r}")
                )
        dev = devices.get(cp.device)
        if dev is None:
            problems.append((("capture_points", i, "device"), _unknown("device", cp.device)))
        elif dev.kind != "capture":
            problems.append(
                (("capture_points", i, "device"), f"device {dev.name!r} is not a capture device")
            )
    return problems


def _check_subnet_overlaps(lab: Lab) -> list[Problem]:
    out: list[Problem] = []
    fixed = [(i, ipaddress.ip_network(x.subnet)) for i, x in enumerate(lab.links) if x.subnet]
    for a in range(len(fixed)):
        for b in range(a + 1, len(fixed)):
            if fixed[a][1].overlaps(fixed[b][1]):
                out.append(
                    (
                        ("links", fixed[b][0], "subnet"),
                        f"overlaps the subnet of link #{fixed[a][0]}",
                    )
                )
    return out


def _unknown(what: str, name: str) -> str:
    return f"no {what} named {name!r} in this lab"
