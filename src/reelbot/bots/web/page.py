"""The one page of the web chat: HTML with its CSS and JavaScript inline, no build step."""

from __future__ import annotations

import html

__all__ = ["render_page"]


def render_page(set_name: str) -> str:
    """The chat page, naming the model set it runs."""
    return _PAGE.replace("__SET__", html.escape(set_name))


_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>reelbot</title>
<link rel="icon" href="data:,">
<style>
:root { --bg:#111418; --panel:#1a1f26; --line:#2a313b; --text:#e6e9ee; --dim:#9aa4b2;
        --accent:#6aa7ff; --bad:#ff7a7a; --good:#7adf9a; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin:0; font:15px/1.45 system-ui, sans-serif; background:var(--bg); color:var(--text);
       height:100vh; display:flex; flex-direction:column; }
header { display:flex; align-items:center; gap:12px; padding:10px 16px;
         border-bottom:1px solid var(--line); }
header h1 { font-size:18px; margin:0; }
header .dim { color:var(--dim); font-size:13px; }
#conn { margin-left:auto; color:var(--dim); font-size:13px; }
main { flex:1; display:grid; grid-template-columns: 1fr 300px; min-height:0; }
@media (max-width: 800px) { main { grid-template-columns: 1fr; } #side { display:none; } }
#chat { display:flex; flex-direction:column; min-height:0; }
#log { flex:1; overflow-y:auto; padding:16px; display:flex; flex-direction:column; gap:10px; }
.msg { max-width: 640px; padding:8px 12px; border-radius:10px; white-space:pre-wrap;
       word-wrap:break-word; }
.user { align-self:flex-end; background:#24406b; }
.bot { align-self:flex-start; background:var(--panel); border:1px solid var(--line); }
.error { color:var(--bad); border-color:#5a2a2a; }
.job .head { display:flex; gap:10px; align-items:baseline; }
.job .status { font-weight:600; }
.job[data-status=delivered] .status { color:var(--good); }
.job[data-status=failed] .status, .job[data-status=cancelled] .status { color:var(--bad); }
.job .where, .job .steps, .job .params { color:var(--dim); font-size:13px; }
.job progress { width:100%; height:8px; accent-color:var(--accent); }
.job .result, .job .preview { display:block; width:min(100%, 448px); height:auto; margin-top:6px;
       border-radius:6px; }
.job .preview { opacity:.6; filter:blur(1px); }
.job .notice { font-size:13px; }
.buttons { display:flex; gap:6px; flex-wrap:wrap; margin-top:6px; }
button { background:#26303c; color:var(--text); border:1px solid var(--line); border-radius:6px;
         padding:5px 10px; cursor:pointer; font:inherit; font-size:13px; }
button:hover { border-color:var(--accent); }
form { display:flex; gap:8px; padding:12px 16px; border-top:1px solid var(--line);
       align-items:center; }
#text { flex:1; padding:9px 12px; border-radius:8px; border:1px solid var(--line);
        background:var(--panel); color:var(--text); font:inherit; }
#attach { cursor:pointer; padding:6px 10px; border:1px solid var(--line); border-radius:8px; }
#file { display:none; }
#chip { font-size:13px; color:var(--dim); }
#hints { padding:0 16px 10px; display:flex; gap:6px; flex-wrap:wrap; }
#hints button { font-size:12px; color:var(--dim); }
#side { border-left:1px solid var(--line); overflow-y:auto; padding:12px; }
#side h2 { font-size:14px; margin:0 0 8px; color:var(--dim); }
#gallery { display:flex; flex-direction:column; gap:10px; }
#gallery figure { margin:0; background:var(--panel); border:1px solid var(--line);
                  border-radius:8px; overflow:hidden; cursor:pointer; }
#gallery img, #gallery video { width:100%; display:block; }
.spoiler { filter:blur(24px); cursor:pointer; }
#gallery figcaption { padding:6px 8px; font-size:12px; color:var(--dim); }
#gallery figcaption b { color:var(--text); font-weight:500; }
</style>
</head>
<body>
<header><h1>reelbot</h1><span class="dim">web chat · models: __SET__</span>
<span id="conn">connecting…</span></header>
<main>
<section id="chat">
<div id="log" aria-live="polite">
<div class="msg bot text">Type a command: /imagine a red fox --seed 7, /video waves, or /help.
Attach an image for /remix and /animate.</div>
</div>
<div id="hints">
<button type="button" data-fill="/imagine a red fox in the snow --seed 7">/imagine</button>
<button type="button" data-fill="/video waves at sunset --duration 2">/video</button>
<button type="button" data-fill="/remix make it winter">/remix</button>
<button type="button" data-fill="/jobs">/jobs</button>
<button type="button" data-fill="/models">/models</button>
<button type="button" data-fill="/help">/help</button>
</div>
<form id="form" autocomplete="off">
<label id="attach" title="attach an image for /remix or /animate">📎<input id="file" type="file"
 accept="image/png,image/jpeg,image/webp,image/gif,image/bmp"></label>
<span id="chip"></span>
<input id="text" name="text" placeholder="/imagine a red fox --seed 7" autofocus>
<button id="send" type="submit">Send</button>
</form>
</section>
<aside id="side"><h2>Recent results</h2><div id="gallery"></div></aside>
</main>
<script>
"use strict";
const $ = (s, el) => (el || document).querySelector(s);
function rid(n) {
  const a = new Uint8Array(n || 12); crypto.getRandomValues(a);
  return Array.from(a, b => b.toString(16).padStart(2, "0")).join("");
}
let client = localStorage.getItem("reelbot-client");
if (!client || !/^[A-Za-z0-9_-]{8,64}$/.test(client)) {
  client = rid(12); localStorage.setItem("reelbot-client", client);
}
const log = $("#log"), gallery = $("#gallery"), input = $("#text"), file = $("#file");
const cards = new Map();
const RANK = {queued: 0, running: 1, encoding: 2, delivering: 3, delivered: 4, failed: 4,
              cancelled: 4};
const LABEL = {queued: "Queued", running: "Running", encoding: "Encoding", delivering: "Sending",
               delivered: "Done", failed: "Failed", cancelled: "Cancelled"};
const BUTTON = {reroll: "🎲 Re-roll", variations: "🔀 Variations", animate: "🎬 Animate",
                cancel: "✖ Cancel"};

function scroll() { log.scrollTop = log.scrollHeight; }
function bubble(cls, text) {
  const d = document.createElement("div");
  d.className = "msg " + cls; d.textContent = text; log.appendChild(d); scroll(); return d;
}

function card(id) {
  let c = cards.get(id);
  if (c) return c;
  const el = document.createElement("div");
  el.className = "msg bot job"; el.dataset.job = id; el.dataset.seen = ""; el.dataset.step = "0";
  el.innerHTML = '<div class="head"><span class="status"></span><span class="where"></span>' +
    '</div><progress max="1" value="0" hidden></progress><div class="steps"></div>' +
    '<img class="preview" alt="preview" hidden><div class="media"></div>' +
    '<div class="params"></div><div class="notice"></div><div class="buttons"></div>';
  log.appendChild(el); scroll();
  c = {el: el, s: {}}; cards.set(id, c); return c;
}

function update(v) {
  const c = card(v.job_id), s = c.s, el = c.el;
  // Progress rides a lossy channel; a late event must not take a finished card backwards.
  if (s.status && v.status && RANK[v.status] < RANK[s.status]) {
    v = Object.assign({}, v); delete v.status; delete v.actions; delete v.step; delete v.total;
  }
  for (const k of Object.keys(v)) {
    if (v[k] === undefined || (k === "media" && !v[k] && s.media)) continue;
    s[k] = v[k];
  }
  el.dataset.status = s.status || "";
  if (s.status && !el.dataset.seen.split(" ").includes(s.status)) {
    el.dataset.seen = (el.dataset.seen + " " + s.status).trim();
  }
  if (v.step) el.dataset.step = String(Math.max(+el.dataset.step, v.step));
  $(".status", el).textContent = (LABEL[s.status] || s.status || "") +
    (s.task ? " · /" + s.task : "");
  let where = "";
  if (s.status === "queued" && s.position != null) {
    where = s.position > 0 ? "#" + s.position + " in line · about " + Math.round(s.eta_s) + " s"
                           : "starting";
  }
  $(".where", el).textContent = where;
  const bar = $("progress", el), busy = s.status === "running" || s.status === "encoding";
  bar.hidden = !busy;
  if (busy && s.total) { bar.max = s.total; bar.value = s.step || 0; }
  $(".steps", el).textContent = busy && s.total
    ? "step " + (s.step || 0) + "/" + s.total + (s.stage ? " · " + s.stage : "") : "";
  const preview = $(".preview", el);
  if (s.preview && !s.media) { preview.src = s.preview; preview.hidden = false; }
  if (s.media && !$(".result", el)) {
    preview.hidden = true;
    $(".media", el).appendChild(mediaElement(s.media, true));
    addToGallery(s);
  }
  $(".params", el).textContent = s.prompt != null && s.summary
    ? s.prompt + "  " + s.summary : "";
  const notice = $(".notice", el);
  notice.textContent = s.status === "failed" ? (s.message || "The job failed.") : (s.notice || "");
  notice.className = "notice" + (s.status === "failed" ? " error" : "");
  const key = (s.actions || []).join(",");
  if (el.dataset.actions !== key) {
    el.dataset.actions = key;
    const box = $(".buttons", el); box.textContent = "";
    for (const a of s.actions || []) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = BUTTON[a] || a; b.dataset.action = a;
      b.onclick = () => send({action: a, job: s.job_id}, BUTTON[a] + " " + s.job_id);
      box.appendChild(b);
    }
  }
  scroll();
}

