// The pagerhook console: a thin client over the admin API on this same origin.
// The token lives in this tab's sessionStorage and goes out as a Bearer header (no cookies,
// so no CSRF). Every value from the server reaches the page through textContent, never HTML.

const TOKEN_KEY = "pagerhook.admin_token";
const REFRESH_MS = 1500; // the issue asks for "within 2 seconds"
const PAGE = 50;

const $ = (sel) => document.querySelector(sel);

/** Builds an element: h("td", {class: "x"}, "text", child…). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// ---- API -------------------------------------------------------------------------------

class Refused extends Error {}

async function api(path, { method = "GET", body, token = sessionStorage.getItem(TOKEN_KEY) } = {}) {
  const headers = { Authorization: `Bearer ${token ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit", cache: "no-store" });
  let data = null;
  try { data = await res.json(); } catch { /* empty or not JSON */ }
  if (res.status === 401) throw new Refused("The admin token was refused (401). Check it against server.admin_token.");
  if (res.status === 403) throw new Refused(data?.error ?? "The admin API is disabled on this server (set server.admin_token).");
  if (!res.ok) {
    const err = new Error(data?.error ?? `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

/** A refused token ends the session; anything else is shown where it happened. */
function failed(e, where) {
  if (e instanceof Refused) {
    signOut(e.message);
    return;
  }
  where.textContent = e.message || String(e);
  where.hidden = false;
}

// ---- formatting -------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

function clock(ms) {
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return today ? time : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "none";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function when(ms) {
  return h("span", { class: "when", title: new Date(ms).toISOString() }, clock(ms), h("small", { "data-ms": ms }, ago(ms)));
}

/** A dead letter kind's label and what it means. */
const DEAD_KINDS = {
  mapping_failed: ["mapping failed", "a rule failed on this payload: fix the mapping, then replay"],
  items_failed: ["items failed", "some items of this payload failed to map (the others were sent): replay sends these alone"],
  too_many_events: ["too many events", "over max_events_per_request or max_event_bytes_per_request: raise it, then replay"],
  unmatched: ["unmatched", "no rule matched: add one, then replay"],
};

/** A tag on pagerhook's own pages (about what it could not relay), which no webhook sent. */
const ownTag = (r) => r.own ? h("span", { class: "badge own", title: "pagerhook's own page about what it could not relay" }, "pagerhook") : null;

const badge = (state) => h("span", { class: `badge state-${state}` }, state);

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

function eventLabel(row) {
  return row.kind === "change" ? h("span", { class: "kind" }, "change") : h("span", { class: "kind" }, "alert ", h("b", {}, row.action ?? ""));
}

// ---- views ------------------------------------------------------------------------------

const views = ["signin", "deliveries", "detail", "incidents", "dead", "playground"];

function show(view) {
  for (const v of views) $(`#${v}`).hidden = v !== view;
  const signedIn = view !== "signin";
  $("#nav").hidden = !signedIn;
  $("#sign-out").hidden = !signedIn;
  const active = view === "detail" ? "deliveries" : view;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopRefresh();
  for (const tb of document.querySelectorAll("tbody")) tb.replaceChildren();
  $("#stats").replaceChildren();
  $("#detail").replaceChildren();
  $("#render-out").replaceChildren(h("p", { class: "empty" }, "Rendered events show here."));
  const err = $("#signin-error");
  err.textContent = message ?? "";
  err.hidden = !message;
  show("signin");
  $("#token").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const token = $("#token").value.trim();
  const err = $("#signin-error");
  err.hidden = true;
  try {
    await api("/admin/stats", { token });
  } catch (e) {
    err.textContent = e instanceof Refused ? e.message : `Could not reach pagerhook: ${e.message}`;
    err.hidden = false;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#token").value = "";
  if (!location.hash || location.hash === "#/") location.hash = "#/deliveries";
  route();
}

function route() {
  stopRefresh();
  if (!sessionStorage.getItem(TOKEN_KEY)) return signOut();
  const [, view, id] = location.hash.split("/");
  if (view === "deliveries" && id) return openDetail(id);
  if (view === "incidents") return openIncidents();
  if (view === "dead") return openDead();
  if (view === "playground") return openPlayground();
  return openDeliveries();
}

// ---- deliveries -------------------------------------------------------------------------

const list = { search: "", before: null, lastId: null, last: "" };
let timer = null;

function stopRefresh() {
  clearTimeout(timer);
  timer = null;
}

function openDeliveries() {
  show("deliveries");
  refreshDeliveries();
}

async function refreshDeliveries() {
  stopRefresh();
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (list.search) params.set("q", list.search);
  if (list.before !== null) params.set("before", String(list.before));
  const err = $("#deliveries-error");
  try {
    const [rows, stats] = await Promise.all([api(`/admin/deliveries?${params}`), api("/admin/stats")]);
    if ($("#deliveries").hidden) return;
    err.hidden = true;
    renderStats(stats);
    renderBacklog(stats.backlog ?? []);
    renderDeliveries(rows);
    $("#live").textContent = list.before === null ? `Live · updated ${clock(Date.now())}` : "Older page · not refreshing";
  } catch (e) {
    if (!(e instanceof Refused)) $("#live").textContent = "Not updating";
    failed(e, err);
    if (e instanceof Refused) return;
  }
  // Only the first page refreshes itself: older pages stay put while they are read.
  if (!$("#deliveries").hidden && list.before === null) timer = setTimeout(refreshDeliveries, REFRESH_MS);
}

function stat(label, value, tone, hint) {
  return h("div", { class: `stat ${tone ?? ""}`, title: hint ?? "" }, h("span", { class: "stat-value" }, value), h("span", { class: "stat-label" }, label));
}

function renderStats(s) {
  const out = s.attempts_last_hour ?? {};
  const n = (k) => out[k] ?? 0;
  const oldest = s.oldest_pending_seconds;
  $("#stats").replaceChildren(
    stat("queued", s.queue_depth, s.queue_depth > 0 ? "warn" : "ok", "pagerhook_queue_depth"),
    stat("oldest pending", duration(oldest), oldest > 300 ? "bad" : oldest > 30 ? "warn" : "ok", "pagerhook_queue_oldest_pending_seconds"),
    stat("delivered, last hour", n("delivered"), "ok", 'delivery_attempts_total{outcome="delivered"}'),
    stat("retried, last hour", n("retried"), n("retried") > 0 ? "warn" : "", 'delivery_attempts_total{outcome="retried"}'),
    stat("dead-lettered, last hour", n("dead_lettered"), n("dead_lettered") > 0 ? "bad" : "", 'delivery_attempts_total{outcome="dead_lettered"}'),
    // A dry run sends nothing: its count shows, or "0 delivered" beside a draining queue would
    // look stuck. What waits for its routing key's pace is the backlog table below.
    ...(s.dry_run || n("dry_run") > 0
      ? [stat(s.dry_run ? "dry runs (nothing sent), last hour" : "dry runs, last hour", n("dry_run"), s.dry_run ? "warn" : "", 'delivery_attempts_total{outcome="dry_run"}')]
      : []),
  );
}

// Each routing key's backlog, by fingerprint: a storm shows as a key whose drain time is long.
function renderBacklog(keys) {
  $("#backlog").hidden = keys.length === 0;
  $("#backlog-table tbody").replaceChildren(...keys.map((k) => {
    const drain = k.drain_seconds;
    const tone = drain === null ? "" : drain > 600 ? "bad" : drain > 60 ? "warn" : "";
    return h("tr", {},
      h("td", { "data-label": "Routing key", class: "mono" }, k.routing_key),
      h("td", { "data-label": "Waiting", class: "num" }, k.pending),
      h("td", { "data-label": "Oldest" }, duration(k.oldest_pending_seconds)),
      h("td", { "data-label": "Drains in", class: `drain ${tone}` }, drain === null ? "unpaced" : duration(drain)),
      h("td", { "data-label": "From", class: "clip" }, k.sources.map(([source, n]) => `${source} ${n}`).join(", ")),
    );
  }));
}

function renderDeliveries(rows) {
  // Unchanged data is not redrawn, so a refresh never moves what is being read or clicked.
  const key = JSON.stringify(rows);
  if (key === list.last) {
    for (const el of document.querySelectorAll("#deliveries-table small[data-ms]")) el.textContent = ago(Number(el.dataset.ms));
    return;
  }
  list.last = key;
  const body = $("#deliveries-table tbody");
  body.replaceChildren(...rows.map((r) => {
    const href = `#/deliveries/${r.id}`;
    return h("tr", { class: `state-row-${r.state}`, "data-id": r.id, onclick: (e) => { if (!e.target.closest("a")) location.hash = href; } },
      h("td", { "data-label": "Accepted" }, when(r.created_at)),
      h("td", { "data-label": "Source" }, r.source, ownTag(r)),
      h("td", { "data-label": "Event" }, eventLabel(r)),
      h("td", { "data-label": "Summary", class: "clip summary", title: r.summary ?? "" }, r.summary ?? h("span", { class: "muted" }, "—")),
      h("td", { "data-label": "dedup_key", class: "key" }, h("a", { href, title: `event ${r.id}` }, r.dedup_key ?? h("span", { class: "muted" }, `none · event ${r.id}`))),
      h("td", { "data-label": "Routing key", class: "mono" }, r.routing_key ?? ""),
      h("td", { "data-label": "State" }, badge(r.state), r.last_error && r.state !== "delivered" ? h("div", { class: "small muted clip", title: r.last_error }, r.last_error) : null),
      h("td", { "data-label": "Attempts", class: "num" }, r.attempts),
    );
  }));
  const empty = $("#deliveries-empty");
  empty.hidden = rows.length > 0;
  empty.textContent = list.search ? `Nothing matches "${list.search}". Search takes part of a summary or dedup_key, a source name or a state.` : "No events yet. Accepted webhooks show up here as they arrive.";
  $("#older").hidden = rows.length < PAGE;
  $("#newest").hidden = list.before === null;
  list.lastId = rows.length ? rows[rows.length - 1].id : null;
}

function search(ev) {
  ev.preventDefault();
  list.search = $("#search").value.trim();
  list.before = null;
  list.last = "";
  if (location.hash !== "#/deliveries") location.hash = "#/deliveries";
  else refreshDeliveries();
}

// ---- one delivery -----------------------------------------------------------------------

function section(title, ...content) {
  return h("section", { class: "card" }, h("h2", {}, title), ...content);
}

function pairs(entries) {
  return h("dl", { class: "pairs" }, entries.filter(([, v]) => v !== undefined && v !== null && v !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

async function openDetail(id) {
  show("detail");
  const out = $("#detail");
  out.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  let d;
  try {
    d = await api(`/admin/deliveries/${encodeURIComponent(id)}`);
  } catch (e) {
    const err = h("p", { class: "banner error", role: "alert" });
    out.replaceChildren(h("a", { href: "#/deliveries", class: "back" }, "← Deliveries"), err);
    return failed(e, err);
  }
  out.replaceChildren(
    h("a", { href: "#/deliveries", class: "back" }, "← Deliveries"),
    h("h1", {}, `Event ${d.id} `, badge(d.state)),
    d.event?.payload?.summary ? h("p", { class: "headline" }, d.event.payload.summary) : null,
    section("Summary", pairs([
      ["Accepted", when(d.created_at)],
      ["Source", [d.source, ownTag(d)]],
      ["Event", eventLabel(d)],
      ["dedup_key", h("code", {}, d.dedup_key ?? "none")],
      ["Routing key", h("code", {}, d.routing_key)],
      ["Attempts", String(d.attempts)],
      ["Last error", d.last_error],
      ["Inbound request", h("code", {}, d.inbound_id)],
    ])),
    section("Attempts", attemptsTable(d.attempt_log ?? [])),
    section("Event as sent", h("p", { class: "muted small" }, "The body posted to PagerDuty; the routing key is added at send time and never shown."), h("pre", { class: "json" }, d.event ? JSON.stringify(d.event, null, 2) : "(unreadable)")),
    section("Inbound request",
      headersTable(d.headers ?? {}),
      d.query ? pairs([["Query", h("code", {}, d.query)]]) : null,
      h("h3", {}, "Body"),
      h("pre", { class: "json" }, pretty(d.payload ?? ""))),
  );
}

/** The dedup_key PagerDuty answered with, under whichever name the store gives it. */
function returnedKey(a) {
  return a.pagerduty_dedup_key ?? null;
}

function attemptsTable(log) {
  if (!log.length) return h("p", { class: "empty" }, "Not attempted yet.");
  const withKey = log.some((a) => returnedKey(a));
  return h("div", { class: "table-wrap" }, h("table", { class: "rows" },
    h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "HTTP status"), h("th", {}, "PagerDuty message"), withKey ? h("th", {}, "dedup_key returned") : null)),
    h("tbody", {}, log.map((a) => h("tr", {},
      h("td", { "data-label": "Time" }, when(a.at)),
      h("td", { "data-label": "HTTP status" }, a.status ? h("span", { class: `http http-${String(a.status)[0]}xx` }, a.status) : h("span", { class: "http http-none" }, "no answer")),
      h("td", { "data-label": "PagerDuty message", class: "wrap" }, a.detail ?? ""),
      withKey ? h("td", { "data-label": "dedup_key returned", class: "mono" }, returnedKey(a) ?? "") : null,
    )))));
}

function headersTable(headers) {
  const entries = Object.entries(headers);
  if (!entries.length) return h("p", { class: "muted" }, "No headers kept.");
  return h("table", { class: "kv" }, h("tbody", {}, entries.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, Array.isArray(v) ? v.join(", ") : String(v))))),
    h("caption", { class: "muted small" }, "Credentials (Authorization, Cookie, X-Gitlab-Token) are never stored; signatures are, they are no secret."));
}

