"""The web view's page, style sheet and script (served by ``_ui``; no build step).

The script renders every value it receives with ``textContent`` and DOM properties, never
as HTML: ids, function names, values and errors are user data.
"""

from __future__ import annotations

from typing import Final

PAGE_HTML: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Resonate dev server</title>
<link rel="stylesheet" href="/ui/app.css">
<script src="/ui/app.js" defer></script>
</head>
<body>
<header>
  <h1>Resonate dev server</h1>
  <form id="token-form" autocomplete="off">
    <label>Token <input id="token" type="password" placeholder="none" size="18"></label>
    <button type="submit">Use</button>
  </form>
</header>
<p id="message" role="status"></p>
<main>
  <section id="list-section">
    <h2>Executions</h2>
    <div class="filters">
      <label>State
        <select id="state">
          <option value="">any</option>
          <option>pending</option>
          <option>resolved</option>
          <option>rejected</option>
          <option>rejected_canceled</option>
          <option>rejected_timedout</option>
        </select>
      </label>
      <label>Function <select id="function"><option value="">any</option></select></label>
      <label><input type="checkbox" id="auto" checked> refresh</label>
      <span id="updated" class="muted"></span>
    </div>
    <table id="executions">
      <thead><tr><th>Root id</th><th>Function</th><th>State</th><th>Age</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="empty" class="muted" hidden>No execution matches.</p>
    <p id="more" class="muted" hidden>More executions match than are shown: narrow the
      filters.</p>
  </section>
  <section id="tree-section" hidden>
    <h2>Execution <code id="tree-id"></code> <span id="tree-state"></span></h2>
    <table id="tree">
      <thead><tr><th>Step</th><th>Kind</th><th>Function</th><th>State</th>
        <th>Value or error</th><th>Created</th><th>Settled</th><th>Actions</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
</main>
</body>
</html>
"""

APP_CSS: Final = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { display: flex; align-items: center; justify-content: space-between;
  padding: 8px 16px; background: #1d2330; color: #fff; }
header h1 { font-size: 17px; margin: 0; }
main { display: grid; grid-template-columns: minmax(320px, 2fr) 5fr; gap: 16px; padding: 0 16px; }
h2 { font-size: 15px; margin: 12px 0 8px; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e3e6eb;
  vertical-align: top; }
th { background: #eef0f4; font-weight: 600; }
#executions tbody tr { cursor: pointer; }
#executions tbody tr:hover { background: #f0f4ff; }
#executions tbody tr.selected { background: #dde7ff; }
td.id, td.value { font-family: ui-monospace, monospace; word-break: break-all; }
td.value { max-width: 420px; white-space: pre-wrap; }
#tree td.id, #tree td.time { white-space: nowrap; word-break: normal; }
td.error { color: #a3201a; }
.filters { display: flex; gap: 12px; align-items: center; margin-bottom: 8px; flex-wrap: wrap; }
.muted { color: #6b7280; }
.state { font-weight: 600; }
.state-pending { color: #9a6700; }
.state-resolved { color: #1a7f37; }
.state-rejected, .state-rejected_canceled, .state-rejected_timedout { color: #a3201a; }
#message { margin: 8px 16px; min-height: 1.4em; }
#message.error { color: #a3201a; font-weight: 600; }
td.actions { white-space: nowrap; }
td.actions input { width: 10em; }
button { cursor: pointer; }
"""

