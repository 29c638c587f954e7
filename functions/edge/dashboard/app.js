// The edgejobs dashboard: plain JS, no dependency, nothing loaded from elsewhere. Every
// figure and every action goes through the public API with the key this tab holds
// (sessionStorage: gone when the tab closes). Data is only ever put in the page as text.
// The overview and a job's page follow the API's event streams (#30) instead of refreshing
// on a timer.
"use strict";

const KEY = "edgejobs.key";
const PAGE = 50;
const FINAL = ["completed", "dead", "cancelled"];
const STATES = ["queued", "scheduled", "active", "completed", "dead", "cancelled"];
// The overview redraws at most this often however many jobs change (each redraw reads
// every shard once through /v1/stats).
const LIVE_THROTTLE_MS = 1000;
// While a stream is down (it reconnects meanwhile), the overview still redraws this often.
const FALLBACK_MS = 30000;
// The waits before reconnecting a dropped stream, the last one repeated.
const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000, 30000];

// `gen` counts the views drawn: a late answer meant for an earlier view is dropped. `leave`
// holds what the shown view must undo when another is drawn (its streams and timers).
// `calls` counts requests by method and path (no query), `events` the stream events the
// page received by type, `streams` the subscriptions open: the browser tests read them to
// tell live updates from periodic refreshes.
const state = { admin: false, renders: 0, gen: 0, leave: [], calls: {}, events: {}, streams: 0 };

// ---------- small DOM helpers ----------

function el(tag, attrs, ...children) {
  const svg = ["svg", "rect", "path", "line", "text", "g", "title"].includes(tag);
  const e = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else if (k === "class") e.setAttribute("class", v);
    else if (k in e && !svg) e[k] = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const $ = (sel) => document.querySelector(sel);
const main = () => $("#main");

function flash(text, error) {
  const f = $("#flash");
  f.textContent = text;
  f.className = error ? "error" : "";
  f.hidden = !text;
}

function when(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const s = Math.round(seconds);
  if (s < 90) return `${s}s ago`;
  if (s < 5400) return `${Math.round(s / 60)}m ago`;
  if (s < 129600) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

function stateBadge(s, id) {
  return el("span", { class: `state ${s}`, id }, s);
}

function pretty(v, id) {
  return el("pre", { class: "mono", id }, v === undefined ? "—" : JSON.stringify(v, null, 2));
}

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

function bearer() {
  return `Bearer ${sessionStorage.getItem(KEY) || ""}`;
}

// Counts a request in `state.calls` under its method and path without the query.
function counted(method, path) {
  const name = `${method} ${path.split("?")[0]}`;
  state.calls[name] = (state.calls[name] || 0) + 1;
}

async function api(method, path, body) {
  const headers = { authorization: bearer() };
  if (body !== undefined) headers["content-type"] = "application/json";
  let resp;
  counted(method, path);
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "network", "the API did not answer");
  }
  let data = null;
  try {
    data = await resp.json();
  } catch (e) {
    data = null;
  }
  if (!resp.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(resp.status, err.code || `http_${resp.status}`, err.message || resp.statusText);
  }
  return data;
}

async function act(label, f) {
  try {
    const out = await f();
    flash(label(out));
    return out;
  } catch (e) {
    flash(e.message, true);
    return null;
  }
}

// ---------- live updates: Server-Sent Events over fetch() ----------

// Reads an SSE body and calls `emit({ type, data, id })` for each event. `EventSource` cannot
// send the Authorization header the key travels in, so the stream is read with fetch() and
// parsed here: lines end with "\n" (a "\r" before it is dropped), "field: value" lines
// build an event, a blank line dispatches it, ":" lines are comments (the keepalives).
async function readEvents(body, emit) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let ev = { type: "", data: [], id: null };
  const line = (raw) => {
    const text = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (text === "") {
      if (ev.data.length) emit({ type: ev.type || "message", data: ev.data.join("\n"), id: ev.id });
      ev = { type: "", data: [], id: null };
      return;
    }
    if (text.startsWith(":")) return;
    const at = text.indexOf(":");
    const field = at < 0 ? text : text.slice(0, at);
    let value = at < 0 ? "" : text.slice(at + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") ev.type = value;
    else if (field === "data") ev.data.push(value);
    else if (field === "id" && !value.includes("\0")) ev.id = value;
    // "retry" is left out on purpose: reconnecting follows BACKOFF_MS.
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      line(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  }
}

// Follows the event stream at `path` for the shown view, reconnecting a dropped stream after
// BACKOFF_MS with `Last-Event-ID` (the newest event id received, so a job's chunks resume
// exactly). `on.event(ev)` returns true once the stream is done (a job's final state: the
// server then ends it). `on.open()` runs on each (re)connection, `on.drop()` when a
// connection is lost, `on.fail(error)` when the API refuses the subscription (no retry).
// The subscription is closed when the view is left.
function subscribe(path, on) {
  const sub = { closed: false, failures: 0, lastId: null, ctrl: null, timer: null };
  state.streams += 1;
  const close = () => {
    if (sub.closed) return;
    state.streams -= 1;
    sub.closed = true;
    clearTimeout(sub.timer);
    if (sub.ctrl) sub.ctrl.abort();
  };
  const connect = async () => {
    if (sub.closed) return;
    sub.ctrl = new AbortController();
    let done = false;
    try {
      const headers = { authorization: bearer(), accept: "text/event-stream" };
      if (sub.lastId !== null) headers["last-event-id"] = sub.lastId;
      counted("GET", path);
      const resp = await fetch(path, { headers, signal: sub.ctrl.signal, cache: "no-store" });
      if (!resp.ok || !resp.body) {
        const err = ((await resp.json().catch(() => null)) || {}).error || {};
        throw new ApiError(resp.status, err.code || `http_${resp.status}`, err.message || resp.statusText);
      }
      sub.failures = 0;
      if (on.open) on.open();
      await readEvents(resp.body, (ev) => {
        if (sub.closed || done) return;
        if (ev.id !== null) sub.lastId = ev.id;
        state.events[ev.type] = (state.events[ev.type] || 0) + 1;
        done = Boolean(on.event(ev));
      });
    } catch (e) {
      if (sub.closed) return;
      // A refusal that a retry cannot change (the key, the job, the request) ends it; the
      // rest (network, 429, 5xx) is retried.
      if (e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 429) {
        close();
        if (on.fail) on.fail(e);
        return;
      }
    }
    if (sub.closed) return;
    if (done) {
      close();
      return;
    }
    if (on.drop) on.drop();
    sub.timer = setTimeout(connect, BACKOFF_MS[Math.min(sub.failures, BACKOFF_MS.length - 1)]);
    sub.failures += 1;
  };
  state.leave.push(close);
  connect();
  return sub;
}

// Marks the live state of the shown view on the body (the browser tests wait on it):
// "open", "retrying", "ended" (a job's stream after its final state) or "failed".
function liveState(s) {
  document.body.dataset.live = s;
}

// ---------- confirmation (in the page, no window.confirm) ----------

function confirmBox(text) {
  return new Promise((resolve) => {
    const box = $("#confirm");
    $("#confirm-text").textContent = text;
    box.hidden = false;
    const done = (v) => {
      box.hidden = true;
      $("#confirm-yes").onclick = null;
      $("#confirm-no").onclick = null;
      resolve(v);
    };
    $("#confirm-yes").onclick = () => done(true);
    $("#confirm-no").onclick = () => done(false);
  });
}

// ---------- routing ----------

function route() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { view: parts[0] || "overview", arg: parts[1], params: new URLSearchParams(query || "") };
}

