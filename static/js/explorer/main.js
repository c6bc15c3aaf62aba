// The explorer page's island. htmx asks for traces (the form, and htmx.ajax for autostart and the checkpoint
// slider) and keeps #trace-status current over the trace's websocket; this script watches #trace-status, fetches a
// ready trace over HTTP, and draws every view from it. View state lives in the URL so a view can be shared.

import { parseTrace, show } from "./trace.js";
import { Heatmap, HeadView, ModelView, Probabilities } from "./views2d.js";
import { STEPS, walkBody } from "./walk.js";

const $ = (id) => document.getElementById(id);
const boot = JSON.parse($("explorer-boot").textContent);
const v = boot.view || {};
const state = {
  model: v.model || "", text: v.text || "", layer: v.layer || 0, head: v.head || 0, tok: v.tok ?? -1, hover: -1,
  cam: v.cam || "angle", temperature: 1, allHeads: false, markBy: "", step: 0,
  share: v.share || "", shareText: v.share ? v.text || "" : "", // a long text's stored key, for the URL
};
const checkpoints = boot.checkpoints || [];
const cache = new Map(); // trace key -> Trace (a slider revisits checkpoints)
let trace = null, scene = null, shownKey = null, loadingKey = null, firstShow = true;
const waiters = []; // resolve functions waiting for the next trace to be shown (the slider's play)

// ---------------------------------------------------------------------------------------------------------------
// views

const heatmap = new Heatmap($("heatmap"), { onHover: setHover, onSelectToken: setTok });
const headview = new HeadView($("headview"), $("head-legend"), { onHover: setHover });
const modelview = new ModelView($("modelview"), { onSelect: (l, h) => { select(l, h); scene?.focus("head", l, h); } });
const probs = new Probabilities({ list: $("prob-bars"), summary: $("prob-summary"), sampleButton: $("sample"), sampleOut: $("sample-out") });

function webgl() {
  try {
    return !!document.createElement("canvas").getContext("webgl2");
  } catch {
    return false;
  }
}

async function startScene() {
  if (!webgl()) {
    $("no-webgl").hidden = false;
    $("scene").hidden = true;
    document.body.dataset.webgl = "off";
    return;
  }
  try {
    const { Scene } = await import("./scene.js");
    scene = new Scene($("scene"), {
      tip: $("scene-tip"),
      onHoverToken: setHover,
      onSelectHead: (l, h) => select(l, h),
      onSelectToken: setTok,
      onUnfold: () => setUnfolded(true),
    });
    document.body.dataset.webgl = "on";
    if (trace) buildScene();
  } catch (err) {
    console.error(err);
    $("no-webgl").hidden = false;
    $("no-webgl").textContent = interpolate(gettext("The 3D view could not start (%(error)s); every 2D view below still works."), { error: err.message }, true);
    $("scene").hidden = true;
    document.body.dataset.webgl = "failed";
  }
}

function buildScene() {
  $("scene-placeholder")?.remove();
  scene.build(trace, state);
  scene.setHoverToken(state.hover);
  markFold();
  window.explorerScene = scene; // for the browser test's pixel check
}

// a deep model's blocks fold to the first two, the selected and the last; the button (or a click on the folded
// slab) shows them all, and folds them again
function markFold() {
  const b = $("scene-fold");
  b.hidden = !trace || trace.L <= 4;
  if (b.hidden) return;
  b.setAttribute("aria-pressed", String(!scene.folded));
  b.textContent = scene.folded ? interpolate(gettext("show all %(n)s blocks"), { n: trace.L }, true) : gettext("fold the middle blocks");
}
function setUnfolded(unfolded) {
  scene?.setUnfolded(unfolded);
  markFold();
}
$("scene-fold").addEventListener("click", () => setUnfolded(scene.folded));

function drawAll() {
  if (!trace) return;
  drawTokens();
  drawPickers();
  heatmap.draw(trace, state);
  headview.draw(trace, state);
  modelview.draw(trace, state);
  probs.draw(trace, state.temperature);
  drawWalk();
  const where = { layer: state.layer, head: state.head, token: show(trace.tokens[state.tok]), i: state.tok };
  $("heat-title").textContent = interpolate(gettext("layer %(layer)s · head %(head)s"), where, true);
  $("scene-focus").textContent = interpolate(gettext("layer %(layer)s · head %(head)s · following “%(token)s” (%(i)s)"), where, true);
  $("modelview-count").textContent = interpolate(gettext("%(L)s layers × %(H)s heads"), { L: trace.L, H: trace.H }, true);
}

function drawTokens() {
  const strip = $("tokens");
  strip.replaceChildren(...trace.tokens.map((t, i) => {
    const s = document.createElement("span");
    s.className = "tk" + (i === state.tok ? " followed" : "") + (i === state.hover ? " hovered" : "");
    s.textContent = show(t);
    s.dataset.i = i;
    const p = trace.a.target_prob[i - 1];
    s.title = interpolate(gettext("token %(i)s · id %(id)s"), { i, id: trace.ids[i] }, true) + (i > 0 ? " · " +
      interpolate(gettext("the model gave it %(p)s% after the tokens before"), { p: (100 * p).toFixed(1) }, true) : "");
    return s;
  }));
}

