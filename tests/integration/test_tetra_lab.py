"""The TETRA pre-emption profile on the emulated lab, end to end through ``testbed run``.

Three PEI terminals on talk group 9001 of the emulated SwMI: fire1 calls and talks, the
dispatcher pre-empts it, fire2 talks after the dispatcher, fire1 hangs up. What the drivers
derive from the PEI's URCs (access and set-up times, the pre-emption fire1 sees) is checked
against the SwMI's own procedure log, an independent record of the same exchanges.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import REPO, assert_clean, start_run

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REPETITIONS = 2
TIME_SCALE = 0.5
"""The shipped profile at half speed (8 s -> 4 s per repetition): the test stays short."""
WINDOW_S = 0.2
"""How far a SwMI procedure may lie outside the driver's demand..URC window (clock reads on a
busy 2-core machine), never a timing target."""
TERMINALS = ("tetra_dispatch", "tetra_fire1", "tetra_fire2")


def _short_profile(path: Path) -> Path:
    profile = yaml.safe_load((REPO / "profiles" / "tetra_preemption.yaml").read_text())
    profile["name"] = "tetra_preemption_short"
    profile["repetitions"] = REPETITIONS
    profile["duration_s"] *= TIME_SCALE
    for event in profile["timeline"]:
        event["at_s"] *= TIME_SCALE
    for kpi in profile["kpis"]:
        if kpi["counter"] == "preempted_tx":  # one pre-emption per repetition
            kpi["min"] = kpi["max"] = REPETITIONS
    path.write_text(json.dumps(profile))  # JSON is YAML
    return path


def _finish(proc: subprocess.Popen[str], timeout_s: float = 90) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"testbed run did not end: {err}") from None
    return proc.returncode, out, err


def _by_repetition(run_dir: Path) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """Every event, and the events of each measurement repetition (log order)."""
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    reps: dict[int, list[dict[str, Any]]] = {}
    current: int | None = None
    for e in events:
        if e["type"] == "phase.started":
            current = e["repetition"] if e["phase"] == "measure" else None
            if current is not None:
                reps[current] = []
        elif current is not None:
            reps[current].append(e)
    return events, reps


def _device_events(events: list[dict[str, Any]], device: str, name: str) -> list[dict[str, Any]]:
    return [
        e["fields"]
        for e in events
        if e["type"] == "device.event" and e["device"] == device and e["name"] == name
    ]


def _within(swmi_wall: float, start_wall: float, end_wall: float) -> bool:
    return start_wall - WINDOW_S <= swmi_wall <= end_wall + WINDOW_S


def test_dispatcher_preempts_fire1_and_fire2_gets_the_floor(
    tmp_path: Path, testbed_env: dict[str, str]
) -> None:
    code, out, err = _finish(start_run(_short_profile(tmp_path / "p.yaml"), testbed_env))
    run_dir = Path(out.strip().splitlines()[-1].split("run record: ")[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert code == 0 and summary["verdict"] == "PASS", (summary["errors"], err)
    assert summary["errors"] == []
    kpis = {k["name"]: k for k in summary["kpis"]}
    assert kpis["fire1 pre-empted in every repetition"]["value"] == REPETITIONS
    assert all(k["verdict"] == "PASS" for k in kpis.values()), kpis

    events, reps = _by_repetition(run_dir)
    assert sorted(reps) == list(range(1, REPETITIONS + 1))
    ready = {d: _device_events(events, d, "tetra.ready")[0] for d in TERMINALS}
    issi = {d: int(ready[d]["issi"]) for d in TERMINALS}
    dispatcher_tsi = ready["tetra_dispatch"]["tsi"]
    devices = summary["devices"]
    swmi_log = [
        json.loads(line)
        for line in Path(devices["swmi"]["events_file"]).read_text().splitlines()
        if line.strip()
    ]

    # the pre-emption: once per repetition, seen by fire1 with the dispatcher's TPI while it
    # held the grant, and logged by the SwMI between the dispatcher's demand and fire1's URC
    swmi_preempted = [e for e in swmi_log if e["event"] == "tx_preempted"]
    assert [(e["issi"], e["by"]) for e in swmi_preempted] == [
        (issi["tetra_fire1"], issi["tetra_dispatch"])
    ] * REPETITIONS
    assert devices["swmi"]["tx_preempted"] == REPETITIONS
    assert devices["swmi"]["calls_preempted"] == 0, "a transmission pre-emption, not a call's"
    assert devices["tetra_fire1"]["preempted_tx"] == REPETITIONS
    for d in ("tetra_dispatch", "tetra_fire2"):
        assert devices[d]["preempted_tx"] == 0, d
    for rep, swmi_event in zip(range(1, REPETITIONS + 1), swmi_preempted, strict=True):
        (seen,) = _device_events(reps[rep], "tetra_fire1", "tetra.preempted")
        assert seen["by_tpi"] == dispatcher_tsi and seen["cause"] is None, seen
        (grant,) = [
            g for g in _device_events(reps[rep], "tetra_dispatch", "tetra.tx") if g["grant"] == 0
        ]
        assert grant["priority"] == "preemptive"
        demand_wall = grant["wall"] - grant["access_ms"] / 1000
        assert _within(swmi_event["wall"], demand_wall, seen["wall"]), (swmi_event, seen)

    # access time (AT+CTXD -> +CTXG granted): one per terminal and repetition, the same in
    # the events and the counters, and the SwMI granted inside the driver's window
    swmi_granted = [e for e in swmi_log if e["event"] == "tx_granted"]
    for d in TERMINALS:
        grants = [g for g in _device_events(events, d, "tetra.tx") if g["grant"] == 0]
        access = devices[d]["access_ms"]
        assert [g["access_ms"] for g in grants] == access and len(access) == REPETITIONS, d
        assert all(ms > 0 for ms in access), (d, access)
        assert devices[d]["access_ms_max"] == max(access)
        by_swmi = [e for e in swmi_granted if e["issi"] == issi[d]]
        assert len(by_swmi) == REPETITIONS, (d, by_swmi)
        for g, s in zip(grants, by_swmi, strict=True):
            assert _within(s["wall"], g["wall"] - g["access_ms"] / 1000, g["wall"]), (d, g, s)

    # call set-up time (ATD -> +CTCC): fire1 sets up one call per repetition
    setup = devices["tetra_fire1"]["setup_ms"]
    assert len(setup) == REPETITIONS and all(ms > 0 for ms in setup), setup
    connected = [c for c in _device_events(events, "tetra_fire1", "tetra.call") if "setup_ms" in c]
    swmi_setups = [e for e in swmi_log if e["event"] == "call_setup"]
    assert [c["setup_ms"] for c in connected] == setup
    assert len(swmi_setups) == REPETITIONS
    for c, s in zip(connected, swmi_setups, strict=True):
        assert s["caller"] == issi["tetra_fire1"] and s["gssi"] == 9001
        assert _within(s["wall"], c["wall"] - c["setup_ms"] / 1000, c["wall"]), (c, s)

    # every repetition ends idle: the caller's hang-up released the call for all three
    assert devices["swmi"]["calls_released"] == {"user request": REPETITIONS}
    for d in TERMINALS:
        assert devices[d]["calls_released"] == REPETITIONS, d
        assert devices[d]["lost"] is None, d
    hangups = [
        e["details"]
        for e in events
        if e["type"] == "action.executed" and e["action"] == "hangup" and e["ok"]
    ]
    assert len(hangups) == REPETITIONS and all(h["not_released"] == [] for h in hangups)

    for d in TERMINALS:
        log = (run_dir / "transcripts" / f"{d}.pei.log").read_text()
        assert "+CTXG:" in log and "AT+CTXD=" in log, d
    fire1_log = (run_dir / "transcripts" / "tetra_fire1.pei.log").read_text()
    assert f",3,0,0,3,{dispatcher_tsi}" in fire1_log  # TxGrant 3 with the dispatcher's TPI
    assert_clean(run_dir)
