// The review page. Plain JS, no framework, no build step. The server (anonymize/app/server.py)
// does the work: upload -> detect (a plan) -> this page collects edits -> render.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { files: [], current: null, data: null, view: "masked", spared: new Set(), add: [], maskFrames: [],
                markFrom: null, drag: null, frame: 0 };
const api = (path, opts) => fetch(path, Object.assign({ credentials: "same-origin" }, opts));

// ---- files: choose, drop, upload, poll -------------------------------------------------------

$("pick").addEventListener("change", (e) => { [...e.target.files].forEach(upload); e.target.value = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over"); [...e.dataTransfer.files].forEach(upload);
});

async function upload(file) {
  const form = new FormData();
  form.append("file", file);
  const r = await api("/api/files", { method: "POST", body: form,
                                      headers: { "X-File-Name": encodeURIComponent(file.name) } });
  const body = await r.json();
  if (!r.ok) { alert(`${file.name}: ${body.detail}`); return; }
  if (!state.current) state.current = body.id;
  poll();
}

let polling = null;
async function poll() {
  clearTimeout(polling);
  state.files = await (await api("/api/files")).json();
  renderFileList();
  const cur = state.files.find((f) => f.id === state.current);
  if (cur && ["ready", "rendered"].includes(cur.status) && (!state.data || state.data.id !== cur.id ||
      state.data.status !== cur.status)) await loadReview(cur.id);
  if (cur && state.data && state.data.id === cur.id) showRenderState(cur);
  if (state.files.some((f) => ["queued", "detecting", "rendering"].includes(f.status))) polling = setTimeout(poll, 500);
}

function renderFileList() {
  const ul = $("files");
  ul.replaceChildren(...state.files.map((f) => {
    const li = document.createElement("li");
    li.dataset.id = f.id;
    li.className = f.id === state.current ? "on" : "";
    const busy = ["queued", "detecting", "rendering"].includes(f.status);
    li.innerHTML = `<div class="name"></div><div class="status">${f.status}</div>` +
      (busy ? `<progress max="1" value="${f.progress}"></progress>` : "") +
      (f.error ? `<div class="err"></div>` : "");
    li.querySelector(".name").textContent = f.name;
    if (f.error) li.querySelector(".err").textContent = f.error;
    li.onclick = () => { state.current = f.id; state.data = null; poll(); };
    return li;
  }));
}

// ---- review ---------------------------------------------------------------------------------

async function loadReview(id) {
  const d = await (await api(`/api/files/${id}`)).json();
  const fresh = !state.data || state.data.id !== id;
  state.data = d;
  if (fresh) {
    state.spared = new Set(d.tracks.filter((t) => !t.masked).map((t) => t.id));
    state.add = []; state.maskFrames = []; state.markFrom = null; state.frame = 0;
  }
  $("review").hidden = false;
  $("title").textContent = d.name;
  $("video-edits").hidden = d.kind !== "video";
  $("controls").hidden = d.kind !== "video";
  $("scrub").max = Math.max(0, d.frame_count - 1);
  showMedia();
  renderGallery(); renderTimeline(); renderEdits();
}

function mediaUrl() {
  const d = state.data;
  return state.view === "original" ? `/api/files/${d.id}/original` : `/api/files/${d.id}/preview?v=${d.version}`;
}

function showMedia() {
  const d = state.data, video = $("video"), photo = $("photo");
  video.hidden = d.kind !== "video"; photo.hidden = d.kind !== "photo";
  const el = d.kind === "video" ? video : photo;
  const url = mediaUrl();
  if (el.getAttribute("src") !== url) {
    if (d.kind === "video") {
      video.onloadeddata = () => seek(state.frame);
      video.src = url;
    } else {
      photo.onload = draw;
      photo.src = url;
    }
  }
  $("view-masked").classList.toggle("on", state.view === "masked");
  $("view-original").classList.toggle("on", state.view === "original");
  // The masked view is a file the server rendered: say which plan it shows, so nobody takes the
  // detection preview for the edited result.
  $("preview-note").textContent = state.view !== "masked" ? "" : d.status === "rendered"
    ? "Masked view: your last render (edits made since then show after you render again)."
    : "Masked view: the detection preview, everything found masked. Spared people, added boxes and masked frames show after Render.";
  draw();
}

$("view-masked").onclick = () => { state.view = "masked"; showMedia(); };
$("view-original").onclick = () => { state.view = "original"; showMedia(); };