$("tokens").addEventListener("mouseover", (e) => { if (e.target.dataset.i) setHover(Number(e.target.dataset.i)); });
$("tokens").addEventListener("mouseleave", () => setHover(-1));
$("tokens").addEventListener("click", (e) => { if (e.target.dataset.i) setTok(Number(e.target.dataset.i)); });

function drawPickers() {
  const fill = (sel, n, label, value) => {
    if (sel.options.length !== n) sel.replaceChildren(...Array.from({ length: n }, (_, k) => new Option(`${label} ${k}`, k)));
    sel.value = value;
  };
  fill($("layer"), trace.L, gettext("layer"), state.layer);
  fill($("head"), trace.H, gettext("head"), state.head);
}
$("layer").addEventListener("change", (e) => select(Number(e.target.value), state.head));
$("head").addEventListener("change", (e) => select(state.layer, Number(e.target.value)));
$("all-heads").addEventListener("change", (e) => { state.allHeads = e.target.checked; trace && headview.draw(trace, state); });
$("mark-by").addEventListener("change", (e) => { state.markBy = e.target.value; trace && modelview.draw(trace, state); });
$("temperature").addEventListener("input", (e) => {
  state.temperature = Number(e.target.value);
  $("temperature-out").textContent = state.temperature.toFixed(2);
  if (trace) { probs.draw(trace, state.temperature); if (STEPS[state.step].key === "probabilities") drawWalk(); }
});
for (const b of document.querySelectorAll("[data-cam]")) {
  b.addEventListener("click", () => { state.cam = b.dataset.cam; markCam(); scene?.preset(state.cam); syncUrl(); });
}
function markCam() {
  for (const b of document.querySelectorAll("[data-cam]")) b.setAttribute("aria-pressed", String(b.dataset.cam === state.cam));
}
markCam();

function select(l, h) {
  state.layer = l;
  state.head = h;
  scene?.setSelected(l, h);
  drawAll();
  syncUrl();
}

function setTok(t) {
  state.tok = t;
  scene?.setToken(t);
  drawAll();
  syncUrl();
}

