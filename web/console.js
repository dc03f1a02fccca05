// firedrill web console. No framework and no build step: every page is
// rendered here from the JSON API (the same one the CLI's users script),
// with DOM nodes and text (never HTML strings from data). State-changing
// requests carry the session's CSRF token; the server enforces roles, the
// page only hides what the role may not do.

const main = document.getElementById("main");
const session = { me: null };

// ---------- helpers ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  return fill(el, children, false);
}

// Put `children` (nested arrays, nodes, text; null and false skipped) into
// `el`, replacing what it had when `replace`.
function fill(el, children, replace = true) {
  if (replace) el.replaceChildren();
  for (const c of [children].flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session.me && session.me.csrf) headers["X-CSRF-Token"] = session.me.csrf;
  const res = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(res.status, err.code || "http-" + res.status, err.message || text || res.statusText);
  }
  return data;
}

const q = (params) => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") s.set(k, v);
  const t = s.toString();
  return t ? "?" + t : "";
};

const STATUS_CLASS = {
  succeeded: "s-ok", ready: "s-ok", passed: "s-ok", ok: "s-ok", real: "s-warn",
  failed: "s-bad", failing: "s-bad", "needs-attention": "s-bad", halted: "s-bad", engaged: "s-bad", open: "s-bad",
  running: "s-info", queued: "s-info", "awaiting-approval": "s-warn",
  stale: "s-warn", "dry-run-only": "s-warn", "never-drilled": "s-warn", interrupted: "s-warn", simulated: "s-info",
  cancelled: "s-muted", abandoned: "s-muted", skipped: "s-muted", released: "s-ok", closed: "s-ok",
  change: "s-warn", observe: "s-muted",
};

// Status in words and colour, never colour alone.
function badge(text) {
  return h("span", { class: "badge " + (STATUS_CLASS[text] || "s-muted") }, text);
}

function errorBox(e) {
  return h("div", { class: "error", role: "alert" }, h("strong", {}, "Error: "), e.message || String(e));
}

function showError(where, e) {
  where.querySelectorAll(":scope > .error").forEach((n) => n.remove());
  where.prepend(errorBox(e));
}

function pre(value) {
  return h("pre", {}, typeof value === "string" ? value : JSON.stringify(value, null, 2));
}

// A kernel's declared capabilities, one line each: what it may touch.
function capabilities(caps) {
  const items = [];
  for (const [kind, list] of Object.entries(caps || {})) {
    for (const c of list || []) {
      if (typeof c === "string") items.push([kind, "", c]);
      else items.push([kind, c.effect || "", c.pattern || c.url || c.name || JSON.stringify(c)]);
    }
  }
  if (!items.length) return h("span", { class: "muted" }, "nothing (no host access)");
  return h("ul", {}, items.map(([kind, effect, what]) =>
    h("li", {}, kind + " ", effect ? badge(effect) : null, " ", h("code", {}, what))));
}

function runLink(id) {
  return h("a", { href: "/console/runs/" + encodeURIComponent(id), class: "mono" }, id);
}

function runbookLink(name) {
  return h("a", { href: "/console/runbooks/" + encodeURIComponent(name) }, name);
}

function table(headers, rows, empty = "nothing") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
}

function field(label, input) {
  const id = "f-" + Math.random().toString(36).slice(2);
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input);
}

function runsTable(runs, empty) {
  return table(["Run", "Runbook", "Mode", "Status", "Actor", "Started"],
    runs.map((r) => [runLink(r.run_id), runbookLink(r.runbook), r.mode, badge(r.status), r.actor, r.started_at]), empty);
}

function page(title, ...children) {
  document.title = title + " · firedrill";
  fill(main, [h("h1", {}, title), children]);
  main.focus({ preventScroll: true });
}

// A button that runs `action`, disabled while it runs, showing errors in `where`.
function actionButton(label, cls, where, action) {
  const b = h("button", { type: "button", class: cls }, label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await action(); } catch (e) { showError(where, e); } finally { b.disabled = false; }
  });
  return b;
}

// ---------- sign-in ----------

