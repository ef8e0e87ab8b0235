"""Tests of the netem impairment driver: the netlink message (built, encoded and decoded without
a kernel, and compared with what iproute2's tc sends), the settings, and the driver against a
namespace with a veth pair. This machine's kernel has no netem, so here the namespace tests
check the error a lab host without sch_netem gives; the delay/loss tests run on real lab hosts.
"""

from __future__ import annotations

import secrets
import struct
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTM_NEWQDISC, TC_H_ROOT
from pyroute2.netlink.rtnl.tcmsg import sched_netem, tcmsg
from pyroute2.netlink.rtnl.tcmsg.common import percent2u32, tick_in_usec

from drivers.base import DeviceContext
from drivers.errors import DriverError
from drivers.impairment.netem import (
    NO_NETEM,
    NetemImpairment,
    NetemQdiscMsg,
    netem_available,
    netem_kwargs,
    netem_message,
    netem_request,
    normal_table,
)
from drivers.impairment.params import ImpairmentParams

U32_MAX = 2**32 - 1
SKIP_NO_NETEM = "kernel lacks sch_netem: netem driver integration tests run on real lab hosts"

# `tc qdisc replace dev va root netem limit 50 delay 20ms 5ms loss gemodel 1% 10% 70% 0.1%
#  duplicate 2% reorder 10% rate 800kbit` as iproute2 6.1 sent it (strace of sendmsg; the
# tcmsg after the 16-byte nlmsghdr, interface index 3).
TC_GOLDEN = bytes.fromhex(
    "000000000300000000000000ffffffff000000000a0001006e6574656d000000"
    "54000200b4c40400320000000000000001000000"
    "52b81e052d3101000c0003009a9999190000000018000580140002"
    "00295c8f029a999919cdcccc4c3789410014000600a086010000000000000000"
    "0000000000"
)
TC_GOLDEN_PARAMS = ImpairmentParams(
    delay_ms=20,
    jitter_ms=5,
    loss_model="gilbert_elliott",
    ge_p_pct=1,
    ge_r_pct=10,
    ge_bad_loss_pct=70,
    ge_good_loss_pct=0.1,
    duplicate_pct=2,
    reorder_pct=10,
    rate_kbps=800,
    queue_limit_packets=50,
)


def _encode(msg: Any) -> bytes:
    msg.encode()
    return bytes(msg.data)


def _decode(cls: Any, data: bytes) -> Any:
    msg = cls(data)
    msg.decode()
    return msg


def _attrs(options: Any) -> dict[str, Any]:
    return {name: value for name, value, *_ in options["attrs"]}


# --------------------------------------------------------------------------------------------
# The message (no kernel)
# --------------------------------------------------------------------------------------------


def test_kwargs_use_pyroute2_units() -> None:
    kwargs = netem_kwargs(
        ImpairmentParams(
            delay_ms=20.5,
            jitter_ms=2,
            loss_pct=1.5,
            duplicate_pct=2,
            reorder_pct=10,
            rate_kbps=800,
            queue_limit_packets=50,
        )
    )
    assert kwargs == {
        "delay": 20_500,  # µs
        "jitter": 2_000,
        "limit": 50,
        "loss": 1.5,  # percent
        "duplicate": 2.0,
        "prob_reorder": 10.0,
        "gap": 1,
        "rate": 100_000,  # bytes/s: 800 kbit/s / 8
    }
    assert netem_kwargs(ImpairmentParams())["rate"] == 0  # always sent: resets an old rate


def test_request_struct_is_pyroute2s() -> None:
    params = ImpairmentParams(delay_ms=20, jitter_ms=5, loss_pct=5, duplicate_pct=1)
    options = netem_request(params)
    plugin = sched_netem.get_parameters(netem_kwargs(params))
    for key in ("delay", "jitter", "limit", "loss", "gap", "duplicate"):
        assert options[key] == plugin[key]
    assert options["delay"] == int(20_000 * tick_in_usec)  # psched ticks
    assert options["jitter"] == int(5_000 * tick_in_usec)
    assert options["loss"] == percent2u32(5)
    assert (options["limit"], options["gap"]) == (1000, 0)
    attrs = _attrs(options)
    assert list(attrs) == ["TCA_NETEM_RATE"]  # no reorder, no loss model, no table
    assert attrs["TCA_NETEM_RATE"]["rate"] == 0


