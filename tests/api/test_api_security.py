"""The API's access rules and its defences against hostile requests (httpx, FastAPI's TestClient).

* Writes (start, abort, delete) need a token holding that right: 401 without a valid token, 403
  with a token lacking the right, 403 for everyone when the server has no tokens file; a refused
  delete leaves the record whole. With read access "token", every read needs a read token.
* Nothing leaves the results folder: artifact and transcript names and run ids that climb out
  (``..`` raw or encoded once or twice, backslashes, NUL, absolute paths, symbolic links planted
  in a run folder, hidden files) get 404 and never the file; profile and lab names are plain
  names of the configured folders, so nothing else is ever launched.
* Oversized, malformed or absurd requests get a 4xx, never a 5xx.
* Responses carry ``nosniff``; HTML pages a Content-Security-Policy.

Launching a controller is replaced by a recorder in every test here (it answers 503), so a
request that gets through to the launcher is seen and nothing ever runs. Tests on the real runs
(marked ``netns`` and ``slow``) use copies with traps planted; the others need no root.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from testbed.api import ApiConfig, create_app
from testbed.api.auth import RIGHTS, new_token
from testbed.api.config import MAX_BODY_BYTES, ReadAccess
from testbed.api.service import RunService
from tests.real_runs import LAB, LAB_NAME, PROFILE, SHORT_PROFILE, RealRuns

SENTINEL = "sentinel-6f1d9a-never-served"
"""Content of every file a request must not reach."""
START = {"profile": "dash_short", "lab": "emulated"}
"""A start request that passes every check (the launcher records it instead of running it)."""
ROLES = ("all", "read", "run", "delete")


def on_real_runs(test: Callable[..., None]) -> Callable[..., None]:
    """The test uses the real runs: root and network namespaces, ~30 s once per session."""
    return pytest.mark.netns(pytest.mark.slow(test))


# the launcher and the sites --------------------------------------------------------------


@pytest.fixture(autouse=True)
def launched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path, Path]]:
    """Launches the server attempted: recorded and answered 503, never run."""
    seen: list[tuple[str, Path, Path]] = []

    def record(self: RunService, run_id: str, profile: Path, lab: Path) -> NoReturn:
        seen.append((run_id, profile, lab))
        raise HTTPException(503, "launch intercepted by the test")

    monkeypatch.setattr(RunService, "_launch", record)
    return seen


@dataclass
class Site:
    """One app: its client, folders and tokens by role (``all`` holds every right)."""

    client: TestClient
    base: Path
    results: Path
    profiles: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def run_dirs(self) -> list[str]:
        return sorted(p.name for p in self.results.iterdir() if (p / "manifest.json").is_file())


def make_site(
    base: Path, results: Path, *, tokens: bool = True, read: ReadAccess = "open"
) -> Iterator[Site]:
    """An app on ``results`` whose profiles folder holds only the 1 s ``dash_short``, with the
    emulated lab, and (with ``tokens``) a token per role."""
    profiles = base / "profiles"
    (profiles / "labs").mkdir(parents=True, exist_ok=True)
    (profiles / "dash_short.yaml").write_text(json.dumps(SHORT_PROFILE))
    shutil.copy(LAB, profiles / "labs" / "emulated.yaml")
    tokens_file = base / "tokens.yaml" if tokens else None
    issued = {}
    if tokens_file is not None:
        issued["all"] = new_token(tokens_file, "all", list(RIGHTS))
        for right in RIGHTS:
            issued[right] = new_token(tokens_file, right, [right])
    config = ApiConfig(
        results_dir=results,
        database_url=f"sqlite:///{results / 'index.sqlite3'}",
        profiles_dir=profiles,
        labs_dir=profiles / "labs",
        read_access=read,
        tokens_file=tokens_file,
    )
    with TestClient(create_app(config)) as client:
        yield Site(client, base, results, profiles, issued)


def plant_traps(results: Path, run_id: str, outside: Path) -> None:
    """Files a request must never get: beside the runs, outside the results folder, hidden in
    a run folder, and behind symbolic links planted in a run folder."""
    outside.mkdir(parents=True, exist_ok=True)
    for name in ("secret.json", "secret.log", "secret.pcapng"):
        (outside / name).write_text(SENTINEL)
        (results / name).write_text(SENTINEL)
    (results / "not-a-run").mkdir()
    (results / "not-a-run" / "summary.json").write_text(json.dumps({"secret": SENTINEL}))
    run = results / run_id
    (run / ".secret.json").write_text(SENTINEL)
    (run / "captures" / ".hidden.pcapng").write_text(SENTINEL)
    (run / "captures" / "escape.pcapng").symlink_to(outside / "secret.pcapng")
    (run / "mcptt" / "escape.log").symlink_to(outside / "secret.log")
    (run / "beside.json").symlink_to(Path("..") / "secret.json")
    (run / "outside").symlink_to(outside, target_is_directory=True)
    (run / "etc").symlink_to("/etc", target_is_directory=True)
    markup = "<html><script>alert(document.domain)</script></html>"
    for name in ("notes.html", "captures/page.html", "trap.svg", "mcptt/x.xml"):
        (run / name).write_text(markup)


@pytest.fixture(scope="module")
def runs_site(real_runs: RealRuns, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The real runs (a copy with traps in the first run), read open, tokens per role."""
    base = tmp_path_factory.mktemp("api_security")
    shutil.copytree(real_runs.results, base / "results")
    plant_traps(base / "results", real_runs.first, base / "outside")
    yield from make_site(base, base / "results")