function signInPage(message) {
  const token = h("input", { type: "password", name: "token", autocomplete: "current-password", required: true, size: 50 });
  const form = h("form", { class: "inline", "aria-label": "Sign in" },
    field("API token", token), h("button", { type: "submit", class: "primary" }, "Sign in"));
  const box = h("div", {});
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", "/console/session", { token: token.value });
      location.reload();
    } catch (e) { showError(box, e); }
  });
  page("Sign in", box,
    message ? h("p", { class: "notice" }, message) : null,
    h("p", {}, "Sign in with an API token (", h("code", {}, "firedrill token create"),
      "). It is kept in an HttpOnly cookie for this site only."),
    form);
}

function renderWho() {
  const who = document.getElementById("who");
  const me = session.me;
  who.replaceChildren(
    h("span", {}, me.name + " (" + me.role + ")"),
    actionButton("Sign out", "", main, async () => {
      await api("DELETE", "/console/session");
      location.assign("/console/");
    }));
}

// ---------- big red switch ----------

async function allSwitches() {
  return (await api("GET", "/api/v1/switch")).switches;
}

async function globalSwitch() {
  return (await allSwitches()).find((s) => s.scope === "global") || { scope: "global", engaged: false };
}

// Engaged switches of single runbooks ("runbook:NAME"), as a table.
function runbookSwitches(switches, only) {
  const engaged = switches.filter((s) => s.engaged && s.scope.startsWith("runbook:") && (!only || s.scope === "runbook:" + only));
  return table(["Runbook", "Reason", "Engaged by", "Since"],
    engaged.map((s) => [runbookLink(s.scope.slice("runbook:".length)), s.reason || "", s.actor || "", s.changed_at || ""]),
    only ? "this runbook's switch is released" : "no runbook's switch is engaged");
}

async function renderBanner() {
  const banner = document.getElementById("switch-banner");
  try {
    const sw = await globalSwitch();
    banner.replaceChildren(sw.engaged
      ? h("div", { class: "engaged", role: "alert" },
        "BIG RED SWITCH ENGAGED: live automation is halted. ", sw.reason ? "Reason: " + sw.reason + " " : "",
        sw.actor ? "(by " + sw.actor + ", " + sw.changed_at + ")" : "")
      : "");
  } catch { banner.replaceChildren(); }
}

function switchCard(sw) {
  const may = sw.engaged ? session.me.may.release_switch : session.me.may.engage_switch;
  const reason = h("input", { type: "text", name: "reason", required: true, size: 40 });
  const box = h("section", { class: "card", "aria-labelledby": "switch-h" },
    h("h2", { id: "switch-h" }, "Big red switch"),
    h("p", {}, "State: ", badge(sw.engaged ? "engaged" : "released"), " ",
      sw.engaged ? "Live automation is halted before its next step." : "Live automation may run."),
    sw.actor ? h("p", { class: "muted" }, "Last flipped by " + sw.actor + " at " + sw.changed_at + (sw.reason ? ": " + sw.reason : "")) : null);
  if (may) {
    const form = h("form", { class: "inline" }, field("Reason (for the audit log)", reason),
      h("button", { type: "submit", class: sw.engaged ? "primary" : "danger" },
        sw.engaged ? "Release the switch" : "Engage the big red switch"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("PUT", "/api/v1/switch", { engaged: !sw.engaged, reason: reason.value });
        await overview();
        await renderBanner();
      } catch (e) { showError(box, e); }
    });
    box.append(form);
  } else {
    box.append(h("p", { class: "muted" }, "Your role (" + session.me.role + ") may not flip it."));
  }
  return box;
}

// ---------- pages ----------

