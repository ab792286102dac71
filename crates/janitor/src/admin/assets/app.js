// janitor's operator page: reads the JSON API under /api/v1/ and re-drives dead jobs with
// the admin token the operator types (kept in this tab's sessionStorage only). Every value
// from the stores is inserted as text, never as HTML: agent names and errors are data.
"use strict";

const TOKEN_KEY = "janitor.token";
const $ = (id) => document.getElementById(id);

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined || text === "" ? "–" : String(text);
  if (cls) td.className = cls;
  return td;
}

function fill(tbody, rows, columns, empty) {
  tbody.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = cell(empty, "empty");
    td.colSpan = columns;
    tr.append(td);
    tbody.append(tr);
  }
  for (const row of rows) tbody.append(row);
}

function when(unixSeconds) {
  if (unixSeconds === null || unixSeconds === undefined) return "";
  return new Date(unixSeconds * 1000).toISOString().replace(".000Z", "Z");
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "none due";
  const s = Math.round(seconds);
  if (s < 120) return s + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return Math.round(s / 3600) + " h";
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    const token = sessionStorage.getItem(TOKEN_KEY) || "";
    if (token) headers["Authorization"] = "Bearer " + token;
  }
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const message = data && data.error ? data.error : response.status + " " + response.statusText;
    throw new Error(message);
  }
  return data;
}

function flash(kind, message, result) {
  const box = $("flash");
  box.className = kind;
  box.dataset.result = result || kind;
  box.textContent = message;
  box.hidden = false;
}

async function loadStats() {
  const s = await api("GET", "/api/v1/queue/stats");
  const inFlight = Object.values(s.in_flight || {}).reduce((a, b) => a + b, 0);
  const cards = [
    ["due", s.scheduled_due, "scheduled-due"],
    ["scheduled later", s.scheduled_future, "scheduled-future"],
    ["retrying", s.retrying, "retrying"],
    ["active", s.active, "active"],
    ["in flight", inFlight, "in-flight"],
    ["dead", s.dead, "dead", s.dead > 0],
    ["done", s.done, "done"],
    ["oldest due", age(s.oldest_due_age_secs), "oldest-due"],
  ];
  $("stats").replaceChildren(...cards.map(([label, n, key, warn]) => {
    const card = document.createElement("div");
    card.className = warn ? "card warn" : "card";
    card.dataset.stat = key;
    const value = document.createElement("div");
    value.className = "n";
    value.textContent = String(n);
    const name = document.createElement("div");
    name.className = "label";
    name.textContent = label;
    card.append(value, name);
    return card;
  }));
}

function jobCells(j) {
  const p = j.job || {};
  return [
    cell(j.id, "mono"),
    cell(p.kind || "(unreadable payload)"),
    cell(p.agent, "mono"),
    cell(p.execution_id, "mono"),
    cell(j.attempts),
    cell(j.last_error, "error"),
  ];
}

async function loadJobs() {
  const [dead, retrying] = await Promise.all([
    api("GET", "/api/v1/jobs?state=dead&limit=100"),
    api("GET", "/api/v1/jobs?state=retrying&limit=100"),
  ]);
  fill($("dead-jobs"), dead.jobs.map((j) => {
    const tr = document.createElement("tr");
    tr.dataset.jobId = j.id;
    const action = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "retry";
    button.textContent = "Retry";
    button.addEventListener("click", () => retry({ ids: [j.id] }));
    action.append(button);
    tr.append(...jobCells(j), action);
    return tr;
  }), 7, "No dead jobs.");
  $("retry-all").hidden = dead.jobs.length === 0;
  fill($("retrying-jobs"), retrying.jobs.map((j) => {
    const tr = document.createElement("tr");
    tr.dataset.jobId = j.id;
    tr.append(...jobCells(j), cell(when(j.next_run)));
    return tr;
  }), 7, "Nothing is being retried.");
}

async function loadStuck() {
  const all = $("all-open").checked;
  const report = await api("GET", "/api/v1/stuck?limit=200" + (all ? "" : "&actionable=true"));
  const rows = report.pairs.map((p) => {
    const tr = document.createElement("tr");
    const who = p.slot || p.row;
    tr.dataset.execution = who.execution_id;
    tr.append(
      cell(who.agent, "mono"),
      cell(who.execution_id, "mono"),
      cell(p.row ? p.row.status : "(no row)"),
      cell(p.slot ? when(p.slot.score) : "(no slot)"),
      cell(p.deadline),
      cell(p.verdict.verdict),
    );
    return tr;
  });
  for (const c of report.corrupt_slots.concat(report.corrupt_rows)) {
    const tr = document.createElement("tr");
    tr.append(cell(c.agent || c.key, "mono"), cell(c.id || c.member, "mono"), cell(c.status),
      cell(""), cell(""), cell("unreadable: " + c.reason, "error"));
    rows.push(tr);
  }
  const shown = report.pairs.length;
  const total = report.pairs_total === undefined ? shown : report.pairs_total;
  $("stuck-summary").textContent = total > shown
    ? "Showing " + shown + " of " + total + " (janitor stuck --json lists all)."
    : "";
  fill($("stuck-records"), rows, 6, all ? "No open runs." : "Nothing stuck: every open run is healthy.");
}

async function loadAudit() {
  const trail = await api("GET", "/api/v1/audit?limit=25");
  fill($("audit-rows"), trail.map((a) => {
    const tr = document.createElement("tr");
    const status = (a.status_before || "–") + " → " + (a.status_after || "–");
    tr.append(cell(a.at), cell(a.action), cell(a.agent_name, "mono"), cell(a.execution_id, "mono"),
      cell(status), cell(a.job_id, "mono"), cell(a.worker, "mono"));
    return tr;
  }), 7, "Nothing changed yet.");
}

async function refresh() {
  const results = await Promise.allSettled([loadStats(), loadJobs(), loadStuck(), loadAudit()]);
  const failed = results.filter((r) => r.status === "rejected");
  if (failed.length > 0) {
    flash("error", "Could not load: " + failed.map((r) => r.reason.message).join("; "), "load-error");
  }
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  document.body.dataset.loaded = "true";
}

async function retry(request) {
  try {
    const result = await api("POST", "/api/v1/jobs/retry", request);
    const n = result.moved.length;
    flash("ok", "Moved " + n + " job" + (n === 1 ? "" : "s") + " back to due" +
      (result.not_dead.length ? "; " + result.not_dead.length + " no longer dead" : "") + ".", "moved");
  } catch (e) {
    flash("error", "Retry refused: " + e.message, "refused");
  }
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  const token = $("token");
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  token.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, token.value));
  $("auth").addEventListener("submit", (e) => e.preventDefault());
  $("refresh").addEventListener("click", refresh);
  $("retry-all").addEventListener("click", () => retry({ all_dead: true }));
  $("all-open").addEventListener("change", refresh);
  refresh();
});
