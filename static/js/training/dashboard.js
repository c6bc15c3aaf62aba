// A run's live dashboard: the history the page was rendered with (from the database), then the run's websocket
// (system/socket.js, which reconnects). On every (re)connect — and when the server says Redis restarted under it
// ("resync") — the page asks for everything after its last step; rows are merged by step, so nothing is missed and
// nothing doubled. Numbers beside the chart are filled here; the parts templates draw (header, actions,
// checkpoints, timeline) are fetched again through htmx when the run changes.
//
// Watching must not slow the run: messages only change the state, and charts, numbers and samples are drawn from it
// at most four times a second, never while the tab is hidden (system/redraw.js).
import { openSocket } from "../system/socket.js";
import { redrawer } from "../system/redraw.js";
import { LossChart, OptChart } from "./chart.js";
import { EVAL, duration, mergeRows, si, truncateAfter } from "./series.js";

const $ = id => document.getElementById(id);
const root = $("dashboard");
const json = id => JSON.parse($(id).textContent);

const chart = json("run-chart");
const history = json("run-history");
const state = { steps: history.steps, evals: history.evals, epoch: history.epoch, status: chart.status };
const samples = new Map(history.samples.map(s => [s.step, s.text]));
let progress = json("run-progress");
let progressAt = performance.now();

const lossChart = new LossChart($("loss-chart"), chart, state);
const optChart = new OptChart($("opt-chart"), chart, state);
let samplesChanged = true;
renderSamples();
renderProgress();

// -- controls ---------------------------------------------------------------------------------------------------
$("x-axis").addEventListener("change", e => { lossChart.set({ mode: e.target.value }); optChart.set({ mode: e.target.value }); });
$("log-scale").addEventListener("change", e => lossChart.set({ log: e.target.checked }));
$("smoothing").addEventListener("input", e => {
  const w = +e.target.value;
  $("smoothing-value").textContent = w.toFixed(2);
  lossChart.set({ smoothing: w });
});
$("reset-zoom").addEventListener("click", () => lossChart.resetZoom());

// -- redraws: batched, a few a second, none while hidden ------------------------------------------------------------
const redraw = redrawer(() => {
  lossChart.update(); optChart.update();
  renderProgress();
  if (samplesChanged) renderSamples();
});

// -- the socket -------------------------------------------------------------------------------------------------
const last = a => (a.length ? a[a.length - 1][0] : -1);
const since = () => socket.send({ type: "since", step: last(state.steps), eval: last(state.evals), epoch: state.epoch });

const socket = openSocket(root.dataset.ws, {
  baseMs: 500,
  onOpen: () => { setConnection(gettext("live"), "ok"); since(); },
  onMessage: handle,
  onClose: e => {
    if (e.code >= 4400 && e.code < 4500) { setConnection(gettext("not allowed to watch this run"), "bad"); return false; }
    setConnection(gettext("disconnected — reconnecting…"), "bad");
  },
});

function handle(m) {
  switch (m.type) {
    case "history":
      if (m.reset) { state.steps = []; state.evals = []; samples.clear(); }
      state.epoch = m.epoch;
      mergeRows(state.steps, m.steps);
      mergeRows(state.evals, m.evals);
      for (const s of m.samples) samples.set(s.step, s.text);
      samplesChanged = true;
      progress = m.progress; progressAt = performance.now();
      if (m.status !== state.status) statusChanged(m.status);
      showQueue(m.queue);
      redraw();
      refreshPanel();  // the timeline may have grown between the page's rendering and this socket's opening
      break;
    case "metrics":
      if (m.epoch > state.epoch) return resync();  // rewound meanwhile: start over from the database
      mergeRows(state.steps, m.steps);
      mergeRows(state.evals, m.evals);
      progress = { ...progress, ...m.progress }; progressAt = performance.now();
      if (progress.status !== state.status) statusChanged(progress.status);
      redraw();
      break;
    case "sample":
      samples.set(m.step, m.text);
      samplesChanged = true; redraw();
      break;
    case "rewind":
      truncateAfter(state.steps, m.step);
      truncateAfter(state.evals, m.step);
      for (const step of [...samples.keys()]) if (step > m.step) samples.delete(step);
      state.epoch = m.epoch;
      samplesChanged = true; redraw(); refreshPanel();
      break;
    case "status":
      progress = { ...progress, status: m.status, step: m.step };
      statusChanged(m.status);
      redraw(); refreshPanel();
      break;
    case "checkpoint":
      refreshPanel();
      break;
    case "preparing":
      $("preparing").hidden = false;
      $("prepare-bar").style.width = `${Math.round(100 * m.progress)}%`;
      break;
    case "queue":
      showQueue(m);
      break;
    case "resync":  // Redis restarted under the server: what was published meanwhile is lost, ask for it
      since();
      break;
    case "error":
      console.warn("training socket:", m.message);
      break;
  }
}

