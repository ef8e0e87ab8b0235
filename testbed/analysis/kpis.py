"""KPI verdicts: a limit from the profile applied to a stream metric, an MCPTT KPI or a
device counter.

With repetitions, a stream KPI is judged on every repetition and reports the worst value; it
fails when any repetition misses the limit. An MCPTT KPI is a percentile over every sample of
the run's captures (all repetitions pooled: that is what makes 59+ samples for a p95 claim),
judged against the profile's limit or, when the profile gives none, the TS 22.179 limit the
analysis reports. A failover KPI reduces one figure (interruption, lost packets, detection,
re-attach) over every fault of every repetition by its statistic (max by default: the worst
event must meet the limit). A metric without samples cannot meet a limit and fails, saying why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from testbed.analysis import failover as fo
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
    kpis: Sequence[PlannedKpi],
    streams: Sequence[Mapping[str, Any]],
    mcptt: Mapping[str, Any] | None = None,
    devices: Mapping[str, Any] | None = None,
    failover: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    out = []
    for kpi in kpis:
        if kpi.failover is not None:
            out.append(_evaluate_failover(kpi, failover))
            continue
        if kpi.mcptt is not None:
            out.append(_evaluate_mcptt(kpi, (mcptt or {}).get("kpis", {}).get(kpi.mcptt)))
            continue
        if kpi.device is not None:
            out.append(_evaluate_counter(kpi, (devices or {}).get(kpi.device)))
            continue
        assert kpi.stream is not None and kpi.metric is not None  # the model guarantees it
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


def _evaluate_counter(kpi: PlannedKpi, counters: Mapping[str, Any] | None) -> dict[str, Any]:
    """A number from a device's counters (the whole run: devices count across repetitions)."""
    assert kpi.counter is not None  # the model guarantees it
    value = None
    if counters is not None:
        found: Any = counters
        for part in kpi.counter.split("."):
            if isinstance(found, Mapping):
                found = found.get(part)
            elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
                found = found[int(part)]
            else:
                found = None
        if isinstance(found, int | float) and not isinstance(found, bool):
            value = float(found)
    result: dict[str, Any] = {
        "name": kpi.name,
        "device": kpi.device,
        "counter": kpi.counter,
        "unit": kpi.unit,
        "limit": limit_text(kpi),
        "min": kpi.min,
        "max": kpi.max,
        "samples": 1 if value is not None else 0,
        "reference": kpi.reference,
    }
    if value is None:
        why = "the device reported no counters" if counters is None else "no such number"
        result.update(value=None, verdict="FAIL", note=f"{why}: devices.{kpi.device}.{kpi.counter}")
    else:
        result.update(value=value, verdict="PASS" if _within(kpi, value) else "FAIL")
    return result


def _evaluate_mcptt(kpi: PlannedKpi, measured: Mapping[str, Any] | None) -> dict[str, Any]:
    """An MCPTT KPI from the analysis block: its percentile against the profile's limit, or
    against the TS 22.179 limit the analysis names when the profile gives none."""
    measured = measured or {}
    standard = measured.get("limit")
    lo, hi = kpi.min, kpi.max
    reference = kpi.reference
    if lo is None and hi is None and isinstance(standard, Mapping):
        hi = standard.get("max_ms")
        reference = reference or str(standard.get("reference", ""))
    judged = kpi.model_copy(update={"min": lo, "max": hi})
    result: dict[str, Any] = {
        "name": kpi.name,
        "mcptt": kpi.mcptt,
        "metric": f"p{measured.get('percentile', 95):g}",
        "unit": "ms",
        "limit": limit_text(judged) if lo is not None or hi is not None else "none",
        "min": lo,
        "max": hi,
        "samples": int(measured.get("samples") or 0),
        "enough_samples": bool(measured.get("enough_samples")),
        "reference": reference,
        "definition": measured.get("definition", ""),
    }
    value = measured.get("value")
    if not isinstance(value, int | float):
        result.update(value=None, verdict="FAIL", note="no samples in the captures")
    elif lo is None and hi is None:
        result.update(value=value, verdict="FAIL", note="no limit to judge against")
    else:
        result.update(value=value, verdict="PASS" if _within(judged, value) else "FAIL")
        if not result["enough_samples"]:
            result["note"] = (
                f"{result['samples']} samples are too few to claim the percentile "
                f"(need {measured.get('min_samples', 59)})"
            )
    return result


def _evaluate_failover(kpi: PlannedKpi, block: Mapping[str, Any] | None) -> dict[str, Any]:
    """A statistic of one failover figure over all faults and repetitions. A stream that never
    recovered (or a radio that never re-attached) fails the KPI whatever the other samples:
    its interruption has no end, so no limit is met."""
    figure = kpi.failover
    assert figure is not None
    subject = "stream" if figure in fo.STREAM_FIGURES else "radio"
    name = kpi.stream if subject == "stream" else kpi.device
    assert name is not None  # the model guarantees it
    values, unfinished = fo.samples(block, figure, subject, name)
    result: dict[str, Any] = {
        "name": kpi.name,
        "failover": figure,
        subject if subject == "stream" else "device": name,
        "metric": f"{kpi.statistic} of {figure}",
        "statistic": kpi.statistic,
        "unit": "packets" if figure == "lost_packets" else "ms",
        "limit": limit_text(kpi),
        "min": kpi.min,
        "max": kpi.max,
        "samples": len(values),
        "reference": kpi.reference or fo.REFERENCE,
        "definition": fo.DEFINITIONS[figure],
    }
    if figure != "lost_packets" and unfinished:
        value = fo.statistic(values, kpi.statistic) if values else None
        result.update(value=value, verdict="FAIL", note="; ".join(unfinished))
    elif not values:
        why = (
            "no fault event in the run"
            if not (block or {}).get("faults")
            else "the stream was not running at any fault"
            if subject == "stream"
            else "the radio never lost registration after a fault"
            if figure == "detection_ms"
            else "the radio never lost and regained registration after a fault"
        )
        result.update(value=None, verdict="FAIL", note=f"no samples: {why}")
    else:
        value = round(fo.statistic(values, kpi.statistic), 4)
        result.update(value=value, verdict="PASS" if _within(kpi, value) else "FAIL")
    return result
