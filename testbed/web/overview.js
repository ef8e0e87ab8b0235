"use strict";
// The overview: the latest verdict of every profile on every lab with KPI trend sparklines,
// and the recent runs with filters and paging (kept in the address for sharing).

const PAGE_SIZE = 25;
const RUN_COLUMNS = ["Run", "Profile", "Lab", "Verdict", "Status", "Started", "Duration"];
const state = { offset: 0 };

function sorted(values) {
  return [...new Set(values)].sort((a, b) => a.localeCompare(b));
}

// One KPI of a cell; its sparkline is queued in `sparklines`, drawn once it is in the page.
function kpiLine(kpi, sparklines) {
  const spark = el("span", { class: "spark", role: "img", "aria-label": `trend of ${kpi.name}` });
  const trend = kpi.trend || [];
  if (trend.some((v) => v !== null)) {
    sparklines.push(() => drawSparkline(spark, trend, kpi.verdict));
  }
  return el(
    "li",
    { class: kpi.verdict === "FAIL" ? "failing" : null },
    el("span", { class: "kpi-name", title: kpi.name }, kpi.name),
    el("span", { class: "kpi-value" }, fmtWithUnit(kpi.value, kpi.unit)),
    spark,
  );
}

function matrixCell(cell, sparklines) {
  if (!cell) return el("td", { class: "no-run" }, DASH);
  const runs = `${cell.runs} run${cell.runs === 1 ? "" : "s"}`;
  return el(
    "td",
    { class: `cell cell-${(cell.verdict || "running").toLowerCase()}` },
    el("a", { href: runHref(cell.run_id), class: "cell-link" },
      verdictBadge(cell.verdict), " ", fmtTime(cell.started_at)),
    el("span", { class: "muted" }, ` ${runs}`),
    el("ul", { class: "kpis" }, cell.kpis.map((k) => kpiLine(k, sparklines))),
  );
}

// Profiles down, labs across. Returns the sparkline drawings to start once it is in the page.
function renderMatrix(cells) {
  if (!cells.length) {
    fill("overview", emptyNote("No runs yet."));
    return [];
  }
  const profiles = sorted(cells.map((c) => c.profile));
  const labs = sorted(cells.map((c) => c.lab));
  const byKey = new Map(cells.map((c) => [`${c.profile}\u0000${c.lab}`, c]));
  const sparklines = [];
  const rows = profiles.map((profile) => el(
    "tr",
    {},
    el("th", { scope: "row" }, profile),
    labs.map((lab) => matrixCell(byKey.get(`${profile}\u0000${lab}`), sparklines)),
  ));
  const head = el("tr", {}, ["Profile", ...labs].map((text) => el("th", { scope: "col" }, text)));
  fill("overview", el(
    "table",
    { id: "overview-matrix" },
    el("caption", {}, "Latest run of each profile (rows) on each lab (columns)"),
    el("thead", {}, head),
    el("tbody", {}, rows),
  ));
  return sparklines;
}

function fillOptions(selectId, values, selected) {
  const select = document.getElementById(selectId);
  select.append(...values.map((v) => el("option", { value: v }, v)));
  select.value = selected || "";
}

function filters() {
  const value = (id) => document.getElementById(id).value;
  return {
    profile: value("filter-profile"), lab: value("filter-lab"), verdict: value("filter-verdict"),
  };
}

function runRow(run) {
  const duration = run.ended_at ? run.ended_at - run.started_at : null;
  return [el("a", { href: runHref(run.run_id) }, run.run_id), run.profile, run.lab,
    verdictBadge(run.verdict), run.status, fmtTime(run.started_at), fmtDuration(duration)];
}

async function loadRuns() {
  const shown = { ...filters(), offset: state.offset || null };
  history.replaceState(null, "", withQuery(location.pathname, shown));
  const query = { ...filters(), limit: PAGE_SIZE, offset: state.offset };
  const page = await api(withQuery("/api/v1/runs", query));
  fill("runs", page.items.length
    ? dataTable("runs-table", "Runs, newest first", RUN_COLUMNS, page.items.map(runRow))
    : emptyNote("No run matches these filters."));
  const first = page.total ? page.offset + 1 : 0;
  const last = Math.min(page.offset + page.items.length, page.total);
  document.getElementById("runs-range").textContent = `${first}${DASH}${last} of ${page.total}`;
  document.getElementById("runs-prev").disabled = page.offset === 0;
  document.getElementById("runs-next").disabled = last >= page.total;
}

function wireRunControls() {
  const reload = (offset) => {
    state.offset = Math.max(0, offset);
    loadRuns().catch((error) => showError(error.message));
  };
  const on = (id, event, handler) => document.getElementById(id).addEventListener(event, handler);
  on("runs-filter", "change", () => reload(0));
  on("runs-prev", "click", () => reload(state.offset - PAGE_SIZE));
  on("runs-next", "click", () => reload(state.offset + PAGE_SIZE));
}

startPage(async () => {
  const params = new URLSearchParams(location.search);
  state.offset = Number(params.get("offset")) || 0;
  const overview = await api("/api/v1/overview");
  const profiles = sorted(overview.cells.map((c) => c.profile));
  fillOptions("filter-profile", profiles, params.get("profile"));
  fillOptions("filter-lab", sorted(overview.cells.map((c) => c.lab)), params.get("lab"));
  document.getElementById("filter-verdict").value = params.get("verdict") || "";
  const sparklines = renderMatrix(overview.cells);
  wireRunControls();
  await loadRuns();
  await Promise.all(sparklines.map((drawOne) => drawOne()));
});
