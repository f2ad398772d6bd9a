// sailmesh dashboard: a small single-page app over the JSON API next to it (api/graph, api/history, api/proxies,
// api/config). No framework, no build step; the graph layout is a layered left-to-right drawing in plain SVG.
"use strict";

const SEARCH = location.search;  // keeps ?prometheus=URL on every API call
const COLORS = { healthy: "#3e8635", degraded: "#f0ab00", failure: "#c9190b", idle: "#8a8d90" };
const SVG = "http://www.w3.org/2000/svg";
const view = document.getElementById("view");
let timer = null;
let generation = 0;  // a view's refreshes stop drawing once the user has moved on

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(path, params) {
  const q = new URLSearchParams(SEARCH);
  for (const [k, v] of Object.entries(params || {})) q.set(k, v);
  const qs = q.toString();
  const resp = await fetch("api/" + path + (qs ? "?" + qs : ""), { cache: "no-store" });
  const body = await resp.json();
  if (!resp.ok) throw new Error((body.errors || [resp.statusText]).join("; "));
  return body;
}

function fmt(v, digits) {
  if (v === null || v === undefined) return "–";
  return Number(v).toFixed(digits);
}

function pct(v) { return fmt(100 * (v || 0), (v > 0 && v < 0.01) ? 2 : 1) + "%"; }

function nodeHref(n) {
  if (n.kind === "service") return "#/service/" + encodeURIComponent(n.host || n.id.slice(8));
  if (n.kind === "workload") return "#/workload/" + encodeURIComponent(n.namespace || "") + "/" + encodeURIComponent(n.name);
  return "#/graph";
}

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// -- the service graph ------------------------------------------------------------------------------------------

function layout(nodes, edges) {
  // Column = longest path from a root (cycle-safe: at most |nodes| rounds); rows ordered by the neighbours'
  // rows to the left (one barycentre pass), then by id.
  const depth = Object.fromEntries(nodes.map(n => [n.id, 0]));
  for (let round = 0; round < nodes.length; round++) {
    let changed = false;
    for (const e of edges) {
      if (e.source === e.destination || !(e.source in depth) || !(e.destination in depth)) continue;
      const d = depth[e.source] + 1;
      if (d > depth[e.destination] && d < nodes.length) { depth[e.destination] = d; changed = true; }
    }
    if (!changed) break;
  }
  const columns = [];
  for (const n of nodes) (columns[depth[n.id]] = columns[depth[n.id]] || []).push(n);
  const row = {};
  columns.forEach((col, c) => {
    const score = n => {
      const before = edges.filter(e => e.destination === n.id && e.source in row).map(e => row[e.source]);
      return before.length ? before.reduce((a, b) => a + b, 0) / before.length : 0;
    };
    col.sort((a, b) => (c ? score(a) - score(b) : 0) || a.id.localeCompare(b.id));
    col.forEach((n, i) => { row[n.id] = i - (col.length - 1) / 2; });
  });
  const tallest = Math.max(1, ...columns.map(c => (c || []).length));
  const colWidth = 210, rowHeight = 110;
  const height = Math.max(260, tallest * rowHeight + 60);
  const pos = {};
  for (const n of nodes) pos[n.id] = { x: 90 + depth[n.id] * colWidth, y: height / 2 + row[n.id] * rowHeight };
  return { pos, width: 180 + (columns.length - 1) * colWidth, height };
}

function drawLock(parent, x, y) {
  const g = el("g", { class: "lock", transform: `translate(${x},${y})` }, parent);
  el("title", {}, g).textContent = "mTLS";
  el("path", { d: "M-3,-1 v-3 a3,3 0 0 1 6,0 v3" }, g);
  el("rect", { x: -4.5, y: -1, width: 9, height: 7, rx: 1 }, g);
  return g;
}