def test_reorder_needs_gap_one() -> None:
    options = netem_request(ImpairmentParams(delay_ms=10, reorder_pct=25))
    assert options["gap"] == 1
    assert _attrs(options)["TCA_NETEM_REORDER"] == {
        "prob_reorder": percent2u32(25),
        "corr_reorder": 0,
    }


def test_gilbert_elliott_is_p_r_h_k1() -> None:
    options = netem_request(
        ImpairmentParams(
            loss_model="gilbert_elliott",
            ge_p_pct=2,
            ge_r_pct=30,
            ge_bad_loss_pct=80,
            ge_good_loss_pct=0.5,
        )
    )
    assert options["loss"] == 0  # the random model is off
    loss = _attrs(options)["TCA_NETEM_LOSS"]
    assert loss == {
        "attrs": [
            [
                "NETEM_LOSS_GE",
                {
                    "p": percent2u32(2),
                    "r": percent2u32(30),
                    "h": percent2u32(20),  # delivered in the bad state: 1 - 80 %
                    "k1": percent2u32(0.5),
                },
            ]
        ]
    }


def test_outage_drops_everything() -> None:
    params = ImpairmentParams(
        delay_ms=10, duplicate_pct=50, loss_model="gilbert_elliott", ge_p_pct=5, outage=True
    )
    options = netem_request(params)
    assert options["loss"] == U32_MAX
    assert options["duplicate"] == 0  # a duplicate of a lost packet would still go out
    assert "TCA_NETEM_LOSS" not in _attrs(options)
    assert options["delay"] == int(10_000 * tick_in_usec)


def test_normal_table_only_with_jitter() -> None:
    normal = netem_request(ImpairmentParams(delay_ms=20, jitter_ms=5, jitter_distribution="normal"))
    assert _attrs(normal)["TCA_NETEM_DELAY_DIST"] == normal_table()
    uniform = netem_request(ImpairmentParams(delay_ms=20, jitter_ms=5))
    no_jitter = netem_request(ImpairmentParams(delay_ms=20, jitter_distribution="normal"))
    assert "TCA_NETEM_DELAY_DIST" not in _attrs(uniform)
    assert "TCA_NETEM_DELAY_DIST" not in _attrs(no_jitter)


def test_normal_table_shape() -> None:
    table = normal_table()
    assert len(table) == 4096
    assert list(table) == sorted(table)
    assert table[0] == -32768 and abs(table[2048]) < 8  # the median is 0
    assert abs(table[3446] - 8192) < 50  # one sigma (84.13th percentile) = NETEM_DIST_SCALE


def test_normal_table_is_iproute2s() -> None:
    found = [
        path
        for path in (
            Path("/usr/lib/x86_64-linux-gnu/tc/normal.dist"),
            Path("/usr/lib/aarch64-linux-gnu/tc/normal.dist"),
            Path("/usr/lib/tc/normal.dist"),
            Path("/usr/lib64/tc/normal.dist"),
        )
        if path.exists()
    ]
    if not found:
        pytest.skip("iproute2's normal.dist is not installed")
    values = [
        int(v)
        for line in found[0].read_text().splitlines()
        if not line.startswith("#")
        for v in line.split()
    ]
    assert tuple(values) == normal_table()


def test_big_rates_use_rate64() -> None:
    attrs = _attrs(netem_request(ImpairmentParams(rate_kbps=40_000_000)))  # 40 Gbit/s
    assert attrs["TCA_NETEM_RATE"]["rate"] == U32_MAX
    assert attrs["TCA_NETEM_RATE64"] == 5_000_000_000
    tiny = _attrs(netem_request(ImpairmentParams(rate_kbps=0.001)))
    assert tiny["TCA_NETEM_RATE"]["rate"] == 1  # never 0, which would mean "no limit"


