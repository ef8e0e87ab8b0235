"""The runner tears down on every exit path, checked on the emulated lab.

Each test runs the real ``testbed run`` as a subprocess and then checks that no
namespace, process or lock of the run is left behind, and that the run record says
what happened.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.results.index import Index
from tests.integration.helpers import (
    REPO,
    assert_clean,
    namespaces_with,
    prefix_of,
    run_dirs,
    start_run,
    wait_for_event,
    write_profile,
)

pytestmark = pytest.mark.netns

RECORD_FILES = (
    "manifest.json",
    "profile.yaml",
    "lab.yaml",
    "plan.json",
    "events.jsonl",
    "summary.json",
    "junit.xml",
)


def _finish(proc: subprocess.Popen[str], timeout_s: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"testbed run did not end: {err}") from None
    return proc.returncode, out, err


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_pass_writes_a_complete_record(tmp_path: Path, testbed_env: dict[str, str]) -> None:
    profile = write_profile(tmp_path / "p.yaml")
    code, out, err = _finish(start_run(profile, testbed_env, "--json"))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["verdict"] == "PASS"
    (run_dir,) = run_dirs(testbed_env)
    for name in RECORD_FILES:
        assert (run_dir / name).is_file(), name
    assert (run_dir / "captures" / "ue_a1_radio.pcapng").stat().st_size > 0
    stream = summary["streams"][0]
    assert stream["sent"] == 300 and stream["received"] < stream["sent"]
    # the 0.5 s outage is what the stream saw (100 pps: one packet interval of slack)
    assert 450 <= stream["max_gap_ms"] <= 700
    assert [e["action"] for e in summary["events"]] == ["link_down", "link_up"]
    assert all(e["ok"] for e in summary["events"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["verdict"] == "PASS"
    assert 'failures="0"' in (run_dir / "junit.xml").read_text()
    assert_clean(run_dir)
    index = Index(testbed_env["TESTBED_DATABASE_URL"])
    assert index.all_leases() == []
    assert index.get_run(run_dir.name)["verdict"] == "PASS"


def test_failed_limit_exits_1(tmp_path: Path, testbed_env: dict[str, str]) -> None:
    kpis = [{"name": "impossible", "stream": "s1", "metric": "loss_pct", "max": 0}]
    profile = write_profile(tmp_path / "p.yaml", kpis=kpis)
    code, out, err = _finish(start_run(profile, testbed_env))
    assert code == 1, err
    assert "FAIL" in out
    (run_dir,) = run_dirs(testbed_env)
    assert _summary(run_dir)["kpis"][0]["verdict"] == "FAIL"
    assert_clean(run_dir)


def test_failing_action_is_an_error(tmp_path: Path, testbed_env: dict[str, str]) -> None:
    timeline = [{"at_s": 0.5, "device": "net", "action": "link_down", "args": {"link": "nope"}}]
    profile = write_profile(tmp_path / "p.yaml", timeline=timeline)
    code, _, err = _finish(start_run(profile, testbed_env))
    assert code == 2, err
    (run_dir,) = run_dirs(testbed_env)
    summary = _summary(run_dir)
    assert summary["verdict"] == "ERROR"
    assert any("unknown link 'nope'" in e for e in summary["errors"])
    assert summary["events"][0]["ok"] is False
    assert_clean(run_dir)


def test_timeout_is_an_error(tmp_path: Path, testbed_env: dict[str, str]) -> None:
    profile = write_profile(tmp_path / "p.yaml", duration_s=20)
    started = time.monotonic()
    code, _, err = _finish(start_run(profile, testbed_env, "--timeout", "3"))
    assert code == 2, err
    assert time.monotonic() - started < 15
    (run_dir,) = run_dirs(testbed_env)
    summary = _summary(run_dir)
    assert summary["verdict"] == "ERROR"
    assert any("time limit" in e for e in summary["errors"])
    assert_clean(run_dir)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_aborts_and_tears_down(
    tmp_path: Path, testbed_env: dict[str, str], sig: signal.Signals
) -> None:
    profile = write_profile(tmp_path / "p.yaml", duration_s=30)
    proc = start_run(profile, testbed_env)
    run_dir = wait_for_event(testbed_env, "traffic.started")
    time.sleep(1.0)
    proc.send_signal(sig)
    code, _, err = _finish(proc)
    assert code == 2, err
    summary = _summary(run_dir)
    assert summary["verdict"] == "ABORTED"
    assert summary["signals"] == [sig.name]
    # what was measured before the signal is kept, and says it is partial
    (stream,) = summary["streams"]
    assert stream["received"] > 0
    assert any("partial" in n for n in stream["notes"])
    assert (run_dir / "captures" / "ue_a1_radio.pcapng").stat().st_size > 0
    assert_clean(run_dir)
    assert Index(testbed_env["TESTBED_DATABASE_URL"]).all_leases() == []


def test_sigkill_then_cleanup(tmp_path: Path, testbed_env: dict[str, str]) -> None:
    # with device emulators too: processes outside the namespaces that cleanup must stop
    profile = write_profile(tmp_path / "p.yaml", duration_s=30, devices=["modem_a1", "atten"])
    proc = start_run(profile, testbed_env)
    run_dir = wait_for_event(testbed_env, "traffic.started")
    proc.kill()
    proc.communicate()
    prefix = prefix_of(run_dir)
    assert namespaces_with(prefix), "a SIGKILLed run cannot tear down by itself"
    index = Index(testbed_env["TESTBED_DATABASE_URL"])
    assert index.all_leases(), "its leases are still held"

    cleanup = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "cleanup"],
        cwd=REPO,
        env=testbed_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cleanup.returncode == 0, cleanup.stderr
    assert "removed namespace" in cleanup.stdout
    assert_clean(run_dir)
    assert index.all_leases() == []
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "crashed" and manifest["verdict"] == "ABORTED"
    assert index.get_run(run_dir.name)["status"] == "crashed"
    assert (run_dir / "captures" / "ue_a1_radio.pcapng").exists(), "captures are kept"
    assert not list(Path(testbed_env["TESTBED_STATE_DIR"]).glob("*.json"))

    again = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "cleanup"],
        cwd=REPO,
        env=testbed_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.stdout.strip() == "nothing to clean up"


def test_held_device_fails_fast_or_waits(tmp_path: Path, testbed_env: dict[str, str]) -> None:
    first = start_run(write_profile(tmp_path / "a.yaml", duration_s=4), testbed_env)
    try:
        wait_for_event(testbed_env, "device.opened")
        second = start_run(write_profile(tmp_path / "b.yaml", duration_s=2), testbed_env)
        code, out, err = _finish(second)
        assert code == 2, err
        assert "is leased by run" in out and "exit_paths" in out
        waiting = start_run(
            write_profile(tmp_path / "c.yaml", duration_s=2), testbed_env, "--wait", "60", "--json"
        )
        code, out, err = _finish(waiting, timeout_s=90)
        assert code == 0, err
        assert json.loads(out)["verdict"] == "PASS"
    finally:
        code, _, err = _finish(first)
    assert code == 0, err
    for run_dir in run_dirs(testbed_env):
        if (run_dir / "summary.json").exists():
            assert_clean(run_dir)
