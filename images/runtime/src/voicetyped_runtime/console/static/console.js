// The live call console: plain JS, no build step, no external resources (works offline).
// Data comes from /v1/console/...; the event streams are read with fetch() so that the bearer
// token travels in the Authorization header (EventSource cannot set headers), never in a URL.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const STAGES = ["end_of_speech", "final", "decision", "tts"];
const STAGE_COLOURS = { end_of_speech: "#8e6bd1", final: "#2f9e8f", decision: "#e08a1e", tts: "#3b73d9" };
const calls = new Map(); // session id -> summary
let selected = null; // { id, abort, graph, taken:Set, visited:Set }
let listAbort = null;

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, text) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
};
const svg = (tag, attrs = {}) => {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};

function token() { return sessionStorage.getItem("voicetyped-console-token") || ""; }
function headers() { const t = token(); return t ? { Authorization: "Bearer " + t } : {}; }

class Unauthorized extends Error {}

async function getJson(path) {
  const reply = await fetch(path, { headers: headers(), cache: "no-store" });
  if (reply.status === 401) throw new Unauthorized();
  if (!reply.ok) throw new Error((await reply.json()).error || reply.statusText);
  return reply.json();
}

// Server-Sent Events over fetch(): calls onEvent for each `data:` line; resolves at the end.
async function stream(path, signal, onEvent) {
  const reply = await fetch(path, { headers: headers(), signal, cache: "no-store" });
  if (reply.status === 401) throw new Unauthorized();
  if (!reply.ok) throw new Error(reply.statusText);
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (line.startsWith("data: ")) onEvent(JSON.parse(line.slice(6)));
      }
    }
  }
}

function showLogin(message) {
  $("login").hidden = false;
  $("main").hidden = true;
  $("login-error").textContent = message || "";
  setConnection("needs a token");
}

function setConnection(text) { $("connection").textContent = text; }

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the call list ----

