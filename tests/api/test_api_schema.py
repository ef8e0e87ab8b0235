"""The API keeps its published OpenAPI contract on real run records (schemathesis).

For every operation of ``/openapi.json``, schemathesis generates requests (valid ones, and
invalid ones where the operation has something to get wrong) and checks each response: never a
server error; status code, content type and body as the spec declares. Generated run ids alone
would only ever reach the 404 branch, so schema hooks swap in the real runs (with their real
streams, artifacts and transcripts) for part of the cases; further tests call every read with
every real name and need a 200, every run operation with an unknown run and need a 404, and
delete, abort and start real runs, all conforming.

The app serves a copy of the real-runs folder (DELETE must not destroy the session's runs),
with a token holding every right so the writes are exercised too. Its profiles folder holds
only a profile that cannot be planned, and launching a controller is replaced by a failure, so
no request here can start a run.

The tests are parametrised by operation here rather than through ``@schema.parametrize()``:
under pytest 9, schemathesis' plugin gives every operation's item the same node id, and its
lazy ``from_fixture`` loader fails (``Function`` has no ``_nodeid``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from testbed.api import ApiConfig, create_app
from testbed.api.auth import RIGHTS, new_token
from testbed.api.service import RunService
from tests.real_runs import LAB_NAME, PROFILE, TWIN_LAB, RealRuns

pytestmark = [pytest.mark.netns, pytest.mark.slow]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
UNPLANNABLE = "unplannable"
"""The only profile the app knows: no duration, no streams, so starting it fails with 400."""
SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _openapi() -> dict[str, Any]:
    """The published spec (made by the code alone: the runs and the config do not change it)."""
    with tempfile.TemporaryDirectory() as empty:
        return create_app(ApiConfig(results_dir=Path(empty), database_url="sqlite://")).openapi()


SPEC = _openapi()
SCHEMA = schemathesis.openapi.from_dict(SPEC)
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}
RUN_OPERATIONS = [label for label in OPERATIONS if "{run_id}" in label]
READS = [label for label in OPERATIONS if label.startswith("GET ")]


@dataclass(frozen=True)
class Served:
    """The app on a copy of the real runs, and real names to put into requests."""

    app: Any
    results: Path
    auth: dict[str, str]
    run_ids: tuple[str, ...]
    streams: dict[str, list[tuple[str, int]]]
    files: dict[str, list[str]]

    def path_parameters(self, path: str) -> list[dict[str, Any]]:
        """Path parameters naming real things, for the operation at ``path``."""
        out: list[dict[str, Any]] = []
        for run_id in self.run_ids:
            if path.endswith("/series"):
                out += [{"run_id": run_id, "stream": s} for s, _ in self.streams[run_id]]
            elif path.endswith("/artifacts/{name}"):
                out += [{"run_id": run_id, "name": n} for n in self.files[run_id]]
            elif path.endswith("/transcripts/{name}"):
                logs = [n for n in self.files[run_id] if n.endswith(".log")]
                out += [{"run_id": run_id, "name": n} for n in logs]
            else:
                out.append({"run_id": run_id})
        return out

    def requests(self, path: str) -> list[dict[str, Any]]:
        """Arguments of ``Case`` for reads of real things at ``path`` (every one succeeds)."""
        ids = self.run_ids
        if path.endswith("/series"):
            return [
                {"path_parameters": {"run_id": r, "stream": s}, "query": {"repetition": rep}}
                for r in ids
                for s, rep in self.streams[r]
            ]
        if "{run_id}" in path:
            return [{"path_parameters": p} for p in self.path_parameters(path)]
        if path == "/api/v1/compare":
            return [{"query": {"a": a, "b": b}} for a in ids for b in ids]
        if path == "/api/v1/trends":
            labs = [{}, {"lab": LAB_NAME}, {"lab": TWIN_LAB}, {"lab": LAB_NAME, "kpi": "x"}]
            return [{"query": {"profile": PROFILE, **lab}} for lab in labs]
        if path == "/api/v1/runs":
            queries = [{}, {"profile": PROFILE, "lab": LAB_NAME}, {"verdict": "FAIL"}]
            queries += [{"since": "2000-01-01T00:00:00Z", "until": "4102444800", "limit": 1}]
            return [{"query": q} for q in queries]
        return [{}]


REAL: list[Served] = []
"""The module's served app while its tests run: the hooks draw real names from it."""


