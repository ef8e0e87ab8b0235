"""Routes of runs: list, start, one run's content and files, live progress, abort, delete."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    StreamingResponse,
)

from drivers.files import read_json_lines
from testbed.api import schemas as s
from testbed.api.cache import VersionedCache, json_bytes
from testbed.api.context import ApiContext
from testbed.api.live import event_stream
from testbed.api.store import query_index
from testbed.results.record import EVENTS
from testbed.results.series import downsample, owd_ms, read_series, series_files
from testbed.results.view import artifacts, run_view

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorBody, "description": text}
    for code, text in (
        (400, "invalid request"),
        (401, "no valid token"),
        (403, "the token lacks the right"),
        (404, "no such run or file"),
    )
}
WRITE_ERRORS = {**ERRORS, 409: {"model": s.ErrorBody, "description": "not possible in this state"}}
REPORT = "report.html"
# A report is self-contained: its scripts and styles are inline, and it fetches nothing.
REPORT_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:"
}


def runs_router(ctx: ApiContext) -> APIRouter:
    read = [Depends(ctx.auth.require("read"))]
    router = APIRouter(prefix="/api/v1/runs", tags=["runs"], responses=ERRORS)
    store, index = ctx.store, ctx.index

    pages = VersionedCache()
    answers = VersionedCache(size=64)

    def _cached(key: tuple[Any, ...], run_id: str, make: Callable[[], object]) -> Response:
        stamp = store.stamp(run_id)
        body = answers.get(key, stamp)
        if body is None:
            body = json_bytes(make())
            answers.put(key, stamp, body)
        return Response(body, media_type="application/json")

    @router.get("", dependencies=read, response_model=s.RunPage)
    async def list_runs(
        profile: Annotated[str | None, Query(max_length=128)] = None,
        lab: Annotated[str | None, Query(max_length=128)] = None,
        verdict: Annotated[str | None, Query(pattern="^(PASS|FAIL|ERROR|ABORTED|RUNNING)$")] = None,
        since: Annotated[str | None, Query(max_length=40, description="epoch s or ISO")] = None,
        until: Annotated[str | None, Query(max_length=40, description="epoch s or ISO")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> Response:
        """Runs, newest first, filtered by profile, lab, verdict and start time."""
        start, end = _time(since, "since"), _time(until, "until")
        key = (profile, lab, verdict, start, end, limit, offset)

        def query() -> bytes:
            version = index.version()
            body = pages.get(key, version)
            if body is None:
                rows = index.list_runs(
                    profile, lab, limit, verdict=verdict, since=start, until=end, offset=offset
                )
                total = index.count_runs(profile, lab, verdict, start, end)
                page = s.RunPage(
                    items=[s.RunRow.model_validate(r) for r in rows],
                    total=total,
                    limit=limit,
                    offset=offset,
                )
                body = page.model_dump_json().encode()
                pages.put(key, version, body)
            return body

        return Response(await query_index(index, query), media_type="application/json")

    @router.post(
        "",
        status_code=202,
        dependencies=[Depends(ctx.auth.require("run"))],
        responses={**WRITE_ERRORS, 500: {"model": s.ErrorBody, "description": "did not start"}},
    )
    def start_run(body: s.StartRun) -> s.Accepted:
        """Start a profile of the profiles folder on a lab of the labs folder."""
        return s.Accepted(run_id=ctx.service.start(body.profile, body.lab), status="running")

    @router.get("/{run_id}", dependencies=read, response_model=s.RunDetail)
    def get_run(run_id: str) -> Response:
        # passed through as read (and checked in the tests), not re-validated: a summary can
        # hold tens of thousands of values
        def make() -> object:
            return {"run": store.header(run_id), "summary": store.summary(run_id)}

        return _cached(("run", run_id), run_id, make)

    @router.get("/{run_id}/view", dependencies=read, response_model=dict[str, Any])
    def get_view(
        run_id: str, max_points: Annotated[int, Query(ge=50, le=20_000)] = 2000
    ) -> Response:
        """Everything the run page draws (the run view of docs/dashboard.md)."""
        return _cached(
            ("view", run_id, max_points),
            run_id,
            lambda: run_view(store.run_dir(run_id), max_points),
        )

    @router.get("/{run_id}/kpis", dependencies=read)
    def get_kpis(run_id: str) -> list[dict[str, Any]]:
        return list((store.summary(run_id) or {}).get("kpis", []))

    @router.get("/{run_id}/streams", dependencies=read)
    def get_streams(run_id: str) -> list[dict[str, Any]]:
        return list((store.summary(run_id) or {}).get("streams", []))

    @router.get("/{run_id}/events", dependencies=read)
    def get_events(
        run_id: str,
        type: Annotated[str | None, Query(max_length=64)] = None,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> s.EventPage:
        """The run's event log (events.jsonl), oldest first."""
        events = [
            e for e in read_json_lines(store.events_path(run_id)) if type in (None, e.get("type"))
        ]
        return s.EventPage(
            items=events[offset : offset + limit], total=len(events), offset=offset, limit=limit
        )

    @router.get("/{run_id}/streams/{stream}/series", dependencies=read)
    def get_series(
        run_id: str,
        stream: str,
        repetition: Annotated[int, Query(ge=1)] = 1,
        point: Annotated[int | None, Query(ge=0)] = None,
        max_points: Annotated[int, Query(ge=10, le=20_000)] = 2000,
    ) -> s.Series:
        """One stream's one-way delay over time, down-sampled (bucket min, mean, max)."""
        for key in series_files(store.run_dir(run_id)):
            if (key.stream, key.repetition, key.point) == (stream, repetition, point):
                rows = read_series(key.path)
                plot = downsample(rows["tx_ns"], owd_ms(rows), max_points)
                return s.Series(
                    stream=stream, repetition=repetition, point=point, packets=len(rows), **plot
                )
        raise HTTPException(404, f"run {run_id} has no series of {stream!r} rep {repetition}")

    @router.get("/{run_id}/artifacts", dependencies=read)
    def list_artifacts(run_id: str) -> list[s.FileEntry]:
        return [s.FileEntry(**a) for a in artifacts(store.run_dir(run_id))]

    @router.get(
        "/{run_id}/artifacts/{name:path}",
        dependencies=read,
        responses={200: {"content": {media: {} for media in MEDIA_TYPES.values()}}},
    )
    def get_artifact(run_id: str, name: str) -> Response:
        """A file of the record, as a download; the report opens in the browser (its links
        to captures and logs are relative, so they resolve to these downloads)."""
        if name == REPORT:
            return _report(run_id)
        path = store.file_in(run_id, name)
        return FileResponse(path, filename=path.name, media_type=_media_type(path.name))

    def _report(run_id: str) -> Response:
        path = store.run_dir(run_id) / REPORT
        if path.is_file():
            return FileResponse(path, media_type="text/html", headers=REPORT_HEADERS)
        from testbed.results.report import render_report

        text = render_report(run_view(store.run_dir(run_id)))
        return HTMLResponse(text, headers=REPORT_HEADERS)

    @router.get("/{run_id}/transcripts", dependencies=read)
    def list_transcripts(run_id: str) -> list[s.FileEntry]:
        """Device transcripts and logs: AT/PEI exchanges, relays, clients, cores."""
        found = artifacts(store.run_dir(run_id))
        return [s.FileEntry(**a) for a in found if a["path"].endswith(".log")]

    @router.get(
        "/{run_id}/transcripts/{name:path}",
        dependencies=read,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def get_transcript(run_id: str, name: str) -> PlainTextResponse:
        if not name.endswith(".log"):
            raise HTTPException(404, f"no transcript {name!r}")
        text = store.file_in(run_id, name).read_text(encoding="utf-8", errors="replace")
        return PlainTextResponse(text)

    @router.get(
        "/{run_id}/report",
        dependencies=read,
        status_code=307,
        response_class=RedirectResponse,
        responses={307: {"description": "to the report among the run's artifacts"}},
    )
    def get_report(run_id: str) -> RedirectResponse:
        """The run's self-contained report.html (made now if the record has none)."""
        store.run_dir(run_id)
        return RedirectResponse(f"/api/v1/runs/{run_id}/artifacts/{REPORT}", status_code=307)

    @router.get(
        "/{run_id}/live",
        dependencies=read,
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    def live(
        run_id: str,
        request: Request,
        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    ) -> StreamingResponse:
        """Server-sent events: each event-log line as it is written, until the run ends."""
        events = store.run_dir(run_id) / EVENTS
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0

        def running() -> bool:
            return store.manifest(run_id).get("status") == "running"

        stream = event_stream(events, running, after, request.is_disconnected)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.post(
        "/{run_id}/abort",
        status_code=202,
        dependencies=[Depends(ctx.auth.require("run"))],
        responses=WRITE_ERRORS,
    )
    def abort(run_id: str) -> s.Accepted:
        """Interrupt a running run (SIGINT, as Ctrl-C): it stops, tears down, ends ABORTED."""
        if store.manifest(run_id).get("status") != "running":
            raise HTTPException(409, f"run {run_id} is not running")
        ctx.service.abort(run_id)
        return s.Accepted(run_id=run_id, status="aborting")

    @router.delete(
        "/{run_id}", dependencies=[Depends(ctx.auth.require("delete"))], responses=WRITE_ERRORS
    )
    def delete(run_id: str) -> s.Accepted:
        """Delete a finished run's record and its index entries."""
        if store.manifest(run_id).get("status") == "running":
            raise HTTPException(409, f"run {run_id} is running: abort it first")
        store.delete(run_id)
        return s.Accepted(run_id=run_id, status="deleted")

    return router


def _time(text: str | None, name: str) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise HTTPException(400, f"{name}: give epoch seconds or ISO-8601 time")
        return value
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise HTTPException(400, f"{name}: give epoch seconds or ISO-8601 time") from None


MEDIA_TYPES = {
    ".pcapng": "application/vnd.tcpdump.pcap",
    ".pcap": "application/vnd.tcpdump.pcap",
    ".html": "text/html",
    ".xml": "application/xml",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".log": "text/plain",
    ".yaml": "text/plain",
    "": "application/octet-stream",
}


def _media_type(name: str) -> str:
    suffix = name[name.rfind(".") :] if "." in name else ""
    return MEDIA_TYPES.get(suffix, MEDIA_TYPES[""])
