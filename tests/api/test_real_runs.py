"""The real-runs fixture holds what the API and dashboard tests rely on (``tests/real_runs.py``)."""

from __future__ import annotations

import json

import pytest

from tests.real_runs import LAB_NAME, PROFILE, TWIN_LAB, RealRuns

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_three_runs_of_one_profile_on_two_labs(real_runs: RealRuns) -> None:
    seen = []
    for run_id in real_runs.run_ids:
        manifest = json.loads((real_runs.run_dir(run_id) / "manifest.json").read_text())
        seen.append((manifest["profile"], manifest["lab"], manifest["verdict"]))
    assert seen == [
        (PROFILE, LAB_NAME, "PASS"),
        (PROFILE, LAB_NAME, "FAIL"),
        (PROFILE, TWIN_LAB, "PASS"),
    ]


def test_first_run_has_two_repetitions_a_fault_and_floor_control(real_runs: RealRuns) -> None:
    summary = real_runs.summary(real_runs.first)
    assert {(s["id"], s["repetition"]) for s in summary["streams"]} == {
        (stream, rep) for stream in ("up", "down") for rep in (1, 2)
    }
    assert [f["repetition"] for f in summary["failover"]["faults"]] == [1, 2]
    mcptt = summary["mcptt"]
    assert len(mcptt["preemptions"]) == 2
    assert sum(r["outcome"] != "revoked" for r in mcptt["requests"]) >= 4
    assert {c.name for c in (real_runs.run_dir(real_runs.first) / "captures").iterdir()} == {
        "ue_a1_radio.pcapng",
        "ue_b1_radio.pcapng",
    }


def test_second_run_fails_on_delay_and_has_no_floor_control(real_runs: RealRuns) -> None:
    summary = real_runs.summary(real_runs.second)
    failed = {k["name"] for k in summary["kpis"] if k["verdict"] == "FAIL"}
    assert failed == {"Uplink p95 one-way delay", "Downlink p95 one-way delay"}
    assert not summary.get("mcptt")


def test_profiles_and_labs_folders(real_runs: RealRuns) -> None:
    assert sorted(p.name for p in real_runs.profiles.glob("*.yaml")) == [
        "dash_probe.yaml",
        "dash_short.yaml",
    ]
    assert real_runs.labs == real_runs.profiles / "labs"
    assert sorted(p.name for p in real_runs.labs.iterdir()) == [
        "emulated.yaml",
        "emulated_twin.yaml",
    ]
