"use strict";
// The run page, and the self-contained report.html: both draw one run view. The report
// carries the view as JSON in the script element #run-view; the page fetches it.

const EMBEDDED_VIEW = document.getElementById("run-view");
const REPORT_MODE = EMBEDDED_VIEW !== null;

function loadView() {
  if (REPORT_MODE) return JSON.parse(EMBEDDED_VIEW.textContent);
  const runId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  return api(`/api/v1/runs/${encodeURIComponent(runId)}/view`);
}

// In the report, artifacts are files beside report.html; on the server, API downloads.
function artifactHref(runId, path) {
  const relative = path.split("/").map(encodeURIComponent).join("/");
  if (REPORT_MODE) return relative;
  return `/api/v1/runs/${encodeURIComponent(runId)}/artifacts/${relative}`;
}

function runLinks(runId) {
  if (REPORT_MODE) return null;
  const apiRun = `/api/v1/runs/${encodeURIComponent(runId)}`;
  return el(
    "p",
    { class: "links" },
    el("a", { href: `${apiRun}/report` }, "Report (self-contained HTML)"),
    el("a", { href: withQuery("/compare", { a: runId }) }, "Compare with another run"),
    el("a", { href: apiRun }, "Run record (JSON)"),
  );
}

function renderHeader(run) {
  document.title = `${run.profile} on ${run.lab}: ${run.verdict} (${run.run_id})`;
  const facts = [
    ["Run", run.run_id], ["Status", run.status], ["Started", fmtTime(run.started_at)],
    ["Ended", fmtTime(run.ended_at)], ["Duration", fmtDuration(run.duration_s)],
    ["Planned", fmtDuration(run.planned_duration_s)], ["Repetitions", run.repetitions ?? DASH],
    ["Host", run.host ?? DASH],
  ];
  const terms = facts.map(([term, value]) =>
    el("div", {}, el("dt", {}, term), el("dd", {}, value ?? DASH)));
  fill(
    "run-header",
    el("h1", {}, `${run.profile} `, el("span", { class: "muted" }, "on"), ` ${run.lab} `,
      verdictBadge(run.verdict)),
    el("dl", { class: "facts" }, terms),
    runLinks(run.run_id),
  );
}

// The KPI's definition, when it has one, is the name's tooltip.
function kpiName(kpi) {
  if (!kpi.definition) return kpi.name;
  return el("span", { class: "has-hint", title: kpi.definition }, kpi.name);
}

function kpiReference(kpi) {
  const note = kpi.note ? el("span", { class: "note" }, ` Note: ${kpi.note}`) : null;
  return el("span", {}, kpi.reference || DASH, note);
}

function renderKpis(kpis) {
  if (!kpis.length) return fill("kpis", emptyNote("This run judged no KPIs."));
  const rows = kpis.map((k) => ({
    className: k.verdict === "FAIL" ? "failing" : null,
    cells: [kpiName(k), k.value ?? null, k.unit || DASH, k.limit || DASH, verdictBadge(k.verdict),
      k.samples ?? null, kpiReference(k)],
  }));
  const headers = ["KPI", "Value", "Unit", "Limit", "Verdict", "Samples", "Reference"];
  fill("kpis", dataTable("kpi-table", "Each KPI's measured value against the profile's limit",
    headers, rows));
}

function renderStreams(streams) {
  if (!streams.length) return fill("streams", emptyNote("No traffic streams in this run."));
  const headers = ["Stream", "Kind", "Rep.", "Sent", "Received", "Loss %", "p50", "p95", "p99",
    "Max", "Jitter ms", "Max gap ms", "Notes"];
  const rows = streams.map((s) => {
    const owd = s.owd_ms || {};
    return [streamLabel(s), s.kind, s.repetition ?? null, s.sent, s.received, s.loss_pct,
      owd.p50 ?? null, owd.p95 ?? null, owd.p99 ?? null, owd.max ?? null, s.jitter_ms ?? null,
      s.max_gap_ms ?? null, (s.notes || []).join("; ")];
  });
  fill("streams", dataTable("streams-table",
    "Per stream and repetition: loss, one-way delay (ms), jitter and longest gap", headers, rows));
}

function renderInterruptions(interruptions, t0) {
  if (!interruptions.length) {
    return fill("interruptions", emptyNote("No interruptions were detected."));
  }
  const since = (wall) => (wall === null || wall === undefined ? null : wall - t0);
  const rows = interruptions.map((i) => [i.subject, i.kind, i.event, i.repetition ?? null,
    since(i.start), since(i.end), i.duration_ms ?? null]);
  const headers = ["Subject", "Kind", "Event", "Rep.", "Start s", "End s", "Duration ms"];
  fill("interruptions", dataTable("interruptions-table",
    "Interruption windows (seconds since run start)", headers, rows));
}

function renderErrors(errors) {
  if (!errors.length) return fill("errors", emptyNote("No errors."));
  const items = errors.map((error) => el("li", {}, error));
  fill("errors", el("ul", { id: "errors-list", class: "errors" }, items));
}

function renderArtifacts(runId, artifacts) {
  if (!artifacts.length) return fill("artifacts", emptyNote("No artifacts."));
  const rows = artifacts.map((a) => [
    el("a", { href: artifactHref(runId, a.path) }, a.path), a.kind, fmtBytes(a.bytes)]);
  fill("artifacts", dataTable("artifacts-table", "Files of the run record",
    ["File", "Kind", "Size"], rows));
}

// Resolves when every plot of the view is drawn; the floor timeline only for MCPTT runs.
function drawPlots(view) {
  const plots = [];
  if (view.series.length) plots.push(drawOwd("owd-plot", view));
  else fill("owd-plot", emptyNote("No delay series were recorded in this run."));
  if (view.histograms.length) plots.push(drawHistograms("owd-hist", view.histograms));
  else fill("owd-hist", emptyNote("No delay samples were recorded in this run."));
  if (view.floor) {
    document.getElementById("floor").hidden = false;
    plots.push(drawFloor("floor-plot", view));
  }
  return Promise.all(plots);
}

startPage(async () => {
  const view = await loadView();
  renderHeader(view.run);
  renderKpis(view.kpis);
  renderInterruptions(view.interruptions, view.run.started_at);
  renderStreams(view.streams);
  renderErrors(view.errors);
  renderArtifacts(view.run.run_id, view.artifacts);
  await drawPlots(view);
});
