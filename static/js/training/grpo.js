// A GRPO run's live dashboard: reward and accuracy per step (smoothed like the pretraining loss: series.js ema),
// reward std within groups, response length, KL to the start model, entropy; below, the sampled answers of recent
// steps. History from the page, then the run's websocket: rows merge by step, so nothing is missed or doubled.
import { PALETTE, axis, theme } from "./chart.js";
import { ema, mergeRows, si, truncateAfter } from "./series.js";

const $ = id => document.getElementById(id);
const root = $("dashboard");
const history = JSON.parse($("grpo-history").textContent);
// rows [step, loss, extra] from the page; live rows come in METRIC_FIELDS order with extra last
const rows = history.steps.map(r => [r[0], r[1], r[2] || {}]);
let smoothing = +$("smoothing").value;
let epoch = -1;

const X = r => r[0];
const E = key => r => (r[2] && r[2][key] != null ? r[2][key] : null);

class SmallChart {
  // series: [{label, value: row -> number|null, color, smooth}]
  constructor(el, series, { height = 170, percentAxis = false } = {}) {
    this.el = el; this.series = series; this.height = height; this.percentAxis = percentAxis;
    this.build();
    new ResizeObserver(() => this.plot && this.plot.setSize(this.size())).observe(el);
  }
  size() { return { width: Math.max(280, this.el.clientWidth), height: this.height }; }
  data() {
    const out = [rows.map(X)];
    for (const s of this.series) {
      const raw = rows.map(s.value);
      out.push(raw);
      if (s.smooth) out.push(ema(raw, smoothing));
    }
    return out;
  }
  build() {
    if (this.plot) this.plot.destroy();
    const t = theme();
    const series = [{ label: "step" }];
    for (const s of this.series) {
      series.push({ label: s.label, stroke: s.color + (s.smooth ? "55" : ""), width: 1, points: { show: false } });
      if (s.smooth) series.push({ label: `${s.label} (smoothed)`, stroke: s.color, width: 2, points: { show: false } });
    }
    const fmt = this.percentAxis ? v => `${Math.round(100 * v)}%` : v => +v.toPrecision(3);
    this.plot = new uPlot({
      ...this.size(),
      scales: { x: { time: false } },
      axes: [axis(t), axis(t, { size: 55, values: (u, vals) => vals.map(v => (v == null ? "" : fmt(v))) })],
      series,
    }, this.data(), this.el);
  }
  update() { this.plot.setData(this.data()); }
}

const charts = [
  new SmallChart($("reward-chart"), [
    { label: "mean reward", value: E("reward"), color: PALETTE[0], smooth: true },
    { label: "accuracy", value: E("accuracy"), color: PALETTE[2], smooth: true },
  ], { height: 260 }),
  new SmallChart($("std-chart"), [{ label: "reward std", value: E("reward_std"), color: PALETTE[1], smooth: true }]),
  new SmallChart($("length-chart"), [{ label: "tokens", value: E("response_len"), color: PALETTE[4], smooth: true }]),
  new SmallChart($("kl-chart"), [{ label: "KL", value: E("kl"), color: PALETTE[3], smooth: true }]),
  new SmallChart($("entropy-chart"), [{ label: "entropy", value: E("entropy"), color: PALETTE[5], smooth: true }]),
];

$("smoothing").addEventListener("input", e => {
  smoothing = +e.target.value;
  $("smoothing-value").textContent = smoothing.toFixed(2);
  redraw();
});

let pending = false;
function redraw() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; charts.forEach(c => c.update()); });
}

const EXTRA = 8; // the index of "extra" in realtime.METRIC_FIELDS
function fromLive(r) { return [r[0], r[1], r[EXTRA] || {}]; }

function renderProgress(p) {
  if (!p) return;
  const l = p.latest || {};
  $("stat-step").textContent = p.step;
  if (p.max_steps) $("progress-bar").style.width = `${Math.round((100 * p.step) / p.max_steps)}%`;
  if (l.reward != null) $("stat-reward").textContent = l.reward.toFixed(3);
  if (l.accuracy != null) $("stat-accuracy").textContent = `${(100 * l.accuracy).toFixed(1)}%`;
  if (l.truncated != null) $("stat-truncated").textContent = l.truncated;
  if (l.sample_tokens_per_s != null) $("stat-tps").textContent = si(l.sample_tokens_per_s);
  if (l.ms != null) $("stat-ms").textContent = Math.round(l.ms);
}

// the answers panel is drawn by its template: fetch it again (at most every 2 s) when a step's groups arrive
let rolloutTimer = null;
function refreshRollouts() {
  if (rolloutTimer) return;
  rolloutTimer = setTimeout(() => {
    rolloutTimer = null;
    if (window.htmx) htmx.ajax("GET", root.dataset.rollouts, { target: "#grpo-rollouts", swap: "outerHTML" });
  }, 2000);
}
function refreshPanel() {
  if (window.htmx) htmx.ajax("GET", root.dataset.panel, { target: "#run-head", swap: "none" });
}

let socket = null, retry = 0;
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}${root.dataset.ws}`);
  socket.onopen = () => {
    retry = 0;
    setConnection("live");
    const last = rows.length ? rows[rows.length - 1][0] : -1;
    socket.send(JSON.stringify({ type: "since", step: last, eval: -1, epoch }));
  };
  socket.onmessage = e => handle(JSON.parse(e.data));
  socket.onclose = e => {
    if (e.code >= 4400 && e.code < 4500) { setConnection("not allowed to watch this run"); return; }
    setConnection("disconnected — reconnecting…");
    setTimeout(connect, Math.min(10000, 500 * 2 ** retry++));
  };
}

function handle(m) {
  switch (m.type) {
    case "history":
      if (m.reset) rows.length = 0;
      epoch = m.epoch;
      mergeRows(rows, m.steps.map(fromLive));
      renderProgress(m.progress); redraw();
      break;
    case "metrics":
      mergeRows(rows, m.steps.map(fromLive));
      renderProgress(m.progress); redraw();
      break;
    case "rewind":
      truncateAfter(rows, m.step); epoch = m.epoch; redraw(); refreshPanel();
      break;
    case "rollout":
      refreshRollouts();
      break;
    case "status":
    case "checkpoint":
      refreshPanel();
      break;
  }
}

function setConnection(text) { $("connection").textContent = text; }
connect();
