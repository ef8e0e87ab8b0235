"""Per-stream packet metrics (loss, one-way delay, jitter, reordering, gaps) from a packet table.

The input is what a receiver saw for one stream -- sequence number, sender transmit stamp and
kernel receive stamp per arriving packet -- and the output is one :class:`StreamMetrics`
following the IETF definitions (RFC 7679 one-way delay, RFC 3550 interarrival jitter, RFC 4737
reordering) so that figures are comparable with other tools and labs. Everything is vectorised
with numpy because a single MCPTT/TETRA soak stream easily reaches millions of packets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from testbed.errors import AnalysisError

__all__ = ["DelayStats", "StreamMetrics", "stream_metrics"]

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
        owd_ms = (rx_u - tx_u).astype(np.float64) / _NS_PER_MS
        p50, p95, p99 = (float(v) for v in np.percentile(owd_ms, [50.0, 95.0, 99.0]))
        owd = DelayStats(
            min=float(owd_ms.min()),
            p50=p50,
            p95=p95,
            p99=p99,
            max=float(owd_ms.max()),
            mean=float(owd_ms.mean()),
        )
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
