// Loss and optimizer charts on uPlot (vendored, global `uPlot`). They read the rows they are given and redraw on
// update(), which the page calls through system/redraw.js (a few times a second at most); all the arithmetic lives
// in series.js.
import { EVAL, STEP, ema, formatX, minMaxIndices, xOf } from "./series.js";

const css = (name, fallback) =>
  getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;

export const PALETTE = ["#3a5bd9", "#e8710a", "#1f8a4c", "#b3261e", "#8e44ad", "#0097a7", "#c2185b", "#7a6a00"];

export function theme() {
  return { ink: css("--muted", "#646b76"), grid: css("--line", "#e2e2dc"), accent: css("--accent", "#3a5bd9") };
}

export function axis(t, extra = {}) {
  return { stroke: t.ink, grid: { stroke: t.grid, width: 1 }, ticks: { stroke: t.grid, width: 1 }, ...extra };
}

// uPlot's legend shows the values under the cursor, and "--" when the cursor is off the chart; legendHooks() show each
// series' latest value there instead (the newest non-empty point), so the legend reads as a summary until hovered.
export function latestLegend(u) {
  if (u.cursor.idx != null || !u.data) return;  // hovering: uPlot shows the hovered point
  const idxs = u.data.map(col => {
    for (let i = col.length - 1; i >= 0; i--) if (col[i] != null) return i;
    return null;
  });
  u.setLegend({ idxs });
}
export const legendHooks = () => ({ ready: [latestLegend], setData: [latestLegend], setCursor: [latestLegend] });

// One chart point per step that has a train step and/or an evaluation (merged by step, so x always increases).
export function lossTable(steps, evals, { mode, smoothing, chart, width }) {
  const smooth = ema(steps.map(r => r[STEP.loss]), smoothing);
  const keep = minMaxIndices(steps.map(r => r[STEP.loss]), Math.max(50, Math.floor(width)));
  const kept = keep ? new Set(keep) : null;
  const x = [], raw = [], sm = [], val = [], evTrain = [];
  let i = 0, j = 0;
  while (i < steps.length || j < evals.length) {
    const si = i < steps.length ? steps[i][STEP.step] : Infinity;
    const sj = j < evals.length ? evals[j][EVAL.step] : Infinity;
    const step = Math.min(si, sj);
    const row = si === step ? steps[i] : null;
    const ev = sj === step ? evals[j] : null;
    if (row) i++;
    if (ev) j++;
    if (row && kept && !kept.has(i - 1) && !ev) continue;  // downsampled away (evaluations always stay)
    const elapsed = row ? row[STEP.elapsed] : ev[EVAL.elapsed];
    x.push(xOf(mode, step, elapsed, chart));
    raw.push(row ? row[STEP.loss] : null);
    sm.push(row ? smooth[i - 1] : null);
    val.push(ev ? ev[EVAL.val_loss] : null);
    evTrain.push(ev ? ev[EVAL.train_loss] : null);
  }
  return [x, raw, sm, val, evTrain];
}

export class LossChart {
  constructor(el, chart, state, { mode = "step", smoothing = 0.6, log = false } = {}) {
    this.el = el; this.chart = chart; this.state = state;
    this.mode = mode; this.smoothing = smoothing; this.log = log;
    this.zoomed = false;
    this.build();
    new ResizeObserver(() => this.plot && this.plot.setSize(this.size())).observe(el);
  }

  size() { return { width: Math.max(280, this.el.clientWidth), height: this.el.clientWidth < 600 ? 260 : 360 }; }

  data() {
    return lossTable(this.state.steps, this.state.evals,
      { mode: this.mode, smoothing: this.smoothing, chart: this.chart, width: this.size().width });
  }