function mediaElement(m, main) {
  let el;
  if (m.kind === "video") {
    el = document.createElement("video");
    el.src = m.url; el.muted = true; el.loop = true; el.autoplay = true;
    el.playsInline = true; el.preload = "auto"; el.controls = main;
  } else {
    el = document.createElement("img"); el.src = m.url; el.alt = "result";
  }
  if (main) el.className = "result";
  if (m.spoiler) {
    // Flagged by the server's content policy: blurred until the viewer clicks it.
    el.classList.add("spoiler"); el.title = "Flagged content: click to reveal";
    el.addEventListener("click", () => el.classList.remove("spoiler"), { once: true });
  }
  return el;
}

function addToGallery(s) {
  if (gallery.querySelector('[data-job="' + s.job_id + '"]')) return;
  const fig = document.createElement("figure");
  fig.dataset.job = s.job_id; fig.title = s.prompt + "\n" + s.summary;
  fig.appendChild(mediaElement(s.media, false));
  const cap = document.createElement("figcaption");
  const b = document.createElement("b"); b.textContent = s.prompt || "(no prompt)";
  cap.appendChild(b); cap.appendChild(document.createTextNode(" " + s.summary));
  fig.appendChild(cap);
  fig.onclick = () => cards.get(s.job_id).el.scrollIntoView({behavior: "smooth"});
  gallery.prepend(fig);
}

