"use strict";
// The region editor of Edit region (the web chat's page and /edit): paint over an image with a
// brush, say what goes there, and hand over a PNG mask of the image's size (white = change).
(function () {
  const CSS = `
.rb-editor { position:fixed; inset:0; background:rgba(8,10,14,.88); display:flex;
  align-items:center; justify-content:center; z-index:50; }
.rb-editor.rb-inline { position:static; background:none; display:block; }
.rb-panel { background:#1a1f26; border:1px solid #2a313b; border-radius:10px; padding:12px;
  max-width:min(96vw, 1100px); display:flex; flex-direction:column; gap:8px; color:#e6e9ee;
  font:14px/1.4 system-ui, sans-serif; }
.rb-stage { position:relative; align-self:center; line-height:0; touch-action:none; }
.rb-stage img { display:block; max-width:min(92vw, 1080px); max-height:68vh; user-select:none; }
.rb-stage canvas { position:absolute; inset:0; width:100%; height:100%; opacity:.55;
  cursor:crosshair; }
.rb-tools, .rb-row { display:flex; gap:8px; align-items:center; flex-wrap:wrap; }
.rb-row input.rb-prompt { flex:1; min-width:200px; padding:7px 10px; border-radius:6px;
  border:1px solid #2a313b; background:#111418; color:inherit; font:inherit; }
.rb-editor button { background:#26303c; color:inherit; border:1px solid #2a313b;
  border-radius:6px; padding:5px 10px; cursor:pointer; font:inherit; }
.rb-editor button[aria-pressed=true] { border-color:#6aa7ff; }
.rb-said { min-height:1.4em; color:#9aa4b2; }
.rb-said.rb-bad { color:#ff7a7a; }`;
  const PAINT = "rgb(255,64,96)";

  function styles() {
    if (document.getElementById("rb-editor-css")) return;
    const s = document.createElement("style");
    s.id = "rb-editor-css"; s.textContent = CSS; document.head.appendChild(s);
  }

  // opts: {src, inline, submit: async (text, maskBlob) => words to show (or throws)}.
  function open(opts) {
    styles();
    const box = document.createElement("div");
    box.className = "rb-editor" + (opts.inline ? " rb-inline" : "");
    box.innerHTML =
      '<div class="rb-panel" role="dialog" aria-label="Edit region">' +
      '<div class="rb-stage"><img alt="the image to edit"><canvas></canvas></div>' +
      '<div class="rb-tools"><label>Brush <input class="rb-size" type="range" min="4" ' +
      'max="200" value="48"></label><button type="button" class="rb-paint" ' +
      'aria-pressed="true">Paint</button><button type="button" class="rb-erase" ' +
      'aria-pressed="false">Erase</button><button type="button" class="rb-clear">Clear' +
      '</button><span>Paint over what should change.</span></div>' +
      '<div class="rb-row"><input class="rb-prompt" placeholder="what goes there (empty: ' +
      'the image\'s own prompt)"><button type="button" class="rb-submit">Submit</button>' +
      (opts.inline ? "" : '<button type="button" class="rb-close">Cancel</button>') +
      '</div><div class="rb-said" role="status"></div></div>';
    (opts.parent || document.body).appendChild(box);
    const q = s => box.querySelector(s);
    const img = q("img"), canvas = q("canvas"), ctx = canvas.getContext("2d");
    const said = (text, bad) => {
      q(".rb-said").textContent = text || ""; q(".rb-said").className = "rb-said" +
        (bad ? " rb-bad" : "");
    };
    let erase = false, last = null, painted = false;
    img.onload = () => { canvas.width = img.naturalWidth; canvas.height = img.naturalHeight; };
    img.onerror = () => said("The image could not be loaded.", true);
    img.src = opts.src;

    function at(ev) {
      const r = canvas.getBoundingClientRect();
      return [(ev.clientX - r.left) * canvas.width / r.width,
              (ev.clientY - r.top) * canvas.height / r.height];
    }
    function stroke(from, to) {
      const r = canvas.getBoundingClientRect();
      ctx.globalCompositeOperation = erase ? "destination-out" : "source-over";
      ctx.strokeStyle = PAINT; ctx.lineCap = "round"; ctx.lineJoin = "round";
      ctx.lineWidth = +q(".rb-size").value * canvas.width / (r.width || canvas.width);
      ctx.beginPath(); ctx.moveTo(from[0], from[1]); ctx.lineTo(to[0], to[1]); ctx.stroke();
      painted = painted || !erase;
    }
    canvas.addEventListener("pointerdown", ev => {
      ev.preventDefault(); last = at(ev); stroke(last, last);
      if (canvas.setPointerCapture && ev.pointerId !== undefined) {
        try { canvas.setPointerCapture(ev.pointerId); } catch (e) { /* synthetic events */ }
      }
    });
    canvas.addEventListener("pointermove", ev => {
      if (!last) return;
      const now = at(ev); stroke(last, now); last = now;
    });
    for (const end of ["pointerup", "pointercancel", "pointerleave"]) {
      canvas.addEventListener(end, () => { last = null; });
    }
    function tool(toErase) {
      erase = toErase;
      q(".rb-paint").setAttribute("aria-pressed", String(!toErase));
      q(".rb-erase").setAttribute("aria-pressed", String(toErase));
    }
    q(".rb-paint").onclick = () => tool(false);
    q(".rb-erase").onclick = () => tool(true);
    q(".rb-clear").onclick = () => {
      ctx.clearRect(0, 0, canvas.width, canvas.height); painted = false;
    };
    const close = () => box.remove();
    if (!opts.inline) q(".rb-close").onclick = close;

    // White where painted, black elsewhere, at the image's own size.
    function mask() {
      const w = canvas.width, h = canvas.height, out = document.createElement("canvas");
      out.width = w; out.height = h;
      const octx = out.getContext("2d"), src = ctx.getImageData(0, 0, w, h).data;
      const dst = octx.createImageData(w, h);
      let any = false;
      for (let i = 0; i < src.length; i += 4) {
        const v = src[i + 3] > 0 ? 255 : 0;
        any = any || v > 0;
        dst.data[i] = dst.data[i + 1] = dst.data[i + 2] = v; dst.data[i + 3] = 255;
      }
      octx.putImageData(dst, 0, 0);
      return any ? new Promise(done => out.toBlob(done, "image/png")) : Promise.resolve(null);
    }
    q(".rb-submit").onclick = async () => {
      const blob = painted && canvas.width ? await mask() : null;
      if (!blob) { said("Paint over the area to change first.", true); return; }
      q(".rb-submit").disabled = true; said("Sending…");
      try {
        const words = await opts.submit(q(".rb-prompt").value.trim(), blob);
        if (opts.inline) said(words || "Sent."); else close();
      } catch (e) {
        said(String(e && e.message ? e.message : e), true);
      } finally {
        q(".rb-submit").disabled = false;
      }
    };
    return box;
  }

  window.ReelbotEditor = {open: open};
})();
