"use strict";
// Shared by every dashboard page and the report: building the DOM from text only (data never
// goes through innerHTML), reading the API with an optional read token, formatting, tables,
// and the body[data-ready] / body[data-error] signal that tests and users wait for.

const TOKEN_KEY = "testbed.readToken";

class AuthError extends Error {}

// An element with attributes (null, undefined and false are left out) and children; strings
// become text nodes, so nothing a run record contains is ever parsed as HTML.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function fill(id, ...children) {
  const nodes = children.flat(Infinity).filter((child) => child !== null && child !== undefined);
  document.getElementById(id).replaceChildren(...nodes);
}

function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(name, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { headers });
  if (response.status === 401) throw new AuthError("This server needs a read token.");
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status} ${await detail(response)}`);
  return response.json();
}

async function detail(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : "";
  } catch {
    return "";
  }
}

function runHref(runId) {
  return `/runs/${encodeURIComponent(runId)}`;
}

// --- formatting -------------------------------------------------------------------------

const DASH = "\u2013";

function fmtNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return DASH;
  const digits = Math.abs(value) >= 1000
    ? { maximumFractionDigits: 0 }
    : { maximumSignificantDigits: 4 };
  return value.toLocaleString("en", digits);
}

function fmtTime(epochSeconds) {
  if (epochSeconds === null || epochSeconds === undefined) return DASH;
  return `${new Date(epochSeconds * 1000).toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return DASH;
  if (seconds < 120) return `${fmtNumber(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

function fmtBytes(bytes) {
  const units = ["B", "kB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${fmtNumber(value)} ${units[unit]}`;
}

function fmtWithUnit(value, unit) {
  return value === null || value === undefined ? DASH : `${fmtNumber(value)} ${unit || ""}`.trim();
}

function streamLabel(stream) {
  const hasPoint = stream.point !== null && stream.point !== undefined;
  return hasPoint ? `${stream.id} point ${stream.point}` : stream.id;
}

// Colour and text together, so the verdict does not rely on colour alone.
function verdictBadge(verdict) {
  const text = verdict || "running";
  const slug = text.toLowerCase().replace(/[^a-z]+/g, "-");
  return el("span", { class: `verdict verdict-${slug}` }, text);
}

// --- tables -----------------------------------------------------------------------------

// A table whose rows start with a row header; numbers are formatted and right-aligned.
// A row is an array of cells (string, number, null or Node), or {cells, className}.
function dataTable(id, caption, headers, rows) {
  const head = el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)));
  const body = rows.map((row) => {
    const [first, ...rest] = Array.isArray(row) ? row : row.cells;
    return el(
      "tr",
      { class: Array.isArray(row) ? null : row.className },
      el("th", { scope: "row" }, cellContent(first)),
      rest.map(dataCell),
    );
  });
  const parts = [el("caption", {}, caption), el("thead", {}, head), el("tbody", {}, body)];
  return el("table", { id }, parts);
}

function dataCell(cell) {
  return el("td", { class: typeof cell === "number" ? "num" : null }, cellContent(cell));
}

function cellContent(cell) {
  if (cell === null || cell === undefined) return DASH;
  return typeof cell === "number" ? fmtNumber(cell) : cell;
}

function emptyNote(text) {
  return el("p", { class: "empty" }, text);
}

// --- page life cycle --------------------------------------------------------------------

// Runs a page's async renderer; marks the body ready once every plot is drawn, or shows the
// error (and a token field when the API wants one).
async function startPage(render) {
  try {
    await render();
    document.body.dataset.ready = "1";
  } catch (error) {
    if (error instanceof AuthError) showTokenForm();
    showError(error.message || String(error));
  }
}

function showError(message) {
  document.body.dataset.error = message;
  const box = document.getElementById("error")
    || el("p", { id: "error", class: "error", role: "alert" });
  box.textContent = message;
  document.querySelector("main").prepend(box);
}

function showTokenForm() {
  const input = el("input", {
    id: "token-input", type: "password", autocomplete: "off", required: true,
  });
  const form = el(
    "form",
    { id: "token-form", class: "filters" },
    el("label", { for: "token-input" }, "Read token "),
    input,
    el("button", { type: "submit" }, "Use token"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    location.reload();
  });
  document.querySelector("main").prepend(form);
}
