// The device's page: plain JavaScript, no framework, no request outside this device.
// Reads: /v1/status (2 s), /v1/latest (4 per second), /v1/events (server-sent events),
// /v1/preview.mjpeg. With the bearer token (kept in sessionStorage for this tab, sent only
// as an Authorization header): capture, model upload and download, the collected images.
"use strict";

const WINDOW_MS = 3 * 60 * 1000;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d"];
const TOKEN_KEY = "scion.token";

const $ = (id) => document.getElementById(id);
const state = {
  status: null,          // last /v1/status
  online: null,          // whether the last status poll answered
  uptime: null,          // to notice a restart
  samples: [],           // [{t, probs: {label: p}, unknown}]
  colors: new Map(),     // label -> colour
  events: null,          // EventSource
  lastSeq: null,
  listing: 0,            // the newest captures listing asked for; older answers are dropped
};

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function text(el, value) { el.textContent = value == null ? "–" : String(value); }

function fmtTime(ms) { return new Date(ms).toLocaleTimeString(); }

function fmtDuration(s) {
  if (s == null) return "–";
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
}

function fmtBytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function color(label) {
  if (!state.colors.has(label)) state.colors.set(label, label === "unknown" ? "#b45309" : COLORS[state.colors.size % COLORS.length]);
  return state.colors.get(label);
}

// --- requests --------------------------------------------------------------------------

// A poll that does not start again while its last request is unanswered. A busy device, or a
// slow link, would otherwise collect a queue of polls that fill the browser's six connections
// per host (two are the event stream and the preview) and hold back what the user asked for.
function oneAtATime(poll) {
  let running = false;
  return async () => {
    if (running) return;
    running = true;
    try { await poll(); } finally { running = false; }
  };
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.auth) headers["Authorization"] = "Bearer " + token();
  const response = await fetch(path, { method: options.method || "GET", headers, body: options.body, cache: "no-store" });
  if (options.raw && response.ok) return response;
  let body = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) body = await response.json().catch(() => null);
  else body = { error: (await response.text().catch(() => "")).trim() };
  if (!response.ok) {
    const error = new Error(explain(response.status, body && body.error));
    error.status = response.status;
    throw error;
  }
  return body;
}

function explain(status, message) {
  const limits = state.status || {};
  switch (status) {
    case 401: return "401: wrong or missing token (" + (message || "refused") + ")";
    case 403: return "403: " + (message || "this endpoint is off on the device");
    case 413: return "413: too large for the device (the limit is " + fmtBytes(limits.max_model_bytes) + "; http.max_model_bytes)";
    case 422: return "422: refused: " + (message || "the device refused it");
    default: return status + ": " + (message || "request failed");
  }
}

function verdict(message, ok) {
  const el = $("verdict");
  el.textContent = message;
  el.className = "verdict " + (ok ? "ok" : "error");
}

// --- live view ---------------------------------------------------------------------------

function reloadPreview() {
  $("preview").src = "/v1/preview.mjpeg?t=" + Date.now();
}

async function pollLatest() {
  try {
    const latest = await api("/v1/latest");
    showLatest(latest);
  } catch (e) {
    if (e.status === 404) text($("frame-age"), "no frame classified yet");
  }
}

function showLatest(latest) {
  const label = $("label");
  text(label, latest.label == null ? "(none confident)" : latest.label);
  label.classList.toggle("unknown", latest.label === "unknown");
  label.dataset.label = latest.label == null ? "" : latest.label;
  text($("seq"), latest.seq);
  text($("frame-age"), "frame " + (latest.age_s * 1000).toFixed(0) + " ms old");
  const list = $("topk");
  list.replaceChildren();
  const probs = {};
  for (const r of latest.top || []) {
    probs[r.label] = r.prob;
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = r.label;
    name.title = r.label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * r.prob).toFixed(1) + "%";
    fill.style.background = color(r.label);
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = (100 * r.prob).toFixed(1) + "%";
    li.append(name, track, value);
    list.append(li);
  }
  if (latest.unknown) probs["unknown"] = 1;
  if (latest.seq !== state.lastSeq) {
    state.lastSeq = latest.seq;
    state.samples.push({ t: Date.now(), probs });
  }
  const cutoff = Date.now() - WINDOW_MS;
  while (state.samples.length && state.samples[0].t < cutoff) state.samples.shift();
  drawTimeline();
}

function drawTimeline() {
  const canvas = $("timeline");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, now = Date.now();
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#e4e7ec";
  ctx.lineWidth = 1;
  for (const p of [0.25, 0.5, 0.75]) {
    ctx.beginPath(); ctx.moveTo(0, h * (1 - p)); ctx.lineTo(w, h * (1 - p)); ctx.stroke();
  }
  const labels = new Set();
  for (const s of state.samples) for (const l of Object.keys(s.probs)) labels.add(l);
  const x = (t) => w * (1 - (now - t) / WINDOW_MS);
  for (const label of labels) {
    ctx.strokeStyle = color(label);
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    for (const s of state.samples) {
      const p = s.probs[label] || 0;
      const px = x(s.t), py = h * (1 - p);
      if (started) ctx.lineTo(px, py); else { ctx.moveTo(px, py); started = true; }
    }
    ctx.stroke();
  }
  const legend = $("legend");
  legend.replaceChildren();
  for (const label of labels) {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color(label);
    li.append(swatch, document.createTextNode(label));
    legend.append(li);
  }
}