function go(view, params) {
  const q = params && params.toString();
  location.hash = `#/${view}${q ? `?${q}` : ""}`;
}

// Undoes what the shown view set up: closes its streams, clears its timers.
function leaveView() {
  const undo = state.leave;
  state.leave = [];
  state.gen += 1;
  for (const f of undo) f();
  document.body.dataset.live = "none";
}

// Whether the view drawn as generation `gen` is still the one shown.
function shown(gen) {
  return gen === state.gen && Boolean(sessionStorage.getItem(KEY));
}

async function render() {
  leaveView();
  const r = route();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === r.view);
  const views = { overview, jobs, job, dead, schedules, flow, backups };
  const view = views[r.view] || overview;
  document.body.dataset.view = r.view;
  try {
    await view(r);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return signOut("The key was refused: " + e.message);
    flash(e.message, true);
  }
  state.renders += 1;
  document.body.dataset.renders = String(state.renders);
}

function replace(...nodes) {
  main().replaceChildren(...nodes);
}

// ---------- sign in ----------

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    const me = await api("GET", "/v1/whoami");
    state.admin = me.scopes.includes("admin");
    $("#who").textContent = `key ${me.key_id}${state.admin ? " · admin (every tenant)" : ` · tenant ${me.tenant}`}`;
  } catch (e) {
    sessionStorage.removeItem(KEY);
    flash(e.message, true);
    return false;
  }
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  for (const a of document.querySelectorAll("[data-admin]")) a.hidden = !state.admin;
  document.body.dataset.admin = String(state.admin);
  flash("");
  return true;
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  leaveView();
  state.admin = false;
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  document.body.dataset.view = "login";
  history.replaceState(null, "", location.pathname);
  replace(state.login);
  $("#key").value = "";
  flash(message || "The key is forgotten.", Boolean(message));
}

// ---------- overview ----------

function chart(points, kind) {
  const w = 600, h = 150, pad = 22;
  const svg = el("svg", { class: "chart", viewBox: `0 0 ${w} ${h}`, role: "img" });
  const n = points.length;
  const bw = (w - pad) / n;
  let max = 1;
  if (kind === "throughput") max = Math.max(1, ...points.map((p) => p.completed + p.failed));
  else max = 100;
  const y = (v) => h - pad - (v / max) * (h - 2 * pad);
  svg.append(el("line", { class: "axis", x1: pad, y1: h - pad, x2: w, y2: h - pad }));
  svg.append(el("text", { x: 0, y: pad }, String(max) + (kind === "rate" ? "%" : "")));
  svg.append(el("text", { x: 0, y: h - pad }, "0"));
  svg.append(el("text", { x: pad, y: h - 6 }, "−60 min"));
  svg.append(el("text", { x: w - 24, y: h - 6 }, "now"));
  if (kind === "throughput") {
    points.forEach((p, i) => {
      const x = pad + i * bw;
      const c = y(p.completed), f = y(p.completed + p.failed);
      const g = el("g", {}, el("title", {}, `${when(p.at)}: ${p.completed} completed, ${p.failed} failed attempts`));
      g.append(el("rect", { class: "bar-completed", x, y: c, width: Math.max(1, bw - 1), height: h - pad - c }));
      if (p.failed) g.append(el("rect", { class: "bar-failed", x, y: f, width: Math.max(1, bw - 1), height: c - f }));
      svg.append(g);
    });
  } else {
    const d = points
      .map((p, i) => {
        const all = p.completed + p.failed;
        const rate = all ? (100 * p.failed) / all : 0;
        return `${i ? "L" : "M"}${(pad + i * bw + bw / 2).toFixed(1)},${y(rate).toFixed(1)}`;
      })
      .join(" ");
    svg.append(el("path", { class: "line-rate", d }));
  }
  return svg;
}

