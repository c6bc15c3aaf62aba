// Several runs' curves on one chart: each run's own [x, y] table, aligned on x with uPlot.join.
import { PALETTE } from "./chart.js";
import { EVAL, STEP, ema, formatX, minMaxIndices, xOf } from "./series.js";

const $ = id => document.getElementById(id);
const runs = JSON.parse($("compare-data").textContent);
const el = $("compare-chart");
let plot = null;

document.querySelectorAll("[data-swatch]").forEach(s => { s.style.background = PALETTE[+s.dataset.swatch % PALETTE.length]; });

function table(run, which, mode, smoothing, width) {
  const { chart, history } = run;
  if (which === "val") {
    const rows = history.evals.filter(r => r[EVAL.val_loss] != null);
    return [rows.map(r => xOf(mode, r[EVAL.step], r[EVAL.elapsed], chart)), rows.map(r => r[EVAL.val_loss])];
  }
  const steps = history.steps;
  const smooth = ema(steps.map(r => r[STEP.loss]), smoothing);
  const keep = minMaxIndices(smooth, width) || steps.map((_, i) => i);
  return [keep.map(i => xOf(mode, steps[i][STEP.step], steps[i][STEP.elapsed], chart)), keep.map(i => smooth[i])];
}

function build() {
  const which = $("cmp-series").value, mode = $("cmp-x").value, log = $("cmp-log").checked;
  const smoothing = +$("cmp-smoothing").value;
  const width = Math.max(280, el.clientWidth);
  const data = uPlot.join(runs.map(r => table(r, which, mode, smoothing, width)));
  const ink = getComputedStyle(document.documentElement).getPropertyValue("--muted").trim() || "#646b76";
  const grid = getComputedStyle(document.documentElement).getPropertyValue("--line").trim() || "#e2e2dc";
  if (plot) plot.destroy();
  plot = new uPlot({
    width, height: 380,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: false }, y: { distr: log ? 3 : 1, log: 10 } },
    axes: [
      { stroke: ink, grid: { stroke: grid }, values: (u, vals) => vals.map(v => (v == null ? "" : formatX(mode, v))) },
      { stroke: ink, grid: { stroke: grid }, size: 50, values: (u, vals) => vals.map(v => (v == null ? "" : +v.toPrecision(3))) },
    ],
    series: [{ label: mode }, ...runs.map((r, i) => ({
      label: `#${r.chart.run} ${r.chart.name}`, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true,
      points: { show: which === "val", size: 5 },
    }))],
  }, data, el);
}

for (const id of ["cmp-series", "cmp-x", "cmp-log"]) $(id).addEventListener("change", build);
$("cmp-smoothing").addEventListener("input", build);
new ResizeObserver(() => plot && plot.setSize({ width: Math.max(280, el.clientWidth), height: 380 })).observe(el);
build();
