"""Building and removing emulated networks of Linux network namespaces.

Nodes are namespaces, links are veth pairs created straight into their namespaces, LAN
segments are bridges in a switch namespace of their own. Everything is named with a
run-scoped prefix so that a crashed run's leftovers can be found and removed.
"""

from drivers.netns.topology import (
    BRIDGE_MAX_PORTS,
    BuiltTopology,
    NetnsError,
    NodeSpec,
    PortSpec,
    RouteSpec,
    SegmentSpec,
    TopologySpec,
    build,
    destroy,
    list_namespaces,
    namespace_pids,
    set_link_state,
    wait_ready,
)

__all__ = [
    "BRIDGE_MAX_PORTS",
    "BuiltTopology",
    "NetnsError",
    "NodeSpec",
    "PortSpec",
    "RouteSpec",
    "SegmentSpec",
    "TopologySpec",
    "build",
    "destroy",
    "list_namespaces",
    "namespace_pids",
    "set_link_state",
    "wait_ready",
]