@pytest.fixture(scope="module")
def token_site(real_runs: RealRuns, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The real runs with read access "token"."""
    base = tmp_path_factory.mktemp("api_security_token")
    shutil.copytree(real_runs.results, base / "results")
    yield from make_site(base, base / "results", read="token")


@pytest.fixture
def tokenless_site(real_runs: RealRuns, tmp_path: Path) -> Iterator[Site]:
    """The real runs on a server without a tokens file."""
    shutil.copytree(real_runs.results, tmp_path / "results")
    yield from make_site(tmp_path, tmp_path / "results", tokens=False)


@pytest.fixture
def fresh_site(real_runs: RealRuns, tmp_path: Path) -> Iterator[Site]:
    """The real runs, a copy of this test's own (it deletes)."""
    shutil.copytree(real_runs.results, tmp_path / "results")
    yield from make_site(tmp_path, tmp_path / "results")


@pytest.fixture(scope="module")
def empty_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """No runs at all (no root needed), tokens per role."""
    base = tmp_path_factory.mktemp("api_security_empty")
    yield from make_site(base, base / "results")


# raw requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(site: Site, method: str, target: str, headers: dict[str, str] | None = None) -> Raw:
    """A request with its path exactly as written, as uvicorn hands it to the app: httpx
    would resolve ``..`` segments before sending, a hostile client does not."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(site.client.app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    heads = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return Raw(start["status"], heads, body)


def assert_not_served(response: Raw) -> None:
    assert response.status == 404, (response.status, response.body[:300])
    assert SENTINEL.encode() not in response.body
    assert b"root:" not in response.body


# writes need a token with the right -------------------------------------------------------


def write_requests(run_id: str) -> list[tuple[str, str, dict[str, Any] | None, str]]:
    """(method, url, json body, right needed) of every write."""
    return [
        ("POST", "/api/v1/runs", START, "run"),
        ("POST", f"/api/v1/runs/{run_id}/abort", None, "run"),
        ("DELETE", f"/api/v1/runs/{run_id}", None, "delete"),
    ]


WRITES = ["start", "abort", "delete"]


def _write(site: Site, run_id: str, which: str, headers: dict[str, str]) -> Any:
    method, url, body, _ = write_requests(run_id)[WRITES.index(which)]
    return site.client.request(method, url, json=body, headers=headers)


def assert_record_whole(site: Site, run_id: str, real_runs: RealRuns) -> None:
    """The run is still there: folder, listing, detail."""
    assert (site.results / run_id / "manifest.json").is_file()
    assert (site.results / run_id / "summary.json").read_text() == (
        real_runs.run_dir(run_id) / "summary.json"
    ).read_text()
    assert site.client.get(f"/api/v1/runs/{run_id}").status_code == 200
    listed = site.client.get("/api/v1/runs").json()
    assert run_id in {row["run_id"] for row in listed["items"]}


@on_real_runs
@pytest.mark.parametrize("which", WRITES)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-a-token",
        "Bearer ",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer " + "x" * 10_000,
        "Bearer {all}x",
        "Basic {all}",
        "Token {all}",
        "{all}",
    ],
    ids=[
        "none",
        "unknown",
        "empty",
        "scheme-only",
        "basic",
        "huge",
        "right-token-plus-one",
        "right-token-basic",
        "right-token-other-scheme",
        "right-token-no-scheme",
    ],
)
def test_writes_without_a_valid_token_get_401(
    runs_site: Site,
    real_runs: RealRuns,
    launched: list[Any],
    which: str,
    authorization: str | None,
) -> None:
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.replace("{all}", runs_site.tokens["all"])
    response = _write(runs_site, real_runs.second, which, headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "a valid bearer token is needed"}
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert launched == []
    assert_record_whole(runs_site, real_runs.second, real_runs)


@on_real_runs
@pytest.mark.parametrize(
    ("role", "which"),
    [
        (role, which)
        for role in ROLES
        for which in WRITES
        if role != "all" and write_requests("x")[WRITES.index(which)][3] != role
    ],
)
def test_tokens_without_the_right_get_403(
    runs_site: Site, real_runs: RealRuns, launched: list[Any], role: str, which: str
) -> None:
    right = write_requests("x")[WRITES.index(which)][3]
    response = _write(runs_site, real_runs.second, which, runs_site.auth(role))
    assert response.status_code == 403
    assert response.json() == {"detail": f"this token lacks the right {right!r}"}
    assert launched == []
    assert_record_whole(runs_site, real_runs.second, real_runs)


@on_real_runs
def test_tokens_with_the_right_get_through(
    fresh_site: Site, real_runs: RealRuns, launched: list[Any]
) -> None:
    """The refusals above are about the tokens: the same requests pass with the right."""
    started = _write(fresh_site, real_runs.first, "start", fresh_site.auth("run"))
    assert started.status_code == 503  # the recorder answered: the launch was attempted
    assert [(p, lab) for _, p, lab in launched] == [
        (fresh_site.profiles / "dash_short.yaml", fresh_site.profiles / "labs" / "emulated.yaml")
    ]
    aborted = _write(fresh_site, real_runs.first, "abort", fresh_site.auth("run"))
    assert aborted.status_code == 409
    assert aborted.json() == {"detail": f"run {real_runs.first} is not running"}
    deleted = _write(fresh_site, real_runs.first, "delete", fresh_site.auth("delete"))
    assert deleted.status_code == 200
    assert deleted.json() == {"run_id": real_runs.first, "status": "deleted"}
    assert not (fresh_site.results / real_runs.first).exists()
    assert fresh_site.run_dirs() == sorted([real_runs.second, real_runs.other_lab])


@on_real_runs
def test_refused_deletes_leave_the_record_whole(runs_site: Site, real_runs: RealRuns) -> None:
    before = runs_site.client.get("/api/v1/health").json()["runs"]
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        runs_site.auth("read"),
        runs_site.auth("run"),
    ):
        for run_id in real_runs.run_ids:
            response = runs_site.client.delete(f"/api/v1/runs/{run_id}", headers=headers)
            assert response.status_code in (401, 403)
    for run_id in real_runs.run_ids:
        assert_record_whole(runs_site, run_id, real_runs)
        kept = {p.relative_to(runs_site.results) for p in (runs_site.results / run_id).rglob("*")}
        made = {p.relative_to(real_runs.results) for p in real_runs.run_dir(run_id).rglob("*")}
        assert made <= kept
    assert runs_site.client.get("/api/v1/health").json()["runs"] == before == 3


def test_unauthenticated_writes_on_unknown_runs_get_401_not_404(
    empty_site: Site, launched: list[Any]
) -> None:
    """Refused before the run is looked up: no way to probe which runs exist."""
    for which in WRITES:
        response = _write(empty_site, "20000101T000000Z-nothing-000000", which, {})
        assert response.status_code == 401
    assert launched == []


@on_real_runs
@pytest.mark.parametrize("which", WRITES)
@pytest.mark.parametrize("authorization", [None, "Bearer anything"])
def test_writes_are_disabled_without_a_tokens_file(
    tokenless_site: Site,
    real_runs: RealRuns,
    launched: list[Any],
    which: str,
    authorization: str | None,
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = _write(tokenless_site, real_runs.first, which, headers)
    assert response.status_code == 403
    assert response.json() == {"detail": "writes are disabled: the server has no tokens file"}
    assert launched == []
    assert_record_whole(tokenless_site, real_runs.first, real_runs)


# read access "token" -----------------------------------------------------------------------


def read_urls(real_runs: RealRuns) -> dict[str, str]:
    """One real request per read operation of the spec (keys: the spec's paths)."""
    run = real_runs.first
    prefix = f"/api/v1/runs/{run}"
    return {
        "/api/v1/runs": "/api/v1/runs",
        "/api/v1/runs/{run_id}": prefix,
        "/api/v1/runs/{run_id}/view": f"{prefix}/view",
        "/api/v1/runs/{run_id}/kpis": f"{prefix}/kpis",
        "/api/v1/runs/{run_id}/streams": f"{prefix}/streams",
        "/api/v1/runs/{run_id}/events": f"{prefix}/events",
        "/api/v1/runs/{run_id}/streams/{stream}/series": f"{prefix}/streams/up/series",
        "/api/v1/runs/{run_id}/artifacts": f"{prefix}/artifacts",
        "/api/v1/runs/{run_id}/artifacts/{name}": f"{prefix}/artifacts/summary.json",
        "/api/v1/runs/{run_id}/transcripts": f"{prefix}/transcripts",
        "/api/v1/runs/{run_id}/transcripts/{name}": f"{prefix}/transcripts/mcptt/server.log",
        "/api/v1/runs/{run_id}/report": f"{prefix}/report",
        "/api/v1/runs/{run_id}/live": f"{prefix}/live",
        "/api/v1/compare": f"/api/v1/compare?a={run}&b={real_runs.second}",
        "/api/v1/trends": f"/api/v1/trends?profile={PROFILE}&lab={LAB_NAME}",
        "/api/v1/overview": "/api/v1/overview",
        "/api/v1/profiles": "/api/v1/profiles",
        "/api/v1/labs": "/api/v1/labs",
    }


@on_real_runs
def test_token_reads_need_a_read_token(token_site: Site, real_runs: RealRuns) -> None:
    spec = token_site.client.get("/openapi.json").json()
    reads = {p for p, ops in spec["paths"].items() if "get" in ops and p.startswith("/api/v1/")}
    urls = read_urls(real_runs)
    assert reads - {"/api/v1/health"} == set(urls), "a read operation is not covered here"
    for path, url in urls.items():
        anonymous = token_site.client.get(url)
        assert anonymous.status_code == 401, path
        assert anonymous.json() == {"detail": "a valid bearer token is needed"}, path
        assert token_site.client.get(url, headers={"Authorization": "Bearer x"}).status_code == 401
        for role in ("run", "delete"):
            refused = token_site.client.get(url, headers=token_site.auth(role))
            assert refused.status_code == 403, (path, role)
            assert refused.json() == {"detail": "this token lacks the right 'read'"}
        for role in ("read", "all"):
            assert token_site.client.get(url, headers=token_site.auth(role)).status_code == 200


@on_real_runs
def test_health_stays_open_with_token_reads(token_site: Site) -> None:
    response = token_site.client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "runs": 3}


@on_real_runs
def test_metrics_need_a_read_token_with_token_reads(token_site: Site) -> None:
    response = token_site.client.get("/metrics")
    assert response.status_code == 401
    assert "Uplink" not in response.text


@on_real_runs
def test_page_shells_hold_no_run_data(token_site: Site, real_runs: RealRuns) -> None:
    """The pages are served to anyone (the data come from the API, with a token): they
    must not carry any of it themselves."""
    kpis = [k["name"] for k in real_runs.summary(real_runs.first)["kpis"]]
    secrets = [*real_runs.run_ids[1:], PROFILE, LAB_NAME, *kpis]
    for url in ("/", "/compare", f"/runs/{real_runs.first}"):
        response = token_site.client.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert [s for s in secrets if s in response.text] == [], url


# path traversal ----------------------------------------------------------------------------


ARTIFACT_ESCAPES = [
    "../secret.json",
    "../../outside/secret.json",
    "captures/../../secret.json",
    "%2e%2e/secret.json",
    ".%2e/secret.json",
    "..%2fsecret.json",
    "%2e%2e%2fsecret.json",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "../../../../../../../../etc/passwd",
    "%252e%252e%252fsecret.json",
    "%25252e%25252e/secret.json",
    "..\\secret.json",
    "..%5csecret.json",
    "captures%5c..%5c..%5csecret.json",
    "%c0%ae%c0%ae/secret.json",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "//etc/passwd",
    "summary.json%00",
    "summary.json%00.pcapng",
    "%00../secret.json",
    "..",
    ".",
    "",
]


@on_real_runs
@pytest.mark.parametrize("name", ARTIFACT_ESCAPES)
def test_artifact_names_cannot_leave_the_run_folder(
    runs_site: Site, real_runs: RealRuns, name: str
) -> None:
    assert_not_served(
        raw_request(runs_site, "GET", f"/api/v1/runs/{real_runs.first}/artifacts/{name}")
    )


@on_real_runs
@pytest.mark.parametrize(
    "name",
    [
        "captures/escape.pcapng",
        "beside.json",
        "outside/secret.json",
        "outside/secret.pcapng",
        "etc/passwd",
        ".secret.json",
        "captures/.hidden.pcapng",
        "captures/%2ehidden.pcapng",
    ],
)
def test_links_and_hidden_files_in_a_run_folder_are_not_served(
    runs_site: Site, real_runs: RealRuns, name: str
) -> None:
    assert_not_served(
        raw_request(runs_site, "GET", f"/api/v1/runs/{real_runs.first}/artifacts/{name}")
    )


@on_real_runs
def test_listings_leave_out_links_and_hidden_files(runs_site: Site, real_runs: RealRuns) -> None:
    run = real_runs.first
    for what in ("artifacts", "transcripts"):
        response = runs_site.client.get(f"/api/v1/runs/{run}/{what}")
        assert response.status_code == 200
        listed = {entry["path"] for entry in response.json()}
        assert listed, what
        assert SENTINEL not in response.text
        trapped = [
            p
            for p in listed
            if p.split("/")[0] in {"outside", "etc", "beside.json"}
            or "escape" in p
            or any(part.startswith(".") for part in p.split("/"))
        ]
        assert trapped == [], what
    view = runs_site.client.get(f"/api/v1/runs/{run}/view").json()
    assert not any("escape" in a["path"] or a["path"].startswith(".") for a in view["artifacts"])


@on_real_runs
@pytest.mark.parametrize(
    "name",
    [
        "../secret.log",
        "%2e%2e/secret.log",
        "..%2fsecret.log",
        "mcptt/../../secret.log",
        "mcptt%2f..%2f..%2fsecret.log",
        "%252e%252e%252fsecret.log",
        "..\\secret.log",
        "/etc/../secret.log",
        "../../outside/secret.log",
        "mcptt/escape.log",
        "outside/secret.log",
        "summary.json",
        "summary.json%00.log",
        "manifest.json%00.log",
    ],
)
def test_transcript_names_cannot_leave_the_run_folder(
    runs_site: Site, real_runs: RealRuns, name: str
) -> None:
    assert_not_served(
        raw_request(runs_site, "GET", f"/api/v1/runs/{real_runs.first}/transcripts/{name}")
    )


RUN_ID_ESCAPES = ["..", ".", "%2e%2e", "%2e", "..%2f..", "%2e%2e%2f%2e%2e", "not-a-run"]
RUN_ID_ESCAPES += ["secret.json", "index.sqlite3", "%2fetc", "..%5c..", "%252e%252e", "a" * 5000]


@on_real_runs
@pytest.mark.parametrize("run_id", RUN_ID_ESCAPES, ids=lambda r: r[:20])
@pytest.mark.parametrize(
    "suffix",
    ["", "/view", "/kpis", "/events", "/artifacts", "/artifacts/summary.json", "/report"],
)
def test_run_ids_cannot_name_other_folders(runs_site: Site, run_id: str, suffix: str) -> None:
    assert_not_served(raw_request(runs_site, "GET", f"/api/v1/runs/{run_id}{suffix}"))


@on_real_runs
@pytest.mark.parametrize("run_id", RUN_ID_ESCAPES, ids=lambda r: r[:20])
def test_deleting_other_folders_deletes_nothing(
    runs_site: Site, real_runs: RealRuns, run_id: str
) -> None:
    """The most dangerous write: it must never reach a folder that is not one run's."""
    before = sorted(p.name for p in runs_site.results.iterdir())
    for method, url in (
        ("DELETE", f"/api/v1/runs/{run_id}"),
        ("POST", f"/api/v1/runs/{run_id}/abort"),
    ):
        response = raw_request(runs_site, method, url, runs_site.auth("all"))
        assert response.status == 404, (method, response.body[:300])
    assert sorted(p.name for p in runs_site.results.iterdir()) == before
    assert (runs_site.results / "not-a-run" / "summary.json").is_file()
    assert (runs_site.base / "outside" / "secret.json").is_file()
    assert runs_site.run_dirs() == sorted(real_runs.run_ids)


@on_real_runs
@pytest.mark.parametrize("other", ["..", "not-a-run", "%2e%2e%2fnot-a-run", "../not-a-run"])
def test_compare_cannot_name_other_folders(
    runs_site: Site, real_runs: RealRuns, other: str
) -> None:
    for query in (f"a={real_runs.first}&b={other}", f"a={other}&b={real_runs.first}"):
        assert_not_served(raw_request(runs_site, "GET", f"/api/v1/compare?{query}"))


@pytest.mark.parametrize(
    "path",
    [
        "/static/../api/auth.py",
        "/static/..%2fapi%2fauth.py",
        "/static/%2e%2e%2fapi%2fauth.py",
        "/static/%2e%2e/__init__.py",
        "/static/__init__.py",
        "/static/vendor/../../api/auth.py",
        "/static/%2fetc%2fpasswd",
        "/static/dashboard.js%00",
        "/static/.hidden",
    ],
)
def test_static_files_are_only_the_dashboard_assets(empty_site: Site, path: str) -> None:
    response = raw_request(empty_site, "GET", path)
    assert response.status == 404
    assert b"import" not in response.body
    assert b"root:" not in response.body


# profile and lab names ---------------------------------------------------------------------

BAD_NAMES = [
    "../../etc/passwd",
    "/etc/passwd",
    "latency/../x",
    "../dash_short",
    "labs/emulated",
    "..",
    ".",
    ".dash_short",
    "dash_short\x00",
    "dash_short\n",
    "dash_short/",
    "dash short",
    "~root",
    "$(id)",
    "%2e%2e%2fdash_short",
    "dash_short\\..\\x",
    "",
    "x" * 200,
]


@pytest.mark.parametrize("field_name", ["profile", "lab"])
@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_profile_and_lab_names_are_plain_names(
    empty_site: Site, launched: list[Any], field_name: str, name: str
) -> None:
    body = {**START, field_name: name}
    response = empty_site.client.post("/api/v1/runs", json=body, headers=empty_site.auth("all"))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field_name]
    assert launched == []