let hoverFrame = 0;
function setHover(t) {
  if (t === state.hover) return;
  state.hover = t;
  scene?.setHoverToken(t);
  cancelAnimationFrame(hoverFrame);
  hoverFrame = requestAnimationFrame(() => {
    if (!trace) return;
    for (const s of $("tokens").children) s.classList.toggle("hovered", Number(s.dataset.i) === state.hover);
    heatmap.draw(trace, state);
    headview.draw(trace, state);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// the walk-through

function walkSteps() {
  $("walk-steps").replaceChildren(...STEPS.map((s, k) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = s.title;
    b.addEventListener("click", () => walkTo(k));
    li.append(b);
    return li;
  }));
}

function drawWalk() {
  const ol = $("walk-steps");
  [...ol.querySelectorAll("button")].forEach((b, k) => b.setAttribute("aria-current", k === state.step ? "step" : "false"));
  $("walk-body").replaceChildren(...walkBody(STEPS[state.step].key, trace, state));
  $("walk-prev").disabled = state.step === 0;
  $("walk-next").disabled = state.step === STEPS.length - 1;
}

function walkTo(k) {
  state.step = k;
  if (!trace) return;
  drawWalk();
  const key = STEPS[k].key;
  const kind = { embedding: "embedding", attention: "attention", mlp: "mlp", residual: "residual", logits: "logits", probabilities: "logits" }[key];
  scene?.focus(kind, state.layer, state.head, state.tok);
}
$("walk-prev").addEventListener("click", () => walkTo(Math.max(0, state.step - 1)));
$("walk-next").addEventListener("click", () => walkTo(Math.min(STEPS.length - 1, state.step + 1)));

// ---------------------------------------------------------------------------------------------------------------
// traces: ask, watch, fetch, show

const form = $("explorer-form");

function requestTrace(model, text) {
  state.model = model;
  state.text = text;
  htmx.ajax("POST", boot.urls.request, { source: form, target: "#trace-live", swap: "outerHTML", values: { model, text } });
}

// the Trace button traces the checkpoint on screen when the picker shows its run (the slider moved); requests
// made by this script (autostart, the slider) already name their model
form?.addEventListener("htmx:configRequest", (e) => {
  if (e.detail.triggeringEvent?.type !== "submit") return;
  const onRun = (ref) => checkpoints.some((c) => c.ref === ref);
  if (onRun(e.detail.parameters.model) && onRun(state.model)) e.detail.parameters.model = state.model;
  state.model = e.detail.parameters.model;
  state.text = e.detail.parameters.text;
});

// a different model: reload the page for it (the server lays out its checkpoints), keeping the text
form?.elements.model.addEventListener("change", () => {
  state.model = form.elements.model.value;
  state.text = form.elements.text.value;
  const opt = form.elements.model.selectedOptions[0];
  $("model-detail").textContent = `${opt.dataset.detail} · ` + interpolate(gettext("traces up to %(n)s tokens"), { n: opt.dataset.limit }, true);
  location.assign(pageUrl());
});

function checkStatus() {
  const el = $("trace-status");
  if (!el) return;
  if (el.dataset.status === "ready" && el.dataset.key !== shownKey && el.dataset.key !== loadingKey) {
    loadTrace(el.dataset.key, el.dataset.url);
  }
}

async function loadTrace(key, url) {
  loadingKey = key;
  try {
    let t = cache.get(key);
    if (!t) {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) throw new Error(interpolate(gettext("the trace could not be fetched (HTTP %(status)s)"), { status: response.status }, true));
      t = parseTrace(await response.arrayBuffer());
      cache.set(key, t);
      if (cache.size > 16) cache.delete(cache.keys().next().value);
    }
    if (loadingKey !== key) return; // a newer request won
    showTrace(key, t);
  } catch (err) {
    $("explorer-notice").textContent = `Could not show the trace: ${err.message}. Try tracing again.`;
  } finally {
    if (loadingKey === key) loadingKey = null;
  }
}

function showTrace(key, t) {
  const sameShape = trace && trace.L === t.L && trace.H === t.H && trace.T === t.T;
  trace = t;
  shownKey = key;
  state.model = t.header.source;
  state.layer = Math.min(state.layer, t.L - 1);
  state.head = Math.min(state.head, t.H - 1);
  if (state.tok < 0 || state.tok >= t.T || (!sameShape && !firstShow)) state.tok = t.T - 1;
  firstShow = false;
  $("explorer-notice").textContent = "";
  document.body.dataset.trace = key;
  drawAll();
  if (scene) buildScene();
  markCheckpoint();
  syncUrl();
  while (waiters.length) waiters.shift()(t);
}

new MutationObserver(checkStatus).observe($("explorer"), { childList: true, subtree: true, attributes: true, attributeFilter: ["data-status"] });

// ---------------------------------------------------------------------------------------------------------------
// across training: the same text through each checkpoint of the run

const slider = $("ckpt");
// the slider follows the trace on screen...
function markCheckpoint() {
  if (!slider) return;
  const k = checkpoints.findIndex((c) => c.ref === state.model);
  if (k >= 0) slider.value = k;
  labelCheckpoint();
}
// ...and its label follows the slider while it moves
function labelCheckpoint() {
  const c = checkpoints[Number(slider.value)];
  $("ckpt-out").textContent = c ? `step ${c.step}${c.val_loss != null ? ` · val loss ${c.val_loss.toFixed(3)}` : ""}` : "";
  [...$("ckpt-ticks").children].forEach((li, i) => li.classList.toggle("on", i === Number(slider.value)));
}
let slideTimer = 0, playing = false;
slider?.addEventListener("input", () => {
  labelCheckpoint();
  clearTimeout(slideTimer);
  slideTimer = setTimeout(() => requestTrace(checkpoints[Number(slider.value)].ref, traceText()), 180);
});
$("ckpt-play")?.addEventListener("click", async () => {
  if (playing) { playing = false; return; }
  playing = true;
  $("ckpt-play").textContent = "■ Stop";
  for (let k = 0; k < checkpoints.length && playing; k++) {
    slider.value = k;
    labelCheckpoint();
    const shown = new Promise((resolve) => waiters.push(resolve));
    requestTrace(checkpoints[k].ref, traceText());
    await Promise.race([shown, new Promise((r) => setTimeout(r, 30000))]);
    await new Promise((r) => setTimeout(r, 900));
  }
  playing = false;
  $("ckpt-play").textContent = "▶ Play";
});
markCheckpoint();

function traceText() {
  return form ? form.elements.text.value : state.text;
}

// ---------------------------------------------------------------------------------------------------------------
// the URL holds the view

// a long text would make a link too long to open: the server stores it and the link carries its key instead
document.addEventListener("htmx:afterSwap", () => {
  const live = $("trace-live");
  if (live && live.dataset.share !== undefined) {
    state.share = live.dataset.share;
    state.shareText = state.text;
    syncUrl();
  }
});

function pageUrl() {
  const shared = state.share && state.shareText === state.text;
  const q = new URLSearchParams({ model: state.model, ...(shared ? { share: state.share } : { text: state.text }),
    layer: state.layer, head: state.head, cam: state.cam });
  if (trace && state.tok !== trace.T - 1) q.set("tok", state.tok);
  return `${boot.urls.page}?${q}`;
}

function syncUrl() {
  if (boot.urls.page) history.replaceState(null, "", pageUrl());
}

let resizeTimer = 0;
window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawAll, 150); });

// ---------------------------------------------------------------------------------------------------------------
// start: draw the page at once, then ask for the trace (the page never waits for it)

startScene();
walkSteps();
function autostart() {
  if (form && state.model) requestTrace(state.model, state.text);
}
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", autostart);
else autostart();
