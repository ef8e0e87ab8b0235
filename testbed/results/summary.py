"""summary.json and junit.xml of a run, from what the runner collected."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree import ElementTree as ET

VERDICTS = ("PASS", "FAIL", "ERROR", "ABORTED")


def overall_verdict(aborted: bool, errors: Sequence[str], kpis: Sequence[Mapping[str, Any]]) -> str:
    """ABORTED beats ERROR beats FAIL: a run with any ERROR is never PASS."""
    if aborted:
        return "ABORTED"
    if errors:
        return "ERROR"
    if any(k.get("verdict") == "FAIL" for k in kpis):
        return "FAIL"
    return "PASS"


def sweep_table(
    points: Sequence[Any], streams: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One row per sweep point and stream: the swept settings beside the measured metrics."""
    rows = []
    for point in points:
        for s in streams:
            if s.get("point") != point.index:
                continue
            owd = s.get("owd_ms") or {}
            rows.append(
                {
                    "point": point.index,
                    **point.settings,
                    "stream": s["id"],
                    "repetition": s.get("repetition"),
                    "sent": s.get("sent"),
                    "received": s.get("received"),
                    "loss_pct": s.get("loss_pct"),
                    "owd_p50_ms": owd.get("p50"),
                    "owd_p95_ms": owd.get("p95"),
                    "jitter_ms": s.get("jitter_ms"),
                    "max_gap_ms": s.get("max_gap_ms"),
                }
            )
    return rows


def failover_table(summary: Mapping[str, Any]) -> list[str]:
    """Lines of the verdict table for the ``failover`` block: per fault of the timeline, each
    stream's and radio's figures over the repetitions (n, min, p50, mean, p95, max, stdev)."""
    block = summary.get("failover")
    if not isinstance(block, Mapping) or not block.get("spread"):
        return []
    rows = block["spread"]
    lines = [
        f"  FAILOVER ({len(block.get('faults', []))} fault events; "
        f"interruption threshold {block.get('threshold', '?')})",
        f"  {'EVENT':<26} {'STREAM/RADIO':<16} {'FIGURE':<16} {'N':>3} {'MIN':>9} {'P50':>9} "
        f"{'MEAN':>9} {'P95':>9} {'MAX':>9} {'STDEV':>8}  NOTE",
    ]
    for row in rows:
        subject = row.get("stream") or row.get("radio") or "?"
        statuses = row.get("statuses") or {}
        note = []
        if row.get("not_recovered"):
            note.append(f"{row['not_recovered']} not recovered")
        if row.get("n", 0) == 0 or len(statuses) > 1:
            note += [f"{k.replace('_', ' ')} x{v}" for k, v in sorted(statuses.items())]
        lines.append(
            f"  {row.get('event')!s:<26} {subject:<16} {row['figure']:<16} {row['n']:>3} "
            + " ".join(f"{_fmt(row.get(k)):>9}" for k in ("min", "p50", "mean", "p95", "max"))
            + f" {_fmt(row.get('stdev')):>8}  {', '.join(note)}"
        )
    return lines


def _fmt(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.1f}"


def junit_xml(summary: Mapping[str, Any]) -> str:
    """One test case per KPI, plus one for the run itself (errors, aborts)."""
    kpis = summary.get("kpis", [])
    suite = ET.Element(
        "testsuite",
        name=str(summary.get("profile")),
        tests=str(len(kpis) + 1),
        failures=str(sum(1 for k in kpis if k.get("verdict") == "FAIL")),
        errors=str(1 if summary.get("verdict") in ("ERROR", "ABORTED") else 0),
        timestamp=str(summary.get("started_at", "")),
    )
    ET.SubElement(suite, "properties")
    props = suite.find("properties")
    assert props is not None
    for key in ("run_id", "lab", "verdict"):
        ET.SubElement(props, "property", name=key, value=str(summary.get(key)))
    run_case = ET.SubElement(suite, "testcase", classname=str(summary.get("profile")), name="run")
    if summary.get("verdict") in ("ERROR", "ABORTED"):
        err = ET.SubElement(run_case, "error", message=str(summary.get("verdict")))
        err.text = "\n".join(summary.get("errors", []))
    for k in kpis:
        case = ET.SubElement(
            suite, "testcase", classname=f"{summary.get('profile')}.kpi", name=str(k["name"])
        )
        if k.get("verdict") == "FAIL":
            fail = ET.SubElement(
                case, "failure", message=f"{k.get('value')} {k.get('unit')} not {k.get('limit')}"
            )
            fail.text = str(k.get("note", ""))
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