def test_message_round_trips_through_pyroute2() -> None:
    params = ImpairmentParams(
        delay_ms=20, jitter_ms=5, jitter_distribution="normal", loss_pct=5, duplicate_pct=1,
        reorder_pct=10, rate_kbps=800, queue_limit_packets=64,
    )  # fmt: skip
    data = _encode(netem_message(7, params))
    length, kind = struct.unpack_from("=IH", data)
    assert (length, kind) == (len(data), 0)  # the type is set by the sender (RTM_NEWQDISC)
    # pyroute2's own tcmsg reads what it knows: the struct, reorder and rate
    msg = _decode(tcmsg, data)
    assert (msg["index"], msg["handle"], msg["parent"]) == (7, 0, TC_H_ROOT)
    assert msg.get_attr("TCA_KIND") == "netem"
    options = msg.get_attr("TCA_OPTIONS")
    assert options["delay"] == int(20_000 * tick_in_usec)
    assert options["jitter"] == int(5_000 * tick_in_usec)
    assert options["limit"] == 64
    assert options["loss"] == percent2u32(5)
    assert options["duplicate"] == percent2u32(1)
    assert options["gap"] == 1
    assert options.get_attr("TCA_NETEM_REORDER")["prob_reorder"] == percent2u32(10)
    assert options.get_attr("TCA_NETEM_RATE")["rate"] == 100_000
    # ours reads the rest: the delay table
    ours = _decode(NetemQdiscMsg, data).get_attr("TCA_OPTIONS")
    assert tuple(ours.get_attr("TCA_NETEM_DELAY_DIST")) == normal_table()


def test_gilbert_elliott_round_trip() -> None:
    params = ImpairmentParams(
        loss_model="gilbert_elliott", ge_p_pct=1, ge_r_pct=10, ge_bad_loss_pct=70
    )
    ours = _decode(NetemQdiscMsg, _encode(netem_message(3, params))).get_attr("TCA_OPTIONS")
    loss = ours.get_attr("TCA_NETEM_LOSS")
    assert loss.get_attr("NETEM_LOSS_GE") == {
        "p": percent2u32(1),
        "r": percent2u32(10),
        "h": percent2u32(30),
        "k1": 0,
    }


def _close(a: Any, b: Any, path: str = "") -> None:
    """Equal, but probabilities may differ by 1/2**32 (tc rounds, pyroute2 truncates)."""
    if isinstance(a, Mapping):
        assert set(a) - {"header"} == set(b) - {"header"}, path
        for key in set(a) - {"header"}:
            _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, int) and isinstance(b, int) and a > 1_000_000:
        assert abs(a - b) <= 1, path
    else:
        assert a == b, path


def test_same_message_as_tc() -> None:
    ours = _encode(netem_message(3, TC_GOLDEN_PARAMS))[16:]
    assert len(ours) == len(TC_GOLDEN)
    header = struct.pack("=IHHII", 16 + len(TC_GOLDEN), RTM_NEWQDISC, 0, 0, 0)
    theirs = _decode(NetemQdiscMsg, header + TC_GOLDEN).dump()
    mine = _decode(NetemQdiscMsg, header + ours).dump()
    _close(theirs, mine)
    # the words that may differ are probabilities only; everything else is byte-identical
    differ = [i for i in range(len(ours)) if ours[i] != TC_GOLDEN[i]]
    assert all(TC_GOLDEN[i] - ours[i] == 1 for i in differ)


# --------------------------------------------------------------------------------------------
# Settings (no kernel: open() stops before netlink)
# --------------------------------------------------------------------------------------------


class _Processes:
    def track(self, proc: Any, role: str) -> None:
        raise AssertionError("the netem driver starts no process")


def _driver(settings: Mapping[str, Any], tmp_path: Path) -> tuple[NetemImpairment, list[Any]]:
    events: list[Any] = []
    context = DeviceContext(
        run_dir=tmp_path,
        name_prefix="tbnm",
        emit=lambda kind, fields: events.append((kind, dict(fields))),
        processes=_Processes(),
    )
    return NetemImpairment("wan", settings, context), events


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "settings need links"),
        ({"links": {}}, "settings need links"),
        ({"links": {"wan": "eth0"}}, "link 'wan': give {forward: IFNAME, reverse: IFNAME}"),
        ({"links": {"wan": {"reverse": "eth1"}}}, "link 'wan': missing the forward egress"),
        ({"links": {"wan": {"forward": "eth0"}}}, "link 'wan': missing the reverse egress"),
        ({"links": {"wan": {"forward": "eth0", "reverse": ""}}}, "'' is not an interface name"),
        (
            {"links": {"wan": {"forward": "eth0", "reverse": "a-very-long-ifname"}}},
            "'a-very-long-ifname' is not an interface name",
        ),
        ({"links": {"wan": {"forward": "eth0", "reverse": "eth0"}}}, "already carries wan forward"),
        (
            {
                "links": {
                    "a": {"forward": "e0", "reverse": "e1"},
                    "b": {"forward": "e1", "reverse": "e2"},
                }
            },
            "link 'b' forward: interface e1 already carries a reverse",
        ),
        (
            {"links": {"wan": {"forward": "e0", "reverse": "e1", "both": "e2"}}},
            "unknown key(s) both",
        ),
        ({"links": {"wan": {"forward": "e0", "reverse": "e1"}}, "namespace": "x"}, "namespace"),
        ({"links": {"wan": {"forward": "e0", "reverse": "e1"}}, "netns": "a/b"}, "netns must be"),
    ],
)
def test_settings_are_checked_in_open(
    settings: Mapping[str, Any], message: str, tmp_path: Path
) -> None:
    driver, _ = _driver(settings, tmp_path)
    with pytest.raises(DriverError, match=r"^wan: ") as caught:
        driver.open()
    assert message in str(caught.value)
    driver.safe_state()  # nothing was set: still fine
    driver.close()


