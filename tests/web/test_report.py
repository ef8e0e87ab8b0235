"""report.html: one self-contained file per run that shows what the run page shows."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from testbed import web
from testbed.results.report import render_report, write_report
from testbed.results.view import run_view
from tests.real_runs import RealRuns

HOSTILE = "</script><script>alert(1)</script><!--<script>"


class _Page(HTMLParser):
    """The tags' src/href attributes, and the text of every <script> (by id when it has one)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value or "" for name, value in attrs if name in ("src", "href")]
        if tag == "script":
            self._open = dict(attrs)
            self.scripts.append((self._open, ""))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._open = None
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        elif self._in_title:
            self.title += data


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def embedded_view(page: _Page) -> Any:
    views = [text for attrs, text in page.scripts if attrs.get("id") == "run-view"]
    assert len(views) == 1, "exactly one embedded run view"
    return json.loads(views[0])


def without_report(view: dict[str, Any]) -> dict[str, Any]:
    """The view minus report.html itself, whose size changes when the report is rewritten."""
    artifacts = [a for a in view["artifacts"] if a["path"] != "report.html"]
    return {**view, "artifacts": artifacts}


def minimal_view() -> dict[str, Any]:
    run = {
        "run_id": "r1",
        "profile": "<b>bold</b>",
        "lab": "lab & co",
        "verdict": "FAIL",
        "status": "complete",
        "started_at": 1.0,
        "ended_at": 2.0,
        "duration_s": 1.0,
        "host": None,
        "repetitions": 1,
        "planned_duration_s": 1.0,
    }
    kpi = {"name": HOSTILE, "value": 1.0, "unit": "ms", "limit": "<= 0", "verdict": "FAIL"}
    return {
        "run": run,
        "kpis": [kpi],
        "streams": [],
        "series": [],
        "histograms": [],
        "markers": [],
        "interruptions": [],
        "floor": None,
        "failover": None,
        "errors": [HOSTILE],
        "artifacts": [],
    }


def test_hostile_strings_stay_data() -> None:
    view = minimal_view()
    text = render_report(view)
    page = parse(text)
    assert HOSTILE not in text
    assert text.count("<script") == text.count("</script>") == len(page.scripts)
    assert embedded_view(page) == view
    assert page.title == "<b>bold</b> on lab & co: FAIL (r1)"  # one text, not tags


def test_nothing_but_known_assets() -> None:
    for name in web.PAGES:
        assert "<html" in web.page(name)
    for bad in ("../__init__.py", "missing.js", "run", "/etc/passwd", "__init__.py"):
        with pytest.raises(KeyError):
            web.asset_text(bad)
        with pytest.raises(KeyError):
            web.page(bad)
    assert web.plotly_js().lstrip().startswith("/**\n* plotly.js v")


@pytest.mark.netns
@pytest.mark.slow
def test_report_of_a_real_run_is_self_contained(real_runs: RealRuns, tmp_path: Path) -> None:
    run_dir = shutil.copytree(real_runs.run_dir(real_runs.first), tmp_path / real_runs.first)
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    text = path.read_text(encoding="utf-8")
    page = parse(text)

    external = [link for link in page.links if "//" in link or link.startswith("/")]
    assert external == [], "the report refers to files outside itself"
    assert [attrs for attrs, _ in page.scripts if "src" in attrs] == []
    assert '<link rel="stylesheet"' not in text and "<style>" in text
    assert any(body.strip() == web.plotly_js().strip() for _, body in page.scripts)
    for name in ("dashboard.js", "plots.js", "run.js"):
        assert web.asset_text(name).strip() in text

    view = embedded_view(page)
    assert without_report(view) == without_report(run_view(run_dir))
    assert [k["name"] for k in view["kpis"]] == [
        k["name"] for k in real_runs.summary(real_runs.first)["kpis"]
    ]
    assert view["series"] and view["histograms"] and view["floor"]
