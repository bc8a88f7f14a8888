"""The dashboard's one page: the run list (polled every few seconds), one run's plots and tables, and a
comparison of the runs ticked. Plain HTML + a little script; the plots are PNGs from /plot (peftkit.reporting)."""

from __future__ import annotations

from ..reporting.page import STYLE
from ..reporting.plots import CURVES

REFRESH_MS = 2000
PLOT_KEYS = "[" + ", ".join(f'"{c.key}"' for c in CURVES) + "]"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>peftkit ui</title>
<style>""" + STYLE + """
#layout { display: flex; gap: 1.5em; } #side { min-width: 250px; } #main { flex: 1; }
#runs li { list-style: none; margin: .3em 0; } #runs { padding-left: 0; }
#runs a { cursor: pointer; text-decoration: underline; }
.status { color: #666; font-size: .9em; }
</style></head><body>
<h1>peftkit ui</h1>
<div id="layout">
<div id="side">
  <h2>Runs</h2>
  <ul id="runs"></ul>
  <button id="compare">Compare ticked runs</button>
  <p class="status">Refreshes every """ + str(REFRESH_MS // 1000) + """ s from the run directories.</p>
</div>
<div id="main">
  <h2 id="title">Pick a run</h2>
  <p id="run-status" class="status"></p>
  <div id="plots" class="plots"></div>
  <div id="tables"></div>
  <div id="chat" hidden>
    <h2>Chat</h2>
    <select id="chat-model"></select>
    <input id="chat-input" size="60" placeholder="Ask the adapter">
    <button id="chat-send">Send</button>
    <div id="chat-log"></div>
  </div>
</div>
</div>
<script>
const PLOTS = """ + PLOT_KEYS + """;
let shown = null;  // {runs: [names], single: bool}
let lastKey = "";

function esc(s) { return String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
  '"': "&quot;", "'": "&#39;"}[c])); }

async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

function statusText(r) {
  return "step " + r.step + " of " + (r.max_steps ?? "?") + (r.finished ? " (finished)" : " (training)");
}

async function refreshList() {
  const runs = await getJSON("/api/runs");
  const ul = document.getElementById("runs");
  const ticked = new Set([...ul.querySelectorAll("input:checked")].map(i => i.value));
  ul.innerHTML = runs.map(r => '<li data-run="' + esc(r.name) + '"><input type="checkbox" value="' + esc(r.name) +
    '"' + (ticked.has(r.name) ? " checked" : "") + '> <span class="swatch" style="background:' + esc(r.colour) +
    '"></span><a class="open">' + esc(r.name) + '</a> <span class="status">' + esc(statusText(r)) +
    '</span></li>').join("");
  ul.querySelectorAll("a.open").forEach(a => a.onclick = () => show([a.textContent], true));
  return runs;
}

function plotURL(key, names, stamp) {
  return "/plot/" + key + ".png?runs=" + encodeURIComponent(names.join(",")) + "&t=" + stamp;
}

async function render(force) {
  if (!shown) return;
  const names = shown.runs;
  let key, info = null;
  if (shown.single) {
    info = await getJSON("/api/runs/" + encodeURIComponent(names[0]));
    key = JSON.stringify([info.step, info.finished]);
    document.getElementById("title").textContent = names[0];
    document.getElementById("run-status").textContent = statusText(info);
  } else {
    const runs = (await getJSON("/api/runs")).filter(r => names.includes(r.name));
    key = JSON.stringify(runs.map(r => [r.name, r.step, r.finished]));
    document.getElementById("title").textContent = "Compare: " + names.join(", ");
    document.getElementById("run-status").textContent = runs.map(r => r.name + ": " + statusText(r)).join("; ");
  }
  if (!force && key === lastKey) return;  // nothing new on disk: keep the images
  lastKey = key;
  const stamp = Date.now();
  const keys = PLOTS.filter(k => !k.startsWith("reward") || !info || info.preference);
  document.getElementById("plots").innerHTML = keys.map(k => '<figure><img class="plot" data-key="' + k +
    '" alt="' + k + '" src="' + plotURL(k, names, stamp) + '"></figure>').join("");
  if (shown.single) {
    const h = info.html;
    document.getElementById("tables").innerHTML = "<h3>Eval before / after</h3>" + h.eval + "<h3>Health</h3>" +
      h.health + "<h3>Choices <code>auto</code> made</h3>" + h.choices + "<h3>Data</h3>" + h.data +
      "<h3>Sample generations</h3>" + h.samples;
  } else {
    const cmp = await getJSON("/api/compare?runs=" + encodeURIComponent(names.join(",")));
    document.getElementById("tables").innerHTML = "<h3>Eval before / after</h3>" + cmp.eval;
  }
}

function show(names, single) { shown = {runs: names, single: single}; render(true); }

document.getElementById("compare").onclick = () => {
  const names = [...document.querySelectorAll("#runs input:checked")].map(i => i.value);
  if (names.length) show(names, names.length === 1);
};

async function tick() {
  try { await refreshList(); await render(false); }
  catch (e) { document.getElementById("run-status").textContent = "refresh failed: " + e.message; }
}
async function setupChat() {
  if (!(await getJSON("/api/features")).chat) return;
  const models = (await getJSON("/v1/models")).data.map(m => m.id);
  document.getElementById("chat-model").innerHTML = models.map(m => "<option>" + esc(m) + "</option>").join("");
  document.getElementById("chat").hidden = false;
  document.getElementById("chat-send").onclick = async () => {
    const input = document.getElementById("chat-input"), model = document.getElementById("chat-model").value;
    const text = input.value, log = document.getElementById("chat-log");
    log.insertAdjacentHTML("beforeend", '<p class="you"><b>you:</b> ' + esc(text) + "</p>");
    const r = await fetch("/v1/chat/completions", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({model: model, messages: [{role: "user", content: text}], temperature: 0,
                            max_tokens: 64})});
    const body = await r.json();
    const answer = r.ok ? body.choices[0].message.content : "error: " + body.error.message;
    log.insertAdjacentHTML("beforeend", '<p class="answer"><b>' + esc(model) + ":</b> " + esc(answer) + "</p>");
  };
}

setupChat();
tick();
setInterval(tick, """ + str(REFRESH_MS) + """);
</script>
</body></html>
"""
