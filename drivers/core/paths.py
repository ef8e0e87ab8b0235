"""Where a UE's packets go once a core has attached it: routes that make the data path follow the
UE through its serving cell (RAN node) and serving core.

The emulated lab's static routes send a UE's address through its home cell and the nearest
core. When a UE attaches somewhere else (a standby core after a failover, the other country's
network after roaming), the serving core programs the path, as an MME does when it tells the
eNB and the gateways where the bearer now runs:

* in the UE's node: everything leaves through the serving cell's link (table
  :data:`UE_TABLE`, with the UE's own address as source, which it keeps: the subscriber's static
  IP, valid in both networks through the EUCCS interconnect);
* in the RAN node: the UE's address is reached on the UE's link, and what comes from it goes
  to the serving core (a source rule to a table per core);
* in the serving core: the UE's address is reached through the RAN;
* in every node that shares another link with the serving core (the backbone: the MCPTT
  server, the operations centre, the other cores): the UE's address is reached through it.

Routes are host routes (/32) and rules keyed on the UE's address, replaced on every attach, so
the latest attach wins and nothing needs undoing; the namespaces go with the run.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

UE_TABLE = 200
UE_RULE_PRIORITY = 200
RAN_TABLE_BASE = 300
RAN_RULE_PRIORITY = 300


@dataclass(frozen=True)
class Port:
    node: str
    ifname: str
    address: str  # with prefix length, e.g. 10.201.0.1/30
    mac: str | None = None  # as the topology built it; None: ask the kernel

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


class PathError(Exception):
    """The topology has no path for this attach (no link between the UE and the cell, or
    between the cell and the core)."""


class Topology:
    """The lab's links as the network driver built them: ``namespaces`` {node: namespace} and
    ``links`` {link: [{node, ifname, address}, ...]}."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.namespaces: dict[str, str] = dict(data["namespaces"])
        self.links: dict[str, list[Port]] = {
            name: [
                Port(str(p["node"]), str(p["ifname"]), str(p["address"]), p.get("mac"))
                for p in ports
            ]
            for name, ports in dict(data["links"]).items()
        }

    def link_between(self, a: str, b: str) -> tuple[Port, Port]:
        """The ports of the point-to-point link joining nodes ``a`` and ``b``."""
        for ports in self.links.values():
            if len(ports) == 2 and {p.node for p in ports} == {a, b}:
                first, second = ports
                return (first, second) if first.node == a else (second, first)
        raise PathError(f"no link between {a!r} and {b!r}")

    def ports_of(self, node: str) -> list[tuple[str, Port]]:
        return [(name, p) for name, ports in self.links.items() for p in ports if p.node == node]

    def table_of(self, core: str) -> int:
        return RAN_TABLE_BASE + sorted(self.namespaces).index(core)


MacOf = Callable[[str, str], str]
"""``mac_of(namespace, ifname)``: the interface's MAC address."""


def interface_mac(namespace: str, ifname: str) -> str:
    done = subprocess.run(
        ["ip", "-n", namespace, "-j", "link", "show", "dev", ifname],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return str(json.loads(done.stdout)[0]["address"])
    except (ValueError, IndexError, KeyError) as exc:
        raise PathError(f"no MAC for {ifname} in {namespace}: {done.stderr.strip()}") from exc


def path_commands(
    topo: Topology,
    *,
    ue_node: str,
    ran: str,
    core: str,
    address: str,
    mac_of: MacOf | None = None,
) -> dict[str, list[str]]:
    """``ip -batch`` lines per namespace that route ``address`` via ``ran`` and ``core``.

    The radio hop gets permanent neighbour entries both ways: LTE has no ARP over the air,
    and an ARP request lost while the UE's radio link was still blocked would hold the first
    packets for the kernel's one-second retry. MACs come from the topology (``mac_of``
    overrides; a port without one is asked of the kernel)."""
    ue_port, ran_ue_port = topo.link_between(ue_node, ran)
    ran_core_port, core_ran_port = topo.link_between(ran, core)
    host = f"{address}/32"
    ns = topo.namespaces

    def mac(port: Port) -> str:
        if mac_of is not None:
            return mac_of(ns[port.node], port.ifname)
        return port.mac or interface_mac(ns[port.node], port.ifname)

    ue_mac, ran_mac = mac(ue_port), mac(ran_ue_port)
    out: dict[str, list[str]] = {}
    out[ns[ue_node]] = [
        f"neigh replace {ran_ue_port.ip} lladdr {ran_mac} dev {ue_port.ifname} nud permanent",
        f"route replace default via {ran_ue_port.ip} dev {ue_port.ifname} src {address} "
        f"table {UE_TABLE}",
        f"rule del priority {UE_RULE_PRIORITY}",
        f"rule add priority {UE_RULE_PRIORITY} lookup {UE_TABLE}",
    ]
    table = topo.table_of(core)
    ran_lines = [
        f"neigh replace {address} lladdr {ue_mac} dev {ran_ue_port.ifname} nud permanent",
        f"route replace default via {core_ran_port.ip} dev {ran_core_port.ifname} table {table}",
        f"rule del from {host} priority {RAN_RULE_PRIORITY}",
        f"rule add from {host} lookup {table} priority {RAN_RULE_PRIORITY}",
    ]
    if ipaddress.ip_address(address) not in ipaddress.ip_interface(ran_ue_port.address).network:
        ran_lines.insert(1, f"route replace {host} dev {ran_ue_port.ifname}")
    out[ns[ran]] = ran_lines
    out[ns[core]] = [f"route replace {host} via {ran_core_port.ip} dev {core_ran_port.ifname}"]
    for link, mine in topo.ports_of(core):
        for peer in topo.links[link]:
            if peer.node in (core, ran, ue_node):
                continue
            out.setdefault(ns[peer.node], []).append(
                f"route replace {host} via {mine.ip} dev {peer.ifname}"
            )
    return out


def apply(commands: Mapping[str, Sequence[str]]) -> list[str]:
    """Run each namespace's lines with ``ip -force -batch`` (a ``rule del`` of a rule that is
    not there is expected to fail); returns the error lines that matter."""
    errors = []
    for namespace, lines in commands.items():
        done = subprocess.run(
            ["ip", "-n", namespace, "-force", "-batch", "-"],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        for line in done.stderr.splitlines():
            if (
                line.strip()
                and "No such file or directory" not in line
                and "Command failed" not in line
            ):
                errors.append(f"{namespace}: {line.strip()}")
    return errors