function duration(call) {
  const end = call.ended_ms || Date.now();
  const s = Math.max(0, Math.round((end - call.started_ms) / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function renderCalls() {
  const body = $("calls").querySelector("tbody");
  body.replaceChildren();
  for (const call of calls.values()) {
    const row = el("tr", { "data-session": call.session_id, class: "call" });
    if (selected && selected.id === call.session_id) row.classList.add("selected");
    row.append(
      el("td", { class: "caller" }, call.caller || "(unknown)"),
      el("td", { class: "dialog" }, `${call.dialog} @${String(call.version).slice(0, 7)}`),
      el("td", { class: "state" }, call.state),
      el("td", { class: "duration" }, duration(call)),
      el("td", { class: "status status-" + call.status },
        call.status === "live" ? "live" : call.data === "dropped" ? "ended — data dropped" : "ended"),
    );
    row.addEventListener("click", () => { location.hash = "call=" + encodeURIComponent(call.session_id); });
    body.append(row);
  }
}

async function refreshElsewhere() {
  try {
    const listing = await getJson("/v1/console/calls");
    const body = $("elsewhere").querySelector("tbody");
    body.replaceChildren();
    for (const call of listing.elsewhere) {
      const row = el("tr");
      row.append(el("td", {}, call.caller), el("td", {}, call.dialog), el("td", {}, call.state),
        el("td", {}, duration(call)));
      body.append(row);
    }
    $("elsewhere-panel").hidden = listing.elsewhere.length === 0;
  } catch (err) {
    if (err instanceof Unauthorized) showLogin("The token was refused.");
  }
}

async function followList() {
  for (;;) {
    listAbort = new AbortController();
    try {
      let first = true;
      await stream("/v1/console/events", listAbort.signal, (event) => {
        if (first) { calls.clear(); first = false; setConnection("live"); }
        if (event.kind === "hello") return;
        if (event.kind === "call") {
          calls.set(event.call.session_id, event.call);
          if (selected && selected.id === event.call.session_id) showSummary(event.call);
        } else if (event.kind === "removed") {
          calls.delete(event.session_id);
        }
        renderCalls();
      });
    } catch (err) {
      if (err instanceof Unauthorized) return showLogin("The token was refused.");
    }
    setConnection("reconnecting…");
    await sleep(1000);
  }
}

// ---- one call ----

function showSummary(call) {
  $("call-id").textContent = call.session_id;
  $("call-summary").textContent =
    `caller ${call.caller || "(unknown)"} · dialog ${call.dialog} (version ${call.version}) · ` +
    `state ${call.state} · ${duration(call)} · ${call.status}`;
  $("call-summary").dataset.state = call.state;
  const note = $("call-note");
  note.hidden = !call.note;
  note.textContent = call.note ? `This call ${call.note}.` : "";
  // A live call's graph follows its steps (the event stream); an ended one its summary.
  if (call.data === "dropped") clearCallData();
  if (selected && selected.graph && call.status !== "live") highlight(call.state);
}

function clearCallData() {
  for (const id of ["conversation", "events", "turns"]) $(id).replaceChildren();
  for (const id of ["backend", "timers"]) $(id).querySelector("tbody").replaceChildren();
  if (selected) { selected.taken.clear(); selected.visited.clear(); selected.utterances.clear(); }
  document.querySelectorAll("#graph .taken, #graph .visited").forEach((n) => n.classList.remove("taken", "visited"));
}

function drawGraph(graph) {
  const box = $("graph");
  box.replaceChildren();
  box.setAttribute("viewBox", `0 0 ${graph.width} ${graph.height + 20}`);
  box.setAttribute("width", graph.width);
  box.setAttribute("height", graph.height + 20);
  const defs = svg("defs");
  for (const [id, colour] of [["arrow", "#c3c8d3"], ["arrow-taken", "#2f5fcc"]]) {
    const marker = svg("marker", { id, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto" });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: colour }));
    defs.append(marker);
  }
  box.append(defs);
  const pos = new Map(graph.nodes.map((n) => [n.id, n]));
  const w = graph.node_w, h = graph.node_h;
  const pairs = new Map(); // spread edges between the same two states
  for (const edge of graph.edges) {
    const a = pos.get(edge.from), b = pos.get(edge.to);
    const key = edge.from + ">" + edge.to;
    const nth = pairs.get(key) || 0;
    pairs.set(key, nth + 1);
    let d, lx, ly;
    if (edge.self_loop) {
      const x = a.x + w / 2 + (nth - 1) * 14, y = a.y;
      d = `M${x - 12},${y} C${x - 26},${y - 30 - nth * 8} ${x + 26},${y - 30 - nth * 8} ${x + 12},${y}`;
      lx = x; ly = y - 26 - nth * 8;
    } else {
      const forward = b.x > a.x;
      const x1 = forward ? a.x + w : a.x + w / 2, y1 = forward ? a.y + h / 2 : a.y + h;
      const x2 = forward ? b.x : b.x + w / 2, y2 = forward ? b.y + h / 2 : b.y + h;
      const bend = 18 + nth * 14;
      const cx = (x1 + x2) / 2, cy = (y1 + y2) / 2 + (forward ? (nth - 0.5) * 10 : bend + 20);
      d = `M${x1},${y1} Q${cx},${cy} ${x2},${y2}`;
      lx = cx; ly = (y1 + y2) / 2 + (forward ? (nth - 0.5) * 10 : bend + 10);
    }
    const g = svg("g", { class: "edge", "data-edge": edge.id, "data-from": edge.from, "data-to": edge.to });
    g.append(svg("path", { d }));
    const label = svg("text", { x: lx, y: ly, "text-anchor": "middle" });
    label.textContent = edge.event + (edge.timer ? `[${edge.timer}]` : "") + (edge.outcome && edge.outcome !== "success" ? `(${edge.outcome})` : "");
    const title = svg("title");
    title.textContent = `${edge.from === "*" ? "any state" : edge.from} → ${edge.to} on ${label.textContent}` +
      (edge.condition ? ` if ${edge.condition}` : "");
    g.append(label, title);
    box.append(g);
  }
  for (const node of graph.nodes) {
    const cls = ["node", node.terminal ? "terminal" : "", node.id === "*" ? "any" : ""].join(" ").trim();
    const g = svg("g", { class: cls, "data-state": node.id, transform: `translate(${node.x},${node.y})` });
    g.append(svg("rect", { width: w, height: h, rx: 8 }));
    const text = svg("text", { x: w / 2, y: h / 2 });
    text.textContent = (node.initial ? "▶ " : "") + node.label;
    g.append(text);
    box.append(g);
  }
}

function highlight(state) {
  // aria-current marks the one current state (the tests watch it); the class styles it.
  document.querySelectorAll("#graph .node").forEach((node) => {
    const now = node.dataset.state === state;
    node.classList.toggle("current", now);
    if (now && node.getAttribute("aria-current") !== "step") node.setAttribute("aria-current", "step");
    if (!now && node.hasAttribute("aria-current")) node.removeAttribute("aria-current");
  });
}

function markStep(event) {
  if (!selected) return;
  selected.visited.add(event.to);
  if (event.from) selected.visited.add(event.from);
  if (event.transition) selected.taken.add(event.transition);
  const edge = document.querySelector(`#graph .edge[data-edge="${CSS.escape(event.transition)}"]`);
  if (edge) edge.classList.add("taken");
  for (const name of [event.from, event.to]) {
    const node = name && document.querySelector(`#graph .node[data-state="${CSS.escape(name)}"]`);
    if (node) node.classList.add("visited");
  }
  highlight(event.to);
}

function say(kind, who, text, extra = {}) {
  const item = el("li", { class: kind, ...extra });
  item.append(el("span", { class: "who" }, who), el("span", { class: "text" }, text));
  $("conversation").append(item);
  item.scrollIntoView({ block: "nearest" });
  return item;
}

function utterance(event) {
  let item = selected.utterances.get(event.utterance_id);
  if (!item) {
    item = say("caller utterance", "caller", "", { "data-utterance": event.utterance_id });
    selected.utterances.set(event.utterance_id, item);
  }
  item.querySelector(".text").textContent = event.text;
  item.classList.toggle("partial", !event.final);
  item.classList.toggle("final", event.final);
}

function turnChart(event) {
  const total = STAGES.reduce((sum, s) => sum + (event.stages[s] || 0), 0);
  const row = el("div", { class: "turn" });
  const bar = svg("svg", { width: 260, height: 14, role: "img" });
  let x = 0;
  for (const stage of STAGES) {
    const ms = event.stages[stage];
    if (ms === undefined) continue;
    const width = total > 0 ? (ms / total) * 260 : 0;
    const rect = svg("rect", { x, y: 0, width: Math.max(width, 1), height: 14, fill: STAGE_COLOURS[stage] });
    const title = svg("title");
    title.textContent = `${stage} ${ms} ms`;
    rect.append(title);
    bar.append(rect);
    x += width;
  }
  const parts = STAGES.filter((s) => event.stages[s] !== undefined).map((s) => `${s} ${Math.round(event.stages[s])}`);
  row.append(bar, el("div", { class: "label" }, `${event.trigger}: ${Math.round(total)} ms (${parts.join(", ")} ms)`));
  $("turns").append(row);
}

function timerRow(event) {
  const body = $("timers").querySelector("tbody");
  let row = body.querySelector(`tr[data-timer="${CSS.escape(event.name)}"]`);
  if (!row) { row = el("tr", { "data-timer": event.name }); body.append(row); }
  const when = event.edge === "armed" ? `armed, due ${new Date(event.deadline_ms).toLocaleTimeString()}` : "fired or cancelled";
  row.replaceChildren(el("td", {}, event.name), el("td", {}, when));
}

function backendRow(event) {
  const body = $("backend").querySelector("tbody");
  let row = body.querySelector(`tr[data-key="${CSS.escape(event.key)}"]`);
  if (!row) { row = el("tr", { "data-key": event.key }); body.append(row); }
  const op = `${event.service}.${event.method}`;
  if (event.kind === "backend_call") {
    row.replaceChildren(el("td", {}, op), el("td", {}, "waiting…"), el("td", {}, ""));
  } else {
    const status = event.ok ? "ok" : `failed (${event.error_code})`;
    row.replaceChildren(el("td", {}, op), el("td", { class: event.ok ? "ok" : "failed" }, status),
      el("td", {}, `${event.latency_ms} ms`));
  }
}

const DESCRIBE = {
  step: (e) => `${e.from} → ${e.to} on ${e.event}`,
  prompt: (e) => `prompt: ${e.text}`,
  playback: (e) => `playback ${e.edge}: ${e.text}`,
  transcript: (e) => `${e.final ? "final" : "partial"}: ${e.text}`,
  vad: (e) => `speech ${e.edge} (call time ${e.call_ms} ms)`,
  dtmf: (e) => `key ${e.digit}`,
  barge_in: () => "barge-in: the caller talked over the prompt",
  speech_cancelled: () => "prompt cancelled",
  backend_call: (e) => `backend call ${e.service}.${e.method}`,
  backend_answer: (e) => `backend ${e.service}.${e.method}: ${e.ok ? "ok" : e.error_code} in ${e.latency_ms} ms`,
  timer: (e) => `timer ${e.name} ${e.edge}`,
  hangup: (e) => `hangup by ${e.by}`,
  transfer: (e) => `transfer to ${e.target}`,
  intent: (e) => `intent ${e.intent} (${e.score})`,
  turn: (e) => `turn latency ${Object.entries(e.stages).map(([k, v]) => `${k} ${v}`).join(", ")} ms`,
  ended: (e) => `call ended: ${e.reason}`,
};

function onCallEvent(event) {
  const describe = DESCRIBE[event.kind];
  if (describe) {
    $("events").append(el("li", { "data-kind": event.kind }, `${new Date(event.at_ms).toLocaleTimeString()} ${describe(event)}`));
  }
  switch (event.kind) {
    case "step": markStep(event); break;
    case "transcript": utterance(event); break;
    case "prompt": say("bot", "bot", event.text, { "data-request": event.request_id }); break;
    case "dtmf": say("key", "key", event.digit); break;
    case "barge_in": say("barge", "barge-in", "the caller talked over the prompt"); break;
    case "backend_call": case "backend_answer": backendRow(event); break;
    case "timer": timerRow(event); break;
    case "turn": turnChart(event); break;
    case "dropped": clearCallData(); break;
  }
}

async function openCall(id) {
  if (selected) selected.abort.abort();
  selected = { id, abort: new AbortController(), graph: null, taken: new Set(), visited: new Set(), utterances: new Map() };
  const mine = selected;
  $("call-panel").hidden = false;
  clearCallData();
  renderCalls();
  let detail;
  try {
    detail = await getJson("/v1/console/calls/" + encodeURIComponent(id));
  } catch (err) {
    if (err instanceof Unauthorized) return showLogin("The token was refused.");
    $("call-summary").textContent = `Call ${id}: ${err.message}`;
    return;
  }
  if (mine !== selected) return;
  if (detail.graph) { mine.graph = detail.graph; drawGraph(detail.graph); }
  showSummary(detail.call);
  // The stream replays the call's events from its start, then follows it live.
  while (mine === selected) {
    try {
      let first = true;
      await stream(`/v1/console/calls/${encodeURIComponent(id)}/events`, mine.abort.signal, (event) => {
        if (mine !== selected) return;
        if (first) { clearCallData(); first = false; }
        onCallEvent(event);
      });
      const summary = calls.get(id);
      if (summary) showSummary(summary);
      if (!summary || summary.status !== "live") return;
    } catch (err) {
      if (err instanceof Unauthorized) return showLogin("The token was refused.");
      if (mine.abort.signal.aborted) return;
    }
    await sleep(1000);
  }
}

function route() {
  const match = location.hash.match(/^#call=(.+)$/);
  if (match) openCall(decodeURIComponent(match[1]));
}

let timers = false;

function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  followList();
  refreshElsewhere();
  route();
  if (timers) return; // a second start (after a refused token) reuses them
  timers = true;
  setInterval(refreshElsewhere, 5000);
  setInterval(() => { document.querySelectorAll("#calls td.duration").forEach((td, i) => {
    const call = [...calls.values()][i]; if (call) td.textContent = duration(call); }); }, 1000);
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("voicetyped-console-token", $("token").value.trim());
  $("token").value = "";
  start();
});
window.addEventListener("hashchange", route);

(async () => {
  try {
    await getJson("/v1/console/calls");
    start();
  } catch (err) {
    if (err instanceof Unauthorized) showLogin(token() ? "The token was refused." : "");
    else setConnection("unreachable: " + err.message);
  }
})();
