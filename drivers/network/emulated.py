"""The emulated lab's network: one namespace per node, built from the planned topology.

Timeline actions pull cables: ``link_down``/``link_up`` take one link (both ends) down or
up, ``isolate``/``restore`` do it for every link of a node.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from drivers.base import DeviceContext, Network
from drivers.errors import DriverError
from drivers.netns import (
    BuiltTopology,
    NetnsError,
    NodeSpec,
    PortSpec,
    RouteSpec,
    SegmentSpec,
    TopologySpec,
    build,
    destroy,
    set_link_state,
    wait_ready,
)
from drivers.netns.offload import disable_offloads


class EmulatedNetwork(Network):
    actions = frozenset({"link_down", "link_up", "isolate", "restore"})

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        self._built: BuiltTopology | None = None
        self._addresses: dict[str, str] = {}
        self._link_ports: dict[str, list[tuple[str, str]]] = {}
        self._node_links: dict[str, list[str]] = {}
        self._down: set[str] = set()
        self._impaired: set[str] = set()
        self._ports: dict[str, list[dict[str, str]]] = {}

    def namespace(self, node: str) -> str:
        return f"{self.context.name_prefix}-{node}"

    def build(self, topology: Mapping[str, Any]) -> None:
        prefix = self.context.name_prefix
        nodes = tuple(
            NodeSpec(self.namespace(n["name"]), bool(n.get("forwarding")))
            for n in topology["nodes"]
        )
        segments = []
        for seg in topology["segments"]:
            ports = tuple(
                PortSpec(self.namespace(p["node"]), p["ifname"], p.get("address"))
                for p in seg["ports"]
            )
            bridged = len(ports) > 2
            impaired = seg.get("impaired_by") is not None
            segments.append(
                SegmentSpec(
                    name=seg["link"],
                    ports=ports,
                    switch_ns=f"{prefix}-sw-{seg['link']}" if bridged else None,
                    mtu_bytes=int(seg.get("mtu_bytes", 1500)),
                    middle_ns=self.link_namespace(seg["link"]) if impaired else None,
                )
            )
            if impaired:
                self._impaired.add(seg["link"])
            self._link_ports[seg["link"]] = [(p["node"], p["ifname"]) for p in seg["ports"]]
            self._ports[seg["link"]] = [
                {"node": p["node"], "ifname": p["ifname"], "address": p["address"]}
                for p in seg["ports"]
            ]
            for p in seg["ports"]:
                self._node_links.setdefault(p["node"], []).append(seg["link"])
        routes = tuple(
            RouteSpec(self.namespace(r["node"]), r["destination"], r["via"])
            for r in topology["routes"]
        )
        self._addresses = dict(topology["addresses"])
        spec = TopologySpec(prefix=prefix, nodes=nodes, segments=tuple(segments), routes=routes)
        # Record the namespaces before building, so a crash half-way is still cleaned up.
        self.context.emit("network.building", {"namespaces": len(nodes), "segments": len(segments)})
        self._built = build(spec)
        for seg in segments:
            if seg.middle_ns is not None:
                # a relay in the wire re-sends frames as read: they must be whole frames
                # with full checksums, so offloads go off on every port of the wire
                for port in seg.ports:
                    disable_offloads(port.namespace, port.ifname)
                for name in ("a", "b"):
                    disable_offloads(seg.middle_ns, name)
        ready_s = wait_ready(self._built.namespaces)
        self.context.emit(
            "network.built",
            {
                "namespaces": len(self._built.namespaces),
                "build_s": round(self._built.build_s, 4),
                "ready_s": round(ready_s, 4),
            },
        )

    def port_map(self) -> dict[str, Any]:
        """Namespaces and every link's ports (node, ifname, address/prefix, mac): what an
        emulated core needs to program a UE's data path (:mod:`drivers.core.paths`)."""
        nodes = {node for ports in self._ports.values() for node in (p["node"] for p in ports)}
        macs = self._built.macs if self._built is not None else {}

        def port(p: dict[str, str]) -> dict[str, str]:
            mac = macs.get((self.namespace(p["node"]), p["ifname"]))
            return {**p, "mac": mac} if mac else dict(p)

        return {
            "namespaces": {node: self.namespace(node) for node in sorted(nodes)},
            "links": {link: [port(p) for p in ports] for link, ports in self._ports.items()},
        }

    def link_namespace(self, link: str) -> str:
        return f"{self.context.name_prefix}-wire-{link}"

    def link_command(self, link: str, argv: Sequence[str]) -> list[str]:
        if link not in self._impaired:
            raise DriverError(self.name, f"link {link!r} has no impairment device in its wire")
        return ["ip", "netns", "exec", self.link_namespace(link), *argv]

    def node_command(self, node: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(node), *argv]

    def node_address(self, node: str) -> str:
        try:
            return self._addresses[node]
        except KeyError:
            raise DriverError(self.name, f"node {node!r} has no address") from None

    def perform(self, action: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        if action in ("link_down", "link_up"):
            links = [self._link_arg(args)]
        elif action in ("isolate", "restore"):
            node = args.get("node")
            if node not in self._node_links:
                raise DriverError(self.name, f"{action}: unknown node {node!r}")
            links = self._node_links[str(node)]
        else:
            return super().perform(action, args)
        up = action in ("link_up", "restore")
        try:
            for link in links:
                for node_name, ifname in self._link_ports[link]:
                    set_link_state(
                        self.namespace(node_name), ifname, up, self._node_routes(node_name)
                    )
                (self._down.discard if up else self._down.add)(link)
        except NetnsError as exc:
            raise DriverError(self.name, f"{action} failed: {exc}") from exc
        return {"links": links, "state": "up" if up else "down"}

    def _node_routes(self, node: str) -> list[str]:
        if self._built is None:
            return []
        return self._built.restore.get(self.namespace(node), [])

    def _link_arg(self, args: Mapping[str, Any]) -> str:
        link = args.get("link")
        if not isinstance(link, str) or link not in self._link_ports:
            known = ", ".join(sorted(self._link_ports))
            raise DriverError(self.name, f"unknown link {link!r} (known: {known})")
        return link

    def safe_state(self) -> None:
        """Links back up: a fault injected by the timeline never outlives its run."""
        for link in sorted(self._down):
            for node_name, ifname in self._link_ports.get(link, []):
                with contextlib.suppress(NetnsError):
                    set_link_state(
                        self.namespace(node_name), ifname, True, self._node_routes(node_name)
                    )
        self._down.clear()

    def close(self) -> None:
        with contextlib.suppress(NetnsError):
            destroy(self.context.name_prefix + "-")
        self._built = None
