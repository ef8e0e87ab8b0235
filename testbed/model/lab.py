"""The lab inventory: which nodes, links, devices and capture points a lab has.

A lab file describes hardware, never a test. The same profile runs on any lab that offers
the names (or roles) it refers to, so the emulated lab in CI and a national testbed differ
only in their lab files.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from testbed.model.common import Name, StrictModel

DeviceKind = Literal[
    "network",
    "traffic",
    "capture",
    "impairment",
    "radio",
    "attenuator",
    "power_supply",
    "scpi",
    "core",
    "mcptt",
]


class Node(StrictModel):
    """A host of the lab: a namespace in the emulated lab, a machine in a real one."""

    name: Name
    roles: tuple[Name, ...] = ()
    description: str = ""
    forwarding: bool = Field(
        default=False, description="Routes packets between its links (RAN nodes, cores, routers)."
    )
    labels: dict[str, str] = Field(default_factory=dict)


class Endpoint(StrictModel):
    """One end of a link: a node, and optionally its interface name and address."""

    node: Name
    ifname: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,15}$")
    address: str | None = Field(default=None, description="Interface address in CIDR form.")

    @field_validator("address")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_interface(value)
        return value


class Link(StrictModel):
    """A layer-2 segment: two endpoints form a point-to-point link, more form a bridged LAN."""

    name: Name
    endpoints: tuple[Endpoint, ...] = Field(min_length=2)
    subnet: str | None = Field(default=None, description="IPv4 subnet; allocated when absent.")
    impaired_by: Name | None = Field(default=None, description="Impairment device on this link.")
    mtu_bytes: int = Field(default=1500, ge=576, le=9000)
    static_routes: bool = Field(
        default=True,
        description="false: static routes never cross this link; it carries traffic only when "
        "something programs it at run time (a radio link a UE uses while roaming, routed by the "
        "core that attaches it).",
    )

    @field_validator("endpoints", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """Accept ``node`` and ``node:ifname`` strings as well as mappings."""
        if isinstance(value, list | tuple):
            out: list[Any] = []
            for item in value:
                if isinstance(item, str):
                    node, _, ifname = item.partition(":")
                    out.append({"node": node, "ifname": ifname} if ifname else {"node": node})
                else:
                    out.append(item)
            return tuple(out)
        return value

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str | None) -> str | None:
        if value is not None:
            net = ipaddress.ip_network(value)
            if net.version != 4:
                raise ValueError("only IPv4 subnets are supported")
        return value

    @model_validator(mode="after")
    def _distinct_nodes(self) -> Link:
        nodes = [e.node for e in self.endpoints]
        if len(set(nodes)) != len(nodes):
            raise ValueError("a node appears twice among the endpoints of one link")
        if self.subnet is not None:
            net = ipaddress.ip_network(self.subnet)
            if net.num_addresses - 2 < len(self.endpoints):
                raise ValueError(f"subnet {self.subnet} is too small for {len(nodes)} endpoints")
        return self


class Device(StrictModel):
    """Something the controller drives, named by ``kind`` and ``driver``.

    ``settings`` are the driver's own (addresses, serial URLs, VISA resources); the driver
    validates them when it opens.
    """

    name: Name
    kind: DeviceKind
    driver: Name
    roles: tuple[Name, ...] = ()
    node: Name | None = Field(default=None, description="Node the device sits on, if any.")
    lease: bool = Field(default=True, description="Reserve the device for one run at a time.")
    settings: dict[str, Any] = Field(default_factory=dict)


class CapturePoint(StrictModel):
    """A named place where packets are captured: a node's interface on a link."""

    name: Name
    node: Name
    link: Name | None = Field(default=None, description="Capture on the node's port of this link.")
    ifname: str | None = Field(default=None, description="Or name the interface directly.")
    device: Name = Field(default="capture", description="Capture device that records here.")


class Lab(StrictModel):
    """A lab inventory (``profiles/labs/*.yaml``)."""

    schema_version: Literal[1] = 1
    name: Name
    description: str = ""
    address_pool: str = Field(default="10.201.0.0/16", description="Subnets are allocated here.")
    nodes: tuple[Node, ...] = Field(min_length=1)
    links: tuple[Link, ...] = ()
    devices: tuple[Device, ...] = ()
    capture_points: tuple[CapturePoint, ...] = ()

    @field_validator("address_pool")
    @classmethod
    def _pool(cls, value: str) -> str:
        net = ipaddress.ip_network(value)
        if net.version != 4 or net.prefixlen > 24:
            raise ValueError("address_pool must be an IPv4 network of /24 or larger")
        return value