// frame <-> time: the plan's presentation times, counted from the first frame
function frameTimes() { const f = state.data.frames; const t0 = f.length ? f[0][0] : 0; return f.map((x) => x[0] - t0); }
function frameAt(t) {
  const times = frameTimes();
  let lo = 0, hi = times.length - 1;
  while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (times[mid] <= t + 1e-3) lo = mid; else hi = mid - 1; }
  return lo;
}
function seek(i) {
  const d = state.data;
  if (d.kind !== "video") return;
  i = Math.max(0, Math.min(d.frame_count - 1, i));
  const times = frameTimes(), step = d.fps ? 1 / d.fps : 0.033;
  state.frame = i;
  $("video").currentTime = (times[i] ?? i * step) + step / 2;  // the middle of the frame: no rounding to the one before
  updateFrameLabel(); draw();
}
function updateFrameLabel() {
  $("scrub").value = state.frame;
  $("frame-label").textContent = `frame ${state.frame} / ${state.data.frame_count - 1}`;
  const head = document.querySelector(".timeline .head");
  if (head) head.style.left = `${100 * state.frame / Math.max(1, state.data.frame_count)}%`;
}

const video = $("video");
$("play").onclick = () => (video.paused ? video.play() : video.pause());
video.addEventListener("play", () => { $("play").textContent = "Pause"; tick(); });
video.addEventListener("pause", () => { $("play").textContent = "Play"; state.frame = frameAt(video.currentTime); updateFrameLabel(); draw(); });
video.addEventListener("seeked", draw);
$("back").onclick = () => { video.pause(); seek(state.frame - 1); };
$("fwd").onclick = () => { video.pause(); seek(state.frame + 1); };
$("scrub").oninput = (e) => { video.pause(); seek(Number(e.target.value)); };
function tick() {  // follow playback (requestVideoFrameCallback where there is one)
  if (video.paused) return;
  state.frame = frameAt(video.currentTime); updateFrameLabel(); draw();
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(tick); else requestAnimationFrame(tick);
}

// ---- overlay: outlines of the plan's regions, added boxes, the box being drawn ---------------

const canvas = $("overlay");
function draw() {
  const d = state.data;
  if (!d) return;
  canvas.width = d.width; canvas.height = d.height;  // canvas pixels = frame pixels; CSS scales it
  const g = canvas.getContext("2d");
  g.lineWidth = Math.max(2, d.width / 400);
  const frame = d.kind === "video" ? state.frame : 0;
  if (state.view === "original") {
    for (const [x, y, w, h, track, shape] of (d.frames[frame] || [0, []])[1]) {
      const spared = state.spared.has(track);
      g.strokeStyle = spared ? "#ffb000" : "#00e0ff";
      g.setLineDash(spared ? [8, 6] : []);
      g.beginPath();
      if (shape === "ellipse") g.ellipse(x + w / 2, y + h / 2, w / 2, h / 2, 0, 0, 2 * Math.PI); else g.rect(x, y, w, h);
      g.stroke();
    }
    g.setLineDash([]);
  }
  g.strokeStyle = "#ff2d55";
  for (const a of state.add) if (a.frame === frame) g.strokeRect(a.x, a.y, a.w, a.h);
  if (state.drag) { const b = dragBox(); g.strokeRect(b.x, b.y, b.w, b.h); }
}

function toFrame(e) {  // mouse position -> frame pixels
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * state.data.width / r.width, (e.clientY - r.top) * state.data.height / r.height];
}
function dragBox() {
  const [x0, y0] = state.drag.from, [x1, y1] = state.drag.to;
  return { x: Math.round(Math.min(x0, x1)), y: Math.round(Math.min(y0, y1)),
           w: Math.round(Math.abs(x1 - x0)), h: Math.round(Math.abs(y1 - y0)) };
}
canvas.addEventListener("pointerdown", (e) => {
  if (!state.data || (state.data.kind === "video" && !video.paused)) return;
  canvas.setPointerCapture(e.pointerId);
  state.drag = { from: toFrame(e), to: toFrame(e) };
});
canvas.addEventListener("pointermove", (e) => { if (state.drag) { state.drag.to = toFrame(e); draw(); } });
canvas.addEventListener("pointerup", (e) => {
  if (!state.drag) return;
  state.drag.to = toFrame(e);
  const b = dragBox();
  state.drag = null;
  if (b.w >= 4 && b.h >= 4) state.add.push({ frame: state.data.kind === "video" ? state.frame : 0, ...b });
  renderEdits(); renderTimeline(); draw();
});

// ---- mask whole frames ------------------------------------------------------------------------

