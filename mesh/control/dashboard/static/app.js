// Weir's service graph page: polls /api/graph, draws it with Cytoscape (vendored, no network) and updates
// it in place so positions stay; a click on a workload opens its side panel (/api/node/<workload>).
"use strict";

const POLL_MS = 1500;
const COLUMN = 280, ROW = 90, APP_GAP = 40;
const state = { updates: 0, selected: null, layoutKey: "" };
window.weirDashboard = state;

const cy = cytoscape({
  container: document.getElementById("graph"),
  layout: { name: "preset" },
  minZoom: 0.3, maxZoom: 2.5,
  style: [
    { selector: "node.workload", style: {
      shape: "round-rectangle", width: 150, height: "data(h)", "background-color": "#e8f5e9",
      "border-width": 2, "border-color": "#2e7d32", label: "data(display)", "text-wrap": "wrap",
      "text-max-width": 144, "text-valign": "center", "font-size": 10, color: "#1d2733" } },
    { selector: "node[role = 'gateway']", style: { "background-color": "#e3f2fd", "border-color": "#1565c0" } },
    { selector: "node[role = 'unknown']", style: { "background-color": "#eceff1", "border-color": "#78909c" } },
    { selector: "node[errorRate > 0.01]", style: { "border-color": "#fb8c00" } },
    { selector: "node[errorRate > 0.1]", style: { "border-color": "#e53935", "background-color": "#ffebee" } },
    { selector: "node.app", style: {
      shape: "round-rectangle", "background-color": "#f5f7fa", "border-style": "dashed", "border-color": "#90a4ae",
      "border-width": 1, label: "data(label)", "text-valign": "top", "font-size": 13, "font-weight": "bold",
      padding: 12 } },
    { selector: "node:selected", style: { "border-width": 4, "border-color": "#0d47a1" } },
    { selector: "edge", style: {
      "curve-style": "bezier", "target-arrow-shape": "triangle", width: "mapData(rps, 0, 20, 1.5, 7)",
      "line-color": "#43a047", "target-arrow-color": "#43a047", label: "data(display)", "text-wrap": "wrap",
      "font-size": 9, "text-background-color": "#fff", "text-background-opacity": 0.9,
      "text-background-padding": 2 } },
    { selector: "edge[!mtls]", style: { "line-style": "dashed" } },
    { selector: "edge[errorRate > 0.01]", style: { "line-color": "#fb8c00", "target-arrow-color": "#fb8c00" } },
    { selector: "edge[errorRate > 0.1]", style: { "line-color": "#e53935", "target-arrow-color": "#e53935" } },
    { selector: "edge[rps = 0]", style: { "line-color": "#b0bec5", "target-arrow-color": "#b0bec5", opacity: 0.7 } },
  ],
});
window.cy = cy;

function pct(x) { return x == null ? "–" : `${(100 * x).toFixed(x < 0.1 && x > 0 ? 1 : 0)}%`; }
function ms(x) { return x == null ? "–" : `${x < 10 ? x.toFixed(1) : Math.round(x)} ms`; }

function badgeText(b) {
  if (b.badge === "route") return b.text;
  return b.text ? `${b.badge}: ${b.text}` : b.badge;
}

function nodeData(n) {
  const badges = n.badges.map(badgeText).filter(Boolean);
  const lines = [n.label, ...(n.rps > 0 ? [`${n.rps.toFixed(1)} rps · ${pct(n.errorRate)} 5xx`] : [])];
  if (badges.length) lines.push(badges.map((t) => `[${t}]`).join(" "));
  return { ...n, display: lines.join("\n"), h: 22 + 14 * lines.length + (badges.length > 3 ? 14 : 0) };
}

function edgeData(e) {
  if (e.rps === 0) return { ...e, display: e.mtls ? "idle · mTLS" : "idle" };
  const share = e.share != null && e.share < 1 ? ` · ${pct(e.share)}` : "";
  const display = `${e.rps.toFixed(1)} rps${share}\n${pct(e.errorRate)} 5xx · p99 ${ms(e.p99)}${e.mtls ? " · mTLS" : ""}`;
  return { ...e, display };
}

function update(graph) {
  const wanted = new Set();
  const put = (group, data, classes) => {
    wanted.add(data.id);
    const found = cy.getElementById(data.id);
    if (found.nonempty()) found.data(data);
    else cy.add({ group, data, classes });
  };
  cy.batch(() => {
    graph.groups.forEach((g) => put("nodes", g, "app"));
    graph.nodes.forEach((n) => put("nodes", nodeData(n), "workload"));
    graph.edges.forEach((e) => put("edges", edgeData(e), ""));
    cy.elements().filter((ele) => !wanted.has(ele.id())).remove();
  });
  const key = JSON.stringify([graph.nodes.map((n) => n.id), graph.edges.map((e) => e.id)]);
  if (key !== state.layoutKey) {
    state.layoutKey = key;
    layout(graph);
  }
  state.updates += 1;
  const label = graph.config.label ? ` · ${graph.config.label.release || JSON.stringify(graph.config.label)}` : "";
  setStatus(`config revision ${graph.config.revision}${label} · ${graph.proxies} proxies scraped · ` +
            `updated ${new Date().toLocaleTimeString()}`, false);
}

