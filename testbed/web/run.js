"use strict";
// The run page, and the self-contained report.html: both draw one run view. The report
// carries the view in <script id="run-view" type="application/json">; the page fetches it.

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
  return REPORT_MODE ? relative : `/api/v1/runs/${encodeURIComponent(runId)}/artifacts/${relative}`;
}

function renderHeader(run) {
  document.title = `${run.profile} on ${run.lab} · ${run.run_id}`;
  const apiRun = `/api/v1/runs/${encodeURIComponent(run.run_id)}`;
  const links = REPORT_MODE ? [] : [
    el("a", { href: `${apiRun}/report` }, "Report (self-contained HTML)"),
    el("a", { href: withQuery("/compare", { a: run.run_id }) }, "Compare with another run"),
    el("a", { href: apiRun }, "Run record (JSON)"),
  ];
  const facts = [
    ["Run", run.run_id], ["Status", run.status], ["Started", fmtTime(run.started_at)],
    ["Ended", fmtTime(run.ended_at)], ["Duration", fmtDuration(run.duration_s)],
    ["Planned", fmtDuration(run.planned_duration_s)], ["Repetitions", run.repetitions ?? DASH],
    ["Host", run.host ?? DASH],
  ];
  fill(
    "run-header",
    el("h1", {}, `${run.profile} `, el("span", { class: "muted" }, "on"), ` ${run.lab} `, verdictBadge(run.verdict)),
    el("dl", { class: "facts" }, facts.map(([term, value]) => el("div", {}, el("dt", {}, term), el("dd", {}, String(value))))),
    links.length ? el("p", { class: "links" }, links) : null,
  );
}

function kpiName(kpi) {
  return kpi.definition ? el("span", { class: "has-hint", title: kpi.definition }, kpi.name) : kpi.name;
}

function kpiReference(kpi) {
  return el("span", {}, kpi.reference || DASH, kpi.note ? el("span", { class: "note" }, ` Note: ${kpi.note}`) : null);
}

function renderKpis(kpis) {
  if (!kpis.length) return fill("kpis", emptyNote("This run judged no KPIs."));
  const rows = kpis.map((k) => ({
    className: k.verdict === "FAIL" ? "failing" : null,
    cells: [kpiName(k), k.value ?? null, k.unit || DASH, k.limit || DASH, verdictBadge(k.verdict),
      k.samples ?? null, kpiReference(k)],
  }));
  fill("kpis", dataTable("kpi-table", "Each KPI's measured value against the profile's limit",
    ["KPI", "Value", "Unit", "Limit", "Verdict", "Samples", "Reference"], rows));
}

function renderStreams(streams) {
  if (!streams.length) return fill("streams", emptyNote("No traffic streams in this run."));
  const rows = streams.map((s) => [streamLabel(s), s.kind, s.repetition ?? null, s.sent, s.received,
    s.loss_pct, s.owd_ms?.p50 ?? null, s.owd_ms?.p95 ?? null, s.owd_ms?.p99 ?? null, s.owd_ms?.max ?? null,
    s.jitter_ms ?? null, s.max_gap_ms ?? null, (s.notes || []).join("; ")]);
  fill("streams", dataTable("streams-table", "Per stream and repetition: loss, one-way delay (ms), jitter and longest gap",
    ["Stream", "Kind", "Rep.", "Sent", "Received", "Loss %", "p50", "p95", "p99", "Max", "Jitter ms", "Max gap ms", "Notes"],
    rows));
}

function renderInterruptions(interruptions, t0) {
  if (!interruptions.length) return fill("interruptions", emptyNote("No interruptions were detected."));
  const since = (wall) => (wall === null || wall === undefined ? null : wall - t0);
  const rows = interruptions.map((i) => [i.subject, i.kind, i.event, i.repetition ?? null,
    since(i.start), since(i.end), i.duration_ms ?? null]);
  fill("interruptions", dataTable("interruptions-table", "Interruption windows (seconds since run start)",
    ["Subject", "Kind", "Event", "Rep.", "Start s", "End s", "Duration ms"], rows));
}

function renderErrors(errors) {
  fill("errors", errors.length ? el("ul", { id: "errors-list", class: "errors" }, errors.map((e) => el("li", {}, e)))
    : emptyNote("No errors."));
}

function renderArtifacts(runId, artifacts) {
  if (!artifacts.length) return fill("artifacts", emptyNote("No artifacts."));
  const rows = artifacts.map((a) => [el("a", { href: artifactHref(runId, a.path) }, a.path), a.kind, fmtBytes(a.bytes)]);
  fill("artifacts", dataTable("artifacts-table", "Files of the run record", ["File", "Kind", "Size"], rows));
}

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
  document.body.classList.toggle("report", REPORT_MODE);
  renderHeader(view.run);
  renderKpis(view.kpis);
  renderInterruptions(view.interruptions, view.run.started_at);
  renderStreams(view.streams);
  renderErrors(view.errors);
  renderArtifacts(view.run.run_id, view.artifacts);
  await drawPlots(view);
});
