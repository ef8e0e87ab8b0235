"use strict";
// The overview: the latest verdict of every profile on every lab with KPI trend sparklines,
// and the recent runs with filters and paging (kept in the address for sharing).

const PAGE_SIZE = 25;
const state = { offset: 0 };

function sorted(values) {
  return [...new Set(values)].sort((a, b) => a.localeCompare(b));
}

function kpiLine(kpi, sparklines) {
  const spark = el("span", { class: "spark", role: "img", "aria-label": `trend of ${kpi.name}` });
  const trend = kpi.trend || [];
  if (trend.some((v) => v !== null)) sparklines.push(() => drawSparkline(spark, trend, kpi.verdict));
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
  return el(
    "td",
    { class: `cell cell-${(cell.verdict || "running").toLowerCase()}` },
    el("a", { href: runHref(cell.run_id), class: "cell-link" }, verdictBadge(cell.verdict), " ", fmtTime(cell.started_at)),
    el("span", { class: "muted" }, ` ${cell.runs} run${cell.runs === 1 ? "" : "s"}`),
    el("ul", { class: "kpis" }, cell.kpis.map((k) => kpiLine(k, sparklines))),
  );
}

// Profiles down, labs across. Returns the sparkline drawings to run once it is in the page.
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
  fill("overview", el(
    "table",
    { id: "overview-matrix" },
    el("caption", {}, "Latest run of each profile (rows) on each lab (columns)"),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Profile"), labs.map((lab) => el("th", { scope: "col" }, lab)))),
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
  return { profile: value("filter-profile"), lab: value("filter-lab"), verdict: value("filter-verdict") };
}

async function loadRuns() {
  const params = { ...filters(), limit: PAGE_SIZE, offset: state.offset };
  history.replaceState(null, "", withQuery(location.pathname, { ...filters(), offset: state.offset || null }));
  const page = await api(withQuery("/api/v1/runs", params));
  const rows = page.items.map((r) => [
    el("a", { href: runHref(r.run_id) }, r.run_id), r.profile, r.lab, verdictBadge(r.verdict), r.status,
    fmtTime(r.started_at), fmtDuration(r.ended_at ? r.ended_at - r.started_at : null),
  ]);
  fill("runs", rows.length
    ? dataTable("runs-table", "Runs, newest first", ["Run", "Profile", "Lab", "Verdict", "Status", "Started", "Duration"], rows)
    : emptyNote("No run matches these filters."));
  const last = Math.min(page.offset + page.items.length, page.total);
  document.getElementById("runs-range").textContent = `${page.total ? page.offset + 1 : 0}${DASH}${last} of ${page.total}`;
  document.getElementById("runs-prev").disabled = page.offset === 0;
  document.getElementById("runs-next").disabled = last >= page.total;
}

function wireRunControls() {
  const reload = (offset) => {
    state.offset = Math.max(0, offset);
    loadRuns().catch((error) => showError(error.message));
  };
  document.getElementById("runs-filter").addEventListener("change", () => reload(0));
  document.getElementById("runs-prev").addEventListener("click", () => reload(state.offset - PAGE_SIZE));
  document.getElementById("runs-next").addEventListener("click", () => reload(state.offset + PAGE_SIZE));
}

startPage(async () => {
  const params = new URLSearchParams(location.search);
  state.offset = Number(params.get("offset")) || 0;
  const overview = await api("/api/v1/overview");
  fillOptions("filter-profile", sorted(overview.cells.map((c) => c.profile)), params.get("profile"));
  fillOptions("filter-lab", sorted(overview.cells.map((c) => c.lab)), params.get("lab"));
  document.getElementById("filter-verdict").value = params.get("verdict") || "";
  const sparklines = renderMatrix(overview.cells);
  wireRunControls();
  await loadRuns();
  await Promise.all(sparklines.map((drawOne) => drawOne()));
});
