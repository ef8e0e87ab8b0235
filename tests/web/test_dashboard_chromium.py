"""The dashboard in Debian's headless Chromium, served by the real app over real run records.

Each page is loaded until it marks ``body[data-ready]`` (every plot drawn) or
``body[data-error]``; then its tables are read, its plots are checked for drawn traces, and
screenshots are saved under the test's tmp_path and checked for not being blank.
"""

from __future__ import annotations

import io
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from PIL import Image
from selenium import webdriver
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from testbed.api import ApiConfig, create_app
from testbed.api.auth import new_token
from testbed.results.report import render_report, write_report
from testbed.results.view import run_view
from tests.real_runs import RealRuns

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, chromedriver)",
    ),
]

WAIT_S = 120  # a noisy 2-core machine may take long; nothing here asserts on timing
HOSTILE = "</script><script>alert(1)</script>"
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-quic",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]


@dataclass
class Server:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve(config: ApiConfig) -> Server:
    """The app on a free port of 127.0.0.1, in a thread of this process."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    return Server(f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread)


def api_config(runs: RealRuns, **extra: Any) -> ApiConfig:
    return ApiConfig(
        results_dir=runs.results,
        database_url=runs.database_url,
        profiles_dir=runs.profiles,
        labs_dir=runs.labs,
        **extra,
    )


@pytest.fixture(scope="module")
def app_url(real_runs: RealRuns) -> Iterator[str]:
    server = serve(api_config(real_runs))
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Chrome]:
    """Chromium with a fresh profile; selenium-manager never runs (explicit driver path)."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in [*BROWSER_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


# --- helpers ------------------------------------------------------------------------------


