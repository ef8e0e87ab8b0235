"""Stream metrics checked against literal, per-packet readings of RFC 3550/4737/7679."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt
import pytest

from testbed.analysis.streams import (
    StreamAccumulator,
    StreamKeys,
    StreamMetrics,
    linear_recurrence,
    stream_metrics,
)
from testbed.errors import AnalysisError

T0_NS = 1_700_000_000_000_000_000  # an epoch in ns, so float rounding is realistic
MS = 1_000_000
I64 = npt.NDArray[np.int64]


# --------------------------------------------------------------------------------------------
# Independent reference: plain Python loops that follow the RFC text, no numpy.
# --------------------------------------------------------------------------------------------


@dataclass
class Ref:
    sent: int
    received: int
    loss_pct: float
    owd: list[float] | None  # min, p50, p95, p99, max, mean (ms)
    jitter_ms: float | None
    reordered: int
    duplicates: int
    max_gap_ms: float | None
    gap_start_s: float | None


def _percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method)."""
    h = (len(sorted_values) - 1) * p / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def reference(seq: list[int], tx: list[int], rx: list[int], sent: int) -> Ref:
    order = sorted(range(len(rx)), key=lambda i: rx[i])  # stable, like the spec asks
    seen: set[int] = set()
    duplicates = 0
    arrivals: list[tuple[int, int, int]] = []  # first copies (seq, tx, rx) in arrival order
    for i in order:
        if seq[i] in seen:
            duplicates += 1
            continue
        seen.add(seq[i])
        arrivals.append((seq[i], tx[i], rx[i]))
    received = len(seen)
    if sent == -1:
        sent = max(seen) + 1 if seen else 0
    loss = max(0.0, 100.0 * (sent - received) / sent) if sent > 0 else 0.0

    owd = None
    if arrivals:
        delays = sorted((r - t) / MS for _, t, r in arrivals)
        owd = [
            delays[0],
            _percentile(delays, 50),
            _percentile(delays, 95),
            _percentile(delays, 99),
            delays[-1],
            math.fsum(delays) / len(delays),
        ]

    # RFC 3550 section 6.4.1 / A.8.
    jitter = 0.0
    for (_, s_prev, r_prev), (_, s, r) in pairwise(arrivals):
        d = (r - r_prev) - (s - s_prev)
        jitter += (abs(d) - jitter) / 16.0

    # RFC 4737 section 3.3.
    reordered = 0
    next_exp = arrivals[0][0] if arrivals else 0
    for s, _, _ in arrivals:
        if s >= next_exp:
            next_exp = s + 1
        else:
            reordered += 1

    max_gap = None
    gap_start = None
    for (_, _, r_prev), (_, _, r) in pairwise(arrivals):
        if max_gap is None or r - r_prev > max_gap:
            max_gap = r - r_prev
            gap_start = r_prev

    enough = len(arrivals) >= 2
    return Ref(
        sent=sent,
        received=received,
        loss_pct=loss,
        owd=owd,
        jitter_ms=jitter / MS if enough else None,
        reordered=reordered,
        duplicates=duplicates,
        max_gap_ms=max_gap / MS if max_gap is not None else None,
        gap_start_s=gap_start / 1e9 if gap_start is not None else None,
    )


def assert_matches(m: StreamMetrics, ref: Ref) -> None:
    assert (m.sent, m.received, m.reordered, m.duplicates) == (
        ref.sent,
        ref.received,
        ref.reordered,
        ref.duplicates,
    )
    assert m.loss_pct == pytest.approx(ref.loss_pct, rel=1e-9, abs=1e-9)
    if ref.owd is None:
        assert m.owd_ms is None
    else:
        assert m.owd_ms is not None
        got = [m.owd_ms.min, m.owd_ms.p50, m.owd_ms.p95, m.owd_ms.p99, m.owd_ms.max, m.owd_ms.mean]
        assert got == pytest.approx(ref.owd, rel=1e-9, abs=1e-9)
    for name in ("jitter_ms", "max_gap_ms", "gap_start_s"):
        want = getattr(ref, name)
        got_value = getattr(m, name)
        if want is None:
            assert got_value is None, name
        else:
            assert got_value == pytest.approx(want, rel=1e-9, abs=1e-9), name


# --------------------------------------------------------------------------------------------
# Random streams
# --------------------------------------------------------------------------------------------


