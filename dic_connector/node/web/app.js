// The node's web page: a researcher's and a data owner's view of this node's control API.
//
// Same authentication as the API (the bearer token, in sessionStorage only); every signed
// object (analysis request, approval, standing policy) is built and signed here with the
// person's own key (signing.js), exactly as dic_connector/trust/payloads.py builds it.
// Nothing here can read rows or shares: the API has no such route.

import { call, saveToken, savedToken } from "./api.js";
import { canonicalJson } from "./canonical.js";
import { readForm, renderForm } from "./forms.js";
import { renderResult } from "./results.js";
import { importSigningKey, signed } from "./signing.js";

const FINAL = new Set(["completed", "rejected", "failed", "cancelled"]);
const PENDING = new Set(["submitted", "awaiting_approval"]);
// how often requests are re-read while one is under way, and otherwise
const POLL_ACTIVE_MS = 1000;
const POLL_IDLE_MS = 5000;

const state = { me: null, analyses: [], datasets: [], studies: [], requests: [], key: null,
  poll: null, onNodes: {} };

const $ = (id) => document.getElementById(id);

function node(tag, text = null, attributes = {}) {
  const element = document.createElement(tag);
  if (text !== null) element.textContent = text;
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function say(text, error = false) {
  $("message").textContent = text;
  $("message").className = error ? "error" : "";
}

function show(id, visible) {
  $(id).hidden = !visible;
}

async function guarded(action) {
  try {
    await action();
  } catch (exc) {
    say(exc.message || String(exc), true);
  }
}

function needKey() {
  if (!state.key) throw new Error("Pick your signing key file first (section Signing key).");
  return state.key;
}

function catalogueEntry(name, version) {
  return state.analyses.find((a) => a.name === name && a.version === version);
}

function datasetLabel(id) {
  const d = state.datasets.find((x) => x.id === id);
  return d ? `${d.site}/${d.name}` : id.slice(0, 8);
}

// -- signing in ----------------------------------------------------------------------------

async function signIn() {
  state.me = await call("GET", "/v1/me");
  const { me } = state;
  $("node-name").textContent = `· ${me.node}`;
  $("who-text").textContent = `${me.name} (${me.role}${me.site ? `, site ${me.site}` : ""})`;
  show("sign-in", false);
  show("who", true);
  show("keys", me.role !== "admin");
  show("nodes", true);
  show("researcher", me.role === "researcher");
  show("owner", me.role === "data_owner");
  show("requests", true);
  show("datasets", true);
  renderNodes();
  [state.analyses, state.datasets] = await Promise.all([call("GET", "/v1/analyses"),
    call("GET", "/v1/datasets")]);
  renderDatasets();
  if (me.role === "researcher") {
    await loadStudies();
    renderAnalyses();
  }
  if (me.role === "data_owner") await loadPolicies();
  await loadRequests();
  say("");
}

function signOut() {
  saveToken(null);
  state.key = null;
  window.location.reload();
}

function renderNodes() {
  const list = $("node-list");
  list.replaceChildren();
  for (const peer of state.me.nodes) {
    const item = node("li");
    const link = node("a", peer.name, { href: `${peer.api_url}/ui/` });
    item.appendChild(link);
    if (peer.name === state.me.node) item.appendChild(node("span", " (this node)"));
    list.appendChild(item);
  }
  if (!state.me.nodes.length) list.appendChild(node("li", "standalone node (no peers)"));
}

async function loadKey(file) {
  const text = await file.text();
  const { key, publicKey } = await importSigningKey(text);
  state.key = key;
  $("key-status").textContent = `key loaded (public ${publicKey})`;
  $("key-status").className = "ok";
}

// -- researcher ----------------------------------------------------------------------------

async function loadStudies() {
  state.studies = await call("GET", "/v1/studies");
  const list = $("study-list");
  const select = $("study-select");
  list.replaceChildren();
  select.replaceChildren();
  for (const study of state.studies) {
    list.appendChild(node("li", `${study.title} (${study.id.slice(0, 8)})`));
    select.appendChild(node("option", study.title, { value: study.id }));
  }
  if (!state.studies.length) list.appendChild(node("li", "no study yet"));
}

async function createStudy(event) {
  event.preventDefault();
  const study = await call("POST", "/v1/studies", { title: $("study-title").value.trim() });
  $("study-title").value = "";
  await loadStudies();
  $("study-select").value = study.id;
  say(`Study "${study.title}" created.`);
}

function renderAnalyses() {
  const select = $("analysis-select");
  select.replaceChildren();
  state.analyses.forEach((a, i) => {
    select.appendChild(node("option", `${a.name} v${a.version}`, { value: String(i) }));
  });
  const choices = $("dataset-choices");
  choices.replaceChildren();
  for (const d of state.datasets.filter((x) => x.latest_version)) {
    const label = node("label", null, { class: "choice" });
    const box = node("input", null, { type: "checkbox", name: "dataset", value: d.id });
    label.appendChild(box);
    label.appendChild(document.createTextNode(
      ` ${d.site}/${d.name} (${d.latest_version.row_count} rows)`));
    choices.appendChild(label);
  }
  renderAnalysis();
}

function chosenAnalysis() {
  return state.analyses[Number($("analysis-select").value)];
}

function renderAnalysis() {
  const analysis = chosenAnalysis();
  if (!analysis) return;
  $("analysis-summary").textContent = analysis.summary;
  $("analysis-discloses").textContent = analysis.discloses;
  const columns = [...new Set(state.datasets.flatMap(
    (d) => (d.latest_version ? d.latest_version.columns : [])))];
  renderForm($("parameters"), analysis.parameters_schema, columns);
}

async function submitRequest(event) {
  event.preventDefault();
  const key = needKey();
  const analysis = chosenAnalysis();
  const studyId = $("study-select").value;
  const datasets = [...document.querySelectorAll("input[name=dataset]:checked")]
    .map((box) => box.value).sort();
  if (!studyId) throw new Error("Create or choose a study first.");
  if (!datasets.length) throw new Error("Choose at least one dataset.");
  const payload = { type: "analysis_request", id: crypto.randomUUID(), study_id: studyId,
    researcher: state.me.name, analysis: analysis.name, analysis_version: analysis.version,
    parameters: readForm($("parameters")), datasets };
  const view = await call("POST", `/v1/studies/${studyId}/requests`, await signed(payload, key));
  say(`Request ${view.id} submitted (${view.status}).`);
  await loadRequests();
}

// -- requests (everyone) -------------------------------------------------------------------

/** Final on every node: nothing more to watch. */
function settled(id) {
  const views = state.onNodes[id];
  return Boolean(views) && views.every((v) => FINAL.has(v.status));
}

async function loadRequests() {
  state.requests = await call("GET", "/v1/requests");
  // each node's own status, as this node asks the other two (GET /v1/requests/{id}/nodes)
  await Promise.all(state.requests.filter((r) => !settled(r.id)).map(async (r) => {
    state.onNodes[r.id] = await call("GET", `/v1/requests/${r.id}/nodes`);
  }));
  renderRequests();
  if (state.me.role === "data_owner") renderPending();
  const active = state.requests.some((r) => !FINAL.has(r.status) || !settled(r.id));
  clearTimeout(state.poll);
  state.poll = setTimeout(() => guarded(loadRequests), active ? POLL_ACTIVE_MS : POLL_IDLE_MS);
}

function renderRequests() {
  const body = $("request-table").tBodies[0];
  body.replaceChildren();
  for (const r of state.requests) {
    const row = node("tr", null, { "data-request-id": r.id });
    row.appendChild(node("td", r.id.slice(0, 8), { title: r.id }));
    row.appendChild(node("td", `${r.analysis} v${r.analysis_version}`));
    row.appendChild(node("td", JSON.stringify(r.parameters)));
    row.appendChild(node("td", r.sites.join(", ")));
    row.appendChild(node("td", r.status, { class: `status ${r.status}` }));
    row.appendChild(node("td", r.status_reason || "", { class: "reason" }));
    const nodes = node("td", null, { class: "nodes" });
    for (const view of state.onNodes[r.id] || []) {
      const shown = view.status || (view.reachable ? "not there yet" : "unreachable");
      nodes.appendChild(node("div", `${view.node}: ${shown}`, {
        class: `node-status ${view.status || "unknown"}`, title: view.status_reason || "" }));
    }
    row.appendChild(nodes);
    row.appendChild(node("td", r.approvals.map((a) => `${a.site}: ${a.decision}`).join(", ")));
    const actions = node("td");
    if (r.status === "completed") {
      const button = node("button", "Result", { type: "button", class: "show-result" });
      button.addEventListener("click", () => guarded(() => showResult(r)));
      actions.appendChild(button);
    }
    row.appendChild(actions);
    body.appendChild(row);
  }
}

// -- results -------------------------------------------------------------------------------

async function showResult(request) {
  const result = await call("GET", `/v1/requests/${request.id}/result`);
  const column = request.parameters.column ? `(${request.parameters.column})` : "";
  renderResult(result.aggregates, `${request.analysis}${column} on ${request.sites.join("+")}`);
  $("result").scrollIntoView();
}

// -- data owner ----------------------------------------------------------------------------

function renderPending() {
  const box = $("pending");
  box.replaceChildren();
  const mine = state.requests.filter((r) => PENDING.has(r.status)
    && !r.approvals.some((a) => a.site === state.me.site));
  if (!mine.length) box.appendChild(node("p", "Nothing waits for your decision."));
  for (const r of mine) {
    const card = node("article", null, { class: "request", "data-request-id": r.id });
    card.appendChild(node("h3", `${r.analysis} v${r.analysis_version} · ${r.id}`));
    card.appendChild(node("p", `parameters ${JSON.stringify(r.parameters)} · datasets `
      + `${r.datasets.map(datasetLabel).join(", ")} · sites ${r.sites.join(", ")}`));
    const entry = catalogueEntry(r.analysis, r.analysis_version);
    card.appendChild(node("p", `Opens: ${entry ? entry.discloses : "(not in this node's catalogue)"}`,
      { class: "discloses" }));
    for (const decision of ["approve", "deny"]) {
      const button = node("button", decision === "approve" ? "Approve" : "Deny",
        { type: "button", class: decision });
      button.addEventListener("click", () => guarded(() => confirmDecision(r, decision)));
      card.appendChild(button);
    }
    box.appendChild(card);
  }
}

function confirmDecision(request, decision) {
  needKey();
  const payload = { type: "approval", request_id: request.id, site: state.me.site, decision };
  const entry = catalogueEntry(request.analysis, request.analysis_version);
  $("confirm-title").textContent = `${decision === "approve" ? "Approve" : "Deny"} `
    + `${request.analysis} v${request.analysis_version} for site ${state.me.site}?`;
  $("confirm-discloses").textContent = entry ? entry.discloses : "";
  $("confirm-payload").textContent = canonicalJson(payload);
  const dialog = $("confirm");
  const sign = $("confirm-sign");
  const cancel = $("confirm-cancel");
  const close = () => {
    sign.onclick = null;
    cancel.onclick = null;
    dialog.close();
  };
  cancel.onclick = close;
  sign.onclick = () => guarded(async () => {
    const body = await signed(payload, needKey());
    close();
    await call("POST", `/v1/requests/${request.id}/approvals`, body);
    say(`Signed: ${decision} of ${request.id}.`);
    await loadRequests();
  });
  dialog.showModal();
}

async function loadPolicies() {
  const policies = await call("GET", "/v1/policies");
  const body = $("policy-table").tBodies[0];
  body.replaceChildren();
  for (const p of policies) {
    const row = body.insertRow();
    for (const v of [p.analyses.join(", "), p.columns.join(", "), p.min_cell_count,
      p.min_subset_size ?? "-", p.max_levels ?? "-", p.ledger ? "on" : "-",
      p.expires_at]) row.appendChild(node("td", String(v)));
    const actions = node("td");
    const button = node("button", "Revoke", { type: "button", class: "revoke" });
    button.addEventListener("click", () => guarded(async () => {
      await call("POST", `/v1/policies/${p.id}/revoke`);
      say("Policy revoked.");
      await loadPolicies();
    }));
    actions.appendChild(button);
    row.appendChild(actions);
  }
}

const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

async function createPolicy(event) {
  event.preventDefault();
  const key = needKey();
  const days = Number($("policy-days").value);
  const expires = new Date(Date.now() + days * 86400000).toISOString()
    .replace(/\.\d{3}Z$/, "Z");
  const payload = { type: "policy", site: state.me.site, analyses: list($("policy-analyses").value),
    columns: list($("policy-columns").value), min_cell_count: Number($("policy-k").value),
    expires_at: expires };
  // the settings a policy may tighten (never loosen: the node refuses that, naming it)
  if ($("policy-m").value) payload.min_subset_size = Number($("policy-m").value);
  if ($("policy-levels").value) payload.max_levels = Number($("policy-levels").value);
  if ($("policy-ledger").checked) payload.ledger = true;
  await call("POST", "/v1/policies", await signed(payload, key));
  say("Policy signed and stored.");
  await loadPolicies();
}

// -- datasets ------------------------------------------------------------------------------

function renderDatasets() {
  const body = $("dataset-table").tBodies[0];
  body.replaceChildren();
  for (const d of state.datasets) {
    const row = body.insertRow();
    const v = d.latest_version;
    for (const value of [d.site, d.name, v ? v.row_count : "none committed",
      v ? v.columns.join(", ") : ""]) row.appendChild(node("td", String(value)));
  }
}

// -- wiring --------------------------------------------------------------------------------

function start() {
  $("sign-in").addEventListener("submit", (event) => guarded(async () => {
    event.preventDefault();
    saveToken($("token").value.trim());
    $("token").value = "";
    try {
      await signIn();
    } catch (exc) {
      saveToken(null); // a refused token is not kept
      throw exc;
    }
  }));
  $("sign-out").addEventListener("click", signOut);
  $("key-file").addEventListener("change", (event) => guarded(
    () => loadKey(event.target.files[0])));
  $("study-form").addEventListener("submit", (event) => guarded(() => createStudy(event)));
  $("analysis-select").addEventListener("change", renderAnalysis);
  $("analysis-form").addEventListener("submit", (event) => guarded(() => submitRequest(event)));
  $("policy-form").addEventListener("submit", (event) => guarded(() => createPolicy(event)));
  $("refresh").addEventListener("click", () => guarded(loadRequests));
  if (savedToken()) guarded(signIn);
}

start();
