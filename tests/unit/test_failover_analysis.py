"""Failover metrics: stream interruptions and losses at faults, radio detection and re-attach,
the spread over repetitions, the summary block, failover KPIs and their validation.

Streams are synthesised packet by packet (seq, tx, rx in ns) so every expected figure is
known exactly from the construction.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest

from testbed.analysis import failover as fo
from testbed.analysis.kpis import evaluate
from testbed.errors import ConfigError
from testbed.model import Lab, Profile
from testbed.plan import PlannedKpi, make_plan
from testbed.results.summary import failover_table

S = 1_000_000_000
T0 = 1_700_000_000.0  # a wall-clock epoch second
OWD_NS = 5_000_000


def probe(
    duration_s: float = 5.0,
    rate_pps: float = 100.0,
    lost: Iterable[tuple[float, float]] = (),
    drop: Iterable[int] = (),
) -> dict[str, Any]:
    """A constant-rate stream from T0: packets sent in a ``lost`` (start_s, end_s) span or
    listed in ``drop`` never arrive; the rest arrive OWD later."""
    n = int(duration_s * rate_pps)
    seq = np.arange(n, dtype=np.int64)
    tx = int(T0 * S) + (seq * S / rate_pps).astype(np.int64)
    keep = np.ones(n, dtype=bool)
    for a, b in lost:
        keep &= ~((tx >= int((T0 + a) * S)) & (tx < int((T0 + b) * S)))
    keep[list(drop)] = False
    return {
        "seq": seq[keep],
        "tx_ns": tx[keep],
        "rx_ns": tx[keep] + OWD_NS,
        "sent": n,
        "sent_window_ns": (int(tx[0]), int(tx[-1])),
    }


def at(
    stream: dict[str, Any], fault_s: float, end_s: float = 100.0, interval_ms: float = 10.0
) -> dict[str, Any]:
    return fo.stream_failover(
        **stream, fault_wall=T0 + fault_s, window_end_wall=T0 + end_s, interval_ms=interval_ms
    )


# threshold ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "threshold"), [(10.0, 30.0), (1.0, 20.0), (20.0, 60.0)])
def test_threshold_is_three_intervals_with_a_20_ms_floor(interval: float, threshold: float) -> None:
    assert fo.gap_threshold_ms(interval) == threshold


# streams -----------------------------------------------------------------------------------


def test_an_outage_at_the_fault_is_its_interruption() -> None:
    # packets sent in [1.0, 2.0) are lost: 100 of them; the gap runs from the packet sent at
    # 0.99 s to the one sent at 2.00 s, both received 5 ms later
    result = at(probe(lost=[(1.0, 2.0)]), 1.0)
    assert result["status"] == "interrupted" and result["recovered"] is True
    assert result["interruption_ms"] == pytest.approx(1010.0, abs=0.01)
    assert result["lost_packets"] == 100
    assert result["last_before_wall"] == pytest.approx(T0 + 0.995, abs=1e-5)
    assert result["first_after_wall"] == pytest.approx(T0 + 2.005, abs=1e-5)
    assert result["threshold_ms"] == 30.0


def test_a_late_effect_is_still_the_faults_interruption() -> None:
    # the service fails 0.5 s after the fault (a core noticed late): the gap counts, and the
    # packets that arrived between the fault and the gap are not lost
    result = at(probe(lost=[(1.5, 2.0)]), 1.0)
    assert result["status"] == "interrupted"
    assert result["interruption_ms"] == pytest.approx(510.0, abs=0.01)
    assert result["lost_packets"] == 50


def test_scattered_losses_below_the_threshold_are_no_interruption() -> None:
    # two packets in a row lost: a 30 ms gap, not more than 3 intervals
    result = at(probe(drop=[150, 151, 300]), 1.0)
    assert result["status"] == "unaffected" and result["interruption_ms"] == 0.0
    assert result["lost_packets"] == 3  # counted over the fault's window
    assert (result["last_before_wall"], result["first_after_wall"]) == (None, None)


def test_only_the_first_gap_in_the_window_counts_and_later_gaps_belong_to_later_faults() -> None:
    stream = probe(lost=[(1.0, 1.5), (3.0, 4.0)])
    first = at(stream, 1.0, end_s=3.0)
    second = at(stream, 3.0)
    assert first["interruption_ms"] == pytest.approx(510.0, abs=0.01)
    assert second["interruption_ms"] == pytest.approx(1010.0, abs=0.01)
    assert (first["lost_packets"], second["lost_packets"]) == (50, 100)
    # a fault whose window closes before the gap begins was not interrupted
    assert at(stream, 0.2, end_s=0.9)["status"] == "unaffected"


def test_a_gap_already_running_at_the_fault_counts_from_its_start() -> None:
    result = at(probe(lost=[(1.0, 2.0)]), 1.4)
    assert result["interruption_ms"] == pytest.approx(1010.0, abs=0.01)
    assert result["lost_packets"] == 100


def test_duplicates_and_reordering_do_not_shorten_the_gap() -> None:
    stream = probe(lost=[(1.0, 2.0)])
    # the last packet before the outage arrives twice; two packets swap places
    seq, tx, rx = stream["seq"], stream["tx_ns"], stream["rx_ns"]
    i = int(np.flatnonzero(seq == 99)[0])
    rx = rx.copy()
    rx[10], rx[11] = rx[11], rx[10]
    stream |= {
        "seq": np.append(seq, 99),
        "tx_ns": np.append(tx, tx[i]),
        "rx_ns": np.append(rx, rx[i] + 3 * S // 2),  # the copy lands mid-outage
    }
    result = at(stream, 1.0)
    assert result["interruption_ms"] == pytest.approx(1010.0, abs=0.01)
    assert result["lost_packets"] == 100


def test_no_recovery_within_the_stream() -> None:
    result = at(probe(lost=[(4.0, 5.0)]), 4.0)
    assert result["status"] == "not_recovered" and result["recovered"] is False
    assert result["interruption_ms"] is None
    assert result["lost_packets"] == 100
    assert result["last_before_wall"] == pytest.approx(T0 + 3.995, abs=1e-5)
    # to the sender's last packet's expected arrival
    assert result["at_least_ms"] == pytest.approx(1000.0, abs=0.01)


def test_a_fault_just_before_the_end_with_service_to_the_end_is_unaffected() -> None:
    result = at(probe(), 4.985)  # the last packet leaves at 4.99 s
    assert result["status"] == "unaffected" and result["lost_packets"] == 0


@pytest.mark.parametrize(
    ("fault_s", "status"), [(-1.0, "not_started"), (6.0, "ended"), (0.001, "no_service")]
)
def test_faults_outside_the_streams_service_give_no_sample(fault_s: float, status: str) -> None:
    result = at(probe(), fault_s)
    assert result["status"] == status
    assert result["interruption_ms"] is None and result["lost_packets"] is None


def test_a_stream_nothing_was_sent_of() -> None:
    empty = np.zeros(0, dtype=np.int64)
    result = fo.stream_failover(
        empty, empty, empty, fault_wall=T0, window_end_wall=T0 + 1, interval_ms=10, sent=0
    )
    assert result["status"] == "not_started"


# radios ------------------------------------------------------------------------------------


def reg(t: float, stat: int) -> dict[str, Any]:
    return {"wall": T0 + t, "stat": stat, "stat_name": f"stat {stat}"}


def op(t: float, plmn: str) -> dict[str, Any]:
    return {"wall": T0 + t, "plmn": plmn}


def radio(regs: list[dict[str, Any]], ops: list[dict[str, Any]], fault_s: float = 1.0,
          end_s: float = 10.0) -> dict[str, Any]:  # fmt: skip
    return fo.radio_failover(
        regs, ops, fault_wall=T0 + fault_s, window_end_wall=T0 + end_s, horizon_wall=T0 + 20
    )


def test_detection_reattach_and_the_roaming_plmn() -> None:
    regs = [reg(0, 1), reg(1.25, 2), reg(1.3, 2), reg(3.75, 5)]
    result = radio(regs, [op(0.1, "00101"), op(3.8, "00202")])
    assert result["status"] == "reattached"
    assert result["detection_ms"] == pytest.approx(250.0)
    assert result["reattach_ms"] == pytest.approx(2500.0)
    assert (result["stat"], result["roaming"]) == (5, True)
    assert (result["plmn_before"], result["plmn"]) == ("00101", "00202")


def test_a_radio_that_never_lost_registration() -> None:
    result = radio([reg(0, 1), reg(2, 1)], [])
    assert result["status"] == "stayed_registered" and result["detection_ms"] is None
    assert "never lost" in result["note"]


def test_a_loss_after_the_window_belongs_to_the_next_fault() -> None:
    assert radio([reg(0, 1), reg(5, 2)], [], end_s=4.0)["status"] == "stayed_registered"


def test_a_radio_that_does_not_come_back() -> None:
    result = radio([reg(0, 1), reg(1.5, 0)], [])
    assert result["status"] == "not_reattached"
    assert result["detection_ms"] == pytest.approx(500.0) and result["reattach_ms"] is None


def test_a_radio_already_without_service_and_one_that_reported_nothing() -> None:
    assert radio([reg(0, 2), reg(3, 1)], [])["status"] == "unregistered_at_fault"
    assert radio([], [])["status"] == "no_reports"


# spread, windows, summary ------------------------------------------------------------------


def test_spread_matches_the_statistics_module() -> None:
    values = [float(v) for v in range(20, 0, -1)]
    result = fo.spread(values)
    assert result["n"] == 20 and (result["min"], result["max"]) == (1.0, 20.0)
    assert result["p50"] == 10.0 and result["p95"] == 19.0  # nearest rank
    assert result["mean"] == pytest.approx(statistics.fmean(values))
    assert result["stdev"] == pytest.approx(statistics.stdev(values), abs=1e-4)
    assert fo.spread([3.0])["stdev"] is None
    assert fo.spread([])["n"] == 0 and fo.spread([])["max"] is None


def actions() -> list[dict[str, Any]]:
    def act(rep: int, index: int, t: float, fault: bool) -> dict[str, Any]:
        wall = T0 + 10 * rep + t
        return {"repetition": rep, "index": index, "device": "net", "action": f"a{index}",
                "planned_at_s": t, "wall": wall, "fault": fault, "args": {}}  # fmt: skip

    return [act(r, i, t, f) for r in (1, 2) for i, t, f in [(0, 1, True), (1, 2, False),
                                                            (2, 3, True)]]  # fmt: skip


def test_fault_windows_end_at_the_next_fault_or_the_repetition() -> None:
    ends = {(0, 1): T0 + 16, (0, 2): T0 + 26}
    windows = fo.fault_windows(actions(), ends)
    assert [(w["repetition"], w["index"]) for w in windows] == [(1, 0), (1, 2), (2, 0), (2, 2)]
    assert [w["window_end_wall"] - T0 for w in windows] == [13, 16, 23, 26]


def test_summary_block_and_its_spread() -> None:
    faults = fo.fault_windows(actions(), {(0, 1): T0 + 16, (0, 2): T0 + 26})
    streams = {
        (0, r, 0): {
            "up": {"status": "interrupted", "interruption_ms": 100.0 * r, "lost_packets": 10 * r}
        }
        for r in (1, 2)
    }
    radios = {
        (0, r, 0): {"m": {"status": "stayed_registered", "detection_ms": None, "reattach_ms": None}}
        for r in (1, 2)
    }
    block = fo.summarise(faults, streams, radios)
    json.dumps(block)  # JSON-ready
    assert len(block["faults"]) == 4 and "point" not in block["faults"][0]
    assert block["faults"][0]["streams"]["up"]["interruption_ms"] == 100.0
    rows = {(r["fault"], r.get("stream") or r.get("radio"), r["figure"]): r
            for r in block["spread"]}  # fmt: skip
    up = rows[(0, "up", "interruption_ms")]
    assert (up["n"], up["min"], up["max"], up["event"]) == (2, 100.0, 200.0, "net.a0 at 1 s")
    assert rows[(0, "m", "detection_ms")]["statuses"] == {"stayed_registered": 2}
    lines = failover_table({"failover": block})
    assert "FAILOVER" in lines[0] and any("stayed registered x2" in line for line in lines)
    assert failover_table({}) == []


# KPIs --------------------------------------------------------------------------------------


def block_with(results: list[dict[str, Any]], subject: str = "streams") -> dict[str, Any]:
    faults = [
        {"repetition": i + 1, "device": "net", "action": "link_down", subject: {"x": r}}
        for i, r in enumerate(results)
    ]
    return {"faults": faults}


def fkpi(figure: str = "interruption_ms", statistic: str = "max", **limits: float) -> PlannedKpi:
    subject = {"stream": "x"} if figure in fo.STREAM_FIGURES else {"stream": None, "device": "x"}
    return PlannedKpi(
        name="k", failover=figure, statistic=statistic, metric=None, reference="",
        **subject, max=limits.get("max"), min=limits.get("min"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("statistic", "value", "verdict"),
    [("max", 300.0, "FAIL"), ("min", 100.0, "PASS"), ("p50", 200.0, "PASS"),
     ("mean", 200.0, "PASS")],
)  # fmt: skip
def test_failover_kpi_statistics(statistic: str, value: float, verdict: str) -> None:
    block = block_with([{"status": "interrupted", "interruption_ms": v} for v in (100, 300, 200)])
    [result] = evaluate([fkpi(statistic=statistic, max=250)], [], failover=block)
    assert (result["value"], result["verdict"], result["samples"]) == (value, verdict, 3)
    assert result["unit"] == "ms" and result["stream"] == "x"
    assert result["definition"] == fo.DEFINITIONS["interruption_ms"] and result["reference"]


def test_a_stream_that_never_recovered_fails_its_interruption_kpi() -> None:
    block = block_with(
        [
            {"status": "interrupted", "interruption_ms": 100.0, "lost_packets": 5},
            {"status": "not_recovered", "interruption_ms": None, "lost_packets": 90},
        ]
    )
    [result] = evaluate([fkpi(max=10_000)], [], failover=block)
    assert result["verdict"] == "FAIL" and "not recovered" in result["note"]
    [lost] = evaluate([fkpi("lost_packets", max=100)], [], failover=block)
    assert (lost["value"], lost["verdict"], lost["unit"]) == (90.0, "PASS", "packets")


def test_radio_kpis_without_samples_say_why() -> None:
    block = block_with([{"status": "stayed_registered", "detection_ms": None}], "radios")
    [result] = evaluate([fkpi("detection_ms", max=500)], [], failover=block)
    assert result["verdict"] == "FAIL" and "never lost registration" in result["note"]
    assert result["device"] == "x"
    [none] = evaluate([fkpi("reattach_ms", max=500)], [], failover=None)
    assert none["verdict"] == "FAIL" and "no fault event" in none["note"]


# model and plan ----------------------------------------------------------------------------


def profile_of(**data: Any) -> Profile:
    data.setdefault("name", "p")
    data.setdefault("duration_s", 10)
    return Profile.model_validate_json(json.dumps(data))


@pytest.mark.parametrize(
    ("kpi", "message"),
    [
        ({"failover": "interruption_ms", "device": "m", "max": 1}, "give stream, not device"),
        ({"failover": "detection_ms", "stream": "s", "max": 1}, "give device, not stream"),
        ({"failover": "reattach_ms", "device": "m", "counter": "c", "max": 1}, "no counter"),
        ({"failover": "lost_packets", "stream": "s", "metric": "loss_pct", "max": 1}, "no metric"),
        ({"failover": "lost_packets", "stream": "s"}, "needs a limit"),
        ({"stream": "s", "metric": "loss_pct", "statistic": "p95", "max": 1}, "statistic is for"),
        ({"failover": "interruption_ms", "stream": "s", "statistic": "p99", "max": 1}, "p95"),
    ],
)
def test_failover_kpi_combinations_are_checked(kpi: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        profile_of(kpis=[{"name": "k", **kpi}])


def lab() -> Lab:
    data = {
        "name": "l",
        "nodes": [{"name": "a"}, {"name": "b"}],
        "links": [{"name": "ab", "endpoints": ["a", "b"]}],
        "devices": [
            {"name": "net", "kind": "network", "driver": "emulated"},
            {"name": "traffic", "kind": "traffic", "driver": "emulated"},
            {"name": "modem", "kind": "radio", "driver": "at"},
            {"name": "psu", "kind": "power_supply", "driver": "scpi"},
        ],
    }
    return Lab.model_validate_json(json.dumps(data))


CATALOG = {
    ("network", "emulated"): frozenset({"link_down", "link_up"}),
    ("traffic", "emulated"): frozenset(),
    ("radio", "at"): frozenset({"radio_off", "radio_on"}),
    ("power_supply", "scpi"): frozenset({"output"}),
}


def plan(**data: Any) -> Any:
    return make_plan(profile_of(**data), lab(), lambda k, d: CATALOG.get((k, d)))


STREAMS = [{"id": "s", "from": "a", "to": "b", "rate_pps": 100}]
CUT = {"at_s": 1, "device": "net", "action": "link_down", "args": {"link": "ab"}}


def test_the_plan_carries_fault_marks_and_failover_kpis() -> None:
    kpis = [
        {"name": "i", "stream": "s", "failover": "interruption_ms", "statistic": "p95", "max": 1},
        {"name": "r", "device": "modem", "failover": "reattach_ms", "max": 5000},
    ]
    p = plan(streams=STREAMS, timeline=[{**CUT, "fault": True}, {**CUT, "at_s": 2}],
             kpis=kpis, devices=["modem"])  # fmt: skip
    assert [e.fault for e in p.timeline] == [True, False]
    assert (p.kpis[0].failover, p.kpis[0].statistic, p.kpis[1].statistic) == (
        "interruption_ms", "p95", "max",
    )  # fmt: skip


def test_failover_kpis_need_a_fault_and_a_radio() -> None:
    kpi = {"name": "i", "stream": "s", "failover": "interruption_ms", "max": 1}
    with pytest.raises(ConfigError) as info:
        plan(streams=STREAMS, timeline=[CUT], kpis=[kpi])
    assert info.value.problems == [
        "profile: kpis.0.failover: failover KPIs are measured at fault events: mark one with "
        "fault: true"
    ]
    psu = {"name": "d", "device": "psu", "failover": "detection_ms", "max": 1}
    with pytest.raises(ConfigError) as info:
        plan(streams=STREAMS, timeline=[{**CUT, "fault": True}], kpis=[psu], devices=["psu"])
    assert info.value.problems == [
        "profile: kpis.0.device: failover detection_ms comes from a radio's registration "
        "reports; 'psu' is a power_supply"
    ]