// ---- incidents --------------------------------------------------------------------------

async function openIncidents() {
  show("incidents");
  $("#incidents-status").hidden = true;
  await loadIncidents();
}

async function loadIncidents() {
  const status = $("#incidents-status");
  const all = $("#incidents-all").checked;
  let rows;
  try {
    rows = await api(`/admin/incidents${all ? "" : "?open=true"}`);
  } catch (e) {
    status.className = "banner error";
    return failed(e, status);
  }
  $("#incidents-table tbody").replaceChildren(...rows.map(incidentRow));
  $("#incidents-empty").hidden = rows.length > 0;
}

function incidentRow(i) {
  const result = h("div", { class: "result", "aria-live": "polite" });
  const row = h("tr", { "data-key": i.dedup_key },
    h("td", { "data-label": "Opened" }, when(i.opened_at)),
    h("td", { "data-label": "Source" }, i.source, i.rule ? h("div", { class: "small muted" }, `rule ${i.rule}`) : null),
    h("td", { "data-label": "Incident", class: "wrap" },
      i.severity ? h("span", { class: `badge sev-${i.severity}` }, i.severity) : null, " ", i.summary ?? "",
      h("div", { class: "small mono clip", title: i.dedup_key }, i.dedup_key), result),
    h("td", { "data-label": "State" }, h("span", { class: `badge incident-${i.state}` }, i.state)),
    h("td", { "data-label": "Last" }, `${i.last_action} by ${i.last_by}`, h("div", { class: "small" }, when(i.last_action_at))),
    h("td", { "data-label": "Actions", class: "actions" }),
  );
  if (i.state === "resolved") return row;
  const resolve = h("button", { type: "button", class: "primary" }, "Resolve");
  resolve.addEventListener("click", async () => {
    resolve.disabled = true;
    try {
      const [r] = await api("/admin/incidents/resolve", { method: "POST", body: { dedup_keys: [i.dedup_key] } });
      const queued = r.outcome === "queued";
      result.className = `result ${queued ? "ok" : "bad"}`;
      result.textContent = queued ? "Resolve queued; the state changes once PagerDuty accepts it." : "No longer open in the ledger.";
      row.classList.add("done");
    } catch (e) {
      if (e instanceof Refused) return failed(e);
      result.className = "result bad";
      result.textContent = `Resolve refused: ${e.message}`;
      resolve.disabled = false;
    }
  });
  row.lastChild.append(resolve);
  return row;
}