// --- events ------------------------------------------------------------------------------

function addEvent(html, kind) {
  const list = $("events");
  const li = document.createElement("li");
  li.className = kind;
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = fmtTime(Date.now());
  li.append(time, document.createTextNode(html));
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}

function connectEvents() {
  if (state.events) state.events.close();
  const source = new EventSource("/v1/events");
  state.events = source;
  source.addEventListener("label", (e) => {
    const ev = JSON.parse(e.data);
    const to = ev.to == null ? "(none)" : ev.to;
    const from = ev.from == null ? "(none)" : ev.from;
    addEvent(from + " → " + to + (ev.to == null ? "" : " (" + (100 * ev.prob).toFixed(0) + "%)"), ev.to === "unknown" ? "unknown" : "label");
  });
  source.addEventListener("notice", (e) => {
    const ev = JSON.parse(e.data);
    addEvent(ev.message, "notice");
  });
  source.addEventListener("error", () => {
    // The browser retries by itself while the stream is merely interrupted; a closed
    // one is reopened when the status poll sees the device again.
    if (source.readyState === EventSource.CLOSED) state.events = null;
  });
}

// --- status ------------------------------------------------------------------------------

function facts(el, pairs) {
  el.replaceChildren();
  for (const [k, v] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v == null || v === "" ? "–" : String(v);
    el.append(dt, dd);
  }
}

function ms(v) { return v == null ? "–" : v.toFixed(1) + " ms"; }

async function pollStatus() {
  let status;
  try {
    status = await api("/v1/status");
  } catch (e) {
    if (state.online !== false) addEvent("the device does not answer (" + e.message + ")", "notice");
    state.online = false;
    const pill = $("health");
    pill.textContent = "offline";
    pill.className = "pill offline";
    return;
  }
  const restarted = state.uptime != null && status.uptime_s < state.uptime;
  if (state.online === false || restarted) {
    addEvent(restarted ? "the service restarted" : "the device answers again", "notice");
    reloadPreview();
  }
  if (!state.events) connectEvents();
  state.online = true;
  state.uptime = status.uptime_s;
  state.status = status;
  showStatus(status);
}

function showStatus(s) {
  const pill = $("health");
  pill.textContent = s.health;
  pill.className = "pill " + (s.health === "ready" ? "ready" : "stale");
  const m = s.model || {};
  text($("model-name"), (m.name || "") + (m.sha256 ? " · " + m.sha256.slice(0, 12) : ""));
  const stale = s.last_frame_age_s == null || s.last_frame_age_s > s.stale_after_s;
  const warn = $("no-frames");
  warn.hidden = !stale;
  if (stale) {
    warn.textContent = s.last_frame_at_ms == null ? "no frames yet from " + s.source : "no frames since " + fmtTime(s.last_frame_at_ms) + " (" + s.source + ")";
  }
  const lat = s.latency_ms || {};
  const uart = s.uart ? (s.uart.connected ? "connected" : "not connected") + ", " + s.uart.results_sent + " sent, " + s.uart.results_dropped + " dropped" : "off";
  facts($("status"), [
    ["uptime", fmtDuration(s.uptime_s)],
    ["source", s.source],
    ["fps", s.fps.toFixed(1)],
    ["frames", s.frames],
    ["dropped frames", s.dropped],
    ["reconnects", s.reconnects],
    ["latency (mean)", "capture " + ms(lat.capture) + " · preprocess " + ms(lat.preprocess) + " · inference " + ms(lat.inference) + " · post " + ms(lat.post)],
    ["frame to result", ms(lat.total)],
    ["engine", s.engine + " (" + s.precision + ")"],
    ["board", s.board],
    ["GPIO", s.gpio],
    ["UART", uart],
    ["collecting", s.collect.policies.length ? s.collect.policies.join(", ") + " → " + s.collect.dir : (s.collect.dir ? "capture button only → " + s.collect.dir : "off")],
  ]);
  const metrics = m.validation || {};
  const pct = (v) => (v == null ? null : (100 * v).toFixed(1) + "%");
  facts($("model"), [
    ["name", m.name],
    ["sha256", m.sha256],
    ["classes", (m.labels || []).length + ": " + (m.labels || []).slice(0, 20).join(", ") + ((m.labels || []).length > 20 ? ", …" : "")],
    ["validation top-1", pct(metrics.top1)],
    ["validation top-5", pct(metrics.top5)],
    ["validation images", metrics.images],
    ["calibration", m.temperature == null ? "none" : "T = " + m.temperature.toFixed(3)],
    ["unknown rule", m.unknown_rule ? "on" : "none"],
    ["model swaps", s.model_swaps],
    ["refused models", s.model_rejections],
  ]);
  const c = s.collect;
  text($("collect-summary"), c.files + " images (" + fmtBytes(c.bytes) + " of " + fmtBytes(c.max_bytes) + "), " + c.saved + " saved since start, " + c.evicted + " oldest dropped, " + c.skipped + " skipped");
  if (s.token_required === false) text($("token-state"), "The device has no token configured: capture and uploads are off.");
}

