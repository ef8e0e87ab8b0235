"""The run index and the device leases: all-or-none, expiry, waiting, several controllers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import LeaseError, StoreError
from testbed.results.index import Index, Lease, holder_name

TTL = 30.0


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'index.sqlite3'}"


@pytest.fixture
def index(url: str) -> Iterator[Index]:
    idx = Index(url)
    try:
        yield idx
    finally:
        idx.close()


def held_by(index: Index) -> dict[str, str]:
    return {lease.device: lease.run_id for lease in index.all_leases()}


# leases --------------------------------------------------------------------------------


def test_acquire_records_the_lease(index: Index) -> None:
    before = time.time()
    index.acquire(["lab/radio1", "lab/switch"], "run-a", "host-a:100", TTL)
    lease = index.lease("lab/radio1")
    assert lease is not None
    assert (lease.device, lease.run_id, lease.holder) == ("lab/radio1", "run-a", "host-a:100")
    assert before <= lease.acquired_at <= time.time()
    assert lease.expires_at == pytest.approx(lease.acquired_at + TTL)
    assert held_by(index) == {"lab/radio1": "run-a", "lab/switch": "run-a"}
    assert index.lease("lab/unknown") is None


def test_held_device_is_refused_naming_the_holder(index: Index) -> None:
    index.acquire(["lab/radio1"], "run-a", "host-a:100", TTL)
    with pytest.raises(LeaseError) as caught:
        index.acquire(["lab/radio1"], "run-b", "host-b:200", TTL)
    message = str(caught.value)
    assert "lab/radio1" in message
    assert "run-a" in message
    assert "host-a:100" in message
    assert "run-b" not in message
    assert held_by(index) == {"lab/radio1": "run-a"}


def test_acquire_is_all_or_none(index: Index) -> None:
    index.acquire(["lab/held"], "run-a", "host-a:100", TTL)
    with pytest.raises(LeaseError, match="run-a"):
        index.acquire(["lab/free", "lab/held"], "run-b", "host-b:200", TTL)
    # the free device was taken for a moment, then given back: nothing of run-b remains
    assert index.lease("lab/free") is None
    assert held_by(index) == {"lab/held": "run-a"}
    # and it is really free: a third run gets it
    index.acquire(["lab/free"], "run-c", "host-c:300", TTL)
    assert held_by(index) == {"lab/held": "run-a", "lab/free": "run-c"}


def test_failed_acquire_keeps_leases_held_before(index: Index) -> None:
    """A run that already holds a device and fails to get more keeps what it had."""
    index.acquire(["lab/mine"], "run-a", "host-a:100", TTL)
    index.acquire(["lab/theirs"], "run-b", "host-b:200", TTL)
    with pytest.raises(LeaseError, match="run-b"):
        index.acquire(["lab/mine", "lab/new", "lab/theirs"], "run-a", "host-a:100", TTL)
    assert held_by(index) == {"lab/mine": "run-a", "lab/theirs": "run-b"}


def test_expired_lease_can_be_taken(index: Index) -> None:
    index.acquire(["lab/radio1"], "run-a", "host-a:100", 0.2)
    with pytest.raises(LeaseError):
        index.acquire(["lab/radio1"], "run-b", "host-b:200", TTL)
    time.sleep(0.3)
    index.acquire(["lab/radio1"], "run-b", "host-b:200", TTL)
    lease = index.lease("lab/radio1")
    assert lease is not None
    assert (lease.run_id, lease.holder) == ("run-b", "host-b:200")


def test_renew_extends_expiry(index: Index) -> None:
    index.acquire(["lab/a", "lab/b"], "run-a", "host-a:100", 1.0)
    index.acquire(["lab/c"], "run-b", "host-b:200", 1.0)
    first = index.lease("lab/a")
    other = index.lease("lab/c")
    assert first is not None and other is not None
    assert index.renew("run-a", 60.0) == 2
    renewed = index.lease("lab/a")
    assert renewed is not None
    assert renewed.expires_at > first.expires_at + 50
    assert renewed.acquired_at == first.acquired_at
    assert index.lease("lab/c") == other  # another run's lease is untouched
    assert index.renew("run-nobody", 60.0) == 0


def test_renewed_lease_does_not_expire(index: Index) -> None:
    index.acquire(["lab/radio1"], "run-a", "host-a:100", 0.2)
    index.renew("run-a", TTL)
    time.sleep(0.3)
    with pytest.raises(LeaseError, match="run-a"):
        index.acquire(["lab/radio1"], "run-b", "host-b:200", TTL)


def test_release_frees(index: Index) -> None:
    index.acquire(["lab/a", "lab/b", "lab/c"], "run-a", "host-a:100", TTL)
    index.acquire(["lab/x"], "run-x", "host-x:1", TTL)
    index.release("run-a", ["lab/a"])
    assert held_by(index) == {"lab/b": "run-a", "lab/c": "run-a", "lab/x": "run-x"}
    index.release("run-a", [])  # nothing named: nothing released
    assert len(index.all_leases()) == 3
    index.release("run-other", ["lab/b"])  # not its lease: nothing happens
    assert index.lease("lab/b") is not None
    index.release("run-a")
    assert held_by(index) == {"lab/x": "run-x"}
    index.acquire(["lab/a", "lab/b"], "run-b", "host-b:200", TTL)
    assert held_by(index) == {"lab/a": "run-b", "lab/b": "run-b", "lab/x": "run-x"}


def test_wait_until_the_holder_releases(index: Index) -> None:
    index.acquire(["lab/radio1"], "run-a", "host-a:100", TTL)
    waits: list[Lease] = []
    timer = threading.Timer(0.5, index.release, args=("run-a",))
    timer.start()
    try:
        started = time.monotonic()
        index.acquire(
            ["lab/radio1"], "run-b", "host-b:200", TTL, wait_s=5, poll_s=0.05, on_wait=waits.append
        )
        waited = time.monotonic() - started
    finally:
        timer.cancel()
        timer.join()
    assert 0.4 <= waited < 4
    assert len(waits) >= 1
    assert all(w.run_id == "run-a" and w.device == "lab/radio1" for w in waits)
    lease = index.lease("lab/radio1")
    assert lease is not None and lease.run_id == "run-b"


def test_wait_gives_up_at_the_deadline(index: Index) -> None:
    index.acquire(["lab/radio1"], "run-a", "host-a:100", TTL)
    calls: list[Any] = []
    started = time.monotonic()
    with pytest.raises(LeaseError, match="run-a"):
        index.acquire(
            ["lab/radio1"],
            "run-b",
            "host-b:200",
            TTL,
            wait_s=0.3,
            poll_s=0.05,
            on_wait=calls.append,
        )
    assert 0.25 <= time.monotonic() - started < 3
    assert len(calls) >= 2
    assert held_by(index) == {"lab/radio1": "run-a"}


def test_reacquiring_own_lease_is_fine(index: Index) -> None:
    index.acquire(["lab/a"], "run-a", "host-a:100", TTL)
    index.acquire(["lab/a", "lab/b"], "run-a", "host-a:100", TTL)
    index.acquire(["lab/a"], "run-a", "host-a:100", TTL)
    assert held_by(index) == {"lab/a": "run-a", "lab/b": "run-a"}


def test_two_controllers_share_leases(url: str) -> None:
    first, second = Index(url), Index(url)
    try:
        first.acquire(["lab/radio1"], "run-a", "host-a:100", TTL)
        lease = second.lease("lab/radio1")
        assert lease is not None and lease.run_id == "run-a"
        with pytest.raises(LeaseError, match="host-a:100"):
            second.acquire(["lab/radio1"], "run-b", "host-b:200", TTL)
        second.acquire(["lab/radio2"], "run-b", "host-b:200", TTL)
        assert held_by(first) == {"lab/radio1": "run-a", "lab/radio2": "run-b"}
        first.release("run-a")
        second.acquire(["lab/radio1"], "run-b", "host-b:200", TTL)
        assert held_by(first) == {"lab/radio1": "run-b", "lab/radio2": "run-b"}
    finally:
        first.close()
        second.close()


def _race(url: str, workers: int, devices: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Every worker opens its own Index at once and asks for ``devices``."""
    opened = threading.Barrier(workers)
    ready = threading.Barrier(workers)
    won: list[str] = []
    refused: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        run_id = f"run-{n}"
        idx: Index | None = None
        try:
            opened.wait(timeout=10)
            idx = Index(url)
        except Exception as exc:
            with lock:
                errors.append(f"{run_id}: {exc!r}")
        ready.wait(timeout=10)  # everybody asks at once
        if idx is None:
            return
        try:
            idx.acquire(devices, run_id, holder_name(10_000 + n), TTL)
            with lock:
                won.append(run_id)
        except LeaseError:
            with lock:
                refused.append(run_id)
        except Exception as exc:
            with lock:
                errors.append(f"{run_id}: {exc!r}")
        finally:
            idx.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return won, refused, errors


