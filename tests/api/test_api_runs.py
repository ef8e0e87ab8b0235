"""The read API over a results folder of real runs, through httpx (FastAPI's TestClient).

Figures the API serves are checked against the run record's own files and against the delay
the lab applied: the series' median must be the summary's p50, and both near the delay the
run's profile applied to the radio link.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from testbed.api import ApiConfig, create_app
from testbed.results.series import owd_ms, read_series
from tests.real_runs import LAB_NAME, PROFILE, TWIN_LAB, RealRuns

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(scope="module")
def results(real_runs: RealRuns, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the real runs without their index: the server must rebuild it."""
    target = tmp_path_factory.mktemp("api_runs") / "results"
    shutil.copytree(real_runs.results, target, ignore=shutil.ignore_patterns("index.sqlite3*"))
    return target


@pytest.fixture(scope="module")
def client(results: Path, real_runs: RealRuns) -> Iterator[TestClient]:
    config = ApiConfig(
        results_dir=results,
        database_url=f"sqlite:///{results}/index.sqlite3",
        profiles_dir=real_runs.profiles,
        labs_dir=real_runs.labs,
    )
    with TestClient(create_app(config)) as client:
        yield client


def test_run_list_is_rebuilt_from_the_records_newest_first(
    client: TestClient, real_runs: RealRuns
) -> None:
    page = client.get("/api/v1/runs").json()
    assert page["total"] == 3
    assert [r["run_id"] for r in page["items"]] == list(reversed(real_runs.run_ids))
    first = page["items"][-1]
    assert (first["profile"], first["lab"], first["verdict"], first["status"]) == (
        PROFILE,
        LAB_NAME,
        "PASS",
        "complete",
    )


def test_run_list_filters_and_pages(client: TestClient, real_runs: RealRuns) -> None:
    def ids(query: str) -> list[str]:
        return [r["run_id"] for r in client.get(f"/api/v1/runs?{query}").json()["items"]]

    assert ids("verdict=FAIL") == [real_runs.second]
    assert ids(f"lab={TWIN_LAB}") == [real_runs.other_lab]
    assert ids(f"profile={PROFILE}&lab={LAB_NAME}") == [real_runs.second, real_runs.first]
    assert ids("profile=nothing") == []
    page = client.get("/api/v1/runs?limit=1&offset=1").json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 1, 1)
    assert [r["run_id"] for r in page["items"]] == [real_runs.second]
    started = client.get("/api/v1/runs").json()["items"]
    second_start = next(r["started_at"] for r in started if r["run_id"] == real_runs.second)
    assert ids(f"since={second_start}") == [real_runs.other_lab, real_runs.second]
    assert ids(f"until={second_start}") == [real_runs.first]
    iso = np.datetime_as_string(np.datetime64(int(second_start * 1e6), "us")) + "Z"
    assert ids(f"until={iso}") == [real_runs.first]


def test_one_run_is_its_summary(client: TestClient, real_runs: RealRuns) -> None:
    body = client.get(f"/api/v1/runs/{real_runs.first}").json()
    assert body["summary"] == real_runs.summary(real_runs.first)
    assert body["run"]["repetitions"] == 2
    assert client.get(f"/api/v1/runs/{real_runs.first}/kpis").json() == body["summary"]["kpis"]
    streams = client.get(f"/api/v1/runs/{real_runs.first}/streams").json()
    assert streams == body["summary"]["streams"]