async function overview() {
  const [switches, drills, triggers, failed, recent, ...pending] = await Promise.all([
    allSwitches(),
    api("GET", "/api/v1/drills"),
    api("GET", "/api/v1/triggers"),
    api("GET", "/api/v1/runs?status=failed&limit=10"),
    api("GET", "/api/v1/runs?limit=100"),
    ...["running", "awaiting-approval", "queued", "needs-attention"].map((s) => api("GET", "/api/v1/runs" + q({ status: s, limit: 50 }))),
  ]);
  const sw = switches.find((s) => s.scope === "global") || { scope: "global", engaged: false };
  const inProgress = pending.flatMap((p) => p.runs).sort((a, b) => (a.run_id < b.run_id ? 1 : -1));
  // Runs started by an alert carry the alert source as actor ("alert-source:alertmanager").
  const alertRuns = recent.runs.filter((r) => String(r.actor).startsWith("alert-source:")).slice(0, 10);
  // Each trigger's own breaker: per key (the keys paused) or per runbook.
  const paused = triggers.triggers.flatMap((rb) => rb.triggers.filter((t) => t.breaker_open).map((t) => [rb.runbook, t]));
  page("Overview",
    h("div", { class: "grid" },
      switchCard(sw),
      h("section", { class: "card", "aria-labelledby": "ready-h" },
        h("h2", { id: "ready-h" }, "Readiness"),
        table(["Runbook", "Version", "Readiness", "Last drill"],
          drills.runbooks.map((r) => [runbookLink(r.runbook), String(r.version), badge(r.state),
            r.last_drill_run ? h("span", {}, runLink(r.last_drill_run), " ", r.last_drill_status || "") : "never"]),
          "no runbooks published"))),
    h("h2", {}, "Runbook switches engaged"), runbookSwitches(switches),
    h("h2", {}, "Runs in progress"), runsTable(inProgress, "no run in progress"),
    h("h2", {}, "Recent failures"), runsTable(failed.runs, "no failed runs"),
    h("h2", {}, "Runs started by alerts"), runsTable(alertRuns, "no recent run started by an alert"),
    h("h2", {}, "Paused triggers (circuit breaker open)"),
    table(["Runbook", "Trigger", "Scope", "Paused keys", "Failures in a row", "Reset with"],
      paused.map(([runbook, t]) => [runbookLink(runbook), String(t.index) + " (" + t.source + " " + JSON.stringify(t.match || {}) + ")", t.breaker_scope,
        t.breaker_scope === "key" ? t.open_keys.join(", ") + (t.open_keys_total > t.open_keys.length ? " and " + (t.open_keys_total - t.open_keys.length) + " more" : "") : "every key",
        String(t.breaker), h("code", {}, "firedrill trigger reset " + runbook + " --reason ...")]),
      "no trigger is paused"));
}

async function runbooksPage() {
  const [list, drills] = await Promise.all([api("GET", "/api/v1/runbooks"), api("GET", "/api/v1/drills")]);
  const ready = Object.fromEntries(drills.runbooks.map((r) => [r.runbook, r.state]));
  page("Runbooks", table(["Runbook", "Current version", "Versions", "Readiness", "Published"],
    list.runbooks.map((r) => [runbookLink(r.name), String(r.version), String(r.versions),
      ready[r.name] ? badge(ready[r.name]) : "", r.published_at + " by " + r.published_by]),
    "no runbooks published (firedrill runbook publish FILE)"));
}

// Line diff (longest common subsequence); runbooks are at most 1 MiB and
// this is for humans reading two versions, so lines are capped.
function lineDiff(a, b) {
  const x = a.split("\n").slice(0, 2000), y = b.split("\n").slice(0, 2000);
  const n = x.length, m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push(["same", "  " + x[i]]); i++; j++; }
    else if (j < m && (i >= n || lcs[i][j + 1] >= lcs[i + 1][j])) { out.push(["add", "+ " + y[j]]); j++; }
    else { out.push(["del", "- " + x[i]]); i++; }
  }
  return out;
}

function inputFields(schema) {
  const props = (schema && schema.properties) || {};
  return Object.entries(props).map(([name, s]) => {
    const input = h("input", { type: "text", name, "data-input": name, placeholder: s.default !== undefined ? String(s.default) : "" });
    return field(name + (s.description ? " (" + s.description + ")" : ""), input);
  });
}

function collectInputs(form) {
  const out = {};
  form.querySelectorAll("[data-input]").forEach((el) => { if (el.value !== "") out[el.dataset.input] = el.value; });
  return out;
}

