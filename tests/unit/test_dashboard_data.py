"""The data behind the dashboard: delay series and their reduction, the KPI index, re-indexing
records, the run view's floor timeline, and API tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from testbed.api.auth import digest, load_tokens, new_token
from testbed.errors import ConfigError
from testbed.results.catalog import sync_index
from testbed.results.index import Index
from testbed.results.series import (
    downsample,
    histogram,
    read_series,
    series_files,
    write_series,
)
from testbed.results.view import run_view

T0 = 1_795_000_000 * 10**9


def test_downsampling_keeps_spikes_and_gaps() -> None:
    tx = T0 + np.arange(10_000, dtype=np.int64) * 20_000_000  # 200 s at 50 pps
    delay = np.full(10_000, 20.0)
    delay[4321] = 250.0  # one late packet
    keep = (tx < T0 + 60 * 10**9) | (tx >= T0 + 70 * 10**9)  # a 10 s outage
    plot = downsample(tx[keep], delay[keep], 200)
    assert len(plot["t"]) <= 200
    assert max(plot["owd_max"]) == 250.0 and min(plot["owd_min"]) == 20.0
    steps = np.diff(plot["t"])
    assert steps.max() == pytest.approx(10.0, abs=1.1)  # the outage stays a hole
    assert all(
        lo <= m <= hi
        for lo, m, hi in zip(plot["owd_min"], plot["owd_mean"], plot["owd_max"], strict=True)
    )


def test_short_series_are_not_reduced_and_empty_ones_are_empty() -> None:
    tx = T0 + np.array([3, 1, 2], dtype=np.int64) * 10**9
    plot = downsample(tx, np.array([30.0, 10.0, 20.0]), 100)
    assert plot["owd_mean"] == [10.0, 20.0, 30.0]  # in send order
    empty = downsample(np.empty(0, np.int64), np.empty(0), 100)
    assert empty == {"t": [], "owd_min": [], "owd_mean": [], "owd_max": []}
    assert histogram(np.empty(0)) == {"edges_ms": [], "counts": []}
    assert sum(histogram(np.arange(1000.0), bins=7)["counts"]) == 1000


def test_series_files_round_trip_and_refuse_other_arrays(tmp_path: Path) -> None:
    seq = np.arange(5, dtype=np.uint32)
    tx = T0 + seq.astype(np.int64) * 10**7
    write_series(tmp_path, "up", 2, None, seq, tx, tx + 20_000_000)
    write_series(tmp_path, "down", 1, 3, seq, tx, tx + 5_000_000)
    keys = [(k.stream, k.repetition, k.point) for k in series_files(tmp_path)]
    assert keys == [("down", 1, 3), ("up", 2, None)]
    rows = read_series(tmp_path / "series" / "up-rep2.npy")
    assert rows["seq"].tolist() == list(range(5))
    assert ((rows["rx_ns"] - rows["tx_ns"]) == 20_000_000).all()
    np.save(tmp_path / "series" / "evil-rep1.npy", np.arange(3))
    with pytest.raises(ValueError, match="not a delay series"):
        read_series(tmp_path / "series" / "evil-rep1.npy")


def _run(index: Index, run_id: str, started: float, verdict: str = "PASS", **kw: str) -> dict:
    row = {
        "run_id": run_id,
        "profile": kw.get("profile", "p"),
        "lab": kw.get("lab", "l"),
        "verdict": verdict,
        "status": kw.get("status", "complete"),
        "started_at": started,
        "ended_at": started + 1,
        "path": f"/r/{run_id}",
    }
    index.put_run(**row)
    return row


def test_kpi_index_gives_trends_of_finished_runs_oldest_first(tmp_path: Path) -> None:
    index = Index(f"sqlite:///{tmp_path}/i.sqlite3")
    for i, value in enumerate([21.0, 22.5, float("nan")]):
        row = _run(index, f"r{i}", 100.0 + i)
        index.put_kpis(
            row,
            [
                {"name": "owd", "unit": "ms", "value": value, "verdict": "PASS"},
                {"name": "loss", "unit": "%", "value": 0.1, "verdict": "PASS"},
            ],
        )
    running = _run(index, "live", 200.0, "RUNNING", status="running")
    index.put_kpis(running, [{"name": "owd", "value": 99.0}])
    trend = index.kpi_trend("p", "l", "owd")
    assert [(t["run_id"], t["value"]) for t in trend] == [("r0", 21.0), ("r1", 22.5), ("r2", None)]
    assert [t["run_id"] for t in index.kpi_trend("p", "l", None, limit=1)] == ["r2", "r2"]
    assert index.cells() == [{"profile": "p", "lab": "l", "runs": 4, "newest": 200.0}]
    assert index.count_runs(verdict="RUNNING") == 1
    assert index.count_runs(since=101.0, until=200.0) == 2
    assert index.delete_run("r1") and not index.delete_run("r1")
    assert [t["run_id"] for t in index.kpi_trend("p", "l", "owd")] == ["r0", "r2"]


def _record(folder: Path, run_id: str, status: str = "complete", **summary: object) -> None:
    path = folder / run_id
    path.mkdir(parents=True)
    manifest = {
        "run_id": run_id,
        "profile": "p",
        "lab": "l",
        "status": status,
        "verdict": summary.get("verdict"),
        "started_at": 100.0,
        "ended_at": 101.0,
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    if summary:
        (path / "summary.json").write_text(json.dumps(summary))


def test_sync_indexes_new_records_and_finishes_stale_ones(tmp_path: Path) -> None:
    results = tmp_path / "results"
    index = Index(f"sqlite:///{tmp_path}/i.sqlite3")
    _record(results, "copied", verdict="FAIL", kpis=[{"name": "owd", "value": 30.0}])
    _record(results, "crashed", status="crashed")
    (results / "not-a-run").mkdir()
    _run(index, "crashed", 100.0, "RUNNING", status="running")
    assert sync_index(index, results) == 2
    assert index.get_run("copied")["verdict"] == "FAIL"
    assert index.get_run("crashed")["status"] == "crashed"
    assert index.get_run("not-a-run") is None
    assert [k["value"] for k in index.kpis_of(["copied"])] == [30.0]
    assert sync_index(index, results) == 0


def test_floor_timeline_draws_each_burst_once_however_many_listened(tmp_path: Path) -> None:
    burst = {"time": 10.0, "talker_user": "sip:ue_a1@lab", "ssrc": 7, "seq": 1, "packets": 50}
    mcptt = {
        "bursts": [burst | {"listener_user": f"sip:ue_b{i}@lab"} for i in (1, 2)],
        "requests": [
            {
                "time": 9.9,
                "user_id": "sip:ue_a1@lab",
                "outcome": "granted",
                "access_time_ms": 40.0,
                "priority": 1,
            }
        ],
        "preemptions": [
            {
                "time": 11.0,
                "talker": {"user_id": "sip:ue_a1@lab"},
                "preempting": {"user_id": "sip:ue_b1@lab"},
                "revoke_time_ms": 41.0,
            }
        ],
    }
    _record(tmp_path, "run", verdict="PASS", kpis=[], streams=[], mcptt=mcptt)
    floor = run_view(tmp_path / "run")["floor"]
    assert floor["users"] == ["ue_a1"]
    assert floor["bursts"] == [{"user": "ue_a1", "start": 10.0, "end": 11.0, "listeners": 2}]
    assert floor["preemptions"] == [
        {"time": 11.0, "talker": "ue_a1", "by": "ue_b1", "revoke_time_ms": 41.0}
    ]


def test_tokens_are_stored_as_digests_with_their_rights(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    ci = new_token(path, "ci", ["read", "run"])
    admin = new_token(path, "admin", ["delete"])
    text = path.read_text()
    assert ci not in text and admin not in text and digest(ci) in text
    assert path.stat().st_mode & 0o777 == 0o600
    tokens = {t.name: t.rights for t in load_tokens(path)}
    assert tokens == {"ci": frozenset({"read", "run"}), "admin": frozenset({"delete"})}
    with pytest.raises(ConfigError, match="rights"):
        new_token(path, "bad", ["root"])
    path.write_text("tokens: [{sha256: abc, rights: [read]}]")
    with pytest.raises(ConfigError, match="64 hex"):
        load_tokens(path)


def test_a_record_without_plan_or_summary_is_served(tmp_path: Path) -> None:
    """Crashed and imported records may lack files; the API shows what there is."""
    from fastapi.testclient import TestClient

    from testbed.api import ApiConfig, create_app

    results = tmp_path / "results"
    _record(results, "crashed", status="crashed")
    config = ApiConfig(results_dir=results, database_url=f"sqlite:///{tmp_path}/i.sqlite3")
    client = TestClient(create_app(config))
    detail = client.get("/api/v1/runs/crashed").json()
    assert detail["summary"] is None and detail["run"]["status"] == "crashed"
    assert detail["run"]["repetitions"] is None
    view = client.get("/api/v1/runs/crashed/view").json()
    assert view["kpis"] == [] and view["series"] == [] and view["floor"] is None


def test_run_list_answers_follow_every_write_to_the_index(tmp_path: Path) -> None:
    """The list's answers are reused while the index is unchanged; a write by another
    controller (another Index on the same database) shows in the next answer."""
    from fastapi.testclient import TestClient

    from testbed.api import ApiConfig, create_app

    url = f"sqlite:///{tmp_path}/i.sqlite3"
    client = TestClient(create_app(ApiConfig(results_dir=tmp_path / "r", database_url=url)))
    assert client.get("/api/v1/runs").json()["total"] == 0
    controller = Index(url)
    row = _run(controller, "r1", 100.0, "RUNNING", status="running")
    assert [r["verdict"] for r in client.get("/api/v1/runs").json()["items"]] == ["RUNNING"]
    controller.put_run(**(row | {"verdict": "PASS", "status": "complete"}))
    assert [r["verdict"] for r in client.get("/api/v1/runs").json()["items"]] == ["PASS"]
    version = controller.version()
    controller.put_kpis(row, [{"name": "owd", "value": 1.0}])
    assert controller.version() == version + 1
    controller.delete_run("r1")
    assert client.get("/api/v1/runs").json() == {"items": [], "total": 0, "limit": 50, "offset": 0}


def test_a_runs_answers_follow_its_record(tmp_path: Path) -> None:
    """A run's answers are reused while its record is unchanged; a running run's summary
    shows as soon as it is written."""
    from fastapi.testclient import TestClient

    from testbed.api import ApiConfig, create_app

    results = tmp_path / "results"
    _record(results, "live", status="running")
    config = ApiConfig(results_dir=results, database_url=f"sqlite:///{tmp_path}/i.sqlite3")
    client = TestClient(create_app(config))
    assert client.get("/api/v1/runs/live").json()["summary"] is None
    assert client.get("/api/v1/runs/live/view").json()["kpis"] == []
    kpis = [{"name": "owd", "value": 20.0, "verdict": "PASS"}]
    (results / "live" / "summary.json").write_text(json.dumps({"verdict": "PASS", "kpis": kpis}))
    assert client.get("/api/v1/runs/live").json()["summary"]["kpis"] == kpis
    assert client.get("/api/v1/runs/live/view").json()["kpis"] == kpis


def test_chosen_run_ids_still_give_short_hex_namespace_names() -> None:
    """The API names its runs; `testbed cleanup --orphans` knows namespaces by tb<hex>-."""
    from testbed.runner.run import _name_suffix

    assert _name_suffix("20261122T030757Z-dash_short-02a916") == "02a916"
    for chosen in ("quick-1", "nightly.run-ABCDEF", "x"):
        suffix = _name_suffix(chosen)
        assert len(suffix) == 6 and int(suffix, 16) >= 0
