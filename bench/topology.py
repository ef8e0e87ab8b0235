"""Benchmark: bring-up and teardown time of an emulated star network, ours against pyroute2.

For each size N (default 10, 50 and 200; ``--sizes 1100`` also works and exercises the tree
of bridges that our builder makes past the 1023-port limit of a Linux bridge) the script
builds a star of N node namespaces, each with one veth port ``eth0`` (address from
10.250.0.0/16) into a single bridged LAN in a switch namespace, and tears it down again,
``--repeat`` times, with two methods in alternating order: our builder
(``drivers.netns.topology.build`` then ``wait_ready`` then ``destroy``) and a reference
written directly against pyroute2 in this process (``netns.create``, an ``IPRoute`` opened
inside the switch namespace that creates the bridge and the veths with their peer moved into
the node namespace, ``pushns``/``popns`` to configure each node from inside, polling every
port until it has carrier, then ``netns.remove``). Times come from ``time.perf_counter`` and
every column is the median over the repeats, in seconds. "ours build" is ``build``, "ours
ready" is ``wait_ready`` afterwards, "ours up" is their sum (the median of the per-run sums);
"pr2 up" covers the same ground (namespaces, links, addresses, IPv6 off, carrier everywhere);
both "down" columns end when the call that deletes the namespaces returns, while the kernel
still finishes freeing them in the background, so each run is followed by a pause that lets
that work drain before the next one starts. "pr2/ours" above 1 means our builder is faster.
Our builder also installs static neighbour entries on segments of up to 64 ports, which the
reference does not, so at N=10 and 50 it does a little more work. The targets from the issue
(50 nodes up in under 1 s, 200 in under 3 s) are judged on "ours up" and printed as
PASS/MISS. Namespaces are named ``tbbeXXXX-...`` (a fresh counter per build) so that
``testbed cleanup`` recognises any leftovers, and every build is torn down in a ``finally``,
Ctrl-C and SIGTERM included; a run that fails (for instance because a concurrent ``testbed
cleanup`` swept those namespaces away) is retried up to twice, with the reason on stderr.
Progress goes to stderr, the table to stdout. Run as root:
``.venv/bin/python bench/topology.py [--sizes 10,50,200] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaylab import raise_interrupt, signals_deferred

from drivers.netns.topology import (
    BRIDGE_MAX_PORTS,
    NodeSpec,
    PortSpec,
    SegmentSpec,
    TopologySpec,
    build,
    destroy,
    list_namespaces,
    wait_ready,
)

DEFAULT_SIZES = (10, 50, 200)
TARGETS_S = {50: 1.0, 200: 3.0}
"""From the issue: our builder brings up 50 nodes in under 1 s and 200 in under 3 s."""
LAN = "10.250.0.0/16"
RETRIES = 2
"""Extra attempts for a run that failed, e.g. because a concurrent ``testbed cleanup`` swept
our ``tb``-prefixed namespaces away mid-run; each failure is reported on stderr."""


def ready_timeout_s(n: int) -> float:
    """Carrier takes longer to come up on every port of a very large bridge."""
    return 10.0 + 0.05 * n


_counter = itertools.count(1)
_used_prefixes: list[str] = []


def settle_s(n: int) -> float:
    """Pause after a teardown so the kernel's asynchronous namespace cleanup does not spill
    into the next measurement (about 0.2 s at 200 namespaces, 1 s at 1000 here)."""
    return 0.3 + 0.002 * n


def next_prefix() -> str:
    """``tbbe`` + 4 hex digits + ``-``: matches ``^tb[0-9a-f]{6}-``, unused on this machine."""
    while True:
        prefix = f"tbbe{next(_counter) & 0xFFFF:04x}-"
        if not list_namespaces(prefix):
            _used_prefixes.append(prefix)
            return prefix


def node_ns(prefix: str, i: int) -> str:
    return f"{prefix}n{i}"


def switch_ns(prefix: str) -> str:
    return f"{prefix}sw"


def node_address(i: int) -> str:
    """Host i+1 of 10.250.0.0/16 (10.250.0.1, ..., 10.250.1.0, ...), so up to 65534 nodes."""
    host = i + 1
    return f"10.250.{host >> 8}.{host & 0xFF}"


@dataclass
class Sample:
    up_s: float
    down_s: float
    build_s: float = 0.0
    ready_s: float = 0.0


# --- our builder ------------------------------------------------------------------------


def star_spec(prefix: str, n: int) -> TopologySpec:
    ports = tuple(PortSpec(node_ns(prefix, i), "eth0", f"{node_address(i)}/16") for i in range(n))
    return TopologySpec(
        prefix=prefix,
        nodes=tuple(NodeSpec(node_ns(prefix, i)) for i in range(n)),
        segments=(SegmentSpec("lan", ports, switch_ns=switch_ns(prefix)),),
    )


def run_ours(n: int) -> Sample:
    prefix = next_prefix()
    spec = star_spec(prefix, n)
    torn_down = False
    try:
        t0 = time.perf_counter()
        built = build(spec)
        t1 = time.perf_counter()
        wait_ready(built.namespaces, timeout_s=ready_timeout_s(n))
        t2 = time.perf_counter()
        with signals_deferred():
            destroy(prefix, built.namespaces)
            t3 = time.perf_counter()
            torn_down = True
    finally:
        if not torn_down:
            with signals_deferred():
                destroy(prefix)
    return Sample(up_s=t2 - t0, down_s=t3 - t2, build_s=t1 - t0, ready_s=t2 - t1)


# --- pyroute2 reference -----------------------------------------------------------------


class Pyroute2Star:
    """The same star built in-process with pyroute2 (imported lazily, outside the timing)."""

    def __init__(self, prefix: str, n: int) -> None:
        from pyroute2 import IPRoute, netns

        self.IPRoute = IPRoute
        self.netns = netns
        self.prefix = prefix
        self.n = n
        self.sw = switch_ns(prefix)
        self.nodes = [node_ns(prefix, i) for i in range(n)]
        self.created: list[str] = []
        self.sockets: list[Any] = []

    @contextlib.contextmanager
    def inside(self, ns: str) -> Iterator[None]:
        self.netns.pushns(ns)
        try:
            yield
        finally:
            self.netns.popns()

    def _open(self, ns: str) -> Any:
        with self.inside(ns):
            ipr = self.IPRoute()
            Path("/proc/sys/net/ipv6/conf/all/disable_ipv6").write_text("1")
            Path("/proc/sys/net/ipv6/conf/default/disable_ipv6").write_text("1")
        self.sockets.append(ipr)
        return ipr

    def up(self) -> None:
        for ns in [self.sw, *self.nodes]:
            self.netns.create(ns)
            self.created.append(ns)
        sw = self._open(self.sw)
        sw.link("set", index=1, state="up")
        bridge_opts = {"kind": "bridge", "br_stp_state": 0, "br_forward_delay": 0}
        sw.link("add", ifname="br0", **bridge_opts)
        root = sw.link_lookup(ifname="br0")[0]
        per_bridge = BRIDGE_MAX_PORTS - 1  # one port of each leaf bridge is its uplink
        groups = [self.nodes[i : i + per_bridge] for i in range(0, self.n, per_bridge)]
        for g, group in enumerate(groups):
            bridge = root
            if len(groups) > 1:
                sw.link("add", ifname=f"br{g + 1}", **bridge_opts)
                bridge = sw.link_lookup(ifname=f"br{g + 1}")[0]
                sw.link("add", ifname=f"up{g + 1}", kind="veth", peer={"ifname": f"dn{g + 1}"})
                up = sw.link_lookup(ifname=f"up{g + 1}")[0]
                dn = sw.link_lookup(ifname=f"dn{g + 1}")[0]
                sw.link("set", index=up, master=bridge, state="up")
                sw.link("set", index=dn, master=root, state="up")
                sw.link("set", index=bridge, state="up")
            for j, ns in enumerate(group):
                peer = f"p{g}x{j}"
                sw.link("add", ifname=peer, kind="veth", peer={"ifname": "eth0", "net_ns_fd": ns})
                index = sw.link_lookup(ifname=peer)[0]
                sw.link("set", index=index, master=bridge, state="up")
        sw.link("set", index=root, state="up")
        eth0: list[tuple[Any, int]] = []
        for i, ns in enumerate(self.nodes):
            ipr = self._open(ns)
            ipr.link("set", index=1, state="up")
            index = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=index, address=node_address(i), prefixlen=16)
            ipr.link("set", index=index, state="up")
            eth0.append((ipr, index))
        self._wait_carrier(sw, eth0)
        self.close_sockets()

    def _wait_carrier(self, sw: Any, eth0: list[tuple[Any, int]]) -> None:
        limit_s = ready_timeout_s(self.n)
        deadline = time.perf_counter() + limit_s
        pending = eth0
        switch_ready = False
        while True:
            pending = [
                (ipr, index)
                for ipr, index in pending
                if ipr.link("get", index=index)[0].get("IFLA_OPERSTATE") != "UP"
            ]
            if not switch_ready:
                switch_ready = all(  # as in wait_ready: UNKNOWN (a bridge, say) counts too
                    link.get("IFLA_OPERSTATE") in ("UP", "UNKNOWN")
                    for link in sw.get_links()
                    if link.get("ifname") != "lo"
                )
            if not pending and switch_ready:
                return
            if time.perf_counter() > deadline:
                raise RuntimeError(f"pyroute2 star: no carrier after {limit_s:g} s")
            time.sleep(0.01)

    def close_sockets(self) -> None:
        while self.sockets:
            self.sockets.pop().close()

    def down(self) -> None:
        self.close_sockets()
        while self.created:
            self.netns.remove(self.created.pop())


def run_pyroute2(n: int) -> Sample:
    prefix = next_prefix()
    star = Pyroute2Star(prefix, n)
    torn_down = False
    try:
        t0 = time.perf_counter()
        star.up()
        t1 = time.perf_counter()
        with signals_deferred():
            star.down()
            t2 = time.perf_counter()
            torn_down = True
    finally:
        if not torn_down:
            with signals_deferred():
                star.close_sockets()
                for ns in list_namespaces(prefix):
                    with contextlib.suppress(OSError):
                        star.netns.remove(ns)
                destroy(prefix)  # anything pyroute2 could not remove
    return Sample(up_s=t1 - t0, down_s=t2 - t1)


# --- driver -----------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError("sizes are positive integers, e.g. 10,50,200")
    return sizes


def median(samples: list[Sample], key: Callable[[Sample], float]) -> float:
    return statistics.median(key(s) for s in samples)


def attempt(method: Callable[[int], Sample], n: int) -> Sample:
    """One measured run (torn down whatever happens), retried if it failed."""
    for tries_left in range(RETRIES, -1, -1):
        try:
            sample = method(n)
        except Exception as exc:
            if tries_left == 0:
                raise
            print(
                f"  N={n} {method.__name__} failed ({exc}); retrying", file=sys.stderr, flush=True
            )
            time.sleep(settle_s(n))
        else:
            time.sleep(settle_s(n))
            return sample
    raise AssertionError("unreachable")


def measure(n: int, repeat: int) -> tuple[list[Sample], list[Sample]]:
    ours: list[Sample] = []
    ref: list[Sample] = []
    for r in range(repeat):
        order = [(run_ours, ours), (run_pyroute2, ref)]
        if r % 2:
            order.reverse()  # alternate so neither method always runs on a warmer kernel
        for method, into in order:
            into.append(attempt(method, n))
        print(
            f"  N={n} run {r + 1}/{repeat}: ours up {ours[-1].up_s:.3f} s, "
            f"pyroute2 up {ref[-1].up_s:.3f} s",
            file=sys.stderr,
            flush=True,
        )
    return ours, ref


def report(results: dict[int, tuple[list[Sample], list[Sample]]], repeat: int) -> None:
    header = (
        f"{'N':>5} | {'ours build':>10} {'ours ready':>10} {'ours up':>8} {'ours down':>9} | "
        f"{'pr2 up':>7} {'pr2 down':>8} | {'pr2/ours up':>11} {'pr2/ours down':>13}"
    )
    print(f"Star topology, one bridged LAN {LAN}; seconds, median of {repeat} run(s)")
    print(header)
    print("-" * len(header))
    for n, (ours, ref) in results.items():
        o_build = median(ours, lambda s: s.build_s)
        o_ready = median(ours, lambda s: s.ready_s)
        o_up = median(ours, lambda s: s.up_s)
        o_down = median(ours, lambda s: s.down_s)
        r_up = median(ref, lambda s: s.up_s)
        r_down = median(ref, lambda s: s.down_s)
        print(
            f"{n:>5} | {o_build:>10.3f} {o_ready:>10.3f} {o_up:>8.3f} {o_down:>9.3f} | "
            f"{r_up:>7.3f} {r_down:>8.3f} | {r_up / o_up:>10.2f}x {r_down / o_down:>12.2f}x"
        )
    print()
    print("Targets (issue), judged on 'ours up' = build + ready:")
    for n, limit in TARGETS_S.items():
        if n in results:
            up = median(results[n][0], lambda s: s.up_s)
            verdict = "PASS" if up < limit else "MISS"
            print(f"  {n:>4} nodes up in under {limit:g} s: {verdict} ({up:.3f} s)")
        else:
            print(f"  {n:>4} nodes up in under {limit:g} s: not measured (add {n} to --sizes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(DEFAULT_SIZES),
        help="comma-separated node counts (default 10,50,200; 1100 also works)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per size and method")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    signal.signal(signal.SIGTERM, raise_interrupt)
    import pyroute2  # noqa: F401  # import cost (0.1-0.2 s) stays out of the timings

    results: dict[int, tuple[list[Sample], list[Sample]]] = {}
    try:
        for n in args.sizes:
            results[n] = measure(n, args.repeat)
    except KeyboardInterrupt:
        print("interrupted; everything built has been torn down", file=sys.stderr)
        if results:
            report(results, args.repeat)
        return 130
    finally:
        with signals_deferred():
            for prefix in _used_prefixes:  # belt and braces: nothing of ours may stay
                destroy(prefix)
    report(results, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