function resync() {
  socket.send({ type: "since", step: -1, eval: -1, epoch: -1 });
}

// a run's status in the reader's language (gettext: the page loads Django's JavaScript catalogue)
const STATUS_WORDS = { queued: gettext("queued"), preparing: gettext("preparing"), running: gettext("running"),
                       succeeded: gettext("succeeded"), failed: gettext("failed"), cancelled: gettext("cancelled") };

function statusChanged(status) {
  state.status = status;
  const badge = $("run-status");
  if (badge) { badge.textContent = STATUS_WORDS[status] ?? status; badge.className = `badge big status-${status}`; }
  $("preparing").hidden = status !== "preparing";
  if (status !== "queued") showQueue(null);
}

function refreshPanel() {
  // the header, checkpoints and timeline come back out of band (see training/_panel.html)
  if (window.htmx) htmx.ajax("GET", root.dataset.panel, { target: "#run-head", swap: "none" });
}

function showQueue(q) {
  const el = $("queue-info");
  if (!el) return;
  if (!q || state.status !== "queued") { el.hidden = true; return; }
  el.hidden = false;
  el.textContent = interpolate(gettext("Queued: #%(position)s in line"), q, true) +
    (q.ahead ? " " + interpolate(gettext("(%(ahead)s ahead)"), q, true) : "") + " · " +
    interpolate(gettext("%(training)s training now"), q, true) + " · " +
    interpolate(ngettext("%(workers)s train worker online", "%(workers)s train workers online", q.workers), q, true) +
    (q.workers ? "" : " — " + gettext("start one with make run"));
}

// -- the side panel ---------------------------------------------------------------------------------------------
function fmtLoss(v) { return v == null ? "—" : v.toFixed(4); }

function renderProgress() {
  const p = progress, latest = p.latest || {};
  const lastEval = state.evals.length ? state.evals[state.evals.length - 1] : null;
  $("stat-step").textContent = p.step ?? 0;
  $("progress-bar").style.width = `${Math.min(100, 100 * (p.step || 0) / (p.max_steps || chart.max_steps))}%`;
  $("stat-eta").textContent = p.status === "running" && p.eta_seconds != null ? "· " + interpolate(gettext("%(t)s left"), { t: duration(p.eta_seconds) }, true) : "";
  $("stat-loss").textContent = fmtLoss(latest.loss);
  const val = lastEval ? lastEval[EVAL.val_loss] : null;
  $("stat-val").textContent = fmtLoss(val);
  $("stat-ppl").textContent = val == null ? "—" : Math.exp(val).toFixed(2);
  $("stat-best").textContent = fmtLoss(p.best_val_loss);
  $("stat-lr").textContent = latest.lr == null ? "—" : latest.lr.toExponential(2);
  $("stat-grad").textContent = latest.grad_norm == null ? "—" : latest.grad_norm.toFixed(3);
  $("stat-tps").textContent = latest.tokens_per_s == null ? "—" : si(latest.tokens_per_s);
  $("stat-mfu").textContent = latest.mfu == null ? "—" : `${(100 * latest.mfu).toFixed(1)} %`;
  $("stat-ms").textContent = latest.ms == null ? "—" : latest.ms.toFixed(1);
  tick();
}

function tick() {
  const running = state.status === "running";
  const extra = running ? (performance.now() - progressAt) / 1000 : 0;
  $("stat-elapsed").textContent = duration((progress.elapsed || 0) + extra);
}
setInterval(() => { if (state.status === "running" && !document.hidden) tick(); }, 1000);

function renderSamples() {
  samplesChanged = false;
  const list = $("samples");
  const steps = [...samples.keys()].sort((a, b) => b - a);
  list.replaceChildren(...steps.map(step => {
    const li = document.createElement("li");
    const head = document.createElement("span");
    head.className = "chip";
    head.textContent = interpolate(gettext("step %(step)s"), { step }, true);
    const pre = document.createElement("pre");
    pre.textContent = samples.get(step);   // text, never HTML
    li.append(head, pre);
    return li;
  }));
  $("no-samples").hidden = steps.length > 0;
}

function setConnection(text, kind) {
  const badge = $("connection");
  badge.textContent = text;
  badge.className = `badge ${kind}`;
}

