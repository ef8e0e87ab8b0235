"""Routes across runs: comparison, KPI trends, the overview, profiles and labs, health."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from testbed.api import schemas as s
from testbed.api.context import ApiContext
from testbed.api.runs import ERRORS
from testbed.api.store import kpis_by_name, query_index
from testbed.errors import ConfigError

TREND_RUNS = 20
STREAM_FIGURES = ("loss_pct", "jitter_ms", "max_gap_ms")


def meta_router(ctx: ApiContext) -> APIRouter:
    read = [Depends(ctx.auth.require("read"))]
    router = APIRouter(prefix="/api/v1", tags=["across runs"], responses=ERRORS)
    store, index = ctx.store, ctx.index

    @router.get("/health")
    async def health() -> s.Health:
        """Liveness, open to all: the server answers and reads its index."""
        return s.Health(status="ok", runs=await query_index(index, index.count_runs))

    @router.get("/compare", dependencies=read)
    def compare(
        a: Annotated[str, Query(max_length=128)], b: Annotated[str, Query(max_length=128)]
    ) -> s.Comparison:
        """Two runs side by side: KPIs by name, stream figures by stream and repetition."""
        sa, sb = store.summary(a) or {}, store.summary(b) or {}
        return s.Comparison(
            a=store.header(a), b=store.header(b), kpis=_kpis(sa, sb), streams=_streams(sa, sb)
        )

    @router.get("/trends", dependencies=read)
    def trends(
        profile: Annotated[str, Query(max_length=128)],
        lab: Annotated[str | None, Query(max_length=128)] = None,
        kpi: Annotated[str | None, Query(max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> s.Trends:
        """KPI values of the newest finished runs of a profile, per lab, oldest first."""
        labs = (
            [lab] if lab else sorted({c["lab"] for c in index.cells() if c["profile"] == profile})
        )
        series = []
        for one_lab in labs:
            series += _trend(index.kpi_trend(profile, one_lab, kpi, limit))
        return s.Trends(series=series)

    @router.get("/overview", dependencies=read)
    def overview() -> s.Overview:
        """Latest verdict and KPI trends of every profile on every lab."""
        cells = []
        for cell in index.cells():
            latest = index.list_runs(cell["profile"], cell["lab"], 5)
            finished = [r for r in latest if r["status"] != "running"] or latest
            trend = _trend(index.kpi_trend(cell["profile"], cell["lab"], None, TREND_RUNS))
            row = finished[0] if finished else {}
            # the KPIs the latest run judged, each with its history
            trend = [t for t in trend if t.points[-1].run_id == row.get("run_id")]
            cells.append(
                s.Cell(
                    profile=cell["profile"],
                    lab=cell["lab"],
                    runs=cell["runs"],
                    run_id=row.get("run_id"),
                    verdict=row.get("verdict"),
                    started_at=row.get("started_at"),
                    kpis=[_cell_kpi(t) for t in trend],
                )
            )
        return s.Overview(cells=cells, running=ctx.service.running())

    @router.get("/profiles", dependencies=read)
    def profiles() -> list[s.ProfileInfo]:
        """The profiles this server can run (its profiles folder)."""
        return [_profile_info(p) for p in sorted(ctx.config.profiles_dir.glob("*.yaml"))]

    @router.get("/labs", dependencies=read)
    def labs() -> list[s.LabInfo]:
        """The labs this server can run on (its labs folder)."""
        return [_lab_info(p) for p in sorted(ctx.config.labs_dir.glob("*.yaml"))]

    return router


def _kpis(sa: Mapping[str, Any], sb: Mapping[str, Any]) -> list[s.ComparedKpi]:
    ka, kb = kpis_by_name(sa), kpis_by_name(sb)
    out = []
    for name in list(ka) + [n for n in kb if n not in ka]:
        a, b = ka.get(name), kb.get(name)
        first = a or b or {}
        va, vb = _num((a or {}).get("value")), _num((b or {}).get("value"))
        delta = vb - va if va is not None and vb is not None else None
        out.append(
            s.ComparedKpi(
                name=name,
                unit=first.get("unit"),
                limit=first.get("limit"),
                a=_pick(a, ("value", "verdict", "samples")),
                b=_pick(b, ("value", "verdict", "samples")),
                delta=delta,
            )
        )
    return out


def _streams(sa: Mapping[str, Any], sb: Mapping[str, Any]) -> list[s.ComparedStream]:
    def keyed(summary: Mapping[str, Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
        return {
            (x.get("id"), x.get("repetition"), x.get("point")): x
            for x in summary.get("streams", [])
        }

    ma, mb = keyed(sa), keyed(sb)
    out = []
    for key in list(ma) + [k for k in mb if k not in ma]:
        out.append(
            s.ComparedStream(
                id=str(key[0]),
                repetition=key[1],
                point=key[2],
                a=_stream_figures(ma.get(key)),
                b=_stream_figures(mb.get(key)),
            )
        )
    return out


def _stream_figures(entry: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    owd = entry.get("owd_ms") or {}
    return {
        **{k: entry.get(k) for k in STREAM_FIGURES},
        "owd_p50_ms": owd.get("p50"),
        "owd_p95_ms": owd.get("p95"),
    }


def _trend(rows: list[dict[str, Any]]) -> list[s.Trend]:
    series: dict[str, s.Trend] = {}
    for r in rows:
        trend = series.setdefault(
            r["name"],
            s.Trend(profile=r["profile"], lab=r["lab"], kpi=r["name"], unit=r["unit"], points=[]),
        )
        trend.points.append(
            s.TrendPoint(
                run_id=r["run_id"],
                started_at=r["started_at"],
                value=r["value"],
                verdict=r["verdict"],
            )
        )
    return list(series.values())


def _cell_kpi(trend: s.Trend) -> s.CellKpi:
    last = trend.points[-1]
    return s.CellKpi(
        name=trend.kpi,
        unit=trend.unit,
        value=last.value,
        verdict=last.verdict,
        trend=[p.value for p in trend.points],
    )


def _profile_info(path: Path) -> s.ProfileInfo:
    from testbed.model.loader import load_profile

    try:
        profile, _ = load_profile(path)
    except ConfigError as exc:
        return s.ProfileInfo(
            name=path.stem,
            title=None,
            description="",
            duration_s=None,
            repetitions=None,
            problems=exc.problems,
        )
    return s.ProfileInfo(
        name=path.stem,
        title=profile.name,
        description=profile.description,
        duration_s=profile.duration_s,
        repetitions=profile.repetitions,
        problems=[],
    )


def _lab_info(path: Path) -> s.LabInfo:
    from testbed.model.loader import load_lab

    try:
        lab, _ = load_lab(path)
    except ConfigError as exc:
        return s.LabInfo(name=path.stem, title=None, description="", problems=exc.problems)
    return s.LabInfo(name=path.stem, title=lab.name, description=lab.description, problems=[])


def _pick(entry: Mapping[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any] | None:
    return None if entry is None else {k: entry.get(k) for k in keys}


def _num(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None
