// camledger's live dashboard. No build step, no framework: the DOM, fetch, EventSource and
// the vendored uPlot. Every value from the server is put on the page with textContent or as
// an attribute, never parsed as HTML. Served under a CSP that allows this origin only.
"use strict";

const RECENT_ROWS = 50; // rows in "Recent events"
const WINDOW_EVENTS = 500; // events loaded with the search API on (re)load
const KEEP_EVENTS = 2000; // events kept in memory for the charts
const BUCKET_SECS = 10; // live chart resolution
const LIVE_SECS = 600; // live chart span

const $ = (selector) => document.querySelector(selector);

const state = {
  camera: "",
  events: new Map(), // seq -> {id, event, verdict}
  counted: { events: 0, verdicts: 0 }, // what the stats numbers already cover
  counts: { uploads: 0, spam: 0 },
  cameras: new Map(), // camera -> {uploads, spam, last_seen}
  knownCameras: new Set(),
  head: 0,
  lag: null,
  stream: null,
  opened: false,
  days: null,
  charts: {},
  rows: new Map(), // seq -> <tr>
};

class Unauthorized extends Error {}

async function getJson(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) throw new Unauthorized();
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

// ---- sign-in ---------------------------------------------------------------------------

function showSignin(message) {
  closeStream();
  $("#dashboard").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  $("#signin").hidden = false;
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const body = new URLSearchParams({ token: $("#token").value.trim() });
  const response = await fetch("/login", { method: "POST", body, credentials: "same-origin" });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    $("#login-error").textContent = answer.message || "sign-in failed (" + response.status + ")";
    return;
  }
  $("#token").value = "";
  sessionStorage.setItem("camledger-who", answer.name + " (" + answer.role + ")");
  await start();
}

async function signOut() {
  await fetch("/logout", { method: "POST", credentials: "same-origin" }).catch(() => {});
  sessionStorage.removeItem("camledger-who");
  showSignin("Signed out.");
}

// ---- loading (search API + stats) ------------------------------------------------------

async function load() {
  const stats = await getJson("/v1/stats" + query({ camera: state.camera }));
  state.counted = { events: stats.projected.events_seq, verdicts: stats.projected.verdicts_seq };
  state.head = Math.max(stats.head.events_seq, stats.projected.events_seq);
  state.lag = stats.verdict_lag;
  state.counts.uploads = stats.cameras.reduce((n, c) => n + c.uploads, 0);
  state.counts.spam = stats.spam.total;
  state.cameras = new Map(stats.cameras.map((c) => [c.camera, { uploads: c.uploads, spam: c.spam, last_seen: c.last_seen }]));
  if (!state.camera) for (const c of stats.cameras) state.knownCameras.add(c.camera);
  state.days = stats.uploads_per_day;

  const after = Math.max(0, stats.projected.events_seq - WINDOW_EVENTS);
  const page = await getJson("/v1/events" + query({ after, limit: WINDOW_EVENTS, camera: state.camera }));
  state.events = new Map();
  for (const entry of page.events) state.events.set(entry.event.seq, entry);
  const note = $("#filter-note");
  note.textContent = state.camera ? "events of " + state.camera + " among the newest " + WINDOW_EVENTS + " (search API)" : "";

  renderCameraOptions();
  renderCounts();
  renderCameras();
  renderEvents(new Set());
  renderDays();
  renderLive();
}

// ---- live updates (Server-Sent Events) ---------------------------------------------------

function closeStream() {
  if (state.stream) state.stream.close();
  state.stream = null;
  state.opened = false;
  setLive(false);
}

function setLive(on) {
  const badge = $("#live");
  badge.textContent = on ? "live" : "offline";
  badge.className = "badge " + (on ? "on" : "off");
}

function openStream() {
  closeStream();
  const stream = new EventSource("/v1/stream" + query({ camera: state.camera }));
  state.stream = stream;
  stream.onopen = () => {
    setLive(true);
    // After a reconnect something may have been missed: reload through the search API.
    if (state.opened) reload();
    state.opened = true;
  };
  stream.onerror = () => {
    setLive(false);
    // A refused stream (an ended session) is not retried by the browser: find out why.
    if (stream.readyState === EventSource.CLOSED) reload();
  };
  stream.addEventListener("heads", (m) => {
    const heads = JSON.parse(m.data);
    state.head = Math.max(state.head, heads.events_seq);
    state.lag = heads.verdict_lag;
    renderCounts();
  });
  stream.addEventListener("event", (m) => upsert(JSON.parse(m.data)));
  stream.addEventListener("verdict", (m) => upsert(JSON.parse(m.data)));
  stream.addEventListener("resync", () => reload());
}