async function runbookPage(name) {
  const enc = encodeURIComponent(name);
  const [rb, versions, drills, runs, triggers, switches] = await Promise.all([
    api("GET", "/api/v1/runbooks/" + enc),
    api("GET", "/api/v1/runbooks/" + enc + "/versions"),
    api("GET", "/api/v1/drills"),
    api("GET", "/api/v1/runs" + q({ runbook: name, limit: 100 })),
    api("GET", "/api/v1/triggers"),
    allSwitches(),
  ]);
  const def = rb.definition || { steps: [], on_failure: [], triggers: [] };
  const readiness = drills.runbooks.find((r) => r.runbook === name);
  const box = h("div", {});

  // Start a run: always a dry-run first.
  const start = h("section", { "aria-labelledby": "start-h" }, h("h2", { id: "start-h" }, "Start a run"));
  if (session.me.may.start_run) {
    const form = h("form", { class: "inline" }, inputFields(def.inputs),
      h("button", { type: "submit", class: "primary" }, "Dry-run (shows the plan, changes nothing)"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const r = await api("POST", "/api/v1/runs", { runbook: name, version: rb.version, mode: "dry-run", inputs: collectInputs(form) });
        location.assign("/console/runs/" + encodeURIComponent(r.run_id));
      } catch (e) { showError(start, e); }
    });
    start.append(h("p", {}, "A live run starts from a dry-run's plan, on its page."), form);
  } else {
    start.append(h("p", { class: "muted" }, "Your role (" + session.me.role + ") may not start runs."));
  }

  // Kernels this runbook uses, and what each may touch.
  const kernelRefs = [...new Set([...def.steps, ...(def.on_failure || [])].filter((s) => s.kernel).map((s) => s.kernel))];
  const kernels = await Promise.all(kernelRefs.map(async (ref) => {
    const [kn, kv] = ref.split("@");
    try { return [ref, await api("GET", "/api/v1/kernels/" + encodeURIComponent(kn) + "/" + encodeURIComponent(kv || ""))]; }
    catch (e) { return [ref, { error: e.message }]; }
  }));

  // Diff between two versions.
  const nums = versions.versions.map((v) => v.version);
  const opts = (sel) => nums.map((n) => h("option", { value: n, selected: n === sel }, "version " + n));
  const from = h("select", { name: "from" }, opts(nums.length > 1 ? nums[nums.length - 2] : nums[0]));
  const to = h("select", { name: "to" }, opts(nums[nums.length - 1]));
  const diffOut = h("div", { class: "diff", "aria-live": "polite" });
  const diffForm = h("form", { class: "inline" }, field("From", from), field("To", to), h("button", { type: "submit" }, "Show the diff"));
  diffForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const [a, b] = await Promise.all([from.value, to.value].map((v) => api("GET", "/api/v1/runbooks/" + enc + "?version=" + v)));
      diffOut.replaceChildren(...lineDiff(a.source, b.source).map(([k, line]) => h("span", { class: k }, line)));
    } catch (e) { showError(box, e); }
  });

  const drillRuns = runs.runs.filter((r) => r.actor === "scheduler:drill");
  const trig = triggers.triggers.find((t) => t.runbook === name);
  page("Runbook " + name, box,
    h("dl", { class: "kv" },
      h("dt", {}, "Current version"), h("dd", {}, String(rb.version), " ", h("span", { class: "mono muted" }, rb.digest)),
      h("dt", {}, "Readiness"), h("dd", {}, readiness ? [badge(readiness.state),
        readiness.last_pass_at ? " last passed " + readiness.last_pass_at : " never passed a live drill"] : "unknown"),
      h("dt", {}, "Description"), h("dd", {}, def.description || "")),
    h("h2", {}, "Switch"), runbookSwitches(switches, name),
    start,
    h("h2", {}, "Steps"),
    table(["Step", "Kernel", "Targets", "When"], [...def.steps.map((s) => [s.id, s.kernel || "approval", (s.targets || []).join(", "), s.when || ""]),
      ...(def.on_failure || []).map((s) => [s.id + " (on failure)", s.kernel || "approval", (s.targets || []).join(", "), s.when || ""])]),
    h("h2", {}, "Kernels and what they may touch"),
    table(["Kernel", "Digest", "Idempotent", "Capabilities"], kernels.map(([ref, k]) => k.error ? [ref, k.error, "", ""] : [
      h("a", { href: "/console/kernels#" + encodeURIComponent(ref) }, ref), h("span", { class: "mono" }, String(k.digest).slice(0, 19)),
      k.manifest && k.manifest.idempotent ? "yes" : "no", capabilities(k.manifest && k.manifest.capabilities)]), "no kernels"),
    h("h2", {}, "Triggers"),
    table(["Source", "Match", "Mode", "Cooldown", "Breaker"], (def.triggers || []).map((t, i) => {
      const b = trig && trig.triggers[i];
      return [t.source, JSON.stringify(t.match || {}), t.mode || "dry-run", t.cooldown || "5m",
        b && b.breaker_open ? h("span", {}, badge("open"), " ", b.breaker_scope === "key" ? "keys: " + b.open_keys.join(", ") : "whole runbook") : badge("closed")];
    }), "no alert triggers"),
    h("h2", {}, "Drill history"),
    def.drill ? h("p", {}, "Schedule: ", h("code", {}, JSON.stringify(def.drill))) : h("p", { class: "muted" }, "No drill schedule."),
    runsTable(drillRuns.slice(0, 20), "no drill has run"),
    h("h2", {}, "Recent runs"), runsTable(runs.runs.slice(0, 20), "no runs"),
    h("h2", {}, "Versions"),
    table(["Version", "Digest", "Published"], versions.versions.slice().reverse().map((v) => [String(v.version), h("span", { class: "mono" }, v.digest), v.published_at + " by " + v.published_by])),
    nums.length > 1 ? [diffForm, diffOut] : null,
    h("details", {}, h("summary", {}, "Source of version " + rb.version), pre(rb.source)));
}