APP_JS: Final = r"""
"use strict";
(() => {
  const TOKEN_KEY = "resonate-dev-token";
  const REFRESH_MS = 2000;
  const $ = (id) => document.getElementById(id);
  let selected = null;      // the root id whose tree is shown
  let treeSettled = false;  // a settled tree is not refreshed again
  let inFlight = false;

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  async function api(path, options) {
    const opts = Object.assign({ cache: "no-store" }, options || {});
    const headers = Object.assign({}, opts.headers || {});
    const t = token();
    if (t) headers["Authorization"] = "Bearer " + t;
    opts.headers = headers;
    const answer = await fetch(path, opts);
    let body = null;
    try { body = await answer.json(); } catch (e) { body = null; }
    if (!answer.ok) {
      const error = new Error((body && body.error) || ("HTTP " + answer.status));
      error.status = answer.status;
      throw error;
    }
    return body;
  }

  // Build an element; children are nodes or text (always inserted as text, never as HTML).
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "data") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function say(text, isError) {
    const box = $("message");
    box.textContent = text || "";
    box.className = isError ? "error" : "";
  }

  function failed(error) {
    if (error.status === 401) {
      say("This server needs its token: enter it in the token field above.", true);
    } else {
      say(error.message, true);
    }
  }

  function age(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function time(ms) {
    if (ms === null || ms === undefined) return el("span", { class: "muted" }, "");
    const at = new Date(ms);
    return el("span", { title: at.toISOString() }, at.toLocaleTimeString());
  }

  function stateCell(state) {
    return el("td", { class: "state state-" + state }, state);
  }

  // the list ----------------------------------------------------------------------------------
  async function refreshList() {
    const query = new URLSearchParams();
    if ($("state").value) query.set("state", $("state").value);
    if ($("function").value) query.set("function", $("function").value);
    const data = await api("/ui/api/executions?" + query.toString());
    const picker = $("function");
    const chosen = picker.value;
    const names = new Set(data.functions);
    if (chosen) names.add(chosen);
    picker.replaceChildren(el("option", { value: "" }, "any"),
      ...[...names].sort().map((name) => el("option", { value: name }, name)));
    picker.value = chosen;
    const rows = data.executions.map((row) => el("tr", {
      data: { id: row.id }, class: row.id === selected ? "selected" : "",
      onclick: () => { location.hash = encodeURIComponent(row.id); },
    }, el("td", { class: "id" }, row.id), el("td", {}, row.function), stateCell(row.state),
    el("td", { title: new Date(row.created_at).toISOString() },
      age(data.now - row.created_at))));
    document.querySelector("#executions tbody").replaceChildren(...rows);
    $("empty").hidden = rows.length > 0;
    $("more").hidden = !data.more;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  // the tree ----------------------------------------------------------------------------------
  function treeRows(node, depth, rows) {
    const idCell = el("td", { class: "id" }, node.id);
    idCell.style.paddingLeft = (8 + depth * 18) + "px";
    let shown = node.error !== null ? node.error : (node.value !== null ? node.value : "");
    if (node.kind === "sleep" && shown === "null") shown = "";  // a timer has no value
    rows.push(el("tr", { data: { id: node.id, state: node.state } }, idCell,
      el("td", {}, node.kind), el("td", {}, node.function), stateCell(node.state),
      el("td", { class: node.error !== null ? "value error" : "value" }, shown),
      el("td", { class: "time" }, time(node.created_at)),
      el("td", { class: "time" }, time(node.settled_at)),
      actions(node, depth === 0)));
    for (const child of node.children) treeRows(child, depth + 1, rows);
  }

  function actions(node, isRoot) {
    const cell = el("td", { class: "actions" });
    if (node.state !== "pending") return cell;
    if (isRoot) {
      cell.append(el("button", { class: "cancel", type: "button",
        onclick: () => settle(node.id, "cancel", null) }, "cancel execution"));
      return cell;
    }
    const input = el("input", { type: "text", placeholder: "JSON value or message",
      ariaLabel: "value for " + node.id });
    cell.append(input,
      el("button", { class: "resolve", type: "button",
        onclick: () => settle(node.id, "resolve", input) }, "resolve"),
      el("button", { class: "reject", type: "button",
        onclick: () => settle(node.id, "reject", input) }, "reject"));
    return cell;
  }

  async function refreshTree() {
    if (selected === null) return;
    const tree = $("tree");
    if (tree.contains(document.activeElement) && document.activeElement.tagName === "INPUT") {
      return;  // someone is typing a value: keep the row
    }
    const data = await api("/ui/api/execution?id=" + encodeURIComponent(selected));
    const rows = [];
    treeRows(data.root, 0, rows);
    tree.querySelector("tbody").replaceChildren(...rows);
    $("tree-id").textContent = data.root.id;
    $("tree-state").textContent = data.root.state;
    $("tree-state").className = "state state-" + data.root.state;
    $("tree-section").hidden = false;
    treeSettled = data.root.state !== "pending";
  }

  async function settle(id, action, input) {
    const body = { id: id, action: action };
    if (action === "resolve") {
      const text = input.value.trim();
      try {
        body.value = text === "" ? null : JSON.parse(text);
      } catch (e) {
        say("The value must be JSON (a string in quotes: \"yes\"): " + e.message, true);
        return;
      }
    } else if (action === "reject" && input.value.trim() !== "") {
      body.message = input.value.trim();
    }
    try {
      const answer = await api("/ui/api/settle", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      say(answer.promise.id + " is now " + answer.promise.state, false);
      if (input) input.blur();
      treeSettled = false;
      await refresh();
    } catch (error) {
      failed(error);
    }
  }

  // wiring ------------------------------------------------------------------------------------
  async function refresh() {
    if (inFlight) return;
    inFlight = true;
    try {
      await refreshList();
      if (!treeSettled) await refreshTree();
      if ($("message").className === "error") say("", false);
    } catch (error) {
      failed(error);
    } finally {
      inFlight = false;
    }
  }

  function followHash() {
    const raw = location.hash.slice(1);
    let id = null;
    try { id = raw ? decodeURIComponent(raw) : null; } catch (e) { id = null; }
    selected = id;
    treeSettled = false;
    $("tree-section").hidden = id === null;
    for (const row of document.querySelectorAll("#executions tbody tr")) {
      row.classList.toggle("selected", row.dataset.id === id);
    }
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("token").value = token();
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
      say(value ? "Token set for this tab." : "Token cleared.", false);
      treeSettled = false;
      refresh();
    });
    $("state").addEventListener("change", refresh);
    $("function").addEventListener("change", refresh);
    window.addEventListener("hashchange", followHash);
    setInterval(() => {
      if ($("auto").checked && document.visibilityState === "visible") refresh();
    }, REFRESH_MS);
    followHash();
  });
})();
"""
