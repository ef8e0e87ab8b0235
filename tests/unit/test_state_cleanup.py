"""Run state files and ``testbed cleanup``: what a killed run left behind is found and removed.

Namespace handling is replaced by fakes here: a real ``cleanup()`` would also remove the
``tb*`` namespaces of any other run on this machine that the test's state dir does not know.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import testbed.cleanup as cleanup_module
from testbed.cleanup import cleanup
from testbed.results import record as record_module
from testbed.results.index import Index, holder_name
from testbed.results.record import MANIFEST, RunRecord, write_atomic
from testbed.runner.state import (
    RunState,
    StateFile,
    TrackedProcess,
    process_alive,
    process_start_time,
    read_states,
)
from testbed.settings import Settings

# fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start processes for the test; whatever is left is killed and reaped afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(list(argv or ("sleep", "30")))
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has run and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=10)
    return proc.pid


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        results_dir=tmp_path / "results",
        database_url=f"sqlite:///{tmp_path}/i.sqlite3",
        state_dir=tmp_path / "state",
        lease_ttl_s=30,
    )


class FakeNamespaces:
    """Stands in for ``list_namespaces``/``destroy`` of drivers.netns inside cleanup."""

    def __init__(self, existing: Iterable[str] = ()) -> None:
        self.existing = list(existing)
        self.calls: list[tuple[str, list[str] | None]] = []

    def list_namespaces(self, prefix: str) -> list[str]:
        return sorted(n for n in self.existing if n.startswith(prefix))

    def destroy(self, prefix: str, namespaces: Iterable[str] | None = None) -> list[str]:
        names = list(namespaces) if namespaces is not None else None
        self.calls.append((prefix, names))
        chosen = names if names is not None else self.list_namespaces(prefix)
        removed = [n for n in chosen if n.startswith(prefix) and n in self.existing]
        self.existing = [n for n in self.existing if n not in removed]
        return removed


@pytest.fixture
def netns(monkeypatch: pytest.MonkeyPatch) -> FakeNamespaces:
    fake = FakeNamespaces()
    monkeypatch.setattr(cleanup_module, "list_namespaces", fake.list_namespaces)
    monkeypatch.setattr(cleanup_module, "destroy", fake.destroy)
    return fake


@pytest.fixture
def index(settings: Settings) -> Iterator[Index]:
    idx = Index(settings.database_url)
    try:
        yield idx
    finally:
        idx.close()


def leases_of(index: Index) -> dict[str, str]:
    return {lease.device: lease.run_id for lease in index.all_leases()}


def make_run(settings: Settings, index: Index, run_id: str, status: str = "running") -> RunRecord:
    record = RunRecord.create(settings.results_dir, run_id)
    record.update_manifest(run_id=run_id, profile="radio_outage", status=status, verdict=None)
    index.put_run(
        run_id=run_id,
        profile="radio_outage",
        lab="emulated",
        verdict="PASS",
        status=status,
        started_at=1000.0,
        ended_at=None,
        path=str(record.path),
    )
    return record


# state files -------------------------------------------------------------------------------


def test_state_file_is_written_and_tracks_processes(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    state_dir = tmp_path / "state" / "nested"
    state = StateFile(state_dir, RunState("run-1", "tb0a1b2c", str(tmp_path / "run-1")))
    path = state_dir / "run-1.json"
    assert state.path == path
    data = json.loads(path.read_text())
    assert data["run_id"] == "run-1"
    assert data["prefix"] == "tb0a1b2c"
    assert data["pid"] == os.getpid()
    assert data["pid_start_time"] == process_start_time(os.getpid()) is not None
    assert data["processes"] == []

    proc = spawn("sleep", "30")
    state.track(proc, "traffic")
    data = json.loads(path.read_text())
    [tracked] = data["processes"]
    assert tracked["pid"] == proc.pid
    assert tracked["start_time"] == process_start_time(proc.pid) is not None
    assert tracked["role"] == "traffic"
    assert tracked["argv"] == ["sleep", "30"]
    # atomic replacement leaves no temporary files behind
    assert sorted(p.name for p in state_dir.iterdir()) == ["run-1.json"]

    state.remove()
    assert not path.exists()
    state.remove()  # twice is fine


def test_state_round_trips(tmp_path: Path) -> None:
    state = RunState(
        "run-1",
        "tb0a1b2c",
        str(tmp_path),
        pid=12345,
        pid_start_time=777,
        processes=[TrackedProcess(42, 99, "capture", ["dumpcap", "-i", "eth0"])],
        lease_run_id="run-1",
    )
    again = RunState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state


def test_write_atomic_keeps_the_old_file_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run-1.json"
    write_atomic(target, b'{"old": true}\n')

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(record_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b'{"new": true}\n')
    monkeypatch.undo()
    assert target.read_bytes() == b'{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["run-1.json"]
    write_atomic(target, b'{"new": true}\n')
    assert target.read_bytes() == b'{"new": true}\n'


def test_read_states(tmp_path: Path) -> None:
    assert read_states(tmp_path / "missing") == []
    state_dir = tmp_path / "state"
    StateFile(state_dir, RunState("a-good", "tb000001", "/r/a"))
    (state_dir / "b-garbage.json").write_text("{not json")
    (state_dir / "c-empty.json").write_text("")
    (state_dir / "d-missing-keys.json").write_text('{"run_id": "x"}')
    (state_dir / "e-bad-process.json").write_text(
        json.dumps(
            {"run_id": "e", "prefix": "tb", "run_dir": "/r", "pid": 1, "processes": [{"x": 1}]}
        )
    )
    (state_dir / "f-bad-pid.json").write_text(
        json.dumps({"run_id": "f", "prefix": "tb", "run_dir": "/r", "pid": "abc"})
    )
    (state_dir / "notes.txt").write_text("not a state file")
    found = read_states(state_dir)
    assert [p.name for p, _ in found] == [
        "a-good.json",
        "b-garbage.json",
        "c-empty.json",
        "d-missing-keys.json",
        "e-bad-process.json",
        "f-bad-pid.json",
    ]
    good = found[0][1]
    assert good is not None and (good.run_id, good.prefix) == ("a-good", "tb000001")
    assert [s for _, s in found[1:]] == [None] * 5


@pytest.mark.parametrize("text", ["[1, 2]", "null", '"text"', "42"])
def test_read_states_with_json_that_is_not_an_object(tmp_path: Path, text: str) -> None:
    (tmp_path / "run-x.json").write_text(text)
    assert read_states(tmp_path) == [(tmp_path / "run-x.json", None)]


# processes ---------------------------------------------------------------------------------


def test_process_alive(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = spawn("sleep", "30")
    start = process_start_time(proc.pid)
    assert start is not None
    assert process_alive(proc.pid, start)
    assert process_alive(proc.pid, None)
    # the same pid with another start time is another process: pid reuse
    assert not process_alive(proc.pid, start + 1)
    proc.kill()
    proc.wait(timeout=10)
    assert not process_alive(proc.pid, start)
    assert process_start_time(proc.pid) is None


def test_zombie_is_not_alive(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = spawn("sleep", "30")
    start = process_start_time(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    # not reaped yet: a zombie, still in /proc, but dead
    deadline = time.monotonic() + 5
    while process_alive(proc.pid, start) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not process_alive(proc.pid, start)
    assert process_start_time(proc.pid) == start  # still in /proc
    assert proc.wait(timeout=10) == -signal.SIGKILL


def test_own_process_is_alive() -> None:
    assert process_alive(os.getpid(), process_start_time(os.getpid()))
    assert process_start_time(os.getpid()) == process_start_time(os.getpid())


def test_process_start_time_of_missing_pid(dead_pid: int) -> None:
    assert process_start_time(dead_pid) is None
    assert not process_alive(dead_pid, None)


# cleanup -----------------------------------------------------------------------------------


def test_cleanup_of_a_dead_run(
    settings: Settings,
    index: Index,
    netns: FakeNamespaces,
    spawn: Callable[..., subprocess.Popen[bytes]],
    dead_pid: int,
) -> None:
    record = make_run(settings, index, "run-dead")
    make_run(settings, index, "run-other")
    index.acquire(["lab/radio1", "lab/switch"], "run-dead", holder_name(dead_pid), 30)
    index.acquire(["lab/other"], "run-other", holder_name(os.getpid()), 30)
    orphan = spawn("sleep", "30")
    state = StateFile(
        settings.state_dir, RunState("run-dead", "tbdead01", str(record.path), pid=dead_pid)
    )
    state.track(orphan, "traffic")
    assert not state.state.controller_alive()

    report = cleanup(settings)

    # the orphaned process was stopped (SIGTERM first)
    assert orphan.wait(timeout=5) == -signal.SIGTERM
    # the state file is gone
    assert not state.path.exists()
    assert read_states(settings.state_dir) == []
    # the run's namespaces were asked for by its prefix
    assert ("tbdead01-", None) in netns.calls
    # the run record says crashed, and keeps what it had
    manifest = json.loads((record.path / MANIFEST).read_text())
    assert manifest["status"] == "crashed"
    assert manifest["verdict"] == "ABORTED"
    assert manifest["profile"] == "radio_outage"
    assert "cleanup" in manifest["crash_note"]
    # its leases are free, another run's are not
    assert leases_of(index) == {"lab/other": "run-other"}
    index.acquire(["lab/radio1"], "run-new", holder_name(os.getpid()), 30)
    # the index row is crashed too
    row = index.get_run("run-dead")
    assert row is not None
    assert (row["status"], row["verdict"]) == ("crashed", "ABORTED")
    assert row["ended_at"] is not None
    other = index.get_run("run-other")
    assert other is not None and other["status"] == "running"
    # and the report says all of it
    text = "\n".join(report)
    assert f"run run-dead: controller pid {dead_pid} is gone" in text
    assert f"killed traffic (pid {orphan.pid})" in text
    assert "released lease lab/radio1" in text
    assert "released lease lab/switch" in text
    assert "lab/other" not in text
    assert f"marked run record {record.path} as crashed" in text


def test_cleanup_leaves_a_finished_record_alone(
    settings: Settings, index: Index, netns: FakeNamespaces, dead_pid: int
) -> None:
    record = make_run(settings, index, "run-done", status="completed")
    record.update_manifest(verdict="PASS")
    StateFile(settings.state_dir, RunState("run-done", "tbd0ne00", str(record.path), pid=dead_pid))
    cleanup(settings)
    manifest = record.manifest()
    assert (manifest["status"], manifest["verdict"]) == ("completed", "PASS")
    row = index.get_run("run-done")
    assert row is not None and (row["status"], row["verdict"]) == ("completed", "PASS")
    assert read_states(settings.state_dir) == []


def test_cleanup_leaves_a_live_run_alone_unless_asked(
    settings: Settings,
    index: Index,
    netns: FakeNamespaces,
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    record = make_run(settings, index, "run-live")
    index.acquire(["lab/radio1"], "run-live", holder_name(os.getpid()), 30)
    worker = spawn("sleep", "30")
    state = StateFile(settings.state_dir, RunState("run-live", "tb11fe00", str(record.path)))
    state.track(worker, "capture")
    assert state.state.pid == os.getpid()
    assert state.state.controller_alive()
    netns.existing = ["tb11fe00-a", "tb11fe00-sw"]

    report = cleanup(settings)

    assert report == []
    assert worker.poll() is None
    assert process_alive(worker.pid, process_start_time(worker.pid))
    assert state.path.exists()
    assert record.manifest()["status"] == "running"
    assert leases_of(index) == {"lab/radio1": "run-live"}
    index_row = index.get_run("run-live")
    assert index_row is not None and index_row["status"] == "running"
    assert netns.existing == ["tb11fe00-a", "tb11fe00-sw"]

    report = cleanup(settings, include_live=True)

    assert worker.wait(timeout=5) == -signal.SIGTERM
    assert not state.path.exists()
    assert record.manifest()["status"] == "crashed"
    assert leases_of(index) == {}
    assert ("tb11fe00-", None) in netns.calls
    assert "  removed namespace tb11fe00-a" in report


def test_cleanup_of_a_state_file_whose_controller_pid_was_reused(
    settings: Settings,
    index: Index,
    netns: FakeNamespaces,
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """Our own pid, but another start time: the controller that wrote it is gone."""
    record = make_run(settings, index, "run-reused")
    start = process_start_time(os.getpid())
    assert start is not None
    worker = spawn("sleep", "30")
    state = StateFile(
        settings.state_dir,
        RunState(
            "run-reused", "tbaaaaaa", str(record.path), pid=os.getpid(), pid_start_time=start - 1
        ),
    )
    state.track(worker, "traffic")
    cleanup(settings)
    assert worker.wait(timeout=5) == -signal.SIGTERM
    assert not state.path.exists()
    assert record.manifest()["status"] == "crashed"


def test_cleanup_never_kills_a_reused_process_pid(
    settings: Settings,
    index: Index,
    netns: FakeNamespaces,
    spawn: Callable[..., subprocess.Popen[bytes]],
    dead_pid: int,
) -> None:
    """A tracked pid now used by another process (other start time) is left running."""
    record = make_run(settings, index, "run-dead")
    bystander = spawn("sleep", "30")
    start = process_start_time(bystander.pid)
    assert start is not None
    state = RunState(
        "run-dead",
        "tbdead02",
        str(record.path),
        pid=dead_pid,
        processes=[TrackedProcess(bystander.pid, start - 1, "traffic", ["old"])],
    )
    StateFile(settings.state_dir, state)
    report = cleanup(settings)
    assert bystander.poll() is None
    assert not any("killed" in line for line in report)
    assert record.manifest()["status"] == "crashed"


def test_cleanup_removes_unreadable_state_files(settings: Settings, netns: FakeNamespaces) -> None:
    settings.state_dir.mkdir(parents=True)
    garbage = settings.state_dir / "run-x.json"
    garbage.write_text("\x00\x01 not json")
    report = cleanup(settings)
    assert not garbage.exists()
    assert report == [f"removed unreadable state file {garbage}"]


def test_cleanup_releases_leases_of_dead_local_holders(
    settings: Settings, index: Index, netns: FakeNamespaces, dead_pid: int
) -> None:
    """No state file (it was lost), but the holder pid of this host no longer runs."""
    index.acquire(["lab/a", "lab/b"], "run-lost", holder_name(dead_pid), 30)
    index.acquire(["lab/c"], "run-alive", holder_name(os.getpid()), 30)
    index.acquire(["lab/d"], "run-remote", f"another-host-xyz:{dead_pid}", 30)
    report = cleanup(settings)
    assert leases_of(index) == {"lab/c": "run-alive", "lab/d": "run-remote"}
    assert sorted(report) == [
        "released lease lab/a of dead run run-lost",
        "released lease lab/b of dead run run-lost",
    ]


def test_cleanup_removes_orphan_namespaces_only(
    settings: Settings, netns: FakeNamespaces, dead_pid: int, tmp_path: Path
) -> None:
    StateFile(settings.state_dir, RunState("run-live", "tb11fe00", str(tmp_path / "live")))
    netns.existing = [
        "tb11fe00-a",  # a live run's
        "tb0dd000-a",  # nobody's
        "tb0dd000-sw",
        "tbzzzzzz-a",  # not our naming pattern
        "lab-ns",
    ]
    assert cleanup(settings) == [], "orphans are only removed on request"
    report = cleanup(settings, orphans=True)
    assert sorted(report) == [
        "removed orphan namespace tb0dd000-a",
        "removed orphan namespace tb0dd000-sw",
    ]
    assert netns.existing == ["tb11fe00-a", "tbzzzzzz-a", "lab-ns"]


def test_cleanup_with_nothing_to_do(settings: Settings, netns: FakeNamespaces) -> None:
    assert cleanup(settings) == []
    assert netns.calls == []