async function runsPage() {
  const params = new URLSearchParams(location.search);
  const data = await api("GET", "/api/v1/runs" + q({ status: params.get("status"), runbook: params.get("runbook"), before: params.get("before"), limit: 50 }));
  page("Runs", runsTable(data.runs, "no runs"),
    data.next ? h("a", { href: "/console/runs" + q({ status: params.get("status"), runbook: params.get("runbook"), before: data.next }) }, "Older runs") : null);
}

// The targets a live run of this plan would touch, from its steps.
function planTargets(run) {
  return [...new Set(run.steps.flatMap((s) => s.targets || []))];
}

function hostCallsTable(calls) {
  return table(["Target", "Call", "Effect", "Simulated or real", "Result"], calls.map((c) => [
    c.target || "", h("code", {}, c.command || c.url || c.kind || JSON.stringify(c)),
    c.effect || "", badge(c.simulated ? "simulated" : "real"),
    c.exit_code !== undefined && c.exit_code !== null ? "exit " + c.exit_code : c.status !== undefined ? "status " + c.status : c.error || "",
  ]), "no host calls");
}

function stepItem(s) {
  const attempts = s.attempts > 1 ? " · " + s.attempts + " attempts" : "";
  return h("li", { class: "st-" + s.status },
    h("h3", {}, s.id, " ", badge(s.status), " ", h("span", { class: "muted" }, s.kernel + (s.phase === "on_failure" ? " · on failure" : "") + attempts + (s.duration_ms != null ? " · " + s.duration_ms + " ms" : ""))),
    s.error ? h("div", { class: "error" }, s.error) : null,
    s.targets_detail && s.targets_detail.length
      ? table(["Target", "Status", "Attempts", "Error"], s.targets_detail.map((t) => [t.target, badge(t.status), String(t.attempts), t.error || ""]))
      : null,
    s.host_calls && s.host_calls.length ? [h("h4", {}, "Host calls"), hostCallsTable(s.host_calls)] : null,
    s.output != null ? h("details", { "data-key": s.phase + ":" + s.id + ":output" }, h("summary", {}, "Output"), pre(s.output)) : null,
    s.logs && s.logs.length ? h("details", { "data-key": s.phase + ":" + s.id + ":logs" }, h("summary", {}, "Logs (" + s.logs.length + ")"), pre(s.logs.map((l) => typeof l === "string" ? l : (l.level ? l.level + ": " : "") + (l.message || JSON.stringify(l))).join("\n"))) : null);
}