def load(driver: Chrome, url: str) -> None:
    """Open a page and wait until it has drawn everything; fail with its error or JS errors."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.execute_script(
            "return document.body.dataset.ready || document.body.dataset.error"
        ),
        f"{url} never became ready",
    )
    error = driver.execute_script("return document.body.dataset.error")
    assert error is None, f"{url}: {error}"
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], f"{url}: browser errors {severe}"


def wait_for(driver: Chrome, script: str, what: str) -> None:
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(script), what)


def table_rows(driver: Chrome, table_id: str) -> list[list[str]]:
    """The body rows of a table, as the text of their cells (row header first)."""
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")
    return [[c.text for c in r.find_elements(By.CSS_SELECTOR, "th, td")] for r in rows]


def traces(driver: Chrome, plot_id: str) -> tuple[int, int]:
    """How many traces a plot has in its data, and how many Plotly drew as SVG groups."""
    counts: list[int] = driver.execute_script(
        "const gd = document.getElementById(arguments[0]);"
        "return [gd.data ? gd.data.length : 0,"
        " gd.querySelectorAll('.cartesianlayer .trace').length];",
        plot_id,
    )
    return counts[0], counts[1]


def shot(driver: Chrome, folder: Path, name: str, element_id: str | None = None) -> Path:
    """A PNG of the element (or of the visible page), saved and checked for content."""
    path = folder / f"{name}.png"
    if element_id is None:
        driver.save_screenshot(str(path))
    else:
        element = driver.find_element(By.ID, element_id)
        driver.execute_script("arguments[0].scrollIntoView()", element)
        element.screenshot(str(path))
    assert_not_blank(path.read_bytes(), name)
    return path


def assert_not_blank(png: bytes, name: str) -> None:
    """At least 1 % of the pixels differ clearly from the most common (background) grey."""
    histogram = Image.open(io.BytesIO(png)).convert("L").histogram()
    background = max(range(256), key=histogram.__getitem__)
    drawn = sum(n for level, n in enumerate(histogram) if abs(level - background) > 40)
    assert drawn > 0.01 * sum(histogram), f"{name}: the screenshot is blank"


def assert_kpi_table(driver: Chrome, kpis: list[dict[str, Any]]) -> None:
    rows = table_rows(driver, "kpi-table")
    assert [(r[0], r[4]) for r in rows] == [(k["name"], k["verdict"]) for k in kpis]


def assert_run_plots(driver: Chrome, view: dict[str, Any]) -> None:
    streams = {s["stream"] for s in view["series"]}
    data, drawn = traces(driver, "owd-plot")
    assert data >= 2 * len(streams) > 0 and drawn >= data, "delay over time not drawn"
    data, drawn = traces(driver, "owd-hist")
    assert data == len(view["histograms"]) > 0 and drawn == data, "delay histogram not drawn"
    floor_shown = driver.find_element(By.ID, "floor").is_displayed()
    assert floor_shown == (view["floor"] is not None)
    if floor_shown:
        data, drawn = traces(driver, "floor-plot")
        assert data >= 2 and drawn == data, "floor timeline not drawn"


# --- pages --------------------------------------------------------------------------------


def test_overview(browser: Chrome, app_url: str, real_runs: RealRuns, tmp_path: Path) -> None:
    load(browser, f"{app_url}/")
    headers = browser.find_elements(By.CSS_SELECTOR, "#overview-matrix thead th")
    assert [h.text for h in headers] == ["Profile", "emulated-cross-border", "emulated-twin"]
    cells = table_rows(browser, "overview-matrix")
    assert len(cells) == 1 and cells[0][0] == "dash_probe"
    assert cells[0][1].startswith("FAIL") and cells[0][2].startswith("PASS")  # latest runs
    sparklines = browser.execute_script(
        "return [...document.querySelectorAll('#overview-matrix .spark')]"
        ".filter((s) => s.data && s.querySelector('.scatterlayer .trace')).length"
    )
    overview = httpx.get(f"{app_url}/api/v1/overview").json()
    assert sparklines == sum(len(cell["kpis"]) for cell in overview["cells"]) > 0
    assert [r[0] for r in table_rows(browser, "runs-table")] == list(reversed(real_runs.run_ids))
    shot(browser, tmp_path, "overview")
    shot(browser, tmp_path, "overview-matrix", "overview-matrix")

    Select(browser.find_element(By.ID, "filter-verdict")).select_by_visible_text("FAIL")
    wait_for(
        browser, "return document.querySelectorAll('#runs-table tbody tr').length === 1", "filter"
    )
    assert table_rows(browser, "runs-table")[0][0] == real_runs.second
    assert "verdict=FAIL" in browser.current_url


@pytest.mark.parametrize("which", ["first", "second"])
def test_run_page(
    browser: Chrome, app_url: str, real_runs: RealRuns, tmp_path: Path, which: str
) -> None:
    run_id = getattr(real_runs, which)
    view = run_view(real_runs.run_dir(run_id))
    load(browser, f"{app_url}/runs/{run_id}")
    assert run_id in browser.find_element(By.ID, "run-header").text
    assert_kpi_table(browser, real_runs.summary(run_id)["kpis"])
    assert_run_plots(browser, view)
    assert len(table_rows(browser, "interruptions-table")) == len(view["interruptions"]) > 0
    assert len(table_rows(browser, "streams-table")) == len(view["streams"])
    assert len(table_rows(browser, "artifacts-table")) == len(view["artifacts"])
    shot(browser, tmp_path, f"run-{which}")
    shot(browser, tmp_path, f"run-{which}-owd", "owd-plot")
    shot(browser, tmp_path, f"run-{which}-kpis", "kpi-table")


def test_report_from_disk(browser: Chrome, real_runs: RealRuns, tmp_path: Path) -> None:
    run_dir = shutil.copytree(real_runs.run_dir(real_runs.first), tmp_path / real_runs.first)
    report = write_report(run_dir)
    load(browser, report.as_uri())
    view = run_view(run_dir)
    assert_kpi_table(browser, view["kpis"])
    assert_run_plots(browser, view)
    assert browser.find_elements(By.CSS_SELECTOR, "nav") == []  # no links into a server
    link = browser.find_element(By.CSS_SELECTOR, "#artifacts-table a[href$='summary.json']")
    assert link.get_attribute("href") == (run_dir / "summary.json").as_uri()
    shot(browser, tmp_path, "report")
    shot(browser, tmp_path, "report-owd", "owd-plot")
    shot(browser, tmp_path, "report-floor", "floor-plot")


def test_report_through_the_api(browser: Chrome, app_url: str, real_runs: RealRuns) -> None:
    """The served report runs its inline scripts (the server's CSP allows them there), and
    its relative artifact links resolve to the API's downloads."""
    load(browser, f"{app_url}/api/v1/runs/{real_runs.second}/report")
    view = run_view(real_runs.run_dir(real_runs.second))
    assert_kpi_table(browser, view["kpis"])
    assert_run_plots(browser, view)
    link = browser.find_element(By.CSS_SELECTOR, "#artifacts-table a[href$='summary.json']")
    artifacts = f"{app_url}/api/v1/runs/{real_runs.second}/artifacts"
    assert link.get_attribute("href") == f"{artifacts}/summary.json"


def test_report_shows_hostile_names_as_text(
    browser: Chrome, real_runs: RealRuns, tmp_path: Path
) -> None:
    view = run_view(real_runs.run_dir(real_runs.first))
    view["kpis"].append({"name": HOSTILE, "value": 1.0, "unit": "ms", "verdict": "FAIL"})
    view["markers"].append(
        {"wall": view["run"]["started_at"] + 1, "kind": "fault", "label": HOSTILE}
    )
    page = tmp_path / "report.html"
    page.write_text(render_report(view), encoding="utf-8")
    load(browser, page.as_uri())  # an alert would stop selenium here
    assert table_rows(browser, "kpi-table")[-1][0] == HOSTILE
    assert_run_plots(browser, view)


def test_compare_runs(browser: Chrome, app_url: str, real_runs: RealRuns, tmp_path: Path) -> None:
    first, second = real_runs.first, real_runs.second
    load(browser, f"{app_url}/compare?a={first}&b={second}")
    header = browser.find_element(By.ID, "compare-header").text
    assert first in header and second in header
    rows = {r[0]: r for r in table_rows(browser, "compare-kpis-table")}
    names = {
        k["name"] for k in real_runs.summary(first)["kpis"] + real_runs.summary(second)["kpis"]
    }
    assert set(rows) == names
    assert rows["KPI 1 MCPTT access time"][6] == "\u2013"  # only run A judged it
    assert rows["Uplink p95 one-way delay"][4:7:2] == ["PASS", "FAIL"]
    histograms = sum(len(run_view(real_runs.run_dir(r))["histograms"]) for r in (first, second))
    assert traces(browser, "compare-cdf") == (histograms, histograms)
    shot(browser, tmp_path, "compare-runs")
    shot(browser, tmp_path, "compare-cdf", "compare-cdf")


def test_compare_labs(browser: Chrome, app_url: str, real_runs: RealRuns, tmp_path: Path) -> None:
    query = "profile=dash_probe&lab_a=emulated-cross-border&lab_b=emulated-twin"
    load(browser, f"{app_url}/compare?{query}")
    header = browser.find_element(By.ID, "compare-header").text
    assert real_runs.second in header and real_runs.other_lab in header  # latest of each lab
    plots, drawn = browser.execute_script(
        "const plots = [...document.querySelectorAll('#compare-trends .plot')];"
        "const drawn = plots.filter((p) => p.querySelector('.scatterlayer .trace'));"
        "return [plots.length, drawn.length];"
    )
    assert plots == drawn == len(real_runs.summary(real_runs.first)["kpis"])
    shot(browser, tmp_path, "compare-labs")


def test_read_token_is_asked_for(browser: Chrome, real_runs: RealRuns, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    token = new_token(tokens, "viewer", ["read"])
    server = serve(api_config(real_runs, read_access="token", tokens_file=tokens))
    try:
        browser.get(f"{server.url}/")
        wait_for(browser, "return document.body.dataset.error", "no error without a token")
        assert browser.find_element(By.ID, "error").is_displayed()
        browser.find_element(By.ID, "token-input").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait_for(browser, "return document.body.dataset.ready === '1'", "not ready with the token")
        assert len(table_rows(browser, "runs-table")) == len(real_runs.run_ids)
    finally:
        server.stop()