def test_concurrent_acquisition_has_one_winner(url: str) -> None:
    Index(url).close()  # the schema exists, as it does once any controller has run
    won, refused, errors = _race(url, 8, ["lab/radio1"])
    assert errors == []
    assert len(won) == 1
    assert len(refused) == 7
    check = Index(url)
    try:
        assert held_by(check) == {"lab/radio1": won[0]}
    finally:
        check.close()


def test_concurrent_acquisition_of_several_devices_never_splits(url: str) -> None:
    Index(url).close()
    devices = ["lab/a", "lab/b", "lab/c"]
    won, refused, errors = _race(url, 8, devices)
    assert errors == []
    assert len(won) == 1
    assert len(refused) == 7
    check = Index(url)
    try:
        assert held_by(check) == dict.fromkeys(devices, won[0])
    finally:
        check.close()


def test_controllers_starting_together_on_a_fresh_database(tmp_path: Path) -> None:
    for trial in range(5):
        url = f"sqlite:///{tmp_path / f'fresh{trial}.sqlite3'}"
        won, refused, errors = _race(url, 8, ["lab/radio1"])
        assert errors == []
        assert len(won) == 1 and len(refused) == 7


def test_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="run index"):
        Index(f"sqlite:///{tmp_path / 'missing-dir' / 'index.sqlite3'}")


