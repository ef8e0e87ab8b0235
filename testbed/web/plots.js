"use strict";
// Plotly figures of the dashboard. Times on the x axes are seconds since the run started.
// Text handed to Plotly is escaped: Plotly reads a few HTML-like tags in labels.

const PLOT_CONFIG = { responsive: true, displaylogo: false };
// Okabe-Ito: distinguishable with the common colour-vision deficiencies.
const PALETTE = [
  "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
];
const MARKER_STYLE = {
  fault: { color: "#c0392b", dash: "solid" },
  device_fault: { color: "#7b241c", dash: "solid" },
  impairment: { color: "#d68910", dash: "dash" },
  radio: { color: "#6c3483", dash: "dash" },
  action: { color: "#566573", dash: "dot" },
  phase: { color: "#b3b6b7", dash: "dot" },
};
const UNLABELLED_MARKERS = new Set(["action", "phase"]); // many, and named on hover
const MAX_MARKER_LABELS = 20;
const LABEL_CHARS = 28;
const GAP_FACTOR = 3;
// The delay and floor timelines share x range and margins, so their time axes line up.
const TIMELINE_MARGIN = { l: 70, r: 200, b: 50 };
const BASE_LAYOUT = {
  margin: { l: 70, r: 20, t: 20, b: 50 },
  font: { family: "system-ui, sans-serif", size: 12 },
  paper_bgcolor: "#ffffff",
  plot_bgcolor: "#ffffff",
  hoverlabel: { namelength: -1 },
};

function plotText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function colour(index) {
  return PALETTE[index % PALETTE.length];
}

function markerStyle(kind) {
  return MARKER_STYLE[kind] || MARKER_STYLE.action;
}

function shorten(text, chars) {
  return text.length > chars ? `${text.slice(0, chars - 1)}\u2026` : text;
}

function translucent(hex, alpha) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return `rgba(${r},${g},${b},${alpha})`;
}

// Resolves once Plotly has drawn the figure.
function draw(target, traces, layout, config = {}) {
  const merged = { ...BASE_LAYOUT, ...layout };
  return Plotly.newPlot(target, traces, merged, { ...PLOT_CONFIG, ...config });
}

function axis(title, extra = {}) {
  const style = { zeroline: false, automargin: true, gridcolor: "#eceff1" };
  return { title: { text: title }, ...style, ...extra };
}

// --- one-way delay over time ------------------------------------------------------------

// Index ranges of a series split where the time step exceeds GAP_FACTOR times the typical
// step, so an outage is a hole in the line rather than a straight line across it.
function segments(times) {
  const steps = times.slice(1).map((t, i) => t - times[i]).sort((a, b) => a - b);
  const limit = GAP_FACTOR * (steps[Math.floor(steps.length / 2)] ?? Infinity);
  const cuts = [0];
  for (let i = 1; i < times.length; i += 1) if (times[i] - times[i - 1] > limit) cuts.push(i);
  cuts.push(times.length);
  return cuts.slice(1).map((end, k) => [cuts[k], end]);
}

// One mean line and one min..max band per stream; repetitions, sweep points and the pieces
// between gaps are segments of the same trace (separated by null), which keeps the figure
// fast with many repetitions.
function owdTraces(series, t0) {
  const streams = [...new Set(series.map((s) => s.stream))];
  return streams.flatMap((stream, index) => {
    const mean = { x: [], y: [] };
    const band = { x: [], y: [] };
    for (const part of series.filter((s) => s.stream === stream)) {
      for (const [start, end] of segments(part.t)) {
        const x = part.t.slice(start, end).map((t) => t - t0);
        const lowest = part.owd_min.slice(start, end).reverse();
        mean.x.push(...x, null);
        mean.y.push(...part.owd_mean.slice(start, end), null);
        band.x.push(...x, ...[...x].reverse(), null);
        band.y.push(...part.owd_max.slice(start, end), ...lowest, null);
      }
    }
    const name = plotText(stream);
    const line = colour(index);
    return [
      { ...band, name, legendgroup: name, showlegend: false, hoverinfo: "skip", mode: "lines",
        fill: "toself", fillcolor: translucent(line, 0.25), line: { width: 0 } },
      { ...mean, name, legendgroup: name, mode: "lines", line: { color: line, width: 1.2 },
        hovertemplate: "%{x:.3f} s: %{y:.2f} ms" },
    ];
  });
}

