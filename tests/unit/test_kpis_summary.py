"""KPI verdicts (limits, repetitions, missing samples) and the run summary (verdict, JUnit)."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest

from testbed.analysis.kpis import evaluate, limit_text, metric_value, unit_of
from testbed.plan import PlannedKpi
from testbed.results.summary import VERDICTS, junit_xml, overall_verdict


def kpi(
    metric: str = "loss_pct",
    max: float | None = None,
    min: float | None = None,
    stream: str = "voice",
    name: str = "kpi",
) -> PlannedKpi:
    return PlannedKpi(
        name=name, stream=stream, metric=metric, max=max, min=min, reference="TS 22.179"
    )


def stream(sid: str = "voice", received: int = 100, **metrics: Any) -> dict[str, Any]:
    return {"id": sid, "sent": 100, "received": received, **metrics}


def one(k: PlannedKpi, *streams: dict[str, Any]) -> dict[str, Any]:
    [result] = evaluate([k], list(streams))
    return result


# limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "verdict"), [(0.0, "PASS"), (0.99, "PASS"), (1.0, "PASS"), (1.01, "FAIL")]
)
def test_max_only(value: float, verdict: str) -> None:
    result = one(kpi("loss_pct", max=1.0), stream(loss_pct=value))
    assert (result["value"], result["verdict"]) == (value, verdict)
    assert result["limit"] == "<= 1"
    assert result["unit"] == "%"
    assert "note" not in result


@pytest.mark.parametrize(
    ("value", "verdict"), [(99, "FAIL"), (100, "PASS"), (101, "PASS"), (0, "FAIL")]
)
def test_min_only(value: int, verdict: str) -> None:
    result = one(kpi("received", min=100), stream(received=value))
    assert (result["value"], result["verdict"]) == (value, verdict)
    assert result["limit"] == ">= 100"
    assert result["unit"] == "packets"


@pytest.mark.parametrize(
    ("value", "verdict"),
    [(4.99, "FAIL"), (5.0, "PASS"), (7.5, "PASS"), (10.0, "PASS"), (10.01, "FAIL")],
)
def test_min_and_max(value: float, verdict: str) -> None:
    result = one(kpi("jitter_ms", min=5, max=10), stream(jitter_ms=value))
    assert (result["value"], result["verdict"]) == (value, verdict)
    assert result["limit"] == "5..10"
    assert (result["min"], result["max"]) == (5, 10)


def test_result_carries_the_kpi_description() -> None:
    result = one(kpi("loss_pct", max=1, name="voice loss"), stream(received=80, loss_pct=0.5))
    assert result == {
        "name": "voice loss",
        "stream": "voice",
        "metric": "loss_pct",
        "unit": "%",
        "limit": "<= 1",
        "min": None,
        "max": 1,
        "samples": 80,
        "reference": "TS 22.179",
        "value": 0.5,
        "verdict": "PASS",
    }


def test_nested_metric() -> None:
    k = kpi("owd_ms.p95", max=50)
    passing = one(k, stream(owd_ms={"p50": 10.0, "p95": 50.0, "max": 400.0}))
    assert (passing["value"], passing["verdict"], passing["unit"]) == (50.0, "PASS", "ms")
    failing = one(k, stream(owd_ms={"p50": 10.0, "p95": 50.5, "max": 60.0}))
    assert (failing["value"], failing["verdict"]) == (50.5, "FAIL")


def test_metric_value() -> None:
    s = stream(loss_pct=2, owd_ms={"p95": 7}, jitter_ms=None)
    assert metric_value(s, "loss_pct") == 2.0
    assert isinstance(metric_value(s, "loss_pct"), float)
    assert metric_value(s, "owd_ms.p95") == 7.0
    assert metric_value(s, "owd_ms.p99") is None
    assert metric_value(s, "jitter_ms") is None
    assert metric_value(s, "loss_pct.p95") is None
    assert metric_value(stream(owd_ms=None), "owd_ms.p95") is None
    assert metric_value(stream(loss_pct="2"), "loss_pct") is None


@pytest.mark.parametrize(
    ("metric", "unit"),
    [
        ("loss_pct", "%"),
        ("received", "packets"),
        ("sent", "packets"),
        ("reordered", "packets"),
        ("duplicates", "packets"),
        ("jitter_ms", "ms"),
        ("max_gap_ms", "ms"),
        ("owd_ms.p95", "ms"),
        ("owd_ms.mean", "ms"),
    ],
)
def test_unit_of(metric: str, unit: str) -> None:
    assert unit_of(metric) == unit


def test_limit_text() -> None:
    assert limit_text(kpi(max=0.5)) == "<= 0.5"
    assert limit_text(kpi(min=3)) == ">= 3"
    assert limit_text(kpi(min=0, max=300)) == "0..300"


# repetitions -----------------------------------------------------------------------------


def test_repetitions_all_passing_report_the_worst() -> None:
    reps = [stream(loss_pct=0.2), stream(loss_pct=0.9), stream(loss_pct=0.4)]
    high = one(kpi("loss_pct", max=1), *reps)
    assert (high["value"], high["verdict"]) == (0.9, "PASS")
    counts = [stream(received=120), stream(received=101), stream(received=150)]
    low = one(kpi("received", min=100), *counts)
    assert (low["value"], low["verdict"]) == (101, "PASS")
    assert low["samples"] == 371


def test_one_failing_repetition_fails_the_kpi() -> None:
    reps = [stream(loss_pct=0.2), stream(loss_pct=3.0), stream(loss_pct=0.4)]
    result = one(kpi("loss_pct", max=1), *reps)
    assert (result["value"], result["verdict"]) == (3.0, "FAIL")
    low = one(kpi("received", min=100), stream(received=120), stream(received=42))
    assert (low["value"], low["verdict"]) == (42, "FAIL")


@pytest.mark.parametrize(
    ("k", "values", "worst"),
    [
        (kpi("loss_pct", max=1), [2.0, 9.0, 3.0], 9.0),
        (kpi("received", min=100), [90, 10, 50], 10),
        (kpi("jitter_ms", min=5, max=10), [11.0, 30.0, 12.0], 30.0),
    ],
    ids=["max", "min", "range"],
)
def test_several_failing_repetitions_report_the_worst(
    k: PlannedKpi, values: list[float], worst: float
) -> None:
    metric = k.metric
    result = one(k, *[stream(**{metric: v}) for v in values])
    assert result["verdict"] == "FAIL"
    assert result["value"] == worst


def test_only_the_kpis_stream_counts() -> None:
    streams = [stream("voice", loss_pct=0.1), stream("video", loss_pct=50.0, received=3)]
    result = one(kpi("loss_pct", max=1, stream="voice"), *streams)
    assert (result["value"], result["verdict"], result["samples"]) == (0.1, "PASS", 100)


# missing samples -------------------------------------------------------------------------

NOTE = "no samples: nothing of the stream was received"


def test_stream_without_entry_fails_with_note() -> None:
    result = one(kpi("owd_ms.p95", max=50), stream("other", owd_ms={"p95": 1.0}))
    assert result["verdict"] == "FAIL"
    assert result["value"] is None
    assert result["samples"] == 0
    assert result["note"] == NOTE


def test_no_streams_at_all_fails_with_note() -> None:
    results = evaluate([kpi(max=1, name="a"), kpi(min=1, name="b")], [])
    assert [(r["name"], r["verdict"], r["value"]) for r in results] == [
        ("a", "FAIL", None),
        ("b", "FAIL", None),
    ]
    assert all(r["note"] == NOTE for r in results)


def test_metric_without_samples_fails_with_note() -> None:
    result = one(kpi("owd_ms.p95", max=50), stream(received=0, owd_ms=None))
    assert (result["verdict"], result["value"], result["samples"]) == ("FAIL", None, 0)
    assert result["note"] == NOTE


def test_one_repetition_without_samples_fails_the_kpi() -> None:
    reps = [stream(owd_ms={"p95": 5.0}), stream(received=0, owd_ms=None)]
    result = one(kpi("owd_ms.p95", max=50), *reps)
    assert result["verdict"] == "FAIL"
    assert result["value"] == 5.0
    assert result["note"] == NOTE
    assert result["samples"] == 100


def test_evaluate_keeps_kpi_order() -> None:
    kpis = [kpi(max=1, name="z"), kpi("received", min=1, name="a"), kpi(max=0, name="m")]
    results = evaluate(kpis, [stream(loss_pct=0.5)])
    assert [(r["name"], r["verdict"]) for r in results] == [
        ("z", "PASS"),
        ("a", "PASS"),
        ("m", "FAIL"),
    ]


# overall verdict ---------------------------------------------------------------------------

PASSING = [{"verdict": "PASS"}, {"verdict": "PASS"}]
FAILING = [{"verdict": "PASS"}, {"verdict": "FAIL"}]


@pytest.mark.parametrize(
    ("aborted", "errors", "kpis", "verdict"),
    [
        (False, [], [], "PASS"),
        (False, [], PASSING, "PASS"),
        (False, [], FAILING, "FAIL"),
        (False, ["driver crashed"], PASSING, "ERROR"),
        (False, ["driver crashed"], [], "ERROR"),
        (False, ["driver crashed"], FAILING, "ERROR"),
        (True, [], PASSING, "ABORTED"),
        (True, [], FAILING, "ABORTED"),
        (True, ["driver crashed"], FAILING, "ABORTED"),
    ],
)
def test_overall_verdict(
    aborted: bool, errors: list[str], kpis: list[dict[str, Any]], verdict: str
) -> None:
    assert overall_verdict(aborted, errors, kpis) == verdict
    assert verdict in VERDICTS


def test_errors_never_pass() -> None:
    for kpis in ([], PASSING, FAILING):
        assert overall_verdict(False, ["x"], kpis) != "PASS"


# junit -------------------------------------------------------------------------------------


def summary_of(verdict: str, kpis: list[dict[str, Any]], errors: list[str]) -> dict[str, Any]:
    return {
        "run_id": "20240101-abc123",
        "profile": "radio_outage",
        "lab": "emulated",
        "verdict": verdict,
        "started_at": "2024-01-01T12:00:00Z",
        "errors": errors,
        "kpis": kpis,
    }


def evaluated() -> list[dict[str, Any]]:
    return evaluate(
        [
            kpi("loss_pct", max=1, name="voice loss"),
            kpi("owd_ms.p95", max=50, name="mouth-to-ear p95 <ms> & co"),
            kpi("received", min=10, name="video received", stream="video"),
        ],
        [stream(loss_pct=5.0, owd_ms={"p95": 20.0})],
    )


def parse(xml: str) -> ET.Element:
    assert xml.startswith("<?xml")
    return ET.fromstring(xml)


def cases(suite: ET.Element) -> dict[str, ET.Element]:
    return {c.attrib["name"]: c for c in suite.iter("testcase")}


def test_junit_counts_failures() -> None:
    kpis = evaluated()
    suite = parse(junit_xml(summary_of("FAIL", kpis, [])))
    assert suite.tag == "testsuite"
    assert suite.attrib["name"] == "radio_outage"
    assert (suite.attrib["tests"], suite.attrib["failures"], suite.attrib["errors"]) == (
        "4",
        "2",
        "0",
    )
    assert suite.attrib["timestamp"] == "2024-01-01T12:00:00Z"
    by_name = cases(suite)
    assert set(by_name) == {
        "run",
        "voice loss",
        "mouth-to-ear p95 <ms> & co",
        "video received",
    }
    assert by_name["run"].find("error") is None
    assert by_name["run"].attrib["classname"] == "radio_outage"
    loss = by_name["voice loss"]
    assert loss.attrib["classname"] == "radio_outage.kpi"
    failure = loss.find("failure")
    assert failure is not None
    assert failure.attrib["message"] == "5.0 % not <= 1"
    assert by_name["mouth-to-ear p95 <ms> & co"].find("failure") is None
    missing = by_name["video received"].find("failure")
    assert missing is not None
    assert missing.text == NOTE
    assert len(list(suite.iter("failure"))) == 2
    props = {p.attrib["name"]: p.attrib["value"] for p in suite.iter("property")}
    assert props == {"run_id": "20240101-abc123", "lab": "emulated", "verdict": "FAIL"}


@pytest.mark.parametrize("verdict", ["ERROR", "ABORTED"])
def test_junit_run_case_carries_errors(verdict: str) -> None:
    kpis = evaluate([kpi(max=1, name="voice loss")], [stream(loss_pct=0.0)])
    errors = ["traffic driver died", "capture missing"]
    suite = parse(junit_xml(summary_of(verdict, kpis, errors)))
    assert (suite.attrib["tests"], suite.attrib["failures"], suite.attrib["errors"]) == (
        "2",
        "0",
        "1",
    )
    error = cases(suite)["run"].find("error")
    assert error is not None
    assert error.attrib["message"] == verdict
    assert error.text == "traffic driver died\ncapture missing"
    assert len(list(suite.iter("error"))) == 1


def test_junit_passing_run_without_kpis() -> None:
    suite = parse(junit_xml(summary_of("PASS", [], [])))
    assert (suite.attrib["tests"], suite.attrib["failures"], suite.attrib["errors"]) == (
        "1",
        "0",
        "0",
    )
    assert list(cases(suite)) == ["run"]
    assert list(suite.iter("failure")) == [] and list(suite.iter("error")) == []


def test_junit_keeps_non_ascii_names() -> None:
    kpis = evaluate([kpi(max=1, name="Verzögerung ≤ 1 %")], [stream(loss_pct=0.0)])
    suite = parse(junit_xml(summary_of("PASS", kpis, [])))
    assert "Verzögerung ≤ 1 %" in cases(suite)


def test_device_counter_kpis() -> None:
    def kpi(counter: str, **limits: float) -> PlannedKpi:
        return PlannedKpi(
            name=counter, stream=None, metric=None, device="tetra_fire1", counter=counter,
            unit="ms", reference="r", max=limits.get("max"), min=limits.get("min"),
        )  # fmt: skip

    devices = {"tetra_fire1": {"access_ms_max": 2.5, "preempted_tx": 4, "outages": [{"s": 4.5}]}}
    results = evaluate(
        [kpi("access_ms_max", max=300), kpi("preempted_tx", min=5), kpi("outages.0.s", max=5),
         kpi("outages.1.s", max=5), kpi("lost", max=1)],
        [], None, devices,
    )  # fmt: skip
    assert [(r["value"], r["verdict"]) for r in results] == [
        (2.5, "PASS"), (4.0, "FAIL"), (4.5, "PASS"), (None, "FAIL"), (None, "FAIL")
    ]  # fmt: skip
    assert results[3]["note"] == "no such number: devices.tetra_fire1.outages.1.s"
    (missing,) = evaluate([kpi("access_ms_max", max=1)], [], None, {})
    assert missing["note"].startswith("the device reported no counters")