function decisionForm(label, cls, needReason, onSubmit) {
  const text = h("input", { type: "text", name: "reason", size: 30, required: needReason });
  const form = h("form", { class: "inline" }, field(needReason ? "Reason" : "Comment", text), h("button", { type: "submit", class: cls }, label));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const b = form.querySelector("button");
    b.disabled = true;
    try { await onSubmit(text.value); } catch (e) { showError(main, e); } finally { b.disabled = false; }
  });
  return form;
}

function runActions(run) {
  const id = encodeURIComponent(run.run_id);
  const me = session.me;
  const out = h("div", { class: "actions" });
  const pendingApproval = run.pending_approval;
  if (pendingApproval) {
    const spec = pendingApproval.spec || {};
    out.append(h("section", { class: "card", "aria-labelledby": "appr-h" },
      h("h2", { id: "appr-h" }, "Approval needed: step " + pendingApproval.step),
      h("p", {}, (spec.reason || "") + " Needs " + spec.required + " approval(s)" + (spec.roles && spec.roles.length ? " from " + spec.roles.join(", ") : "") + "."),
      h("p", {}, "Two-person rule: ", run.actor, " started this run and cannot approve it."),
      table(["Who", "Decision", "Comment", "At"], (pendingApproval.decisions || []).map((d) => [d.approver, d.decision, d.comment, d.at || ""]), "no decision yet"),
      me.may.approve && me.actor !== run.actor
        ? [decisionForm("Approve", "primary", false, (c) => api("POST", "/api/v1/runs/" + id + "/approve", { comment: c })),
          decisionForm("Deny", "danger", false, (c) => api("POST", "/api/v1/runs/" + id + "/deny", { comment: c }))]
        : h("p", { class: "muted" }, me.actor === run.actor ? "You started this run: someone else must approve it." : "Your role may not approve.")));
  }
  const pending = ["queued", "running", "awaiting-approval"].includes(run.status);
  if (pending && run.cancel_requested) {
    out.append(h("p", { class: "notice" }, "Cancellation requested (" + run.cancel_requested + "): the run stops at its next step boundary; the step in progress finishes first."));
  } else if (pending && me.may.cancel_run) {
    out.append(decisionForm("Cancel the run", "danger", true, (r) => api("POST", "/api/v1/runs/" + id + "/cancel", { reason: r })));
  }
  if (run.status === "needs-attention" && (me.may.start_run || me.may.cancel_run)) {
    out.append(h("div", {}, h("p", { class: "notice" }, "This run stopped for a person to decide. Check the targets, then:"),
      me.may.start_run ? [
        decisionForm("Resume (run the step again)", "primary", true, (r) => api("POST", "/api/v1/runs/" + id + "/resume", { reason: r })),
        decisionForm("Skip the step", "", true, (r) => api("POST", "/api/v1/runs/" + id + "/skip", { reason: r }))] : null,
      me.may.cancel_run
        ? decisionForm("Abandon the run", "danger", true, (r) => api("POST", "/api/v1/runs/" + id + "/abandon", { reason: r }))
        : null));
  }
  if (run.mode === "dry-run" && run.status === "succeeded" && !run.draft && me.may.start_run) {
    out.append(h("p", {}, actionButton("Run live from this plan…", "primary", main, () => confirmLive(run))));
  }
  return out;
}