let pendingRender = null;
const fresh = new Set();

function upsert(entry) {
  const seq = entry.event.seq;
  const known = state.events.get(seq);
  const camera = entry.event.camera;
  if (!state.cameras.has(camera)) state.cameras.set(camera, { uploads: 0, spam: 0, last_seen: null });
  const row = state.cameras.get(camera);
  if (!known && seq > state.counted.events) {
    state.counts.uploads += 1;
    row.uploads += 1;
    row.last_seen = entry.event.received_at;
    state.counted.events = seq;
    fresh.add(seq);
    const today = state.days && state.days[state.days.length - 1];
    if (today && entry.event.received_at.startsWith(today.date)) today.uploads += 1;
  }
  const judgedNow = entry.verdict && !(known && known.verdict);
  if (judgedNow && seq > state.counted.verdicts) {
    if (entry.verdict.spam) {
      state.counts.spam += 1;
      row.spam += 1;
      const today = state.days && state.days[state.days.length - 1];
      if (today && entry.event.received_at.startsWith(today.date)) today.spam += 1;
    }
  }
  state.head = Math.max(state.head, seq);
  state.events.set(seq, entry);
  if (!state.knownCameras.has(camera)) {
    state.knownCameras.add(camera);
    renderCameraOptions();
  }
  while (state.events.size > KEEP_EVENTS) state.events.delete(Math.min(...state.events.keys()));
  if (!pendingRender) {
    pendingRender = setTimeout(() => {
      pendingRender = null;
      renderCounts();
      renderCameras();
      renderEvents(fresh);
      fresh.clear();
      renderLive();
      renderDays();
    }, 100);
  }
}

let reloading = null;
let reloadAgain = false;
function reload() {
  // One load at a time; a reload asked for meanwhile (a new filter) runs right after it.
  if (reloading) {
    reloadAgain = true;
    return;
  }
  reloading = load()
    .catch((e) => (e instanceof Unauthorized ? showSignin("The session ended; sign in again.") : console.error(e)))
    .finally(() => {
      reloading = null;
      if (reloadAgain) {
        reloadAgain = false;
        reload();
      }
    });
}

// ---- rendering -------------------------------------------------------------------------

function text(tag, value, className) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (className) el.className = className;
  return el;
}

function share(spam, total) {
  return total > 0 ? ((100 * spam) / total).toFixed(1) + " %" : "–";
}

function renderCounts() {
  $("#count-uploads").textContent = state.counts.uploads;
  $("#count-spam").textContent = state.counts.spam;
  $("#count-share").textContent = share(state.counts.spam, state.counts.uploads);
  $("#count-lag").textContent = state.lag === null ? "–" : state.lag;
  $("#count-head").textContent = state.head;
}

function renderCameraOptions() {
  const select = $("#camera");
  const have = new Set([...select.options].map((o) => o.value));
  for (const camera of [...state.knownCameras].sort()) {
    if (!have.has(camera)) select.append(new Option(camera, camera));
  }
  select.value = state.camera;
}

function renderCameras() {
  const body = $("#cameras tbody");
  body.replaceChildren();
  const rows = [...state.cameras.entries()].sort((a, b) => b[1].uploads - a[1].uploads);
  for (const [camera, c] of rows) {
    const tr = document.createElement("tr");
    tr.dataset.camera = camera;
    tr.append(text("td", camera), text("td", c.uploads, "num"), text("td", c.spam, "num"),
      text("td", share(c.spam, c.uploads), "num"), text("td", c.last_seen || "–"));
    body.append(tr);
  }
}

function verdictCells(entry) {
  const v = entry.verdict;
  if (!v) return [text("td", "pending", "verdict verdict-pending"), text("td", "")];
  const label = v.top_label ? " · " + v.top_label.label + " " + v.top_label.probability.toFixed(2) : "";
  return [text("td", (v.spam ? "spam" : "ok") + label, "verdict " + (v.spam ? "verdict-spam" : "verdict-ok")),
    text("td", v.reasons.join(", "), "reasons")];
}

function eventRow(entry) {
  const e = entry.event;
  const tr = document.createElement("tr");
  tr.dataset.seq = e.seq;
  tr.dataset.camera = e.camera;
  const seq = document.createElement("td");
  const link = text("a", e.seq);
  link.href = "/v1/events/" + e.seq;
  link.title = "the event as JSON (commit " + entry.id + ")";
  seq.append(link);
  const image = document.createElement("td");
  const full = document.createElement("a");
  full.href = "/v1/events/" + e.seq + "/image";
  const img = document.createElement("img");
  img.src = "/v1/events/" + e.seq + "/thumbnail";
  img.alt = "event " + e.seq;
  img.loading = "lazy";
  full.append(img);
  image.append(full);
  tr.append(seq, image, text("td", e.camera), text("td", e.received_at), text("td", e.media_type), ...verdictCells(entry));
  tr.verdictKnown = Boolean(entry.verdict);
  return tr;
}

