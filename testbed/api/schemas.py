"""The API's request and response models: the OpenAPI contract the dashboard, CI and
schemathesis rely on. Run content (KPIs, stream figures, events) is passed through as the run
record holds it, so the record format stays the one definition of those fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JsonObject = dict[str, Any]


class ErrorBody(BaseModel):
    detail: str | list[Any]


class RunRow(BaseModel):
    run_id: str
    profile: str
    lab: str
    verdict: str
    status: str
    started_at: float
    ended_at: float | None = None


class RunPage(BaseModel):
    items: list[RunRow]
    total: int
    limit: int
    offset: int


class RunDetail(BaseModel):
    run: JsonObject = Field(description="run_id, profile, lab, verdict, status, times, host")
    summary: JsonObject | None = Field(description="summary.json; null while running")


class EventPage(BaseModel):
    items: list[JsonObject]
    total: int
    offset: int
    limit: int


class Series(BaseModel):
    stream: str
    repetition: int
    point: int | None
    packets: int
    t: list[float]
    owd_min: list[float]
    owd_mean: list[float]
    owd_max: list[float]


class FileEntry(BaseModel):
    path: str
    bytes: int
    kind: str


class StartRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: str = Field(max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    lab: str = Field(max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class Accepted(BaseModel):
    run_id: str
    status: Literal["running", "aborting", "deleted"]


class ComparedKpi(BaseModel):
    name: str
    unit: str | None
    limit: str | None
    a: JsonObject | None
    b: JsonObject | None
    delta: float | None


class ComparedStream(BaseModel):
    id: str
    repetition: int | None
    point: int | None
    a: JsonObject | None
    b: JsonObject | None


class Comparison(BaseModel):
    a: JsonObject
    b: JsonObject
    kpis: list[ComparedKpi]
    streams: list[ComparedStream]


class TrendPoint(BaseModel):
    run_id: str
    started_at: float
    value: float | None
    verdict: str | None


class Trend(BaseModel):
    profile: str
    lab: str
    kpi: str
    unit: str | None
    points: list[TrendPoint]


class Trends(BaseModel):
    series: list[Trend]


class CellKpi(BaseModel):
    name: str
    unit: str | None
    value: float | None
    verdict: str | None
    trend: list[float | None]


class Cell(BaseModel):
    profile: str
    lab: str
    runs: int
    run_id: str | None
    verdict: str | None
    started_at: float | None
    kpis: list[CellKpi]


class Overview(BaseModel):
    cells: list[Cell]
    running: list[str]


class ProfileInfo(BaseModel):
    name: str
    title: str | None
    description: str
    duration_s: float | None
    repetitions: int | None
    problems: list[str]


class LabInfo(BaseModel):
    name: str
    title: str | None
    description: str
    problems: list[str]


class Health(BaseModel):
    status: Literal["ok"]
    runs: int