async function send(fields, shown) {
  bubble("user", shown);
  const fd = new FormData();
  fd.append("msg", rid(12));
  for (const k of Object.keys(fields)) fd.append(k, fields[k]);
  let r, body;
  try {
    r = await fetch("/api/command", {method: "POST", body: fd,
                                     headers: {"X-Reelbot-Client": client}});
    body = await r.json();
  } catch (e) {
    bubble("bot error", "The server cannot be reached (" + e + ").");
    return;
  }
  if (body.type === "error") bubble("bot error", body.message);
  else if (body.type === "text") bubble("bot text", body.text);
  else if (body.type === "job") update(body);
}

$("#form").addEventListener("submit", ev => {
  ev.preventDefault();
  const text = input.value.trim(), img = file.files[0];
  if (!text && !img) return;
  const fields = {text: text};
  if (img) fields.image = img;
  send(fields, text + (img ? "  📎 " + img.name : ""));
  input.value = ""; file.value = ""; $("#chip").textContent = "";
});
file.addEventListener("change", () => {
  $("#chip").textContent = file.files[0] ? file.files[0].name : "";
});
// An image pasted or dropped anywhere on the page becomes the attachment.
function attach(files) {
  const img = [...(files || [])].find(f => f.type.startsWith("image/"));
  if (!img) return false;
  const dt = new DataTransfer(); dt.items.add(img); file.files = dt.files;
  $("#chip").textContent = img.name || "pasted image";
  return true;
}
document.addEventListener("paste", ev => {
  if (attach(ev.clipboardData && ev.clipboardData.files)) ev.preventDefault();
});
document.addEventListener("dragover", ev => ev.preventDefault());
document.addEventListener("drop", ev => {
  ev.preventDefault(); attach(ev.dataTransfer && ev.dataTransfer.files);
});
for (const b of document.querySelectorAll("#hints button")) {
  b.onclick = () => { input.value = b.dataset.fill; input.focus(); };
}

let loaded = false;
async function sync() {
  try {
    const r = await fetch("/api/history?client=" + client);
    const body = await r.json();
    for (const v of body.jobs || []) {
      if (!loaded && !cards.has(v.job_id)) bubble("user", v.command);
      update(v);
    }
    loaded = true;
  } catch (e) { /* the next reconnect tries again */ }
}

function connect() {
  const es = new EventSource("/api/events?client=" + client);
  es.onopen = () => { $("#conn").textContent = "connected"; sync(); };
  es.onerror = () => { $("#conn").textContent = "reconnecting…"; };
  es.onmessage = e => {
    const v = JSON.parse(e.data);
    if (v.type === "job") update(v);
    else if (v.type === "text") bubble("bot text", v.text);
  };
}
connect();
</script>
</body>
</html>
"""
