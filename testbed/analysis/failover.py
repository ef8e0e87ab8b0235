"""Failover metrics: what each fault of the timeline did to the streams and to the radios.

Pure functions over plain data (packet arrays of one repetition, registration events, the
executed actions), so a stored run or a real lab's data can be analysed again. All times are
CLOCK_REALTIME: receive stamps in ns (the receiver's kernel), fault and registration times in
epoch seconds (the controller and the radio driver), one clock on one host.

A *fault* is a timeline event marked ``fault: true``; its *window* runs from its wall-clock
time to the next fault of the same repetition or the end of the repetition. Streams are
one-directional (a UE's uplink and downlink are two streams).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from testbed.errors import AnalysisError

REGISTERED = (1, 5)
"""+CEREG stat values with service: 1 registered home, 5 registered roaming (TS 27.007 §7.2)."""
THRESHOLD_INTERVALS = 3
THRESHOLD_FLOOR_MS = 20.0

STREAM_FIGURES = ("interruption_ms", "lost_packets")
RADIO_FIGURES = ("detection_ms", "reattach_ms")
STATISTICS = ("min", "p50", "mean", "p95", "max")

DEFINITIONS = {
    "interruption_ms": (
        "service interruption of a stream at a fault: receive time of the first packet after "
        "recovery minus that of the last packet before the first inter-arrival gap that ends "
        "after the fault and exceeds max(3 x packet interval, 20 ms); 0 without such a gap"
    ),
    "lost_packets": (
        "sequence numbers never received between the last packet sent before the fault (or "
        "before the gap) and the first packet after recovery"
    ),
    "detection_ms": (
        "first report of lost registration (+CEREG stat not 1/5) after the fault minus the "
        "fault's wall-clock time"
    ),
    "reattach_ms": "from that loss of registration to the next registered state (stat 1 or 5)",
}
REFERENCE = (
    "docs/profiles.md (failover KPIs); interruption as in the LUMICC KPI 6 'bearer "
    "interruption' of /work/shared/specs/mission-critical.md §1.1 [2nd]"
)


def gap_threshold_ms(interval_ms: float) -> float:
    """Why 3 intervals: two lost packets in a row or a delay step of two intervals is loss
    or jitter, not an interruption; why the 20 ms floor: on a loaded host the sender and
    receiver are scheduled with ms-level hiccups, which must not count as interruptions of a
    fast stream, and 20 ms still resolves the tightest handover targets (FRMCS 50 ms)."""
    return max(THRESHOLD_INTERVALS * interval_ms, THRESHOLD_FLOOR_MS)


def _first_copies(
    seq: npt.ArrayLike, tx_ns: npt.ArrayLike, rx_ns: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    s = np.asarray(seq).astype(np.int64)
    t = np.asarray(tx_ns).astype(np.int64)
    r = np.asarray(rx_ns).astype(np.int64)
    if not s.size == t.size == r.size:
        raise AnalysisError("seq, tx_ns and rx_ns must have the same length")
    order = np.argsort(r, kind="stable")
    s, t, r = s[order], t[order], r[order]
    _, first = np.unique(s, return_index=True)
    first.sort()
    return s[first], t[first], r[first]


def _missing(seq_u: npt.NDArray[np.int64], lo: int, hi: int) -> int:
    """Sequence numbers strictly between lo and hi that never arrived."""
    if hi - lo <= 1:
        return 0
    inside = int(np.count_nonzero((seq_u > lo) & (seq_u < hi)))
    return hi - lo - 1 - inside


def stream_failover(
    seq: npt.ArrayLike,
    tx_ns: npt.ArrayLike,
    rx_ns: npt.ArrayLike,
    *,
    fault_wall: float,
    window_end_wall: float,
    interval_ms: float,
    sent: int = -1,
    sent_window_ns: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """What one fault did to one stream in one repetition.

    The gap that counts is the *first* inter-arrival gap (first copies, arrival order) longer
    than :func:`gap_threshold_ms` that ends after the fault and begins before the fault's
    window ends: a fault may take effect late (a core failure is noticed when bearers drop),
    so the gap need not start at the fault, and a later gap belongs to a later fault.
    ``interruption_ms`` is that gap (``last_before_wall`` to ``first_after_wall``);
    ``lost_packets`` the sequence numbers never received between the last packet sent before
    the fault (or the packet before the gap, if the gap began earlier) and the first packet
    after recovery.

    ``status``: ``interrupted``; ``unaffected`` (no such gap: interruption 0, losses counted
    over the whole window); ``not_recovered`` (nothing arrived after the gap began until the
    stream's end, ``recovered: false``, interruption ``null`` and ``at_least_ms`` the gap to
    the sender's last packet: with a fault near the end it may simply have ended first);
    ``not_started`` / ``ended`` (the sender was not sending at the fault: no sample);
    ``no_service`` (nothing had arrived before the fault, so nothing could be interrupted).
    RTP voice in silence sends a SID every 160 ms: a lost SID shows as a gap of that size.
    """
    fault_ns = round(fault_wall * 1e9)
    end_ns = round(window_end_wall * 1e9) if math.isfinite(window_end_wall) else 2**62
    threshold_ms = gap_threshold_ms(interval_ms)
    threshold_ns = threshold_ms * 1e6
    seq_u, tx_u, rx_u = _first_copies(seq, tx_ns, rx_ns)
    out: dict[str, Any] = {
        "status": "",
        "interruption_ms": None,
        "lost_packets": None,
        "last_before_wall": None,
        "first_after_wall": None,
        "recovered": None,
        "threshold_ms": round(threshold_ms, 3),
    }
    window = sent_window_ns
    if window is None and tx_u.size:
        window = (int(tx_u.min()), int(tx_u.max()))
    if window is None:
        return out | {"status": "not_started", "note": "nothing of the stream was sent"}
    if fault_ns < window[0]:
        return out | {"status": "not_started", "note": "the stream started after the fault"}
    if fault_ns > window[1]:
        return out | {"status": "ended", "note": "the stream had ended before the fault"}
    if rx_u.size == 0 or rx_u[0] > fault_ns:
        return out | {"status": "no_service", "note": "nothing had arrived before the fault"}
    total = sent if sent > 0 else int(seq_u.max()) + 1

    gaps = np.diff(rx_u)
    hits = np.flatnonzero((gaps > threshold_ns) & (rx_u[1:] > fault_ns) & (rx_u[:-1] < end_ns))
    before_fault = tx_u < fault_ns
    if hits.size:
        a = int(hits[0])
        b = a + 1
        lo = _lo(seq_u, before_fault, a)
        hi = max(int(seq_u[b]), lo + 1)
        return out | {
            "status": "interrupted",
            "interruption_ms": round(float(rx_u[b] - rx_u[a]) / 1e6, 4),
            "lost_packets": _missing(seq_u, lo, hi),
            "last_before_wall": round(float(rx_u[a]) / 1e9, 6),
            "first_after_wall": round(float(rx_u[b]) / 1e9, 6),
            "recovered": True,
        }
    last = int(rx_u.size) - 1
    median_owd_ns = float(np.median(rx_u - tx_u))
    expected_last_ns = window[1] + median_owd_ns
    if rx_u[last] < end_ns and expected_last_ns - rx_u[last] > threshold_ns:
        lo = _lo(seq_u, before_fault, last)
        return out | {
            "status": "not_recovered",
            "lost_packets": _missing(seq_u, lo, total),
            "last_before_wall": round(float(rx_u[last]) / 1e9, 6),
            "recovered": False,
            "at_least_ms": round((expected_last_ns - float(rx_u[last])) / 1e6, 4),
            "note": "nothing arrived after the gap began until the stream ended",
        }
    lo = int(seq_u[before_fault].max()) if bool(before_fault.any()) else -1
    after_window = seq_u[tx_u >= end_ns]
    hi = int(after_window.min()) if after_window.size else total
    return out | {
        "status": "unaffected",
        "interruption_ms": 0.0,
        "lost_packets": _missing(seq_u, lo, hi),
        "recovered": True,
    }


def _lo(seq_u: npt.NDArray[np.int64], before_fault: npt.NDArray[np.bool_], a: int) -> int:
    """The highest sequence number known to have arrived before the event: of the packets up
    to the gap's start, those sent before the fault (all of them if the gap began earlier)."""
    upto = seq_u[: a + 1]
    sent_before = upto[before_fault[: a + 1]]
    return int(sent_before.max()) if sent_before.size else int(upto.max())


def radio_failover(
    registrations: Sequence[Mapping[str, Any]],
    operators: Sequence[Mapping[str, Any]],
    *,
    fault_wall: float,
    window_end_wall: float,
    horizon_wall: float,
) -> dict[str, Any]:
    """What one fault did to one radio's EPS registration (``radio.registration`` events:
    ``wall``, ``stat``; ``radio.operator`` events: ``wall``, ``plmn``).

    Detection is the first report of a stat outside 1/5 in the fault's window; re-attach
    runs from it to the next registered report before ``horizon_wall`` (the end of the
    repetition: a radio may re-attach after a later, unrelated fault began). The PLMN is the
    first operator report at or after re-registration (the driver reads AT+COPS? after each
    registration change). ``status``: ``reattached``, ``not_reattached``,
    ``stayed_registered`` (never lost registration: no sample), ``unregistered_at_fault``
    (already without service: no sample), ``no_reports`` (the radio reported nothing).
    """
    regs = sorted(
        (r for r in registrations if _number(r.get("wall")) and isinstance(r.get("stat"), int)),
        key=lambda r: float(r["wall"]),
    )
    ops = sorted((o for o in operators if _number(o.get("wall"))), key=lambda o: float(o["wall"]))
    out: dict[str, Any] = {
        "status": "",
        "detection_ms": None,
        "reattach_ms": None,
        "lost_wall": None,
        "registered_wall": None,
        "stat": None,
        "stat_name": None,
        "plmn": None,
        "roaming": None,
        "plmn_before": _last_plmn(ops, fault_wall),
    }
    if not regs:
        return out | {"status": "no_reports", "note": "the radio reported no registration"}
    prior = [r for r in regs if float(r["wall"]) <= fault_wall]
    if prior and prior[-1]["stat"] not in REGISTERED:
        return out | {
            "status": "unregistered_at_fault",
            "stat": prior[-1]["stat"],
            "stat_name": prior[-1].get("stat_name"),
            "note": "the radio had no registration when the fault came",
        }
    lost = next(
        (
            r
            for r in regs
            if fault_wall <= float(r["wall"]) < window_end_wall and r["stat"] not in REGISTERED
        ),
        None,
    )
    if lost is None:
        return out | {"status": "stayed_registered", "note": "never lost registration"}
    lost_wall = float(lost["wall"])
    out |= {
        "lost_wall": round(lost_wall, 6),
        "detection_ms": round((lost_wall - fault_wall) * 1000, 3),
    }
    back = next(
        (
            r
            for r in regs
            if lost_wall < float(r["wall"]) < horizon_wall and r["stat"] in REGISTERED
        ),
        None,
    )
    if back is None:
        return out | {
            "status": "not_reattached",
            "note": "no registered state before the repetition ended",
        }
    back_wall = float(back["wall"])
    nxt = next(
        (
            float(r["wall"])
            for r in regs
            if float(r["wall"]) > back_wall and r["stat"] not in REGISTERED
        ),
        math.inf,
    )
    plmn = next(
        (o.get("plmn") for o in ops if back_wall <= float(o["wall"]) < nxt and o.get("plmn")),
        None,
    )
    return out | {
        "status": "reattached",
        "registered_wall": round(back_wall, 6),
        "reattach_ms": round((back_wall - lost_wall) * 1000, 3),
        "stat": back["stat"],
        "stat_name": back.get("stat_name"),
        "plmn": plmn,
        "roaming": back["stat"] == 5,
    }


def _last_plmn(ops: Sequence[Mapping[str, Any]], before: float) -> str | None:
    found = [o.get("plmn") for o in ops if float(o["wall"]) <= before and o.get("plmn")]
    return str(found[-1]) if found else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def spread(values: Iterable[float]) -> dict[str, Any]:
    """n, min, p50, mean, p95, max, stdev of a figure over repetitions. Percentiles are
    nearest-rank (an observed value, as the MCPTT KPIs; with 20 repetitions p95 is the 19th
    smallest); stdev is the sample standard deviation (n - 1), ``null`` below 2 samples."""
    data = sorted(float(v) for v in values)
    n = len(data)
    if n == 0:
        return {"n": 0, "min": None, "p50": None, "mean": None, "p95": None, "max": None,
                "stdev": None}  # fmt: skip
    return {
        "n": n,
        "min": data[0],
        "p50": percentile(data, 50),
        "mean": round(statistics.fmean(data), 4),
        "p95": percentile(data, 95),
        "max": data[-1],
        "stdev": round(statistics.stdev(data), 4) if n > 1 else None,
    }


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest rank: the smallest value with at least ``pct`` % of the values at or below."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def statistic(values: Sequence[float], which: str) -> float:
    """One of :data:`STATISTICS` of a non-empty sample."""
    data = sorted(values)
    if which == "min":
        return data[0]
    if which == "max":
        return data[-1]
    if which == "mean":
        return statistics.fmean(data)
    return percentile(data, float(which[1:]))


def fault_windows(
    actions: Sequence[Mapping[str, Any]], ends: Mapping[tuple[int, int], float]
) -> list[dict[str, Any]]:
    """The faults among executed actions (``fault: true``), each with its window end: the
    next fault of the same (point, repetition) or that repetition's end (``ends``)."""
    faults = [a for a in actions if a.get("fault") and _number(a.get("wall"))]
    out = []
    for f in faults:
        key = (int(f.get("point", 0)), int(f["repetition"]))
        later = [
            float(g["wall"])
            for g in faults
            if (int(g.get("point", 0)), int(g["repetition"])) == key
            and float(g["wall"]) > float(f["wall"])
        ]
        end = min([*later, ends.get(key, math.inf)])
        out.append(
            {
                "point": key[0],
                "repetition": key[1],
                "index": int(f.get("index", 0)),
                "device": f.get("device"),
                "action": f.get("action"),
                "args": f.get("args", {}),
                "planned_at_s": f.get("planned_at_s"),
                "wall": float(f["wall"]),
                "window_end_wall": end,
            }
        )
    return out


def summarise(
    faults: Sequence[Mapping[str, Any]],
    streams: Mapping[tuple[int, int, int], Mapping[str, Mapping[str, Any]]],
    radios: Mapping[tuple[int, int, int], Mapping[str, Mapping[str, Any]]],
    points: int = 1,
) -> dict[str, Any]:
    """The ``failover`` block of summary.json. ``streams`` and ``radios`` map (point,
    repetition, timeline index) of a fault to {stream or radio: its result}. ``spread`` has
    one row per timeline fault, subject and figure, over the repetitions (per sweep point),
    with how many repetitions ended in each status (e.g. ``stayed_registered``)."""
    entries = []
    for f in faults:
        key = (f["point"], f["repetition"], f["index"])
        entry = {k: v for k, v in f.items() if k != "point" or points > 1}
        entry["window_end_wall"] = (
            None if math.isinf(f["window_end_wall"]) else round(f["window_end_wall"], 6)
        )
        entry["wall"] = round(f["wall"], 6)
        entry["streams"] = dict(streams.get(key, {}))
        entry["radios"] = dict(radios.get(key, {}))
        entries.append(entry)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for f, entry in zip(faults, entries, strict=True):
        for subject, figures, results in (
            ("stream", STREAM_FIGURES, entry["streams"]),
            ("radio", RADIO_FIGURES, entry["radios"]),
        ):
            for name, result in results.items():
                for figure in figures:
                    row = rows.setdefault(
                        (f["point"], f["index"], subject, name, figure),
                        {
                            **({"point": f["point"]} if points > 1 else {}),
                            "fault": f["index"],
                            "event": f"{f['device']}.{f['action']} at {f['planned_at_s']:g} s",
                            subject: name,
                            "figure": figure,
                            "values": [],
                            "not_recovered": 0,
                            "statuses": {},
                        },
                    )
                    value = result.get(figure)
                    if _number(value):
                        row["values"].append(value)
                    status = str(result.get("status"))
                    if status in ("not_recovered", "not_reattached"):
                        row["not_recovered"] += 1
                    row["statuses"][status] = row["statuses"].get(status, 0) + 1
    spread_rows = []
    for row in rows.values():
        values = row.pop("values")
        spread_rows.append(row | spread(values))
    return {
        "definitions": dict(DEFINITIONS),
        "threshold": f"max({THRESHOLD_INTERVALS} x packet interval, {THRESHOLD_FLOOR_MS:g} ms)",
        "clock": "CLOCK_REALTIME: receiver kernel stamps, controller and driver wall times",
        "faults": entries,
        "spread": spread_rows,
    }


def samples(
    block: Mapping[str, Any] | None, figure: str, subject: str, name: str
) -> tuple[list[float], list[str]]:
    """Every value of ``figure`` for one stream or radio over all faults and repetitions,
    and the reasons some fault gave no value where one was due (not recovered)."""
    values: list[float] = []
    problems: list[str] = []
    for entry in (block or {}).get("faults", []):
        result = entry.get("streams" if subject == "stream" else "radios", {}).get(name)
        if result is None:
            continue
        value = result.get(figure)
        where = f"repetition {entry.get('repetition')}, {entry.get('device')}.{entry.get('action')}"
        if _number(value):
            values.append(float(value))
        elif result.get("status") in ("not_recovered", "not_reattached"):
            problems.append(f"{where}: {result['status'].replace('_', ' ')}")
    return values, problems