// ---- dead letters -----------------------------------------------------------------------

async function openDead() {
  show("dead");
  $("#dead-status").hidden = true;
  await loadDead();
}

async function loadDead() {
  const status = $("#dead-status");
  let rows;
  try {
    rows = await api("/admin/dead?limit=500");
  } catch (e) {
    status.className = "banner error";
    return failed(e, status);
  }
  $("#dead-table tbody").replaceChildren(...rows.map(deadRow));
  $("#dead-empty").hidden = rows.length > 0;
  $("#replay-all").disabled = rows.length === 0;
}

function deadRow(d) {
  const result = h("div", { class: "result", "aria-live": "polite" });
  const row = h("tr", { "data-id": d.id },
    h("td", { "data-label": "Time" }, when(d.at)),
    h("td", { "data-label": "Source" }, d.source),
    h("td", { "data-label": "Kind" }, d.kind === "event" ? h("a", { href: `#/deliveries/${d.id}` }, `event ${d.id}`) : h("span", { class: "badge state-mapping_failed", title: DEAD_KINDS[d.kind]?.[1] ?? d.kind }, DEAD_KINDS[d.kind]?.[0] ?? d.kind),
      d.dedup_key ? h("div", { class: "small mono clip", title: d.dedup_key }, d.dedup_key) : null),
    h("td", { "data-label": "Reason", class: "wrap" }, d.reason, result),
    h("td", { "data-label": "Actions", class: "actions" }),
  );
  const replay = h("button", { type: "button", class: "primary" }, "Replay");
  const del = h("button", { type: "button", class: "danger" }, "Delete");
  replay.addEventListener("click", async () => {
    replay.disabled = del.disabled = true;
    try {
      showResult(row, await api(`/admin/dead/${encodeURIComponent(d.id)}/replay`, { method: "POST" }));
    } catch (e) {
      if (e instanceof Refused) return failed(e);
      showResult(row, null, e.message);
      replay.disabled = del.disabled = false;
    }
  });
  let armed = null;
  del.addEventListener("click", async () => {
    // Two clicks: a dead letter deleted is gone for good.
    if (!armed) {
      del.textContent = "Really delete?";
      armed = setTimeout(() => { armed = null; del.textContent = "Delete"; }, 4000);
      return;
    }
    clearTimeout(armed);
    replay.disabled = del.disabled = true;
    try {
      await api(`/admin/dead/${encodeURIComponent(d.id)}`, { method: "DELETE" });
      row.classList.add("done");
      result.className = "result ok";
      result.textContent = "Deleted.";
    } catch (e) {
      if (e instanceof Refused) return failed(e);
      showResult(row, null, e.message);
    }
  });
  row.lastChild.append(replay, del);
  if (d.kind !== "event") {
    const tryIt = h("button", { type: "button" }, "Try in Playground");
    tryIt.addEventListener("click", async () => {
      try {
        const full = await api(`/admin/dead/${encodeURIComponent(d.id)}`);
        draft = { id: d.id, source: d.source, payload: pretty(full.payload ?? ""), headers: headerLines(full.headers ?? {}) };
        location.hash = "#/playground";
      } catch (e) {
        if (e instanceof Refused) return failed(e);
        showResult(row, null, e.message);
      }
    });
    row.lastChild.append(tryIt);
  }
  return row;
}

