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