def test_events_are_the_event_log_paged_and_filtered(
    client: TestClient, real_runs: RealRuns
) -> None:
    lines = (real_runs.run_dir(real_runs.first) / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    page = client.get(f"/api/v1/runs/{real_runs.first}/events?offset=2&limit=3").json()
    assert page["total"] == len(events)
    assert page["items"] == events[2:5]
    faults = client.get(f"/api/v1/runs/{real_runs.first}/events?type=action.executed").json()
    assert faults["items"] == [e for e in events if e["type"] == "action.executed"]
    assert sum(e["fault"] for e in faults["items"]) == 2


def _applied_delay_ms(real_runs: RealRuns, run_id: str) -> float:
    """The radio link's delay as the run's profile configured it (the ground truth)."""
    profile = yaml.safe_load((real_runs.run_dir(run_id) / "profile.yaml").read_text())
    (radio,) = profile["impairments"]
    return float(radio["delay_ms"])


@pytest.mark.parametrize("which", ["first", "second"])
def test_series_match_the_summary_and_the_applied_delay(
    client: TestClient, real_runs: RealRuns, which: str
) -> None:
    run_id = getattr(real_runs, which)
    summary = real_runs.summary(run_id)
    delay_ms = _applied_delay_ms(real_runs, run_id)
    for stream in summary["streams"]:
        rows = read_series(
            real_runs.run_dir(run_id) / "series" / f"{stream['id']}-rep{stream['repetition']}.npy"
        )
        assert len(rows) == stream["received"]
        delay = owd_ms(rows)
        assert np.median(delay) == pytest.approx(stream["owd_ms"]["p50"], abs=0.01)
        assert stream["owd_ms"]["p50"] == pytest.approx(delay_ms, abs=3.0)
        plot = client.get(
            f"/api/v1/runs/{run_id}/streams/{stream['id']}/series",
            params={"repetition": stream["repetition"], "max_points": 50},
        ).json()
        assert plot["packets"] == stream["received"]
        assert 0 < len(plot["t"]) <= 50
        assert min(plot["owd_min"]) == pytest.approx(delay.min(), abs=1e-3)
        assert max(plot["owd_max"]) == pytest.approx(delay.max(), abs=1e-3)


def test_view_has_what_the_run_page_draws(client: TestClient, real_runs: RealRuns) -> None:
    view = client.get(f"/api/v1/runs/{real_runs.first}/view").json()
    summary = real_runs.summary(real_runs.first)
    assert view["kpis"] == summary["kpis"]
    assert {(s["stream"], s["repetition"]) for s in view["series"]} == {
        (s["id"], s["repetition"]) for s in summary["streams"]
    }
    for h in view["histograms"]:
        received = sum(s["received"] for s in summary["streams"] if s["id"] == h["stream"])
        assert sum(h["counts"]) == received
    faults = [m for m in view["markers"] if m["kind"] == "fault"]
    assert [(m["label"], m["repetition"]) for m in faults] == [
        ("net.link_down", 1),
        ("net.link_down", 2),
    ]
    windows = [w for w in view["interruptions"] if w["kind"] == "stream"]
    assert {(w["subject"], w["repetition"]) for w in windows} == {
        (s, r) for s in ("up", "down") for r in (1, 2)
    }
    for w in windows:
        assert w["end"] - w["start"] == pytest.approx(w["duration_ms"] / 1000, abs=1e-3)
    floor = view["floor"]
    assert floor is not None and {"ue_a1", "ue_b1"} <= set(floor["users"])
    assert len(floor["preemptions"]) == len(summary["mcptt"]["preemptions"])
    assert client.get(f"/api/v1/runs/{real_runs.second}/view").json()["floor"] is None


def test_artifacts_download_byte_for_byte(client: TestClient, real_runs: RealRuns) -> None:
    listed = client.get(f"/api/v1/runs/{real_runs.first}/artifacts").json()
    paths = {a["path"]: a for a in listed}
    for name in ("captures/ue_a1_radio.pcapng", "junit.xml", "summary.json"):
        assert name in paths
        got = client.get(f"/api/v1/runs/{real_runs.first}/artifacts/{name}")
        assert got.status_code == 200
        local = (real_runs.run_dir(real_runs.first) / name).read_bytes()
        assert got.content == local and paths[name]["bytes"] == len(local)
        assert "attachment" in got.headers["content-disposition"]


def test_transcripts_are_the_device_logs(client: TestClient, real_runs: RealRuns) -> None:
    listed = client.get(f"/api/v1/runs/{real_runs.first}/transcripts").json()
    assert listed and all(t["path"].endswith(".log") for t in listed)
    relay = next(t["path"] for t in listed if t["path"].startswith("impairment/"))
    text = client.get(f"/api/v1/runs/{real_runs.first}/transcripts/{relay}").text
    assert text == (real_runs.run_dir(real_runs.first) / relay).read_text()
    summary = client.get(f"/api/v1/runs/{real_runs.first}/transcripts/summary.json")
    assert summary.status_code == 404


def test_report_is_the_records_report(client: TestClient, real_runs: RealRuns) -> None:
    moved = client.get(f"/api/v1/runs/{real_runs.first}/report", follow_redirects=False)
    assert moved.status_code == 307
    assert moved.headers["location"] == f"/api/v1/runs/{real_runs.first}/artifacts/report.html"
    got = client.get(moved.headers["location"])
    assert got.headers["content-type"].startswith("text/html")
    assert "attachment" not in got.headers.get("content-disposition", "")
    assert "script-src 'unsafe-inline'" in got.headers["content-security-policy"]
    assert got.content == (real_runs.run_dir(real_runs.first) / "report.html").read_bytes()


def test_compare_two_runs_kpi_by_kpi(client: TestClient, real_runs: RealRuns) -> None:
    body = client.get(f"/api/v1/compare?a={real_runs.first}&b={real_runs.second}").json()
    kpis = {k["name"]: k for k in body["kpis"]}
    up = kpis["Uplink p95 one-way delay"]
    assert (up["a"]["verdict"], up["b"]["verdict"]) == ("PASS", "FAIL")
    assert up["delta"] == pytest.approx(up["b"]["value"] - up["a"]["value"])
    applied = _applied_delay_ms(real_runs, real_runs.second) - _applied_delay_ms(
        real_runs, real_runs.first
    )
    assert up["delta"] == pytest.approx(applied, abs=3.0)
    assert kpis["KPI 1 MCPTT access time"]["b"] is None
    rep2 = [s for s in body["streams"] if s["repetition"] == 2]
    assert rep2 and all(s["b"] is None and s["a"] is not None for s in rep2)


def test_trends_and_overview_come_from_the_kpi_index(
    client: TestClient, real_runs: RealRuns
) -> None:
    trends = client.get(f"/api/v1/trends?profile={PROFILE}&lab={LAB_NAME}").json()["series"]
    up = next(t for t in trends if t["kpi"] == "Uplink p95 one-way delay")
    assert [p["run_id"] for p in up["points"]] == [real_runs.first, real_runs.second]
    assert [p["verdict"] for p in up["points"]] == ["PASS", "FAIL"]
    every_lab = client.get(f"/api/v1/trends?profile={PROFILE}").json()["series"]
    assert {t["lab"] for t in every_lab} == {LAB_NAME, TWIN_LAB}
    cells = {(c["profile"], c["lab"]): c for c in client.get("/api/v1/overview").json()["cells"]}
    home = cells[(PROFILE, LAB_NAME)]
    assert (home["runs"], home["run_id"], home["verdict"]) == (2, real_runs.second, "FAIL")
    home_up = next(k for k in home["kpis"] if k["name"] == "Uplink p95 one-way delay")
    assert home_up["trend"] == [p["value"] for p in up["points"]]
    assert cells[(PROFILE, TWIN_LAB)]["verdict"] == "PASS"


def test_profiles_and_labs_are_the_configured_folders(
    client: TestClient, real_runs: RealRuns
) -> None:
    names = [p["name"] for p in client.get("/api/v1/profiles").json()]
    assert names == sorted(p.stem for p in real_runs.profiles.glob("*.yaml"))
    labs = {lab["name"]: lab for lab in client.get("/api/v1/labs").json()}
    assert labs["emulated"]["title"] == LAB_NAME and not labs["emulated"]["problems"]


def test_metrics_give_run_counts_and_latest_kpis(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert f'testbed_runs{{lab="{LAB_NAME}",profile="{PROFILE}",verdict="FAIL"}} 1.0' in text
    assert f'testbed_runs{{lab="{TWIN_LAB}",profile="{PROFILE}",verdict="PASS"}} 1.0' in text
    latest = [
        line
        for line in text.splitlines()
        if line.startswith("testbed_kpi_pass{")
        and f'lab="{LAB_NAME}"' in line
        and "Uplink p95" in line
    ]
    assert latest == [
        f'testbed_kpi_pass{{kpi="Uplink p95 one-way delay",lab="{LAB_NAME}",'
        f'profile="{PROFILE}"}} 0.0'
    ]


def test_live_replays_a_finished_run_and_ends(client: TestClient, real_runs: RealRuns) -> None:
    lines = (real_runs.run_dir(real_runs.first) / "events.jsonl").read_text().splitlines()
    with client.stream("GET", f"/api/v1/runs/{real_runs.first}/live") as response:
        body = "".join(response.iter_text())
    blocks = [b for b in body.split("\n\n") if b.startswith("id:")]
    assert len(blocks) == len(lines)
    last = blocks[-1].splitlines()
    assert last[0] == f"id: {len(lines)}" and last[1] == "event: run.finished"
    resumed = client.get(
        f"/api/v1/runs/{real_runs.first}/live", headers={"Last-Event-ID": str(len(lines) - 1)}
    )
    assert [b for b in resumed.text.split("\n\n") if b.startswith("id:")] == blocks[-1:]


def test_pages_are_served_with_plotly_from_the_package(
    client: TestClient, real_runs: RealRuns
) -> None:
    for url in ("/", f"/runs/{real_runs.first}", "/compare"):
        page = client.get(url)
        assert page.status_code == 200 and "/static/vendor/plotly.min.js" in page.text
        assert "http://" not in page.text and "https://" not in page.text
    plotly = client.get("/static/vendor/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert client.get("/runs/no-such-run").status_code == 404
    assert client.get("/static/../pyproject.toml").status_code == 404