function describe(r) {
  switch (r.outcome) {
    case "requeued": return [`Queued again as event ${r.event_id}.`, true];
    case "remapped": return [`Mapped with the current mappings into ${r.events} event${r.events === 1 ? "" : "s"}, queued.`, true];
    case "ignored": return [`Maps to nothing now: ${r.reason}.`, true];
    case "still_failing": return [`Still failing: ${r.error}`, false];
    case "skipped": return [`Skipped: ${r.reason}.`, false];
    case "partly": return [`${r.events} event${r.events === 1 ? "" : "s"} queued; still failing: ${r.error}`, false];
    default: return [JSON.stringify(r), true];
  }
}

function showResult(row, r, error) {
  const out = row.querySelector(".result");
  const [text, ok] = error ? [`Replay refused: ${error}`, false] : describe(r);
  out.className = `result ${ok ? "ok" : "bad"}`;
  out.textContent = text;
  if (ok) {
    row.classList.add("done");
    for (const b of row.querySelectorAll("button")) b.disabled = true;
  }
  // A trigger whose incident was resolved after it died: sent only when asked again.
  if (r?.outcome === "skipped") {
    for (const b of row.querySelectorAll("button")) b.disabled = false;
    const anyway = h("button", { type: "button", class: "danger" }, "Replay anyway");
    anyway.addEventListener("click", async () => {
      anyway.disabled = true;
      try {
        showResult(row, await api(`/admin/dead/${encodeURIComponent(row.dataset.id)}/replay?force=true`, { method: "POST" }));
        anyway.remove();
      } catch (e) {
        if (e instanceof Refused) return failed(e);
        showResult(row, null, e.message);
      }
    });
    out.append(" ", anyway);
  }
}