@pytest.mark.parametrize(
    ("profile", "lab", "missing"),
    [
        ("latency", "emulated", "profile 'latency'"),  # in the repository's own folder
        ("outside", "emulated", "profile 'outside'"),  # beside the configured folder
        ("labs", "emulated", "profile 'labs'"),  # a folder inside it
        ("dash_short.yaml", "emulated", "profile 'dash_short.yaml'"),
        ("dash_short", "emulated.yaml", "lab 'emulated.yaml'"),
        ("dash_short", "dash_short", "lab 'dash_short'"),  # a profile is not a lab
        ("emulated", "emulated", "profile 'emulated'"),  # nor a lab a profile
        ("dash_short", "outside", "lab 'outside'"),
    ],
)
def test_only_the_configured_folders_can_be_run(
    empty_site: Site, launched: list[Any], profile: str, lab: str, missing: str
) -> None:
    (empty_site.base / "outside.yaml").write_text(json.dumps({**SHORT_PROFILE, "name": "outside"}))
    response = empty_site.client.post(
        "/api/v1/runs", json={"profile": profile, "lab": lab}, headers=empty_site.auth("all")
    )
    assert response.status_code == 404
    assert response.json()["detail"].startswith(f"no {missing} in ")
    assert launched == []


def test_a_valid_start_reaches_the_launcher(empty_site: Site, launched: list[Any]) -> None:
    response = empty_site.client.post("/api/v1/runs", json=START, headers=empty_site.auth("run"))
    assert response.status_code == 503
    ((run_id, profile, lab),) = launched
    assert re.fullmatch(r"\d{8}T\d{6}Z-dash_short-[0-9a-f]{6}", run_id)
    assert profile == empty_site.profiles / "dash_short.yaml"
    assert lab == empty_site.profiles / "labs" / "emulated.yaml"