// "Run live" from a dry-run's plan: a confirmation that names the runbook,
// its version and the targets; a runbook that has not passed a live drill
// needs an explicit, audited override.
async function confirmLive(run) {
  const targets = planTargets(run);
  const { runbooks } = await api("GET", "/api/v1/drills");
  const readiness = runbooks.find((r) => r.runbook === run.runbook && r.version === run.runbook_version);
  const ready = readiness && readiness.state === "ready";
  const force = h("input", { type: "checkbox", name: "force_untested" });
  const confirmBtn = h("button", { type: "button", class: "danger" }, "Run " + run.runbook + " live");
  const dialog = h("dialog", { "aria-labelledby": "live-h" },
    h("h2", { id: "live-h" }, "Run " + run.runbook + " version " + run.runbook_version + " live?"),
    h("p", {}, "This makes the changes of this plan for real, on: ", h("strong", { class: "mono" }, targets.join(", ") || "(no targets)"), "."),
    h("p", {}, (run.planned_changes || []).length + " change(s) planned."),
    ready ? null : h("div", { class: "error" },
      "This version is ", badge(readiness ? readiness.state : "never-drilled"), ": it has not passed a live drill within its max_age.",
      h("label", {}, force, " Run it anyway (recorded in the audit log)")),
    h("div", { class: "inline" }, confirmBtn, h("button", { type: "button", onclick: () => { dialog.close(); dialog.remove(); } }, "Cancel")));
  confirmBtn.addEventListener("click", async () => {
    confirmBtn.disabled = true;
    try {
      const r = await api("POST", "/api/v1/runs", {
        runbook: run.runbook, version: run.runbook_version, mode: "live",
        inputs: run.inputs || {}, force_untested: !ready && force.checked,
      });
      location.assign("/console/runs/" + encodeURIComponent(r.run_id));
    } catch (e) { showError(dialog, e); } finally { confirmBtn.disabled = false; }
  });
  document.body.append(dialog);
  dialog.showModal();
}

// The run page's parts. Live updates re-render the header, plan and
// timeline in place; the actions (forms) only when the run's status,
// approval or cancel request changed, so a half-typed reason is never
// disturbed; open <details> stay open.
function runSkeleton(where) {
  const parts = {
    head: h("div", {}), actions: h("div", { class: "actions" }), plan: h("div", {}),
    timeline: h("ol", { class: "timeline", id: "timeline" }), foot: h("p", {}), actionsKey: null,
  };
  fill(where, [parts.head, parts.actions, parts.plan, h("h2", {}, "Timeline"), parts.timeline, parts.foot]);
  return parts;
}