def _refuse_launch(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError("the schema tests must never launch a controller")


def serve(real_runs: RealRuns, base: Path) -> Iterator[Served]:
    """The app on a fresh copy of the real runs under ``base``, launching disabled."""
    results, profiles = base / "results", base / "profiles"
    shutil.copytree(real_runs.results, results)
    profiles.mkdir()
    profile = {"schema_version": 1, "name": UNPLANNABLE, "description": "cannot be planned"}
    (profiles / f"{UNPLANNABLE}.yaml").write_text(json.dumps(profile))
    token = new_token(base / "tokens.yaml", "all", list(RIGHTS))
    config = ApiConfig(
        results_dir=results,
        database_url=f"sqlite:///{results / 'index.sqlite3'}",
        profiles_dir=profiles,
        labs_dir=real_runs.labs,
        tokens_file=base / "tokens.yaml",
    )
    ids = real_runs.run_ids
    files = {
        r: sorted(p.relative_to(results / r).as_posix() for p in (results / r).rglob("*"))
        for r in ids
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunService, "_launch", _refuse_launch)
        app = create_app(config)
        yield Served(
            app=app,
            results=results,
            auth={"Authorization": f"Bearer {token}"},
            run_ids=ids,
            streams={
                r: sorted({(s["id"], s["repetition"]) for s in real_runs.summary(r)["streams"]})
                for r in ids
            },
            files={r: [f for f in files[r] if (results / r / f).is_file()] for r in ids},
        )
        app.state.ctx.index.close()


@pytest.fixture(scope="module")
def served(real_runs: RealRuns, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    for found in serve(real_runs, tmp_path_factory.mktemp("api_schema")):
        REAL.append(found)
        try:
            yield found
        finally:
            REAL.remove(found)


@pytest.fixture
def fresh(real_runs: RealRuns, tmp_path: Path) -> Iterator[Served]:
    """An app on a copy of its own, for deleting runs."""
    yield from serve(real_runs, tmp_path)


@SCHEMA.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Part of the cases name real runs (never for DELETE: the other operations need them)."""
    operation = context.operation
    if not REAL or not path_parameters or operation.method.upper() == "DELETE":
        return st.just(path_parameters)
    real = REAL[0].path_parameters(operation.path)
    return st.one_of(st.just(path_parameters), st.sampled_from(real))


@SCHEMA.hook
def flatmap_query(context: Any, query: dict[str, Any] | None) -> Any:
    """Comparisons of real runs and trends of the real profile, besides generated ones."""
    path = context.operation.path
    if REAL and path == "/api/v1/compare":
        ids = REAL[0].run_ids
        pairs = [{"a": a, "b": b} for a in ids for b in ids]
        return st.one_of(st.just(query), st.sampled_from(pairs))
    if REAL and path == "/api/v1/trends":
        real = [{"profile": PROFILE}, {**(query or {}), "profile": PROFILE}]
        return st.one_of(st.just(query), st.sampled_from(real))
    return st.just(query)


def _can_be_wrong(label: str) -> bool:
    """Whether invalid requests exist: free-text path parameters alone cannot be invalid."""
    operation = OPERATIONS[label]
    return bool(list(operation.query) or list(operation.headers) or list(operation.body))


def _call(served: Served, case: Any) -> Any:
    return case.call_and_validate(headers=served.auth, checks=CHECKS, app=served.app)


@pytest.mark.parametrize(
    "label",
    list(OPERATIONS),
)
def test_valid_requests_get_conforming_answers(label: str, served: Served) -> None:
    @settings(SETTINGS, max_examples=25)
    @given(case=OPERATIONS[label].as_strategy(GenerationMode.POSITIVE))
    def check(case: Any) -> None:
        _call(served, case)

    check()


@pytest.mark.parametrize("label", [label for label in OPERATIONS if _can_be_wrong(label)])
def test_invalid_requests_get_conforming_refusals(label: str, served: Served) -> None:
    @settings(SETTINGS, max_examples=15)
    @given(case=OPERATIONS[label].as_strategy(GenerationMode.NEGATIVE))
    def check(case: Any) -> None:
        _call(served, case)

    check()


@pytest.mark.parametrize("label", READS)
def test_every_read_of_real_runs_succeeds(label: str, served: Served) -> None:
    operation = OPERATIONS[label]
    documented = SPEC["paths"][operation.path][operation.method.lower()]["responses"]
    success = min(int(code) for code in documented if code.isdigit() and int(code) < 400)
    requests = served.requests(operation.path)
    assert len(requests) >= (3 if "{run_id}" in label else 1)
    for kwargs in requests:
        response = _call(served, operation.Case(**kwargs))
        assert response.status_code == success, (kwargs, response.text[:500])


@pytest.mark.parametrize("label", RUN_OPERATIONS)
def test_unknown_runs_get_a_conforming_404(label: str, served: Served) -> None:
    operation = OPERATIONS[label]
    names = {"run_id": "20000101T000000Z-nothing-000000", "stream": "up", "name": "x.log"}
    params = {p.name: names[p.name] for p in operation.path_parameters}
    response = _call(served, operation.Case(path_parameters=params))
    assert response.status_code == 404
    assert "20000101T000000Z-nothing-000000" in response.json()["detail"]


def test_deleting_real_runs_conforms_and_removes_them(fresh: Served) -> None:
    delete, show = OPERATIONS["DELETE /api/v1/runs/{run_id}"], OPERATIONS["GET /api/v1/runs"]
    for n, run_id in enumerate(fresh.run_ids, start=1):
        response = _call(fresh, delete.Case(path_parameters={"run_id": run_id}))
        assert response.status_code == 200
        assert response.json() == {"run_id": run_id, "status": "deleted"}
        assert not (fresh.results / run_id).exists()
        listed = _call(fresh, show.Case()).json()
        assert listed["total"] == len(fresh.run_ids) - n
        assert run_id not in {row["run_id"] for row in listed["items"]}
        again = _call(fresh, delete.Case(path_parameters={"run_id": run_id}))
        assert again.status_code == 404


def test_aborting_a_finished_run_conforms(served: Served) -> None:
    abort = OPERATIONS["POST /api/v1/runs/{run_id}/abort"]
    for run_id in served.run_ids:
        response = _call(served, abort.Case(path_parameters={"run_id": run_id}))
        assert response.status_code == 409
        assert "not running" in response.json()["detail"]


@pytest.mark.parametrize(
    ("profile", "lab", "status", "detail"),
    [
        (UNPLANNABLE, "emulated", 400, "does not plan"),
        (PROFILE, "emulated", 404, "no profile 'dash_probe'"),
        (UNPLANNABLE, "nowhere", 404, "no lab 'nowhere'"),
    ],
)
def test_starting_runs_that_cannot_start_conforms(
    served: Served, profile: str, lab: str, status: int, detail: str
) -> None:
    start = OPERATIONS["POST /api/v1/runs"]
    response = _call(served, start.Case(body={"profile": profile, "lab": lab}))
    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert sorted(p.name for p in served.results.iterdir() if p.is_dir()) == sorted(served.run_ids)