// The overview follows `GET /v1/events` (every job the key sees): a state event redraws it
// (at most once per LIVE_THROTTLE_MS, and not while the tab is hidden: then once it shows
// again). Nothing redraws it on a timer while the stream is open; while the stream is down
// it reconnects with a backoff and redraws every FALLBACK_MS meanwhile.
async function overview() {
  const gen = state.gen;
  await drawOverview(gen);
  if (!shown(gen)) return;
  const live = { due: null, last: Date.now(), dirty: false, fallback: null, dropped: false };
  const redraw = async () => {
    live.due = null;
    if (!shown(gen)) return;
    if (document.hidden) {
      live.dirty = true;
      return;
    }
    live.dirty = false;
    live.last = Date.now();
    try {
      await drawOverview(gen);
    } catch (e) {
      if (shown(gen)) flash(e.message, true);
    }
  };
  const soon = () => {
    if (live.due !== null) return;
    live.due = setTimeout(redraw, Math.max(0, live.last + LIVE_THROTTLE_MS - Date.now()));
  };
  const fallback = () => {
    clearTimeout(live.fallback);
    live.fallback = setTimeout(() => {
      live.fallback = null;
      redraw().then(() => { if (shown(gen) && live.dropped) fallback(); });
    }, FALLBACK_MS);
  };
  const visible = () => { if (!document.hidden && live.dirty) soon(); };
  document.addEventListener("visibilitychange", visible);
  state.leave.push(() => {
    clearTimeout(live.due);
    clearTimeout(live.fallback);
    document.removeEventListener("visibilitychange", visible);
  });
  subscribe("/v1/events", {
    open: () => {
      liveState("open");
      clearTimeout(live.fallback);
      live.fallback = null;
      // Whatever changed while the stream was down is drawn now.
      if (live.dropped) soon();
      live.dropped = false;
    },
    event: (ev) => {
      if (ev.type === "state") soon();
      return false;
    },
    drop: () => {
      liveState("retrying");
      if (!live.dropped) fallback();
      live.dropped = true;
    },
    fail: (e) => {
      liveState("failed");
      if (e.status === 401) signOut("The key was refused: " + e.message);
      else { live.dropped = true; fallback(); }
    },
  });
}

async function drawOverview(gen) {
  const [stats, health] = await Promise.all([
    api("GET", "/v1/stats"),
    // With the key, health is checked now (an anonymous caller gets a result up to 5 s old).
    (counted("GET", "/health"), fetch("/health", { headers: { authorization: bearer() } }))
      .then((r) => r.json()).catch(() => null),
  ]);
  if (!shown(gen)) return;
  const byState = Object.fromEntries(STATES.map((s) => [s, 0]));
  const types = {};
  for (const row of stats.jobs) {
    byState[row.state] = (byState[row.state] || 0) + row.count;
    types[row.type] = types[row.type] || Object.fromEntries(STATES.map((s) => [s, 0]));
    types[row.type][row.state] = row.count;
  }
  const tiles = el("div", { class: "tiles", id: "tiles" },
    STATES.map((s) => el("div", { class: "tile", "data-state": s },
      el("div", { class: "n" }, byState[s].toLocaleString("en")), el("div", { class: "l" }, s))));
  const typeTable = el("table", { id: "by-type" },
    el("thead", {}, el("tr", {}, el("th", {}, "type"), STATES.map((s) => el("th", {}, s)))),
    el("tbody", {}, Object.keys(types).sort().map((t) =>
      el("tr", { "data-type": t }, el("td", { class: "mono" }, t),
        STATES.map((s) => el("td", {}, el("a", { href: `#/jobs?type=${encodeURIComponent(t)}&state=${s}` }, String(types[t][s]))))))));
  const last = stats.minutes.slice(-60);
  const hour = last.reduce((a, p) => ({ completed: a.completed + p.completed, failed: a.failed + p.failed, dead: a.dead + p.dead }),
    { completed: 0, failed: 0, dead: 0 });
  const rate = hour.completed + hour.failed ? ((100 * hour.failed) / (hour.completed + hour.failed)).toFixed(1) : "0.0";
  const oldest = stats.oldest_queued_at ? `${ago((Date.parse(stats.at) - Date.parse(stats.oldest_queued_at)) / 1000).replace(" ago", "")} old` : "none";
  const consumers = stats.consumers.list;
  const running = consumers.filter((c) => c.running).length;
  const checks = (health && health.checks) || {};
  const periodic = (c) => !c ? "unknown" : c.state === "pending" ? "not due yet" : c.age_seconds === null ? "never (overdue)" : ago(c.age_seconds);
  replace(
    el("h1", {}, "Overview"),
    tiles,
    el("div", { class: "grid" },
      el("div", { class: "card" }, el("h2", {}, `Throughput, last hour: ${hour.completed.toLocaleString("en")} completed`),
        el("div", { class: "legend" }, el("span", { class: "c" }, "completed"), el("span", { class: "f" }, "failed attempts")),
        chart(last, "throughput")),
      el("div", { class: "card" }, el("h2", {}, `Failure rate, last hour: ${rate}% of attempts (${hour.dead} dead)`),
        chart(last, "rate"))),
    el("div", { class: "grid" },
      el("div", { class: "card", id: "status" }, el("h2", {}, "Status"),
        el("dl", { class: "kv" },
          el("dt", {}, "health"), el("dd", { class: health && health.status === "healthy" ? "ok" : "warn" }, health ? health.status : "unknown"),
          el("dt", {}, "oldest queued job"), el("dd", { id: "oldest" }, oldest),
          el("dt", {}, "native consumers"), el("dd", { id: "consumers", class: running ? "ok" : "warn" },
            stats.consumers.ok ? `${running} running of ${consumers.length} known` : "Upstash unreachable"),
          el("dt", {}, "latest backup"), el("dd", {}, periodic(checks.backup)),
          el("dt", {}, "latest sweep"), el("dd", {}, periodic(checks.sweep)),
          el("dt", {}, "shards"), el("dd", {}, `${stats.shards.answered} of ${stats.shards.of} answered`),
          el("dt", {}, "updated"), el("dd", { class: "muted" }, when(stats.at)))),
      el("div", { class: "card" }, el("h2", {}, "Consumers"),
        consumers.length ? el("table", { id: "consumer-list" }, el("thead", {}, el("tr", {}, ["name", "running jobs", "types", "last seen"].map((h) => el("th", {}, h)))),
          el("tbody", {}, consumers.map((c) => el("tr", {}, el("td", { class: "mono" }, c.name), el("td", {}, `${c.in_flight} of ${c.concurrency}`),
            el("td", { class: "mono" }, c.types.join(", ")), el("td", { class: c.running ? "ok" : "warn" }, c.running ? ago(c.seen_seconds_ago) : `stopped (${ago(c.seen_seconds_ago)})`)))))
          : el("p", { class: "muted" }, "No native consumer has announced itself."))),
    el("div", { class: "card" }, el("h2", {}, "Jobs by type"), typeTable),
  );
}