def test_missing_namespace_is_an_error_and_not_created(tmp_path: Path) -> None:
    name = f"tbnm{secrets.token_hex(2)}-x"
    driver, _ = _driver(
        {"netns": name, "links": {"wan": {"forward": "va", "reverse": "vb"}}}, tmp_path
    )
    with pytest.raises(DriverError, match=f"network namespace '{name}' does not exist"):
        driver.open()
    assert not (Path("/run/netns") / name).exists()


def test_unattached_link_is_named(tmp_path: Path) -> None:
    driver, _ = _driver({"links": {"wan": {"forward": "va", "reverse": "vb"}}}, tmp_path)
    with pytest.raises(DriverError, match="link 'nowhere' is not impaired by me"):
        driver.apply("nowhere", "both", {"delay_ms": 10})
    with pytest.raises(DriverError, match="link 'nowhere' is not impaired by me"):
        driver.clear("nowhere")


# --------------------------------------------------------------------------------------------
# Against the kernel: a namespace with a veth pair (root needed)
# --------------------------------------------------------------------------------------------


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


@pytest.fixture
def lab_ns() -> Iterator[str]:
    """A namespace ``tbnmXXXX-x`` with veth ``va``-``vb``: the two egresses of link ``wan``."""
    name = f"tbnm{secrets.token_hex(2)}-x"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        _ip("-n", name, "link", "set", "dev", "va", "up")
        _ip("-n", name, "link", "set", "dev", "vb", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def _lab_driver(ns: str, tmp_path: Path) -> tuple[NetemImpairment, list[Any]]:
    return _driver({"netns": ns, "links": {"wan": {"forward": "va", "reverse": "vb"}}}, tmp_path)


def _root_qdisc(ns: str, ifname: str) -> Any:
    with IPRoute(netns=ns, flags=0) as ipr:
        (index,) = ipr.link_lookup(ifname=ifname)
        return next(m for m in ipr.get_qdiscs() if m["index"] == index and m["parent"] == TC_H_ROOT)


@pytest.mark.netns
def test_probe_leaves_nothing_behind() -> None:
    assert isinstance(netem_available(), bool)
    assert netem_available() is netem_available()  # cached
    assert not list(Path("/run/netns").glob("tbnm*-p"))


@pytest.mark.netns
def test_open_checks_interfaces_and_links(lab_ns: str, tmp_path: Path) -> None:
    driver, _ = _driver(
        {"netns": lab_ns, "links": {"wan": {"forward": "va", "reverse": "vz"}}}, tmp_path
    )
    try:
        with pytest.raises(
            DriverError, match=f"wan reverse: no interface 'vz' in namespace {lab_ns}"
        ):
            driver.open()
    finally:
        driver.safe_state()
        driver.close()
    driver, events = _lab_driver(lab_ns, tmp_path)
    try:
        driver.open()
        with pytest.raises(DriverError, match="link 'lan' has no interfaces in my settings"):
            driver.attach(["wan", "lan"])
        driver.attach(["wan"])
        assert events == [("impairment.attached", {"links": ["wan"]})]
        with pytest.raises(DriverError, match="link wan forward: delay_ms must be"):
            driver.apply("wan", "forward", {"delay_ms": -1})
        with pytest.raises(DriverError, match="unknown impairment parameter"):
            driver.apply("wan", "both", {"dealy_ms": 10})
        with pytest.raises(DriverError, match="link wan forward: scheduler='priority' is not"):
            driver.apply("wan", "both", {"rate_kbps": 1000, "scheduler": "priority"})
        assert _root_qdisc(lab_ns, "va").get_attr("TCA_KIND") == "noqueue"  # untouched
    finally:
        driver.close()


@pytest.mark.netns
def test_without_netem_apply_says_why(lab_ns: str, tmp_path: Path) -> None:
    if netem_available():
        pytest.skip("this kernel has netem: the error path needs a kernel without it")
    driver, _ = _lab_driver(lab_ns, tmp_path)
    driver.open()
    try:
        driver.attach(["wan"])
        with pytest.raises(DriverError) as caught:
            driver.apply("wan", "both", {"delay_ms": 20, "loss_pct": 5})
        assert str(caught.value) == f"wan: link wan forward (va): {NO_NETEM}"
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
        with pytest.raises(DriverError, match="lacks sch_netem"):
            driver.set_outage("wan", "reverse", True)
        assert _root_qdisc(lab_ns, "va").get_attr("TCA_KIND") == "noqueue"  # untouched
        counters = driver.counters()
        assert counters["wan"]["forward"]["ifname"] == "va"
        assert counters["wan"]["forward"]["qdisc"] == "noqueue"
        assert counters["wan"]["reverse"]["sent_packets"] == 0
        driver.clear()
        driver.safe_state()
    finally:
        driver.close()
    driver.safe_state()  # closed: still never raises


@pytest.mark.netns
def test_netem_delay_loss_outage_and_clear(lab_ns: str, tmp_path: Path) -> None:
    if not netem_available():
        pytest.skip(SKIP_NO_NETEM)
    driver, _ = _lab_driver(lab_ns, tmp_path)
    driver.open()
    try:
        driver.attach(["wan"])
        driver.apply("wan", "forward", {"delay_ms": 20, "loss_pct": 5})
        root = _root_qdisc(lab_ns, "va")
        assert root.get_attr("TCA_KIND") == "netem"
        options = root.get_attr("TCA_OPTIONS")
        assert options["delay"] == int(20_000 * tick_in_usec)
        assert options["loss"] == percent2u32(5)
        assert _root_qdisc(lab_ns, "vb").get_attr("TCA_KIND") != "netem"  # forward only

        driver.set_outage("wan", "forward", True)
        assert _root_qdisc(lab_ns, "va").get_attr("TCA_OPTIONS")["loss"] == U32_MAX
        driver.set_outage("wan", "forward", False)
        options = _root_qdisc(lab_ns, "va").get_attr("TCA_OPTIONS")
        assert (options["loss"], options["delay"]) == (percent2u32(5), int(20_000 * tick_in_usec))

        driver.apply(
            "wan",
            "both",
            {
                "loss_pct": 0,
                "loss_model": "gilbert_elliott",
                "ge_p_pct": 1,
                "ge_r_pct": 20,
                "jitter_ms": 5,
                "jitter_distribution": "normal",
                "rate_kbps": 800,
            },
        )
        for ifname in ("va", "vb"):
            assert _root_qdisc(lab_ns, ifname).get_attr("TCA_KIND") == "netem"
        driver.apply("wan", "both", {"jitter_distribution": "uniform"})  # drops the table
        assert driver.counters()["wan"]["forward"]["qdisc"] == "netem"

        driver.clear("wan")
        for ifname in ("va", "vb"):
            assert _root_qdisc(lab_ns, ifname).get_attr("TCA_KIND") != "netem"
        driver.apply("wan", "reverse", {"delay_ms": 5})
        driver.safe_state()
        assert _root_qdisc(lab_ns, "vb").get_attr("TCA_KIND") != "netem"
        assert "netem_removed" in driver.counters()["wan"]["reverse"]
    finally:
        driver.safe_state()
        driver.close()


# --------------------------------------------------------------------------------------------
# The lab-host path with a stand-in for IPRoute (what this kernel cannot run)
# --------------------------------------------------------------------------------------------


class _Qdisc(dict[str, Any]):
    def __init__(self, index: int, kind: str, options: Any = None, packets: int = 0) -> None:
        super().__init__(index=index, parent=TC_H_ROOT)
        self.attrs = {
            "TCA_KIND": kind,
            "TCA_OPTIONS": options,
            "TCA_STATS": {"packets": packets, "bytes": 100 * packets, "drop": 1, "qlen": 0},
        }

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


class _FakeIPRoute:
    """Keeps one root qdisc per interface, as the kernel would with netem."""

    def __init__(self, **kwargs: Any) -> None:
        self.status: dict[str, Any] = {}
        self.names = {"va": 2, "vb": 3}
        self.roots = {index: _Qdisc(index, "noqueue") for index in self.names.values()}
        self.log: list[tuple[str, int]] = []

    def link_lookup(self, ifname: str) -> list[int]:
        return [self.names[ifname]] if ifname in self.names else []

    def get_qdiscs(self, index: int | None = None) -> list[_Qdisc]:
        return list(self.roots.values())

    def nlm_request(self, msg: Any, msg_type: int, msg_flags: int) -> tuple[()]:
        assert msg_type == RTM_NEWQDISC and self.status["nlm_generator"] is False
        msg = _decode(NetemQdiscMsg, _encode(msg))  # what the kernel would read
        old = self.roots[msg["index"]]
        packets = old.get_attr("TCA_STATS")["packets"] if old.get_attr("TCA_KIND") == "netem" else 0
        self.roots[msg["index"]] = _Qdisc(
            msg["index"], "netem", msg.get_attr("TCA_OPTIONS"), packets + 10
        )
        self.log.append(("replace", msg["index"]))
        return ()

    def tc(self, command: str, index: int) -> None:
        assert command == "del"
        self.roots[index] = _Qdisc(index, "noqueue")
        self.log.append(("del", index))

    def close(self) -> None:
        self.log.append(("close", 0))


def test_lab_host_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeIPRoute()
    monkeypatch.setattr("drivers.impairment.netem.IPRoute", lambda **kwargs: fake)
    driver, _ = _driver({"links": {"wan": {"forward": "va", "reverse": "vb"}}}, tmp_path)
    driver.open()
    driver.attach(["wan"])
    assert fake.log == []  # nothing of ours was there

    driver.apply(
        "wan", "forward", {"delay_ms": 20, "jitter_ms": 5, "jitter_distribution": "normal"}
    )
    options = fake.roots[2].get_attr("TCA_OPTIONS")
    assert options["delay"] == int(20_000 * tick_in_usec)
    assert options.get_attr("TCA_NETEM_DELAY_DIST") is not None
    driver.apply("wan", "forward", {"loss_pct": 5})  # merges: delay and jitter stay
    assert fake.log == [("replace", 2), ("replace", 2)]
    assert fake.roots[2].get_attr("TCA_OPTIONS")["loss"] == percent2u32(5)
    assert fake.roots[2].get_attr("TCA_OPTIONS")["delay"] == int(20_000 * tick_in_usec)

    # the kernel would keep the old table on a change: the qdisc is replaced instead
    driver.apply("wan", "forward", {"jitter_distribution": "uniform"})
    assert fake.log[2:] == [("del", 2), ("replace", 2)]
    assert fake.roots[2].get_attr("TCA_OPTIONS").get_attr("TCA_NETEM_DELAY_DIST") is None

    # back to the defaults = no qdisc of ours
    driver.apply("wan", "forward", {"delay_ms": 0, "jitter_ms": 0, "loss_pct": 0})
    assert fake.log[4:] == [("del", 2)] and fake.roots[2].get_attr("TCA_KIND") == "noqueue"

    driver.set_outage("wan", "both", True)
    assert all(fake.roots[i].get_attr("TCA_OPTIONS")["loss"] == U32_MAX for i in (2, 3))
    driver.set_outage("wan", "both", False)
    assert fake.roots[2].get_attr("TCA_KIND") == "noqueue"

    driver.apply("wan", "reverse", {"delay_ms": 7})
    driver.safe_state()
    assert fake.roots[3].get_attr("TCA_KIND") == "noqueue"
    counters = driver.counters()
    assert counters["wan"]["reverse"]["qdisc"] == "noqueue"
    assert counters["wan"]["reverse"]["netem_removed"]["sent_packets"] == 20  # two netems
    driver.close()
    assert fake.log[-1] == ("close", 0)
