"""Starting, following and aborting real runs through the API, with tokens.

The server launches the same ``testbed run`` a lab engineer types; these tests run it on the
emulated lab and follow it over server-sent events, so what they see is what a dashboard sees.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from testbed.api import ApiConfig, create_app
from testbed.api.auth import new_token
from tests.integration.helpers import assert_clean, start_run, wait_for_event
from tests.real_runs import RealRuns

pytestmark = [pytest.mark.netns, pytest.mark.slow]

LONG_PROFILE = {
    "schema_version": 1,
    "name": "dash_long",
    "duration_s": 60,
    "streams": [{"id": "s1", "from": "ue_a1", "to": "mcptt_as", "rate_pps": 50}],
}


@pytest.fixture
def server(
    real_runs: RealRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, dict[str, str], Path]]:
    """An app over an empty results folder, the fixture's profiles plus a 60 s one, and
    tokens: ``run`` (run only) and ``read`` (read only)."""
    profiles = tmp_path / "profiles"
    shutil.copytree(real_runs.profiles, profiles)
    (profiles / "dash_long.yaml").write_text(json.dumps(LONG_PROFILE))
    results = tmp_path / "results"
    monkeypatch.setenv("TESTBED_STATE_DIR", str(tmp_path / "state"))
    tokens = tmp_path / "tokens.yaml"
    headers = {r: {"Authorization": f"Bearer {new_token(tokens, r, [r])}"} for r in ("run", "read")}
    config = ApiConfig(
        results_dir=results,
        database_url=f"sqlite:///{results}/index.sqlite3",
        state_dir=tmp_path / "state",
        profiles_dir=profiles,
        labs_dir=profiles / "labs",
        tokens_file=tokens,
    )
    with TestClient(create_app(config)) as client:
        yield client, headers["run"], results
    for run_dir in results.iterdir():
        if (run_dir / "manifest.json").exists():
            assert_clean(run_dir)


def _follow(
    client: TestClient, run_id: str, until: Callable[[dict[str, str]], bool] | None = None
) -> list[dict[str, str]]:
    """The run's live events until the stream ends, or until one satisfies ``until``."""
    events: list[dict[str, str]] = []
    with client.stream("GET", f"/api/v1/runs/{run_id}/live") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        for line in response.iter_lines():
            if line:
                key, _, value = line.partition(": ")
                block[key] = value
                continue
            if "event" in block:
                events.append(block)
                if until is not None and until(block):
                    break
            block = {}
    return events


def test_a_run_started_through_the_api_is_followed_live_to_its_verdict(
    server: tuple[TestClient, dict[str, str], Path],
) -> None:
    client, run_token, results = server
    started = client.post(
        "/api/v1/runs", json={"profile": "dash_short", "lab": "emulated"}, headers=run_token
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    events = _follow(client, run_id)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run.started" and kinds[-1] == "run.finished"
    assert "phase.started" in kinds and "teardown.step" in kinds
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    finished = json.loads(events[-1]["data"])
    detail = client.get(f"/api/v1/runs/{run_id}").json()
    assert detail["summary"]["verdict"] == finished["verdict"] == "PASS"
    listed = client.get("/api/v1/runs?profile=dash_short").json()["items"]
    assert [r["run_id"] for r in listed] == [run_id]
    _wait_until_no_run_is_going(client)  # the finished child's console joins its record
    assert "run record:" in (results / run_id / "console.log").read_text()


def test_an_aborted_run_tears_down_and_ends_aborted(
    server: tuple[TestClient, dict[str, str], Path],
) -> None:
    client, run_token, _ = server
    started = client.post(
        "/api/v1/runs", json={"profile": "dash_long", "lab": "emulated"}, headers=run_token
    )
    run_id = started.json()["run_id"]
    second = client.post(
        "/api/v1/runs", json={"profile": "dash_short", "lab": "emulated"}, headers=run_token
    )
    assert second.status_code == 409 and run_id in second.json()["detail"]
    measuring = _follow(client, run_id, lambda e: '"measure"' in e["data"])
    assert measuring[-1]["event"] == "phase.started"
    refused = client.delete(f"/api/v1/runs/{run_id}", headers=run_token)
    assert refused.status_code == 403  # a run token has no right to delete
    aborted = client.post(f"/api/v1/runs/{run_id}/abort", headers=run_token)
    assert aborted.status_code == 202 and aborted.json()["status"] == "aborting"
    events = _follow(client, run_id)
    assert json.loads(events[-1]["data"])["verdict"] == "ABORTED"
    summary = client.get(f"/api/v1/runs/{run_id}").json()["summary"]
    assert summary["verdict"] == "ABORTED" and summary["signals"] == ["SIGINT"]
    _wait_until_no_run_is_going(client)
    again = client.post(f"/api/v1/runs/{run_id}/abort", headers=run_token)
    assert again.status_code == 409


def test_a_run_started_from_the_command_line_is_aborted_through_its_state_file(
    server: tuple[TestClient, dict[str, str], Path], tmp_path: Path
) -> None:
    client, run_token, results = server
    env = {
        **os.environ,
        "TESTBED_RESULTS_DIR": str(results),
        "TESTBED_DATABASE_URL": f"sqlite:///{results}/index.sqlite3",
    }
    cli = start_run(tmp_path / "profiles" / "dash_long.yaml", env, "--run-id", "cli-long")
    try:
        wait_for_event(env, '"phase": "measure"')
        aborted = client.post("/api/v1/runs/cli-long/abort", headers=run_token)
        assert aborted.status_code == 202, aborted.text
        assert cli.wait(timeout=60) == 2  # ABORTED
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert client.get("/api/v1/runs/cli-long").json()["summary"]["verdict"] == "ABORTED"


def _wait_until_no_run_is_going(client: TestClient, timeout_s: float = 30.0) -> None:
    """The controller exits a moment after its last event (report, verdict table)."""
    deadline = time.monotonic() + timeout_s
    while client.get("/api/v1/overview").json()["running"]:
        assert time.monotonic() < deadline, "the controller did not exit"
        time.sleep(0.1)