async function replayAll() {
  const status = $("#dead-status");
  const button = $("#replay-all");
  button.disabled = true;
  status.hidden = true;
  let results;
  try {
    results = await api("/admin/dead/replay", { method: "POST" });
  } catch (e) {
    status.className = "banner error";
    button.disabled = false;
    return failed(e, status);
  }
  let good = 0;
  let skipped = 0;
  for (const r of results) {
    const row = document.querySelector(`#dead-table tr[data-id="${CSS.escape(r.id)}"]`);
    const outcome = r.result?.outcome;
    if (outcome === "skipped") skipped += 1;
    else if (!r.error && outcome !== "still_failing") good += 1;
    if (row) showResult(row, r.result ?? null, r.error);
  }
  const failing = results.length - good - skipped;
  status.className = `banner ${failing === 0 && skipped === 0 ? "ok" : "error"}`;
  status.textContent = `Replayed ${results.length}: ${good} queued or resolved, ${skipped} skipped (their incident was resolved since: Replay anyway sends one), ${failing} still failing.`;
  status.hidden = false;
}

// ---- playground -------------------------------------------------------------------------

/** A dead letter's payload waiting to be shown in the playground. */
let draft = null;

/** Stored headers as the playground's `Name: value` lines, without transport ones. */
function headerLines(headers) {
  const skip = new Set(["host", "content-length", "accept", "accept-encoding", "connection", "user-agent"]);
  return Object.entries(headers).filter(([k]) => !skip.has(k.toLowerCase())).map(([k, v]) => `${k}: ${v}`).join("\n");
}