  build() {
    if (this.plot) this.plot.destroy();
    const t = theme();
    const lines = this.chart.lines || [];
    const refValues = lines.map(l => l.value);
    const mode = () => this.mode;
    this.plot = new uPlot({
      ...this.size(),
      cursor: { drag: { x: true, y: false }, points: { size: 6 } },
      scales: {
        x: { time: false },
        y: {
          distr: this.log ? 3 : 1, log: 10,
          range: (u, min, max) => {
            const lo = Math.min(min ?? Infinity, ...refValues), hi = Math.max(max ?? -Infinity, ...refValues);
            if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
            if (this.log) return [lo * 0.95, hi * 1.05];
            const pad = (hi - lo) * 0.06 || 0.1;
            return [Math.max(0, lo - pad), hi + pad];
          },
        },
      },
      axes: [
        axis(t, { values: (u, vals) => vals.map(v => (v == null ? "" : formatX(mode(), v))) }),
        axis(t, { values: (u, vals) => vals.map(v => (v == null ? "" : String(+v.toPrecision(3)))), size: 50 }),
      ],
      series: [
        { label: mode() },
        { label: gettext("train (every step)"), stroke: t.accent + "40", width: 1, points: { show: false } },
        { label: gettext("train (smoothed)"), stroke: t.accent, width: 2, points: { show: false } },
        { label: gettext("val (eval)"), stroke: PALETTE[1], width: 2, spanGaps: true, points: { show: true, size: 6, fill: PALETTE[1] } },
        { label: gettext("train (eval)"), stroke: t.accent, width: 1, dash: [4, 4], spanGaps: true, points: { show: true, size: 4 } },
      ],
      hooks: {
        ...legendHooks(),
        draw: [u => drawLines(u, lines, t)],
        setSelect: [u => { if (u.select.width > 0) this.zoomed = true; }],
      },
    }, this.data(), this.el);
    this.plot.over.addEventListener("dblclick", () => { this.zoomed = false; });
    this.el.dataset.points = String(this.plot.data[0].length);
  }

  update() {
    const data = this.data();
    this.plot.setData(data, !this.zoomed);
    this.el.dataset.points = String(data[0].length);  // what is drawn, for people and tests reading the DOM
  }

  resetZoom() { this.zoomed = false; this.plot.setData(this.data(), true); }

  set(options) {
    Object.assign(this, options);
    if ("log" in options || "mode" in options) { this.zoomed = false; this.build(); } else this.update();
  }
}

function drawLines(u, lines, t) {
  const ctx = u.ctx, dpr = devicePixelRatio || 1;
  ctx.save();
  ctx.font = `${11 * dpr}px system-ui, sans-serif`;
  ctx.textAlign = "left";
  ctx.textBaseline = "bottom";
  for (const line of lines) {
    const y = Math.round(u.valToPos(line.value, "y", true));
    if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) continue;
    ctx.strokeStyle = t.ink; ctx.fillStyle = t.ink; ctx.lineWidth = dpr;
    ctx.setLineDash([6 * dpr, 4 * dpr]);
    ctx.beginPath(); ctx.moveTo(u.bbox.left, y); ctx.lineTo(u.bbox.left + u.bbox.width, y); ctx.stroke();
    ctx.fillText(line.label, u.bbox.left + 8 * dpr, y - 3 * dpr);
  }
  ctx.restore();
}

// Learning rate (left axis) and gradient norm (right axis) per step.
export class OptChart {
  constructor(el, chart, state, { mode = "step" } = {}) {
    this.el = el; this.chart = chart; this.state = state; this.mode = mode;
    this.build();
    new ResizeObserver(() => this.plot && this.plot.setSize(this.size())).observe(el);
  }

  size() { return { width: Math.max(280, this.el.clientWidth), height: 170 }; }

  data() {
    const steps = this.state.steps;
    const keep = minMaxIndices(steps.map(r => r[STEP.grad_norm]), Math.max(50, Math.floor(this.size().width)));
    const rows = keep ? keep.map(i => steps[i]) : steps;
    return [rows.map(r => xOf(this.mode, r[STEP.step], r[STEP.elapsed], this.chart)),
            rows.map(r => r[STEP.lr]), rows.map(r => r[STEP.grad_norm])];
  }

  build() {
    if (this.plot) this.plot.destroy();
    const t = theme();
    const mode = () => this.mode;
    this.plot = new uPlot({
      ...this.size(),
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: false }, lr: { auto: true }, g: { auto: true } },
      axes: [
        axis(t, { values: (u, vals) => vals.map(v => (v == null ? "" : formatX(mode(), v))) }),
        axis(t, { scale: "lr", size: 60, values: (u, vals) => vals.map(v => (v == null ? "" : v.toExponential(1))) }),
        axis(t, { scale: "g", side: 1, size: 50, grid: { show: false }, values: (u, vals) => vals.map(v => (v == null ? "" : +v.toPrecision(3))) }),
      ],
      series: [
        { label: mode() },
        { label: gettext("learning rate"), scale: "lr", stroke: PALETTE[2], width: 2, points: { show: false } },
        { label: gettext("grad norm"), scale: "g", stroke: PALETTE[4] + "b0", width: 1, points: { show: false } },
      ],
      hooks: legendHooks(),
    }, this.data(), this.el);
  }

  update() { this.plot.setData(this.data()); }

  set(options) { Object.assign(this, options); this.build(); }
}
