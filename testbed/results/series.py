"""Per-packet delay series of each stream, kept in the run record for plots.

The summary keeps each stream's figures; the dashboard also needs the delay over time and its
distribution, so the runner stores every received packet's (seq, tx, rx) as a small ``.npy``
file per stream and repetition (20 bytes a packet: a 60 s stream at 50 pps is 60 kB).
Plots get it down-sampled into time buckets that keep each bucket's minimum and maximum, so a
spike or a gap survives the reduction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SERIES_DIR = "series"
SERIES_DTYPE = np.dtype([("seq", "<u4"), ("tx_ns", "<i8"), ("rx_ns", "<i8")])
_NAME = re.compile(r"^(?P<stream>[A-Za-z0-9_.-]+?)(?:-point(?P<point>\d+))?-rep(?P<rep>\d+)\.npy$")


@dataclass(frozen=True)
class SeriesKey:
    stream: str
    repetition: int
    point: int | None
    path: Path


def series_name(stream: str, repetition: int, point: int | None = None) -> str:
    middle = f"-point{point}" if point is not None else ""
    return f"{stream}{middle}-rep{repetition}.npy"


def write_series(
    run_dir: Path,
    stream: str,
    repetition: int,
    point: int | None,
    seq: npt.ArrayLike,
    tx_ns: npt.ArrayLike,
    rx_ns: npt.ArrayLike,
) -> Path:
    """One stream's received packets of one repetition (and sweep point)."""
    seq_a, tx_a, rx_a = np.asarray(seq), np.asarray(tx_ns), np.asarray(rx_ns)
    rows = np.empty(len(seq_a), dtype=SERIES_DTYPE)
    rows["seq"], rows["tx_ns"], rows["rx_ns"] = seq_a, tx_a, rx_a
    folder = run_dir / SERIES_DIR
    folder.mkdir(exist_ok=True)
    path = folder / series_name(stream, repetition, point)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as out:
        np.save(out, rows, allow_pickle=False)
    tmp.replace(path)
    return path


def series_files(run_dir: Path) -> list[SeriesKey]:
    folder = run_dir / SERIES_DIR
    if not folder.is_dir():
        return []
    keys = []
    for path in sorted(folder.iterdir()):
        m = _NAME.match(path.name)
        if m is not None:
            point = int(m["point"]) if m["point"] is not None else None
            keys.append(SeriesKey(m["stream"], int(m["rep"]), point, path))
    return sorted(keys, key=lambda k: (k.stream, k.point or 0, k.repetition))


def read_series(path: Path) -> npt.NDArray[Any]:
    """The rows of one series file; anything but SERIES_DTYPE is refused (no pickles)."""
    rows: npt.NDArray[Any] = np.load(path, allow_pickle=False)
    if rows.dtype != SERIES_DTYPE:
        raise ValueError(f"{path.name}: not a delay series (dtype {rows.dtype})")
    return rows


def owd_ms(rows: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    delay: npt.NDArray[np.float64] = (rows["rx_ns"] - rows["tx_ns"]).astype(np.float64) / 1e6
    return delay


def downsample(
    tx_ns: npt.NDArray[np.int64], delay_ms: npt.NDArray[np.float64], max_points: int
) -> dict[str, list[float]]:
    """At most ``max_points`` equal time buckets over the send times; each bucket gives its
    start (wall seconds) and the minimum, mean and maximum delay of its packets. Empty buckets
    are left out, so a gap in the stream stays a gap in the plot."""
    if len(tx_ns) == 0:
        return {"t": [], "owd_min": [], "owd_mean": [], "owd_max": []}
    order = np.argsort(tx_ns, kind="stable")
    tx, owd = tx_ns[order], delay_ms[order]
    if len(tx) <= max_points:
        t = tx / 1e9
        values = np.round(owd, 4).tolist()
        return {
            "t": np.round(t, 6).tolist(),
            "owd_min": values,
            "owd_mean": values,
            "owd_max": values,
        }
    span = max(int(tx[-1] - tx[0]), 1)
    bucket = np.minimum((tx - tx[0]) * max_points // span, max_points - 1)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    counts = np.diff(np.r_[starts, len(tx)])
    mins = np.minimum.reduceat(owd, starts)
    maxs = np.maximum.reduceat(owd, starts)
    means = np.add.reduceat(owd, starts) / counts
    t = (tx[0] + bucket[starts] * span / max_points) / 1e9
    return {
        "t": np.round(t, 6).tolist(),
        "owd_min": np.round(mins, 4).tolist(),
        "owd_mean": np.round(means, 4).tolist(),
        "owd_max": np.round(maxs, 4).tolist(),
    }


def histogram(delay_ms: npt.NDArray[np.float64], bins: int = 60) -> dict[str, list[Any]]:
    """Counts over equal bins from the minimum to the maximum delay."""
    if len(delay_ms) == 0:
        return {"edges_ms": [], "counts": []}
    counts, edges = np.histogram(delay_ms, bins=bins)
    return {"edges_ms": np.round(edges, 4).tolist(), "counts": counts.tolist()}
