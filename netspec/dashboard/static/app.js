// netspec dashboard: lists runs, follows the ticked ones through server-sent events and draws
// their curves with uPlot; the focused run's net, solver and snapshots are shown below.
"use strict";

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22"];
const CHARTS = ["loss", "accuracy", "lr", "throughput", "other"];
const LIST_EVERY_MS = 3000;

const state = {
  runs: new Map(),      // id -> {info, selected, colour, series: {chart: Map(label -> Map(iter -> value))}, source}
  order: [],
  focus: null,
  plots: {},            // chart -> {u, key}
  dirty: new Set(),
  touched: false,       // the user ticked or unticked a run
};
window.netspecDashboard = state;   // for a look from the browser's console

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? v.toExponential(3) : v.toPrecision(4).replace(/\.?0+$/, "");
}

function bytes(n) {
  const u = ["B", "kB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

// ---- the runs list ----------------------------------------------------------------------

async function refreshList() {
  let data;
  try {
    data = await getJSON("/api/runs");
    setConn("live", "connected");
  } catch (e) {
    setConn("failed", "server unreachable");
    return;
  }
  document.getElementById("roots").textContent = data.roots.join(", ");
  for (const info of data.runs) {
    let run = state.runs.get(info.id);
    if (!run) {
      run = {info, selected: false, colour: PALETTE[state.runs.size % PALETTE.length], series: {}, source: null,
             ended: false};
      for (const c of CHARTS) run.series[c] = new Map();
      state.runs.set(info.id, run);
    }
    const was = run.info.status;
    run.info = info;
    // a finished run that starts again (resumed) is followed again
    if (run.selected && run.ended && info.status === "running" && was !== "running") follow(run);
  }
  state.order = data.runs.map(r => r.id);
  // until the user picks, the newest run is followed (also one that appears after the page opened)
  if (!state.touched && state.order.length && ![...state.runs.values()].some(r => r.selected)) {
    const first = state.runs.get(state.order[0]);
    setSelected(first, true);
    setFocus(first.info.id);
  }
  document.getElementById("no-runs").hidden = state.order.length > 0;
  drawList();
  if (state.focus) refreshDetail();
}

function drawList() {
  const ul = document.getElementById("runs");
  ul.replaceChildren();
  for (const id of state.order) {
    const run = state.runs.get(id), info = run.info;
    const box = el("input", {type: "checkbox", title: "overlay this run's curves"});
    box.checked = run.selected;
    box.addEventListener("click", ev => { ev.stopPropagation(); state.touched = true; setSelected(run, box.checked); });
    const swatch = el("span", {class: "swatch"});
    swatch.style.background = run.colour;
    const latest = info.latest || {};
    const loss = latest.smoothed_loss ?? latest.loss;
    const acc = Object.entries(latest).find(([k]) => k.startsWith("test#") && k.toLowerCase().includes("acc"));
    const facts = [info.iter !== null ? `iter ${info.iter}` : "no records",
                   loss !== undefined ? `loss ${fmt(loss)}` : null,
                   acc ? `${acc[0].replace(/^test#\d+ /, "test ")} ${fmt(acc[1])}` : null].filter(Boolean);
    const li = el("li", {"data-run": id, class: id === state.focus ? "focused" : ""},
                  box, swatch, el("span", {class: "name", text: info.name}), " ",
                  el("span", {class: `badge ${info.status}`, text: info.status}),
                  el("div", {class: "facts", text: facts.join(" · ")}));
    li.addEventListener("click", () => { state.touched = true; if (!run.selected) setSelected(run, true); setFocus(id); });
    ul.append(li);
  }
}

function setConn(kind, text) {
  const c = document.getElementById("conn");
  c.className = `badge ${kind === "live" ? "running" : "failed"}`;
  c.textContent = text;
}

function setSelected(run, on) {
  run.selected = on;
  if (on) follow(run);
  else if (run.source) { run.source.close(); run.source = null; }
  for (const c of CHARTS) state.dirty.add(c);
  drawList();
}

// ---- following a run's log --------------------------------------------------------------

function follow(run) {
  if (run.source) run.source.close();
  run.ended = false;
  const url = `/api/runs/${run.info.id}/events` + (run.cursor ? `?cursor=${encodeURIComponent(run.cursor)}` : "");
  const src = new EventSource(url);
  run.source = src;
  src.addEventListener("points", ev => {
    const msg = JSON.parse(ev.data);
    run.cursor = msg.cursor;
    for (const [chart, label, x, y] of msg.points) {
      const s = run.series[chart];
      if (!s.has(label)) s.set(label, new Map());
      s.get(label).set(x, y);      // a resumed run logs an iteration again: the last value wins
      state.dirty.add(chart);
    }
  });
  src.addEventListener("status", ev => { run.info.status = JSON.parse(ev.data).status; drawList(); });
  src.addEventListener("end", () => { src.close(); run.source = null; run.ended = true; });
}

// ---- charts -----------------------------------------------------------------------------

function seriesOf(chart) {
  const out = [];
  for (const id of state.order) {
    const run = state.runs.get(id);
    if (!run || !run.selected) continue;
    for (const [label, pts] of [...run.series[chart].entries()].sort()) out.push({run, label, pts});
  }
  return out;
}

function redraw(chart) {
  const box = document.getElementById(`chart-${chart}`);
  const list = seriesOf(chart);
  const logY = chart === "loss" && document.getElementById("loss-log").checked;
  const xs = [...new Set(list.flatMap(s => [...s.pts.keys()]))].sort((a, b) => a - b);
  let count = 0;
  const ys = list.map(s => xs.map(x => {
    let v = s.pts.has(x) ? s.pts.get(x) : null;
    if (v !== null && logY && !(v > 0)) v = null;
    if (v !== null) count++;
    return v;
  }));
  box.dataset.points = String(count);
  if (chart === "other") box.hidden = list.length === 0;
  box.querySelector(".empty").hidden = count > 0;
  const plotBox = box.querySelector(".plot");
  const key = JSON.stringify([list.map(s => `${s.run.info.id}/${s.label}`), logY]);
  const old = state.plots[chart];
  if (count === 0) {
    if (old) { old.u.destroy(); delete state.plots[chart]; }
    return;
  }
  const data = [xs, ...ys];
  if (old && old.key === key) { old.u.setData(data); return; }
  if (old) old.u.destroy();
  const multi = new Set(list.map(s => s.run.info.id)).size > 1;
  const short = shortNames(list.map(s => s.run.info.name));
  const series = [{label: "iteration"}].concat(list.map(s => {
    const test = s.label.startsWith("test");
    const raw = s.label === "train loss" || (s.label.startsWith("train ") && chart === "loss" && !s.label.includes("smoothed"));
    return {
      label: multi ? `${short.get(s.run.info.name)}: ${s.label}` : s.label,
      stroke: s.run.colour, width: test ? 2 : (raw ? 1 : 1.5), dash: test ? [6, 4] : undefined,
      alpha: raw ? 0.5 : 1, spanGaps: true, points: {show: test, size: 5},
      // the raw train loss is noisy beside its smoothed twin: shown by a click on its legend entry
      show: !(raw && list.some(o => o.run === s.run && o.label === "train loss (smoothed)")),
      value: (u, v) => fmt(v),
    };
  }));
  const opts = {
    width: Math.max(300, plotBox.clientWidth || box.clientWidth - 20), height: 250, series,
    scales: {x: {time: false}, y: logY ? {distr: 3} : {}},
    axes: [{label: "iteration"}, {size: 60, values: (u, vals) => vals.map(fmt)}],
    legend: {live: true}, cursor: {drag: {x: true, y: false}},
  };
  state.plots[chart] = {u: new uPlot(opts, data, plotBox), key};
}

// overlaid runs are told apart by what differs in their names ("runs/LeNet/a", "runs/LeNet/b" -> a, b)
function shortNames(names) {
  const uniq = [...new Set(names)];
  let cut = 0;
  if (uniq.length > 1) {
    const parts = uniq.map(n => n.split("/"));
    while (parts.every(p => p.length > cut + 1 && p[cut] === parts[0][cut])) cut++;
  }
  return new Map(uniq.map(n => [n, n.split("/").slice(cut).join("/")]));
}

function tick() {
  for (const c of state.dirty) redraw(c);
  state.dirty.clear();
}

window.addEventListener("resize", () => {
  for (const [chart, p] of Object.entries(state.plots)) {
    const w = document.getElementById(`chart-${chart}`).querySelector(".plot").clientWidth;
    if (w) p.u.setSize({width: w, height: 250});
  }
});
document.getElementById("loss-log").addEventListener("change", () => state.dirty.add("loss"));

// ---- the focused run --------------------------------------------------------------------

function setFocus(id) {
  state.focus = id;
  document.getElementById("detail").hidden = false;
  drawList();
  state.lastNetKey = null;
  refreshDetail();
}

async function refreshDetail() {
  const id = state.focus;
  let d;
  try { d = await getJSON(`/api/runs/${id}`); } catch (e) { return; }
  if (id !== state.focus) return;
  document.getElementById("detail-title").textContent = d.name;
  const bits = [`status: ${d.status}`, d.iter !== null ? `iteration ${d.iter}` : null,
                d.seconds !== null ? `${fmt(d.seconds)} s of training` : null, d.path];
  if (d.state) {
    if (d.state.global_batch) bits.splice(2, 0, `global batch ${d.state.global_batch}`);
    if (d.state.ranks > 1) bits.splice(2, 0, `${d.state.ranks} ranks`);
  }
  document.getElementById("detail-status").textContent = bits.filter(Boolean).join(" · ");
  document.getElementById("last-line").textContent = d.error ? `error: ${d.error}` : d.last_line;
  document.getElementById("log-link").href = `/runs/${id}/files/train.log`;
  document.getElementById("jsonl-link").href = `/runs/${id}/files/log.jsonl`;

  const tbody = document.querySelector("#snapshots tbody");
  tbody.replaceChildren();
  for (const s of [...d.snapshots].reverse()) {
    const a = el("a", {href: `/runs/${id}/files/${s.file.split("/").map(encodeURIComponent).join("/")}`, text: s.file});
    tbody.append(el("tr", {}, el("td", {text: s.iter ?? ""}), el("td", {}, a), el("td", {text: bytes(s.bytes)})));
  }
  const snapMsg = [];
  if (!d.snapshots.length) snapMsg.push("no snapshot in this run folder yet");
  if (d.snapshots_elsewhere.length) snapMsg.push(`written outside the run folder (not served): ${d.snapshots_elsewhere.join(", ")}`);
  document.getElementById("snapshots-msg").textContent = snapMsg.join("; ");

  const solver = document.querySelector("#solver tbody");
  solver.replaceChildren();
  if (d.solver) {
    for (const [k, v] of Object.entries(d.solver)) {
      solver.append(el("tr", {}, el("td", {class: "key", text: k}),
                       el("td", {class: "val", text: typeof v === "object" ? JSON.stringify(v) : fmt(v)})));
    }
  }
  document.getElementById("solver-msg").textContent = d.solver ? `as stored in ${d.state.file}` :
    (d.state_error || "the solver is shown from the first snapshot's solver state");

  const phase = document.getElementById("net-phase").value;
  const netKey = `${id}/${d.state ? d.state.file : ""}/${phase}`;
  if (netKey !== state.lastNetKey) {
    state.lastNetKey = netKey;
    if (d.state) drawNet(id, phase);
    else {
      document.getElementById("net-img").hidden = true;
      document.getElementById("net-msg").textContent = d.state_error ||
        "no snapshot in this run folder yet: the net is drawn from the net its first snapshot stores";
    }
  }
}

async function drawNet(id, phase) {
  const img = document.getElementById("net-img"), msg = document.getElementById("net-msg");
  const url = `/api/runs/${id}/net.svg?phase=${phase}`;
  const r = await fetch(url, {cache: "no-store"});
  if (id !== state.focus) return;
  if (r.ok) {
    const blob = await r.blob();
    if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
    img.dataset.url = URL.createObjectURL(blob);
    img.src = img.dataset.url;
    img.hidden = false;
    msg.textContent = "";
  } else {
    img.hidden = true;
    msg.textContent = await r.text();
  }
}
document.getElementById("net-phase").addEventListener("change", () => { state.lastNetKey = null; refreshDetail(); });

refreshList();
setInterval(refreshList, LIST_EVERY_MS);
setInterval(tick, 400);