# oversized and malformed requests ----------------------------------------------------------


def _post(site: Site, content: Any, headers: dict[str, str] | None = None) -> Any:
    head = {"Content-Type": "application/json", **site.auth("all"), **(headers or {})}
    return site.client.post("/api/v1/runs", content=content, headers=head)


def _padded(size: int) -> bytes:
    """The valid start request, padded with whitespace to ``size`` bytes."""
    text = json.dumps(START).encode()
    return text + b" " * (size - len(text))


def _chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    """A body without Content-Length: httpx sends it chunked."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, 10 * 1024 * 1024])
@pytest.mark.parametrize("role", ["all", None])
def test_declared_oversized_bodies_get_413(
    empty_site: Site, launched: list[Any], size: int, role: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    headers.update(empty_site.auth(role) if role else {})
    response = empty_site.client.post("/api/v1/runs", content=_padded(size), headers=headers)
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body over {MAX_BODY_BYTES} bytes"}
    assert launched == []


def test_a_body_at_the_limit_is_read(empty_site: Site, launched: list[Any]) -> None:
    assert _post(empty_site, _padded(MAX_BODY_BYTES)).status_code == 503
    assert len(launched) == 1


def test_chunked_bodies_within_the_limit_are_read(empty_site: Site, launched: list[Any]) -> None:
    response = _post(empty_site, _chunks(_padded(MAX_BODY_BYTES)))
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 503
    assert len(launched) == 1


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, 4 * MAX_BODY_BYTES])
@pytest.mark.parametrize("role", ["all", None])
def test_chunked_oversized_bodies_get_413(
    empty_site: Site, launched: list[Any], size: int, role: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    headers.update(empty_site.auth(role) if role else {})
    response = empty_site.client.post(
        "/api/v1/runs", content=_chunks(_padded(size)), headers=headers
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body over {MAX_BODY_BYTES} bytes"}
    assert launched == []


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b'{"profile":', "json_invalid"),
        (b"not json", "json_invalid"),
        (b'{"profile": "dash_short", "lab": "emulated",}', "json_invalid"),
        (b'{"profile": "dash_short", "lab": "emulated"', "json_invalid"),
        (b"\xff\xfe\x00{", "json_invalid"),
        (b'{"profile": "dash_short", "lab": "emulated", "x": 1}', "extra_forbidden"),
        (
            b'{"profile": "dash_short", "lab": "emulated", "argv": ["--lab", "/x"]}',
            "extra_forbidden",
        ),
        (b'{"profile": "dash_short"}', "missing"),
        (b"{}", "missing"),
        (b'{"profile": 1, "lab": "emulated"}', "string_type"),
        (b'{"profile": ["dash_short"], "lab": "emulated"}', "string_type"),
        (b'{"profile": {"$ne": null}, "lab": "emulated"}', "string_type"),
        (b'{"profile": null, "lab": "emulated"}', "string_type"),
        (b"[]", "model_attributes_type"),
        (b'"dash_short"', "model_attributes_type"),
        (b"null", "model_attributes_type"),
        (b"true", "model_attributes_type"),
    ],
    ids=lambda v: repr(v[:24]) if isinstance(v, bytes) else str(v),
)
def test_malformed_bodies_get_422(
    empty_site: Site, launched: list[Any], content: bytes, kind: str
) -> None:
    response = _post(empty_site, content)
    assert response.status_code == 422, response.text[:300]
    assert kind in {error["type"] for error in response.json()["detail"]}
    assert launched == []


@pytest.mark.parametrize(
    "content",
    [b"[" * 5000 + b"]" * 5000, b'{"a":' * 5000 + b"1" + b"}" * 5000],
    ids=["list", "dict"],
)
def test_deeply_nested_bodies_get_4xx(
    empty_site: Site, launched: list[Any], content: bytes
) -> None:
    response = _post(empty_site, content)
    assert response.status_code in (400, 422), response.text[:300]
    assert launched == []


@pytest.mark.parametrize(
    "content",
    [
        b"1e999999",
        b"NaN",
        b'{"profile": NaN, "lab": "emulated"}',
        b'{"profile": "dash_short", "lab": -Infinity}',
        b'{"profile": 1e400, "lab": "emulated"}',
        b'{"profile": "dash_short", "lab": "emulated", "x": Infinity}',
    ],
)
def test_non_finite_numbers_in_bodies_get_422(
    empty_site: Site, launched: list[Any], content: bytes
) -> None:
    client = TestClient(empty_site.client.app, raise_server_exceptions=False)
    response = client.post(
        "/api/v1/runs",
        content=content,
        headers={"Content-Type": "application/json", **empty_site.auth("all")},
    )
    assert response.status_code == 422, (response.status_code, response.text[:200])
    assert launched == []


def test_non_finite_numbers_without_a_token_get_401(empty_site: Site) -> None:
    """The token is checked before the body is validated."""
    response = _post(empty_site, b'{"profile": NaN, "lab": "emulated"}', {"Authorization": ""})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (json.dumps(START).encode(), "text/plain"),
        (json.dumps(START).encode(), "application/xml"),
        (b"profile=dash_short&lab=emulated", "application/x-www-form-urlencoded"),
        (
            b'--b\r\nContent-Disposition: form-data; name="profile"\r\n\r\ndash_short\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        ),
        (json.dumps(START).encode(), ""),
    ],
    ids=["text", "xml", "form", "multipart", "none"],
)
def test_wrong_content_types_are_refused(
    empty_site: Site, launched: list[Any], content: bytes, content_type: str
) -> None:
    response = _post(empty_site, content, {"Content-Type": content_type})
    assert 400 <= response.status_code < 500
    assert launched == []


HUGE = "x" * 10_000
RUN = "20000101T000000Z-nothing-000000"


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/api/v1/runs?limit=1000000000000", 422),
        ("/api/v1/runs?limit=0", 422),
        ("/api/v1/runs?limit=501", 422),
        ("/api/v1/runs?limit=abc", 422),
        ("/api/v1/runs?limit=1e3", 422),
        ("/api/v1/runs?offset=-1", 422),
        ("/api/v1/runs?offset=99999999999999999999999", 422),
        ("/api/v1/runs?since=garbage", 400),
        ("/api/v1/runs?until=garbage", 400),
        ("/api/v1/runs?since=2026-02-30", 400),
        ("/api/v1/runs?since=0001-01-01", 400),
        (f"/api/v1/runs?since={HUGE}", 422),
        ("/api/v1/runs?verdict=garbage", 422),
        ("/api/v1/runs?verdict=pass", 422),
        (f"/api/v1/runs?profile={HUGE}", 422),
        (f"/api/v1/runs?lab={HUGE}", 422),
        (f"/api/v1/trends?profile={HUGE}", 422),
        ("/api/v1/trends", 422),
        ("/api/v1/trends?profile=p&limit=0", 422),
        (f"/api/v1/trends?profile=p&kpi={HUGE}", 422),
        ("/api/v1/compare?a=x", 422),
        (f"/api/v1/compare?a={HUGE}&b=x", 422),
        (f"/api/v1/runs/{RUN}/events?limit=1000000000000", 422),
        (f"/api/v1/runs/{RUN}/events?offset=-1", 422),
        (f"/api/v1/runs/{RUN}/events?type={HUGE}", 422),
        (f"/api/v1/runs/{RUN}/view?max_points=1", 422),
        (f"/api/v1/runs/{RUN}/view?max_points=1000000000", 422),
        (f"/api/v1/runs/{RUN}/streams/up/series?max_points=1000000000", 422),
        (f"/api/v1/runs/{RUN}/streams/up/series?repetition=0", 422),
        (f"/api/v1/runs/{RUN}/streams/up/series?point=-1", 422),
        (f"/api/v1/runs/{HUGE}", 404),
        (f"/api/v1/runs/{RUN}", 404),
        (f"/api/v1/runs/{RUN}/artifacts/{HUGE}", 404),
        (f"/runs/{HUGE}", 422),
        (f"/runs/{RUN}", 404),
        (f"/static/{HUGE}", 422),
    ],
    ids=lambda v: v[:60] if isinstance(v, str) else str(v),
)
def test_absurd_requests_get_4xx(empty_site: Site, url: str, status: int) -> None:
    response = empty_site.client.get(url)
    assert response.status_code == status, response.text[:300]
    assert "detail" in response.json()


@pytest.mark.parametrize(
    "value",
    ["nan", "inf", "-inf", "1e400", "-1e308", "99999999999999999999", "9999-12-31T23:59:59",
     "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "+1", "1_000", "2026-W01",
     "20260101T000000Z", "%00", "\u0661\u0662\u0663", "0x10", "00:00"],
)  # fmt: skip
@pytest.mark.parametrize("name", ["since", "until"])
def test_odd_times_are_never_server_errors(empty_site: Site, name: str, value: str) -> None:
    response = empty_site.client.get("/api/v1/runs", params={name: value})
    assert response.status_code in (200, 400), response.text[:300]
    if response.status_code == 400:
        assert response.json() == {"detail": f"{name}: give epoch seconds or ISO-8601 time"}


def test_an_oversized_last_event_id_gets_422(empty_site: Site) -> None:
    response = empty_site.client.get(f"/api/v1/runs/{RUN}/live", headers={"Last-Event-ID": HUGE})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "last-event-id"]


# response headers --------------------------------------------------------------------------


@on_real_runs
def test_every_response_says_nosniff(runs_site: Site, real_runs: RealRuns) -> None:
    run, read = real_runs.first, runs_site.auth("read")
    requests: list[tuple[str, str, dict[str, str], bytes | None]] = [
        ("GET", "/api/v1/health", {}, None),
        ("GET", f"/api/v1/runs/{run}", {}, None),
        ("GET", f"/api/v1/runs/{run}/artifacts/captures/ue_a1_radio.pcapng", {}, None),
        ("GET", f"/api/v1/runs/{run}/artifacts/report.html", {}, None),
        ("GET", f"/api/v1/runs/{run}/transcripts/mcptt/server.log", {}, None),
        ("GET", f"/api/v1/runs/{run}/live", {}, None),
        ("GET", "/api/v1/runs/nothing", {}, None),
        ("GET", "/api/v1/runs?limit=0", {}, None),
        ("DELETE", f"/api/v1/runs/{run}", {}, None),
        ("DELETE", f"/api/v1/runs/{run}", read, None),
        ("POST", "/api/v1/runs", read, _padded(MAX_BODY_BYTES + 1)),
        ("GET", "/metrics", {}, None),
        ("GET", "/", {}, None),
        ("GET", f"/runs/{run}", {}, None),
        ("GET", "/compare", {}, None),
        ("GET", "/static/dashboard.js", {}, None),
        ("GET", "/static/vendor/plotly.min.js", {}, None),
        ("GET", "/openapi.json", {}, None),
    ]
    statuses = []
    for method, url, headers, content in requests:
        response = runs_site.client.request(method, url, headers=headers, content=content)
        statuses.append(response.status_code)
        assert response.headers.get("x-content-type-options") == "nosniff", (url, statuses[-1])
    report = runs_site.client.get(f"/api/v1/runs/{run}/report", follow_redirects=False)
    statuses.append(report.status_code)
    assert report.headers.get("x-content-type-options") == "nosniff"
    assert sorted(set(statuses)) == [200, 307, 401, 403, 404, 413, 422]


@on_real_runs
def test_html_pages_carry_a_content_security_policy(runs_site: Site, real_runs: RealRuns) -> None:
    for url in ("/", f"/runs/{real_runs.first}", "/compare"):
        response = runs_site.client.get(url)
        assert response.headers["content-type"].startswith("text/html")
        policy = _policy(response.headers["content-security-policy"])
        assert policy["default-src"] == ["'self'"], url
        assert policy["script-src"] == ["'self'"], url  # no inline or foreign scripts
        assert "'unsafe-eval'" not in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        for src in re.findall(r'<script[^>]*\bsrc="([^"]+)"', response.text):
            assert src.startswith("/static/"), (url, src)  # no CDN: the CSP would block it


@on_real_runs
@pytest.mark.parametrize("name", ["notes.html", "captures/page.html", "trap.svg", "mcptt/x.xml"])
def test_a_runs_other_files_download_as_attachments(
    runs_site: Site, real_runs: RealRuns, name: str
) -> None:
    """Markup a device or a relay wrote into the record is never rendered on the API's origin."""
    response = runs_site.client.get(f"/api/v1/runs/{real_runs.first}/artifacts/{name}")
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>" in response.text  # the planted file, as a download