// Event markers: vertical lines (shapes), one hoverable trace per kind along the top, and
// labels on the few that matter most (faults, impairments, radio changes).
function markerOverlay(markers, t0) {
  const shapes = markers.map((m) => ({
    type: "line", xref: "x", yref: "paper", x0: m.wall - t0, x1: m.wall - t0, y0: 0, y1: 1,
    line: { color: markerStyle(m.kind).color, width: 1, dash: markerStyle(m.kind).dash },
  }));
  const kinds = [...new Set(markers.map((m) => m.kind))];
  const traces = kinds.map((kind) => {
    const ofKind = markers.filter((m) => m.kind === kind);
    return {
      x: ofKind.map((m) => m.wall - t0), y: ofKind.map(() => 1), yaxis: "y2", mode: "markers",
      name: plotText(kind), text: ofKind.map(markerText), hovertemplate: "%{x:.3f} s: %{text}",
      marker: { symbol: "triangle-down", size: 9, color: markerStyle(kind).color },
    };
  });
  const labelled = markers.filter((m) => !UNLABELLED_MARKERS.has(m.kind));
  const annotations = labelled.length > MAX_MARKER_LABELS ? [] : labelled.map((m) => ({
    x: m.wall - t0, y: 1, xref: "x", yref: "paper", xanchor: "left", yanchor: "bottom",
    showarrow: false, textangle: -20, font: { size: 10, color: markerStyle(m.kind).color },
    text: plotText(shorten(m.label, LABEL_CHARS)),
  }));
  return { shapes, traces, annotations };
}

function markerText(marker) {
  const rep = marker.repetition ? `rep ${marker.repetition}` : null;
  const where = [marker.device, rep].filter(Boolean);
  return plotText(where.length ? `${marker.label} (${where.join(", ")})` : marker.label);
}

function interruptionShapes(interruptions, t0, tEnd) {
  return interruptions.map((i) => ({
    type: "rect", xref: "x", yref: "paper", y0: 0, y1: 1, layer: "below",
    x0: i.start - t0, x1: (i.end ?? tEnd) - t0,
    fillcolor: "rgba(192,57,43,0.15)", line: { width: 0 },
  }));
}

// When the run ended, or (still running) its last delay sample so far.
function runEnd(view) {
  const lastSamples = view.series.map((s) => s.t[s.t.length - 1] ?? view.run.started_at);
  return view.run.ended_at ?? Math.max(view.run.started_at, ...lastSamples);
}

// The x axis of the timelines: the whole run (automatic before there is anything to show).
function timeAxis(view) {
  const length = runEnd(view) - view.run.started_at;
  return axis("seconds since run start", length > 0 ? { range: [0, length] } : {});
}

function drawOwd(target, view) {
  const t0 = view.run.started_at;
  const overlay = markerOverlay(view.markers, t0);
  return draw(target, [...owdTraces(view.series, t0), ...overlay.traces], {
    height: 420,
    margin: { ...TIMELINE_MARGIN, t: overlay.annotations.length ? 70 : 20 },
    xaxis: timeAxis(view),
    yaxis: axis("one-way delay (ms)"),
    yaxis2: { overlaying: "y", range: [0, 1.02], visible: false, fixedrange: true },
    shapes: [...interruptionShapes(view.interruptions, t0, runEnd(view)), ...overlay.shapes],
    annotations: overlay.annotations,
  });
}

// --- distributions ----------------------------------------------------------------------

function histogramTrace(histogram, index) {
  const edges = histogram.edges_ms;
  return {
    type: "bar", name: plotText(histogram.stream), y: histogram.counts, opacity: 0.6,
    x: histogram.counts.map((_, i) => (edges[i] + edges[i + 1]) / 2),
    width: histogram.counts.map((_, i) => edges[i + 1] - edges[i]),
    marker: { color: colour(index) }, hovertemplate: "%{x:.2f} ms: %{y} packets",
  };
}

function drawHistograms(target, histograms) {
  return draw(target, histograms.map(histogramTrace), {
    height: 340, barmode: "overlay", bargap: 0,
    xaxis: axis("one-way delay (ms)"), yaxis: axis("packets"),
  });
}

// Cumulative share of packets at or below each bin edge.
function cdfTrace(histogram, name, color, dash) {
  const total = histogram.counts.reduce((sum, c) => sum + c, 0) || 1;
  let running = 0;
  const y = [0, ...histogram.counts.map((c) => (running += c) / total)];
  return {
    x: histogram.edges_ms, y, name: plotText(name), mode: "lines",
    line: { color, dash, shape: "hv" }, hovertemplate: "%{x:.2f} ms: %{y:.1%}",
  };
}

// Each run's streams, one colour per stream, run A solid and run B dashed.
function drawCdfs(target, runs) {
  const streams = [...new Set(runs.flatMap((r) => r.histograms.map((h) => h.stream)))];
  const traces = runs.flatMap((run, r) => run.histograms.map((h) => cdfTrace(
    h, `${run.label} ${h.stream}`, colour(streams.indexOf(h.stream)), r === 0 ? "solid" : "dash",
  )));
  return draw(target, traces, {
    height: 380, xaxis: axis("one-way delay (ms)"),
    yaxis: axis("share of packets", { tickformat: ".0%", range: [0, 1.02] }),
  });
}

