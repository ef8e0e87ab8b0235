"""Helpers for tests that run the real controller as a subprocess on the emulated lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "profiles" / "labs" / "emulated.yaml"


def write_profile(path: Path, duration_s: float = 3.0, **extra: Any) -> Path:
    """A short profile on the emulated lab: one probe stream, a 1 s outage, a loose KPI."""
    profile: dict[str, Any] = {
        "schema_version": 1,
        "name": "exit_paths",
        "duration_s": duration_s,
        "streams": [
            {"id": "s1", "from": "ue_a1", "to": "mcptt_as", "rate_pps": 100, "payload_bytes": 64},
        ],
        "timeline": [
            {"at_s": 1.0, "device": "net", "action": "link_down", "args": {"link": "radio_a1"}},
            {"at_s": 1.5, "device": "net", "action": "link_up", "args": {"link": "radio_a1"}},
        ],
        "captures": ["ue_a1_radio"],
        "kpis": [{"name": "loss", "stream": "s1", "metric": "loss_pct", "max": 60}],
    }
    profile.update(extra)
    path.write_text(json.dumps(profile))  # JSON is YAML
    return path


def start_run(profile: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "testbed.cli", "run", str(profile), "--lab", str(LAB), *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_dirs(env: dict[str, str]) -> list[Path]:
    results = Path(env["TESTBED_RESULTS_DIR"])
    if not results.is_dir():
        return []
    return sorted(p for p in results.iterdir() if p.is_dir())


def wait_for_event(env: dict[str, str], text: str, timeout_s: float = 30.0) -> Path:
    """Wait until the (only) run record's event log contains ``text``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run_dir in run_dirs(env):
            events = run_dir / "events.jsonl"
            if events.exists() and text in events.read_text():
                return run_dir
        time.sleep(0.05)
    raise AssertionError(f"no event {text!r} within {timeout_s} s")


def namespaces_with(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def foreign_ns_processes(marker: str = "") -> list[str]:
    """Processes in another network namespace (like shared/tools/leftovers) whose command
    line contains ``marker`` (the run directory: every process of a run names it)."""
    own = os.readlink("/proc/self/ns/net")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/net") != own:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                if cmd and marker.encode() in cmd:
                    found.append(f"{entry} {cmd.decode(errors='replace')[:100]}")
        except OSError:
            continue
    return found


def processes_naming(marker: str) -> list[str]:
    """Processes in any namespace whose command line contains ``marker`` (emulators of a run
    name files in its run directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if cmd and marker.encode() in cmd:
            found.append(f"{entry} {cmd.decode(errors='replace')[:100]}")
    return found


def prefix_of(run_dir: Path) -> str:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return str(manifest["name_prefix"]) + "-"


def assert_clean(run_dir: Path) -> None:
    prefix = prefix_of(run_dir)
    assert namespaces_with(prefix) == [], f"namespaces left: {namespaces_with(prefix)}"
    assert foreign_ns_processes(str(run_dir)) == [], "processes left in namespaces"
    assert processes_naming(str(run_dir)) == [], "processes of the run left running"
    dumpcaps = subprocess.run(["pgrep", "-af", "dumpcap"], capture_output=True, text=True).stdout
    assert str(run_dir) not in dumpcaps, f"dumpcap left running: {dumpcaps}"
