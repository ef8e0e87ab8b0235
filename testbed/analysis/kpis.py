"""KPI verdicts: a limit from the profile applied to a stream metric.

With repetitions, a KPI is judged on every repetition and reports the worst value; it
fails when any repetition misses the limit. A metric without samples (nothing received)
cannot meet a limit and fails, saying why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from testbed.plan import PlannedKpi

_COUNTS = {"received", "sent", "reordered", "duplicates"}


def unit_of(metric: str) -> str:
    if metric.endswith("_pct"):
        return "%"
    if metric in _COUNTS:
        return "packets"
    return "ms"


def metric_value(stream: Mapping[str, Any], metric: str) -> float | None:
    value: Any = stream
    for part in metric.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return float(value) if isinstance(value, int | float) else None


def limit_text(kpi: PlannedKpi) -> str:
    if kpi.min is not None and kpi.max is not None:
        return f"{kpi.min:g}..{kpi.max:g}"
    return f"<= {kpi.max:g}" if kpi.max is not None else f">= {kpi.min:g}"


def _within(kpi: PlannedKpi, value: float) -> bool:
    return (kpi.max is None or value <= kpi.max) and (kpi.min is None or value >= kpi.min)


def _distance_outside(kpi: PlannedKpi, value: float) -> float:
    above = value - kpi.max if kpi.max is not None else 0.0
    below = kpi.min - value if kpi.min is not None else 0.0
    return max(above, below, 0.0)


def evaluate(
    kpis: Sequence[PlannedKpi], streams: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    out = []
    for kpi in kpis:
        entries = [s for s in streams if s.get("id") == kpi.stream]
        values = [metric_value(s, kpi.metric) for s in entries]
        samples = sum(int(s.get("received") or 0) for s in entries)
        result: dict[str, Any] = {
            "name": kpi.name,
            "stream": kpi.stream,
            "metric": kpi.metric,
            "unit": unit_of(kpi.metric),
            "limit": limit_text(kpi),
            "min": kpi.min,
            "max": kpi.max,
            "samples": samples,
            "reference": kpi.reference,
        }
        known = [v for v in values if v is not None]
        if not entries or len(known) < len(values):
            result.update(
                value=known[0] if known else None,
                verdict="FAIL",
                note="no samples: nothing of the stream was received",
            )
        else:
            failing = [v for v in known if not _within(kpi, v)]
            if failing:
                worst = max(failing, key=lambda v: _distance_outside(kpi, v))
            elif kpi.max is not None:
                worst = max(known)
            else:
                worst = min(known)
            result.update(value=worst, verdict="FAIL" if failing else "PASS")
        out.append(result)
    return out
