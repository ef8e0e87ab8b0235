"""``testbed cleanup``: remove what runs that died without tearing down left behind.

A run's state file names its controller, its namespace prefix and its processes. When the
controller is gone, its processes are killed (checked against their start time, so a
reused pid is never hit), its namespaces (and anything still running inside them) are
removed, its leases are released and its run record is marked as crashed. On request,
namespaces with our prefix pattern that no live run claims are removed as well.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
import time
from pathlib import Path

from drivers.netns import destroy, list_namespaces
from testbed.errors import StoreError
from testbed.results.index import Index, this_host
from testbed.results.record import RunRecord
from testbed.runner.state import PREFIX_RE, RunState, process_alive, read_states
from testbed.settings import Settings


def cleanup(settings: Settings, include_live: bool = False, orphans: bool = False) -> list[str]:
    """Clean up dead runs; returns one line per thing removed or repaired.

    ``orphans`` also removes namespaces named like ours that no state file of this state
    directory claims. It is off by default: another controller with its own state
    directory (a test, a benchmark) may own them and be alive.
    """
    report: list[str] = []
    live_prefixes: set[str] = set()
    index: Index | None = None
    with contextlib.suppress(StoreError):
        index = Index(settings.database_url)
    for path, state in read_states(settings.state_dir):
        if state is None:
            report.append(f"removed unreadable state file {path}")
            path.unlink(missing_ok=True)
            continue
        if state.controller_alive() and not include_live:
            live_prefixes.add(state.prefix)
            continue
        report += _clean_run(state, index)
        path.unlink(missing_ok=True)
    if orphans:
        pattern = re.compile(PREFIX_RE)
        unclaimed = [
            n
            for n in list_namespaces("tb")
            if pattern.match(n) and n.split("-", 1)[0] not in live_prefixes
        ]
        if unclaimed:
            report += [f"removed orphan namespace {n}" for n in destroy("tb", unclaimed)]
    if index is not None:
        report += _release_dead_local_leases(index, settings)
        index.close()
    return report


def _clean_run(state: RunState, index: Index | None) -> list[str]:
    report = [f"run {state.run_id}: controller pid {state.pid} is gone; cleaning up"]
    for proc in state.processes:
        if process_alive(proc.pid, proc.start_time):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline and process_alive(proc.pid, proc.start_time):
                    time.sleep(0.02)
                if process_alive(proc.pid, proc.start_time):
                    os.kill(proc.pid, signal.SIGKILL)
            report.append(f"  killed {proc.role} (pid {proc.pid})")
    for name in destroy(state.prefix + "-"):
        report.append(f"  removed namespace {name}")
    for sock in Path(tempfile.gettempdir()).glob(f"{state.prefix}-*.sock"):
        sock.unlink(missing_ok=True)
        report.append(f"  removed control socket {sock}")
    if index is not None:
        held = [lease.device for lease in index.all_leases() if lease.run_id == state.run_id]
        index.release(state.run_id)
        report += [f"  released lease {device}" for device in held]
        with contextlib.suppress(StoreError):
            row = index.get_run(state.run_id)
            if row is not None and row["status"] == "running":
                row.update(status="crashed", verdict="ABORTED", ended_at=time.time())
                index.put_run(**row)
    record = RunRecord(Path(state.run_dir))
    with contextlib.suppress(StoreError):
        manifest = record.manifest()
        if manifest.get("status") == "running":
            record.update_manifest(
                status="crashed",
                verdict="ABORTED",
                crash_note="the controller died before tearing down; `testbed cleanup` "
                "removed its leftovers. Captures and events written until then are kept.",
            )
            report.append(f"  marked run record {record.path} as crashed")
    return report


def _release_dead_local_leases(index: Index, settings: Settings) -> list[str]:
    """Leases held by a pid of this host that no longer runs (without a state file)."""
    report = []
    host = this_host()
    for lease in index.all_leases():
        name, _, pid = lease.holder.rpartition(":")
        if name == host and pid.isdigit() and not process_alive(int(pid), None):
            index.release(lease.run_id, [lease.device])
            report.append(f"released lease {lease.device} of dead run {lease.run_id}")
    return report
