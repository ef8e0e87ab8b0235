"""The impairment driver for real Linux lab hosts: a root ``netem`` qdisc on the egress interface
of each direction of a link, set over rtnetlink with pyroute2 (in the host's namespace or in the
one named by ``netns``). The lab file names, per link, the interface that carries ``forward`` and
the one that carries ``reverse``; profiles' parameters (:class:`ImpairmentParams`, the same values
the emulated relay takes) become netem's delay/jitter (with netem's ``normal`` table or uniform),
random or Gilbert-Elliott loss, duplicate, reorder, rate and limit, and an outage is 100 % loss.
The message is built by pure functions (:func:`netem_request`, :func:`netem_message`) because
pyroute2's own netem plugin encodes neither Gilbert-Elliott loss nor a delay distribution; the
fields it does encode come from that plugin, so units match what pyroute2 and the kernel expect.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink import (
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    nla,
    nlmsg,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWQDISC, TC_H_ROOT
from pyroute2.netlink.rtnl.tcmsg import sched_netem
from pyroute2.netlink.rtnl.tcmsg.common import percent2u32

from drivers.base import DeviceContext, Impairment
from drivers.errors import DriverError
from drivers.impairment.params import ImpairmentParams

__all__ = [
    "NetemImpairment",
    "NetemOptions",
    "NetemQdiscMsg",
    "netem_available",
    "netem_kwargs",
    "netem_message",
    "netem_request",
    "normal_table",
    "parse_settings",
]

NETNS_DIR = Path("/run/netns")
NO_NETEM = (
    "the kernel lacks sch_netem (no netem qdisc): load it with `modprobe sch_netem` or use a "
    "kernel built with CONFIG_NET_SCH_NETEM"
)
_DIRECTIONS = {"forward": ("forward",), "reverse": ("reverse",), "both": ("forward", "reverse")}
_SETTINGS = ("links", "netns")
_IFNAME = re.compile(r"[^\s/:]{1,15}")  # IFNAMSIZ - 1, no blanks, slashes or colons
_NEW_QDISC_FLAGS = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE  # `tc qdisc replace`
_U32_MAX = 2**32 - 1


# --------------------------------------------------------------------------------------------
# The message: pure functions, nothing is sent
# --------------------------------------------------------------------------------------------


class NetemOptions(nla):  # type: ignore[misc]  # pyroute2 is untyped
    """``TCA_OPTIONS`` of a netem qdisc: ``struct tc_netem_qopt`` then attributes.

    A copy of pyroute2's ``netlink/rtnl/tcmsg/sched_netem.py`` ``options`` with the attributes
    it lacks (``TCA_NETEM_LOSS``, ``TCA_NETEM_DELAY_DIST``, ``TCA_NETEM_RATE64`` ...), numbered
    as in the kernel's ``include/uapi/linux/pkt_sched.h``. Not a subclass: pyroute2 caches the
    compiled attribute table on the class, so a subclass could inherit the parent's.
    """

    fields = (
        ("delay", "I"),  # psched ticks (pyroute2 time2tick of µs; the kernel shifts by 6 to ns)
        ("limit", "I"),  # packets
        ("loss", "I"),  # probability scaled to 0..2**32-1 (percent2u32)
        ("gap", "I"),
        ("duplicate", "I"),
        ("jitter", "I"),
    )
    nla_map = (
        ("TCA_NETEM_UNSPEC", "none"),
        ("TCA_NETEM_CORR", "netem_corr"),
        ("TCA_NETEM_DELAY_DIST", "array(int16)"),
        ("TCA_NETEM_REORDER", "netem_reorder"),
        ("TCA_NETEM_CORRUPT", "netem_corrupt"),
        ("TCA_NETEM_LOSS", "netem_loss", NLA_F_NESTED),
        ("TCA_NETEM_RATE", "netem_rate"),
        ("TCA_NETEM_ECN", "uint32"),
        ("TCA_NETEM_RATE64", "uint64"),
        ("TCA_NETEM_PAD", "none"),
        ("TCA_NETEM_LATENCY64", "int64"),
        ("TCA_NETEM_JITTER64", "int64"),
        ("TCA_NETEM_SLOT", "hex"),
        ("TCA_NETEM_SLOT_DIST", "hex"),
        ("TCA_NETEM_PRNG_SEED", "uint64"),
    )

    class netem_corr(nla):  # type: ignore[misc]
        fields = (("delay_corr", "I"), ("loss_corr", "I"), ("dup_corr", "I"))

    class netem_reorder(nla):  # type: ignore[misc]
        fields = (("prob_reorder", "I"), ("corr_reorder", "I"))

    class netem_corrupt(nla):  # type: ignore[misc]
        fields = (("prob_corrupt", "I"), ("corr_corrupt", "I"))

    class netem_rate(nla):  # type: ignore[misc]
        fields = (
            ("rate", "I"),  # bytes per second
            ("packet_overhead", "i"),
            ("cell_size", "I"),
            ("cell_overhead", "i"),
        )

    class netem_loss(nla):  # type: ignore[misc]
        nla_map = (
            ("NETEM_LOSS_UNSPEC", "none"),
            ("NETEM_LOSS_GI", "gimodel"),
            ("NETEM_LOSS_GE", "gemodel"),
        )

        class gimodel(nla):  # type: ignore[misc]
            fields = (("p13", "I"), ("p31", "I"), ("p32", "I"), ("p14", "I"), ("p23", "I"))

        class gemodel(nla):  # type: ignore[misc]
            # what the kernel calls h is the chance of *delivery* in the bad state (tc's 1-h
            # argument is the loss); k1 is the loss in the good state (tc's 1-k)
            fields = (("p", "I"), ("r", "I"), ("h", "I"), ("k1", "I"))


_ATTR_ORDER = {name: i for i, (name, *_rest) in enumerate(NetemOptions.nla_map)}


class NetemQdiscMsg(nlmsg):  # type: ignore[misc]
    """An ``RTM_NEWQDISC`` message (pyroute2's ``tcmsg`` layout) whose options are netem's."""

    prefix = "TCA_"
    fields = (
        ("family", "B"),
        ("pad1", "B"),
        ("pad2", "H"),
        ("index", "i"),
        ("handle", "I"),
        ("parent", "I"),
        ("info", "I"),
    )
    nla_map = (
        ("TCA_UNSPEC", "none"),
        ("TCA_KIND", "asciiz"),
        ("TCA_OPTIONS", "netem_options"),
        ("TCA_STATS", "hex"),
        ("TCA_XSTATS", "hex"),
        ("TCA_RATE", "hex"),
        ("TCA_FCNT", "hex"),
        ("TCA_STATS2", "hex"),
        ("TCA_STAB", "hex"),
    )
    netem_options = NetemOptions


@functools.cache
def normal_table() -> tuple[int, ...]:
    """netem's ``normal`` delay table, as iproute2 ships it (``normal.dist``).

    Computed the way iproute2's ``netem/normal.c`` does (4096 samples of the inverse normal CDF
    scaled by NETEM_DIST_SCALE 8192) rather than read from ``/usr/lib/.../tc``, so the driver
    does not depend on where, or whether, the host's iproute2 installed its tables.
    """
    size, scale = 16384, 8192
    table = [0.0] * (size + 1)
    x = -10.0
    while x < 10.05:  # the same float steps as the C loop, so the same values
        table[round(size * (0.5 + 0.5 * math.erf(x / math.sqrt(2.0))))] = x
        x += 0.00005
    return tuple(max(-32768, min(32767, round(table[i] * scale))) for i in range(0, size, 4))


def _bytes_per_s(params: ImpairmentParams) -> int:
    if params.rate_kbps is None:
        return 0  # 0 = no rate limit; sent anyway, the kernel keeps an old rate otherwise
    return max(1, round(params.rate_kbps * 1000 / 8))


def netem_kwargs(params: ImpairmentParams) -> dict[str, Any]:
    """The keywords of pyroute2's netem plugin (``IPRoute.tc("replace", "netem", ...)``).

    Units per pyroute2 ``netlink/rtnl/tcmsg/sched_netem.py`` ``get_parameters``: ``delay`` and
    ``jitter`` in µs (integers; converted to ticks), ``loss``, ``duplicate`` and
    ``prob_reorder`` in percent (floats), ``limit`` in packets, ``gap`` 1 with reordering
    (every packet may skip the delay), ``rate`` in bytes per second (an int; strings would be
    parsed as bit/s). An outage is 100 % random loss with no duplicates (netem would still
    deliver a duplicate of a lost packet).
    """
    kwargs: dict[str, Any] = {
        "delay": round(params.delay_ms * 1000),
        "jitter": round(params.jitter_ms * 1000),
        "limit": params.queue_limit_packets,
        "loss": 100.0 if params.outage else params.loss_pct,
        "duplicate": 0.0 if params.outage else params.duplicate_pct,
        "rate": min(_bytes_per_s(params), _U32_MAX),
    }
    if params.reorder_pct > 0.0:
        kwargs["prob_reorder"] = params.reorder_pct
        kwargs["gap"] = 1
    return kwargs


def netem_request(params: ImpairmentParams) -> dict[str, Any]:
    """The netem ``TCA_OPTIONS`` (a :class:`NetemOptions` value) for these conditions.

    pyroute2's plugin builds the struct and the reorder and rate attributes; Gilbert-Elliott
    loss (``TCA_NETEM_LOSS``/``NETEM_LOSS_GE`` p, r, h = 1 - bad loss, k1 = good loss), the
    ``normal`` table (``TCA_NETEM_DELAY_DIST``, only with jitter: uniform is netem's default)
    and rates above 2**32-1 bytes/s (``TCA_NETEM_RATE64``) are added here. Attributes are in
    kernel order, as tc sends them.
    """
    options: dict[str, Any] = sched_netem.get_parameters(netem_kwargs(params))
    options["delay"] = int(options["delay"])  # time2tick returns floats
    options["jitter"] = int(options["jitter"])
    attrs: list[list[Any]] = [list(attr) for attr in options["attrs"]]
    if params.loss_model == "gilbert_elliott" and not params.outage:
        gemodel = {
            "p": percent2u32(params.ge_p_pct),
            "r": percent2u32(params.ge_r_pct),
            "h": percent2u32(100.0 - params.ge_bad_loss_pct),
            "k1": percent2u32(params.ge_good_loss_pct),
        }
        attrs.append(["TCA_NETEM_LOSS", {"attrs": [["NETEM_LOSS_GE", gemodel]]}])
    if _has_table(params):
        attrs.append(["TCA_NETEM_DELAY_DIST", normal_table()])
    if _bytes_per_s(params) > _U32_MAX:
        attrs.append(["TCA_NETEM_RATE64", _bytes_per_s(params)])
    options["attrs"] = sorted(attrs, key=lambda attr: _ATTR_ORDER[attr[0]])
    return options


def netem_message(index: int, params: ImpairmentParams) -> NetemQdiscMsg:
    """The whole request: a netem root qdisc on interface ``index`` (send as RTM_NEWQDISC)."""
    msg = NetemQdiscMsg()
    msg["family"] = 0  # AF_UNSPEC
    msg["index"] = index
    msg["handle"] = 0  # let the kernel number it, as tc does
    msg["parent"] = TC_H_ROOT
    msg["attrs"] = [["TCA_KIND", "netem"], ["TCA_OPTIONS", netem_request(params)]]
    return msg


def _has_table(params: ImpairmentParams) -> bool:
    return params.jitter_distribution == "normal" and params.jitter_ms > 0.0


def _send(ipr: Any, msg: NetemQdiscMsg) -> None:
    """Send ``tc qdisc replace``; raises NetlinkError if the kernel says no."""
    # pyroute2 0.9.7's sync nlm_request reads status["nlm_generator"], which IPRoute.__init__
    # never sets (only NetlinkSocket.__init__ does): give it the default, False = collect
    ipr.status.setdefault("nlm_generator", False)
    ipr.nlm_request(msg, msg_type=RTM_NEWQDISC, msg_flags=_NEW_QDISC_FLAGS)


# --------------------------------------------------------------------------------------------
# Settings and kernel support
# --------------------------------------------------------------------------------------------


def parse_settings(
    device: str, settings: Mapping[str, Any]
) -> tuple[dict[str, dict[str, str]], str | None]:
    """The lab file's ``links`` (link -> forward/reverse egress interface) and ``netns``.

    Unknown keys are errors: a misspelt ``netns`` would otherwise impair the host's own
    interfaces of the same names.
    """
    unknown = sorted(str(key) for key in settings if key not in _SETTINGS)
    if unknown:
        raise DriverError(
            device, f"unknown setting(s) {', '.join(unknown)} (known: {', '.join(_SETTINGS)})"
        )
    netns = settings.get("netns")
    if netns is not None and (not isinstance(netns, str) or not re.fullmatch(r"[\w.-]+", netns)):
        raise DriverError(device, f"netns must be a namespace name, got {netns!r}")
    links = settings.get("links")
    if not isinstance(links, Mapping) or not links:
        raise DriverError(
            device, "settings need links: {LINK: {forward: IFNAME, reverse: IFNAME}, ...}"
        )
    parsed: dict[str, dict[str, str]] = {}
    owner: dict[str, str] = {}
    for link, ports in links.items():
        if not isinstance(ports, Mapping):
            raise DriverError(device, f"link {link!r}: give {{forward: IFNAME, reverse: IFNAME}}")
        extra = sorted(str(key) for key in ports if key not in ("forward", "reverse"))
        if extra:
            raise DriverError(device, f"link {link!r}: unknown key(s) {', '.join(extra)}")
        parsed[str(link)] = {}
        for direction in ("forward", "reverse"):
            ifname = ports.get(direction)
            if ifname is None:
                raise DriverError(
                    device, f"link {link!r}: missing the {direction} egress interface"
                )
            if not isinstance(ifname, str) or not _IFNAME.fullmatch(ifname):
                raise DriverError(
                    device, f"link {link!r} {direction}: {ifname!r} is not an interface name"
                )
            if ifname in owner:
                raise DriverError(
                    device,
                    f"link {link!r} {direction}: interface {ifname} already carries "
                    f"{owner[ifname]} (one netem per egress interface)",
                )
            owner[ifname] = f"{link} {direction}"
            parsed[str(link)][direction] = ifname
    return parsed, netns


@functools.cache
def netem_available() -> bool:
    """Whether this kernel has the netem qdisc (asked once, then cached).

    Tried for real, on the loopback of a throwaway namespace, so that no interface in use is
    touched; without root (no namespace) the answer is False.
    """
    if os.geteuid() != 0:
        return False
    name = f"tbnm{secrets.token_hex(2)}-p"
    try:
        pyroute2_netns.create(name)
    except Exception:  # pyroute2 raises from a child process; any failure means "cannot tell"
        return False
    try:
        with IPRoute(netns=name, flags=0) as ipr:
            (index,) = ipr.link_lookup(ifname="lo")
            _send(ipr, netem_message(index, ImpairmentParams(delay_ms=1.0)))
        return True
    except (NetlinkError, OSError, ValueError):
        return False
    finally:
        with contextlib.suppress(OSError):
            pyroute2_netns.remove(name)


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


class NetemImpairment(Impairment):
    """Impairs links by a netem root qdisc on each direction's egress interface.

    Parameters merge into what a direction already has (a timeline ``set`` may change only the
    delay); conditions equal to the defaults remove the qdisc, so an unimpaired direction has
    the interface's own default qdisc back.
    """

    def __init__(self, name: str, settings: Mapping[str, Any], context: DeviceContext) -> None:
        super().__init__(name, settings, context)
        self._links: dict[str, dict[str, str]] = {}
        self._netns: str | None = None
        self._ipr: Any = None
        self._index: dict[str, int] = {}
        self._attached: list[str] = []
        self._params: dict[tuple[str, str], ImpairmentParams] = {}
        self._tabled: set[str] = set()
        self._removed: dict[tuple[str, str], dict[str, int]] = {}

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        self._links, self._netns = parse_settings(self.name, self.settings)
        where = f"in namespace {self._netns}" if self._netns else "on this host"
        if self._netns is not None and not (NETNS_DIR / self._netns).exists():
            # checked here: pyroute2 would otherwise create it (or fail obscurely)
            raise DriverError(self.name, f"network namespace {self._netns!r} does not exist")
        try:
            self._ipr = IPRoute(netns=self._netns, flags=0) if self._netns else IPRoute()
        except Exception as exc:  # pyroute2 raises OSError, TimeoutError or its own
            raise DriverError(self.name, f"cannot open rtnetlink {where}: {exc}") from None
        for link, ports in self._links.items():
            for direction, ifname in ports.items():
                found = self._ipr.link_lookup(ifname=ifname)
                if not found:
                    raise DriverError(
                        self.name, f"link {link} {direction}: no interface {ifname!r} {where}"
                    )
                self._index[ifname] = int(found[0])

    def attach(self, links: Sequence[str]) -> None:
        """Take the links and start them clean (a netem left by a killed run goes)."""
        for link in links:
            if link not in self._links:
                known = ", ".join(sorted(self._links)) or "none"
                raise DriverError(
                    self.name, f"link {link!r} has no interfaces in my settings (mine: {known})"
                )
        self._attached = list(dict.fromkeys(links))
        for link in self._attached:
            for direction in ("forward", "reverse"):
                self._remove(link, direction)
        self._removed.clear()
        self.context.emit("impairment.attached", {"links": list(self._attached)})

    def close(self) -> None:
        ipr, self._ipr = self._ipr, None
        if ipr is not None:
            with contextlib.suppress(Exception):  # close must not raise
                ipr.close()

    # -- conditions ------------------------------------------------------------------------

    def apply(self, link: str, direction: str, params: Mapping[str, Any]) -> None:
        self._check(link)
        if direction not in _DIRECTIONS:
            raise DriverError(self.name, f"direction must be one of {tuple(_DIRECTIONS)}")
        wanted: dict[str, ImpairmentParams] = {}
        for side in _DIRECTIONS[direction]:  # validate both before touching either
            current = self._params.get((link, side), ImpairmentParams())
            try:
                wanted[side] = ImpairmentParams.from_dict({**current.to_dict(), **params})
            except ValueError as exc:
                raise DriverError(self.name, f"link {link} {side}: {exc}") from None
            if wanted[side].scheduler != "fifo":
                # One netem qdisc is one FIFO: priority classes need an htb tree with a netem
                # per class and DSCP filters, which this driver does not build yet. Refused,
                # so that a profile never runs FIFO while it believes it has priority.
                raise DriverError(
                    self.name,
                    f"link {link} {side}: scheduler={wanted[side].scheduler!r} is not supported "
                    "by the netem driver (only fifo; the emulated relay has priority)",
                )
        for side, new in wanted.items():
            self._install(link, side, new)
            self._params[(link, side)] = new

    def set_outage(self, link: str, direction: str, on: bool) -> None:
        self.apply(link, direction, {"outage": on})

    def clear(self, link: str | None = None) -> None:
        if link is not None:
            self._check(link)
        for name in [link] if link is not None else self._attached:
            for direction in ("forward", "reverse"):
                self._remove(name, direction)
                self._params.pop((name, direction), None)

    def safe_state(self) -> None:
        """No netem left on any interface of my settings, whatever happened before."""
        for link, ports in self._links.items():
            for direction in ports:
                # must never raise; the next interface still gets cleared
                with contextlib.suppress(Exception):
                    self._remove(link, direction)
                self._params.pop((link, direction), None)

    def counters(self) -> Mapping[str, Any]:
        """Root qdisc statistics per link and direction, plus what removed netems counted."""
        out: dict[str, Any] = {}
        for link in self._attached:
            out[link] = {}
            for direction, ifname in self._links[link].items():
                entry: dict[str, Any] = {"ifname": ifname}
                try:
                    entry.update(_stats(self._root(ifname)))
                except (DriverError, NetlinkError, OSError) as exc:
                    entry["error"] = str(exc)
                if (link, direction) in self._removed:
                    entry["netem_removed"] = dict(self._removed[(link, direction)])
                out[link][direction] = entry
        return out

    # -- netlink ---------------------------------------------------------------------------

    def _check(self, link: str) -> None:
        if link not in self._attached:
            known = ", ".join(self._attached) or "none"
            raise DriverError(self.name, f"link {link!r} is not impaired by me (mine: {known})")

    def _live(self) -> Any:
        if self._ipr is None:
            raise DriverError(self.name, "not open")
        return self._ipr

    def _install(self, link: str, direction: str, params: ImpairmentParams) -> None:
        ifname = self._links[link][direction]
        if params == ImpairmentParams():
            self._remove(link, direction)
            return
        if ifname in self._tabled and not _has_table(params):
            # a change keeps the old delay table (an empty one would divide by zero): start over
            self._remove(link, direction)
        try:
            _send(self._live(), netem_message(self._index[ifname], params))
        except NetlinkError as exc:
            raise DriverError(
                self.name, f"link {link} {direction} ({ifname}): {_reason(exc, 'netem')}"
            ) from None
        if _has_table(params):
            self._tabled.add(ifname)

    def _root(self, ifname: str) -> Any:
        index = self._index[ifname]
        for msg in self._live().get_qdiscs(index=index):
            if msg["index"] == index and msg["parent"] == TC_H_ROOT:
                return msg
        return None

    def _remove(self, link: str, direction: str) -> None:
        """Delete the root qdisc if it is a netem (another kind is not mine to remove)."""
        ifname = self._links[link][direction]
        if ifname not in self._index:
            return  # open() stopped before this interface: nothing was set on it
        try:
            root = self._root(ifname)
            if root is None or root.get_attr("TCA_KIND") != "netem":
                return
            totals = self._removed.setdefault((link, direction), {})
            for key, value in _stats(root).items():
                if key in ("sent_packets", "sent_bytes", "drops", "overlimits"):
                    totals[key] = totals.get(key, 0) + int(value)
            self._live().tc("del", index=self._index[ifname])
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:  # already gone
                raise DriverError(
                    self.name, f"link {link} {direction} ({ifname}): {_reason(exc, 'del')}"
                ) from None
        self._tabled.discard(ifname)


def _stats(root: Any) -> dict[str, Any]:
    if root is None:
        return {"qdisc": None}
    stats = root.get_attr("TCA_STATS") or {}
    return {
        "qdisc": root.get_attr("TCA_KIND"),
        "sent_packets": int(stats.get("packets", 0)),
        "sent_bytes": int(stats.get("bytes", 0)),
        "drops": int(stats.get("drop", 0)),
        "overlimits": int(stats.get("overlimits", 0)),
        "backlog_bytes": int(stats.get("backlog", 0)),
        "backlog_packets": int(stats.get("qlen", 0)),
    }


def _reason(exc: NetlinkError, what: str) -> str:
    """A netlink error in words; for a new netem qdisc ENOENT means the kind is unknown."""
    if what == "netem" and exc.code == errno.ENOENT:
        return NO_NETEM
    if exc.code == errno.ENODEV:
        return "the interface is gone"
    if exc.code == errno.EPERM:
        return "not permitted (needs CAP_NET_ADMIN)"
    return f"{os.strerror(exc.code)} (errno {exc.code})"
