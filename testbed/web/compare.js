"use strict";
// Two runs side by side (?a=RUN&b=RUN), or the latest run of a profile on two labs
// (?profile=&lab_a=&lab_b=) with both labs' KPI trends.

const CHOICES = {
  "input-a": "a", "input-b": "b", "input-profile": "profile", "input-lab-a": "lab_a",
  "input-lab-b": "lab_b",
};
const STREAM_METRICS = [["loss_pct", "loss %"], ["owd_p50_ms", "p50 ms"],
  ["owd_p95_ms", "p95 ms"], ["jitter_ms", "jitter ms"], ["max_gap_ms", "max gap ms"]];

function options(values) {
  return [...new Set(values)].sort().map((v) => el("option", { value: v }, v));
}

// The choosers: recent runs to pick from, and the profiles and labs that have runs.
async function fillChoices(params) {
  const [recent, overview] = await Promise.all([
    api("/api/v1/runs?limit=100"), api("/api/v1/overview")]);
  fill("recent-runs", recent.items.map((r) => el("option", { value: r.run_id },
    `${r.profile} on ${r.lab}, ${r.verdict || "running"}`)));
  fill("input-profile", options(overview.cells.map((c) => c.profile)));
  fill("input-lab-a", options(overview.cells.map((c) => c.lab)));
  fill("input-lab-b", options(overview.cells.map((c) => c.lab)));
  const labB = document.getElementById("input-lab-b");
  if (labB.options.length > 1) labB.selectedIndex = 1; // two different labs by default
  for (const [id, name] of Object.entries(CHOICES)) {
    if (params.get(name)) document.getElementById(id).value = params.get(name);
  }
}

function runSummary(label, run) {
  return el(
    "div",
    { class: "run-card" },
    el("h3", {}, `${label}: `, el("a", { href: runHref(run.run_id) }, run.run_id)),
    el("p", {}, `${run.profile} on ${run.lab}, ${fmtTime(run.started_at)} `,
      verdictBadge(run.verdict)),
  );
}

function side(entry, key) {
  return entry ? entry[key] ?? null : null;
}

function renderKpiComparison(kpis) {
  if (!kpis.length) return fill("compare-kpis", emptyNote("Neither run judged KPIs."));
  const headers = ["KPI", "Unit", "Limit", "A value", "A verdict", "B value", "B verdict", "Delta"];
  const rows = kpis.map((k) => [k.name, k.unit || DASH, k.limit || DASH,
    side(k.a, "value"), k.a ? verdictBadge(k.a.verdict) : DASH,
    side(k.b, "value"), k.b ? verdictBadge(k.b.verdict) : DASH, k.delta ?? null]);
  fill("compare-kpis", dataTable("compare-kpis-table",
    "KPIs of run A and run B; delta is B minus A", headers, rows));
}

function renderStreamComparison(streams) {
  if (!streams.length) return fill("compare-streams", emptyNote("Neither run had streams."));
  const headers = ["Stream", "Rep.",
    ...STREAM_METRICS.flatMap(([, label]) => [`A ${label}`, `B ${label}`])];
  const rows = streams.map((s) => [streamLabel(s), s.repetition ?? null,
    ...STREAM_METRICS.flatMap(([key]) => [side(s.a, key), side(s.b, key)])]);
  fill("compare-streams", dataTable("compare-streams-table", "Per stream: run A beside run B",
    headers, rows));
}

async function compareRuns(a, b) {
  const view = (id) => api(`/api/v1/runs/${encodeURIComponent(id)}/view`);
  const [comparison, viewA, viewB] = await Promise.all([
    api(withQuery("/api/v1/compare", { a, b })), view(a), view(b)]);
  document.getElementById("compare-result").hidden = false;
  fill("compare-header", runSummary("A", comparison.a), runSummary("B", comparison.b));
  renderKpiComparison(comparison.kpis);
  renderStreamComparison(comparison.streams);
  const runs = [
    { label: "A", histograms: viewA.histograms }, { label: "B", histograms: viewB.histograms }];
  if (runs.some((r) => r.histograms.length)) return drawCdfs("compare-cdf", runs);
  fill("compare-cdf", emptyNote("Neither run recorded delay samples."));
}

async function latestRun(profile, lab) {
  const page = await api(withQuery("/api/v1/runs", { profile, lab, limit: 1 }));
  if (!page.items.length) throw new Error(`No run of profile ${profile} on lab ${lab}.`);
  return page.items[0].run_id;
}

// One small plot per KPI, with a line per lab.
async function drawLabTrends(profile, labs) {
  const answers = await Promise.all(
    labs.map((lab) => api(withQuery("/api/v1/trends", { profile, lab }))));
  const byKpi = new Map();
  answers.forEach((answer, index) => {
    for (const series of answer.series) {
      const lines = byKpi.get(series.kpi) || [];
      lines.push({ label: labs[index], unit: series.unit, points: series.points });
      byKpi.set(series.kpi, lines);
    }
  });
  document.getElementById("compare-trends-section").hidden = false;
  if (!byKpi.size) return fill("compare-trends", emptyNote("No KPI values for these labs."));
  const plots = [...byKpi].map(([kpi, lines], index) => {
    const target = el("div", { id: `compare-trend-${index}`, class: "plot" });
    return { target, draw: () => drawTrend(target, kpi, lines) };
  });
  fill("compare-trends", plots.map((p) => p.target));
  return Promise.all(plots.map((p) => p.draw()));
}

startPage(async () => {
  const params = new URLSearchParams(location.search);
  await fillChoices(params);
  const [a, b, profile, labA, labB] = ["a", "b", "profile", "lab_a", "lab_b"]
    .map((name) => params.get(name));
  if (a && b) return compareRuns(a, b);
  if (profile && labA && labB) {
    const [runA, runB] = await Promise.all([latestRun(profile, labA), latestRun(profile, labB)]);
    return Promise.all([compareRuns(runA, runB), drawLabTrends(profile, [labA, labB])]);
  }
});