def random_stream(seed: int, n_sent: int) -> tuple[I64, I64, I64]:
    """A 50 pps stream with random delays, losses, duplicates and swaps, in arrival order."""
    rng = np.random.default_rng(seed)
    tx = T0_NS + np.arange(n_sent, dtype=np.int64) * 20 * MS + rng.integers(0, 500_000, n_sent)
    # Delay spread comparable to the packet interval, so packets overtake each other.
    delay = 5 * MS + rng.exponential(8 * MS, n_sent).astype(np.int64)
    rx = tx + delay
    seq = np.arange(n_sent, dtype=np.int64)
    keep = rng.random(n_sent) >= rng.uniform(0.0, 0.2)
    if n_sent > 100:  # a burst loss (outage) somewhere
        start = int(rng.integers(0, n_sent - 50))
        keep[start : start + int(rng.integers(1, 50))] = False
    seq, tx, rx = seq[keep], tx[keep], rx[keep]
    n_dup = int(rng.integers(0, max(1, seq.size // 10) + 1))
    if seq.size and n_dup:
        pick = rng.integers(0, seq.size, n_dup)
        seq = np.concatenate([seq, seq[pick]])
        tx = np.concatenate([tx, tx[pick]])
        rx = np.concatenate([rx, rx[pick] + rng.integers(-2 * MS, 60 * MS, n_dup)])
    order = np.argsort(rx, kind="stable")
    seq, tx, rx = seq[order], tx[order], rx[order]
    # Random adjacent swaps of who arrived in which receive slot.
    for i in rng.integers(0, max(1, seq.size - 1), seq.size // 20):
        if i + 1 < seq.size:
            seq[[i, i + 1]] = seq[[i + 1, i]]
            tx[[i, i + 1]] = tx[[i + 1, i]]
    return seq, tx, rx


def run_both(seq: I64, tx: I64, rx: I64, sent: int) -> tuple[StreamMetrics, Ref]:
    m = stream_metrics("s1", "voice", seq.astype(np.uint32), tx, rx, sent)
    ref = reference([int(v) for v in seq], [int(v) for v in tx], [int(v) for v in rx], sent)
    return m, ref


@pytest.mark.parametrize("n_sent", [1, 2, 3, 17, 1_000, 30_000])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_streams_match_reference(seed: int, n_sent: int) -> None:
    seq, tx, rx = random_stream(seed, n_sent)
    m, ref = run_both(seq, tx, rx, n_sent)
    assert_matches(m, ref)
    if n_sent >= 1_000:  # the generator really exercises every metric
        assert m.reordered > 0 and m.duplicates > 0 and m.loss_pct > 0


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_random_streams_unknown_sent(seed: int) -> None:
    seq, tx, rx = random_stream(seed, 2_000)
    m, ref = run_both(seq, tx, rx, -1)
    assert_matches(m, ref)
    assert m.sent == int(seq.max()) + 1


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_unsorted_rx_is_sorted_stably_first(seed: int) -> None:
    seq, tx, rx = random_stream(seed, 3_000)
    perm = np.random.default_rng(seed).permutation(seq.size)
    m, ref = run_both(seq[perm], tx[perm], rx[perm], 3_000)
    assert_matches(m, ref)
    sorted_m, _ = run_both(seq, tx, rx, 3_000)
    if np.unique(rx).size == rx.size:  # without ties, the input order cannot matter
        assert m == sorted_m


# --------------------------------------------------------------------------------------------
# Hand-written cases with known answers
# --------------------------------------------------------------------------------------------


def metrics_for(
    seqs: list[int], delays_ms: list[float] | None = None, sent: int = -1, interval_ms: int = 20
) -> StreamMetrics:
    """Packets sent every ``interval_ms`` in seq order, arriving in the listed order."""
    n = len(seqs)
    seq = np.array(seqs, dtype=np.uint32)
    tx = T0_NS + seq.astype(np.int64) * interval_ms * MS
    rx = T0_NS + np.arange(n, dtype=np.int64) * interval_ms * MS + 10 * MS
    if delays_ms is not None:
        rx = tx + (np.array(delays_ms) * MS).astype(np.int64)
    return stream_metrics("s", "data", seq, tx, rx, sent)


@pytest.mark.parametrize(
    ("arrival", "reordered"),
    [
        ([0, 1, 2, 3, 4], 0),
        ([0, 1, 3, 2, 4], 1),
        ([0, 2, 1], 1),
        ([0, 2, 1, 3], 1),
        ([3, 0, 1, 2], 3),  # NextExp jumps to 4: all three late packets are reordered
        ([0, 3, 1, 2, 4], 2),
        ([1, 0], 1),
        ([4, 3, 2, 1, 0], 4),
    ],
)
def test_rfc4737_reordering(arrival: list[int], reordered: int) -> None:
    m = metrics_for(arrival)
    assert m.reordered == reordered
    assert m.duplicates == 0
    assert m.received == len(arrival)


def test_duplicates_are_not_reordered_and_first_copy_counts() -> None:
    seq = np.array([0, 1, 2, 0, 3, 3], dtype=np.uint32)
    tx = T0_NS + np.array([0, 20, 40, 0, 60, 60], dtype=np.int64) * MS
    rx = T0_NS + np.array([10, 30, 50, 500, 70, 900], dtype=np.int64) * MS
    m = stream_metrics("s", "voice", seq, tx, rx, 4)
    assert (m.received, m.duplicates, m.reordered, m.loss_pct) == (4, 2, 0, 0.0)
    assert m.owd_ms is not None
    assert m.owd_ms.max == pytest.approx(10.0)  # the late copies do not count
    assert m.max_gap_ms == pytest.approx(20.0)


def test_two_second_outage_at_50_pps() -> None:
    n = 500  # 10 s at 50 pps
    seq = np.arange(n, dtype=np.uint32)
    tx = T0_NS + seq.astype(np.int64) * 20 * MS
    lost = (seq >= 250) & (seq < 350)  # 100 packets = 2 s of silence
    rx = tx + 30 * MS
    m = stream_metrics("ptt", "voice", seq[~lost], tx[~lost], rx[~lost], n)
    assert m.loss_pct == pytest.approx(20.0)
    assert m.max_gap_ms == pytest.approx(2020.0)
    assert m.gap_start_s == pytest.approx((T0_NS + 249 * 20 * MS + 30 * MS) / 1e9)
    assert m.jitter_ms == 0.0
    assert m.reordered == 0


def test_constant_delay_has_zero_jitter() -> None:
    m = metrics_for(list(range(100)), delays_ms=[42.0] * 100, sent=100)
    assert m.jitter_ms == 0.0
    assert m.owd_ms is not None
    assert (m.owd_ms.min, m.owd_ms.p50, m.owd_ms.p99, m.owd_ms.max, m.owd_ms.mean) == (
        42.0,
        42.0,
        42.0,
        42.0,
        42.0,
    )
    assert m.loss_pct == 0.0


def test_jitter_known_values() -> None:
    # D = 1 ms then 0 ms: J = 1/16, then J * 15/16.
    m = metrics_for([0, 1, 2], delays_ms=[10.0, 11.0, 11.0])
    assert m.jitter_ms == pytest.approx(0.0625 * 15 / 16)
    # RFC 3550 uses arrival order, not sequence order. tx = 0, 20, 10 ms and rx = 10, 30, 41 ms
    # give D = 0 then 21 ms, so J = 21/16 (sequence order would give D = 21 then -21 ms).
    m = metrics_for([0, 2, 1], delays_ms=[10.0, 10.0, 31.0], interval_ms=10)
    assert m.jitter_ms == pytest.approx(21.0 / 16)


def test_owd_percentiles_linear() -> None:
    m = metrics_for(list(range(5)), delays_ms=[1.0, 2.0, 3.0, 4.0, 100.0])
    assert m.owd_ms is not None
    assert m.owd_ms.p50 == pytest.approx(3.0)
    assert m.owd_ms.p95 == pytest.approx(4.0 + 0.8 * 96.0)
    assert m.owd_ms.mean == pytest.approx(22.0)


def test_loss_and_sent() -> None:
    assert metrics_for([0, 1, 2, 4], sent=-1).sent == 5
    assert metrics_for([0, 1, 2, 4], sent=-1).loss_pct == pytest.approx(20.0)
    assert metrics_for([0, 1, 2, 4], sent=10).loss_pct == pytest.approx(60.0)
    # The sender under-reporting must not give negative loss.
    assert metrics_for([0, 1, 2, 4], sent=2).loss_pct == 0.0


def test_single_packet() -> None:
    m = metrics_for([7], sent=-1)
    assert (m.sent, m.received, m.reordered, m.duplicates) == (8, 1, 0, 0)
    assert m.owd_ms is not None and m.owd_ms.p50 == pytest.approx(10.0 - 7 * 20.0)
    assert m.jitter_ms is None and m.max_gap_ms is None and m.gap_start_s is None


@pytest.mark.parametrize(("sent", "loss"), [(10, 100.0), (0, 0.0), (-1, 0.0)])
def test_empty_stream(sent: int, loss: float) -> None:
    empty = np.zeros(0, dtype=np.int64)
    m = stream_metrics("s", "voice", empty.astype(np.uint32), empty, empty, sent)
    assert m.received == 0 and m.duplicates == 0 and m.reordered == 0
    assert m.sent == max(sent, 0)
    assert m.loss_pct == loss
    assert m.owd_ms is None and m.jitter_ms is None
    assert m.max_gap_ms is None and m.gap_start_s is None
    assert json.loads(json.dumps(m.to_dict()))["owd_ms"] is None


def test_empty_python_lists_are_accepted() -> None:
    assert stream_metrics("s", "voice", [], [], [], 5).loss_pct == 100.0


# --------------------------------------------------------------------------------------------
# Validation and output
# --------------------------------------------------------------------------------------------


def test_mismatched_lengths() -> None:
    a = np.arange(3, dtype=np.int64)
    with pytest.raises(AnalysisError, match="same length"):
        stream_metrics("s", "voice", a.astype(np.uint32), a, a[:2], 3)
    with pytest.raises(AnalysisError, match="same length"):
        stream_metrics("s", "voice", a[:1].astype(np.uint32), a, a, 3)


@pytest.mark.parametrize(
    ("seq", "tx", "sent", "match"),
    [
        (np.zeros((2, 2), dtype=np.uint32), np.zeros((2, 2), dtype=np.int64), 4, "1-D"),
        (np.zeros(2, dtype=np.uint32), np.zeros(2, dtype=np.float64), 2, "integers"),
        (np.array([0, -1]), np.zeros(2, dtype=np.int64), 2, "negative"),
        (np.zeros(2, dtype=np.uint32), np.zeros(2, dtype=np.int64), -2, "sent"),
    ],
)
def test_invalid_inputs(
    seq: npt.NDArray[np.generic], tx: npt.NDArray[np.generic], sent: int, match: str
) -> None:
    with pytest.raises(AnalysisError, match=match):
        stream_metrics("s", "voice", seq, tx, np.zeros_like(tx, dtype=np.int64), sent)


def test_to_dict_is_json_ready_and_rounded() -> None:
    m = metrics_for([0, 2, 1, 3], delays_ms=[10.123456789, 11.0, 12.0, 13.0])
    d = m.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert list(d) == [
        "id",
        "kind",
        "sent",
        "received",
        "loss_pct",
        "owd_ms",
        "jitter_ms",
        "reordered",
        "duplicates",
        "max_gap_ms",
        "gap_start_s",
    ]
    owd = d["owd_ms"]
    assert isinstance(owd, dict)
    assert list(owd) == ["min", "p50", "p95", "p99", "max", "mean"]
    assert owd["min"] == 10.1235
    assert all(type(v) is float for v in owd.values())
    assert type(d["sent"]) is int and type(d["reordered"]) is int
    assert d["gap_start_s"] == round(m.gap_start_s or 0.0, 6)


def test_one_million_packets_is_fast() -> None:
    seq, tx, rx = random_stream(99, 1_000_000)
    start = time.perf_counter()
    m = stream_metrics("big", "video", seq.astype(np.uint32), tx, rx, 1_000_000)
    assert time.perf_counter() - start < 5.0
    assert m.received > 700_000 and m.jitter_ms is not None


# --------------------------------------------------------------------------------------------
# Streaming form: many streams, chunk by chunk, bounded memory
# --------------------------------------------------------------------------------------------


def test_linear_recurrence_is_the_sequential_loop() -> None:
    rng = np.random.default_rng(5)
    for n in (0, 1, 31, 32, 33, 1_000, 100_003):
        a = rng.choice([15 / 16, 1.0, 0.0, 0.5], size=n, p=[0.8, 0.1, 0.05, 0.05])
        b = rng.exponential(3.0, size=n) * (a != 1.0)
        got = linear_recurrence(a, b)
        y = 0.0
        want = []
        for ai, bi in zip(a.tolist(), b.tolist(), strict=True):
            y = ai * y + bi
            want.append(y)
        assert got.shape == (n,)
        assert np.allclose(got, want, rtol=1e-12, atol=1e-12)


def feed(
    streams: list[tuple[I64, I64, I64]],
    chunk: int,
    window_bits: int = 1 << 16,
    keep_delays: bool = True,
) -> tuple[StreamAccumulator, list[int]]:
    """The streams merged in arrival order, as a capture holds them, fed ``chunk`` rows at a
    time; also the id the accumulator gave each stream (in order of first appearance)."""
    ident = np.concatenate([np.full(s[0].size, k) for k, s in enumerate(streams)])
    seq, tx, rx = (np.concatenate([s[i] for s in streams]) for i in range(3))
    first = np.array([0] + [s[0].size for s in streams]).cumsum()[:-1]
    rank = np.zeros(rx.size, dtype=np.int64)
    rank[first] = 1  # each stream's first packet before any other at the same stamp
    order = np.lexsort((-rank, rx))
    ident, seq, tx, rx = ident[order], seq[order], tx[order], rx[order]
    acc = StreamAccumulator(window_bits=window_bits, keep_delays=keep_delays)
    keys = StreamKeys()
    for lo in range(0, rx.size, chunk):
        part = slice(lo, lo + chunk)
        k1 = ident[part].astype(np.uint64)
        segs = keys.segments(k1, np.zeros_like(k1))
        o = segs.order
        acc.add(segs, seq[part][o], tx[part][o], rx[part][o])
    return acc, [keys.key1.index(k) for k in range(len(streams))]


@pytest.mark.parametrize("chunk", [1, 7, 500, 1_000_000])
@pytest.mark.parametrize("window_bits", [128, 1 << 16])
def test_accumulator_matches_stream_metrics_in_any_chunks(chunk: int, window_bits: int) -> None:
    """Three interleaved streams; the smallest window (128 numbers) still holds every packet
    these streams reorder or duplicate, so the duplicate detection stays exact."""
    streams = [random_stream(seed, n) for seed, n in ((30, 3_000), (31, 1), (32, 5_000))]
    acc, ids = feed(streams, chunk, window_bits)
    for k, (seq, tx, rx) in enumerate(streams):
        got = acc.metrics(ids[k], f"s{k}", "voice", sent=-1)
        assert_matches(got, reference(seq.tolist(), tx.tolist(), rx.tolist(), -1))
        whole = stream_metrics(f"s{k}", "voice", seq, tx, rx, -1)
        assert got.to_dict() | {"jitter_ms": None} == whole.to_dict() | {"jitter_ms": None}
    assert acc.window_misses.sum() == 0


def test_streamed_jitter_agrees_with_the_sequential_loop() -> None:
    seq, tx, rx = random_stream(99, 1_000_000)
    acc, _ = feed([(seq, tx, rx)], 65_536, keep_delays=False)
    firsts = np.sort(np.unique(seq, return_index=True)[1])
    d = np.abs(np.diff(rx[firsts]) - np.diff(tx[firsts])).tolist()
    j = 0.0
    for value in d:
        j += (value - j) / 16.0
    got = acc.metrics(0, "big", "video", sent=-1).jitter_ms
    assert got is not None and abs(got - j / MS) < 1e-9


def test_duplicate_window_is_bounded_and_counts_what_falls_behind_it() -> None:
    seq = np.concatenate([np.arange(1_000), [10, 990]])  # 10 is 989 behind: outside 128 bits
    tx = T0_NS + seq * 20 * MS
    rx = T0_NS + np.arange(seq.size) * 20 * MS + 5 * MS
    acc, _ = feed([(seq, tx, rx)], 100, window_bits=128)
    m = acc.metrics(0, "s", "voice", sent=-1)
    assert int(acc.window_misses[0]) == 1
    assert (m.duplicates, m.received, m.reordered) == (1, 1_001, 1)  # 10 taken as new
    wide = feed([(seq, tx, rx)], 100)[0].metrics(0, "s", "voice", sent=-1)
    assert (wide.duplicates, wide.received, wide.reordered) == (2, 1_000, 0)


def test_accumulator_memory_does_not_grow_with_packets() -> None:
    seq, tx, rx = random_stream(7, 300_000)
    acc, ids = feed([(seq, tx, rx), random_stream(8, 1_000)], 10_000, keep_delays=False)
    state = sum(v.nbytes for v in vars(acc).values() if isinstance(v, np.ndarray))
    assert state < 32 * 1024, state  # two 8 KiB windows and a few numbers per stream
    assert acc.metrics(ids[0], "s", "voice", sent=-1).received == np.unique(seq).size