// ---------- jobs ----------

const FILTERS = ["state", "type", "tag", "from", "to", "id_prefix", "q"];

function filterForm(params, view, fields) {
  const input = (name, label, extra) => el("label", {}, label, el("input", { name, value: params.get(name) || "", ...extra }));
  const local = (v) => (v ? new Date(v).toISOString().slice(0, 16) : "");
  const form = el("form", { class: "filters card", id: "filters" },
    fields.includes("state") && el("label", {}, "state",
      el("select", { name: "state" }, el("option", { value: "" }, "any"),
        STATES.map((s) => el("option", { value: s, selected: params.get("state") === s }, s)))),
    input("type", "type", { size: 12 }),
    input("tag", "tag", { size: 12 }),
    el("label", {}, "changed from", el("input", { name: "from", type: "datetime-local", value: local(params.get("from")) })),
    el("label", {}, "to", el("input", { name: "to", type: "datetime-local", value: local(params.get("to")) })),
    fields.includes("id_prefix") && input("id_prefix", "id starts with", { size: 14, placeholder: "j0a…" }),
    fields.includes("q") && input("q", "payload or metadata contains", { size: 20 }),
    el("button", { type: "submit" }, "Filter"),
    el("button", { type: "button", class: "plain", on: { click: () => go(view) } }, "Clear"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (!v) continue;
      p.set(k, k === "from" || k === "to" ? new Date(v).toISOString() : v);
    }
    go(view, p);
  });
  return form;
}

function query(params, extra) {
  const q = new URLSearchParams();
  for (const k of FILTERS) if (params.get(k)) q.set(k, params.get(k));
  for (const [k, v] of Object.entries(extra)) if (v) q.set(k, v);
  return q.toString();
}

function pager(params, view, next) {
  const back = params.get("back") ? params.get("back").split(",") : [];
  const page = back.length + 1;
  const move = (cursor, stack) => {
    const p = new URLSearchParams(params);
    if (cursor) p.set("cursor", cursor); else p.delete("cursor");
    if (stack.length) p.set("back", stack.join(",")); else p.delete("back");
    go(view, p);
  };
  return el("div", { class: "pager" },
    el("button", { class: "plain", id: "prev", disabled: page === 1, on: { click: () => move(back[back.length - 1] === "-" ? "" : back[back.length - 1], back.slice(0, -1)) } }, "← Newer"),
    el("span", { class: "muted" }, `page ${page}`),
    el("button", { class: "plain", id: "next", disabled: !next, on: { click: () => move(next, [...back, params.get("cursor") || "-"]) } }, "Older →"));
}

function jobRow(j, extra) {
  return el("tr", { "data-id": j.id, "data-state": j.state },
    el("td", { class: "mono" }, el("a", { href: `#/job/${encodeURIComponent(j.id)}` }, j.id)),
    el("td", { class: "mono" }, j.type),
    el("td", {}, stateBadge(j.state)),
    el("td", {}, String(j.attempt)),
    el("td", {}, when(j.created_at)),
    el("td", {}, when(j.updated_at)),
    el("td", {}, (j.tags || []).join(", ")),
    el("td", { class: "err", title: j.last_error || "" }, j.last_error || ""),
    extra ? el("td", {}, extra(j)) : null);
}