async function openPlayground() {
  show("playground");
  const select = $("#pg-source");
  if (!select.options.length) {
    try {
      const names = await api("/admin/sources");
      select.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
    } catch (e) {
      const out = h("p", { class: "banner error", role: "alert" });
      $("#render-out").replaceChildren(out);
      return failed(e, out);
    }
  }
  if (draft) {
    select.value = draft.source;
    $("#pg-payload").value = draft.payload;
    $("#pg-headers").value = draft.headers;
    $("#pg-query").value = "";
    from = draft.id;
    draft = null;
    $("#pg-from-text").textContent = `A failed payload from Dead letters (${from}): fix the mapping file (try the fix pasted under Mapping first), Render to see whether it maps (mappings reload within 2 s), then Replay it here.`;
    $("#pg-replay-result").textContent = "";
    $("#pg-replay").disabled = false;
    $("#pg-from").className = "banner";
    $("#pg-from").hidden = false;
    $("#render-out").replaceChildren(h("p", { class: "empty" }, "Rendered events show here."));
  }
}

/** The dead letter the playground's payload came from, which its Replay button replays. */
let from = null;

async function replayFrom() {
  const button = $("#pg-replay");
  button.disabled = true;
  let text, ok;
  try {
    [text, ok] = describe(await api(`/admin/dead/${encodeURIComponent(from)}/replay`, { method: "POST" }));
  } catch (e) {
    if (e instanceof Refused) return failed(e);
    [text, ok] = [`Replay refused: ${e.message}`, false];
  }
  $("#pg-replay-result").textContent = text;
  $("#pg-from").className = `banner ${ok ? "ok" : "error"}`;
  // Still failing: fix the mapping file and try again.
  button.disabled = ok;
}

