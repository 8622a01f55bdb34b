// The inspector's page: static HTML and one script, no framework. Every value from a request
// goes into the page as text (textContent), never as HTML: a visitor writes those values.

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Burrow inspector</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 13px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
  header { display: flex; gap: .5em; align-items: center; padding: .5em 1em; background: #2d3142; color: #fff; flex-wrap: wrap; }
  header h1 { font-size: 15px; margin: 0 1em 0 0; }
  header input, header select { font: inherit; }
  header a { color: #cde; margin-left: auto; }
  main { display: grid; grid-template-columns: minmax(320px, 2fr) 3fr; height: calc(100vh - 42px); }
  #list-pane { overflow: auto; border-right: 1px solid #ccc; }
  table { border-collapse: collapse; width: 100%; }
  #list td { padding: 3px 6px; border-bottom: 1px solid #eee; white-space: nowrap; }
  #list td.path { max-width: 22em; overflow: hidden; text-overflow: ellipsis; }
  #list tr { cursor: pointer; }
  #list tr.selected { background: #dde8ff; }
  #list tr.failed td.status, .s4, .s5 { color: #b00; }
  .replay { font-size: 11px; background: #ffe9a8; border-radius: 3px; padding: 0 4px; }
  #detail { overflow: auto; padding: 0 1em 2em; }
  #detail h2 { font-size: 15px; word-break: break-all; }
  #detail h3 { font-size: 13px; margin: 1.2em 0 .3em; }
  #detail table td { padding: 1px 6px; vertical-align: top; font-family: ui-monospace, monospace; word-break: break-all; }
  #detail table td:first-child { color: #555; white-space: nowrap; }
  pre { background: #f5f5f7; padding: .5em; overflow: auto; max-height: 40em; margin: 0; }
  .note { color: #a60; }
  .muted { color: #777; }
  form label { display: block; margin: .4em 0 .1em; }
  form input, form textarea { font: 12px ui-monospace, monospace; width: 100%; box-sizing: border-box; }
  button { font: inherit; margin: .3em .3em 0 0; }
</style>
</head>
<body>
<header>
  <h1>Burrow inspector</h1>
  <select id="filter-tunnel" title="tunnel"><option value="">all tunnels</option></select>
  <select id="filter-method" title="method"><option value="">all methods</option></select>
  <input id="filter-status" placeholder="status: 2xx, 404, failed" size="18">
  <input id="filter-path" placeholder="path contains" size="24">
  <span id="live" class="muted"></span>
  <a href="/api/har" download="burrow.har">Export all as HAR</a>
</header>
<main>
  <div id="list-pane">
    <table id="list"><tbody></tbody></table>
    <p id="empty" class="muted" style="padding: 1em">No requests yet: visit the tunnel's URL.</p>
  </div>
  <section id="detail"><p class="muted">Select a request to see it.</p></section>
</main>
<script src="/app.js"></script>
</body>
</html>
`;

export const PAGE_SCRIPT = `"use strict";
const entries = new Map();
let selected = null;
const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  return node;
}

function size(bytes) {
  return bytes < 1024 ? bytes + " B" : bytes < 1048576 ? (bytes / 1024).toFixed(1) + " KiB" : (bytes / 1048576).toFixed(1) + " MiB";
}

function statusText(entry) {
  if (entry.state === "failed") return (entry.status ? entry.status + " " : "") + (entry.error ? entry.error.code : "failed");
  return entry.status === null ? "..." : String(entry.status);
}

function matches(entry) {
  const tunnel = $("filter-tunnel").value, method = $("filter-method").value;
  const status = $("filter-status").value.trim().toLowerCase(), path = $("filter-path").value;
  if (tunnel && entry.tunnel !== tunnel) return false;
  if (method && entry.method !== method) return false;
  if (path && !entry.path.includes(path)) return false;
  if (status) {
    if (/^[1-5]xx$/.test(status)) return entry.status !== null && Math.floor(entry.status / 100) === Number(status[0]);
    if (/^\\d+$/.test(status)) return entry.status === Number(status);
    return entry.state === status;
  }
  return true;
}

function options(select, values) {
  const known = new Set([...select.options].map((o) => o.value));
  for (const value of values) if (!known.has(value)) select.append(el("option", { value, textContent: value }));
}

function render() {
  const all = [...entries.values()].sort((a, b) => b.id - a.id);
  options($("filter-tunnel"), new Set(all.map((e) => e.tunnel)));
  options($("filter-method"), new Set(all.map((e) => e.method)));
  const rows = all.filter(matches).map((entry) => {
    const row = el("tr", { className: (entry.id === selected ? "selected " : "") + entry.state },
      el("td", { className: "muted", textContent: "#" + entry.id }),
      el("td", { className: "muted", textContent: new Date(entry.startedAt).toLocaleTimeString() }),
      el("td", { textContent: entry.kind === "websocket" ? "WS" : entry.method }),
      el("td", { className: "path", title: entry.path }, entry.path, entry.replayOf ? " " : null,
        entry.replayOf ? el("span", { className: "replay", textContent: "replay of #" + entry.replayOf }) : null),
      el("td", { className: "status s" + String(entry.status || "")[0], textContent: statusText(entry) }),
      el("td", { className: "muted", textContent: entry.duration === null ? "" : entry.duration + " ms" }),
      el("td", { className: "muted", textContent: size(entry.responseSize) }));
    row.dataset.id = entry.id;
    row.onclick = () => show(entry.id);
    return row;
  });
  $("list").tBodies[0].replaceChildren(...rows);
  $("empty").hidden = all.length > 0;
}

function headerTable(headers) {
  return el("table", {}, ...headers.map(([name, value]) => el("tr", {}, el("td", { textContent: name }), el("td", { textContent: value }))));
}

function body(view) {
  if (view.kind === "empty") return el("p", { className: "muted", textContent: "no body" });
  const notes = [view.kind + ", " + size(view.size) + (view.decoded ? ", shown " + view.decoded + "-decoded" : "")];
  if (view.truncated) notes.push("truncated: the inspector kept the first " + size(view.kept) + " of " + size(view.size));
  if (view.kind === "binary" && view.kept > 4096) notes.push("hex of the first 4 KiB");
  return el("div", { className: "body" },
    el("p", { className: view.truncated ? "note truncated" : "muted", textContent: notes.join("; ") }),
    el("pre", { className: "body-" + view.kind, textContent: view.text }));
}

async function api(path, init) {
  const response = await fetch(path, init);
  const value = response.headers.get("content-type").startsWith("application/json") ? await response.json() : await response.text();
  if (!response.ok) throw new Error(value.error || String(value));
  return value;
}

async function show(id) {
  selected = id;
  render();
  let entry;
  try {
    entry = await api("/api/requests/" + id);
  } catch (error) {
    $("detail").replaceChildren(el("p", { className: "note", textContent: error.message }));
    return;
  }
  if (selected !== id) return;
  const t = entry.timings;
  const ms = (v) => (v === null ? "-" : v + " ms");
  const parts = [
    el("h2", { textContent: entry.method + " " + entry.path }),
    el("p", {}, statusText(entry), " on ", entry.tunnel, " at ", new Date(entry.startedAt).toLocaleString(),
      entry.replayOf ? el("span", { className: "replay", textContent: " replay of #" + entry.replayOf }) : null),
    entry.error ? el("p", { className: "note", textContent: entry.error.code + ": " + entry.error.message }) : null,
    el("p", { id: "timings", className: "muted",
      textContent: entry.kind === "websocket"
        ? "origin accepted after " + ms(t.originHead) + " · open for " + ms(t.responseBody)
        : "request body from the relay " + ms(t.requestBody) + " · origin's head " + ms(t.originHead) + " · response body " + ms(t.responseBody) + " · total " + ms(t.total) }),
    el("h3", { textContent: "Request headers" }), headerTable(entry.requestHeaders),
    el("h3", { textContent: "Request body" }), body(entry.request),
    el("h3", { textContent: "Response headers" }), headerTable(entry.responseHeaders),
  ];
  if (entry.kind === "websocket") {
    parts.push(el("h3", { textContent: "Messages" + (entry.messagesDropped ? " (the oldest " + entry.messagesDropped + " no longer kept)" : "") }));
    for (const message of entry.messages) {
      parts.push(el("p", { className: "muted", textContent: (message.from === "visitor" ? "→ from the visitor" : "← from the origin") + " at " + message.at + " ms" }), body(message));
    }
    if (entry.close) parts.push(el("p", { className: "muted", textContent: "closed by the " + entry.close.by + ": " + entry.close.code + " " + entry.close.reason }));
  } else {
    parts.push(el("h3", { textContent: "Response body" }), body(entry.response));
    parts.push(el("h3", { textContent: "Replay" }), replayForm(entry));
  }
  $("detail").replaceChildren(...parts.filter(Boolean));
}

function replayForm(entry) {
  const status = el("p", { id: "replay-status", className: "muted" });
  const method = el("input", { id: "edit-method", value: entry.method });
  const path = el("input", { id: "edit-path", value: entry.path });
  const headers = el("textarea", { id: "edit-headers", rows: 6,
    value: entry.requestHeaders.filter(([n]) => !/^(host|content-length)$/i.test(n)).map(([n, v]) => n + ": " + v).join("\\n") });
  const bodyBox = el("textarea", { id: "edit-body", rows: 6, value: entry.requestText || "" });
  const send = async (edits) => {
    status.textContent = "sending...";
    try {
      const { id } = await api("/api/requests/" + entry.id + "/replay", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(edits) });
      status.textContent = "sent as #" + id;
    } catch (error) {
      status.textContent = error.message;
    }
  };
  const edited = () => ({
    method: method.value.trim(), path: path.value.trim(), body: bodyBox.value,
    headers: headers.value.split("\\n").filter((l) => l.includes(":")).map((l) => [l.slice(0, l.indexOf(":")).trim(), l.slice(l.indexOf(":") + 1).trim()]),
  });
  const curlBox = el("pre", { id: "curl", hidden: true });
  return el("form", { onsubmit: (event) => { event.preventDefault(); send(edited()); } },
    el("button", { type: "button", id: "replay", textContent: "Replay as it was", onclick: () => send({}) }),
    el("button", { type: "button", id: "copy-curl", textContent: "Show as curl", onclick: async () => {
      curlBox.textContent = await api("/api/requests/" + entry.id + "/curl");
      curlBox.hidden = false;
      navigator.clipboard?.writeText(curlBox.textContent).catch(() => {});
    } }),
    curlBox,
    el("label", { textContent: "Method" }), method,
    el("label", { textContent: "Path" }), path,
    el("label", { textContent: "Headers, one a line" }), headers,
    el("label", { textContent: "Body" + (entry.request.truncated ? " (the original was kept truncated)" : "") }), bodyBox,
    el("button", { type: "submit", id: "replay-edited", textContent: "Replay edited" }),
    status);
}

async function load() {
  try {
    const list = await api("/api/requests");
    entries.clear();
    for (const entry of list) entries.set(entry.id, entry);
    render();
  } catch (error) {
    $("live").textContent = error.message;
  }
}

for (const id of ["filter-tunnel", "filter-method", "filter-status", "filter-path"]) $(id).addEventListener("input", render);
const events = new EventSource("/api/events");
events.onopen = () => { $("live").textContent = "live"; load(); };
events.onerror = () => { $("live").textContent = "reconnecting..."; };
events.addEventListener("entry", (event) => {
  const entry = JSON.parse(event.data);
  entries.set(entry.id, entry);
  render();
  if (entry.id === selected && entry.state !== "pending") show(entry.id);
});
events.addEventListener("evict", (event) => { entries.delete(Number(event.data)); render(); });
`;