function jobTable(list, extra) {
  const head = ["id", "type", "state", "attempt", "created", "last change", "tags", "last error"];
  if (extra) head.push("");
  return el("table", { id: "job-list" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el("tbody", {}, list.map((j) => jobRow(j, extra))));
}

async function jobs(r) {
  const page = await api("GET", `/v1/jobs?${query(r.params, { limit: PAGE, cursor: r.params.get("cursor") })}`);
  replace(
    el("h1", {}, "Jobs"),
    filterForm(r.params, "jobs", FILTERS),
    el("div", { class: "card" },
      page.jobs.length ? jobTable(page.jobs) : el("p", { class: "muted", id: "empty" }, "No job matches."),
      pager(r.params, "jobs", page.next_cursor)));
}

// A job's page follows the job's stream while it is shown: a state event updates the state
// and the progress bar at once and reads the job again (its steps, attempts, metadata and
// result; one read at a time, only when the event is newer than what is drawn); chunks are
// appended to their stream's text, which starts over when a new attempt's chunks arrive.
// The stream ends after the final state.
async function job(r) {
  const gen = state.gen;
  const path = `/v1/jobs/${encodeURIComponent(r.arg || "")}`;
  const j = await api("GET", path);
  if (!shown(gen)) return;
  const page = { job: j, attempt: null, reading: false, again: false };
  const streams = el("div", { id: "streams" }, el("p", { class: "muted", id: "no-stream" }, "Nothing streamed."));
  replace(
    el("div", { id: "job-head" }),
    el("div", { class: "card", id: "live" },
      el("h2", {}, "Progress and streams"),
      el("div", { id: "progress", class: "progress" },
        el("progress", { id: "progress-bar", max: 100, value: 0 }), el("span", { id: "progress-text" }, "")),
      streams,
      el("p", { class: "muted", id: "live-status" }, "Connecting to the job's stream…")),
    el("div", { id: "job-body" }));
  drawJob(page.job);
  drawProgress(page.job.progress, page.job.state);
  const status = (text, live) => {
    $("#live-status").textContent = text;
    liveState(live);
  };
  const reread = async () => {
    if (page.reading) {
      page.again = true;
      return;
    }
    page.reading = true;
    try {
      do {
        page.again = false;
        const fresh = await api("GET", path);
        if (!shown(gen)) return;
        page.job = fresh;
        drawJob(fresh);
      } while (page.again);
    } catch (e) {
      if (shown(gen)) flash(e.message, true);
    } finally {
      page.reading = false;
    }
  };
  const chunk = (c) => {
    if (page.attempt !== null && c.attempt !== page.attempt) {
      // A retry's chunks: the failed attempt's text is not the answer any more.
      streams.replaceChildren(el("p", { class: "muted" }, `Attempt ${c.attempt} started over; the text of earlier attempts is not shown.`));
    }
    page.attempt = c.attempt;
    const none = $("#no-stream");
    if (none) none.remove();
    let pre = [...streams.querySelectorAll("pre[data-stream]")].find((p) => p.dataset.stream === c.stream);
    if (!pre) {
      pre = el("pre", { class: "mono stream", "data-stream": c.stream, "data-attempt": String(c.attempt) });
      streams.append(el("h3", {}, `${c.stream} (attempt ${c.attempt})`), pre);
    }
    pre.append(document.createTextNode(c.data));
    pre.scrollTop = pre.scrollHeight;
  };
  subscribe(`${path}/events`, {
    open: () => status(FINAL.includes(page.job.state) ? "The job is final; reading what it streamed." : "Following the job as it runs.", "open"),
    event: (ev) => {
      if (!shown(gen)) return true;
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch (e) {
        return false;
      }
      if (ev.type === "chunk") {
        chunk(data);
        return false;
      }
      if (ev.type !== "state") return false;
      const badge = $("#job-state");
      if (badge) badge.replaceWith(stateBadge(data.state, "job-state"));
      drawProgress(data.progress, data.state);
      if (data.updated_at !== page.job.updated_at || data.state !== page.job.state) reread();
      const final = FINAL.includes(data.state);
      if (final) status(`The job is ${data.state}.`, "ended");
      return final;
    },
    drop: () => status("The stream was lost; reconnecting…", "retrying"),
    fail: (e) => status(`The job's stream was refused: ${e.message}`, "failed"),
  });
}

// The progress bar and its text ("40% · reading page 2"); hidden until the job reports any.
function drawProgress(progress, jobState) {
  const box = $("#progress");
  if (!box) return;
  const p = progress || null;
  box.hidden = !p;
  if (!p) return;
  const pct = typeof p.percent === "number" ? Math.max(0, Math.min(100, p.percent)) : null;
  const bar = $("#progress-bar");
  if (pct === null) bar.removeAttribute("value");
  else bar.value = pct;
  const parts = [];
  if (pct !== null) parts.push(`${Math.round(pct)}%`);
  if (p.message) parts.push(p.message);
  $("#progress-text").textContent = parts.join(" · ") + (FINAL.includes(jobState) ? ` (${jobState})` : "");
}

// Everything of a job's page but its progress and streams, from the job as read.
function drawJob(j) {
  const again = () => render();
  const cancel = el("button", { id: "cancel", class: "danger", on: { click: async () => {
    if (await act(() => `Job ${j.id} cancelled (or marked to cancel while it runs).`, () => api("POST", `/v1/jobs/${j.id}/cancel`))) again();
  } } }, "Cancel");
  const retry = el("button", { id: "retry", on: { click: async () => {
    if (await act(() => `Job ${j.id} queued again.`, () => api("POST", `/v1/jobs/${j.id}/retry`))) again();
  } } }, "Retry");
  const canCancel = ["queued", "scheduled", "active"].includes(j.state) && !j.cancel_requested;
  const attempts = j.attempts || [];
  const steps = j.steps || [];
  const free = j.free_attempts || 0;
  $("#job-head").replaceChildren(
    el("h1", {}, "Job ", el("span", { class: "mono", id: "job-id" }, j.id), " ", stateBadge(j.state, "job-state")),
    el("div", { class: "actions" }, canCancel && cancel, j.state === "dead" && retry,
      el("a", { href: "#/jobs" }, "all jobs")));
  $("#job-body").replaceChildren(
    el("div", { class: "grid" },
      el("div", { class: "card", id: "job" }, el("h2", {}, "Job"),
        el("dl", { class: "kv" },
          [["type", j.type], ["lane", j.lane], ["state", j.state],
            ["attempt", `${j.attempt} (${j.attempt - j.series_base - free} of ${j.max_attempts} in this series${free ? `, and ${free} free` : ""})`],
            ...(steps.length || free ? [["free attempts", `${free} (ended by a sleep, a wait or a step retry)`]] : []),
            ["timeout", `${j.timeout_ms / 1000} s`], ["idempotency key", j.idempotency_key || "—"], ["tags", (j.tags || []).join(", ") || "—"],
            ["created", when(j.created_at)], ["runs at", when(j.run_at)], ["started", when(j.started_at) || "—"],
            ["finished", when(j.finished_at) || "—"], ["last change", when(j.updated_at)], ["last error", j.last_error || "—"],
            ["priority", j.flow ? String(j.flow.priority) : "—"], ["waiting for", j.waiting_for || "—"],
            // The job's trace id (#32), for the tracing backend: traceparent's second field.
            ["trace id", el("span", { id: "trace-id", class: "mono" }, j.trace ? j.trace.traceparent.split("-")[1] : "—")],
            // A child job links to the run (and step) that started it.
            ...(j.parent ? [["parent run", el("span", {}, el("a", { id: "parent", class: "mono", href: `#/job/${encodeURIComponent(j.parent.job)}` }, j.parent.job), ` (step ${j.parent.step})`)]] : [])]
            .map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))),
      el("div", { class: "card" }, el("h2", {}, "Payload"), pretty(j.payload),
        el("h2", {}, "Result"), pretty(j.result, "result"), el("h2", {}, "Metadata"), pretty(j.metadata, "metadata"))),
    ...(steps.length ? [el("div", { class: "card" }, el("h2", {}, `Steps (${steps.length})`), timeline(steps))] : []),
    // An invoke's or a fan-out's children, each a link to its own page.
    ...(steps.some((st) => (st.children || []).length) ? [el("div", { class: "card" }, el("h2", {}, "Children"),
      el("table", { id: "children" },
        el("thead", {}, el("tr", {}, ["step", "child job"].map((h) => el("th", {}, h)))),
        el("tbody", {}, steps.flatMap((st) => (st.children || []).map((c) => el("tr", {},
          el("td", { class: "mono" }, st.name),
          el("td", { class: "mono" }, el("a", { href: `#/job/${encodeURIComponent(c)}` }, c))))))))] : []),
    el("div", { class: "card" }, el("h2", {}, `Attempts (${attempts.length})`),
      attempts.length ? el("table", { id: "attempts" },
        el("thead", {}, el("tr", {}, ["attempt", "started", "ended", "duration", "outcome", "error"].map((h) => el("th", {}, h)))),
        el("tbody", {}, attempts.map((a) => el("tr", {}, el("td", {}, String(a.attempt)), el("td", {}, when(a.started_at)),
          el("td", {}, when(a.ended_at)), el("td", {}, `${(a.duration_ms / 1000).toFixed(3)} s`),
          el("td", {}, el("span", { class: `state ${a.outcome === "completed" ? "completed" : a.outcome === "suspended" ? "scheduled" : "dead"}` }, a.outcome)),
          el("td", { class: "err", title: a.error || "" }, a.error || "")))))
        : el("p", { class: "muted" }, j.state === "active" ? "The first attempt is running." : "No attempt has ended yet.")),
  );
}