async function render(ev) {
  ev.preventDefault();
  const out = $("#render-out");
  out.replaceChildren(h("p", { class: "muted" }, "Rendering…"));
  const body = { source: $("#pg-source").value, payload: $("#pg-payload").value, headers: $("#pg-headers").value, query: $("#pg-query").value, mapping: $("#pg-mapping").value };
  let p;
  try {
    p = await api("/admin/render", { method: "POST", body });
  } catch (e) {
    if (e instanceof Refused) return failed(e);
    out.replaceChildren(h("div", { class: "banner error", role: "alert" }, h("strong", {}, e.status === 422 ? "Cannot render: " : "Error: "), e.message));
    return;
  }
  if (!p.events.length) {
    out.replaceChildren(h("div", { class: "banner", role: "status" }, h("strong", {}, "No event. "), p.ignored ?? "No rule matched.", " A real webhook like this would be answered 200 ignored."));
    return;
  }
  out.replaceChildren(
    h("p", { class: "banner ok", role: "status" }, `${p.events.length} event${p.events.length === 1 ? "" : "s"} would be sent, each valid for PagerDuty's Events API v2${body.mapping.trim() ? " (by the pasted mapping, which is not saved)" : ""}.`),
    ...p.events.map((e, i) => h("article", { class: "card rendered" },
      h("h2", {}, `${i + 1}. `, h("span", { class: "kind" }, e.event.event_action ? `alert ${e.event.event_action}` : "change"), " from rule ", h("q", {}, e.rule)),
      pairs([["Endpoint", h("code", {}, e.endpoint)], ["Routing key", h("code", {}, e.routing_key)], ["dedup_key", e.event.dedup_key ? h("code", {}, e.event.dedup_key) : null], ["Summary", e.event.payload?.summary]]),
      e.notes.length ? h("div", { class: "banner warn" }, h("strong", {}, "pagerhook adjusted it: "), h("ul", {}, e.notes.map((n) => h("li", {}, n)))) : null,
      h("pre", { class: "json" }, JSON.stringify(e.event, null, 2)),
    )),
  );
}

// ---- start ------------------------------------------------------------------------------

$("#signin-form").addEventListener("submit", signIn);
$("#sign-out").addEventListener("click", () => signOut());
$("#search-form").addEventListener("submit", search);
$("#older").addEventListener("click", () => {
  list.before = list.lastId;
  list.last = "";
  refreshDeliveries();
});
$("#newest").addEventListener("click", () => {
  list.before = null;
  list.last = "";
  refreshDeliveries();
});
$("#dead-refresh").addEventListener("click", openDead);
$("#incidents-refresh").addEventListener("click", openIncidents);
$("#incidents-all").addEventListener("change", loadIncidents);
$("#replay-all").addEventListener("click", replayAll);
$("#render-form").addEventListener("submit", render);
$("#pg-replay").addEventListener("click", replayFrom);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && !$("#deliveries").hidden) refreshDeliveries();
});
window.addEventListener("hashchange", route);
route();