function drawGraph(container, data) {
  const { pos, width, height } = layout(data.nodes, data.edges);
  container.innerHTML = "";
  const svg = el("svg", { id: "graph", viewBox: `0 0 ${Math.max(width, 600)} ${height}`, role: "img" }, container);
  svg.style.height = height + "px";
  const defs = el("defs", {}, svg);
  for (const [h, color] of Object.entries(COLORS)) {
    const m = el("marker", { id: "arrow-" + h, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7,
      markerHeight: 7, orient: "auto-start-reverse" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", fill: color }, m);
  }
  const edgeLayer = el("g", {}, svg);
  for (const e of data.edges) {
    const a = pos[e.source], b = pos[e.destination];
    if (!a || !b) continue;
    const g = el("g", {
      class: "edge " + e.health, "data-edge": e.source + "->" + e.destination, "data-source": e.source,
      "data-destination": e.destination, "data-health": e.health, "data-rps": e.rps,
      "data-error-rate": e.error_rate, "data-mtls": e.mtls,
    }, edgeLayer);
    const x1 = a.x + 22, x2 = b.x - 24, mx = (x1 + x2) / 2;
    el("path", { class: "line", d: `M${x1},${a.y} C${mx},${a.y} ${mx},${b.y} ${x2},${b.y}`,
      stroke: COLORS[e.health] || COLORS.idle, "marker-end": `url(#arrow-${e.health in COLORS ? e.health : "idle"})` }, g);
    el("title", {}, g).textContent = `${e.source} → ${e.destination}\n${e.rps} rps, ${pct(e.error_rate)} errors, ` +
      `p99 ${fmt(e.p99_ms, 1)} ms${e.mtls ? ", mTLS" : ""}\ncodes: ${JSON.stringify(e.codes)}`;
    const ly = (a.y + b.y) / 2 - 21;  // above the curve's midpoint: rate, then errors and p99
    const label = el("text", { x: mx + (e.mtls ? 7 : 0), y: ly, "text-anchor": "middle",
      fill: COLORS[e.health] || COLORS.idle, "font-weight": 600 }, g);
    label.textContent = `${fmt(e.rps, 2)} rps`;
    const sub = el("text", { x: mx, y: ly + 13, "text-anchor": "middle", fill: "#6a6e73" }, g);
    sub.textContent = `${pct(e.error_rate)} err · p99 ${fmt(e.p99_ms, 0)} ms`;
    if (e.mtls) drawLock(g, mx - 30, ly - 4);
  }
  const nodeLayer = el("g", {}, svg);
  for (const n of data.nodes) {
    const p = pos[n.id];
    const link = el("a", { href: nodeHref(n) }, nodeLayer);
    const g = el("g", { class: "node " + n.kind, "data-node": n.id, "data-health": n.health,
      transform: `translate(${p.x},${p.y})` }, link);
    const stroke = n.health === "idle" ? "#4f5255" : COLORS[n.health];
    if (n.kind === "service") el("polygon", { class: "shape", points: "0,-20 19,14 -19,14", stroke }, g);
    else if (n.kind === "workload") el("circle", { class: "shape", r: 17, stroke }, g);
    else el("rect", { class: "shape", x: -16, y: -16, width: 32, height: 32, rx: 4, stroke }, g);
    el("text", { y: 34 }, g).textContent = n.name || n.id;
    el("text", { class: "sub", y: 47 }, g).textContent =
      n.kind === "workload" ? [n.namespace, n.version].filter(Boolean).join(" · ") : (n.namespace || n.kind);
  }
}

async function showGraph(gen) {
  view.innerHTML = `<h1>Service graph</h1>
    <div class="legend"><span><i style="background:${COLORS.healthy}"></i>healthy</span>
      <span><i style="background:${COLORS.degraded}"></i>degraded (5xx &gt; 0 %, 4xx &gt; 10 %)</span>
      <span><i style="background:${COLORS.failure}"></i>failure (5xx &gt; 10 %, 4xx &gt; 20 %)</span>
      <span><i style="background:${COLORS.idle}"></i>idle</span><span>○ workload △ service · lock: mTLS</span>
      <span id="graph-time"></span></div>
    <div id="graph-error"></div><div id="graph-box"></div>
    <h2>Edges</h2><table id="edges"><thead><tr><th>source</th><th>destination</th><th>rps</th><th>errors</th>
    <th>p50 ms</th><th>p99 ms</th><th>mTLS</th><th>health</th></tr></thead><tbody></tbody></table>`;
  const refresh = async () => {
    let data;
    try { data = await api("graph"); } catch (err) { if (gen === generation) showError("graph-error", err); return; }
    if (gen !== generation) return;
    document.getElementById("graph-error").innerHTML = data.error ? `<div class="error-box">${esc(data.error)}</div>` : "";
    sourceLine(data);
    document.getElementById("graph-time").textContent = data.warming_up ? "waiting for the second scrape…" :
      `window ending ${new Date(data.time * 1000).toLocaleTimeString()}`;
    if (!data.nodes.length) {
      document.getElementById("graph-box").innerHTML = `<div class="card muted">No requests seen yet: send some traffic through the mesh.</div>`;
    } else {
      drawGraph(document.getElementById("graph-box"), data);
    }
    const names = Object.fromEntries(data.nodes.map(n => [n.id, n]));
    const label = id => { const n = names[id] || { id, name: id }; return `<a href="${nodeHref(n)}">${esc(n.name || id)}</a>`; };
    document.querySelector("#edges tbody").innerHTML = data.edges.map(e => `<tr data-edge="${esc(e.source + "->" + e.destination)}">
      <td>${label(e.source)}</td><td>${label(e.destination)}</td><td>${fmt(e.rps, 2)}</td><td>${pct(e.error_rate)}</td>
      <td>${fmt(e.p50_ms, 1)}</td><td>${fmt(e.p99_ms, 1)}</td><td>${e.mtls ? "yes" : "no"}</td>
      <td><span class="chip ${esc(e.health)}">${esc(e.health)}</span></td></tr>`).join("");
  };
  await refresh();
  timer = setInterval(refresh, 2000);
}

function sourceLine(data) {
  const where = data.source === "prometheus" ? `Prometheus ${data.url}` :
    `${data.targets} proxies scraped` + (data.down && Object.keys(data.down).length ? `, ${Object.keys(data.down).length} not answering` : "");
  document.getElementById("source").textContent = `data: ${where} · every ${data.interval_s} s`;
}

function showError(id, err) {
  const box = document.getElementById(id);
  if (box) box.innerHTML = `<div class="error-box">${esc(err.message || err)}</div>`;
}

// -- service and workload pages ---------------------------------------------------------------------------------

function lineChart(title, points, series, unit) {
  const W = 560, H = 200, L = 46, R = 10, T = 12, B = 24;
  const times = points.map(p => p.time);
  const values = points.flatMap(p => series.map(s => p[s.key])).filter(v => v !== null && v !== undefined);
  const ymax = Math.max(1e-9, ...values) * 1.15 || 1;
  const t0 = Math.min(...times), t1 = Math.max(...times);
  const x = t => L + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (W - L - R);
  const y = v => T + (1 - v / ymax) * (H - T - B);
  let svg = `<svg viewBox="0 0 ${W} ${H}">`;
  for (let i = 0; i <= 4; i++) {
    const v = ymax * i / 4;
    svg += `<line class="grid" x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}"/><text x="${L - 4}" y="${y(v) + 3}" text-anchor="end">${v < 10 ? v.toFixed(2) : v.toFixed(0)}</text>`;
  }
  svg += `<line class="axis" x1="${L}" x2="${L}" y1="${T}" y2="${H - B}"/><line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}"/>`;
  if (points.length) {
    svg += `<text x="${L}" y="${H - 6}">${new Date(t0 * 1000).toLocaleTimeString()}</text>`;
    svg += `<text x="${W - R}" y="${H - 6}" text-anchor="end">${new Date(t1 * 1000).toLocaleTimeString()}</text>`;
  }
  for (const s of series) {
    let d = "", pen = "M";
    for (const p of points) {
      const v = p[s.key];
      if (v === null || v === undefined) { pen = "M"; continue; }
      d += `${pen}${x(p.time).toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
    }
    if (d) svg += `<path d="${d}" stroke="${s.color}"><title>${esc(s.label)}</title></path>`;
  }
  svg += "</svg>";
  const legend = series.map(s => `<span><i style="background:${s.color}"></i>${esc(s.label)}</span>`).join("");
  return `<div class="card chart"><b>${esc(title)}</b> <span class="muted">${esc(unit)}</span><div class="legend">${legend}</div>${svg}</div>`;
}

async function showNode(gen, nodeId, title) {
  view.innerHTML = `<p><a href="#/graph">← graph</a></p><h1>${esc(title)}</h1><div id="node-error"></div>
    <div class="charts" id="charts"></div><h2>Inbound</h2><div id="inbound"></div><h2>Outbound</h2><div id="outbound"></div>`;
  const edgeTable = (edges, names, side) => edges.length ? `<table><thead><tr><th>${side}</th><th>rps</th><th>errors</th>
    <th>p99 ms</th><th>codes</th><th>mTLS</th><th>health</th></tr></thead><tbody>${edges.map(e => {
      const other = names[side === "from" ? e.source : e.destination] || { id: "?", name: "?" };
      return `<tr data-edge="${esc(e.source + "->" + e.destination)}"><td><a href="${nodeHref(other)}">${esc(other.name || other.id)}</a></td>
      <td>${fmt(e.rps, 2)}</td><td>${pct(e.error_rate)}</td><td>${fmt(e.p99_ms, 1)}</td><td>${esc(Object.entries(e.codes).map(([c, r]) => `${c}: ${fmt(r, 2)}/s`).join(", "))}</td>
      <td>${e.mtls ? "yes" : "no"}</td><td><span class="chip ${esc(e.health)}">${esc(e.health)}</span></td></tr>`;
    }).join("")}</tbody></table>` : `<div class="card muted">none in the last window</div>`;
  const refresh = async () => {
    let hist, graph;
    try { [hist, graph] = await Promise.all([api("history", { node: nodeId }), api("graph")]); }
    catch (err) { if (gen === generation) showError("node-error", err); return; }
    if (gen !== generation) return;
    sourceLine(graph);
    document.getElementById("charts").innerHTML =
      lineChart("Request rate", hist.points, [{ key: "rps", label: "requests/s", color: "#0066cc" }], "req/s") +
      lineChart("Latency", hist.points, [{ key: "p50_ms", label: "p50", color: "#3e8635" },
        { key: "p90_ms", label: "p90", color: "#f0ab00" }, { key: "p99_ms", label: "p99", color: "#c9190b" }], "ms") +
      lineChart("Error rate", hist.points.map(p => ({ ...p, error_pct: p.error_rate === null ? null : 100 * p.error_rate })),
        [{ key: "error_pct", label: "5xx %", color: "#c9190b" }], "%");
    const names = Object.fromEntries(graph.nodes.map(n => [n.id, n]));
    document.getElementById("inbound").innerHTML = edgeTable(graph.edges.filter(e => e.destination === nodeId), names, "from");
    document.getElementById("outbound").innerHTML = edgeTable(graph.edges.filter(e => e.source === nodeId), names, "to");
  };
  await refresh();
  timer = setInterval(refresh, 2000);
}

// -- proxies ----------------------------------------------------------------------------------------------------

async function showProxies(gen) {
  view.innerHTML = `<h1>Proxies</h1><p class="muted">xDS sync state per type, as <code>sailmesh proxy-status</code>
    shows it: SYNCED when the proxy acknowledged the last version sent.</p><div id="proxy-error"></div><div id="proxies"></div>`;
  const refresh = async () => {
    let data;
    try { data = await api("proxies"); } catch (err) { if (gen === generation) showError("proxy-error", err); return; }
    if (gen !== generation) return;
    const chip = s => `<span class="chip ${s === "NOT SENT" ? "NOT-SENT" : esc(s.split(" ")[0])}${s.includes("(") ? " error" : ""}">${esc(s)}</span>`;
    const problems = p => Object.entries(p.types || {}).filter(([, t]) => t.nack || t.error)
      .map(([k, t]) => `<div class="msg">${esc(k)}: ${esc(t.nack || t.error)}</div>`).join("");
    document.getElementById("proxies").innerHTML = data.proxies.length ? `<table><thead><tr><th>name</th><th>type</th>
      <th>address</th><th>CDS</th><th>LDS</th><th>EDS</th><th>RDS</th><th>version</th><th>connected</th></tr></thead><tbody>
      ${data.proxies.map(p => `<tr data-proxy="${esc(p.proxy)}"><td>${esc(p.name || p.proxy)}${problems(p)}</td><td>${esc(p.type)}</td>
      <td>${esc(p.ip)}</td>${["CDS", "LDS", "EDS", "RDS"].map(t => `<td>${chip(p.sync[t])}</td>`).join("")}
      <td>${esc(p.version)}</td><td>${p.connectedAt ? new Date(p.connectedAt * 1000).toLocaleTimeString() : ""}
      ${p.delta ? "(delta)" : ""}</td></tr>`).join("")}</tbody></table>` : `<div class="card muted">No proxy is connected.</div>`;
  };
  await refresh();
  timer = setInterval(refresh, 3000);
}

// -- config and analysis ----------------------------------------------------------------------------------------

async function showConfig(gen) {
  view.innerHTML = `<h1>Config</h1><div class="toolbar"><label><input type="checkbox" id="only-messages">
    only resources with analysis messages</label><button id="reload">reload</button></div>
    <div id="config-error"></div><div id="config"></div>`;
  let data = null;
  const render = () => {
    const only = document.getElementById("only-messages").checked;
    const msg = m => `<div class="msg"><span class="chip ${esc(m.level)}">${esc(m.level)}</span>
      <a href="${esc(m.documentationUrl)}" target="_blank" rel="noopener"><code>${esc(m.code)}</code></a>
      ${esc(m.message)}${m.path ? ` <span class="muted">(${esc(m.path)})</span>` : ""}</div>`;
    let html = "";
    if (data.rejected.length) html += `<div class="card"><b>Rejected by validation</b>${data.rejected.map(r => `<div class="msg">${esc(r)}</div>`).join("")}</div>`;
    if (data.messages.length) html += `<div class="card"><b>Other analysis messages</b>${data.messages.map(m => `<div class="msg">${esc(m.origin)}: ${msg(m)}</div>`).join("")}</div>`;
    const kinds = {};
    for (const r of data.resources) if (!only || r.messages.length) (kinds[r.kind] = kinds[r.kind] || []).push(r);
    for (const [kind, items] of Object.entries(kinds)) {
      html += `<h2>${esc(kind)} <span class="muted">(${items.length})</span></h2>`;
      html += items.map(r => `<div class="card" data-resource="${esc(r.key)}"><b>${esc(r.namespace ? r.namespace + "/" : "")}${esc(r.name)}</b>
        ${r.messages.map(msg).join("")}<details><summary class="muted">spec</summary><pre>${esc(JSON.stringify(r.spec, null, 2))}</pre></details></div>`).join("");
    }
    document.getElementById("config").innerHTML = html || `<div class="card muted">No config.</div>`;
  };
  const load = async () => {
    try { data = await api("config"); } catch (err) { if (gen === generation) showError("config-error", err); return; }
    if (gen === generation) render();
  };
  document.getElementById("only-messages").addEventListener("change", () => data && render());
  document.getElementById("reload").addEventListener("click", load);
  await load();
}

// -- routing ----------------------------------------------------------------------------------------------------

function route() {
  clearInterval(timer);
  const gen = ++generation;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const page = parts[0] || "graph";
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.nav === page);
  if (page === "service") return showNode(gen, "service:" + parts[1], "Service " + parts[1]);
  if (page === "workload") return showNode(gen, `workload:${parts[1]}/${parts[2]}`, `Workload ${parts[1]}/${parts[2]}`);
  if (page === "proxies") return showProxies(gen);
  if (page === "config") return showConfig(gen);
  return showGraph(gen);
}

window.addEventListener("hashchange", route);
route();
