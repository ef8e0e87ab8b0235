"""Per-stream packet metrics (loss, one-way delay, jitter, reordering, gaps) from a packet table.

The input is what a receiver saw for one stream -- sequence number, sender transmit stamp and
kernel receive stamp per arriving packet -- and the output is one :class:`StreamMetrics`
following the IETF definitions (RFC 7679 one-way delay, RFC 3550 interarrival jitter, RFC 4737
reordering) so that figures are comparable with other tools and labs. Everything is vectorised
with numpy because a single MCPTT/TETRA soak stream easily reaches millions of packets.

:class:`StreamAccumulator` computes the same metrics for many streams at once from chunks of
packets (a capture read in pieces), carrying per-stream state from chunk to chunk instead of
keeping the packets; :func:`linear_recurrence` runs the RFC 3550 jitter filter for all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from testbed.errors import AnalysisError

__all__ = [
    "NO_STREAM",
    "DelayStats",
    "Segments",
    "StreamAccumulator",
    "StreamKeys",
    "StreamMetrics",
    "linear_recurrence",
    "stream_metrics",
]

_NS_PER_MS = 1_000_000.0
_NS_PER_S = 1_000_000_000.0
# Rounding for JSON output: 4 decimals of a millisecond is 0.1 us; epoch seconds get 6
# decimals so that they keep the same microsecond-level resolution.
_MS_DECIMALS = 4
_S_DECIMALS = 6
# RFC 3550 section 6.4.1: J += (|D| - J) / 16.
_JITTER_GAIN = 1.0 / 16.0


def _round(value: float | None, decimals: int = _MS_DECIMALS) -> float | None:
    return None if value is None else round(value, decimals)


@dataclass(frozen=True)
class DelayStats:
    """Distribution summary of one-way delays (RFC 7679), all in milliseconds."""

    min: float
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, owd_ms: npt.NDArray[np.float64]) -> DelayStats:
        """The summary of a non-empty array of delays in ms."""
        p50, p95, p99 = (float(v) for v in np.percentile(owd_ms, [50.0, 95.0, 99.0]))
        return cls(
            min=float(owd_ms.min()),
            p50=p50,
            p95=p95,
            p99=p99,
            max=float(owd_ms.max()),
            mean=float(owd_ms.mean()),
        )

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form, rounded to 4 decimals (0.1 us)."""
        return {key: round(value, _MS_DECIMALS) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class StreamMetrics:
    """Metrics of one received stream; see :func:`stream_metrics` for the definitions."""

    id: str
    kind: str
    sent: int
    received: int
    loss_pct: float
    owd_ms: DelayStats | None
    jitter_ms: float | None
    reordered: int
    duplicates: int
    max_gap_ms: float | None
    gap_start_s: float | None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: plain Python types, ``None`` kept, floats rounded.

        Millisecond and percentage values are rounded to 4 decimals (0.1 us);
        ``gap_start_s`` (epoch seconds) to 6 decimals, i.e. the same microsecond resolution.
        """
        return {
            "id": self.id,
            "kind": self.kind,
            "sent": self.sent,
            "received": self.received,
            "loss_pct": round(self.loss_pct, _MS_DECIMALS),
            "owd_ms": None if self.owd_ms is None else self.owd_ms.to_dict(),
            "jitter_ms": _round(self.jitter_ms),
            "reordered": self.reordered,
            "duplicates": self.duplicates,
            "max_gap_ms": _round(self.max_gap_ms),
            "gap_start_s": _round(self.gap_start_s, _S_DECIMALS),
        }


def _as_int_array(name: str, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Check one input column and widen it to int64 (so ``seq + 1`` cannot wrap)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise AnalysisError(f"{name} must be a 1-D array, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise AnalysisError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _interarrival_jitter_ns(rx: npt.NDArray[np.int64], tx: npt.NDArray[np.int64]) -> float:
    """Final RFC 3550 (section 6.4.1, appendix A.8) interarrival jitter, in ns.

    The recurrence ``J_i = J_{i-1} + (|D_i| - J_{i-1})/16`` with ``J_0 = 0`` is a first-order
    linear filter, so its final value is the closed form
    ``J_m = sum_k (1/16) * (15/16)**(m-k) * |D_k|`` -- one weighted sum instead of a Python
    loop. ``D`` is taken between consecutive packets in arrival order (not sequence order),
    as the RFC prescribes; transmit stamps in ns stand in for RTP timestamps, which is
    equivalent up to timestamp quantisation. The differences are exact in int64.
    """
    d = np.abs(np.diff(rx) - np.diff(tx)).astype(np.float64)
    exponents = np.arange(d.size - 1, -1, -1, dtype=np.float64)
    with np.errstate(under="ignore"):  # old terms decay to 0: that is the intended filter
        weights = _JITTER_GAIN * np.power(1.0 - _JITTER_GAIN, exponents)
        return float(np.dot(weights, d))


def stream_metrics(
    stream_id: str,
    kind: str,
    seq: npt.ArrayLike,
    tx_ns: npt.ArrayLike,
    rx_ns: npt.ArrayLike,
    sent: int,
    sent_window_ns: tuple[int, int] | None = None,
) -> StreamMetrics:
    """Compute the metrics of one stream from its received packets.

    ``seq`` (sequence numbers, 0 for the first packet sent), ``tx_ns`` (sender stamp, ns since
    epoch) and ``rx_ns`` (kernel receive stamp, ns since epoch) are parallel integer arrays in
    arrival order; if ``rx_ns`` is not sorted they are stably re-sorted by it, since the kernel
    stamp is the ground truth of arrival. ``sent`` is the sender's packet count, or ``-1`` when
    unknown, in which case ``max(seq) + 1`` is assumed (trailing losses are then invisible).
    Sequence numbers are taken as not wrapping (2**32 packets is far beyond any run).

    Definitions:

    * received: distinct sequence numbers; duplicates: arrivals whose seq was already seen
      (only the first copy counts for everything below, as RFC 4737 section 2.2 requires);
      ``loss_pct = 100 * (sent - received) / sent``, clamped at 0, 0 when ``sent == 0``.
    * ``owd_ms``: RFC 7679 one-way delay ``rx - tx`` of each first copy; percentiles use
      numpy's default linear interpolation. ``None`` when nothing was received.
    * ``jitter_ms``: final RFC 3550 section 6.4.1 interarrival jitter over first copies in
      arrival order. ``None`` with fewer than two packets (no interarrival pair to measure).
    * ``reordered``: RFC 4737 section 3.3 Type-P-Reordered count. NextExp starts at the first
      seq and becomes ``s + 1`` whenever ``s >= NextExp``, so before packet ``i`` it equals
      ``max(seq[:i]) + 1``; packet ``i`` is therefore reordered iff ``seq[i] < max(seq[:i]) + 1``
      (a running maximum).
    * ``max_gap_ms``: longest interval between consecutive receptions of distinct packets (the
      service interruption a user hears); ``gap_start_s`` is the receive time, in epoch
      seconds, of the packet just before it (the first one if several gaps tie). Both ``None``
      with fewer than two packets. With ``sent_window_ns`` (the sender's first and last
      transmit times) the gaps before the first and after the last arrival count too, each
      measured against the expected arrival (transmit time + median one-way delay).

    Raises :class:`~testbed.errors.AnalysisError` when the arrays differ in length, are not
    1-D integer arrays, hold negative sequence numbers, or ``sent`` is below -1.
    """
    seq_a = _as_int_array("seq", seq)
    tx_a = _as_int_array("tx_ns", tx_ns)
    rx_a = _as_int_array("rx_ns", rx_ns)
    if not seq_a.size == tx_a.size == rx_a.size:
        raise AnalysisError(
            f"stream {stream_id!r}: seq, tx_ns and rx_ns must have the same length, "
            f"got {seq_a.size}, {tx_a.size} and {rx_a.size}"
        )
    if sent < -1:
        raise AnalysisError(f"stream {stream_id!r}: sent must be >= 0 or -1 (unknown), got {sent}")
    if seq_a.size and int(seq_a.min()) < 0:
        raise AnalysisError(f"stream {stream_id!r}: negative sequence number in seq")

    if seq_a.size > 1 and bool(np.any(rx_a[1:] < rx_a[:-1])):
        order = np.argsort(rx_a, kind="stable")
        seq_a, tx_a, rx_a = seq_a[order], tx_a[order], rx_a[order]

    # First copy of each sequence number, kept in arrival order. np.unique's return_index
    # gives the first occurrence of each value.
    _, first_idx = np.unique(seq_a, return_index=True)
    first_idx.sort()
    seq_u, tx_u, rx_u = seq_a[first_idx], tx_a[first_idx], rx_a[first_idx]
    received = int(seq_u.size)
    duplicates = int(seq_a.size) - received

    if sent == -1:
        sent = int(seq_u.max()) + 1 if received else 0
    loss_pct = max(0.0, 100.0 * (sent - received) / sent) if sent > 0 else 0.0

    owd: DelayStats | None = None
    jitter_ms: float | None = None
    reordered = 0
    max_gap_ms: float | None = None
    gap_start_s: float | None = None

    if received:
        owd = DelayStats.of((rx_u - tx_u).astype(np.float64) / _NS_PER_MS)
    if received >= 2:
        jitter_ms = _interarrival_jitter_ns(rx_u, tx_u) / _NS_PER_MS
        running_max = np.maximum.accumulate(seq_u)[:-1]
        reordered = int(np.count_nonzero(seq_u[1:] < running_max + 1))
        gaps = np.diff(rx_u)
        i = int(np.argmax(gaps))
        max_gap_ms = float(gaps[i]) / _NS_PER_MS
        gap_start_s = float(rx_u[i]) / _NS_PER_S
    if sent_window_ns is not None and received:
        # Losses at the ends of the stream are gaps too: a stream that never recovers from
        # an outage has its longest gap from its last arrival to its expected end.
        assert owd is not None
        median_ns = owd.p50 * _NS_PER_MS
        head_ms = (float(rx_u[0]) - (sent_window_ns[0] + median_ns)) / _NS_PER_MS
        tail_ms = (sent_window_ns[1] + median_ns - float(rx_u[-1])) / _NS_PER_MS
        if head_ms > (max_gap_ms or 0.0):
            max_gap_ms, gap_start_s = head_ms, sent_window_ns[0] / _NS_PER_S
        if tail_ms > (max_gap_ms or 0.0):
            max_gap_ms, gap_start_s = tail_ms, float(rx_u[-1]) / _NS_PER_S
    elif sent_window_ns is not None and sent > 0:
        max_gap_ms = (sent_window_ns[1] - sent_window_ns[0]) / _NS_PER_MS
        gap_start_s = sent_window_ns[0] / _NS_PER_S

    return StreamMetrics(
        id=stream_id,
        kind=kind,
        sent=sent,
        received=received,
        loss_pct=loss_pct,
        owd_ms=owd,
        jitter_ms=jitter_ms,
        reordered=reordered,
        duplicates=duplicates,
        max_gap_ms=max_gap_ms,
        gap_start_s=gap_start_s,
    )


# ------------------------------------------------------------------------------------------------
# Streaming form: the same metrics for many streams at once, from chunks of packets, in O(streams)
# memory (plus the delay samples that percentiles need).
# ------------------------------------------------------------------------------------------------

_I64 = npt.NDArray[np.int64]
_U64 = npt.NDArray[np.uint64]
_F64 = npt.NDArray[np.float64]
_Bool = npt.NDArray[np.bool_]
_I64_MIN = np.iinfo(np.int64).min
_I32 = np.iinfo(np.int32)
# Width of the blocks of :func:`linear_recurrence` (columns walked one by one).
_SCAN_WIDTH = 32


def linear_recurrence(a: _F64, b: _F64) -> _F64:
    """All values of ``y[i] = a[i] * y[i-1] + b[i]`` with ``y[-1] = 0``, for ``0 <= a <= 1`` and
    ``b >= 0``; ``a[i] = 0`` restarts the recurrence, so many streams laid end to end are one call.

    This is the RFC 3550 jitter filter ``J += (|D| - J) / 16`` (``a = 15/16``, ``b = |D|/16``) and
    a running mean, made vectorised without the precision loss of the closed form (cumulative
    products of ``a`` underflow and their quotients cancel): the values are laid out in rows of
    ``_SCAN_WIDTH``, each row is filtered from zero by walking its columns (one vector operation
    per column for all rows at once), and the value carried into each row -- itself the same
    recurrence over rows, one level down -- is added back times the row's running product of
    ``a``. Every term is a product and sum of non-negative numbers, so the result agrees with the
    sequential loop to a few units in the last place.
    """
    n = a.size
    if n <= _SCAN_WIDTH:
        out = np.empty(n, dtype=np.float64)
        acc = 0.0
        for i, (ai, bi) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
            acc = ai * acc + bi
            out[i] = acc
        return out
    width = _SCAN_WIDTH
    rows = -(-n // width)
    grid_a = np.ones(rows * width, dtype=np.float64)
    grid_b = np.zeros(rows * width, dtype=np.float64)
    grid_a[:n] = a
    grid_b[:n] = b
    # Column-major: column c of every row is one contiguous vector.
    col_a = np.ascontiguousarray(grid_a.reshape(rows, width).T)
    col_b = np.ascontiguousarray(grid_b.reshape(rows, width).T)
    y = np.empty((width, rows), dtype=np.float64)
    p = np.empty((width, rows), dtype=np.float64)
    y[0] = col_b[0]
    p[0] = col_a[0]
    for c in range(1, width):
        np.multiply(col_a[c], y[c - 1], out=y[c])
        y[c] += col_b[c]
        np.multiply(col_a[c], p[c - 1], out=p[c])
    carry = np.zeros(rows, dtype=np.float64)
    carry[1:] = linear_recurrence(p[-1, :-1], y[-1, :-1])
    y += p * carry
    out_all: _F64 = y.T.reshape(-1)[:n]
    return out_all


@dataclass(frozen=True)
class Segments:
    """The rows of one chunk grouped by stream.

    ``order`` puts the chunk's rows in stream order, keeping capture order inside each stream;
    in that order, run ``r`` (one stream's rows in this chunk) spans ``starts[r]:ends[r]``,
    ``run[i]`` is the run of row ``i``, ``gid[r]`` the stream's id (numbered from 0 in order of
    first appearance) and ``new[r]`` whether the stream first appears in this chunk.
    """

    order: _I64
    starts: _I64
    ends: _I64
    run: _I64
    gid: _I64
    new: _Bool

    @property
    def lengths(self) -> _I64:
        lengths: _I64 = self.ends - self.starts
        return lengths

    def first_rows(self) -> _Bool:
        """True at the first row of each run."""
        first = np.zeros(self.run.size, dtype=np.bool_)
        first[self.starts] = True
        return first

    def prev(self, values: npt.NDArray[Any], carry: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Each row's predecessor in its stream: the previous row of its run, or ``carry[r]``
        (the stream's last value from earlier chunks) for the first row of run ``r``."""
        out = np.empty_like(values)
        out[1:] = values[:-1]
        out[self.starts] = carry
        return out

    def cumsum(self, values: _I64) -> _I64:
        """Cumulative sums restarting at each run (exact in int64)."""
        total = np.cumsum(values)
        base = total[self.starts] - values[self.starts]
        out: _I64 = total - base[self.run]
        return out

    def fill_index(self, flag: _Bool) -> tuple[_I64, _Bool]:
        """For each row, the index of the last row at or before it in its run with ``flag``
        set, and whether there is one (else the stream's state from earlier chunks applies)."""
        last = np.maximum.accumulate(np.where(flag, np.arange(flag.size), -1))
        found = last >= self.starts[self.run]
        return np.maximum(last, 0), found

    def cummax(self, values: _I64) -> _I64:
        """Running maximum restarting at each run (exact in int64)."""
        if values.size == 0:
            return values.copy()
        low = np.minimum.reduceat(values, self.starts)
        high = np.maximum.reduceat(values, self.starts)
        span = int((high - low).max()) + 1
        if span * self.starts.size < (1 << 62):
            # Lift each run above all earlier ones; one running maximum then serves them all.
            lift = self.run * span - low[self.run]
            out: _I64 = np.maximum.accumulate(values + lift) - lift
            return out
        out = np.empty_like(values)
        for a, b in zip(self.starts.tolist(), self.ends.tolist(), strict=True):
            out[a:b] = np.maximum.accumulate(values[a:b])
        return out


#: :meth:`StreamKeys.find` for a key never seen.
NO_STREAM = _I64_MIN


class StreamKeys:
    """Numbers streams identified by two 64-bit keys, in order of first appearance, across
    chunks. :meth:`segments` groups one chunk's rows by stream with a single stable sort, and
    each run's key is found by a binary search of the sorted 64-bit hashes of the keys entered
    so far, checked against the keys themselves (so a hash collision costs time, never a
    wrong stream) -- no Python object per stream. An entry's id may also be negative (not
    :data:`NO_STREAM`): a caller's mark for a key it holds back."""

    def __init__(self) -> None:
        self._hash = np.zeros(0, dtype=np.uint64)  # sorted
        self._entry = np.zeros(0, dtype=np.int64)  # entry number of each hash
        self._key1 = np.zeros(0, dtype=np.uint64)  # by entry number
        self._key2 = np.zeros(0, dtype=np.uint64)
        self._id = np.zeros(0, dtype=np.int64)
        self._entries = 0
        self.key1: list[int] = []  # by stream id
        self.key2: list[int] = []

    def __len__(self) -> int:
        return len(self.key1)

    @staticmethod
    def _mix(key1: _U64, key2: _U64) -> _U64:
        h = key1 * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
        h += key2 * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= h >> np.uint64(32)
        return h

    def find(self, key1: _U64, key2: _U64) -> tuple[_I64, _I64]:
        """The id of each key (:data:`NO_STREAM` if not entered) and its entry (-1 if not)."""
        ids = np.full(key1.size, NO_STREAM, dtype=np.int64)
        entries = np.full(key1.size, -1, dtype=np.int64)
        if not self._hash.size or not key1.size:
            return ids, entries
        h = self._mix(key1, key2)
        pos = np.searchsorted(self._hash, h)
        at = np.minimum(pos, self._hash.size - 1)
        same_hash = self._hash[at] == h
        cand = self._entry[at]
        hit = same_hash & (self._key1[cand] == key1) & (self._key2[cand] == key2)
        for i in np.flatnonzero(same_hash & ~hit).tolist():  # a collision: look further
            j = int(pos[i])
            while j < self._hash.size and self._hash[j] == h[i]:
                e = int(self._entry[j])
                if self._key1[e] == key1[i] and self._key2[e] == key2[i]:
                    cand[i] = e
                    hit[i] = True
                    break
                j += 1
        entries[hit] = cand[hit]
        ids[hit] = self._id[cand[hit]]
        return ids, entries

    def put(self, key1: _U64, key2: _U64, ids: _I64) -> _I64:
        """Enter keys not entered yet (distinct) with their ids; returns their entries."""
        n = key1.size
        first = self._entries
        size = first + n
        self._key1 = _grown(self._key1, size, 0)
        self._key2 = _grown(self._key2, size, 0)
        self._id = _grown(self._id, size, 0)
        self._key1[first:size] = key1
        self._key2[first:size] = key2
        self._id[first:size] = ids
        self._entries = size
        h = self._mix(key1, key2)
        o = np.argsort(h)
        pos = np.searchsorted(self._hash, h[o])
        entries = np.arange(first, size, dtype=np.int64)
        self._hash = np.insert(self._hash, pos, h[o])
        self._entry = np.insert(self._entry, pos, entries[o])
        return entries

    def relabel(self, entries: _I64, ids: _I64) -> None:
        """Give entered keys new ids."""
        self._id[entries] = ids

    def number(self, key1: _U64, key2: _U64) -> _I64:
        """Ids for new streams, numbered on from the last."""
        first = len(self.key1)
        self.key1.extend(key1.tolist())
        self.key2.extend(key2.tolist())
        return np.arange(first, len(self.key1), dtype=np.int64)

    @staticmethod
    def group(key1: _U64, key2: _U64) -> tuple[_I64, _I64, _I64]:
        """Rows in stream order (capture order kept inside each stream), and the first and
        end row of each stream's run in that order."""
        order = np.lexsort((key2, key1))
        k1, k2 = key1[order], key2[order]
        n = order.size
        change = np.ones(n, dtype=np.bool_)
        change[1:] = (k1[1:] != k1[:-1]) | (k2[1:] != k2[:-1])
        starts = np.flatnonzero(change)
        return order, starts, np.append(starts[1:], n)

    def segments(self, key1: _U64, key2: _U64) -> Segments:
        """Group one chunk's rows by stream; streams not seen before get ids."""
        order, starts, ends = self.group(key1, key2)
        k1, k2 = key1[order[starts]], key2[order[starts]]
        gid, _ = self.find(k1, k2)
        new = gid == NO_STREAM
        if new.any():
            gid[new] = self.number(k1[new], k2[new])
            self.put(k1[new], k2[new], gid[new])
        run = np.repeat(np.arange(starts.size), ends - starts)
        return Segments(order=order, starts=starts, ends=ends, run=run, gid=gid, new=new)


def _grown(array: npt.NDArray[Any], size: int, fill: Any) -> npt.NDArray[Any]:
    if array.shape[0] >= size:
        return array
    out = np.full((max(size, 2 * array.shape[0]), *array.shape[1:]), fill, dtype=array.dtype)
    out[: array.shape[0]] = array
    return out


class StreamAccumulator:
    """:func:`stream_metrics` for many streams, fed chunk by chunk (:meth:`add`), in memory that
    does not grow with the packet count except for the delay samples (``keep_delays``).

    Per stream it carries what the definitions need from one packet to the next: the running
    maximum sequence number (RFC 4737 NextExp), the RFC 3550 jitter and the last first copy's
    stamps, the longest gap so far, counts, and a window of seen sequence numbers for duplicate
    detection: a bitmap of ``window_bits`` bits that slides forward with the highest number,
    so that every number at least ``window_bits / 2`` below the highest at the start of a chunk
    is still in it. A packet further behind than that cannot be told from a duplicate; it counts
    as a first copy and in ``window_misses`` (RTP's 16-bit sequence numbers cannot tell such a
    packet from a new cycle anyway). One-way delays of first copies are kept in arrival order,
    as int32 ns where they fit (4 bytes per packet), because exact percentiles need them all.

    Arrival order is the order of the rows (a capture's record order, i.e. arrival at the
    capture point), not re-sorted by stamp as :func:`stream_metrics` does with arrays whose
    receive stamps step back.
    """

    def __init__(self, window_bits: int = 1 << 16, keep_delays: bool = False) -> None:
        if window_bits < 128 or window_bits & (window_bits - 1):
            raise AnalysisError(f"window_bits must be a power of two >= 128, got {window_bits}")
        self.window_bits = window_bits
        self._words = window_bits // 64
        self.keep_delays = keep_delays
        self.size = 0
        self.packets = np.zeros(0, dtype=np.int64)
        self.received = np.zeros(0, dtype=np.int64)
        self.first_seq = np.zeros(0, dtype=np.int64)
        self.max_seq = np.zeros(0, dtype=np.int64)
        self.reordered = np.zeros(0, dtype=np.int64)
        self.jitter_ns = np.zeros(0, dtype=np.float64)
        self.last_rx = np.zeros(0, dtype=np.int64)
        self.last_tx = np.zeros(0, dtype=np.int64)
        self.max_gap = np.zeros(0, dtype=np.int64)
        self.gap_start = np.zeros(0, dtype=np.int64)
        self.window_misses = np.zeros(0, dtype=np.int64)
        self._bitmap = np.zeros(0, dtype=np.int64)  # row in _pool, -1: none yet
        self._base = np.zeros(0, dtype=np.int64)  # sequence number of bit 0 of the row
        self._pool = np.zeros((0, self._words), dtype=np.uint64)
        self._pool_rows = 0
        self._delays: list[list[npt.NDArray[np.signedinteger[Any]]]] = []

    def reserve(self, size: int) -> None:
        """Make room for streams ``0 .. size - 1``."""
        if size <= self.size:
            return
        for name, fill in (
            ("packets", 0),
            ("received", 0),
            ("first_seq", 0),
            ("max_seq", _I64_MIN),
            ("reordered", 0),
            ("jitter_ns", 0.0),
            ("last_rx", 0),
            ("last_tx", 0),
            ("max_gap", -1),
            ("gap_start", 0),
            ("window_misses", 0),
            ("_bitmap", -1),
            ("_base", 0),
        ):
            setattr(self, name, _grown(getattr(self, name), size, fill))
        if self.keep_delays:
            self._delays.extend([] for _ in range(size - self.size))
        self.size = size

    def add(self, segs: Segments, seq: _I64, tx: _I64, rx: _I64) -> None:
        """Rows in ``segs`` order: sequence numbers (extended, any int64), sender and receive
        stamps (ns)."""
        if not seq.size:
            return
        self.reserve(int(segs.gid.max()) + 1)
        gid, run, starts, ends = segs.gid, segs.run, segs.starts, segs.ends
        before = self.packets[gid]
        first_row = segs.first_rows()

        # Duplicates: seen earlier in this chunk (one stable sort, only if a run ever steps back
        # or repeats) or before it (the window bitmap, or the single packet of a new stream).
        dup = np.zeros(seq.size, dtype=np.bool_)
        if bool(np.any((seq[1:] <= seq[:-1]) & ~first_row[1:])):
            o = np.lexsort((seq, run))
            s_seq, s_run = seq[o], run[o]
            dup[o[1:][(s_seq[1:] == s_seq[:-1]) & (s_run[1:] == s_run[:-1])]] = True
        dup |= self._seen(gid, run, seq, before)
        first = ~dup

        # RFC 4737: a first copy is reordered when below the highest number seen before it.
        carried = self.max_seq[gid]
        high = np.maximum(segs.cummax(seq), carried[run])
        before_high = segs.prev(high, carried)
        reordered = first & (seq <= before_high)
        self.reordered[gid] += np.bincount(run[reordered], minlength=gid.size)

        # First copies in arrival order: jitter, gaps, delays.
        fi = np.flatnonzero(first)
        if fi.size:
            self._first_copies(segs, fi, seq, tx, rx)

        self.packets[gid] = before + segs.lengths
        self.max_seq[gid] = np.maximum(self.max_seq[gid], high[ends - 1])
        self.first_seq[gid[segs.new]] = seq[starts[segs.new]]
        self._remember(gid, run, seq, before, fi)

    def _first_copies(self, segs: Segments, fi: _I64, seq: _I64, tx: _I64, rx: _I64) -> None:
        gid = segs.gid
        f_run = segs.run[fi]
        f_rx, f_tx = rx[fi], tx[fi]
        change = np.ones(fi.size, dtype=np.bool_)
        change[1:] = f_run[1:] != f_run[:-1]
        f_starts = np.flatnonzero(change)
        f_ends = np.append(f_starts[1:], fi.size)
        runs = f_run[f_starts]
        g = gid[runs]
        had = self.received[g] > 0  # a first copy before this chunk: the chain continues
        prev_rx = np.empty_like(f_rx)
        prev_tx = np.empty_like(f_tx)
        prev_rx[1:], prev_tx[1:] = f_rx[:-1], f_tx[:-1]
        prev_rx[f_starts], prev_tx[f_starts] = self.last_rx[g], self.last_tx[g]
        valid = np.ones(fi.size, dtype=np.bool_)
        valid[f_starts] = had

        # RFC 3550 6.4.1: J += (|D| - J) / 16 over consecutive first copies, D exact in int64.
        d = np.abs((f_rx - prev_rx) - (f_tx - prev_tx)).astype(np.float64)
        a = np.full(fi.size, 15.0 / 16.0)
        b = d / 16.0
        a[f_starts] = 0.0
        b[f_starts] = np.where(had, (15.0 / 16.0) * self.jitter_ns[g] + b[f_starts], 0.0)
        jitter = linear_recurrence(a, b)
        self.jitter_ns[g] = jitter[f_ends - 1]

        # Longest gap between consecutive first copies; the first of equal gaps wins.
        gaps = np.where(valid, f_rx - prev_rx, -1)
        top = np.maximum.reduceat(gaps, f_starts)
        f_index = np.repeat(np.arange(runs.size), f_ends - f_starts)
        at = np.where(valid & (gaps == top[f_index]), np.arange(fi.size), fi.size)
        first_at = np.minimum.reduceat(at, f_starts)
        better = top > self.max_gap[g]
        self.max_gap[g[better]] = top[better]
        self.gap_start[g[better]] = prev_rx[first_at[better]]

        self.received[g] += f_ends - f_starts
        self.last_rx[g] = f_rx[f_ends - 1]
        self.last_tx[g] = f_tx[f_ends - 1]
        if self.keep_delays:
            delays = f_rx - f_tx
            if delays.size and _I32.min <= delays.min() and delays.max() <= _I32.max:
                delays = delays.astype(np.int32)
            for k, (a0, b0) in enumerate(zip(f_starts.tolist(), f_ends.tolist(), strict=True)):
                self._delays[int(g[k])].append(delays[a0:b0].copy())

    def _seen(self, gid: _I64, run: _I64, seq: _I64, before: _I64) -> _Bool:
        """Rows whose sequence number arrived in an earlier chunk."""
        seen = np.zeros(seq.size, dtype=np.bool_)
        rows_bm = self._bitmap[gid][run]
        has = rows_bm >= 0
        if has.any():
            off = seq - self._base[gid][run]
            inside = has & (off >= 0) & (off < self.window_bits)
            missed = has & (off < 0)
            if missed.any():
                self.window_misses[gid] += np.bincount(run[missed], minlength=gid.size)
            k = np.flatnonzero(inside)
            o = off[k]
            words = self._pool.reshape(-1)[rows_bm[k] * self._words + (o >> 6)]
            seen[k] = ((words >> (o & 63).astype(np.uint64)) & np.uint64(1)).astype(np.bool_)
        single = ~has & (before[run] == 1)
        if single.any():
            seen |= single & (seq == self.first_seq[gid][run])
        return seen

    def _remember(self, gid: _I64, run: _I64, seq: _I64, before: _I64, fi: _I64) -> None:
        """Put this chunk's numbers in the streams' windows (streams of two or more packets get
        one), sliding a window forward when the highest number outgrows it."""
        need = (self.packets[gid] >= 2) & (self._bitmap[gid] < 0)
        half = self.window_bits // 2
        for g, had in zip(gid[need].tolist(), before[need].tolist(), strict=True):
            if self._pool_rows == self._pool.shape[0]:
                self._pool = _grown(self._pool, self._pool_rows + 1, 0)
            self._pool[self._pool_rows] = 0
            self._bitmap[g] = self._pool_rows
            self._pool_rows += 1
            self._base[g] = (int(self.max_seq[g]) - half) & ~63
            if had == 1:  # the stream's first packet came in an earlier chunk
                self._set_bits(np.array([g]), np.array([self.first_seq[g]]))
        slide = (self._bitmap[gid] >= 0) & (self.max_seq[gid] >= self._base[gid] + self.window_bits)
        for g in gid[slide].tolist():
            new_base = (int(self.max_seq[g]) - half) & ~63
            shift = (new_base - int(self._base[g])) // 64
            row = self._pool[self._bitmap[g]]
            if shift < self._words:
                row[: self._words - shift] = row[shift:].copy()
                row[self._words - shift :] = 0
            else:
                row[:] = 0
            self._base[g] = new_base
        if fi.size:
            self._set_bits(gid[run[fi]], seq[fi])

    def _set_bits(self, g: _I64, seq: _I64) -> None:
        rows = self._bitmap[g]
        off = seq - self._base[g]
        ok = (rows >= 0) & (off >= 0) & (off < self.window_bits)
        off = off[ok]
        index = rows[ok] * self._words + (off >> 6)
        bits = np.left_shift(np.uint64(1), (off & 63).astype(np.uint64))
        np.bitwise_or.at(self._pool.reshape(-1), index, bits)

    def metrics(self, g: int, stream_id: str, kind: str, sent: int) -> StreamMetrics:
        """What :func:`stream_metrics` gives for stream ``g`` (``sent = -1``: highest sequence
        number + 1, for streams numbered from 0)."""
        received = int(self.received[g])
        if sent == -1:
            sent = int(self.max_seq[g]) + 1 if received else 0
        loss_pct = max(0.0, 100.0 * (sent - received) / sent) if sent > 0 else 0.0
        owd: DelayStats | None = None
        if received and self.keep_delays:
            parts = self._delays[g]
            owd_ms = (np.concatenate(parts) if len(parts) > 1 else parts[0]).astype(
                np.int64
            ).astype(np.float64) / _NS_PER_MS
            owd = DelayStats.of(owd_ms)
        two = received >= 2
        return StreamMetrics(
            id=stream_id,
            kind=kind,
            sent=sent,
            received=received,
            loss_pct=loss_pct,
            owd_ms=owd,
            jitter_ms=float(self.jitter_ns[g]) / _NS_PER_MS if two else None,
            reordered=int(self.reordered[g]),
            duplicates=int(self.packets[g]) - received,
            max_gap_ms=float(self.max_gap[g]) / _NS_PER_MS if two else None,
            gap_start_s=float(self.gap_start[g]) / _NS_PER_S if two else None,
        )