function renderRun(run, parts) {
  fill(parts.head, [
    h("dl", { class: "kv" },
      h("dt", {}, "Status"), h("dd", { id: "run-status", "aria-live": "polite" }, badge(run.status)),
      h("dt", {}, "Runbook"), h("dd", {}, runbookLink(run.runbook), " version " + run.runbook_version + (run.draft ? " (draft)" : "")),
      h("dt", {}, "Mode"), h("dd", {}, run.mode),
      h("dt", {}, "Started by"), h("dd", {}, run.actor),
      h("dt", {}, "Started"), h("dd", {}, run.started_at),
      h("dt", {}, "Finished"), h("dd", {}, run.finished_at || "—")),
    run.error ? h("div", { class: "error" }, run.error) : null]);
  const key = JSON.stringify([run.status, run.pending_approval || null, run.cancel_requested || null]);
  if (parts.actionsKey !== key) {
    parts.actionsKey = key;
    fill(parts.actions, runActions(run));
  }
  fill(parts.plan, run.mode === "dry-run"
    ? [h("h2", {}, "Plan: the changes a live run would make"), hostCallsTable(run.planned_changes || [])]
    : null);
  const open = new Set([...parts.timeline.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  fill(parts.timeline, run.steps.map(stepItem));
  parts.timeline.querySelectorAll("details").forEach((d) => { if (open.has(d.dataset.key)) d.open = true; });
  fill(parts.foot, h("a", { href: "/console/audit" + q({ run: run.run_id }) }, "Audit records of this run"));
}

async function runPage(id) {
  const body = h("div", {});
  const live = h("p", { class: "muted", id: "live" }, "Connecting to live updates…");
  page("Run " + id, live, body);
  const parts = runSkeleton(body);
  renderRun(await api("GET", "/api/v1/runs/" + encodeURIComponent(id)), parts);
  const events = new EventSource("/api/v1/runs/" + encodeURIComponent(id) + "/events");
  let last = "";
  events.addEventListener("run", (ev) => {
    if (ev.data === last) return;
    last = ev.data;
    const run = JSON.parse(ev.data);
    renderRun(run, parts);
    const settled = !["queued", "running", "awaiting-approval", "needs-attention"].includes(run.status);
    live.textContent = settled ? "The run has finished." : "Updating live.";
    if (settled) events.close();
  });
  events.addEventListener("error", () => { live.textContent = "Live updates interrupted; reconnecting…"; });
}

async function auditPage() {
  const params = new URLSearchParams(location.search);
  const inputs = {};
  const form = h("form", { class: "inline", method: "get", action: "/console/audit" },
    ["actor", "action", "runbook", "run", "since"].map((k) => {
      inputs[k] = h("input", { type: "text", name: k, value: params.get(k) || "", size: k === "run" ? 36 : 18, placeholder: k === "since" ? "2026-01-01T00:00:00Z" : "" });
      return field(k[0].toUpperCase() + k.slice(1), inputs[k]);
    }),
    h("button", { type: "submit" }, "Filter"));
  const [verify, data] = await Promise.all([
    api("GET", "/api/v1/audit/verify").catch((e) => ({ error: e.message })),
    api("GET", "/api/v1/audit" + q({ actor: params.get("actor"), action: params.get("action"), run: params.get("run"), since: params.get("since"), limit: 500 })),
  ]);
  const rb = params.get("runbook");
  // A record belongs to a runbook when its subject or details name it.
  const records = (data.records || []).filter((r) => !rb || (r.subject + " " + r.details).includes(rb)).reverse();
  const bad = verify.first_bad;
  const chain = verify.error ? h("p", { class: "error" }, verify.error)
    : h("p", { id: "chain" }, "Hash chain: ", badge(bad ? "failed" : "ok"), " ",
      bad ? "record " + bad.seq + " breaks it: " + bad.problem
        : verify.records + " records verified, head #" + verify.head_seq);
  const details = (r) => { try { return JSON.parse(r.details); } catch { return r.details; } };
  page("Audit", chain, form,
    table(["#", "Time", "Actor", "Action", "Subject", "Outcome", "Run", "Details"], records.map((r) => {
      const d = details(r);
      return [String(r.seq), r.time, r.actor_kind + ":" + r.actor_id, r.action, r.subject, r.outcome,
        r.run_id ? runLink(r.run_id) : "",
        d && typeof d === "object" && Object.keys(d).length ? h("details", {}, h("summary", {}, "details"), pre(d)) : ""];
    }), "no records match"));
}

async function kernelsPage() {
  const data = await api("GET", "/api/v1/kernels");
  page("Kernels", table(["Kernel", "Digest", "Size", "Idempotent", "Capabilities", "Used by", "Published"],
    data.kernels.map((k) => {
      const ref = k.name + "@" + k.version;
      return [h("span", { id: ref }, ref), h("span", { class: "mono" }, k.digest), Math.round(k.size_bytes / 1024) + " KiB",
        k.manifest && k.manifest.idempotent ? "yes" : "no",
        [capabilities(k.manifest && k.manifest.capabilities), h("details", {}, h("summary", {}, "manifest"), pre(k.manifest))],
        k.used_by.length ? k.used_by.map((u, i) => [i ? ", " : "", runbookLink(u.runbook), "@" + u.version]) : "unused",
        k.published_at + " by " + k.published_by];
    }), "no kernels published"));
}

// ---------- router ----------

async function route() {
  const parts = location.pathname.replace(/^\/console\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const [section, arg] = parts;
  if (!section) return overview();
  if (section === "runbooks") return arg ? runbookPage(arg) : runbooksPage();
  if (section === "runs") return arg ? runPage(arg) : runsPage();
  if (section === "audit") return auditPage();
  if (section === "kernels") return kernelsPage();
  page("Not found", h("p", {}, "No console page here. ", h("a", { href: "/console/" }, "Overview")));
}

async function boot() {
  try {
    session.me = await api("GET", "/api/v1/me");
  } catch (e) {
    if (e.status === 401) return signInPage();
    page("Error", errorBox(e));
    return;
  }
  renderWho();
  await renderBanner();
  try {
    await route();
  } catch (e) {
    if (e.status === 401) return signInPage("Your session ended (the token was revoked or the cookie expired). Sign in again.");
    main.prepend(errorBox(e));
  }
}

boot();