// Columns by call depth between apps (ingress first), versions of an app stacked inside its group.
function layout(graph) {
  const appOf = new Map(graph.nodes.map((n) => [n.id, n.parent ? n.app : n.id]));
  const callees = new Map();
  graph.edges.forEach((e) => {
    const [a, b] = [appOf.get(e.source), appOf.get(e.target)];
    if (a !== b) callees.set(a, [...(callees.get(a) || []), b]);
  });
  const rank = new Map([...new Set(appOf.values())].map((a) => [a, 0]));
  for (let pass = 0; pass < rank.size; pass++) {  // longest path, bounded: cycles stop growing
    callees.forEach((to, from) => to.forEach((b) => rank.set(b, Math.max(rank.get(b), rank.get(from) + 1))));
  }
  const columns = new Map();
  [...rank.keys()].sort().forEach((a) => columns.set(rank.get(a), [...(columns.get(rank.get(a)) || []), a]));
  const members = (app) => graph.nodes.filter((n) => appOf.get(n.id) === app).sort((x, y) => x.id < y.id ? -1 : 1);
  columns.forEach((apps, r) => {
    let y = 0;
    apps.forEach((app) => {
      members(app).forEach((n) => { cy.getElementById(n.id).position({ x: r * COLUMN, y }); y += ROW; });
      y += APP_GAP;
    });
  });
  cy.fit(undefined, 40);
}

function setStatus(text, error) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

async function poll() {
  try {
    const response = await fetch("/api/graph", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    update(await response.json());
    if (state.selected && state.updates % 2 === 0) await showPanel(state.selected);
  } catch (err) {
    setStatus(`control plane unreachable (${err.message}); retrying`, true);
  }
  setTimeout(poll, POLL_MS);
}

// -- side panel -----------------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => (k === "class" ? (node.className = v) : node.setAttribute(k, v)));
  children.flat().forEach((c) => node.append(c instanceof Node ? c : document.createTextNode(String(c))));
  return node;
}

function table(headers, rows, classes) {
  if (!rows.length) return el("p", { class: "note" }, "none");
  return el("table", {}, el("tr", {}, headers.map((h) => el("th", {}, h))),
    rows.map((r) => el("tr", {}, r.map((c, i) => el("td", classes && classes[i] ? { class: classes[i] } : {}, c)))));
}

function edgeRows(edges, end) {
  return edges.map((e) => [e[end], e.rps.toFixed(2), pct(e.share), pct(e.errorRate), ms(e.p50), ms(e.p99),
    e.mtls ? "yes" : "no"]);
}

function badgeList(badges) {
  return badges.map((b) => el("span", { class: `badge ${b.badge}` }, badgeText(b) || b.badge));
}

function render(data) {
  const n = data.node;
  const config = data.config.map((c) => el("div", {},
    el("strong", {}, `${c.kind} ${c.namespace}/${c.name || "(effective)"}`), " ", badgeList(c.badges),
    c.snippets.map((s) => el("pre", {}, JSON.stringify(s, null, 1)))));
  const requests = data.requests == null ? el("p", { class: "note" }, data.requestsNote)
    : table(["time", "dir", "method", "path", "code", "flags", "ms"], data.requests.slice().reverse().map((r) => [
      String(r.start_time || "").replace(/^.*T/, "").slice(0, 12), (r.direction || "").slice(0, 3), r.method || "",
      r.path || "", r.response_code ?? "", r.response_flags || "-", r.duration_ms ?? r.duration ?? ""]),
    [null, null, null, "path"]);
  return [
    el("h2", {}, n.role === "gateway" ? `ingress (${n.id})` : n.id),
    el("div", { class: "note" }, `${n.role} · app ${n.app}${n.version ? ` · ${n.version}` : ""} · ${n.namespace}`),
    el("div", {}, badgeList(n.badges)),
    el("h3", {}, "Inbound"), table(["from", "rps", "share", "5xx", "p50", "p99", "mTLS"], edgeRows(data.inbound, "source")),
    el("h3", {}, "Outbound"), table(["to", "rps", "share", "5xx", "p50", "p99", "mTLS"], edgeRows(data.outbound, "target")),
    el("h3", {}, "Response codes (per second)"),
    table(["code", "rps"], Object.entries(data.codes).map(([code, rate]) => [code, rate.toFixed(2)])),
    el("h3", {}, "Config in effect"), config.length ? config : el("p", { class: "note" }, "none"),
    el("h3", {}, "Recent requests"), requests,
  ];
}

async function showPanel(workload) {
  const panel = document.getElementById("panel");
  const response = await fetch(`/api/node/${encodeURIComponent(workload)}`, { cache: "no-store" });
  if (state.selected !== workload) return;
  if (!response.ok) {
    panel.replaceChildren(el("p", { class: "note" }, `${workload}: not in the graph any more`));
    return;
  }
  panel.replaceChildren(...render(await response.json()).flat());
}

cy.on("tap", "node.workload", (event) => {
  state.selected = event.target.id();
  showPanel(state.selected).catch((err) => setStatus(`panel: ${err.message}`, true));
});

poll();