// --- token and actions ---------------------------------------------------------------

function showToken() {
  const has = token() !== "";
  for (const id of ["capture", "download-model", "upload", "captures-refresh", "captures-zip"]) $(id).disabled = !has;
  text($("token-state"), has ? "Token entered (kept in this tab only)." : "No token entered: reading only.");
}

async function download(path, name) {
  const response = await api(path, { auth: true, raw: true });
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function capture() {
  try {
    const c = await api("/v1/capture", { method: "POST", auth: true });
    verdict("captured frame " + c.seq + " into " + c.label + "/", true);
    listCaptures();
  } catch (e) { verdict("capture: " + e.message, false); }
}

async function upload(event) {
  event.preventDefault();
  const file = $("model-file").files[0];
  if (!file) return verdict("choose an .onnx file first", false);
  verdict("uploading " + file.name + " (" + fmtBytes(file.size) + ")…", true);
  try {
    const r = await api("/v1/model", { method: "POST", auth: true, body: file, headers: { "Content-Type": "application/octet-stream" } });
    verdict("installed: " + ((r.model && r.model.name) || file.name) + (r.slot ? " in slot " + r.slot : ""), true);
  } catch (e) { verdict("upload " + file.name + ": " + e.message, false); }
}

async function listCaptures() {
  const asked = ++state.listing;
  let list;
  try { list = await api("/v1/captures", { auth: true }); } catch (e) { return verdict("captures: " + e.message, false); }
  // Two listings in flight (after a capture, and a click): the one asked for last is shown.
  if (asked !== state.listing) return;
  const table = $("captures");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  const labels = ((state.status && state.status.model && state.status.model.labels) || []).slice();
  for (const c of list.captures.slice(0, 200)) {
    const tr = document.createElement("tr");
    const cell = (v) => { const td = document.createElement("td"); td.textContent = v; tr.append(td); return td; };
    cell(fmtTime(c.time_ms));
    cell(c.folder);
    cell(c.policy);
    cell(c.top1 ? c.top1.label + " " + (100 * c.top1.prob).toFixed(0) + "%" : "–");
    const td = cell("");
    const select = document.createElement("select");
    for (const l of labels) {
      const o = document.createElement("option");
      o.value = l; o.textContent = l;
      if (l === (c.confirmed || c.folder)) o.selected = true;
      select.append(o);
    }
    const ok = document.createElement("button");
    ok.type = "button";
    ok.textContent = c.confirmed ? "✓ " + c.confirmed : "confirm";
    ok.addEventListener("click", async () => {
      try {
        const r = await api("/v1/captures/confirm", { method: "POST", auth: true, headers: { "Content-Type": "application/json" }, body: JSON.stringify({ path: c.path, label: select.value }) });
        ok.textContent = "✓ " + r.confirmed;
      } catch (e) { verdict("confirm: " + e.message, false); }
    });
    td.append(select, ok);
    body.append(tr);
  }
  table.hidden = false;
}

function init() {
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    showToken();
  });
  $("token-forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showToken(); });
  $("capture").addEventListener("click", capture);
  $("upload-form").addEventListener("submit", upload);
  $("download-model").addEventListener("click", () => download("/v1/model/file", ((state.status && state.status.model && state.status.model.name) || "model") + ".onnx").catch((e) => verdict("download: " + e.message, false)));
  $("captures-refresh").addEventListener("click", listCaptures);
  $("captures-zip").addEventListener("click", () => download("/v1/captures.zip", "captures.zip").catch((e) => verdict("zip: " + e.message, false)));
  // A stream cut by a restart ends the image; take it up again.
  $("preview").addEventListener("error", () => setTimeout(reloadPreview, 2000));
  showToken();
  // Started once the page has loaded, not from the HTML: a stream that has no frame yet
  // (a camera that is gone) would hold the load event, and the browser's spinner, forever.
  if (document.readyState === "complete") reloadPreview();
  else window.addEventListener("load", reloadPreview, { once: true });
  connectEvents();
  const status = oneAtATime(pollStatus), latest = oneAtATime(pollLatest);
  status();
  latest();
  setInterval(status, 2000);
  setInterval(latest, 250);
}

document.addEventListener("DOMContentLoaded", init);