# runs ----------------------------------------------------------------------------------


def run_row(run_id: str, started_at: float, profile: str = "p1", lab: str = "l1") -> dict[str, Any]:
    return {
        "run_id": run_id,
        "profile": profile,
        "lab": lab,
        "verdict": "PASS",
        "status": "running",
        "started_at": started_at,
        "ended_at": None,
        "path": f"/results/{run_id}",
    }


def test_put_run_inserts_then_updates(index: Index) -> None:
    assert index.get_run("r1") is None
    index.put_run(**run_row("r1", 100.0))
    assert index.get_run("r1") == run_row("r1", 100.0)
    index.put_run(
        **{**run_row("r1", 100.0), "status": "done", "verdict": "FAIL", "ended_at": 160.0}
    )
    row = index.get_run("r1")
    assert row is not None
    assert (row["status"], row["verdict"], row["ended_at"]) == ("done", "FAIL", 160.0)
    assert len(index.list_runs()) == 1


def test_put_run_without_required_fields_is_a_store_error(index: Index) -> None:
    with pytest.raises(StoreError, match="r1"):
        index.put_run(run_id="r1", profile="p1")


def test_list_runs_filters_orders_and_limits(index: Index) -> None:
    index.put_run(**run_row("old", 100.0, profile="p1", lab="l1"))
    index.put_run(**run_row("new", 300.0, profile="p1", lab="l2"))
    index.put_run(**run_row("mid", 200.0, profile="p2", lab="l1"))
    index.put_run(**run_row("newest", 400.0, profile="p2", lab="l2"))

    assert [r["run_id"] for r in index.list_runs()] == ["newest", "new", "mid", "old"]
    assert [r["run_id"] for r in index.list_runs(profile="p1")] == ["new", "old"]
    assert [r["run_id"] for r in index.list_runs(lab="l1")] == ["mid", "old"]
    assert [r["run_id"] for r in index.list_runs(profile="p2", lab="l2")] == ["newest"]
    assert index.list_runs(profile="nope") == []
    assert [r["run_id"] for r in index.list_runs(limit=2)] == ["newest", "new"]
    assert [r["run_id"] for r in index.list_runs(profile="p1", limit=1)] == ["new"]
    assert index.list_runs()[0] == run_row("newest", 400.0, profile="p2", lab="l2")


def test_runs_are_shared_between_index_objects(url: str) -> None:
    first, second = Index(url), Index(url)
    try:
        first.put_run(**run_row("r1", 100.0))
        assert second.get_run("r1") == run_row("r1", 100.0)
    finally:
        first.close()
        second.close()