@on_real_runs
def test_the_report_opens_inline_and_fetches_nothing(runs_site: Site, real_runs: RealRuns) -> None:
    """The report is the one HTML file shown inline: self-contained, so its policy lets its
    own inline scripts run and nothing be loaded or sent anywhere."""
    response = runs_site.client.get(f"/api/v1/runs/{real_runs.first}/report")
    assert [r.status_code for r in response.history] == [307]
    assert response.url.path == f"/api/v1/runs/{real_runs.first}/artifacts/report.html"
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "attachment" not in response.headers.get("content-disposition", "")
    scripts = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>(.*?)</script>", response.text, re.S)
    code = [body for attrs, body in scripts if "application/json" not in attrs]
    assert code, "the report has no inline scripts: this test is out of date"
    assert not re.search(r"<script[^>]*\bsrc=", response.text)
    policy = _policy(response.headers["content-security-policy"])
    hashes = {"'sha256-" + base64.b64encode(hashlib.sha256(c.encode()).digest()).decode() + "'"
              for c in code}  # fmt: skip
    allowed = policy.get("script-src", [])
    assert "'unsafe-inline'" in allowed or hashes <= set(allowed)
    assert policy["default-src"] == ["'none'"]
    assert "connect-src" not in policy  # no fetch, no beacon: default-src 'none' applies
    assert response.headers["x-content-type-options"] == "nosniff"


def _policy(header: str) -> dict[str, list[str]]:
    directives = (part.split() for part in header.split(";") if part.strip())
    return {d[0]: d[1:] for d in directives}