function renderEvents(freshSeqs) {
  const body = $("#events tbody");
  const seqs = [...state.events.keys()]
    .filter((s) => !state.camera || state.events.get(s).event.camera === state.camera)
    .sort((a, b) => b - a)
    .slice(0, RECENT_ROWS);
  const keep = new Set(seqs);
  for (const [seq, tr] of state.rows) if (!keep.has(seq)) { tr.remove(); state.rows.delete(seq); }
  for (const seq of seqs) {
    const entry = state.events.get(seq);
    let tr = state.rows.get(seq);
    if (tr && tr.verdictKnown !== Boolean(entry.verdict)) {
      const cells = verdictCells(entry);
      tr.children[5].replaceWith(cells[0]);
      tr.children[6].replaceWith(cells[1]);
      tr.verdictKnown = Boolean(entry.verdict);
    }
    if (!tr) {
      tr = eventRow(entry);
      if (freshSeqs.has(seq)) tr.classList.add("fresh");
      state.rows.set(seq, tr);
    }
    body.append(tr); // moves it into order
  }
}

function chart(name, el, opts, data) {
  if (typeof uPlot === "undefined") return;
  const width = Math.max(320, Math.min(640, el.parentElement.clientWidth - 16 || 600));
  if (!state.charts[name]) {
    state.charts[name] = new uPlot({ width, height: 220, ...opts }, data, el);
  } else {
    state.charts[name].setData(data);
  }
}

function seriesOpts(rateLabel) {
  return {
    scales: { x: { time: true }, pct: { range: [0, 100] } },
    series: [
      {},
      { label: rateLabel, stroke: "#2563eb", width: 2, fill: "rgba(37,99,235,0.08)" },
      { label: "spam %", stroke: "#b91c1c", width: 2, scale: "pct", spanGaps: true, points: { show: true, size: 5 } },
    ],
    axes: [{}, { label: rateLabel }, { side: 1, scale: "pct", label: "spam %", grid: { show: false } }],
  };
}

function renderLive() {
  const now = Math.floor(Date.now() / 1000);
  const end = now - (now % BUCKET_SECS);
  const start = end - LIVE_SECS;
  const n = LIVE_SECS / BUCKET_SECS + 1;
  const xs = Array.from({ length: n }, (_, i) => start + i * BUCKET_SECS);
  const uploads = new Array(n).fill(0);
  const judged = new Array(n).fill(0);
  const spam = new Array(n).fill(0);
  for (const entry of state.events.values()) {
    if (state.camera && entry.event.camera !== state.camera) continue;
    const t = Date.parse(entry.event.received_at) / 1000;
    const i = Math.floor((t - start) / BUCKET_SECS);
    if (i < 0 || i >= n) continue;
    uploads[i] += 1;
    if (entry.verdict) {
      judged[i] += 1;
      if (entry.verdict.spam) spam[i] += 1;
    }
  }
  const rate = uploads.map((u) => (u * 60) / BUCKET_SECS);
  const pct = judged.map((j, i) => (j > 0 ? (100 * spam[i]) / j : null));
  chart("live", $("#chart-live"), seriesOpts("uploads/min"), [xs, rate, pct]);
}

function renderDays() {
  if (!state.days) return;
  const xs = state.days.map((d) => Date.parse(d.date + "T00:00:00Z") / 1000);
  const uploads = state.days.map((d) => d.uploads);
  const pct = state.days.map((d) => (d.uploads > 0 ? (100 * d.spam) / d.uploads : null));
  chart("days", $("#chart-days"), seriesOpts("uploads/day"), [xs, uploads, pct]);
}

// ---- start -----------------------------------------------------------------------------

async function start() {
  try {
    await load();
  } catch (e) {
    if (e instanceof Unauthorized) return showSignin();
    $("#login-error").textContent = String(e.message || e);
    return showSignin(String(e.message || e));
  }
  $("#signin").hidden = true;
  $("#dashboard").hidden = false;
  $("#logout").hidden = false;
  $("#who").textContent = sessionStorage.getItem("camledger-who") || "";
  openStream();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", signIn);
  $("#logout").addEventListener("click", signOut);
  $("#camera").addEventListener("change", (e) => {
    state.camera = e.target.value;
    state.rows.forEach((tr) => tr.remove());
    state.rows.clear();
    reload();
    openStream();
  });
  setInterval(renderLive, 2000);
  start();
});
