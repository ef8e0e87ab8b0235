"""Radios and instruments on the emulated lab, end to end through ``testbed run``.

The attenuator ramps UE A1 out of coverage and back: the modem's registration outage (from
its URCs) must match the gap the receivers measured on both directions of its traffic, an
independent view of the same event. A modem whose emulator dies mid-run must end the run
ERROR naming it, with safe states applied and nothing lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.helpers import (
    REPO,
    assert_clean,
    start_run,
    wait_for_event,
    write_profile,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def _finish(proc: subprocess.Popen[str], timeout_s: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"testbed run did not end: {err}") from None
    return proc.returncode, out, err


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_coverage_walk_outage_matches_the_traffic_gap(testbed_env: dict[str, str]) -> None:
    code, out, err = _finish(start_run(REPO / "profiles" / "coverage_walk.yaml", testbed_env))
    summary_path = Path(out.strip().splitlines()[-1].split("run record: ")[-1]) / "summary.json"
    run_dir = summary_path.parent
    summary = json.loads(summary_path.read_text())
    assert code == 0 and summary["verdict"] == "PASS", (summary["errors"], summary["kpis"], err)

    modem = summary["devices"]["modem_a1"]
    (outage,) = modem["outages"]
    gaps = {s["id"]: s["max_gap_ms"] for s in summary["streams"]}
    for stream in ("ue_a1_up", "ue_a1_down"):
        # the stream gap adds up to one packet interval (10 ms) and the link's delay change
        assert abs(gaps[stream] - outage["duration_s"] * 1000) < 150, (gaps, outage)
    assert modem["signal"]["rsrp_min_dbm"] < -100 < modem["signal"]["rsrp_max_dbm"]
    assert summary["devices"]["modem_a2"]["outages"] == []

    changes = [
        e["fields"]["stat_name"]
        for e in _events(run_dir)
        if e.get("device") == "modem_a1" and e.get("name") == "radio.registration"
    ]
    assert changes[-2:] == ["searching", "registered home"], changes
    for name in ("modem_a1.at.log", "modem_a2.at.log", "atten.scpi.log", "psu.scpi.log"):
        assert (run_dir / "transcripts" / name).stat().st_size > 0, name
    log = (run_dir / "transcripts" / "modem_a1.at.log").read_text()
    assert "~ +CEREG: 2" in log and "AT+CESQ" in log
    assert_clean(run_dir)


def test_a_modem_that_dies_mid_run_ends_it_in_error(
    tmp_path: Path, testbed_env: dict[str, str]
) -> None:
    profile = write_profile(
        tmp_path / "p.yaml", duration_s=20, timeline=[], devices=["modem_a1", "atten", "psu"]
    )
    started = start_run(profile, testbed_env)
    run_dir = wait_for_event(testbed_env, "traffic.started", timeout_s=60)
    ready = json.loads((run_dir / "emulators" / "modem_a1.modem.ready.json").read_text())
    time.sleep(1.5)  # some traffic first: what was measured before the fault must be kept
    os.kill(int(ready["pid"]), signal.SIGKILL)
    code, _, err = _finish(started, timeout_s=60)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert code != 0 and summary["verdict"] == "ERROR", err
    assert any("modem_a1" in e and "connection lost" in e for e in summary["errors"])
    assert summary["duration_s"] < 15, "the fault stops the run, not the profile's end"

    events = _events(run_dir)
    assert any(e["type"] == "device.fault" and e["device"] == "modem_a1" for e in events)
    safe = {e["device"]: e["ok"] for e in events if e.get("step") == "safe_state"}
    assert safe["atten"] and safe["psu"] and safe["modem_a1"]
    (stream,) = summary["streams"]
    assert stream["received"] > 0 and "partial" in " ".join(stream["notes"])
    assert "connection lost" in (run_dir / "transcripts" / "modem_a1.at.log").read_text()
    assert (run_dir / "captures" / "ue_a1_radio.pcapng").exists()
    assert_clean(run_dir)