// --- MCPTT floor control ----------------------------------------------------------------

const OUTCOME_SYMBOLS = ["circle", "diamond", "square", "x", "cross", "triangle-up"];

function burstTrace(bursts, t0) {
  return {
    type: "bar", orientation: "h", name: "talk burst", width: 0.5,
    y: bursts.map((b) => plotText(b.user)),
    base: bursts.map((b) => b.start - t0),
    x: bursts.map((b) => b.end - b.start),
    customdata: bursts.map((b) => [b.start - t0, b.end - t0, b.listeners]),
    marker: { color: translucent(PALETTE[0], 0.55) },
    hovertemplate: "%{customdata[0]:.2f} to %{customdata[1]:.2f} s, %{customdata[2]} listeners",
  };
}

function requestTraces(requests, t0) {
  const outcomes = [...new Set(requests.map((r) => r.outcome))];
  return outcomes.map((outcome, index) => {
    const ofOutcome = requests.filter((r) => r.outcome === outcome);
    return {
      mode: "markers", name: `request ${plotText(outcome)}`,
      x: ofOutcome.map((r) => r.time - t0), y: ofOutcome.map((r) => plotText(r.user)),
      text: ofOutcome.map((r) => `access ${fmtWithUnit(r.access_time_ms, "ms")}, `
        + `priority ${r.priority ?? DASH}`),
      hovertemplate: "%{x:.3f} s: %{text}",
      marker: {
        symbol: OUTCOME_SYMBOLS[index % OUTCOME_SYMBOLS.length], size: 8, color: colour(index + 1),
      },
    };
  });
}

function preemptionTrace(preemptions, t0) {
  return {
    mode: "markers", name: "pre-emption",
    x: preemptions.map((p) => p.time - t0), y: preemptions.map((p) => plotText(p.talker)),
    text: preemptions.map((p) => `${plotText(p.by)} pre-empts, `
      + `revoke ${fmtWithUnit(p.revoke_time_ms, "ms")}`),
    hovertemplate: "%{x:.3f} s: %{text}",
    marker: { symbol: "star", size: 12, color: MARKER_STYLE.fault.color },
  };
}

function drawFloor(target, view) {
  const { floor, run } = view;
  const traces = [
    burstTrace(floor.bursts, run.started_at),
    ...requestTraces(floor.requests, run.started_at),
    preemptionTrace(floor.preemptions, run.started_at),
  ];
  const users = floor.users.map(plotText);
  return draw(target, traces, {
    height: 160 + 45 * floor.users.length, barmode: "overlay",
    margin: { ...TIMELINE_MARGIN, t: 20 }, xaxis: timeAxis(view),
    yaxis: axis("", { type: "category", categoryorder: "array", categoryarray: users }),
  });
}

// --- trends -----------------------------------------------------------------------------

function drawSparkline(target, values, verdict) {
  const x = values.map((_, i) => i);
  const last = verdict === "FAIL" ? MARKER_STYLE.fault.color : PALETTE[2];
  const traces = [
    { x, y: values, mode: "lines", line: { color: "#566573", width: 1.2 } },
    { x: x.slice(-1), y: values.slice(-1), mode: "markers", marker: { color: last, size: 5 } },
  ];
  return draw(target, traces, {
    width: 130, height: 32, margin: { l: 2, r: 4, t: 3, b: 3 }, showlegend: false,
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    xaxis: { visible: false, fixedrange: true }, yaxis: { visible: false, fixedrange: true },
  }, { staticPlot: true, responsive: false });
}

// Lines of one KPI over time for several labs; failing runs are drawn as crosses.
function drawTrend(target, kpi, lines) {
  const traces = lines.map((line, index) => ({
    name: plotText(line.label), mode: "lines+markers", line: { color: colour(index) },
    x: line.points.map((p) => new Date(p.started_at * 1000)), y: line.points.map((p) => p.value),
    text: line.points.map((p) => plotText(`${p.verdict ?? DASH} ${p.run_id}`)),
    hovertemplate: "%{y}: %{text}",
    marker: { size: 7, symbol: line.points.map((p) => (p.verdict === "FAIL" ? "x" : "circle")) },
  }));
  return draw(target, traces, {
    height: 280, title: { text: plotText(kpi), x: 0, xanchor: "left", font: { size: 13 } },
    margin: { l: 60, r: 10, t: 36, b: 30 }, legend: { orientation: "h", y: -0.25 },
    xaxis: axis("", { type: "date", nticks: 5 }), yaxis: axis(lines[0]?.unit ?? ""),
  }, { displayModeBar: false });
}