// A workflow run's steps (#29) as a timeline: a row per step in the order the handler
// reached them, each with a bar from its start to its end (or to when it sleeps, waits or
// retries until; an open wait runs to now) on one time axis for the whole run.
function timeline(steps) {
  const t = (ts) => (ts ? Date.parse(ts) : NaN);
  const now = Date.now();
  const end = (s) => t(s.ended_at) || t(s.until) || now;
  const from = Math.min(...steps.map((s) => t(s.started_at)));
  const to = Math.max(from + 1, ...steps.map(end));
  const pct = (ms) => (100 * (ms - from)) / (to - from);
  const bar = (s) => {
    const x = Math.max(0, Math.min(99.5, pct(t(s.started_at))));
    const svg = el("svg", { class: "span", viewBox: "0 0 100 10", preserveAspectRatio: "none", role: "img" });
    svg.append(el("rect", { class: `span-${s.state}`, x, y: 1, width: Math.max(0.5, pct(end(s)) - x), height: 8 },
      el("title", {}, `${s.name}: ${when(s.started_at)} → ${when(s.ended_at || s.until) || "now"}`)));
    return svg;
  };
  const span = (s) => s.ended_at ? `${when(s.started_at)} → ${when(s.ended_at)}`
    : s.until ? `${when(s.started_at)} → until ${when(s.until)}` : `${when(s.started_at)} →`;
  const outcome = (s) => s.error ? s.error
    : s.result_bytes !== undefined ? `${s.result_bytes} bytes`
    : s.event ? `waits for ${s.event}` : "";
  return el("table", { id: "steps" },
    el("thead", {}, el("tr", {}, ["#", "step", "kind", "state", "started → ended / until", "attempts", "result / error", "timeline"]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, steps.map((s, i) => el("tr", { "data-name": s.name, "data-state": s.state },
      el("td", {}, String(i)), el("td", { class: "mono" }, s.name), el("td", {}, s.kind),
      el("td", {}, el("span", { class: `state step-${s.state}` }, s.state.replace("_", " "))),
      el("td", {}, span(s)), el("td", {}, String(s.attempts)),
      el("td", { class: s.error ? "err" : null, title: s.error || null }, outcome(s)),
      el("td", { class: "timeline" }, bar(s))))));
}

// ---------- dead letters ----------

async function countDead(params) {
  let n = 0, cursor = "", pages = 0;
  do {
    const page = await api("GET", `/v1/dead?${query(params, { limit: 100, cursor })}`);
    n += page.jobs.length;
    cursor = page.next_cursor;
    pages += 1;
  } while (cursor && pages < 10);
  return { n, more: Boolean(cursor) };
}

async function dead(r) {
  const params = r.params;
  const page = await api("GET", `/v1/dead?${query(params, { limit: PAGE, cursor: params.get("cursor") })}`);
  const replayOne = (j) => el("button", { class: "replay", "data-id": j.id, on: { click: async () => {
    if (await act(() => `Job ${j.id} replayed.`, () => api("POST", `/v1/jobs/${j.id}/retry`))) render();
  } } }, "Replay");
  const bulk = state.admin && page.jobs.length ? el("button", { id: "replay-all", class: "danger", on: { click: async () => {
    const { n, more } = await countDead(params);
    const what = (params.get("type") ? ` of type ${params.get("type")}` : "") + (params.get("tag") ? ` tagged ${params.get("tag")}` : "");
    const changed = params.get("from") || params.get("to") ? " in the chosen time range" : "";
    if (!(await confirmBox(`Replay ${more ? "more than " : ""}${n} dead job${n === 1 ? "" : "s"}${what}${changed}? Each starts a new series of attempts.`))) return;
    const body = { type: params.get("type") || undefined, tag: params.get("tag") || undefined, from: params.get("from") || undefined, to: params.get("to") || undefined, limit: Math.min(1000, Math.max(1, n)) };
    if (await act((out) => `${out.replayed} dead job${out.replayed === 1 ? "" : "s"} replayed.`, () => api("POST", "/v1/dead/replay", body))) render();
  } } }, "Replay all matching…") : null;
  replace(
    el("h1", {}, "Dead letters"),
    filterForm(params, "dead", ["type", "tag", "from", "to"]),
    el("div", { class: "card" },
      el("div", { class: "actions" }, bulk, !state.admin && el("span", { class: "muted" }, "Bulk replay needs an admin key.")),
      page.jobs.length ? jobTable(page.jobs, replayOne) : el("p", { class: "muted", id: "empty" }, "No dead job."),
      pager(params, "dead", page.next_cursor)));
}

// ---------- schedules ----------

async function schedules(r) {
  const page = await api("GET", `/v1/schedules?${query(new URLSearchParams(), { limit: PAGE, cursor: r.params.get("cursor") })}`);
  const action = (s, verb, label, done) => el("button", { class: `plain ${verb}`, "data-name": s.name, on: { click: async () => {
    if (await act(done, () => api("POST", `/v1/schedules/${encodeURIComponent(s.name)}/${verb}`))) render();
  } } }, label);
  const actions = (s) => state.admin ? [
    s.paused ? action(s, "resume", "Resume", () => `Schedule ${s.name} resumed.`) : action(s, "pause", "Pause", () => `Schedule ${s.name} paused.`),
    action(s, "trigger", "Run now", (out) => `Schedule ${s.name} ran: job ${out.job.id}.`),
  ] : [];
  const status = (s) => s.paused ? el("span", { class: "state cancelled" }, "paused")
    : s.overdue ? el("span", { class: "state dead" }, "overdue") : el("span", { class: "state completed" }, "active");
  const last = (s) => {
    const run = (s.runs || [])[0];
    return run ? [el("a", { href: `#/job/${encodeURIComponent(run.job_id)}` }, when(run.tick)), " ", stateBadge(run.state)] : "—";
  };
  replace(
    el("h1", {}, "Schedules"),
    el("div", { class: "card" },
      !state.admin && el("p", { class: "muted" }, "Pausing, resuming and running a schedule need an admin key."),
      page.schedules.length ? el("table", { id: "schedule-list" },
        el("thead", {}, el("tr", {}, ["name", "cron", "time zone", "state", "next run", "last run", "runs", "skips", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, page.schedules.map((s) => el("tr", { "data-name": s.name, "data-paused": String(s.paused) },
          el("td", { class: "mono" }, el("a", { href: `#/jobs?tag=${encodeURIComponent(`schedule:${s.name}`)}`, title: "the jobs it made" }, s.name)),
          el("td", { class: "mono" }, s.cron), el("td", {}, s.timezone), el("td", {}, status(s)),
          el("td", {}, s.paused ? "—" : when(s.next_at) || "none (ended)"), el("td", {}, last(s)),
          el("td", {}, String(s.runs_total)), el("td", {}, String(s.skips_total)),
          el("td", { class: "row-actions" }, actions(s))))))
        : el("p", { class: "muted", id: "empty" }, "No schedule yet: create one with POST /v1/schedules or `edgejobs schedules create`."),
      pager(r.params, "schedules", page.next_cursor)));
}

// ---------- flow control ----------

// The busiest flow keys (most waiting jobs first) and one key's state; an admin pauses and
// resumes keys (and a paused type) from here.
async function flow(r) {
  const key = r.params.get("key") || "";
  const tenant = r.params.get("tenant") || "";
  const [busiest, one] = await Promise.all([
    api("GET", "/v1/flow/busiest?n=20"),
    key ? api("GET", `/v1/flow?${new URLSearchParams(tenant ? { key, tenant } : { key })}`) : null,
  ]);
  const toggle = (target, pause, what) => el("button", { class: `plain ${pause ? "pause" : "resume"}`, on: { click: async () => {
    const done = () => `${what} ${pause ? "paused: nothing new starts" : "resumed"}.`;
    if (await act(done, () => api("POST", `/v1/admin/flow/${pause ? "pause" : "resume"}`, target))) render();
  } } }, pause ? "Pause" : "Resume");
  const isType = (k) => k.kind === "paused_type";
  const actions = (k) => state.admin ? toggle(isType(k) ? { type: k.key } : { key: k.key, tenant: k.tenant },
    !k.kind.startsWith("paused"), isType(k) ? `Type ${k.key}` : `Key ${k.key}`) : null;
  const form = el("form", { class: "filters card", id: "flow-key" },
    el("label", {}, "key", el("input", { name: "key", value: key, size: 28, spellcheck: false })),
    state.admin && el("label", {}, "tenant", el("input", { name: "tenant", value: tenant, size: 12, placeholder: "default" })),
    el("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) p.set(k, v);
    go("flow", p);
  });
  const card = one && el("div", { class: "card", id: "flow-state", "data-paused": String(one.paused) },
    el("h2", {}, "Key ", el("span", { class: "mono" }, one.key), ` of tenant ${one.tenant}`),
    el("dl", { class: "kv" },
      [["state", one.paused ? "paused" : "open"], ["running", `${one.running} of ${one.limit || "—"}`],
        ["waiting for a slot", one.waiting], ["waiting for the rate", one.rate_waiting],
        ["rate's next start", when(one.rate_next_at) || "—"], ["parked while paused", one.parked]]
        .map(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))])),
    state.admin && el("div", { class: "actions" }, toggle({ key: one.key, tenant: one.tenant }, !one.paused, `Key ${one.key}`)));
  replace(
    el("h1", {}, "Flow control"),
    form,
    card,
    el("div", { class: "card" }, el("h2", {}, "Busiest keys"),
      !state.admin && el("p", { class: "muted" }, "Pausing and resuming need an admin key."),
      busiest.keys.length ? el("table", { id: "flow-list" },
        el("thead", {}, el("tr", {}, ["kind", "tenant", "key", "running", "limit", "waiting", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, busiest.keys.map((k) => el("tr", { "data-key": k.key, "data-kind": k.kind, "data-tenant": k.tenant },
          el("td", {}, k.kind), el("td", {}, k.tenant || "—"),
          el("td", { class: "mono" }, isType(k) ? k.key : el("a", { href: `#/flow?${new URLSearchParams({ key: k.key, tenant: k.tenant })}` }, k.key)),
          el("td", {}, String(k.running)), el("td", {}, k.limit ? String(k.limit) : "—"), el("td", {}, String(k.waiting)),
          el("td", { class: "row-actions" }, actions(k))))))
        : el("p", { class: "muted", id: "empty" }, "No job waits for a flow key.")));
}

// ---------- backups ----------

async function backups() {
  if (!state.admin) {
    replace(el("h1", {}, "Backups"), el("p", { class: "muted" }, "Backups need an admin key."));
    return;
  }
  const list = await api("GET", "/v1/admin/backups");
  const verify = (b) => el("button", { class: "plain verify", "data-id": b.id, on: { click: async (ev) => {
    const cell = ev.target.closest("tr").querySelector(".verdict");
    cell.textContent = "verifying…";
    const out = await act((v) => v.valid ? `Backup ${b.id} is valid (${v.rows} rows).` : `Backup ${b.id} is damaged: ${v.problems.join("; ")}`,
      () => api("POST", `/v1/admin/backups/${encodeURIComponent(b.id)}/verify`));
    cell.textContent = out ? (out.valid ? "valid" : "damaged") : "error";
    cell.className = `verdict ${out && out.valid ? "ok" : "bad"}`;
  } } }, "Verify");
  const start = el("button", { id: "backup-start", on: { click: async (ev) => {
    ev.target.disabled = true;
    if (await act((m) => `Backup ${m.id} written: ${m.total_rows} rows.`, () => api("POST", "/v1/admin/backups"))) render();
    ev.target.disabled = false;
  } } }, "Start a backup now");
  replace(
    el("h1", {}, "Backups"),
    el("div", { class: "actions" }, start),
    el("div", { class: "card" },
      list.backups.length ? el("table", { id: "backup-list" },
        el("thead", {}, el("tr", {}, ["id", "created", "rows", "bytes", "complete", "", "verify"].map((h) => el("th", {}, h)))),
        el("tbody", {}, list.backups.map((b) => el("tr", { "data-id": b.id }, el("td", { class: "mono" }, b.id), el("td", {}, when(b.created_at)),
          el("td", {}, b.rows === null ? "—" : String(b.rows)), el("td", {}, b.bytes === null ? "—" : b.bytes.toLocaleString("en")),
          el("td", { class: b.valid ? "ok" : "bad" }, b.valid ? "yes" : "no (no manifest)"), el("td", { class: "verdict" }, ""), el("td", {}, verify(b))))))
        : el("p", { class: "muted", id: "empty" }, "No backup yet.")),
  );
}

// ---------- start ----------

async function start() {
  state.login = $("#login");
  $("#logout").addEventListener("click", () => signOut());
  $("#login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (await signIn($("#key").value.trim())) await render();
  });
  window.addEventListener("hashchange", () => { if (sessionStorage.getItem(KEY)) render(); });
  const saved = sessionStorage.getItem(KEY);
  if (saved && (await signIn(saved))) {
    await render();
  } else {
    document.body.dataset.view = "login";
  }
}

start();