$("mark-from").onclick = () => { state.markFrom = state.frame; $("mark-label").textContent = `from frame ${state.frame}`; };
$("mark-to").onclick = () => {
  if (state.markFrom === null) { $("mark-label").textContent = "first: Mark from here"; return; }
  const a = Math.min(state.markFrom, state.frame), b = Math.max(state.markFrom, state.frame);
  state.maskFrames.push([a, b]); state.markFrom = null; $("mark-label").textContent = "";
  renderEdits(); renderTimeline();
};

function renderEdits() {
  const items = [
    ...state.add.map((a, i) => [`box at frame ${a.frame}: ${a.w}×${a.h} px at (${a.x}, ${a.y})`, () => state.add.splice(i, 1), a.frame]),
    ...state.maskFrames.map((r, i) => [`whole frames ${r[0]}–${r[1]}`, () => state.maskFrames.splice(i, 1), r[0]]),
  ];
  $("edit-list").replaceChildren(...(items.length ? items : [["none yet", null]]).map(([text, remove, frame]) => {
    const li = document.createElement("li");
    li.textContent = text;
    if (remove) {
      li.onclick = () => { video.pause(); seek(frame); };
      const b = document.createElement("button");
      b.textContent = "remove";
      b.onclick = (e) => { e.stopPropagation(); remove(); renderEdits(); renderTimeline(); draw(); };
      li.append(b);
    }
    return li;
  }));
}

// ---- timeline and gallery ---------------------------------------------------------------------

function span(cls, first, last, title) {
  const n = Math.max(1, state.data.frame_count), s = document.createElement("div");
  s.className = `span ${cls}`; s.title = title;
  s.style.left = `${100 * first / n}%`; s.style.width = `${Math.max(0.4, 100 * (last - first + 1) / n)}%`;
  return s;
}
function renderTimeline() {
  const d = state.data, tl = $("timeline"), rows = [];
  for (const t of d.tracks) {
    const row = document.createElement("div");
    row.className = "row";
    row.append(span(state.spared.has(t.id) ? "spared" : "", t.first, t.last, `track ${t.id} (${t.kind}): frames ${t.first}–${t.last}`));
    rows.push(row);
  }
  const edits = document.createElement("div");
  edits.className = "row";
  state.maskFrames.forEach((r) => edits.append(span("frames", r[0], r[1], `whole frames ${r[0]}–${r[1]}`)));
  state.add.forEach((a) => edits.append(span("add", a.frame, a.frame, `added box at frame ${a.frame}`)));
  const head = document.createElement("div");
  head.className = "head";
  tl.replaceChildren(...rows, edits, head);
  tl.onclick = (e) => {
    const r = tl.getBoundingClientRect();
    video.pause(); seek(Math.floor((e.clientX - r.left) / r.width * d.frame_count));
  };
  updateFrameLabel();
}

function renderGallery() {
  const d = state.data;
  $("gallery").replaceChildren(...d.tracks.map((t) => {
    const card = document.createElement("div"), spared = state.spared.has(t.id);
    card.className = `card${spared ? " spared" : ""}`;
    card.dataset.track = t.id;
    card.innerHTML = `<img alt="track ${t.id}" src="/api/files/${d.id}/thumb/${t.id}"><div>track ${t.id} · ${t.kind}<br>` +
      `frames ${t.first}–${t.last}</div><button class="spare">${spared ? "Spared: mask again" : "Spare"}</button>`;
    card.querySelector("img").onclick = () => { video.pause(); seek(t.first); };
    card.querySelector("button").onclick = () => toggleSpare(t.id);
    return card;
  }));
}

function toggleSpare(id) {
  if (state.spared.has(id)) state.spared.delete(id);
  else if (confirm(`Leave track ${id} UNMASKED in the result?\n\nOnly do this for a person who agreed to be ` +
                   "shown. Everyone else stays masked.")) state.spared.add(id);
  renderGallery(); renderTimeline(); draw();
}

// ---- render and save --------------------------------------------------------------------------

$("render").onclick = async () => {
  const d = state.data;
  const r = await api(`/api/files/${d.id}/render`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ spared: [...state.spared], add: state.add, mask_frames: state.maskFrames }) });
  if (!r.ok) { alert((await r.json()).detail); return; }
  state.data.status = "rendering";
  poll();
};

function showRenderState(f) {
  const done = f.status === "rendered";
  $("render").disabled = !["ready", "rendered"].includes(f.status);
  $("render-state").textContent = f.status === "rendering" ? `rendering… ${Math.round(100 * f.progress)} %` :
    f.error ? f.error : done ? "done" : "";
  for (const [id, what] of [["dl-output", "output"], ["dl-report", "report"]]) {
    $(id).hidden = !done;
    $(id).href = done ? `/api/files/${f.id}/${what}?v=${state.data.version}` : "";
  }
}

poll();
