// The ASC console. Everything it shows comes from /admin/v1 with the operator's token;
// the page is built with textContent only (never markup from data), under a CSP that
// allows no inline code.
"use strict";

const TOKEN_KEY = "asc.console.token";
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  who: null,
  recordsCursor: null,
  timelineCursor: null,
  tenant: null,
  record: null,
  exportUrl: null,
};

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || [];
  }
}

// --- DOM helpers -------------------------------------------------------------------

// el("td", {class: "num"}, "text", otherNode): children that are not nodes become text.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function show(node, visible) {
  node.hidden = !visible;
}

function row(cells, attrs) {
  return el("tr", attrs, ...cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))));
}

function fill(tableId, rows) {
  const body = $(tableId).tBodies[0];
  clear(body);
  for (const r of rows) body.append(r);
}

function facts(dl, pairs) {
  clear(dl);
  for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, v));
}

function fmt(v) {
  if (v === null || v === undefined || v === "") return "—";
  if (Array.isArray(v)) return v.length ? v.join(", ") : "—";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function usd(v) {
  return typeof v === "number" ? v.toFixed(6).replace(/0+$/, "").replace(/\.$/, "") : fmt(v);
}

function ms(v) {
  return typeof v === "number" ? v.toFixed(1) : fmt(v);
}

function may(capability) {
  return !!(state.who && state.who.may && state.who.may.includes(capability));
}

function notice(text) {
  $("notice").textContent = text;
  show($("notice"), !!text);
}

function fail(err) {
  let text = err instanceof ApiError ? `${err.message} (${err.status} ${err.code})` : String(err.message || err);
  if (err instanceof ApiError && err.details.length) {
    text += ": " + err.details.map((d) => (d.field ? `${d.field}: ${d.message}` : fmt(d))).join("; ");
  }
  $("error").textContent = text;
  show($("error"), true);
}

function clearMessages() {
  show($("error"), false);
  notice("");
}

// --- the admin API -----------------------------------------------------------------

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${state.token}` }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const type = resp.headers.get("Content-Type") || "";
  const payload = type.startsWith("application/json") ? await resp.json().catch(() => null) : await resp.text();
  if (!resp.ok) {
    const e = payload && payload.error ? payload.error : {};
    const err = new ApiError(resp.status, e.code || "error", e.message || `HTTP ${resp.status}`, e.details);
    if (resp.status === 401 && state.who) {
      // The token stopped working (expired, revoked, rotated): back to sign-in.
      signOut(`Signed out: ${err.message}`);
    }
    throw err;
  }
  return payload;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// --- sign-in -----------------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  try {
    state.who = await api("GET", "/admin/v1/whoami");
  } catch (err) {
    state.token = null;
    state.who = null;
    throw err;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("who-actor").textContent = state.who.actor;
  $("who-role").textContent = state.who.role;
  show($("who"), true);
  show($("signin"), false);
  show($("app"), true);
  $("token").value = "";
  route();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.who = null;
  state.tenant = null;
  if (state.exportUrl) URL.revokeObjectURL(state.exportUrl);
  state.exportUrl = null;
  show($("who"), false);
  show($("app"), false);
  show($("signin"), true);
  const e = $("signin-error");
  e.textContent = message || "";
  show(e, !!message);
}

// --- views -------------------------------------------------------------------------

const VIEWS = {
  tenants: loadTenants,
  records: () => loadRecords(false),
  timeline: () => loadTimeline(false),
  experiments: loadExperiments,
  audit: async () => {},
  config: loadConfig,
};

function route() {
  if (!state.who) return;
  let name = location.hash.replace(/^#/, "");
  if (!(name in VIEWS)) name = "tenants";
  for (const a of document.querySelectorAll("#tabs a")) {
    a.classList.toggle("active", a.dataset.view === name);
  }
  for (const v of Object.keys(VIEWS)) show($(`view-${v}`), v === name);
  clearMessages();
  VIEWS[name]().catch(fail);
}

async function loadTenants() {
  const { data } = await api("GET", "/admin/v1/tenants");
  fill(
    "tenants-table",
    data.map((t) => {
      const open = el("button", { type: "button", class: "link", dataset: { tenant: t.name } }, t.name);
      open.addEventListener("click", () => openTenant(t.name).catch(fail));
      const budget = t.budget ? `${usd(t.budget.limit_usd)} USD / ${t.budget.period || "month"}` : "—";
      const rl = t.rate_limit
        ? [t.rate_limit.requests_per_minute && `${t.rate_limit.requests_per_minute} req/min`,
           t.rate_limit.tokens_per_minute && `${t.rate_limit.tokens_per_minute} tok/min`].filter(Boolean).join(", ") || "—"
        : "—";
      return row([el("td", {}, open), t.managed_by, fmt(t.allowed_models), fmt(t.regions), budget, rl]);
    }),
  );
  if (state.tenant) await openTenant(state.tenant);
}

async function openTenant(name) {
  state.tenant = name;
  $("tenant-name").textContent = name;
  show($("new-key"), false);
  show($("tenant-detail"), true);
  const jobs = [];
  if (may("read_usage")) jobs.push(loadUsage(name));
  if (may("read_keys")) jobs.push(loadKeys(name));
  show($("key-form"), may("write_keys"));
  await Promise.all(jobs);
}

async function loadUsage(name) {
  const u = await api("GET", `/admin/v1/usage${query({ tenant: name, group_by: "model" })}`);
  if (state.tenant !== name) return; // another tenant was opened meanwhile
  facts($("usage"), [
    ["Period", u.period],
    ["Spent (USD)", usd(u.spent_usd)],
    ["Limit (USD)", u.limit_usd === null ? "none" : usd(u.limit_usd)],
    ["Requests", u.requests],
    ["Prompt tokens", u.prompt_tokens],
    ["Completion tokens", u.completion_tokens],
  ]);
  fill(
    "usage-groups",
    u.groups.map((g) => row([g.key, g.requests, g.prompt_tokens, g.completion_tokens, usd(g.cost_usd)])),
  );
}

async function loadKeys(name) {
  const { data } = await api("GET", `/admin/v1/tenants/${encodeURIComponent(name)}/keys`);
  if (state.tenant !== name) return; // another tenant was opened meanwhile
  const canRevoke = may("write_keys");
  fill(
    "keys-table",
    data.map((k) => {
      let action = "";
      if (canRevoke && !k.revoked_at) {
        action = el("button", { type: "button", class: "danger", dataset: { key: k.id } }, "Revoke");
        action.addEventListener("click", () => revokeKey(k).catch(fail));
      }
      return row([k.name, k.prefix, fmt(k.created_at), fmt(k.expires_at), fmt(k.revoked_at), el("td", {}, action)], {
        dataset: { keyId: k.id },
      });
    }),
  );
}

async function createKey(ev) {
  ev.preventDefault();
  clearMessages();
  const body = { name: $("key-name").value.trim() };
  const expires = $("key-expires").value.trim();
  if (expires) body.expires_in = expires;
  const k = await api("POST", `/admin/v1/tenants/${encodeURIComponent(state.tenant)}/keys`, body);
  $("new-key-value").textContent = k.key;
  show($("new-key"), true);
  $("key-name").value = "";
  $("key-expires").value = "";
  await loadKeys(state.tenant);
}

async function revokeKey(k) {
  clearMessages();
  if (!confirm(`Revoke the key "${k.name}" (${k.prefix})? Requests with it fail at once.`)) return;
  await api("DELETE", `/admin/v1/keys/${encodeURIComponent(k.id)}`);
  notice(`Key "${k.name}" revoked.`);
  await loadKeys(state.tenant);
}

async function loadRecords(more) {
  const params = {
    tenant: $("records-tenant").value.trim(),
    status: $("records-status").value,
    limit: "50",
    cursor: more ? state.recordsCursor : null,
  };
  const { data, next_cursor } = await api("GET", `/admin/v1/records${query(params)}`);
  const rows = data.map((r) => {
    const open = el("button", { type: "button", class: "link", dataset: { record: r.request_id } }, r.request_id);
    open.addEventListener("click", () => openRecord(r.request_id).catch(fail));
    const provider = r.decision ? r.decision.chosen : null;
    return row(
      [fmt(r.ts), el("td", {}, open), fmt(r.tenant), fmt(r.user), fmt(r.model_requested), fmt(provider),
       r.error_code ? `${r.status} (${r.error_code})` : fmt(r.status), ms(r.latency_ms), usd(r.cost_usd)],
      { class: `status-${r.status}` },
    );
  });
  const body = $("records-table").tBodies[0];
  if (!more) {
    clear(body);
    show($("record-detail"), false);
  }
  for (const r of rows) body.append(r);
  state.recordsCursor = next_cursor;
  show($("records-more"), !!next_cursor);
}

async function openRecord(id) {
  state.record = id;
  const r = await api("GET", `/admin/v1/records/${encodeURIComponent(id)}`);
  if (state.record !== id) return; // another record was opened meanwhile
  $("record-id").textContent = id;
  $("record-json").textContent = JSON.stringify(r, null, 2);
  show($("record-detail"), true);
}

function summary(item) {
  if (item.request_id) {
    const parts = [item.model, item.provider && `→ ${item.provider}`, item.status, item.error_code];
    return `${item.request_id}: ${parts.filter(Boolean).join(" ")}`;
  }
  return `${item.actor || ""} ${item.detail ? JSON.stringify(item.detail) : ""}`.trim();
}

async function loadTimeline(more) {
  const params = {
    tenant: $("timeline-tenant").value.trim(),
    limit: "100",
    cursor: more ? state.timelineCursor : null,
  };
  const { data, next_cursor } = await api("GET", `/admin/v1/timeline${query(params)}`);
  const body = $("timeline-table").tBodies[0];
  if (!more) clear(body);
  for (const i of data) body.append(row([fmt(i.ts), i.type, fmt(i.tenant), summary(i)], { class: `type-${i.type}` }));
  state.timelineCursor = next_cursor;
  show($("timeline-more"), !!next_cursor);
}

function armRow(name, a) {
  return row([
    name,
    fmt(a.requests),
    fmt(a.errors),
    typeof a.error_rate === "number" ? `${(a.error_rate * 100).toFixed(2)} %` : fmt(a.error_rate),
    ms(a.p95_latency_ms),
    ms(a.p95_ttft_ms),
    usd(a.cost_per_request_usd),
    typeof a.feedback_mean === "number" ? a.feedback_mean.toFixed(3) : fmt(a.feedback_mean),
  ]);
}

function table(headers, rows, attrs) {
  return el(
    "table",
    Object.assign({ class: "grid" }, attrs || {}),
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows),
  );
}

// The statistics behind a decision, folded: they run to a screen or more.
function evidence(v) {
  if (v === null || v === undefined) return "—";
  return el("details", {}, el("summary", {}, "evidence"), el("pre", {}, JSON.stringify(v, null, 2)));
}

const EXPERIMENT_ACTIONS = {
  promote: "Promote the candidate to all traffic",
  rollback: "Roll back to the baseline",
  pause: null,
  resume: null,
};

function experimentCard(x) {
  const card = el("article", { class: "experiment", dataset: { experiment: x.name } });
  card.append(
    el("h3", {}, x.name, " ", el("span", { class: `badge state-${x.state}`, dataset: { field: "state" } }, x.state)),
  );
  const dl = el("dl", { class: "facts" });
  facts(dl, [["Stage", fmt(x.stage)], ["Candidate weight", `${fmt(x.weight)} %`]]);
  card.append(dl);
  const arms = x.arms || {};
  card.append(
    table(
      ["Arm", "Requests", "Errors", "Error rate", "p95 latency (ms)", "p95 TTFT (ms)", "Cost / request (USD)", "Feedback"],
      ["baseline", "candidate"].filter((a) => arms[a]).map((a) => armRow(a, arms[a])),
    ),
  );
  card.append(
    el("h4", {}, "Guards"),
    table(
      ["Guard", "Verdict", "Estimate", "Bound"],
      (x.guards || []).map((g) => row([g.guard, g.verdict, fmt(g.estimate), fmt(g.bound)], { class: `verdict-${g.verdict}` })),
    ),
  );
  card.append(
    el("h4", {}, "Decisions"),
    table(
      ["Time", "Action", "Reason", "Evidence"],
      (x.decisions || []).slice().reverse().map((d) => row([fmt(d.ts), d.action, fmt(d.reason), el("td", {}, evidence(d.evidence))])),
    ),
  );
  if (may("write_experiments")) {
    const bar = el("div", { class: "actions" });
    for (const [action, question] of Object.entries(EXPERIMENT_ACTIONS)) {
      const b = el("button", { type: "button", dataset: { action } }, action);
      b.addEventListener("click", () => experimentAction(x.name, action, question).catch(fail));
      bar.append(b);
    }
    card.append(bar);
  }
  return card;
}

async function loadExperiments() {
  const { experiments } = await api("GET", "/admin/v1/experiments");
  const list = $("experiments-list");
  clear(list);
  for (const x of experiments) list.append(experimentCard(x));
  show($("experiments-empty"), experiments.length === 0);
}

async function experimentAction(name, action, question) {
  clearMessages();
  if (question && !confirm(`${question} for "${name}"?`)) return;
  const x = await api("POST", `/admin/v1/experiments/${encodeURIComponent(name)}/${action}`);
  notice(`${name}: ${action} done; state ${x.state}.`);
  await loadExperiments();
}

async function verifyAudit() {
  clearMessages();
  const v = await api("GET", "/admin/v1/audit/verify");
  const bad = v.first_bad;
  const dl = $("audit-result");
  facts(dl, [
    ["Verdict", v.ok ? "intact: every hash and signature checks" : "BROKEN"],
    ["Entries", v.entries],
    ["Chains", v.chains],
    ["Checkpoints", v.checkpoints],
    ["First bad entry", bad ? `chain ${bad.chain}, seq ${bad.seq}: ${bad.reason}` : "none"],
  ]);
  dl.classList.toggle("bad", !v.ok);
  dl.dataset.ok = String(!!v.ok);
  show(dl, true);
}

async function prepareExport(ev) {
  ev.preventDefault();
  clearMessages();
  const params = { since: $("export-since").value.trim(), until: $("export-until").value.trim() };
  const text = await api("GET", `/admin/v1/audit/export${query(params)}`);
  if (state.exportUrl) URL.revokeObjectURL(state.exportUrl);
  state.exportUrl = URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" }));
  const a = $("export-link");
  a.href = state.exportUrl;
  a.textContent = `Download asc-audit.jsonl (${text.split("\n").filter(Boolean).length} lines)`;
  show(a, true);
}

async function loadConfig() {
  show($("config-reload"), may("write_config"));
  const { data } = await api("GET", "/admin/v1/config/versions");
  fill(
    "config-table",
    data.map((v) => {
      const open = el("button", { type: "button", class: "link", dataset: { seq: v.seq } }, String(v.seq));
      open.addEventListener("click", () => {
        $("config-diff-seq").textContent = String(v.seq);
        $("config-diff-text").textContent = v.diff || "(no change)";
        show($("config-diff"), true);
      });
      return row([el("td", {}, open), v.loaded_at, v.actor, v.source, v.hash.slice(0, 16)]);
    }),
  );
}

async function reloadConfig() {
  clearMessages();
  const r = await api("POST", "/admin/v1/config/reload");
  notice(`Config reloaded: version ${r.seq} (${r.hash.slice(0, 16)}).`);
  await loadConfig();
}

// --- wiring ------------------------------------------------------------------------

function on(id, event, handler) {
  $(id).addEventListener(event, (ev) => {
    Promise.resolve(handler(ev)).catch(fail);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  on("signin-form", "submit", async (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    show($("signin-error"), false);
    try {
      await signIn(token);
    } catch (err) {
      $("signin-error").textContent = err instanceof ApiError ? `${err.message} (${err.status})` : String(err);
      show($("signin-error"), true);
    }
  });
  on("signout", "click", () => signOut(""));
  on("key-form", "submit", createKey);
  on("records-form", "submit", (ev) => {
    ev.preventDefault();
    return loadRecords(false);
  });
  on("records-more", "click", () => loadRecords(true));
  on("timeline-form", "submit", (ev) => {
    ev.preventDefault();
    return loadTimeline(false);
  });
  on("timeline-more", "click", () => loadTimeline(true));
  on("audit-verify", "click", verifyAudit);
  on("export-form", "submit", prepareExport);
  on("config-reload", "click", reloadConfig);
  window.addEventListener("hashchange", route);

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    signIn(saved).catch((err) => signOut(`Sign in again: ${err.message}`));
  } else {
    signOut("");
  }
});
